//! Operator actions on the job queue (`blaze jobs parked`, `blaze jobs
//! replay`): what is parked and why, and putting parked jobs back to work
//! once their cause is fixed (runbook: docs/operations.md).

use std::{collections::BTreeSet, time::Duration};

use blaze_db::{Db, execution as db};
use blaze_kit::Config;
use blaze_queue::{Broker, QueueConfig};
use uuid::Uuid;

use crate::jobs::{JobMessage, QUEUE};

/// A parked message, read as the job it names.
#[derive(Debug, Clone)]
pub struct ParkedJob {
    /// `None` for a message that is not a job (it can not be replayed).
    pub job: Option<JobMessage>,
    pub kind: String,
    pub error: String,
    pub attempts: u32,
}

/// The broker of the job queue, as configured (the role and the operator commands).
pub async fn broker(cfg: &Config) -> anyhow::Result<Broker> {
    Ok(Broker::connect(QueueConfig {
        url: cfg.amqp.url.expose().to_owned(),
        prefix: cfg.amqp.prefix.clone(),
        prefetch: cfg.amqp.prefetch,
        max_attempts: cfg.amqp.max_attempts,
        retry_delay: Duration::from_millis(u64::from(cfg.amqp.retry_delay_ms)),
    })
    .await?)
}

/// The parking lot of the job queue, oldest first (left in place).
pub async fn parked_jobs(broker: &Broker) -> anyhow::Result<Vec<ParkedJob>> {
    Ok(broker
        .parked(QUEUE)
        .await?
        .into_iter()
        .map(|p| ParkedJob {
            job: serde_json::from_slice(&p.body).ok(),
            kind: p.headers.get("kind").cloned().unwrap_or_default(),
            error: p.error,
            attempts: p.attempts,
        })
        .collect())
}

/// Puts parked jobs back on the queue: all of them, or only `only`. Each
/// job's row goes back to `queued` first (parking had failed it), so the
/// worker runs it as a new attempt; jobs cancelled or finished since, and
/// messages that name no job, stay parked. Returns the replayed job ids.
pub async fn replay_parked(broker: &Broker, db: &Db, only: Option<Uuid>) -> anyhow::Result<Vec<Uuid>> {
    let mut ready = BTreeSet::new();
    for parked in parked_jobs(broker).await? {
        let Some(msg) = parked.job else { continue };
        if only.is_some_and(|id| id != msg.job_id) || ready.contains(&msg.job_id) {
            continue;
        }
        let tx = db.tenant(msg.org_id, None).await?;
        let Some(row) = db::job(&tx, msg.org_id, msg.job_id).await? else { continue };
        // A failed job (what parking leaves) or one a crash left queued or running.
        if matches!(row.state.as_str(), "succeeded" | "cancelled") {
            continue;
        }
        let note = "replayed from the parking lot by an operator";
        if db::transition(&tx, msg.org_id, row.id, row.version, "queued", Some(note), None).await?.is_some() {
            tx.commit().await?;
            ready.insert(msg.job_id);
        }
    }
    let mut replayed = Vec::new();
    broker
        .replay_parked(QUEUE, |p| {
            let job = serde_json::from_slice::<JobMessage>(&p.body).ok().map(|m| m.job_id);
            // One message per job: a job parked twice goes back once.
            match job {
                Some(id) if ready.contains(&id) && !replayed.contains(&id) => {
                    replayed.push(id);
                    true
                }
                _ => false,
            }
        })
        .await?;
    Ok(replayed)
}
