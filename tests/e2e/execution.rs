//! Execution through the edge with real sandboxes, node and vite: previews
//! (run, hot update after a chat turn, stop), build and deploy with
//! rollback, job logs over SSE, RabbitMQ redelivery after a worker crash,
//! poison jobs, and a real browser rendering a preview.

use std::{sync::Arc, time::Duration};

use blaze::Role;
use blaze_testkit::{MeshOptions, TestMesh};
use serde_json::{Value, json};

use crate::{controlplane::Client, support::SseReader};

const S: &str = "/orgs/me/workspaces/me";

async fn new_app(c: &Client, name: &str) -> (i64, i64) {
    let created = c.ok("POST", &format!("{S}/apps"), Some(json!({"name": name}))).await;
    (created["app"]["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap())
}

/// GET through the edge on any host; returns (status, body).
async fn get(mesh: &TestMesh, url: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let resp = mesh.http_for(url).get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

/// Poll `url` until its body contains `needle`.
async fn eventually(mesh: &TestMesh, url: &str, needle: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body, _) = get(mesh, url).await;
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never contained {needle:?}; last: {status} {body:.300}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn turn(mesh: &TestMesh, token: &str, c: &Client, chat: i64, prompt: &str) -> Vec<crate::support::SseEvent> {
    let resp = mesh
        .http()
        .post(format!("{}{S}/chats/{chat}/stream", c.base))
        .bearer_auth(token)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    SseReader::new(resp).collect().await
}

async fn wait_job(c: &Client, job: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let j = c.ok("GET", &format!("{S}/jobs/{job}"), None).await;
        if matches!(j["state"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return j;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {job} still {}", j["state"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn app_fixture(marker: &str) -> String {
    format!(
        "Updating the app.\n<blaze-write path=\"src/App.tsx\" description=\"New home\">\nexport default function App() {{\n  return <h1>{marker}</h1>;\n}}\n</blaze-write>\n<blaze-chat-summary>New home</blaze-chat-summary>\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_runs_updates_in_place_after_a_chat_turn_and_stops() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Preview Me").await;

    let run = c.ok("POST", &format!("{S}/apps/{app}/run"), None).await;
    let url = run["previewUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("http://") && url.contains(".preview.localhost:"), "{url}");
    assert_eq!(run["originalUrl"], url.as_str());
    let (status, html, _) = get(&mesh, &url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<div id=\"root\">") && html.contains("/@vite/client"), "{html}");
    let app_src = format!("{url}src/App.tsx");
    assert!(eventually(&mesh, &app_src, "BrowserRouter", Duration::from_secs(20)).await.contains("Routes"));
    // running again returns the same preview
    assert_eq!(c.ok("POST", &format!("{S}/apps/{app}/run"), None).await["previewUrl"], url.as_str());

    // a chat turn lands in the running dev server without a restart
    mesh.model.add_fixture("new-home", &app_fixture("Hello from the chat"));
    let events = turn(&mesh, &alice.api_token, &c, chat, "tc=new-home").await;
    assert_eq!(events.last().unwrap().data["updatedFiles"], true);
    eventually(&mesh, &app_src, "Hello from the chat", Duration::from_secs(15)).await;
    let jobs = c.ok("GET", &format!("{S}/jobs?appId={app}"), None).await;
    assert_eq!(jobs.as_array().unwrap().iter().filter(|j| j["kind"] == "preview").count(), 1, "no restart: {jobs}");

    // a wrong token, or another preview id, finds nothing
    let forged = url.replacen("-", "-x", 1);
    assert_eq!(get(&mesh, &forged).await.0, 404);

    // stop: the preview URL answers a JSON 404
    assert_eq!(c.call("POST", &format!("{S}/apps/{app}/stop"), None).await.0, 204);
    let (status, body, headers) = get(&mesh, &url).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "PREVIEW_NOT_FOUND");

    // restart gives a fresh, working preview
    let restarted = c.ok("POST", &format!("{S}/apps/{app}/restart"), Some(json!({"removeNodeModules": true}))).await;
    assert_eq!(restarted["success"], true);
    let url2 = restarted["previewUrl"].as_str().unwrap();
    assert_ne!(url2, url);
    eventually(&mesh, &format!("{url2}src/App.tsx"), "Hello from the chat", Duration::from_secs(20)).await;
}

/// Dev-server sockets of the mesh's local sandboxes that accept connections.
fn live_dev_servers(mesh: &TestMesh) -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir(&mesh.cfg.sandbox.root) else { return vec![] };
    dir.flatten().map(|e| e.path().join("serve.sock")).filter(|sock| std::os::unix::net::UnixStream::connect(sock).is_ok()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_app_stops_its_running_preview() {
    let configure: blaze_testkit::Configure = Arc::new(|cfg| cfg.preview.reap_interval_secs = 1);
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Short Lived").await;
    let url = c.ok("POST", &format!("{S}/apps/{app}/run"), None).await["previewUrl"].as_str().unwrap().to_owned();
    assert_eq!(get(&mesh, &url).await.0, 200);
    assert_eq!(live_dev_servers(&mesh).len(), 1);

    assert_eq!(c.call("DELETE", &format!("{S}/apps/{app}"), None).await.0, 204);
    // The sandbox goes (its row went with the app; the reaper notices), and
    // with it the preview URL.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !live_dev_servers(&mesh).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the deleted app's dev server still runs");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(get(&mesh, &url).await.0, 404, "the preview URL dies with the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_and_deploy_serve_the_app_and_rollback_switches_back() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, chat) = new_app(&c, "Ship It").await;

    mesh.model.add_fixture("v1", &app_fixture("Version one"));
    turn(&mesh, &alice.api_token, &c, chat, "tc=v1").await;
    let first = c.ok("POST", &format!("{S}/apps/{app}/deployments"), Some(json!({"promote": true}))).await;
    assert_eq!(first["state"], "building");
    let url = first["url"].as_str().unwrap().to_owned();
    assert!(url.contains(&format!("ship-it-{app}.apps.localhost")), "{url}");

    // the job streams its state and log lines over SSE until it ends
    let job = first["jobId"].as_str().unwrap().to_owned();
    let events = mesh.http().get(format!("{}{S}/jobs/{job}/events", c.base)).bearer_auth(&alice.api_token).send().await.unwrap();
    let events = SseReader::new(events).collect().await;
    assert!(events.iter().any(|e| e.event == "job:log"), "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!((last.event.as_str(), last.data["state"].as_str()), ("job:state", Some("succeeded")), "{events:#?}");
    assert!(events.iter().all(|e| !e.data["line"].as_str().unwrap_or_default().contains('\u{1b}')), "ANSI stripped");

    let (status, html, headers) = get(&mesh, &url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let asset = html.split("src=\"/").nth(1).and_then(|r| r.split('"').next()).expect("a script asset").to_owned();
    let (status, js, headers) = get(&mesh, &format!("{url}{asset}")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(js.contains("Version one"));
    // client-side routes fall back to index.html; missing assets are 404
    assert_eq!(get(&mesh, &format!("{url}some/route")).await.1, html);
    assert_eq!(get(&mesh, &format!("{url}assets/missing.js")).await.0, 404);

    // a second version, then roll back to the first
    mesh.model.add_fixture("v2", &app_fixture("Version two"));
    turn(&mesh, &alice.api_token, &c, chat, "tc=v2").await;
    let second = c.ok("POST", &format!("{S}/apps/{app}/deployments"), Some(json!({"promote": true}))).await;
    assert_eq!(wait_job(&c, second["jobId"].as_str().unwrap(), Duration::from_secs(120)).await["state"], "succeeded");
    let html2 = eventually(&mesh, &url, "<script", Duration::from_secs(5)).await;
    let asset2 = html2.split("src=\"/").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    assert!(get(&mesh, &format!("{url}{asset2}")).await.1.contains("Version two"));
    let list = c.ok("GET", &format!("{S}/apps/{app}/deployments"), None).await;
    assert_eq!(list.as_array().unwrap().iter().filter(|d| d["live"] == true).count(), 1);
    let first_id = first["id"].as_str().unwrap();
    let rolled = c.ok("POST", &format!("{S}/apps/{app}/deployments/{first_id}:promote"), None).await;
    assert_eq!(rolled["live"], true);
    eventually(&mesh, &url, &asset, Duration::from_secs(5)).await;
    // nothing at an unknown app host
    let (status, body, _) = get(&mesh, "http://nope-1.apps.localhost/").await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["code"].clone()), (404, json!("DEPLOYMENT_NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_gets_the_job_back_and_it_succeeds_once() {
    let mut mesh = TestMesh::start_with(MeshOptions { isolated: vec![Role::Execution], ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Crashy").await;
    let d = c.ok("POST", &format!("{S}/apps/{app}/deployments"), Some(json!({"promote": true}))).await;
    let job = d["jobId"].as_str().unwrap().to_owned();
    // wait until a worker runs it, then kill the worker's process
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while c.ok("GET", &format!("{S}/jobs/{job}"), None).await["state"] != "running" {
        assert!(tokio::time::Instant::now() < deadline, "never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.kill_role(Role::Execution);
    mesh.restart_role(Role::Execution).await;
    let done = wait_job(&c, &job, Duration::from_secs(180)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "run again after the crash: {done}");
    let list = c.ok("GET", &format!("{S}/apps/{app}/deployments"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "ready");
    assert_eq!(get(&mesh, list[0]["url"].as_str().unwrap()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_job_is_parked_after_its_attempts_with_the_error_recorded() {
    let configure: blaze_testkit::Configure = Arc::new(|cfg| {
        cfg.sandbox.bwrap = "/nonexistent/bwrap".into();
        cfg.sandbox.require_cgroups = false;
        cfg.amqp.max_attempts = 2;
        cfg.amqp.retry_delay_ms = 200;
    });
    let mesh = TestMesh::start_with(MeshOptions { configure: Some(configure), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Poison").await;
    let d = c.ok("POST", &format!("{S}/apps/{app}/deployments"), Some(json!({}))).await;
    let job = wait_job(&c, d["jobId"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempts"], 2);
    let error = job["error"].as_str().unwrap();
    assert!(error.starts_with("gave up after 2 attempts") && error.contains("bubblewrap"), "{error}");
    let list = c.ok("GET", &format!("{S}/apps/{app}/deployments"), None).await;
    assert_eq!(list[0]["state"], "failed");
    // and the message sits in the parking queue for operators
    let broker = blaze_queue::Broker::connect(blaze_queue::QueueConfig {
        url: mesh.cfg.amqp.url.expose().to_owned(),
        prefix: mesh.cfg.amqp.prefix.clone(),
        prefetch: 1,
        max_attempts: 2,
        retry_delay: Duration::from_millis(200),
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let parked = broker.parked("jobs").await.unwrap();
        if let Some(p) = parked.first() {
            assert!(p.error.contains("bubblewrap"), "{}", p.error);
            assert_eq!(p.attempts, 2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_renders_the_preview_and_runs_its_code() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Browser").await;
    let url = c.ok("POST", &format!("{S}/apps/{app}/run"), None).await["previewUrl"].as_str().unwrap().to_owned();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/browser.mjs");
    let tools = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node_modules");
    let edge = mesh.addrs[&Role::Edge];
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg(edge.to_string())
        .env("BLAZE_NODE_MODULES", &tools)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("HEADING Your app starts here"), "{stdout}");
    assert!(stdout.contains("AFTER CLICK Clicked 1 time"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_job_reaches_the_registry_through_the_proxy_only() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    let (app, _) = new_app(&c, "Deps").await;
    let mut jobs = blaze_proto::execution::job_service_client::JobServiceClient::new(mesh.service_channel(Role::Execution));
    let job = jobs
        .submit_job(blaze_proto::execution::SubmitJobRequest {
            organization_id: alice.org_id.clone(),
            workspace_id: alice.workspace_id.clone(),
            app_id: app,
            kind: "install".into(),
            packages: vec!["nanoid@5.0.9".into()],
            wait: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let events = mesh.http().get(format!("{}{S}/jobs/{}/events", c.base, job.id)).bearer_auth(&alice.api_token).send().await.unwrap();
    let log: Vec<String> = SseReader::new(events).collect().await.into_iter().map(|e| e.data.to_string()).collect();
    assert_eq!(job.state, "succeeded", "{job:?}\n{log:#?}");
    let pkg: Value = serde_json::from_str(&job.result["package.json"]).unwrap();
    assert_eq!(pkg["dependencies"]["nanoid"], "^5.0.9");
    assert!(job.result["package-lock.json"].contains("nanoid-5.0.9.tgz"));
}
