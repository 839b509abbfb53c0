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

/// Whether a database error means "the database is down or cannot serve now" (an outage, to be
/// retried without limit: [`crate::kafka::consumer::HandlerError::Unavailable`]) rather than a
/// failure of this statement (a constraint, a deadlock, a bad query).
///
/// Outages: I/O and TLS errors, a pool that timed out or closed, a crashed SQLite worker, and
/// the database's own "cannot serve" answers: PostgreSQL's connection exceptions (class 08),
/// operator interventions (57P01-57P05: shutdown, crash recovery, cannot connect now),
/// insufficient resources (class 53: disk full, out of memory, too many connections),
/// `statement_timeout` (57014), `lock_timeout` (55P03) and read-only transactions (25006, a
/// failover in progress); SQLite's BUSY, LOCKED, IOERR, FULL, CANTOPEN and READONLY.
pub fn is_outage(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_outage_code(&code)),
        _ => false,
    }
}

fn is_outage_code(code: &str) -> bool {
    // PostgreSQL's SQLSTATEs have five characters (some all digits); SQLite reports its primary
    // or extended result code as a number of at most four digits, whose low byte is the
    // primary code.
    if code.len() < 5
        && let Ok(number) = code.parse::<i32>()
    {
        // BUSY, LOCKED, IOERR, FULL, CANTOPEN, READONLY
        return matches!(number & 0xff, 5 | 6 | 10 | 13 | 14 | 8);
    }
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "57P04" | "57P05" | "57014" | "55P03" | "25006"
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_level_failures_are_outages() {
        assert!(is_outage(&sqlx::Error::PoolTimedOut));
        assert!(is_outage(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "55P03", "5", "517", "13",
        ] {
            assert!(is_outage_code(code), "{code}");
        }
    }

    #[test]
    fn statement_failures_are_not_outages() {
        assert!(!is_outage(&sqlx::Error::RowNotFound));
        // unique violation, deadlock, serialization failure; SQLite CONSTRAINT_UNIQUE (2067)
        for code in ["23505", "40P01", "40001", "42P01", "2067", "19"] {
            assert!(!is_outage_code(code), "{code}");
        }
    }
}
