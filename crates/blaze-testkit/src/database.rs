//! A fresh database per test, cloned from a template that holds the current
//! migrations (migrating once per schema version, not once per test).

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

fn admin_url() -> String {
    super::env_or("BLAZE_TEST_PG_ADMIN", "postgres://postgres@127.0.0.1:5432/postgres")
}

fn with_db(url: &str, user: Option<&str>, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("admin url");
    if let Some(user) = user {
        u.set_username(user).expect("username");
        u.set_password(None).expect("password");
    }
    u.set_path(&format!("/{db}"));
    // loopback: skip the TLS handshake on every new connection
    u.set_query(Some("sslmode=disable"));
    u.to_string()
}

async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut o = ConnectOptions::new(url.to_owned());
    o.max_connections(1).sqlx_logging(false);
    Ok(Database::connect(o).await?)
}

pub struct TestDatabase {
    pub name: String,
    /// Schema owner (migrations, raw checks that bypass RLS).
    pub owner_url: String,
    /// The application role (subject to RLS), as services use.
    pub app_url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<TestDatabase> {
        let admin = admin_url();
        let template = format!("blaze_tpl_{}", blaze_migrations::fingerprint());
        let conn = connect(&admin).await?;
        // One process migrates the template; the others wait on the lock.
        conn.execute_unprepared("SELECT pg_advisory_lock(4242001)").await?;
        let exists = conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT 1 FROM pg_database WHERE datname = $1",
                [template.clone().into()],
            ))
            .await?
            .is_some();
        if !exists {
            let building = format!("{template}_build");
            conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).await?;
            conn.execute_unprepared(&format!("CREATE DATABASE {building}")).await?;
            blaze_migrations::run(&with_db(&admin, None, &building)).await?;
            conn.execute_unprepared(&format!("ALTER DATABASE {building} RENAME TO {template}")).await?;
        }
        conn.execute_unprepared("SELECT pg_advisory_unlock(4242001)").await?;

        let name = format!("blaze_t_{}", uuid::Uuid::new_v4().simple());
        let mut attempt = 0;
        loop {
            match conn.execute_unprepared(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await {
                Ok(_) => break,
                // another test is cloning the same template right now
                Err(e) if attempt < 100 && e.to_string().contains("being accessed by other users") => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        conn.close().await?;
        Ok(TestDatabase { owner_url: with_db(&admin, None, &name), app_url: with_db(&admin, Some("blaze_app"), &name), name })
    }

    /// A connection as the schema owner (bypasses RLS: for assertions).
    pub async fn owner(&self) -> DatabaseConnection {
        connect(&self.owner_url).await.expect("owner connection")
    }

    /// A connection as the application role (subject to RLS).
    pub async fn app(&self) -> DatabaseConnection {
        connect(&self.app_url).await.expect("app connection")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                if let Ok(conn) = connect(&admin_url()).await {
                    let _ = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}
