//! A run's output: the pod's progress as system lines, then the `run`
//! container's log, followed until it ends.

use std::{collections::BTreeSet, time::Duration};

use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::LogParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    manifest::{FETCH_CONTAINER, RUN_CONTAINER},
    outcome::{container_status, run_pod, terminated},
};
use crate::{LogLine, LogStream, strip_ansi};

/// Longer lines are cut (a minified bundle printed to the terminal must not
/// become one huge message).
pub(super) const MAX_LINE: usize = 4096;
/// Lines of a failed source download shown to the user.
const FETCH_LOG_LINES: i64 = 20;
/// Waiting reasons that are just a pod starting up, not worth a line.
const ROUTINE_WAITS: &[&str] = &["ContainerCreating", "PodInitializing"];

pub(super) fn system(line: impl Into<String>) -> LogLine {
    LogLine { stream: LogStream::System, line: line.into() }
}

/// What has been said about the pod already (each event once).
#[derive(Default)]
struct Reported {
    scheduled: bool,
    unschedulable: bool,
    fetched: bool,
    waits: BTreeSet<(String, String)>,
}

enum Progress {
    /// The `run` container is running or has run: its log can be read.
    Started,
    /// The source download failed; `run` never starts.
    FetchFailed,
    NotYet,
}

/// Report the pod's progress to `out`; whether `run` has started.
async fn progress(pod: &Pod, seen: &mut Reported, out: &mpsc::Sender<LogLine>) -> Progress {
    let name = pod.name_any();
    let mut lines = Vec::new();
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    if let Some(c) = conditions.iter().find(|c| c.type_ == "PodScheduled") {
        if c.status == "True" && !seen.scheduled {
            seen.scheduled = true;
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("a node");
            lines.push(format!("pod {name} scheduled on {node}"));
        } else if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && !seen.unschedulable {
            seen.unschedulable = true;
            lines.push(format!("pod {name} can not be scheduled yet: {}", c.message.as_deref().unwrap_or("no node fits")));
        }
    }
    for (init, container) in [(true, FETCH_CONTAINER), (false, RUN_CONTAINER)] {
        let waiting = container_status(pod, init, container).and_then(|s| s.state.as_ref()).and_then(|s| s.waiting.as_ref());
        if let Some(reason) = waiting.and_then(|w| w.reason.clone()).filter(|r| !ROUTINE_WAITS.contains(&r.as_str()))
            && seen.waits.insert((container.to_owned(), reason.clone()))
        {
            let message = waiting.and_then(|w| w.message.as_deref()).unwrap_or_default();
            lines.push(format!("{container} waiting: {reason} {message}").trim_end().to_owned());
        }
    }
    let fetch = terminated(pod, true, FETCH_CONTAINER);
    if fetch.is_some_and(|t| t.exit_code == 0) && !seen.fetched {
        seen.fetched = true;
        lines.push("source fetched".into());
    }
    for line in lines {
        let _ = out.send(system(line)).await;
    }
    let state = container_status(pod, false, RUN_CONTAINER).and_then(|s| s.state.as_ref());
    if state.is_some_and(|s| s.running.is_some() || s.terminated.is_some()) {
        Progress::Started
    } else if fetch.is_some_and(|t| t.exit_code != 0) {
        Progress::FetchFailed
    } else {
        Progress::NotYet
    }
}

/// Stream a run's output into `out` until the `run` container's log ends.
///
/// The log can only be opened once the container has started, so the pod is
/// polled until then, reporting scheduling, the source download and stuck
/// containers (image pulls, …) as system lines. Once `job_done` fires, one
/// last look is taken: a pod that finished meanwhile still has its log;
/// one that never started has none.
pub(super) async fn follow(pods: Api<Pod>, run_id: String, poll: Duration, out: mpsc::Sender<LogLine>, job_done: CancellationToken) {
    let mut seen = Reported::default();
    let pod = loop {
        let last_look = job_done.is_cancelled();
        match run_pod(&pods, &run_id).await {
            Ok(Some(pod)) => match progress(&pod, &mut seen, &out).await {
                Progress::Started => break pod.name_any(),
                Progress::FetchFailed => return fetch_failure(&pods, &pod.name_any(), &out).await,
                Progress::NotYet => {}
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(run = %run_id, error = %e, "listing the run's pod failed"),
        }
        if last_look {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = job_done.cancelled() => {}
        }
    };
    // Kubernetes merges stdout and stderr into one log.
    let params = LogParams { container: Some(RUN_CONTAINER.into()), follow: true, ..Default::default() };
    match pods.log_stream(&pod, &params).await {
        Ok(log) => {
            if let Err(e) = pump(std::pin::pin!(log), LogStream::Stdout, &out).await {
                let _ = out.send(system(format!("the log stream broke: {e}"))).await;
            }
        }
        Err(e) => {
            let _ = out.send(system(format!("the log is unavailable: {e}"))).await;
        }
    }
}

/// Show why the source download failed: the tail of the init container's log.
async fn fetch_failure(pods: &Api<Pod>, pod: &str, out: &mpsc::Sender<LogLine>) {
    let params = LogParams { container: Some(FETCH_CONTAINER.into()), tail_lines: Some(FETCH_LOG_LINES), ..Default::default() };
    let log = pods.logs(pod, &params).await.unwrap_or_default();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let line: String = strip_ansi(line).chars().take(MAX_LINE).collect();
        if out.send(system(format!("{FETCH_CONTAINER}: {line}"))).await.is_err() {
            return;
        }
    }
}

/// Read `log` as lines into `out`: ANSI stripped, invalid UTF-8 replaced,
/// lines cut at [`MAX_LINE`] bytes without ever buffering more. Sending
/// waits for the reader: the kubelet keeps the log, so a slow reader only
/// delays lines (unlike a pipe, which would stall the process). Ends at the
/// end of the log or when the reader is gone.
pub(super) async fn pump(mut log: impl AsyncBufRead + Unpin, stream: LogStream, out: &mpsc::Sender<LogLine>) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(256);
    loop {
        let (used, complete) = {
            let buf = log.fill_buf().await?;
            if buf.is_empty() {
                break;
            }
            let (chunk, used, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            (used, complete)
        };
        log.consume_unpin(used);
        if complete {
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            line.clear();
            if out.send(LogLine { stream, line: text }).await.is_err() {
                return Ok(());
            }
        }
    }
    if !line.is_empty() {
        let _ = out.send(LogLine { stream, line: strip_ansi(&String::from_utf8_lossy(&line)) }).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(16);
        pump(futures::io::Cursor::new(input.to_vec()), LogStream::Stdout, &tx).await.unwrap();
        drop(tx);
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            assert_eq!(l.stream, LogStream::Stdout);
            lines.push(l.line);
        }
        lines
    }

    #[tokio::test]
    async fn lines_are_split_cleaned_and_bounded() {
        let mut input = b"\x1b[32mok\x1b[39m\r\n\nbad \xff byte\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        input.extend(b"\nlast without newline");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "ok");
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "bad \u{fffd} byte");
        assert_eq!(lines[3], "x".repeat(MAX_LINE));
        assert_eq!(lines[4], "last without newline");
    }

    #[tokio::test]
    async fn a_gone_reader_ends_the_pump() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        pump(futures::io::Cursor::new(b"a\nb\n".to_vec()), LogStream::Stdout, &tx).await.unwrap();
    }
}
