//! Every migration applied to a fresh database, with its effect checked.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

fn admin_url() -> String {
    std::env::var("BLAZE_TEST_PG_ADMIN").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn db_url(name: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("url with a database");
    format!("{base}/{name}")
}

async fn connect(url: &str) -> DatabaseConnection {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(2).sqlx_logging(false);
    Database::connect(o).await.expect("connect")
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.expect(sql).expect("row");
    row.try_get_by_index::<i64>(0).expect("i64")
}

#[tokio::test]
async fn all_migrations_apply_on_a_fresh_database_with_their_effects() {
    let name = format!("blaze_mig_{}", uuid::Uuid::new_v4().simple());
    let admin = connect(&admin_url()).await;
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();

    let applied = blaze_migrations::run(&db_url(&name)).await.unwrap();
    assert_eq!(applied, 6);
    // idempotent: a second run applies nothing
    assert_eq!(blaze_migrations::run(&db_url(&name)).await.unwrap(), 0);

    let db = connect(&db_url(&name)).await;
    // m0001: tenancy tables under RLS, the app role exists without BYPASSRLS
    // m0002: audit/usage/quotas/tokens; m0003: apps/chats/messages/settings;
    // m0004: jobs/previews/deployments; m0005: the prompt library
    for table in [
        "organizations",
        "organization_memberships",
        "workspaces",
        "workspace_memberships",
        "projects",
        "audit_events",
        "usage_events",
        "quotas",
        "api_tokens",
        "apps",
        "chats",
        "messages",
        "user_settings",
        "workspace_model_policies",
        "jobs",
        "previews",
        "deployments",
        "deployment_aliases",
        "prompts",
    ] {
        let rls = scalar(&db, &format!("SELECT count(*) FROM pg_class WHERE relname = '{table}' AND relrowsecurity")).await;
        assert_eq!(rls, 1, "{table} must exist with row-level security");
    }
    assert_eq!(scalar(&db, "SELECT count(*) FROM pg_roles WHERE rolname = 'blaze_app' AND NOT rolbypassrls AND NOT rolsuper").await, 1);
    // m0006: cross-tenant lookups are SECURITY DEFINER functions the app role may call
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM pg_proc WHERE proname IN ('blaze_preview_org', 'blaze_alias_org', 'blaze_idle_previews') AND prosecdef"
        )
        .await,
        3
    );
    // m0002: the ledgers are append-only even for the owner
    db.execute_unprepared(
        "INSERT INTO organizations (id, slug, name) VALUES ('00000000-0000-7000-8000-000000000001', 'o', 'O');
         INSERT INTO audit_events (organization_id, action, resource_type) VALUES ('00000000-0000-7000-8000-000000000001', 'x', 'y');",
    )
    .await
    .unwrap();
    let err = db.execute_unprepared("UPDATE audit_events SET action = 'z'").await.unwrap_err().to_string();
    assert!(err.contains("append-only"), "{err}");
    let err = db.execute_unprepared("DELETE FROM audit_events").await.unwrap_err().to_string();
    assert!(err.contains("append-only"), "{err}");

    db.close().await.unwrap();
    admin.execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
}
