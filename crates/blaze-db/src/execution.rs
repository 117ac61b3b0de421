//! Jobs (a state machine with an optimistic version), previews and
//! deployments.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx, page::PageRequest};

pub const JOB_KINDS: [&str; 4] = ["preview", "build", "deploy", "install"];

#[derive(Debug, Clone, FromQueryResult)]
pub struct JobRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub app_id: i64,
    pub kind: String,
    pub state: String,
    pub version: i32,
    pub attempts: i32,
    pub error: Option<String>,
    pub commit_hash: Option<String>,
    pub payload: serde_json::Value,
    pub result: serde_json::Value,
    pub requested_by_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

const JOB_COLS: &str = "id, organization_id, workspace_id, app_id, kind, state, version, attempts, error, commit_hash, payload, result, \
                        requested_by_user_id, created_at, started_at, finished_at";

pub struct NewJob<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub app_id: i64,
    pub kind: &'a str,
    pub commit_hash: Option<&'a str>,
    pub payload: serde_json::Value,
    pub requested_by: Option<Uuid>,
}

pub async fn insert_job(tx: &Tx, j: NewJob<'_>) -> DbResult<JobRow> {
    tx.one(
        &format!(
            "INSERT INTO jobs (id, organization_id, workspace_id, app_id, kind, commit_hash, payload, requested_by_user_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {JOB_COLS}"
        ),
        vec![
            j.id.into(),
            j.org_id.into(),
            j.workspace_id.into(),
            j.app_id.into(),
            j.kind.into(),
            j.commit_hash.map(str::to_owned).into(),
            j.payload.into(),
            j.requested_by.into(),
        ],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

pub async fn job(tx: &Tx, org: Uuid, id: Uuid) -> DbResult<Option<JobRow>> {
    tx.one(&format!("SELECT {JOB_COLS} FROM jobs WHERE organization_id = $1 AND id = $2"), vec![org.into(), id.into()]).await
}

pub async fn job_in_workspace(tx: &Tx, org: Uuid, ws: Uuid, id: Uuid) -> DbResult<Option<JobRow>> {
    tx.one(
        &format!("SELECT {JOB_COLS} FROM jobs WHERE organization_id = $1 AND workspace_id = $2 AND id = $3"),
        vec![org.into(), ws.into(), id.into()],
    )
    .await
}

/// Newest first, optionally for one app.
pub async fn list_jobs(tx: &Tx, org: Uuid, ws: Uuid, app: Option<i64>, page: &PageRequest) -> DbResult<(Vec<JobRow>, String)> {
    let (before_t, before_id) = page
        .after
        .as_deref()
        .and_then(|a| a.split_once('|'))
        .and_then(|(t, i)| Some((DateTime::from_timestamp_micros(t.parse().ok()?)?, Uuid::parse_str(i).ok()?)))
        .unwrap_or((DateTime::<Utc>::MAX_UTC, Uuid::max()));
    let rows: Vec<JobRow> = tx
        .all(
            &format!(
                "SELECT {JOB_COLS} FROM jobs WHERE organization_id = $1 AND workspace_id = $2 AND ($3::bigint IS NULL OR app_id = $3)
                 AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT $6"
            ),
            vec![org.into(), ws.into(), app.into(), before_t.into(), before_id.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| format!("{}|{}", r.created_at.timestamp_micros(), r.id)))
}

/// Move a job from `from` states to `to` if its version is still `version`
/// (optimistic concurrency); returns the updated row, or None when someone
/// else moved it first.
pub async fn transition(
    tx: &Tx,
    org: Uuid,
    id: Uuid,
    version: i32,
    to: &str,
    error: Option<&str>,
    result: Option<serde_json::Value>,
) -> DbResult<Option<JobRow>> {
    let started = to == "running";
    let finished = matches!(to, "succeeded" | "failed" | "cancelled");
    tx.one(
        &format!(
            "UPDATE jobs SET state = $4, version = version + 1, error = $5,
                    result = COALESCE($6, result),
                    attempts = attempts + CASE WHEN $7 THEN 1 ELSE 0 END,
                    started_at = CASE WHEN $7 THEN now() ELSE started_at END,
                    finished_at = CASE WHEN $8 THEN now() ELSE finished_at END
             WHERE organization_id = $1 AND id = $2 AND version = $3 RETURNING {JOB_COLS}"
        ),
        vec![
            org.into(),
            id.into(),
            version.into(),
            to.into(),
            error.map(str::to_owned).into(),
            result.into(),
            started.into(),
            finished.into(),
        ],
    )
    .await
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct PreviewRow {
    pub organization_id: Uuid,
    pub app_id: i64,
    pub workspace_id: Uuid,
    pub preview_id: String,
    pub job_id: Option<Uuid>,
    pub state: String,
    pub upstream: Option<String>,
    pub commit_hash: Option<String>,
    pub last_access_at: DateTime<Utc>,
}

const PREVIEW_COLS: &str = "organization_id, app_id, workspace_id, preview_id, job_id, state, upstream, commit_hash, last_access_at";

pub async fn preview_of_app(tx: &Tx, org: Uuid, app: i64) -> DbResult<Option<PreviewRow>> {
    tx.one(&format!("SELECT {PREVIEW_COLS} FROM previews WHERE organization_id = $1 AND app_id = $2"), vec![org.into(), app.into()]).await
}

pub async fn preview_by_id(tx: &Tx, org: Uuid, preview_id: &str) -> DbResult<Option<PreviewRow>> {
    tx.one(
        &format!("SELECT {PREVIEW_COLS} FROM previews WHERE organization_id = $1 AND preview_id = $2"),
        vec![org.into(), preview_id.into()],
    )
    .await
}

/// Start (or restart) the app's preview record as `starting` under a new id.
pub async fn begin_preview(tx: &Tx, org: Uuid, ws: Uuid, app: i64, preview_id: &str, job: Uuid) -> DbResult<PreviewRow> {
    tx.one(
        &format!(
            "INSERT INTO previews (organization_id, app_id, workspace_id, preview_id, job_id, state, last_access_at)
             VALUES ($1, $2, $3, $4, $5, 'starting', now())
             ON CONFLICT (organization_id, app_id) DO UPDATE SET preview_id = EXCLUDED.preview_id, job_id = EXCLUDED.job_id,
                 state = 'starting', upstream = NULL, commit_hash = NULL, last_access_at = now()
             RETURNING {PREVIEW_COLS}"
        ),
        vec![org.into(), app.into(), ws.into(), preview_id.into(), job.into()],
    )
    .await?
    .ok_or_else(|| DbError::Other("upsert returned no row".into()))
}

/// Set the state of a preview (only the one with this id: a newer preview of
/// the app is never touched by an older run).
pub async fn set_preview_state(
    tx: &Tx,
    org: Uuid,
    preview_id: &str,
    state: &str,
    upstream: Option<&str>,
    commit: Option<&str>,
) -> DbResult<u64> {
    tx.execute(
        "UPDATE previews SET state = $3, upstream = COALESCE($4, upstream), commit_hash = COALESCE($5, commit_hash)
         WHERE organization_id = $1 AND preview_id = $2",
        vec![org.into(), preview_id.into(), state.into(), upstream.map(str::to_owned).into(), commit.map(str::to_owned).into()],
    )
    .await
}

pub async fn touch_preview(tx: &Tx, org: Uuid, preview_id: &str) -> DbResult<u64> {
    tx.execute(
        "UPDATE previews SET last_access_at = now() WHERE organization_id = $1 AND preview_id = $2 AND last_access_at < now() - interval '10 seconds'",
        vec![org.into(), preview_id.into()],
    )
    .await
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct OrgRow {
    pub org: Option<Uuid>,
}

/// The organisation of a preview id (any tenant; see migration 0006).
pub async fn preview_org(tx: &Tx, preview_id: &str) -> DbResult<Option<Uuid>> {
    Ok(tx.one::<OrgRow>("SELECT blaze_preview_org($1) AS org", vec![preview_id.into()]).await?.and_then(|r| r.org))
}

/// The organisation of an app host label (any tenant).
pub async fn alias_org(tx: &Tx, host_label: &str) -> DbResult<Option<Uuid>> {
    Ok(tx.one::<OrgRow>("SELECT blaze_alias_org($1) AS org", vec![host_label.into()]).await?.and_then(|r| r.org))
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct IdlePreview {
    pub organization_id: Uuid,
    pub app_id: i64,
    pub preview_id: String,
}

pub async fn idle_previews(tx: &Tx, idle_secs: i32) -> DbResult<Vec<IdlePreview>> {
    tx.all("SELECT organization_id, app_id, preview_id FROM blaze_idle_previews($1)", vec![idle_secs.into()]).await
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub app_id: i64,
    pub commit_hash: String,
    pub state: String,
    pub job_id: Option<Uuid>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub live: bool,
}

const DEPLOY_COLS: &str = "d.id, d.organization_id, d.workspace_id, d.app_id, d.commit_hash, d.state, d.job_id, d.prefix, d.created_at, \
                           EXISTS (SELECT 1 FROM deployment_aliases a WHERE a.organization_id = d.organization_id AND a.deployment_id = d.id) AS live";

pub struct NewDeployment<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub app_id: i64,
    pub commit_hash: &'a str,
    pub job_id: Uuid,
    pub prefix: &'a str,
}

pub async fn insert_deployment(tx: &Tx, d: NewDeployment<'_>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO deployments (id, organization_id, workspace_id, app_id, commit_hash, state, job_id, prefix)
         VALUES ($1, $2, $3, $4, $5, 'building', $6, $7)",
        vec![d.id.into(), d.org_id.into(), d.workspace_id.into(), d.app_id.into(), d.commit_hash.into(), d.job_id.into(), d.prefix.into()],
    )
    .await?;
    Ok(())
}

pub async fn deployment(tx: &Tx, org: Uuid, id: Uuid) -> DbResult<Option<DeploymentRow>> {
    tx.one(&format!("SELECT {DEPLOY_COLS} FROM deployments d WHERE d.organization_id = $1 AND d.id = $2"), vec![org.into(), id.into()])
        .await
}

pub async fn set_deployment_state(tx: &Tx, org: Uuid, id: Uuid, state: &str) -> DbResult<u64> {
    tx.execute("UPDATE deployments SET state = $3 WHERE organization_id = $1 AND id = $2", vec![org.into(), id.into(), state.into()]).await
}

pub async fn list_deployments(tx: &Tx, org: Uuid, app: i64) -> DbResult<Vec<DeploymentRow>> {
    tx.all(
        &format!(
            "SELECT {DEPLOY_COLS} FROM deployments d WHERE d.organization_id = $1 AND d.app_id = $2 ORDER BY d.created_at DESC, d.id DESC"
        ),
        vec![org.into(), app.into()],
    )
    .await
}

/// Point the app's host at a deployment.
pub async fn set_alias(tx: &Tx, org: Uuid, app: i64, host_label: &str, deployment: Uuid) -> DbResult<()> {
    tx.execute(
        "INSERT INTO deployment_aliases (organization_id, app_id, host_label, deployment_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (organization_id, app_id) DO UPDATE SET deployment_id = EXCLUDED.deployment_id, updated_at = now()",
        vec![org.into(), app.into(), host_label.into(), deployment.into()],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct AliasRow {
    pub organization_id: Uuid,
    pub app_id: i64,
    pub deployment_id: Uuid,
    pub prefix: String,
}

pub async fn alias(tx: &Tx, org: Uuid, host_label: &str) -> DbResult<Option<AliasRow>> {
    tx.one(
        "SELECT a.organization_id, a.app_id, a.deployment_id, d.prefix FROM deployment_aliases a
         JOIN deployments d ON d.organization_id = a.organization_id AND d.id = a.deployment_id
         WHERE a.organization_id = $1 AND a.host_label = $2",
        vec![org.into(), host_label.into()],
    )
    .await
}
