//! `blaze bench`: the benchmarks of DESIGN §11, run against a private copy
//! of the system (its own database, Redis prefix, queues and bucket) with
//! the fake model, and written to `docs/benchmarks.md`.
//!
//! Every role runs in this process except the edge, which runs as its own
//! `blaze serve --role edge` process so its memory can be measured alone.
//! Timings come from this process's clock on both sides (the fake model
//! records when its first token left), so mesh overheads are exact.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use blaze_auth::{KeySet, Principal, tokens};
use blaze_kit::{Config, Secret, client::ServiceClients};
use blaze_llm::fake::{FakeModel, FakeOptions};
use blaze_proto::{artifacts as art, controlplane as cp};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::roles::{self, Mesh, Role};

pub struct BenchOptions {
    /// Where the report goes (besides stdout).
    pub out: Option<PathBuf>,
    /// Shorter runs (a smoke check of the benchmarks themselves).
    pub quick: bool,
    /// Benchmarks to run (empty = all): edge, sse, artifacts, create, ttft, preview, load.
    pub only: Vec<String>,
    /// Load test: concurrent users (default 8, quick 3).
    pub users: Option<usize>,
    /// Load test: how long it runs, in seconds (default 60, quick 20).
    pub seconds: Option<f64>,
}

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    if samples.is_empty() {
        return Stats::default();
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Stats { n: ms.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99), max: *ms.last().unwrap_or(&0.0) }
}

fn ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0} ms") } else { format!("{v:.1} ms") }
}

struct User {
    org: String,
    ws: String,
    api_token: String,
    internal: String,
}

/// The system under test.
struct Bench {
    cfg: Arc<Config>,
    keys: Arc<KeySet>,
    mesh: Option<Mesh>,
    edge: std::process::Child,
    edge_url: String,
    model: FakeModel,
    http: reqwest::Client,
    db_name: String,
    admin_url: String,
    _dirs: tempfile::TempDir,
    quick: bool,
}

/// Raise the open-file limit to its hard maximum (10,000 sockets and more).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with valid structs.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0)
        / 1024.0
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the name)
    (ticks(11) + ticks(12)) / 100.0
}

impl Bench {
    async fn start(mut cfg: Config, quick: bool) -> anyhow::Result<Bench> {
        raise_nofile();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let dirs = tempfile::tempdir()?;
        // A private database next to the configured one.
        let admin_url = cfg.database.migration_url.expose().to_owned();
        let mut url = url::Url::parse(&admin_url).context("database.migration_url")?;
        let db_name = format!("blaze_bench_{suffix}");
        url.set_path(&format!("/{db_name}"));
        cfg.database.migration_url = Secret(url.to_string());
        let mut app = url.clone();
        app.set_username("blaze_app").map_err(|_| anyhow::anyhow!("database URL"))?;
        app.set_password(None).map_err(|_| anyhow::anyhow!("database URL"))?;
        cfg.database.url = Secret(app.to_string());
        cfg.database.max_connections = 24;
        crate::dev::migrate_database(&cfg).await?;

        cfg.redis.key_prefix = format!("bench:{suffix}:");
        cfg.amqp.prefix = format!("bench{suffix}");
        cfg.s3.bucket = format!("bench-{suffix}");
        cfg.git.root = dirs.path().join("repos");
        cfg.sandbox.root = dirs.path().join("sandboxes");
        if cfg.sandbox.cache_root.is_relative() {
            cfg.sandbox.cache_root = std::env::temp_dir().join("blaze-test-cache");
        }
        cfg.auth.signing_key = Secret(KeySet::new_private_key_hex());
        cfg.auth.signing_key_id = 1;
        cfg.auth.dev_mode = false;
        cfg.secrets.encryption_key = Secret(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()));
        cfg.rate_limit.enabled = false;
        cfg.quotas.org_concurrent_previews = 1_000;
        cfg.quotas.org_requests_per_day = i64::MAX / 4;
        cfg.quotas.user_requests_per_day = i64::MAX / 4;
        cfg.llm.request_timeout_ms = 600_000;
        cfg.telemetry.log_filter = "warn".into();
        let model = FakeModel::start_with(FakeOptions::default()).await?;
        cfg.llm.demo_base_url = model.base_url();
        cfg.llm.allow_private_base_urls = true;
        for (listen, role) in [
            (&mut cfg.listen.identity, "identity"),
            (&mut cfg.listen.control_plane, "control-plane"),
            (&mut cfg.listen.orchestrator, "orchestrator"),
            (&mut cfg.listen.execution, "execution"),
            (&mut cfg.listen.artifacts, "artifacts"),
        ] {
            let _ = role;
            *listen = "127.0.0.1:0".into();
        }
        cfg.listen.metrics = String::new();
        let edge_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        cfg.listen.edge = format!("127.0.0.1:{edge_port}");
        let keys = roles::keys(&cfg)?;
        let roles_here: Vec<Role> = Role::ALL.into_iter().filter(|r| *r != Role::Edge).collect();
        let mesh = roles::start(cfg, &roles_here).await?;
        let cfg = mesh.cfg.clone();

        // The edge on its own, with this mesh's configuration.
        let config_file = dirs.path().join("edge.toml");
        std::fs::write(&config_file, toml::to_string(&*cfg)?)?;
        let edge = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--role", "edge", "--config"])
            .arg(&config_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dirs.path().join("edge.log"))?)
            .spawn()
            .context("starting the edge process")?;
        let edge_url = format!("http://127.0.0.1:{edge_port}");
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(300)).build()?;
        for _ in 0..200 {
            if http.get(format!("{edge_url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Bench { cfg, keys, mesh: Some(mesh), edge, edge_url, model, http, db_name, admin_url, _dirs: dirs, quick })
    }

    fn clients(&self) -> anyhow::Result<ServiceClients> {
        ServiceClients::new(&self.cfg, self.keys.clone(), "bench")
    }

    async fn user(&self, sub: &str) -> anyhow::Result<User> {
        let db = blaze_db::Db::connect(&self.cfg.database).await?;
        let claimed = blaze_identity::principal::Claimed {
            external_sub: sub.into(),
            email: Some(format!("{sub}@bench.test")),
            display_name: Some(sub.into()),
        };
        let (principal, user): (Principal, _) =
            blaze_identity::principal::resolve_claimed(&db, &claimed, 0).await.map_err(|e| anyhow::anyhow!(e.message))?;
        let org: uuid::Uuid = principal.default_org.parse()?;
        let minted = blaze_identity::api_tokens::mint(
            &db,
            &self.keys,
            blaze_identity::api_tokens::MintRequest {
                org_id: org,
                user_id: user.id,
                role: "owner",
                ttl: Duration::from_secs(6 * 3600),
                description: "bench",
                minted_by: None,
            },
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
        let ws = principal
            .workspaces
            .iter()
            .find(|w| w.org_id == principal.default_org && w.personal_default)
            .map(|w| w.id.clone())
            .unwrap_or_default();
        let internal = tokens::mint_internal(&self.keys, &principal, Duration::from_secs(6 * 3600))?;
        Ok(User { org: principal.default_org.clone(), ws, api_token: minted.token, internal })
    }

    fn api(&self, u: &User, path: &str) -> String {
        format!("{}/api/v1/orgs/{}/workspaces/{}{path}", self.edge_url, u.org, u.ws)
    }

    async fn call(&self, u: &User, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, self.api(u, path)).bearer_auth(&u.api_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn create_app(&self, u: &User, name: &str) -> anyhow::Result<(i64, i64)> {
        let (status, v) = self.call(u, reqwest::Method::POST, "/apps", Some(json!({"name": name}))).await?;
        anyhow::ensure!(status == 200, "create app: {status} {v}");
        Ok((v["data"]["app"]["id"].as_i64().unwrap_or(0), v["data"]["chatId"].as_i64().unwrap_or(0)))
    }

    async fn stop(mut self) {
        let _ = self.edge.kill();
        let _ = self.edge.wait();
        if let Some(m) = self.mesh.take() {
            m.stop().await;
        }
        if let Ok(store) = blaze_storage::objects::ObjectStore::new(&self.cfg.s3) {
            let _ = store.remove_bucket().await;
        }
        let _ = crate::dev::drop_database(&self.admin_url, &self.db_name).await;
    }
}

/// One SSE turn as the client sees it.
struct Turn {
    first_text_at: Option<Instant>,
    ids: Vec<String>,
    terminal: Option<String>,
    /// The data of the terminal event.
    terminal_data: String,
}

async fn stream_turn(http: &reqwest::Client, url: &str, token: &str, prompt: &str) -> anyhow::Result<Turn> {
    let resp =
        http.post(url).bearer_auth(token).json(&json!({"prompt": prompt, "selectedComponents": [], "attachments": []})).send().await?;
    anyhow::ensure!(resp.status().is_success(), "stream: {}", resp.status());
    read_events(resp).await
}

async fn read_events(resp: reqwest::Response) -> anyhow::Result<Turn> {
    let mut turn = Turn { first_text_at: None, ids: Vec::new(), terminal: None, terminal_data: String::new() };
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let (mut id, mut event, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let Some(event) = event else { continue };
            if let Some(id) = id {
                turn.ids.push(id);
            }
            if event == "chat:response:chunk" && turn.first_text_at.is_none() {
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let text = v["messages"].as_array().and_then(|m| m.last()).and_then(|m| m["content"].as_str()).unwrap_or_default();
                if !text.is_empty() {
                    turn.first_text_at = Some(Instant::now());
                }
            }
            if event != "chat:response:chunk" {
                turn.terminal = Some(event);
                turn.terminal_data = data;
            }
        }
    }
    Ok(turn)
}

/// No lost or repeated events: ids strictly increase and one terminal event.
fn sequence_ok(t: &Turn) -> bool {
    sequence_problem(t).is_none()
}

fn sequence_problem(t: &Turn) -> Option<String> {
    let key = |id: &str| id.split_once('-').map(|(a, b)| (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().unwrap_or(0))).unwrap_or((0, 0));
    if t.terminal.is_none() {
        return Some(format!("no terminal event after {} events", t.ids.len()));
    }
    t.ids.windows(2).find(|w| key(&w[0]) >= key(&w[1])).map(|w| format!("id {} after {}", w[1], w[0]))
}

pub async fn run(cfg: Config, opts: BenchOptions) -> anyhow::Result<()> {
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    let started = chrono::Utc::now();
    let b = Bench::start(cfg, opts.quick).await?;
    let mut report = Report::new(opts.quick);
    let result = async {
        let owner = b.user("bench-owner").await?;
        if wanted("edge") {
            edge_vs_grpc(&b, &owner, &mut report).await?;
        }
        if wanted("create") {
            create_apps(&b, &owner, &mut report).await?;
        }
        if wanted("artifacts") {
            artifacts(&b, &owner, &mut report).await?;
        }
        if wanted("ttft") {
            ttft(&b, &owner, &mut report).await?;
        }
        if wanted("preview") {
            previews(&b, &owner, &mut report).await?;
        }
        if wanted("sse") {
            idle_sse(&b, &owner, &mut report).await?;
        }
        if wanted("load") {
            load(&b, &opts, &mut report).await?;
        }
        anyhow::Ok(())
    }
    .await;
    report.resources(&b);
    b.stop().await;
    result?;
    let text = report.render(started);
    println!("{text}");
    if let Some(out) = &opts.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &text)?;
        println!("written to {}", out.display());
    }
    Ok(())
}

#[derive(Default)]
struct Report {
    quick: bool,
    rows: Vec<[String; 4]>,
    sections: Vec<String>,
    edge_rss: f64,
    edge_cpu: f64,
}

impl Report {
    fn new(quick: bool) -> Report {
        Report { quick, ..Default::default() }
    }

    /// A row of the summary: what, target, result, verdict.
    fn row(&mut self, what: &str, target: &str, result: String, pass: Option<bool>) {
        let verdict = match pass {
            Some(true) => "✅ met",
            Some(false) => "❌ missed",
            None => "—",
        };
        self.rows.push([what.into(), target.into(), result, verdict.into()]);
    }

    fn section(&mut self, text: String) {
        self.sections.push(text);
    }

    fn resources(&mut self, b: &Bench) {
        self.edge_rss = rss_mb(b.edge.id());
        self.edge_cpu = cpu_secs(b.edge.id());
    }

    fn render(&self, started: chrono::DateTime<chrono::Utc>) -> String {
        let mut out = String::new();
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpu
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
            / 1024.0;
        let profile = if cfg!(debug_assertions) { "dev (unoptimised)" } else { "release" };
        let _ = writeln!(out, "# Benchmarks\n");
        let _ =
            writeln!(out, "Produced by `make bench` (`blaze bench{}`) — do not edit by hand.\n", if self.quick { " --quick" } else { "" });
        let _ = writeln!(out, "- date: {}", started.format("%Y-%m-%d %H:%M UTC"));
        let _ = writeln!(out, "- machine: {cores} cores ({model}), {mem:.0} GiB RAM, {}", std::env::consts::OS);
        let _ = writeln!(
            out,
            "- build: {profile}; everything on this one machine (Postgres, Redis, RabbitMQ, s3s-fs, the mesh, the load generator)"
        );
        let _ = writeln!(out, "- model: the fake model (no network), 32-character chunks every 10 ms\n");
        let _ = writeln!(out, "## Summary against DESIGN §11\n");
        let _ = writeln!(out, "| what | target | result | |\n|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(out, "| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
        let _ = writeln!(out);
        for s in &self.sections {
            let _ = writeln!(out, "{s}");
        }
        let _ = writeln!(out, "## Resources\n\nEdge process at the end: {:.0} MB RSS, {:.1} s CPU.", self.edge_rss, self.edge_cpu);
        out
    }
}

/// Run `f` from `workers` tasks for `secs`; returns latencies.
async fn hammer<F, Fut>(workers: usize, secs: f64, f: F) -> (Vec<Duration>, usize)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < until {
                let t = Instant::now();
                if f().await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    (all, errors)
}

async fn edge_vs_grpc(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    for i in 0..3 {
        b.create_app(u, &format!("Listed {i}")).await?;
    }
    let secs = if b.quick { 3.0 } else { 10.0 };
    let mut text = String::from(
        "## Edge overhead: JSON through the edge vs native gRPC\n\nSame call (`ListApps`, 3 apps), same run. \n\n| path | concurrency | throughput | p50 | p99 | errors |\n|---|---|---|---|---|---|\n",
    );
    let cp_addr = b.mesh.as_ref().map(|m| m.addrs[&Role::ControlPlane]).context("mesh")?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{cp_addr}"))?.connect().await?;
    let url = b.api(u, "/apps");
    for c in [1usize, 64] {
        let (http, token, url2) = (b.http.clone(), u.api_token.clone(), url.clone());
        let (json_lat, json_err) = hammer(c, secs, move || {
            let (http, token, url) = (http.clone(), token.clone(), url2.clone());
            async move { http.get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        let (ch, internal, org, ws) = (channel.clone(), u.internal.clone(), u.org.clone(), u.ws.clone());
        let (grpc_lat, grpc_err) = hammer(c, secs, move || {
            let mut client = cp::app_service_client::AppServiceClient::new(ch.clone());
            let mut req = tonic::Request::new(cp::ListAppsRequest { org_id: org.clone(), workspace_id: ws.clone(), ..Default::default() });
            req.metadata_mut().insert("authorization", format!("Bearer {internal}").parse().expect("ascii"));
            async move { client.list_apps(req).await.is_ok() }
        })
        .await;
        let (j, g) = (stats(&json_lat), stats(&grpc_lat));
        let (jt, gt) = (json_lat.len() as f64 / secs, grpc_lat.len() as f64 / secs);
        let _ = writeln!(text, "| edge JSON | {c} | {jt:.0}/s | {} | {} | {json_err} |", ms(j.p50), ms(j.p99));
        let _ = writeln!(text, "| native gRPC | {c} | {gt:.0}/s | {} | {} | {grpc_err} |", ms(g.p50), ms(g.p99));
        let ratio = if gt > 0.0 { jt / gt } else { 0.0 };
        let extra = j.p99 - g.p99;
        report.row(
            &format!("edge vs gRPC, concurrency {c}"),
            "≥ 0.7× throughput, p99 ≤ +2 ms",
            format!("{ratio:.2}×, p99 {:+.1} ms", extra),
            Some(ratio >= 0.7 && extra <= 2.0),
        );
    }
    report.section(text);
    Ok(())
}

async fn create_apps(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    let n = if b.quick { 10 } else { 30 };
    let mut lat = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        b.create_app(u, &format!("Created {i}")).await?;
        lat.push(t.elapsed());
    }
    let s = stats(&lat);
    report.row("create app from template", "p95 < 300 ms", format!("p50 {}, p95 {} (n={n})", ms(s.p50), ms(s.p95)), Some(s.p95 < 300.0));
    Ok(())
}

async fn artifacts(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    let (app, _) = b.create_app(u, "Big Repo").await?;
    let mut repos = art::repository_service_client::RepositoryServiceClient::new(b.clients()?.intercepted("artifacts"));
    let repo = art::RepoRef { organization_id: u.org.clone(), app_id: app };
    let write = |path: String, content: String| art::FileChange {
        change: Some(art::file_change::Change::Write(art::FileWrite { path, content: content.into_bytes() })),
    };
    // a 500-file repository
    let files: Vec<_> =
        (0..500).map(|i| write(format!("src/gen/f{i:03}.ts"), format!("export const v{i} = {i};\n{}", "// filler\n".repeat(20)))).collect();
    repos
        .commit(art::CommitRequest { repo: Some(repo.clone()), changes: files, message: "500 files".into(), ..Default::default() })
        .await?;
    let commits = if b.quick { 15 } else { 50 };
    let mut commit_lat = Vec::new();
    for n in 0..commits {
        let changes: Vec<_> =
            (0..20).map(|i| write(format!("src/gen/f{:03}.ts", (n * 20 + i) % 500), format!("export const changed = {n};\n"))).collect();
        let t = Instant::now();
        repos
            .commit(art::CommitRequest { repo: Some(repo.clone()), changes, message: format!("change {n}"), ..Default::default() })
            .await?;
        commit_lat.push(t.elapsed());
    }
    let reads = if b.quick { 50 } else { 200 };
    let mut read_lat = Vec::new();
    for n in 0..reads {
        let t = Instant::now();
        repos
            .read_file(art::ReadFileRequest {
                repo: Some(repo.clone()),
                revision: String::new(),
                path: format!("src/gen/f{:03}.ts", (n * 37) % 500),
            })
            .await?;
        read_lat.push(t.elapsed());
    }
    let (c, r) = (stats(&commit_lat), stats(&read_lat));
    report.section(format!(
        "## Artifacts\n\n| operation | n | p50 | p95 |\n|---|---|---|---|\n| commit of a 20-file change set (500-file repo) | {} | {} | {} |\n| ReadFile on a 500-file repo | {} | {} | {} |\n",
        c.n, ms(c.p50), ms(c.p95), r.n, ms(r.p50), ms(r.p95)
    ));
    report.row("artifacts: 20-file commit / ReadFile", "(reported)", format!("p95 {} / {}", ms(c.p95), ms(r.p95)), None);
    Ok(())
}

async fn ttft(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    let n = if b.quick { 50 } else { 200 };
    let (app, first_chat) = b.create_app(u, "Streams").await?;
    let mut chats = vec![first_chat];
    while chats.len() < n {
        let (status, v) = b.call(u, reqwest::Method::POST, &format!("/apps/{app}/chats"), None).await?;
        anyhow::ensure!(status == 200, "create chat: {v}");
        chats.push(v["data"].as_i64().unwrap_or(0));
    }
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for (i, chat) in chats.iter().enumerate() {
        let (http, url, token) = (b.http.clone(), b.api(u, &format!("/chats/{chat}/stream")), u.api_token.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let turn = stream_turn(&http, &url, &token, &format!("[bench-ttft-{i}] hello")).await;
            (i, started, turn)
        }));
    }
    let mut overhead = Vec::new();
    let mut e2e = Vec::new();
    let mut failures = 0;
    let mut broken = 0;
    let mut problems = Vec::new();
    for t in tasks {
        let (i, started, turn) = t.await?;
        let Ok(turn) = turn else {
            failures += 1;
            continue;
        };
        if let Some(problem) = sequence_problem(&turn) {
            broken += 1;
            problems.push(problem);
        } else if turn.terminal.as_deref() != Some("chat:response:end") {
            broken += 1;
            problems.push(format!("{}: {:.200}", turn.terminal.as_deref().unwrap_or_default(), turn.terminal_data));
        }
        let Some(seen) = turn.first_text_at else {
            failures += 1;
            continue;
        };
        let sent = b.model.requests_containing(&format!("[bench-ttft-{i}]")).into_iter().find_map(|r| r.first_token_at);
        if let Some(sent) = sent {
            overhead.push(seen.saturating_duration_since(sent));
        }
        e2e.push(seen - started);
    }
    let took = wall.elapsed();
    let (o, e) = (stats(&overhead), stats(&e2e));
    report.section(format!(
        "## Chat streams: {n} concurrent turns\n\n| measure | p50 | p95 | p99 | max |\n|---|---|---|---|---|\n| first SSE chunk at the client − first token leaving the model (mesh overhead) | {} | {} | {} | {} |\n| request → first text at the client (TTFT, fake model) | {} | {} | {} | {} |\n\nAll {n} turns finished in {:.1} s ({:.1} turns/s); failed: {failures}; streams with a sequence error: {broken}.\n",
        ms(o.p50), ms(o.p95), ms(o.p99), ms(o.max), ms(e.p50), ms(e.p95), ms(e.p99), ms(e.max), took.as_secs_f64(), n as f64 / took.as_secs_f64()
    ));
    problems.sort();
    problems.dedup();
    for p in problems.iter().take(3) {
        report.section(format!("- broken stream: {p}\n"));
    }
    report.row(
        &format!("mesh overhead on first token, {n} streams"),
        "p95 < 10 ms",
        format!("p50 {}, p95 {}", ms(o.p50), ms(o.p95)),
        Some(o.p95 < 10.0 && failures == 0),
    );
    report.row("time to first token (seed requirement)", "p95 < 2 s", format!("p95 {}", ms(e.p95)), Some(e.p95 < 2000.0));
    Ok(())
}

/// A preview URL's host resolved to the edge (preview hosts are `*.localhost`).
fn preview_client(b: &Bench, url: &str) -> anyhow::Result<reqwest::Client> {
    let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or_default().to_owned();
    let edge: std::net::SocketAddr = b.edge_url.trim_start_matches("http://").parse()?;
    Ok(reqwest::Client::builder().resolve(&host, edge).timeout(Duration::from_secs(60)).build()?)
}

async fn previews(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    let runs = if b.quick { 3 } else { 10 };
    let (app, chat) = b.create_app(u, "Preview Bench").await?;
    // warm the dependency cache once (not part of a cold start by definition)
    let (status, v) = b.call(u, reqwest::Method::POST, &format!("/apps/{app}/run"), None).await?;
    anyhow::ensure!(status == 200, "run: {v}");
    let mut cold = Vec::new();
    for _ in 0..runs {
        b.call(u, reqwest::Method::POST, &format!("/apps/{app}/stop"), None).await?;
        let t = Instant::now();
        let (status, v) = b.call(u, reqwest::Method::POST, &format!("/apps/{app}/run"), None).await?;
        anyhow::ensure!(status == 200, "run: {v}");
        let url = v["data"]["previewUrl"].as_str().unwrap_or_default().to_owned();
        let client = preview_client(b, &url)?;
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "preview never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cold.push(t.elapsed());
    }
    let url = {
        let (_, v) = b.call(u, reqwest::Method::POST, &format!("/apps/{app}/run"), None).await?;
        v["data"]["previewUrl"].as_str().unwrap_or_default().to_owned()
    };
    let client = preview_client(b, &url)?;
    let mut after = Vec::new();
    for i in 0..runs {
        let marker = format!("Bench marker {i} {}", uuid::Uuid::new_v4().simple());
        b.model.add_fixture(
            &format!("bench-gen-{i}"),
            &format!(
                "<blaze-write path=\"src/App.tsx\">\nexport default function App() {{\n  return <h1>{marker}</h1>;\n}}\n</blaze-write>\n"
            ),
        );
        let turn = stream_turn(&b.http, &b.api(u, &format!("/chats/{chat}/stream")), &u.api_token, &format!("tc=bench-gen-{i}")).await?;
        anyhow::ensure!(turn.terminal.as_deref() == Some("chat:response:end"), "turn failed");
        let t = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{url}src/App.tsx")).send().await
                && r.text().await.is_ok_and(|body| body.contains(&marker))
            {
                break;
            }
            anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the preview never showed the change");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        after.push(t.elapsed());
    }
    b.call(u, reqwest::Method::POST, &format!("/apps/{app}/stop"), None).await?;
    let (c, a) = (stats(&cold), stats(&after));
    report.section(format!(
        "## Previews (default template, warm dependency cache)\n\n| measure | n | p50 | p95 | max |\n|---|---|---|---|---|\n| cold start: RunApp → HTTP 200 through the edge | {} | {} | {} | {} |\n| after a generation: commit → new content served (HMR sync, no restart) | {} | {} | {} | {} |\n",
        c.n, ms(c.p50), ms(c.p95), ms(c.max), a.n, ms(a.p50), ms(a.p95), ms(a.max)
    ));
    report.row("preview cold start", "p95 < 5 s", format!("p50 {}, p95 {}", ms(c.p50), ms(c.p95)), Some(c.p95 < 5000.0));
    report.row("preview ready after generation", "p95 < 3 s", format!("p50 {}, p95 {}", ms(a.p50), ms(a.p95)), Some(a.p95 < 3000.0));
    Ok(())
}

async fn idle_sse(b: &Bench, u: &User, report: &mut Report) -> anyhow::Result<()> {
    let target = if b.quick { 1_000 } else { 10_000 };
    let (_, chat) = b.create_app(u, "Idle Streams").await?;
    // a turn that never ends (the model hangs), so every follower stays idle
    let resp = b
        .http
        .post(b.api(u, &format!("/chats/{chat}/stream")))
        .bearer_auth(&u.api_token)
        .json(&json!({"prompt": "[hang] tc=long"}))
        .send()
        .await?;
    let mut first = resp.bytes_stream();
    let _ = first.next().await;
    let base_rss = rss_mb(b.edge.id());
    let addr: std::net::SocketAddr = b.edge_url.trim_start_matches("http://").parse()?;
    let path = format!("/api/v1/orgs/{}/workspaces/{}/chats/{chat}/stream", u.org, u.ws);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n", u.api_token);
    let mut held = Vec::with_capacity(target);
    let mut failed = 0;
    let batch = 250;
    while held.len() + failed < target {
        let mut opening = Vec::new();
        for _ in 0..batch.min(target - held.len() - failed) {
            let request = request.clone();
            opening.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(request.as_bytes()).await?;
                let mut head = vec![0u8; 512];
                let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut head)).await??;
                anyhow::ensure!(head[..n].starts_with(b"HTTP/1.1 200"), "not a stream: {}", String::from_utf8_lossy(&head[..n]));
                anyhow::Ok(s)
            }));
        }
        for o in opening {
            match o.await {
                Ok(Ok(s)) => held.push(s),
                _ => failed += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(if b.quick { 2 } else { 10 })).await;
    let rss = rss_mb(b.edge.id());
    let still_open = held.len();
    drop(held);
    drop(first);
    let (status, _) = b.call(u, reqwest::Method::POST, &format!("/chats/{chat}/stream/cancel"), None).await?;
    report.section(format!(
        "## Idle SSE connections on one edge process\n\n{still_open} connections held open ({failed} failed to open) for {} s: edge RSS {rss:.0} MB (baseline {base_rss:.0} MB, {:.1} KB per connection). Cancel after: {status}.\n",
        if b.quick { 2 } else { 10 },
        (rss - base_rss) * 1024.0 / still_open.max(1) as f64
    ));
    report.row(
        &format!("{target} idle SSE connections, one edge"),
        "< 300 MB RSS",
        format!("{rss:.0} MB ({still_open} open)"),
        Some(rss < 300.0 && failed == 0),
    );
    Ok(())
}

async fn load(b: &Bench, opts: &BenchOptions, report: &mut Report) -> anyhow::Result<()> {
    let users_n = opts.users.unwrap_or(if b.quick { 3 } else { 8 }).max(1);
    let secs = opts.seconds.unwrap_or(if b.quick { 20.0 } else { 60.0 }).max(1.0);
    let mut users = Vec::new();
    for i in 0..users_n {
        users.push(Arc::new(b.user(&format!("load-user-{i}")).await?));
    }
    let until = Instant::now() + Duration::from_secs_f64(secs);
    type Latencies = BTreeMap<&'static str, (Vec<Duration>, usize)>;
    let mut tasks = Vec::new();
    let (edge, http) = (b.edge_url.clone(), b.http.clone());
    let edge_addr: std::net::SocketAddr = b.edge_url.trim_start_matches("http://").parse()?;
    for (n, u) in users.iter().enumerate() {
        let (u, edge, http) = (u.clone(), edge.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Latencies = BTreeMap::new();
            let mut turns = 0;
            let mut lost = 0;
            let base = format!("{edge}/api/v1/orgs/{}/workspaces/{}", u.org, u.ws);
            let mut record = |route: &'static str, t: Instant, ok: bool| {
                let e = lat.entry(route).or_default();
                if ok {
                    e.0.push(t.elapsed());
                } else {
                    e.1 += 1;
                }
            };
            // one preview per user for the whole run
            let t = Instant::now();
            let created =
                http.post(format!("{base}/apps")).bearer_auth(&u.api_token).json(&json!({"name": format!("Load {n}")})).send().await;
            let v: Value = match created {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                _ => Value::Null,
            };
            record("POST apps", t, !v.is_null());
            let app = v["data"]["app"]["id"].as_i64().unwrap_or(0);
            let t = Instant::now();
            let run = http.post(format!("{base}/apps/{app}/run")).bearer_auth(&u.api_token).send().await;
            let preview: Value = match run {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                _ => Value::Null,
            };
            record("POST apps/{id}/run", t, !preview.is_null());
            let preview_url = preview["data"]["previewUrl"].as_str().unwrap_or_default().to_owned();
            let host = preview_url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or("x").to_owned();
            let preview_http = reqwest::Client::builder().resolve(&host, edge_addr).build().unwrap_or_default();
            let mut i = 0;
            while Instant::now() < until {
                i += 1;
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/apps"))
                    .bearer_auth(&u.api_token)
                    .json(&json!({"name": format!("Load {n}-{i}")}))
                    .send()
                    .await;
                let v: Value = match r {
                    Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                record("POST apps", t, !v.is_null());
                let chat = v["data"]["chatId"].as_i64().unwrap_or(0);
                for k in 0..2 {
                    let t = Instant::now();
                    let turn = stream_turn(&http, &format!("{base}/chats/{chat}/stream"), &u.api_token, &format!("load {n} {i} {k}")).await;
                    let ok = turn.as_ref().is_ok_and(|t| t.terminal.as_deref() == Some("chat:response:end"));
                    record("POST chats/{id}/stream (whole turn)", t, ok);
                    if let Ok(turn) = turn {
                        turns += 1;
                        // the replay must hold exactly what the client saw
                        let replay = http.get(format!("{base}/chats/{chat}/stream")).bearer_auth(&u.api_token).send().await;
                        let same = match replay {
                            Ok(r) => read_events(r).await.is_ok_and(|r| r.ids == turn.ids),
                            Err(_) => false,
                        };
                        if !sequence_ok(&turn) || !same {
                            lost += 1;
                        }
                    }
                }
                let t = Instant::now();
                let ok =
                    http.get(format!("{base}/chats/{chat}")).bearer_auth(&u.api_token).send().await.is_ok_and(|r| r.status().is_success());
                record("GET chats/{id}", t, ok);
                let t = Instant::now();
                let ok = http.get(format!("{base}/apps")).bearer_auth(&u.api_token).send().await.is_ok_and(|r| r.status().is_success());
                record("GET apps", t, ok);
                if !preview_url.is_empty() {
                    let t = Instant::now();
                    let ok = preview_http.get(&preview_url).send().await.is_ok_and(|r| r.status().is_success());
                    record("GET preview page", t, ok);
                }
            }
            let _ = http.post(format!("{base}/apps/{app}/stop")).bearer_auth(&u.api_token).send().await;
            (lat, turns, lost)
        }));
    }
    let mut all: Latencies = BTreeMap::new();
    let (mut turns, mut lost) = (0, 0);
    for t in tasks {
        let (lat, t_n, l) = t.await?;
        turns += t_n;
        lost += l;
        for (k, (v, e)) in lat {
            let entry = all.entry(k).or_default();
            entry.0.extend(v);
            entry.1 += e;
        }
    }
    let mut text = format!(
        "## Load: {users_n} users for {secs:.0} s\n\nEach user keeps one preview running and loops: create an app, two chat turns (each then replayed and compared), get the chat, list apps, load the preview page.\n\n| route | requests | errors | p50 | p95 | p99 |\n|---|---|---|---|---|---|\n"
    );
    let mut total = 0;
    let mut errors = 0;
    for (route, (lat, err)) in &all {
        let s = stats(lat);
        total += lat.len() + err;
        errors += err;
        let _ = writeln!(text, "| {route} | {} | {err} | {} | {} | {} |", lat.len() + err, ms(s.p50), ms(s.p95), ms(s.p99));
    }
    let _ = writeln!(text, "\n{turns} turns; streams with lost, repeated or unreplayable events: {lost}.");
    report.section(text);
    let rate = if total > 0 { errors as f64 * 100.0 / total as f64 } else { 0.0 };
    report.row(
        &format!("load ({users_n} users, {secs:.0} s)"),
        "no errors, no lost events",
        format!("{total} requests, {rate:.2}% errors, {lost} lost"),
        Some(errors == 0 && lost == 0),
    );
    Ok(())
}
