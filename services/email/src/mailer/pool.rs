//! Open SMTP sessions kept between mails, so that a mail costs MAIL, RCPT and DATA rather than
//! a TCP connection, a greeting, EHLO, STARTTLS and a TLS handshake, AUTH and QUIT as well.
//!
//! Ours rather than lettre's `pool` feature, which parks a connection again when the future
//! using it is dropped: our timeout of a whole hand-over (`email.smtp_timeout`) drops it
//! mid-command, and the next mail on that connection would read the previous command's late
//! reply as its own (every reply one step off, a 5xx meant for one mail taken by another).
//! Here a session is owned by the hand-over using it and comes back only through
//! [`SessionPool::park`] once the server answered the mail (accepted, or refused and reset);
//! a dropped hand-over closes its connection. lettre's pool also checks each connection with a NOOP before use, a round trip
//! per mail; we check none, and the caller retries a reused session's failure once on a new
//! connection instead (`SmtpMailer::hand_over`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

/// Idle sessions, the most recently used last (the next one taken), so that under light load
/// the oldest ones age out instead of all of them being kept barely alive.
pub(super) struct SessionPool {
    idle: Mutex<VecDeque<Parked>>,
    /// The most idle sessions kept; 0 keeps none (a connection per mail).
    max_idle: usize,
    /// A session idle longer than this is closed (servers drop idle clients after a while;
    /// ours leaves first, with a QUIT).
    idle_timeout: Duration,
    /// Bounds the QUIT of a session closed for idleness.
    quit_timeout: Duration,
    sweeper_started: AtomicBool,
}

struct Parked {
    session: AsyncSmtpConnection,
    since: Instant,
}

impl SessionPool {
    pub(super) fn new(max_idle: usize, idle_timeout: Duration, quit_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            quit_timeout,
            sweeper_started: AtomicBool::new(false),
        }
    }

    /// The most recently parked session, if one is idle and not past the idle timeout. Its
    /// server may still have closed it meanwhile: the first command tells.
    pub(super) fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let parked = idle.pop_back()?;
        if parked.since.elapsed() > self.idle_timeout {
            // The newest is too old, so all are: this one is closed (dropped), the sweeper
            // says goodbye to the rest.
            return None;
        }
        Some(parked.session)
    }

    /// Keeps `session` for a next mail; when the pool is full (or of size 0), says QUIT and
    /// closes it. A session lettre marked broken (it already said QUIT after a failed command)
    /// is dropped.
    pub(super) async fn park(self: &Arc<Self>, mut session: AsyncSmtpConnection) {
        if session.has_broken() {
            return;
        }
        {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < self.max_idle {
                idle.push_back(Parked {
                    session,
                    since: Instant::now(),
                });
                drop(idle);
                self.start_sweeper();
                return;
            }
        }
        session.abort().await;
    }

    fn start_sweeper(self: &Arc<Self>) {
        if !self.sweeper_started.swap(true, Ordering::Relaxed) {
            // Started by the first hand-over, on the runtime that sends (none exists when the
            // mailer is built); it stops once the pool is dropped.
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Takes out the sessions idle longer than the idle timeout.
    fn expired(&self) -> Vec<AsyncSmtpConnection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = idle
            .iter()
            .position(|parked| parked.since.elapsed() <= self.idle_timeout)
            .unwrap_or(idle.len());
        idle.drain(..fresh).map(|parked| parked.session).collect()
    }
}

/// Every half idle timeout, closes the expired sessions politely (QUIT, bounded by the quit
/// timeout; a session that does not answer is simply dropped), so that idle connections are
/// not held open until the server cuts them.
async fn sweep(pool: Weak<SessionPool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let expired = pool.expired();
        let quit_timeout = pool.quit_timeout;
        drop(pool);
        if !expired.is_empty() {
            tracing::debug!(sessions = expired.len(), "closing idle SMTP sessions");
            futures::future::join_all(expired.into_iter().map(|mut session| async move {
                let _ = tokio::time::timeout(quit_timeout, session.abort()).await;
            }))
            .await;
        }
    }
}
