//! The identity role: who a credential belongs to. It upserts users,
//! provisions a personal organisation on first use, resolves memberships for
//! the edge, mints and revokes API tokens, and performs the OAuth2 code
//! exchange of the sign-in page. Handlers are thin; the logic lives in
//! [`principal`], [`api_tokens`] and [`oauth`].

pub mod api_tokens;
mod grpc;
pub mod oauth;
pub mod principal;

use std::sync::Arc;

use blaze_auth::KeySet;
use blaze_db::Db;
use blaze_kit::{CancellationToken, Config, grpc::GrpcServer};
use blaze_proto::identity::identity_service_server::IdentityServiceServer;
use blaze_redis::Redis;
use tokio::net::TcpListener;

/// What the identity role needs.
#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub redis: Redis,
    pub keys: Arc<KeySet>,
    pub http: reqwest::Client,
}

pub async fn serve(
    deps: Deps,
    listener: TcpListener,
    security: blaze_kit::grpc::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let db = deps.db.clone();
    GrpcServer::new("identity")
        .service(IdentityServiceServer::new(grpc::Identity::new(deps)).max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES))
        .health_check(Arc::new(move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await })
        }))
        .serve(listener, security, shutdown)
        .await
}
