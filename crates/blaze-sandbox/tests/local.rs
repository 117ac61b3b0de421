//! The local driver with real processes: isolation (network, file system,
//! capabilities, other users' files), limits (memory, processes, deadline),
//! cancel, logs, served ports over a unix socket and collected outputs.

use std::{collections::BTreeMap, path::Path, time::Duration};

use blaze_sandbox::{
    Exit, Limits, LogStream, Network, RunSpec, Sandbox, SandboxDriver, Source,
    local::{LocalConfig, LocalDriver},
};

fn driver(root: &Path) -> LocalDriver {
    LocalDriver::new(LocalConfig::new(root.join("runs"))).expect("local driver (needs bwrap and cgroup v1)")
}

fn spec(id: &str, project: &Path, command: &[&str]) -> RunSpec {
    RunSpec {
        id: id.into(),
        kind: "test".into(),
        labels: BTreeMap::new(),
        source: Source::Dir(project.to_owned()),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        limits: Limits { memory_mb: 256, pids: 64, cpu_millis: 1000, disk_mb: 64, deadline: Duration::from_secs(30) },
        network: Network::None,
        serve_port: None,
        collect: None,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..10])
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

async fn run(driver: &LocalDriver, spec: RunSpec) -> (Exit, Vec<String>) {
    let mut sb = driver.start(spec).await.expect("start");
    let exit = sb.wait().await;
    let mut lines = Vec::new();
    while let Ok(l) = sb.logs.try_recv() {
        lines.push(format!("{}: {}", l.stream.as_str(), l.line));
    }
    (exit, lines)
}

fn project(tmp: &Path) -> std::path::PathBuf {
    let p = tmp.join("project");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("hello.txt"), "hi").unwrap();
    p
}

#[tokio::test]
async fn no_network_no_capabilities_and_only_the_project_is_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    // a secret of the host, outside the sandbox's view
    let secret = tmp.path().join("secret.key");
    std::fs::write(&secret, "top-secret").unwrap();
    let script = format!(
        "grep CapEff /proc/self/status; \
         echo x > /etc/blaze-test 2>/dev/null && echo WROTE-ETC; \
         echo y > /work/out.txt && echo WROTE-WORK; \
         cat {} 2>/dev/null && echo READ-SECRET; \
         ls /root 2>/dev/null | head -1; \
         node -e \"require('net').connect(6379,'127.0.0.1').on('connect',()=>console.log('CONNECTED')).on('error',e=>console.log('NET '+e.code))\"; \
         getent hosts registry.npmjs.org || echo NO-DNS; \
         id -u",
        secret.display()
    );
    let (exit, lines) = run(&d, spec(&unique("iso"), &p, &["/bin/sh", "-c", &script])).await;
    assert_eq!(exit, Exit::Succeeded, "{lines:#?}");
    let out = lines.join("\n");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(!out.contains("WROTE-ETC") && out.contains("WROTE-WORK"), "{out}");
    assert!(!out.contains("READ-SECRET") && !out.contains("top-secret"), "{out}");
    assert!(out.contains("NET ECONNREFUSED") && !out.contains("CONNECTED"), "own loopback only: {out}");
    assert!(out.contains("NO-DNS"), "{out}");
    assert!(out.contains("stdout: 65534") || !is_root(), "runs as nobody: {out}");
    assert_eq!(std::fs::read_to_string(p.join("out.txt")).unwrap(), "y\n");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

#[tokio::test]
async fn a_memory_hog_is_killed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let mut s = spec(&unique("oom"), &p, &["node", "-e", "const a=[];for(;;){a.push(Buffer.alloc(8<<20,1))}"]);
    s.limits.memory_mb = 128;
    let (exit, lines) = run(&d, s).await;
    assert_eq!(exit, Exit::OutOfMemory, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("out of memory")), "{lines:#?}");
}

#[tokio::test]
async fn a_fork_bomb_is_contained_and_reported_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let mut s = spec(&unique("fork"), &p, &["/bin/sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 2; exit 3"]);
    s.limits.pids = 32;
    s.limits.deadline = Duration::from_secs(8);
    let started = std::time::Instant::now();
    let (exit, lines) = run(&d, s).await;
    assert!(!exit.is_success(), "{exit:?}");
    assert!(
        matches!(&exit, Exit::Failed { message, .. } if message.contains("process limit")) || exit == Exit::DeadlineExceeded,
        "{exit:?} {lines:#?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // the host still forks fine
    assert!(std::process::Command::new("true").status().unwrap().success());
}

#[tokio::test]
async fn the_deadline_kills_a_run_and_cancel_kills_the_whole_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let mut s = spec(&unique("slow"), &p, &["sleep", "60"]);
    s.limits.deadline = Duration::from_millis(500);
    let (exit, _) = run(&d, s).await;
    assert_eq!(exit, Exit::DeadlineExceeded);

    let marker = format!("{}", 40_000 + (std::process::id() % 9_000));
    let sb: Sandbox =
        d.start(spec(&unique("tree"), &p, &["/bin/sh", "-c", &format!("sleep {marker} & sleep {marker} & wait")])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(count_sleepers(&marker) >= 2, "the children run");
    sb.cancel();
    assert_eq!(sb.wait().await, Exit::Cancelled);
    assert_eq!(count_sleepers(&marker), 0, "every process of the run is gone");
}

fn count_sleepers(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).replace('\0', " ").trim() == format!("sleep {marker}"))
        .count()
}

#[tokio::test]
async fn logs_stream_stripped_and_failures_carry_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let (exit, lines) =
        run(&d, spec(&unique("logs"), &p, &["/bin/sh", "-c", "printf '\\033[32mgreen\\033[0m\\n'; echo oops >&2; exit 7"])).await;
    assert_eq!(exit, Exit::Failed { code: Some(7), message: String::new() });
    assert!(lines.contains(&"stdout: green".to_owned()), "{lines:#?}");
    assert!(lines.contains(&"stderr: oops".to_owned()), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with(LogStream::System.as_str()) && l.contains("code 7")), "{lines:#?}");
}

#[tokio::test]
async fn a_served_port_is_reachable_through_the_unix_socket_and_files_can_be_pushed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let server = "require('http').createServer((q,s)=>s.end(require('fs').readFileSync('/work/hello.txt'))).listen(4000,'127.0.0.1')";
    let mut s = spec(&unique("serve"), &p, &["node", "-e", server]);
    s.serve_port = Some(4000);
    let sb = d.start(s).await.unwrap();
    let Some(blaze_sandbox::Endpoint::Unix(sock)) = sb.endpoint.clone() else { panic!("unix endpoint") };
    let body = get_unix(&sock).await;
    assert_eq!(body, "hi");
    assert!(d.write_files(&sb.id, &[("hello.txt".into(), b"updated".to_vec())], &[]).await.unwrap());
    assert_eq!(get_unix(&sock).await, "updated");
    assert!(d.write_files(&sb.id, &[("../escape".into(), b"x".to_vec())], &[]).await.is_err());
    sb.cancel();
    assert_eq!(sb.wait().await, Exit::Cancelled);
    assert!(!d.write_files(&sb.id, &[("hello.txt".into(), b"late".to_vec())], &[]).await.unwrap(), "gone runs take no files");
}

/// GET / over a unix socket, retrying while the server starts.
async fn get_unix(sock: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::UnixStream::connect(sock).await {
            s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            if let Some((_, body)) = out.split_once("\r\n\r\n") {
                return body.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer on {}", sock.display());
}

#[tokio::test]
async fn outputs_are_collected_after_success() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    // a tiny PUT receiver
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data);
            if let Some(i) = text.find("\r\n\r\n") {
                let len: usize = text[..i]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
                if data.len() >= i + 4 + len {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                    return data[i + 4..i + 4 + len].to_vec();
                }
            }
        }
    });
    let mut s = spec(&unique("build"), &p, &["/bin/sh", "-c", "mkdir -p dist && echo '<h1>built</h1>' > dist/index.html"]);
    s.collect = Some(blaze_sandbox::Collect { path: "dist".into(), put_url: format!("http://{addr}/upload") });
    let (exit, lines) = run(&d, s).await;
    assert_eq!(exit, Exit::Succeeded, "{lines:#?}");
    let tgz = received.await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    let names: Vec<String> = archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with("index.html")), "{names:?}");
}

#[tokio::test]
async fn escape_attempts_through_proc_ptrace_and_mounts_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(tmp.path());
    let p = project(tmp.path());
    let host_pid = std::process::id();
    // Each line reports one attempt; nothing may succeed.
    let script = format!(
        "ls /proc | grep -c '^[0-9]' ; \
         kill -0 {host_pid} 2>/dev/null && echo SIGNALLED-HOST || echo NO-HOST-PID; \
         cat /proc/{host_pid}/environ 2>/dev/null && echo READ-HOST-ENV; \
         echo x > /proc/sys/kernel/hostname 2>/dev/null && echo WROTE-SYSCTL; \
         mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; \
         python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None); print(\"PTRACE\", libc.ptrace(16, {host_pid}, 0, 0))' 2>/dev/null; \
         ls /dev | tr '\\n' ' '; echo; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; \
         grep NoNewPrivs /proc/self/status"
    );
    let (exit, lines) = run(&d, spec(&unique("esc"), &p, &["/bin/sh", "-c", &script])).await;
    assert_eq!(exit, Exit::Succeeded, "{lines:#?}");
    let out = lines.join("\n");
    let visible: usize = lines.first().and_then(|l| l.trim_start_matches("stdout: ").trim().parse().ok()).unwrap_or(999);
    assert!(visible < 10, "the sandbox sees only its own processes: {visible}\n{out}");
    assert!(out.contains("NO-HOST-PID") && !out.contains("SIGNALLED-HOST"), "{out}");
    for bad in ["READ-HOST-ENV", "WROTE-SYSCTL", "MOUNTED"] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    assert!(!out.contains("PTRACE 0"), "ptrace of a host process must fail: {out}");
    assert!(!out.contains("/dev/sda") && !out.contains(" mem "), "no host devices: {out}");
}
