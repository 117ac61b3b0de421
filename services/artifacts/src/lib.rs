//! The artifacts role: every app's code history and every stored object.
//! Internal only (service tokens); every RPC names the organisation, and a
//! repository or object of one organisation is invisible to another because
//! both live under that organisation's own path and key prefix.

mod objects;
mod repository;

use std::sync::Arc;

use blaze_kit::{CancellationToken, Config, grpc::GrpcServer};
use blaze_proto::artifacts::{object_service_server::ObjectServiceServer, repository_service_server::RepositoryServiceServer};
use blaze_storage::{Limits, git::GitStore, objects::ObjectStore};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct Deps {
    pub cfg: Arc<Config>,
    pub git: GitStore,
    pub objects: ObjectStore,
}

impl Deps {
    pub fn new(cfg: Arc<Config>) -> anyhow::Result<Deps> {
        let git = GitStore::new(cfg.git.root.clone(), Limits::from(&cfg.git));
        let objects = ObjectStore::new(&cfg.s3)?;
        Ok(Deps { cfg, git, objects })
    }
}

/// The object-store key of an app's repository bundle.
pub fn bundle_key(org: &str, app: i64) -> String {
    format!("orgs/{org}/apps/{app}/repo.bundle")
}

pub async fn serve(
    deps: Deps,
    listener: TcpListener,
    security: blaze_kit::grpc::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&deps.cfg.git.root)?;
    if deps.cfg.s3.create_bucket
        && let Err(e) = deps.objects.ensure_bucket().await
    {
        // Not fatal: the store may come up after us; health reports it.
        tracing::warn!(error = %e, "could not ensure the object-store bucket");
    }
    let max = blaze_kit::grpc::MAX_MESSAGE_BYTES;
    let objects = deps.objects.clone();
    GrpcServer::new("artifacts")
        .service(
            RepositoryServiceServer::new(repository::Repositories::new(deps.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .service(ObjectServiceServer::new(objects::Objects::new(deps)).max_decoding_message_size(max).max_encoding_message_size(max))
        .health_check(Arc::new(move || {
            let objects = objects.clone();
            Box::pin(async move { objects.exists("health-probe").await.is_ok() })
        }))
        .serve(listener, security, shutdown)
        .await
}
