//! Starting roles. Every role is a library with `serve(deps, listener,
//! security, shutdown)`; this module binds the listeners first (so `:0`
//! works and roles in one process find each other), builds the shared
//! connections once, and runs each role as a task.

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use blaze_auth::KeySet;
use blaze_db::Db;
use blaze_kit::{
    CancellationToken, Config,
    client::ServiceClients,
    grpc::{Security, bind},
    idempotency::IdempotencyStore,
};
use blaze_redis::{Redis, idempotency::RedisIdempotency};
use tokio::{net::TcpListener, task::JoinSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Identity,
    ControlPlane,
    Orchestrator,
    Execution,
    Artifacts,
    Edge,
}

impl Role {
    /// What `--role all` starts.
    pub const ALL: [Role; 6] = [Role::Identity, Role::ControlPlane, Role::Orchestrator, Role::Execution, Role::Artifacts, Role::Edge];

    pub fn name(self) -> &'static str {
        match self {
            Role::Identity => "identity",
            Role::ControlPlane => "control-plane",
            Role::Orchestrator => "orchestrator",
            Role::Execution => "execution",
            Role::Artifacts => "artifacts",
            Role::Edge => "edge",
        }
    }

    /// Parse `all` or a comma-separated list.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Role>> {
        let mut roles = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                roles.extend(Role::ALL);
            } else {
                roles.push(part.parse()?);
            }
        }
        roles.sort();
        roles.dedup();
        anyhow::ensure!(!roles.is_empty(), "no role given (use --role all or e.g. --role edge,identity)");
        Ok(roles)
    }
}

impl FromStr for Role {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            anyhow::anyhow!("unknown role {s:?}; roles are edge, identity, control-plane, orchestrator, execution, artifacts, all")
        })
    }
}

/// Running roles of this process.
pub struct Mesh {
    pub cfg: Arc<Config>,
    /// Where each role listens.
    pub addrs: BTreeMap<Role, SocketAddr>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Mesh {
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until a role stops (an error is fatal) or shutdown is requested.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        while let Some(joined) = self.tasks.join_next().await {
            let (role, result) = joined.context("role task panicked")?;
            if let Err(e) = result {
                self.shutdown.cancel();
                return Err(e.context(format!("role {role} failed")));
            }
            if !self.shutdown.is_cancelled() {
                self.shutdown.cancel();
                anyhow::bail!("role {role} stopped unexpectedly");
            }
        }
        Ok(())
    }

    /// Stop every role and wait for them to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => { self.tasks.abort_all(); break; }
                next = self.tasks.join_next() => if next.is_none() { break },
            }
        }
    }
}

/// The key set of this deployment (fails fast when none is configured).
pub fn keys(cfg: &Config) -> anyhow::Result<Arc<KeySet>> {
    if cfg.auth.verify_keys.is_empty() {
        cfg.require(&["auth.signing_key"])?;
    }
    Ok(Arc::new(KeySet::from_config(cfg.auth.signing_key.expose(), cfg.auth.signing_key_id, &cfg.auth.verify_keys)?))
}

/// Bind, wire and start `roles`.
pub async fn start(mut cfg: Config, roles: &[Role]) -> anyhow::Result<Mesh> {
    let keys = keys(&cfg)?;
    let mut listeners: BTreeMap<Role, TcpListener> = BTreeMap::new();
    for &role in roles {
        let listener = bind(cfg.listen_addr(role.name())).await?;
        let addr = listener.local_addr()?;
        // roles in this process reach each other where they really listen
        let url =
            format!("http://{}", SocketAddr::new(if addr.ip().is_unspecified() { [127, 0, 0, 1].into() } else { addr.ip() }, addr.port()));
        match role {
            Role::Identity => cfg.upstreams.identity = url,
            Role::ControlPlane => cfg.upstreams.control_plane = url,
            Role::Orchestrator => cfg.upstreams.orchestrator = url,
            Role::Execution => cfg.upstreams.execution = url,
            Role::Artifacts => cfg.upstreams.artifacts = url,
            Role::Edge => cfg.listen.edge = addr.to_string(),
        }
        listeners.insert(role, listener);
    }
    let cfg = Arc::new(cfg);
    let addrs = listeners.iter().map(|(r, l)| (*r, l.local_addr().expect("bound"))).collect();

    let needs_db = roles.iter().any(|r| matches!(r, Role::Identity | Role::ControlPlane | Role::Orchestrator | Role::Execution));
    let db = if needs_db { Some(Db::connect(&cfg.database).await?) } else { None };
    let redis = Redis::connect(&cfg.redis).await?;
    let idempotency: Arc<dyn IdempotencyStore> = Arc::new(RedisIdempotency::new(redis.clone()));
    let security = Security { keys: keys.clone(), idempotency: Some(idempotency) };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (role, listener) in listeners {
        let s = shutdown.clone();
        let security = security.clone();
        let clients = ServiceClients::new(&cfg, keys.clone(), role.name())?;
        match role {
            Role::Identity => {
                let deps = blaze_identity::Deps {
                    cfg: cfg.clone(),
                    db: db.clone().expect("db"),
                    redis: redis.clone(),
                    keys: keys.clone(),
                    http: http.clone(),
                };
                tasks.spawn(async move { (role.name(), blaze_identity::serve(deps, listener, security, s).await) });
            }
            Role::ControlPlane => {
                let deps = blaze_control_plane::Deps {
                    cfg: cfg.clone(),
                    db: db.clone().expect("db"),
                    redis: redis.clone(),
                    keys: keys.clone(),
                    clients,
                };
                tasks.spawn(async move { (role.name(), blaze_control_plane::serve(deps, listener, security, s).await) });
            }
            Role::Artifacts => {
                let deps = blaze_artifacts::Deps::new(cfg.clone())?;
                tasks.spawn(async move { (role.name(), blaze_artifacts::serve(deps, listener, security, s).await) });
            }
            Role::Orchestrator => {
                let deps = blaze_orchestrator::Deps { cfg: cfg.clone(), db: db.clone().expect("db"), redis: redis.clone(), clients };
                tasks.spawn(async move { (role.name(), blaze_orchestrator::serve(deps, listener, security, s).await) });
            }
            Role::Execution => {
                let deps = blaze_execution::Deps { cfg: cfg.clone(), db: db.clone().expect("db"), redis: redis.clone(), clients };
                tasks.spawn(async move { (role.name(), blaze_execution::serve(deps, listener, security, s).await) });
            }
            Role::Edge => {
                let deps = blaze_edge::Deps { cfg: cfg.clone(), keys: keys.clone(), redis: redis.clone(), clients };
                tasks.spawn(async move { (role.name(), blaze_edge::serve(deps, listener, s).await) });
            }
        }
    }
    if !cfg.listen.metrics.is_empty() {
        let listener = bind(&cfg.listen.metrics).await?;
        let s = shutdown.clone();
        tasks.spawn(async move { ("ops", blaze_kit::ops::serve(listener, s).await) });
    }
    Ok(Mesh { cfg, addrs, shutdown, tasks })
}
