//! The record of issued API tokens (the token text is never stored).

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx, page::PageRequest};

#[derive(Debug, Clone, FromQueryResult)]
pub struct TokenRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, organization_id, user_id, role, description, created_at, expires_at, revoked_at";

pub struct NewToken<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub role: &'a str,
    pub description: &'a str,
    pub created_by: Option<Uuid>,
    pub revocation_ids: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(tx: &Tx, t: NewToken<'_>) -> DbResult<TokenRow> {
    tx.one(
        &format!(
            "INSERT INTO api_tokens (id, organization_id, user_id, role, description, created_by_user_id, revocation_ids, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLS}"
        ),
        vec![
            t.id.into(),
            t.org_id.into(),
            t.user_id.into(),
            t.role.into(),
            t.description.into(),
            t.created_by.into(),
            t.revocation_ids.into(),
            t.expires_at.into(),
        ],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

/// The token and its revocation ids.
pub async fn find(tx: &Tx, org_id: Uuid, id: Uuid) -> DbResult<Option<(TokenRow, Vec<String>)>> {
    #[derive(FromQueryResult)]
    struct Ids {
        revocation_ids: Vec<String>,
    }
    let row: Option<TokenRow> =
        tx.one(&format!("SELECT {COLS} FROM api_tokens WHERE organization_id = $1 AND id = $2"), vec![org_id.into(), id.into()]).await?;
    let Some(row) = row else { return Ok(None) };
    let ids: Option<Ids> =
        tx.one("SELECT revocation_ids FROM api_tokens WHERE organization_id = $1 AND id = $2", vec![org_id.into(), id.into()]).await?;
    Ok(Some((row, ids.map(|i| i.revocation_ids).unwrap_or_default())))
}

pub async fn mark_revoked(tx: &Tx, org_id: Uuid, id: Uuid) -> DbResult<u64> {
    tx.execute(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE organization_id = $1 AND id = $2",
        vec![org_id.into(), id.into()],
    )
    .await
}

/// Newest first.
pub async fn list(tx: &Tx, org_id: Uuid, page: &PageRequest) -> DbResult<(Vec<TokenRow>, String)> {
    let after = page.after.as_deref().and_then(|a| Uuid::parse_str(a).ok()).unwrap_or(Uuid::max());
    let rows: Vec<TokenRow> = tx
        .all(
            &format!("SELECT {COLS} FROM api_tokens WHERE organization_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"),
            vec![org_id.into(), after.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| r.id.to_string()))
}
