//! API tokens: long-lived biscuits for tools and CI, one user, one
//! organisation, one role. The row in `api_tokens` is the record; the token
//! text is shown once. Revocation puts the token's revocation ids on the
//! Redis deny list the edge checks on every request.

use std::time::Duration;

use blaze_auth::{KeySet, tokens};
use blaze_db::{
    Db,
    api_tokens::{self as repo, NewToken},
    audit::{self, AuditEvent},
    page::PageRequest,
    tenancy,
};
use blaze_kit::{ApiError, ApiResult};
use blaze_redis::Redis;
use chrono::Utc;
use uuid::Uuid;

pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
const RANK: [&str; 4] = ["viewer", "member", "admin", "owner"];

pub use blaze_db::api_tokens::TokenRow;

pub struct Minted {
    pub row: TokenRow,
    pub token: String,
}

pub struct MintRequest<'a> {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub role: &'a str,
    pub ttl: Duration,
    pub description: &'a str,
    pub minted_by: Option<Uuid>,
}

fn rank(r: &str) -> Option<usize> {
    RANK.iter().position(|x| *x == r)
}

/// Mint for an active member; `caller_role` (when minting through the API)
/// caps the role that can be granted.
pub async fn mint(db: &Db, keys: &KeySet, req: MintRequest<'_>, caller_role: Option<&str>) -> ApiResult<Minted> {
    let Some(wanted) = rank(req.role) else {
        return Err(ApiError::invalid("Invalid payload: \"role\" must be one of owner, admin, member, viewer"));
    };
    if let Some(caller) = caller_role
        && rank(caller).is_none_or(|c| c < wanted)
    {
        return Err(ApiError::forbidden("Cannot grant a role above your own"));
    }
    if req.ttl.is_zero() || req.ttl > MAX_TTL {
        return Err(ApiError::invalid("Invalid payload: \"ttlSeconds\" must be between 1 and 31622400"));
    }
    let tx = db.tenant(req.org_id, req.minted_by).await?;
    match tenancy::org_role(&tx, req.org_id, req.user_id).await? {
        Some(_) => {}
        None => return Err(ApiError::not_found("USER_NOT_FOUND", "User is not a member of this organization")),
    }
    let id = Uuid::now_v7();
    let token = tokens::mint_api_token(keys, &id.to_string(), &req.user_id.to_string(), &req.org_id.to_string(), req.role, req.ttl)
        .map_err(ApiError::internal)?;
    let claims = tokens::verify_api_token(keys, &token).map_err(ApiError::internal)?;
    let expires_at = Utc::now() + chrono::Duration::from_std(req.ttl).map_err(ApiError::internal)?;
    let row = repo::insert(
        &tx,
        NewToken {
            id,
            org_id: req.org_id,
            user_id: req.user_id,
            role: req.role,
            description: req.description,
            created_by: req.minted_by,
            revocation_ids: claims.revocation_ids.clone(),
            expires_at,
        },
    )
    .await?;
    audit::record(
        &tx,
        AuditEvent::new(req.org_id, "api_token_mint", "api_token")
            .actor(req.minted_by)
            .resource(id)
            .metadata(serde_json::json!({"userId": req.user_id, "role": req.role})),
    )
    .await?;
    tx.commit().await?;
    Ok(Minted { row, token })
}

pub async fn revoke(db: &Db, redis: &Redis, org_id: Uuid, id: Uuid, actor: Option<Uuid>) -> ApiResult<()> {
    let tx = db.tenant(org_id, actor).await?;
    let (_, ids) = repo::find(&tx, org_id, id).await?.ok_or_else(|| ApiError::not_found("TOKEN_NOT_FOUND", "Token not found"))?;
    // Deny list first: if Redis is down the token must not look revoked in
    // the database while still working at the edge.
    redis.revoke(&ids).await?;
    repo::mark_revoked(&tx, org_id, id).await?;
    audit::record(&tx, AuditEvent::new(org_id, "api_token_revoke", "api_token").actor(actor).resource(id)).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(db: &Db, org_id: Uuid, actor: Option<Uuid>, page: &PageRequest) -> ApiResult<(Vec<TokenRow>, String)> {
    let tx = db.tenant(org_id, actor).await?;
    let result = repo::list(&tx, org_id, page).await?;
    tx.commit().await?;
    Ok(result)
}
