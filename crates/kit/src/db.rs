//! Database connections: SQLite (the embedded default) or PostgreSQL, chosen by the URL.
//!
//! The kit uses sqlx's `Any` driver so that the same `$N`-placeholder SQL runs on both; where
//! the dialects differ (DDL, row claiming) callers branch on [`Backend`].
//!
//! Writes go through a [`Writer`] ([`Writer::begin`]), which on SQLite takes the process's
//! write gate of the database first, the edge before the spine (module `gate`).

mod gate;

pub use gate::{EDGE_TURNS, Role, WriteConn, WriteTx, Writer};

use std::str::FromStr;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use crate::kafka::consumer::HandlerError;
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

/// Connects a pool, with every wait bounded (see [`DatabaseSettings`]):
///
/// - **SQLite** files are created if missing and run in WAL mode with `synchronous = FULL`
///   (a commit is on disk before it returns, so a power loss cannot drop a commit whose event
///   the relay may already have published) and a `busy_timeout` of `lock_timeout`, so that
///   concurrent handlers queue for the single writer instead of failing at once.
/// - **PostgreSQL** sessions start with `statement_timeout`, `lock_timeout` and the server's
///   TCP keepalive (`tcp_keepalives_*`) as startup parameters, ahead of any `options` the URL
///   carries (which therefore win). Behind a pooler that rejects startup parameters (PgBouncer
///   in transaction mode), set them to `0s` and configure them on the role instead.
/// - **The pool**, on PostgreSQL, pings an idle connection before handing it out, bounded by
///   `acquire_timeout`, and replaces connections after 30 minutes (or 10 idle), so a connection
///   that died silently is found at acquire time rather than mid-statement. On SQLite it opens
///   all its connections at once, from the caller's thread, and keeps them: their worker
///   threads then run at the caller's priority, not at the lowered one of a consumer that
///   would otherwise open them (see `connect_sized`).
///
/// This is the edge's pool, of `max_connections`; the consumers get their own from
/// [`connect_spine`].
pub async fn connect(settings: &DatabaseSettings) -> Result<(AnyPool, Backend), DbError> {
    connect_sized(settings, settings.max_connections).await
}

/// Connects the spine's pool: the one a service's consumer handlers use, of
/// `spine_max_connections`, configured like [`connect`]'s. With two pools an HTTP handler
/// never queues for a connection behind consumer handlers draining a backlog (with one, a
/// POST waited behind up to `max_in_flight` of them). `spine_max_connections = 0` shares
/// `edge` instead, as before there were two.
///
/// `edge` is the pool from [`connect`]. On PostgreSQL a replica opens up to
/// `max_connections + spine_max_connections` sessions.
pub async fn connect_spine(
    settings: &DatabaseSettings,
    edge: &AnyPool,
) -> Result<AnyPool, DbError> {
    match settings.spine_max_connections {
        0 => Ok(edge.clone()),
        size => Ok(connect_sized(settings, size).await?.0),
    }
}

async fn connect_sized(
    settings: &DatabaseSettings,
    max_connections: u32,
) -> Result<(AnyPool, Backend), DbError> {
    sqlx::any::install_default_drivers();
    let url = settings.url.expose_secret();
    let backend = Backend::of_url(url).ok_or(DbError::UnsupportedUrl)?;
    gate::set_gated(url, settings.write_gate.unwrap_or(false));
    let mut options = AnyConnectOptions::from_str(url)?;
    let mut pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(true)
        .max_lifetime(Duration::from_secs(30 * 60))
        .idle_timeout(Duration::from_secs(10 * 60));
    match backend {
        Backend::Sqlite => {
            // Every connection opened now, by the caller, and kept: each has a worker thread,
            // which inherits the nice value of the thread that opens it, and the consumers'
            // runtime is lowered (crate::runtime). A lowered worker holding SQLite's one write
            // lock while the CPU is busy holds up every writer of the file, the edge's
            // included: a priority inversion, which under the benchmark's spike kept POSTs
            // waiting for their connection for seconds. A file does not drop a connection
            // silently, so there is nothing to ping or recycle.
            pool = pool
                .min_connections(max_connections)
                .test_before_acquire(false)
                .max_lifetime(None)
                .idle_timeout(None);
            let pragmas = sqlite_pragmas(settings);
            pool = pool.after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            });
        }
        Backend::Postgres => {
            // sqlx's PostgreSQL URL parser turns each `options[NAME]=VALUE` query pair into a
            // `-c NAME=VALUE` startup option; the URL's own pairs follow ours.
            let own: Vec<(String, String)> =
                options.database_url.query_pairs().into_owned().collect();
            let mut query = options.database_url.query_pairs_mut();
            query.clear();
            for (name, value) in postgres_session_parameters(settings) {
                query.append_pair(&format!("options[{name}]"), &value);
            }
            for (name, value) in &own {
                query.append_pair(name, value);
            }
            drop(query);
        }
    }
    let pool = pool.connect_with(options).await?;
    if backend == Backend::Sqlite {
        // sqlx opens min_connections partly from a task of its own (on this runtime), and
        // returns before that task is done; holding every connection at once makes sure all
        // are open now, none left for a consumer to open later.
        let all = (0..max_connections).map(|_| pool.acquire());
        drop(futures::future::try_join_all(all).await?);
    }
    Ok((pool, backend))
}

/// The statements run on every new SQLite connection.
fn sqlite_pragmas(settings: &DatabaseSettings) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL;",
        settings.lock_timeout.as_millis()
    )
}

/// The session parameters every PostgreSQL connection starts with; a zero duration leaves the
/// server's own setting.
fn postgres_session_parameters(settings: &DatabaseSettings) -> Vec<(&'static str, String)> {
    let mut parameters = Vec::new();
    if !settings.statement_timeout.is_zero() {
        let ms = settings.statement_timeout.as_millis().max(1);
        parameters.push(("statement_timeout", format!("{ms}ms")));
    }
    if !settings.lock_timeout.is_zero() {
        let ms = settings.lock_timeout.as_millis().max(1);
        parameters.push(("lock_timeout", format!("{ms}ms")));
    }
    if !settings.tcp_keepalive.is_zero() {
        // The server counts these in whole seconds.
        let idle = settings.tcp_keepalive.as_secs().max(1);
        parameters.push(("tcp_keepalives_idle", idle.to_string()));
        parameters.push(("tcp_keepalives_interval", (idle / 3).max(1).to_string()));
        parameters.push(("tcp_keepalives_count", "3".to_owned()));
    }
    parameters
}

/// A database error as a consumer's [`HandlerError`]: an outage ([`is_outage`]) is
/// `Unavailable` (retried without limit, never dead-lettered), any other failure of the
/// statement is `Retryable` (bounded, then dead-lettered).
pub fn classify(err: sqlx::Error) -> HandlerError {
    if is_outage(&err) {
        HandlerError::unavailable(err)
    } else {
        HandlerError::retryable(err)
    }
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
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Both report codes as strings of digits ("5", "08006"), so the driver decides
            // which table a code belongs to.
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                is_sqlite_outage_code(&code)
            } else {
                is_postgres_outage_code(&code)
            }
        }),
        _ => false,
    }
}

/// SQLite reports its primary or extended result code as a number: the low byte is the
/// primary code.
fn is_sqlite_outage_code(code: &str) -> bool {
    // BUSY, LOCKED, IOERR, FULL, CANTOPEN, READONLY
    code.parse::<i32>()
        .is_ok_and(|number| matches!(number & 0xff, 5 | 6 | 10 | 13 | 14 | 8))
}

/// A PostgreSQL SQLSTATE.
fn is_postgres_outage_code(code: &str) -> bool {
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
    let writer = Writer::new(pool.clone(), Role::Spine);
    let mut conn = writer.lock().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS spine_migrations (
            scope TEXT NOT NULL,
            version BIGINT NOT NULL,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL,
            PRIMARY KEY (scope, version)
        )",
    )
    .execute(&mut *conn)
    .await?;
    drop(conn);
    for migration in migrations {
        let mut tx = writer.begin().await?;
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

/// `($1, …, $width), ($width+1, …), …`: `count` rows of `width` placeholders, for a multi-row
/// `INSERT … VALUES` (the `$N` form runs on both backends). Bind the values row by row.
pub fn placeholder_rows(count: usize, width: usize) -> String {
    (0..count)
        .map(|row| {
            let values: Vec<String> = (1..=width)
                .map(|i| format!("${}", row * width + i))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$first, $first+1, …`: `count` numbered placeholders, for an `IN (…)` list.
pub fn placeholder_list(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sql` for the database of `conn`: on SQLite, its `$1, $2, …` placeholders made anonymous (`?`) when they
/// appear in that order, each once; any other SQL (PostgreSQL's, or a placeholder used twice or
/// out of order) unchanged.
///
/// For the multi-row statements built with [`placeholder_rows`] and [`placeholder_list`]:
/// sqlx binds each numbered SQLite placeholder by asking SQLite for its name
/// (`sqlite3_bind_parameter_name`), a linear search of the statement's names, so binding n of
/// them costs n²: a 1,200-placeholder insert spent milliseconds binding, and profiles of
/// inventory's batches found 8% of its CPU there. Anonymous placeholders are bound in order.
pub fn in_order(conn: &sqlx::AnyConnection, sql: String) -> String {
    if conn.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
        anonymous_placeholders(sql)
    } else {
        sql
    }
}

/// `sql` with `$1, $2, …` made `?` if they appear in that order, each once; else unchanged.
fn anonymous_placeholders(sql: String) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1usize;
    let mut quoted = false;
    let mut rest = sql.as_str();
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            out.push(c);
            continue;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(number) if number == expected => {
                out.push('?');
                expected += 1;
                rest = &rest[digits..];
            }
            // Not in order, or not a placeholder: leave the statement as it was written.
            _ => return sql,
        }
    }
    out
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
            "08006", "08001", "57P01", "57P03", "53300", "57014", "55P03",
        ] {
            assert!(is_postgres_outage_code(code), "{code}");
        }
        for code in ["5", "517", "13", "6", "266"] {
            assert!(is_sqlite_outage_code(code), "{code}");
        }
    }

    #[test]
    fn outages_are_unavailable_and_other_database_errors_retryable() {
        assert!(matches!(
            classify(sqlx::Error::PoolTimedOut),
            HandlerError::Unavailable(_)
        ));
        assert!(matches!(
            classify(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            ))),
            HandlerError::Unavailable(_)
        ));
        assert!(matches!(
            classify(sqlx::Error::RowNotFound),
            HandlerError::Retryable(_)
        ));
    }

    #[test]
    fn the_timeouts_are_settings_read_from_the_environment() {
        let sources = crate::config::Sources {
            env: [
                ("SPINE__DATABASE__ACQUIRE_TIMEOUT", "3s"),
                ("SPINE__DATABASE__STATEMENT_TIMEOUT", "2m"),
                ("SPINE__DATABASE__LOCK_TIMEOUT", "750ms"),
                ("SPINE__DATABASE__TCP_KEEPALIVE", "0s"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..crate::config::Sources::default()
        };
        let settings: crate::settings::KitSettings = crate::config::load_from(&sources).unwrap();
        let database = settings.database;
        assert_eq!(database.acquire_timeout, Duration::from_secs(3));
        assert_eq!(database.statement_timeout, Duration::from_secs(120));
        assert_eq!(database.lock_timeout, Duration::from_millis(750));
        assert_eq!(database.tcp_keepalive, Duration::ZERO);
        assert_eq!(
            postgres_session_parameters(&database),
            [
                ("statement_timeout", "120000ms".to_owned()),
                ("lock_timeout", "750ms".to_owned()),
            ]
        );
    }

    #[test]
    fn zero_timeouts_leave_the_servers_own_settings() {
        let settings = DatabaseSettings {
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
            tcp_keepalive: Duration::ZERO,
            ..DatabaseSettings::default()
        };
        assert!(postgres_session_parameters(&settings).is_empty());
    }

    #[test]
    fn placeholder_rows_number_their_placeholders_row_by_row() {
        assert_eq!(placeholder_rows(1, 2), "($1, $2)");
        assert_eq!(
            placeholder_rows(2, 5),
            "($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)"
        );
        assert_eq!(placeholder_rows(0, 3), "");
    }

    #[test]
    fn placeholders_in_order_become_anonymous_and_others_stay() {
        let sql = "INSERT INTO t VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING";
        assert_eq!(
            anonymous_placeholders(sql.to_owned()),
            "INSERT INTO t VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        for (sql, expected) in [
            ("SELECT $1, $1", "SELECT $1, $1"),
            ("SELECT $2, $1", "SELECT $2, $1"),
            ("SELECT $x", "SELECT $x"),
            ("SELECT $1 WHERE x = '$2'", "SELECT ? WHERE x = '$2'"),
        ] {
            assert_eq!(anonymous_placeholders(sql.to_owned()), expected);
        }
        assert_eq!(
            anonymous_placeholders(format!("SELECT {}", placeholder_list(1, 12))),
            format!("SELECT {}", ["?"; 12].join(", "))
        );
    }

    #[test]
    fn placeholder_lists_number_from_the_first() {
        assert_eq!(placeholder_list(4, 3), "$4, $5, $6");
        assert_eq!(placeholder_list(1, 0), "");
    }

    #[test]
    fn the_defaults_bound_statements_locks_and_dead_peers() {
        let parameters = postgres_session_parameters(&DatabaseSettings::default());
        assert_eq!(
            parameters,
            [
                ("statement_timeout", "30000ms".to_owned()),
                ("lock_timeout", "5000ms".to_owned()),
                ("tcp_keepalives_idle", "30".to_owned()),
                ("tcp_keepalives_interval", "10".to_owned()),
                ("tcp_keepalives_count", "3".to_owned()),
            ]
        );
        let pragmas = sqlite_pragmas(&DatabaseSettings::default());
        assert!(pragmas.contains("synchronous = FULL"), "{pragmas}");
        assert!(pragmas.contains("busy_timeout = 5000"), "{pragmas}");
    }

    async fn pragma(pool: &AnyPool, name: &str) -> i64 {
        let sql = format!("PRAGMA {name}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_pooled_sqlite_connection_is_durable_and_waits_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            lock_timeout: Duration::from_millis(1234),
            max_connections: 2,
            ..DatabaseSettings::default()
        };
        let (pool, backend) = connect(&settings).await.unwrap();
        assert_eq!(backend, Backend::Sqlite);
        // Every pooled connection, not just the first one.
        let (a, b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
        drop((a, b));
        for _ in 0..2 {
            assert_eq!(pragma(&pool, "synchronous").await, 2, "2 is FULL");
            assert_eq!(pragma(&pool, "busy_timeout").await, 1234);
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn the_spines_pool_serves_while_the_edges_is_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            max_connections: 1,
            spine_max_connections: 2,
            acquire_timeout: Duration::from_millis(100),
            ..DatabaseSettings::default()
        };
        let (edge, _) = connect(&settings).await.unwrap();
        let spine = connect_spine(&settings, &edge).await.unwrap();
        // The spine's pool has its own size, and its connections are configured alike.
        let (a, b) = (
            spine.acquire().await.unwrap(),
            spine.acquire().await.unwrap(),
        );
        drop((a, b));
        assert_eq!(pragma(&spine, "synchronous").await, 2, "2 is FULL");
        // Consumers holding every spine connection leave the edge's connection free.
        let held = (
            spine.acquire().await.unwrap(),
            spine.acquire().await.unwrap(),
        );
        assert_eq!(pragma(&edge, "busy_timeout").await, 5000);
        drop(held);
        // And the edge's only connection held does not starve the spine.
        let edge_held = edge.acquire().await.unwrap();
        assert_eq!(pragma(&spine, "busy_timeout").await, 5000);
        assert!(matches!(
            edge.acquire().await.map(drop),
            Err(sqlx::Error::PoolTimedOut)
        ));
        drop(edge_held);
    }

    /// The nice values of this process's threads named `prefix…`, from /proc.
    #[cfg(target_os = "linux")]
    fn nice_of_threads(prefix: &str) -> Vec<i32> {
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
                continue; // the thread ended
            };
            let (head, tail) = stat.rsplit_once(')').unwrap();
            let name = head.split_once('(').unwrap().1;
            if name.starts_with(prefix) {
                // Field 19 of stat; the fields after the name start at field 3.
                nice.push(tail.split_whitespace().nth(16).unwrap().parse().unwrap());
            }
        }
        nice
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sqlite_workers_keep_the_callers_priority_when_a_lowered_consumer_uses_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            max_connections: 1,
            spine_max_connections: 3,
            ..DatabaseSettings::default()
        };
        let base = crate::runtime::thread_nice().unwrap();
        let (edge, _) = connect(&settings).await.unwrap();
        let spine = connect_spine(&settings, &edge).await.unwrap();
        // Consumers on their lowered runtime take every connection of the spine's pool at once.
        let consumers = spine.clone();
        let workers = crate::runtime::run_lowered("spine-consumer", 2, 5, async move {
            let held = futures::future::try_join_all((0..3).map(|_| consumers.acquire()))
                .await
                .unwrap();
            let workers = nice_of_threads("sqlx-sqlite-wor");
            // Returned here, not on a runtime that is shutting down (which closes them).
            for conn in held {
                conn.close().await.unwrap();
            }
            workers
        })
        .await
        .unwrap();
        assert_eq!(workers.len(), 4, "one worker per connection: {workers:?}");
        assert!(
            workers.iter().all(|&nice| nice == base),
            "a worker opened by a lowered consumer would be at {}: {workers:?}",
            (base + 5).min(crate::runtime::MAX_NICE)
        );
        drop((edge, spine));
    }

    #[tokio::test]
    async fn a_spine_pool_of_0_shares_the_edges() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            max_connections: 1,
            spine_max_connections: 0,
            acquire_timeout: Duration::from_millis(100),
            ..DatabaseSettings::default()
        };
        let (edge, _) = connect(&settings).await.unwrap();
        let spine = connect_spine(&settings, &edge).await.unwrap();
        let held = edge.acquire().await.unwrap();
        assert!(matches!(
            spine.acquire().await.map(drop),
            Err(sqlx::Error::PoolTimedOut)
        ));
        drop(held);
    }

    #[tokio::test]
    async fn a_sqlite_writer_waiting_past_the_lock_timeout_is_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            lock_timeout: Duration::from_millis(100),
            max_connections: 2,
            ..DatabaseSettings::default()
        };
        let (pool, _) = connect(&settings).await.unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT)")
            .execute(&pool)
            .await
            .unwrap();
        let mut holder = pool.acquire().await.unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .unwrap();

        let err = sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&pool)
            .await
            .unwrap_err();

        assert!(is_outage(&err), "SQLITE_BUSY is an outage: {err:?}");
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *holder)
            .await
            .unwrap();
    }

    fn postgres_url() -> String {
        std::env::var("SPINE_TEST_POSTGRES_URL").expect(
            "SPINE_TEST_POSTGRES_URL is unset: run the tests with scripts/test, which starts PostgreSQL",
        )
    }

    async fn show(pool: &AnyPool, name: &str) -> String {
        let sql = format!("SHOW {name}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_pooled_postgres_connection_starts_with_its_timeouts_and_keepalive() {
        let url = postgres_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        let settings = DatabaseSettings {
            // The URL's own parameters survive next to ours.
            url: format!("{url}{separator}application_name=spine-db-test").into(),
            max_connections: 2,
            statement_timeout: Duration::from_secs(7),
            lock_timeout: Duration::from_millis(1500),
            tcp_keepalive: Duration::from_secs(45),
            ..DatabaseSettings::default()
        };
        let (pool, backend) = connect(&settings).await.unwrap();
        assert_eq!(backend, Backend::Postgres);
        let (a, b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
        drop((a, b));
        for _ in 0..2 {
            assert_eq!(show(&pool, "statement_timeout").await, "7s");
            assert_eq!(show(&pool, "lock_timeout").await, "1500ms");
            assert_eq!(show(&pool, "application_name").await, "spine-db-test");
        }
        // 0 would mean a Unix socket, where the server has no keepalive to set.
        assert_eq!(show(&pool, "tcp_keepalives_idle").await, "45");
        assert_eq!(show(&pool, "tcp_keepalives_interval").await, "15");
        assert_eq!(show(&pool, "tcp_keepalives_count").await, "3");
    }

    #[tokio::test]
    async fn a_postgres_statement_over_the_timeout_is_cancelled_as_an_outage() {
        let settings = DatabaseSettings {
            url: postgres_url().into(),
            max_connections: 1,
            statement_timeout: Duration::from_millis(200),
            ..DatabaseSettings::default()
        };
        let (pool, _) = connect(&settings).await.unwrap();

        let err = sqlx::query("SELECT pg_sleep(30)")
            .execute(&pool)
            .await
            .unwrap_err();

        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("57014"), "{err}");
        assert!(matches!(classify(err), HandlerError::Unavailable(_)));
    }

    #[test]
    fn statement_failures_are_not_outages() {
        assert!(!is_outage(&sqlx::Error::RowNotFound));
        // unique violation, deadlock, serialization failure; SQLite CONSTRAINT_UNIQUE (2067)
        for code in ["23505", "40P01", "40001", "42P01", "22012"] {
            assert!(!is_postgres_outage_code(code), "{code}");
        }
        for code in ["2067", "19", "1", "1555"] {
            assert!(!is_sqlite_outage_code(code), "{code}");
        }
    }
}
