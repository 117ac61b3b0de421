//! `/readyz`: ready when every upstream role answers its health check.
//! Results are cached briefly so probes do not multiply into upstream load.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Mutex;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::upstream::{ROLES, Upstreams};

const CACHE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, bool, Bytes)>>,
}

impl Readiness {
    pub async fn check(&self, upstreams: &Upstreams) -> (bool, Bytes) {
        let mut last = self.last.lock().await;
        if let Some((at, ready, body)) = last.as_ref()
            && at.elapsed() < CACHE
        {
            return (*ready, body.clone());
        }
        let checks = ROLES.iter().map(|role| async move {
            let mut client = HealthClient::new(upstreams.channel(role));
            let status = tokio::time::timeout(Duration::from_secs(1), client.check(HealthCheckRequest { service: String::new() })).await;
            let ok = matches!(status, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving);
            (*role, ok)
        });
        let results = futures::future::join_all(checks).await;
        let ready = results.iter().all(|(_, ok)| *ok);
        let roles: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(r, ok)| (r.to_owned(), serde_json::Value::String(if ok { "serving" } else { "unavailable" }.into())))
            .collect();
        let body = Bytes::from(serde_json::json!({"status": if ready { "ready" } else { "not ready" }, "roles": roles}).to_string());
        *last = Some((Instant::now(), ready, body.clone()));
        (ready, body)
    }
}
