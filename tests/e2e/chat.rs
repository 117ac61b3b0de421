//! Chat turns through the edge with the fake model: the full turn and its
//! events, every tag kind and the guardrails, continuation, cancel, one
//! stream per chat, durable resumable streams (also across an orchestrator
//! crash), provider retries, the context budget, proposals, attachments,
//! selected components and `@prompt:` references.

use std::sync::Arc;

use blaze::Role;
use blaze_testkit::{MeshOptions, TestMesh};
use serde_json::{Value, json};

use crate::{
    controlplane::Client,
    support::{SseEvent, SseReader},
};

const S: &str = "/orgs/me/workspaces/me";

/// A fresh app with its first chat: (app id, chat id).
async fn new_app(c: &Client, name: &str) -> (i64, i64) {
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": name}))).await;
    (created["app"]["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap())
}

fn stream_url(c: &Client, chat: i64) -> String {
    format!("{}{S}/chats/{chat}/stream", c.base)
}

async fn open(mesh: &TestMesh, token: &str, c: &Client, chat: i64, body: Value) -> reqwest::Response {
    mesh.http().post(stream_url(c, chat)).bearer_auth(token).json(&body).send().await.unwrap()
}

/// Run one turn to its terminal event.
async fn turn(mesh: &TestMesh, token: &str, c: &Client, chat: i64, prompt: &str) -> Vec<SseEvent> {
    let resp = open(mesh, token, c, chat, json!({"prompt": prompt, "selectedComponents": [], "attachments": []})).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    SseReader::new(resp).collect().await
}

fn terminal(events: &[SseEvent]) -> &SseEvent {
    let last = events.last().expect("events");
    assert!(matches!(last.event.as_str(), "chat:response:end" | "chat:response:error"), "{last:?}");
    let terminals = events.iter().filter(|e| e.event != "chat:response:chunk").count();
    assert_eq!(terminals, 1, "exactly one terminal event: {events:#?}");
    last
}

fn last_assistant(event: &SseEvent) -> Value {
    event.data["messages"].as_array().unwrap().iter().rev().find(|m| m["role"] == "assistant").cloned().expect("assistant message")
}

async fn versions(c: &Client, app: i64) -> Vec<Value> {
    c.ok("GET", &format!("{S}/apps/{app}/versions"), None).await.as_array().unwrap().clone()
}

async fn file(c: &Client, app: i64, path: &str) -> (u16, Value) {
    c.call("GET", &format!("{S}/apps/{app}/file?path={path}"), None).await
}

async fn assistant_content(c: &Client, chat: i64) -> String {
    let chat = c.ok("GET", &format!("{S}/chats/{chat}"), None).await;
    chat["messages"].as_array().unwrap().iter().rev().find(|m| m["role"] == "assistant").unwrap()["content"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_turn_streams_whole_message_lists_and_lands_as_one_commit() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Greeter").await;
    let before = versions(&c, app).await.len();

    let events = turn(&mesh, &alice.api_token, &c, chat, "Add a greeting tc=write").await;
    let end = terminal(&events);
    assert_eq!(end.event, "chat:response:end", "{:?}", end.data);
    let chunks: Vec<&SseEvent> = events.iter().filter(|e| e.event == "chat:response:chunk").collect();
    assert!(chunks.len() >= 3, "first, streamed and final chunks: {}", chunks.len());
    // every chunk carries the whole list: the user message, then the assistant
    for ch in &chunks {
        let msgs = ch.data["messages"].as_array().unwrap();
        assert_eq!(ch.data["chatId"], chat);
        assert!(msgs.iter().any(|m| m["role"] == "user" && m["content"].as_str().unwrap().contains("Add a greeting tc=write")));
        assert!(msgs.iter().all(|m| m["id"].is_i64() && m["createdAt"].is_string()), "complete messages: {msgs:?}");
    }
    assert_eq!(last_assistant(chunks[0])["content"], "", "the placeholder comes first");
    assert!(last_assistant(chunks[0])["sourceCommitHash"].as_str().is_some_and(|h| h.len() == 40));
    // streamed content grows monotonically
    let lens: Vec<usize> = chunks.iter().map(|c| last_assistant(c)["content"].as_str().unwrap().len()).collect();
    assert!(lens.windows(2).all(|w| w[0] <= w[1]), "{lens:?}");
    // the final chunk has persisted ids and the commit
    let final_msg = last_assistant(chunks.last().unwrap());
    let commit = end.data["commitHash"].as_str().expect("commit hash in end").to_owned();
    assert_eq!(final_msg["commitHash"], commit.as_str());
    assert_eq!(final_msg["approvalState"], "approved");
    assert_eq!(end.data["updatedFiles"], true);
    assert!(end.data["totalTokens"].as_i64().unwrap() > 0);
    assert!(end.data["contextWindow"].as_i64().unwrap() > 0);
    assert!(events.iter().all(|e| e.id.is_some()), "every event has an id to resume from");

    // the file is there, one new version, the chat is titled
    let (status, body) = file(&c, app, "src/components/Greeting.tsx").await;
    assert_eq!(status, 200);
    assert!(body["data"].as_str().unwrap().contains("Hello, {name}!"));
    let after = versions(&c, app).await;
    assert_eq!(after.len(), before + 1);
    assert_eq!(after[0]["oid"], commit.as_str());
    assert!(after[0]["message"].as_str().unwrap().starts_with("[blaze] Add a greeting"));
    let chat_json = c.ok("GET", &format!("{S}/chats/{chat}"), None).await;
    assert_eq!(chat_json["title"], "Add a greeting");

    // usage: the provider's tokens are in the ledger with the model
    let owner = mesh.db.owner().await;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let row = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT sum(value)::bigint AS v, max(model) AS m FROM usage_events WHERE metric = 'tokens'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "v").unwrap(), end.data["totalTokens"].as_i64().unwrap());
    assert_eq!(row.try_get::<String>("", "m").unwrap(), "demo");
    // audit: start and end of the stream, and the write
    let (_, audit) = c.call("GET", "/orgs/me/audit-events?action=chat_stream_end", None).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");
    let (_, audit) = c.call("GET", "/orgs/me/audit-events?action=chat_stream_start", None).await;
    assert_eq!(audit["data"][0]["metadata"]["promptLength"], "Add a greeting tc=write".len(), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tag_kind_applies_in_order_and_failures_are_reported_in_the_message() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Tags").await;

    let events = turn(&mesh, &alice.api_token, &c, chat, "restructure tc=all-tags").await;
    assert_eq!(terminal(&events).event, "chat:response:end");
    assert_eq!(file(&c, app, "README.md").await.0, 404, "deleted");
    assert_eq!(file(&c, app, "src/pages/NotFound.tsx").await.0, 404, "renamed away");
    assert_eq!(file(&c, app, "src/pages/Missing.tsx").await.0, 200, "renamed to");
    assert!(file(&c, app, "src/App.tsx").await.1["data"].as_str().unwrap().contains("./pages/Missing.tsx"), "search-replace");
    assert!(file(&c, app, "src/lib/format.ts").await.1["data"].as_str().unwrap().contains("toUpperCase"));
    // the dependency was installed by an install job (through the registry proxy)
    let pkg: Value = serde_json::from_str(file(&c, app, "package.json").await.1["data"].as_str().unwrap()).unwrap();
    let version = pkg["dependencies"]["nanoid"].as_str().unwrap();
    assert!(version.starts_with('^') && version[1..].starts_with(|c: char| c.is_ascii_digit()), "installed version range: {version}");
    let lock = file(&c, app, "package-lock.json").await.1["data"].as_str().unwrap().to_owned();
    assert!(lock.contains("node_modules/nanoid"), "the lockfile has it");
    let v = versions(&c, app).await;
    assert_eq!(v.len(), 2, "one commit for all of it");
    assert!(v[0]["message"].as_str().unwrap().contains("added 1 package"));

    // fuzzy and whitespace-insensitive search-replace
    let events = turn(&mesh, &alice.api_token, &c, chat, "intro tc=search-replace-fuzzy").await;
    assert_eq!(terminal(&events).data["updatedFiles"], true);
    let index = file(&c, app, "src/pages/Index.tsx").await.1["data"].as_str().unwrap().to_owned();
    assert!(index.contains("Tell Blaze what to build") && !index.contains("Describe what you want"), "{index}");
    assert!(file(&c, app, "src/App.tsx").await.1["data"].as_str().unwrap().contains("// Routes: add new pages"));

    // a search that matches nothing: reported, nothing committed
    let count = versions(&c, app).await.len();
    let events = turn(&mesh, &alice.api_token, &c, chat, "tc=search-replace-missing").await;
    let end = terminal(&events);
    assert_eq!(end.data["updatedFiles"], false);
    assert_eq!(versions(&c, app).await.len(), count);
    let content = assistant_content(&c, chat).await;
    assert!(content.contains("<blaze-output type=\"error\""), "{content}");

    // <think> stays in the message but never reaches the model again
    turn(&mesh, &alice.api_token, &c, chat, "footer tc=think").await;
    assert_eq!(file(&c, app, "src/components/Footer.tsx").await.0, 200);
    turn(&mesh, &alice.api_token, &c, chat, "[dump] what now").await;
    let dumped = mesh.model.requests_containing("[dump] what now");
    let all: String = dumped[0].messages().into_iter().map(|(_, t)| t).collect();
    assert!(!all.contains("nothing here, just planning"), "think blocks are stripped from history");
    assert!(
        all.contains("AI_RULES") || all.contains("# Tech stack") || all.contains("Tailwind"),
        "the app's rules are in the system prompt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_paths_are_rejected_reported_and_audited_and_nothing_is_written() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Hostile").await;
    let before = versions(&c, app).await;

    let events = turn(&mesh, &alice.api_token, &c, chat, "tc=hostile-paths").await;
    let end = terminal(&events);
    assert_eq!(end.event, "chat:response:end");
    assert_eq!(end.data["updatedFiles"], false);
    assert_eq!(versions(&c, app).await, before, "no commit");
    let content = assistant_content(&c, chat).await;
    assert_eq!(content.matches("<blaze-output type=\"error\"").count(), 6, "{content}");
    let mut repos = blaze_proto::artifacts::repository_service_client::RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let listed = repos
        .list_files(blaze_proto::artifacts::ListFilesRequest {
            repo: Some(blaze_proto::artifacts::RepoRef { organization_id: alice.org_id.clone(), app_id: app }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<&str> = listed.files.iter().map(|f| f.path.as_str()).collect();
    assert!(!paths.is_empty());
    for bad in ["outside.txt", "etc/passwd", ".git/config", "node_modules/evil/index.js"] {
        assert!(!paths.iter().any(|p| p.ends_with(bad)), "{bad} in {paths:?}");
    }
    let owner = mesh.db.owner().await;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let row = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM audit_events WHERE action = 'model_action_rejected' AND outcome = 'denied'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 6);
    // nothing escaped onto the host either
    assert!(!mesh.cfg.git.root.join("outside.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unclosed_write_is_continued_and_completed() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Cut").await;
    let events = turn(&mesh, &alice.api_token, &c, chat, "write a long component [unclosed=2]").await;
    assert_eq!(terminal(&events).data["updatedFiles"], true);
    let body = file(&c, app, "src/components/Unfinished.tsx").await.1["data"].as_str().unwrap().to_owned();
    assert!(body.contains("// started") && body.contains("[continued]") && body.contains("<p>continued</p>"), "{body}");
    assert_eq!(mesh.model.requests_containing("[unclosed=2]").len(), 3, "the first call and two continuations");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_keeps_partial_text_applies_nothing_and_ends_the_stream() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Cancel").await;
    let before = versions(&c, app).await;

    let resp = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "[slow=40] tc=long"})).await;
    let mut sse = SseReader::new(resp);
    // wait for streamed text
    loop {
        let e = sse.next().await.expect("event");
        if e.event == "chat:response:chunk" && !last_assistant(&e)["content"].as_str().unwrap().is_empty() {
            break;
        }
    }
    let (status, _) = c.call("POST", &format!("{S}/chats/{chat}/stream/cancel"), None).await;
    assert_eq!(status, 204);
    let rest = sse.collect().await;
    let end = terminal(&rest);
    assert_eq!(end.event, "chat:response:end");
    assert_eq!(end.data["updatedFiles"], false);
    let content = assistant_content(&c, chat).await;
    assert!(content.starts_with("Let me explain") && content.ends_with("[Response cancelled by user]"), "{content}");
    assert!(!content.contains("That is all."), "the model was stopped early");
    assert_eq!(versions(&c, app).await, before);
    // cancel with nothing streaming is still 204, and the chat takes new prompts
    assert_eq!(c.call("POST", &format!("{S}/chats/{chat}/stream/cancel"), None).await.0, 204);
    assert_eq!(terminal(&turn(&mesh, &alice.api_token, &c, chat, "tc=write").await).event, "chat:response:end");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stream_per_chat_but_chats_stream_independently() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Busy").await;
    let other = c.ok("POST", &format!("{S}/apps/{app}/chats"), None).await.as_i64().unwrap();

    let first = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "[slow=30] tc=long"})).await;
    assert_eq!(first.status(), 200);
    let second = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "again"})).await;
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body, json!({"error": "Chat stream already active", "code": "CHAT_STREAM_ACTIVE"}));
    // another chat of the same app streams fine meanwhile
    let events = turn(&mesh, &alice.api_token, &c, other, "tc=write").await;
    assert_eq!(terminal(&events).event, "chat:response:end");
    assert_eq!(terminal(&SseReader::new(first).collect().await).event, "chat:response:end");
    // and once the first finished, the chat is free again
    assert_eq!(terminal(&turn(&mesh, &alice.api_token, &c, chat, "hello").await).event, "chat:response:end");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_turns_in_chats_of_one_app_all_land_as_separate_commits() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, first) = new_app(&c, "Crowded").await;
    let before = versions(&c, app).await.len();
    const N: usize = 8;
    let mut chats = vec![first];
    for i in 0..N {
        mesh.model
            .add_fixture(&format!("file-{i}"), &format!("<blaze-write path=\"src/gen/f{i}.ts\">export const n = {i};\n</blaze-write>\n"));
        if i > 0 {
            chats.push(c.ok("POST", &format!("{S}/apps/{app}/chats"), None).await.as_i64().unwrap());
        }
    }
    // Every turn commits on main at about the same moment.
    let turns = chats.iter().enumerate().map(|(i, chat)| {
        let (mesh, token, c) = (&mesh, &alice.api_token, &c);
        async move { turn(mesh, token, c, *chat, &format!("tc=file-{i}")).await }
    });
    for (i, events) in futures::future::join_all(turns).await.iter().enumerate() {
        assert_eq!(terminal(events).event, "chat:response:end", "turn {i}: {:?}", terminal(events).data);
    }
    assert_eq!(versions(&c, app).await.len(), before + N, "one commit per turn, none lost");
    for i in 0..N {
        assert_eq!(file(&c, app, &format!("src/gen/f{i}.ts")).await.0, 200, "file of turn {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_resumes_with_exactly_the_missed_events() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (_, chat) = new_app(&c, "Resume").await;

    let resp = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "[slow=20] tc=long"})).await;
    let mut sse = SseReader::new(resp);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(sse.next().await.unwrap());
    }
    drop(sse); // the connection goes away; the turn does not
    let last_id = seen.last().unwrap().id.clone().unwrap();

    // reconnect with Last-Event-ID on the stream route
    let resumed = mesh
        .http()
        .post(stream_url(&c, chat))
        .bearer_auth(&alice.api_token)
        .header("last-event-id", &last_id)
        .json(&json!({"prompt": "ignored on resume"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = SseReader::new(resumed).collect().await;
    assert_eq!(terminal(&rest).event, "chat:response:end");

    // the full replay equals what we saw plus what we resumed: no gap, no duplicate
    let replay = mesh.http().get(stream_url(&c, chat)).bearer_auth(&alice.api_token).send().await.unwrap();
    let all = SseReader::new(replay).collect().await;
    let ids = |v: &[SseEvent]| v.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>();
    let mut joined = ids(&seen);
    joined.extend(ids(&rest));
    assert_eq!(joined, ids(&all));
    // ?after= works the same way
    let after = mesh.http().get(format!("{}?after={last_id}", stream_url(&c, chat))).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(ids(&SseReader::new(after).collect().await), ids(&rest));
    // a bad id is a clear 400
    let bad = mesh.http().get(format!("{}?after=abc", stream_url(&c, chat))).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // the turn completed although nobody was listening
    assert!(assistant_content(&c, chat).await.trim_end().ends_with("That is all."));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_crash_mid_turn_ends_the_turn_with_an_error_and_frees_the_chat() {
    let mut mesh = TestMesh::start_with(MeshOptions { isolated: vec![Role::Orchestrator], ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Crash").await;
    let before = versions(&c, app).await;

    // a turn that would write a file, streaming slowly
    mesh.model.add_fixture(
        "slow-write",
        &format!("{}\n<blaze-write path=\"src/late.ts\">export const late = 1;</blaze-write>", "word ".repeat(400)),
    );
    let resp = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "[slow=50] tc=slow-write"})).await;
    let mut sse = SseReader::new(resp);
    let mut last_id = String::new();
    loop {
        let e = sse.next().await.unwrap();
        last_id = e.id.clone().unwrap_or(last_id);
        if e.event == "chat:response:chunk" && !last_assistant(&e)["content"].as_str().unwrap().is_empty() {
            break;
        }
    }
    mesh.kill_role(Role::Orchestrator);
    drop(sse);
    mesh.restart_role(Role::Orchestrator).await;

    // resume from where we were: the new replica's reaper fails the turn
    let resumed = mesh.http().get(format!("{}?after={last_id}", stream_url(&c, chat))).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(resumed.status(), 200);
    let rest = SseReader::new(resumed).collect().await;
    let end = terminal(&rest);
    assert_eq!(end.event, "chat:response:error", "{rest:#?}");
    assert_eq!(end.data["code"], "TURN_INTERRUPTED");
    assert_eq!(versions(&c, app).await, before, "no partial commit");
    assert_eq!(file(&c, app, "src/late.ts").await.0, 404);
    assert!(assistant_content(&c, chat).await.contains("interrupted"));
    // the chat takes new prompts
    assert_eq!(terminal(&turn(&mesh, &alice.api_token, &c, chat, "tc=write").await).event, "chat:response:end");
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_rate_limits_are_retried_then_reported_clearly() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Retry").await;

    let events = turn(&mesh, &alice.api_token, &c, chat, "[429=2] tc=write").await;
    assert_eq!(terminal(&events).data["updatedFiles"], true);
    assert_eq!(mesh.model.requests_containing("[429=2] tc=write").len(), 3, "two refusals, then success");

    let count = versions(&c, app).await.len();
    let events = turn(&mesh, &alice.api_token, &c, chat, "[429] always").await;
    let err = terminal(&events);
    assert_eq!(err.event, "chat:response:error");
    assert!(err.data["error"].as_str().unwrap().contains("rate limiting"), "{:?}", err.data);
    assert_eq!(err.data["chatId"], chat);
    assert_eq!(versions(&c, app).await.len(), count);
    assert!(assistant_content(&c, chat).await.contains("rate limiting"));
    // a provider that breaks after the first token is not retried
    let events = turn(&mesh, &alice.api_token, &c, chat, "[drop] tc=long").await;
    assert_eq!(terminal(&events).event, "chat:response:error");
    assert_eq!(mesh.model.requests_containing("[drop] tc=long").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_larger_than_the_window_is_trimmed_and_reported() {
    let configure: blaze_testkit::Configure = Arc::new(|cfg| {
        cfg.llm.default_context_window = 3_000;
        cfg.llm.max_output_tokens = 400;
    });
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (_, chat) = new_app(&c, "Window").await;
    // a long history that can not all fit
    for i in 0..3 {
        turn(&mesh, &alice.api_token, &c, chat, &format!("turn {i} tc=long")).await;
    }
    let events = turn(&mesh, &alice.api_token, &c, chat, "tc=write now").await;
    let end = terminal(&events);
    assert_eq!(end.event, "chat:response:end", "{:?}", end.data);
    let report = &end.data["context"];
    assert_eq!(report["contextWindow"], 3_000);
    assert!(report["estimatedTotalTokens"].as_i64().unwrap() + 400 <= 3_000, "{report}");
    assert!(report["historyMessagesDropped"].as_i64().unwrap() > 0 || !report["filesExcluded"].as_array().unwrap().is_empty(), "{report}");
    let sent = mesh.model.requests_containing("tc=write now");
    let chars: usize = sent[0].messages().iter().map(|(_, t)| t.len()).sum();
    assert!(chars / 4 + 400 <= 3_000, "the request fits the window ({chars} chars)");
    // the same report is available before sending
    let report = c.ok("GET", &format!("{S}/chats/{chat}/context?input=hello"), None).await;
    assert_eq!(report["contextWindow"], 3_000);
    assert!(report["filesExcluded"].is_array());
}

#[tokio::test(flavor = "multi_thread")]
async fn proposals_wait_for_approval_apply_once_and_can_be_rejected() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Manual").await;
    c.ok("PATCH", "/settings/user", Some(json!({"autoApproveChanges": false}))).await;
    let before = versions(&c, app).await.len();

    let events = turn(&mesh, &alice.api_token, &c, chat, "tc=all-tags").await;
    assert_eq!(terminal(&events).data["updatedFiles"], false);
    assert_eq!(versions(&c, app).await.len(), before, "nothing applied yet");
    let proposal = c.ok("GET", &format!("{S}/chats/{chat}/proposal"), None).await;
    assert_eq!(proposal["chatId"], chat);
    let message_id = proposal["messageId"].as_i64().unwrap();
    let p = &proposal["proposal"];
    assert_eq!(p["type"], "code-proposal");
    assert_eq!(p["title"], "Restructure pages");
    assert_eq!(p["securityRisks"], json!([]));
    assert_eq!(p["packagesAdded"], json!(["nanoid"]));
    let kinds: Vec<&str> = p["filesChanged"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["delete", "rename", "write", "write"], "{p}");
    assert_eq!(p["filesChanged"][0], json!({"name": "README.md", "path": "README.md", "summary": "Delete file", "type": "delete"}));

    let approved = c.ok("POST", &format!("{S}/chats/{chat}/proposal/approve"), Some(json!({"messageId": message_id}))).await;
    assert_eq!(approved["updatedFiles"], true);
    assert_eq!(approved["selfHealAttempted"], false);
    let commit = approved["commitHash"].as_str().unwrap().to_owned();
    assert_eq!(versions(&c, app).await.len(), before + 1);
    // approving again returns the same result without a second commit
    let again = c.ok("POST", &format!("{S}/chats/{chat}/proposal/approve"), Some(json!({"messageId": message_id}))).await;
    assert_eq!(again["commitHash"], commit.as_str());
    assert_eq!(versions(&c, app).await.len(), before + 1);
    assert_eq!(c.call("GET", &format!("{S}/chats/{chat}/proposal"), None).await.1["data"], Value::Null);
    assert_eq!(c.call("POST", &format!("{S}/chats/{chat}/proposal/reject"), Some(json!({"messageId": message_id}))).await.0, 409);

    // a second proposal, rejected: files untouched
    turn(&mesh, &alice.api_token, &c, chat, "tc=write").await;
    let proposal = c.ok("GET", &format!("{S}/chats/{chat}/proposal"), None).await;
    let id = proposal["messageId"].as_i64().unwrap();
    assert_eq!(c.call("POST", &format!("{S}/chats/{chat}/proposal/reject"), Some(json!({"messageId": id}))).await.0, 204);
    assert_eq!(file(&c, app, "src/components/Greeting.tsx").await.0, 404);
    assert_eq!(c.call("GET", &format!("{S}/chats/{chat}/proposal"), None).await.1["data"], Value::Null);
    // unknown message ids
    let (status, body) = c.call("POST", &format!("{S}/chats/{chat}/proposal/approve"), Some(json!({"messageId": 999999}))).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains(&format!("Assistant message not found for chatId: {chat}, messageId: 999999")));
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_requests_are_validated_exactly_and_unknown_chats_are_404() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (_, chat) = new_app(&c, "Strict").await;
    let url = stream_url(&c, chat);
    let post = |body: String| {
        let http = mesh.http();
        let url = url.clone();
        let token = alice.api_token.clone();
        async move {
            let r = http.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap()["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    let cases = [
        ("{", "Invalid JSON body"),
        ("[]", "Invalid payload"),
        (r#"{"prompt":"x","chatId":1}"#, "Invalid payload: unsupported keys (chatId)"),
        (r#"{"prompt":"   "}"#, "Invalid payload: \"prompt\" is required"),
        (r#"{}"#, "Invalid payload: \"prompt\" is required"),
        (r#"{"prompt":1}"#, "Invalid payload: \"prompt\" is required"),
        (r#"{"prompt":"x","redo":null}"#, "Invalid payload: \"redo\" must be a boolean"),
        (r#"{"prompt":"x","attachments":{}}"#, "Invalid payload: \"attachments\" must be an array of valid attachment objects"),
        (
            r#"{"prompt":"x","attachments":[{"name":"a","type":"text/plain","data":"aGk=","attachmentType":"other"}]}"#,
            "Invalid payload: \"attachments\" must be an array of valid attachment objects",
        ),
        (
            r#"{"prompt":"x","attachments":[{"name":"a","type":"t","data":"aGk=","attachmentType":"chat-context","x":1}]}"#,
            "Invalid payload: \"attachments\" must be an array of valid attachment objects",
        ),
        (
            r#"{"prompt":"x","selectedComponents":[{"id":"a"}]}"#,
            "Invalid payload: \"selectedComponents\" must be an array of valid component selections",
        ),
    ];
    for (body, message) in cases {
        assert_eq!(post(body.to_owned()).await, (400, message.to_owned()), "{body}");
    }
    // nothing was stored by the refused requests
    let chat_json = c.ok("GET", &format!("{S}/chats/{chat}"), None).await;
    assert_eq!(chat_json["messages"], json!([]));
    let missing =
        mesh.http().post(stream_url(&c, 987654)).bearer_auth(&alice.api_token).json(&json!({"prompt": "x"})).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "CHAT_NOT_FOUND");
    assert_eq!(c.call("POST", &format!("{S}/chats/987654/stream/cancel"), None).await.0, 404);

    // over the token quota: refused before any byte of SSE, nothing stored
    let quota = json!({"subjectType": "organization", "subjectId": alice.org_id, "metric": "tokens", "limit": 10});
    c.ok("POST", &format!("/orgs/{}/quotas", alice.org_id), Some(quota)).await;
    let resp = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "tc=write"})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "QUOTA_HARD_LIMIT_REACHED");
    assert_eq!(c.ok("GET", &format!("{S}/chats/{chat}"), None).await["messages"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn redo_attachments_components_and_prompt_references_shape_the_turn() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Inputs").await;

    // @prompt: from the caller's library
    let saved = c.ok("POST", "/orgs/me/prompts", Some(json!({"title": "Style", "content": "Use a dark theme everywhere."}))).await;
    let id = saved["id"].as_i64().unwrap();
    turn(&mesh, &alice.api_token, &c, chat, &format!("[dump] restyle @prompt:{id} and @prompt:424242")).await;
    let req = &mesh.model.requests_containing("[dump] restyle")[0];
    assert!(req.last_user_text().contains("restyle Use a dark theme everywhere. and @prompt:424242"), "{}", req.last_user_text());

    // selected components with a snippet; attachments of both kinds
    let png = base64_encode(b"\x89PNG\r\n\x1a\nfake image bytes");
    mesh.model.add_fixture(
        "place-logo",
        "<blaze-write path=\"public/logo.png\">BLAZE_ATTACHMENT_0</blaze-write><blaze-chat-summary>Logo</blaze-chat-summary>",
    );
    let body = json!({
        "prompt": "tc=place-logo use these",
        "selectedComponents": [{"id": "src/App.tsx:9:9", "name": "Routes", "relativePath": "src/App.tsx", "lineNumber": 9, "columnNumber": 9}],
        "attachments": [
            {"name": "logo.png", "type": "image/png", "data": png, "attachmentType": "upload-to-codebase"},
            {"name": "notes.md", "type": "text/markdown", "data": format!("data:text/markdown;base64,{}", base64_encode(b"# Notes\nmake it pop")), "attachmentType": "chat-context"},
            {"name": "mock.png", "type": "image/png", "data": png, "attachmentType": "chat-context"}
        ]
    });
    let resp = open(&mesh, &alice.api_token, &c, chat, body).await;
    assert_eq!(terminal(&SseReader::new(resp).collect().await).data["updatedFiles"], true);
    let req = &mesh.model.requests_containing("tc=place-logo")[0];
    let prompt = req.last_user_text();
    assert!(prompt.contains("Selected components:") && prompt.contains("Component: Routes (file: src/App.tsx)"), "{prompt}");
    assert!(prompt.contains("// <-- EDIT HERE"), "{prompt}");
    assert!(prompt.contains("File to upload to codebase: logo.png (file id: BLAZE_ATTACHMENT_0)"));
    assert!(prompt.contains("Full content of notes.md:") && prompt.contains("make it pop"));
    let last = req.body["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(last["content"].as_array().is_some_and(|parts| parts.iter().any(|p| p["type"] == "image_url")), "the image goes to the model");
    // the upload landed byte for byte
    let mut repos = blaze_proto::artifacts::repository_service_client::RepositoryServiceClient::new(mesh.service_channel(Role::Artifacts));
    let logo = repos
        .read_file(blaze_proto::artifacts::ReadFileRequest {
            repo: Some(blaze_proto::artifacts::RepoRef { organization_id: alice.org_id.clone(), app_id: app }),
            revision: String::new(),
            path: "public/logo.png".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logo.content, b"\x89PNG\r\n\x1a\nfake image bytes");
    // the stored user message keeps the prompt verbatim and lists attachments
    let chat_json = c.ok("GET", &format!("{S}/chats/{chat}"), None).await;
    let msgs = chat_json["messages"].as_array().unwrap();
    let user = msgs.iter().rev().find(|m| m["role"] == "user").unwrap()["content"].as_str().unwrap().to_owned();
    assert!(user.starts_with("tc=place-logo use these\n\nAttachments:"), "{user}");

    // redo replaces the last exchange
    let count = msgs.len();
    let resp = open(&mesh, &alice.api_token, &c, chat, json!({"prompt": "tc=write", "redo": true})).await;
    SseReader::new(resp).collect().await;
    let msgs = c.ok("GET", &format!("{S}/chats/{chat}"), None).await["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), count, "the last user/assistant pair was replaced");
    assert!(!msgs.iter().any(|m| m["content"].as_str().unwrap().contains("place-logo")));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_model_answers_without_configuration() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Demo").await;
    let events = turn(&mesh, &alice.api_token, &c, chat, "Build a todo list").await;
    assert_eq!(terminal(&events).data["updatedFiles"], true);
    assert!(file(&c, app, "src/pages/Index.tsx").await.1["data"].as_str().unwrap().contains("Build a todo list"));
}
