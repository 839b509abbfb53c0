//! What the runner's dispatcher, its record tasks and librdkafka's rebalance callbacks share:
//! - **work**: per assigned partition, the record tasks running for it and two tokens that stop
//!   them, so that a revoke can wait for (or abort) them before the partition changes hands;
//! - **completions**: finished records, queued for the dispatcher, and taken by a revoke so
//!   that what finished while it waited is stored and committed before the partition goes;
//! - **the pause flag**: the dispatcher's decision, re-applied to every new assignment
//!   (librdkafka keeps an application's pause across unassign and reassign);
//! - **the stall** ([`Stall`]): whether a dependency is down, and the probe lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::process::Outcome;
use super::tracker::{Partition, Ticket, Tracker};
use super::workers::{Handoff, Job};

/// Finished records (one, or the records of a batch, all of one partition) with how they
/// ended, for the dispatcher (or a revoke) to store.
pub(super) struct Done {
    pub tickets: Tickets,
    pub outcome: Outcome,
}

/// The tickets of a [`Done`]: one record's without a heap allocation (the per-record path
/// finishes one record per task), or a batch's.
pub(super) enum Tickets {
    One(Ticket),
    Many(Vec<Ticket>),
}

impl std::ops::Deref for Tickets {
    type Target = [Ticket];

    fn deref(&self) -> &[Ticket] {
        match self {
            Self::One(ticket) => std::slice::from_ref(ticket),
            Self::Many(tickets) => tickets,
        }
    }
}

impl From<Ticket> for Tickets {
    fn from(ticket: Ticket) -> Self {
        Self::One(ticket)
    }
}

impl From<Vec<Ticket>> for Tickets {
    fn from(tickets: Vec<Ticket>) -> Self {
        Self::Many(tickets)
    }
}

impl Done {
    fn partition(&self) -> Option<&Partition> {
        self.tickets.first().map(|ticket| &ticket.partition)
    }
}

/// The record tasks of one assigned partition.
#[derive(Default)]
pub(super) struct PartitionWork {
    running: AtomicUsize,
    /// Cancelled on revoke: start no further attempt, neither retry nor dead-letter.
    pub cancel: CancellationToken,
    /// Cancelled when a revoke has waited long enough: drop the attempt that is running.
    pub abort: CancellationToken,
}

/// Held by a record task while it runs; dropping it (also on panic or abort) lets a waiting
/// revoke go on.
pub(super) struct Running {
    shared: Arc<Shared>,
    pub work: Arc<PartitionWork>,
}

impl Drop for Running {
    /// Wakes only who waits for what changed: a revoke waits for its partitions to have no
    /// task left (so the condition variable is signalled when this partition's last task
    /// ends), the dispatcher's drain and stall check for no task at all (so it is woken when
    /// the last one ends; a task's completion wakes it on its own). Signalling both for every
    /// record cost a lock, a futex call and a spurious dispatcher turn per record.
    fn drop(&mut self) {
        let partition_idle = self.work.running.fetch_sub(1, Ordering::SeqCst) == 1;
        let all_idle = self.shared.tasks.fetch_sub(1, Ordering::SeqCst) == 1;
        if partition_idle {
            // Under the lock that `wait_idle` checks the counts under, so that a revoke
            // between its check and its wait cannot miss this signal.
            let _work = lock(&self.shared.work);
            self.shared.idle.notify_all();
        }
        if all_idle {
            self.shared.wake.notify_one();
        }
    }
}

/// See the module documentation.
pub(super) struct Shared {
    pub group: Arc<str>,
    paused: AtomicBool,
    /// Since when the member waits for an assignment (since it subscribed, or since its last
    /// revoke), or `None` once it has one: the runner's join watchdog.
    awaiting_assignment: Mutex<Option<Instant>>,
    work: Mutex<HashMap<Partition, Arc<PartitionWork>>>,
    /// Record tasks running, all partitions.
    tasks: AtomicUsize,
    idle: Condvar,
    /// Lanes and offsets. Locked by the dispatcher for each step and by a revoke, which runs
    /// inside the dispatcher's poll (never while the dispatcher holds it).
    pub tracker: Mutex<Tracker>,
    completions: Mutex<Vec<Done>>,
    /// Wakes the dispatcher: a record finished, or the stall changed.
    pub wake: Notify,
    pub stall: Stall,
    /// How started jobs reach the workers; set once the workers run.
    handoff: OnceLock<Handoff>,
}

impl Shared {
    /// `by_partition`: one lane per partition (a batch handler), else one per key.
    pub fn new(group: Arc<str>, by_partition: bool) -> Arc<Self> {
        Arc::new(Self {
            stall: Stall::new(&group),
            group,
            paused: AtomicBool::new(false),
            awaiting_assignment: Mutex::new(Some(Instant::now())),
            work: Mutex::default(),
            tasks: AtomicUsize::new(0),
            idle: Condvar::new(),
            tracker: Mutex::new(if by_partition {
                Tracker::by_partition()
            } else {
                Tracker::new()
            }),
            completions: Mutex::default(),
            wake: Notify::new(),
            handoff: OnceLock::new(),
        })
    }

    /// Sets how started jobs reach the workers (once, when the runner starts them).
    pub fn set_handoff(&self, handoff: Handoff) {
        assert!(
            self.handoff.set(handoff).is_ok(),
            "the runner's workers start once"
        );
    }

    /// Gives `job` to a worker; it starts at the next [`Self::hand_off`].
    pub fn run(&self, job: Job) {
        self.handoff
            .get()
            .expect("jobs are started after the workers")
            .run(job);
    }

    /// Sends the workers the jobs started since the last hand-off (the dispatcher at the end
    /// of each turn, a revoke before it waits for its partitions' jobs).
    pub fn hand_off(&self) {
        if let Some(handoff) = self.handoff.get() {
            handoff.hand_off();
        }
    }

    /// Registers a record task for `partition`.
    pub fn begin(self: &Arc<Self>, partition: &Partition) -> Running {
        let work = lock(&self.work)
            .entry(partition.clone())
            .or_default()
            .clone();
        work.running.fetch_add(1, Ordering::SeqCst);
        self.tasks.fetch_add(1, Ordering::SeqCst);
        Running {
            shared: self.clone(),
            work,
        }
    }

    /// Queues a finished record for the dispatcher. Called before the task's [`Running`] is
    /// dropped, so that a revoke that saw the task end also sees its completion.
    pub fn finish(&self, done: Done) {
        lock(&self.completions).push(done);
        self.wake.notify_one();
    }

    /// Queues several completions at once, in order, so that the dispatcher sees all of them
    /// in one take (a batch's failure before its handled records).
    pub fn finish_all(&self, dones: Vec<Done>) {
        if dones.is_empty() {
            return;
        }
        lock(&self.completions).extend(dones);
        self.wake.notify_one();
    }

    /// Takes every queued completion.
    pub fn take_completions(&self) -> Vec<Done> {
        std::mem::take(&mut *lock(&self.completions))
    }

    /// Record tasks running.
    pub fn tasks(&self) -> usize {
        self.tasks.load(Ordering::SeqCst)
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// A rebalance took partitions away: the member waits for its next assignment.
    pub fn awaiting_assignment(&self) {
        lock(&self.awaiting_assignment).get_or_insert_with(Instant::now);
    }

    /// An assignment arrived (even an empty one: the member is in the group).
    pub fn assigned(&self) {
        *lock(&self.awaiting_assignment) = None;
    }

    /// Since when the member has waited for an assignment, if it is waiting.
    pub fn waiting_for_assignment_since(&self) -> Option<Instant> {
        *lock(&self.awaiting_assignment)
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Stops the record tasks of `partitions` and waits until none runs: first it lets running
    /// attempts finish (no new attempt, retry or dead letter starts) for up to `patience`, then
    /// it aborts the rest. Returns the completions of those partitions, for the caller to store
    /// before it gives them away.
    ///
    /// Blocks the calling thread: call it from librdkafka's rebalance callback, which runs
    /// inside the dispatcher's poll. On a multi-thread runtime the record tasks go on running
    /// on the other workers meanwhile; on a current-thread runtime they cannot, so there it
    /// only cancels.
    pub fn revoke(&self, partitions: &[Partition], patience: Duration) -> Vec<Done> {
        // Jobs the dispatcher started in the turn this revoke interrupts, not sent yet: sent
        // now, so that they run (and, cancelled below, end at once) rather than being waited
        // for until the patience runs out.
        self.hand_off();
        let revoked: Vec<Arc<PartitionWork>> = {
            let mut work = lock(&self.work);
            partitions.iter().filter_map(|p| work.remove(p)).collect()
        };
        for work in &revoked {
            work.cancel.cancel();
        }
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread && revoked.iter().any(|w| w.running.load(Ordering::SeqCst) > 0) {
            tokio::task::block_in_place(|| {
                if !self.wait_idle(&revoked, patience) {
                    tracing::warn!(group = %self.group, ?patience,
                        "revoke: handlers still running, aborting them; their records are redelivered");
                    for work in &revoked {
                        work.abort.cancel();
                    }
                    if !self.wait_idle(&revoked, ABORT_GRACE) {
                        tracing::error!(group = %self.group,
                            "revoke: aborted handlers did not stop; a record may run on two members");
                    }
                }
            });
        }
        let revoked: HashSet<&Partition> = partitions.iter().collect();
        let mut completions = lock(&self.completions);
        let (mine, rest) = std::mem::take(&mut *completions)
            .into_iter()
            .partition(|done| done.partition().is_some_and(|p| revoked.contains(p)));
        *completions = rest;
        mine
    }

    /// Whether every task of `works` ended within `timeout`.
    fn wait_idle(&self, works: &[Arc<PartitionWork>], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.work);
        while works.iter().any(|w| w.running.load(Ordering::SeqCst) > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .idle
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// How long aborted handlers get to be dropped.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Whether the group is stalled on an outage, and the lock that lets one record at a time
/// probe the dependency while it is.
pub(super) struct Stall {
    stalled: AtomicBool,
    failures: AtomicU32,
    probe: tokio::sync::Mutex<()>,
    gauge: metrics::Gauge,
}

/// Returned by [`Stall::admit`]: whether the attempt is a probe (holding the lock) or runs at
/// full speed.
pub(super) type Admission<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

impl Stall {
    fn new(group: &str) -> Self {
        let gauge = metrics::gauge!("spine_consumer_stalled", "group" => group.to_owned());
        gauge.set(0.0);
        Self {
            stalled: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            probe: tokio::sync::Mutex::new(()),
            gauge,
        }
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// Waits for the right to make an attempt: at once when the group is not stalled; while it
    /// is, for the probe lock, so that one attempt at a time tests the dependency. `None` when
    /// `cancel` fired first.
    pub async fn admit<'a>(&'a self, cancel: &CancellationToken) -> Option<Admission<'a>> {
        if !self.is_stalled() {
            return Some(None);
        }
        let guard = tokio::select! {
            guard = self.probe.lock() => guard,
            () = cancel.cancelled() => return None,
        };
        // The stall may have ended while we queued: then run at full speed.
        Some(self.is_stalled().then_some(guard))
    }

    /// An attempt met an outage: the group is (still) stalled. Returns how many outage
    /// failures in a row the group has seen, for the backoff.
    pub fn failed(&self, group: &str, error: &anyhow::Error) -> u32 {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            self.gauge.set(1.0);
            tracing::warn!(
                group,
                error = format!("{error:#}"),
                "dependency unavailable: group stalled, probing with one record at a time"
            );
        }
        self.failures.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A probe got an answer from its dependency (any outcome but an outage): full speed again.
    pub fn recovered(&self, group: &str) {
        if self.stalled.swap(false, Ordering::SeqCst) {
            self.failures.store(0, Ordering::SeqCst);
            self.gauge.set(0.0);
            tracing::info!(group, "dependency answered: group resumed");
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
