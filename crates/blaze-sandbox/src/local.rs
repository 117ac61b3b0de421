//! The local driver: bubblewrap on this machine.
//!
//! A run is `bwrap` with every namespace unshared (no network unless the
//! spec allows the registry), all capabilities dropped, a fresh `/proc`,
//! tmpfs over `/tmp`, and only the system directories (`/usr`, `/lib*`,
//! `/etc`, …) mounted read-only: the service's data (repositories, other
//! sandboxes, keys) is simply not in the sandbox's file system. The project
//! is bound at `/work`, the only writable place besides tmpfs.
//!
//! When the service runs as root, the run drops to an unprivileged uid
//! before `bwrap` starts (bwrap then uses a user namespace), so even files
//! that are visible are only readable as "other". Before that, still as
//! root, the child joins its own cgroup v1 memory, pids and CPU groups and
//! sets rlimits — so every process of the run is counted and limited, and
//! cancel kills exactly the processes of that cgroup.
//!
//! A server inside (a dev server on loopback) is exposed through a unix
//! socket: `socat` inside the sandbox bridges `<run dir>/serve.sock` to the
//! port, and the socket lives in a directory of the host.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::Command,
    sync::{mpsc, watch},
};
use tokio_util::sync::CancellationToken;

use crate::{Endpoint, Exit, LogLine, LogStream, Network, RunSpec, Sandbox, SandboxDriver, SandboxError, Source, strip_ansi, valid_id};

/// Longest log line kept (longer ones are cut).
const MAX_LINE: usize = 4096;
/// Lines buffered for a slow reader before new ones are dropped (a run must
/// never block on its own output).
const LOG_BUFFER: usize = 2048;
/// System directories mounted read-only into every sandbox.
const SYSTEM_DIRS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];
/// Port of the registry bridge inside a sandbox.
const REGISTRY_PORT: u16 = 4873;
/// Unprivileged uid/gid a root service runs sandboxes as (`nobody`).
pub const NOBODY: u32 = 65534;

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where runs started from a tarball get their directories, and where
    /// run directories (sockets) live.
    pub root: PathBuf,
    /// uid/gid of sandboxed processes when the service runs as root.
    pub run_as: u32,
    /// Refuse to run without cgroup limits (default). Off only where cgroups
    /// are unavailable and the operator accepts rlimits alone.
    pub require_cgroups: bool,
    pub bwrap: PathBuf,
    pub socat: PathBuf,
    /// A unix socket on this machine that proxies the package registry (read
    /// only). Runs with `Network::Registry` reach it, and nothing else,
    /// through a bridge to 127.0.0.1:4873 inside the sandbox.
    pub registry_socket: Option<PathBuf>,
}

impl LocalConfig {
    pub fn new(root: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            root: root.into(),
            run_as: NOBODY,
            require_cgroups: true,
            bwrap: "bwrap".into(),
            socat: "socat".into(),
            registry_socket: None,
        }
    }
}

/// The cgroup v1 directories this process may create children in.
#[derive(Debug, Clone)]
struct CgroupRoots {
    memory: PathBuf,
    pids: PathBuf,
    cpu: PathBuf,
}

impl CgroupRoots {
    /// Our own place in each v1 hierarchy (from /proc/self/cgroup), if we
    /// can create groups there.
    fn discover() -> Option<CgroupRoots> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path_of = |controller: &str| {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names.split(',').any(|n| n == controller).then(|| path.trim_start_matches('/').to_owned())
            })
        };
        let roots = CgroupRoots {
            memory: Path::new("/sys/fs/cgroup/memory").join(path_of("memory")?),
            pids: Path::new("/sys/fs/cgroup/pids").join(path_of("pids")?),
            cpu: Path::new("/sys/fs/cgroup/cpu").join(path_of("cpu")?),
        };
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = format!("blaze-probe-{}-{n}", std::process::id());
        for base in [&roots.memory, &roots.pids, &roots.cpu] {
            let dir = base.join(&probe);
            std::fs::create_dir(&dir).ok()?;
            let _ = std::fs::remove_dir(&dir);
        }
        Some(roots)
    }
}

/// Kill the processes of a leftover cgroup and remove it.
fn clear_stale(dir: &Path) {
    for _ in 0..50 {
        let pids: Vec<i32> =
            std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
        for pid in pids {
            // SAFETY: kill(2) with a pid read from the cgroup.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// The cgroups of one run.
struct RunCgroups {
    dirs: Vec<PathBuf>,
    memory: PathBuf,
    pids: PathBuf,
}

impl RunCgroups {
    fn create(roots: &CgroupRoots, id: &str, spec: &RunSpec) -> std::io::Result<RunCgroups> {
        let name = format!("blaze-{id}");
        let (memory, pids, cpu) = (roots.memory.join(&name), roots.pids.join(&name), roots.cpu.join(&name));
        let mut made = RunCgroups { dirs: Vec::new(), memory: memory.clone(), pids: pids.clone() };
        for d in [&memory, &pids, &cpu] {
            if d.exists() {
                // Left by a crashed predecessor of this run: end what is
                // still in it and start clean.
                clear_stale(d);
            }
            std::fs::create_dir(d)?;
            made.dirs.push(d.clone());
        }
        let bytes = spec.limits.memory_mb.max(16) << 20;
        std::fs::write(memory.join("memory.limit_in_bytes"), bytes.to_string())?;
        // Also cap swap where the kernel accounts it, or the limit leaks into swap.
        let _ = std::fs::write(memory.join("memory.memsw.limit_in_bytes"), bytes.to_string());
        std::fs::write(pids.join("pids.max"), spec.limits.pids.max(8).to_string())?;
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000")?;
        std::fs::write(cpu.join("cpu.cfs_quota_us"), (spec.limits.cpu_millis.max(10) * 100).to_string())?;
        Ok(made)
    }

    /// The `cgroup.procs` files the child joins.
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn pids_now(&self) -> Vec<i32> {
        std::fs::read_to_string(self.pids.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// SIGKILL every process of the run.
    fn kill_all(&self) {
        for _ in 0..5 {
            let pids = self.pids_now();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from our own cgroup.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn oom_killed(&self) -> bool {
        let ctl = std::fs::read_to_string(self.memory.join("memory.oom_control")).unwrap_or_default();
        ctl.lines().any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
            || std::fs::read_to_string(self.memory.join("memory.failcnt")).ok().and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0) > 0
                && ctl.contains("under_oom 1")
    }

    fn hit_pids_limit(&self) -> bool {
        let events = std::fs::read_to_string(self.pids.join("pids.events")).unwrap_or_default();
        events.lines().any(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
    }

    /// Remove the groups; the kernel refuses (EBUSY) while exiting
    /// processes are still being reaped, so retry briefly.
    async fn remove(self) {
        for d in &self.dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(40)).await,
                }
            }
        }
    }
}

pub struct LocalDriver {
    cfg: LocalConfig,
    cgroups: Option<CgroupRoots>,
    http: reqwest::Client,
    /// Project directories of running runs (for `write_files`).
    running: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl LocalDriver {
    pub fn new(mut cfg: LocalConfig) -> Result<LocalDriver, SandboxError> {
        std::fs::create_dir_all(&cfg.root)?;
        // Paths go into the sandbox (bind targets, socket names): absolute only.
        cfg.root = std::fs::canonicalize(&cfg.root)?;
        let cgroups = CgroupRoots::discover();
        if cgroups.is_none() {
            if cfg.require_cgroups {
                return Err(SandboxError::Unavailable("cgroup v1 memory/pids/cpu hierarchies are not writable here".into()));
            }
            tracing::warn!("cgroup v1 limits unavailable: sandboxes run with rlimits only");
        }
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(300)).build().map_err(|e| SandboxError::Unavailable(e.to_string()))?;
        Ok(LocalDriver { cfg, cgroups, http, running: Arc::default() })
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// uid/gid the sandbox runs as (None: the service's own, unprivileged).
    fn run_as(&self) -> Option<(u32, u32)> {
        Self::is_root().then_some((self.cfg.run_as, self.cfg.run_as))
    }

    fn bwrap_args(&self, spec: &RunSpec, project: &Path, run_dir: &Path) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_owned());
        for dir in SYSTEM_DIRS {
            if Path::new(dir).exists() {
                push("--ro-bind-try");
                push(dir);
                push(dir);
            }
        }
        for arg in ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"] {
            push(arg);
        }
        a.extend(["--bind".into(), project.display().to_string(), "/work".into()]);
        // The run directory keeps its host path inside too: the served socket
        // then has the same name on both sides (proxies compare a socket's
        // peer name with the path they connected to).
        a.extend(["--bind".into(), run_dir.display().to_string(), run_dir.display().to_string()]);
        if let (Network::Registry(_), Some(sock)) = (&spec.network, &self.cfg.registry_socket) {
            a.extend(["--bind".into(), sock.display().to_string(), "/run/blaze-registry.sock".into()]);
        }
        a.extend(["--chdir".into(), "/work".into()]);
        a.extend(["--unshare-all".into(), "--die-with-parent".into(), "--new-session".into(), "--cap-drop".into(), "ALL".into()]);
        a.extend(["--hostname".into(), "sandbox".into(), "--clearenv".into()]);
        let mut env: BTreeMap<String, String> = BTreeMap::from([
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/tmp".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("CI".into(), "1".into()),
            ("npm_config_update_notifier".into(), "false".into()),
        ]);
        if let Network::Registry(_) = &spec.network {
            // npm rewrites tarball URLs of the default registry to this one.
            env.insert("npm_config_registry".into(), format!("http://127.0.0.1:{REGISTRY_PORT}/"));
        }
        if let Some(port) = spec.serve_port {
            env.insert("BLAZE_SERVE_PORT".into(), port.to_string());
        }
        env.extend(spec.env.clone());
        for (k, v) in env {
            a.extend(["--setenv".into(), k, v]);
        }
        a.push("--".into());
        // Bridges between the host's sockets and loopback ports inside. They
        // live as long as the run: bwrap's init ends every process of the
        // namespace when the command exits.
        let socat = self.cfg.socat.display().to_string();
        let mut bridges = Vec::new();
        if spec.serve_port.is_some() {
            bridges.push(format!("{socat} UNIX-LISTEN:{}/serve.sock,fork,mode=600 TCP:127.0.0.1:$BLAZE_SERVE_PORT &", run_dir.display()));
        }
        if matches!(spec.network, Network::Registry(_)) {
            bridges
                .push(format!("{socat} TCP-LISTEN:{REGISTRY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/run/blaze-registry.sock &"));
        }
        if !bridges.is_empty() {
            a.extend(["/bin/sh".into(), "-c".into(), format!("{} exec \"$@\"", bridges.join(" ")), "sh".into()]);
        }
        a.extend(spec.command.iter().cloned());
        a
    }

    async fn fetch_tarball(&self, url: &str, into: &Path) -> Result<(), SandboxError> {
        let resp = self.http.get(url).send().await.map_err(|e| SandboxError::Unavailable(format!("fetching the source: {e}")))?;
        if !resp.status().is_success() {
            return Err(SandboxError::Unavailable(format!("fetching the source: HTTP {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| SandboxError::Unavailable(format!("fetching the source: {e}")))?;
        let into = into.to_owned();
        tokio::task::spawn_blocking(move || unpack(&bytes, &into)).await.map_err(|e| SandboxError::Unavailable(e.to_string()))??;
        Ok(())
    }

    async fn collect(http: &reqwest::Client, project: &Path, collect: &crate::Collect) -> Result<(), String> {
        let dir = safe_join(project, &collect.path).ok_or_else(|| format!("invalid output path {:?}", collect.path))?;
        let packed = tokio::task::spawn_blocking(move || pack(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("packing the output: {e}"))?;
        let resp = http.put(&collect.put_url).body(packed).send().await.map_err(|e| format!("uploading the output: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("uploading the output: HTTP {}", resp.status()));
        }
        Ok(())
    }
}

/// `rel` under `base`, refusing absolute paths and `..`.
pub fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return None;
    }
    Some(base.join(p))
}

fn unpack(tar_gz: &[u8], into: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(into)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    archive.set_preserve_permissions(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        // `unpack_in` refuses entries that would land outside `into`.
        if !entry.unpack_in(into)? {
            return Err(SandboxError::Spec(format!("the source archive has an unsafe path: {}", entry.path()?.display())));
        }
    }
    Ok(())
}

fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.finish()
}

/// Give the sandbox user the project: directories and files with one link.
/// Files with more links are hardlinks into a shared dependency cache; they
/// stay the cache's, so a run can replace them in its own directory but
/// never change them for everyone.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    chown(dir)?;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let path = entry.path();
            if meta.is_dir() {
                chown(&path)?;
                stack.push(path);
            } else if meta.nlink() <= 1 {
                chown(&path)?;
            }
        }
    }
    Ok(())
}

/// Read a pipe into log lines: ANSI stripped, long lines cut, never
/// blocking the process when nobody reads.
async fn pump(mut from: impl AsyncRead + Unpin, stream: LogStream, to: mpsc::Sender<LogLine>) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut dropped = 0u64;
    let emit = |bytes: &[u8], dropped: &mut u64| {
        let text = strip_ansi(&String::from_utf8_lossy(bytes));
        if to.try_send(LogLine { stream, line: text }).is_err() {
            *dropped += 1;
        }
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line, &mut dropped);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&line, &mut dropped);
    }
    if dropped > 0 {
        let _ = to.try_send(LogLine { stream: LogStream::System, line: format!("{dropped} log lines were dropped (reader too slow)") });
    }
}

/// Everything the forked child does before exec, with only
/// async-signal-safe calls: join the cgroups, set rlimits, drop to the
/// sandbox user.
struct PreExec {
    procs: Vec<std::fs::File>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    user: Option<(u32, u32)>,
}

impl PreExec {
    fn run(&self) -> std::io::Result<()> {
        use std::io::Write;
        // SAFETY: getpid is async-signal-safe.
        let pid = unsafe { libc::getpid() };
        let mut digits = [0u8; 12];
        let mut n = pid as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for mut f in &self.procs {
            f.write_all(&digits[i..])?;
        }
        for &(resource, value) in &self.rlimits {
            let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
            // SAFETY: setrlimit with a valid struct.
            if unsafe { libc::setrlimit(resource, &lim) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some((uid, gid)) = self.user {
            // SAFETY: plain syscalls; order matters (groups and gid before uid).
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SandboxDriver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn start(&self, spec: RunSpec) -> Result<Sandbox, SandboxError> {
        if !valid_id(&spec.id) {
            return Err(SandboxError::Spec(format!("invalid run id {:?}", spec.id)));
        }
        if spec.command.is_empty() {
            return Err(SandboxError::Spec("empty command".into()));
        }
        if matches!(spec.network, Network::Registry(_)) && self.cfg.registry_socket.as_ref().is_none_or(|s| !s.exists()) {
            return Err(SandboxError::Unavailable("registry access is not configured for local sandboxes".into()));
        }
        let base = self.cfg.root.join(&spec.id);
        let run_dir = self.cfg.root.join(format!("{}.run", spec.id));
        let (project, owned_project) = match &spec.source {
            Source::Dir(dir) => (dir.clone(), false),
            Source::Tarball(url) => {
                let _ = tokio::fs::remove_dir_all(&base).await;
                self.fetch_tarball(url, &base).await?;
                (base.clone(), true)
            }
        };
        if !project.is_dir() {
            return Err(SandboxError::Spec(format!("project directory {} does not exist", project.display())));
        }
        let _ = tokio::fs::remove_dir_all(&run_dir).await;
        tokio::fs::create_dir_all(&run_dir).await?;
        let socket = run_dir.join("serve.sock");
        if socket.as_os_str().len() >= 100 {
            return Err(SandboxError::Spec(format!("sandbox root {} is too long for a unix socket path", self.cfg.root.display())));
        }
        let user = self.run_as();
        if let Some((uid, gid)) = user {
            let (p, r) = (project.clone(), run_dir.clone());
            tokio::task::spawn_blocking(move || hand_over(&p, uid, gid).and_then(|_| hand_over(&r, uid, gid)))
                .await
                .map_err(|e| SandboxError::Unavailable(e.to_string()))??;
        }

        let cgroups = match &self.cgroups {
            Some(roots) => {
                Some(RunCgroups::create(roots, &spec.id, &spec).map_err(|e| SandboxError::Unavailable(format!("cgroups: {e}")))?)
            }
            None => None,
        };
        let procs = match &cgroups {
            Some(cg) => cg.procs_files().iter().map(|p| std::fs::OpenOptions::new().write(true).open(p)).collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let mut rlimits = vec![(libc::RLIMIT_NOFILE, 4096), (libc::RLIMIT_CORE, 0), (libc::RLIMIT_FSIZE, spec.limits.disk_mb.max(1) << 20)];
        if spec.serve_port.is_none() {
            // CPU seconds bound a run that burns CPU without end; servers live longer.
            rlimits.push((libc::RLIMIT_CPU, spec.limits.deadline.as_secs().max(1) * 2));
        }
        let pre = PreExec { procs, rlimits, user };

        let mut cmd = Command::new(&self.cfg.bwrap);
        cmd.args(self.bwrap_args(&spec, &project, &run_dir))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: PreExec::run only makes async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || pre.run());
        }
        let spawned = cmd.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(cg) = cgroups {
                    cg.remove().await;
                }
                return Err(SandboxError::Unavailable(format!("starting bubblewrap: {e}")));
            }
        };

        let (log_tx, log_rx) = mpsc::channel(LOG_BUFFER);
        let pumps = [
            child.stdout.take().map(|o| tokio::spawn(pump(o, LogStream::Stdout, log_tx.clone()))),
            child.stderr.take().map(|e| tokio::spawn(pump(e, LogStream::Stderr, log_tx.clone()))),
        ];
        let (exit_tx, exit_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let endpoint = spec.serve_port.map(|_| Endpoint::Unix(socket));
        self.running.lock().expect("running runs").insert(spec.id.clone(), project.clone());

        let token = cancel.clone();
        let http = self.http.clone();
        let running = self.running.clone();
        let deadline = spec.limits.deadline;
        let collect = spec.collect.clone();
        let id = spec.id.clone();
        tokio::spawn(async move {
            enum End {
                Exited(std::io::Result<std::process::ExitStatus>),
                Deadline,
                Cancelled,
            }
            let end = tokio::select! {
                s = child.wait() => End::Exited(s),
                _ = tokio::time::sleep(deadline) => End::Deadline,
                _ = token.cancelled() => End::Cancelled,
            };
            if !matches!(end, End::Exited(_)) {
                let _ = child.start_kill();
                if let Some(cg) = &cgroups {
                    cg.kill_all();
                }
                let _ = child.wait().await;
            } else if let Some(cg) = &cgroups {
                // stragglers that escaped the process group
                cg.kill_all();
            }
            for p in pumps.into_iter().flatten() {
                let _ = p.await;
            }
            let mut exit = match end {
                End::Deadline => Exit::DeadlineExceeded,
                End::Cancelled => Exit::Cancelled,
                End::Exited(Err(e)) => Exit::Failed { code: None, message: e.to_string() },
                End::Exited(Ok(status)) => {
                    if cgroups.as_ref().is_some_and(|c| c.oom_killed()) {
                        Exit::OutOfMemory
                    } else if status.success() {
                        Exit::Succeeded
                    } else {
                        let message = if cgroups.as_ref().is_some_and(|c| c.hit_pids_limit()) {
                            "the process limit was reached".to_owned()
                        } else {
                            String::new()
                        };
                        use std::os::unix::process::ExitStatusExt;
                        match (status.code(), status.signal()) {
                            (Some(c), _) => Exit::Failed { code: Some(c), message },
                            (None, Some(sig)) => {
                                Exit::Failed { code: None, message: if message.is_empty() { format!("signal {sig}") } else { message } }
                            }
                            (None, None) => Exit::Failed { code: None, message },
                        }
                    }
                }
            };
            if exit.is_success()
                && let Some(c) = &collect
                && let Err(e) = LocalDriver::collect(&http, &project, c).await
            {
                exit = Exit::Failed { code: None, message: e };
            }
            if !exit.is_success() {
                let _ = log_tx.try_send(LogLine { stream: LogStream::System, line: exit.describe() });
            }
            if let Some(cg) = cgroups {
                cg.remove().await;
            }
            running.lock().expect("running runs").remove(&id);
            if owned_project {
                let _ = tokio::fs::remove_dir_all(&project).await;
            }
            let _ = exit_tx.send(Some(exit));
        });
        Ok(Sandbox::new(spec.id, endpoint, log_rx, exit_rx, cancel))
    }

    async fn write_files(&self, id: &str, writes: &[(String, Vec<u8>)], deletes: &[String]) -> Result<bool, SandboxError> {
        let Some(project) = self.running.lock().expect("running runs").get(id).cloned() else { return Ok(false) };
        let user = self.run_as();
        for path in deletes {
            let full = safe_join(&project, path).ok_or_else(|| SandboxError::Spec(format!("invalid path {path:?}")))?;
            match tokio::fs::remove_file(&full).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        for (path, content) in writes {
            let full = safe_join(&project, path).ok_or_else(|| SandboxError::Spec(format!("invalid path {path:?}")))?;
            if let Some(parent) = full.parent() {
                tokio::fs::create_dir_all(parent).await?;
                if let Some((uid, gid)) = user {
                    let _ = std::os::unix::fs::lchown(parent, Some(uid), Some(gid));
                }
            }
            // Write next to the file and rename: the dev server's watcher
            // never sees a half-written file.
            let tmp = full
                .with_file_name(format!(".{}.blaze-tmp", full.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
            tokio::fs::write(&tmp, content).await?;
            if let Some((uid, gid)) = user {
                let _ = std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid));
            }
            tokio::fs::rename(&tmp, &full).await?;
        }
        Ok(true)
    }
}
