//! Forward-only schema migrations. Each migration is one SQL file in
//! `migrations/sql/`, applied in order inside a transaction; a test checks
//! the effect of every one of them on a fresh database.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbErr};
use sea_orm_migration::prelude::*;

macro_rules! sql_migration {
    ($ty:ident, $name:literal, $file:literal) => {
        pub struct $ty;
        impl MigrationName for $ty {
            fn name(&self) -> &str {
                $name
            }
        }
        #[async_trait::async_trait]
        impl MigrationTrait for $ty {
            async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                manager.get_connection().execute_unprepared(include_str!(concat!("../sql/", $file))).await?;
                Ok(())
            }
        }
    };
}

sql_migration!(RolesAndTenancy, "m0001_roles_and_tenancy", "0001_roles_and_tenancy.sql");
sql_migration!(AuditUsageTokens, "m0002_audit_usage_tokens", "0002_audit_usage_tokens.sql");
sql_migration!(AppsChatsSettings, "m0003_apps_chats_settings", "0003_apps_chats_settings.sql");
sql_migration!(JobsPreviewsDeployments, "m0004_jobs_previews_deployments", "0004_jobs_previews_deployments.sql");
sql_migration!(Prompts, "m0005_prompts", "0005_prompts.sql");
sql_migration!(ExecutionLookups, "m0006_execution_lookups", "0006_execution_lookups.sql");

/// The SQL of every migration, in order.
pub const SQL: &[&str] = &[
    include_str!("../sql/0001_roles_and_tenancy.sql"),
    include_str!("../sql/0002_audit_usage_tokens.sql"),
    include_str!("../sql/0003_apps_chats_settings.sql"),
    include_str!("../sql/0004_jobs_previews_deployments.sql"),
    include_str!("../sql/0005_prompts.sql"),
    include_str!("../sql/0006_execution_lookups.sql"),
];

/// A short fingerprint of the schema (FNV-1a over the SQL), e.g. for naming
/// a migrated template database in tests.
pub fn fingerprint() -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for sql in SQL {
        for b in sql.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(RolesAndTenancy),
            Box::new(AuditUsageTokens),
            Box::new(AppsChatsSettings),
            Box::new(JobsPreviewsDeployments),
            Box::new(Prompts),
            Box::new(ExecutionLookups),
        ]
    }
}

/// Apply every pending migration, connecting as the schema owner.
pub async fn run(owner_url: &str) -> Result<usize, DbErr> {
    let mut opts = ConnectOptions::new(owner_url.to_owned());
    opts.max_connections(1).sqlx_logging(false);
    let db = Database::connect(opts).await?;
    let pending = Migrator::get_pending_migrations(&db).await?.len();
    Migrator::up(&db, None).await?;
    db.close().await?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sql_file_is_a_registered_migration() {
        // The fingerprint covers SQL; a file missing from the migrator would
        // name a template database after a schema it does not have.
        assert_eq!(SQL.len(), Migrator::migrations().len());
        // And every file on disk is in SQL (so in the migrator too).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("migrations/sql")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), SQL.len(), "a file in migrations/sql is not registered: {files:?}");
        for (file, sql) in files.iter().zip(SQL) {
            assert_eq!(&std::fs::read_to_string(file).expect("read"), sql, "{} is not registered in order", file.display());
        }
    }
}
