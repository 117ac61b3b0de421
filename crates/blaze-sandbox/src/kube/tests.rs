//! The driver against a fake API server (the kube-rs `tower-test` pattern:
//! `Client::new(mock_service, ns)`), asserting the exact objects it creates
//! and how it reads watch events, pods and logs. The shell scripts of the
//! pod run for real under `/bin/sh` with fake `curl`/`node`. One test runs
//! on a real cluster when `BLAZE_TEST_KUBECONFIG` is set.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};

use super::{
    API_PERMISSIONS, EgressTarget, KubeConfig, KubeDriver, Peer,
    manifest::{COLLECT_SCRIPT, FETCH_SCRIPT},
};
use crate::{Collect, Endpoint, Exit, Limits, LogLine, LogStream, Network, RunSpec, Sandbox, SandboxDriver, SandboxError, Source};

const NS: &str = "sbx";
const JOBS: &str = "/apis/batch/v1/namespaces/sbx/jobs";
const JOB: &str = "/apis/batch/v1/namespaces/sbx/jobs/blaze-b1";
const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/sbx/networkpolicies";
const POLICY: &str = "/apis/networking.k8s.io/v1/namespaces/sbx/networkpolicies/blaze-b1";
const SERVICES: &str = "/api/v1/namespaces/sbx/services";
const SERVICE: &str = "/api/v1/namespaces/sbx/services/blaze-b1";
const PODS: &str = "/api/v1/namespaces/sbx/pods";
const POD_NAME: &str = "blaze-b1-x7k2p";
const SOURCE_URL: &str = "http://10.20.0.5:9000/sources/b1.tar.gz?X-Amz-Signature=s1";

// ---------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

/// `(apiGroup, resource, verb)`: a request as RBAC authorizes it.
type Permission = (String, String, String);

/// How the API server's authorizer sees a request; `None` for anything that
/// is not a namespaced request in [`NS`] (the driver's Role grants nothing
/// else). Paths follow the API conventions: `/api/v1/…` is the core group,
/// `/apis/<group>/<version>/…` the others; a subresource is `pods/log`.
fn permission(call: &Call) -> Option<Permission> {
    let segments: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let ["namespaces", namespace, resource, named @ ..] = rest else { return None };
    if *namespace != NS {
        return None;
    }
    let (resource, named) = match named {
        [] => ((*resource).to_owned(), false),
        [_name] => ((*resource).to_owned(), true),
        [_name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => return None,
    };
    let watch = call.query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (call.method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned()))
}

fn declared_permissions() -> BTreeSet<Permission> {
    API_PERMISSIONS
        .iter()
        .flat_map(|(group, resource, verbs)| verbs.iter().map(|verb| ((*group).to_owned(), (*resource).to_owned(), (*verb).to_owned())))
        .collect()
}

fn permitted(call: &Call) -> bool {
    permission(call).is_some_and(|p| declared_permissions().contains(&p))
}

enum Reply {
    Json(u16, Value),
    Text(String),
    /// Never answer (a watch with nothing to say).
    Hang,
}

/// The scripted state of the cluster.
#[derive(Default)]
struct Cluster {
    /// Statuses returned by successive GETs of the Job (the last repeats);
    /// `Null`: 404, a string: 500 with that reason.
    job_gets: VecDeque<Value>,
    /// Successive watch responses (newline-separated events); once they
    /// are used up, watches hang.
    watches: VecDeque<String>,
    pod: Option<Value>,
    log: String,
    fetch_log: String,
    baseline_exists: bool,
    forbid_run_policy: bool,
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason })
}

fn job_object(status: Value) -> Value {
    json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "blaze-b1", "namespace": NS, "resourceVersion": "7" }, "status": status })
}

fn event(kind: &str, object: Value) -> String {
    format!("{}\n", json!({ "type": kind, "object": object }))
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({ "conditions": [{ "type": kind, "status": "True", "reason": reason, "message": message }] })
}

impl Cluster {
    fn answer(&mut self, call: &Call) -> Reply {
        let created = |body: &Value| {
            let mut object = body.clone();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            object["metadata"]["uid"] = json!(format!("uid-{name}"));
            object["metadata"]["resourceVersion"] = json!("1");
            Reply::Json(201, object)
        };
        match (call.method.as_str(), call.path.as_str()) {
            ("POST", POLICIES) if call.body["metadata"]["name"] == "blaze-sandbox-baseline" && self.baseline_exists => {
                Reply::Json(409, status(409, "AlreadyExists"))
            }
            ("POST", POLICIES) if call.body["metadata"]["name"] == "blaze-b1" && self.forbid_run_policy => {
                Reply::Json(403, status(403, "Forbidden"))
            }
            ("POST", POLICIES | JOBS | SERVICES) => created(&call.body),
            ("PATCH", path) if path.starts_with(&format!("{JOBS}/")) => Reply::Json(200, job_object(json!({}))),
            ("GET", JOBS) if call.query.get("watch").is_some_and(|w| w == "true") => match self.watches.pop_front() {
                Some(events) => Reply::Text(events),
                None => Reply::Hang,
            },
            ("GET", JOB) => {
                let next = if self.job_gets.len() > 1 { self.job_gets.pop_front() } else { self.job_gets.front().cloned() };
                match next.unwrap_or(json!({})) {
                    Value::Null => Reply::Json(404, status(404, "NotFound")),
                    Value::String(broken) => Reply::Json(500, status(500, &broken)),
                    job_status => Reply::Json(200, job_object(job_status)),
                }
            }
            ("GET", PODS) => Reply::Json(
                200,
                json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": self.pod.iter().cloned().collect::<Vec<_>>() }),
            ),
            ("GET", path) if path == format!("{PODS}/{POD_NAME}/log") => match call.query.get("container").map(String::as_str) {
                Some("run") => Reply::Text(self.log.clone()),
                _ => Reply::Text(self.fetch_log.clone()),
            },
            ("DELETE", _) => Reply::Json(200, json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" })),
            _ => Reply::Json(404, status(404, "NotFound")),
        }
    }
}

/// Records every request; answers from a [`Cluster`].
struct FakeApi {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeApi {
    fn start(mut cluster: Cluster) -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        tokio::spawn(async move {
            let mut hanging = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let url = reqwest::Url::parse(&format!("http://api{}", parts.uri)).expect("request URI");
                let call = Call {
                    method: parts.method.to_string(),
                    path: url.path().to_owned(),
                    query: url.query_pairs().into_owned().collect(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                // Like an API server bound to the driver's Role: anything
                // outside API_PERMISSIONS is forbidden (and fails the test
                // when the FakeApi is dropped, should the driver swallow it).
                let reply = if permitted(&call) { cluster.answer(&call) } else { Reply::Json(403, status(403, "Forbidden")) };
                recorded.lock().unwrap().push(call);
                let (code, bytes) = match reply {
                    Reply::Json(code, value) => (code, serde_json::to_vec(&value).unwrap()),
                    Reply::Text(text) => (200, text.into_bytes()),
                    Reply::Hang => {
                        hanging.push(send);
                        continue;
                    }
                };
                send.send_response(Response::builder().status(code).body(Body::from(bytes)).unwrap());
            }
        });
        (Client::new(service, "default"), FakeApi { calls })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn find(&self, method: &str, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method && c.path == path).collect()
    }

    /// The body of the one `method` request to `path` naming `name`.
    fn body(&self, method: &str, path: &str, name: &str) -> Value {
        let mut found = self.find(method, path).into_iter().filter(|c| c.body["metadata"]["name"] == name);
        let call = found.next().unwrap_or_else(|| panic!("no {method} {path} for {name}: {:#?}", self.calls()));
        assert!(found.next().is_none(), "one {method} {path} for {name}");
        call.body
    }

    fn requests(&self) -> Vec<String> {
        self.calls().iter().map(|c| format!("{} {}", c.method, c.path)).collect()
    }
}

impl Drop for FakeApi {
    /// Every test's requests stay within API_PERMISSIONS, even those whose
    /// failure the driver only logs (deletes, pod polling, logs).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let forbidden: Vec<String> =
            self.calls().iter().filter(|c| !permitted(c)).map(|c| format!("{} {} {:?}", c.method, c.path, c.query)).collect();
        assert!(forbidden.is_empty(), "requests outside API_PERMISSIONS: {forbidden:#?}");
    }
}

// ---------------------------------------------------------------------------
// Specs and helpers
// ---------------------------------------------------------------------------

fn config() -> KubeConfig {
    let mut config = KubeConfig::new(NS, EgressTarget { peer: Peer::Cidr("10.20.0.0/16".into()), port: 9000 });
    config.runtime_class = Some("gvisor".into());
    config.registry_proxy = Some(EgressTarget {
        peer: Peer::Pods { namespaces: None, pods: BTreeMap::from([("app.kubernetes.io/name".into(), "registry-proxy".into())]) },
        port: 4873,
    });
    config.serve_from = Some(Peer::Pods {
        namespaces: Some(BTreeMap::from([("kubernetes.io/metadata.name".into(), "blaze".into())])),
        pods: BTreeMap::from([("app.kubernetes.io/component".into(), "edge".into())]),
    });
    config.pod_poll_interval = Duration::from_millis(10);
    config.log_drain_timeout = Duration::from_secs(2);
    config
}

fn spec() -> RunSpec {
    RunSpec {
        id: "b1".into(),
        kind: "build".into(),
        labels: BTreeMap::from([("org".into(), "Acme Inc".into()), ("app".into(), "app-7".into())]),
        source: Source::Tarball(SOURCE_URL.into()),
        command: vec!["npm".into(), "run".into(), "build".into()],
        env: BTreeMap::from([("NODE_ENV".into(), "production".into())]),
        limits: Limits { memory_mb: 1024, pids: 256, cpu_millis: 1500, disk_mb: 2048, deadline: Duration::from_secs(600) },
        network: Network::None,
        serve_port: None,
        collect: None,
    }
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/managed-by": "blaze",
        "blaze.dev/run": "b1",
        "blaze.dev/kind": "build",
        "blaze.dev/org": "Acme-Inc",
        "blaze.dev/app": "app-7",
    })
}

fn owner() -> Value {
    json!([{ "apiVersion": "batch/v1", "kind": "Job", "name": "blaze-b1", "uid": "uid-blaze-b1" }])
}

/// A pod whose `fetch-source` and `run` containers are in these states.
fn pod(fetch_state: Value, run_state: Value) -> Value {
    let status =
        |name: &str, state: &Value| json!({ "name": name, "image": "", "imageID": "", "ready": false, "restartCount": 0, "state": state });
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": POD_NAME, "namespace": NS, "creationTimestamp": "2026-11-26T10:00:00Z", "labels": { "blaze.dev/run": "b1" } },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "run" }] },
        "status": {
            "phase": "Running",
            "conditions": [{ "type": "PodScheduled", "status": "True" }],
            "initContainerStatuses": [status("fetch-source", &fetch_state)],
            "containerStatuses": [status("run", &run_state)],
        },
    })
}

fn fetched() -> Value {
    json!({ "terminated": { "exitCode": 0, "reason": "Completed" } })
}

async fn start(cluster: Cluster, spec: RunSpec) -> (Sandbox, FakeApi) {
    let (client, api) = FakeApi::start(cluster);
    let sandbox = KubeDriver::new(client, config()).start(spec).await.expect("the run starts");
    (sandbox, api)
}

/// Wait for the end, then read the log to its end.
async fn finish(sandbox: &mut Sandbox) -> (Exit, Vec<LogLine>) {
    let exit = tokio::time::timeout(Duration::from_secs(10), sandbox.wait()).await.expect("the run ends");
    let mut lines = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(5), sandbox.logs.recv()).await.expect("the log closes") {
        lines.push(line);
    }
    (exit, lines)
}

fn line(stream: LogStream, text: &str) -> LogLine {
    LogLine { stream, line: text.into() }
}

fn env_of(container: &Value) -> BTreeMap<String, String> {
    container["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into())).collect()
}

// ---------------------------------------------------------------------------
// The objects
// ---------------------------------------------------------------------------

#[tokio::test]
async fn job_is_created_suspended_non_root_read_only_and_limited() {
    let (_sandbox, api) = start(Cluster::default(), spec()).await;
    let security = json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
    });
    let resources = json!({
        "requests": { "cpu": "1500m", "memory": "1024Mi", "ephemeral-storage": "2048Mi" },
        "limits": { "cpu": "1500m", "memory": "1024Mi", "ephemeral-storage": "2048Mi" },
    });
    let mounts = json!([{ "name": "work", "mountPath": "/work" }, { "name": "tmp", "mountPath": "/tmp" }]);
    let expected = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "blaze-b1", "labels": labels() },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 300,
            "suspend": true,
            "template": {
                "metadata": { "labels": labels() },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "runtimeClassName": "gvisor",
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "volumes": [
                        { "name": "work", "emptyDir": { "sizeLimit": "2048Mi" } },
                        { "name": "tmp", "emptyDir": { "sizeLimit": "2048Mi" } },
                    ],
                    "initContainers": [{
                        "name": "fetch-source",
                        "image": "curlimages/curl:8.10.1",
                        "command": ["/bin/sh", "-c", FETCH_SCRIPT],
                        "env": [
                            { "name": "HOME", "value": "/tmp" },
                            { "name": "TMPDIR", "value": "/tmp" },
                            { "name": "BLAZE_SOURCE_URL", "value": SOURCE_URL },
                        ],
                        "workingDir": "/work",
                        "resources": resources,
                        "securityContext": security,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": mounts,
                    }],
                    "containers": [{
                        "name": "run",
                        "image": "node:20-bookworm-slim",
                        "command": ["npm", "run", "build"],
                        "env": [
                            { "name": "CI", "value": "1" },
                            { "name": "HOME", "value": "/tmp" },
                            { "name": "LANG", "value": "C.UTF-8" },
                            { "name": "NODE_ENV", "value": "production" },
                            { "name": "TMPDIR", "value": "/tmp" },
                            { "name": "npm_config_update_notifier", "value": "false" },
                        ],
                        "workingDir": "/work",
                        "resources": resources,
                        "securityContext": security,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": mounts,
                    }],
                },
            },
        },
    });
    assert_eq!(api.body("POST", JOBS, "blaze-b1"), expected);
    assert!(!FETCH_SCRIPT.contains("10.20.0.5"), "the source URL is passed in the environment only");
}

#[tokio::test]
async fn objects_are_fenced_before_the_job_is_resumed() {
    let (_sandbox, api) = start(Cluster::default(), RunSpec { serve_port: Some(5173), ..spec() }).await;
    assert_eq!(
        api.requests()[..5],
        [
            format!("POST {POLICIES}"),
            format!("POST {JOBS}"),
            format!("POST {POLICIES}"),
            format!("POST {SERVICES}"),
            format!("PATCH {JOB}")
        ]
    );
    assert_eq!(api.find("PATCH", JOB)[0].body, json!({ "spec": { "suspend": false } }));
    assert_eq!(
        api.body("POST", POLICIES, "blaze-sandbox-baseline"),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": "blaze-sandbox-baseline", "labels": { "app.kubernetes.io/managed-by": "blaze" } },
            "spec": {
                "podSelector": { "matchExpressions": [{ "key": "blaze.dev/run", "operator": "Exists" }] },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [],
            },
        })
    );
}

#[tokio::test]
async fn offline_run_may_reach_only_the_object_store_without_dns() {
    let (_sandbox, api) = start(Cluster::default(), spec()).await;
    assert_eq!(
        api.body("POST", POLICIES, "blaze-b1"),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": "blaze-b1", "labels": labels(), "ownerReferences": owner() },
            "spec": {
                "podSelector": { "matchLabels": { "blaze.dev/run": "b1" } },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [{ "to": [{ "ipBlock": { "cidr": "10.20.0.0/16" } }], "ports": [{ "protocol": "TCP", "port": 9000 }] }],
            },
        })
    );
    assert!(api.find("POST", SERVICES).is_empty(), "no serve_port, no Service");
}

#[tokio::test]
async fn install_run_may_reach_the_registry_proxy_and_dns() {
    let registry = "http://registry-proxy.blaze.svc:4873";
    let (_sandbox, api) = start(Cluster::default(), RunSpec { network: Network::Registry(registry.into()), ..spec() }).await;
    let policy = api.body("POST", POLICIES, "blaze-b1");
    assert_eq!(
        policy["spec"]["egress"],
        json!([
            { "to": [{ "ipBlock": { "cidr": "10.20.0.0/16" } }], "ports": [{ "protocol": "TCP", "port": 9000 }] },
            {
                "to": [{ "podSelector": { "matchLabels": { "app.kubernetes.io/name": "registry-proxy" } } }],
                "ports": [{ "protocol": "TCP", "port": 4873 }],
            },
            {
                "to": [{
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
                    "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
                }],
                "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
            },
        ])
    );
    assert_eq!(policy["spec"]["ingress"], json!([]));
    let job = api.body("POST", JOBS, "blaze-b1");
    assert_eq!(env_of(&job["spec"]["template"]["spec"]["containers"][0])["npm_config_registry"], registry);
}

#[tokio::test]
async fn served_run_gets_a_service_reachable_from_the_edge_only() {
    let (sandbox, api) = start(Cluster::default(), RunSpec { serve_port: Some(5173), ..spec() }).await;
    assert_eq!(sandbox.endpoint, Some(Endpoint::Tcp("blaze-b1.sbx.svc:5173".into())));
    assert_eq!(
        api.body("POST", SERVICES, "blaze-b1"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": "blaze-b1", "labels": labels(), "ownerReferences": owner() },
            "spec": {
                "type": "ClusterIP",
                "selector": { "blaze.dev/run": "b1" },
                "ports": [{ "name": "serve", "protocol": "TCP", "port": 5173, "targetPort": 5173 }],
            },
        })
    );
    assert_eq!(
        api.body("POST", POLICIES, "blaze-b1")["spec"]["ingress"],
        json!([{
            "from": [{
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "blaze" } },
                "podSelector": { "matchLabels": { "app.kubernetes.io/component": "edge" } },
            }],
            "ports": [{ "protocol": "TCP", "port": 5173 }],
        }])
    );
    let job = api.body("POST", JOBS, "blaze-b1");
    assert_eq!(env_of(&job["spec"]["template"]["spec"]["containers"][0])["BLAZE_SERVE_PORT"], "5173");
}

#[tokio::test]
async fn collecting_wraps_the_command_and_passes_urls_in_the_environment() {
    let put_url = "http://10.20.0.5:9000/outputs/b1.tar.gz?X-Amz-Signature=s2";
    let collect = Collect { path: "dist".into(), put_url: put_url.into() };
    let (_sandbox, api) = start(Cluster::default(), RunSpec { collect: Some(collect), ..spec() }).await;
    let job = api.body("POST", JOBS, "blaze-b1");
    let run = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(run["command"], json!(["/bin/sh", "-c", COLLECT_SCRIPT, "blaze-run"]));
    assert_eq!(run["args"], json!(["npm", "run", "build"]));
    let env = env_of(run);
    assert_eq!(env["BLAZE_COLLECT_PATH"], "dist");
    assert_eq!(env["BLAZE_COLLECT_URL"], put_url);
    assert!(!COLLECT_SCRIPT.contains("dist") && !COLLECT_SCRIPT.contains("http:"));
}

#[tokio::test]
async fn offline_run_pins_the_object_store_host() {
    let source = Source::Tarball("http://localhost:9000/sources/b1.tar.gz".into());
    let (_sandbox, api) = start(Cluster::default(), RunSpec { source, ..spec() }).await;
    let job = api.body("POST", JOBS, "blaze-b1");
    let aliases = job["spec"]["template"]["spec"]["hostAliases"].as_array().expect("hostAliases").clone();
    assert!(aliases.contains(&json!({ "ip": "127.0.0.1", "hostnames": ["localhost"] })), "{aliases:?}");
}

#[tokio::test]
async fn baseline_policy_is_created_once_and_may_exist_already() {
    let (client, api) = FakeApi::start(Cluster { baseline_exists: true, ..Cluster::default() });
    let driver = KubeDriver::new(client, config());
    let _first = driver.start(spec()).await.expect("first run");
    let _second = driver.start(RunSpec { id: "b2".into(), ..spec() }).await.expect("second run");
    let baseline = api.find("POST", POLICIES).into_iter().filter(|c| c.body["metadata"]["name"] == "blaze-sandbox-baseline").count();
    assert_eq!(baseline, 1);
}

#[tokio::test]
async fn a_failed_start_removes_what_it_created() {
    let (client, api) = FakeApi::start(Cluster { forbid_run_policy: true, ..Cluster::default() });
    let err = KubeDriver::new(client, config()).start(spec()).await.err().expect("start fails");
    assert!(matches!(&err, SandboxError::Unavailable(m) if m.contains("creating the network policy")), "{err}");
    assert_eq!(api.find("DELETE", JOB)[0].body, json!({ "propagationPolicy": "Foreground" }));
    assert!(api.find("PATCH", JOB).is_empty(), "the job was never resumed");
}

#[tokio::test]
async fn the_driver_needs_exactly_the_permissions_it_declares() {
    // One run down every path: a served run whose pod starts and logs, then
    // is cancelled (the only time a Job is deleted).
    let cluster = Cluster { pod: Some(pod(fetched(), json!({ "running": {} }))), log: "ready\n".into(), ..Cluster::default() };
    let (mut sandbox, api) = start(cluster, RunSpec { serve_port: Some(5173), ..spec() }).await;
    let ready = line(LogStream::Stdout, "ready");
    while tokio::time::timeout(Duration::from_secs(5), sandbox.logs.recv()).await.expect("the log flows").expect("the log is open") != ready
    {
    }
    let watching = || api.find("GET", JOBS).iter().any(|c| c.query.contains_key("watch"));
    tokio::time::timeout(Duration::from_secs(5), async {
        while !watching() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the job is watched");
    sandbox.cancel();
    assert_eq!(finish(&mut sandbox).await.0, Exit::Cancelled);

    let used: BTreeSet<Permission> = api.calls().iter().map(|c| permission(c).expect("a namespaced request")).collect();
    assert_eq!(used, declared_permissions(), "API_PERMISSIONS is what the driver uses, no more, no less");
}

#[test]
fn requests_map_to_rbac_permissions() {
    let call = |method: &str, path: &str, query: &[(&str, &str)]| Call {
        method: method.into(),
        path: path.into(),
        query: query.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        body: Value::Null,
    };
    let p = |g: &str, r: &str, v: &str| Some((g.to_owned(), r.to_owned(), v.to_owned()));
    assert_eq!(permission(&call("POST", JOBS, &[])), p("batch", "jobs", "create"));
    assert_eq!(permission(&call("GET", JOBS, &[("watch", "true")])), p("batch", "jobs", "watch"));
    assert_eq!(permission(&call("GET", JOBS, &[])), p("batch", "jobs", "list"));
    assert_eq!(permission(&call("GET", JOB, &[])), p("batch", "jobs", "get"));
    assert_eq!(permission(&call("DELETE", POLICY, &[])), p("networking.k8s.io", "networkpolicies", "delete"));
    assert_eq!(permission(&call("GET", &format!("{PODS}/{POD_NAME}/log"), &[])), p("", "pods/log", "get"));
    assert_eq!(permission(&call("DELETE", SERVICES, &[])), p("", "services", "deletecollection"));
    assert_eq!(permission(&call("GET", "/api/v1/namespaces/default/pods", &[])), None, "another namespace");
    assert_eq!(permission(&call("GET", "/api/v1/nodes", &[])), None, "cluster-scoped");
    assert!(!permitted(&call("GET", JOBS, &[])), "jobs are never listed");
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn directory_source_is_rejected_before_any_api_call() {
    let (client, api) = FakeApi::start(Cluster::default());
    let spec = RunSpec { source: Source::Dir("/srv/projects/b1".into()), ..spec() };
    let err = KubeDriver::new(client, config()).start(spec).await.err().expect("rejected");
    assert!(matches!(&err, SandboxError::Spec(m) if m.contains("tarball")), "{err}");
    assert!(api.calls().is_empty());
}

#[tokio::test]
async fn invalid_specs_are_rejected_before_any_api_call() {
    let cases: Vec<(&str, RunSpec)> = vec![
        ("id", RunSpec { id: "B_1".into(), ..spec() }),
        ("command", RunSpec { command: vec![], ..spec() }),
        ("reserved label", RunSpec { labels: BTreeMap::from([("run".into(), "other".into())]), ..spec() }),
        ("reserved env", RunSpec { env: BTreeMap::from([("BLAZE_COLLECT_URL".into(), "http://evil".into())]), ..spec() }),
        ("env name", RunSpec { env: BTreeMap::from([("A=B".into(), "x".into())]), ..spec() }),
        ("source scheme", RunSpec { source: Source::Tarball("file:///etc/passwd".into()), ..spec() }),
        ("output path", RunSpec { collect: Some(Collect { path: "../x".into(), put_url: SOURCE_URL.into() }), ..spec() }),
        ("memory", RunSpec { limits: Limits { memory_mb: 0, ..Limits::default() }, ..spec() }),
        ("deadline", RunSpec { limits: Limits { deadline: Duration::from_millis(10), ..Limits::default() }, ..spec() }),
    ];
    let (client, api) = FakeApi::start(Cluster::default());
    let driver = KubeDriver::new(client, config());
    for (what, spec) in cases {
        let err = driver.start(spec).await.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(matches!(err, SandboxError::Spec(_)), "{what}: {err}");
    }
    let (client, _) = FakeApi::start(Cluster::default());
    let bare = KubeDriver::new(client, KubeConfig { registry_proxy: None, serve_from: None, ..config() });
    for (what, spec) in [
        ("registry", RunSpec { network: Network::Registry("http://registry".into()), ..spec() }),
        ("serve", RunSpec { serve_port: Some(3000), ..spec() }),
    ] {
        let err = bare.start(spec).await.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(matches!(err, SandboxError::Unavailable(_)), "{what}: {err}");
    }
    assert!(api.calls().is_empty());
}

// ---------------------------------------------------------------------------
// Watching to the end
// ---------------------------------------------------------------------------

#[tokio::test]
async fn complete_job_succeeds_with_its_log_and_releases_policy_and_service() {
    let cluster = Cluster {
        watches: VecDeque::from([[
            event("MODIFIED", job_object(json!({ "active": 1 }))),
            event("MODIFIED", job_object(condition("Complete", "CompletionsReached", ""))),
        ]
        .concat()]),
        pod: Some(pod(fetched(), json!({ "terminated": { "exitCode": 0, "reason": "Completed" } }))),
        log: "\u{1b}[1mvite v5.4.0\u{1b}[22m building for production...\r\n✓ built in 420ms\n".into(),
        ..Cluster::default()
    };
    let (mut sandbox, api) = start(cluster, RunSpec { serve_port: Some(5173), ..spec() }).await;
    let (exit, lines) = finish(&mut sandbox).await;
    assert_eq!(exit, Exit::Succeeded);
    assert_eq!(
        lines,
        [
            line(LogStream::System, &format!("pod {POD_NAME} scheduled on node-1")),
            line(LogStream::System, "source fetched"),
            line(LogStream::Stdout, "vite v5.4.0 building for production..."),
            line(LogStream::Stdout, "✓ built in 420ms"),
        ]
    );
    let watch = &api.find("GET", JOBS)[0];
    assert_eq!(watch.query["watch"], "true");
    assert_eq!(watch.query["fieldSelector"], "metadata.name=blaze-b1");
    let log = &api.find("GET", &format!("{PODS}/{POD_NAME}/log"))[0];
    assert_eq!((log.query["container"].as_str(), log.query["follow"].as_str()), ("run", "true"));
    assert_eq!(api.find("DELETE", POLICY).len(), 1);
    assert_eq!(api.find("DELETE", SERVICE).len(), 1);
    assert!(api.find("DELETE", JOB).is_empty(), "a finished job is left to its TTL");
}

#[tokio::test]
async fn deadline_exceeded_job_ends_deadline_exceeded() {
    let cluster = Cluster {
        watches: VecDeque::from([event(
            "MODIFIED",
            job_object(condition("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")),
        )]),
        ..Cluster::default()
    };
    let (mut sandbox, api) = start(cluster, spec()).await;
    let (exit, lines) = finish(&mut sandbox).await;
    assert_eq!(exit, Exit::DeadlineExceeded);
    assert_eq!(lines.last(), Some(&line(LogStream::System, "killed: deadline exceeded")));
    assert_eq!(api.find("DELETE", POLICY).len(), 1);
}

#[tokio::test]
async fn failed_job_reports_the_exit_code_and_last_output_line() {
    let run = json!({ "terminated": { "exitCode": 2, "reason": "Error", "message": "> vite build\nError: Cannot find module 'vite'\n" } });
    let cluster = Cluster {
        watches: VecDeque::from([event(
            "MODIFIED",
            job_object(condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
        )]),
        pod: Some(pod(fetched(), run)),
        log: "> vite build\nError: Cannot find module 'vite'\n".into(),
        ..Cluster::default()
    };
    let (mut sandbox, _api) = start(cluster, spec()).await;
    let (exit, lines) = finish(&mut sandbox).await;
    assert_eq!(exit, Exit::Failed { code: Some(2), message: "Error: Cannot find module 'vite'".into() });
    assert!(lines.contains(&line(LogStream::Stdout, "Error: Cannot find module 'vite'")));
    assert_eq!(lines.last(), Some(&line(LogStream::System, "exited with code 2: Error: Cannot find module 'vite'")));
}

#[tokio::test]
async fn oom_killed_container_ends_out_of_memory() {
    let cluster = Cluster {
        watches: VecDeque::from([event("MODIFIED", job_object(condition("Failed", "BackoffLimitExceeded", "")))]),
        pod: Some(pod(fetched(), json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled" } }))),
        ..Cluster::default()
    };
    let (mut sandbox, _api) = start(cluster, spec()).await;
    assert_eq!(finish(&mut sandbox).await.0, Exit::OutOfMemory);
}

#[tokio::test]
async fn failed_download_is_reported_with_curls_error() {
    let curl_error = "curl: (22) The requested URL returned error: 403";
    let cluster = Cluster {
        watches: VecDeque::from([event("MODIFIED", job_object(condition("Failed", "BackoffLimitExceeded", "")))]),
        pod: Some(pod(
            json!({ "terminated": { "exitCode": 22, "reason": "Error", "message": format!("{curl_error}\n") } }),
            json!({ "waiting": { "reason": "PodInitializing" } }),
        )),
        fetch_log: format!("{curl_error}\n"),
        ..Cluster::default()
    };
    let (mut sandbox, api) = start(cluster, spec()).await;
    let (exit, lines) = finish(&mut sandbox).await;
    assert_eq!(exit, Exit::Failed { code: Some(22), message: format!("fetching the source failed: {curl_error}") });
    assert!(lines.contains(&line(LogStream::System, &format!("fetch-source: {curl_error}"))), "{lines:?}");
    let log = &api.find("GET", &format!("{PODS}/{POD_NAME}/log"))[0];
    assert_eq!(log.query["container"], "fetch-source");
    assert!(!log.query.contains_key("follow"));
}

#[tokio::test]
async fn expired_watch_is_followed_by_a_fresh_get() {
    let expired = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version: 7 (42)" });
    let cluster = Cluster {
        job_gets: VecDeque::from([json!({ "active": 1 }), condition("Complete", "CompletionsReached", "")]),
        watches: VecDeque::from([event("ERROR", expired)]),
        ..Cluster::default()
    };
    let (mut sandbox, api) = start(cluster, spec()).await;
    assert_eq!(finish(&mut sandbox).await.0, Exit::Succeeded);
    assert_eq!(api.find("GET", JOB).len(), 2);
}

#[tokio::test]
async fn job_deleted_by_someone_else_fails_clearly() {
    let cluster = Cluster { watches: VecDeque::from([event("DELETED", job_object(json!({ "active": 1 })))]), ..Cluster::default() };
    let (mut sandbox, _api) = start(cluster, spec()).await;
    let gone = Exit::Failed { code: None, message: "the job was deleted before it finished".into() };
    assert_eq!(finish(&mut sandbox).await.0, gone);

    let cluster = Cluster { job_gets: VecDeque::from([Value::Null]), ..Cluster::default() };
    let (mut sandbox, _api) = start(cluster, spec()).await;
    assert_eq!(finish(&mut sandbox).await.0, gone);
}

#[tokio::test]
async fn api_errors_and_silent_watches_are_retried() {
    let cluster = Cluster {
        job_gets: VecDeque::from([json!("InternalError"), json!({ "active": 1 }), condition("Complete", "CompletionsReached", "")]),
        watches: VecDeque::from([String::new()]),
        ..Cluster::default()
    };
    let (mut sandbox, api) = start(cluster, spec()).await;
    assert_eq!(finish(&mut sandbox).await.0, Exit::Succeeded);
    assert_eq!(api.find("GET", JOB).len(), 3);
}

#[tokio::test]
async fn a_job_kubernetes_does_not_stop_at_its_deadline_is_deleted() {
    let (client, api) = FakeApi::start(Cluster::default());
    let config = KubeConfig { deadline_grace: Duration::from_millis(50), ..config() };
    let spec = RunSpec { limits: Limits { deadline: Duration::from_secs(1), ..spec().limits }, ..spec() };
    let mut sandbox = KubeDriver::new(client, config).start(spec).await.expect("started");
    assert_eq!(finish(&mut sandbox).await.0, Exit::DeadlineExceeded);
    assert_eq!(api.find("DELETE", JOB)[0].body, json!({ "propagationPolicy": "Foreground" }));
}

#[tokio::test]
async fn cancel_deletes_the_job_in_the_foreground() {
    let cluster =
        Cluster { pod: Some(pod(json!({ "running": {} }), json!({ "waiting": { "reason": "PodInitializing" } }))), ..Cluster::default() };
    let (mut sandbox, api) = start(cluster, RunSpec { serve_port: Some(5173), ..spec() }).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sandbox.exited(), None);
    sandbox.cancel();
    let (exit, lines) = finish(&mut sandbox).await;
    assert_eq!(exit, Exit::Cancelled);
    assert_eq!(lines.last(), Some(&line(LogStream::System, "cancelled")));
    let deletes: Vec<_> = api.calls().into_iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(deletes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), [JOB, SERVICE, POLICY], "the job goes first");
    assert_eq!(deletes[0].body, json!({ "propagationPolicy": "Foreground" }));
}

#[tokio::test]
async fn stuck_containers_are_reported() {
    let cluster = Cluster {
        pod: Some(pod(
            json!({ "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"curlimages/curl:8.10.1\"" } }),
            json!({ "waiting": { "reason": "PodInitializing" } }),
        )),
        ..Cluster::default()
    };
    let (mut sandbox, _api) = start(cluster, spec()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sandbox.cancel();
    let (_, lines) = finish(&mut sandbox).await;
    let stuck = line(LogStream::System, "fetch-source waiting: ImagePullBackOff Back-off pulling image \"curlimages/curl:8.10.1\"");
    assert_eq!(lines.iter().filter(|l| **l == stuck).count(), 1, "reported once: {lines:?}");
}

// ---------------------------------------------------------------------------
// The pod's scripts, run by /bin/sh with fake tools
// ---------------------------------------------------------------------------

/// A directory with `sh`, `tar`, `gzip` and the few tools the scripts use,
/// plus fake `curl` (and `node`) that record their arguments and copy files
/// like the real ones would.
struct Toolbox {
    dir: tempfile::TempDir,
}

impl Toolbox {
    fn new(fakes: &[&str]) -> Toolbox {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["sh", "tar", "gzip", "cp", "rm", "mkdir", "basename"] {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap()).map(|d| d.join(tool)).find(|p| p.exists());
            std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{tool} on PATH")), bin.join(tool)).unwrap();
        }
        let fake = r#"#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DIR/$(basename "$0")-args"
if [ "${FAKE_EXIT:-0}" != 0 ]; then echo "curl: (22) The requested URL returned error: 403" >&2; exit "$FAKE_EXIT"; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --output) cp "$FAKE_DIR/source.tar.gz" "$2"; shift ;;
    --upload-file) cp "$2" "$FAKE_DIR/uploaded.tar.gz"; shift ;;
    -e) cp "$3" "$FAKE_DIR/uploaded.tar.gz"; shift ;;
  esac
  shift
done
"#;
        for name in fakes {
            let path = bin.join(name);
            std::fs::write(&path, fake).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        for sub in ["work", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Toolbox { dir }
    }

    fn path(&self, sub: &str) -> std::path::PathBuf {
        self.dir.path().join(sub)
    }

    /// Run `/bin/sh -c script argv0 args…` as the pod would: in the work
    /// directory, with this toolbox as the whole PATH.
    fn sh(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .args(args)
            .current_dir(self.path("work"))
            .env_clear()
            .env("PATH", self.path("bin"))
            .env("TMPDIR", self.path("tmp"))
            .env("FAKE_DIR", self.dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    fn recorded(&self, tool: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{tool}-args"))).unwrap().lines().map(str::to_owned).collect()
    }
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn entries(tar_gz: &Path) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(tar_gz).unwrap()));
    let mut out: Vec<(String, String)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut content = String::new();
            std::io::Read::read_to_string(&mut e, &mut content).unwrap();
            (e.path().unwrap().display().to_string(), content)
        })
        .filter(|(_, content)| !content.is_empty())
        .collect();
    out.sort();
    out
}

#[test]
fn fetch_script_downloads_from_the_environment_url_and_unpacks() {
    let tools = Toolbox::new(&["curl"]);
    std::fs::write(tools.dir.path().join("source.tar.gz"), tar_gz(&[("package.json", "{}"), ("src/main.ts", "x")])).unwrap();
    let out = tools.sh(FETCH_SCRIPT, &[], &[("BLAZE_SOURCE_URL", SOURCE_URL)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(tools.path("work/src/main.ts")).unwrap(), "x");
    assert_eq!(tools.recorded("curl").last().map(String::as_str), Some(SOURCE_URL));
    assert_eq!(std::fs::read_dir(tools.path("tmp")).unwrap().count(), 0, "the archive is removed");

    let failing = Toolbox::new(&["curl"]);
    let out = failing.sh(FETCH_SCRIPT, &[], &[("BLAZE_SOURCE_URL", SOURCE_URL), ("FAKE_EXIT", "22")]);
    assert_eq!(out.status.code(), Some(22));
    assert_eq!(std::fs::read_dir(failing.path("work")).unwrap().count(), 0);
}

#[test]
fn collect_script_runs_the_command_verbatim_then_uploads_its_output() {
    let tools = Toolbox::new(&["curl"]);
    let hostile = "$(touch pwned) \"q\" `touch pwned2`; rm -rf .";
    let command = ["sh", "-c", "mkdir -p dist && printf '%s' \"$1\" > dist/arg.txt", "inner", hostile];
    let url = "http://10.20.0.5:9000/outputs/b1.tar.gz?a=1&b=$(x)";
    let env = [("BLAZE_COLLECT_PATH", "dist"), ("BLAZE_COLLECT_URL", url)];
    let args: Vec<&str> = std::iter::once("blaze-run").chain(command).collect();
    let out = tools.sh(COLLECT_SCRIPT, &args, &env);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(tools.path("work/dist/arg.txt")).unwrap(), hostile);
    assert!(!tools.path("work/pwned").exists() && !tools.path("work/pwned2").exists());
    assert_eq!(tools.recorded("curl").last().map(String::as_str), Some(url));
    assert_eq!(entries(&tools.dir.path().join("uploaded.tar.gz")), [("./arg.txt".to_string(), hostile.to_string())]);

    // A failing command keeps its exit code and uploads nothing.
    let failing = Toolbox::new(&["curl"]);
    let out = failing.sh(COLLECT_SCRIPT, &["blaze-run", "sh", "-c", "exit 3"], &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(!failing.dir.path().join("uploaded.tar.gz").exists());
}

#[test]
fn collect_script_falls_back_to_node_and_explains_missing_tools() {
    let command = ["blaze-run", "sh", "-c", "mkdir -p dist && printf ok > dist/ok.txt"];
    let env = [("BLAZE_COLLECT_PATH", "dist"), ("BLAZE_COLLECT_URL", "http://10.20.0.5:9000/o")];
    let with_node = Toolbox::new(&["node"]);
    let out = with_node.sh(COLLECT_SCRIPT, &command, &env);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(entries(&with_node.dir.path().join("uploaded.tar.gz")), [("./ok.txt".to_string(), "ok".to_string())]);

    let bare = Toolbox::new(&[]);
    let out = bare.sh(COLLECT_SCRIPT, &command, &env);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(super::outcome::last_line(Some(&stderr)), "blaze: the image has neither curl nor node to upload the output", "{stderr}");

    let missing = Toolbox::new(&["curl"]);
    let out = missing.sh(COLLECT_SCRIPT, &["blaze-run", "sh", "-c", "true"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blaze: packing dist failed"));
}

// ---------------------------------------------------------------------------
// A real cluster
// ---------------------------------------------------------------------------

/// Runs when `BLAZE_TEST_KUBECONFIG` names a kubeconfig file. Also reads
/// `BLAZE_TEST_TARBALL_URL` (required then: a `.tar.gz` the cluster can
/// download), `BLAZE_TEST_NAMESPACE` (default `default`),
/// `BLAZE_TEST_OBJECT_STORAGE_CIDR` (default `0.0.0.0/0`) and
/// `BLAZE_TEST_IMAGE` (default: the driver's).
#[tokio::test]
async fn runs_a_command_on_a_real_cluster() {
    let Ok(kubeconfig) = std::env::var("BLAZE_TEST_KUBECONFIG") else {
        eprintln!("skipped: set BLAZE_TEST_KUBECONFIG (and BLAZE_TEST_TARBALL_URL) to run the kube driver against a real cluster");
        return;
    };
    let source = std::env::var("BLAZE_TEST_TARBALL_URL").expect("BLAZE_TEST_TARBALL_URL: a .tar.gz the cluster can download");
    let namespace = std::env::var("BLAZE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let cidr = std::env::var("BLAZE_TEST_OBJECT_STORAGE_CIDR").unwrap_or_else(|_| "0.0.0.0/0".into());
    let port = reqwest::Url::parse(&source).expect("tarball URL").port_or_known_default().expect("tarball URL port");

    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig).expect("reading BLAZE_TEST_KUBECONFIG");
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.expect("kubeconfig");
    let client = Client::try_from(client_config).expect("client");
    let mut config = KubeConfig::new(namespace, EgressTarget { peer: Peer::Cidr(cidr), port });
    if let Ok(image) = std::env::var("BLAZE_TEST_IMAGE") {
        config.image = image;
    }
    let driver = KubeDriver::new(client, config);

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let spec = RunSpec {
        id: format!("it-{:x}", nanos % (1 << 48)),
        kind: "test".into(),
        labels: BTreeMap::new(),
        source: Source::Tarball(source),
        command: vec!["sh".into(), "-c".into(), "echo hello from blaze; echo \"$GREETING\"; id -u".into()],
        env: BTreeMap::from([("GREETING".into(), "greetings from the env".into())]),
        limits: Limits { memory_mb: 256, pids: 128, cpu_millis: 250, disk_mb: 256, deadline: Duration::from_secs(240) },
        network: Network::None,
        serve_port: None,
        collect: None,
    };
    let mut sandbox = driver.start(spec).await.expect("start on the cluster");
    let exit = tokio::time::timeout(Duration::from_secs(600), sandbox.wait()).await.expect("the run ends");
    let mut lines = Vec::new();
    while let Some(line) = sandbox.logs.recv().await {
        lines.push(line.line);
    }
    assert_eq!(exit, Exit::Succeeded, "{lines:#?}");
    for expected in ["hello from blaze", "greetings from the env", "1000"] {
        assert!(lines.iter().any(|l| l == expected), "{expected:?} in {lines:#?}");
    }
}
