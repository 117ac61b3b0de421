//! Organisations and workspaces (R1-R9) and the audit trail.

use blaze_db::{
    DbError,
    audit::{self, AuditEvent},
    page::PageRequest,
    tenancy::{self, NewOrg},
};
use blaze_kit::{ApiError, ApiResult, RequestContext, parse_id};
use blaze_proto::controlplane::{self as pb, organization_service_server::OrganizationService, workspace_service_server::WorkspaceService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, map};

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

pub(crate) fn user_of(ctx: &RequestContext) -> ApiResult<Uuid> {
    parse_id(ctx.user_id()?, "USER_NOT_FOUND", "User")
}

pub(crate) fn org_of(ctx: &RequestContext) -> ApiResult<Uuid> {
    parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")
}

pub(crate) fn workspace_of(ctx: &RequestContext) -> ApiResult<Uuid> {
    parse_id(ctx.workspace_id()?, "WORKSPACE_NOT_FOUND", "Workspace")
}

/// A required, trimmed, bounded name.
pub(crate) fn required_name(field: &str, value: Option<&str>) -> ApiResult<String> {
    let v = value.map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return Err(ApiError::invalid(format!("Invalid payload: \"{field}\" must be a non-empty string")));
    }
    if v.chars().count() > 200 {
        return Err(ApiError::invalid(format!("Invalid payload: \"{field}\" must be at most 200 characters")));
    }
    Ok(v.to_string())
}

async fn bump(deps: &Deps, users: Vec<Uuid>) {
    let users: Vec<String> = users.into_iter().map(|u| u.to_string()).collect();
    if let Err(e) = deps.redis.bump_epochs(&users).await {
        // Edges fall back to the principal TTL; the change shows up later.
        tracing::warn!(error = %e, "could not bump membership epochs");
    }
}

pub struct Organizations {
    deps: Deps,
}

impl Organizations {
    pub fn new(deps: Deps) -> Self {
        Organizations { deps }
    }
}

#[tonic::async_trait]
impl OrganizationService for Organizations {
    async fn list_organizations(&self, req: Request<pb::ListOrganizationsRequest>) -> Rpc<pb::ListOrganizationsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let user = user_of(&ctx)?;
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.as_user(user).await?;
            let orgs = tenancy::orgs_of_user(&tx, user).await?;
            tx.commit().await?;
            // default organisation first (earliest membership), then by the
            // membership order; paging by position keeps that order
            let skip: usize = page.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0);
            let rows: Vec<_> = orgs.into_iter().enumerate().skip(skip).take(page.limit().min(10_000) as usize).collect();
            let (rows, next) = page.finish(rows, |(i, _)| (i + 1).to_string());
            Ok(pb::ListOrganizationsResponse { data: rows.into_iter().map(|(_, o)| map::org(o)).collect(), next_page_token: next })
        }
        .await)
    }

    async fn create_organization(&self, req: Request<pb::CreateOrganizationRequest>) -> Rpc<pb::CreateOrganizationResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let user_id = user_of(&ctx)?;
            let tx = self.deps.db.as_user(user_id).await?;
            let user = tenancy::user_by_id(&tx, user_id).await?.ok_or_else(|| ApiError::unauthenticated("Unknown user"))?;
            let display = user.display_name.clone().filter(|s| !s.trim().is_empty());
            let name = match r.name.as_deref().map(str::trim) {
                Some(n) if !n.is_empty() => required_name("name", Some(n))?,
                _ => format!("{} Organization", display.as_deref().unwrap_or("My")),
            };
            let explicit = r.slug.as_deref().map(tenancy::sanitize_slug).filter(|s| !s.is_empty());
            let slug = explicit.clone().unwrap_or_else(|| tenancy::unique_slug(display.as_deref().unwrap_or("org")));
            let id = Uuid::now_v7();
            match tenancy::create_organization(&tx, NewOrg { id, slug: &slug, name: &name, owner: user_id }).await {
                Ok(_) => {}
                Err(DbError::Unique { .. }) => {
                    return Err(ApiError::already_exists("ORG_SLUG_TAKEN", format!("Organization slug \"{slug}\" is already taken")));
                }
                Err(e) => return Err(e.into()),
            }
            audit::record(
                &tx,
                AuditEvent::new(id, "organization_create", "organization")
                    .actor(Some(user_id))
                    .resource(id)
                    .metadata(serde_json::json!({"slug": slug})),
            )
            .await?;
            let org = tenancy::get_org(&tx, id, user_id).await?.ok_or_else(|| ApiError::internal("created organization vanished"))?;
            tx.commit().await?;
            bump(&self.deps, vec![user_id]).await;
            Ok(pb::CreateOrganizationResponse { data: Some(map::org(org)) })
        }
        .await)
    }

    async fn get_organization(&self, req: Request<pb::GetOrganizationRequest>) -> Rpc<pb::GetOrganizationResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row =
                tenancy::get_org(&tx, org, user).await?.ok_or_else(|| ApiError::not_found("ORG_NOT_FOUND", "Organization not found"))?;
            tx.commit().await?;
            Ok(pb::GetOrganizationResponse { data: Some(map::org(row)) })
        }
        .await)
    }

    async fn update_organization(&self, req: Request<pb::UpdateOrganizationRequest>) -> Rpc<pb::UpdateOrganizationResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let name = required_name("name", r.name.as_deref())?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            if tenancy::rename_org(&tx, org, &name).await? == 0 {
                return Err(ApiError::not_found("ORG_NOT_FOUND", "Organization not found"));
            }
            audit::record(
                &tx,
                AuditEvent::new(org, "organization_update", "organization")
                    .actor(Some(user))
                    .resource(org)
                    .metadata(serde_json::json!({"fields": ["name"]})),
            )
            .await?;
            let row =
                tenancy::get_org(&tx, org, user).await?.ok_or_else(|| ApiError::not_found("ORG_NOT_FOUND", "Organization not found"))?;
            tx.commit().await?;
            Ok(pb::UpdateOrganizationResponse { data: Some(map::org(row)) })
        }
        .await)
    }

    async fn list_audit_events(&self, req: Request<pb::ListAuditEventsRequest>) -> Rpc<pb::ListAuditEventsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let (rows, next) = audit::list(&tx, org, r.action.trim(), &page).await?;
            tx.commit().await?;
            Ok(pb::ListAuditEventsResponse { data: rows.into_iter().map(map::audit).collect(), next_page_token: next })
        }
        .await)
    }
}

pub struct Workspaces {
    deps: Deps,
}

impl Workspaces {
    pub fn new(deps: Deps) -> Self {
        Workspaces { deps }
    }
}

/// Find a workspace of `org` by id, slug or `me`/`personal` (org-scoped RPCs
/// that name a workspace).
async fn find_workspace(tx: &blaze_db::Tx, ctx: &RequestContext, org: Uuid, user: Uuid, ident: &str) -> ApiResult<tenancy::WorkspaceRow> {
    let ident = ident.trim();
    let id = if ident.is_empty() || ident == "me" || ident == "personal" {
        tenancy::personal_workspace(tx, org, user).await?
    } else if let Ok(id) = Uuid::parse_str(ident) {
        Some(id)
    } else {
        // by slug, among what the caller can see
        ctx.principal()?
            .workspaces
            .iter()
            .find(|w| w.org_id == org.to_string() && w.slug == ident)
            .and_then(|w| Uuid::parse_str(&w.id).ok())
    };
    let Some(id) = id else { return Err(ApiError::not_found("WORKSPACE_NOT_FOUND", "Workspace not found")) };
    tenancy::get_workspace(tx, org, id).await?.ok_or_else(|| ApiError::not_found("WORKSPACE_NOT_FOUND", "Workspace not found"))
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    async fn list_workspaces(&self, req: Request<pb::ListWorkspacesRequest>) -> Rpc<pb::ListWorkspacesResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let all = tenancy::list_workspaces(&tx, org, user).await?;
            tx.commit().await?;
            let skip: usize = page.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0);
            let rows: Vec<_> = all.into_iter().enumerate().skip(skip).take(page.limit().min(10_000) as usize).collect();
            let (rows, next) = page.finish(rows, |(i, _)| (i + 1).to_string());
            Ok(pb::ListWorkspacesResponse { data: rows.into_iter().map(|(_, w)| map::workspace(w)).collect(), next_page_token: next })
        }
        .await)
    }

    async fn create_workspace(&self, req: Request<pb::CreateWorkspaceRequest>) -> Rpc<pb::CreateWorkspaceResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let name = required_name("name", r.name.as_deref())?;
            let kind = r.r#type.as_deref().unwrap_or("team");
            if kind != "personal" && kind != "team" {
                return Err(ApiError::invalid("Invalid payload: \"type\" must be \"personal\" or \"team\""));
            }
            let mut slug = tenancy::sanitize_slug(r.slug.as_deref().unwrap_or(&name));
            if slug.is_empty() {
                slug = format!("workspace-{}", &Uuid::new_v4().simple().to_string()[..6]);
            }
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row = match tenancy::create_workspace(&tx, org, &slug, &name, kind, user).await {
                Ok(row) => row,
                Err(DbError::Unique { .. }) => {
                    return Err(ApiError::already_exists("WORKSPACE_SLUG_TAKEN", format!("Workspace slug \"{slug}\" is already taken")));
                }
                Err(e) => return Err(e.into()),
            };
            audit::record(
                &tx,
                AuditEvent::new(org, "workspace_create", "workspace")
                    .workspace(row.id)
                    .actor(Some(user))
                    .resource(row.id)
                    .metadata(serde_json::json!({"type": kind})),
            )
            .await?;
            let affected = tenancy::workspace_members(&tx, org, row.id).await?;
            tx.commit().await?;
            bump(&self.deps, affected).await;
            Ok(pb::CreateWorkspaceResponse { data: Some(map::workspace(row)) })
        }
        .await)
    }

    async fn get_workspace(&self, req: Request<pb::GetWorkspaceRequest>) -> Rpc<pb::GetWorkspaceResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let (user, org, ws) = (user_of(&ctx)?, org_of(&ctx)?, workspace_of(&ctx)?);
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row = tenancy::get_workspace(&tx, org, ws)
                .await?
                .ok_or_else(|| ApiError::not_found("WORKSPACE_NOT_FOUND", "Workspace not found"))?;
            tx.commit().await?;
            Ok(pb::GetWorkspaceResponse { data: Some(map::workspace(row)) })
        }
        .await)
    }

    async fn update_workspace(&self, req: Request<pb::UpdateWorkspaceRequest>) -> Rpc<pb::UpdateWorkspaceResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org, ws) = (user_of(&ctx)?, org_of(&ctx)?, workspace_of(&ctx)?);
            let name = r.name.as_deref().map(str::trim).filter(|s| !s.is_empty());
            let slug = r.slug.as_deref().map(tenancy::sanitize_slug).filter(|s| !s.is_empty());
            if name.is_none() && slug.is_none() {
                return Err(ApiError::bad_request("INVALID_WORKSPACE_PAYLOAD", "At least one field (name, slug) is required"));
            }
            let name = name.map(|n| required_name("name", Some(n))).transpose()?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row = match tenancy::update_workspace(&tx, org, ws, name.as_deref(), slug.as_deref()).await {
                Ok(Some(row)) => row,
                Ok(None) => return Err(ApiError::not_found("WORKSPACE_NOT_FOUND", "Workspace not found")),
                Err(DbError::Unique { .. }) => {
                    return Err(ApiError::already_exists("WORKSPACE_SLUG_TAKEN", "Workspace slug is already taken"));
                }
                Err(e) => return Err(e.into()),
            };
            let mut fields = Vec::new();
            if r.name.is_some() {
                fields.push("name");
            }
            if r.slug.is_some() {
                fields.push("slug");
            }
            audit::record(
                &tx,
                AuditEvent::new(org, "workspace_update", "workspace")
                    .workspace(ws)
                    .actor(Some(user))
                    .resource(ws)
                    .metadata(serde_json::json!({"fields": fields})),
            )
            .await?;
            let affected = tenancy::workspace_members(&tx, org, ws).await?;
            tx.commit().await?;
            if slug.is_some() {
                bump(&self.deps, affected).await;
            }
            Ok(pb::UpdateWorkspaceResponse { data: Some(map::workspace(row)) })
        }
        .await)
    }

    async fn delete_workspace(&self, req: Request<pb::DeleteWorkspaceRequest>) -> Rpc<pb::DeleteWorkspaceResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (user, org) = (user_of(&ctx)?, org_of(&ctx)?);
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let ws = find_workspace(&tx, &ctx, org, user, &r.workspace_id).await?;
            if ws.r#type == "personal" {
                return Err(ApiError::bad_request("INVALID_WORKSPACE_DELETE", "Personal workspace cannot be deleted"));
            }
            let affected = tenancy::workspace_members(&tx, org, ws.id).await?;
            let app_ids = blaze_db::apps::ids_in_workspace(&tx, org, ws.id).await?;
            tenancy::delete_workspace(&tx, org, ws.id).await?;
            audit::record(&tx, AuditEvent::new(org, "workspace_delete", "workspace").workspace(ws.id).actor(Some(user)).resource(ws.id))
                .await?;
            tx.commit().await?;
            for app in app_ids {
                crate::cleanup::app_removed(&self.deps, org, app);
            }
            bump(&self.deps, affected).await;
            Ok(pb::DeleteWorkspaceResponse {})
        }
        .await)
    }
}
