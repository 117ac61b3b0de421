//! The edge: the only public entry of Blaze Service.
//!
//! A pingora server that (a) answers the Blaze client's HTTP/JSON and SSE by
//! transcoding them to gRPC from the descriptor set and our options, and (b)
//! proxies native gRPC and gRPC-web to the role that owns the service. It
//! knows nothing route-specific: routes, bodies, SSE events, access rules
//! and the OpenAPI document all come from `blaze-proto`'s catalogue.
//!
//! Modules: [`routes`] (template grammar, pure), [`json`] (request building
//! and response rendering, pure), [`auth`] (credential → internal token,
//! rate limits), [`upstream`] (dynamic gRPC calls), [`server`] (the pingora
//! pipeline), [`openapi`].

pub mod auth;
pub mod hosts;
pub mod json;
pub mod openapi;
mod readiness;
mod respond;
pub mod routes;
pub mod server;
pub mod upstream;

use std::{os::fd::IntoRawFd, sync::Arc, time::Duration};

use blaze_auth::{
    KeySet,
    oidc::{OidcSettings, OidcVerifier},
};
use blaze_kit::{CancellationToken, Config, client::ServiceClients};
use blaze_proto::{catalog::Catalog, identity::identity_service_client::IdentityServiceClient};
use blaze_redis::{
    Redis,
    gate::{Gate, Limits},
};
use bytes::Bytes;
use pingora_core::{
    apps::HttpServerOptions,
    server::{Fds, configuration::ServerConf},
    services::Service as _,
};
use pingora_proxy::ProxyServiceBuilder;
use tokio::net::TcpListener;

pub struct Deps {
    pub cfg: Arc<Config>,
    pub keys: Arc<KeySet>,
    pub redis: Redis,
    pub clients: ServiceClients,
}

fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Build the edge's shared state (routes, OpenAPI, authenticator).
pub fn state(deps: Deps) -> anyhow::Result<server::EdgeState> {
    let cfg = deps.cfg.clone();
    let catalog = Catalog::global();
    let routes = routes::RouteTable::from_catalog(catalog)?;
    let openapi = Bytes::from(openapi::generate(&routes, catalog, &cfg.edge.app_version).to_string());
    let oidc = OidcVerifier::new(OidcSettings {
        issuer: cfg.oidc.issuer.clone(),
        audience: cfg.oidc.audience.clone(),
        jwks_url: cfg.oidc.jwks_url.clone(),
        hs256_secret: (!cfg.oidc.hs256_secret.is_empty()).then(|| cfg.oidc.hs256_secret.expose().as_bytes().to_vec()),
        leeway: Duration::from_secs(cfg.oidc.leeway_secs),
        jwks_ttl: Duration::from_secs(cfg.oidc.jwks_ttl_secs),
    });
    let gate = cfg.rate_limit.enabled.then(|| {
        Gate::new(
            deps.redis.clone(),
            Limits {
                user_burst: cfg.rate_limit.user_burst,
                user_per_sec: cfg.rate_limit.user_per_sec,
                org_burst: cfg.rate_limit.org_burst,
                org_per_sec: cfg.rate_limit.org_per_sec,
            },
        )
    });
    let identity = IdentityServiceClient::new(deps.clients.intercepted("identity"));
    let auth = auth::Authenticator::new(
        deps.keys.clone(),
        oidc,
        identity,
        gate,
        cfg.rate_limit.fail_open,
        cfg.auth.dev_mode,
        Duration::from_secs(cfg.auth.internal_token_ttl_secs),
    );
    Ok(server::EdgeState {
        upstreams: upstream::Upstreams::new(&cfg)?,
        cfg,
        catalog,
        routes,
        auth,
        openapi,
        readiness: readiness::Readiness::default(),
        hosts: hosts::Hosts::new(&deps.clients),
    })
}

/// Serve the edge on `listener` until `shutdown`.
pub async fn serve(deps: Deps, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if deps.cfg.auth.dev_mode && !is_loopback(&addr) && !deps.cfg.auth.allow_dev_mode_on_public_bind {
        anyhow::bail!("auth.dev_mode accepts unauthenticated dev headers and must not be used with a public bind ({addr})");
    }
    let cfg = deps.cfg.clone();
    let edge = server::Edge(Arc::new(state(deps)?));
    let conf = Arc::new(ServerConf::default());
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    let mut service = ProxyServiceBuilder::new(&conf, edge).name("blaze-edge").server_options(options).build();
    // Hand pingora the socket we bound (so port 0 works): it looks listeners
    // up by address in the fd table before binding itself.
    let addr_text = addr.to_string();
    let fd = listener.into_std()?.into_raw_fd();
    let mut fds = Fds::new();
    fds.add(addr_text.clone(), fd);
    if cfg.edge.tls_cert.is_empty() {
        service.add_tcp(&addr_text);
    } else {
        service.add_tls(&addr_text, &cfg.edge.tls_cert, &cfg.edge.tls_key)?;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = tx.send(true);
    });
    tracing::info!(%addr, tls = !cfg.edge.tls_cert.is_empty(), "edge listening");
    service.start_service(Some(Arc::new(parking_lot::Mutex::new(fds))), rx, 1).await;
    watcher.abort();
    tracing::info!("edge stopped");
    Ok(())
}
