//! Per-user settings and per-workspace model policy. Secrets are stored
//! sealed (see `blaze_kit::secrets`) in separate columns and never read back
//! into API responses.

use sea_orm::FromQueryResult;
use uuid::Uuid;

use crate::{DbResult, Tx};

#[derive(Debug, Clone, FromQueryResult)]
pub struct UserSettingsRow {
    pub settings: serde_json::Value,
    pub provider_secrets: Option<Vec<u8>>,
}

pub async fn user_settings(tx: &Tx, user: Uuid) -> DbResult<Option<UserSettingsRow>> {
    tx.one("SELECT settings, provider_secrets FROM user_settings WHERE user_id = $1", vec![user.into()]).await
}

pub async fn save_user_settings(tx: &Tx, user: Uuid, settings: serde_json::Value, secrets: Option<Vec<u8>>) -> DbResult<()> {
    tx.execute(
        "INSERT INTO user_settings (user_id, settings, provider_secrets) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET settings = EXCLUDED.settings, provider_secrets = COALESCE(EXCLUDED.provider_secrets, user_settings.provider_secrets)",
        vec![user.into(), settings.into(), secrets.into()],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct ModelPolicyRow {
    pub allowed_models: Vec<String>,
    pub default_model: String,
    pub max_output_tokens: i32,
    pub providers: serde_json::Value,
    pub provider_keys: Option<Vec<u8>>,
}

pub async fn model_policy(tx: &Tx, org: Uuid, ws: Uuid) -> DbResult<Option<ModelPolicyRow>> {
    tx.one(
        "SELECT allowed_models, default_model, max_output_tokens, providers, provider_keys FROM workspace_model_policies
         WHERE organization_id = $1 AND workspace_id = $2",
        vec![org.into(), ws.into()],
    )
    .await
}

pub async fn save_model_policy(tx: &Tx, org: Uuid, ws: Uuid, p: &ModelPolicyRow) -> DbResult<()> {
    tx.execute(
        "INSERT INTO workspace_model_policies (organization_id, workspace_id, allowed_models, default_model, max_output_tokens, providers, provider_keys)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (organization_id, workspace_id) DO UPDATE SET allowed_models = EXCLUDED.allowed_models, default_model = EXCLUDED.default_model,
           max_output_tokens = EXCLUDED.max_output_tokens, providers = EXCLUDED.providers, provider_keys = EXCLUDED.provider_keys",
        vec![
            org.into(),
            ws.into(),
            p.allowed_models.clone().into(),
            p.default_model.clone().into(),
            p.max_output_tokens.into(),
            p.providers.clone().into(),
            p.provider_keys.clone().into(),
        ],
    )
    .await?;
    Ok(())
}
