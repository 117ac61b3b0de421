//! Apps (R10-R17), their versions (R21-R23) and the template catalogue.
//! Repository work goes to the artifacts role; an app row only exists when
//! its repository does (create is all or nothing).

use blaze_db::{
    apps::{self, NewApp},
    audit::{self, AuditEvent},
    chats,
    page::PageRequest,
    tenancy, views,
};
use blaze_kit::{ApiError, ApiResult, RequestContext, client::Intercepted, timestamp};
use blaze_proto::{
    artifacts::{self as art, repository_service_client::RepositoryServiceClient},
    controlplane::{
        self as pb, app_service_server::AppService, template_service_server::TemplateService, version_service_server::VersionService,
    },
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, quota, tenancy::required_name};

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

pub(crate) fn repos(deps: &Deps) -> RepositoryServiceClient<Intercepted> {
    RepositoryServiceClient::new(deps.clients.intercepted("artifacts"))
        .max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES)
}

pub(crate) fn repo_ref(org: Uuid, app: i64) -> Option<art::RepoRef> {
    Some(art::RepoRef { organization_id: org.to_string(), app_id: app })
}

/// The caller's organisation, workspace and user.
pub(crate) fn scope(ctx: &RequestContext) -> ApiResult<(Uuid, Uuid, Option<Uuid>)> {
    let org = crate::tenancy::org_of(ctx)?;
    let ws = crate::tenancy::workspace_of(ctx)?;
    let user = ctx.user_id().ok().and_then(|u| Uuid::parse_str(u).ok());
    Ok((org, ws, user))
}

fn app_not_found() -> ApiError {
    ApiError::not_found("APP_NOT_FOUND", "App not found")
}

/// `<sanitized name>-<ms>`, the app's stable directory-like name.
fn app_path(name: &str) -> String {
    let base = tenancy::sanitize_slug(name);
    let base = if base.is_empty() { "app".to_owned() } else { base };
    format!("{base}-{}", chrono::Utc::now().timestamp_millis())
}

pub struct Apps {
    deps: Deps,
}

impl Apps {
    pub fn new(deps: Deps) -> Self {
        Apps { deps }
    }

    async fn load(&self, ctx: &RequestContext, id: i64) -> ApiResult<apps::AppRow> {
        let (org, ws, user) = scope(ctx)?;
        let tx = self.deps.db.tenant(org, user).await?;
        let app = apps::get(&tx, org, ws, id).await?.ok_or_else(app_not_found)?;
        tx.commit().await?;
        Ok(app)
    }
}

#[tonic::async_trait]
impl AppService for Apps {
    async fn list_apps(&self, req: Request<pb::ListAppsRequest>) -> Rpc<pb::ListAppsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let (rows, next) = apps::list(&tx, org, ws, &page).await?;
            tx.commit().await?;
            Ok(pb::ListAppsResponse {
                data: Some(pb::AppList { apps: rows.into_iter().map(|a| views::app(a, vec![])).collect() }),
                next_page_token: next,
            })
        }
        .await)
    }

    async fn create_app(&self, req: Request<pb::CreateAppRequest>) -> Rpc<pb::CreateAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let name = required_name("name", r.name.as_deref())?;
            let template = r.template_id.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| blaze_storage::templates::DEFAULT.to_owned());
            if blaze_storage::templates::get(&template).is_none() {
                return Err(ApiError::not_found("TEMPLATE_NOT_FOUND", format!("Template {template:?} not found")));
            }
            // Checks before any side effect (old bug B12: scaffold before the quota check).
            quota::check(
                &self.deps.db,
                &self.deps.cfg,
                quota::Check { org, workspace: Some(ws), user, metric: "requests", amount: 1, record: true },
            )
            .await?;
            let tx = self.deps.db.tenant(org, user).await?;
            let project =
                tenancy::default_project(&tx, org, ws).await?.ok_or_else(|| ApiError::internal("workspace without a default project"))?;
            let app = apps::insert(
                &tx,
                NewApp {
                    org_id: org,
                    workspace_id: ws,
                    project_id: project,
                    created_by: user,
                    name: &name,
                    path: &app_path(&name),
                    template_id: &template,
                },
            )
            .await?;
            let chat = chats::create(&tx, org, ws, app.id, user, None).await?;
            // The repository is created while the rows are uncommitted: if it
            // fails, the transaction rolls back and no half app remains.
            let init = repos(&self.deps)
                .init_repo(art::InitRepoRequest {
                    repo: repo_ref(org, app.id),
                    template_id: template.clone(),
                    message: "Init Blaze app".into(),
                    author: Some(art::Author { name: "Blaze".into(), email: "noreply@blaze.sh".into() }),
                })
                .await
                .map_err(ApiError::from)?
                .into_inner();
            let finish = async {
                chats::set_initial_commit(&tx, org, chat.id, &init.commit_hash).await?;
                audit::record(
                    &tx,
                    AuditEvent::new(org, "app_create", "app")
                        .workspace(ws)
                        .actor(user)
                        .resource(app.id)
                        .metadata(serde_json::json!({"template": template})),
                )
                .await?;
                tx.commit().await
            };
            if let Err(e) = finish.await {
                // the rows are gone: take the repository with them
                let _ = repos(&self.deps).delete_repo(art::DeleteRepoRequest { repo: repo_ref(org, app.id), delete_objects: true }).await;
                return Err(e.into());
            }
            Ok(pb::CreateAppResponse { data: Some(pb::CreatedApp { app: Some(views::app(app, vec![])), chat_id: chat.id }) })
        }
        .await)
    }

    async fn search_apps(&self, req: Request<pb::SearchAppsRequest>) -> Rpc<pb::SearchAppsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let page = PageRequest::new(r.page_size, &r.page_token)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let (rows, next) = apps::search(&tx, org, ws, r.q.trim(), &page).await?;
            tx.commit().await?;
            Ok(pb::SearchAppsResponse {
                data: rows
                    .into_iter()
                    .map(|a| pb::AppSearchResult {
                        id: a.id,
                        organization_id: Some(a.organization_id.to_string()),
                        workspace_id: Some(a.workspace_id.to_string()),
                        created_by_user_id: a.created_by_user_id.map(|u| u.to_string()),
                        name: a.name,
                        created_at: Some(timestamp(a.created_at)),
                        matched_chat_title: None,
                        matched_chat_message: None,
                    })
                    .collect(),
                next_page_token: next,
            })
        }
        .await)
    }

    async fn get_app(&self, req: Request<pb::GetAppRequest>) -> Rpc<pb::GetAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let app = self.load(&ctx, r.app_id).await?;
            let files = if r.include_files {
                let listed = repos(&self.deps)
                    .list_files(art::ListFilesRequest { repo: repo_ref(app.organization_id, app.id), ..Default::default() })
                    .await
                    .map_err(ApiError::from)?
                    .into_inner();
                listed.files.into_iter().map(|f| f.path).collect()
            } else {
                Vec::new()
            };
            Ok(pb::GetAppResponse { data: Some(views::app(app, files)) })
        }
        .await)
    }

    async fn update_app(&self, req: Request<pb::UpdateAppRequest>) -> Rpc<pb::UpdateAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(app_not_found)?;
            let name = r.name.as_deref().map(|n| required_name("name", Some(n))).transpose()?;
            let app = apps::update(&tx, org, ws, r.app_id, name.as_deref(), r.is_favorite).await?.ok_or_else(app_not_found)?;
            let mut fields = Vec::new();
            if r.name.is_some() {
                fields.push("name");
            }
            if r.is_favorite.is_some() {
                fields.push("isFavorite");
            }
            audit::record(
                &tx,
                AuditEvent::new(org, "app_update", "app")
                    .workspace(ws)
                    .actor(user)
                    .resource(app.id)
                    .metadata(serde_json::json!({"fields": fields})),
            )
            .await?;
            tx.commit().await?;
            Ok(pb::UpdateAppResponse { data: Some(views::app(app, vec![])) })
        }
        .await)
    }

    async fn delete_app(&self, req: Request<pb::DeleteAppRequest>) -> Rpc<pb::DeleteAppResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            if apps::delete(&tx, org, ws, r.app_id).await? == 0 {
                return Err(app_not_found());
            }
            audit::record(&tx, AuditEvent::new(org, "app_delete", "app").workspace(ws).actor(user).resource(r.app_id)).await?;
            tx.commit().await?;
            crate::cleanup::app_removed(&self.deps, org, r.app_id);
            Ok(pb::DeleteAppResponse {})
        }
        .await)
    }

    async fn toggle_favorite(&self, req: Request<pb::ToggleFavoriteRequest>) -> Rpc<pb::ToggleFavoriteResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let state = apps::toggle_favorite(&tx, org, ws, r.app_id).await?.ok_or_else(app_not_found)?;
            tx.commit().await?;
            Ok(pb::ToggleFavoriteResponse { data: Some(pb::FavoriteState { is_favorite: state }) })
        }
        .await)
    }

    async fn read_app_file(&self, req: Request<pb::ReadAppFileRequest>) -> Rpc<pb::ReadAppFileResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            // the app first: another tenant's id is 404 whatever the query
            let app = self.load(&ctx, r.app_id).await?;
            if r.path.trim().is_empty() {
                return Err(ApiError::invalid("Invalid route parameters"));
            }
            let path = blaze_storage::paths::normalize(&r.path).map_err(ApiError::from)?;
            let file = repos(&self.deps)
                .read_file(art::ReadFileRequest { repo: repo_ref(app.organization_id, app.id), revision: String::new(), path })
                .await
                .map_err(ApiError::from)?
                .into_inner();
            if file.is_binary {
                return Err(ApiError::bad_request("BINARY_FILE", "File is binary"));
            }
            Ok(pb::ReadAppFileResponse { data: String::from_utf8_lossy(&file.content).into_owned() })
        }
        .await)
    }
}

pub struct Versions {
    deps: Deps,
}

impl Versions {
    pub fn new(deps: Deps) -> Self {
        Versions { deps }
    }
}

fn version_id(field: &str, value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::invalid(format!("Invalid payload: \"{field}\" must be a non-empty string")));
    }
    Ok(v.to_owned())
}

#[tonic::async_trait]
impl VersionService for Versions {
    async fn list_versions(&self, req: Request<pb::ListVersionsRequest>) -> Rpc<pb::ListVersionsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(app_not_found)?;
            tx.commit().await?;
            let log = repos(&self.deps)
                .list_versions(art::ListVersionsRequest { repo: repo_ref(org, r.app_id), page_size: r.page_size, page_token: r.page_token })
                .await
                .map_err(ApiError::from)?
                .into_inner();
            Ok(pb::ListVersionsResponse {
                data: log.commits.into_iter().map(|c| pb::Version { oid: c.oid, message: c.message, timestamp: c.timestamp }).collect(),
                next_page_token: log.next_page_token,
            })
        }
        .await)
    }

    async fn checkout_version(&self, req: Request<pb::CheckoutVersionRequest>) -> Rpc<pb::CheckoutVersionResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(app_not_found)?;
            let version = version_id("versionId", &r.version_id)?;
            // `main` returns the preview to the tip; anything else must exist
            let preview_ref = if version == "main" || version == "HEAD" {
                None
            } else {
                repos(&self.deps)
                    .list_files(art::ListFilesRequest { repo: repo_ref(org, r.app_id), revision: version.clone(), ..Default::default() })
                    .await
                    .map_err(ApiError::from)?;
                Some(version.as_str())
            };
            apps::set_preview_ref(&tx, org, r.app_id, preview_ref).await?;
            audit::record(
                &tx,
                AuditEvent::new(org, "version_checkout", "app")
                    .workspace(ws)
                    .actor(user)
                    .resource(r.app_id)
                    .metadata(serde_json::json!({"versionId": version})),
            )
            .await?;
            tx.commit().await?;
            Ok(pb::CheckoutVersionResponse {})
        }
        .await)
    }

    async fn revert_version(&self, req: Request<pb::RevertVersionRequest>) -> Rpc<pb::RevertVersionResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            apps::get(&tx, org, ws, r.app_id).await?.ok_or_else(app_not_found)?;
            let target = version_id("previousVersionId", &r.previous_version_id)?;
            // one revert (or apply) of this app at a time, start to end
            apps::lock(&tx, r.app_id).await?;
            let explicit = match &r.current_chat_message_id {
                Some(m) => {
                    let chat = chats::get(&tx, org, ws, m.chat_id).await?.filter(|c| c.app_id == r.app_id);
                    Some((chat.ok_or_else(|| ApiError::not_found("CHAT_NOT_FOUND", "Chat not found"))?.id, m.message_id))
                }
                None => None,
            };
            let reverted = repos(&self.deps)
                .revert(art::RevertRequest {
                    repo: repo_ref(org, r.app_id),
                    target: target.clone(),
                    message: format!("Reverted all changes back to version {target}"),
                    author: Some(art::Author { name: "Blaze".into(), email: "noreply@blaze.sh".into() }),
                })
                .await
                .map_err(ApiError::from)?
                .into_inner();
            // trim the conversation back to that version
            match explicit {
                Some((chat, message)) => {
                    chats::delete_messages_from(&tx, org, chat, message).await?;
                }
                None => {
                    if let Some(m) = chats::message_by_commit(&tx, org, r.app_id, &target).await? {
                        chats::delete_messages_from(&tx, org, m.chat_id, m.id + 1).await?;
                    }
                }
            }
            apps::set_preview_ref(&tx, org, r.app_id, None).await?;
            audit::record(
                &tx,
                AuditEvent::new(org, "version_revert", "app").workspace(ws).actor(user).resource(r.app_id).metadata(
                    serde_json::json!({"previousVersionId": target, "commit": reverted.commit_hash, "unchanged": reverted.unchanged}),
                ),
            )
            .await?;
            tx.commit().await?;
            let data = if reverted.unchanged {
                pb::RevertOutcome {
                    warning_message: Some("No changes were needed for rollback.".into()),
                    success_message: None,
                    commit_hash: None,
                }
            } else {
                pb::RevertOutcome {
                    success_message: Some("Restored version".into()),
                    warning_message: None,
                    commit_hash: Some(reverted.commit_hash),
                }
            };
            Ok(pb::RevertVersionResponse { data: Some(data) })
        }
        .await)
    }
}

pub struct Templates;

#[tonic::async_trait]
impl TemplateService for Templates {
    async fn list_templates(&self, _req: Request<pb::ListTemplatesRequest>) -> Rpc<pb::ListTemplatesResponse> {
        let data = blaze_storage::templates::all()
            .into_iter()
            .map(|t| pb::Template {
                id: t.id.into(),
                title: t.title.into(),
                description: t.description.into(),
                is_default: t.id == blaze_storage::templates::DEFAULT,
                version: t.version(),
            })
            .collect();
        Ok(Response::new(pb::ListTemplatesResponse { data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths_are_slugs_with_a_timestamp() {
        let p = app_path("My Todo App!");
        assert!(p.starts_with("my-todo-app-") && p.rsplit('-').next().unwrap().parse::<i64>().is_ok(), "{p}");
        assert!(app_path("☃☃").starts_with("app-"));
    }
}
