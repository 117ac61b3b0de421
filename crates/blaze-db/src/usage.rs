//! Quotas and the append-only usage ledger.
//!
//! Hard limits (organisation, workspace) reject with 429; soft limits (user)
//! are reported only. Counters are per UTC day, except
//! `concurrent_preview_jobs`, which counts previews running right now.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbResult, Tx};

pub const METRICS: [&str; 3] = ["requests", "tokens", "concurrent_preview_jobs"];

#[derive(Debug, Clone, FromQueryResult)]
pub struct QuotaRow {
    pub organization_id: Uuid,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub metric: String,
    pub limit_value: i64,
}

pub async fn quotas(tx: &Tx, org_id: Uuid) -> DbResult<Vec<QuotaRow>> {
    tx.all(
        "SELECT organization_id, subject_type, subject_id, metric, limit_value FROM quotas WHERE organization_id = $1
         ORDER BY subject_type, subject_id, metric",
        vec![org_id.into()],
    )
    .await
}

pub async fn set_quota(tx: &Tx, org_id: Uuid, subject_type: &str, subject_id: Uuid, metric: &str, limit: i64) -> DbResult<QuotaRow> {
    let row = tx
        .one::<QuotaRow>(
            "INSERT INTO quotas (organization_id, subject_type, subject_id, metric, limit_value) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id, subject_type, subject_id, metric) DO UPDATE SET limit_value = EXCLUDED.limit_value, updated_at = now()
             RETURNING organization_id, subject_type, subject_id, metric, limit_value",
            vec![org_id.into(), subject_type.into(), subject_id.into(), metric.into(), limit.into()],
        )
        .await?;
    row.ok_or_else(|| crate::DbError::Other("upsert returned no row".into()))
}

/// A configured limit for one subject, if any.
pub async fn limit_for(tx: &Tx, org_id: Uuid, subject_type: &str, subject_id: Uuid, metric: &str) -> DbResult<Option<i64>> {
    #[derive(FromQueryResult)]
    struct L {
        limit_value: i64,
    }
    Ok(tx
        .one::<L>(
            "SELECT limit_value FROM quotas WHERE organization_id = $1 AND subject_type = $2 AND subject_id = $3 AND metric = $4",
            vec![org_id.into(), subject_type.into(), subject_id.into(), metric.into()],
        )
        .await?
        .map(|l| l.limit_value))
}

/// Today's (UTC) usage of a metric, for the organisation, a workspace or a user.
pub async fn used_today(tx: &Tx, org_id: Uuid, column: Scope, subject: Uuid, metric: &str) -> DbResult<i64> {
    #[derive(FromQueryResult)]
    struct S {
        total: i64,
    }
    let filter = match column {
        Scope::Organization => "TRUE",
        Scope::Workspace => "workspace_id = $4",
        Scope::User => "user_id = $4",
    };
    let sql = format!(
        "SELECT COALESCE(SUM(value), 0)::bigint AS total FROM usage_events
         WHERE organization_id = $1 AND metric = $2 AND created_at >= $3 AND {filter}"
    );
    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let row = tx.one::<S>(&sql, vec![org_id.into(), metric.into(), today.into(), subject.into()]).await?;
    Ok(row.map(|r| r.total).unwrap_or(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Organization,
    Workspace,
    User,
}

/// One ledger entry.
#[derive(Debug, Clone)]
pub struct UsageEvent<'a> {
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub metric: &'a str,
    pub value: i64,
    pub model: Option<&'a str>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
    pub at: Option<DateTime<Utc>>,
}

pub async fn record(tx: &Tx, e: UsageEvent<'_>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO usage_events (organization_id, workspace_id, user_id, metric, value, model, input_tokens, output_tokens, cost, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, COALESCE($10, now()))",
        vec![
            e.org_id.into(),
            e.workspace_id.into(),
            e.user_id.into(),
            e.metric.into(),
            e.value.into(),
            e.model.map(str::to_owned).into(),
            e.input_tokens.into(),
            e.output_tokens.into(),
            e.cost.into(),
            e.at.into(),
        ],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct UsageRow {
    pub day: NaiveDate,
    pub workspace_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub model: Option<String>,
    pub metric: String,
    pub value: i64,
    pub cost: f64,
}

/// Usage grouped by day, workspace, user, model and metric.
pub async fn report(tx: &Tx, org_id: Uuid, from: NaiveDate, to: NaiveDate, workspace: Option<Uuid>) -> DbResult<Vec<UsageRow>> {
    let start = from.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let end = to.succ_opt().unwrap_or(to).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    tx.all(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, workspace_id, user_id, model, metric,
                SUM(value)::bigint AS value, SUM(cost)::float8 AS cost
         FROM usage_events
         WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 AND ($4::uuid IS NULL OR workspace_id = $4)
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 5, 2, 3, 4",
        vec![org_id.into(), start.into(), end.into(), workspace.into()],
    )
    .await
}

/// Previews running right now in an organisation (or workspace).
pub async fn running_previews(tx: &Tx, org_id: Uuid, workspace: Option<Uuid>) -> DbResult<i64> {
    #[derive(FromQueryResult)]
    struct C {
        n: i64,
    }
    let row = tx
        .one::<C>(
            "SELECT count(*)::bigint AS n FROM previews WHERE organization_id = $1 AND state IN ('starting', 'running')
             AND ($2::uuid IS NULL OR workspace_id = $2)",
            vec![org_id.into(), workspace.into()],
        )
        .await?;
    Ok(row.map(|r| r.n).unwrap_or(0))
}
