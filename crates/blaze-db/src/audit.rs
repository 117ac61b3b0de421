//! The append-only audit trail: one event per mutation, written in the same
//! transaction as the mutation itself.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbResult, Tx, page::PageRequest};

/// One audit event about to be written.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub actor: Option<Uuid>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub outcome: &'a str,
    pub metadata: serde_json::Value,
}

impl<'a> AuditEvent<'a> {
    pub fn new(org_id: Uuid, action: &'a str, resource_type: &'a str) -> Self {
        AuditEvent {
            org_id,
            workspace_id: None,
            actor: None,
            action,
            resource_type,
            resource_id: None,
            request_id: blaze_kit::context::current_request_id(),
            outcome: "success",
            metadata: serde_json::json!({}),
        }
    }
    pub fn workspace(mut self, ws: Uuid) -> Self {
        self.workspace_id = Some(ws);
        self
    }
    pub fn actor(mut self, user: Option<Uuid>) -> Self {
        self.actor = user;
        self
    }
    pub fn resource(mut self, id: impl ToString) -> Self {
        self.resource_id = Some(id.to_string());
        self
    }
    pub fn outcome(mut self, outcome: &'a str) -> Self {
        self.outcome = outcome;
        self
    }
    pub fn metadata(mut self, m: serde_json::Value) -> Self {
        self.metadata = m;
        self
    }
}

pub async fn record(tx: &Tx, e: AuditEvent<'_>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO audit_events (organization_id, workspace_id, actor_user_id, action, resource_type, resource_id, request_id, outcome, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            e.org_id.into(),
            e.workspace_id.into(),
            e.actor.into(),
            e.action.into(),
            e.resource_type.into(),
            e.resource_id.into(),
            e.request_id.into(),
            e.outcome.into(),
            e.metadata.into(),
        ],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct AuditRow {
    pub id: i64,
    pub organization_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Newest first; `action` filters when non-empty.
pub async fn list(tx: &Tx, org_id: Uuid, action: &str, page: &PageRequest) -> DbResult<(Vec<AuditRow>, String)> {
    let before: i64 = page.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(i64::MAX);
    let rows: Vec<AuditRow> = tx
        .all(
            "SELECT id, organization_id, workspace_id, actor_user_id, action, resource_type, resource_id, request_id, outcome, metadata, created_at
             FROM audit_events WHERE organization_id = $1 AND id < $2 AND ($3 = '' OR action = $3)
             ORDER BY id DESC LIMIT $4",
            vec![org_id.into(), before.into(), action.into(), page.limit().into()],
        )
        .await?;
    Ok(page.finish(rows, |r| r.id.to_string()))
}
