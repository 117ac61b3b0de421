//! A test identity provider speaking the real protocols: a JWKS endpoint
//! (with key rotation), `/authorize` with PKCE, `/token` for the code
//! exchange, and direct minting of ID tokens (valid or deliberately broken)
//! so tests exercise the real OIDC and OAuth code paths of the edge.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RSA1: &str = include_str!("../fixtures/idp/rsa1.pem");
const RSA2: &str = include_str!("../fixtures/idp/rsa2.pem");
const EC1: &str = include_str!("../fixtures/idp/ec1.pem");
const RSA1_JWK: &str = include_str!("../fixtures/idp/rsa1.jwk.json");
const RSA2_JWK: &str = include_str!("../fixtures/idp/rsa2.jwk.json");
const EC1_JWK: &str = include_str!("../fixtures/idp/ec1.jwk.json");

pub const CLIENT_ID: &str = "blaze-test-client";
pub const CLIENT_SECRET: &str = "blaze-test-secret";
pub const AUDIENCE: &str = "blaze-test-client";

struct Grant {
    challenge: String,
    redirect_uri: String,
    sub: String,
}

struct IdpState {
    issuer: String,
    /// Published JWKs.
    published: Mutex<Vec<Value>>,
    /// kid used by `id_token` when the spec names none.
    signing_kid: Mutex<String>,
    codes: Mutex<HashMap<String, Grant>>,
    /// Who signs in at `/authorize`.
    user: Mutex<String>,
}

/// What to put in a minted ID token; defaults make a valid token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Seconds from now (negative = already expired).
    pub expires_in: i64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// `rsa-1`, `rsa-2`, `ec-1`, or any other (unknown) kid.
    pub kid: Option<String>,
    /// Sign with this key's material but claim `kid` (forged signature).
    pub sign_with: Option<String>,
    /// HS256 with this secret instead of the IdP's keys.
    pub hs256_secret: Option<String>,
}

impl TokenSpec {
    pub fn new(sub: &str) -> TokenSpec {
        TokenSpec {
            sub: sub.into(),
            email: Some(format!("{sub}@idp.test")),
            name: Some(format!("User {sub}")),
            expires_in: 600,
            issuer: None,
            audience: None,
            kid: None,
            sign_with: None,
            hs256_secret: None,
        }
    }
}

pub struct TestIdp {
    pub issuer: String,
    state: Arc<IdpState>,
    shutdown: tokio_util::sync::CancellationToken,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn key_material(kid: &str) -> (Algorithm, EncodingKey) {
    match kid {
        "rsa-2" => (Algorithm::RS256, EncodingKey::from_rsa_pem(RSA2.as_bytes()).expect("rsa2")),
        "ec-1" => (Algorithm::ES256, EncodingKey::from_ec_pem(EC1.as_bytes()).expect("ec1")),
        _ => (Algorithm::RS256, EncodingKey::from_rsa_pem(RSA1.as_bytes()).expect("rsa1")),
    }
}

fn sign(state: &IdpState, spec: &TokenSpec) -> String {
    let claims = json!({
        "iss": spec.issuer.clone().unwrap_or_else(|| state.issuer.clone()),
        "aud": spec.audience.clone().unwrap_or_else(|| AUDIENCE.into()),
        "sub": spec.sub,
        "email": spec.email,
        "name": spec.name,
        "iat": now(),
        "exp": now() + spec.expires_in,
    });
    if let Some(secret) = &spec.hs256_secret {
        return encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign");
    }
    let kid = spec.kid.clone().unwrap_or_else(|| state.signing_kid.lock().expect("lock").clone());
    let (alg, key) = key_material(spec.sign_with.as_deref().unwrap_or(&kid));
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    encode(&header, &claims, &key).expect("sign")
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    code_challenge_method: String,
}

async fn authorize(State(s): State<Arc<IdpState>>, Query(q): Query<AuthorizeQuery>) -> Response {
    if q.response_type != "code" || q.client_id != CLIENT_ID || q.code_challenge_method != "S256" {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    let sub = s.user.lock().expect("lock").clone();
    s.codes.lock().expect("lock").insert(code.clone(), Grant { challenge: q.code_challenge, redirect_uri: q.redirect_uri.clone(), sub });
    let mut target = url::Url::parse(&q.redirect_uri).expect("redirect uri");
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(st) = q.state {
        target.query_pairs_mut().append_pair("state", &st);
    }
    Redirect::to(target.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    client_id: String,
    code_verifier: String,
    redirect_uri: String,
    client_secret: Option<String>,
}

async fn token(State(s): State<Arc<IdpState>>, Form(f): Form<TokenForm>) -> Response {
    let error = |code: &str, description: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": code, "error_description": description}))).into_response()
    };
    if f.grant_type != "authorization_code" {
        return error("unsupported_grant_type", "only authorization_code");
    }
    if f.client_id != CLIENT_ID || f.client_secret.as_deref() != Some(CLIENT_SECRET) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "invalid_client"}))).into_response();
    }
    let Some(grant) = s.codes.lock().expect("lock").remove(&f.code) else {
        return error("invalid_grant", "unknown or used authorization code");
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(f.code_verifier.as_bytes()));
    if challenge != grant.challenge {
        return error("invalid_grant", "PKCE verification failed");
    }
    if f.redirect_uri != grant.redirect_uri {
        return error("invalid_grant", "redirect_uri mismatch");
    }
    let id_token = sign(&s, &TokenSpec::new(&grant.sub));
    Json(json!({
        "access_token": format!("at-{}", uuid::Uuid::new_v4().simple()),
        "id_token": id_token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid profile email",
    }))
    .into_response()
}

impl TestIdp {
    pub async fn start() -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let published: Vec<Value> = [RSA1_JWK, EC1_JWK].iter().map(|j| serde_json::from_str(j).expect("jwk")).collect();
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            published: Mutex::new(published),
            signing_kid: Mutex::new("rsa-1".into()),
            codes: Mutex::new(HashMap::new()),
            user: Mutex::new("idp-user".into()),
        });
        let app = Router::new()
            .route(
                "/.well-known/jwks.json",
                get(|State(s): State<Arc<IdpState>>| async move { Json(json!({"keys": s.published.lock().expect("lock").clone()})) }),
            )
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned()).await });
        TestIdp { issuer, state, shutdown }
    }

    pub fn id_token(&self, spec: &TokenSpec) -> String {
        sign(&self.state, spec)
    }

    /// Replace the published keys with `rsa-2` and sign with it from now on.
    pub fn rotate(&self) {
        *self.state.published.lock().expect("lock") = vec![serde_json::from_str(RSA2_JWK).expect("jwk")];
        *self.state.signing_kid.lock().expect("lock") = "rsa-2".into();
    }

    /// Who signs in at `/authorize` next.
    pub fn sign_in_as(&self, sub: &str) {
        *self.state.user.lock().expect("lock") = sub.into();
    }

    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Point a configuration at this IdP (OIDC verification + OAuth flow).
    pub fn configure(&self, cfg: &mut blaze_kit::Config) {
        cfg.oidc.issuer = self.issuer.clone();
        cfg.oidc.audience = vec![AUDIENCE.into()];
        cfg.oauth.enabled = true;
        cfg.oauth.provider_name = "Test IdP".into();
        cfg.oauth.authorization_url = self.authorization_url();
        cfg.oauth.token_url = self.token_url();
        cfg.oauth.client_id = CLIENT_ID.into();
        cfg.oauth.client_secret = blaze_kit::Secret(CLIENT_SECRET.into());
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
