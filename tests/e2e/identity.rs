//! Identity through the edge: OIDC ID tokens (JWKS, rotation, every way a
//! token can be wrong), the OAuth code exchange, first-use provisioning under
//! concurrency, API tokens and their revocation, dev headers, and row-level
//! security proven without service code.

use std::{sync::Arc, time::Duration};

use blaze::Role;
use blaze_testkit::{
    MeshOptions, TestMesh,
    idp::{self, TestIdp, TokenSpec},
};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn mesh_with_idp(extra: impl Fn(&mut blaze_kit::Config) + Send + Sync + 'static) -> (TestMesh, Arc<TestIdp>) {
    let idp = Arc::new(TestIdp::start().await);
    let i = idp.clone();
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(move |cfg| {
            i.configure(cfg);
            extra(cfg);
        })),
        ..Default::default()
    })
    .await;
    (mesh, idp)
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_id_tokens_are_verified_and_every_failure_is_a_401() {
    let (mesh, idp) = mesh_with_idp(|cfg| cfg.oidc.hs256_secret = blaze_kit::Secret("shared-secret".into())).await;
    let http = mesh.http();
    let url = format!("{}/api/v1/orgs", mesh.edge_url());
    let call = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move { body(http.get(&url).bearer_auth(token).send().await.unwrap()).await }
    };

    let (status, orgs) = call(idp.id_token(&TokenSpec::new("oidc-alice"))).await;
    assert_eq!(status, 200, "{orgs}");
    assert_eq!(orgs["data"][0]["name"], "User oidc-alice Organization");
    let (status, _) = call(idp.id_token(&TokenSpec { kid: Some("ec-1".into()), ..TokenSpec::new("oidc-alice") })).await;
    assert_eq!(status, 200, "ES256 via JWKS");
    let (status, _) = call(idp.id_token(&TokenSpec { hs256_secret: Some("shared-secret".into()), ..TokenSpec::new("oidc-alice") })).await;
    assert_eq!(status, 200, "HS256 with the configured secret");

    let (status, e) = call(idp.id_token(&TokenSpec { expires_in: -120, ..TokenSpec::new("oidc-alice") })).await;
    assert_eq!(status, 401);
    assert!(e["error"].as_str().unwrap().contains("JWT is expired"), "{e}");
    // within the leeway an expired token still passes
    let (status, _) = call(idp.id_token(&TokenSpec { expires_in: -5, ..TokenSpec::new("oidc-alice") })).await;
    assert_eq!(status, 200);

    let unsigned = {
        let b64 = |v: Value| base64_url(&v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"sub": "x", "iss": idp.issuer, "aud": idp::AUDIENCE, "exp": 9_999_999_999_u64}))
        )
    };
    let broken = [
        ("wrong issuer", idp.id_token(&TokenSpec { issuer: Some("https://evil.test".into()), ..TokenSpec::new("a") })),
        ("wrong audience", idp.id_token(&TokenSpec { audience: Some("someone-else".into()), ..TokenSpec::new("a") })),
        (
            "forged signature",
            idp.id_token(&TokenSpec { kid: Some("rsa-1".into()), sign_with: Some("rsa-2".into()), ..TokenSpec::new("a") }),
        ),
        ("unknown kid", idp.id_token(&TokenSpec { kid: Some("nope".into()), ..TokenSpec::new("a") })),
        ("wrong HS256 secret", idp.id_token(&TokenSpec { hs256_secret: Some("guess".into()), ..TokenSpec::new("a") })),
        ("alg none", unsigned),
        ("garbage", "aaa.bbb.ccc".into()),
    ];
    for (what, token) in broken {
        let (status, e) = call(token).await;
        assert_eq!((status, e["code"].as_str()), (401, Some("UNAUTHORIZED")), "{what}: {e}");
        assert!(!e["error"].as_str().unwrap().contains("expired"), "{what}");
    }

    // key rotation at the IdP is picked up without a restart
    tokio::time::sleep(Duration::from_millis(1100)).await;
    idp.rotate();
    let (status, _) = call(idp.id_token(&TokenSpec::new("oidc-alice"))).await;
    assert_eq!(status, 200, "token signed with the rotated key");
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_code_exchange_returns_the_contract_shape_and_rejects_bad_codes() {
    let (mesh, idp) = mesh_with_idp(|_| {}).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let edge = mesh.edge_url();

    let (status, cfg) = body(http.get(format!("{edge}/api/v1/auth/oauth/config")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let cfg = &cfg["data"];
    assert_eq!(cfg["enabled"], true);
    assert_eq!(cfg["clientId"], idp::CLIENT_ID);
    assert_eq!(cfg["redirectUri"], Value::Null);
    assert!(cfg.get("clientSecret").is_none(), "the secret never leaves");

    // the browser's half: PKCE verifier and challenge, authorize, follow the redirect
    let verifier = "v".repeat(64);
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    idp.sign_in_as("oauth-user");
    let redirect_uri = "http://localhost:5173/auth";
    let resp = http
        .get(cfg["authorizationUrl"].as_str().unwrap())
        .query(&[
            ("response_type", "code"),
            ("client_id", idp::CLIENT_ID),
            ("redirect_uri", redirect_uri),
            ("state", "st"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();

    let exchange = |body: Value| http.post(format!("{edge}/api/v1/auth/oauth/exchange")).json(&body).send();
    let (status, result) =
        body(exchange(json!({"code": code, "codeVerifier": verifier, "redirectUri": redirect_uri})).await.unwrap()).await;
    assert_eq!(status, 200, "{result}");
    let data = &result["data"];
    for key in ["accessToken", "idToken", "refreshToken", "tokenType", "expiresIn", "scope"] {
        assert!(data.get(key).is_some(), "{key} missing: {data}");
    }
    assert_eq!(
        (data["tokenType"].as_str(), data["expiresIn"].as_i64(), data["refreshToken"].clone()),
        (Some("Bearer"), Some(3600), Value::Null)
    );
    // the ID token works as the client will use it
    let resp = http.get(format!("{edge}/api/v1/orgs")).bearer_auth(data["idToken"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // a reused code, a wrong verifier and a missing code are 400s, never 500
    let (status, e) = body(exchange(json!({"code": code, "codeVerifier": verifier, "redirectUri": redirect_uri})).await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("OAUTH_EXCHANGE_FAILED")));
    assert_eq!(e["error"], "unknown or used authorization code");
    let (status, e) = body(exchange(json!({"code": "", "codeVerifier": verifier, "redirectUri": redirect_uri})).await.unwrap()).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("Missing OAuth2 authorization code")));
    let (status, _) = body(exchange(json!({"code": "nope", "codeVerifier": "x", "redirectUri": redirect_uri})).await.unwrap()).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_first_requests_create_one_personal_organisation() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.auth.dev_mode = true)),
        ..Default::default()
    })
    .await;
    let http = mesh.http();
    let url = format!("{}/api/v1/orgs", mesh.edge_url());
    let calls = (0..20).map(|_| {
        let http = http.clone();
        let url = url.clone();
        async move {
            body(
                http.get(&url)
                    .header("x-blaze-dev-user-sub", "carol")
                    .header("x-blaze-dev-user-email", "carol@example.test")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(status, v)| {
            assert_eq!(*status, 200, "{v}");
            assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
            v["data"][0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "everyone sees the same organisation");
    let owner = mesh.db.owner().await;
    let row = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::bigint AS n FROM organization_memberships m JOIN users u ON u.id = m.user_id WHERE u.external_sub = 'carol'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 1);
    let row = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*)::bigint FROM workspaces w JOIN users u ON u.id = w.created_by_user_id WHERE u.external_sub = 'carol' AND w.type = 'personal'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 1, "one personal workspace");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_win_over_dev_headers_and_api_tokens_can_be_revoked() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.auth.dev_mode = true)),
        ..Default::default()
    })
    .await;
    let alice = mesh.user("alice").await;
    let http = mesh.http();
    let edge = mesh.edge_url();

    // the client sends both; the bearer token decides who is calling
    let (status, me) = body(
        http.get(format!("{edge}/api/v1/me")).bearer_auth(&alice.api_token).header("x-blaze-dev-user-sub", "mallory").send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["data"]["userId"], alice.user_id);

    // an admin mints a member token through the API; it works, then is revoked
    let (status, minted) = body(
        http.post(format!("{edge}/api/v1/orgs/{}/tokens", alice.org_id))
            .bearer_auth(&alice.api_token)
            .json(&json!({"role": "member", "ttlSeconds": 600, "description": "ci"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["data"]["token"].as_str().unwrap().to_owned();
    let token_id = minted["data"]["id"].as_str().unwrap().to_owned();
    let (status, _) = body(http.get(format!("{edge}/api/v1/orgs")).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, listed) =
        body(http.get(format!("{edge}/api/v1/orgs/{}/tokens", alice.org_id)).bearer_auth(&alice.api_token).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(listed["data"].as_array().unwrap().iter().all(|t| t.get("token").is_none()), "token text is shown once only");
    let resp = http
        .post(format!("{edge}/api/v1/orgs/{}/tokens/{token_id}:revoke", alice.org_id))
        .bearer_auth(&alice.api_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (status, e) = body(http.get(format!("{edge}/api/v1/orgs")).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!((status, e["error"].as_str()), (401, Some("Token has been revoked")));

    // a member can not mint, and nobody can mint above their role
    let member = mesh.api_token(&alice.user_id, &alice.org_id, "member").await;
    let (status, _) = body(
        http.post(format!("{edge}/api/v1/orgs/{}/tokens", alice.org_id))
            .bearer_auth(&member)
            .json(&json!({"role": "viewer"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    let admin = mesh.api_token(&alice.user_id, &alice.org_id, "admin").await;
    let (status, e) = body(
        http.post(format!("{edge}/api/v1/orgs/{}/tokens", alice.org_id))
            .bearer_auth(&admin)
            .json(&json!({"role": "owner"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (403, Some("Cannot grant a role above your own")));
}

#[tokio::test(flavor = "multi_thread")]
async fn row_level_security_scopes_raw_queries_to_one_organisation() {
    let mesh =
        TestMesh::start_with(MeshOptions { roles: vec![Role::Identity, Role::ControlPlane], configure: None, ..Default::default() }).await;
    let (alice, bob) = (mesh.user("alice").await, mesh.user("bob").await);
    let app = mesh.db.app().await;
    let count = |org: String, sql: &'static str| {
        let app = &app;
        async move {
            app.execute_unprepared("BEGIN").await.unwrap();
            app.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('blaze.org_id', $1, true)",
                [org.into()],
            ))
            .await
            .unwrap();
            let n = app
                .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index::<i64>(0)
                .unwrap();
            app.execute_unprepared("COMMIT").await.unwrap();
            n
        }
    };
    // no filter in the query: the policy alone decides
    let owner = mesh.db.owner().await;
    let owner_count = |sql: String| {
        let owner = &owner;
        async move {
            owner
                .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index::<i64>(0)
                .unwrap()
        }
    };
    for table in ["workspaces", "audit_events", "api_tokens"] {
        let scoped = count(
            alice.org_id.clone(),
            match table {
                "workspaces" => "SELECT count(*)::bigint FROM workspaces",
                "audit_events" => "SELECT count(*)::bigint FROM audit_events",
                _ => "SELECT count(*)::bigint FROM api_tokens",
            },
        )
        .await;
        let alices = owner_count(format!("SELECT count(*)::bigint FROM {table} WHERE organization_id = '{}'", alice.org_id)).await;
        let all = owner_count(format!("SELECT count(*)::bigint FROM {table}")).await;
        assert!(alices >= 1 && all > alices, "{table}: both tenants have rows");
        assert_eq!(scoped, alices, "{table}: an unfiltered query sees exactly org A's rows");
    }
    let visible = app
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT count(*)::bigint FROM workspaces"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(visible, 0, "no tenant set: nothing visible");
    // writing into another organisation is refused
    app.execute_unprepared("BEGIN").await.unwrap();
    app.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('blaze.org_id', $1, true)",
        [alice.org_id.clone().into()],
    ))
    .await
    .unwrap();
    let err = app
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO audit_events (organization_id, action, resource_type) VALUES ($1::uuid, 'x', 'y')",
            [bob.org_id.clone().into()],
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("row-level security"), "{err}");
    app.execute_unprepared("ROLLBACK").await.unwrap();
    // the application role can not rewrite the audit trail
    app.execute_unprepared("BEGIN").await.unwrap();
    app.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('blaze.org_id', $1, true)",
        [alice.org_id.clone().into()],
    ))
    .await
    .unwrap();
    let err = app.execute_unprepared("UPDATE audit_events SET action = 'forged'").await.unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");
    app.execute_unprepared("ROLLBACK").await.unwrap();
    app.execute_unprepared("BEGIN").await.unwrap();
    app.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('blaze.org_id', $1, true)",
        [alice.org_id.clone().into()],
    ))
    .await
    .unwrap();
    let err = app.execute_unprepared("DELETE FROM audit_events").await.unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");
    app.execute_unprepared("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_replay_conflict_and_deduplicate_concurrent_requests() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.auth.dev_mode = true)),
        ..Default::default()
    })
    .await;
    let http = mesh.http();
    let edge = mesh.edge_url();
    let create = |key: &str, body: Value| {
        http.post(format!("{edge}/api/v1/orgs/me/workspaces"))
            .header("x-blaze-dev-user-sub", "dora")
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let (s1, first) = body(create("k1", json!({"name": "Team A"})).await.unwrap()).await;
    let (s2, replay) = body(create("k1", json!({"name": "Team A"})).await.unwrap()).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, replay, "same key and payload: the stored response");
    let (status, e) = body(create("k1", json!({"name": "Team B"})).await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")));

    let results = futures::future::join_all((0..10).map(|_| create("k2", json!({"name": "Team C"})))).await;
    let bodies: Vec<(u16, Value)> = futures::future::join_all(results.into_iter().map(|r| body(r.unwrap()))).await;
    let ids: std::collections::BTreeSet<String> = bodies
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 200, "{v}");
            v["data"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "ten concurrent duplicates, one effect");
    let (_, list) =
        body(http.get(format!("{edge}/api/v1/orgs/me/workspaces")).header("x-blaze-dev-user-sub", "dora").send().await.unwrap()).await;
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "Team C").count(), 1, "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "Team A").count(), 1, "{names:?}");
}
