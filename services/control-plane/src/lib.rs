//! The control-plane role: the client's CRUD. Tenancy, apps, chats and
//! messages, versions, settings, templates, quotas and usage, backed by
//! Postgres through tenant-scoped transactions. Repository work goes to the
//! artifacts role.

mod apps;
mod chats;
mod cleanup;
mod map;
mod meta;
mod prompts;
pub mod quota;
mod settings;
pub mod tenancy;

use std::sync::Arc;

use blaze_auth::KeySet;
use blaze_db::Db;
use blaze_kit::{CancellationToken, Config, client::ServiceClients, grpc::GrpcServer, secrets::SecretBox};
use blaze_proto::controlplane::{
    app_service_server::AppServiceServer, chat_service_server::ChatServiceServer, meta_service_server::MetaServiceServer,
    organization_service_server::OrganizationServiceServer, prompt_service_server::PromptServiceServer,
    quota_service_server::QuotaServiceServer, settings_service_server::SettingsServiceServer,
    template_service_server::TemplateServiceServer, version_service_server::VersionServiceServer,
    workspace_service_server::WorkspaceServiceServer,
};
use blaze_redis::Redis;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub keys: Arc<KeySet>,
    pub clients: ServiceClients,
}

pub async fn serve(
    deps: Deps,
    listener: TcpListener,
    security: blaze_kit::grpc::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    deps.cfg.require(&["secrets.encryption_key"])?;
    let secrets = SecretBox::from_hex(deps.cfg.secrets.encryption_key.expose()).map_err(anyhow::Error::msg)?;
    let db = deps.db.clone();
    let max = blaze_kit::grpc::MAX_MESSAGE_BYTES;
    GrpcServer::new("control-plane")
        .service(OrganizationServiceServer::new(tenancy::Organizations::new(deps.clone())).max_decoding_message_size(max))
        .service(WorkspaceServiceServer::new(tenancy::Workspaces::new(deps.clone())).max_decoding_message_size(max))
        .service(AppServiceServer::new(apps::Apps::new(deps.clone())).max_decoding_message_size(max))
        .service(VersionServiceServer::new(apps::Versions::new(deps.clone())).max_decoding_message_size(max))
        .service(TemplateServiceServer::new(apps::Templates))
        .service(ChatServiceServer::new(chats::Chats::new(deps.clone())).max_decoding_message_size(max))
        .service(SettingsServiceServer::new(settings::Settings::new(deps.clone(), secrets)).max_decoding_message_size(max))
        .service(QuotaServiceServer::new(quota::Quotas::new(deps.clone())).max_decoding_message_size(max))
        .service(PromptServiceServer::new(prompts::Prompts::new(deps.clone())).max_decoding_message_size(max))
        .service(MetaServiceServer::new(meta::Meta { version: deps.cfg.edge.app_version.clone() }))
        .health_check(Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        }))
        .serve(listener, security, shutdown)
        .await
}
