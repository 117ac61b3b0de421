//! Sandboxes for untrusted work: installs, builds and dev servers of apps.
//!
//! One interface, [`SandboxDriver`], with two drivers:
//! * [`local`]: bubblewrap on this machine (dev, CI, single host): no
//!   network, no capabilities, a read-only root, only the project directory
//!   writable, cgroup v1 memory/pids/CPU limits, rlimits and a deadline; a
//!   dev server is reachable through a unix socket in the project directory.
//! * [`kube`]: one Kubernetes `batch/v1` Job per run (non-root, read-only
//!   root, no capabilities, seccomp, limits, deadline, TTL, deny-all
//!   NetworkPolicy), the source fetched by an init container from a
//!   presigned URL; a dev server is reachable through a Service.
//!
//! A run is started with a [`RunSpec`]; the returned [`Sandbox`] streams log
//! lines, exposes the dev server's [`Endpoint`], can be cancelled (the whole
//! process tree / the Job) and reports how it ended.

pub mod kube;
pub mod local;

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Where the project comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A prepared directory on this machine (local driver).
    Dir(PathBuf),
    /// A presigned GET URL of a `.tar.gz` of the project (kube driver; the
    /// local driver downloads and unpacks it into its own directory).
    Tarball(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No network at all (the default).
    None,
    /// Only the package registry at this URL (install jobs).
    Registry(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: u64,
    pub pids: u64,
    /// CPU in thousandths of a core (1000 = one core).
    pub cpu_millis: u64,
    /// Scratch disk (kube ephemeral-storage; local: file size rlimit).
    pub disk_mb: u64,
    /// Wall-clock limit; the run is killed after it.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: 1536, pids: 512, cpu_millis: 1000, disk_mb: 2048, deadline: Duration::from_secs(600) }
    }
}

/// After a successful run, pack `path` (relative to the project) as a
/// `.tar.gz` and PUT it to `put_url` (a presigned URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collect {
    pub path: String,
    pub put_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Unique, DNS-safe id of the run (lowercase letters, digits, `-`; ≤ 40).
    pub id: String,
    /// Kind of work (`preview`, `build`, `install`, …), for labels and logs.
    pub kind: String,
    /// Labels for the run (kube: object labels `blaze.dev/<key>`).
    pub labels: BTreeMap<String, String>,
    pub source: Source,
    /// argv, run in the project directory.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    pub network: Network,
    /// A server the command starts on this port (loopback inside the
    /// sandbox); exposed as [`Sandbox::endpoint`].
    pub serve_port: Option<u16>,
    pub collect: Option<Collect>,
}

/// Where a sandbox's server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket on this machine (local driver).
    Unix(PathBuf),
    /// `host:port` reachable over TCP (kube driver: the run's Service).
    Tcp(String),
}

impl Endpoint {
    /// `unix:/path` or `http://host:port`.
    pub fn to_url(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix:{}", p.display()),
            Endpoint::Tcp(a) => format!("http://{a}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines from the driver itself (e.g. "killed: deadline exceeded").
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub line: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exit code 0 (and outputs collected).
    Succeeded,
    /// Non-zero exit code (None: killed by a signal).
    Failed {
        code: Option<i32>,
        message: String,
    },
    /// Killed for using more memory than allowed.
    OutOfMemory,
    /// Killed at the deadline.
    DeadlineExceeded,
    Cancelled,
}

impl Exit {
    pub fn is_success(&self) -> bool {
        matches!(self, Exit::Succeeded)
    }

    /// A one-line explanation for job records.
    pub fn describe(&self) -> String {
        match self {
            Exit::Succeeded => "succeeded".into(),
            Exit::Failed { code: Some(c), message } if message.is_empty() => format!("exited with code {c}"),
            Exit::Failed { code, message } => match code {
                Some(c) => format!("exited with code {c}: {message}"),
                None => format!("killed: {message}"),
            },
            Exit::OutOfMemory => "killed: out of memory".into(),
            Exit::DeadlineExceeded => "killed: deadline exceeded".into(),
            Exit::Cancelled => "cancelled".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A started run.
pub struct Sandbox {
    pub id: String,
    pub endpoint: Option<Endpoint>,
    /// Output lines (take it once; dropping it discards output).
    pub logs: mpsc::Receiver<LogLine>,
    exit: watch::Receiver<Option<Exit>>,
    cancel: CancellationToken,
}

impl Sandbox {
    /// Built by drivers: `exit` becomes `Some` once when the run ends;
    /// cancelling `cancel` must stop the run and end it as `Exit::Cancelled`.
    pub fn new(
        id: String,
        endpoint: Option<Endpoint>,
        logs: mpsc::Receiver<LogLine>,
        exit: watch::Receiver<Option<Exit>>,
        cancel: CancellationToken,
    ) -> Sandbox {
        Sandbox { id, endpoint, logs, exit, cancel }
    }

    /// Wait for the end of the run.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone().unwrap_or(Exit::Failed { code: None, message: "the sandbox driver went away".into() });
            }
        }
    }

    /// How it ended, if it has.
    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Stop the run (the process tree, or the Job).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

#[async_trait::async_trait]
pub trait SandboxDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Start a run; returns once it is started (a server may still be
    /// starting: callers probe the endpoint).
    async fn start(&self, spec: RunSpec) -> Result<Sandbox, SandboxError>;

    /// Write (and delete) files of a running run's project, e.g. to push a
    /// new commit into a dev server (HMR). `Ok(false)` when the driver can
    /// not (the caller restarts the run instead) or the run is gone.
    async fn write_files(&self, id: &str, writes: &[(String, Vec<u8>)], deletes: &[String]) -> Result<bool, SandboxError> {
        let _ = (id, writes, deletes);
        Ok(false)
    }
}

/// Is `id` usable as a run id (and a Kubernetes object name)?
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// Remove ANSI escape sequences (colours, cursor moves) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    // CSI: parameters and intermediates, then one final byte in @..~
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC: until BEL or ESC \
                    chars.next();
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' || (n == '\u{1b}' && chars.peek() == Some(&'\\')) {
                            if n == '\u{1b}' {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            }
        } else if c == '\r' || (c.is_control() && c != '\t') {
            continue;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ansi() {
        assert!(valid_id("preview-12-ab"));
        assert!(!valid_id("Preview"));
        assert!(!valid_id("-x"));
        assert!(!valid_id(&"a".repeat(41)));
        assert_eq!(strip_ansi("\u{1b}[32m✓\u{1b}[39m built in \u{1b}[1m420ms\u{1b}[22m\r"), "✓ built in 420ms");
        assert_eq!(strip_ansi("\u{1b}]0;title\u{7}ok"), "ok");
    }
}
