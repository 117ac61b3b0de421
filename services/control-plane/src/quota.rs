//! Quotas (combined model): hard limits per organisation and workspace,
//! soft limits per user, on requests/day, tokens/day and concurrent
//! previews; the usage ledger and its report. Check-and-charge runs in one
//! transaction under a per-organisation lock, so concurrent requests can not
//! both squeeze under a limit.

use blaze_db::{
    Db,
    usage::{self, Scope, UsageEvent},
};
use blaze_kit::{ApiError, ApiResult, Config, RequestContext, parse_id};
use blaze_proto::controlplane::{self as pb, quota_service_server::QuotaService};
use chrono::NaiveDate;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, tenancy::org_of};

fn default_org_limit(cfg: &Config, metric: &str) -> i64 {
    match metric {
        "requests" => cfg.quotas.org_requests_per_day,
        "tokens" => cfg.quotas.org_tokens_per_day,
        _ => cfg.quotas.org_concurrent_previews,
    }
}

fn default_user_limit(cfg: &Config, metric: &str) -> Option<i64> {
    match metric {
        "requests" => Some(cfg.quotas.user_requests_per_day),
        "tokens" => Some(cfg.quotas.user_tokens_per_day),
        _ => None,
    }
}

pub struct Check<'a> {
    pub org: Uuid,
    pub workspace: Option<Uuid>,
    pub user: Option<Uuid>,
    pub metric: &'a str,
    pub amount: i64,
    /// Charge the amount when allowed (not for concurrency metrics).
    pub record: bool,
}

/// Would `amount` more exceed a hard limit? Errors with
/// `429 QUOTA_HARD_LIMIT_REACHED` when it would.
pub async fn check(db: &Db, cfg: &Config, c: Check<'_>) -> ApiResult<pb::CheckQuotaResponse> {
    if !usage::METRICS.contains(&c.metric) {
        return Err(ApiError::invalid(format!("unknown quota metric {:?}", c.metric)));
    }
    let tx = db.tenant(c.org, c.user).await?;
    tx.advisory_lock(&format!("quota:{}:{}", c.org, c.metric)).await?;
    let concurrent = c.metric == "concurrent_preview_jobs";
    let used = |scope: Scope, subject: Uuid| {
        let tx = &tx;
        async move {
            if concurrent {
                usage::running_previews(tx, c.org, (scope == Scope::Workspace).then_some(subject)).await
            } else {
                usage::used_today(tx, c.org, scope, subject, c.metric).await
            }
        }
    };
    let org_limit =
        usage::limit_for(&tx, c.org, "organization", c.org, c.metric).await?.unwrap_or_else(|| default_org_limit(cfg, c.metric));
    let org_used = used(Scope::Organization, c.org).await?;
    if org_used + c.amount > org_limit {
        return Err(ApiError::quota_exceeded("Organization", c.metric));
    }
    if let Some(ws) = c.workspace
        && let Some(ws_limit) = usage::limit_for(&tx, c.org, "workspace", ws, c.metric).await?
        && used(Scope::Workspace, ws).await? + c.amount > ws_limit
    {
        return Err(ApiError::quota_exceeded("Workspace", c.metric));
    }
    let mut soft = false;
    if let Some(user) = c.user
        && !concurrent
    {
        let limit = usage::limit_for(&tx, c.org, "user", user, c.metric).await?.or_else(|| default_user_limit(cfg, c.metric));
        if let Some(limit) = limit
            && used(Scope::User, user).await? + c.amount > limit
        {
            soft = true;
            tracing::warn!(user = %user, metric = c.metric, "user soft quota exceeded");
        }
    }
    if c.record && !concurrent {
        usage::record(
            &tx,
            UsageEvent {
                org_id: c.org,
                workspace_id: c.workspace,
                user_id: c.user,
                metric: c.metric,
                value: c.amount,
                model: None,
                input_tokens: 0,
                output_tokens: 0,
                cost: 0.0,
                at: None,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(pb::CheckQuotaResponse { allowed: true, soft_limit_exceeded: soft, used: org_used + c.amount, limit: org_limit })
}

/// Cost of tokens by the configured price table (per million tokens).
pub fn cost(cfg: &Config, model: &str, input: i64, output: i64) -> f64 {
    let model_key = model.rsplit('/').next().unwrap_or(model);
    let price = cfg.llm.prices.get(model).or_else(|| cfg.llm.prices.get(model_key));
    price.map(|p| (input as f64 * p.input + output as f64 * p.output) / 1_000_000.0).unwrap_or(0.0)
}

pub struct Quotas {
    deps: Deps,
}

impl Quotas {
    pub fn new(deps: Deps) -> Self {
        Quotas { deps }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

fn optional_uuid(s: &str) -> ApiResult<Option<Uuid>> {
    if s.is_empty() { Ok(None) } else { Uuid::parse_str(s).map(Some).map_err(|_| ApiError::invalid(format!("invalid id {s:?}"))) }
}

fn day(s: &str, default: NaiveDate) -> ApiResult<NaiveDate> {
    if s.is_empty() {
        return Ok(default);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| ApiError::invalid(format!("Invalid payload: {s:?} is not a YYYY-MM-DD day")))
}

#[tonic::async_trait]
impl QuotaService for Quotas {
    async fn get_usage(&self, req: Request<pb::GetUsageRequest>) -> Rpc<pb::GetUsageResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let org = org_of(&ctx)?;
            let today = chrono::Utc::now().date_naive();
            let to = day(&r.to, today)?;
            let from = day(&r.from, to - chrono::Duration::days(30))?;
            let tx = self.deps.db.tenant(org, None).await?;
            let rows = usage::report(&tx, org, from, to, optional_uuid(&r.workspace_id)?).await?;
            tx.commit().await?;
            let mut totals = std::collections::HashMap::new();
            let mut total_cost = 0.0;
            for row in &rows {
                *totals.entry(row.metric.clone()).or_insert(0) += row.value;
                total_cost += row.cost;
            }
            Ok(pb::GetUsageResponse {
                data: Some(pb::UsageReport {
                    rows: rows
                        .into_iter()
                        .map(|r| pb::UsageRow {
                            day: r.day.to_string(),
                            workspace_id: r.workspace_id.map(|u| u.to_string()).unwrap_or_default(),
                            user_id: r.user_id.map(|u| u.to_string()).unwrap_or_default(),
                            model: r.model.unwrap_or_default(),
                            metric: r.metric,
                            value: r.value,
                            cost: r.cost,
                        })
                        .collect(),
                    total_cost,
                    totals,
                }),
            })
        }
        .await)
    }

    async fn get_quotas(&self, req: Request<pb::GetQuotasRequest>) -> Rpc<pb::GetQuotasResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let org = org_of(&ctx)?;
            let tx = self.deps.db.tenant(org, None).await?;
            let rows = usage::quotas(&tx, org).await?;
            tx.commit().await?;
            let mut data: Vec<pb::Quota> = rows
                .into_iter()
                .map(|q| pb::Quota {
                    kind: if q.subject_type == "user" { "soft" } else { "hard" }.into(),
                    subject_type: q.subject_type,
                    subject_id: q.subject_id.to_string(),
                    metric: q.metric,
                    limit: q.limit_value,
                })
                .collect();
            // the organisation's effective defaults where nothing is set
            for metric in usage::METRICS {
                if !data.iter().any(|q| q.subject_type == "organization" && q.metric == metric) {
                    data.push(pb::Quota {
                        subject_type: "organization".into(),
                        subject_id: org.to_string(),
                        metric: metric.into(),
                        limit: default_org_limit(&self.deps.cfg, metric),
                        kind: "hard".into(),
                    });
                }
            }
            Ok(pb::GetQuotasResponse { data })
        }
        .await)
    }

    async fn set_quota(&self, req: Request<pb::SetQuotaRequest>) -> Rpc<pb::SetQuotaResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let org = org_of(&ctx)?;
            if !["organization", "workspace", "user"].contains(&r.subject_type.as_str()) {
                return Err(ApiError::invalid("Invalid payload: \"subjectType\" must be organization, workspace or user"));
            }
            if !usage::METRICS.contains(&r.metric.as_str()) {
                return Err(ApiError::invalid("Invalid payload: \"metric\" must be requests, tokens or concurrent_preview_jobs"));
            }
            if r.limit < 0 {
                return Err(ApiError::invalid("Invalid payload: \"limit\" must be at least 0"));
            }
            let subject = if r.subject_type == "organization" { org } else { parse_id(&r.subject_id, "NOT_FOUND", "Subject")? };
            let actor = ctx.user_id().ok().and_then(|u| Uuid::parse_str(u).ok());
            let tx = self.deps.db.tenant(org, actor).await?;
            let row = usage::set_quota(&tx, org, &r.subject_type, subject, &r.metric, r.limit).await?;
            blaze_db::audit::record(
                &tx,
                blaze_db::audit::AuditEvent::new(org, "quota_set", "quota")
                    .actor(actor)
                    .resource(format!("{}:{}", r.subject_type, subject))
                    .metadata(serde_json::json!({"metric": r.metric, "limit": r.limit})),
            )
            .await?;
            tx.commit().await?;
            Ok(pb::SetQuotaResponse {
                data: Some(pb::Quota {
                    kind: if row.subject_type == "user" { "soft" } else { "hard" }.into(),
                    subject_type: row.subject_type,
                    subject_id: row.subject_id.to_string(),
                    metric: row.metric,
                    limit: row.limit_value,
                }),
            })
        }
        .await)
    }

    async fn check_quota(&self, req: Request<pb::CheckQuotaRequest>) -> Rpc<pb::CheckQuotaResponse> {
        let r = req.into_inner();
        ok(async {
            let org = parse_id(&r.organization_id, "ORG_NOT_FOUND", "Organization")?;
            check(
                &self.deps.db,
                &self.deps.cfg,
                Check {
                    org,
                    workspace: optional_uuid(&r.workspace_id)?,
                    user: optional_uuid(&r.user_id)?,
                    metric: &r.metric,
                    amount: r.amount.max(0),
                    record: r.record,
                },
            )
            .await
        }
        .await)
    }

    async fn record_usage(&self, req: Request<pb::RecordUsageRequest>) -> Rpc<pb::RecordUsageResponse> {
        let r = req.into_inner();
        ok(async {
            let org = parse_id(&r.organization_id, "ORG_NOT_FOUND", "Organization")?;
            if !usage::METRICS.contains(&r.metric.as_str()) {
                return Err(ApiError::invalid("unknown metric"));
            }
            let cost = cost(&self.deps.cfg, &r.model, r.input_tokens, r.output_tokens);
            let tx = self.deps.db.tenant(org, None).await?;
            usage::record(
                &tx,
                UsageEvent {
                    org_id: org,
                    workspace_id: optional_uuid(&r.workspace_id)?,
                    user_id: optional_uuid(&r.user_id)?,
                    metric: &r.metric,
                    value: r.value,
                    model: (!r.model.is_empty()).then_some(r.model.as_str()),
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost,
                    at: r.occurred_at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)),
                },
            )
            .await?;
            tx.commit().await?;
            Ok(pb::RecordUsageResponse { cost })
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_the_price_table_per_million_tokens() {
        let mut cfg = Config::default();
        cfg.llm.prices.insert("gpt-x".into(), blaze_kit::config::Price { input: 2.0, output: 8.0 });
        assert!((cost(&cfg, "openai/gpt-x", 500_000, 250_000) - 3.0).abs() < 1e-9);
        assert_eq!(cost(&cfg, "unknown", 1000, 1000), 0.0);
    }
}
