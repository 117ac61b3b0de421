//! The orchestrator role: chat turns. A turn validates the request, takes
//! the chat's lease, stores the user message and an assistant placeholder,
//! builds the model's context under a token budget, streams the model, turns
//! its tags into one commit (or a proposal) and records usage — while every
//! event goes through a Redis Stream, so clients can reconnect and resume
//! from any replica and the turn never depends on the HTTP connection.

mod apply;
mod context;
mod events;
mod input;
mod prompts;
mod proposals;
mod reaper;
mod service;
mod turn;

use std::{sync::Arc, time::Duration};

use blaze_db::Db;
use blaze_kit::{CancellationToken, Config, client::ServiceClients, grpc::GrpcServer};
use blaze_llm::{ClientPolicy, ModelClient};
use blaze_proto::orchestrator::{chat_stream_service_server::ChatStreamServiceServer, proposal_service_server::ProposalServiceServer};
use blaze_redis::{Redis, streams::EventHub};
use tokio::net::TcpListener;

pub use context::{ContextInput, SourceFile};

#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub clients: ServiceClients,
}

/// What the services of this role share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub clients: ServiceClients,
    pub turns: events::Turns,
    pub llm: ModelClient,
}

impl Shared {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.cfg.chat.turn_lease_ms.max(300))
    }
}

pub async fn serve(
    deps: Deps,
    listener: TcpListener,
    security: blaze_kit::grpc::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let hub = EventHub::start(deps.redis.clone(), deps.cfg.redis.url.expose()).await?;
    let llm = ModelClient::new(ClientPolicy {
        request_timeout: Duration::from_millis(deps.cfg.llm.request_timeout_ms),
        idle_timeout: Duration::from_millis(deps.cfg.llm.request_timeout_ms),
        max_retries: deps.cfg.llm.max_retries,
        retry_base: Duration::from_millis(deps.cfg.llm.retry_base_ms),
        allow_private: deps.cfg.llm.allow_private_base_urls,
    });
    let shared = Shared {
        turns: events::Turns::new(hub, Duration::from_secs(deps.cfg.chat.stream_ttl_secs)),
        cfg: deps.cfg.clone(),
        db: deps.db.clone(),
        redis: deps.redis.clone(),
        clients: deps.clients.clone(),
        llm,
    };
    blaze_kit::spawn_task("turn-reaper", reaper::run(shared.clone(), shutdown.clone()));
    let db = deps.db.clone();
    let redis = deps.redis.clone();
    let max = blaze_kit::grpc::MAX_MESSAGE_BYTES;
    GrpcServer::new("orchestrator")
        .service(ChatStreamServiceServer::new(service::ChatStream::new(shared.clone())).max_decoding_message_size(max))
        .service(ProposalServiceServer::new(proposals::Proposals::new(shared)).max_decoding_message_size(max))
        .health_check(Arc::new(move || {
            let db = db.clone();
            let redis = redis.clone();
            Box::pin(async move { db.ping().await && redis.ping().await })
        }))
        .serve(listener, security, shutdown)
        .await
}
