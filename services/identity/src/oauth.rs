//! The OAuth2 authorization-code + PKCE flow of the sign-in page (R39, R40):
//! the public configuration, and the code exchange done server-side so the
//! client secret never reaches the browser.

use blaze_kit::{ApiError, ApiResult, config::OAuthConfig};
use blaze_proto::identity::{OAuthPublicConfig, OAuthTokenExchangeResult};

fn parse_query(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.trim_start_matches('?').as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

pub fn public_config(cfg: &OAuthConfig) -> OAuthPublicConfig {
    let enabled = cfg.enabled && !cfg.client_id.is_empty() && !cfg.authorization_url.is_empty() && !cfg.token_url.is_empty();
    OAuthPublicConfig {
        enabled,
        provider_name: cfg.provider_name.clone(),
        authorization_url: non_empty(&cfg.authorization_url),
        client_id: non_empty(&cfg.client_id),
        scope: cfg.scope.clone(),
        redirect_uri: non_empty(&cfg.redirect_uri),
        extra_auth_params: parse_query(&cfg.auth_extra_params).into_iter().collect(),
    }
}

/// Exchange an authorization code at the IdP's token endpoint.
pub async fn exchange(
    http: &reqwest::Client,
    cfg: &OAuthConfig,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> ApiResult<OAuthTokenExchangeResult> {
    if code.trim().is_empty() {
        return Err(ApiError::invalid("Missing OAuth2 authorization code"));
    }
    if verifier.trim().is_empty() {
        return Err(ApiError::invalid("Missing OAuth2 code verifier"));
    }
    if !public_config(cfg).enabled {
        return Err(ApiError::precondition("OAUTH_NOT_CONFIGURED", "OAuth2 is not configured"));
    }
    let redirect = non_empty(redirect_uri).or_else(|| non_empty(&cfg.redirect_uri)).unwrap_or_else(|| "http://localhost:5173/auth".into());
    let mut form = vec![
        ("grant_type".to_string(), "authorization_code".to_string()),
        ("code".into(), code.trim().into()),
        ("client_id".into(), cfg.client_id.clone()),
        ("code_verifier".into(), verifier.trim().into()),
        ("redirect_uri".into(), redirect),
    ];
    if !cfg.client_secret.is_empty() {
        form.push(("client_secret".into(), cfg.client_secret.expose().into()));
    }
    form.extend(parse_query(&cfg.token_extra_params));
    let resp = http.post(&cfg.token_url).header("accept", "application/json").form(&form).send().await.map_err(|e| {
        tracing::warn!(error = %e, "OAuth2 token endpoint unreachable");
        ApiError::new(tonic::Code::Unavailable, "OAUTH_PROVIDER_UNAVAILABLE", "OAuth2 provider is unreachable")
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|_| ApiError::new(tonic::Code::Unavailable, "OAUTH_PROVIDER_ERROR", "OAuth2 token endpoint returned invalid JSON"))?;
    let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if !status.is_success() || body.get("error").is_some() {
        // The provider's own words (e.g. invalid_grant) are for the user;
        // a rejected code is the client's problem, not a server error.
        let message = text("error_description")
            .or_else(|| text("error"))
            .unwrap_or_else(|| format!("OAuth2 token exchange failed with status {}", status.as_u16()));
        let code = if status.is_server_error() { tonic::Code::Unavailable } else { tonic::Code::InvalidArgument };
        return Err(ApiError::new(code, "OAUTH_EXCHANGE_FAILED", message));
    }
    Ok(OAuthTokenExchangeResult {
        access_token: text("access_token"),
        id_token: text("id_token"),
        refresh_token: text("refresh_token"),
        token_type: text("token_type"),
        expires_in: body.get("expires_in").and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))),
        scope: text("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_enabled_only_when_complete() {
        let mut cfg = OAuthConfig::default();
        assert!(!public_config(&cfg).enabled);
        cfg.client_id = "cid".into();
        cfg.token_url = "https://idp.test/token".into();
        cfg.auth_extra_params = "prompt=consent&access_type=offline".into();
        let p = public_config(&cfg);
        assert!(p.enabled);
        assert_eq!(p.extra_auth_params["prompt"], "consent");
        assert_eq!(p.redirect_uri, None);
    }
}
