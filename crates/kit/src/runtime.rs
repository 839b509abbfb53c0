//! A runtime at a lower CPU priority, for the spine.
//!
//! A service's consumers drain backlogs as fast as they can, which on a busy machine means
//! taking CPU from its edge (the HTTP handlers and the outbox relay). The consumer runner
//! therefore runs on a runtime of its own whose threads have a higher nice value
//! (`kafka.consumer.nice`): when the CPU is contended the scheduler prefers the edge, and the
//! consumers get what it leaves, so a spike in the spine does not reach the API's latency.
//!
//! Linux keeps a nice value per thread, and a new thread inherits the nice value of the
//! thread that creates it. So work started from this runtime is lowered too: librdkafka's
//! threads, made when the runner creates its consumer there. SQLite's per-connection worker
//! threads are not: `db::connect` opens them all at startup, because a lowered thread holding
//! SQLite's single write lock would keep the edge's writers waiting (a priority inversion).
//! Elsewhere than Linux the nice value is per process, and the runtime runs at normal
//! priority.

use std::cell::RefCell;
use std::future::Future;
use std::io;

use tokio::runtime::Runtime;

/// The highest nice value (the lowest priority) on Linux.
pub const MAX_NICE: i32 = 19;

/// The nice value of the calling thread (on Linux; an `Unsupported` error elsewhere).
pub fn thread_nice() -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::process::getpriority_process(Some(
            rustix::thread::gettid(),
        ))?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Sets the nice value of the calling thread only (on Linux; an `Unsupported` error
/// elsewhere). Raising it needs no privilege; lowering it below the current value does.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::process::setpriority_process(
            Some(rustix::thread::gettid()),
            nice,
        )?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Err(io::ErrorKind::Unsupported.into())
    }
}

thread_local! {
    /// The tracing default a lowered thread carries over from the thread that built its
    /// runtime (see [`lowered`]); dropped when the thread stops.
    static CARRIED_DISPATCH: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// A multi-thread runtime of `workers` threads named `name` whose threads run `nice` levels
/// below the thread that builds it (at most [`MAX_NICE`]): each worker and blocking thread
/// lowers its own priority as it starts. Multi-thread, so that `block_in_place` (the
/// consumer's revoke) works on it.
///
/// Tracing: the threads use the subscriber the building thread uses, a scoped default (a
/// test's `set_default`) included, so that a test's spans are still collected; when that
/// thread has none, the global one (even if set later).
///
/// A runtime must not be dropped inside an async context: end it with
/// [`Runtime::shutdown_background`], as [`run_lowered`] does.
pub fn lowered(name: &str, workers: usize, nice: i32) -> io::Result<Runtime> {
    let base = thread_nice().unwrap_or(0);
    let target = base.saturating_add(nice).min(MAX_NICE);
    // The building thread's default: the global subscriber in a service, a scoped one in a
    // test that set its own. (tracing cannot tell which, and carrying the global one over is
    // harmless.) None yet is not carried, so that one set globally later is seen.
    let carried = tracing::dispatcher::get_default(|current| {
        (!current.is::<tracing::subscriber::NoSubscriber>()).then(|| current.clone())
    });
    let runtime_name = name.to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || {
            if let Some(dispatch) = &carried {
                let guard = tracing::dispatcher::set_default(dispatch);
                CARRIED_DISPATCH.with(|slot| *slot.borrow_mut() = Some(guard));
            }
            if let Err(err) = set_thread_nice(target) {
                tracing::warn!(runtime = %runtime_name, nice = target, error = %err,
                    "cannot lower this thread's priority; it runs at the service's own");
            }
        })
        .on_thread_stop(|| {
            CARRIED_DISPATCH.with(|slot| slot.borrow_mut().take());
        })
        .build()
}

/// Runs `task` to its end on a fresh [`lowered`] runtime, then shuts the runtime down. If
/// this future is dropped first (a supervisor's deadline), the runtime is shut down at once,
/// which drops `task` and everything it spawned. A panic in `task` resumes here.
pub async fn run_lowered<F>(name: &str, workers: usize, nice: i32, task: F) -> io::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = ShutdownOnDrop(Some(lowered(name, workers, nice)?));
    let joined = runtime.handle().spawn(task).await;
    drop(runtime);
    match joined {
        Ok(output) => Ok(output),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // Only a shutdown cancels the task, and the runtime is shut down only when this
        // future is dropped, so this is not reached; an error rather than a panic anyway.
        Err(err) => Err(io::Error::other(err)),
    }
}

/// Owns a runtime and shuts it down without blocking when dropped (dropping a runtime
/// blocks, which panics inside an async context).
struct ShutdownOnDrop(Option<Runtime>);

impl ShutdownOnDrop {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("taken only on drop").handle()
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn every_thread_of_a_lowered_runtime_runs_at_the_lower_priority() {
        let base = thread_nice().unwrap();
        let runtime = lowered("lowered-test", 2, 7).unwrap();
        let seen: Vec<i32> = runtime.block_on(async {
            // On the workers (several tasks, so both are likely used) and on a blocking thread.
            let mut seen = Vec::new();
            for _ in 0..8 {
                seen.push(
                    tokio::spawn(async { thread_nice().unwrap() })
                        .await
                        .unwrap(),
                );
            }
            seen.push(
                tokio::task::spawn_blocking(|| thread_nice().unwrap())
                    .await
                    .unwrap(),
            );
            seen
        });
        runtime.shutdown_background();
        let expected = (base + 7).min(MAX_NICE);
        assert!(
            seen.iter().all(|&nice| nice == expected),
            "{seen:?}, expected {expected}"
        );
        assert_eq!(
            thread_nice().unwrap(),
            base,
            "the building thread keeps its own priority"
        );
    }

    #[test]
    fn threads_made_by_a_lowered_thread_inherit_its_priority() {
        let base = thread_nice().unwrap();
        let runtime = lowered("lowered-test", 1, 3).unwrap();
        // As the threads a handler starts do (librdkafka's, for a consumer made there).
        let child = runtime.block_on(async {
            tokio::spawn(async {
                std::thread::spawn(|| thread_nice().unwrap())
                    .join()
                    .unwrap()
            })
            .await
            .unwrap()
        });
        runtime.shutdown_background();
        assert_eq!(child, (base + 3).min(MAX_NICE));
    }

    #[tokio::test]
    async fn a_task_runs_to_its_end_on_the_lowered_runtime() {
        let base = thread_nice().unwrap();
        let (nice, name) = run_lowered("spine-consumer", 2, 10, async {
            let name = std::thread::current().name().map(str::to_owned);
            (thread_nice().unwrap(), name)
        })
        .await
        .unwrap();
        assert_eq!(nice, (base + 10).min(MAX_NICE));
        assert_eq!(name.as_deref(), Some("spine-consumer"));
        assert_eq!(thread_nice().unwrap(), base);
    }

    #[tokio::test]
    async fn a_panic_on_the_lowered_runtime_resumes_in_the_caller() {
        let caught = tokio::spawn(run_lowered("spine-consumer", 1, 1, async {
            panic!("handler blew up");
        }))
        .await
        .unwrap_err();
        assert!(caught.is_panic());
    }

    #[tokio::test]
    async fn dropping_the_caller_stops_the_task_on_the_lowered_runtime() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let caller = tokio::spawn(run_lowered("spine-consumer", 1, 1, async move {
            // Held until the task is dropped, which closes the channel.
            let _dropped = dropped_tx;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        }));
        started_rx.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert!(
            dropped_rx.await.is_err(),
            "the task was dropped, not left running"
        );
    }
}
