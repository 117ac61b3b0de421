//! Proposals (manual-apply mode, contract R30–R32): a turn's changes wait
//! on its assistant message until the user approves (one commit, applied
//! against the current tip; approving twice returns the first result) or
//! rejects them. Also `@prompt:<id>` expansion from the prompt library.

use std::{collections::HashMap, time::Duration};

use blaze_db::{
    audit::{self, AuditEvent},
    chats::{self, MessageRow},
    prompts,
};
use blaze_kit::{ApiError, ApiResult, RequestContext};
use blaze_proto::{
    artifacts as art,
    orchestrator::{self as pb, proposal_service_server::ProposalService},
};
use tonic::{Request, Response, Status};

use crate::{
    Shared,
    apply::{self, StoredPlan},
    events::TurnRecord,
    service::{Scope, load_chat, scope, turn_settings},
    turn::{self, action_audits},
};

type Rpc<T> = Result<Response<T>, Status>;

const DEFAULT_TITLE: &str = "Proposed File Changes";
/// How long approve waits for a running turn (or another approve) of the chat.
const LEASE_WAIT: Duration = Duration::from_secs(10);

/// Replace `@prompt:<id>` with the caller's saved prompt (unknown ids stay).
pub async fn expand_prompt_refs(shared: &Shared, s: &Scope, prompt: &str) -> ApiResult<String> {
    const TAG: &str = "@prompt:";
    let Some(user) = s.user else { return Ok(prompt.to_owned()) };
    if !prompt.contains(TAG) {
        return Ok(prompt.to_owned());
    }
    let tx = shared.db.tenant(s.org, Some(user)).await?;
    let mut out = String::with_capacity(prompt.len());
    let mut rest = prompt;
    while let Some(i) = rest.find(TAG) {
        out.push_str(&rest[..i]);
        let after = &rest[i + TAG.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let found = match after[..digits].parse::<i64>() {
            Ok(id) => prompts::get(&tx, s.org, user, id).await?,
            Err(_) => None,
        };
        match found {
            Some(p) => out.push_str(&p.content),
            None => out.push_str(&rest[i..i + TAG.len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    tx.commit().await?;
    Ok(out)
}

fn message_not_found(chat: i64, message: i64) -> ApiError {
    ApiError::not_found("MESSAGE_NOT_FOUND", format!("Assistant message not found for chatId: {chat}, messageId: {message}"))
}

fn stored_plan(m: &MessageRow) -> Option<StoredPlan> {
    m.plan.clone().and_then(|v| serde_json::from_value(v).ok())
}

pub struct Proposals {
    shared: Shared,
}

impl Proposals {
    pub(crate) fn new(shared: Shared) -> Self {
        Proposals { shared }
    }

    async fn lease(&self, s: &Scope, chat: i64) -> ApiResult<blaze_redis::lease::Lease> {
        let name = TurnRecord::lease_name(s.org, chat);
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            let got =
                self.shared.redis.acquire_lease(&name, self.shared.lease_ttl()).await.map_err(|e| ApiError::unavailable(e.to_string()))?;
            if let Some(lease) = got {
                return Ok(lease);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::conflict("CHAT_STREAM_ACTIVE", "Chat stream already active"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn approve(&self, s: &Scope, chat_id: i64, message_id: i64) -> ApiResult<pb::ApproveProposalResult> {
        let shared = &self.shared;
        let (chat, app, messages) = load_chat(shared, s, chat_id).await?;
        let message = messages
            .into_iter()
            .find(|m| m.id == message_id && m.role == "assistant")
            .ok_or_else(|| message_not_found(chat.id, message_id))?;
        let done = |m: &MessageRow| pb::ApproveProposalResult {
            updated_files: Some(m.commit_hash.is_some()),
            commit_hash: m.commit_hash.clone(),
            ..Default::default()
        };
        match message.approval_state.as_deref() {
            Some("approved") => return Ok(done(&message)),
            Some(_) => return Err(ApiError::conflict("PROPOSAL_REJECTED", "This proposal was rejected")),
            None => {}
        }
        let settings = turn_settings(shared, s).await?;
        if settings.chat_mode == "ask" {
            return Err(ApiError::precondition(
                "ASK_MODE",
                "Ask mode is not supported for proposal approval. Please switch to build mode.",
            ));
        }
        let stored = stored_plan(&message).ok_or_else(|| ApiError::precondition("NO_PROPOSAL", "This message has no changes to apply"))?;

        let lease = self.lease(s, chat.id).await?;
        let result = async {
            // Re-read under the lease: a concurrent approve may have won.
            let tx = shared.db.tenant(s.org, s.user).await?;
            let current = chats::message(&tx, s.org, chat.id, message.id).await?.ok_or_else(|| message_not_found(chat.id, message_id))?;
            tx.commit().await?;
            if current.approval_state.is_some() {
                return match current.approval_state.as_deref() {
                    Some("approved") => Ok(done(&current)),
                    _ => Err(ApiError::conflict("PROPOSAL_REJECTED", "This proposal was rejected")),
                };
            }
            let mut repos = apply::repos(&shared.clients);
            let mut uploads = HashMap::new();
            let mut objects = apply::objects(&shared.clients);
            for (id, key) in &stored.uploads {
                let got = objects
                    .get_attachment(art::GetAttachmentRequest { organization_id: s.org.to_string(), key: key.clone() })
                    .await
                    .map_err(|e| ApiError::from_status(&e))?;
                uploads.insert(id.clone(), got.into_inner().content);
            }
            let tags = blaze_tags::parse(&stored.response).tags;
            let guard = apply::guardrails(&shared.cfg.chat);
            let applied = apply::apply(&shared.clients, &mut repos, (s.org, s.ws), app.id, &tags, &guard, &uploads).await?;
            let rec = TurnRecord {
                id: String::new(),
                org_id: s.org,
                workspace_id: s.ws,
                chat_id: chat.id,
                app_id: app.id,
                user_id: s.user,
                user_message_id: 0,
                assistant_message_id: message.id,
                request_id: s.request_id.clone(),
                started_ms: 0,
            };
            let tx = shared.db.tenant(s.org, s.user).await?;
            chats::set_approval(&tx, s.org, message.id, "approved", applied.commit_hash.as_deref()).await?;
            if applied.commit_hash.is_some() {
                blaze_db::apps::set_preview_ref(&tx, s.org, app.id, None).await?;
            }
            for a in action_audits(&rec, &applied.plan) {
                audit::record(&tx, a).await?;
            }
            audit::record(
                &tx,
                AuditEvent::new(s.org, "proposal_approve", "message")
                    .workspace(s.ws)
                    .actor(s.user)
                    .resource(message.id)
                    .metadata(serde_json::json!({"chatId": chat.id, "commitHash": applied.commit_hash})),
            )
            .await?;
            tx.commit().await?;
            if let Some(hash) = &applied.commit_hash {
                turn::sync_preview(shared, s.org, app.id, hash).await;
            }
            Ok(pb::ApproveProposalResult {
                updated_files: Some(applied.commit_hash.is_some()),
                commit_hash: applied.commit_hash,
                extra_files_error: applied.dependency_error,
                ..Default::default()
            })
        }
        .await;
        let _ = shared.redis.release_lease(&lease).await;
        result
    }
}

#[tonic::async_trait]
impl ProposalService for Proposals {
    async fn get_proposal(&self, req: Request<pb::GetProposalRequest>) -> Rpc<pb::GetProposalResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let (chat, app, messages) = load_chat(&self.shared, &s, r.chat_id).await?;
        // The latest assistant message, if it still waits for a decision.
        let Some(latest) = messages.iter().filter(|m| m.role == "assistant").max_by_key(|m| (m.created_at, m.id)) else {
            return Ok(Response::new(pb::GetProposalResponse { data: None }));
        };
        let pending = latest.approval_state.is_none() && !latest.content.is_empty();
        let Some(stored) = stored_plan(latest).filter(|_| pending) else {
            return Ok(Response::new(pb::GetProposalResponse { data: None }));
        };
        let mut repos = apply::repos(&self.shared.clients);
        let (files, _) = apply::read_files(&mut repos, s.org, app.id, "").await?;
        let tags = blaze_tags::parse(&stored.response).tags;
        let plan = blaze_tags::build(&tags, &apply::file_map(&files), &apply::guardrails(&self.shared.cfg.chat));
        if plan.is_empty() {
            return Ok(Response::new(pb::GetProposalResponse { data: None }));
        }
        let proposal = pb::CodeProposal {
            r#type: "code-proposal".into(),
            title: plan.title.clone().unwrap_or_else(|| DEFAULT_TITLE.to_owned()),
            security_risks: Vec::new(),
            files_changed: plan
                .file_changes
                .iter()
                .map(|c| pb::FileChange { name: c.name.clone(), path: c.path.clone(), summary: c.summary.clone(), r#type: c.kind.clone() })
                .collect(),
            packages_added: plan.packages.clone(),
        };
        Ok(Response::new(pb::GetProposalResponse {
            data: Some(pb::ProposalResult { proposal: Some(proposal), chat_id: chat.id, message_id: latest.id }),
        }))
    }

    async fn approve_proposal(&self, req: Request<pb::ApproveProposalRequest>) -> Rpc<pb::ApproveProposalResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let result = self.approve(&s, r.chat_id, r.message_id).await?;
        Ok(Response::new(pb::ApproveProposalResponse { data: Some(result) }))
    }

    async fn reject_proposal(&self, req: Request<pb::RejectProposalRequest>) -> Rpc<pb::RejectProposalResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let (chat, _, messages) = load_chat(&self.shared, &s, r.chat_id).await?;
        let message = messages
            .into_iter()
            .find(|m| m.id == r.message_id && m.role == "assistant")
            .ok_or_else(|| message_not_found(chat.id, r.message_id))?;
        match message.approval_state.as_deref() {
            Some("approved") => return Err(ApiError::conflict("PROPOSAL_ALREADY_APPROVED", "This proposal was already approved").into()),
            Some(_) => return Ok(Response::new(pb::RejectProposalResponse {})),
            None => {}
        }
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        chats::set_approval(&tx, s.org, message.id, "rejected", None).await.map_err(ApiError::from)?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "proposal_reject", "message")
                .workspace(s.ws)
                .actor(s.user)
                .resource(message.id)
                .metadata(serde_json::json!({"chatId": chat.id})),
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::RejectProposalResponse {}))
    }
}
