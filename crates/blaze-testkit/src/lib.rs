//! The test harness: [`TestMesh::start`] boots every role in-process on
//! ephemeral ports against real Postgres, Redis and RabbitMQ, with a fresh
//! database (cloned from a migrated template), its own Redis key prefix and
//! its own queue names, and removes all of it when dropped.
//!
//! The mesh's model provider is [`FakeModel`] (the `blaze-llm` fake server,
//! configured as the demo model). Roles named in [`MeshOptions::isolated`]
//! run on their own runtime, so a test can kill one abruptly (like a crashed
//! process: no cleanup runs) and start it again on the same port.
//!
//! Dependencies are found through `BLAZE_TEST_PG_ADMIN` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `BLAZE_TEST_REDIS`
//! (default `redis://127.0.0.1:6379/0`).

mod database;
pub mod idp;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use blaze::{Mesh, Role};
use blaze_auth::{KeySet, Principal, tokens};
use blaze_kit::{Config, client::ServiceInterceptor};
use blaze_proto::identity::{self as idpb, identity_service_client::IdentityServiceClient};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub use blaze_llm::fake::{FakeModel, RecordedRequest};
pub use database::TestDatabase;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// A hook that adjusts the configuration of a test mesh.
pub type Configure = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Knobs of a test mesh.
#[derive(Clone)]
pub struct MeshOptions {
    pub roles: Vec<Role>,
    /// Roles (among `roles`) run on their own runtime: [`TestMesh::kill_role`]
    /// and [`TestMesh::restart_role`] work on them.
    pub isolated: Vec<Role>,
    /// Roles (among `roles`) the test runs as separate `blaze serve`
    /// processes ([`TestMesh::spawn_role`]): they get fixed ports and are
    /// not started in this process.
    pub processes: Vec<Role>,
    /// Adjust the configuration before the roles start.
    pub configure: Option<Configure>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions { roles: Role::ALL.to_vec(), isolated: Vec::new(), processes: Vec::new(), configure: None }
    }
}

/// A role on its own runtime: dropping the runtime stops every task of the
/// role at once, as a process crash would.
struct IsolatedRole {
    runtime: Option<tokio::runtime::Runtime>,
    mesh: Option<Mesh>,
}

impl IsolatedRole {
    async fn start(cfg: Config, role: Role) -> IsolatedRole {
        // A killed predecessor's tasks are dropped in the background; its
        // listener may hold the port for a moment.
        let mut attempts = 0;
        loop {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            let c = cfg.clone();
            match runtime.spawn(async move { blaze::start(c, &[role]).await }).await.expect("role task") {
                Ok(mesh) => return IsolatedRole { runtime: Some(runtime), mesh: Some(mesh) },
                Err(e) if attempts < 100 && e.to_string().contains("Address already in use") => {
                    runtime.shutdown_background();
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("isolated role starts: {e:#}"),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        if let Some(mesh) = self.mesh.take() {
            std::mem::forget(mesh); // its tasks died with the runtime
        }
    }
}

impl Drop for IsolatedRole {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `blaze` binary next to the running test (build it with
/// `cargo build -p blaze`; `make test` does).
pub fn blaze_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("BLAZE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/blaze
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("blaze")).expect("target directory");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p blaze` (make test does)", bin.display());
    bin
}

/// A role running as its own process; killed (SIGKILL) on drop.
pub struct RoleProcess {
    child: std::process::Child,
}

impl RoleProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no cleanup of any kind, like a crashed node.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (for roles that must come back on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A user of the test mesh with an internal token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub sub: String,
    pub user_id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub principal: Principal,
    /// Internal biscuit, as the edge would send it.
    pub token: String,
    /// An API token (owner of the default organisation) for HTTP calls.
    pub api_token: String,
}

pub struct TestMesh {
    pub cfg: Arc<Config>,
    pub keys: Arc<KeySet>,
    pub addrs: BTreeMap<Role, SocketAddr>,
    mesh: Option<Mesh>,
    isolated: BTreeMap<Role, IsolatedRole>,
    /// Configuration the isolated roles start with.
    isolated_cfg: Config,
    /// The model provider of this mesh.
    pub model: FakeModel,
    pub db: TestDatabase,
    redis_url: String,
    redis_prefix: String,
    _dirs: tempfile::TempDir,
}

impl TestMesh {
    pub async fn start() -> TestMesh {
        Self::start_with(MeshOptions::default()).await
    }

    pub async fn start_with(opts: MeshOptions) -> TestMesh {
        blaze_kit::telemetry::init(&blaze_kit::config::TelemetryConfig {
            log_format: "text".into(),
            log_filter: env_or("BLAZE_TEST_LOG", "warn"),
            ..Default::default()
        });
        let db = TestDatabase::create().await.expect("test database");
        let dirs = tempfile::tempdir().expect("tempdir");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let redis_url = env_or("BLAZE_TEST_REDIS", "redis://127.0.0.1:6379/0");
        let redis_prefix = format!("t:{}:", &id[..12]);
        let signing = KeySet::new_private_key_hex();

        let mut cfg = Config::default();
        cfg.listen.edge = "127.0.0.1:0".into();
        cfg.listen.identity = "127.0.0.1:0".into();
        cfg.listen.control_plane = "127.0.0.1:0".into();
        cfg.listen.orchestrator = "127.0.0.1:0".into();
        cfg.listen.execution = "127.0.0.1:0".into();
        cfg.listen.artifacts = "127.0.0.1:0".into();
        cfg.listen.metrics = String::new();
        cfg.database.url = blaze_kit::Secret(db.app_url.clone());
        cfg.database.migration_url = blaze_kit::Secret(db.owner_url.clone());
        cfg.database.max_connections = 4;
        cfg.redis.url = blaze_kit::Secret(redis_url.clone());
        cfg.redis.key_prefix = redis_prefix.clone();
        cfg.amqp.prefix = format!("t{}", &id[..12]);
        cfg.git.root = dirs.path().join("repos");
        cfg.sandbox.root = dirs.path().join("sandboxes");
        // The warm dependency cache is shared by every test (and run): it is
        // keyed by template version and filled once, under a file lock.
        cfg.sandbox.cache_root =
            std::env::var("BLAZE_TEST_CACHE").map(Into::into).unwrap_or_else(|_| std::env::temp_dir().join("blaze-test-cache"));
        cfg.amqp.url = blaze_kit::Secret(env_or("BLAZE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f"));
        cfg.amqp.retry_delay_ms = 300;
        cfg.s3.bucket = format!("t-{}", &id[..12]);
        cfg.s3.endpoint = env_or("BLAZE_TEST_S3", "http://127.0.0.1:9000");
        cfg.s3.access_key = blaze_kit::Secret(env_or("BLAZE_TEST_S3_ACCESS_KEY", "blaze"));
        cfg.s3.secret_key = blaze_kit::Secret(env_or("BLAZE_TEST_S3_SECRET_KEY", "blazesecret"));
        cfg.auth.signing_key = blaze_kit::Secret(signing);
        cfg.auth.signing_key_id = 1;
        cfg.secrets.encryption_key = blaze_kit::Secret(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        cfg.telemetry.log_format = "text".into();
        let model = FakeModel::start().await.expect("fake model");
        cfg.llm.demo_base_url = model.base_url();
        cfg.llm.allow_private_base_urls = true;
        cfg.llm.retry_base_ms = 20;
        cfg.chat.turn_lease_ms = 1_500;
        if let Some(configure) = &opts.configure {
            configure(&mut cfg);
        }
        // Isolated roles get fixed ports up front, so the others know where
        // to reach them and a restart comes back at the same address.
        for role in opts.isolated.iter().chain(&opts.processes) {
            let addr = format!("127.0.0.1:{}", free_port());
            let url = format!("http://{addr}");
            match role {
                Role::Identity => (cfg.listen.identity, cfg.upstreams.identity) = (addr, url),
                Role::ControlPlane => (cfg.listen.control_plane, cfg.upstreams.control_plane) = (addr, url),
                Role::Orchestrator => (cfg.listen.orchestrator, cfg.upstreams.orchestrator) = (addr, url),
                Role::Execution => (cfg.listen.execution, cfg.upstreams.execution) = (addr, url),
                Role::Artifacts => (cfg.listen.artifacts, cfg.upstreams.artifacts) = (addr, url),
                Role::Edge => panic!("only gRPC roles get fixed ports; spawn extra edges with spawn_edge"),
            }
        }
        let keys = blaze::roles::keys(&cfg).expect("keys");
        let shared: Vec<Role> = opts.roles.iter().copied().filter(|r| !opts.isolated.contains(r) && !opts.processes.contains(r)).collect();
        let mesh = blaze::start(cfg, &shared).await.expect("mesh starts");
        let isolated_cfg = (*mesh.cfg).clone();
        let mut addrs = mesh.addrs.clone();
        let mut isolated = BTreeMap::new();
        for role in &opts.isolated {
            let r = IsolatedRole::start(isolated_cfg.clone(), *role).await;
            addrs.extend(r.mesh.as_ref().expect("mesh").addrs.clone());
            isolated.insert(*role, r);
        }
        for role in &opts.processes {
            let addr = match role {
                Role::Identity => &isolated_cfg.listen.identity,
                Role::ControlPlane => &isolated_cfg.listen.control_plane,
                Role::Orchestrator => &isolated_cfg.listen.orchestrator,
                Role::Execution => &isolated_cfg.listen.execution,
                Role::Artifacts => &isolated_cfg.listen.artifacts,
                Role::Edge => unreachable!("checked above"),
            };
            addrs.insert(*role, addr.parse().expect("fixed address"));
        }
        let cfg = mesh.cfg.clone();
        TestMesh { cfg, keys, addrs, mesh: Some(mesh), isolated, isolated_cfg, model, db, redis_url, redis_prefix, _dirs: dirs }
    }

    /// Run `role` as a separate `blaze serve` process with this mesh's
    /// configuration (`listen` overrides its address, e.g. for an extra
    /// edge). Its output goes to `log`.
    pub fn spawn_role(&self, role: Role, listen: Option<&str>, log: &std::path::Path) -> RoleProcess {
        let mut cfg = self.isolated_cfg.clone();
        if let Some(addr) = listen {
            match role {
                Role::Edge => cfg.listen.edge = addr.to_owned(),
                Role::Identity => cfg.listen.identity = addr.to_owned(),
                Role::ControlPlane => cfg.listen.control_plane = addr.to_owned(),
                Role::Orchestrator => cfg.listen.orchestrator = addr.to_owned(),
                Role::Execution => cfg.listen.execution = addr.to_owned(),
                Role::Artifacts => cfg.listen.artifacts = addr.to_owned(),
            }
        }
        cfg.listen.metrics = String::new();
        cfg.telemetry.log_format = "json".into();
        cfg.telemetry.log_filter = "info".into();
        let path = self._dirs.path().join(format!("{}-{}.toml", role.name(), uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, toml::to_string(&cfg).expect("config as TOML")).expect("write config");
        let out = std::fs::File::create(log).expect("log file");
        let child = std::process::Command::new(blaze_binary())
            .args(["serve", "--role", role.name(), "--config"])
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn blaze serve");
        RoleProcess { child }
    }

    /// Stop an isolated role abruptly: its tasks vanish mid-flight, like a
    /// killed process (leases are not released, streams not ended).
    pub fn kill_role(&mut self, role: Role) {
        self.isolated.get_mut(&role).unwrap_or_else(|| panic!("{} is not isolated", role.name())).kill();
    }

    /// Start a killed isolated role again on its port.
    pub async fn restart_role(&mut self, role: Role) {
        self.kill_role(role);
        let r = IsolatedRole::start(self.isolated_cfg.clone(), role).await;
        self.isolated.insert(role, r);
    }

    /// A plain channel to a role.
    pub fn channel(&self, role: Role) -> Channel {
        let addr = self.addrs.get(&role).unwrap_or_else(|| panic!("role {} is not running", role.name()));
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy()
    }

    /// A channel to a role that presents a service token.
    pub fn service_channel(&self, role: Role) -> InterceptedService<Channel, ServiceInterceptor> {
        blaze_kit::client::ServiceClients::new(&self.cfg, self.keys.clone(), "testkit").expect("clients").intercepted(role.name())
    }

    /// Resolve (and on first use provision) a user through identity, as the
    /// edge would for a dev credential, and mint their internal token.
    pub async fn user(&self, sub: &str) -> TestUser {
        let mut identity = IdentityServiceClient::new(self.service_channel(Role::Identity));
        let resp = identity
            .resolve_principal(idpb::ResolvePrincipalRequest {
                kind: idpb::CredentialKind::Dev as i32,
                subject: sub.into(),
                email: Some(format!("{sub}@example.test")),
                display_name: Some(sub.into()),
                ..Default::default()
            })
            .await
            .expect("resolve principal")
            .into_inner();
        let principal = Principal::from(resp.principal.expect("principal"));
        self.user_from(sub, principal).await
    }

    /// Mint a fresh internal token for a user (after membership changes).
    pub async fn refresh(&self, user: &TestUser) -> TestUser {
        self.user(&user.sub).await
    }

    async fn user_from(&self, sub: &str, principal: Principal) -> TestUser {
        let token = tokens::mint_internal(&self.keys, &principal, Duration::from_secs(600)).expect("mint");
        let org_id = principal.default_org.clone();
        let workspace_id =
            principal.workspaces.iter().find(|w| w.org_id == org_id && w.personal_default).map(|w| w.id.clone()).unwrap_or_default();
        let api_token = self.api_token(&principal.user_id, &org_id, "owner").await;
        TestUser { sub: sub.into(), user_id: principal.user_id.clone(), org_id, workspace_id, principal, token, api_token }
    }

    /// Mint an API token for a member of an organisation.
    pub async fn api_token(&self, user_id: &str, org_id: &str, role: &str) -> String {
        let db = blaze_db::Db::connect_url(&self.db.app_url, 1, Duration::from_secs(5)).await.expect("db");
        let minted = blaze_identity::api_tokens::mint(
            &db,
            &self.keys,
            blaze_identity::api_tokens::MintRequest {
                org_id: user_id_parse(org_id),
                user_id: user_id_parse(user_id),
                role,
                ttl: Duration::from_secs(3600),
                description: "test",
                minted_by: None,
            },
            None,
        )
        .await
        .expect("mint api token");
        db.connection().clone().close().await.ok();
        minted.token
    }

    /// Base URL of the edge (`http://127.0.0.1:<port>`).
    pub fn edge_url(&self) -> String {
        format!("http://{}", self.addrs.get(&Role::Edge).expect("edge is running"))
    }

    /// `<edge>/api/v1/orgs/me/workspaces/me` + `path`.
    pub fn scoped(&self, path: &str) -> String {
        format!("{}/api/v1/orgs/me/workspaces/me{path}", self.edge_url())
    }

    /// An HTTP client for the edge.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client")
    }

    /// An HTTP client that reaches the edge for any host name of `url`
    /// (preview and app hosts like `x.preview.localhost` do not resolve
    /// through the system resolver).
    pub fn http_for(&self, url: &str) -> reqwest::Client {
        let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or("localhost").to_owned();
        let edge = self.addrs[&Role::Edge];
        reqwest::Client::builder()
            .resolve(&host, edge)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }

    /// Stop the roles (the database and keys go when the mesh is dropped).
    pub async fn stop(&mut self) {
        for r in self.isolated.values_mut() {
            r.kill();
        }
        if let Some(mesh) = self.mesh.take() {
            mesh.stop().await;
        }
    }
}

fn user_id_parse(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).expect("uuid")
}

/// Attach a bearer token to a request.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    req
}

impl Drop for TestMesh {
    fn drop(&mut self) {
        for r in self.isolated.values_mut() {
            r.kill();
        }
        if let Some(mesh) = self.mesh.take() {
            mesh.shutdown_token().cancel();
            drop(mesh);
        }
        let url = self.redis_url.clone();
        let prefix = self.redis_prefix.clone();
        let s3 = self.cfg.s3.clone();
        let amqp = self.cfg.amqp.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let queue = blaze_queue::QueueConfig {
                    url: amqp.url.expose().to_owned(),
                    prefix: amqp.prefix.clone(),
                    prefetch: 1,
                    max_attempts: 1,
                    retry_delay: Duration::from_millis(u64::from(amqp.retry_delay_ms)),
                };
                if let Ok(Ok(broker)) = tokio::time::timeout(Duration::from_secs(5), blaze_queue::Broker::connect(queue)).await {
                    let _ = broker.delete_queues(&["jobs"]).await;
                    broker.close().await;
                }
                if let Ok(store) = blaze_storage::objects::ObjectStore::new(&s3)
                    && store.exists("probe").await.is_ok()
                {
                    let _ = store.remove_bucket().await;
                }
                use fred::prelude::*;
                let Ok(config) = fred::prelude::Config::from_url(&url) else { return };
                let Ok(client) = Builder::from_config(config).build() else { return };
                if client.init().await.is_err() {
                    return;
                }
                let mut cursor = "0".to_string();
                loop {
                    let (next, keys): (String, Vec<String>) = match client
                        .custom(
                            fred::cmd!("SCAN"),
                            vec![cursor.clone(), "MATCH".into(), format!("{prefix}*"), "COUNT".into(), "1000".into()],
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => break,
                    };
                    if !keys.is_empty() {
                        let _: Result<i64, _> = client.del(keys).await;
                    }
                    if next == "0" {
                        break;
                    }
                    cursor = next;
                }
                let _ = client.quit().await;
            });
        });
        let _ = cleanup.join();
    }
}
