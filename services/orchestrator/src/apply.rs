//! Applying a turn's tags as one commit through artifacts.
//!
//! The plan is built against the files at the current tip and committed with
//! compare-and-swap on that tip; when someone else committed in between
//! (another chat of the same app, a revert), the plan is rebuilt on the new
//! tip and tried again, so edits never land on a tree they were not checked
//! against. Within one process, applies to the same app queue up first, so
//! a burst of turns on one app commits one after the other instead of
//! racing for main; across replicas the retry (with jittered backoff)
//! settles the rarer races.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, LazyLock},
    time::Duration,
};

use blaze_kit::{ApiError, ApiResult, client::Intercepted};
use blaze_proto::artifacts::{self as art, object_service_client::ObjectServiceClient, repository_service_client::RepositoryServiceClient};
use blaze_tags::{Guardrails, Plan, Tag};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::context::SourceFile;

const CAS_ATTEMPTS: u32 = 5;

/// One queue per app being applied to in this process.
static APPLYING: LazyLock<parking_lot::Mutex<HashMap<(Uuid, i64), AppQueue>>> = LazyLock::new(Default::default);

type AppQueue = Arc<tokio::sync::Mutex<()>>;

async fn queue_for(org: Uuid, app: i64) -> tokio::sync::OwnedMutexGuard<()> {
    let queue = {
        let mut apps = APPLYING.lock();
        // Forget apps nobody is applying to (only the map holds their queue).
        apps.retain(|_, q| Arc::strong_count(q) > 1);
        apps.entry((org, app)).or_default().clone()
    };
    queue.lock_owned().await
}

/// What a proposal stores on its message so it can be applied later.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredPlan {
    pub version: u32,
    /// The model's full response; tags are re-read from it when applied.
    pub response: String,
    /// Upload ids (`BLAZE_ATTACHMENT_<i>`) → object keys.
    #[serde(default)]
    pub uploads: BTreeMap<String, String>,
}

pub fn repos(clients: &blaze_kit::client::ServiceClients) -> RepositoryServiceClient<Intercepted> {
    RepositoryServiceClient::new(clients.intercepted("artifacts")).max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES)
}

pub fn objects(clients: &blaze_kit::client::ServiceClients) -> ObjectServiceClient<Intercepted> {
    ObjectServiceClient::new(clients.intercepted("artifacts")).max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES)
}

pub fn repo_ref(org: Uuid, app: i64) -> art::RepoRef {
    art::RepoRef { organization_id: org.to_string(), app_id: app }
}

/// Every file of the app at `revision` (`""` = tip) with text content, and
/// the commit it came from.
pub async fn read_files(
    repos: &mut RepositoryServiceClient<Intercepted>,
    org: Uuid,
    app: i64,
    revision: &str,
) -> ApiResult<(Vec<SourceFile>, String)> {
    let resp = repos
        .list_files(art::ListFilesRequest {
            repo: Some(repo_ref(org, app)),
            revision: revision.to_owned(),
            include_content: true,
            max_content_bytes: 1_000 * 1024,
        })
        .await
        .map_err(|s| ApiError::from_status(&s))?
        .into_inner();
    let files = resp
        .files
        .into_iter()
        .map(|f| SourceFile { content: if f.is_binary { None } else { String::from_utf8(f.content).ok() }, path: f.path, size: f.size })
        .collect();
    Ok((files, resp.commit_hash))
}

/// The plan's view of the files: text content; binary files as empty text
/// so they can still be deleted or renamed.
pub fn file_map(files: &[SourceFile]) -> HashMap<String, String> {
    files.iter().map(|f| (f.path.clone(), f.content.clone().unwrap_or_default())).collect()
}

pub fn guardrails(cfg: &blaze_kit::config::ChatConfig) -> Guardrails {
    let mut g = Guardrails { max_file_bytes: cfg.max_file_bytes, max_turn_bytes: cfg.max_turn_bytes, ..Guardrails::default() };
    g.denied_packages.extend(cfg.package_deny_list.iter().cloned());
    g
}

/// `package.json` with `packages` added to `dependencies` (at `latest`
/// unless a version is given), or None when it can not be edited.
pub fn add_dependencies(package_json: &str, packages: &[String]) -> Option<String> {
    let mut doc: serde_json::Value = serde_json::from_str(package_json).ok()?;
    let deps = doc.as_object_mut()?.entry("dependencies").or_insert_with(|| serde_json::json!({}));
    let deps = deps.as_object_mut()?;
    for spec in packages {
        // `@scope/name@1.2` → (`@scope/name`, `1.2`)
        let (name, version) = match spec.rfind('@') {
            Some(i) if i > 0 => (&spec[..i], &spec[i + 1..]),
            _ => (spec.as_str(), "latest"),
        };
        deps.insert(name.to_owned(), serde_json::Value::String(version.to_owned()));
    }
    let mut out = serde_json::to_string_pretty(&doc).ok()?;
    out.push('\n');
    Some(out)
}

pub fn commit_message(plan: &Plan) -> String {
    let title = plan.title.clone().unwrap_or_else(|| "Changes from chat".to_owned());
    let mut parts = Vec::new();
    let count = |n: usize, what: &str| format!("{what} {n} file{}", if n == 1 { "" } else { "s" });
    if !plan.writes.is_empty() {
        parts.push(count(plan.writes.len(), "wrote"));
    }
    if !plan.renames.is_empty() {
        parts.push(count(plan.renames.len(), "renamed"));
    }
    if !plan.deletes.is_empty() {
        parts.push(count(plan.deletes.len(), "deleted"));
    }
    if !plan.packages.is_empty() {
        parts.push(format!("added {} package{}", plan.packages.len(), if plan.packages.len() == 1 { "" } else { "s" }));
    }
    format!("[blaze] {title} - {}", parts.join(", "))
}

#[derive(Debug, Default)]
pub struct Applied {
    pub plan: Plan,
    /// None when nothing changed.
    pub commit_hash: Option<String>,
    /// A dependency edit that could not be made (no or invalid package.json).
    pub dependency_error: Option<String>,
}

/// Install `packages` on `commit` in a sandbox (an execution job): the
/// resulting `package.json` and `package-lock.json`, or None when execution
/// is unavailable or the install failed (the caller falls back to editing
/// `package.json`).
async fn install(
    clients: &blaze_kit::client::ServiceClients,
    scope: (Uuid, Uuid),
    app: i64,
    commit: &str,
    packages: &[String],
) -> Option<(String, String)> {
    use blaze_proto::execution::{SubmitJobRequest, job_service_client::JobServiceClient};
    let mut jobs = JobServiceClient::new(clients.intercepted("execution"));
    let (org, ws) = scope;
    let req = SubmitJobRequest {
        organization_id: org.to_string(),
        workspace_id: ws.to_string(),
        app_id: app,
        kind: "install".into(),
        commit_hash: commit.to_owned(),
        packages: packages.to_vec(),
        requested_by_user_id: String::new(),
        wait: true,
    };
    let job = match jobs.submit_job(req).await {
        Ok(r) => r.into_inner().job?,
        Err(e) => {
            tracing::warn!(error = %e.message(), "the install job could not run; editing package.json instead");
            return None;
        }
    };
    if job.state != "succeeded" {
        tracing::warn!(state = %job.state, error = ?job.error, "the install job did not succeed");
        return None;
    }
    let package_json = job.result.get("package.json").filter(|s| !s.is_empty())?.clone();
    Some((package_json, job.result.get("package-lock.json").cloned().unwrap_or_default()))
}

/// Build the plan on the tip and commit it (CAS, rebuilt on conflict).
pub async fn apply(
    clients: &blaze_kit::client::ServiceClients,
    repos: &mut RepositoryServiceClient<Intercepted>,
    (org, ws): (Uuid, Uuid),
    app: i64,
    tags: &[Tag],
    guard: &Guardrails,
    uploads: &HashMap<String, Vec<u8>>,
) -> ApiResult<Applied> {
    let _turn = queue_for(org, app).await;
    let mut last_err = None;
    for attempt in 0..CAS_ATTEMPTS {
        if attempt > 0 {
            // Another replica won: back off a random share of a growing window.
            let window = 50u64 << attempt.min(5);
            tokio::time::sleep(Duration::from_millis(rand::random_range(window / 2..=window))).await;
        }
        let (files, tip) = read_files(repos, org, app, "").await?;
        let plan = blaze_tags::build(tags, &file_map(&files), guard);
        if plan.is_empty() {
            return Ok(Applied { plan, ..Default::default() });
        }
        let mut changes = Vec::new();
        use art::file_change::Change;
        for path in &plan.deletes {
            changes.push(art::FileChange { change: Some(Change::Delete(art::FileDelete { path: path.clone() })) });
        }
        for (from, to) in &plan.renames {
            changes.push(art::FileChange { change: Some(Change::Rename(art::FileRename { from: from.clone(), to: to.clone() })) });
        }
        let mut writes: BTreeMap<String, Vec<u8>> = plan
            .writes
            .iter()
            .map(|(path, content)| {
                let bytes = uploads.get(content.trim()).cloned().unwrap_or_else(|| content.clone().into_bytes());
                (path.clone(), bytes)
            })
            .collect();
        let mut dependency_error = None;
        let installed = if !plan.packages.is_empty() && !writes.contains_key("package.json") {
            install(clients, (org, ws), app, &tip, &plan.packages).await
        } else {
            None
        };
        if let Some((package_json, lock)) = installed {
            writes.insert("package.json".into(), package_json.into_bytes());
            if !lock.is_empty() {
                writes.insert("package-lock.json".into(), lock.into_bytes());
            }
        } else if !plan.packages.is_empty() {
            let current = writes
                .get("package.json")
                .and_then(|b| String::from_utf8(b.clone()).ok())
                .or_else(|| files.iter().find(|f| f.path == "package.json").and_then(|f| f.content.clone()));
            match current.as_deref().and_then(|pj| add_dependencies(pj, &plan.packages)) {
                Some(updated) => {
                    writes.insert("package.json".into(), updated.into_bytes());
                }
                None => dependency_error = Some("package.json is missing or not valid JSON; the packages were not added".to_owned()),
            }
        }
        for (path, content) in writes {
            changes.push(art::FileChange { change: Some(Change::Write(art::FileWrite { path, content })) });
        }
        let req = art::CommitRequest {
            repo: Some(repo_ref(org, app)),
            changes,
            message: commit_message(&plan),
            author: Some(crate::turn::author()),
            expected_parent: tip,
        };
        match repos.commit(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                let commit_hash = (!resp.unchanged).then_some(resp.commit_hash);
                return Ok(Applied { plan, commit_hash, dependency_error });
            }
            Err(s) if s.code() == tonic::Code::Aborted => {
                last_err = Some(ApiError::from_status(&s));
                continue;
            }
            Err(s) => return Err(ApiError::from_status(&s)),
        }
    }
    Err(last_err.unwrap_or_else(|| ApiError::conflict("CONCURRENT_CHANGE", "The app changed while applying; try again")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_added_to_package_json() {
        let pj = r#"{"name":"app","dependencies":{"react":"^19.0.0"}}"#;
        let out = add_dependencies(pj, &["nanoid".into(), "@scope/pkg@1.2.3".into()]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["dependencies"]["react"], "^19.0.0");
        assert_eq!(v["dependencies"]["nanoid"], "latest");
        assert_eq!(v["dependencies"]["@scope/pkg"], "1.2.3");
        assert!(add_dependencies("not json", &["x".into()]).is_none());
    }

    #[test]
    fn commit_messages_count_changes() {
        let mut plan = Plan { title: Some("Add login".into()), ..Default::default() };
        plan.writes.insert("a".into(), "1".into());
        plan.writes.insert("b".into(), "2".into());
        plan.deletes.push("c".into());
        plan.packages.push("zod".into());
        assert_eq!(commit_message(&plan), "[blaze] Add login - wrote 2 files, deleted 1 file, added 1 package");
    }
}
