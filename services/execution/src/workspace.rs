//! Project directories for sandboxes: the app's files at a commit, plus
//! `node_modules` hardlinked from a warm cache prepared once per template
//! version.
//!
//! The cache is installed with `npm ci` on the host, outside a sandbox: its
//! input is our own template's lockfile, never user code, and npm does not
//! run install scripts here. A run then gets `cp -al` of it (milliseconds,
//! no copy), and the sandbox may replace files in its own tree but not the
//! shared inodes (see blaze-sandbox's ownership hand-over).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use blaze_kit::{ApiError, ApiResult};
use blaze_proto::artifacts::{self as art, repository_service_client::RepositoryServiceClient};
use blaze_storage::templates;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Shared;

/// Files that decide which dependencies a project needs.
const MANIFESTS: [&str; 2] = ["package.json", "package-lock.json"];

fn manifest_hash(files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for name in MANIFESTS {
        h.update(name.as_bytes());
        if let Some((_, c)) = files.iter().find(|(p, _)| p == name) {
            h.update(c);
        }
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A prepared project: its directory and whether its dependencies are
/// exactly the template's (otherwise an install must run first).
pub struct Project {
    pub dir: PathBuf,
    pub deps_ready: bool,
}

impl Shared {
    /// Every file of the app at `commit`.
    pub async fn files_at(&self, org: Uuid, app: i64, commit: &str) -> ApiResult<(Vec<(String, Vec<u8>)>, String)> {
        let mut repos = RepositoryServiceClient::new(self.clients.intercepted("artifacts"))
            .max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES);
        let resp = repos
            .list_files(art::ListFilesRequest {
                repo: Some(art::RepoRef { organization_id: org.to_string(), app_id: app }),
                revision: commit.to_owned(),
                include_content: true,
                max_content_bytes: 32 * 1024 * 1024,
            })
            .await
            .map_err(|e| ApiError::from_status(&e))?
            .into_inner();
        Ok((resp.files.into_iter().map(|f| (f.path, f.content)).collect(), resp.commit_hash))
    }

    /// The warm `node_modules` of a template version, installed on first use.
    pub async fn template_deps(&self, template_id: &str) -> ApiResult<PathBuf> {
        let t =
            templates::get(template_id).or_else(|| templates::get(templates::DEFAULT)).ok_or_else(|| ApiError::internal("no template"))?;
        let files = t.owned_files();
        let key = format!("{}-{}", t.id, manifest_hash(&files));
        let root = self.cfg.sandbox.cache_root.join("deps");
        let dir = root.join(&key);
        if dir.join("node_modules/.package-lock.json").exists() {
            return Ok(dir);
        }
        let npm_cache = self.cfg.sandbox.cache_root.join("npm");
        let registry = self.cfg.sandbox.npm_registry.clone();
        let lock_path = root.join(format!("{key}.lock"));
        let ready = dir.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&root)?;
            // One installer per machine; others wait and reuse its result.
            let lock = std::fs::File::create(&lock_path)?;
            lock.lock()?;
            if dir.join("node_modules/.package-lock.json").exists() {
                return Ok(());
            }
            let staging = root.join(format!("{key}.staging-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging)?;
            for (path, content) in &files {
                if MANIFESTS.contains(&path.as_str()) || path == ".npmrc" {
                    std::fs::write(staging.join(path), content)?;
                }
            }
            let mut cmd = std::process::Command::new("npm");
            cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline", "--cache"])
                .arg(&npm_cache)
                .current_dir(&staging)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if !registry.is_empty() {
                cmd.env("npm_config_registry", &registry);
            }
            let out = cmd.output()?;
            if !out.status.success() {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(std::io::Error::other(format!("npm ci failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&staging, &dir)?;
            Ok(())
        })
        .await
        .map_err(ApiError::internal)?;
        result.map_err(|e| ApiError::unavailable(format!("preparing the template's dependencies: {e}")))?;
        Ok(ready)
    }

    /// A fresh directory with the app's files and, when the manifests match
    /// the template's, its dependencies.
    pub async fn prepare(&self, run_id: &str, template_id: &str, files: &[(String, Vec<u8>)]) -> ApiResult<Project> {
        let cache = self.template_deps(template_id).await?;
        let dir = self.cfg.sandbox.root.join(run_id).join("project");
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
        for (path, content) in files {
            let Some(full) = blaze_sandbox::local::safe_join(&dir, path) else { continue };
            if let Some(parent) = full.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(ApiError::internal)?;
            }
            tokio::fs::write(&full, content).await.map_err(ApiError::internal)?;
        }
        let template =
            templates::get(template_id).or_else(|| templates::get(templates::DEFAULT)).ok_or_else(|| ApiError::internal("no template"))?;
        let deps_ready = manifest_hash(files) == manifest_hash(&template.owned_files());
        // Even with other manifests, the template's packages are the likely
        // majority: link them, the install then only adds the difference.
        link_tree(&cache.join("node_modules"), &dir.join("node_modules")).await?;
        // npm rewrites its hidden lockfile in place: give the run its own copy
        // instead of a link to the cache's.
        let hidden = dir.join("node_modules/.package-lock.json");
        if let Ok(content) = tokio::fs::read(&hidden).await {
            let _ = tokio::fs::remove_file(&hidden).await;
            tokio::fs::write(&hidden, content).await.map_err(ApiError::internal)?;
        }
        Ok(Project { dir, deps_ready })
    }
}

/// `cp -al`: a directory tree of hardlinks (no data copied).
async fn link_tree(from: &Path, to: &Path) -> ApiResult<()> {
    let out =
        tokio::process::Command::new("cp").arg("-al").arg(from).arg(to).stdin(Stdio::null()).output().await.map_err(ApiError::internal)?;
    if !out.status.success() {
        return Err(ApiError::internal(format!("linking node_modules: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_decide_the_hash() {
        let a = vec![("package.json".to_owned(), b"{}".to_vec()), ("src/x.ts".to_owned(), b"1".to_vec())];
        let b = vec![("package.json".to_owned(), b"{}".to_vec()), ("src/x.ts".to_owned(), b"2".to_vec())];
        let c = vec![("package.json".to_owned(), b"{\"a\":1}".to_vec())];
        assert_eq!(manifest_hash(&a), manifest_hash(&b));
        assert_ne!(manifest_hash(&a), manifest_hash(&c));
    }
}
