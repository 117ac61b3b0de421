//! RepositoryService: the git store behind gRPC. gix is blocking, so every
//! repository operation runs on a blocking thread. After every commit the
//! repository's bundle goes to object storage (disaster recovery).

use blaze_kit::{ApiError, ApiResult, timestamp};
use blaze_proto::artifacts::{self as pb, repository_service_server::RepositoryService};
use blaze_storage::{
    StorageError,
    git::{Author, Change, CommitOutcome},
    objects::org_key,
};
use bytes::Bytes;
use tonic::{Request, Response, Status};

use blaze_storage::templates;

use crate::{Deps, bundle_key};

pub struct Repositories {
    deps: Deps,
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

fn repo(r: Option<pb::RepoRef>) -> ApiResult<(String, i64)> {
    let r = r.ok_or_else(|| ApiError::invalid("repo is required"))?;
    if r.organization_id.is_empty() || r.app_id <= 0 {
        return Err(ApiError::invalid("repo needs an organization id and an app id"));
    }
    Ok((r.organization_id, r.app_id))
}

fn author(a: Option<pb::Author>) -> Author {
    match a {
        Some(a) if !a.name.is_empty() && !a.email.is_empty() => Author { name: a.name, email: a.email },
        _ => Author::default(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StorageError> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

impl Repositories {
    pub fn new(deps: Deps) -> Self {
        Repositories { deps }
    }

    /// Store the repository's bundle; a failure is logged, not fatal (the
    /// commit stands, and the next commit uploads a complete bundle again).
    async fn upload_bundle(&self, org: &str, app: i64) {
        let git = self.deps.git.clone();
        let (o, a) = (org.to_owned(), app);
        let bundle = match blocking(move || git.bundle(&o, a)).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(org, app, error = %e, "could not build repository bundle");
                return;
            }
        };
        if let Err(e) = self.deps.objects.put(&bundle_key(org, app), Bytes::from(bundle)).await {
            tracing::warn!(org, app, error = %e, "could not store repository bundle");
        }
    }
}

fn outcome(o: CommitOutcome) -> pb::CommitResponse {
    pb::CommitResponse {
        commit_hash: o.commit,
        parent_hash: o.parent.unwrap_or_default(),
        changed_paths: o.changed,
        unchanged: o.unchanged,
    }
}

#[tonic::async_trait]
impl RepositoryService for Repositories {
    async fn init_repo(&self, req: Request<pb::InitRepoRequest>) -> Rpc<pb::InitRepoResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let template = templates::get(&r.template_id).ok_or_else(|| ApiError::not_found("TEMPLATE_NOT_FOUND", "Template not found"))?;
            let message = if r.message.is_empty() { "Init Blaze app".to_owned() } else { r.message };
            let (git, files, author, o) = (self.deps.git.clone(), template.owned_files(), author(r.author), org.clone());
            let commit = blocking(move || git.init(&o, app, &files, &message, &author)).await?;
            self.upload_bundle(&org, app).await;
            Ok(pb::InitRepoResponse { commit_hash: commit })
        }
        .await)
    }

    async fn get_head(&self, req: Request<pb::GetHeadRequest>) -> Rpc<pb::GetHeadResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let head = blocking(move || match git.head(&org, app) {
                Ok(h) => Ok(h),
                Err(StorageError::RepoNotFound) => Ok(None),
                Err(e) => Err(e),
            })
            .await?;
            Ok(pb::GetHeadResponse { commit_hash: head.unwrap_or_default() })
        }
        .await)
    }

    async fn read_file(&self, req: Request<pb::ReadFileRequest>) -> Rpc<pb::ReadFileResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let (content, commit) = blocking(move || git.read_file(&org, app, &r.revision, &r.path)).await?;
            Ok(pb::ReadFileResponse { is_binary: blaze_storage::is_binary(&content), content, commit_hash: commit })
        }
        .await)
    }

    async fn list_files(&self, req: Request<pb::ListFilesRequest>) -> Rpc<pb::ListFilesResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let max = u64::try_from(r.max_content_bytes).unwrap_or(0);
            let (files, commit) = blocking(move || git.list_files(&org, app, &r.revision, r.include_content, max)).await?;
            Ok(pb::ListFilesResponse {
                files: files
                    .into_iter()
                    .map(|f| pb::FileEntry {
                        path: f.path,
                        size: f.size as i64,
                        is_binary: f.binary,
                        content: f.content.unwrap_or_default(),
                    })
                    .collect(),
                commit_hash: commit,
            })
        }
        .await)
    }

    async fn commit(&self, req: Request<pb::CommitRequest>) -> Rpc<pb::CommitResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let changes: Vec<Change> = r
                .changes
                .into_iter()
                .map(|c| match c.change {
                    Some(pb::file_change::Change::Write(w)) => Ok(Change::Write { path: w.path, content: w.content }),
                    Some(pb::file_change::Change::Delete(d)) => Ok(Change::Delete { path: d.path }),
                    Some(pb::file_change::Change::Rename(rn)) => Ok(Change::Rename { from: rn.from, to: rn.to }),
                    None => Err(ApiError::invalid("empty change")),
                })
                .collect::<ApiResult<_>>()?;
            if changes.is_empty() {
                return Err(ApiError::invalid("a commit needs at least one change"));
            }
            let message = if r.message.trim().is_empty() { "Update app".to_owned() } else { r.message };
            let (git, author, o) = (self.deps.git.clone(), author(r.author), org.clone());
            let expected = (!r.expected_parent.is_empty()).then_some(r.expected_parent);
            let result = blocking(move || git.commit(&o, app, &changes, &message, &author, expected.as_deref())).await?;
            if !result.unchanged {
                self.upload_bundle(&org, app).await;
            }
            Ok(outcome(result))
        }
        .await)
    }

    async fn list_versions(&self, req: Request<pb::ListVersionsRequest>) -> Rpc<pb::ListVersionsResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let limit = if r.page_size <= 0 { usize::MAX } else { r.page_size.min(1000) as usize };
            let after = (!r.page_token.is_empty()).then_some(r.page_token);
            let (commits, more) = blocking(move || match git.log(&org, app, after.as_deref(), limit) {
                Err(StorageError::RepoNotFound) => Ok((Vec::new(), false)),
                other => other,
            })
            .await?;
            let next = if more { commits.last().map(|c| c.oid.clone()).unwrap_or_default() } else { String::new() };
            Ok(pb::ListVersionsResponse {
                commits: commits
                    .into_iter()
                    .map(|c| pb::CommitInfo {
                        oid: c.oid,
                        message: c.message,
                        timestamp: c.timestamp,
                        author_name: c.author_name,
                        author_email: c.author_email,
                        parents: c.parents,
                    })
                    .collect(),
                next_page_token: next,
            })
        }
        .await)
    }

    async fn diff(&self, req: Request<pb::DiffRequest>) -> Rpc<pb::DiffResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let files = blocking(move || git.diff(&org, app, &r.from, &r.to)).await?;
            Ok(pb::DiffResponse {
                files: files
                    .into_iter()
                    .map(|d| pb::FileDiff {
                        status: d.status.into(),
                        path: d.path,
                        previous_path: d.previous_path.unwrap_or_default(),
                        is_binary: d.binary,
                        patch: d.patch,
                    })
                    .collect(),
            })
        }
        .await)
    }

    async fn revert(&self, req: Request<pb::RevertRequest>) -> Rpc<pb::RevertResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let message = if r.message.is_empty() { format!("Reverted all changes back to version {}", r.target) } else { r.message };
            let (git, author, o) = (self.deps.git.clone(), author(r.author), org.clone());
            let result = blocking(move || git.revert(&o, app, &r.target, &message, &author)).await?;
            if !result.unchanged {
                self.upload_bundle(&org, app).await;
            }
            Ok(pb::RevertResponse { commit_hash: result.commit, unchanged: result.unchanged })
        }
        .await)
    }

    async fn archive_commit(&self, req: Request<pb::ArchiveCommitRequest>) -> Rpc<pb::ArchiveCommitResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let git = self.deps.git.clone();
            let (o, rev) = (org.clone(), r.revision.clone());
            // resolve first so the key names the exact commit
            let head = blocking(move || git.list_files(&o, app, &rev, false, 0).map(|(_, c)| c)).await?;
            let key = org_key(&org, &format!("apps/{app}/archives/{head}.tar.gz")).map_err(ApiError::from)?;
            if !self.deps.objects.exists(&key).await? {
                let (git, o, h) = (self.deps.git.clone(), org.clone(), head.clone());
                let (tgz, _) = blocking(move || git.archive(&o, app, &h)).await?;
                self.deps.objects.put(&key, Bytes::from(tgz)).await?;
            }
            let (url, ttl) = self.deps.objects.presign(&key, http::Method::GET, None).await?;
            Ok(pb::ArchiveCommitResponse {
                commit_hash: head,
                key,
                url,
                expires_at: Some(timestamp(chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default())),
            })
        }
        .await)
    }

    async fn delete_repo(&self, req: Request<pb::DeleteRepoRequest>) -> Rpc<pb::DeleteRepoResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let (git, o) = (self.deps.git.clone(), org.clone());
            blocking(move || git.delete(&o, app)).await?;
            if r.delete_objects {
                let prefix = format!("orgs/{org}/apps/{app}/");
                self.deps.objects.delete_prefix(&prefix).await?;
            }
            Ok(pb::DeleteRepoResponse {})
        }
        .await)
    }

    async fn restore_repo(&self, req: Request<pb::RestoreRepoRequest>) -> Rpc<pb::RestoreRepoResponse> {
        let r = req.into_inner();
        ok(async {
            let (org, app) = repo(r.repo)?;
            let bundle = self.deps.objects.get(&bundle_key(&org, app)).await.map_err(|e| match e {
                StorageError::ObjectNotFound(_) => ApiError::not_found("BUNDLE_NOT_FOUND", "No bundle stored for this app"),
                other => other.into(),
            })?;
            let git = self.deps.git.clone();
            let (head, commits) = blocking(move || git.restore(&org, app, &bundle)).await?;
            tracing::info!(app, commits, "repository restored from its bundle");
            Ok(pb::RestoreRepoResponse { commit_hash: head, commits: commits as i32 })
        }
        .await)
    }
}
