//! Access matrices enumerated from the descriptor set, so every new route is
//! covered without touching this file:
//! * cross-tenant: user B with user A's ids gets 404 on every tenant-scoped
//!   route, and nothing in the database changes;
//! * RBAC: every route × role gives the allow/deny its declared minimum role
//!   implies (403 exactly when denied).

use std::{collections::BTreeMap, sync::Arc};

use blaze_proto::{
    catalog::{Catalog, MethodSpec},
    options::{Role as MinRole, Scope},
};
use blaze_testkit::{MeshOptions, TestMesh};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;

/// Ids to put into route templates.
pub struct Ids {
    pub org: String,
    pub workspace: String,
    pub app: String,
    pub chat: String,
    pub other: String,
}

fn fill(template: &str, spec: &MethodSpec, ids: &Ids) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap();
        let field = rest[start + 1..end].split('=').next().unwrap();
        let value = match field {
            "org_id" => ids.org.clone(),
            "workspace_id" if spec.scope() == Scope::Organization => ids.other.clone(),
            "workspace_id" => ids.workspace.clone(),
            "app_id" => ids.app.clone(),
            "chat_id" => ids.chat.clone(),
            // other numeric ids (prompts, …): a plausible id
            f if spec.descriptor.input().get_field_by_name(f).is_some_and(|d| matches!(d.kind(), prost_reflect::Kind::Int64)) => "1".into(),
            _ => ids.other.clone(),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every HTTP route: (method, path filled with `ids`, spec).
pub fn routes(ids: &Ids) -> Vec<(String, String, MethodSpec)> {
    let mut out = Vec::new();
    for spec in Catalog::global().methods() {
        for b in &spec.http {
            out.push((b.method.clone(), fill(&b.template, spec, ids), spec.clone()));
        }
    }
    out
}

async fn call(http: &reqwest::Client, edge: &str, method: &str, path: &str, token: &str) -> (u16, Value) {
    let req = http.request(method.parse().unwrap(), format!("{edge}{path}")).bearer_auth(token);
    let req = if matches!(method, "POST" | "PATCH" | "PUT") { req.header("content-type", "application/json").body("{}") } else { req };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    if resp.headers().get("content-type").is_some_and(|c| c == "text/event-stream") {
        return (status, Value::Null); // do not wait for the stream
    }
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Row counts of every table (the owner bypasses RLS).
pub async fn snapshot(db: &DatabaseConnection) -> BTreeMap<String, i64> {
    let tables = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        ))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for row in tables {
        let t: String = row.try_get_by_index(0).unwrap();
        let n: i64 = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT count(*)::bigint FROM \"{t}\"")))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        out.insert(t, n);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_tenant_matrix_every_route_answers_404_and_changes_nothing() {
    let mesh =
        TestMesh::start_with(MeshOptions { configure: Some(Arc::new(|cfg| cfg.rate_limit.enabled = false)), ..Default::default() }).await;
    let (alice, bob) = (mesh.user("alice").await, mesh.user("bob").await);
    let http = mesh.http();
    let edge = mesh.edge_url();
    let ids = Ids {
        org: alice.org_id.clone(),
        workspace: alice.workspace_id.clone(),
        app: "1".into(),
        chat: "1".into(),
        other: uuid::Uuid::new_v4().to_string(),
    };
    let owner = mesh.db.owner().await;
    let before = snapshot(&owner).await;
    let mut checked = 0;
    for (method, path, spec) in routes(&ids) {
        if !matches!(spec.scope(), Scope::Organization | Scope::Workspace) {
            continue;
        }
        let (status, body) = call(&http, &edge, &method, &path, &bob.api_token).await;
        assert_eq!(status, 404, "{method} {path} as another tenant: {body}");
        assert!(matches!(body["code"].as_str(), Some("ORG_NOT_FOUND" | "WORKSPACE_NOT_FOUND")), "{method} {path}: {body}");
        checked += 1;
    }
    assert!(checked > 40, "{checked} tenant-scoped routes");
    assert_eq!(snapshot(&owner).await, before, "denied requests changed the database");
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_matrix_every_route_and_role_gets_the_declared_decision() {
    let mesh =
        TestMesh::start_with(MeshOptions { configure: Some(Arc::new(|cfg| cfg.rate_limit.enabled = false)), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let http = mesh.http();
    let edge = mesh.edge_url();

    // a team workspace in alice's organisation, with one member per role
    let resp = http
        .post(format!("{edge}/api/v1/orgs/{}/workspaces", alice.org_id))
        .bearer_auth(&alice.api_token)
        .json(&serde_json::json!({"name": "Team", "type": "team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let team: Value = resp.json().await.unwrap();
    let team_id = team["data"]["id"].as_str().unwrap().to_owned();
    let owner = mesh.db.owner().await;
    let mut tokens = BTreeMap::new();
    for role in ["viewer", "member", "admin"] {
        let user = mesh.user(&format!("{role}-user")).await;
        owner
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO organization_memberships (organization_id, user_id, role) VALUES ($1::uuid, $2::uuid, $3);
                 ",
                [alice.org_id.clone().into(), user.user_id.clone().into(), role.into()],
            ))
            .await
            .unwrap();
        owner
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO workspace_memberships (organization_id, workspace_id, user_id, role) VALUES ($1::uuid, $2::uuid, $3::uuid, $4)",
                [alice.org_id.clone().into(), team_id.clone().into(), user.user_id.clone().into(), role.into()],
            ))
            .await
            .unwrap();
        tokens.insert(role, mesh.api_token(&user.user_id, &alice.org_id, role).await);
    }
    tokens.insert("owner", alice.api_token.clone());

    let ids =
        Ids { org: alice.org_id.clone(), workspace: team_id, app: "1".into(), chat: "1".into(), other: uuid::Uuid::new_v4().to_string() };
    let rank = |r: &str| match r {
        "viewer" => MinRole::Viewer,
        "member" => MinRole::Member,
        "admin" => MinRole::Admin,
        _ => MinRole::Owner,
    };
    let mut decisions = 0;
    for role in ["viewer", "member", "admin", "owner"] {
        for (method, path, spec) in routes(&ids) {
            let allowed = match spec.scope() {
                Scope::Public | Scope::Authenticated => true,
                Scope::Organization | Scope::Workspace => rank(role) >= spec.min_role(),
                _ => continue,
            };
            let (status, body) = call(&http, &edge, &method, &path, &tokens[role]).await;
            if allowed {
                assert!(status != 403 && status != 401, "{role} should be allowed {method} {path}: {status} {body}");
            } else {
                assert_eq!(status, 403, "{role} should be denied {method} {path}: {body}");
                assert_eq!(body["code"], "FORBIDDEN");
            }
            decisions += 1;
        }
    }
    assert!(decisions > 200, "{decisions}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_tenant_objects_another_tenants_app_and_chat_ids_are_404_everywhere() {
    let mesh =
        TestMesh::start_with(MeshOptions { configure: Some(Arc::new(|cfg| cfg.rate_limit.enabled = false)), ..Default::default() }).await;
    let (alice, bob) = (mesh.user("alice").await, mesh.user("bob").await);
    let http = mesh.http();
    let edge = mesh.edge_url();
    let resp = http
        .post(format!("{edge}/api/v1/orgs/me/workspaces/me/apps"))
        .bearer_auth(&alice.api_token)
        .json(&serde_json::json!({"name": "Secret App"}))
        .send()
        .await
        .unwrap();
    let created: Value = resp.json().await.unwrap();
    let (app, chat) = (created["data"]["app"]["id"].to_string(), created["data"]["chatId"].to_string());
    // bob addresses his own workspace with alice's object ids
    let ids = Ids { org: "me".into(), workspace: "me".into(), app, chat, other: uuid::Uuid::new_v4().to_string() };
    let owner = mesh.db.owner().await;
    let before = snapshot(&owner).await;
    let mut checked = 0;
    for (method, path, spec) in routes(&ids) {
        let template = &spec.http.iter().find(|b| b.method == method).unwrap().template;
        if !(template.contains("{app_id}") || template.contains("{chat_id}")) {
            continue;
        }
        let (status, body) = call(&http, &edge, &method, &path, &bob.api_token).await;
        assert_eq!(status, 404, "{method} {path} with another tenant's object: {body}");
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
    let after = snapshot(&owner).await;
    // bob's calls leave no trace, except usage counters nothing of alice's changed
    assert_eq!(after, before, "denied requests changed the database");
}
