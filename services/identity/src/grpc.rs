//! IdentityService: parse, call the domain, map.

use std::time::Duration;

use blaze_db::page::PageRequest;
use blaze_kit::{ApiError, ApiResult, RequestContext, parse_id, timestamp};
use blaze_proto::identity::{self as pb, identity_service_server::IdentityService};
use tonic::{Request, Response, Status};

use crate::{
    Deps, api_tokens, oauth,
    principal::{self, Claimed},
};

pub struct Identity {
    deps: Deps,
}

impl Identity {
    pub fn new(deps: Deps) -> Self {
        Identity { deps }
    }

    async fn epoch(&self, user_id: &str) -> i64 {
        self.deps.redis.epoch(user_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "membership epoch unavailable");
            0
        })
    }
}

fn principal_pb(p: &blaze_auth::Principal, email: Option<String>, name: Option<String>, sub: String) -> pb::Principal {
    pb::Principal {
        user_id: p.user_id.clone(),
        external_sub: sub,
        email,
        display_name: name,
        organizations: p
            .orgs
            .iter()
            .map(|o| pb::OrganizationAccess { organization_id: o.id.clone(), slug: o.slug.clone(), role: o.role.clone() })
            .collect(),
        workspaces: p
            .workspaces
            .iter()
            .map(|w| pb::WorkspaceAccess {
                workspace_id: w.id.clone(),
                organization_id: w.org_id.clone(),
                slug: w.slug.clone(),
                r#type: w.kind.clone(),
                role: w.role.clone(),
                personal_default: w.personal_default,
            })
            .collect(),
        default_organization_id: p.default_org.clone(),
        epoch: p.epoch,
    }
}

fn token_pb(r: &api_tokens::TokenRow, token: String) -> pb::ApiToken {
    pb::ApiToken {
        id: r.id.to_string(),
        organization_id: r.organization_id.to_string(),
        user_id: r.user_id.to_string(),
        role: r.role.clone(),
        description: r.description.clone(),
        created_at: Some(timestamp(r.created_at)),
        expires_at: Some(timestamp(r.expires_at)),
        revoked_at: r.revoked_at.map(timestamp),
        token,
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl IdentityService for Identity {
    async fn get_o_auth_config(&self, _req: Request<pb::GetOAuthConfigRequest>) -> Rpc<pb::GetOAuthConfigResponse> {
        ok(Ok(pb::GetOAuthConfigResponse { data: Some(oauth::public_config(&self.deps.cfg.oauth)) }))
    }

    async fn exchange_o_auth_code(&self, req: Request<pb::ExchangeOAuthCodeRequest>) -> Rpc<pb::ExchangeOAuthCodeResponse> {
        let r = req.into_inner();
        let result = oauth::exchange(&self.deps.http, &self.deps.cfg.oauth, &r.code, &r.code_verifier, &r.redirect_uri).await;
        ok(result.map(|data| pb::ExchangeOAuthCodeResponse { data: Some(data) }))
    }

    async fn get_current_user(&self, req: Request<pb::GetCurrentUserRequest>) -> Rpc<pb::GetCurrentUserResponse> {
        let ctx = RequestContext::of(&req)?;
        let result = async {
            let p = ctx.principal()?;
            let user_id = parse_id(&p.user_id, "USER_NOT_FOUND", "User")?;
            let tx = self.deps.db.as_user(user_id).await?;
            let user = blaze_db::tenancy::user_by_id(&tx, user_id)
                .await?
                .ok_or_else(|| ApiError::not_found("USER_NOT_FOUND", "User not found"))?;
            tx.commit().await?;
            Ok(pb::GetCurrentUserResponse { data: Some(principal_pb(p, user.email, user.display_name, user.external_sub)) })
        }
        .await;
        ok(result)
    }

    async fn resolve_principal(&self, req: Request<pb::ResolvePrincipalRequest>) -> Rpc<pb::ResolvePrincipalResponse> {
        let r = req.into_inner();
        let result = async {
            match pb::CredentialKind::try_from(r.kind).unwrap_or(pb::CredentialKind::Unspecified) {
                pb::CredentialKind::ApiToken => {
                    let user = parse_id(&r.user_id, "USER_NOT_FOUND", "User")?;
                    let org = parse_id(&r.token_org_id, "ORG_NOT_FOUND", "Organization")?;
                    let epoch = self.epoch(&r.user_id).await;
                    let p = principal::resolve_api_token(&self.deps.db, user, org, &r.token_role, epoch).await?;
                    Ok(pb::ResolvePrincipalResponse { principal: Some(principal_pb(&p, None, None, String::new())) })
                }
                pb::CredentialKind::Oidc | pb::CredentialKind::Dev => {
                    if r.subject.trim().is_empty() {
                        return Err(ApiError::unauthenticated("Credential has no subject"));
                    }
                    let claimed = Claimed { external_sub: r.subject.clone(), email: r.email.clone(), display_name: r.display_name.clone() };
                    // Read the epoch before provisioning: a bump racing with
                    // us then makes the edge refresh once more, never less.
                    let user_hint = self.deps.db.global().await?;
                    let existing = blaze_db::tenancy::upsert_user(&user_hint, &claimed.external_sub, None, None).await?;
                    user_hint.commit().await?;
                    let epoch = self.epoch(&existing.id.to_string()).await;
                    let (p, user) = principal::resolve_claimed(&self.deps.db, &claimed, epoch).await?;
                    Ok(pb::ResolvePrincipalResponse { principal: Some(principal_pb(&p, user.email, user.display_name, user.external_sub)) })
                }
                pb::CredentialKind::Unspecified => Err(ApiError::invalid("Credential kind is required")),
            }
        }
        .await;
        ok(result)
    }

    async fn mint_api_token(&self, req: Request<pb::MintApiTokenRequest>) -> Rpc<pb::MintApiTokenResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let result = async {
            let caller = parse_id(ctx.user_id()?, "USER_NOT_FOUND", "User")?;
            let org = parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")?;
            let user = if r.user_id.trim().is_empty() { caller } else { parse_id(&r.user_id, "USER_NOT_FOUND", "User")? };
            let ttl = if r.ttl_seconds <= 0 { api_tokens::DEFAULT_TTL } else { Duration::from_secs(r.ttl_seconds as u64) };
            let role = if r.role.is_empty() { "member" } else { r.role.as_str() };
            let minted = api_tokens::mint(
                &self.deps.db,
                &self.deps.keys,
                api_tokens::MintRequest { org_id: org, user_id: user, role, ttl, description: &r.description, minted_by: Some(caller) },
                Some(ctx.org_role().as_str()),
            )
            .await?;
            Ok(pb::MintApiTokenResponse { data: Some(token_pb(&minted.row, minted.token)) })
        }
        .await;
        ok(result)
    }

    async fn revoke_api_token(&self, req: Request<pb::RevokeApiTokenRequest>) -> Rpc<pb::RevokeApiTokenResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let result = async {
            let org = parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")?;
            let id = parse_id(&r.token_id, "TOKEN_NOT_FOUND", "Token")?;
            let actor = ctx.user_id().ok().and_then(|u| uuid::Uuid::parse_str(u).ok());
            api_tokens::revoke(&self.deps.db, &self.deps.redis, org, id, actor).await?;
            Ok(pb::RevokeApiTokenResponse {})
        }
        .await;
        ok(result)
    }

    async fn list_api_tokens(&self, req: Request<pb::ListApiTokensRequest>) -> Rpc<pb::ListApiTokensResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let result = async {
            let org = parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")?;
            let actor = ctx.user_id().ok().and_then(|u| uuid::Uuid::parse_str(u).ok());
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let (rows, next) = api_tokens::list(&self.deps.db, org, actor, &page).await?;
            Ok(pb::ListApiTokensResponse { data: rows.iter().map(|t| token_pb(t, String::new())).collect(), next_page_token: next })
        }
        .await;
        ok(result)
    }
}
