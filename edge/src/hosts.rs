//! Hosts other than the API: previews and deployed apps.
//!
//! * `<preview-id>-<token>.preview.<edge host>` is proxied (HTTP and
//!   WebSocket, for Vite's HMR) to the preview's dev server once execution
//!   confirms the token (an HMAC in the host name: it reaches the edge with
//!   every request, in iframes too, without cookies).
//! * `<label>.apps.<edge host>` serves the app's live deployment from
//!   object storage: immutable files, `index.html` for unknown paths (single
//!   page apps route in the browser).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use blaze_kit::client::{Intercepted, ServiceClients};
use blaze_proto::{
    artifacts::{GetAttachmentRequest, object_service_client::ObjectServiceClient},
    execution::{
        ResolveDeploymentRequest, ResolvePreviewRequest, deploy_service_client::DeployServiceClient,
        preview_service_client::PreviewServiceClient,
    },
};
use bytes::Bytes;

/// How long a resolved preview or deployment is reused without asking.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Deployment files kept in memory (they never change).
const FILE_CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Preview id and token.
    Preview(String, String),
    App(String),
    Api,
}

/// Which kind of host a `Host` header names (`<label>.preview.…`,
/// `<label>.apps.…`, anything else is the API).
pub fn classify(host: &str) -> Host {
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let mut labels = host.split('.');
    let (Some(first), Some(second)) = (labels.next(), labels.next()) else { return Host::Api };
    let valid = !first.is_empty() && first.len() <= 63 && first.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match (valid, second) {
        (true, "preview") => match first.rsplit_once('-') {
            Some((id, token)) if !id.is_empty() && !token.is_empty() => Host::Preview(id.to_owned(), token.to_owned()),
            _ => Host::Api,
        },
        (true, "apps") => Host::App(first.to_owned()),
        _ => Host::Api,
    }
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("avif") => "image/avif",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// Hashed build assets may be cached forever; the entry page never.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" }
}

#[derive(Clone)]
pub struct Resolved {
    pub upstream: String,
}

#[derive(Clone)]
pub struct Deployment {
    pub org: String,
    pub prefix: String,
}

/// Answers cached for a short while (None: "does not exist").
type Cache<K, V> = Mutex<HashMap<K, (Instant, Option<V>)>>;

pub struct Hosts {
    previews: PreviewServiceClient<Intercepted>,
    deploys: DeployServiceClient<Intercepted>,
    objects: ObjectServiceClient<Intercepted>,
    preview_cache: Cache<(String, String), Resolved>,
    deploy_cache: Cache<String, Deployment>,
    files: Mutex<(usize, HashMap<String, Option<Bytes>>)>,
}

impl Hosts {
    pub fn new(clients: &ServiceClients) -> Hosts {
        Hosts {
            previews: PreviewServiceClient::new(clients.intercepted("execution")),
            deploys: DeployServiceClient::new(clients.intercepted("execution")),
            objects: ObjectServiceClient::new(clients.intercepted("artifacts"))
                .max_decoding_message_size(blaze_kit::grpc::MAX_MESSAGE_BYTES),
            preview_cache: Mutex::default(),
            deploy_cache: Mutex::default(),
            files: Mutex::default(),
        }
    }

    /// Where a preview is served from, if the token is valid and it runs.
    pub async fn preview(&self, id: &str, token: &str) -> Result<Option<Resolved>, tonic::Status> {
        let key = (id.to_owned(), token.to_owned());
        if let Some((at, r)) = self.preview_cache.lock().expect("cache").get(&key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(r.clone());
        }
        let resolved =
            match self.previews.clone().resolve_preview(ResolvePreviewRequest { preview_id: id.to_owned(), token: token.to_owned() }).await
            {
                Ok(r) => Some(Resolved { upstream: r.into_inner().upstream }),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(s),
            };
        let mut cache = self.preview_cache.lock().expect("cache");
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        cache.insert(key, (Instant::now(), resolved.clone()));
        Ok(resolved)
    }

    /// Drop a cached resolution (the upstream stopped answering).
    pub fn forget_preview(&self, id: &str, token: &str) {
        self.preview_cache.lock().expect("cache").remove(&(id.to_owned(), token.to_owned()));
    }

    pub async fn deployment(&self, label: &str) -> Result<Option<Deployment>, tonic::Status> {
        if let Some((at, d)) = self.deploy_cache.lock().expect("cache").get(label)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(d.clone());
        }
        let d = match self.deploys.clone().resolve_deployment(ResolveDeploymentRequest { host_label: label.to_owned() }).await {
            Ok(r) => {
                let r = r.into_inner();
                Some(Deployment { org: r.organization_id, prefix: r.prefix })
            }
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(s),
        };
        let mut cache = self.deploy_cache.lock().expect("cache");
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        cache.insert(label.to_owned(), (Instant::now(), d.clone()));
        Ok(d)
    }

    /// A file of a deployment (None when it does not exist).
    pub async fn file(&self, d: &Deployment, path: &str) -> Result<Option<Bytes>, tonic::Status> {
        let key = format!("{}/{path}", d.prefix);
        if let Some(hit) = self.files.lock().expect("cache").1.get(&key) {
            return Ok(hit.clone());
        }
        let content =
            match self.objects.clone().get_attachment(GetAttachmentRequest { organization_id: d.org.clone(), key: key.clone() }).await {
                Ok(r) => Some(Bytes::from(r.into_inner().content)),
                Err(s) if s.code() == tonic::Code::NotFound => None,
                Err(s) => return Err(s),
            };
        let mut files = self.files.lock().expect("cache");
        let size = content.as_ref().map_or(0, Bytes::len);
        if files.0 + size > FILE_CACHE_BYTES {
            *files = (0, HashMap::new());
        }
        files.0 += size;
        files.1.insert(key, content.clone());
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_tokens_and_types() {
        assert_eq!(classify("pabc123-tok.preview.localhost:8080"), Host::Preview("pabc123".into(), "tok".into()));
        assert_eq!(classify("pabc123.preview.localhost:8080"), Host::Api);
        assert_eq!(classify("todo-42.apps.blaze.example.com"), Host::App("todo-42".into()));
        assert_eq!(classify("localhost:8080"), Host::Api);
        assert_eq!(classify("api.blaze.example.com"), Host::Api);
        assert_eq!(classify("Evil_.preview.x"), Host::Api);
        assert_eq!(content_type("assets/index-abc.js"), "text/javascript; charset=utf-8");
        assert_eq!(cache_control("assets/index-abc.js"), "public, max-age=31536000, immutable");
        assert_eq!(cache_control("index.html"), "no-cache");
    }
}
