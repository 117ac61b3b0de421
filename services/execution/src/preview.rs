//! Previews (contract R18–R20): one dev server per app, in a sandbox,
//! served by the edge at `http://<preview-id>-<token>.preview.<edge host>`.
//!
//! The token is an HMAC of the organisation and the preview id, carried in
//! the host name itself: every request of the page (scripts, styles, the
//! HMR WebSocket) presents it without cookies, which browsers drop for
//! cross-site iframes — and the client shows previews in an iframe.
//!
//! `RunApp` queues a preview job and waits until the dev server answers; the
//! worker that ran it holds the sandbox and watches it (stopped, crashed,
//! replaced). After a chat turn commits, `SyncPreview` writes the changed
//! files into the running project, so Vite hot-reloads instead of
//! restarting.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use blaze_db::{
    apps,
    audit::{self, AuditEvent},
    execution::{self as db, NewJob},
};
use blaze_kit::{ApiError, ApiResult, RequestContext};
use blaze_proto::{
    artifacts::{self as art, repository_service_client::RepositoryServiceClient},
    controlplane::{self as cp, quota_service_client::QuotaServiceClient},
    execution::{self as pb, preview_service_server::PreviewService},
};
use blaze_sandbox::{Endpoint, Sandbox};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Scope, Shared, scope};

/// Sandboxes of previews this process runs.
#[derive(Default, Clone)]
pub struct Running {
    /// Preview id → (its organisation, its sandbox).
    inner: Arc<Mutex<HashMap<String, OwnedSandbox>>>,
}

type OwnedSandbox = (Uuid, Arc<Sandbox>);

impl Running {
    pub fn insert(&self, org: Uuid, id: &str, sb: Arc<Sandbox>) {
        self.inner.lock().expect("previews").insert(id.to_owned(), (org, sb));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.inner.lock().expect("previews").get(id).map(|(_, sb)| sb.clone())
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Sandbox>> {
        self.inner.lock().expect("previews").remove(id).map(|(_, sb)| sb)
    }

    /// `(org, preview id)` of every preview this process runs.
    pub fn list(&self) -> Vec<(Uuid, String)> {
        self.inner.lock().expect("previews").iter().map(|(id, (org, _))| (*org, id.clone())).collect()
    }

    /// Stop every preview of this process (shutdown).
    pub fn stop_all(&self) {
        for (_, sb) in self.inner.lock().expect("previews").values() {
            sb.cancel();
        }
    }
}

fn token_key(cfg: &blaze_kit::Config) -> Vec<u8> {
    if !cfg.preview.token_key.is_empty() {
        return cfg.preview.token_key.expose().as_bytes().to_vec();
    }
    // Derived, so one secret fewer to configure; a separate key rotates
    // preview links without touching API tokens.
    let mut h = Sha256::new();
    h.update(b"blaze preview token v1\0");
    h.update(cfg.auth.signing_key.expose().as_bytes());
    h.finalize().to_vec()
}

fn mac(key: &[u8], org: Uuid, preview_id: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(format!("{org}\0{preview_id}").as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// RFC 4648 base32, lowercase, no padding: DNS-label safe.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The preview's token: 80 bits of HMAC, as 16 base32 characters.
pub fn sign(cfg: &blaze_kit::Config, org: Uuid, preview_id: &str) -> String {
    base32(&mac(&token_key(cfg), org, preview_id)[..10])
}

pub fn verify(cfg: &blaze_kit::Config, org: Uuid, preview_id: &str, token: &str) -> bool {
    let expected = sign(cfg, org, preview_id);
    // constant time: the comparison must not tell how much of a guess matched
    expected.len() == token.len() && expected.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// (scheme, host[:port]) of the edge as users reach it.
pub fn public_base(cfg: &blaze_kit::Config) -> (String, String) {
    if let Ok(u) = url_parts(&cfg.edge.public_url) {
        return u;
    }
    let port = cfg.listen.edge.rsplit(':').next().unwrap_or("8080").to_owned();
    ("http".into(), format!("localhost:{port}"))
}

fn url_parts(url: &str) -> Result<(String, String), ()> {
    let (scheme, rest) = url.split_once("://").ok_or(())?;
    let host = rest.split('/').next().filter(|h| !h.is_empty()).ok_or(())?;
    Ok((scheme.to_owned(), host.to_owned()))
}

pub fn preview_url(cfg: &blaze_kit::Config, org: Uuid, preview_id: &str) -> String {
    let (scheme, host) = public_base(cfg);
    format!("{scheme}://{preview_id}-{}.preview.{host}/", sign(cfg, org, preview_id))
}

/// A new preview id: a DNS label that is also hard to guess.
pub fn new_preview_id() -> String {
    format!("p{}", &Uuid::new_v4().simple().to_string()[..20])
}

/// HTTP status of `GET /` at an endpoint (None: not answering yet).
pub async fn probe(endpoint: &Endpoint) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = b"GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: blaze-probe\r\n\r\n";
    let mut head = [0u8; 64];
    let n = match endpoint {
        Endpoint::Unix(path) => {
            let mut s = tokio::net::UnixStream::connect(path).await.ok()?;
            s.write_all(request).await.ok()?;
            s.read(&mut head).await.ok()?
        }
        Endpoint::Tcp(addr) => {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(request).await.ok()?;
            s.read(&mut head).await.ok()?
        }
    };
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn app_not_found() -> ApiError {
    ApiError::not_found("APP_NOT_FOUND", "App not found")
}

impl Shared {
    /// Start the app's preview (or return the running one) and wait until
    /// it answers.
    async fn run_preview(&self, s: &Scope, app_id: i64, force_new: bool) -> ApiResult<pb::PreviewRunResult> {
        let tx = self.db.tenant(s.org, s.user).await?;
        let app = apps::get(&tx, s.org, s.ws, app_id).await?.ok_or_else(app_not_found)?;
        tx.commit().await?;
        // One start at a time per app: concurrent runs share the result.
        let lease_name = format!("preview:{}:{}", s.org, app.id);
        let lease = loop {
            if let Some(l) =
                self.redis.acquire_lease(&lease_name, Duration::from_secs(30)).await.map_err(|e| ApiError::unavailable(e.to_string()))?
            {
                break l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let result = self.run_preview_locked(s, &app, force_new).await;
        let _ = self.redis.release_lease(&lease).await;
        result
    }

    async fn run_preview_locked(&self, s: &Scope, app: &apps::AppRow, force_new: bool) -> ApiResult<pb::PreviewRunResult> {
        let tx = self.db.tenant(s.org, s.user).await?;
        let existing = db::preview_of_app(&tx, s.org, app.id).await?;
        tx.commit().await?;
        if let Some(p) = &existing
            && p.state == "running"
            && !force_new
        {
            let alive = match p.upstream.as_deref().and_then(endpoint_of) {
                Some(ep) => probe(&ep).await.is_some(),
                None => false,
            };
            if alive {
                let url = preview_url(&self.cfg, s.org, &p.preview_id);
                return Ok(pb::PreviewRunResult { original_url: url.clone(), preview_url: url });
            }
        }
        if let Some(p) = &existing {
            self.stop_preview(s.org, &p.preview_id).await?;
        }
        // Concurrent previews are a hard quota (the stopped one no longer counts).
        let mut quota = QuotaServiceClient::new(self.clients.intercepted("control-plane"));
        quota
            .check_quota(cp::CheckQuotaRequest {
                organization_id: s.org.to_string(),
                workspace_id: s.ws.to_string(),
                user_id: s.user.map(|u| u.to_string()).unwrap_or_default(),
                metric: "concurrent_preview_jobs".into(),
                amount: 1,
                record: false,
            })
            .await
            .map_err(|e| ApiError::from_status(&e))?;

        let preview_id = new_preview_id();
        let job_id = Uuid::now_v7();
        let tx = self.db.tenant(s.org, s.user).await?;
        db::begin_preview(&tx, s.org, s.ws, app.id, &preview_id, job_id).await?;
        audit::record(&tx, AuditEvent::new(s.org, "preview_run", "app").workspace(s.ws).actor(s.user).resource(app.id)).await?;
        tx.commit().await?;
        let job = self
            .submit(NewJob {
                id: job_id,
                org_id: s.org,
                workspace_id: s.ws,
                app_id: app.id,
                kind: "preview",
                commit_hash: app.preview_ref.as_deref(),
                payload: serde_json::json!({"previewId": preview_id, "templateId": app.template_id}),
                requested_by: s.user,
            })
            .await?;
        let done = self.wait(s.org, job.id, Duration::from_secs(self.cfg.preview.ready_timeout_secs + 15)).await?;
        match done.state.as_str() {
            "succeeded" => {
                let url = preview_url(&self.cfg, s.org, &preview_id);
                Ok(pb::PreviewRunResult { original_url: url.clone(), preview_url: url })
            }
            _ => {
                let message = done.error.clone().unwrap_or_else(|| "the preview did not start in time".into());
                if !done.is_terminal() {
                    self.request_cancel(done.id).await;
                    let _ = self.finish(&done, "failed", Some("the preview did not start in time"), None).await;
                }
                Err(ApiError::unavailable(format!("The preview could not start: {message}")).with_reason("PREVIEW_FAILED"))
            }
        }
    }

    /// Mark a preview stopped; its holder notices and ends the sandbox.
    pub async fn stop_preview(&self, org: Uuid, preview_id: &str) -> ApiResult<()> {
        let tx = self.db.tenant(org, None).await?;
        db::set_preview_state(&tx, org, preview_id, "stopped", None, None).await?;
        tx.commit().await?;
        if let Some(sb) = self.previews.remove(preview_id) {
            sb.cancel();
        }
        Ok(())
    }

    /// Push a commit into a running preview of this process.
    async fn sync_preview(&self, org: Uuid, app: i64, commit: &str) -> ApiResult<pb::SyncPreviewResponse> {
        let tx = self.db.tenant(org, None).await?;
        let preview = db::preview_of_app(&tx, org, app).await?;
        tx.commit().await?;
        let Some(p) = preview.filter(|p| p.state == "running") else { return Ok(pb::SyncPreviewResponse::default()) };
        let Some(from) = p.commit_hash.clone() else { return Ok(pb::SyncPreviewResponse::default()) };
        if self.previews.get(&p.preview_id).is_none() || from == commit {
            return Ok(pb::SyncPreviewResponse::default());
        }
        let mut repos = RepositoryServiceClient::new(self.clients.intercepted("artifacts"))
            .max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES);
        let repo = art::RepoRef { organization_id: org.to_string(), app_id: app };
        let diff = repos
            .diff(art::DiffRequest { repo: Some(repo.clone()), from: from.clone(), to: commit.to_owned() })
            .await
            .map_err(|e| ApiError::from_status(&e))?
            .into_inner();
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        for f in &diff.files {
            if f.status == "deleted" || (f.status == "renamed" && !f.previous_path.is_empty()) {
                deletes.push(if f.status == "renamed" { f.previous_path.clone() } else { f.path.clone() });
            }
            if f.status != "deleted" {
                let file = repos
                    .read_file(art::ReadFileRequest { repo: Some(repo.clone()), revision: commit.to_owned(), path: f.path.clone() })
                    .await
                    .map_err(|e| ApiError::from_status(&e))?
                    .into_inner();
                writes.push((f.path.clone(), file.content));
            }
        }
        let manifests_changed = writes
            .iter()
            .map(|(p, _)| p.as_str())
            .chain(deletes.iter().map(String::as_str))
            .any(|p| p == "package.json" || p == "package-lock.json");
        if manifests_changed {
            // New dependencies need an install: start the preview over.
            let s = Scope { org, ws: p.workspace_id, user: None, request_id: String::new() };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.run_preview(&s, app, true).await {
                    tracing::warn!(app, error = %e.message, "restarting the preview for new dependencies failed");
                }
            });
            return Ok(pb::SyncPreviewResponse { synced: false, ..Default::default() });
        }
        let written = self.driver.write_files(&p.preview_id, &writes, &deletes).await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        if !written {
            return Ok(pb::SyncPreviewResponse::default());
        }
        let tx = self.db.tenant(org, None).await?;
        db::set_preview_state(&tx, org, &p.preview_id, "running", None, Some(commit)).await?;
        tx.commit().await?;
        Ok(pb::SyncPreviewResponse { synced: true, files_written: writes.len() as i32, files_deleted: deletes.len() as i32 })
    }
}

/// `unix:/path` or `http://host:port` back to an endpoint.
pub fn endpoint_of(upstream: &str) -> Option<Endpoint> {
    if let Some(p) = upstream.strip_prefix("unix:") {
        return Some(Endpoint::Unix(p.into()));
    }
    upstream.strip_prefix("http://").map(|a| Endpoint::Tcp(a.trim_end_matches('/').to_owned()))
}

pub struct Previews {
    shared: Shared,
}

impl Previews {
    pub(crate) fn new(shared: Shared) -> Self {
        Previews { shared }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl PreviewService for Previews {
    async fn run_app(&self, req: Request<pb::RunAppRequest>) -> Rpc<pb::RunAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let result = self.shared.run_preview(&s, r.app_id, false).await?;
        Ok(Response::new(pb::RunAppResponse { data: Some(result) }))
    }

    async fn stop_app(&self, req: Request<pb::StopAppRequest>) -> Rpc<pb::StopAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        apps::get(&tx, s.org, s.ws, r.app_id).await.map_err(ApiError::from)?.ok_or_else(app_not_found)?;
        let preview = db::preview_of_app(&tx, s.org, r.app_id).await.map_err(ApiError::from)?;
        audit::record(&tx, AuditEvent::new(s.org, "preview_stop", "app").workspace(s.ws).actor(s.user).resource(r.app_id))
            .await
            .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        if let Some(p) = preview {
            self.shared.stop_preview(s.org, &p.preview_id).await?;
        }
        Ok(Response::new(pb::StopAppResponse {}))
    }

    async fn restart_app(&self, req: Request<pb::RestartAppRequest>) -> Rpc<pb::RestartAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        apps::get(&tx, s.org, s.ws, r.app_id).await.map_err(ApiError::from)?.ok_or_else(app_not_found)?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "preview_restart", "app")
                .workspace(s.ws)
                .actor(s.user)
                .resource(r.app_id)
                .metadata(serde_json::json!({"removeNodeModules": r.remove_node_modules.unwrap_or(false)})),
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        // Every start links a fresh node_modules from the warm cache, so a
        // restart always gets clean dependencies (removeNodeModules included).
        let result = self.shared.run_preview(&s, r.app_id, true).await?;
        Ok(Response::new(pb::RestartAppResponse {
            data: Some(pb::PreviewRestartResult { success: true, preview_url: result.preview_url, original_url: result.original_url }),
        }))
    }

    async fn sync_preview(&self, req: Request<pb::SyncPreviewRequest>) -> Rpc<pb::SyncPreviewResponse> {
        let r = req.into_inner();
        let org = Uuid::parse_str(&r.organization_id).map_err(|_| ApiError::invalid("invalid organization id"))?;
        Ok(Response::new(self.shared.sync_preview(org, r.app_id, &r.commit_hash).await?))
    }

    async fn resolve_preview(&self, req: Request<pb::ResolvePreviewRequest>) -> Rpc<pb::ResolvePreviewResponse> {
        let r = req.into_inner();
        let not_found = || ApiError::not_found("PREVIEW_NOT_FOUND", "This preview is not running");
        let tx = self.shared.db.global().await.map_err(ApiError::from)?;
        let org = db::preview_org(&tx, &r.preview_id).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        let Some(org) = org else { return Err(not_found().into()) };
        if !verify(&self.shared.cfg, org, &r.preview_id, &r.token) {
            // Same answer as an unknown preview: a token proves nothing here.
            return Err(not_found().into());
        }
        let tx = self.shared.db.tenant(org, None).await.map_err(ApiError::from)?;
        let row = db::preview_by_id(&tx, org, &r.preview_id)
            .await
            .map_err(ApiError::from)?
            .filter(|p| p.state == "running")
            .ok_or_else(not_found)?;
        db::touch_preview(&tx, org, &r.preview_id).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ResolvePreviewResponse {
            upstream: row.upstream.unwrap_or_default(),
            organization_id: org.to_string(),
            app_id: row.app_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_tokens_are_bound_to_org_and_preview() {
        let mut cfg = blaze_kit::Config::default();
        cfg.auth.signing_key = blaze_kit::Secret("k".repeat(64));
        let org = Uuid::now_v7();
        let t = sign(&cfg, org, "pabc");
        assert_eq!(t.len(), 16);
        assert!(t.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert!(verify(&cfg, org, "pabc", &t));
        assert!(!verify(&cfg, org, "pother", &t));
        assert!(!verify(&cfg, Uuid::now_v7(), "pabc", &t));
        assert!(!verify(&cfg, org, "pabc", &t[..15]));
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        cfg.edge.public_url = "https://blaze.example.com/".into();
        assert_eq!(preview_url(&cfg, org, "pabc"), format!("https://pabc-{t}.preview.blaze.example.com/"));
        assert_eq!(endpoint_of("unix:/x/s.sock"), Some(Endpoint::Unix("/x/s.sock".into())));
        assert!(new_preview_id().len() == 21 && blaze_sandbox::valid_id(&new_preview_id()));
    }
}
