//! Where app code and objects live.
//!
//! * [`git`]: one bare repository per app (`<root>/<org>/<app>.git`) written
//!   through gix without a worktree: commits from change sets with
//!   compare-and-swap on the parent, log, diff, revert, archives, bundles.
//! * [`objects`]: S3 through the minio crate, everything under
//!   `orgs/<org>/…`; clients and sandboxes only ever get presigned URLs.
//! * [`paths`]: the path rules every file path must pass.
//! * [`templates`]: the app templates new repositories start from.

pub mod bundle;
pub mod git;
pub mod objects;
pub mod paths;
pub mod templates;

use blaze_kit::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid path {0}")]
    InvalidPath(String),
    #[error("repository not found")]
    RepoNotFound,
    #[error("repository already exists")]
    RepoExists,
    #[error("file not found: {0}")]
    FileNotFound(String),
    #[error("revision not found: {0}")]
    RevisionNotFound(String),
    #[error("main moved: expected parent {expected}, found {actual}")]
    Conflict { expected: String, actual: String },
    #[error("{what} is too large ({size} bytes, limit {limit})")]
    TooLarge { what: &'static str, size: u64, limit: u64 },
    #[error("object not found: {0}")]
    ObjectNotFound(String),
    #[error("invalid bundle: {0}")]
    InvalidBundle(String),
    #[error("object store unavailable: {0}")]
    ObjectStore(String),
    #[error("git error: {0}")]
    Git(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::InvalidPath(m) => ApiError::bad_request("INVALID_PATH", format!("Invalid file path {m}")),
            StorageError::RepoNotFound => ApiError::not_found("REPO_NOT_FOUND", "Repository not found"),
            StorageError::RepoExists => ApiError::already_exists("REPO_EXISTS", "Repository already exists"),
            StorageError::FileNotFound(p) => ApiError::not_found("FILE_NOT_FOUND", format!("File not found: {p}")),
            StorageError::RevisionNotFound(r) => ApiError::not_found("VERSION_NOT_FOUND", format!("Version not found: {r}")),
            c @ StorageError::Conflict { .. } => ApiError::conflict("COMMIT_CONFLICT", c.to_string()),
            t @ StorageError::TooLarge { what, .. } => ApiError::too_large(t.to_string()).with_reason(match what {
                "file" => "FILE_TOO_LARGE",
                "attachment" => "ATTACHMENT_TOO_LARGE",
                _ => "CHANGE_SET_TOO_LARGE",
            }),
            StorageError::ObjectNotFound(k) => ApiError::not_found("OBJECT_NOT_FOUND", format!("Object not found: {k}")),
            StorageError::InvalidBundle(m) => ApiError::precondition("INVALID_BUNDLE", m),
            StorageError::ObjectStore(m) => {
                tracing::warn!(error = %m, "object store error");
                ApiError::unavailable("Object storage unavailable")
            }
            StorageError::Git(m) => ApiError::internal(format!("git: {m}")),
            StorageError::Io(e) => ApiError::internal(format!("io: {e}")),
        }
    }
}

/// Size limits of what goes into a repository.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub file_bytes: u64,
    pub change_set_bytes: u64,
    pub attachment_bytes: u64,
}

impl From<&blaze_kit::config::GitConfig> for Limits {
    fn from(c: &blaze_kit::config::GitConfig) -> Self {
        Limits { file_bytes: c.max_file_bytes, change_set_bytes: c.max_change_set_bytes, attachment_bytes: c.max_attachment_bytes }
    }
}

/// Heuristic binary detection (as git does): a NUL byte early on, or not UTF-8.
pub fn is_binary(content: &[u8]) -> bool {
    content.iter().take(8000).any(|b| *b == 0) || std::str::from_utf8(content).is_err()
}
