//! ObjectService: attachments and presigned URLs, all under `orgs/<org>/`.

use std::time::Duration;

use blaze_kit::{ApiError, ApiResult, timestamp};
use blaze_proto::artifacts::{self as pb, object_service_server::ObjectService};
use blaze_storage::{StorageError, objects::org_key};
use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::Deps;

pub struct Objects {
    deps: Deps,
}

impl Objects {
    pub fn new(deps: Deps) -> Self {
        Objects { deps }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

/// A file name safe to use in a key (`../x.png` → `x.png`).
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("file");
    let cleaned: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let cleaned = cleaned.trim_start_matches('.').chars().take(100).collect::<String>();
    if cleaned.is_empty() { "file".into() } else { cleaned }
}

#[tonic::async_trait]
impl ObjectService for Objects {
    async fn put_attachment(&self, req: Request<pb::PutAttachmentRequest>) -> Rpc<pb::PutAttachmentResponse> {
        let r = req.into_inner();
        ok(async {
            let limit = self.deps.cfg.git.max_attachment_bytes;
            let size = r.content.len() as u64;
            if size > limit {
                return Err(StorageError::TooLarge { what: "attachment", size, limit }.into());
            }
            let key = org_key(
                &r.organization_id,
                &format!("apps/{}/attachments/{}-{}", r.app_id, uuid::Uuid::now_v7().simple(), safe_name(&r.name)),
            )?;
            self.deps.objects.put(&key, Bytes::from(r.content)).await?;
            Ok(pb::PutAttachmentResponse { key, size: size as i64 })
        }
        .await)
    }

    async fn get_attachment(&self, req: Request<pb::GetAttachmentRequest>) -> Rpc<pb::GetAttachmentResponse> {
        let r = req.into_inner();
        ok(async {
            let prefix = format!("orgs/{}/", r.organization_id);
            if r.organization_id.is_empty() || !r.key.starts_with(&prefix) {
                // a key of another organisation is simply not there
                return Err(ApiError::not_found("OBJECT_NOT_FOUND", "Object not found"));
            }
            let content = self.deps.objects.get(&r.key).await?;
            Ok(pb::GetAttachmentResponse { content: content.to_vec(), content_type: String::new() })
        }
        .await)
    }

    async fn presign_object(&self, req: Request<pb::PresignObjectRequest>) -> Rpc<pb::PresignObjectResponse> {
        let r = req.into_inner();
        ok(async {
            let key = org_key(&r.organization_id, &r.key)?;
            let method = match r.method.to_ascii_uppercase().as_str() {
                "" | "GET" => http::Method::GET,
                "PUT" => http::Method::PUT,
                other => return Err(ApiError::invalid(format!("cannot presign {other}"))),
            };
            let ttl = (r.expiry_seconds > 0).then(|| Duration::from_secs(r.expiry_seconds as u64));
            let (url, ttl) = self.deps.objects.presign(&key, method, ttl).await?;
            Ok(pb::PresignObjectResponse {
                url,
                expires_at: Some(timestamp(chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default())),
            })
        }
        .await)
    }

    async fn delete_objects(&self, req: Request<pb::DeleteObjectsRequest>) -> Rpc<pb::DeleteObjectsResponse> {
        let r = req.into_inner();
        ok(async {
            let prefix = if r.prefix.is_empty() {
                format!("orgs/{}/", r.organization_id)
            } else {
                format!("{}/", org_key(&r.organization_id, &r.prefix)?)
            };
            let deleted = self.deps.objects.delete_prefix(&prefix).await?;
            Ok(pb::DeleteObjectsResponse { deleted: deleted as i32 })
        }
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_made_safe() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("my photo (1).png"), "my_photo__1_.png");
        assert_eq!(safe_name(".hidden"), "hidden");
        assert_eq!(safe_name(""), "file");
    }
}
