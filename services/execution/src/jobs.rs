//! Jobs: rows in Postgres (a state machine with an optimistic version) and
//! messages on RabbitMQ; their state changes and log lines go to a Redis
//! Stream per job (`WatchJob`, resumable), and the log is archived to object
//! storage when the job ends.

use std::{collections::BTreeMap, time::Duration};

use blaze_db::{
    execution::{self as db, JobRow, NewJob},
    page::PageRequest,
};
use blaze_kit::{ApiError, ApiResult, RequestContext, timestamp};
use blaze_proto::execution::{self as pb, job_service_server::JobService, watch_job_response::Event};
use blaze_redis::streams::is_stream_id;
use futures::Stream;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Shared, scope};

/// The work queue every job kind shares.
pub const QUEUE: &str = "jobs";
/// Log lines kept per job stream.
const MAX_EVENTS: u64 = 20_000;
/// Characters of log archived per job.
const MAX_ARCHIVE: usize = 4 * 1024 * 1024;

/// The message on the queue: which job (the row holds the rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: Uuid,
    pub org_id: Uuid,
}

fn stream_key(job: Uuid) -> String {
    format!("job:{job}:events")
}

fn cancel_key(job: Uuid) -> String {
    format!("job:{job}:cancel")
}

pub fn view(r: &JobRow) -> pb::Job {
    let result: BTreeMap<String, String> = r
        .result
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
        .unwrap_or_default();
    pb::Job {
        id: r.id.to_string(),
        organization_id: r.organization_id.to_string(),
        workspace_id: r.workspace_id.to_string(),
        app_id: r.app_id,
        kind: r.kind.clone(),
        state: r.state.clone(),
        attempts: r.attempts,
        error: r.error.clone(),
        commit_hash: r.commit_hash.clone(),
        created_at: Some(timestamp(r.created_at)),
        started_at: r.started_at.map(timestamp),
        finished_at: r.finished_at.map(timestamp),
        result: result.into_iter().collect(),
    }
}

fn job_not_found() -> ApiError {
    ApiError::not_found("JOB_NOT_FOUND", "Job not found")
}

impl Shared {
    /// Insert a job and put it on the queue. If the queue refuses it, the
    /// job is failed at once (nothing would ever run it).
    pub async fn submit(&self, new: NewJob<'_>) -> ApiResult<JobRow> {
        let org = new.org_id;
        let tx = self.db.tenant(org, new.requested_by).await?;
        let row = db::insert_job(&tx, new).await?;
        tx.commit().await?;
        self.job_state(&row).await;
        let msg = serde_json::to_vec(&JobMessage { job_id: row.id, org_id: org }).map_err(ApiError::internal)?;
        let mut headers = BTreeMap::new();
        headers.insert("kind".to_owned(), row.kind.clone());
        if let Err(e) = self.broker.publish(QUEUE, &msg, &headers).await {
            tracing::error!(job = %row.id, error = %e, "publishing a job failed");
            let _ = self.finish(&row, "failed", Some(&format!("could not queue the job: {e}")), None).await;
            return Err(ApiError::unavailable(format!("The job queue is unavailable: {e}")).with_reason("QUEUE_UNAVAILABLE"));
        }
        Ok(row)
    }

    pub async fn load_job(&self, org: Uuid, id: Uuid) -> ApiResult<Option<JobRow>> {
        let tx = self.db.tenant(org, None).await?;
        let row = db::job(&tx, org, id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Move a job to `state` (optimistic: None when it moved meanwhile).
    pub async fn transition(
        &self,
        row: &JobRow,
        state: &str,
        error: Option<&str>,
        result: Option<serde_json::Value>,
    ) -> ApiResult<Option<JobRow>> {
        let tx = self.db.tenant(row.organization_id, None).await?;
        let next = db::transition(&tx, row.organization_id, row.id, row.version, state, error, result).await?;
        tx.commit().await?;
        if let Some(n) = &next {
            self.job_state(n).await;
        }
        Ok(next)
    }

    /// End a job (terminal state), archiving its log.
    pub async fn finish(
        &self,
        row: &JobRow,
        state: &str,
        error: Option<&str>,
        result: Option<serde_json::Value>,
    ) -> ApiResult<Option<JobRow>> {
        let next = self.transition(row, state, error, result).await?;
        if next.is_some() {
            self.archive_log(row).await;
        }
        Ok(next)
    }

    async fn append(&self, job: Uuid, event: Event) {
        let bytes = pb::WatchJobResponse { event_id: String::new(), event: Some(event) }.encode_to_vec();
        let ttl = Duration::from_secs(self.cfg.chat.stream_ttl_secs.max(60));
        if let Err(e) = self.hub.append(&stream_key(job), &bytes, MAX_EVENTS, ttl).await {
            tracing::warn!(job = %job, error = %e, "could not publish a job event");
        }
    }

    pub async fn job_state(&self, row: &JobRow) {
        self.append(row.id, Event::State(pb::JobState { job_id: row.id.to_string(), state: row.state.clone(), error: row.error.clone() }))
            .await;
    }

    pub async fn job_log(&self, job: Uuid, stream: &str, line: &str) {
        self.append(job, Event::Log(pb::JobLog { stream: stream.into(), line: line.into() })).await;
    }

    pub async fn request_cancel(&self, job: Uuid) {
        let key = self.redis.key(&cancel_key(job));
        let _: Result<(), _> =
            fred::interfaces::KeysInterface::set(self.redis.client(), key, "1", Some(fred::types::Expiration::EX(86_400)), None, false)
                .await;
    }

    pub async fn cancel_requested(&self, job: Uuid) -> bool {
        let key = self.redis.key(&cancel_key(job));
        matches!(fred::interfaces::KeysInterface::exists::<i64, _>(self.redis.client(), key).await, Ok(1))
    }

    /// The job's log lines as text, stored under the organisation.
    async fn archive_log(&self, row: &JobRow) {
        let Ok(events) = self.hub.read_after(&stream_key(row.id), "", MAX_EVENTS).await else { return };
        let mut text = String::new();
        for e in events {
            if let Ok(pb::WatchJobResponse { event: Some(Event::Log(l)), .. }) = pb::WatchJobResponse::decode(e.payload) {
                if text.len() + l.line.len() > MAX_ARCHIVE {
                    text.push_str("… (log truncated)\n");
                    break;
                }
                text.push_str(&format!("[{}] {}\n", l.stream, l.line));
            }
        }
        if text.is_empty() {
            return;
        }
        let key = format!("orgs/{}/jobs/{}/log.txt", row.organization_id, row.id);
        if let Err(e) = self.objects.put(&key, bytes::Bytes::from(text)).await {
            tracing::warn!(job = %row.id, error = %e, "archiving the job log failed");
        }
    }

    /// Poll until the job ends (or `timeout`).
    pub async fn wait(&self, org: Uuid, id: Uuid, timeout: Duration) -> ApiResult<JobRow> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let row = self.load_job(org, id).await?.ok_or_else(job_not_found)?;
            if row.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// State and log events of a job after `after`, live until it ends.
    fn follow(&self, row: JobRow, after: String) -> impl Stream<Item = Result<pb::WatchJobResponse, Status>> + Send + 'static {
        let hub = self.hub.clone();
        let key = stream_key(row.id);
        let terminal = |e: &pb::WatchJobResponse| matches!(&e.event, Some(Event::State(s)) if matches!(s.state.as_str(), "succeeded" | "failed" | "cancelled"));
        let state = (hub, key, after, false, std::collections::VecDeque::new(), Some(row));
        futures::stream::unfold(state, move |(hub, key, mut after, done, mut queue, fallback)| async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    return Some((Ok(ev), (hub, key, after, done, queue, fallback)));
                }
                if done {
                    return None;
                }
                let events = match hub.next_after(&key, &after, 256).await {
                    Ok(e) => e,
                    Err(e) => return Some((Err(Status::unavailable(e.to_string())), (hub, key, after, true, queue, fallback))),
                };
                if events.is_empty()
                    && after.is_empty()
                    && let Some(row) = &fallback
                    && row.is_terminal()
                {
                    // The events expired: the row still knows how it ended.
                    let ev = pb::WatchJobResponse {
                        event_id: String::new(),
                        event: Some(Event::State(pb::JobState {
                            job_id: row.id.to_string(),
                            state: row.state.clone(),
                            error: row.error.clone(),
                        })),
                    };
                    return Some((Ok(ev), (hub, key, after, true, queue, None)));
                }
                let mut finished = false;
                for e in events {
                    after = e.id.clone();
                    let Ok(mut msg) = pb::WatchJobResponse::decode(e.payload) else { continue };
                    msg.event_id = e.id;
                    finished = terminal(&msg);
                    queue.push_back(msg);
                    if finished {
                        break;
                    }
                }
                if finished {
                    return queue.pop_front().map(|ev| (Ok(ev), (hub, key, after, true, queue, None)));
                }
            }
        })
    }
}

pub struct Jobs {
    shared: Shared,
}

impl Jobs {
    pub(crate) fn new(shared: Shared) -> Self {
        Jobs { shared }
    }
}

type Rpc<T> = Result<Response<T>, Status>;
type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

fn job_id(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| job_not_found())
}

#[tonic::async_trait]
impl JobService for Jobs {
    type WatchJobStream = WatchStream;

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Rpc<pb::ListJobsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let page = PageRequest::new(r.page_size, &r.page_token)?;
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let (rows, next) = db::list_jobs(&tx, s.org, s.ws, (r.app_id != 0).then_some(r.app_id), &page).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListJobsResponse { data: rows.iter().map(view).collect(), next_page_token: next }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Rpc<pb::GetJobResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let row = db::job_in_workspace(&tx, s.org, s.ws, job_id(&r.job_id)?).await.map_err(ApiError::from)?.ok_or_else(job_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::GetJobResponse { data: Some(view(&row)) }))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Rpc<pb::CancelJobResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let id = job_id(&r.job_id)?;
        for _ in 0..5 {
            let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
            let row = db::job_in_workspace(&tx, s.org, s.ws, id).await.map_err(ApiError::from)?.ok_or_else(job_not_found)?;
            tx.commit().await.map_err(ApiError::from)?;
            if row.is_terminal() {
                return Ok(Response::new(pb::CancelJobResponse { data: Some(view(&row)) }));
            }
            // The worker sees the flag and stops the sandbox; the state
            // changes here so the job never reports success afterwards.
            self.shared.request_cancel(id).await;
            if let Some(next) = self.shared.finish(&row, "cancelled", Some("cancelled by a user"), None).await? {
                return Ok(Response::new(pb::CancelJobResponse { data: Some(view(&next)) }));
            }
        }
        Err(ApiError::conflict("JOB_BUSY", "The job changed while cancelling; try again").into())
    }

    async fn watch_job(&self, req: Request<pb::WatchJobRequest>) -> Rpc<Self::WatchJobStream> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        if !r.after.is_empty() && !is_stream_id(&r.after) {
            return Err(ApiError::invalid("Invalid payload: the event id to resume after is not valid").into());
        }
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let row = db::job_in_workspace(&tx, s.org, s.ws, job_id(&r.job_id)?).await.map_err(ApiError::from)?.ok_or_else(job_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(Box::pin(self.shared.follow(row, r.after))))
    }

    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Rpc<pb::SubmitJobResponse> {
        let r = req.into_inner();
        let org = Uuid::parse_str(&r.organization_id).map_err(|_| ApiError::invalid("invalid organization id"))?;
        let ws = Uuid::parse_str(&r.workspace_id).map_err(|_| ApiError::invalid("invalid workspace id"))?;
        if !matches!(r.kind.as_str(), "build" | "install") {
            return Err(ApiError::invalid(format!("jobs of kind {:?} can not be submitted directly", r.kind)).into());
        }
        let user = Uuid::parse_str(&r.requested_by_user_id).ok();
        let row = self
            .shared
            .submit(NewJob {
                id: Uuid::now_v7(),
                org_id: org,
                workspace_id: ws,
                app_id: r.app_id,
                kind: &r.kind,
                commit_hash: (!r.commit_hash.is_empty()).then_some(r.commit_hash.as_str()),
                payload: serde_json::json!({"packages": r.packages}),
                requested_by: user,
            })
            .await?;
        let row = if r.wait {
            self.shared.wait(org, row.id, Duration::from_secs(self.shared.cfg.sandbox.deadline_secs + 30)).await?
        } else {
            row
        };
        Ok(Response::new(pb::SubmitJobResponse { job: Some(view(&row)) }))
    }
}
