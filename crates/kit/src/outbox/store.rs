//! The outbox table: migrations, writes inside the caller's transaction, backlog and pruning.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};
use tokio::sync::Notify;

use crate::db::{Backend, Migration, Role, WriteTx, Writer, migrate, now_millis};
use crate::kafka::producer::OutgoingRecord;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox",
        sqlite: "CREATE TABLE spine_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            msg_key BLOB,
            payload BLOB NOT NULL,
            headers BLOB NOT NULL,
            created_at BIGINT NOT NULL,
            published_at BIGINT
        );
        CREATE INDEX spine_outbox_pending ON spine_outbox (msg_key, id) WHERE published_at IS NULL;
        CREATE INDEX spine_outbox_published ON spine_outbox (published_at) WHERE published_at IS NOT NULL;",
        postgres: "CREATE TABLE spine_outbox (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic TEXT NOT NULL,
            msg_key BYTEA,
            payload BYTEA NOT NULL,
            headers BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            published_at BIGINT
        );
        CREATE INDEX spine_outbox_pending ON spine_outbox (msg_key, id) WHERE published_at IS NULL;
        CREATE INDEX spine_outbox_published ON spine_outbox (published_at) WHERE published_at IS NOT NULL;
        -- Wakes the relays of every replica when a transaction that wrote rows commits.
        CREATE FUNCTION spine_outbox_notify() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('spine_outbox', '');
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER spine_outbox_notify AFTER INSERT ON spine_outbox
            FOR EACH STATEMENT EXECUTE FUNCTION spine_outbox_notify();",
    },
    // The relay reads unpublished rows in id order: without this index it scanned every row
    // still kept for `outbox.retention`, published ones included, on every round (4.9 ms a
    // round with 43,000 rows kept, 0.03 ms with the index).
    Migration {
        version: 2,
        name: "outbox unpublished by id",
        sqlite: "CREATE INDEX spine_outbox_unpublished ON spine_outbox (id) WHERE published_at IS NULL;",
        postgres: "CREATE INDEX spine_outbox_unpublished ON spine_outbox (id) WHERE published_at IS NULL;",
    },
    // Failure isolation: a row carries its own claim and backoff (`not_before`), its failed
    // attempts, and a quarantine mark, so that one failing key waits alone and a row that can
    // never be published stops being retried without letting its key's later rows overtake it.
    Migration {
        version: 3,
        name: "outbox claims, failures and quarantine",
        sqlite: QUARANTINE_COLUMNS,
        postgres: QUARANTINE_COLUMNS,
    },
    // The NOTIFY trigger of version 1 serialised commits: PostgreSQL takes a global lock to
    // queue a notification at commit, so every transaction that wrote an outbox row (the
    // API's and the consumers') committed one at a time. Measured with pgbench, 16 clients
    // committing one-row inserts: 6,060-6,660 tps with the trigger, 10,030-14,190 without.
    // A commit wakes its own process's relay in process; other replicas poll.
    Migration {
        version: 4,
        name: "outbox without the NOTIFY trigger",
        sqlite: "SELECT 1;",
        postgres: "DROP TRIGGER IF EXISTS spine_outbox_notify ON spine_outbox;
            DROP FUNCTION IF EXISTS spine_outbox_notify();",
    },
];

/// The same DDL on both backends (plain BIGINT and TEXT columns, a partial index).
const QUARANTINE_COLUMNS: &str = "
    ALTER TABLE spine_outbox ADD COLUMN not_before BIGINT;
    ALTER TABLE spine_outbox ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE spine_outbox ADD COLUMN rejections BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE spine_outbox ADD COLUMN last_error TEXT;
    ALTER TABLE spine_outbox ADD COLUMN quarantined_at BIGINT;
    CREATE INDEX spine_outbox_quarantined ON spine_outbox (id) WHERE quarantined_at IS NOT NULL;";

/// Unpublished rows, kept incrementally: rows committed in this process are added, rows its
/// relay marked published are taken off, and the relay recounts the table every
/// `outbox.recount_interval` (which also takes in other replicas' rows). Cheap to read on
/// every request.
#[derive(Debug, Default)]
pub struct Backlog {
    rows: AtomicI64,
    oldest_created_at: AtomicI64,
}

impl Backlog {
    /// Unpublished rows.
    pub fn rows(&self) -> i64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Age of the oldest unpublished row (zero when there is none).
    pub fn oldest_age(&self) -> Duration {
        match self.oldest_created_at.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            oldest => Duration::from_millis(u64::try_from(now_millis() - oldest).unwrap_or(0)),
        }
    }
}

/// A row the relay stopped retrying because publishing it failed `outbox.quarantine_after`
/// times with an error about the row itself. Its key's later rows wait behind it until it is
/// released ([`Outbox::release`]) or discarded ([`Outbox::discard`]); docs/runbook.md says how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The row's id in `spine_outbox`.
    pub id: i64,
    /// Its destination topic.
    pub topic: String,
    /// Its key (the aggregate id).
    pub key: Option<Vec<u8>>,
    /// Sends that failed with an error about the row itself.
    pub rejections: i64,
    /// The last error.
    pub last_error: String,
    /// When it was quarantined (milliseconds since the epoch).
    pub quarantined_at: i64,
}

/// Rows per statement of [`Outbox::enqueue_many`]: 5 parameters a row, well under SQLite's
/// 32,766 and PostgreSQL's 65,535.
pub const ENQUEUE_CHUNK: usize = 1000;

/// The outbox of one service database. Cheap to clone.
///
/// Its writes, and the service's through [`Outbox::begin`], take the database's write gate
/// as its role ([`crate::db::Writer`]): the edge's for the outbox of [`Outbox::new`], the
/// spine's for a [`Outbox::with_pool`] copy and for the relay's.
#[derive(Clone)]
pub struct Outbox {
    pub(super) pool: AnyPool,
    pub(super) backend: Backend,
    pub(super) writer: Writer,
    pub(super) wake: Arc<Notify>,
    pub(super) backlog: Arc<Backlog>,
}

impl Outbox {
    /// Opens the edge's outbox (its writers go first, [`Role::Edge`]), creating its table on
    /// first use.
    pub async fn new(pool: AnyPool, backend: Backend) -> Result<Self, sqlx::Error> {
        migrate(&pool, backend, "spine_outbox", MIGRATIONS).await?;
        let outbox = Self {
            writer: Writer::new(pool.clone(), Role::Edge),
            pool,
            backend,
            wake: Arc::new(Notify::new()),
            backlog: Arc::new(Backlog::default()),
        };
        outbox.refresh_backlog().await?;
        Ok(outbox)
    }

    /// The same outbox over another pool of the same database: its commits wake the same
    /// relay and count into the same backlog. For a service's consumer handlers, whose pool
    /// is not the edge's ([`crate::db::connect_spine`]). Its writers are the spine's
    /// ([`Role::Spine`]): they wait for the edge's.
    pub fn with_pool(&self, pool: AnyPool) -> Self {
        Self {
            writer: Writer::new(pool.clone(), Role::Spine),
            pool,
            ..self.clone()
        }
    }

    /// This outbox, its writers queueing as `role`; for the relay, which writes for the spine
    /// over the edge's pool.
    pub(super) fn with_role(&self, role: Role) -> Self {
        Self {
            writer: self.writer.with_role(role),
            ..self.clone()
        }
    }

    /// Begins a write transaction (for state and [`Outbox::enqueue`] together) with the
    /// database's write gate taken as this outbox's role: every write of a service goes
    /// through here or [`crate::inbox::Inbox`], never `pool().begin()`, so that on SQLite no
    /// two writers of this process meet in SQLite's lock (see [`crate::db::Writer`]).
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        self.writer.begin().await
    }

    /// The write handle: its role and gate, for an autocommit write ([`Writer::lock`]).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Adds `record` inside the caller's transaction (pass `&mut *tx`). It is published only
    /// if that transaction commits. The record's headers carry the trace context of the
    /// caller's span, so the relay's publish joins the caller's trace.
    pub async fn enqueue(
        &self,
        conn: &mut AnyConnection,
        record: &OutgoingRecord,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO spine_outbox (topic, msg_key, payload, headers, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(record.topic.as_str())
        .bind(record.key.clone())
        .bind(record.payload.clone())
        .bind(record.headers.to_bytes())
        .bind(now_millis())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// [`Self::enqueue`] for many records at once: multi-row inserts (of up to
    /// [`ENQUEUE_CHUNK`] rows each) in the caller's transaction, ids in the order of `records`.
    pub async fn enqueue_many(
        &self,
        conn: &mut AnyConnection,
        records: &[&OutgoingRecord],
    ) -> Result<(), sqlx::Error> {
        let now = now_millis();
        for chunk in records.chunks(ENQUEUE_CHUNK) {
            let values = crate::db::placeholder_rows(chunk.len(), 5);
            let sql = format!(
                "INSERT INTO spine_outbox (topic, msg_key, payload, headers, created_at) VALUES {values}"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(crate::db::in_order(conn, sql)));
            for record in chunk {
                query = query
                    .bind(record.topic.as_str())
                    .bind(record.key.clone())
                    .bind(record.payload.clone())
                    .bind(record.headers.to_bytes())
                    .bind(now);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Call after committing a transaction that enqueued `rows`: wakes the relay and counts
    /// the rows into the backlog until the relay's next count.
    pub fn committed(&self, rows: i64) {
        self.backlog.rows.fetch_add(rows, Ordering::Relaxed);
        let _ = self.backlog.oldest_created_at.compare_exchange(
            0,
            now_millis(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.wake.notify_one();
    }

    /// The backlog, for load shedding.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// Takes `rows` off the backlog: rows the relay marked published (or one discarded).
    pub(super) fn published(&self, rows: usize) {
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        let _ = self
            .backlog
            .rows
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some((left - rows).max(0))
            });
        metrics::gauge!("spine_outbox_backlog_rows").set(self.backlog.rows() as f64);
    }

    /// Counts the unpublished and the quarantined rows, and updates the backlog and its
    /// gauges. A scan of the backlog (an index-only one, when the visibility map allows): the
    /// relay runs it every `outbox.recount_interval`, not per claim.
    pub async fn refresh_backlog(&self) -> Result<(), sqlx::Error> {
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM spine_outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        self.backlog.rows.store(rows, Ordering::Relaxed);
        metrics::gauge!("spine_outbox_backlog_rows").set(rows as f64);
        let quarantined: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM spine_outbox
             WHERE quarantined_at IS NOT NULL AND published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("spine_outbox_quarantined_rows").set(quarantined as f64);
        self.refresh_oldest().await
    }

    /// Reads the age of the oldest unpublished row (the first of the unpublished index, not a
    /// scan) and updates its gauge. The relay runs it every `outbox.poll_interval`.
    pub async fn refresh_oldest(&self) -> Result<(), sqlx::Error> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT created_at FROM spine_outbox WHERE published_at IS NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        self.backlog
            .oldest_created_at
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
        metrics::gauge!("spine_outbox_oldest_age_seconds")
            .set(self.backlog.oldest_age().as_secs_f64());
        Ok(())
    }

    /// Deletes rows published more than `retention` ago; returns how many.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = now_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.writer.lock().await?;
        let pruned = sqlx::query(
            "DELETE FROM spine_outbox WHERE published_at IS NOT NULL AND published_at < $1",
        )
        .bind(cutoff)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    /// The quarantined rows, oldest first.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, sqlx::Error> {
        super::claim::quarantined(&self.pool).await
    }

    /// Lifts the quarantine of row `id` (after fixing its cause, e.g. raising
    /// `message.max.bytes`): the relay tries it again with a fresh count of rejections.
    /// Returns whether such a quarantined row existed.
    pub async fn release(&self, id: i64) -> Result<bool, sqlx::Error> {
        self.on_quarantined(
            "UPDATE spine_outbox SET quarantined_at = NULL, rejections = 0, not_before = NULL
             WHERE id = $1 AND quarantined_at IS NOT NULL AND published_at IS NULL",
            id,
        )
        .await
    }

    /// Deletes quarantined row `id` for good, so that its key's later rows are published. The
    /// event is lost to consumers: save it first (docs/runbook.md). Returns whether such a
    /// quarantined row existed.
    pub async fn discard(&self, id: i64) -> Result<bool, sqlx::Error> {
        let discarded = self
            .on_quarantined(
                "DELETE FROM spine_outbox
                 WHERE id = $1 AND quarantined_at IS NOT NULL AND published_at IS NULL",
                id,
            )
            .await?;
        if discarded {
            self.published(1);
        }
        Ok(discarded)
    }

    /// Runs `sql` on quarantined row `id` and wakes the relay, whose next claim may now include
    /// the rows held behind it. Returns whether the row was there.
    async fn on_quarantined(&self, sql: &'static str, id: i64) -> Result<bool, sqlx::Error> {
        let mut conn = self.writer.lock().await?;
        let affected = sqlx::query(sql)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        drop(conn);
        self.wake.notify_one();
        Ok(affected == 1)
    }

    /// The pool, for the service's own reads; writes go through [`Outbox::begin`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}
