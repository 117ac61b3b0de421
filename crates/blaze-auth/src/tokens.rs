//! The three kinds of biscuit in Blaze.
//!
//! * **internal** (`kind("internal")`): minted by the edge for an accepted
//!   credential; carries the user, their organisation and workspace roles and
//!   expires within minutes. The edge appends a block with the request id.
//! * **service** (`kind("service")`): what a role presents when it calls
//!   another role on its own behalf (background work, internal RPCs).
//! * **api** (`kind("api")`): long-lived bearer tokens for tools and CI,
//!   naming one user, one organisation and one role; revocable.
//!
//! Every token has an `expires(...)` fact and a matching time check, so
//! expiry is reported precisely and also enforced by the datalog itself.

use std::time::{Duration, SystemTime};

use biscuit_auth::{
    AuthorizerLimits, Biscuit, BiscuitBuilder, BlockBuilder,
    builder::{date, fact, int, string},
    macros::{authorizer, rule},
};

use crate::{KeySet, OrgAccess, Principal, WorkspaceAccess};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token has been revoked")]
    Revoked,
}

impl From<biscuit_auth::error::Token> for TokenError {
    fn from(e: biscuit_auth::error::Token) -> Self {
        TokenError::Invalid(e.to_string())
    }
}

/// The verified caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User { principal: Principal, request_id: Option<String> },
    Service { name: String },
}

/// What an API token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenClaims {
    pub token_id: String,
    pub user_id: String,
    pub org_id: String,
    pub role: String,
    pub expires_at: SystemTime,
    /// Hex revocation ids of every block (for the deny list).
    pub revocation_ids: Vec<String>,
}

/// Datalog budget per token check. Generous: only the edge and our roles
/// write blocks into these tokens, and debug builds under load are slow; the
/// limit is a guard against runaway evaluation, not a latency target.
fn limits() -> AuthorizerLimits {
    AuthorizerLimits { max_time: Duration::from_millis(250), ..Default::default() }
}

fn with_expiry(builder: BiscuitBuilder, exp: SystemTime) -> Result<BiscuitBuilder, TokenError> {
    Ok(builder.fact(fact("expires", &[date(&exp)]))?.code_with_params(
        "check if time($t), expires($e), $t < $e;",
        Default::default(),
        Default::default(),
    )?)
}

/// Mint an internal token for a principal.
pub fn mint_internal(keys: &KeySet, p: &Principal, ttl: Duration) -> Result<String, TokenError> {
    let mut b = Biscuit::builder()
        .fact(fact("kind", &[string("internal")]))?
        .fact(fact("user", &[string(&p.user_id)]))?
        .fact(fact("default_org", &[string(&p.default_org)]))?
        .fact(fact("epoch", &[int(p.epoch)]))?;
    for (i, o) in p.orgs.iter().enumerate() {
        b = b.fact(fact("org", &[string(&o.id), string(&o.slug), string(&o.role), int(i as i64)]))?;
    }
    for w in &p.workspaces {
        b = b.fact(fact(
            "workspace",
            &[
                string(&w.id),
                string(&w.org_id),
                string(&w.slug),
                string(&w.kind),
                string(&w.role),
                biscuit_auth::builder::boolean(w.personal_default),
            ],
        ))?;
    }
    let b = with_expiry(b, SystemTime::now() + ttl)?;
    Ok(b.root_key_id(keys.current_id()).build(keys.signer()?)?.to_base64()?)
}

/// Append the request id to an internal token (no private key needed).
pub fn attach_request_id(keys: &KeySet, token: &str, request_id: &str) -> Result<String, TokenError> {
    let t = Biscuit::from_base64(token, |kid: Option<u32>| keys.public(kid))?;
    let block = BlockBuilder::new().fact(fact("request", &[string(request_id)]))?;
    Ok(t.append(block)?.to_base64()?)
}

/// Mint a service token.
pub fn mint_service(keys: &KeySet, service: &str, ttl: Duration) -> Result<String, TokenError> {
    let b = Biscuit::builder().fact(fact("kind", &[string("service")]))?.fact(fact("service", &[string(service)]))?;
    let b = with_expiry(b, SystemTime::now() + ttl)?;
    Ok(b.root_key_id(keys.current_id()).build(keys.signer()?)?.to_base64()?)
}

/// Mint an API token; returns the bearer text.
pub fn mint_api_token(keys: &KeySet, token_id: &str, user_id: &str, org_id: &str, role: &str, ttl: Duration) -> Result<String, TokenError> {
    let b = Biscuit::builder()
        .fact(fact("kind", &[string("api")]))?
        .fact(fact("token_id", &[string(token_id)]))?
        .fact(fact("user", &[string(user_id)]))?
        .fact(fact("organization", &[string(org_id)]))?
        .fact(fact("role", &[string(role)]))?;
    let b = with_expiry(b, SystemTime::now() + ttl)?;
    Ok(b.root_key_id(keys.current_id()).build(keys.signer()?)?.to_base64()?)
}

struct Verified {
    token: Biscuit,
    authorizer: biscuit_auth::Authorizer,
    kind: String,
}

fn verify_any(keys: &KeySet, token: &str) -> Result<Verified, TokenError> {
    let token = Biscuit::from_base64(token.trim(), |kid: Option<u32>| keys.public(kid))?;
    let mut authorizer = authorizer!("allow if true;").time().set_limits(limits()).build(&token)?;
    let expiry: Vec<(SystemTime,)> = authorizer.query(rule!("e($e) <- expires($e)"))?;
    match expiry.as_slice() {
        [(exp,)] if *exp <= SystemTime::now() => return Err(TokenError::Expired),
        [_] => {}
        _ => return Err(TokenError::Invalid("token has no single expiry".into())),
    }
    authorizer.authorize().map_err(|e| TokenError::Invalid(e.to_string()))?;
    let kinds: Vec<(String,)> = authorizer.query(rule!("k($k) <- kind($k)"))?;
    let [(kind,)] = kinds.as_slice() else {
        return Err(TokenError::Invalid("token has no single kind".into()));
    };
    let kind = kind.clone();
    Ok(Verified { token, authorizer, kind })
}

/// Verify an internal or service token (what services accept).
pub fn verify_internal(keys: &KeySet, token: &str) -> Result<Caller, TokenError> {
    let Verified { mut authorizer, kind, .. } = verify_any(keys, token)?;
    match kind.as_str() {
        "service" => {
            let names: Vec<(String,)> = authorizer.query(rule!("s($s) <- service($s)"))?;
            let [(name,)] = names.as_slice() else { return Err(TokenError::Invalid("service token without a name".into())) };
            Ok(Caller::Service { name: name.clone() })
        }
        "internal" => {
            let users: Vec<(String,)> = authorizer.query(rule!("u($u) <- user($u)"))?;
            let [(user_id,)] = users.as_slice() else { return Err(TokenError::Invalid("token must name one user".into())) };
            let default_org: Vec<(String,)> = authorizer.query(rule!("d($d) <- default_org($d)"))?;
            let epoch: Vec<(i64,)> = authorizer.query(rule!("e($e) <- epoch($e)"))?;
            let mut orgs: Vec<(String, String, String, i64)> =
                authorizer.query(rule!("o($id, $slug, $role, $i) <- org($id, $slug, $role, $i)"))?;
            orgs.sort_by_key(|o| o.3);
            let workspaces: Vec<(String, String, String, String, String, bool)> =
                authorizer.query(rule!("w($id, $org, $slug, $kind, $role, $p) <- workspace($id, $org, $slug, $kind, $role, $p)"))?;
            // The request id lives in a block the edge appended; it is
            // informational, so reading it from any block is fine.
            let request: Vec<(String,)> = authorizer.query_all(rule!("r($r) <- request($r)"))?;
            let mut workspaces: Vec<WorkspaceAccess> = workspaces
                .into_iter()
                .map(|(id, org_id, slug, kind, role, personal_default)| WorkspaceAccess { id, org_id, slug, kind, role, personal_default })
                .collect();
            workspaces.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Caller::User {
                principal: Principal {
                    user_id: user_id.clone(),
                    orgs: orgs.into_iter().map(|(id, slug, role, _)| OrgAccess { id, slug, role }).collect(),
                    workspaces,
                    default_org: default_org.first().map(|d| d.0.clone()).unwrap_or_default(),
                    epoch: epoch.first().map(|e| e.0).unwrap_or_default(),
                },
                request_id: request.last().map(|r| r.0.clone()),
            })
        }
        other => Err(TokenError::Invalid(format!("a {other} token is not accepted here"))),
    }
}

/// Verify an API token presented at the edge.
pub fn verify_api_token(keys: &KeySet, token: &str) -> Result<ApiTokenClaims, TokenError> {
    let Verified { token, mut authorizer, kind } = verify_any(keys, token)?;
    if kind != "api" {
        return Err(TokenError::Invalid("not an API token".into()));
    }
    let one = |v: Vec<(String,)>, what: &str| -> Result<String, TokenError> {
        match v.as_slice() {
            [(x,)] => Ok(x.clone()),
            _ => Err(TokenError::Invalid(format!("API token must name one {what}"))),
        }
    };
    let token_id = one(authorizer.query(rule!("t($t) <- token_id($t)"))?, "token id")?;
    let user_id = one(authorizer.query(rule!("u($u) <- user($u)"))?, "user")?;
    let org_id = one(authorizer.query(rule!("o($o) <- organization($o)"))?, "organization")?;
    let role = one(authorizer.query(rule!("r($r) <- role($r)"))?, "role")?;
    let expiry: Vec<(SystemTime,)> = authorizer.query(rule!("e($e) <- expires($e)"))?;
    Ok(ApiTokenClaims {
        token_id,
        user_id,
        org_id,
        role,
        expires_at: expiry[0].0,
        revocation_ids: token.revocation_identifiers().iter().map(hex::encode).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            user_id: "u1".into(),
            orgs: vec![
                OrgAccess { id: "o1".into(), slug: "a".into(), role: "owner".into() },
                OrgAccess { id: "o0".into(), slug: "b".into(), role: "viewer".into() },
            ],
            workspaces: vec![WorkspaceAccess {
                id: "w1".into(),
                org_id: "o1".into(),
                slug: "personal".into(),
                kind: "personal".into(),
                role: "owner".into(),
                personal_default: true,
            }],
            default_org: "o1".into(),
            epoch: 7,
        }
    }

    #[test]
    fn internal_token_round_trips_with_request_id() {
        let keys = KeySet::generate(1);
        let t = mint_internal(&keys, &principal(), Duration::from_secs(60)).unwrap();
        let t = attach_request_id(&keys, &t, "req-1").unwrap();
        match verify_internal(&keys, &t).unwrap() {
            Caller::User { principal: p, request_id } => {
                assert_eq!(p, principal());
                assert_eq!(request_id.as_deref(), Some("req-1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expired_forged_and_foreign_tokens_fail() {
        let keys = KeySet::generate(1);
        let t = mint_internal(&keys, &principal(), Duration::from_secs(0)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(verify_internal(&keys, &t).unwrap_err(), TokenError::Expired);
        let other = KeySet::generate(1);
        let forged = mint_internal(&other, &principal(), Duration::from_secs(60)).unwrap();
        assert!(matches!(verify_internal(&keys, &forged), Err(TokenError::Invalid(_))));
        assert!(matches!(verify_internal(&keys, "garbage"), Err(TokenError::Invalid(_))));
        let api = mint_api_token(&keys, "t1", "u1", "o1", "member", Duration::from_secs(60)).unwrap();
        assert!(matches!(verify_internal(&keys, &api), Err(TokenError::Invalid(_))), "api tokens are not internal");
    }

    #[test]
    fn rotation_keeps_old_tokens_until_the_key_is_dropped() {
        let keys = KeySet::generate(1);
        let old = mint_service(&keys, "orchestrator", Duration::from_secs(60)).unwrap();
        let rotated = keys.rotated(2);
        assert_eq!(verify_internal(&rotated, &old).unwrap(), Caller::Service { name: "orchestrator".into() });
        let new = mint_service(&rotated, "execution", Duration::from_secs(60)).unwrap();
        assert!(verify_internal(&rotated, &new).is_ok());
        assert!(verify_internal(&rotated.without(1), &old).is_err());
    }

    #[test]
    fn api_token_claims_and_revocation_ids() {
        let keys = KeySet::generate(3);
        let t = mint_api_token(&keys, "tok", "u1", "o1", "admin", Duration::from_secs(60)).unwrap();
        let c = verify_api_token(&keys, &t).unwrap();
        assert_eq!((c.token_id.as_str(), c.user_id.as_str(), c.org_id.as_str(), c.role.as_str()), ("tok", "u1", "o1", "admin"));
        assert_eq!(c.revocation_ids.len(), 1);
        let svc = mint_service(&keys, "x", Duration::from_secs(60)).unwrap();
        assert!(verify_api_token(&keys, &svc).is_err());
    }

    #[test]
    fn keys_load_from_config_strings() {
        let hex = KeySet::new_private_key_hex();
        let keys = KeySet::from_config(&hex, 5, &[]).unwrap();
        let public = keys.public_entry().unwrap();
        let verify_only = KeySet::from_config("", 5, &[public]).unwrap();
        let t = mint_service(&keys, "x", Duration::from_secs(60)).unwrap();
        assert!(verify_internal(&verify_only, &t).is_ok());
        assert!(!verify_only.can_sign());
    }
}
