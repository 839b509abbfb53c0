//! The handler on real SQLite files, through sqlx as the kit uses it.

#![allow(
    clippy::disallowed_methods,
    reason = "raw transactions hold the lock; the kit's Writer is not this crate's"
)]

use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// A pool of `size` connections to a fresh WAL file, each with the handler at `timeout`.
async fn pool(dir: &tempfile::TempDir, size: u32, timeout: Duration) -> SqlitePool {
    spine_sqlite_wait::register();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Off);
    let install = spine_sqlite_wait::install_statement(timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .after_connect(move |conn, _| {
            let install = install.clone();
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(install))
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn a_waiting_writer_gets_the_lock_once_the_holder_commits() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2, Duration::from_secs(5)).await;
    let mut holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let mut other = pool.acquire().await.unwrap();
    // SQLite's own sleeping handler is gone: busy_timeout reads 0.
    let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert_eq!(busy_timeout, 0);
    let writer = tokio::spawn(async move {
        sqlx::query("INSERT INTO t (id) VALUES (2)")
            .execute(&mut *other)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !writer.is_finished(),
        "the writer waits while the lock is held"
    );
    sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&mut *holder)
        .await
        .unwrap();
    holder.commit().await.unwrap();
    writer.await.unwrap().expect("the writer got the lock");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn a_writer_gives_up_with_busy_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 2, Duration::from_millis(300)).await;
    let _holder = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let started = Instant::now();
    let err = sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let code = err.as_database_error().and_then(|db| db.code());
    assert_eq!(code.as_deref(), Some("5"), "SQLITE_BUSY: {err}");
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
}

#[tokio::test]
async fn commits_still_checkpoint_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 1, Duration::from_secs(5)).await;
    // 1,500 commits of a page or more each: without a checkpoint every 1,000 frames, the WAL
    // would hold them all.
    let body = vec![7u8; 3000];
    for id in 0..1500 {
        sqlx::query("INSERT INTO t (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(&body)
            .execute(&pool)
            .await
            .unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("db.sqlite-wal"))
        .unwrap()
        .len();
    let frame = 4096 + 24;
    assert!(wal < 1200 * frame, "the WAL grew to {} frames", wal / frame);
}

#[tokio::test]
async fn a_timeout_below_a_millisecond_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(&dir, 1, Duration::from_secs(1)).await;
    let err = sqlx::query("SELECT spine_busy_timeout(0)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
}
