//! A typed catalogue of every RPC: its HTTP bindings (`google.api.http`), its
//! access rule, SSE settings and header bindings (`blaze.options.v1`).
//!
//! Built once from [`crate::FILE_DESCRIPTOR_SET`]; everything route- or
//! policy-specific in the system is derived from here, so a new RPC is
//! covered by the edge, authorization and OpenAPI without further code.

use std::{
    collections::{HashMap, HashSet},
    sync::OnceLock,
};

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, FieldDescriptor, MethodDescriptor, Value};

use crate::options::{Access, HeaderBinding, Role, Scope, ServerSentEvents};

/// One HTTP binding of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBinding {
    /// Upper-case HTTP method (`GET`, `POST`, …, or a custom verb).
    pub method: String,
    /// Path template, e.g. `/api/v1/orgs/{org_id}/workspaces/{workspace_id}/apps:search`.
    pub template: String,
    /// `*`, a field name, or empty (no body).
    pub body: String,
    /// Response field that becomes the body; empty = the whole message.
    pub response_body: String,
}

/// Everything the system knows about one RPC.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    /// gRPC path, `/blaze.controlplane.v1.AppService/ListApps`.
    pub path: String,
    pub descriptor: MethodDescriptor,
    pub access: Access,
    pub http: Vec<HttpBinding>,
    pub header_bindings: Vec<HeaderBinding>,
    pub sse: Option<ServerSentEvents>,
}

impl MethodSpec {
    pub fn scope(&self) -> Scope {
        Scope::try_from(self.access.scope).unwrap_or(Scope::Unspecified)
    }

    pub fn min_role(&self) -> Role {
        Role::try_from(self.access.min_role).unwrap_or(Role::Unspecified)
    }

    pub fn is_streaming(&self) -> bool {
        self.descriptor.is_server_streaming()
    }

    /// Internal RPCs have no HTTP binding and are callable by services only.
    pub fn is_internal(&self) -> bool {
        self.scope() == Scope::Internal
    }
}

/// The catalogue of every Blaze RPC.
pub struct Catalog {
    pool: DescriptorPool,
    methods: Vec<MethodSpec>,
    by_path: HashMap<String, usize>,
    /// Field full name → SSE event name (oneof cases of streamed messages).
    sse_events: HashMap<String, String>,
    /// Full names of fields marked `omit_empty`.
    omit_empty: HashSet<String>,
    /// Contract wording of 400s per field (`invalid_message`).
    invalid_messages: HashMap<String, String>,
}

#[derive(Debug)]
pub struct CatalogError(pub String);

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid descriptor set: {}", self.0)
    }
}

impl std::error::Error for CatalogError {}

fn ext(pool: &DescriptorPool, name: &str) -> Result<ExtensionDescriptor, CatalogError> {
    pool.get_extension_by_name(name).ok_or_else(|| CatalogError(format!("extension {name} missing")))
}

fn message_ext<T: prost::Message + Default>(opts: &DynamicMessage, ext: &ExtensionDescriptor) -> Result<Option<T>, CatalogError> {
    if !opts.has_extension(ext) {
        return Ok(None);
    }
    match opts.get_extension(ext).as_ref() {
        Value::Message(m) => m.transcode_to::<T>().map(Some).map_err(|e| CatalogError(e.to_string())),
        _ => Err(CatalogError(format!("{} is not a message", ext.full_name()))),
    }
}

fn http_bindings(rule: &DynamicMessage, out: &mut Vec<HttpBinding>) {
    let text = |name: &str| rule.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mut binding = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(verb) {
            binding = Some((verb.to_uppercase(), text(verb)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(Value::Message(custom)) = rule.get_field_by_name("custom").map(|v| v.into_owned())
    {
        let kind = custom.get_field_by_name("kind").and_then(|v| v.as_str().map(str::to_uppercase)).unwrap_or_default();
        let path = custom.get_field_by_name("path").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        binding = Some((kind, path));
    }
    if let Some((method, template)) = binding {
        out.push(HttpBinding { method, template, body: text("body"), response_body: text("response_body") });
    }
    if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").map(|v| v.into_owned()) {
        for v in extra {
            if let Value::Message(m) = v {
                http_bindings(&m, out);
            }
        }
    }
}

impl Catalog {
    /// Build from an encoded descriptor set (must be lossless).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, CatalogError> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| CatalogError(e.to_string()))?;
        let http = ext(&pool, "google.api.http")?;
        let access = ext(&pool, "blaze.options.v1.access")?;
        let header_bindings = ext(&pool, "blaze.options.v1.header_bindings")?;
        let sse = ext(&pool, "blaze.options.v1.sse")?;
        let sse_event = ext(&pool, "blaze.options.v1.sse_event")?;
        let omit_empty = ext(&pool, "blaze.options.v1.omit_empty")?;
        let invalid_message = ext(&pool, "blaze.options.v1.invalid_message")?;

        let mut methods = Vec::new();
        for service in pool.services() {
            if !service.full_name().starts_with("blaze.") {
                continue;
            }
            for method in service.methods() {
                let opts = method.options();
                let path = format!("/{}/{}", service.full_name(), method.name());
                let access: Access =
                    message_ext(&opts, &access)?.ok_or_else(|| CatalogError(format!("{path} has no (blaze.options.v1.access)")))?;
                let mut bindings = Vec::new();
                if opts.has_extension(&http)
                    && let Value::Message(rule) = opts.get_extension(&http).as_ref()
                {
                    http_bindings(rule, &mut bindings);
                }
                let mut headers = Vec::new();
                if opts.has_extension(&header_bindings)
                    && let Value::List(list) = opts.get_extension(&header_bindings).as_ref()
                {
                    for v in list {
                        if let Value::Message(m) = v {
                            headers.push(m.transcode_to::<HeaderBinding>().map_err(|e| CatalogError(e.to_string()))?);
                        }
                    }
                }
                let sse = message_ext::<ServerSentEvents>(&opts, &sse)?;
                methods.push(MethodSpec { path, descriptor: method, access, http: bindings, header_bindings: headers, sse });
            }
        }
        let by_path = methods.iter().enumerate().map(|(i, m)| (m.path.clone(), i)).collect();
        // Field options are decoded once here: reading them per response
        // would decode option bytes for every field of every message.
        let mut sse_events = HashMap::new();
        let mut omit = HashSet::new();
        let mut invalid_messages = HashMap::new();
        for message in pool.all_messages() {
            for field in message.fields() {
                let opts = field.options();
                if opts.has_extension(&sse_event)
                    && let Some(name) = opts.get_extension(&sse_event).as_str()
                {
                    sse_events.insert(field.full_name().to_owned(), name.to_owned());
                }
                if opts.has_extension(&omit_empty) && opts.get_extension(&omit_empty).as_bool().unwrap_or(false) {
                    omit.insert(field.full_name().to_owned());
                }
                if opts.has_extension(&invalid_message)
                    && let Some(msg) = opts.get_extension(&invalid_message).as_str()
                {
                    invalid_messages.insert(field.full_name().to_owned(), msg.to_owned());
                }
            }
        }
        Ok(Catalog { pool, methods, by_path, sse_events, omit_empty: omit, invalid_messages })
    }

    /// The catalogue of this build's protos.
    pub fn global() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| Catalog::from_descriptor_set(crate::FILE_DESCRIPTOR_SET).expect("embedded descriptor set is valid"))
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    pub fn methods(&self) -> &[MethodSpec] {
        &self.methods
    }

    /// Look up an RPC by its gRPC path (`/pkg.Service/Method`).
    pub fn method(&self, path: &str) -> Option<&MethodSpec> {
        self.by_path.get(path).map(|&i| &self.methods[i])
    }

    /// The SSE event name declared on a oneof case field.
    pub fn sse_event(&self, field: &FieldDescriptor) -> Option<&str> {
        self.sse_events.get(field.full_name()).map(String::as_str)
    }

    /// Whether a field is omitted from JSON when unset or empty.
    pub fn omit_empty(&self, field: &FieldDescriptor) -> bool {
        self.omit_empty.contains(field.full_name())
    }

    /// The contract's 400 message for an invalid value of this field.
    pub fn invalid_message(&self, field: &FieldDescriptor) -> Option<&str> {
        self.invalid_messages.get(field.full_name()).map(String::as_str)
    }
}

impl Role {
    /// The wire name used in tokens, the database and JSON (`owner`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unspecified => "none",
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role_for_service;

    #[test]
    fn every_rpc_has_an_access_rule_and_options_survive() {
        let catalog = Catalog::global();
        assert!(catalog.methods().len() > 60, "{}", catalog.methods().len());
        let list_apps = catalog.method("/blaze.controlplane.v1.AppService/ListApps").expect("ListApps");
        assert_eq!(list_apps.scope(), Scope::Workspace);
        assert_eq!(list_apps.min_role(), Role::Viewer);
        assert_eq!(
            list_apps.http,
            vec![HttpBinding {
                method: "GET".into(),
                template: "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/apps".into(),
                body: String::new(),
                response_body: String::new(),
            }]
        );
        let stream = catalog.method("/blaze.orchestrator.v1.ChatStreamService/StreamChat").expect("StreamChat");
        assert!(stream.is_streaming());
        assert_eq!(stream.sse.as_ref().map(|s| s.error_event.as_str()), Some("chat:response:error"));
        assert_eq!(stream.header_bindings[0].header, "Last-Event-ID");
        let out = stream.descriptor.output();
        let chunk = out.get_field_by_name("chunk").expect("chunk case");
        assert_eq!(catalog.sse_event(&chunk), Some("chat:response:chunk"));
        let end = catalog.pool().get_message_by_name("blaze.orchestrator.v1.ChatResponseEnd").expect("end");
        assert!(catalog.omit_empty(&end.get_field_by_name("extra_files").expect("field")));
        assert!(!catalog.omit_empty(&end.get_field_by_name("updated_files").expect("field")));
    }

    #[test]
    fn internal_rpcs_have_no_http_binding() {
        for m in Catalog::global().methods() {
            if m.is_internal() {
                assert!(m.http.is_empty(), "{} is internal but has an HTTP rule", m.path);
            } else {
                assert!(!m.http.is_empty(), "{} is public but has no HTTP rule", m.path);
            }
        }
    }

    #[test]
    fn services_map_to_roles() {
        assert_eq!(role_for_service("blaze.controlplane.v1.AppService"), Some("control-plane"));
        assert_eq!(role_for_service("blaze.artifacts.v1.RepositoryService"), Some("artifacts"));
        assert_eq!(role_for_service("blaze.controlplanex.v1.X"), None);
    }
}
