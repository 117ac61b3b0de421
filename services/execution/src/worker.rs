//! The job worker: consumes the queue and runs each job in a sandbox.
//!
//! Handlers are idempotent by job id: a job already finished is acked and
//! skipped; a job another worker is running is skipped unless RabbitMQ says
//! the message was redelivered (its worker died), and every state change is
//! a compare-and-swap on the row's version — so a redelivered job never
//! succeeds twice. Work failures (a build error) fail the job; failures of
//! the machinery (the sandbox can not start, artifacts unavailable) are
//! retried and finally parked with the error on the job.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use blaze_db::execution::{self as db, JobRow};
use blaze_kit::ApiError;
use blaze_queue::{Delivery, Outcome};
use blaze_sandbox::{Collect, Exit, Limits, Network, RunSpec, Sandbox, SandboxError, Source};
use uuid::Uuid;

use crate::{Shared, jobs::JobMessage, preview::probe};

/// Port of the dev server inside a preview sandbox.
const DEV_PORT: u16 = 5173;
/// Log lines quoted in a failed job's error.
const TAIL: usize = 12;

#[derive(Debug)]
pub enum JobError {
    /// The work itself failed (e.g. the app does not build): final.
    Failed(String),
    /// Something we depend on failed: try again later.
    Transient(String),
}

impl From<ApiError> for JobError {
    fn from(e: ApiError) -> Self {
        match e.code {
            tonic::Code::Unavailable
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted => JobError::Transient(e.message),
            _ => JobError::Failed(e.message),
        }
    }
}

impl From<SandboxError> for JobError {
    fn from(e: SandboxError) -> Self {
        match e {
            SandboxError::Spec(m) => JobError::Failed(m),
            other => JobError::Transient(other.to_string()),
        }
    }
}

type JobResult = Result<serde_json::Value, JobError>;

pub async fn handle(shared: Shared, d: Delivery) -> Outcome {
    let Ok(msg) = serde_json::from_slice::<JobMessage>(&d.body) else {
        return Outcome::Park("malformed job message".into());
    };
    let row = match shared.load_job(msg.org_id, msg.job_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Ack, // its app was deleted
        Err(e) => return Outcome::Retry(e.message),
    };
    if row.is_terminal() || (row.state == "running" && !d.redelivered) {
        return Outcome::Ack;
    }
    let running = match shared.transition(&row, "running", None, None).await {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Ack, // someone else moved it
        Err(e) => return Outcome::Retry(e.message),
    };
    tracing::info!(job = %running.id, kind = %running.kind, attempt = running.attempts, "running a job");
    let result = match running.kind.as_str() {
        "preview" => run_preview(&shared, &running).await,
        "build" => run_build(&shared, &running, false).await,
        "deploy" => run_build(&shared, &running, true).await,
        "install" => run_install(&shared, &running).await,
        other => Err(JobError::Failed(format!("unknown job kind {other:?}"))),
    };
    let current = match shared.load_job(running.organization_id, running.id).await {
        Ok(Some(r)) => r,
        _ => running.clone(),
    };
    if current.attempts != running.attempts || current.is_terminal() {
        // Cancelled, or a newer attempt owns the job now: its outcome is not ours.
        return Outcome::Ack;
    }
    match result {
        Ok(value) => {
            let _ = shared.finish(&current, "succeeded", None, Some(value)).await;
            Outcome::Ack
        }
        Err(JobError::Failed(m)) => {
            let _ = shared.finish(&current, "failed", Some(&m), None).await;
            after_failure(&shared, &current).await;
            Outcome::Ack
        }
        Err(JobError::Transient(m)) => {
            tracing::warn!(job = %current.id, attempt = d.attempt, error = %m, "job failed; will retry");
            if d.attempt >= shared.cfg.amqp.max_attempts {
                let note = format!("gave up after {} attempts: {m}", d.attempt);
                let _ = shared.finish(&current, "failed", Some(&note), None).await;
                after_failure(&shared, &current).await;
            } else {
                let _ = shared.transition(&current, "queued", Some(&m), None).await;
            }
            // The broker retries later, or parks it once attempts are used up.
            Outcome::Retry(m)
        }
    }
}

/// Records that follow a job's failure (its preview or deployment).
async fn after_failure(shared: &Shared, row: &JobRow) {
    let org = row.organization_id;
    let Ok(tx) = shared.db.tenant(org, None).await else { return };
    if let Some(p) = row.payload.get("previewId").and_then(|v| v.as_str()) {
        let _ = db::set_preview_state(&tx, org, p, "failed", None, None).await;
    }
    if let Some(d) = row.payload.get("deploymentId").and_then(|v| v.as_str()).and_then(|d| Uuid::parse_str(d).ok()) {
        let _ = db::set_deployment_state(&tx, org, d, "failed").await;
    }
    let _ = tx.commit().await;
}

fn limits(shared: &Shared, deadline: Duration) -> Limits {
    let s = &shared.cfg.sandbox;
    Limits { memory_mb: s.memory_mb, pids: s.pids, cpu_millis: s.cpu_quota_percent * 10, disk_mb: 4096, deadline }
}

fn spec(shared: &Shared, id: String, kind: &str, row: &JobRow, source: Source, command: &[&str], deadline: Duration) -> RunSpec {
    RunSpec {
        id,
        kind: kind.into(),
        labels: [
            ("org".to_owned(), row.organization_id.to_string()),
            ("app".to_owned(), row.app_id.to_string()),
            ("job".to_owned(), row.id.to_string()),
        ]
        .into(),
        source,
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        limits: limits(shared, deadline),
        network: Network::None,
        serve_port: None,
        collect: None,
    }
}

/// Forward a sandbox's log lines to the job's events; keep the last few.
fn forward_logs(shared: &Shared, job: Uuid, sb: &mut Sandbox) -> Arc<std::sync::Mutex<VecDeque<String>>> {
    let tail = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(TAIL)));
    let (_, empty) = tokio::sync::mpsc::channel(1);
    let mut logs = std::mem::replace(&mut sb.logs, empty);
    let shared = shared.clone();
    let t = tail.clone();
    tokio::spawn(async move {
        while let Some(l) = logs.recv().await {
            {
                let mut t = t.lock().expect("log tail");
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(l.line.clone());
            }
            shared.job_log(job, l.stream.as_str(), &l.line).await;
        }
    });
    tail
}

fn tail_text(tail: &std::sync::Mutex<VecDeque<String>>) -> String {
    tail.lock().expect("log tail").iter().cloned().collect::<Vec<_>>().join("\n")
}

/// Wait for a run to end, stopping it when the job is cancelled or another
/// worker took the job over (this one lost its broker connection and the
/// job was redelivered): only the newest attempt may finish it.
async fn wait_or_cancel(shared: &Shared, row: &JobRow, sb: &Sandbox) -> Exit {
    loop {
        tokio::select! {
            exit = sb.wait() => return exit,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let superseded = match shared.load_job(row.organization_id, row.id).await {
                    Ok(Some(now)) => now.attempts != row.attempts || now.is_terminal(),
                    _ => false,
                };
                if superseded || shared.cancel_requested(row.id).await {
                    sb.cancel();
                }
            }
        }
    }
}

/// `npm install` in a sandbox that may reach only the registry.
async fn install(shared: &Shared, row: &JobRow, run_id: String, dir: &std::path::Path, packages: &[String]) -> Result<(), JobError> {
    let mut command = vec!["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"];
    command.extend(packages.iter().map(String::as_str));
    let mut s =
        spec(shared, run_id, "install", row, Source::Dir(dir.to_owned()), &command, Duration::from_secs(shared.cfg.sandbox.deadline_secs));
    s.network = Network::Registry(shared.cfg.sandbox.npm_registry.clone());
    let mut sb = shared.driver.start(s).await?;
    shared.job_log(row.id, "system", &format!("installing dependencies {}", packages.join(" "))).await;
    let tail = forward_logs(shared, row.id, &mut sb);
    match wait_or_cancel(shared, row, &sb).await {
        Exit::Succeeded => Ok(()),
        exit => Err(JobError::Failed(format!("installing dependencies failed ({}):\n{}", exit.describe(), tail_text(&tail)))),
    }
}

/// A sandbox id per job attempt: a redelivered job never shares a
/// directory or cgroup with a previous attempt that may still be running.
fn run_id(prefix: char, row: &JobRow) -> String {
    format!("{prefix}{}-{}", &row.id.simple().to_string()[..24], row.attempts)
}

async fn run_preview(shared: &Shared, row: &JobRow) -> JobResult {
    let org = row.organization_id;
    let preview_id =
        row.payload.get("previewId").and_then(|v| v.as_str()).ok_or_else(|| JobError::Failed("no preview id".into()))?.to_owned();
    let template = row.payload.get("templateId").and_then(|v| v.as_str()).unwrap_or("react").to_owned();
    {
        let tx = shared.db.tenant(org, None).await.map_err(ApiError::from)?;
        let current = db::preview_of_app(&tx, org, row.app_id).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        if current.is_none_or(|p| p.preview_id != preview_id || p.state != "starting") {
            // A newer start (or a stop) replaced this one.
            return Ok(serde_json::json!({"previewId": preview_id, "skipped": "superseded"}));
        }
    }
    let (files, commit) = shared.files_at(org, row.app_id, row.commit_hash.as_deref().unwrap_or("")).await?;
    let project = shared.prepare(&preview_id, &template, &files).await?;
    if !project.deps_ready {
        install(shared, row, run_id('i', row), &project.dir, &[]).await?;
    }
    // 0.0.0.0: the sandbox has its own network namespace (local) or is reached
    // through a Service (kube), so all interfaces are the sandbox's own.
    let command = ["node", "node_modules/vite/bin/vite.js", "--host", "0.0.0.0", "--port", "5173", "--strictPort"];
    // A preview lives until stopped or idle; the deadline is only a backstop.
    let mut s =
        spec(shared, preview_id.clone(), "preview", row, Source::Dir(project.dir.clone()), &command, Duration::from_secs(24 * 3600));
    s.serve_port = Some(DEV_PORT);
    let started = std::time::Instant::now();
    let mut sb = shared.driver.start(s).await?;
    let tail = forward_logs(shared, row.id, &mut sb);
    let endpoint = sb.endpoint.clone().ok_or_else(|| JobError::Failed("the sandbox exposes no endpoint".into()))?;
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(shared.cfg.preview.ready_timeout_secs);
    loop {
        if let Some(exit) = sb.exited() {
            return Err(JobError::Failed(format!("the dev server stopped ({}):\n{}", exit.describe(), tail_text(&tail))));
        }
        if shared.cancel_requested(row.id).await {
            sb.cancel();
            return Err(JobError::Failed("cancelled".into()));
        }
        if probe(&endpoint).await.is_some() {
            break;
        }
        if tokio::time::Instant::now() >= ready_by {
            sb.cancel();
            return Err(JobError::Failed(format!(
                "the dev server did not answer within {} s:\n{}",
                shared.cfg.preview.ready_timeout_secs,
                tail_text(&tail)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blaze_kit::metrics::metrics().preview_ready_seconds.observe(started.elapsed().as_secs_f64());
    let sb = Arc::new(sb);
    shared.previews.insert(org, &preview_id, sb.clone());
    let upstream = endpoint.to_url();
    let tx = shared.db.tenant(org, None).await.map_err(ApiError::from)?;
    db::set_preview_state(&tx, org, &preview_id, "running", Some(&upstream), Some(&commit)).await.map_err(ApiError::from)?;
    tx.commit().await.map_err(ApiError::from)?;
    tokio::spawn(watch_preview(shared.clone(), org, row.app_id, preview_id.clone(), sb));
    Ok(serde_json::json!({"previewId": preview_id, "upstream": upstream, "commitHash": commit}))
}

/// Keep a preview's record and sandbox in step: a stopped or replaced
/// preview ends its sandbox; a crashed sandbox fails its preview.
async fn watch_preview(shared: Shared, org: Uuid, app: i64, preview_id: String, sb: Arc<Sandbox>) {
    loop {
        tokio::select! {
            exit = sb.wait() => {
                shared.previews.remove(&preview_id);
                if let Ok(tx) = shared.db.tenant(org, None).await {
                    if let Ok(Some(p)) = db::preview_by_id(&tx, org, &preview_id).await
                        && p.state == "running"
                    {
                        tracing::warn!(preview = %preview_id, exit = %exit.describe(), "a preview's dev server stopped");
                        let _ = db::set_preview_state(&tx, org, &preview_id, "failed", None, None).await;
                    }
                    let _ = tx.commit().await;
                }
                let _ = tokio::fs::remove_dir_all(shared.cfg.sandbox.root.join(&preview_id)).await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let current = match shared.db.tenant(org, None).await {
                    Ok(tx) => {
                        let p = db::preview_of_app(&tx, org, app).await.ok().flatten();
                        let _ = tx.commit().await;
                        p
                    }
                    Err(_) => continue,
                };
                if current.is_none_or(|p| p.preview_id != preview_id || !matches!(p.state.as_str(), "running" | "starting")) {
                    sb.cancel();
                }
            }
        }
    }
}

async fn run_build(shared: &Shared, row: &JobRow, deploy: bool) -> JobResult {
    let org = row.organization_id;
    let template = row.payload.get("templateId").and_then(|v| v.as_str()).unwrap_or("react").to_owned();
    let (files, commit) = shared.files_at(org, row.app_id, row.commit_hash.as_deref().unwrap_or("")).await?;
    let id = run_id('b', row);
    let project = shared.prepare(&id, &template, &files).await?;
    let result = async {
        if !project.deps_ready {
            install(shared, row, run_id('i', row), &project.dir, &[]).await?;
        }
        let mut s = spec(
            shared,
            id.clone(),
            if deploy { "deploy" } else { "build" },
            row,
            Source::Dir(project.dir.clone()),
            &["npm", "run", "build"],
            Duration::from_secs(shared.cfg.sandbox.deadline_secs),
        );
        let deployment = row.payload.get("deploymentId").and_then(|v| v.as_str()).and_then(|d| Uuid::parse_str(d).ok());
        let bundle_key = deployment.map(|d| format!("orgs/{org}/apps/{}/deployments/{d}.tar.gz", row.app_id));
        if let Some(key) = &bundle_key {
            let (url, _) = shared.objects.presign(key, http::Method::PUT, None).await.map_err(|e| JobError::Transient(e.to_string()))?;
            s.collect = Some(Collect { path: "dist".into(), put_url: url });
        }
        let mut sb = shared.driver.start(s).await?;
        shared.job_log(row.id, "system", &format!("building {commit}")).await;
        let tail = forward_logs(shared, row.id, &mut sb);
        match wait_or_cancel(shared, row, &sb).await {
            Exit::Succeeded => {}
            Exit::Cancelled => return Err(JobError::Failed("cancelled".into())),
            exit => return Err(JobError::Failed(format!("the build failed ({}):\n{}", exit.describe(), tail_text(&tail)))),
        }
        match (deployment, bundle_key) {
            (Some(d), Some(key)) => crate::deploy::publish(shared, row, d, &key, &commit).await,
            _ => Ok(serde_json::json!({"commitHash": commit})),
        }
    }
    .await;
    let _ = tokio::fs::remove_dir_all(shared.cfg.sandbox.root.join(&id)).await;
    result
}

async fn run_install(shared: &Shared, row: &JobRow) -> JobResult {
    let org = row.organization_id;
    let packages: Vec<String> = row.payload.get("packages").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    let (files, commit) = shared.files_at(org, row.app_id, row.commit_hash.as_deref().unwrap_or("")).await?;
    let id = run_id('i', row);
    let project = shared.prepare(&id, "react", &files).await?;
    let result = async {
        install(shared, row, id.clone(), &project.dir, &packages).await?;
        let read = |name: &str| std::fs::read_to_string(project.dir.join(name)).unwrap_or_default();
        Ok(serde_json::json!({"commitHash": commit, "package.json": read("package.json"), "package-lock.json": read("package-lock.json")}))
    }
    .await;
    let _ = tokio::fs::remove_dir_all(shared.cfg.sandbox.root.join(&id)).await;
    result
}

/// Stop previews nobody has looked at for a while.
pub async fn reap_idle(shared: Shared, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(shared.cfg.preview.reap_interval_secs.max(1))) => {}
        }
        let idle = shared.cfg.preview.idle_timeout_secs.min(i32::MAX as u64) as i32;
        let Ok(tx) = shared.db.global().await else { continue };
        let Ok(list) = db::idle_previews(&tx, idle).await else { continue };
        let _ = tx.commit().await;
        for p in list {
            tracing::info!(preview = %p.preview_id, app = p.app_id, "stopping an idle preview");
            let _ = shared.stop_preview(p.organization_id, &p.preview_id).await;
        }
        stop_orphans(&shared).await;
    }
}

/// Stops this process's previews whose row is gone (their app was deleted:
/// the row goes with it) or was stopped elsewhere. Nothing else would stop
/// them, since the idle reaper only sees rows.
async fn stop_orphans(shared: &Shared) {
    for (org, id) in shared.previews.list() {
        let Ok(tx) = shared.db.tenant(org, None).await else { continue };
        let Ok(row) = db::preview_by_id(&tx, org, &id).await else { continue };
        let _ = tx.commit().await;
        if row.is_none_or(|r| matches!(r.state.as_str(), "stopped" | "failed")) {
            tracing::info!(preview = %id, "stopping a preview whose app is gone");
            if let Some(sb) = shared.previews.remove(&id) {
                sb.cancel();
            }
        }
    }
}
