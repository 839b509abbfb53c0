//! The CPU one mail costs on the SMTP path, on both sides: sends `--mails` order mails through
//! [`SmtpMailer`] with `--concurrency` in flight to `scripts/slow-smtp.py` (started here, with
//! no delay by default, so the run measures work, not waiting), and reports the CPU seconds
//! (user + system, from `/proc/<pid>/stat`) of this process and of the Python server per mail,
//! and the SMTP sessions the server saw.
//!
//! ```sh
//! cargo run --release -p spine-email --example smtp_load -- --mails 5000 --concurrency 512
//! ```
//!
//! Options: `--mails N` (5000), `--concurrency N` (512, the deployed
//! `kafka.consumer.max_in_flight`), `--delay-ms N` (0: the server answers each DATA at once),
//! `--fail-rate F` (0.1, the share of mails the server defers with 451, retried in place as
//! `email.smtp_transient_retries` says), `--pool-size N` (`email.smtp_pool_size`: unset, one
//! pooled connection per mail in flight; 0, one connection per mail). Needs aiosmtpd
//! (scripts/setup). A timing tool, not a test: nothing is asserted.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lettre::message::Mailbox;
use spine_email::mailer::{Mailer, SmtpMailer, build_message};
use spine_email::settings::{EmailSettings, TransportKind};
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced};

struct Options {
    mails: usize,
    concurrency: usize,
    delay_ms: u64,
    fail_rate: f64,
    pool_size: Option<usize>,
}

fn options() -> Options {
    let mut options = Options {
        mails: 5000,
        concurrency: 512,
        delay_ms: 0,
        fail_rate: 0.1,
        pool_size: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| -> ! { panic!("{flag} {value}: {e}") };
        match flag.as_str() {
            "--mails" => options.mails = value.parse().unwrap_or_else(|e| bad(&e)),
            "--concurrency" => options.concurrency = value.parse().unwrap_or_else(|e| bad(&e)),
            "--delay-ms" => options.delay_ms = value.parse().unwrap_or_else(|e| bad(&e)),
            "--fail-rate" => options.fail_rate = value.parse().unwrap_or_else(|e| bad(&e)),
            "--pool-size" => options.pool_size = Some(value.parse().unwrap_or_else(|e| bad(&e))),
            _ => panic!("unknown option {flag}"),
        }
    }
    options
}

/// User + system CPU seconds of process `pid` so far (`/proc/<pid>/stat` fields 14 and 15, in
/// clock ticks, which Linux reports in units of 1/100 s to user space).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The server's counts, as it last wrote them.
fn server_counts(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|_| "{}".into()))
        .unwrap_or_default()
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(options: &Options, stats: &std::path::Path) -> Server {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/slow-smtp.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string()])
        .args(["--min-ms", &options.delay_ms.to_string()])
        .args(["--max-ms", &options.delay_ms.to_string()])
        .args(["--fail-rate", &options.fail_rate.to_string()])
        // Room for every client connecting at once: asyncio's default queue of 100 overflows,
        // and a connection dropped from it hangs until `email.smtp_timeout`.
        .args(["--backlog", "1024"])
        .arg("--stats")
        .arg(stats)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting python3 scripts/slow-smtp.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY", "slow-smtp.py did not start");
    Server { child, port }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let server = start_server(&options, &stats);

    let mut settings = EmailSettings {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: server.port,
        smtp_timeout: Duration::from_secs(30),
        ..EmailSettings::default()
    };
    settings.smtp_pool_size = options.pool_size;
    let mailer = SmtpMailer::new(&settings, options.concurrency).unwrap();
    let from: Mailbox = "Spine Shop <orders@spine.local>".parse().unwrap();
    // Built before the clock starts: the run measures the hand-over, not the rendering.
    let mails: Vec<_> = (0..options.mails)
        .map(|i| {
            let placed = OrderPlaced::new(
                uuid::Uuid::now_v7(),
                "customer",
                format!("customer{i}@example.com"),
                vec![
                    LineItem::new("SKU-1", 2, 1250),
                    LineItem::new("SKU-2", 1, 990),
                ],
                "EUR",
            );
            let mail = spine_email::templates::order_confirmed(&OrderConfirmed::of(&placed));
            let message = build_message(&from, &mail).unwrap();
            (mail, message)
        })
        .collect();

    let me = std::process::id();
    let (mine, theirs) = (cpu_seconds(me), cpu_seconds(server.child.id()));
    let started = Instant::now();
    let failures: Vec<String> = futures::stream::iter(mails)
        .map(|(mail, message)| {
            let mailer = &mailer;
            async move { mailer.send(&mail, message).await.err() }
        })
        .buffer_unordered(options.concurrency)
        .filter_map(|failed| std::future::ready(failed.map(|e| e.to_string())))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let (mine, theirs) = (
        cpu_seconds(me) - mine,
        cpu_seconds(server.child.id()) - theirs,
    );
    // The server writes its counts every second.
    std::thread::sleep(Duration::from_millis(1500));
    let counts = server_counts(&stats);

    let n = options.mails as f64;
    println!(
        "mails {} (failed {}), concurrency {}, pool size {}, server delay {} ms, fail rate {}",
        options.mails,
        failures.len(),
        options.concurrency,
        options
            .pool_size
            .map_or_else(|| "unset (= concurrency)".to_owned(), |p| p.to_string()),
        options.delay_ms,
        options.fail_rate,
    );
    println!(
        "wall {:.2} s, {:.0} mails/s",
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64()
    );
    println!(
        "sender CPU {mine:.2} s = {:.3} ms/mail; server CPU {theirs:.2} s = {:.3} ms/mail",
        mine * 1000.0 / n,
        theirs * 1000.0 / n
    );
    println!(
        "server: {} sessions, {} accepted, {} deferred (451)",
        counts["sessions"], counts["accepted"], counts["transient_failures"]
    );
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for failure in &failures {
        *kinds
            .entry(failure.chars().take(120).collect())
            .or_default() += 1;
    }
    for (kind, count) in kinds {
        println!("failed {count}x: {kind}");
    }
}
