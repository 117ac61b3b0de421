//! API fuzzing: schemathesis (PyPI, installed by `make tools`) generates
//! requests from the edge's own `/openapi.json` and checks every answer: no
//! 5xx, content types and bodies as documented. Bounded here
//! (`BLAZE_API_FUZZ_EXAMPLES` per operation, default 4); `make fuzz` runs it
//! longer (one worker: hypothesis is not thread-safe on Python 3.11). Routes that start previews or builds, and streams, are left out:
//! they are exercised by their own tests and would only add minutes.

use std::sync::Arc;

use blaze_testkit::{MeshOptions, TestMesh};
use serde_json::json;

use crate::controlplane::Client;

fn schemathesis() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/schemathesis");
    assert!(p.exists(), "schemathesis not found at {}: run `make tools`", p.display());
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let mesh =
        TestMesh::start_with(MeshOptions { configure: Some(Arc::new(|cfg| cfg.rate_limit.enabled = false)), ..Default::default() }).await;
    let alice = mesh.user("alice").await;
    let c = Client::new(&mesh, &alice.api_token);
    // real objects to aim at, so generated requests get past "not found"
    let created = c.ok("POST", "/orgs/me/workspaces/me/apps", Some(json!({"name": "Fuzz Target"}))).await;
    let (app, chat) = (created["app"]["id"].as_i64().unwrap(), created["chatId"].as_i64().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.orgId\" = \"{}\"\n\"path.workspaceId\" = \"{}\"\n\"path.appId\" = {app}\n\"path.chatId\" = {chat}\n",
            alice.org_id, alice.workspace_id
        ),
    )
    .unwrap();
    let examples = std::env::var("BLAZE_API_FUZZ_EXAMPLES").unwrap_or_else(|_| "4".into());
    let out = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", mesh.edge_url()))
        .args(["-H", &format!("Authorization: Bearer {}", alice.api_token)])
        .args(["--checks", "not_a_server_error,response_schema_conformance,content_type_conformance"])
        .args(["--max-examples", &examples])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--exclude-path-regex", "/stream|/events|/run$|/restart$|/deployments|/jobs"])
        .args(["--seed", "7", "--workers", "1", "--request-timeout", "20", "--no-color", "--generation-database", "none"])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    // it really ran: "N generated, N passed" with a meaningful N
    let summary = stdout.lines().find(|l| l.contains(" generated, ")).unwrap_or_default().trim().to_owned();
    let generated: usize = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(generated > 300, "too few cases: {summary:?}\n{stdout}");
    assert!(summary.contains(&format!("{generated} passed")), "{summary}");
}
