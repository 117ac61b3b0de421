//! Chats and their messages.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbError, DbResult, Tx, page::PageRequest};

#[derive(Debug, Clone, FromQueryResult)]
pub struct ChatRow {
    pub id: i64,
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub app_id: i64,
    pub created_by_user_id: Option<Uuid>,
    pub title: Option<String>,
    pub initial_commit_hash: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct MessageRow {
    pub id: i64,
    pub organization_id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: i64,
    pub created_by_user_id: Option<Uuid>,
    pub role: String,
    pub content: String,
    pub approval_state: Option<String>,
    pub source_commit_hash: Option<String>,
    pub commit_hash: Option<String>,
    pub request_id: Option<String>,
    pub max_tokens_used: Option<i64>,
    pub model: Option<String>,
    pub plan: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

const CHAT_COLS: &str = "id, organization_id, workspace_id, app_id, created_by_user_id, title, initial_commit_hash, created_at";
const MSG_COLS: &str = "id, organization_id, workspace_id, chat_id, created_by_user_id, role, content, approval_state, source_commit_hash, \
                        commit_hash, request_id, max_tokens_used, model, plan, created_at";

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

pub async fn create(tx: &Tx, org: Uuid, ws: Uuid, app: i64, user: Option<Uuid>, initial_commit: Option<&str>) -> DbResult<ChatRow> {
    tx.one(
        &format!(
            "INSERT INTO chats (organization_id, workspace_id, app_id, created_by_user_id, initial_commit_hash)
             VALUES ($1, $2, $3, $4, $5) RETURNING {CHAT_COLS}"
        ),
        vec![org.into(), ws.into(), app.into(), user.into(), initial_commit.map(str::to_owned).into()],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

pub async fn set_initial_commit(tx: &Tx, org: Uuid, chat: i64, commit: &str) -> DbResult<u64> {
    tx.execute(
        "UPDATE chats SET initial_commit_hash = $3 WHERE organization_id = $1 AND id = $2",
        vec![org.into(), chat.into(), commit.into()],
    )
    .await
}

pub async fn get(tx: &Tx, org: Uuid, ws: Uuid, id: i64) -> DbResult<Option<ChatRow>> {
    tx.one(
        &format!("SELECT {CHAT_COLS} FROM chats WHERE organization_id = $1 AND workspace_id = $2 AND id = $3"),
        vec![org.into(), ws.into(), id.into()],
    )
    .await
}

pub async fn get_in_org(tx: &Tx, org: Uuid, id: i64) -> DbResult<Option<ChatRow>> {
    tx.one(&format!("SELECT {CHAT_COLS} FROM chats WHERE organization_id = $1 AND id = $2"), vec![org.into(), id.into()]).await
}

/// Newest first; `app` narrows to one app.
pub async fn list(tx: &Tx, org: Uuid, ws: Uuid, app: Option<i64>, page: &PageRequest) -> DbResult<(Vec<ChatRow>, String)> {
    let (at, id) = parse_cursor(page);
    let rows: Vec<ChatRow> = tx
        .all(
            &format!(
                "SELECT {CHAT_COLS} FROM chats WHERE organization_id = $1 AND workspace_id = $2 AND ($3::bigint IS NULL OR app_id = $3)
                 AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT $6"
            ),
            vec![org.into(), ws.into(), app.into(), at.into(), id.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| cursor(r.created_at, r.id)))
}

pub async fn update_title(tx: &Tx, org: Uuid, ws: Uuid, id: i64, title: Option<&str>) -> DbResult<Option<ChatRow>> {
    tx.one(
        &format!("UPDATE chats SET title = $4 WHERE organization_id = $1 AND workspace_id = $2 AND id = $3 RETURNING {CHAT_COLS}"),
        vec![org.into(), ws.into(), id.into(), title.map(str::to_owned).into()],
    )
    .await
}

/// Set the title only while it is still empty (from the model's summary).
pub async fn set_title_if_unset(tx: &Tx, org: Uuid, id: i64, title: &str) -> DbResult<u64> {
    tx.execute(
        "UPDATE chats SET title = $3 WHERE organization_id = $1 AND id = $2 AND title IS NULL",
        vec![org.into(), id.into(), title.into()],
    )
    .await
}

pub async fn delete(tx: &Tx, org: Uuid, ws: Uuid, id: i64) -> DbResult<u64> {
    tx.execute("DELETE FROM chats WHERE organization_id = $1 AND workspace_id = $2 AND id = $3", vec![org.into(), ws.into(), id.into()])
        .await
}

/// Messages of a chat in chronological order.
pub async fn messages(tx: &Tx, org: Uuid, chat: i64) -> DbResult<Vec<MessageRow>> {
    tx.all(
        &format!("SELECT {MSG_COLS} FROM messages WHERE organization_id = $1 AND chat_id = $2 ORDER BY created_at, id"),
        vec![org.into(), chat.into()],
    )
    .await
}

pub async fn message(tx: &Tx, org: Uuid, chat: i64, id: i64) -> DbResult<Option<MessageRow>> {
    tx.one(
        &format!("SELECT {MSG_COLS} FROM messages WHERE organization_id = $1 AND chat_id = $2 AND id = $3"),
        vec![org.into(), chat.into(), id.into()],
    )
    .await
}

pub struct NewMessage<'a> {
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: i64,
    pub user: Option<Uuid>,
    pub role: &'a str,
    pub content: &'a str,
    pub source_commit_hash: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub model: Option<&'a str>,
}

pub async fn insert_message(tx: &Tx, m: NewMessage<'_>) -> DbResult<MessageRow> {
    tx.one(
        &format!(
            "INSERT INTO messages (organization_id, workspace_id, chat_id, created_by_user_id, role, content, source_commit_hash, request_id, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {MSG_COLS}"
        ),
        vec![
            m.org_id.into(),
            m.workspace_id.into(),
            m.chat_id.into(),
            m.user.into(),
            m.role.into(),
            m.content.into(),
            m.source_commit_hash.map(str::to_owned).into(),
            m.request_id.map(str::to_owned).into(),
            m.model.map(str::to_owned).into(),
        ],
    )
    .await?
    .ok_or_else(|| DbError::Other("insert returned no row".into()))
}

pub async fn set_content(tx: &Tx, org: Uuid, id: i64, content: &str) -> DbResult<u64> {
    tx.execute("UPDATE messages SET content = $3 WHERE organization_id = $1 AND id = $2", vec![org.into(), id.into(), content.into()]).await
}

/// What a finished turn writes onto its assistant message.
#[derive(Debug, Clone, Default)]
pub struct MessageOutcome<'a> {
    pub content: &'a str,
    pub plan: Option<serde_json::Value>,
    pub commit_hash: Option<&'a str>,
    pub approval_state: Option<&'a str>,
    pub tokens: Option<i64>,
}

/// Record the outcome of a turn on its assistant message.
pub async fn finish_message(tx: &Tx, org: Uuid, id: i64, o: MessageOutcome<'_>) -> DbResult<u64> {
    tx.execute(
        "UPDATE messages SET content = $3, plan = $4, commit_hash = COALESCE($5, commit_hash), approval_state = COALESCE($6, approval_state),
                max_tokens_used = GREATEST(COALESCE(max_tokens_used, 0), COALESCE($7, 0))
         WHERE organization_id = $1 AND id = $2",
        vec![
            org.into(),
            id.into(),
            o.content.into(),
            o.plan.into(),
            o.commit_hash.map(str::to_owned).into(),
            o.approval_state.map(str::to_owned).into(),
            o.tokens.into(),
        ],
    )
    .await
}

/// Approve/reject a pending message (only while pending: approving twice is
/// a no-op for the caller to detect).
pub async fn set_approval(tx: &Tx, org: Uuid, id: i64, state: &str, commit_hash: Option<&str>) -> DbResult<u64> {
    tx.execute(
        "UPDATE messages SET approval_state = $3, commit_hash = COALESCE($4, commit_hash) WHERE organization_id = $1 AND id = $2 AND approval_state IS NULL",
        vec![org.into(), id.into(), state.into(), commit_hash.map(str::to_owned).into()],
    )
    .await
}

/// Delete messages of a chat from `from_id` on (inclusive).
pub async fn delete_messages_from(tx: &Tx, org: Uuid, chat: i64, from_id: i64) -> DbResult<u64> {
    tx.execute(
        "DELETE FROM messages WHERE organization_id = $1 AND chat_id = $2 AND id >= $3",
        vec![org.into(), chat.into(), from_id.into()],
    )
    .await
}

pub async fn delete_message(tx: &Tx, org: Uuid, id: i64) -> DbResult<u64> {
    tx.execute("DELETE FROM messages WHERE organization_id = $1 AND id = $2", vec![org.into(), id.into()]).await
}

/// The message of an app whose commit is `commit` (revert without an explicit
/// message).
pub async fn message_by_commit(tx: &Tx, org: Uuid, app: i64, commit: &str) -> DbResult<Option<MessageRow>> {
    tx.one(
        &format!(
            "SELECT {MSG_COLS} FROM messages m WHERE m.organization_id = $1 AND m.commit_hash = $3
             AND m.chat_id IN (SELECT id FROM chats WHERE organization_id = $1 AND app_id = $2) ORDER BY m.id DESC LIMIT 1"
        ),
        vec![org.into(), app.into(), commit.into()],
    )
    .await
}
