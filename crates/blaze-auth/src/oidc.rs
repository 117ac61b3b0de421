//! Verification of OIDC ID tokens (what the Blaze client stores after
//! sign-in) against the identity provider's JWKS.
//!
//! RS256 and ES256 via JWKS (fetched, cached, refreshed when an unknown `kid`
//! shows up, at most once per `MIN_REFRESH`), HS256 only when a shared secret
//! is configured; `iss`, `aud`, `exp` with leeway. Expiry is its own error so
//! the edge can answer the `JWT is expired` the client re-logs in on.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, errors::ErrorKind, jwk::JwkSet};
use tokio::sync::RwLock;

const MIN_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: Vec<String>,
    pub jwks_url: String,
    pub hs256_secret: Option<Vec<u8>>,
    pub leeway: Duration,
    pub jwks_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Expiry, Unix seconds.
    pub expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("JWT is expired")]
    Expired,
    #[error("invalid JWT: {0}")]
    Invalid(String),
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
}

struct Jwks {
    set: JwkSet,
    fetched: Instant,
}

pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    jwks: RwLock<Option<Jwks>>,
    refresh_lock: tokio::sync::Mutex<Option<Instant>>,
}

impl OidcVerifier {
    pub fn new(settings: OidcSettings) -> Arc<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client");
        Arc::new(OidcVerifier { settings, http, jwks: RwLock::new(None), refresh_lock: tokio::sync::Mutex::new(None) })
    }

    pub fn enabled(&self) -> bool {
        !self.settings.issuer.is_empty()
    }

    fn jwks_url(&self) -> String {
        if self.settings.jwks_url.is_empty() {
            format!("{}/.well-known/jwks.json", self.settings.issuer.trim_end_matches('/'))
        } else {
            self.settings.jwks_url.clone()
        }
    }

    async fn refresh(&self, force: bool) -> Result<(), OidcError> {
        let mut last = self.refresh_lock.lock().await;
        let fresh = self.jwks.read().await.as_ref().is_some_and(|j| j.fetched.elapsed() < self.settings.jwks_ttl);
        if !force && fresh {
            return Ok(());
        }
        // An unknown kid triggers a refresh, but garbage kids must not make
        // us hammer the IdP: at most one forced refresh per MIN_REFRESH.
        if force && last.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        let set: JwkSet = self
            .http
            .get(self.jwks_url())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
            .json()
            .await
            .map_err(|e| OidcError::Unavailable(format!("bad JWKS: {e}")))?;
        *self.jwks.write().await = Some(Jwks { set, fetched: Instant::now() });
        *last = Some(Instant::now());
        Ok(())
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        self.refresh(false).await?;
        for attempt in 0..2 {
            if attempt == 1 {
                self.refresh(true).await?;
            }
            let guard = self.jwks.read().await;
            let set = &guard.as_ref().expect("fetched").set;
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            if let Some(jwk) = jwk {
                return DecodingKey::from_jwk(jwk).map_err(|e| OidcError::Invalid(format!("unusable JWK: {e}")));
            }
        }
        Err(OidcError::Invalid("unknown signing key".into()))
    }

    /// Verify a compact JWT and return its identity claims.
    pub async fn verify(&self, token: &str) -> Result<IdClaims, OidcError> {
        let header = decode_header(token).map_err(|e| OidcError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => match &self.settings.hs256_secret {
                Some(secret) => DecodingKey::from_secret(secret),
                None => return Err(OidcError::Invalid("HS256 tokens are not accepted".into())),
            },
            Algorithm::RS256 | Algorithm::ES256 => self.key_for(header.kid.as_deref()).await?,
            other => return Err(OidcError::Invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        if self.settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.audience);
        }
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => OidcError::Expired,
            _ => OidcError::Invalid(e.to_string()),
        })?;
        let c = data.claims;
        let text = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let subject = text("sub").filter(|s| !s.is_empty()).ok_or_else(|| OidcError::Invalid("\"sub\" is required".into()))?;
        Ok(IdClaims {
            issuer: text("iss").unwrap_or_default(),
            subject,
            email: text("email"),
            name: text("name"),
            expires_at: c.get("exp").and_then(|v| v.as_u64()).unwrap_or_default(),
        })
    }
}
