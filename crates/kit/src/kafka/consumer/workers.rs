//! The runner's record workers: long-lived tasks, one per thread of the runtime the runner
//! runs on, that run the records and batches the dispatcher starts, many at once each.
//!
//! Before, the dispatcher spawned a task per record. A spawn allocates and schedules a task,
//! and from a thread outside the runtime's workers (the bench's `block_on`, a service with
//! `kafka.consumer.nice` 0) it goes through the runtime's shared queue and often wakes a
//! parked worker: a profile of the per-record path had 30% of the dispatcher's samples there,
//! and the dispatcher, which every record passes through one at a time, bounds that path.
//! Handing a job to a worker is a push onto its channel; a busy worker takes everything
//! queued in one turn, so under load a record costs no wake-up at all.
//!
//! **Hand-offs per turn, not per job.** The dispatcher collects the jobs it starts in one turn
//! of its loop ([`Handoff::run`]) and hands each worker its share in one message at the end of
//! the turn ([`Handoff::hand_off`]). Sent one by one, a worker that finished its job before
//! the next arrived parked and was woken again for every record: a profile of the per-record
//! path with a handler that does nothing had a third of the kit's CPU in those wake-ups
//! (futex and eventfd calls, context switches). A turn takes at most a burst of ready
//! records, so a job waits no longer than the dispatcher takes to read them. A revoke, which
//! runs inside the dispatcher's poll in the middle of a turn, hands off first
//! ([`super::shared::Shared::revoke`]), so that it never waits for a job that was not sent.
//!
//! The dispatcher deals jobs round-robin. A record's job is its whole life (attempts, retries,
//! dead letter), so a worker runs hundreds at once when the handlers wait on I/O (email's
//! provider); per-key order does not depend on which worker runs what, since the tracker starts
//! a key's next record only once the one before it completed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::process::panic_message;
use super::shared::lock;

/// One record's or one batch's task, as the dispatcher builds it.
pub(super) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The workers of one runner. Dropping it aborts them, and with them whatever still runs
/// (the runner drops it on the way out, after its drain gave running handlers
/// `shutdown_timeout`): their records are not stored, so they are redelivered.
pub(super) struct Workers {
    handles: Vec<JoinHandle<()>>,
}

/// How jobs reach the [`Workers`]: collected per turn, handed off together. Shared by the
/// dispatcher and the revoke (through [`super::shared::Shared`]).
pub(super) struct Handoff {
    queues: Vec<mpsc::UnboundedSender<Vec<Job>>>,
    pending: Mutex<Pending>,
}

/// The jobs started since the last hand-off, per worker.
struct Pending {
    jobs: Vec<Vec<Job>>,
    next: usize,
}

impl Workers {
    /// Starts one worker per thread of the current runtime (one on a current-thread runtime),
    /// and the hand-off that feeds them.
    pub fn start(group: &str) -> (Self, Handoff) {
        let count = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let mut queues = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            let (queue, jobs) = mpsc::unbounded_channel();
            queues.push(queue);
            handles.push(tokio::spawn(work(group.to_owned(), jobs)));
        }
        let pending = Pending {
            jobs: (0..count).map(|_| Vec::new()).collect(),
            next: 0,
        };
        let handoff = Handoff {
            queues,
            pending: Mutex::new(pending),
        };
        (Self { handles }, handoff)
    }
}

impl Handoff {
    /// Gives `job` to the next worker in turn; it starts at the next [`Self::hand_off`].
    pub fn run(&self, job: Job) {
        let mut pending = lock(&self.pending);
        let worker = pending.next;
        pending.next = (worker + 1) % pending.jobs.len();
        pending.jobs[worker].push(job);
    }

    /// Sends each worker the jobs given to it since the last hand-off, in one message.
    pub fn hand_off(&self) {
        let mut pending = lock(&self.pending);
        for (queue, jobs) in self.queues.iter().zip(&mut pending.jobs) {
            if !jobs.is_empty() {
                // A worker stops only when aborted, which only dropping `Workers` does; jobs
                // sent after that are dropped with the channel, their records unstored.
                let _ = queue.send(std::mem::take(jobs));
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// A worker: takes every job queued, then polls the jobs that were woken, until its queue
/// closes and its jobs have ended.
async fn work(group: String, mut queue: mpsc::UnboundedReceiver<Vec<Job>>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        // Both loops yield on their own: the channel to tokio's task budget, the set after a
        // bounded number of polls.
        while open {
            match queue.poll_recv(cx) {
                Poll::Ready(Some(jobs)) => {
                    for job in jobs {
                        running.push(AssertUnwindSafe(job).catch_unwind());
                    }
                }
                Poll::Ready(None) => open = false,
                Poll::Pending => break,
            }
        }
        loop {
            match running.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                // The handler's own panics are caught around each attempt (`Process`), so
                // this is the kit's: the job's record stays held, never stored, and this
                // worker goes on with the others.
                Poll::Ready(Some(Err(panic))) => {
                    let message = panic_message(&*panic);
                    tracing::error!(group = %group, panic = %message, "record task panicked");
                }
                Poll::Ready(None) if open => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Waits (up to 10 s, else fails with `what`) until `counter` reaches `n`.
    async fn reaches(counter: &AtomicUsize, n: usize, what: &str) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while counter.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect(what);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_concurrently_on_each_worker_and_dropping_aborts_them() {
        let (workers, handoff) = Workers::start("test");
        assert_eq!(handoff.queues.len(), 2);
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        // Ten jobs on two workers that each wait until all ten have started: they can only
        // finish if each worker runs several at once (one at a time, none would pass).
        let all_started = Arc::new(tokio::sync::Barrier::new(10));
        for _ in 0..10 {
            let all_started = all_started.clone();
            let started = started.clone();
            let finished = finished.clone();
            handoff.run(Box::pin(async move {
                started.fetch_add(1, Ordering::SeqCst);
                all_started.wait().await;
                finished.fetch_add(1, Ordering::SeqCst);
            }));
        }
        // Given, not handed off: none has started (whatever the timing, since none was sent).
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(started.load(Ordering::SeqCst), 0);
        handoff.hand_off();
        reaches(&finished, 10, "all ten jobs run at once and finish").await;

        // A job that panics outside a handler takes only itself down.
        handoff.run(Box::pin(async { panic!("boom") }));
        let after = finished.clone();
        handoff.run(Box::pin(async move {
            after.fetch_add(1, Ordering::SeqCst);
        }));
        handoff.run(Box::pin(async {}));
        let after = finished.clone();
        handoff.run(Box::pin(async move {
            after.fetch_add(1, Ordering::SeqCst);
        }));
        handoff.hand_off();
        reaches(&finished, 12, "both workers go on after a panicking job").await;

        // Dropping the workers drops the jobs still running.
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        for _ in 0..4 {
            let guard = Guard(dropped.clone());
            handoff.run(Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }));
        }
        handoff.hand_off();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(workers);
        reaches(&dropped, 4, "dropping the workers drops their jobs").await;
    }
}
