//! The one configuration model of Blaze Service.
//!
//! Layers, lowest first: defaults in code < a TOML file (`--config` or
//! `BLAZE_CONFIG`) < environment variables. Every setting `a.b_c` can be set
//! with `BLAZE_A_B_C`, or read from a file named by `BLAZE_A_B_C_FILE` (so
//! Kubernetes Secrets mount cleanly). Unknown keys in the file are errors;
//! secrets are wrapped in [`Secret`] and never printed.
//!
//! Every field carries a `///` comment: `docs/configuration.md` is generated
//! from them ([`reference`]), and a test fails when one is missing.

pub mod reference;

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A secret string: serialises as itself (config layering needs that) but
/// prints as `***` in `Debug`, so it never reaches logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("\"\"") } else { f.write_str("\"***\"") }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where each role listens.
    pub listen: ListenConfig,
    /// Where each role is reached by the others (default: its listen address).
    pub upstreams: UpstreamConfig,
    /// Postgres.
    pub database: DatabaseConfig,
    /// Redis: rate limits, revocation, leases, resumable streams, idempotency records.
    pub redis: RedisConfig,
    /// RabbitMQ: the job queues of the execution role.
    pub amqp: AmqpConfig,
    /// The S3-compatible object store (attachments, archives, build outputs).
    pub s3: S3Config,
    /// The bare git repositories of apps (artifacts role).
    pub git: GitConfig,
    /// Token signing and verification (internal, service and API tokens).
    pub auth: AuthConfig,
    /// Verification of OIDC ID tokens at the edge.
    pub oidc: OidcConfig,
    /// The sign-in page's OAuth2 authorization-code + PKCE flow.
    pub oauth: OAuthConfig,
    /// The public HTTP edge.
    pub edge: EdgeConfig,
    /// Per-user and per-organisation rate limits at the edge.
    pub rate_limit: RateLimitConfig,
    /// Model providers, defaults and prices.
    pub llm: LlmConfig,
    /// Chat turns (orchestrator): leases, stream pacing, request and output limits.
    pub chat: ChatConfig,
    /// Sandboxes for installs, builds and previews (execution role).
    pub sandbox: SandboxConfig,
    /// Preview runs of apps.
    pub preview: PreviewConfig,
    /// Default quotas of organisations and users.
    pub quotas: QuotaConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Encryption of stored secrets.
    pub secrets: SecretsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The HTTP edge (the only public listener).
    pub edge: String,
    /// gRPC of the identity role.
    pub identity: String,
    /// gRPC of the control-plane role.
    pub control_plane: String,
    /// gRPC of the orchestrator role.
    pub orchestrator: String,
    /// gRPC of the execution role.
    pub execution: String,
    /// gRPC of the artifacts role.
    pub artifacts: String,
    /// Prometheus `/metrics` and `/healthz` of the process (empty = off).
    pub metrics: String,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            edge: "127.0.0.1:8080".into(),
            identity: "127.0.0.1:50051".into(),
            control_plane: "127.0.0.1:50052".into(),
            orchestrator: "127.0.0.1:50053".into(),
            execution: "127.0.0.1:50054".into(),
            artifacts: "127.0.0.1:50055".into(),
            metrics: "127.0.0.1:9464".into(),
        }
    }
}

/// gRPC URLs of the roles as seen by the others. Empty = `http://<listen>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// gRPC URL of the identity role.
    pub identity: String,
    /// gRPC URL of the control-plane role.
    pub control_plane: String,
    /// gRPC URL of the orchestrator role.
    pub orchestrator: String,
    /// gRPC URL of the execution role.
    pub execution: String,
    /// gRPC URL of the artifacts role.
    pub artifacts: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// DSN the services use: the `blaze_app` role (created by the migrations,
    /// no BYPASSRLS), so row-level security applies.
    pub url: Secret,
    /// DSN of the schema owner, used by migrations only.
    pub migration_url: Secret,
    /// Connections in each role's pool.
    pub max_connections: u32,
    /// How long to wait for a connection (at start-up and from the pool).
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret("postgres://blaze_app@127.0.0.1:5432/blaze?sslmode=disable".into()),
            migration_url: Secret("postgres://postgres@127.0.0.1:5432/blaze?sslmode=disable".into()),
            max_connections: 16,
            connect_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL (`redis://[user:password@]host:port/db`).
    pub url: Secret,
    /// Prefix of every key (tests use one per run).
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { url: Secret("redis://127.0.0.1:6379/0".into()), key_prefix: "blaze:".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// AMQP URL of the broker (`amqp://user:password@host:port/vhost`).
    pub url: Secret,
    /// Prefix of exchanges and queues (tests use one per run).
    pub prefix: String,
    /// Unacknowledged deliveries per consumer (jobs a worker runs at once).
    pub prefetch: u16,
    /// Deliveries of a job before it is parked in the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before a failed job is delivered again.
    pub retry_delay_ms: u32,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: Secret("amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            prefix: "blaze".into(),
            prefetch: 4,
            max_attempts: 3,
            retry_delay_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Base URL of the S3 API.
    pub endpoint: String,
    /// Region used for request signing.
    pub region: String,
    /// Bucket of every object (keys are under `orgs/<org>/`).
    pub bucket: String,
    /// Access key id.
    pub access_key: Secret,
    /// Secret access key.
    pub secret_key: Secret,
    /// Path-style (`endpoint/bucket/key`) instead of virtual-host style.
    pub path_style: bool,
    /// Lifetime of presigned URLs.
    pub presign_ttl_secs: u32,
    /// Create the bucket at start-up when missing.
    pub create_bucket: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            region: "us-east-1".into(),
            bucket: "blaze".into(),
            access_key: Secret("blaze".into()),
            secret_key: Secret("blazesecret".into()),
            path_style: true,
            presign_ttl_secs: 600,
            create_bucket: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GitConfig {
    /// Root of the bare repositories: `<root>/<org>/<app>.git`.
    pub root: PathBuf,
    /// Largest file one change set may write.
    pub max_file_bytes: u64,
    /// Largest total size of the files of one change set.
    pub max_change_set_bytes: u64,
    /// Largest attachment stored in the object store.
    pub max_attachment_bytes: u64,
}

impl Default for GitConfig {
    fn default() -> Self {
        GitConfig {
            root: PathBuf::from("var/repos"),
            max_file_bytes: 2 * 1024 * 1024,
            max_change_set_bytes: 16 * 1024 * 1024,
            max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Ed25519 private key (hex) that signs internal, service and API tokens.
    pub signing_key: Secret,
    /// Key id carried in tokens signed with `signing_key`.
    pub signing_key_id: u32,
    /// Older public keys still accepted, as `"<id>:<hex>"` (kept one TTL
    /// after a rotation).
    pub verify_keys: Vec<String>,
    /// Lifetime of the internal tokens the edge mints.
    pub internal_token_ttl_secs: u64,
    /// Accept `x-blaze-dev-user-*` headers (never with a public bind).
    pub dev_mode: bool,
    /// Allow dev mode even when the edge listens on a non-loopback address.
    pub allow_dev_mode_on_public_bind: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signing_key: Secret::default(),
            signing_key_id: 1,
            verify_keys: Vec::new(),
            internal_token_ttl_secs: 300,
            dev_mode: false,
            allow_dev_mode_on_public_bind: false,
        }
    }
}

/// Verification of OIDC ID tokens at the edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`; empty disables OIDC.
    pub issuer: String,
    /// Expected `aud` (one of).
    pub audience: Vec<String>,
    /// JWKS URL; empty = `<issuer>/.well-known/jwks.json`.
    pub jwks_url: String,
    /// Shared secret for HS256 tokens (empty = HS256 refused).
    pub hs256_secret: Secret,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// How long a fetched JWKS is trusted before a refresh.
    pub jwks_ttl_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            audience: Vec::new(),
            jwks_url: String::new(),
            hs256_secret: Secret::default(),
            leeway_secs: 30,
            jwks_ttl_secs: 600,
        }
    }
}

/// The OAuth2 authorization-code + PKCE flow of the sign-in page (R39, R40).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Offer the OAuth sign-in (it also needs `client_id`, `authorization_url` and `token_url`).
    pub enabled: bool,
    /// Name of the identity provider shown on the sign-in page.
    pub provider_name: String,
    /// The provider's authorization endpoint.
    pub authorization_url: String,
    /// The provider's token endpoint.
    pub token_url: String,
    /// OAuth client id registered with the provider.
    pub client_id: String,
    /// OAuth client secret (empty for public clients, which rely on PKCE).
    pub client_secret: Secret,
    /// Scopes requested at sign-in.
    pub scope: String,
    /// Redirect URI when the client sends none (empty = `http://localhost:5173/auth`).
    pub redirect_uri: String,
    /// Extra authorization parameters as a query string (`prompt=consent`).
    pub auth_extra_params: String,
    /// Extra token-endpoint parameters as a query string.
    pub token_extra_params: String,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            enabled: true,
            provider_name: "Google".into(),
            authorization_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            scope: "openid profile email".into(),
            redirect_uri: String::new(),
            auth_extra_params: String::new(),
            token_extra_params: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS (`*` = any).
    pub cors_origins: Vec<String>,
    /// Public base URL of the edge (preview and deployment hosts derive from
    /// its host). Empty = `http://localhost:<edge port>`.
    pub public_url: String,
    /// TLS certificate chain (PEM path); with `tls_key` empty too, the edge
    /// serves plaintext.
    pub tls_cert: String,
    /// TLS private key (PEM path) of `tls_cert`.
    pub tls_key: String,
    /// SSE heartbeat comment interval.
    pub sse_heartbeat_secs: u64,
    /// Upstream call deadline for unary requests.
    pub upstream_timeout_ms: u64,
    /// Service version reported by `/api/v1/app/version`.
    pub app_version: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            max_body_bytes: 25 * 1024 * 1024,
            cors_origins: vec!["*".into()],
            public_url: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            sse_heartbeat_secs: 15,
            upstream_timeout_ms: 150_000,
            app_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Enforce the rate limits.
    pub enabled: bool,
    /// Token bucket per user: capacity (requests in a burst).
    pub user_burst: u32,
    /// Token bucket per user: refill (requests per second).
    pub user_per_sec: f64,
    /// Token bucket per organisation: capacity.
    pub org_burst: u32,
    /// Token bucket per organisation: refill per second.
    pub org_per_sec: f64,
    /// Let requests through (with a warning) when Redis is unreachable.
    pub fail_open: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { enabled: true, user_burst: 120, user_per_sec: 20.0, org_burst: 600, org_per_sec: 100.0, fail_open: true }
    }
}

/// One model provider known to the platform (workspaces may add their own).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderEntry {
    /// `openai` (chat completions) or `anthropic` (messages).
    pub kind: String,
    /// API base URL, e.g. `https://api.openai.com/v1` (requests go to
    /// `<base_url>/chat/completions` or `<base_url>/messages`).
    pub base_url: String,
    /// API key sent to the provider.
    pub api_key: Secret,
    /// Models offered by this provider with their context windows.
    pub models: BTreeMap<String, u32>,
}

impl Default for ProviderEntry {
    fn default() -> Self {
        ProviderEntry { kind: "openai".into(), base_url: String::new(), api_key: Secret::default(), models: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Platform providers by id.
    pub providers: BTreeMap<String, ProviderEntry>,
    /// `provider/model` used when a workspace has no policy.
    pub default_model: String,
    /// Base URL of the demo model (the fake server of `blaze dev up`); used
    /// when no provider is configured.
    pub demo_base_url: String,
    /// Output token limit of one model request.
    pub max_output_tokens: u32,
    /// Context window (tokens) assumed for models without a configured one.
    pub default_context_window: u32,
    /// Deadline of a model request, and the longest silence allowed while it streams.
    pub request_timeout_ms: u64,
    /// Retries before the first token (429/5xx/connection errors).
    pub max_retries: u32,
    /// First retry delay; doubles with each retry.
    pub retry_base_ms: u64,
    /// Allow provider base URLs on private/loopback addresses (dev only).
    pub allow_private_base_urls: bool,
    /// Price per million tokens by model: `{"model": {"input": 1.0, "output": 2.0}}`.
    pub prices: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Price {
    /// Price per million input tokens.
    pub input: f64,
    /// Price per million output tokens.
    pub output: f64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            providers: BTreeMap::new(),
            default_model: String::new(),
            demo_base_url: String::new(),
            max_output_tokens: 8_192,
            default_context_window: 128_000,
            request_timeout_ms: 120_000,
            max_retries: 3,
            retry_base_ms: 250,
            allow_private_base_urls: false,
            prices: BTreeMap::new(),
        }
    }
}

/// Chat turns (orchestrator): leases, stream pacing, request and output limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Lease of a running turn; a turn whose orchestrator stops renewing it
    /// is failed by another replica after this long.
    pub turn_lease_ms: u64,
    /// At most one `chat:response:chunk` per this interval while streaming.
    pub chunk_interval_ms: u64,
    /// How often partial text is saved while streaming.
    pub persist_interval_ms: u64,
    /// How often a turn checks for a cancel request.
    pub cancel_poll_ms: u64,
    /// How long a turn's events stay replayable.
    pub stream_ttl_secs: u64,
    /// Longest accepted prompt, in characters.
    pub max_prompt_chars: usize,
    /// Attachments per prompt.
    pub max_attachments: usize,
    /// Decoded size of one attachment.
    pub max_attachment_bytes: usize,
    /// Selected components per prompt.
    pub max_selected_components: usize,
    /// Guardrail on model output: largest file one turn may write.
    pub max_file_bytes: usize,
    /// Guardrail on model output: largest total of the files of one turn.
    pub max_turn_bytes: usize,
    /// Continuation rounds for a `blaze-write` cut off by the output limit.
    pub max_continuations: u32,
    /// Packages a model may never add, on top of the built-in list of
    /// known-malicious releases (bare names or exact `name@version`).
    pub package_deny_list: Vec<String>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            turn_lease_ms: 10_000,
            chunk_interval_ms: 50,
            persist_interval_ms: 500,
            cancel_poll_ms: 200,
            stream_ttl_secs: 3_600,
            max_prompt_chars: 200_000,
            max_attachments: 10,
            max_attachment_bytes: 10 * 1024 * 1024,
            max_selected_components: 50,
            max_file_bytes: 1024 * 1024,
            max_turn_bytes: 8 * 1024 * 1024,
            max_continuations: 2,
            package_deny_list: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// `local` (bubblewrap) or `kube` (Kubernetes Jobs).
    pub driver: String,
    /// Working directories of local sandboxes.
    pub root: PathBuf,
    /// Memory limit of a sandbox.
    pub memory_mb: u64,
    /// Process limit of a sandbox.
    pub pids: u64,
    /// CPU limit of a sandbox, in percent of one core.
    pub cpu_quota_percent: u64,
    /// Wall-clock limit of an install or build job.
    pub deadline_secs: u64,
    /// Registry install jobs may read, through a read-only proxy (empty =
    /// installs work offline only).
    pub npm_registry: String,
    /// The bubblewrap binary of the local driver.
    pub bwrap: String,
    /// Refuse to run local sandboxes without cgroup v1 limits.
    pub require_cgroups: bool,
    /// kube driver: namespace of the sandbox Jobs.
    pub namespace: String,
    /// kube driver: the object store's address range (sandboxes fetch
    /// sources and upload outputs there).
    pub kube_object_storage_cidr: String,
    /// kube driver: namespace of the platform pods allowed to reach dev
    /// servers.
    pub kube_platform_namespace: String,
    /// kube driver: container image of sandbox pods.
    pub image: String,
    /// kube driver: RuntimeClass of sandbox pods, e.g. `gvisor` (empty = the cluster default).
    pub runtime_class: String,
    /// Warm dependency caches, one per template version.
    pub cache_root: PathBuf,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            driver: "local".into(),
            root: PathBuf::from("var/sandboxes"),
            memory_mb: 1536,
            pids: 512,
            cpu_quota_percent: 100,
            deadline_secs: 600,
            npm_registry: "https://registry.npmjs.org".into(),
            bwrap: "bwrap".into(),
            require_cgroups: true,
            namespace: "blaze-sandboxes".into(),
            kube_object_storage_cidr: "10.0.0.0/8".into(),
            kube_platform_namespace: "blaze".into(),
            image: "ghcr.io/blaze/sandbox-node:20".into(),
            runtime_class: String::new(),
            cache_root: PathBuf::from("var/cache"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PreviewConfig {
    /// Stop previews idle for this long.
    pub idle_timeout_secs: u64,
    /// How long a run may take to become ready.
    pub ready_timeout_secs: u64,
    /// How often execution looks for previews to stop (idle ones, and those
    /// whose app was deleted).
    pub reap_interval_secs: u64,
    /// HMAC key for preview tokens (derived from the signing key when empty).
    pub token_key: Secret,
}

impl Default for PreviewConfig {
    fn default() -> Self {
        PreviewConfig { idle_timeout_secs: 1_800, ready_timeout_secs: 120, reap_interval_secs: 30, token_key: Secret::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per organisation and day (hard limit).
    pub org_requests_per_day: i64,
    /// Model tokens per organisation and day (hard limit).
    pub org_tokens_per_day: i64,
    /// Running previews per organisation (hard limit).
    pub org_concurrent_previews: i64,
    /// Requests per user and day (soft limit: reported, not enforced).
    pub user_requests_per_day: i64,
    /// Model tokens per user and day (soft limit: reported, not enforced).
    pub user_tokens_per_day: i64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            org_requests_per_day: 100_000,
            org_tokens_per_day: 50_000_000,
            org_concurrent_previews: 20,
            user_requests_per_day: 2_500,
            user_tokens_per_day: 5_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `json` or `text`.
    pub log_format: String,
    /// `tracing` filter, e.g. `info,blaze=debug`.
    pub log_filter: String,
    /// OTLP gRPC endpoint; `OTEL_EXPORTER_OTLP_ENDPOINT` also works.
    pub otlp_endpoint: String,
    /// `service.name` of exported traces.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { log_format: "json".into(), log_filter: "info".into(), otlp_endpoint: String::new(), service_name: "blaze".into() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32-byte AES-256-GCM key (hex) for stored provider keys.
    pub encryption_key: Secret,
}

/// Why a configuration could not be loaded. The message always names the
/// setting and the variable that sets it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    FileSyntax { path: String, message: String },
    #[error("invalid value for {key} (from {var}): {message}")]
    Env { key: String, var: String, message: String },
    #[error("cannot read {var}: {source}")]
    SecretFile { var: String, source: std::io::Error },
    #[error("both {var} and {var}_FILE are set; use one")]
    Ambiguous { var: String },
    #[error("invalid configuration at {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("missing required setting {key}: set {var} or {var}_FILE")]
    Missing { key: String, var: String },
}

/// The environment variable that sets a dotted setting path.
pub fn env_var_for(path: &str) -> String {
    format!("BLAZE_{}", path.replace('.', "_").to_uppercase())
}

fn leaf_paths(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !is_map_setting(prefix) => {
            for (k, v) in map {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaf_paths(&p, v, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

/// Settings whose value is a free-form map (set as JSON from the environment).
fn is_map_setting(path: &str) -> bool {
    matches!(path, "llm.providers" | "llm.prices")
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn set_path(root: &mut Value, path: &str, v: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = match cur {
            Value::Object(m) => m,
            other => {
                *other = Value::Object(Map::new());
                other.as_object_mut().expect("just set")
            }
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), v);
            return;
        }
        cur = map.entry((*part).to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

fn parse_env(raw: &str, like: &Value) -> Result<Value, String> {
    let raw_trim = raw.trim();
    Ok(match like {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Bool(_) => match raw_trim.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" | "" => Value::Bool(false),
            _ => return Err(format!("expected a boolean, got {raw_trim:?}")),
        },
        Value::Number(n) if n.is_f64() => Value::from(raw_trim.parse::<f64>().map_err(|_| format!("expected a number, got {raw_trim:?}"))?),
        Value::Number(_) => Value::from(raw_trim.parse::<i64>().map_err(|_| format!("expected an integer, got {raw_trim:?}"))?),
        Value::Array(_) if raw_trim.starts_with('[') => serde_json::from_str(raw_trim).map_err(|e| e.to_string())?,
        Value::Array(_) => {
            Value::Array(raw_trim.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect())
        }
        Value::Object(_) | Value::Null => {
            if raw_trim.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(raw_trim).map_err(|e| format!("expected JSON: {e}"))?
            }
        }
    })
}

/// Where a configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    /// Environment as `(name, value)`; `None` = the process environment.
    pub env: Option<Vec<(String, String)>>,
}

impl Config {
    /// Load defaults < file < environment.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = match &source.env {
            Some(e) => e.clone(),
            None => std::env::vars().collect(),
        };
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

        let defaults = serde_json::to_value(Config::default()).expect("config serialises");
        let mut merged = defaults.clone();

        let file = source.file.clone().or_else(|| lookup("BLAZE_CONFIG").filter(|s| !s.is_empty()).map(PathBuf::from));
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::File { path: shown.clone(), source })?;
            let parsed: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::FileSyntax { path: shown.clone(), message: e.to_string() })?;
            let json = serde_json::to_value(parsed).map_err(|e| ConfigError::FileSyntax { path: shown, message: e.to_string() })?;
            merge(&mut merged, json);
        }

        let mut leaves = Vec::new();
        leaf_paths("", &defaults, &mut leaves);
        for (path, like) in leaves {
            let var = env_var_for(&path);
            let direct = lookup(&var);
            let from_file = lookup(&format!("{var}_FILE")).filter(|s| !s.is_empty());
            let raw = match (direct, from_file) {
                (Some(_), Some(_)) => return Err(ConfigError::Ambiguous { var }),
                (Some(v), None) => v,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|source| ConfigError::SecretFile { var: format!("{var}_FILE"), source })?,
                (None, None) => continue,
            };
            let value = parse_env(&raw, &like).map_err(|message| ConfigError::Env { key: path.clone(), var: var.clone(), message })?;
            set_path(&mut merged, &path, value);
        }

        // Straight from the merged tree: a detour through JSON text rounded
        // some floats by one ulp (serde_json's fast float parsing) and put
        // positions in that internal text into error messages.
        serde_path_to_error::deserialize(merged)
            .map_err(|e| ConfigError::Invalid { path: e.path().to_string(), message: e.inner().to_string() })
    }

    /// Fail fast when a required setting is empty.
    pub fn require(&self, keys: &[&str]) -> Result<(), ConfigError> {
        let json = serde_json::to_value(self).expect("config serialises");
        for key in keys {
            let mut cur = &json;
            for part in key.split('.') {
                cur = cur.get(part).unwrap_or(&Value::Null);
            }
            let empty = match cur {
                Value::Null => true,
                Value::String(s) => s.trim().is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            if empty {
                return Err(ConfigError::Missing { key: (*key).to_string(), var: env_var_for(key) });
            }
        }
        Ok(())
    }

    /// Every setting with its environment variable and default, for the
    /// generated configuration reference.
    pub fn reference() -> Vec<(String, String, Value)> {
        let defaults = serde_json::to_value(Config::default()).expect("config serialises");
        let mut leaves = Vec::new();
        leaf_paths("", &defaults, &mut leaves);
        leaves.into_iter().map(|(p, v)| (env_var_for(&p), p, v)).collect()
    }

    /// gRPC URL of a role as seen by the other roles.
    pub fn upstream_url(&self, role: &str) -> String {
        let (explicit, listen) = match role {
            "identity" => (&self.upstreams.identity, &self.listen.identity),
            "control-plane" => (&self.upstreams.control_plane, &self.listen.control_plane),
            "orchestrator" => (&self.upstreams.orchestrator, &self.listen.orchestrator),
            "execution" => (&self.upstreams.execution, &self.listen.execution),
            "artifacts" => (&self.upstreams.artifacts, &self.listen.artifacts),
            _ => panic!("unknown role {role}"),
        };
        if explicit.is_empty() {
            let listen = listen.replace("0.0.0.0", "127.0.0.1");
            format!("http://{listen}")
        } else {
            explicit.clone()
        }
    }

    /// Listen address of a gRPC role.
    pub fn listen_addr(&self, role: &str) -> &str {
        match role {
            "edge" => &self.listen.edge,
            "identity" => &self.listen.identity,
            "control-plane" => &self.listen.control_plane,
            "orchestrator" => &self.listen.orchestrator,
            "execution" => &self.listen.execution,
            "artifacts" => &self.listen.artifacts,
            _ => panic!("unknown role {role}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource { file: None, env: Some(pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()) }
    }

    #[test]
    fn defaults_load_without_any_input() {
        let c = Config::load(&env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn env_overrides_defaults_with_types() {
        let c = Config::load(&env(&[
            ("BLAZE_LISTEN_CONTROL_PLANE", "0.0.0.0:7000"),
            ("BLAZE_AMQP_PREFETCH", "9"),
            ("BLAZE_AUTH_DEV_MODE", "true"),
            ("BLAZE_RATE_LIMIT_USER_PER_SEC", "2.5"),
            ("BLAZE_EDGE_CORS_ORIGINS", "http://a.test, http://b.test"),
            ("BLAZE_LLM_PROVIDERS", r#"{"oa":{"kind":"openai","base_url":"http://x"}}"#),
        ]))
        .unwrap();
        assert_eq!(c.listen.control_plane, "0.0.0.0:7000");
        assert_eq!(c.amqp.prefetch, 9);
        assert!(c.auth.dev_mode);
        assert_eq!(c.rate_limit.user_per_sec, 2.5);
        assert_eq!(c.edge.cors_origins, vec!["http://a.test", "http://b.test"]);
        assert_eq!(c.llm.providers["oa"].base_url, "http://x");
        assert_eq!(c.upstream_url("control-plane"), "http://127.0.0.1:7000");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let c = Config::load(&env(&[("BLAZE_AUTH_SIGNING_KEY_FILE", path.to_str().unwrap())])).unwrap();
        assert_eq!(c.auth.signing_key.expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn file_layer_sits_between_defaults_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blaze.toml");
        std::fs::write(&path, "[redis]\nkey_prefix = \"file:\"\n[amqp]\nprefix = \"fromfile\"\n").unwrap();
        let source = ConfigSource { file: Some(path), env: Some(vec![("BLAZE_AMQP_PREFIX".into(), "fromenv".into())]) };
        let c = Config::load(&source).unwrap();
        assert_eq!(c.redis.key_prefix, "file:");
        assert_eq!(c.amqp.prefix, "fromenv");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_fail_with_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blaze.toml");
        std::fs::write(&path, "[redis]\nurll = \"x\"\n").unwrap();
        let err = Config::load(&ConfigSource { file: Some(path), env: Some(vec![]) }).unwrap_err().to_string();
        assert!(err.contains("redis") && err.contains("urll"), "{err}");

        let err = Config::load(&env(&[("BLAZE_AMQP_PREFETCH", "lots")])).unwrap_err().to_string();
        assert!(err.contains("BLAZE_AMQP_PREFETCH") && err.contains("amqp.prefetch"), "{err}");
    }

    #[test]
    fn float_settings_load_exactly() {
        // Found by fuzzing: the value used to lose its last bit on the way.
        let c = Config::load(&env(&[("BLAZE_RATE_LIMIT_USER_PER_SEC", "-263995095.13272402")])).unwrap();
        assert_eq!(c.rate_limit.user_per_sec, "-263995095.13272402".parse::<f64>().unwrap());
    }

    #[test]
    fn missing_required_setting_names_the_variable() {
        let c = Config::load(&env(&[])).unwrap();
        let err = c.require(&["auth.signing_key"]).unwrap_err().to_string();
        assert_eq!(err, "missing required setting auth.signing_key: set BLAZE_AUTH_SIGNING_KEY or BLAZE_AUTH_SIGNING_KEY_FILE");
    }

    #[test]
    fn both_value_and_file_is_ambiguous() {
        let err = Config::load(&env(&[("BLAZE_S3_SECRET_KEY", "a"), ("BLAZE_S3_SECRET_KEY_FILE", "/x")])).unwrap_err();
        assert!(matches!(err, ConfigError::Ambiguous { .. }));
    }
}
