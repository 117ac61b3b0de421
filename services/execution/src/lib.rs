//! The execution role: jobs (preview, build, deploy, install) as rows in
//! Postgres and messages on RabbitMQ, run in sandboxes by a worker in this
//! role; previews (R18–R20) and deployments, with job logs streamed and
//! archived.

mod deploy;
mod jobs;
pub mod ops;
mod preview;
mod registry;
mod worker;
mod workspace;

use std::sync::Arc;

use blaze_db::Db;
use blaze_kit::{ApiResult, CancellationToken, Config, RequestContext, client::ServiceClients, grpc::GrpcServer, parse_id};
use blaze_proto::execution::{
    deploy_service_server::DeployServiceServer, job_service_server::JobServiceServer, preview_service_server::PreviewServiceServer,
};
use blaze_queue::Broker;
use blaze_redis::{Redis, streams::EventHub};
use blaze_sandbox::{
    SandboxDriver,
    local::{LocalConfig, LocalDriver},
};
use blaze_storage::objects::ObjectStore;
use tokio::net::TcpListener;
use uuid::Uuid;

pub use jobs::JobMessage;
pub use preview::probe;

#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub clients: ServiceClients,
}

/// What the services and the worker of this role share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub hub: EventHub,
    pub clients: ServiceClients,
    pub broker: Broker,
    pub driver: Arc<dyn SandboxDriver>,
    pub objects: ObjectStore,
    pub previews: preview::Running,
}

pub(crate) struct Scope {
    pub org: Uuid,
    pub ws: Uuid,
    pub user: Option<Uuid>,
    #[allow(dead_code)]
    pub request_id: String,
}

pub(crate) fn scope(ctx: &RequestContext) -> ApiResult<Scope> {
    Ok(Scope {
        org: parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")?,
        ws: parse_id(ctx.workspace_id()?, "WORKSPACE_NOT_FOUND", "Workspace")?,
        user: ctx.user_id().ok().and_then(|u| Uuid::parse_str(u).ok()),
        request_id: ctx.request_id.clone(),
    })
}

fn registry_socket(cfg: &Config) -> std::path::PathBuf {
    cfg.sandbox.root.join("registry.sock")
}

/// The configured sandbox driver.
pub async fn driver(cfg: &Config) -> anyhow::Result<Arc<dyn SandboxDriver>> {
    match cfg.sandbox.driver.as_str() {
        "local" => {
            let mut local = LocalConfig::new(&cfg.sandbox.root);
            local.bwrap = cfg.sandbox.bwrap.clone().into();
            local.require_cgroups = cfg.sandbox.require_cgroups;
            if !cfg.sandbox.npm_registry.is_empty() {
                local.registry_socket = Some(registry_socket(cfg));
            }
            Ok(Arc::new(LocalDriver::new(local)?))
        }
        "kube" => Ok(Arc::new(blaze_sandbox::kube::KubeDriver::from_env(kube_config(cfg)).await?)),
        other => anyhow::bail!("unknown sandbox driver {other:?} (use local or kube)"),
    }
}

fn kube_config(cfg: &Config) -> blaze_sandbox::kube::KubeConfig {
    use blaze_sandbox::kube::{EgressTarget, KubeConfig, Peer};
    let s = &cfg.sandbox;
    let store_port = url_port(&cfg.s3.endpoint).unwrap_or(443);
    let mut k = KubeConfig::new(&s.namespace, EgressTarget { peer: Peer::Cidr(s.kube_object_storage_cidr.clone()), port: store_port });
    k.image = s.image.clone();
    if !s.runtime_class.is_empty() {
        k.runtime_class = Some(s.runtime_class.clone());
    }
    let platform = || Some([("kubernetes.io/metadata.name".to_owned(), s.kube_platform_namespace.clone())].into());
    // The edge and execution pods of the platform namespace reach dev servers.
    k.serve_from = Some(Peer::Pods { namespaces: platform(), pods: [("app.kubernetes.io/part-of".to_owned(), "blaze".to_owned())].into() });
    // Install runs reach the registry proxy of the platform namespace (the
    // pods k8s/ lets them reach), on the port of `sandbox.npm_registry`.
    if !s.npm_registry.is_empty() {
        k.registry_proxy = Some(EgressTarget {
            peer: Peer::Pods { namespaces: platform(), pods: [("app.kubernetes.io/name".to_owned(), "registry-proxy".to_owned())].into() },
            port: url_port(&s.npm_registry).unwrap_or(443),
        });
    }
    k
}

fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    match host.rsplit_once(':') {
        Some((_, p)) => p.parse().ok(),
        None => Some(if scheme == "https" { 443 } else { 80 }),
    }
}

pub async fn serve(
    deps: Deps,
    listener: TcpListener,
    security: blaze_kit::grpc::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let cfg = deps.cfg.clone();
    std::fs::create_dir_all(&cfg.sandbox.root)?;
    std::fs::create_dir_all(&cfg.sandbox.cache_root)?;
    // The bucket is the artifacts role's to create.
    let objects = ObjectStore::new(&cfg.s3)?;
    let broker = ops::broker(&cfg).await?;
    broker.declare(jobs::QUEUE).await?;
    let hub = EventHub::start(deps.redis.clone(), cfg.redis.url.expose()).await?;
    if cfg.sandbox.driver == "local" && !cfg.sandbox.npm_registry.is_empty() {
        let (socket, registry, s) = (registry_socket(&cfg), cfg.sandbox.npm_registry.clone(), shutdown.clone());
        blaze_kit::spawn_task("registry-proxy", registry::serve(socket, registry, s));
    }
    let shared = Shared {
        driver: driver(&cfg).await?,
        cfg: cfg.clone(),
        db: deps.db.clone(),
        redis: deps.redis.clone(),
        hub,
        clients: deps.clients.clone(),
        broker: broker.clone(),
        objects,
        previews: preview::Running::default(),
    };
    let worker_shared = shared.clone();
    let consumer = broker.consume(jobs::QUEUE, move |d| worker::handle(worker_shared.clone(), d), shutdown.clone());
    blaze_kit::spawn_task("preview-reaper", worker::reap_idle(shared.clone(), shutdown.clone()));

    let db = deps.db.clone();
    let redis = deps.redis.clone();
    let result = GrpcServer::new("execution")
        .service(PreviewServiceServer::new(preview::Previews::new(shared.clone())))
        .service(JobServiceServer::new(jobs::Jobs::new(shared.clone())))
        .service(DeployServiceServer::new(deploy::Deployments::new(shared.clone())))
        .health_check(Arc::new(move || {
            let db = db.clone();
            let redis = redis.clone();
            Box::pin(async move { db.ping().await && redis.ping().await })
        }))
        .serve(listener, security, shutdown)
        .await;
    shared.previews.stop_all();
    let _ = consumer.await;
    result
}

#[cfg(test)]
mod kube_tests {
    use blaze_sandbox::kube::{EgressTarget, Peer};

    use super::*;

    #[test]
    fn install_runs_may_reach_the_platforms_registry_proxy_on_its_port() {
        let mut cfg = Config::default();
        cfg.sandbox.npm_registry = "http://registry-proxy.blaze.svc.cluster.local:4873".into();
        let k = kube_config(&cfg);
        let Some(EgressTarget { peer: Peer::Pods { namespaces, pods }, port }) = k.registry_proxy else {
            panic!("no registry proxy: {:?}", k.registry_proxy)
        };
        assert_eq!(port, 4873);
        assert_eq!(pods.get("app.kubernetes.io/name").map(String::as_str), Some("registry-proxy"));
        assert_eq!(namespaces.unwrap().get("kubernetes.io/metadata.name"), Some(&cfg.sandbox.kube_platform_namespace));
        cfg.sandbox.npm_registry.clear();
        assert!(kube_config(&cfg).registry_proxy.is_none(), "no registry configured, no way out");
    }
}
