//! Calling other roles: lazily connected channels per role and an
//! interceptor that presents this role's service token and propagates the
//! request id and trace context.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use blaze_auth::{KeySet, tokens};
use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{config::Config, context::current_request_id, telemetry};

const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(600);
const SERVICE_TOKEN_REFRESH: Duration = Duration::from_secs(300);

/// Service-token minting with a small cache.
#[derive(Clone)]
pub struct ServiceAuth {
    keys: Arc<KeySet>,
    service: &'static str,
    cached: Arc<Mutex<Option<(String, Instant)>>>,
}

impl ServiceAuth {
    pub fn new(keys: Arc<KeySet>, service: &'static str) -> Self {
        ServiceAuth { keys, service, cached: Arc::new(Mutex::new(None)) }
    }

    pub fn token(&self) -> Result<String, Status> {
        let mut cached = self.cached.lock().expect("token cache poisoned");
        if let Some((t, at)) = cached.as_ref()
            && at.elapsed() < SERVICE_TOKEN_REFRESH
        {
            return Ok(t.clone());
        }
        let t = tokens::mint_service(&self.keys, self.service, SERVICE_TOKEN_TTL)
            .map_err(|e| Status::internal(format!("cannot mint service token: {e}")))?;
        *cached = Some((t.clone(), Instant::now()));
        Ok(t)
    }
}

#[derive(Clone)]
pub struct ServiceInterceptor {
    auth: ServiceAuth,
}

impl Interceptor for ServiceInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = self.auth.token()?;
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("token is not ASCII"))?;
        req.metadata_mut().insert("authorization", value);
        if let Some(rid) = current_request_id()
            && let Ok(v) = rid.parse()
        {
            req.metadata_mut().insert("x-request-id", v);
        }
        telemetry::inject_metadata(req.metadata_mut());
        Ok(req)
    }
}

pub type Intercepted = InterceptedService<Channel, ServiceInterceptor>;

/// Channels to the other roles, created lazily (no connection until used).
#[derive(Clone)]
pub struct ServiceClients {
    channels: Arc<HashMap<&'static str, Channel>>,
    auth: ServiceAuth,
}

impl ServiceClients {
    pub fn new(cfg: &Config, keys: Arc<KeySet>, service: &'static str) -> anyhow::Result<Self> {
        let mut channels = HashMap::new();
        for role in ["identity", "control-plane", "orchestrator", "execution", "artifacts"] {
            let endpoint = Endpoint::from_shared(cfg.upstream_url(role))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            channels.insert(role, endpoint.connect_lazy());
        }
        Ok(ServiceClients { channels: Arc::new(channels), auth: ServiceAuth::new(keys, service) })
    }

    pub fn channel(&self, role: &str) -> Channel {
        self.channels.get(role).cloned().unwrap_or_else(|| panic!("unknown role {role}"))
    }

    /// A channel with this role's service token attached, for a generated
    /// client: `RepositoryServiceClient::new(clients.intercepted("artifacts"))`.
    pub fn intercepted(&self, role: &str) -> Intercepted {
        InterceptedService::new(self.channel(role), ServiceInterceptor { auth: self.auth.clone() })
    }

    pub fn service_auth(&self) -> &ServiceAuth {
        &self.auth
    }
}
