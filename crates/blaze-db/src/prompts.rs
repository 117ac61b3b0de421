//! The prompt library (`@prompt:<id>` in chat). Rows are private to their
//! author: queries filter by user and RLS enforces it again.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx};

#[derive(Debug, Clone, FromQueryResult)]
pub struct PromptRow {
    pub id: i64,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLS: &str = "id, organization_id, user_id, title, description, content, created_at, updated_at";

pub async fn list(tx: &Tx, org: Uuid, user: Uuid) -> DbResult<Vec<PromptRow>> {
    tx.all(&format!("SELECT {COLS} FROM prompts WHERE organization_id = $1 AND user_id = $2 ORDER BY id"), vec![org.into(), user.into()])
        .await
}

pub async fn get(tx: &Tx, org: Uuid, user: Uuid, id: i64) -> DbResult<Option<PromptRow>> {
    tx.one(
        &format!("SELECT {COLS} FROM prompts WHERE organization_id = $1 AND user_id = $2 AND id = $3"),
        vec![org.into(), user.into(), id.into()],
    )
    .await
}

pub async fn create(tx: &Tx, org: Uuid, user: Uuid, title: &str, description: Option<&str>, content: &str) -> DbResult<PromptRow> {
    tx.one(
        &format!(
            "INSERT INTO prompts (organization_id, user_id, title, description, content) VALUES ($1, $2, $3, $4, $5) RETURNING {COLS}"
        ),
        vec![org.into(), user.into(), title.into(), description.map(str::to_owned).into(), content.into()],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

pub async fn update(
    tx: &Tx,
    org: Uuid,
    user: Uuid,
    id: i64,
    title: Option<&str>,
    description: Option<Option<&str>>,
    content: Option<&str>,
) -> DbResult<Option<PromptRow>> {
    tx.one(
        &format!(
            "UPDATE prompts SET title = COALESCE($4, title),
                    description = CASE WHEN $5 THEN $6 ELSE description END,
                    content = COALESCE($7, content)
             WHERE organization_id = $1 AND user_id = $2 AND id = $3 RETURNING {COLS}"
        ),
        vec![
            org.into(),
            user.into(),
            id.into(),
            title.map(str::to_owned).into(),
            description.is_some().into(),
            description.flatten().map(str::to_owned).into(),
            content.map(str::to_owned).into(),
        ],
    )
    .await
}

pub async fn delete(tx: &Tx, org: Uuid, user: Uuid, id: i64) -> DbResult<u64> {
    tx.execute("DELETE FROM prompts WHERE organization_id = $1 AND user_id = $2 AND id = $3", vec![org.into(), user.into(), id.into()])
        .await
}
