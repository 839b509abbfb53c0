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
//! The dispatcher deals jobs round-robin. A record's job is its whole life (attempts, retries,
//! dead letter), so a worker runs hundreds at once when the handlers wait on I/O (email's
//! provider); per-key order does not depend on which worker runs what, since the tracker starts
//! a key's next record only once the one before it completed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::process::panic_message;

/// One record's or one batch's task, as the dispatcher builds it.
pub(super) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The workers of one runner. Dropping it aborts them, and with them whatever still runs
/// (the runner drops it on the way out, after its drain gave running handlers
/// `shutdown_timeout`): their records are not stored, so they are redelivered.
pub(super) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
}

impl Workers {
    /// Starts one worker per thread of the current runtime (one on a current-thread runtime).
    pub fn start(group: &str) -> Self {
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
        Self {
            queues,
            handles,
            next: 0,
        }
    }

    /// Hands `job` to the next worker in turn.
    pub fn run(&mut self, job: Job) {
        let worker = self.next;
        self.next = (worker + 1) % self.queues.len();
        // A worker stops only when aborted, which only dropping `self` does.
        let _ = self.queues[worker].send(job);
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
async fn work(group: String, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    let mut open = true;
    std::future::poll_fn(|cx| {
        // Both loops yield on their own: the channel to tokio's task budget, the set after a
        // bounded number of polls.
        while open {
            match jobs.poll_recv(cx) {
                Poll::Ready(Some(job)) => running.push(AssertUnwindSafe(job).catch_unwind()),
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
        let mut workers = Workers::start("test");
        assert_eq!(workers.queues.len(), 2);
        let finished = Arc::new(AtomicUsize::new(0));
        // Ten jobs on two workers that each wait until all ten have started: they can only
        // finish if each worker runs several at once (one at a time, none would pass).
        let all_started = Arc::new(tokio::sync::Barrier::new(10));
        for _ in 0..10 {
            let all_started = all_started.clone();
            let finished = finished.clone();
            workers.run(Box::pin(async move {
                all_started.wait().await;
                finished.fetch_add(1, Ordering::SeqCst);
            }));
        }
        reaches(&finished, 10, "all ten jobs run at once and finish").await;

        // A job that panics outside a handler takes only itself down.
        workers.run(Box::pin(async { panic!("boom") }));
        let after = finished.clone();
        workers.run(Box::pin(async move {
            after.fetch_add(1, Ordering::SeqCst);
        }));
        workers.run(Box::pin(async {}));
        let after = finished.clone();
        workers.run(Box::pin(async move {
            after.fetch_add(1, Ordering::SeqCst);
        }));
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
            workers.run(Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(workers);
        reaches(&dropped, 4, "dropping the workers drops their jobs").await;
    }
}
