//! Settings: per-user settings (R35, R36) with the contract's strict keys and
//! enums, `/env-vars` (R37, always `{}`), the workspace's model policy, and
//! the internal resolution of a turn's model and preferences.
//!
//! Provider API keys are write-only: sealed with AES-GCM in their own column
//! and never put into any response.

use std::collections::BTreeMap;

use blaze_db::settings::{self as store, ModelPolicyRow};
use blaze_kit::{ApiError, ApiResult, Config, RequestContext, egress, parse_id, secrets::SecretBox};
use blaze_proto::controlplane::{self as pb, settings_service_server::SettingsService};
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, apps::scope};

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(r: ApiResult<T>) -> Rpc<T> {
    r.map(Response::new).map_err(Status::from)
}

/// Contract 3.10 defaults.
fn defaults() -> Value {
    json!({
        "selectedModel": {"name": "auto", "provider": "auto"},
        "providerSettings": {},
        "autoApproveChanges": true,
        "telemetryConsent": "unset",
        "hasRunBefore": false,
        "enableProLazyEditsMode": true,
        "enableProSmartFilesContextMode": true,
        "selectedTemplateId": "react",
        "selectedThemeId": "default",
        "uiLanguage": "ru",
        "selectedChatMode": "build",
        "enableAutoFixProblems": false,
        "enableNativeGit": true,
        "enableAutoUpdate": true,
        "releaseChannel": "stable",
    })
}

const ENUMS: &[(&str, &[&str])] = &[
    ("telemetryConsent", &["opted_in", "opted_out", "unset"]),
    ("thinkingBudget", &["low", "medium", "high"]),
    ("proLazyEditsMode", &["off", "v1", "v2"]),
    ("proSmartContextOption", &["balanced", "conservative", "deep"]),
    ("uiLanguage", &["ru", "en"]),
    ("selectedChatMode", &["build", "ask"]),
    ("defaultChatMode", &["build", "ask"]),
    ("releaseChannel", &["stable", "beta"]),
];

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::invalid(format!("Invalid settings payload: {}", msg.into()))
}

/// The fields a request actually set, as contract JSON.
fn patch_of(req: &pb::UpdateUserSettingsRequest) -> ApiResult<Map<String, Value>> {
    let desc = blaze_proto::catalog::Catalog::global()
        .pool()
        .get_message_by_name("blaze.controlplane.v1.UpdateUserSettingsRequest")
        .ok_or_else(|| ApiError::internal("descriptor missing"))?;
    let msg = DynamicMessage::decode(desc, req.encode_to_vec().as_slice()).map_err(ApiError::internal)?;
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &SerializeOptions::new().stringify_64_bit_integers(false)).map_err(ApiError::internal)?;
    match serde_json::from_slice(&ser.into_inner()).map_err(ApiError::internal)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::internal("settings patch is not an object")),
    }
}

fn validate(patch: &Map<String, Value>) -> ApiResult<()> {
    for (key, allowed) in ENUMS {
        if let Some(v) = patch.get(*key) {
            let s = v.as_str().unwrap_or_default();
            if !allowed.contains(&s) {
                return Err(invalid(format!("\"{key}\" must be one of {}", allowed.join(", "))));
            }
        }
    }
    if let Some(m) = patch.get("selectedModel") {
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        let provider = m.get("provider").and_then(Value::as_str).unwrap_or_default();
        if name.trim().is_empty() || provider.trim().is_empty() {
            return Err(invalid("\"selectedModel\" needs a name and a provider"));
        }
    }
    if let Some(n) = patch.get("maxChatTurnsInContext").and_then(Value::as_i64)
        && !(1..=50).contains(&n)
    {
        return Err(invalid("\"maxChatTurnsInContext\" must be between 1 and 50"));
    }
    for key in ["selectedTemplateId", "selectedThemeId", "telemetryUserId"] {
        if patch.get(key).and_then(Value::as_str).is_some_and(|s| s.len() > 200) {
            return Err(invalid(format!("\"{key}\" is too long")));
        }
    }
    Ok(())
}

fn merge(base: &mut Value, patch: &Map<String, Value>) {
    let obj = base.as_object_mut().expect("settings are an object");
    for (k, v) in patch {
        obj.insert(k.clone(), v.clone());
    }
}

/// The response form: stored settings over defaults, secrets left out.
fn render(stored: &Value) -> ApiResult<pb::UserSettings> {
    let mut out = defaults();
    if let Value::Object(s) = stored {
        merge(&mut out, s);
    }
    let desc = blaze_proto::catalog::Catalog::global()
        .pool()
        .get_message_by_name("blaze.controlplane.v1.UserSettings")
        .ok_or_else(|| ApiError::internal("descriptor missing"))?;
    let msg = DynamicMessage::deserialize(desc, out).map_err(ApiError::internal)?;
    msg.transcode_to::<pb::UserSettings>().map_err(ApiError::internal)
}

pub struct Settings {
    deps: Deps,
    secrets: SecretBox,
}

impl Settings {
    pub fn new(deps: Deps, secrets: SecretBox) -> Self {
        Settings { deps, secrets }
    }

    fn open_map(&self, sealed: Option<&[u8]>) -> ApiResult<BTreeMap<String, String>> {
        match sealed {
            Some(bytes) => serde_json::from_slice(&self.secrets.open(bytes)?).map_err(ApiError::internal),
            None => Ok(BTreeMap::new()),
        }
    }

    fn seal_map(&self, map: &BTreeMap<String, String>) -> Vec<u8> {
        self.secrets.seal(&serde_json::to_vec(map).expect("map serialises"))
    }

    async fn load_user(&self, user: Uuid) -> ApiResult<(Value, BTreeMap<String, String>)> {
        let tx = self.deps.db.as_user(user).await?;
        let row = store::user_settings(&tx, user).await?;
        let (mut settings, sealed) = match row {
            Some(r) => (r.settings, r.provider_secrets),
            None => (json!({}), None),
        };
        if settings.get("telemetryUserId").is_none() {
            // a stable anonymous id, minted once
            merge(&mut settings, &Map::from_iter([("telemetryUserId".to_owned(), Value::String(Uuid::new_v4().to_string()))]));
            store::save_user_settings(&tx, user, settings.clone(), None).await?;
        }
        tx.commit().await?;
        Ok((settings, self.open_map(sealed.as_deref())?))
    }
}

fn provider_kind_ok(kind: &str) -> bool {
    matches!(kind, "openai" | "anthropic")
}

#[tonic::async_trait]
impl SettingsService for Settings {
    async fn get_user_settings(&self, req: Request<pb::GetUserSettingsRequest>) -> Rpc<pb::GetUserSettingsResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let user = parse_id(ctx.user_id()?, "USER_NOT_FOUND", "User")?;
            let (settings, _) = self.load_user(user).await?;
            Ok(pb::GetUserSettingsResponse { data: Some(render(&settings)?) })
        }
        .await)
    }

    async fn update_user_settings(&self, req: Request<pb::UpdateUserSettingsRequest>) -> Rpc<pb::UpdateUserSettingsResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let user = parse_id(ctx.user_id()?, "USER_NOT_FOUND", "User")?;
            let mut patch = patch_of(&r)?;
            validate(&patch)?;
            let (mut settings, mut keys) = self.load_user(user).await?;
            let mut secrets_changed = false;
            if let Some(Value::Object(providers)) = patch.remove("providerSettings") {
                let stored = settings.as_object_mut().expect("object").entry("providerSettings").or_insert_with(|| json!({}));
                for (id, p) in providers {
                    if let Some(value) = p.pointer("/apiKey/value").and_then(Value::as_str) {
                        if value.is_empty() {
                            keys.remove(&id);
                        } else {
                            keys.insert(id.clone(), value.to_owned());
                        }
                        secrets_changed = true;
                    }
                    let mut public = Map::new();
                    if let Some(url) = p.get("baseUrl").and_then(Value::as_str) {
                        egress::check_url(url, self.deps.cfg.llm.allow_private_base_urls)
                            .map_err(|e| invalid(format!("\"baseUrl\" of {id}: {e}")))?;
                        public.insert("baseUrl".into(), Value::String(url.to_owned()));
                    }
                    stored[&id] = Value::Object(public);
                }
            }
            merge(&mut settings, &patch);
            let tx = self.deps.db.as_user(user).await?;
            store::save_user_settings(&tx, user, settings.clone(), secrets_changed.then(|| self.seal_map(&keys))).await?;
            tx.commit().await?;
            Ok(pb::UpdateUserSettingsResponse { data: Some(render(&settings)?) })
        }
        .await)
    }

    async fn get_env_vars(&self, _req: Request<pb::GetEnvVarsRequest>) -> Rpc<pb::GetEnvVarsResponse> {
        // The old server returned real provider keys here (B9). Nothing the
        // browser needs lives in server environment variables.
        Ok(Response::new(pb::GetEnvVarsResponse { data: Default::default() }))
    }

    async fn get_model_policy(&self, req: Request<pb::GetModelPolicyRequest>) -> Rpc<pb::GetModelPolicyResponse> {
        let ctx = RequestContext::of(&req)?;
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let row = store::model_policy(&tx, org, ws).await?;
            tx.commit().await?;
            Ok(pb::GetModelPolicyResponse { data: Some(self.policy_view(row)?) })
        }
        .await)
    }

    async fn update_model_policy(&self, req: Request<pb::UpdateModelPolicyRequest>) -> Rpc<pb::UpdateModelPolicyResponse> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        ok(async {
            let (org, ws, user) = scope(&ctx)?;
            let tx = self.deps.db.tenant(org, user).await?;
            let current = store::model_policy(&tx, org, ws).await?;
            let mut keys = self.open_map(current.as_ref().and_then(|c| c.provider_keys.as_deref()))?;
            let mut providers: Vec<Value> = current.as_ref().and_then(|c| c.providers.as_array().cloned()).unwrap_or_default();
            if r.replace_providers || !r.providers.is_empty() {
                providers.clear();
                let mut seen = std::collections::HashSet::new();
                for p in &r.providers {
                    let id = blaze_db::tenancy::sanitize_slug(&p.id);
                    if id.is_empty() || !seen.insert(id.clone()) {
                        return Err(ApiError::invalid("Invalid payload: provider ids must be unique, non-empty slugs"));
                    }
                    if !provider_kind_ok(&p.kind) {
                        return Err(ApiError::invalid("Invalid payload: provider \"kind\" must be openai or anthropic"));
                    }
                    egress::check_url(&p.base_url, self.deps.cfg.llm.allow_private_base_urls)
                        .map_err(|e| ApiError::invalid(format!("Invalid payload: \"baseUrl\" of {id}: {e}")))?;
                    if !p.api_key.is_empty() {
                        keys.insert(id.clone(), p.api_key.clone());
                    }
                    providers.push(json!({"id": id, "kind": p.kind, "baseUrl": p.base_url}));
                }
                keys.retain(|k, _| seen.contains(k));
            }
            let row = ModelPolicyRow {
                allowed_models: if r.allowed_models.is_empty() {
                    current.as_ref().map(|c| c.allowed_models.clone()).unwrap_or_default()
                } else {
                    r.allowed_models.clone()
                },
                default_model: r.default_model.clone().or_else(|| current.as_ref().map(|c| c.default_model.clone())).unwrap_or_default(),
                max_output_tokens: r.max_output_tokens.or_else(|| current.as_ref().map(|c| c.max_output_tokens)).unwrap_or(0).max(0),
                providers: Value::Array(providers),
                provider_keys: (!keys.is_empty()).then(|| self.seal_map(&keys)),
            };
            store::save_model_policy(&tx, org, ws, &row).await?;
            blaze_db::audit::record(
                &tx,
                blaze_db::audit::AuditEvent::new(org, "model_policy_update", "workspace").workspace(ws).actor(user).resource(ws),
            )
            .await?;
            tx.commit().await?;
            Ok(pb::UpdateModelPolicyResponse { data: Some(self.policy_view(Some(row))?) })
        }
        .await)
    }

    async fn resolve_turn_settings(&self, req: Request<pb::ResolveTurnSettingsRequest>) -> Rpc<pb::ResolveTurnSettingsResponse> {
        let r = req.into_inner();
        ok(async {
            let org = parse_id(&r.organization_id, "ORG_NOT_FOUND", "Organization")?;
            let ws = parse_id(&r.workspace_id, "WORKSPACE_NOT_FOUND", "Workspace")?;
            let user = parse_id(&r.user_id, "USER_NOT_FOUND", "User")?;
            let (settings, user_keys) = self.load_user(user).await?;
            let tx = self.deps.db.tenant(org, Some(user)).await?;
            let policy = store::model_policy(&tx, org, ws).await?;
            tx.commit().await?;
            let policy_keys = self.open_map(policy.as_ref().and_then(|p| p.provider_keys.as_deref()))?;
            let resolved = resolve_model(&self.deps.cfg, policy.as_ref(), &policy_keys, &settings, &user_keys)?;
            let get_bool = |k: &str, d: bool| settings.get(k).and_then(Value::as_bool).unwrap_or(d);
            let get_str = |k: &str, d: &str| settings.get(k).and_then(Value::as_str).unwrap_or(d).to_owned();
            let max_turns = settings.get("maxChatTurnsInContext").and_then(Value::as_i64).unwrap_or(3) as i32;
            let policy_max = policy.as_ref().map(|p| p.max_output_tokens).filter(|m| *m > 0);
            Ok(pb::ResolveTurnSettingsResponse {
                provider_id: resolved.provider_id,
                provider_kind: resolved.kind,
                base_url: resolved.base_url,
                api_key: resolved.api_key,
                model: resolved.model,
                max_output_tokens: policy_max.unwrap_or(self.deps.cfg.llm.max_output_tokens as i32),
                context_window: resolved.context_window as i32,
                auto_approve_changes: get_bool("autoApproveChanges", true),
                chat_mode: get_str("selectedChatMode", "build"),
                ui_language: get_str("uiLanguage", "ru"),
                max_chat_turns_in_context: max_turns,
                demo_model: resolved.demo,
            })
        }
        .await)
    }
}

impl Settings {
    fn policy_view(&self, row: Option<ModelPolicyRow>) -> ApiResult<pb::ModelPolicy> {
        let cfg = &self.deps.cfg;
        let Some(row) = row else {
            return Ok(pb::ModelPolicy {
                allowed_models: Vec::new(),
                default_model: cfg.llm.default_model.clone(),
                max_output_tokens: cfg.llm.max_output_tokens as i32,
                providers: cfg
                    .llm
                    .providers
                    .iter()
                    .map(|(id, p)| pb::ProviderConfig {
                        id: id.clone(),
                        kind: p.kind.clone(),
                        base_url: p.base_url.clone(),
                        api_key_configured: !p.api_key.is_empty(),
                    })
                    .collect(),
            });
        };
        let keys = self.open_map(row.provider_keys.as_deref())?;
        Ok(pb::ModelPolicy {
            allowed_models: row.allowed_models,
            default_model: row.default_model,
            max_output_tokens: row.max_output_tokens,
            providers: row
                .providers
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let id = p["id"].as_str().unwrap_or_default().to_owned();
                    pb::ProviderConfig {
                        api_key_configured: keys.contains_key(&id),
                        id,
                        kind: p["kind"].as_str().unwrap_or_default().into(),
                        base_url: p["baseUrl"].as_str().unwrap_or_default().into(),
                    }
                })
                .collect(),
        })
    }
}

#[derive(Debug, PartialEq)]
struct Resolved {
    provider_id: String,
    kind: String,
    base_url: String,
    api_key: String,
    model: String,
    context_window: u32,
    demo: bool,
}

/// Which model a turn uses: the workspace's default (within its allowed
/// list), else the user's selection, else the platform default, else the
/// demo model.
fn resolve_model(
    cfg: &Config,
    policy: Option<&ModelPolicyRow>,
    policy_keys: &BTreeMap<String, String>,
    settings: &Value,
    user_keys: &BTreeMap<String, String>,
) -> ApiResult<Resolved> {
    let lookup = |provider: &str, model: &str| -> Option<Resolved> {
        // workspace providers first, then platform providers
        if let Some(p) = policy.and_then(|p| p.providers.as_array()).into_iter().flatten().find(|p| p["id"] == provider) {
            return Some(Resolved {
                provider_id: provider.into(),
                kind: p["kind"].as_str().unwrap_or("openai").into(),
                base_url: p["baseUrl"].as_str().unwrap_or_default().into(),
                api_key: policy_keys.get(provider).cloned().unwrap_or_default(),
                model: model.into(),
                context_window: cfg.llm.default_context_window,
                demo: false,
            });
        }
        let p = cfg.llm.providers.get(provider)?;
        let api_key = user_keys.get(provider).cloned().filter(|k| !k.is_empty()).unwrap_or_else(|| p.api_key.expose().to_owned());
        Some(Resolved {
            provider_id: provider.into(),
            kind: p.kind.clone(),
            base_url: p.base_url.clone(),
            api_key,
            model: model.into(),
            context_window: p.models.get(model).copied().unwrap_or(cfg.llm.default_context_window),
            demo: false,
        })
    };
    let split = |s: &str| s.split_once('/').map(|(p, m)| (p.to_owned(), m.to_owned()));
    let allowed = |provider: &str, model: &str| {
        policy.is_none_or(|p| p.allowed_models.is_empty() || p.allowed_models.iter().any(|a| a == &format!("{provider}/{model}")))
    };
    if let Some((p, m)) = policy.and_then(|p| split(&p.default_model))
        && let Some(r) = lookup(&p, &m)
    {
        return Ok(r);
    }
    let selected = settings.get("selectedModel");
    let (sp, sm) =
        (selected.and_then(|s| s["provider"].as_str()).unwrap_or("auto"), selected.and_then(|s| s["name"].as_str()).unwrap_or("auto"));
    if sp != "auto"
        && allowed(sp, sm)
        && let Some(r) = lookup(sp, sm)
    {
        return Ok(r);
    }
    if let Some((p, m)) = split(&cfg.llm.default_model)
        && allowed(&p, &m)
        && let Some(r) = lookup(&p, &m)
    {
        return Ok(r);
    }
    if !cfg.llm.demo_base_url.is_empty() {
        return Ok(Resolved {
            provider_id: "demo".into(),
            kind: "openai".into(),
            base_url: cfg.llm.demo_base_url.clone(),
            api_key: String::new(),
            model: "demo".into(),
            context_window: cfg.llm.default_context_window,
            demo: true,
        });
    }
    Err(ApiError::precondition("NO_MODEL_CONFIGURED", "No model provider is configured for this workspace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_enums_are_strict() {
        let bad = Map::from_iter([("uiLanguage".to_owned(), json!("de"))]);
        assert!(validate(&bad).unwrap_err().message.contains("\"uiLanguage\" must be one of ru, en"));
        let bad = Map::from_iter([("selectedChatMode".to_owned(), json!("local-agent"))]);
        assert!(validate(&bad).is_err());
        let good = Map::from_iter([("uiLanguage".to_owned(), json!("en")), ("autoApproveChanges".to_owned(), json!(false))]);
        assert!(validate(&good).is_ok());
        let rendered = render(&json!({"uiLanguage": "en"})).unwrap();
        assert_eq!(rendered.ui_language.as_deref(), Some("en"));
        assert_eq!(rendered.auto_approve_changes, Some(true));
        assert_eq!(rendered.selected_template_id, "react");
    }

    #[test]
    fn model_resolution_prefers_workspace_then_user_then_platform_then_demo() {
        let mut cfg = Config::default();
        assert!(resolve_model(&cfg, None, &BTreeMap::new(), &json!({}), &BTreeMap::new()).is_err());
        cfg.llm.demo_base_url = "http://127.0.0.1:9/v1".into();
        assert!(resolve_model(&cfg, None, &BTreeMap::new(), &json!({}), &BTreeMap::new()).unwrap().demo);
        cfg.llm.providers.insert(
            "oa".into(),
            blaze_kit::config::ProviderEntry {
                kind: "openai".into(),
                base_url: "https://api.example.com/v1".into(),
                api_key: blaze_kit::Secret("k".into()),
                models: BTreeMap::from([("m1".into(), 200_000)]),
            },
        );
        cfg.llm.default_model = "oa/m1".into();
        let r = resolve_model(&cfg, None, &BTreeMap::new(), &json!({}), &BTreeMap::new()).unwrap();
        assert_eq!((r.model.as_str(), r.context_window, r.api_key.as_str()), ("m1", 200_000, "k"));
        let policy = ModelPolicyRow {
            allowed_models: vec![],
            default_model: "ws/m2".into(),
            max_output_tokens: 0,
            providers: json!([{"id": "ws", "kind": "anthropic", "baseUrl": "https://anthropic.example.com"}]),
            provider_keys: None,
        };
        let keys = BTreeMap::from([("ws".to_owned(), "wskey".to_owned())]);
        let r = resolve_model(&cfg, Some(&policy), &keys, &json!({}), &BTreeMap::new()).unwrap();
        assert_eq!((r.kind.as_str(), r.model.as_str(), r.api_key.as_str()), ("anthropic", "m2", "wskey"));
    }
}
