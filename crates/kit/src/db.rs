//! Database connections: SQLite (the embedded default) or PostgreSQL, chosen by the URL.
//!
//! The kit uses sqlx's `Any` driver so that the same `$N`-placeholder SQL runs on both; where
//! the dialects differ (DDL, row claiming) callers branch on [`Backend`].

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use crate::settings::DatabaseSettings;

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one writer at a time.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend of a URL, or `None` when it is neither SQLite nor PostgreSQL.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("database.url must start with sqlite: or postgres:")]
    UnsupportedUrl,
    /// sqlx could not connect or run a statement.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Connects a pool. SQLite files are created if missing and run in WAL mode with a busy
/// timeout, so that concurrent handlers queue for the single writer instead of failing.
pub async fn connect(settings: &DatabaseSettings) -> Result<(AnyPool, Backend), DbError> {
    sqlx::any::install_default_drivers();
    let url = settings.url.expose_secret();
    let backend = Backend::of_url(url).ok_or(DbError::UnsupportedUrl)?;
    let options = AnyConnectOptions::from_str(url)?;
    let mut pool = AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10));
    if backend == Backend::Sqlite {
        pool = pool.after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        });
    }
    Ok((pool.connect_with(options).await?, backend))
}

/// A schema change, written once per backend because the dialects differ (identity columns,
/// blob types, triggers).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order, once.
    pub version: i64,
    /// A short name, recorded with the version.
    pub name: &'static str,
    /// The SQL for SQLite (may hold several statements).
    pub sqlite: &'static str,
    /// The SQL for PostgreSQL (may hold several statements).
    pub postgres: &'static str,
}

/// Applies the migrations of `scope` (e.g. `orders`, `spine_outbox`) that are not applied yet,
/// each in its own transaction with its bookkeeping row. Scopes let the kit's tables and a
/// service's tables share one database without sharing version numbers.
pub async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    scope: &str,
    migrations: &[Migration],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS spine_migrations (
            scope TEXT NOT NULL,
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL,
            PRIMARY KEY (scope, version)
        )",
    )
    .execute(pool)
    .await?;
    for migration in migrations {
        let mut tx = pool.begin().await?;
        // Two replicas starting together: the loser's insert conflicts and it skips.
        let claimed = sqlx::query(
            "INSERT INTO spine_migrations (scope, version, name, applied_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(migration.version)
        .bind(migration.name)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(
            scope,
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
    }
    Ok(())
}

/// Milliseconds since the Unix epoch: the timestamps the kit stores.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
