//! The write gate (`database.write_gate`; on in orders, off elsewhere): one writer at a time
//! per SQLite database in this process, the relay first, then the edge.
//!
//! SQLite has a single writer. When two connections of one process want to write at once, the loser
//! sleeps in SQLite's busy handler (1, 2, 5, 10, 15, 20, 25… ms, whether or not the lock is free
//! meanwhile), so under a spike an HTTP POST slept behind consumer batches and the relay's
//! statements. With the gate, writers of one process queue in memory instead (an async wait, no
//! thread blocked), are handed the gate the moment the previous writer ends, and never meet in
//! SQLite's lock. A waiting [`Role::Relay`] writer (the outbox relay) goes first; waiting
//! [`Role::Edge`] writers go before waiting [`Role::Spine`] writers, except that the spine gets a
//! turn after [`EDGE_TURNS`] edge turns in a row, so a steady stream of requests cannot starve the
//! consumers forever. A wait is bounded by the pool's `acquire_timeout` and measured as
//! `spine_db_write_gate_wait_seconds{role}`.
//!
//! The busy handler (`busy_timeout`, from `database.lock_timeout`) stays, for writers of other
//! processes on the same file: the CLI tools, a second replica. On PostgreSQL there is no gate
//! (row locks let many writers run at once).
//!
//! Every write goes through a [`Writer`]: [`Writer::begin`] (a transaction, begun before the gate
//! is taken, so that the gate covers only its statements and commit) or [`Writer::lock`] (for
//! autocommit statements). The kit makes them for its types, with their role fixed: an
//! [`crate::outbox::Outbox`] from `Outbox::new` is the edge's, the relay's is the relay's, its
//! `with_pool` copy and an [`crate::inbox::Inbox`] are the spine's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Instant;

use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::oneshot;

use super::Backend;

/// Edge turns in a row after which a waiting spine writer goes first. A spine transaction (a
/// consumer's batch) takes a few milliseconds, so one in every nine turns costs a waiting
/// request at most one such wait, while a backlog still drains during a long spike.
pub const EDGE_TURNS: u32 = 8;

/// Who writes, which decides the order in which waiting writers get the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The outbox relay, the edge's hand-off to the spine: goes before everyone. Its
    /// statements are short (one `UPDATE` of at most `outbox.batch_size` rows) and paced by
    /// its own sends, and every row it is late to claim adds to the commit → ack latency; in
    /// the FIFO of the edge's requests, a claim waited seconds behind a queue of POSTs.
    Relay,
    /// The synchronous edge (HTTP handlers): goes before the spine.
    Edge,
    /// The asynchronous spine (consumer handlers): waits for the edge,
    /// but gets a turn after [`EDGE_TURNS`] edge turns in a row.
    Spine,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Edge => "edge",
            Self::Spine => "spine",
        }
    }
}

/// The gate of one SQLite database in this process.
struct Gate {
    state: Mutex<State>,
    /// `spine_db_write_gate_wait_seconds{role}`, resolved once.
    wait_relay: metrics::Histogram,
    wait_edge: metrics::Histogram,
    wait_spine: metrics::Histogram,
}

#[derive(Default)]
struct State {
    held: bool,
    relay: VecDeque<oneshot::Sender<Permit>>,
    edge: VecDeque<oneshot::Sender<Permit>>,
    spine: VecDeque<oneshot::Sender<Permit>>,
    /// Edge turns handed over in a row while a spine writer waited.
    edge_streak: u32,
}

impl State {
    /// The next writer to hand the gate to: the edge's, unless the spine has waited
    /// [`EDGE_TURNS`] edge turns.
    fn next(&mut self) -> Option<oneshot::Sender<Permit>> {
        if let Some(waiter) = self.relay.pop_front() {
            return Some(waiter);
        }
        let spine_due = self.edge_streak >= EDGE_TURNS || self.edge.is_empty();
        if spine_due && let Some(waiter) = self.spine.pop_front() {
            self.edge_streak = 0;
            return Some(waiter);
        }
        let waiter = self.edge.pop_front()?;
        if self.spine.is_empty() {
            self.edge_streak = 0;
        } else {
            self.edge_streak += 1;
        }
        Some(waiter)
    }
}

/// Holds the gate until dropped; then the next waiting writer gets it. On PostgreSQL it holds
/// nothing.
#[must_use = "the gate is released when the permit is dropped"]
pub struct Permit {
    gate: Option<Arc<Gate>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else { return };
        let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(waiter) = state.next() {
            // Handed over with the gate still held: no writer can slip in between.
            match waiter.send(Permit {
                gate: Some(gate.clone()),
            }) {
                Ok(()) => return,
                // The waiter gave up (its future was dropped): disarm and try the next one.
                Err(mut permit) => permit.gate = None,
            }
        }
        state.held = false;
    }
}

impl Gate {
    async fn acquire(self: &Arc<Self>, role: Role) -> Permit {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !state.held {
                state.held = true;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                match role {
                    Role::Relay => state.relay.push_back(tx),
                    Role::Edge => state.edge.push_back(tx),
                    Role::Spine => state.spine.push_back(tx),
                }
                Some(rx)
            }
        };
        match waiting {
            None => Permit {
                gate: Some(self.clone()),
            },
            // A permit sent to a receiver dropped before reading it is dropped with it, which
            // hands the gate on: a cancelled wait never leaks the gate. The sender is only
            // dropped unsent by a `Permit::drop` that panicked, so the error is unreachable.
            Some(rx) => rx.await.unwrap_or(Permit { gate: None }),
        }
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.relay.len() + state.edge.len() + state.spine.len()
    }
}

/// The gates of this process, one per SQLite database, so that every pool of a file (the
/// edge's, the spine's, a test's second pool) shares one. A process-wide table because the lock
/// it stands in front of is SQLite's, per file, not per pool; entries live as long as a
/// [`Writer`] of their database does.
static GATES: LazyLock<Mutex<HashMap<String, Weak<Gate>>>> = LazyLock::new(Mutex::default);

/// The SQLite files whose writers queue at the gate (`database.write_gate`, set when their
/// pools connect).
static GATED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Turns the gate of the SQLite database at `url` on or off for the writers made from now on
/// (`database.write_gate`; [`super::connect`] calls it). Without it a [`Writer`] takes no gate
/// and its writers meet in SQLite's lock, waiting in the busy handler.
pub(super) fn set_gated(url: &str, gated: bool) {
    if Backend::of_url(url) != Some(Backend::Sqlite) {
        return;
    }
    let key = sqlite_file(url);
    let mut files = GATED.lock().unwrap_or_else(PoisonError::into_inner);
    if gated {
        files.insert(key);
    } else {
        files.remove(&key);
    }
}

/// The gate of `pool`'s database, or `None` on PostgreSQL or when its gate is off.
fn gate_of(pool: &AnyPool) -> Option<Arc<Gate>> {
    let options = pool.connect_options();
    let url = options.database_url.as_str();
    if Backend::of_url(url) != Some(Backend::Sqlite) {
        return None;
    }
    let key = sqlite_file(url);
    if !GATED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&key)
    {
        return None;
    }
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
        return Some(gate);
    }
    gates.retain(|_, gate| gate.strong_count() > 0);
    let gate = Arc::new(Gate {
        state: Mutex::default(),
        wait_relay: metrics::histogram!("spine_db_write_gate_wait_seconds", "role" => Role::Relay.label()),
        wait_edge: metrics::histogram!("spine_db_write_gate_wait_seconds", "role" => Role::Edge.label()),
        wait_spine: metrics::histogram!("spine_db_write_gate_wait_seconds", "role" => Role::Spine.label()),
    });
    gates.insert(key, Arc::downgrade(&gate));
    Some(gate)
}

/// What identifies a SQLite database: its file's canonical path (two URLs may spell one file
/// differently), or the URL itself for an in-memory database.
fn sqlite_file(url: &str) -> String {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.starts_with(":memory:") || url.contains("mode=memory") {
        return url.to_owned();
    }
    std::fs::canonicalize(path).map_or_else(|_| path.to_owned(), |p| p.display().to_string())
}

/// Begins the write transactions of one role on one pool, with the write gate of its database
/// taken first when it is on (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    pool: AnyPool,
    role: Role,
    gate: Option<Arc<Gate>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("role", &self.role)
            .field("gated", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer of `role` on `pool`, sharing the gate of every other writer on the same SQLite
    /// database in this process.
    pub fn new(pool: AnyPool, role: Role) -> Self {
        Self {
            gate: gate_of(&pool),
            pool,
            role,
        }
    }

    /// The same pool and gate, as another role.
    pub fn with_role(&self, role: Role) -> Self {
        Self {
            role,
            ..self.clone()
        }
    }

    /// The role its writers queue as.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The pool, for reads (which never take the gate: WAL readers don't block the writer).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A pooled connection with the gate held, for writes outside a transaction: run the
    /// statements on it (`&mut *conn`); dropping it releases both.
    ///
    /// The connection comes first, then the gate, as in [`Writer::begin`]: every writer takes
    /// them in that order, so a gate holder never waits for a connection held by a writer
    /// waiting for the gate (with the opposite order, five POSTs holding the edge pool's five
    /// connections while the relay held the gate would wait for each other forever).
    pub async fn lock(&self) -> Result<WriteConn, sqlx::Error> {
        let conn = self.pool.acquire().await?;
        let permit = self.gate_permit().await?;
        Ok(WriteConn {
            conn,
            _permit: permit,
        })
    }

    /// Takes the gate (waiting behind the writers before this one in priority order).
    ///
    /// The wait is bounded like a connection's, by the pool's `acquire_timeout`
    /// (`database.acquire_timeout`): past it, an I/O error of kind `TimedOut`, an outage
    /// ([`super::is_outage`]), so that a writer stuck in this process fails the others the way
    /// SQLite's busy handler did rather than hanging them.
    async fn gate_permit(&self) -> Result<Permit, sqlx::Error> {
        let Some(gate) = &self.gate else {
            return Ok(Permit { gate: None });
        };
        let started = Instant::now();
        let limit = self.pool.options().get_acquire_timeout();
        let acquired = tokio::time::timeout(limit, gate.acquire(self.role)).await;
        let histogram = match self.role {
            Role::Relay => &gate.wait_relay,
            Role::Edge => &gate.wait_edge,
            Role::Spine => &gate.wait_spine,
        };
        histogram.record(started.elapsed().as_secs_f64());
        acquired.map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out waiting for the SQLite write gate (database.acquire_timeout)",
            ))
        })
    }

    /// Begins a transaction, then takes the gate, which the transaction holds until commit or
    /// rollback.
    ///
    /// The connection and the `BEGIN` come first, outside the gate: on SQLite a deferred
    /// `BEGIN` takes no lock (the write lock comes with the first write, the read snapshot
    /// with the first read, both after the gate is held), so the gate is held only for the
    /// transaction's statements and its commit. The gate serialises every writer of the
    /// process, so what it covers bounds the process's write rate: with the connection and a
    /// `BEGIN IMMEDIATE` inside it, orders accepted 1,285 POSTs/s in the benchmark's queue
    /// phase, against 2,200 without a gate. No writer of this process can commit between the
    /// first read and the first write (the gate is held), so a deferred transaction meets
    /// another writer only from another process (the CLI tools): a write that finds the
    /// database locked waits in the busy handler, and one whose snapshot another process's
    /// commit made stale fails as busy, an outage retried.
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place the pool begins, gate taken"
    )]
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let tx = self.pool.begin().await?;
        let permit = self.gate_permit().await?;
        Ok(WriteTx {
            tx: Some(tx),
            permit: Some(permit),
        })
    }
}

/// A pooled connection holding the write gate ([`Writer::lock`]), for statements outside a
/// transaction. Dropping it returns the connection and then releases the gate.
#[must_use = "the gate is released when it is dropped"]
pub struct WriteConn {
    // Dropped in this order: the connection goes back to the pool before the gate is free.
    conn: sqlx::pool::PoolConnection<Any>,
    _permit: Permit,
}

impl Deref for WriteConn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// A write transaction holding the write gate ([`Writer::begin`]). Use it like sqlx's
/// `Transaction` (`&mut *tx` is the connection); [`WriteTx::commit`] or
/// [`WriteTx::rollback`] release the gate after the database has ended the transaction.
/// Dropping it uncommitted rolls back, releasing the gate once the rollback has run.
#[must_use = "dropping it rolls the transaction back: commit it"]
pub struct WriteTx {
    // Options only so that `commit`, `rollback` and `Drop` can take them; always `Some` before.
    tx: Option<Transaction<'static, Any>>,
    permit: Option<Permit>,
}

impl WriteTx {
    /// Commits, then releases the gate.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let result = self.tx.take().expect("an open transaction").commit().await;
        drop(self.permit.take());
        result
    }

    /// Rolls back, then releases the gate.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let result = self
            .tx
            .take()
            .expect("an open transaction")
            .rollback()
            .await;
        drop(self.permit.take());
        result
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let (Some(tx), Some(permit)) = (self.tx.take(), self.permit.take()) else {
            return;
        };
        // sqlx only queues the rollback of a dropped transaction; releasing the gate before it
        // has run would let the next writer of this process meet it in SQLite's lock.
        if permit.gate.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = tx.rollback().await;
                drop(permit);
            });
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        self.tx.as_ref().expect("an open transaction")
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.tx.as_mut().expect("an open transaction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::default(),
            wait_relay: metrics::Histogram::noop(),
            wait_edge: metrics::Histogram::noop(),
            wait_spine: metrics::Histogram::noop(),
        })
    }

    /// Queues a writer of `role` that reports its name once it holds the gate, and returns
    /// once it is queued.
    async fn queue(
        gate: &Arc<Gate>,
        role: Role,
        name: &'static str,
        order: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) {
        let before = gate.waiting();
        let (gate2, order) = (gate.clone(), order.clone());
        tokio::spawn(async move {
            let _permit = gate2.acquire(role).await;
            order.send(name).unwrap();
        });
        while gate.waiting() == before {
            tokio::task::yield_now().await;
        }
    }

    async fn drain(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>,
        n: usize,
    ) -> Vec<&'static str> {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(rx.recv().await.unwrap());
        }
        got
    }

    #[tokio::test]
    async fn a_waiting_edge_writer_goes_before_a_spine_writer_that_queued_earlier() {
        let gate = gate();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let held = gate.acquire(Role::Spine).await;
        queue(&gate, Role::Spine, "spine", &tx).await;
        queue(&gate, Role::Edge, "edge", &tx).await;

        drop(held);

        assert_eq!(drain(&mut rx, 2).await, ["edge", "spine"]);
        assert!(
            !gate.state.lock().unwrap().held,
            "the last writer released it"
        );
    }

    #[tokio::test]
    async fn a_waiting_relay_writer_goes_before_the_edge_and_the_spine() {
        let gate = gate();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let held = gate.acquire(Role::Edge).await;
        queue(&gate, Role::Spine, "spine", &tx).await;
        queue(&gate, Role::Edge, "edge", &tx).await;
        queue(&gate, Role::Relay, "relay", &tx).await;

        drop(held);

        assert_eq!(drain(&mut rx, 3).await, ["relay", "edge", "spine"]);
    }

    #[tokio::test]
    async fn the_spine_gets_a_turn_after_a_run_of_edge_turns() {
        let gate = gate();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let held = gate.acquire(Role::Edge).await;
        queue(&gate, Role::Spine, "spine", &tx).await;
        for _ in 0..EDGE_TURNS + 2 {
            queue(&gate, Role::Edge, "edge", &tx).await;
        }

        drop(held);

        let order = drain(&mut rx, EDGE_TURNS as usize + 3).await;
        let spine_turn = order.iter().position(|name| *name == "spine");
        assert_eq!(spine_turn, Some(EDGE_TURNS as usize), "{order:?}");
    }

    #[tokio::test]
    async fn a_cancelled_wait_hands_the_gate_on() {
        let gate = gate();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let held = gate.acquire(Role::Spine).await;
        let cancelled = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(Role::Edge).await }
        });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        queue(&gate, Role::Spine, "spine", &tx).await;
        cancelled.abort();
        let _ = cancelled.await;

        drop(held);

        assert_eq!(drain(&mut rx, 1).await, ["spine"]);
    }

    #[test]
    fn a_sqlite_file_is_known_by_its_path_however_the_url_spells_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        std::fs::write(&file, b"").unwrap();
        let a = sqlite_file(&format!("sqlite://{}?mode=rwc", file.display()));
        let b = sqlite_file(&format!("sqlite:{}/./db.sqlite", dir.path().display()));
        assert_eq!(a, b);
        assert_ne!(a, sqlite_file("sqlite::memory:"));
    }

    fn sqlite_settings(dir: &tempfile::TempDir) -> crate::settings::DatabaseSettings {
        crate::settings::DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()).into(),
            // No busy handler: a writer meeting another in SQLite's lock fails at once.
            lock_timeout: std::time::Duration::ZERO,
            max_connections: 4,
            spine_max_connections: 4,
            write_gate: Some(true),
            ..crate::settings::DatabaseSettings::default()
        }
    }

    #[tokio::test]
    #[allow(
        clippy::disallowed_methods,
        reason = "two writers without the gate, on purpose"
    )]
    async fn without_a_busy_timeout_two_raw_writers_collide() {
        // The control for the next test: at busy_timeout = 0 a second writer does fail.
        let dir = tempfile::tempdir().unwrap();
        let settings = sqlite_settings(&dir);
        let (edge, _) = crate::db::connect(&settings).await.unwrap();
        let spine = crate::db::connect_spine(&settings, &edge).await.unwrap();
        let held = edge.begin_with("BEGIN IMMEDIATE").await.unwrap();

        let err = spine.begin_with("BEGIN IMMEDIATE").await.unwrap_err();

        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("5"), "SQLITE_BUSY: {err}");
        held.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn the_gate_not_the_busy_handler_serialises_the_two_pools_writers() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sqlite_settings(&dir);
        let (edge, _) = crate::db::connect(&settings).await.unwrap();
        let spine = crate::db::connect_spine(&settings, &edge).await.unwrap();
        sqlx::query("CREATE TABLE t (who TEXT NOT NULL, n BIGINT NOT NULL)")
            .execute(&edge)
            .await
            .unwrap();
        let writers = [
            Writer::new(edge.clone(), Role::Edge),
            Writer::new(spine.clone(), Role::Spine),
            // A consumer handler on the edge's pool (spine_max_connections = 0).
            Writer::new(edge.clone(), Role::Spine),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for (w, writer) in writers.iter().enumerate() {
            for task in 0..4 {
                let writer = writer.clone();
                tasks.spawn(async move {
                    for n in 0..10_i64 {
                        let who = format!("{w}/{task}");
                        if n % 2 == 0 {
                            // A transaction that reads, lets others run, then writes.
                            let mut tx = writer.begin().await?;
                            sqlx::query("SELECT COUNT(*) FROM t")
                                .fetch_one(&mut *tx)
                                .await?;
                            tokio::task::yield_now().await;
                            sqlx::query("INSERT INTO t (who, n) VALUES ($1, $2)")
                                .bind(who)
                                .bind(n)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                        } else {
                            // An autocommit write.
                            let mut conn = writer.lock().await?;
                            sqlx::query("INSERT INTO t (who, n) VALUES ($1, $2)")
                                .bind(who)
                                .bind(n)
                                .execute(&mut *conn)
                                .await?;
                        }
                    }
                    Ok::<_, sqlx::Error>(())
                });
            }
        }

        while let Some(done) = tasks.join_next().await {
            done.unwrap()
                .expect("no writer meets another in SQLite's lock");
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&edge)
            .await
            .unwrap();
        assert_eq!(rows, 3 * 4 * 10);
    }

    #[tokio::test]
    async fn a_dropped_write_transaction_is_rolled_back_before_the_next_writer_begins() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sqlite_settings(&dir);
        let (edge, _) = crate::db::connect(&settings).await.unwrap();
        let spine = crate::db::connect_spine(&settings, &edge).await.unwrap();
        sqlx::query("CREATE TABLE t (x BIGINT)")
            .execute(&edge)
            .await
            .unwrap();
        let (a, b) = (
            Writer::new(edge.clone(), Role::Spine),
            Writer::new(spine, Role::Edge),
        );
        let mut tx = a.begin().await.unwrap();
        sqlx::query("INSERT INTO t (x) VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let next = tokio::spawn(async move {
            let mut tx = b.begin().await?;
            sqlx::query("INSERT INTO t (x) VALUES (2)")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        });
        while a.gate.as_ref().unwrap().waiting() == 0 {
            tokio::task::yield_now().await;
        }

        drop(tx);

        next.await
            .unwrap()
            .expect("began after the rollback, at busy_timeout = 0");
        let xs: Vec<i64> = sqlx::query_scalar("SELECT x FROM t")
            .fetch_all(&edge)
            .await
            .unwrap();
        assert_eq!(xs, [2]);
    }

    #[tokio::test]
    async fn a_writer_waiting_past_the_acquire_timeout_fails_as_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::settings::DatabaseSettings {
            acquire_timeout: std::time::Duration::from_millis(50),
            ..sqlite_settings(&dir)
        };
        let (edge, _) = crate::db::connect(&settings).await.unwrap();
        let (holder, waiter) = (
            Writer::new(edge.clone(), Role::Spine),
            Writer::new(edge, Role::Edge),
        );
        let held = holder.lock().await.unwrap();

        let err = waiter.begin().await.map(drop).unwrap_err();

        assert!(crate::db::is_outage(&err), "{err:?}");
        // The waiter that gave up is skipped: the gate is free again once released.
        drop(held);
        let tx = waiter.begin().await.unwrap();
        tx.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn a_sqlite_database_is_gated_only_with_write_gate() {
        let dir = tempfile::tempdir().unwrap();
        let off = crate::settings::DatabaseSettings {
            write_gate: Some(false),
            ..sqlite_settings(&dir)
        };
        let (pool, _) = crate::db::connect(&off).await.unwrap();
        assert!(
            Writer::new(pool, Role::Edge).gate.is_none(),
            "off by default"
        );
        let (pool, _) = crate::db::connect(&sqlite_settings(&dir)).await.unwrap();
        assert!(Writer::new(pool, Role::Edge).gate.is_some());
    }

    #[tokio::test]
    async fn postgres_writers_are_not_gated() {
        let url = std::env::var("SPINE_TEST_POSTGRES_URL").expect(
            "SPINE_TEST_POSTGRES_URL is unset: run the tests with scripts/test, which starts PostgreSQL",
        );
        let settings = crate::settings::DatabaseSettings {
            url: url.into(),
            max_connections: 2,
            ..crate::settings::DatabaseSettings::default()
        };
        let (pool, backend) = crate::db::connect(&settings).await.unwrap();
        assert_eq!(backend, Backend::Postgres);
        let (edge, spine) = (
            Writer::new(pool.clone(), Role::Edge),
            Writer::new(pool, Role::Spine),
        );
        assert!(edge.gate.is_none() && spine.gate.is_none());

        // Two transactions open at once: gated, the second would wait for the first forever.
        let first = spine.begin().await.unwrap();
        let second = edge.begin().await.unwrap();
        let permit = futures::FutureExt::now_or_never(edge.gate_permit());
        assert!(
            matches!(permit, Some(Ok(_))),
            "an autocommit write takes no gate"
        );

        second.commit().await.unwrap();
        first.commit().await.unwrap();
    }
}
