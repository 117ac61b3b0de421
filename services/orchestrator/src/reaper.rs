//! Turns whose orchestrator died: when a turn's lease deadline passes
//! without renewal, any replica claims it, saves what was streamed with an
//! error note, and ends its stream with an error event, so readers finish
//! and the chat takes new prompts. Nothing is half-applied: a turn commits
//! in one step or not at all.

use blaze_db::{
    audit::{self, AuditEvent},
    chats, views,
};
use blaze_kit::{ApiResult, CancellationToken};
use blaze_proto::orchestrator::{self as pb, stream_chat_response::Event};

use crate::{Shared, events::TurnRecord};

pub const INTERRUPTED: &str = "The response was interrupted because the server handling it stopped. Nothing was changed; please try again.";

pub async fn run(shared: Shared, shutdown: CancellationToken) -> anyhow::Result<()> {
    let every = shared.lease_ttl() / 2;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = sweep(&shared).await {
            tracing::warn!(error = %e.message, "turn reaper sweep failed");
        }
    }
}

async fn sweep(shared: &Shared) -> ApiResult<()> {
    let now = chrono::Utc::now().timestamp_millis();
    for turn in shared.turns.overdue(now).await? {
        let Some(rec) = shared.turns.record(&turn).await? else {
            shared.turns.claim_finish(&turn).await?;
            continue;
        };
        // Still renewed by someone (a slow heartbeat): not orphaned.
        if shared.redis.lease_held(&TurnRecord::lease_name(rec.org_id, rec.chat_id)).await.unwrap_or(true) {
            continue;
        }
        if shared.turns.claim_finish(&turn).await? {
            tracing::warn!(turn = %turn, chat = rec.chat_id, "failing a turn whose orchestrator stopped");
            fail(shared, &rec, INTERRUPTED).await?;
        }
    }
    Ok(())
}

/// End a turn with `error`: note it on the assistant message, then publish
/// the final messages and the error event. The caller holds the claim.
pub async fn fail(shared: &Shared, rec: &TurnRecord, error: &str) -> ApiResult<()> {
    if shared.turns.finished(&rec.id).await? {
        return Ok(());
    }
    let (org, user) = (rec.org_id, rec.user_id);
    let tx = shared.db.tenant(org, user).await?;
    if let Some(m) = chats::message(&tx, org, rec.chat_id, rec.assistant_message_id).await?
        && m.commit_hash.is_none()
    {
        let mut content = m.content.clone();
        if !content.is_empty() {
            content.push_str("\n\n");
        }
        content.push_str(&format!("<blaze-output type=\"error\" message=\"{}\"></blaze-output>", blaze_tags::render::escape_attr(error)));
        chats::set_content(&tx, org, m.id, &content).await?;
    }
    audit::record(
        &tx,
        AuditEvent::new(org, "chat_stream_end", "chat")
            .workspace(rec.workspace_id)
            .actor(user)
            .resource(rec.chat_id)
            .outcome("failed")
            .metadata(serde_json::json!({"transport": "sse", "updatedFiles": false, "totalTokens": null, "requestId": rec.request_id, "interrupted": true})),
    )
    .await?;
    let messages = chats::messages(&tx, org, rec.chat_id).await?;
    tx.commit().await?;
    let chunk = pb::ChatResponseChunk { chat_id: rec.chat_id, messages: messages.into_iter().map(views::message).collect() };
    shared.turns.append(&rec.id, Event::Chunk(chunk)).await?;
    shared
        .turns
        .append(
            &rec.id,
            Event::Error(pb::ChatResponseError { chat_id: rec.chat_id, error: error.to_owned(), code: Some("TURN_INTERRUPTED".into()) }),
        )
        .await?;
    Ok(())
}
