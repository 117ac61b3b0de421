//! Deployments: a build job publishes `dist/` as an immutable object prefix;
//! the app's host `<label>.apps.<edge host>` points at one deployment
//! (promote = point it at a newer one, rollback = at an older one).

use std::io::Read;

use blaze_db::{
    apps,
    audit::{self, AuditEvent},
    execution::{self as db, DeploymentRow, NewDeployment, NewJob},
};
use blaze_kit::{ApiError, RequestContext, timestamp};
use blaze_proto::{
    artifacts::{self as art, repository_service_client::RepositoryServiceClient},
    execution::{self as pb, deploy_service_server::DeployService},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Shared, preview::public_base, scope, worker::JobError};

/// Files of one deployment at most (a runaway build output is refused).
const MAX_FILES: usize = 5_000;

/// The app's stable host label: its name as a slug plus its id.
pub fn host_label(app: &apps::AppRow) -> String {
    let slug: String = app
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(40).collect();
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { format!("app-{}", app.id) } else { format!("{slug}-{}", app.id) }
}

pub fn app_url(cfg: &blaze_kit::Config, label: &str) -> String {
    let (scheme, host) = public_base(cfg);
    format!("{scheme}://{label}.apps.{host}/")
}

fn view(cfg: &blaze_kit::Config, d: &DeploymentRow, label: &str) -> pb::Deployment {
    pb::Deployment {
        id: d.id.to_string(),
        app_id: d.app_id,
        commit_hash: d.commit_hash.clone(),
        state: d.state.clone(),
        live: d.live,
        url: app_url(cfg, label),
        job_id: d.job_id.map(|j| j.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(d.created_at)),
    }
}

/// Unpack a build's `dist` bundle into the deployment's prefix; then the
/// deployment is ready (and live when asked).
pub async fn publish(
    shared: &Shared,
    row: &db::JobRow,
    deployment: Uuid,
    bundle_key: &str,
    commit: &str,
) -> Result<serde_json::Value, JobError> {
    let org = row.organization_id;
    let bundle = shared.objects.get(bundle_key).await.map_err(|e| JobError::Transient(e.to_string()))?;
    let files = tokio::task::spawn_blocking(move || unpack(&bundle))
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?
        .map_err(JobError::Failed)?;
    if !files.iter().any(|(p, _)| p == "index.html") {
        return Err(JobError::Failed("the build produced no dist/index.html".into()));
    }
    let prefix = format!("orgs/{org}/apps/{}/deployments/{deployment}/site", row.app_id);
    for (path, content) in files {
        shared
            .objects
            .put(&format!("{prefix}/{path}"), bytes::Bytes::from(content))
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
    }
    let _ = shared.objects.delete(bundle_key).await;
    let promote = row.payload.get("promote").and_then(|v| v.as_bool()).unwrap_or(false);
    let tx = shared.db.tenant(org, None).await.map_err(ApiError::from)?;
    db::set_deployment_state(&tx, org, deployment, "ready").await.map_err(ApiError::from)?;
    let app =
        apps::get_in_org(&tx, org, row.app_id).await.map_err(ApiError::from)?.ok_or_else(|| JobError::Failed("the app is gone".into()))?;
    let label = host_label(&app);
    if promote {
        db::set_alias(&tx, org, app.id, &label, deployment).await.map_err(ApiError::from)?;
    }
    tx.commit().await.map_err(ApiError::from)?;
    Ok(
        serde_json::json!({"deploymentId": deployment.to_string(), "commitHash": commit, "url": app_url(&shared.cfg, &label), "live": promote}),
    )
}

/// The files of a `.tar.gz` (regular files only, safe relative paths).
fn unpack(tar_gz: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| e.to_string())?.to_string_lossy().trim_start_matches("./").to_owned();
        let Ok(clean) = blaze_storage::paths::normalize(&path) else { return Err(format!("unsafe path in the build output: {path}")) };
        let mut content = Vec::new();
        entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
        out.push((clean, content));
        if out.len() > MAX_FILES {
            return Err(format!("the build output has more than {MAX_FILES} files"));
        }
    }
    Ok(out)
}

fn app_not_found() -> ApiError {
    ApiError::not_found("APP_NOT_FOUND", "App not found")
}

fn deployment_not_found() -> ApiError {
    ApiError::not_found("DEPLOYMENT_NOT_FOUND", "Deployment not found")
}

pub struct Deployments {
    shared: Shared,
}

impl Deployments {
    pub(crate) fn new(shared: Shared) -> Self {
        Deployments { shared }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl DeployService for Deployments {
    async fn create_deployment(&self, req: Request<pb::CreateDeploymentRequest>) -> Rpc<pb::CreateDeploymentResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let shared = &self.shared;
        let tx = shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let app = apps::get(&tx, s.org, s.ws, r.app_id).await.map_err(ApiError::from)?.ok_or_else(app_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        // Resolve the commit now: a deployment is of one exact version.
        let mut repos = RepositoryServiceClient::new(shared.clients.intercepted("artifacts"));
        let repo = Some(art::RepoRef { organization_id: s.org.to_string(), app_id: app.id });
        let commit = if r.commit_hash.is_empty() {
            repos.get_head(art::GetHeadRequest { repo }).await.map_err(|e| ApiError::from_status(&e))?.into_inner().commit_hash
        } else {
            repos
                .list_files(art::ListFilesRequest { repo, revision: r.commit_hash.clone(), include_content: false, max_content_bytes: 0 })
                .await
                .map_err(|e| ApiError::from_status(&e))?
                .into_inner()
                .commit_hash
        };
        let deployment = Uuid::now_v7();
        let job_id = Uuid::now_v7();
        let tx = shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        db::insert_deployment(
            &tx,
            NewDeployment {
                id: deployment,
                org_id: s.org,
                workspace_id: s.ws,
                app_id: app.id,
                commit_hash: &commit,
                job_id,
                prefix: &format!("orgs/{}/apps/{}/deployments/{deployment}/site", s.org, app.id),
            },
        )
        .await
        .map_err(ApiError::from)?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "deployment_create", "app")
                .workspace(s.ws)
                .actor(s.user)
                .resource(app.id)
                .metadata(serde_json::json!({"deploymentId": deployment.to_string(), "commitHash": commit, "promote": r.promote})),
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        shared
            .submit(NewJob {
                id: job_id,
                org_id: s.org,
                workspace_id: s.ws,
                app_id: app.id,
                kind: "deploy",
                commit_hash: Some(&commit),
                payload: serde_json::json!({"deploymentId": deployment.to_string(), "promote": r.promote, "templateId": app.template_id}),
                requested_by: s.user,
            })
            .await?;
        let tx = shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let row = db::deployment(&tx, s.org, deployment).await.map_err(ApiError::from)?.ok_or_else(deployment_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CreateDeploymentResponse { data: Some(view(&shared.cfg, &row, &host_label(&app))) }))
    }

    async fn list_deployments(&self, req: Request<pb::ListDeploymentsRequest>) -> Rpc<pb::ListDeploymentsResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let app = apps::get(&tx, s.org, s.ws, r.app_id).await.map_err(ApiError::from)?.ok_or_else(app_not_found)?;
        let rows = db::list_deployments(&tx, s.org, app.id).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        let label = host_label(&app);
        Ok(Response::new(pb::ListDeploymentsResponse {
            data: rows.iter().map(|d| view(&self.shared.cfg, d, &label)).collect(),
            next_page_token: String::new(),
        }))
    }

    async fn promote_deployment(&self, req: Request<pb::PromoteDeploymentRequest>) -> Rpc<pb::PromoteDeploymentResponse> {
        let ctx = RequestContext::of(&req)?;
        let s = scope(&ctx)?;
        let r = req.into_inner();
        let id = Uuid::parse_str(&r.deployment_id).map_err(|_| deployment_not_found())?;
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let app = apps::get(&tx, s.org, s.ws, r.app_id).await.map_err(ApiError::from)?.ok_or_else(app_not_found)?;
        let d = db::deployment(&tx, s.org, id)
            .await
            .map_err(ApiError::from)?
            .filter(|d| d.app_id == app.id)
            .ok_or_else(deployment_not_found)?;
        if d.state != "ready" {
            return Err(ApiError::precondition("DEPLOYMENT_NOT_READY", format!("The deployment is {}, not ready", d.state)).into());
        }
        let label = host_label(&app);
        db::set_alias(&tx, s.org, app.id, &label, d.id).await.map_err(ApiError::from)?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "deployment_promote", "app")
                .workspace(s.ws)
                .actor(s.user)
                .resource(app.id)
                .metadata(serde_json::json!({"deploymentId": d.id.to_string()})),
        )
        .await
        .map_err(ApiError::from)?;
        let d = db::deployment(&tx, s.org, id).await.map_err(ApiError::from)?.ok_or_else(deployment_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::PromoteDeploymentResponse { data: Some(view(&self.shared.cfg, &d, &label)) }))
    }

    async fn resolve_deployment(&self, req: Request<pb::ResolveDeploymentRequest>) -> Rpc<pb::ResolveDeploymentResponse> {
        let r = req.into_inner();
        let not_found = || ApiError::not_found("DEPLOYMENT_NOT_FOUND", "Nothing is deployed at this address");
        let tx = self.shared.db.global().await.map_err(ApiError::from)?;
        let org = db::alias_org(&tx, &r.host_label).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        let org = org.ok_or_else(not_found)?;
        let tx = self.shared.db.tenant(org, None).await.map_err(ApiError::from)?;
        let alias = db::alias(&tx, org, &r.host_label).await.map_err(ApiError::from)?.ok_or_else(not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ResolveDeploymentResponse {
            organization_id: org.to_string(),
            app_id: alias.app_id,
            deployment_id: alias.deployment_id.to_string(),
            prefix: alias.prefix,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_dns_safe_and_unique_by_id() {
        let mut app = apps::AppRow {
            id: 42,
            organization_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            project_id: Uuid::nil(),
            created_by_user_id: None,
            name: "My Todo App!".into(),
            path: String::new(),
            template_id: "react".into(),
            install_command: None,
            start_command: None,
            is_favorite: false,
            preview_ref: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        assert_eq!(host_label(&app), "my-todo-app-42");
        app.name = "Приложение".into();
        assert_eq!(host_label(&app), "app-42");
    }
}
