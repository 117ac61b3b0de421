//! R38: the service version, public.

use blaze_proto::controlplane::{self as pb, meta_service_server::MetaService};
use tonic::{Request, Response, Status};

pub struct Meta {
    pub version: String,
}

#[tonic::async_trait]
impl MetaService for Meta {
    async fn get_app_version(&self, _req: Request<pb::GetAppVersionRequest>) -> Result<Response<pb::GetAppVersionResponse>, Status> {
        Ok(Response::new(pb::GetAppVersionResponse { data: Some(pb::AppVersion { version: self.version.clone() }) }))
    }
}
