//! A SQLite busy handler that hands the write lock over as soon as it is free.
//!
//! SQLite has one writer per database. A connection that finds the write lock taken calls its
//! busy handler, and the one `busy_timeout` installs sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50…
//! ms between tries, whether or not the lock was freed meanwhile: a writer that lost a race by
//! a millisecond waits 1 + 2 + 5 + … ms, and under a spike an HTTP request that met a consumer's
//! batch slept 78 or 178 ms (the benchmark's POST p99s were 82.6 and 184 ms).
//!
//! [`register`] makes the SQL function `spine_busy_timeout(ms)` available on every SQLite
//! connection this process opens afterwards (through `sqlite3_auto_extension`, so it works
//! under sqlx's `Any` driver, which gives no access to the connection's handle). Called on a
//! connection, the function replaces its busy handler and its WAL hook:
//!
//! - **The WAL hook**, which SQLite calls after each commit, once the write lock is released,
//!   wakes the connections of this process waiting for a lock. It also runs the automatic
//!   checkpoint that the hook replaces (SQLite's own, at [`AUTOCHECKPOINT_FRAMES`] frames).
//! - **The busy handler** waits for that wake-up, or [`RECHECK`] at most (for a writer of
//!   another process, or a rollback, which the hook does not see), and gives up with
//!   `SQLITE_BUSY` after `ms` in all, as `busy_timeout` does.
//!
//! One wake-up serves every database of the process: a commit wakes all waiters, and those of
//! other files go back to waiting. The handler runs on the thread that runs the statement (sqlx's
//! worker thread of the connection), which it blocks while it waits, as SQLite's own does.
//!
//! The calls into SQLite's C API are this workspace's only unsafe code.

#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::{Condvar, Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

/// The SQL function that installs the handler: `SELECT spine_busy_timeout(ms)`, with `ms` > 0.
pub const FUNCTION: &str = "spine_busy_timeout";

/// The longest a waiting writer sleeps without a wake-up before it tries the lock again.
pub const RECHECK: Duration = Duration::from_millis(1);

/// WAL frames after which a commit checkpoints (SQLite's default `wal_autocheckpoint`).
pub const AUTOCHECKPOINT_FRAMES: c_int = 1000;

/// Makes [`FUNCTION`] available on every SQLite connection opened after it in this process.
/// Idempotent.
pub fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `register_function` has the signature SQLite calls an extension's entry
        // point with, and only registers a function on the connection it is given.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(register_function)) };
        assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_auto_extension failed");
    });
}

/// The statement that installs the handler with a timeout of `timeout` (at least 1 ms) on a
/// connection opened after [`register`].
pub fn install_statement(timeout: Duration) -> String {
    format!("SELECT {FUNCTION}({})", timeout.as_millis().max(1))
}

/// The commits seen, and waiters' wake-up: waiters wait for the count to move.
static COMMITS: Mutex<u64> = Mutex::new(0);
static COMMITTED: Condvar = Condvar::new();

unsafe extern "C" fn register_function(
    db: *mut ffi::sqlite3,
    _error: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: `db` is the connection being opened; the name is a NUL-terminated constant and
    // the function takes no application data (null, with no destructor).
    unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            c"spine_busy_timeout".as_ptr(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY,
            ptr::null_mut(),
            Some(install),
            None,
            None,
            None,
        )
    }
}

/// `spine_busy_timeout(ms)`: installs the hook and the handler on the calling connection and
/// returns `ms`.
unsafe extern "C" fn install(
    context: *mut ffi::sqlite3_context,
    _argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite calls this with its context and `argc` (1, as registered) arguments; the
    // connection of the context is the caller's, whose mutex SQLite holds (it is recursive), and
    // setting its hooks touches no statement.
    unsafe {
        let ms = ffi::sqlite3_value_int64(*argv);
        if ms <= 0 {
            ffi::sqlite3_result_error(
                context,
                c"spine_busy_timeout needs a timeout of at least 1 ms".as_ptr(),
                -1,
            );
            return;
        }
        let db = ffi::sqlite3_context_db_handle(context);
        // The timeout travels as the handler's argument, a number, not a pointer.
        ffi::sqlite3_busy_handler(db, Some(wait_for_lock), ms as usize as *mut c_void);
        ffi::sqlite3_wal_hook(db, Some(committed), ptr::null_mut());
        ffi::sqlite3_result_int64(context, ms);
    }
}

/// The WAL hook: a commit released the write lock.
unsafe extern "C" fn committed(
    _arg: *mut c_void,
    db: *mut ffi::sqlite3,
    database: *const c_char,
    frames: c_int,
) -> c_int {
    {
        let mut commits = COMMITS.lock().unwrap_or_else(PoisonError::into_inner);
        *commits = commits.wrapping_add(1);
    }
    COMMITTED.notify_all();
    if frames >= AUTOCHECKPOINT_FRAMES {
        // What SQLite's own hook does: a passive checkpoint, whose failure is not the commit's.
        // SAFETY: SQLite calls the hook with the committing connection and the database's name.
        unsafe { ffi::sqlite3_wal_checkpoint(db, database) };
    }
    ffi::SQLITE_OK
}

thread_local! {
    /// When the current wait for a lock began (the handler's `count` is 0 on its first call).
    static WAITING_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy handler: 1 to try the lock again, 0 to give up with `SQLITE_BUSY`.
unsafe extern "C" fn wait_for_lock(timeout_ms: *mut c_void, count: c_int) -> c_int {
    let timeout = Duration::from_millis(timeout_ms as usize as u64);
    let now = Instant::now();
    let since = match WAITING_SINCE.get() {
        Some(since) if count > 0 => since,
        _ => {
            WAITING_SINCE.set(Some(now));
            now
        }
    };
    let waited = now.duration_since(since);
    if waited >= timeout {
        return 0;
    }
    let commits = COMMITS.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = *commits;
    let _ = COMMITTED
        .wait_timeout_while(commits, RECHECK.min(timeout - waited), |commits| {
            *commits == seen
        })
        .unwrap_or_else(PoisonError::into_inner);
    1
}
