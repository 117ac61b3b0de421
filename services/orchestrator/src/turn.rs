//! One running turn, detached from the request that started it.
//!
//! It streams the model (retries happen inside blaze-llm before the first
//! token), coalesces chunks to at most one per `chunk_interval_ms` (the first
//! text goes out at once), saves partial text periodically, polls for a
//! cancel request, continues an unclosed `blaze-write` (bounded rounds), then
//! applies the tags as one commit or stores a proposal, records usage and
//! ends with the final chunk (re-read from the database) and exactly one
//! terminal event. A heartbeat renews the chat lease; if it is lost, the turn
//! applies nothing.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use blaze_db::{
    audit::{self, AuditEvent},
    chats::{self, MessageOutcome, MessageRow},
    views,
};
use blaze_kit::{ApiError, ApiResult};
use blaze_llm::{ChatMessage, Image, LlmError, ModelConfig, ProviderKind, Role, StreamEvent, Usage, estimate_tokens};
use blaze_proto::{
    artifacts as art,
    controlplane::{self as cp, ResolveTurnSettingsResponse, quota_service_client::QuotaServiceClient},
    execution::{self as ex, preview_service_client::PreviewServiceClient},
    orchestrator::{self as pb, stream_chat_response::Event},
};
use blaze_redis::lease::Lease;
use futures::StreamExt;
use tokio::time::{Interval, MissedTickBehavior};

use crate::{
    Shared,
    apply::{self, StoredPlan},
    context::{self, ContextInput, SourceFile},
    events::TurnRecord,
    prompts,
};

pub const CANCELLED_MARKER: &str = "\n\n[Response cancelled by user]";

/// Everything a turn needs, decided before its stream started.
pub struct Turn {
    pub shared: Shared,
    pub rec: TurnRecord,
    pub lease: Lease,
    pub settings: ResolveTurnSettingsResponse,
    /// The prompt as the model sees it (attachment contents inlined).
    pub model_prompt: String,
    pub images: Vec<Image>,
    pub has_uploads: bool,
    /// Upload id → bytes and object key.
    pub uploads: HashMap<String, (Vec<u8>, String)>,
    /// Messages before this turn, oldest first.
    pub history: Vec<MessageRow>,
    pub user_message: MessageRow,
    pub assistant: MessageRow,
    pub files: Vec<SourceFile>,
    pub priority: Vec<String>,
}

enum Outcome {
    Completed { text: String, usage: Usage, report: pb::ContextReport },
    Cancelled { text: String, usage: Usage },
    Failed { text: String, usage: Usage, error: String, code: &'static str },
}

fn interval(d: Duration) -> Interval {
    let mut i = tokio::time::interval(d);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Turn {
    /// Run to the end; never panics the process on a failure, always leaves
    /// a terminal event (or the reaper will).
    pub async fn run(self) {
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(self.shared.clone(), self.rec.id.clone(), self.lease.clone(), lost.clone()));
        let outcome = self.generate().await;
        if let Err(e) = self.finish(outcome, &lost).await {
            tracing::error!(turn = %self.rec.id, error = %e.message, "finishing the turn failed");
            // Fail it cleanly rather than leaving followers waiting.
            let _ = self.shared.turns.claim_finish(&self.rec.id).await;
            let _ = crate::reaper::fail(&self.shared, &self.rec, "Sorry, there was an error finishing the response. Nothing was changed.")
                .await;
        }
        heartbeat.abort();
        if let Err(e) = self.shared.redis.release_lease(&self.lease).await {
            tracing::warn!(turn = %self.rec.id, error = %e, "releasing the chat lease failed (it will expire)");
        }
    }

    fn model_config(&self) -> ModelConfig {
        let s = &self.settings;
        ModelConfig {
            kind: ProviderKind::parse(&s.provider_kind),
            base_url: s.base_url.clone(),
            api_key: s.api_key.clone(),
            model: s.model.clone(),
            max_output_tokens: s.max_output_tokens.max(256) as u32,
            temperature: 0.0,
        }
    }

    fn context(&self) -> Result<context::Context, context::TooLarge> {
        let ai_rules = self.files.iter().find(|f| f.path == "AI_RULES.md").and_then(|f| f.content.as_deref());
        let mut system = prompts::system_prompt(&self.settings.chat_mode, ai_rules);
        if self.has_uploads {
            system.push_str(prompts::UPLOAD_INSTRUCTIONS);
        }
        if !self.images.is_empty() {
            system.push_str(prompts::IMAGE_INSTRUCTIONS);
        }
        let history: Vec<(Role, String)> = self
            .history
            .iter()
            .filter_map(|m| match m.role.as_str() {
                "user" => Some((Role::User, m.content.clone())),
                "assistant" => Some((Role::Assistant, m.content.clone())),
                _ => None,
            })
            .collect();
        context::build(ContextInput {
            system,
            files: &self.files,
            history: &history,
            prompt: self.model_prompt.clone(),
            images: self.images.clone(),
            window: i64::from(self.settings.context_window.max(1_024)),
            reserved_output: i64::from(self.settings.max_output_tokens.max(256)),
            max_turns: self.settings.max_chat_turns_in_context.max(0) as usize,
            priority: self.priority.clone(),
        })
    }

    /// The whole message list with the placeholder showing `text`.
    fn messages(&self, text: &str) -> Vec<blaze_proto::controlplane::Message> {
        let mut out: Vec<_> = self.history.iter().cloned().map(views::message).collect();
        out.push(views::message(self.user_message.clone()));
        let mut a = self.assistant.clone();
        a.content = text.to_owned();
        out.push(views::message(a));
        out
    }

    async fn emit(&self, event: Event) -> ApiResult<String> {
        self.shared.turns.append(&self.rec.id, event).await
    }

    async fn emit_chunk(&self, text: &str) {
        let chunk = pb::ChatResponseChunk { chat_id: self.rec.chat_id, messages: self.messages(text) };
        if let Err(e) = self.emit(Event::Chunk(chunk)).await {
            tracing::warn!(turn = %self.rec.id, error = %e.message, "could not publish a chunk");
        }
    }

    async fn save_partial(&self, text: &str) {
        let res = async {
            let tx = self.shared.db.tenant(self.rec.org_id, self.rec.user_id).await?;
            chats::set_content(&tx, self.rec.org_id, self.assistant.id, text).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(turn = %self.rec.id, error = %e, "could not save partial text");
        }
    }

    async fn generate(&self) -> Outcome {
        let ctx = match self.context() {
            Ok(ctx) => ctx,
            Err(too_large) => {
                return Outcome::Failed {
                    text: String::new(),
                    usage: Usage::default(),
                    error: too_large.to_string(),
                    code: "CONTEXT_TOO_LARGE",
                };
            }
        };
        let cfg = self.model_config();
        let chat = &self.shared.cfg.chat;
        let mut text = String::new();
        let mut usage = Usage::default();
        let mut messages = ctx.messages;
        let mut rounds = 0;
        loop {
            let round = self.stream_round(&cfg, &messages, &mut text, &mut usage).await;
            match round {
                Round::Done => {}
                Round::Cancelled => return Outcome::Cancelled { text, usage },
                Round::Failed(e) => {
                    let error = format!("Sorry, there was an error from the AI: [Request ID: {}] {e}", self.rec.request_id);
                    return Outcome::Failed { text, usage, error, code: "MODEL_ERROR" };
                }
            }
            // An unclosed blaze-write usually means the output limit cut the
            // file: continue it with the partial response pre-filled.
            let unclosed = blaze_tags::parse(&text).unclosed.is_some_and(|t| t.name == "blaze-write");
            if !unclosed || rounds >= chat.max_continuations {
                break;
            }
            rounds += 1;
            tracing::info!(turn = %self.rec.id, round = rounds, "continuing an unclosed blaze-write");
            if messages.last().is_some_and(|m| m.role == Role::Assistant) {
                messages.pop();
            }
            messages.push(ChatMessage::new(Role::Assistant, text.clone()));
        }
        Outcome::Completed { text, usage, report: ctx.report }
    }

    /// One model call appended to `text`.
    async fn stream_round(&self, cfg: &ModelConfig, messages: &[ChatMessage], text: &mut String, usage: &mut Usage) -> Round {
        let chat = &self.shared.cfg.chat;
        let mut cancel_tick = interval(Duration::from_millis(chat.cancel_poll_ms.max(20)));
        let mut persist_tick = interval(Duration::from_millis(chat.persist_interval_ms.max(50)));
        let chunk_every = Duration::from_millis(chat.chunk_interval_ms);

        // Open the stream while still watching for a cancel.
        let opened_at = Instant::now();
        let open = self.shared.llm.stream(cfg, messages);
        tokio::pin!(open);
        let mut stream = loop {
            tokio::select! {
                r = &mut open => match r {
                    Ok(s) => break s,
                    Err(e) => return Round::Failed(e),
                },
                _ = cancel_tick.tick() => if self.shared.turns.cancel_requested(&self.rec.id).await { return Round::Cancelled },
            }
        };

        let base_usage = *usage;
        let mut last_emit: Option<Instant> = None;
        let mut emitted_len = text.len();
        let mut saved_len = text.len();
        let first_text = text.is_empty();
        loop {
            let flush_at = last_emit.map(|t| t + chunk_every);
            let pending = text.len() != emitted_len;
            tokio::select! {
                biased;
                _ = cancel_tick.tick() => {
                    if self.shared.turns.cancel_requested(&self.rec.id).await {
                        return Round::Cancelled;
                    }
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now).into()), if pending => {
                    self.emit_chunk(text).await;
                    emitted_len = text.len();
                    last_emit = Some(Instant::now());
                }
                _ = persist_tick.tick(), if text.len() != saved_len => {
                    self.save_partial(text).await;
                    saved_len = text.len();
                }
                ev = stream.next() => match ev {
                    Some(Ok(StreamEvent::Delta(d))) => {
                        text.push_str(&d);
                        // The first text of a turn goes out at once (time to
                        // first token); later ones are coalesced.
                        if first_text && last_emit.is_none() {
                            blaze_kit::metrics::metrics().time_to_first_token_seconds.observe(opened_at.elapsed().as_secs_f64());
                            self.emit_chunk(text).await;
                            emitted_len = text.len();
                            last_emit = Some(Instant::now());
                        }
                    }
                    Some(Ok(StreamEvent::Usage(u))) => {
                        usage.input_tokens = base_usage.input_tokens + u.input_tokens;
                        usage.output_tokens = base_usage.output_tokens + u.output_tokens;
                    }
                    Some(Err(e)) => {
                        if text.len() != emitted_len {
                            self.emit_chunk(text).await;
                        }
                        return Round::Failed(e);
                    }
                    None => {
                        if text.len() != emitted_len {
                            self.emit_chunk(text).await;
                        }
                        return Round::Done;
                    }
                },
            }
        }
    }

    async fn finish(&self, outcome: Outcome, lost: &AtomicBool) -> ApiResult<()> {
        let s = &self.shared;
        let (org, user) = (self.rec.org_id, self.rec.user_id);
        let mut content;
        let mut plan_json = None;
        let mut commit_hash = None;
        let mut approval = None;
        let mut updated_files = false;
        let mut title = None;
        let mut audits: Vec<AuditEvent<'static>> = Vec::new();
        let terminal: Event;
        let usage;
        let mut total_tokens = None;
        let mut context_window = None;
        let mut report_out = None;

        match outcome {
            Outcome::Completed { text, usage: u, report } => {
                usage = u;
                content = text.clone();
                let parsed = blaze_tags::parse(&text);
                let mode_ask = self.settings.chat_mode == "ask";
                let guard = apply::guardrails(&s.cfg.chat);
                let mut errors = String::new();
                let mut apply_error = None;
                if !mode_ask && !parsed.tags.is_empty() {
                    if self.settings.auto_approve_changes {
                        if lost.load(Ordering::SeqCst) {
                            return Err(ApiError::unavailable("the chat lease was lost before applying"));
                        }
                        let uploads: HashMap<String, Vec<u8>> = self.uploads.iter().map(|(k, (b, _))| (k.clone(), b.clone())).collect();
                        let mut repos = apply::repos(&s.clients);
                        match apply::apply(
                            &s.clients,
                            &mut repos,
                            (org, self.rec.workspace_id),
                            self.rec.app_id,
                            &parsed.tags,
                            &guard,
                            &uploads,
                        )
                        .await
                        {
                            Ok(applied) => {
                                title = applied.plan.title.clone();
                                errors = applied.plan.error_output();
                                if let Some(e) = &applied.dependency_error {
                                    errors.push_str(&format!(
                                        "\n<blaze-output type=\"error\" message=\"{}\"></blaze-output>",
                                        blaze_tags::render::escape_attr(e)
                                    ));
                                }
                                audits.extend(action_audits(&self.rec, &applied.plan));
                                if let Some(hash) = applied.commit_hash {
                                    updated_files = true;
                                    approval = Some("approved");
                                    commit_hash = Some(hash);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(turn = %self.rec.id, error = %e.message, "applying the changes failed");
                                apply_error = Some(format!("Sorry, there was an error applying the changes: {}", e.message));
                            }
                        }
                    } else {
                        let files = apply::file_map(&self.files);
                        let plan = blaze_tags::build(&parsed.tags, &files, &guard);
                        title = plan.title.clone();
                        errors = plan.error_output();
                        audits.extend(violation_audits(&self.rec, &plan));
                        if !plan.is_empty() {
                            let stored = StoredPlan {
                                version: 1,
                                response: text.clone(),
                                uploads: self.uploads.iter().map(|(id, (_, key))| (id.clone(), key.clone())).collect(),
                            };
                            plan_json = Some(serde_json::to_value(stored).map_err(ApiError::internal)?);
                        }
                    }
                }
                if !errors.is_empty() {
                    content.push_str("\n\n");
                    content.push_str(&errors);
                }
                let total = usage.total().max(estimate_tokens(&text));
                total_tokens = Some(total);
                context_window = Some(i64::from(report.context_window));
                report_out = Some(report);
                terminal = match apply_error {
                    Some(error) => {
                        Event::Error(pb::ChatResponseError { chat_id: self.rec.chat_id, error, code: Some("APPLY_FAILED".into()) })
                    }
                    None => Event::End(pb::ChatResponseEnd {
                        chat_id: self.rec.chat_id,
                        updated_files,
                        total_tokens,
                        context_window,
                        commit_hash: commit_hash.clone(),
                        context: report_out.clone(),
                        ..Default::default()
                    }),
                };
            }
            Outcome::Cancelled { text, usage: u } => {
                usage = u;
                content = format!("{text}{CANCELLED_MARKER}");
                terminal = Event::End(pb::ChatResponseEnd { chat_id: self.rec.chat_id, updated_files: false, ..Default::default() });
            }
            Outcome::Failed { text, usage: u, error, code } => {
                usage = u;
                content = text;
                if !content.is_empty() {
                    content.push_str("\n\n");
                }
                content.push_str(&format!(
                    "<blaze-output type=\"error\" message=\"{}\"></blaze-output>",
                    blaze_tags::render::escape_attr(&error)
                ));
                terminal = Event::Error(pb::ChatResponseError { chat_id: self.rec.chat_id, error, code: Some(code.into()) });
            }
        }

        // Usage goes to the ledger whatever the outcome: the tokens were spent.
        if usage.total() > 0 {
            let mut quota = QuotaServiceClient::new(s.clients.intercepted("control-plane"));
            let req = cp::RecordUsageRequest {
                organization_id: org.to_string(),
                workspace_id: self.rec.workspace_id.to_string(),
                user_id: user.map(|u| u.to_string()).unwrap_or_default(),
                metric: "tokens".into(),
                value: usage.total(),
                model: self.settings.model.clone(),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                occurred_at: None,
            };
            if let Err(e) = quota.record_usage(req).await {
                tracing::error!(turn = %self.rec.id, error = %e.message(), "recording usage failed");
            }
        }

        if !s.turns.claim_finish(&self.rec.id).await? {
            tracing::warn!(turn = %self.rec.id, "the turn was already finished by the reaper");
            return Ok(());
        }
        let tx = s.db.tenant(org, user).await?;
        chats::finish_message(
            &tx,
            org,
            self.assistant.id,
            MessageOutcome {
                content: &content,
                plan: plan_json,
                commit_hash: commit_hash.as_deref(),
                approval_state: approval,
                tokens: total_tokens,
            },
        )
        .await?;
        if let Some(t) = &title {
            chats::set_title_if_unset(&tx, org, self.rec.chat_id, t).await?;
        }
        if commit_hash.is_some() {
            blaze_db::apps::set_preview_ref(&tx, org, self.rec.app_id, None).await?;
        }
        for a in audits {
            audit::record(&tx, a).await?;
        }
        audit::record(
            &tx,
            AuditEvent::new(org, "chat_stream_end", "chat")
                .workspace(self.rec.workspace_id)
                .actor(user)
                .resource(self.rec.chat_id)
                .outcome(if matches!(terminal, Event::Error(_)) { "failed" } else { "success" })
                .metadata(serde_json::json!({
                    "transport": "sse", "updatedFiles": updated_files, "totalTokens": total_tokens, "requestId": self.rec.request_id,
                })),
        )
        .await?;
        let messages = chats::messages(&tx, org, self.rec.chat_id).await?;
        tx.commit().await?;

        let chunk = pb::ChatResponseChunk { chat_id: self.rec.chat_id, messages: messages.into_iter().map(views::message).collect() };
        self.emit(Event::Chunk(chunk)).await?;
        self.emit(terminal).await?;
        let _ = (context_window, report_out);

        if let Some(hash) = commit_hash {
            sync_preview(s, org, self.rec.app_id, &hash).await;
        }
        Ok(())
    }
}

enum Round {
    Done,
    Cancelled,
    Failed(LlmError),
}

pub fn author() -> art::Author {
    art::Author { name: "Blaze".into(), email: "ai@blaze.dev".into() }
}

/// Renew the lease (and the reaper's deadline) until aborted; flag a loss.
async fn heartbeat(shared: Shared, turn: String, lease: Lease, lost: Arc<AtomicBool>) {
    let ttl = shared.lease_ttl();
    let mut tick = interval(ttl / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match shared.redis.renew_lease(&lease, ttl).await {
            Ok(true) => {
                let deadline = chrono::Utc::now().timestamp_millis() + ttl.as_millis() as i64;
                let _ = shared.turns.touch(&turn, deadline).await;
            }
            Ok(false) => {
                tracing::error!(turn = %turn, "the chat lease was lost; the turn will not apply changes");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::warn!(turn = %turn, error = %e, "renewing the chat lease failed; retrying"),
        }
    }
}

fn base_audit(rec: &TurnRecord, action: &'static str, resource_type: &'static str) -> AuditEvent<'static> {
    AuditEvent::new(rec.org_id, action, resource_type).workspace(rec.workspace_id).actor(rec.user_id)
}

/// One audit event per refused action.
pub fn violation_audits(rec: &TurnRecord, plan: &blaze_tags::Plan) -> Vec<AuditEvent<'static>> {
    plan.violations
        .iter()
        .map(|v| {
            base_audit(rec, "model_action_rejected", "app")
                .resource(rec.app_id)
                .outcome("denied")
                .metadata(serde_json::json!({"kind": v.kind, "message": v.message, "chatId": rec.chat_id}))
        })
        .collect()
}

/// One audit event per executed action, plus the refused ones.
pub fn action_audits(rec: &TurnRecord, plan: &blaze_tags::Plan) -> Vec<AuditEvent<'static>> {
    let mut out = violation_audits(rec, plan);
    let meta = |v: serde_json::Value| base_audit(rec, "model_action", "app").resource(rec.app_id).metadata(v);
    for path in &plan.deletes {
        out.push(meta(serde_json::json!({"action": "delete", "path": path, "chatId": rec.chat_id})));
    }
    for (from, to) in &plan.renames {
        out.push(meta(serde_json::json!({"action": "rename", "from": from, "to": to, "chatId": rec.chat_id})));
    }
    for path in plan.writes.keys() {
        out.push(meta(serde_json::json!({"action": "write", "path": path, "chatId": rec.chat_id})));
    }
    if !plan.packages.is_empty() {
        out.push(meta(serde_json::json!({"action": "add_dependency", "packages": plan.packages, "chatId": rec.chat_id})));
    }
    out
}

/// Push the new commit into a running preview (HMR); no preview is fine.
pub async fn sync_preview(shared: &Shared, org: uuid::Uuid, app: i64, commit: &str) {
    let mut previews = PreviewServiceClient::new(shared.clients.intercepted("execution"));
    let req = ex::SyncPreviewRequest { organization_id: org.to_string(), app_id: app, commit_hash: commit.to_owned() };
    match previews.sync_preview(req).await {
        Ok(_) => {}
        Err(s) if matches!(s.code(), tonic::Code::Unimplemented | tonic::Code::NotFound | tonic::Code::Unavailable) => {}
        Err(s) => tracing::warn!(app, error = %s.message(), "syncing the preview failed"),
    }
}
