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
