//! Shutdown and task supervision.
//!
//! One [`shutdown_signal`] (Ctrl-C or SIGTERM) cancels one [`CancellationToken`] that every
//! task watches. A [`Supervisor`] runs the service's tasks: the first one to fail cancels the
//! rest, shutdown has a deadline, and the result says whether to exit non-zero.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Resolves on Ctrl-C or SIGTERM (the signal Kubernetes sends before killing a pod).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A token cancelled by [`shutdown_signal`].
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

/// Why supervised tasks ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A task returned an error or panicked; the others were cancelled.
    #[error("task `{task}` failed: {error:#}")]
    TaskFailed {
        /// The task's name.
        task: String,
        /// Its error.
        error: anyhow::Error,
    },
    /// Tasks did not stop within the shutdown deadline.
    #[error("tasks still running after the {0:?} shutdown deadline")]
    DeadlineExceeded(Duration),
}

/// Runs named tasks that each watch a shared token.
pub struct Supervisor {
    token: CancellationToken,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Supervisor {
    /// A supervisor whose tasks stop when `token` is cancelled.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            tasks: JoinSet::new(),
        }
    }

    /// The token tasks should watch.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts a task. It should return when the token is cancelled.
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Serves `app` on `listener` as the task `http`, draining in-flight requests on shutdown.
    pub fn spawn_http(&mut self, listener: tokio::net::TcpListener, app: axum::Router) {
        let stop = self.token();
        self.spawn("http", async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(|err| anyhow::anyhow!("HTTP server: {err}"))
        });
    }

    /// Runs `tick` now and then every `period` until shutdown, e.g. to refresh gauges; a tick
    /// that fails logs its own error and the next one tries again.
    pub fn spawn_every<F, Fut>(&mut self, name: impl Into<String>, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = self.token();
        self.spawn(name, async move {
            while !stop.is_cancelled() {
                tick().await;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(period) => {}
                }
            }
            Ok(())
        });
    }

    /// Waits until every task has ended. The first failure (or a task ending on its own while
    /// the others run) cancels the rest; after cancellation the tasks get `deadline` to finish.
    pub async fn run(mut self, deadline: Duration) -> Result<(), SupervisorError> {
        let mut failure = None;
        loop {
            let next = if self.token.is_cancelled() {
                match tokio::time::timeout(deadline, self.tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.tasks.abort_all();
                        return Err(failure.unwrap_or(SupervisorError::DeadlineExceeded(deadline)));
                    }
                }
            } else {
                self.tasks.join_next().await
            };
            let Some(joined) = next else { break };
            let (task, result) = match joined {
                Ok(ended) => ended,
                Err(err) => ("<panicked>".to_owned(), Err(anyhow::anyhow!("{err}"))),
            };
            match result {
                Ok(()) if self.token.is_cancelled() => {
                    tracing::debug!(task, "task stopped");
                }
                Ok(()) => {
                    tracing::warn!(task, "task ended on its own; stopping the others");
                    self.token.cancel();
                }
                Err(error) => {
                    tracing::error!(
                        task,
                        error = format!("{error:#}"),
                        "task failed; stopping the others"
                    );
                    failure.get_or_insert(SupervisorError::TaskFailed { task, error });
                    self.token.cancel();
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_cancels_the_other_tasks() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        let token = supervisor.token();
        supervisor.spawn("waits", async move {
            token.cancelled().await;
            Ok(())
        });
        supervisor.spawn("fails", async { anyhow::bail!("boom") });
        let err = supervisor.run(Duration::from_secs(5)).await.unwrap_err();
        assert!(err.to_string().contains("`fails` failed: boom"), "{err}");
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_hits_the_deadline() {
        let token = CancellationToken::new();
        let mut supervisor = Supervisor::new(token.clone());
        supervisor.spawn("stubborn", async {
            std::future::pending::<()>().await;
            Ok(())
        });
        token.cancel();
        let err = supervisor.run(Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, SupervisorError::DeadlineExceeded(_)), "{err}");
    }

    #[tokio::test]
    async fn cancelled_tasks_that_stop_cleanly_are_a_success() {
        let token = CancellationToken::new();
        let mut supervisor = Supervisor::new(token.clone());
        let watched = supervisor.token();
        supervisor.spawn("polite", async move {
            watched.cancelled().await;
            Ok(())
        });
        token.cancel();
        supervisor.run(Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn a_periodic_task_ticks_until_shutdown_and_then_ends_cleanly() {
        let token = CancellationToken::new();
        let mut supervisor = Supervisor::new(token.clone());
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = ticks.clone();
        let cancel = token.clone();
        supervisor.spawn_every("gauges", Duration::from_millis(1), move || {
            let counted = counted.clone();
            let cancel = cancel.clone();
            async move {
                // Shut down from the third tick: the task must stop ticking and end.
                if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
                    cancel.cancel();
                }
            }
        });
        supervisor.run(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ticks.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
