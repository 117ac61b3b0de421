//! The generated client SDKs (`make sdk`) used the way their users use them:
//! a TypeScript program compiled with tsc against `sdk/ts` calls the edge
//! over gRPC-web and native gRPC, a Python program on `sdk/python` over
//! gRPC. The programs live in `tests/e2e/sdk/` and print JSON; a failed call
//! makes them exit non-zero.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use blaze::Role;
use blaze_testkit::{MeshOptions, TestMesh, TestUser};
use serde_json::Value;
use tokio::{
    process::Command,
    sync::{Mutex, MutexGuard},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Held while a test uses `sdk/`, so one regeneration can not pull it from
/// under another test.
static SDK: Mutex<()> = Mutex::const_new(());

async fn output(cmd: &mut Command, what: &str) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 5 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `make sdk`: regenerates only when proto/ or the generator setup is newer
/// than sdk/ (and installs the generators on first use).
async fn generated_sdk() -> MutexGuard<'static, ()> {
    let guard = SDK.lock().await;
    let mut make = Command::new("make");
    // Under `make test` cargo sits between us and that make: its jobserver
    // is not ours to join.
    make.arg("--no-print-directory").arg("sdk").current_dir(repo()).env_remove("MAKEFLAGS").env_remove("MFLAGS").env_remove("MAKELEVEL");
    output(&mut make, "`make sdk`").await;
    guard
}

/// The JSON object a client program printed last.
fn printed(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("client printed no JSON ({e}):\n{stdout}"))
}

async fn mesh() -> TestMesh {
    TestMesh::start_with(MeshOptions { roles: vec![Role::Identity, Role::ControlPlane, Role::Artifacts, Role::Edge], ..Default::default() })
        .await
}

/// What every client program reports for one transport: the caller's
/// organisation, the app it created (also in the list that followed) and
/// the status of a call without a token.
fn assert_calls(result: &Value, alice: &TestUser, app_name: &str, refused: &str) {
    assert_eq!(result["organizations"]["data"][0]["id"], alice.org_id.as_str(), "{result:#}");
    let app = &result["created"]["data"]["app"];
    assert_eq!(app["name"], app_name, "{result:#}");
    assert_eq!(app["workspaceId"], alice.workspace_id.as_str(), "{result:#}");
    let id = app["id"].as_str().unwrap_or_else(|| panic!("int64 ids are JSON strings in proto3 JSON: {app}"));
    let listed = result["apps"]["data"]["apps"].as_array().unwrap_or_else(|| panic!("no app list: {result:#}"));
    assert!(listed.iter().any(|a| a["id"] == id && a["name"] == app_name), "{app_name} not listed: {result:#}");
    assert_eq!(result["withoutToken"], refused, "{result:#}");
}

/// The apps the HTTP/JSON API lists for `user` (a view independent of the
/// SDK's own decoding).
async fn app_names(mesh: &TestMesh, user: &TestUser) -> Vec<String> {
    let list: Value = mesh
        .http()
        .get(mesh.scoped("/apps"))
        .bearer_auth(&user.api_token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]["apps"].as_array().unwrap_or_else(|| panic!("{list}")).iter().map(|a| a["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_sdk_compiles_and_calls_the_edge_over_grpc_web_and_grpc() {
    let _sdk = generated_sdk().await;
    let root = repo();
    let tools = root.join(".tools/node_modules/.bin");
    // The program sits inside the package, as a consumer's code would sit
    // next to an installed `@blaze/sdk`: it imports the package by name.
    let dir = root.join("sdk/ts/e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["client.ts", "tsconfig.json"] {
        std::fs::copy(root.join("tests/e2e/sdk").join(file), dir.join(file)).unwrap();
    }
    output(Command::new(tools.join("tsc")).arg("-p").arg(&dir), "tsc (the SDK client program)").await;

    let mesh = mesh().await;
    let alice = mesh.user("alice").await;
    let out = output(
        Command::new("node")
            .arg(dir.join("out/client.js"))
            .arg(mesh.edge_url())
            .arg(&alice.workspace_id)
            .env("BLAZE_TOKEN", &alice.api_token),
        "the TypeScript SDK client",
    )
    .await;
    let result = printed(&out);
    assert_calls(&result["grpcWeb"], &alice, "From the SDK (gRPC-web)", "Unauthenticated");
    assert_calls(&result["grpc"], &alice, "From the SDK (gRPC)", "Unauthenticated");
    let names = app_names(&mesh, &alice).await;
    assert!(names.contains(&"From the SDK (gRPC-web)".to_owned()) && names.contains(&"From the SDK (gRPC)".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_calls_the_edge_over_grpc() {
    let _sdk = generated_sdk().await;
    let root = repo();
    let mesh = mesh().await;
    let alice = mesh.user("alice").await;
    let edge = mesh.edge_url().trim_start_matches("http://").to_owned();
    let out = output(
        Command::new(root.join(".tools/venv/bin/python"))
            .arg(root.join("tests/e2e/sdk/client.py"))
            .arg(edge)
            .arg(&alice.workspace_id)
            .env("PYTHONPATH", root.join("sdk/python"))
            .env("BLAZE_TOKEN", &alice.api_token),
        "the Python SDK client",
    )
    .await;
    assert_calls(&printed(&out), &alice, "From the SDK (Python)", "UNAUTHENTICATED");
    assert!(app_names(&mesh, &alice).await.contains(&"From the SDK (Python)".to_owned()));
}
