//! Postgres through sea-orm.
//!
//! Every query a service runs on tenant data goes through a [`Tx`] opened
//! with [`Db::tenant`]: it sets `blaze.org_id` (and `blaze.user_id`) with
//! `SET LOCAL`, so row-level security scopes the transaction to one
//! organisation even if a query forgets its own `organization_id` filter.
//! Repositories are plain functions over a `Tx`, one module per table family.

pub mod api_tokens;
pub mod apps;
pub mod audit;
pub mod chats;
pub mod execution;
pub mod page;
pub mod prompts;
pub mod settings;
pub mod tenancy;
pub mod usage;
pub mod views;

use std::time::Duration;

use blaze_kit::{ApiError, config::DatabaseConfig};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, FromQueryResult, Statement,
    TransactionTrait, Value,
};
use uuid::Uuid;

pub use sea_orm;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unique constraint {constraint} violated")]
    Unique { constraint: String },
    #[error("denied by row-level security or privileges: {0}")]
    Denied(String),
    #[error("serialization conflict, retry")]
    Conflict,
    #[error("database error: {0}")]
    Other(String),
}

impl From<DbErr> for DbError {
    fn from(e: DbErr) -> Self {
        let text = e.to_string();
        // SQLSTATEs surface in the message of sqlx errors.
        if let DbErr::ConnectionAcquire(_) | DbErr::Conn(_) = e {
            return DbError::Unavailable(text);
        }
        if text.contains("duplicate key value violates unique constraint") {
            let constraint = text.split('"').nth(1).unwrap_or_default().to_owned();
            return DbError::Unique { constraint };
        }
        if text.contains("row-level security") || text.contains("permission denied") || text.contains("append-only") {
            return DbError::Denied(text);
        }
        if text.contains("could not serialize access") || text.contains("deadlock detected") {
            return DbError::Conflict;
        }
        if text.contains("Connection refused")
            || text.contains("pool timed out")
            || text.contains("connection closed")
            || text.contains("broken pipe")
        {
            return DbError::Unavailable(text);
        }
        DbError::Other(text)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                ApiError::unavailable("Database unavailable, try again")
            }
            DbError::Unique { constraint } => ApiError::already_exists("CONFLICT", format!("Already exists ({constraint})")),
            DbError::Conflict => ApiError::conflict("CONFLICT", "Concurrent update, try again"),
            DbError::Denied(detail) => ApiError::internal(format!("database denied: {detail}")),
            DbError::Other(detail) => ApiError::internal(detail),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// The connection pool (a role without BYPASSRLS).
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
}

impl Db {
    pub async fn connect(cfg: &DatabaseConfig) -> DbResult<Db> {
        Self::connect_url(cfg.url.expose(), cfg.max_connections, Duration::from_millis(cfg.connect_timeout_ms)).await
    }

    pub async fn connect_url(url: &str, max_connections: u32, timeout: Duration) -> DbResult<Db> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections)
            .min_connections(0)
            .connect_timeout(timeout)
            .acquire_timeout(timeout)
            .connect_lazy(true)
            .sqlx_logging(false);
        Ok(Db { conn: Database::connect(opts).await? })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Is the database reachable (readiness)?
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.conn.execute_unprepared("SELECT 1")).await.is_ok_and(|r| r.is_ok())
    }

    /// A transaction scoped to one organisation (and acting user).
    pub async fn tenant(&self, org_id: Uuid, user_id: Option<Uuid>) -> DbResult<Tx> {
        let txn = self.conn.begin().await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('blaze.org_id', $1, true), set_config('blaze.user_id', $2, true)",
            [org_id.to_string().into(), user_id.map(|u| u.to_string()).unwrap_or_default().into()],
        ))
        .await?;
        Ok(Tx { txn })
    }

    /// A transaction acting for a user across their organisations (their own
    /// memberships and settings only).
    pub async fn as_user(&self, user_id: Uuid) -> DbResult<Tx> {
        let txn = self.conn.begin().await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('blaze.user_id', $1, true), set_config('blaze.org_id', '', true)",
            [user_id.to_string().into()],
        ))
        .await?;
        Ok(Tx { txn })
    }

    /// A transaction without tenant settings: only tables without RLS
    /// (`users`) are visible.
    pub async fn global(&self) -> DbResult<Tx> {
        Ok(Tx { txn: self.conn.begin().await? })
    }
}

/// A database transaction with tenant settings applied.
pub struct Tx {
    txn: DatabaseTransaction,
}

impl Tx {
    /// Switch the organisation of this transaction (provisioning a new org).
    pub async fn set_org(&self, org_id: Uuid) -> DbResult<()> {
        self.txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('blaze.org_id', $1, true)",
                [org_id.to_string().into()],
            ))
            .await?;
        Ok(())
    }

    pub async fn commit(self) -> DbResult<()> {
        Ok(self.txn.commit().await?)
    }

    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    pub async fn execute(&self, sql: &str, values: Vec<Value>) -> DbResult<u64> {
        Ok(self.txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?.rows_affected())
    }

    pub async fn one<T: FromQueryResult>(&self, sql: &str, values: Vec<Value>) -> DbResult<Option<T>> {
        Ok(T::find_by_statement(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).one(&self.txn).await?)
    }

    pub async fn all<T: FromQueryResult>(&self, sql: &str, values: Vec<Value>) -> DbResult<Vec<T>> {
        Ok(T::find_by_statement(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).all(&self.txn).await?)
    }

    /// Take a transaction-scoped advisory lock (serialises e.g. first-use
    /// provisioning of one user).
    pub async fn advisory_lock(&self, key: &str) -> DbResult<()> {
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", vec![key.into()]).await?;
        Ok(())
    }
}

/// Parse a uuid from a request (a malformed id is "not found", not a 500).
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s.trim()).ok()
}
