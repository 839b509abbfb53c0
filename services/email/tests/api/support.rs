//! `spawn_app`, the test SMTP server, and friends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spine_email::Application;
use spine_email::settings::{Settings, TransportKind};
use spine_events::Event;
use spine_events::email::EmailSent;
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected};
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::Record;
use spine_kit::kafka::{OutgoingRecord, Publisher};
use spine_kit::settings::KafkaSettings;
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use spine_kit::testing::{Received, read_settled};

/// Kafka settings for the test broker, with fast group timeouts for tansu.
pub use spine_kit::testing::kafka_settings as kafka;

/// A port nothing listens on (for a moment).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real SMTP server (aiosmtpd, `tests/smtp_server.py`) storing each accepted message as a
/// file; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// Starts on a free port.
    pub fn start() -> Self {
        Self::spawn_on_a_free_port(&["--fail-first".into(), "0".into()])
    }

    /// Starts on `port`, answering 451 to the first `fail_first` attempts of each recipient.
    pub fn start_on(port: u16, fail_first: u32) -> Self {
        let args = ["--fail-first".into(), fail_first.to_string().into()];
        Self::try_spawn(port, &args).expect("the SMTP server did not start")
    }

    /// Starts on a free port serving `tls` (`"none"`, `"starttls"` or `"implicit"`) with
    /// `ca`'s server certificate and, when `auth` is set, requiring AUTH with exactly that user
    /// and password (offered only over TLS).
    pub fn start_secured(tls: &str, ca: &TestCa, auth: Option<(&str, &str)>) -> Self {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--tls".into(),
            tls.into(),
            "--cert".into(),
            ca.server_cert_file().into(),
            "--key".into(),
            ca.server_key_file().into(),
        ];
        if let Some((user, password)) = auth {
            args.extend([
                "--user".into(),
                user.into(),
                "--password".into(),
                password.into(),
            ]);
        }
        Self::spawn_on_a_free_port(&args)
    }

    /// Starts on a port that was free a moment ago, and on another if a parallel test took it
    /// meanwhile (the server then fails to bind).
    fn spawn_on_a_free_port(args: &[std::ffi::OsString]) -> Self {
        for _ in 0..4 {
            if let Some(server) = Self::try_spawn(free_port(), args) {
                return server;
            }
        }
        Self::try_spawn(free_port(), args).expect("the SMTP server did not start")
    }

    /// The server on `port`, or `None` if it did not start (the port was taken).
    ///
    /// # Panics
    /// When aiosmtpd is not installed: the test must fail loudly, naming the fix.
    fn try_spawn(port: u16, args: &[std::ffi::OsString]) -> Option<Self> {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .expect("python3 runs");
        assert!(
            probe.success(),
            "aiosmtpd is not importable: python3 -m pip install aiosmtpd"
        );
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts the SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "READY" {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(Self { port, dir, child })
    }

    /// Every message accepted, whatever the recipient.
    pub fn all_messages(&self) -> Vec<String> {
        eml_files(self.dir.path())
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// One line per AUTH attempt: `ok USER` or `rejected USER`.
    pub fn auth_attempts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("auth.log"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The messages accepted for `recipient`, raw (with an `X-Envelope-To` line first).
    pub fn messages_to(&self, recipient: &str) -> Vec<String> {
        let marker = format!("X-Envelope-To: {recipient}\r\n");
        eml_files(self.dir.path())
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .filter(|m| m.starts_with(&marker))
            .collect()
    }

    /// Waits until `expected` messages for `recipient` arrived, then a little longer so that a
    /// duplicate would show up too.
    pub async fn wait_for(&self, recipient: &str, expected: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.messages_to(recipient).len() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.messages_to(recipient)
    }

    /// How many times the server answered 451 for `recipient`.
    pub fn refusals(&self, recipient: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(format!("{recipient}.451")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA (made here, trusted by nothing else) and a server certificate it signed for
/// `127.0.0.1` and `localhost`, as PEM files in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "spine email test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "spine email test SMTP server");
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Self { dir }
    }

    /// The CA certificate, for `email.smtp_ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn server_key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// The `.eml` files of a directory, sorted.
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `msg_key`, `payload`, `published_at` of an outbox row.
type OutboxRow = (Option<Vec<u8>>, Vec<u8>, Option<i64>);

/// The service, running on a free port with its own database and consumer group.
pub struct TestApp {
    pub settings: Settings,
    pub pool: AnyPool,
    pub publisher: Publisher,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDatabase,
}

/// The service mailing over SMTP to `127.0.0.1:smtp_port`.
pub async fn spawn_app(backend: Backend, smtp_port: u16) -> TestApp {
    spawn_app_with(backend, |s| {
        s.email.transport = TransportKind::Smtp;
        s.email.smtp_host = "127.0.0.1".into();
        s.email.smtp_port = smtp_port;
        s.email.smtp_timeout = Duration::from_secs(5);
    })
    .await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.kafka = kafka();
    settings.database = db.settings.clone();
    settings.outbox.poll_interval = Duration::from_millis(100);
    settings.email.consumer_group = unique("email");
    tweak(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("the service starts (is the broker up? scripts/broker start)");
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone()));
    let (pool, _) = spine_kit::db::connect(&db.settings).await.unwrap();
    let publisher = Publisher::new(&settings.kafka, "fake-orders").unwrap();
    TestApp {
        settings,
        pool,
        publisher,
        token,
        task,
        _db: db,
    }
}

/// The record orders would publish for `fact`, as the runner hands it over on `attempt`.
pub fn record_of(fact: &OrderConfirmed, attempt: u32) -> Record {
    let outgoing = OutgoingRecord::from_event(fact).unwrap();
    Record {
        topic: outgoing.topic,
        partition: 0,
        offset: 0,
        key: outgoing.key,
        payload: Some(outgoing.payload),
        headers: outgoing.headers,
        timestamp_ms: None,
        attempt,
    }
}

/// A recipient no other test uses (topics are shared, so every test's mails reach every app).
pub fn recipient(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

/// An order of 2 × 12.50 + 5.00 EUR for `email`.
pub fn placed(email: &str) -> OrderPlaced {
    OrderPlaced::new(
        Uuid::now_v7(),
        "customer-42",
        email,
        vec![
            LineItem::new("SKU-1", 2, 1250),
            LineItem::new("SKU-2", 1, 500),
        ],
        "EUR",
    )
}

impl TestApp {
    /// Publishes OrderConfirmed for a new order to `email`, as orders would.
    pub async fn confirm(&self, email: &str) -> OrderConfirmed {
        let fact = OrderConfirmed::of(&placed(email));
        self.publisher.publish(&fact).await.unwrap();
        fact
    }

    /// Publishes OrderRejected for a new order to `email`, as orders would.
    pub async fn reject(&self, email: &str, reason: &str) -> OrderRejected {
        let fact = OrderRejected::of(&placed(email), reason);
        self.publisher.publish(&fact).await.unwrap();
        fact
    }

    /// Waits until this app has worked through what the shared `orders.events` held when it
    /// started (every app reads it from the beginning): a fact published now is recorded, and
    /// the count of recorded mails then holds for a second. A test that holds the database up
    /// needs this first, or the recordings of earlier tests' mails, held up too, fill the
    /// consumer's `max_in_flight` ahead of its own mail.
    pub async fn catch_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let warm_up = self.confirm(&recipient("warm-up")).await;
        while self.sent_for(warm_up.order_id).await == 0 {
            assert!(
                Instant::now() < deadline,
                "the app did not catch up in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut seen = -1;
        loop {
            let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sent_emails")
                .fetch_one(&self.pool)
                .await
                .unwrap();
            if recorded == seen || Instant::now() > deadline {
                return;
            }
            seen = recorded;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Rows of `sent_emails` for `order_id`.
    pub async fn sent_for(&self, order_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM sent_emails WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The EmailSent facts this app enqueued for `order_id`, with whether each was published.
    /// (Every app under test consumes the shared `orders.events`, so `email.events` holds other
    /// apps' EmailSent for the same order too; this app's outbox tells its own.)
    pub async fn email_sent_for(&self, order_id: Uuid) -> Vec<(EmailSent, bool)> {
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT msg_key, payload, published_at FROM spine_outbox WHERE topic = $1 ORDER BY id",
        )
        .bind(EmailSent::TOPIC)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let key = order_id.to_string();
        rows.into_iter()
            .filter(|(k, _, _)| k.as_deref() == Some(key.as_bytes()))
            .map(|(_, payload, published)| {
                (spine_events::decode(&payload).unwrap(), published.is_some())
            })
            .collect()
    }

    /// Waits until this app's outbox published `expected` EmailSent for `order_id`, then a
    /// little longer so that a duplicate would show up too.
    pub async fn wait_for_email_sent(&self, order_id: Uuid, expected: usize) -> Vec<EmailSent> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let published = self
                .email_sent_for(order_id)
                .await
                .iter()
                .filter(|(_, published)| *published)
                .count();
            if published >= expected || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.email_sent_for(order_id)
            .await
            .into_iter()
            .map(|(fact, _)| fact)
            .collect()
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// The records of `topic` keyed by `order_id`, read from the beginning (other tests' records
/// share the topic).
pub fn facts_of(
    kafka: &KafkaSettings,
    topic: &str,
    order_id: Uuid,
    expected: usize,
) -> Vec<Received> {
    let key = order_id.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = read_settled(kafka, topic, usize::MAX, Duration::from_secs(2));
        let mine: Vec<Received> = all
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
            .collect();
        if mine.len() >= expected || Instant::now() > deadline {
            return mine;
        }
    }
}
