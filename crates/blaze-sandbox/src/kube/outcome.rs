//! How a run's Job ended: watching it to a terminal condition, and turning
//! a failure into an [`Exit`].

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ContainerStateTerminated, ContainerStatus, Pod},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, WatchEvent, WatchParams},
};

use super::manifest::{FETCH_CONTAINER, RUN_CONTAINER, RUN_LABEL};
use crate::{Exit, strip_ansi};

/// Seconds the API server keeps one watch open (below its 5-minute default
/// cap) before the driver re-lists.
const WATCH_TIMEOUT_SECS: u32 = 290;
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A failure message is one line of a job record.
const MAX_MESSAGE: usize = 300;

/// The terminal state of a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobEnd {
    /// Condition `Complete=True`.
    Complete,
    /// Condition `Failed=True` with its reason (`DeadlineExceeded`,
    /// `BackoffLimitExceeded`, …) and message.
    Failed { reason: String, message: String },
    /// The Job is gone without having finished: deleted by someone else.
    Gone,
}

/// The terminal condition of a Job, if it has one. `Complete` and `Failed`
/// only: `SuccessCriteriaMet` / `FailureTarget` come first, while pods may
/// still be terminating.
pub(super) fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().filter(|c| c.status == "True").find_map(|c| match c.type_.as_str() {
        "Complete" => Some(JobEnd::Complete),
        "Failed" => Some(JobEnd::Failed { reason: c.reason.clone().unwrap_or_default(), message: c.message.clone().unwrap_or_default() }),
        _ => None,
    })
}

/// Exponential backoff for API errors.
struct Retry(Duration);

impl Retry {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(RETRY_MAX);
    }

    fn reset(&mut self) {
        self.0 = RETRY_FIRST;
    }
}

/// Follow the Job `name` until it completes, fails or disappears.
///
/// Get, then watch from that resourceVersion with a field selector on the
/// name; whenever the watch ends (its timeout, an expired resourceVersion
/// (410), a broken connection) get again: the get is the authoritative state
/// and catches whatever happened while no watch was open. API errors are
/// retried with backoff; the caller bounds the whole wait.
pub(super) async fn watch_job(jobs: &Api<Job>, name: &str) -> JobEnd {
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(WATCH_TIMEOUT_SECS);
    let mut retry = Retry(RETRY_FIRST);
    loop {
        let job = match jobs.get_opt(name).await {
            Ok(Some(job)) => job,
            Ok(None) => return JobEnd::Gone,
            Err(e) => {
                tracing::warn!(job = name, error = %e, "getting the job failed; retrying");
                retry.wait().await;
                continue;
            }
        };
        if let Some(end) = job_end(&job) {
            return end;
        }
        let version = job.resource_version().unwrap_or_default();
        let events = match jobs.watch(&params, &version).await {
            Ok(events) => events,
            Err(kube::Error::Api(s)) if s.code == 410 => continue,
            Err(e) => {
                tracing::warn!(job = name, error = %e, "watching the job failed; retrying");
                retry.wait().await;
                continue;
            }
        };
        let mut events = std::pin::pin!(events);
        let mut quiet = true;
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Added(job) | WatchEvent::Modified(job)) => {
                    quiet = false;
                    retry.reset();
                    if let Some(end) = job_end(&job) {
                        return end;
                    }
                }
                // A TTL deletion carries the final status; anything else is
                // someone deleting a running Job.
                Ok(WatchEvent::Deleted(job)) => return job_end(&job).unwrap_or(JobEnd::Gone),
                Ok(WatchEvent::Bookmark(_)) => {}
                Ok(WatchEvent::Error(status)) => {
                    quiet = false;
                    if status.code != 410 {
                        tracing::warn!(job = name, error = %status, "the job watch failed; re-listing");
                        retry.wait().await;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "the job watch broke; re-listing");
                    retry.wait().await;
                    quiet = false;
                    break;
                }
            }
        }
        // A watch that ends without a word (a proxy cutting it short, say)
        // must not turn into a tight get/watch loop.
        if quiet {
            retry.wait().await;
        }
    }
}

/// The pod of a run (the newest, should there be more than one).
pub(super) async fn run_pod(pods: &Api<Pod>, run_id: &str) -> kube::Result<Option<Pod>> {
    let list = pods.list(&ListParams::default().labels(&format!("{RUN_LABEL}={run_id}"))).await?;
    Ok(list.items.into_iter().max_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp)))
}

pub(super) fn container_status<'a>(pod: &'a Pod, init: bool, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let statuses = if init { status.init_container_statuses.as_ref() } else { status.container_statuses.as_ref() };
    statuses?.iter().find(|s| s.name == name)
}

pub(super) fn terminated<'a>(pod: &'a Pod, init: bool, name: &str) -> Option<&'a ContainerStateTerminated> {
    container_status(pod, init, name)?.state.as_ref()?.terminated.as_ref()
}

/// The last non-empty line of a termination message (with
/// `FallbackToLogsOnError`, the tail of the output), cut to one short line.
pub(super) fn last_line(message: Option<&str>) -> String {
    let line = message.unwrap_or_default().lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
    strip_ansi(line).chars().take(MAX_MESSAGE).collect()
}

/// The [`Exit`] of a Job that failed with `reason`/`message`, refined with
/// what its pod says when the pod is still there.
pub(super) fn failure_exit(reason: &str, message: &str, pod: Option<&Pod>) -> Exit {
    if reason == "DeadlineExceeded" {
        return Exit::DeadlineExceeded;
    }
    let job_message = || if message.is_empty() { reason.to_owned() } else { message.to_owned() };
    let Some(pod) = pod else {
        return Exit::Failed { code: None, message: job_message() };
    };
    let fetch = terminated(pod, true, FETCH_CONTAINER);
    let run = terminated(pod, false, RUN_CONTAINER);
    if [fetch, run].into_iter().flatten().any(|t| t.reason.as_deref() == Some("OOMKilled")) {
        return Exit::OutOfMemory;
    }
    let status = pod.status.as_ref();
    if status.and_then(|s| s.reason.as_deref()) == Some("Evicted") {
        let why = status.and_then(|s| s.message.clone()).unwrap_or_default();
        return Exit::Failed { code: None, message: format!("evicted: {why}") };
    }
    if let Some(t) = fetch.filter(|t| t.exit_code != 0) {
        let detail = last_line(t.message.as_deref());
        return Exit::Failed { code: Some(t.exit_code), message: format!("fetching the source failed: {detail}") };
    }
    match run {
        Some(ContainerStateTerminated { signal: Some(signal), .. }) => Exit::Failed { code: None, message: format!("signal {signal}") },
        Some(t) if t.exit_code != 0 => Exit::Failed { code: Some(t.exit_code), message: last_line(t.message.as_deref()) },
        _ => Exit::Failed { code: None, message: job_message() },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "p" }, "status": status })).unwrap()
    }

    #[test]
    fn terminal_conditions_only() {
        let job =
            |conditions: serde_json::Value| -> Job { serde_json::from_value(json!({ "status": { "conditions": conditions } })).unwrap() };
        assert_eq!(job_end(&job(json!([{ "type": "FailureTarget", "status": "True" }]))), None);
        assert_eq!(job_end(&job(json!([{ "type": "Complete", "status": "False" }]))), None);
        assert_eq!(
            job_end(&job(json!([{ "type": "SuccessCriteriaMet", "status": "True" }, { "type": "Complete", "status": "True" }]))),
            Some(JobEnd::Complete)
        );
        assert_eq!(
            job_end(&job(json!([{ "type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too long" }]))),
            Some(JobEnd::Failed { reason: "DeadlineExceeded".into(), message: "too long".into() })
        );
    }

    #[test]
    fn failures_are_explained_by_the_pod() {
        let limit = "Job has reached the specified backoff limit";
        assert_eq!(failure_exit("DeadlineExceeded", "x", None), Exit::DeadlineExceeded);
        assert_eq!(failure_exit("BackoffLimitExceeded", limit, None), Exit::Failed { code: None, message: limit.into() });
        let init_failed = pod(json!({ "initContainerStatuses": [{
            "name": "fetch-source", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 22, "reason": "Error", "message": "curl: (22) The requested URL returned error: 403\n" } }
        }]}));
        assert_eq!(
            failure_exit("BackoffLimitExceeded", limit, Some(&init_failed)),
            Exit::Failed { code: Some(22), message: "fetching the source failed: curl: (22) The requested URL returned error: 403".into() }
        );
        let evicted = pod(
            json!({ "reason": "Evicted", "message": "Pod ephemeral local storage usage exceeds the total limit of containers 2048Mi." }),
        );
        assert_eq!(
            failure_exit("BackoffLimitExceeded", limit, Some(&evicted)),
            Exit::Failed {
                code: None,
                message: "evicted: Pod ephemeral local storage usage exceeds the total limit of containers 2048Mi.".into()
            }
        );
    }

    #[test]
    fn last_line_is_short_and_plain() {
        assert_eq!(last_line(Some("a\n\u{1b}[31mError: boom\u{1b}[39m\n\n")), "Error: boom");
        assert_eq!(last_line(None), "");
        assert_eq!(last_line(Some(&"x".repeat(1000))).len(), MAX_MESSAGE);
    }
}
