//! The prompt library: a user's saved prompts (`@prompt:<id>` in chat).

use blaze_db::prompts::{self, PromptRow};
use blaze_kit::{ApiError, ApiResult, RequestContext, timestamp};
use blaze_proto::controlplane::{self as pb, prompt_service_server::PromptService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, tenancy::org_of};

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

fn not_found() -> ApiError {
    ApiError::not_found("PROMPT_NOT_FOUND", "Prompt not found")
}

fn view(r: PromptRow) -> pb::Prompt {
    pb::Prompt {
        id: r.id,
        title: r.title,
        description: r.description,
        content: r.content,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn caller(ctx: &RequestContext) -> ApiResult<(Uuid, Uuid)> {
    let org = org_of(ctx)?;
    let user = Uuid::parse_str(ctx.user_id()?).map_err(|_| ApiError::unauthenticated("This operation needs a user"))?;
    Ok((org, user))
}

fn title(v: &str) -> ApiResult<String> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 200 {
        return Err(ApiError::invalid("Invalid payload: \"title\" must be 1 to 200 characters"));
    }
    Ok(t.to_owned())
}

fn content(v: &str) -> ApiResult<String> {
    if v.trim().is_empty() || v.chars().count() > 100_000 {
        return Err(ApiError::invalid("Invalid payload: \"content\" must be 1 to 100000 characters"));
    }
    Ok(v.to_owned())
}

pub struct Prompts {
    deps: Deps,
}

impl Prompts {
    pub fn new(deps: Deps) -> Self {
        Prompts { deps }
    }
}

#[tonic::async_trait]
impl PromptService for Prompts {
    async fn list_prompts(&self, req: Request<pb::ListPromptsRequest>) -> Rpc<pb::ListPromptsResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let (org, user) = caller(&ctx)?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let rows = prompts::list(&tx, org, user).await?;
            tx.commit().await?;
            Ok(pb::ListPromptsResponse { data: rows.into_iter().map(view).collect() })
        }
        .await)
    }

    async fn create_prompt(&self, req: Request<pb::CreatePromptRequest>) -> Rpc<pb::CreatePromptResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, user) = caller(&ctx)?;
            let (t, c) = (title(&r.title)?, content(&r.content)?);
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row = prompts::create(&tx, org, user, &t, r.description.as_deref(), &c).await?;
            tx.commit().await?;
            Ok(pb::CreatePromptResponse { data: Some(view(row)) })
        }
        .await)
    }

    async fn update_prompt(&self, req: Request<pb::UpdatePromptRequest>) -> Rpc<pb::UpdatePromptResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, user) = caller(&ctx)?;
            let t = r.title.as_deref().map(title).transpose()?;
            let c = r.content.as_deref().map(content).transpose()?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let row = prompts::update(&tx, org, user, r.prompt_id, t.as_deref(), r.description.as_deref().map(Some), c.as_deref())
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await?;
            Ok(pb::UpdatePromptResponse { data: Some(view(row)) })
        }
        .await)
    }

    async fn delete_prompt(&self, req: Request<pb::DeletePromptRequest>) -> Rpc<pb::DeletePromptResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, user) = caller(&ctx)?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            if prompts::delete(&tx, org, user, r.prompt_id).await? == 0 {
                return Err(not_found());
            }
            tx.commit().await?;
            Ok(pb::DeletePromptResponse {})
        }
        .await)
    }
}
