//! Object storage through the minio crate (any S3: path- or virtual-host
//! style, any region). Keys are always under `orgs/<org>/`; callers pass the
//! rest. Listing walks prefixes with the `/` delimiter instead of asking for
//! a recursive listing: minio-rs sends an empty `delimiter=` for recursive
//! listings, which some S3 servers (s3s-fs) read as a real delimiter.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use minio::s3::{
    MinioClient, MinioClientBuilder,
    creds::StaticProvider,
    http::BaseUrl,
    types::{S3Api, ToStream},
};

use crate::{StorageError, StorageResult};

fn s3_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::ObjectStore(e.to_string())
}

#[derive(Clone)]
pub struct ObjectStore {
    client: MinioClient,
    bucket: String,
    presign_ttl: Duration,
}

/// `orgs/<org>/<key>` with the key's path rules checked.
pub fn org_key(org: &str, key: &str) -> StorageResult<String> {
    if org.is_empty() || !org.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(StorageError::InvalidPath(format!("organization {org:?}")));
    }
    Ok(format!("orgs/{org}/{}", crate::paths::normalize(key)?))
}

impl ObjectStore {
    pub fn new(cfg: &blaze_kit::config::S3Config) -> StorageResult<ObjectStore> {
        let mut base: BaseUrl = cfg.endpoint.parse().map_err(s3_err)?;
        base.region = minio::s3::types::Region::new(cfg.region.clone()).map_err(s3_err)?;
        base.virtual_style = !cfg.path_style;
        let provider = StaticProvider::new(cfg.access_key.expose(), cfg.secret_key.expose(), None);
        let client = MinioClientBuilder::new(base).provider(Some(provider)).skip_region_lookup(true).build().map_err(s3_err)?;
        Ok(ObjectStore { client, bucket: cfg.bucket.clone(), presign_ttl: Duration::from_secs(u64::from(cfg.presign_ttl_secs)) })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Create the bucket when it does not exist.
    pub async fn ensure_bucket(&self) -> StorageResult<()> {
        let exists = self.client.bucket_exists(&self.bucket).map_err(s3_err)?.build().send().await.map_err(s3_err)?.exists();
        if !exists {
            self.client.create_bucket(&self.bucket).map_err(s3_err)?.build().send().await.map_err(s3_err)?;
        }
        Ok(())
    }

    /// Put an object (multipart for large ones, handled by the client).
    pub async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.client.put_object_content(&self.bucket, key, data).map_err(s3_err)?.build().send().await.map_err(s3_err)?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let resp = self.client.get_object(&self.bucket, key).map_err(s3_err)?.build().send().await.map_err(|e| {
            let text = e.to_string();
            if text.contains("NoSuchKey") || text.contains("404") || text.contains("not found") {
                StorageError::ObjectNotFound(key.to_owned())
            } else {
                s3_err(text)
            }
        })?;
        let content = resp.content().map_err(s3_err)?;
        let bytes = content.to_segmented_bytes().await.map_err(s3_err)?.to_bytes();
        Ok(bytes)
    }

    pub async fn exists(&self, key: &str) -> StorageResult<bool> {
        match self.client.stat_object(&self.bucket, key).map_err(s3_err)?.build().send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let text = e.to_string();
                if text.contains("NoSuchKey") || text.contains("404") || text.contains("not found") || text.contains("NotFound") {
                    Ok(false)
                } else {
                    Err(s3_err(text))
                }
            }
        }
    }

    pub async fn delete(&self, key: &str) -> StorageResult<()> {
        self.client.delete_object(&self.bucket, key).map_err(s3_err)?.build().send().await.map_err(s3_err)?;
        Ok(())
    }

    /// Every key under `prefix` (walking `/`-delimited levels).
    pub async fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut pending = vec![prefix.to_owned()];
        while let Some(p) = pending.pop() {
            let mut stream = self
                .client
                .list_objects(&self.bucket)
                .map_err(s3_err)?
                .prefix(Some(p.clone()))
                .delimiter(Some("/".to_owned()))
                .build()
                .to_stream()
                .await;
            while let Some(page) = stream.next().await {
                for entry in page.map_err(s3_err)?.contents {
                    if entry.is_prefix {
                        if entry.name != p {
                            pending.push(entry.name);
                        }
                    } else {
                        keys.push(entry.name);
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Delete every object under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> StorageResult<usize> {
        let keys = self.list(prefix).await?;
        for k in &keys {
            self.delete(k).await?;
        }
        Ok(keys.len())
    }

    /// A presigned URL for `GET` or `PUT`.
    pub async fn presign(&self, key: &str, method: http::Method, ttl: Option<Duration>) -> StorageResult<(String, Duration)> {
        let ttl = ttl.unwrap_or(self.presign_ttl).min(Duration::from_secs(7 * 24 * 3600));
        let resp = self
            .client
            .get_presigned_object_url(&self.bucket, key, method)
            .map_err(s3_err)?
            .expiry_seconds(ttl.as_secs() as u32)
            .build()
            .send()
            .await
            .map_err(s3_err)?;
        Ok((resp.url, ttl))
    }

    /// Remove the bucket (tests clean up after themselves).
    pub async fn remove_bucket(&self) -> StorageResult<()> {
        self.delete_prefix("").await?;
        self.client.delete_bucket(&self.bucket).map_err(s3_err)?.build().send().await.map_err(s3_err)?;
        Ok(())
    }
}
