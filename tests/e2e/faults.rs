//! Fault injection: roles as separate `blaze serve` processes that are
//! SIGKILLed mid-flight, and dependencies (RabbitMQ, Redis, Postgres)
//! behind a proxy that drops and refuses connections. The system must lose
//! nothing, apply nothing twice, fail cleanly and recover without restarts.
//! The processes' logs are scanned for secrets at the end.

use std::{sync::Arc, time::Duration};

use blaze::Role;
use blaze_testkit::{MeshOptions, RoleProcess, TestMesh, free_port};
use serde_json::json;

use crate::{
    controlplane::Client,
    support::{Chaos, SseEvent, SseReader},
};

const S: &str = "/orgs/me/workspaces/me";

async fn new_app(c: &Client, name: &str) -> (i64, i64) {
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": name}))).await;
    (created["app"]["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap())
}

/// Wait until a gRPC role answers its health check.
async fn wait_grpc(addr: std::net::SocketAddr) {
    for _ in 0..300 {
        if let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
            if let Ok(r) = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await
                && r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} never became healthy");
}

async fn wait_http(url: &str) {
    for _ in 0..300 {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

fn ids(v: &[SseEvent]) -> Vec<String> {
    v.iter().map(|e| e.id.clone().unwrap()).collect()
}

fn log_path(mesh: &TestMesh, name: &str) -> std::path::PathBuf {
    mesh.cfg.git.root.parent().unwrap().join(format!("{name}.log"))
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_orchestrator_process_mid_turn_fails_the_turn_cleanly() {
    let mesh = TestMesh::start_with(MeshOptions { processes: vec![Role::Orchestrator], ..Default::default() }).await;
    let orch_addr = mesh.addrs[&Role::Orchestrator];
    let mut orch = mesh.spawn_role(Role::Orchestrator, None, &log_path(&mesh, "orchestrator-1"));
    wait_grpc(orch_addr).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Killed").await;
    let versions = c.ok("GET", &format!("{S}/apps/{app}/versions"), None).await;

    mesh.model.add_fixture(
        "slow-write",
        &format!("{}\n<blaze-write path=\"src/late.ts\">export const late = 1;</blaze-write>", "word ".repeat(400)),
    );
    let resp = mesh
        .http()
        .post(format!("{}{S}/chats/{chat}/stream", c.base))
        .bearer_auth(&alice.api_token)
        .json(&json!({"prompt": "[slow=50] tc=slow-write"}))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    let mut last = String::new();
    while let Some(e) = sse.next().await {
        last = e.id.clone().unwrap_or(last);
        if e.event == "chat:response:chunk" && e.data["messages"].as_array().unwrap().last().unwrap()["content"] != "" {
            break;
        }
    }
    orch.kill();
    // the edge reports the broken upstream in-band, as the declared error event
    let rest = sse.collect().await;
    assert!(rest.last().is_none_or(|e| e.event == "chat:response:error"), "{rest:?}");

    let _orch2 = mesh.spawn_role(Role::Orchestrator, None, &log_path(&mesh, "orchestrator-2"));
    wait_grpc(orch_addr).await;
    let resumed =
        mesh.http().get(format!("{}{S}/chats/{chat}/stream?after={last}", c.base)).bearer_auth(&alice.api_token).send().await.unwrap();
    let events = SseReader::new(resumed).collect().await;
    let end = events.last().expect("a terminal event");
    assert_eq!((end.event.as_str(), &end.data["code"]), ("chat:response:error", &json!("TURN_INTERRUPTED")));
    assert_eq!(c.ok("GET", &format!("{S}/apps/{app}/versions"), None).await, versions, "no partial commit");
    // the chat is usable again
    let resp = mesh
        .http()
        .post(format!("{}{S}/chats/{chat}/stream", c.base))
        .bearer_auth(&alice.api_token)
        .json(&json!({"prompt": "tc=write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(resp).collect().await.last().unwrap().event, "chat:response:end");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_edge_dies_resumes_on_another_edge_without_gaps() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (_, chat) = new_app(&c, "Two Edges").await;
    let port = free_port();
    let mut edge_a: RoleProcess = mesh.spawn_role(Role::Edge, Some(&format!("127.0.0.1:{port}")), &log_path(&mesh, "edge-a"));
    let a = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{a}/healthz")).await;

    let url = |base: &str| format!("{base}/api/v1{S}/chats/{chat}/stream");
    let resp = mesh.http().post(url(&a)).bearer_auth(&alice.api_token).json(&json!({"prompt": "[slow=20] tc=long"})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = SseReader::new(resp);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(sse.next().await.unwrap());
    }
    edge_a.kill();
    drop(sse);
    // edge B (the mesh's own) takes over from the last event seen
    let b = mesh.edge_url();
    let resumed = mesh
        .http()
        .post(url(&b))
        .bearer_auth(&alice.api_token)
        .header("last-event-id", seen.last().unwrap().id.clone().unwrap())
        .json(&json!({"prompt": "resume"}))
        .send()
        .await
        .unwrap();
    let rest = SseReader::new(resumed).collect().await;
    assert_eq!(rest.last().unwrap().event, "chat:response:end");
    let replay = SseReader::new(mesh.http().get(url(&b)).bearer_auth(&alice.api_token).send().await.unwrap()).collect().await;
    let mut joined = ids(&seen);
    joined.extend(ids(&rest));
    assert_eq!(joined, ids(&replay), "no gap, no duplicate");
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_connection_loss_loses_no_job_and_runs_none_twice() {
    let amqp = Chaos::start("127.0.0.1:5672".parse().unwrap()).await;
    let port = amqp.port;
    let configure: blaze_testkit::Configure = Arc::new(move |cfg| {
        cfg.amqp.url = blaze_kit::Secret(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
        cfg.amqp.prefetch = 2;
    });
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Queue").await;
    let mut jobs = blaze_proto::execution::job_service_client::JobServiceClient::new(mesh.service_channel(Role::Execution));
    let submit = |jobs: &mut blaze_proto::execution::job_service_client::JobServiceClient<_>| {
        let req = blaze_proto::execution::SubmitJobRequest {
            organization_id: alice.org_id.clone(),
            workspace_id: alice.workspace_id.clone(),
            app_id: app,
            kind: "build".into(),
            ..Default::default()
        };
        let mut jobs = jobs.clone();
        async move { jobs.submit_job(req).await.map(|r| r.into_inner().job.unwrap().id) }
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&mut jobs).await.unwrap());
    }
    // consumers lose their connection mid-job, twice
    tokio::time::sleep(Duration::from_millis(1500)).await;
    amqp.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    amqp.cut();
    // publishing while RabbitMQ is unreachable waits for it to come back
    amqp.set_down(true);
    let pending = tokio::spawn(submit(&mut jobs));
    tokio::time::sleep(Duration::from_secs(2)).await;
    amqp.set_down(false);
    ids.push(pending.await.unwrap().expect("published after the outage"));

    for id in &ids {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        let job = loop {
            let j = c.ok("GET", &format!("{S}/jobs/{id}"), None).await;
            if matches!(j["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                break j;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} never finished: {j}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(job["state"], "succeeded", "{job}");
        // exactly one success in the job's history
        let events =
            SseReader::new(mesh.http().get(format!("{}{S}/jobs/{id}/events", c.base)).bearer_auth(&alice.api_token).send().await.unwrap())
                .collect()
                .await;
        let successes = events.iter().filter(|e| e.event == "job:state" && e.data["state"] == "succeeded").count();
        assert_eq!(successes, 1, "{id}: {events:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_rate_limits_open_and_streams_recover() {
    let redis = Chaos::start("127.0.0.1:6379".parse().unwrap()).await;
    let port = redis.port;
    let configure: blaze_testkit::Configure = Arc::new(move |cfg| cfg.redis.url = blaze_kit::Secret(format!("redis://127.0.0.1:{port}/0")));
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (_, chat) = new_app(&c, "Redis").await;
    assert_eq!(c.call("GET", "/orgs", None).await.0, 200);

    redis.set_down(true);
    // the rate limiter fails open: plain API calls keep working
    let started = std::time::Instant::now();
    let (status, body) = c.call("GET", "/orgs", None).await;
    assert_eq!(status, 200, "{body}");
    // a stream can not be durable without Redis: refused clearly, not hung
    let (status, body) = c.call("POST", &format!("{S}/chats/{chat}/stream"), Some(json!({"prompt": "tc=write"}))).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));

    redis.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = mesh
            .http()
            .post(format!("{}{S}/chats/{chat}/stream", c.base))
            .bearer_auth(&alice.api_token)
            .json(&json!({"prompt": "tc=write"}))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            assert_eq!(SseReader::new(resp).collect().await.last().unwrap().event, "chat:response:end");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "streams never recovered: {}", resp.status());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_answers_503_and_recovers_without_a_restart() {
    let pg = Chaos::start("127.0.0.1:5432".parse().unwrap()).await;
    let port = pg.port;
    let configure: blaze_testkit::Configure = Arc::new(move |cfg| {
        let url = cfg.database.url.expose().replacen("127.0.0.1:5432", &format!("127.0.0.1:{port}"), 1);
        cfg.database.url = blaze_kit::Secret(url);
        cfg.database.connect_timeout_ms = 1_500;
    });
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    new_app(&c, "Before").await;
    assert_eq!(c.call("GET", &format!("{S}/apps"), None).await.0, 200);

    pg.set_down(true);
    let started = std::time::Instant::now();
    let (status, body) = c.call("GET", &format!("{S}/apps"), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unavailable"), "{body}");
    assert!(!body.to_string().contains("password") && !body.to_string().contains("5432"), "no internals: {body}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let (status, _) = c.call("POST", &format!("{S}/apps"), Some(json!({"name": "During"}))).await;
    assert_eq!(status, 503);

    pg.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = c.call("GET", &format!("{S}/apps"), None).await;
        if status == 200 {
            let names: Vec<&str> = v["data"]["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
            assert_eq!(names, ["Before"], "the refused create left nothing behind");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered: {status} {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_logs_of_role_processes() {
    let mesh = TestMesh::start_with(MeshOptions { processes: vec![Role::Orchestrator, Role::ControlPlane], ..Default::default() }).await;
    let logs = [log_path(&mesh, "secrets-orchestrator"), log_path(&mesh, "secrets-control-plane"), log_path(&mesh, "secrets-edge")];
    let _orch = mesh.spawn_role(Role::Orchestrator, None, &logs[0]);
    let _cp = mesh.spawn_role(Role::ControlPlane, None, &logs[1]);
    let port = free_port();
    let _edge = mesh.spawn_role(Role::Edge, Some(&format!("127.0.0.1:{port}")), &logs[2]);
    wait_grpc(mesh.addrs[&Role::Orchestrator]).await;
    wait_grpc(mesh.addrs[&Role::ControlPlane]).await;
    let edge = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{edge}/healthz")).await;
    let alice = mesh.user("alice").await;
    let mut c = Client::new(&mesh, &alice.api_token);
    c.base = format!("{edge}/api/v1");

    // a workspace provider with a key, used for a turn
    let provider_key = "sk-ant-test-4f1c9e0b7d2a4c55b8e1";
    let policy = json!({
        "providers": [{"id": "corp", "kind": "anthropic", "baseUrl": mesh.model.base_url(), "apiKey": provider_key}],
        "defaultModel": "corp/claude-test"
    });
    let (status, body) = c.call("PATCH", &format!("{S}/settings/model"), Some(policy)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.to_string().contains(provider_key));
    let (_, chat) = new_app(&c, "Secrets").await;
    let resp = reqwest::Client::new()
        .post(format!("{}{S}/chats/{chat}/stream", c.base))
        .bearer_auth(&alice.api_token)
        .json(&json!({"prompt": "tc=write"}))
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(resp).collect().await.last().unwrap().event, "chat:response:end");
    let sent = mesh.model.requests_containing("tc=write");
    assert_eq!(sent[0].headers["x-api-key"], provider_key, "the key was really used");
    // and a failed sign-in with a bogus token
    assert_eq!(
        reqwest::Client::new().get(format!("{}/orgs", c.base)).bearer_auth("not-a-token-SECRET123").send().await.unwrap().status(),
        401
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let secrets = [
        provider_key.to_owned(),
        mesh.cfg.auth.signing_key.expose().to_owned(),
        mesh.cfg.secrets.encryption_key.expose().to_owned(),
        mesh.cfg.s3.secret_key.expose().to_owned(),
        alice.api_token.clone(),
        "not-a-token-SECRET123".to_owned(),
    ];
    let mut scanned = 0;
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.is_empty(), "{} captured nothing", log.display());
        scanned += text.lines().count();
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret ({}…) is in {}", &s[..6], log.display());
        }
    }
    assert!(scanned > 10, "only {scanned} log lines");
}
