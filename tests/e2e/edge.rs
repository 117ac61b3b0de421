//! The edge through real HTTP: transcoding of params, bodies and statuses,
//! clear errors for bad input, SSE semantics, gRPC pass-through, rate
//! limits, OpenAPI, CORS and request ids.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use blaze::Role;
use blaze_kit::{
    ApiError, CancellationToken,
    grpc::{GrpcServer, Security},
};
use blaze_proto::execution::{
    self as ex,
    job_service_server::{JobService, JobServiceServer},
};
use blaze_testkit::{MeshOptions, TestMesh};
use serde_json::{Value, json};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::support::{SseReader, grpcurl};

/// A scripted JobService standing in for the execution role, so the edge's
/// SSE handling is tested against exact upstream behaviour.
#[derive(Clone, Default)]
struct FakeJobs {
    cancelled: Arc<AtomicBool>,
}

fn state_event(id: &str, state: &str) -> ex::WatchJobResponse {
    ex::WatchJobResponse {
        event_id: id.into(),
        event: Some(ex::watch_job_response::Event::State(ex::JobState { job_id: "j".into(), state: state.into(), error: None })),
    }
}

fn log_event(id: &str, line: &str) -> ex::WatchJobResponse {
    ex::WatchJobResponse {
        event_id: id.into(),
        event: Some(ex::watch_job_response::Event::Log(ex::JobLog { stream: "stdout".into(), line: line.into() })),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<ex::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for FakeJobs {
    async fn list_jobs(&self, _: Request<ex::ListJobsRequest>) -> Result<Response<ex::ListJobsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_job(&self, _: Request<ex::GetJobRequest>) -> Result<Response<ex::GetJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn cancel_job(&self, _: Request<ex::CancelJobRequest>) -> Result<Response<ex::CancelJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn submit_job(&self, _: Request<ex::SubmitJobRequest>) -> Result<Response<ex::SubmitJobResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(&self, req: Request<ex::WatchJobRequest>) -> Result<Response<WatchStream>, Status> {
        let r = req.into_inner();
        let all = vec![state_event("1-0", "running"), log_event("2-0", "building"), state_event("3-0", "succeeded")];
        let after: u64 = r.after.split('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let pending: Vec<_> = all.into_iter().filter(|e| e.event_id.split('-').next().unwrap().parse::<u64>().unwrap() > after).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        match r.job_id.as_str() {
            "ok" => {
                tokio::spawn(async move {
                    for e in pending {
                        let _ = tx.send(Ok(e)).await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
            "fail" => {
                tokio::spawn(async move {
                    let _ = tx.send(Ok(state_event("1-0", "running"))).await;
                    let _ = tx.send(Err(Status::from(ApiError::conflict("JOB_FAILED", "sandbox crashed")))).await;
                });
            }
            "hang" => {
                let flag = self.cancelled.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Ok(state_event("1-0", "running"))).await;
                    tx.closed().await;
                    flag.store(true, Ordering::SeqCst);
                });
            }
            _ => return Err(Status::from(ApiError::not_found("JOB_NOT_FOUND", "Job not found"))),
        }
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

async fn mesh_with_fake_jobs(
    configure: impl Fn(&mut blaze_kit::Config) + Send + Sync + 'static,
) -> (TestMesh, FakeJobs, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(move |cfg| {
            cfg.upstreams.execution = url.clone();
            configure(cfg);
        })),
        ..Default::default()
    })
    .await;
    let fake = FakeJobs::default();
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new("execution").service(JobServiceServer::new(fake.clone()));
    let security = Security { keys: mesh.keys.clone(), idempotency: None };
    let s = shutdown.clone();
    tokio::spawn(async move { server.serve(listener, security, s).await });
    (mesh, fake, shutdown)
}

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_routes_transcode_paths_queries_bodies_and_statuses() {
    // dev headers act as a full user (API tokens are bound to one organisation)
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.auth.dev_mode = true)),
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .default_headers([("x-blaze-dev-user-sub".parse().unwrap(), "alice".parse().unwrap())].into_iter().collect())
        .build()
        .unwrap();
    let base = format!("{}/api/v1", mesh.edge_url());

    // POST with a body → 200 {data}
    let (status, created) =
        body(http.post(format!("{base}/orgs")).json(&json!({"name": "Acme", "slug": "acme"})).send().await.unwrap()).await;
    assert_eq!(status, 200, "{created}");
    let org = created["data"].clone();
    assert_eq!(
        (org["name"].as_str(), org["slug"].as_str(), org["role"].as_str(), org["status"].as_str()),
        (Some("Acme"), Some("acme"), Some("owner"), Some("active"))
    );
    assert!(org["createdAt"].as_str().unwrap().ends_with('Z'));

    // GET with a path parameter (a slug) sees the new membership at once
    let (status, got) = body(http.get(format!("{base}/orgs/acme")).send().await.unwrap()).await;
    assert_eq!((status, got["data"]["id"].clone()), (200, org["id"].clone()));

    // PATCH
    let (status, patched) = body(http.patch(format!("{base}/orgs/acme")).json(&json!({"name": "Acme Inc"})).send().await.unwrap()).await;
    assert_eq!((status, patched["data"]["name"].as_str()), (200, Some("Acme Inc")));

    // POST a team workspace, then DELETE it → 204 with an empty body
    let (status, ws) =
        body(http.post(format!("{base}/orgs/acme/workspaces")).json(&json!({"name": "Team One", "type": "team"})).send().await.unwrap())
            .await;
    assert_eq!(status, 200, "{ws}");
    let ws_id = ws["data"]["id"].as_str().unwrap().to_owned();
    let resp = http.delete(format!("{base}/orgs/acme/workspaces/{ws_id}")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.text().await.unwrap().is_empty());

    // GET with path and query parameters (audit trail filtered by action)
    let (status, audit) =
        body(http.get(format!("{base}/orgs/acme/audit-events?action=workspace_create&pageSize=5")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let events = audit["data"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "workspace_create");
    assert_eq!(events[0]["metadata"]["type"], "team");
    assert!(events[0]["id"].is_number(), "64-bit ids are JSON numbers");

    // the deleted workspace is gone, and another tenant sees nothing
    let (status, _) = body(http.get(format!("{base}/orgs/acme/workspaces/{ws_id}")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    let bob = mesh.user("bob").await;
    let (status, err) =
        body(http.get(format!("{base}/orgs/{}", org["id"].as_str().unwrap())).bearer_auth(&bob.api_token).send().await.unwrap()).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("ORG_NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_json_errors() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| cfg.edge.max_body_bytes = 4096)),
        ..Default::default()
    })
    .await;
    let alice = mesh.user("alice").await;
    let http = mesh.http();
    let base = format!("{}/api/v1", mesh.edge_url());
    let post = |path: &str, body: &'static str| {
        http.post(format!("{base}{path}")).bearer_auth(&alice.api_token).header("content-type", "application/json").body(body)
    };

    let (status, e) = body(post("/orgs", r#"{"name":"x","bogus":1}"#).send().await.unwrap()).await;
    assert_eq!((status, e), (400, json!({"error": "Invalid payload: unsupported keys (bogus)", "code": "INVALID_PAYLOAD"})));
    let (status, e) = body(post("/orgs", r#"{"name": "x""#).send().await.unwrap()).await;
    assert_eq!((status, e["code"].as_str(), e["error"].as_str()), (400, Some("INVALID_PAYLOAD"), Some("Invalid JSON body")));
    let (status, e) = body(post("/orgs", r#"{"name": 7}"#).send().await.unwrap()).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("Invalid payload: \"name\" must be a string")));

    let (status, e) = body(http.get(format!("{base}/nope")).bearer_auth(&alice.api_token).send().await.unwrap()).await;
    assert_eq!((status, e), (404, json!({"error": "Not found", "code": "NOT_FOUND"})));
    let resp = http.put(format!("{base}/orgs")).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let (status, e) = body(resp).await;
    assert_eq!((status, e["code"].as_str()), (405, Some("METHOD_NOT_ALLOWED")));
    let (status, e) =
        body(http.get(format!("{base}/orgs/me/workspaces/me/apps/not-a-number")).bearer_auth(&alice.api_token).send().await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("NOT_FOUND")));

    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(5000));
    let (status, e) = body(
        http.post(format!("{base}/orgs"))
            .bearer_auth(&alice.api_token)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")));

    // no credentials, garbage credentials, dev headers without dev mode
    let (status, e) = body(http.get(format!("{base}/orgs")).send().await.unwrap()).await;
    assert_eq!((status, e), (401, json!({"error": "Missing Authorization Bearer token", "code": "UNAUTHORIZED"})));
    let (status, e) = body(http.get(format!("{base}/orgs")).bearer_auth("garbage").send().await.unwrap()).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("UNAUTHORIZED")));
    let (status, _) = body(http.get(format!("{base}/orgs")).header("x-blaze-dev-user-sub", "mallory").send().await.unwrap()).await;
    assert_eq!(status, 401, "dev headers are ignored when dev mode is off");

    // public routes need nothing
    let (status, v) = body(http.get(format!("{base}/auth/oauth/config")).send().await.unwrap()).await;
    assert_eq!((status, v["data"]["enabled"].as_bool()), (200, Some(false)));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_streams_become_sse_with_ids_errors_and_cancellation() {
    let (mesh, fake, _stop) = mesh_with_fake_jobs(|_| {}).await;
    let alice = mesh.user("alice").await;
    let http = mesh.http();
    let url = |job: &str| mesh.scoped(&format!("/jobs/{job}/events"));

    // ordered events with ids, then the stream ends
    let resp = http.get(url("ok")).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let events = SseReader::new(resp).collect().await;
    let summary: Vec<(Option<&str>, &str)> = events.iter().map(|e| (e.id.as_deref(), e.event.as_str())).collect();
    assert_eq!(summary, vec![(Some("1-0"), "job:state"), (Some("2-0"), "job:log"), (Some("3-0"), "job:state")]);
    assert_eq!(events[1].data, json!({"stream": "stdout", "line": "building"}));
    assert_eq!(events[2].data["state"], "succeeded");

    // Last-Event-ID resumes after that event
    let resp = http.get(url("ok")).bearer_auth(&alice.api_token).header("last-event-id", "1-0").send().await.unwrap();
    let ids: Vec<String> = SseReader::new(resp).collect().await.into_iter().filter_map(|e| e.id).collect();
    assert_eq!(ids, vec!["2-0", "3-0"]);

    // an error before the first event is a plain HTTP error
    let (status, e) = body(http.get(url("missing")).bearer_auth(&alice.api_token).send().await.unwrap()).await;
    assert_eq!((status, e), (404, json!({"error": "Job not found", "code": "JOB_NOT_FOUND"})));

    // an error mid-stream becomes the RPC's declared error event
    let resp = http.get(url("fail")).bearer_auth(&alice.api_token).send().await.unwrap();
    let events = SseReader::new(resp).collect().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event, "job:error");
    assert_eq!(events[1].data, json!({"error": "sandbox crashed", "code": "JOB_FAILED"}));

    // closing the client mid-stream cancels the upstream call
    let resp = http.get(url("hang")).bearer_auth(&alice.api_token).send().await.unwrap();
    let mut reader = SseReader::new(resp);
    assert_eq!(reader.next().await.unwrap().event, "job:state");
    assert!(!fake.cancelled.load(Ordering::SeqCst));
    drop(reader);
    let mut seen = false;
    for _ in 0..100 {
        if fake.cancelled.load(Ordering::SeqCst) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "upstream stream was not cancelled after the client left");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_passes_through_with_reflection_and_auth() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: None,
        ..Default::default()
    })
    .await;
    let alice = mesh.user("alice").await;
    let edge = mesh.edge_url().trim_start_matches("http://").to_owned();
    let grpcurl = grpcurl();
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(&grpcurl).args(&args).output().expect("run grpcurl");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, list, err) = run(vec!["-plaintext".into(), edge.clone(), "list".into()]);
    assert!(ok, "{err}");
    assert!(list.contains("blaze.controlplane.v1.AppService") && list.contains("blaze.orchestrator.v1.ChatStreamService"), "{list}");
    let (ok, desc, err) =
        run(vec!["-plaintext".into(), edge.clone(), "describe".into(), "blaze.controlplane.v1.OrganizationService".into()]);
    assert!(ok && desc.contains("ListOrganizations"), "{err}");
    let (ok, out, err) = run(vec![
        "-plaintext".into(),
        "-H".into(),
        format!("authorization: Bearer {}", alice.api_token),
        "-d".into(),
        "{}".into(),
        edge.clone(),
        "blaze.controlplane.v1.OrganizationService/ListOrganizations".into(),
    ]);
    assert!(ok, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"][0]["id"], alice.org_id);
    // without a token the call is refused at the edge
    let (ok, _, err) = run(vec![
        "-plaintext".into(),
        "-d".into(),
        "{}".into(),
        edge,
        "blaze.controlplane.v1.OrganizationService/ListOrganizations".into(),
    ]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_headers_per_user() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: Some(Arc::new(|cfg| {
            cfg.rate_limit.user_burst = 3;
            cfg.rate_limit.user_per_sec = 0.05;
        })),
        ..Default::default()
    })
    .await;
    let (alice, bob) = (mesh.user("alice").await, mesh.user("bob").await);
    let http = mesh.http();
    let url = format!("{}/api/v1/orgs", mesh.edge_url());
    for i in 0..3 {
        let resp = http.get(&url).bearer_auth(&alice.api_token).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "request {i}");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let resp = http.get(&url).bearer_auth(&alice.api_token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let (_, e) = body(resp).await;
    assert_eq!(e["code"], "RATE_LIMITED");
    // another user is unaffected
    let resp = http.get(&url).bearer_auth(&bob.api_token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_cors_request_ids_and_probes() {
    let mesh = TestMesh::start_with(MeshOptions {
        roles: vec![Role::Identity, Role::ControlPlane, Role::Edge],
        configure: None,
        ..Default::default()
    })
    .await;
    let http = mesh.http();
    let edge = mesh.edge_url();

    let (status, doc) = body(http.get(format!("{edge}/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    let bindings: usize = blaze_proto::catalog::Catalog::global().methods().iter().map(|m| m.http.len()).sum();
    assert_eq!(operations, bindings, "every transcoded route is documented");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            let declared: Vec<&str> =
                op["parameters"].as_array().unwrap().iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
            for var in path.split('{').skip(1).map(|s| s.split('}').next().unwrap()) {
                assert!(declared.contains(&var), "{method} {path}: path parameter {var} undeclared");
            }
        }
    }

    // CORS preflight and actual responses
    let resp = http
        .request(reqwest::Method::OPTIONS, format!("{edge}/api/v1/orgs"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers()["access-control-allow-headers"].to_str().unwrap().contains("X-Blaze-Channel"));
    let resp = http.get(format!("{edge}/api/v1/orgs")).header("origin", "http://localhost:5173").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*", "errors carry CORS headers too");

    // request ids: echoed when valid, generated otherwise
    let resp = http.get(format!("{edge}/api/v1/app/version")).header("x-request-id", "req-123").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let resp = http.get(format!("{edge}/api/v1/app/version")).send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 36);

    assert_eq!(http.get(format!("{edge}/healthz")).send().await.unwrap().status().as_u16(), 200);
    let metrics = http.get(format!("{edge}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("blaze_http_requests_total"), "{metrics}");
    // not every role runs in this mesh: not ready, with a clear body
    let (status, ready) = body(http.get(format!("{edge}/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(ready["roles"]["control-plane"], "serving");
    assert_eq!(ready["roles"]["orchestrator"], "unavailable");
}
