//! `blaze dev up`: the whole system on one machine for development. Persists
//! a dev signing key under `var/dev`, migrates, seeds a dev user with an
//! organisation and an API token, enables dev headers (loopback only) and
//! runs every role.

use std::path::Path;

use blaze_kit::Config;

/// Development defaults on top of the loaded configuration.
pub fn prepare(mut cfg: Config, var: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(var.join("dev"))?;
    let var = &std::fs::canonicalize(var)?;
    if cfg.auth.signing_key.is_empty() && cfg.auth.verify_keys.is_empty() {
        let path = var.join("dev/signing.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => {
                let k = blaze_auth::KeySet::new_private_key_hex();
                write_secret(&path, &k)?;
                k
            }
        };
        cfg.auth.signing_key = blaze_kit::Secret(key);
    }
    if cfg.secrets.encryption_key.is_empty() {
        let path = var.join("dev/encryption.key");
        let key = match std::fs::read_to_string(&path) {
            Ok(k) if k.trim().len() == 64 => k.trim().to_owned(),
            _ => {
                let k: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
                write_secret(&path, &k)?;
                k
            }
        };
        cfg.secrets.encryption_key = blaze_kit::Secret(key);
    }
    // Dev headers are for this machine only.
    let loopback = cfg.listen.edge.starts_with("127.") || cfg.listen.edge.starts_with("localhost") || cfg.listen.edge.starts_with("[::1]");
    cfg.auth.dev_mode = loopback;
    if cfg.git.root.is_relative() {
        cfg.git.root = var.join("repos");
    }
    if cfg.sandbox.root.is_relative() {
        cfg.sandbox.root = var.join("sandboxes");
    }
    if cfg.sandbox.cache_root.is_relative() {
        cfg.sandbox.cache_root = var.join("cache");
    }
    cfg.telemetry.log_format = if cfg.telemetry.log_format == "json" { "text".into() } else { cfg.telemetry.log_format };
    Ok(cfg)
}

/// Write a secret readable by its owner only.
pub fn write_secret(path: &Path, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    std::io::Write::write_all(&mut f, content.as_bytes())
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// Create the database of `database.migration_url` when missing, then apply
/// every pending migration.
pub async fn migrate_database(cfg: &Config) -> anyhow::Result<usize> {
    ensure_database(cfg.database.migration_url.expose()).await?;
    Ok(blaze_migrations::run(cfg.database.migration_url.expose()).await?)
}

fn admin_connection(url: &str) -> anyhow::Result<(url::Url, String)> {
    let parsed = url::Url::parse(url).map_err(|_| anyhow::anyhow!("database.migration_url is not a URL"))?;
    let name = parsed.path().trim_start_matches('/').to_string();
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {name:?} must be [A-Za-z0-9_]+"
    );
    let mut admin = parsed;
    admin.set_path("/postgres");
    Ok((admin, name))
}

/// Create the target database of a DSN when it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let (admin, name) = admin_connection(url)?;
    let db = Database::connect(admin.as_str()).await.map_err(|e| anyhow::anyhow!("cannot reach Postgres: {e}"))?;
    let exists = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        db.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await?;
        println!("created database {name}");
    }
    db.close().await?;
    Ok(())
}

/// Drop a database (benchmarks clean up after themselves).
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database};
    anyhow::ensure!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "database name {name:?}");
    let (admin, _) = admin_connection(admin_url)?;
    let db = Database::connect(admin.as_str()).await?;
    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await?;
    db.close().await?;
    Ok(())
}
