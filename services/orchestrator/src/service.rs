//! `ChatStreamService`: start a turn (contract §4), resume its stream, cancel
//! it, and report the context a prompt would get.

use std::{collections::HashMap, pin::Pin};

use base64::Engine;
use blaze_db::{
    apps::{self, AppRow},
    audit::{self, AuditEvent},
    chats::{self, ChatRow, MessageRow, NewMessage},
    views,
};
use blaze_kit::{ApiError, ApiResult, RequestContext, parse_id};
use blaze_llm::{Image, estimate_tokens};
use blaze_proto::{
    artifacts as art,
    controlplane::{self as cp, quota_service_client::QuotaServiceClient, settings_service_client::SettingsServiceClient},
    orchestrator::{self as pb, chat_stream_service_server::ChatStreamService, resume_chat_stream_response, stream_chat_response::Event},
};
use blaze_redis::streams::is_stream_id;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    Shared, apply,
    context::{self, SourceFile},
    events::TurnRecord,
    input::{self, AttachmentKind, TurnInput},
    reaper,
    turn::Turn,
};

type Rpc<T> = Result<Response<T>, Status>;
type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) struct Scope {
    pub org: Uuid,
    pub ws: Uuid,
    pub user: Option<Uuid>,
    pub request_id: String,
}

pub(crate) fn scope(ctx: &RequestContext) -> ApiResult<Scope> {
    Ok(Scope {
        org: parse_id(ctx.org_id()?, "ORG_NOT_FOUND", "Organization")?,
        ws: parse_id(ctx.workspace_id()?, "WORKSPACE_NOT_FOUND", "Workspace")?,
        user: ctx.user_id().ok().and_then(|u| Uuid::parse_str(u).ok()),
        request_id: ctx.request_id.clone(),
    })
}

pub(crate) fn chat_not_found() -> ApiError {
    ApiError::not_found("CHAT_NOT_FOUND", "Chat not found")
}

/// The chat (in the caller's workspace), its app and its messages.
pub(crate) async fn load_chat(shared: &Shared, s: &Scope, chat_id: i64) -> ApiResult<(ChatRow, AppRow, Vec<MessageRow>)> {
    let tx = shared.db.tenant(s.org, s.user).await?;
    let chat = chats::get(&tx, s.org, s.ws, chat_id).await?.ok_or_else(chat_not_found)?;
    let app = apps::get_in_org(&tx, s.org, chat.app_id).await?.ok_or_else(chat_not_found)?;
    let messages = chats::messages(&tx, s.org, chat.id).await?;
    tx.commit().await?;
    Ok((chat, app, messages))
}

pub(crate) async fn turn_settings(shared: &Shared, s: &Scope) -> ApiResult<cp::ResolveTurnSettingsResponse> {
    let mut settings = SettingsServiceClient::new(shared.clients.intercepted("control-plane"));
    let req = cp::ResolveTurnSettingsRequest {
        organization_id: s.org.to_string(),
        workspace_id: s.ws.to_string(),
        user_id: s.user.map(|u| u.to_string()).unwrap_or_default(),
    };
    Ok(settings.resolve_turn_settings(req).await.map_err(|e| ApiError::from_status(&e))?.into_inner())
}

async fn check_quota(shared: &Shared, s: &Scope, metric: &str, amount: i64, record: bool) -> ApiResult<()> {
    let mut quota = QuotaServiceClient::new(shared.clients.intercepted("control-plane"));
    let req = cp::CheckQuotaRequest {
        organization_id: s.org.to_string(),
        workspace_id: s.ws.to_string(),
        user_id: s.user.map(|u| u.to_string()).unwrap_or_default(),
        metric: metric.into(),
        amount,
        record,
    };
    quota.check_quota(req).await.map_err(|e| ApiError::from_status(&e))?;
    Ok(())
}

fn invalid_event_id() -> ApiError {
    ApiError::invalid("Invalid payload: the event id to resume after is not valid")
}

pub struct ChatStream {
    shared: Shared,
}

impl ChatStream {
    pub(crate) fn new(shared: Shared) -> Self {
        ChatStream { shared }
    }

    /// Follow the chat's latest turn after `after`.
    async fn follow_current(&self, s: &Scope, chat_id: i64, after: &str) -> ApiResult<EventStream<pb::StreamChatResponse>> {
        if !after.is_empty() && !is_stream_id(after) {
            return Err(invalid_event_id());
        }
        let rec = self
            .shared
            .turns
            .current(s.org, chat_id)
            .await?
            .ok_or_else(|| ApiError::not_found("STREAM_NOT_FOUND", "There is no response stream for this chat"))?;
        Ok(Box::pin(self.shared.turns.follow(rec.id, after.to_owned())))
    }

    /// Everything up to the spawned turn; errors here are plain HTTP errors.
    async fn start(
        &self,
        s: &Scope,
        input: TurnInput,
        chat: ChatRow,
        app: AppRow,
        mut history: Vec<MessageRow>,
        lease: blaze_redis::lease::Lease,
    ) -> ApiResult<EventStream<pb::StreamChatResponse>> {
        let shared = &self.shared;
        // A previous turn whose replica died before the reaper noticed.
        if let Some(prev) = shared.turns.current(s.org, chat.id).await?
            && shared.turns.claim_finish(&prev.id).await?
        {
            reaper::fail(shared, &prev, reaper::INTERRUPTED).await?;
            // The interrupted turn's messages changed; read them again.
            history = load_chat(shared, s, chat.id).await?.2;
        }
        let settings = turn_settings(shared, s).await?;
        let mut repos = apply::repos(&shared.clients);
        let (files, head) = apply::read_files(&mut repos, s.org, app.id, "").await?;

        let prompt = crate::proposals::expand_prompt_refs(shared, s, &input.prompt).await?;
        let mut uploads = HashMap::new();
        let mut objects = apply::objects(&shared.clients);
        for (id, a) in input.uploads() {
            let put = art::PutAttachmentRequest {
                organization_id: s.org.to_string(),
                app_id: app.id,
                name: a.name.clone(),
                content_type: a.mime.clone(),
                content: a.bytes.clone(),
            };
            let key = objects.put_attachment(put).await.map_err(|e| ApiError::from_status(&e))?.into_inner().key;
            uploads.insert(id, (a.bytes.clone(), key));
        }
        let by_path: HashMap<&str, &SourceFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
        let components = input::components_block(&input.components, |p| by_path.get(p).and_then(|f| f.content.clone()));
        let user_content = input::user_message(&input, &prompt, &components);
        let mut model_prompt = user_content.clone();
        let mut images = Vec::new();
        for a in input.attachments.iter().filter(|a| a.kind == AttachmentKind::ChatContext) {
            if a.is_image() {
                images.push(Image { media_type: a.mime.clone(), base64: base64::engine::general_purpose::STANDARD.encode(&a.bytes) });
            } else if let Some(text) = a.text() {
                model_prompt.push_str(&format!("\n\nFull content of {}:\n```\n{text}\n```", a.name));
            }
        }

        // Pre-flight on tokens: what this turn can at most send.
        let estimate =
            (estimate_tokens(&model_prompt) + files.iter().map(|f| f.size / 4).sum::<i64>()).min(i64::from(settings.context_window));
        check_quota(shared, s, "tokens", estimate.max(1), false).await?;

        let mut priority: Vec<String> = input.components.iter().map(|c| c.relative_path.clone()).collect();
        priority.extend(context::named_paths(&prompt, &files));

        let tx = shared.db.tenant(s.org, s.user).await?;
        if input.redo
            && let Some(last_user) = history.iter().rev().find(|m| m.role == "user").map(|m| m.id)
        {
            chats::delete_messages_from(&tx, s.org, chat.id, last_user).await?;
            history.retain(|m| m.id < last_user);
        }
        let user_message = chats::insert_message(
            &tx,
            NewMessage {
                org_id: s.org,
                workspace_id: s.ws,
                chat_id: chat.id,
                user: s.user,
                role: "user",
                content: &user_content,
                source_commit_hash: None,
                request_id: None,
                model: None,
            },
        )
        .await?;
        let assistant = chats::insert_message(
            &tx,
            NewMessage {
                org_id: s.org,
                workspace_id: s.ws,
                chat_id: chat.id,
                user: s.user,
                role: "assistant",
                content: "",
                source_commit_hash: Some(&head),
                request_id: Some(&s.request_id),
                model: Some(&settings.model),
            },
        )
        .await?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "chat_stream_start", "chat").workspace(s.ws).actor(s.user).resource(chat.id).metadata(
                serde_json::json!({
                    "transport": "sse", "promptLength": input.prompt.chars().count(), "requestId": s.request_id,
                }),
            ),
        )
        .await?;
        tx.commit().await?;

        let rec = TurnRecord {
            id: Uuid::now_v7().to_string(),
            org_id: s.org,
            workspace_id: s.ws,
            chat_id: chat.id,
            app_id: app.id,
            user_id: s.user,
            user_message_id: user_message.id,
            assistant_message_id: assistant.id,
            request_id: s.request_id.clone(),
            started_ms: chrono::Utc::now().timestamp_millis(),
        };
        let deadline = rec.started_ms + shared.lease_ttl().as_millis() as i64;
        shared.turns.register(&rec, deadline).await?;

        let mut first: Vec<cp::Message> = history.iter().cloned().map(views::message).collect();
        first.push(views::message(user_message.clone()));
        first.push(views::message(assistant.clone()));
        shared.turns.append(&rec.id, Event::Chunk(pb::ChatResponseChunk { chat_id: chat.id, messages: first })).await?;

        let turn = Turn {
            shared: shared.clone(),
            rec: rec.clone(),
            lease,
            settings,
            model_prompt,
            images,
            has_uploads: !uploads.is_empty(),
            uploads,
            history,
            user_message,
            assistant,
            files,
            priority,
        };
        let span = tracing::info_span!("turn", turn = %rec.id, chat = rec.chat_id, request_id = %rec.request_id);
        tokio::spawn(tracing::Instrument::instrument(turn.run(), span));
        Ok(Box::pin(shared.turns.follow(rec.id, String::new())))
    }
}

#[tonic::async_trait]
impl ChatStreamService for ChatStream {
    type StreamChatStream = EventStream<pb::StreamChatResponse>;
    type ResumeChatStreamStream = EventStream<pb::ResumeChatStreamResponse>;

    async fn stream_chat(&self, req: Request<pb::StreamChatRequest>) -> Rpc<Self::StreamChatStream> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let (chat, app, history) = load_chat(&self.shared, &s, r.chat_id).await?;
        if !r.resume_after.is_empty() {
            return Ok(Response::new(self.follow_current(&s, chat.id, &r.resume_after).await?));
        }
        let input = input::validate(&r, &self.shared.cfg.chat)?;
        check_quota(&self.shared, &s, "requests", 1, true).await?;
        let lease = self
            .shared
            .redis
            .acquire_lease(&TurnRecord::lease_name(s.org, chat.id), self.shared.lease_ttl())
            .await
            .map_err(|e| ApiError::unavailable(format!("lease store unavailable: {e}")))?
            .ok_or_else(|| ApiError::conflict("CHAT_STREAM_ACTIVE", "Chat stream already active"))?;
        match self.start(&s, input, chat, app, history, lease.clone()).await {
            Ok(stream) => Ok(Response::new(stream)),
            Err(e) => {
                let _ = self.shared.redis.release_lease(&lease).await;
                Err(e.into())
            }
        }
    }

    async fn resume_chat_stream(&self, req: Request<pb::ResumeChatStreamRequest>) -> Rpc<Self::ResumeChatStreamStream> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let (chat, _, _) = load_chat(&self.shared, &s, r.chat_id).await?;
        let stream = self.follow_current(&s, chat.id, &r.after).await?;
        Ok(Response::new(Box::pin(stream.map(|item| {
            item.map(|e| pb::ResumeChatStreamResponse {
                event_id: e.event_id,
                event: e.event.map(|ev| match ev {
                    Event::Chunk(c) => resume_chat_stream_response::Event::Chunk(c),
                    Event::End(c) => resume_chat_stream_response::Event::End(c),
                    Event::Error(c) => resume_chat_stream_response::Event::Error(c),
                }),
            })
        }))))
    }

    async fn cancel_chat_stream(&self, req: Request<pb::CancelChatStreamRequest>) -> Rpc<pb::CancelChatStreamResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        let chat = chats::get(&tx, s.org, s.ws, r.chat_id).await.map_err(ApiError::from)?.ok_or_else(chat_not_found)?;
        tx.commit().await.map_err(ApiError::from)?;
        if let Some(rec) = self.shared.turns.current(s.org, chat.id).await?
            && !self.shared.turns.finished(&rec.id).await?
        {
            self.shared.turns.request_cancel(&rec.id).await?;
        }
        let tx = self.shared.db.tenant(s.org, s.user).await.map_err(ApiError::from)?;
        audit::record(
            &tx,
            AuditEvent::new(s.org, "chat_stream_cancel", "chat")
                .workspace(s.ws)
                .actor(s.user)
                .resource(chat.id)
                .metadata(serde_json::json!({"transport": "sse", "requestId": s.request_id})),
        )
        .await
        .map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CancelChatStreamResponse {}))
    }

    async fn get_context_report(&self, req: Request<pb::GetContextReportRequest>) -> Rpc<pb::GetContextReportResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let s = scope(&ctx)?;
        let (chat, app, history) = load_chat(&self.shared, &s, r.chat_id).await?;
        let settings = turn_settings(&self.shared, &s).await?;
        let mut repos = apply::repos(&self.shared.clients);
        let (files, _) = apply::read_files(&mut repos, s.org, app.id, "").await?;
        let ai_rules = files.iter().find(|f| f.path == "AI_RULES.md").and_then(|f| f.content.as_deref());
        let history: Vec<(blaze_llm::Role, String)> = history
            .iter()
            .filter_map(|m| match m.role.as_str() {
                "user" => Some((blaze_llm::Role::User, m.content.clone())),
                "assistant" => Some((blaze_llm::Role::Assistant, m.content.clone())),
                _ => None,
            })
            .collect();
        let _ = chat;
        let built = context::build(context::ContextInput {
            system: crate::prompts::system_prompt(&settings.chat_mode, ai_rules),
            files: &files,
            history: &history,
            prompt: r.input.clone(),
            images: Vec::new(),
            window: i64::from(settings.context_window.max(1_024)),
            reserved_output: i64::from(settings.max_output_tokens.max(256)),
            max_turns: settings.max_chat_turns_in_context.max(0) as usize,
            priority: context::named_paths(&r.input, &files),
        })
        .map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(Response::new(pb::GetContextReportResponse { data: Some(built.report) }))
    }
}
