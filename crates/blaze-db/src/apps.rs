//! Apps of a workspace.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx, page::PageRequest};

#[derive(Debug, Clone, FromQueryResult)]
pub struct AppRow {
    pub id: i64,
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub project_id: Uuid,
    pub created_by_user_id: Option<Uuid>,
    pub name: String,
    pub path: String,
    pub template_id: String,
    pub install_command: Option<String>,
    pub start_command: Option<String>,
    pub is_favorite: bool,
    pub preview_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLS: &str = "id, organization_id, workspace_id, project_id, created_by_user_id, name, path, template_id, install_command, \
                    start_command, is_favorite, preview_ref, created_at, updated_at";

/// Cursor of newest-first lists: `<created_at micros>:<id>`.
fn cursor(created_at: DateTime<Utc>, id: i64) -> String {
    format!("{}:{id}", created_at.timestamp_micros())
}

fn parse_cursor(page: &PageRequest) -> (DateTime<Utc>, i64) {
    page.after
        .as_deref()
        .and_then(|a| a.split_once(':'))
        .and_then(|(t, i)| Some((DateTime::from_timestamp_micros(t.parse().ok()?)?, i.parse().ok()?)))
        .unwrap_or((DateTime::<Utc>::MAX_UTC, i64::MAX))
}

pub struct NewApp<'a> {
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub project_id: Uuid,
    pub created_by: Option<Uuid>,
    pub name: &'a str,
    pub path: &'a str,
    pub template_id: &'a str,
}

pub async fn insert(tx: &Tx, a: NewApp<'_>) -> DbResult<AppRow> {
    tx.one(
        &format!(
            "INSERT INTO apps (organization_id, workspace_id, project_id, created_by_user_id, name, path, template_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLS}"
        ),
        vec![
            a.org_id.into(),
            a.workspace_id.into(),
            a.project_id.into(),
            a.created_by.into(),
            a.name.into(),
            a.path.into(),
            a.template_id.into(),
        ],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

pub async fn get(tx: &Tx, org: Uuid, ws: Uuid, id: i64) -> DbResult<Option<AppRow>> {
    tx.one(
        &format!("SELECT {COLS} FROM apps WHERE organization_id = $1 AND workspace_id = $2 AND id = $3"),
        vec![org.into(), ws.into(), id.into()],
    )
    .await
}

/// An app by id within the organisation, whatever its workspace (internal
/// callers that only know the organisation).
pub async fn get_in_org(tx: &Tx, org: Uuid, id: i64) -> DbResult<Option<AppRow>> {
    tx.one(&format!("SELECT {COLS} FROM apps WHERE organization_id = $1 AND id = $2"), vec![org.into(), id.into()]).await
}

/// Newest first.
pub async fn list(tx: &Tx, org: Uuid, ws: Uuid, page: &PageRequest) -> DbResult<(Vec<AppRow>, String)> {
    let (at, id) = parse_cursor(page);
    let rows: Vec<AppRow> = tx
        .all(
            &format!(
                "SELECT {COLS} FROM apps WHERE organization_id = $1 AND workspace_id = $2 AND (created_at, id) < ($3, $4)
                 ORDER BY created_at DESC, id DESC LIMIT $5"
            ),
            vec![org.into(), ws.into(), at.into(), id.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| cursor(r.created_at, r.id)))
}

/// Case-insensitive substring search on names; `%`, `_` and `\` in the
/// query match themselves.
pub async fn search(tx: &Tx, org: Uuid, ws: Uuid, q: &str, page: &PageRequest) -> DbResult<(Vec<AppRow>, String)> {
    let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    let (at, id) = parse_cursor(page);
    let rows: Vec<AppRow> = tx
        .all(
            &format!(
                "SELECT {COLS} FROM apps WHERE organization_id = $1 AND workspace_id = $2 AND name ILIKE '%' || $3 || '%' ESCAPE '\\'
                 AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT $6"
            ),
            vec![org.into(), ws.into(), escaped.into(), at.into(), id.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| cursor(r.created_at, r.id)))
}

pub async fn update(tx: &Tx, org: Uuid, ws: Uuid, id: i64, name: Option<&str>, is_favorite: Option<bool>) -> DbResult<Option<AppRow>> {
    tx.one(
        &format!(
            "UPDATE apps SET name = COALESCE($4, name), is_favorite = COALESCE($5, is_favorite)
             WHERE organization_id = $1 AND workspace_id = $2 AND id = $3 RETURNING {COLS}"
        ),
        vec![org.into(), ws.into(), id.into(), name.map(str::to_owned).into(), is_favorite.into()],
    )
    .await
}

pub async fn toggle_favorite(tx: &Tx, org: Uuid, ws: Uuid, id: i64) -> DbResult<Option<bool>> {
    #[derive(FromQueryResult)]
    struct F {
        is_favorite: bool,
    }
    Ok(tx
        .one::<F>(
            "UPDATE apps SET is_favorite = NOT is_favorite WHERE organization_id = $1 AND workspace_id = $2 AND id = $3 RETURNING is_favorite",
            vec![org.into(), ws.into(), id.into()],
        )
        .await?
        .map(|f| f.is_favorite))
}

pub async fn set_preview_ref(tx: &Tx, org: Uuid, id: i64, preview_ref: Option<&str>) -> DbResult<u64> {
    tx.execute(
        "UPDATE apps SET preview_ref = $3 WHERE organization_id = $1 AND id = $2",
        vec![org.into(), id.into(), preview_ref.map(str::to_owned).into()],
    )
    .await
}

pub async fn delete(tx: &Tx, org: Uuid, ws: Uuid, id: i64) -> DbResult<u64> {
    tx.execute("DELETE FROM apps WHERE organization_id = $1 AND workspace_id = $2 AND id = $3", vec![org.into(), ws.into(), id.into()])
        .await
}

/// Every app id of a workspace (repository cleanup after deleting it).
pub async fn ids_in_workspace(tx: &Tx, org: Uuid, ws: Uuid) -> DbResult<Vec<i64>> {
    #[derive(FromQueryResult)]
    struct I {
        id: i64,
    }
    let rows: Vec<I> = tx.all("SELECT id FROM apps WHERE organization_id = $1 AND workspace_id = $2", vec![org.into(), ws.into()]).await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Serialise operations on one app (revert, apply) within a transaction.
pub async fn lock(tx: &Tx, id: i64) -> DbResult<()> {
    tx.advisory_lock(&format!("app:{id}")).await
}
