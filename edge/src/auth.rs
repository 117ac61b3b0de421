//! Authentication stage: any accepted credential becomes an internal biscuit.
//!
//! Order (contract §5.1): a bearer token wins; `x-blaze-dev-user-*` headers
//! count only in dev mode and only without a bearer token. A bearer token
//! that looks like a JWT is an OIDC ID token; anything else must be one of
//! our API tokens. Principals are cached per credential (keyed by a hash of
//! it) until the credential or the internal token expires, and refreshed
//! when the user's membership epoch moves. Every failure is a 401 — an
//! expired JWT says `JWT is expired`, which makes the client sign in again.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use blaze_auth::{KeySet, Principal, TokenError, oidc::OidcError, oidc::OidcVerifier, tokens};
use blaze_kit::client::Intercepted;
use blaze_proto::identity::{self as idpb, identity_service_client::IdentityServiceClient};
use blaze_redis::gate::{Gate, GateResult};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

const MAX_CACHED: usize = 50_000;
/// Refresh a cached internal token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 401 whose message the client re-logs in on.
    Expired(String),
    /// 401 `UNAUTHORIZED`.
    Unauthorized(String),
    /// 429 with rate-limit headers.
    RateLimited(GateResult),
    /// 503: identity or Redis unreachable and failing closed.
    Unavailable(String),
}

/// What the edge knows about an accepted credential.
#[derive(Debug)]
pub struct CachedPrincipal {
    pub principal: Principal,
    /// Internal biscuit (without the per-request block).
    pub token: String,
    pub valid_until: Instant,
    pub revocation_ids: Vec<String>,
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub cache_key: String,
    pub principal: Arc<CachedPrincipal>,
    pub gate: Option<GateResult>,
}

enum Credential {
    Oidc { claims: blaze_auth::oidc::IdClaims },
    Api { claims: blaze_auth::ApiTokenClaims },
    Dev { sub: String, email: String, name: String },
}

pub struct Authenticator {
    keys: Arc<KeySet>,
    oidc: Arc<OidcVerifier>,
    identity: IdentityServiceClient<Intercepted>,
    gate: Option<Gate>,
    fail_open: bool,
    dev_mode: bool,
    ttl: Duration,
    cache: Mutex<HashMap<String, Arc<CachedPrincipal>>>,
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// The bearer token of a request (case-insensitive scheme, trimmed).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = header(headers, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.split('.').all(|p| !p.is_empty())
}

impl Authenticator {
    pub fn new(
        keys: Arc<KeySet>,
        oidc: Arc<OidcVerifier>,
        identity: IdentityServiceClient<Intercepted>,
        gate: Option<Gate>,
        fail_open: bool,
        dev_mode: bool,
        ttl: Duration,
    ) -> Self {
        Authenticator { keys, oidc, identity, gate, fail_open, dev_mode, ttl, cache: Mutex::new(HashMap::new()) }
    }

    async fn credential(&self, headers: &http::HeaderMap) -> Result<(String, Credential), AuthError> {
        if let Some(token) = bearer(headers) {
            let key = hex::encode(Sha256::digest(token.as_bytes()));
            if looks_like_jwt(token) {
                if !self.oidc.enabled() {
                    return Err(AuthError::Unauthorized("OIDC sign-in is not configured".into()));
                }
                return match self.oidc.verify(token).await {
                    Ok(claims) => Ok((key, Credential::Oidc { claims })),
                    Err(OidcError::Expired) => Err(AuthError::Expired("JWT is expired".into())),
                    Err(OidcError::Invalid(reason)) => {
                        tracing::info!(reason, "rejected ID token");
                        Err(AuthError::Unauthorized("Invalid token".into()))
                    }
                    Err(OidcError::Unavailable(reason)) => {
                        tracing::warn!(reason, "identity provider unavailable");
                        Err(AuthError::Unauthorized("Token could not be verified".into()))
                    }
                };
            }
            return match tokens::verify_api_token(&self.keys, token) {
                Ok(claims) => Ok((key, Credential::Api { claims })),
                Err(TokenError::Expired) => Err(AuthError::Expired("API token is expired".into())),
                Err(e) => {
                    tracing::info!(reason = %e, "rejected API token");
                    Err(AuthError::Unauthorized("Invalid token".into()))
                }
            };
        }
        if self.dev_mode {
            let sub = header(headers, "x-blaze-dev-user-sub").unwrap_or("dev-user").to_owned();
            let email = header(headers, "x-blaze-dev-user-email").unwrap_or("dev@local.blaze").to_owned();
            let name = header(headers, "x-blaze-dev-user-name").unwrap_or("Dev User").to_owned();
            let key = hex::encode(Sha256::digest(format!("dev\0{sub}\0{email}\0{name}").as_bytes()));
            return Ok((key, Credential::Dev { sub, email, name }));
        }
        Err(AuthError::Unauthorized("Missing Authorization Bearer token".into()))
    }

    async fn resolve(&self, credential: &Credential) -> Result<CachedPrincipal, AuthError> {
        let (request, credential_expiry, revocation_ids) = match credential {
            Credential::Oidc { claims } => (
                idpb::ResolvePrincipalRequest {
                    kind: idpb::CredentialKind::Oidc as i32,
                    // subjects are only unique per issuer
                    subject: format!("{}|{}", claims.issuer, claims.subject),
                    email: claims.email.clone(),
                    display_name: claims.name.clone(),
                    ..Default::default()
                },
                Some(UNIX_EPOCH + Duration::from_secs(claims.expires_at)),
                Vec::new(),
            ),
            Credential::Api { claims } => (
                idpb::ResolvePrincipalRequest {
                    kind: idpb::CredentialKind::ApiToken as i32,
                    user_id: claims.user_id.clone(),
                    token_org_id: claims.org_id.clone(),
                    token_role: claims.role.clone(),
                    ..Default::default()
                },
                Some(claims.expires_at),
                claims.revocation_ids.clone(),
            ),
            Credential::Dev { sub, email, name } => (
                idpb::ResolvePrincipalRequest {
                    kind: idpb::CredentialKind::Dev as i32,
                    subject: sub.clone(),
                    email: Some(email.clone()),
                    display_name: Some(name.clone()),
                    ..Default::default()
                },
                None,
                Vec::new(),
            ),
        };
        let resp = self.identity.clone().resolve_principal(request).await.map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::NotFound | tonic::Code::PermissionDenied => {
                AuthError::Unauthorized(s.message().to_owned())
            }
            _ => {
                tracing::warn!(error = %s, "identity unavailable");
                AuthError::Unavailable("Identity service unavailable".into())
            }
        })?;
        let principal = Principal::from(resp.into_inner().principal.unwrap_or_default());
        let token = tokens::mint_internal(&self.keys, &principal, self.ttl)
            .map_err(|e| AuthError::Unavailable(format!("cannot mint internal token: {e}")))?;
        let mut valid_until = Instant::now() + self.ttl.saturating_sub(REFRESH_MARGIN);
        if let Some(exp) = credential_expiry {
            let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
            valid_until = valid_until.min(Instant::now() + left);
        }
        Ok(CachedPrincipal { principal, token, valid_until, revocation_ids })
    }

    fn cached(&self, key: &str) -> Option<Arc<CachedPrincipal>> {
        let cache = self.cache.lock();
        cache.get(key).filter(|c| c.valid_until > Instant::now()).cloned()
    }

    fn store(&self, key: String, value: Arc<CachedPrincipal>) {
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.valid_until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, value);
    }

    /// Drop a cached principal (after the caller changed memberships).
    pub fn invalidate(&self, key: &str) {
        self.cache.lock().remove(key);
    }

    /// Authenticate a request and charge its rate limits. `org_ident` is the
    /// organisation named in the path (for the per-organisation bucket).
    pub async fn authenticate(&self, headers: &http::HeaderMap, org_ident: Option<&str>) -> Result<Authenticated, AuthError> {
        let (key, credential) = self.credential(headers).await?;
        let mut principal = match self.cached(&key) {
            Some(p) => p,
            None => {
                let p = Arc::new(self.resolve(&credential).await?);
                self.store(key.clone(), p.clone());
                p
            }
        };
        let Some(gate) = &self.gate else { return Ok(Authenticated { cache_key: key, principal, gate: None }) };
        let org = principal
            .principal
            .resolve_org(org_ident.unwrap_or(""))
            .map(|o| o.id.clone())
            .unwrap_or_else(|_| principal.principal.default_org.clone());
        let result = match gate.check(&principal.principal.user_id, &org, &principal.revocation_ids).await {
            Ok(r) => r,
            Err(e) if self.fail_open => {
                tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
                return Ok(Authenticated { cache_key: key, principal, gate: None });
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable");
                return Err(AuthError::Unavailable("Rate limiter unavailable".into()));
            }
        };
        if result.revoked {
            self.invalidate(&key);
            return Err(AuthError::Unauthorized("Token has been revoked".into()));
        }
        if !result.allowed {
            return Err(AuthError::RateLimited(result));
        }
        if result.epoch > principal.principal.epoch {
            // memberships changed since this principal was built
            principal = Arc::new(self.resolve(&credential).await?);
            self.store(key.clone(), principal.clone());
        }
        Ok(Authenticated { cache_key: key, principal, gate: Some(result) })
    }

    /// The internal token for one request: the cached token plus a block
    /// naming the request id.
    pub fn request_token(&self, auth: &Authenticated, request_id: &str) -> String {
        tokens::attach_request_id(&self.keys, &auth.principal.token, request_id).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not attach request id to token");
            auth.principal.token.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "bearer   abc.def.ghi ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        h.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert!(looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("EnQKC2tpbmQ"));
    }
}
