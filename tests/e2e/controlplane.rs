//! The client's CRUD through the edge with exact JSON shapes, create-app
//! atomicity, reverts that trim the chat, settings that never leak secrets,
//! and quotas with a usage ledger that adds up.

use std::{sync::Arc, time::Duration};

use blaze::Role;
use blaze_proto::{
    artifacts::{self as art, repository_service_client::RepositoryServiceClient},
    controlplane::{self as cp, quota_service_client::QuotaServiceClient},
};
use blaze_testkit::{MeshOptions, TestMesh};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    pub base: String,
    token: String,
}

impl Client {
    pub fn new(mesh: &TestMesh, token: &str) -> Client {
        Client { http: mesh.http(), base: format!("{}/api/v1", mesh.edge_url()), token: token.to_owned() }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["data"].clone()
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn is_iso(v: &Value) -> bool {
    v.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z'))
}

const S: &str = "/orgs/me/workspaces/me";

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_crud_walk_has_exact_shapes() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);

    let orgs = c.ok("GET", "/orgs", None).await;
    assert_eq!(keys(&orgs[0]), ["createdAt", "id", "name", "role", "slug", "status", "updatedAt"]);
    let wss = c.ok("GET", "/orgs/me/workspaces", None).await;
    assert_eq!(keys(&wss[0]), ["createdAt", "createdByUserId", "id", "name", "organizationId", "slug", "type", "updatedAt"]);
    assert_eq!(wss[0]["type"], "personal");

    // create an app with its first chat and repository
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": "Todo App"}))).await;
    let app = &created["app"];
    assert!(created["chatId"].is_i64());
    assert!(app["id"].is_i64(), "ids are numbers");
    assert_eq!(
        keys(app),
        [
            "createdAt",
            "createdByUserId",
            "id",
            "installCommand",
            "isFavorite",
            "name",
            "organizationId",
            "path",
            "startCommand",
            "templateId",
            "updatedAt",
            "workspaceId"
        ]
    );
    for absent in ["files", "githubOrg", "supabaseProjectId", "vercelProjectId", "resolvedPath"] {
        assert!(app.get(absent).is_none(), "{absent} must be absent");
    }
    assert_eq!(
        (app["name"].as_str(), app["isFavorite"].as_bool(), app["installCommand"].clone()),
        (Some("Todo App"), Some(false), Value::Null)
    );
    assert!(app["path"].as_str().unwrap().starts_with("todo-app-"));
    assert!(is_iso(&app["createdAt"]) && is_iso(&app["updatedAt"]));
    let (app_id, chat_id) = (app["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap());

    let list = c.ok("GET", &format!("{S}/apps"), None).await;
    assert_eq!(list["apps"][0]["id"], app_id, "{{apps: [...]}} wrapper");
    let found = c.ok("GET", &format!("{S}/apps:search?q=todo"), None).await;
    assert_eq!(found[0]["id"], app_id);
    assert_eq!((found[0]["matchedChatTitle"].clone(), found[0]["matchedChatMessage"].clone()), (Value::Null, Value::Null));
    assert_eq!(c.ok("GET", &format!("{S}/apps:search?q=%25"), None).await.as_array().unwrap().len(), 0, "wildcards are literal");
    let got = c.ok("GET", &format!("{S}/apps/{app_id}"), None).await;
    assert!(got.get("files").is_none());
    let with_files = c.ok("GET", &format!("{S}/apps/{app_id}?includeFiles=true"), None).await;
    assert!(with_files["files"].as_array().unwrap().iter().any(|f| f == "src/App.tsx"));

    let patched = c.ok("PATCH", &format!("{S}/apps/{app_id}"), Some(json!({"name": "  Renamed  "}))).await;
    assert_eq!(
        (patched["id"].as_i64(), patched["name"].as_str(), patched["isFavorite"].as_bool()),
        (Some(app_id), Some("Renamed"), Some(false))
    );
    let (status, e) = c.call("PATCH", &format!("{S}/apps/{app_id}"), Some(json!({"name": "  "}))).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("INVALID_PAYLOAD")));
    assert_eq!(c.ok("POST", &format!("{S}/apps/{app_id}/favorite/toggle"), None).await, json!({"isFavorite": true}));

    // files at HEAD
    let app_tsx = c.ok("GET", &format!("{S}/apps/{app_id}/file?path=src%2FApp.tsx"), None).await;
    assert!(app_tsx.as_str().unwrap().contains("<Route path=\"/\""));
    let (status, e) = c.call("GET", &format!("{S}/apps/{app_id}/file"), None).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("Invalid route parameters")));
    for hostile in ["../../etc/passwd", "/etc/passwd", ".git/config"] {
        let (status, e) = c.call("GET", &format!("{S}/apps/{app_id}/file?path={}", urlencode(hostile)), None).await;
        assert_eq!((status, e["code"].as_str()), (400, Some("INVALID_PATH")), "{hostile}");
    }
    let (status, e) = c.call("GET", &format!("{S}/apps/{app_id}/file?path=missing.txt"), None).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("FILE_NOT_FOUND")));

    // chats
    let chats = c.ok("GET", &format!("{S}/apps/{app_id}/chats"), None).await;
    assert_eq!(
        keys(&chats[0]),
        ["appId", "createdAt", "createdByUserId", "id", "initialCommitHash", "organizationId", "title", "workspaceId"]
    );
    assert_eq!((chats[0]["id"].as_i64(), chats[0]["title"].clone()), (Some(chat_id), Value::Null));
    assert_eq!(chats[0]["initialCommitHash"].as_str().unwrap().len(), 40, "the first chat records the Init commit");
    let second_chat = c.ok("POST", &format!("{S}/apps/{app_id}/chats"), None).await;
    assert!(second_chat.is_i64(), "a bare number: {second_chat}");
    let all = c.ok("GET", &format!("{S}/chats"), None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["id"], second_chat, "newest first");
    let chat = c.ok("GET", &format!("{S}/chats/{chat_id}"), None).await;
    assert_eq!((chat["id"].as_i64(), chat["appId"].as_i64(), chat["messages"].clone()), (Some(chat_id), Some(app_id), json!([])));
    assert_eq!(
        c.ok("PATCH", &format!("{S}/chats/{chat_id}"), Some(json!({"title": " Hello "}))).await,
        json!({"id": chat_id, "title": "Hello"})
    );
    assert_eq!(c.ok("PATCH", &format!("{S}/chats/{chat_id}"), Some(json!({"title": ""}))).await, json!({"id": chat_id, "title": null}));
    let (status, _) = c.call("DELETE", &format!("{S}/chats/{second_chat}"), None).await;
    assert_eq!(status, 204);
    let (status, e) = c.call("GET", &format!("{S}/chats/{second_chat}"), None).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("CHAT_NOT_FOUND")));

    // versions
    let versions = c.ok("GET", &format!("{S}/apps/{app_id}/versions"), None).await;
    assert_eq!(keys(&versions[0]), ["message", "oid", "timestamp"]);
    assert_eq!(versions[0]["message"].as_str().unwrap().trim_end(), "Init Blaze app");
    let ts = versions[0]["timestamp"].as_i64().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 600, "timestamps are seconds");
    let (status, _) = c.call("POST", &format!("{S}/apps/{app_id}/versions/checkout"), Some(json!({"versionId": versions[0]["oid"]}))).await;
    assert_eq!(status, 204);
    let (status, e) = c.call("POST", &format!("{S}/apps/{app_id}/versions/checkout"), Some(json!({"versionId": ""}))).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("Invalid payload: \"versionId\" must be a non-empty string")));
    let (status, _) = c.call("POST", &format!("{S}/apps/{app_id}/versions/checkout"), Some(json!({"versionId": "0".repeat(40)}))).await;
    assert_eq!(status, 404);

    // templates and version
    let templates = c.ok("GET", "/templates", None).await;
    assert!(templates.as_array().unwrap().iter().any(|t| t["id"] == "react" && t["isDefault"] == true));
    assert!(c.ok("GET", "/app/version", None).await["version"].is_string());

    // delete: 204, gone, and the repository follows in the background
    let (status, body) = c.call("DELETE", &format!("{S}/apps/{app_id}"), None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = c.call("GET", &format!("{S}/apps/{app_id}"), None).await;
    assert_eq!(status, 404);
    let mut repos = RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let mut gone = false;
    for _ in 0..50 {
        let head = repos
            .get_head(art::GetHeadRequest { repo: Some(art::RepoRef { organization_id: alice.org_id.clone(), app_id }) })
            .await
            .unwrap()
            .into_inner();
        if head.commit_hash.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the repository of a deleted app is removed");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_in_repository_creation_leaves_no_app() {
    // the artifacts role is unreachable
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.upstreams.artifacts = "http://127.0.0.1:9".into())),
        ..Default::default()
    })
    .await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (status, e) = c.call("POST", &format!("{S}/apps"), Some(json!({"name": "Doomed"}))).await;
    assert_eq!(status, 503, "{e}");
    let (status, e) = c.call("POST", &format!("{S}/apps"), Some(json!({"name": "Doomed", "templateId": "nope"}))).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("TEMPLATE_NOT_FOUND")));
    let owner = mesh.db.owner().await;
    for table in ["apps", "chats"] {
        let n: i64 = owner
            .query_one_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT count(*)::bigint FROM {table}")))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index(0)
            .unwrap();
        assert_eq!(n, 0, "no half app: {table}");
    }
    assert_eq!(c.ok("GET", &format!("{S}/apps"), None).await["apps"], json!([]));
}

/// A turn as the orchestrator leaves it: a user message, an assistant
/// message whose changes were committed.
async fn fake_turn(mesh: &TestMesh, org: &str, ws: &str, chat: i64, app: i64, n: usize) -> (i64, String) {
    let mut repos = RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let head = repos
        .get_head(art::GetHeadRequest { repo: Some(art::RepoRef { organization_id: org.into(), app_id: app }) })
        .await
        .unwrap()
        .into_inner()
        .commit_hash;
    let commit = repos
        .commit(art::CommitRequest {
            repo: Some(art::RepoRef { organization_id: org.into(), app_id: app }),
            changes: vec![art::FileChange {
                change: Some(art::file_change::Change::Write(art::FileWrite {
                    path: "src/turn.ts".into(),
                    content: format!("export const turn = {n};\n").into_bytes(),
                })),
            }],
            message: format!("[blaze] turn {n}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .commit_hash;
    let owner = mesh.db.owner().await;
    let row = owner
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "WITH u AS (INSERT INTO messages (organization_id, workspace_id, chat_id, role, content) VALUES ($1::uuid, $2::uuid, $3, 'user', $4) RETURNING id)
             , a AS (INSERT INTO messages (organization_id, workspace_id, chat_id, role, content, source_commit_hash, commit_hash, approval_state)
                     VALUES ($1::uuid, $2::uuid, $3, 'assistant', 'done', $5, $6, 'approved') RETURNING id)
             SELECT (SELECT id FROM u)",
            [org.into(), ws.into(), chat.into(), format!("prompt {n}").into(), head.into(), commit.clone().into()],
        ))
        .await
        .unwrap()
        .unwrap();
    (row.try_get_by_index::<i64>(0).unwrap(), commit)
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_restores_the_first_turn_and_trims_the_chat() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": "Revert Me"}))).await;
    let (app, chat) = (created["app"]["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap());
    let (_, first_commit) = fake_turn(&mesh, &alice.org_id, &alice.workspace_id, chat, app, 1).await;
    let (second_user_msg, _) = fake_turn(&mesh, &alice.org_id, &alice.workspace_id, chat, app, 2).await;
    assert_eq!(c.ok("GET", &format!("{S}/chats/{chat}"), None).await["messages"].as_array().unwrap().len(), 4);

    let outcome = c
        .ok(
            "POST",
            &format!("{S}/apps/{app}/versions/revert"),
            Some(json!({"previousVersionId": first_commit, "currentChatMessageId": {"chatId": chat, "messageId": second_user_msg}})),
        )
        .await;
    assert_eq!(outcome["successMessage"], "Restored version");
    assert_eq!(c.ok("GET", &format!("{S}/apps/{app}/file?path=src/turn.ts"), None).await, "export const turn = 1;\n");
    let messages = c.ok("GET", &format!("{S}/chats/{chat}"), None).await["messages"].clone();
    let contents: Vec<&str> = messages.as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, vec!["prompt 1", "done"], "the second turn is gone");
    let versions = c.ok("GET", &format!("{S}/apps/{app}/versions"), None).await;
    assert_eq!(versions[0]["message"].as_str().unwrap().trim_end(), format!("Reverted all changes back to version {first_commit}"));
    assert_eq!(versions.as_array().unwrap().len(), 4, "history is never rewritten");

    // the same revert again changes nothing
    let outcome = c.ok("POST", &format!("{S}/apps/{app}/versions/revert"), Some(json!({"previousVersionId": first_commit}))).await;
    assert_eq!(outcome, json!({"warningMessage": "No changes were needed for rollback."}));
    let (status, e) = c
        .call(
            "POST",
            &format!("{S}/apps/{app}/versions/revert"),
            Some(json!({"previousVersionId": first_commit, "currentChatMessageId": {"chatId": 999999, "messageId": 1}})),
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (404, Some("CHAT_NOT_FOUND")));
    let (status, e) = c
        .call(
            "POST",
            &format!("{S}/apps/{app}/versions/revert"),
            Some(json!({"previousVersionId": first_commit, "currentChatMessageId": null})),
        )
        .await;
    assert_eq!((status, e["code"].as_str()), (400, Some("INVALID_PAYLOAD")));
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_are_strict_per_user_and_never_return_secrets() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: None,
        ..Default::default()
    })
    .await;
    let (alice, bob) = (mesh.user("alice").await, mesh.user("bob").await);
    let c = Client::new(&mesh, &alice.api_token);
    let defaults = c.ok("GET", "/settings/user", None).await;
    assert_eq!(defaults["autoApproveChanges"], true);
    assert_eq!(defaults["uiLanguage"], "ru");
    assert_eq!(defaults["selectedModel"], json!({"name": "auto", "provider": "auto"}));
    assert!(defaults.get("enableBlazePro").is_none(), "unset optional keys are omitted");
    let telemetry_id = defaults["telemetryUserId"].clone();
    assert_eq!(c.ok("GET", "/settings/user", None).await["telemetryUserId"], telemetry_id, "stable");

    let secret = "sk-live-supersecret-123";
    let updated = c
        .ok(
            "PATCH",
            "/settings/user",
            Some(json!({"autoApproveChanges": false, "uiLanguage": "en", "providerSettings": {"openai": {"apiKey": {"value": secret}}}})),
        )
        .await;
    assert_eq!((updated["autoApproveChanges"].as_bool(), updated["uiLanguage"].as_str()), (Some(false), Some("en")));
    assert_eq!(updated["selectedTemplateId"], "react", "the full object comes back");
    assert_eq!(updated["providerSettings"], json!({"openai": {}}));

    let (status, e) = c.call("PATCH", "/settings/user", Some(json!({"uiLanguage": "de"}))).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("INVALID_PAYLOAD")));
    let (status, e) = c.call("PATCH", "/settings/user", Some(json!({"nope": 1, "evil": 2}))).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("Invalid payload: unsupported keys (evil, nope)")));
    let (status, _) = c.call("PATCH", "/settings/user", Some(json!({"selectedChatMode": "local-agent"}))).await;
    assert_eq!(status, 400);

    // settings are per user
    let bobs = Client::new(&mesh, &bob.api_token).ok("GET", "/settings/user", None).await;
    assert_eq!(bobs["uiLanguage"], "ru");

    // the workspace model policy: keys are write-only there too
    let policy = c
        .ok(
            "PATCH",
            &format!("{S}/settings/model"),
            Some(json!({"providers": [{"id": "corp", "kind": "openai", "baseUrl": "https://llm.example.com/v1", "apiKey": secret}], "defaultModel": "corp/gpt-x"})),
        )
        .await;
    assert_eq!(policy["providers"][0]["apiKeyConfigured"], true);
    let (status, e) = c
        .call(
            "PATCH",
            &format!("{S}/settings/model"),
            Some(json!({"providers": [{"id": "x", "kind": "openai", "baseUrl": "http://169.254.169.254/latest"}]})),
        )
        .await;
    assert_eq!(status, 400, "metadata endpoints are refused: {e}");

    // no route of the settings family ever shows the secret
    for path in ["/settings/user", "/env-vars", &format!("{S}/settings/model")] {
        let (status, v) = c.call("GET", path, None).await;
        assert_eq!(status, 200);
        assert!(!v.to_string().contains(secret), "{path} leaks the secret: {v}");
    }
    assert_eq!(c.ok("GET", "/env-vars", None).await, json!({}));
    // nor the database in clear
    let owner = mesh.db.owner().await;
    let dump: String = owner
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT (SELECT string_agg(settings::text || coalesce(encode(provider_secrets, 'escape'), ''), '') FROM user_settings) || (SELECT string_agg(coalesce(encode(provider_keys, 'escape'), '') || providers::text, '') FROM workspace_model_policies)"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert!(!dump.contains(secret), "stored in clear");
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_hard_quotas_answer_429_and_usage_reports_add_up() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let set = c
        .ok(
            "POST",
            &format!("/orgs/{}/quotas", alice.org_id),
            Some(json!({"subjectType": "workspace", "subjectId": alice.workspace_id, "metric": "requests", "limit": 2})),
        )
        .await;
    assert_eq!((set["kind"].as_str(), set["limit"].as_i64()), (Some("hard"), Some(2)));
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": "One"}))).await;
    let app = created["app"]["id"].as_i64().unwrap();
    assert!(c.ok("POST", &format!("{S}/apps/{app}/chats"), None).await.is_i64());
    let (status, e) = c.call("POST", &format!("{S}/apps"), Some(json!({"name": "Two"}))).await;
    assert_eq!(
        (status, e),
        (429, json!({"error": "Workspace hard quota exceeded for metric \"requests\"", "code": "QUOTA_HARD_LIMIT_REACHED"}))
    );
    let (status, _) = c.call("POST", &format!("{S}/apps/{app}/chats"), None).await;
    assert_eq!(status, 429);
    assert_eq!(c.ok("GET", &format!("{S}/apps"), None).await["apps"].as_array().unwrap().len(), 1, "the refused create left nothing");

    // the ledger: provider-reported tokens with cost, summed by the report
    let mut quotas = QuotaServiceClient::new(mesh.service_channel(Role::ControlPlane));
    for (input, output) in [(1000, 500), (2000, 250)] {
        quotas
            .record_usage(cp::RecordUsageRequest {
                organization_id: alice.org_id.clone(),
                workspace_id: alice.workspace_id.clone(),
                user_id: alice.user_id.clone(),
                metric: "tokens".into(),
                value: input + output,
                model: "demo".into(),
                input_tokens: input,
                output_tokens: output,
                occurred_at: None,
            })
            .await
            .unwrap();
    }
    let report = c.ok("GET", &format!("/orgs/{}/usage", alice.org_id), None).await;
    assert_eq!(report["totals"]["tokens"], 3750);
    assert_eq!(report["totals"]["requests"], 2, "create-app and create-chat were charged");
    let token_rows: i64 =
        report["rows"].as_array().unwrap().iter().filter(|r| r["metric"] == "tokens").map(|r| r["value"].as_i64().unwrap()).sum();
    assert_eq!(token_rows, 3750);
    assert!(report["rows"].as_array().unwrap().iter().any(|r| r["userId"] == alice.user_id && r["model"] == "demo"));
}
