//! Chats and messages (R24-R29).

use blaze_db::{
    apps,
    audit::{self, AuditEvent},
    chats,
    page::PageRequest,
    views,
};
use blaze_kit::{ApiError, ApiResult, RequestContext};
use blaze_proto::{
    artifacts as art,
    controlplane::{self as pb, chat_service_server::ChatService},
};
use tonic::{Request, Response, Status};

use crate::{
    Deps,
    apps::{repo_ref, repos, scope},
    quota,
};

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

fn chat_not_found() -> ApiError {
    ApiError::not_found("CHAT_NOT_FOUND", "Chat not found")
}

pub struct Chats {
    deps: Deps,
}

impl Chats {
    pub fn new(deps: Deps) -> Self {
        Chats { deps }
    }
}

#[tonic::async_trait]
impl ChatService for Chats {
    async fn list_app_chats(&self, req: Request<pb::ListAppChatsRequest>) -> Rpc<pb::ListAppChatsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, user).await?;
            apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(|| ApiError::not_found("APP_NOT_FOUND", "App not found"))?;
            let (rows, next) = chats::list(&tx, org, ws, Some(r.app_id), &page).await?;
            tx.commit().await?;
            Ok(pb::ListAppChatsResponse { data: rows.into_iter().map(views::chat_summary).collect(), next_page_token: next })
        }
        .await)
    }

    async fn create_chat(&self, req: Request<pb::CreateChatRequest>) -> Rpc<pb::CreateChatResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            {
                let tx = self.deps.db.tenant(org, user).await?;
                apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(|| ApiError::not_found("APP_NOT_FOUND", "App not found"))?;
                tx.commit().await?;
            }
            quota::check(
                &self.deps.db,
                &self.deps.cfg,
                quota::Check { org, workspace: Some(ws), user, metric: "requests", amount: 1, record: true },
            )
            .await?;
            let head = repos(&self.deps)
                .get_head(art::GetHeadRequest { repo: repo_ref(org, r.app_id) })
                .await
                .map_err(ApiError::from)?
                .into_inner()
                .commit_hash;
            let tx = self.deps.db.tenant(org, user).await?;
            let chat = chats::create(&tx, org, ws, r.app_id, user, (!head.is_empty()).then_some(head.as_str())).await?;
            audit::record(&tx, AuditEvent::new(org, "chat_create", "chat").workspace(ws).actor(user).resource(chat.id)).await?;
            tx.commit().await?;
            Ok(pb::CreateChatResponse { data: chat.id })
        }
        .await)
    }

    async fn list_chats(&self, req: Request<pb::ListChatsRequest>) -> Rpc<pb::ListChatsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let (rows, next) = chats::list(&tx, org, ws, None, &page).await?;
            tx.commit().await?;
            Ok(pb::ListChatsResponse { data: rows.into_iter().map(views::chat_summary).collect(), next_page_token: next })
        }
        .await)
    }

    async fn get_chat(&self, req: Request<pb::GetChatRequest>) -> Rpc<pb::GetChatResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let chat = chats::get(&tx, org, ws, r.chat_id).await?.ok_or_else(chat_not_found)?;
            let messages = chats::messages(&tx, org, chat.id).await?;
            tx.commit().await?;
            Ok(pb::GetChatResponse { data: Some(views::chat(chat, messages)) })
        }
        .await)
    }

    async fn update_chat(&self, req: Request<pb::UpdateChatRequest>) -> Rpc<pb::UpdateChatResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let title = r.title.as_deref().map(str::trim).filter(|t| !t.is_empty());
            if title.is_some_and(|t| t.chars().count() > 200) {
                return Err(ApiError::invalid("Invalid payload: \"title\" must be at most 200 characters"));
            }
            let tx = self.deps.db.tenant(org, user).await?;
            let chat = chats::update_title(&tx, org, ws, r.chat_id, title).await?.ok_or_else(chat_not_found)?;
            audit::record(
                &tx,
                AuditEvent::new(org, "chat_update", "chat")
                    .workspace(ws)
                    .actor(user)
                    .resource(chat.id)
                    .metadata(serde_json::json!({"fields": ["title"]})),
            )
            .await?;
            tx.commit().await?;
            Ok(pb::UpdateChatResponse { data: Some(pb::ChatTitle { id: chat.id, title: chat.title }) })
        }
        .await)
    }

    async fn delete_chat(&self, req: Request<pb::DeleteChatRequest>) -> Rpc<pb::DeleteChatResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            if chats::delete(&tx, org, ws, r.chat_id).await? == 0 {
                return Err(chat_not_found());
            }
            audit::record(&tx, AuditEvent::new(org, "chat_delete", "chat").workspace(ws).actor(user).resource(r.chat_id)).await?;
            tx.commit().await?;
            Ok(pb::DeleteChatResponse {})
        }
        .await)
    }
}
