//! The mailer port and its two transports: `.eml` files (embedded default) and SMTP (plain,
//! STARTTLS or implicit TLS, with AUTH).
//! Errors are classified here, once: a transient failure may succeed later without anything
//! changing in the mail (the server or the disk is unavailable: a refused, dropped or timed-out
//! connection, an SMTP 4xx, a full disk; or our session is refused: a 53x authentication
//! failure, a failed TLS handshake, no STARTTLS offered, which name the settings to check); a
//! permanent one never will (an SMTP 5xx about this mail, such as an unknown recipient; an
//! invalid address).
//! SMTP sessions are kept open between mails (`mailer/pool.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail as MailFrom, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::{Category, Code, Severity};
use secrecy::ExposeSecret;

use self::pool::SessionPool;

use crate::settings::{EmailSettings, SmtpTls, TransportKind};
use crate::templates::Mail;

mod pool;

/// Why a mail was not handed over. The message holds the cause's own (lettre's includes its
/// source), so the cause is not also a `source()`: chains printed with `{:#}` (the runner's
/// logs) would say everything twice.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail server (or the disk) cannot take mail now; nothing is wrong with the mail.
    /// The consumer treats it as an outage: retried without limit, never dead-lettered.
    #[error("transient mail failure: {0}")]
    Transient(Box<dyn std::error::Error + Send + Sync>),
    /// It never will (rejected recipient, invalid address): dead-letter.
    #[error("permanent mail failure: {0}")]
    Permanent(Box<dyn std::error::Error + Send + Sync>),
}

/// Something that hands a built message over for delivery. Returns once the message is
/// accepted (by the SMTP server, or written to disk).
pub trait Mailer: Send + Sync + 'static {
    /// Hands `message` over; `mail` names it (the file transport uses the event id).
    fn send<'a>(&'a self, mail: &'a Mail, message: Message)
    -> BoxFuture<'a, Result<(), MailError>>;
}

/// Builds the mailer that `settings.transport` names. `max_in_flight` is the most mails
/// handed over at once (the consumer's `kafka.consumer.max_in_flight`): SMTP keeps that many
/// sessions open unless `email.smtp_pool_size` says otherwise.
pub fn from_settings(
    settings: &EmailSettings,
    max_in_flight: usize,
) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match settings.transport {
        TransportKind::File => {
            std::fs::create_dir_all(&settings.outbox_dir).map_err(|e| {
                anyhow::anyhow!(
                    "creating email.outbox_dir {}: {e}",
                    settings.outbox_dir.display()
                )
            })?;
            Arc::new(FileMailer {
                dir: settings.outbox_dir.clone(),
            })
        }
        TransportKind::Smtp => Arc::new(SmtpMailer::new(settings, max_in_flight)?),
    })
}

/// The full message: headers, deterministic Message-ID, multipart/alternative plain + HTML.
pub fn build_message(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    let to: Mailbox = mail
        .recipient
        .parse()
        .map_err(|e| MailError::Permanent(Box::new(e)))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.as_str())
        .message_id(Some(mail.message_id()))
        .date_now()
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(mail.text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(mail.html.clone()),
                ),
        )
        .map_err(|e| MailError::Permanent(Box::new(e)))
}

/// Writes `<outbox_dir>/<event id>.eml`, through a temporary file and a rename so that a reader
/// never sees half a mail. Writing the same event again replaces its file: no duplicate.
pub struct FileMailer {
    dir: PathBuf,
}

impl Mailer for FileMailer {
    fn send<'a>(
        &'a self,
        mail: &'a Mail,
        message: Message,
    ) -> BoxFuture<'a, Result<(), MailError>> {
        let dir = self.dir.clone();
        let id = mail.event_id;
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || {
                let tmp = dir.join(format!(".{id}.eml.tmp"));
                std::fs::write(&tmp, message.formatted())?;
                std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
            })
            .await
            .map_err(|e| MailError::Transient(Box::new(e)))?;
            written.map_err(|e| MailError::Transient(Box::new(e)))
        })
    }
}

/// SMTP, plain or over TLS (STARTTLS or implicit, `email.smtp_tls`), authenticating when
/// credentials are set. A session (connection, EHLO, TLS, AUTH) serves one mail after another:
/// it goes back to a pool after each mail the server answered (accepted or refused), and is
/// closed after anything else (see `finish`).
pub struct SmtpMailer {
    host: String,
    port: u16,
    /// The EHLO name: this host's name, as lettre's transport says it.
    hello_name: ClientId,
    /// STARTTLS or implicit TLS (as `tls` says), none for plain SMTP.
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    sessions: Arc<SessionPool>,
    timeout: Duration,
    /// Extra hand-overs of a mail the server deferred with a 4xx reply.
    transient_retries: u32,
    tls: SmtpTls,
    server_name: String,
}

impl SmtpMailer {
    /// A mailer for `smtp_host:smtp_port`, keeping up to `email.smtp_pool_size` (else
    /// `max_in_flight`) sessions open. Checks what can be checked before the first mail:
    /// credentials set by halves, an unreadable or empty `smtp_ca_file`, a server name that
    /// is no host name. The password goes into lettre's credentials only (their `Debug`
    /// prints nothing) and into no message.
    pub fn new(settings: &EmailSettings, max_in_flight: usize) -> anyhow::Result<Self> {
        let tls = settings.tls();
        let server_name = settings
            .smtp_tls_server_name
            .clone()
            .unwrap_or_else(|| settings.smtp_host.clone());
        let tls_parameters = match tls {
            SmtpTls::None => {
                if settings.smtp_ca_file.is_some() || settings.smtp_tls_server_name.is_some() {
                    tracing::warn!(
                        "email.smtp_ca_file / email.smtp_tls_server_name are ignored: email.smtp_tls is none"
                    );
                }
                None
            }
            SmtpTls::Starttls | SmtpTls::Implicit => Some(tls_parameters(settings, &server_name)?),
        };
        let credentials = match (&settings.smtp_username, &settings.smtp_password) {
            (Some(user), Some(password)) => {
                if tls == SmtpTls::None {
                    tracing::warn!(
                        "email.smtp_tls is none: the SMTP credentials go over the network in clear"
                    );
                }
                Some(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_owned(),
                ))
            }
            (None, None) => None,
            (Some(_), None) => anyhow::bail!(
                "email.smtp_username is set but email.smtp_password is not (SPINE__EMAIL__SMTP_PASSWORD)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "email.smtp_password is set but email.smtp_username is not (SPINE__EMAIL__SMTP_USERNAME)"
            ),
        };
        let pool_size = settings.smtp_pool_size.unwrap_or(max_in_flight);
        Ok(Self {
            host: settings.smtp_host.clone(),
            port: settings.smtp_port,
            hello_name: ClientId::default(),
            tls_parameters,
            credentials,
            sessions: Arc::new(SessionPool::new(
                pool_size,
                settings.smtp_pool_idle_timeout,
                settings.smtp_timeout,
            )),
            timeout: settings.smtp_timeout,
            transient_retries: settings.smtp_transient_retries,
            tls,
            server_name,
        })
    }

    /// What the operator must look at when `err` comes from our own configuration or the
    /// server's (credentials, TLS), rather than from the network or the mail.
    fn diagnose(&self, err: &lettre::transport::smtp::Error) -> Option<Misconfigured> {
        let misconfigured = |hint: String| Misconfigured {
            hint,
            detail: err.to_string(),
        };
        let mode = self.tls.as_str();
        if let Some(code) = err.status() {
            let hint = match u16::from(code) {
                535 => Some(
                    "SMTP authentication failed (535, credentials rejected): check email.smtp_username / email.smtp_password".to_owned(),
                ),
                534 => Some(format!(
                    "SMTP authentication refused (534, mechanism too weak for this connection): check email.smtp_tls (is {mode}; servers take PLAIN/LOGIN only over TLS)"
                )),
                538 => Some(format!(
                    "SMTP authentication refused (538, encryption required): set email.smtp_tls to starttls or implicit (is {mode})"
                )),
                530 => Some(format!(
                    "the SMTP server refuses this session (530, authentication or TLS required): check email.smtp_username / email.smtp_password and email.smtp_tls (is {mode})"
                )),
                _ => None,
            };
            return hint.map(misconfigured);
        }
        let text = err.to_string();
        if err.is_client() && text.contains("STARTTLS is not supported") {
            return Some(misconfigured(
                "the SMTP server does not offer STARTTLS, which email.smtp_tls = starttls requires: set implicit if the port speaks TLS from the first byte (465), or none for a plain relay on a trusted network".to_owned(),
            ));
        }
        if err.is_client() && text.contains("No compatible authentication mechanism") {
            return Some(misconfigured(format!(
                "the SMTP server offers no AUTH mechanism we speak (PLAIN, LOGIN) on this connection: check email.smtp_tls (is {mode}; most servers offer AUTH only over TLS) and whether the server wants email.smtp_username at all"
            )));
        }
        let tls_error = tls_failure(err);
        if err.is_tls() || tls_error.is_some() {
            return Some(Misconfigured {
                hint: format!(
                    "SMTP TLS handshake with {} failed (email.smtp_tls = {mode}): check email.smtp_ca_file (the CA that signed the server's certificate), email.smtp_tls_server_name (the name the certificate carries) and that the port speaks {}",
                    self.server_name,
                    if self.tls == SmtpTls::Implicit {
                        "TLS from the first byte (465)"
                    } else {
                        "STARTTLS (587)"
                    },
                ),
                // rustls's own words ("invalid peer certificate: UnknownIssuer") without
                // lettre's wrapping of them.
                detail: tls_error.map_or(text, ToString::to_string),
            });
        }
        None
    }
}

/// The TLS parameters: the Mozilla roots built in, plus `smtp_ca_file`'s certificates.
fn tls_parameters(settings: &EmailSettings, server_name: &str) -> anyhow::Result<TlsParameters> {
    rustls::pki_types::ServerName::try_from(server_name).map_err(|_| {
        anyhow::anyhow!(
            "{server_name:?} is no host name or address to check the SMTP server's certificate against (email.smtp_tls_server_name, else email.smtp_host)"
        )
    })?;
    let mut builder = TlsParameters::builder(server_name.to_owned());
    if let Some(path) = &settings.smtp_ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading email.smtp_ca_file {}: {e}", path.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!(
                "email.smtp_ca_file {} holds no PEM certificate",
                path.display()
            );
        }
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("email.smtp_ca_file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("setting up SMTP TLS (email.smtp_tls): {e}"))
}

/// The rustls error inside a connection error, when the handshake failed (lettre reports
/// those as connection errors, like a refused connection). An `io::Error` hides its payload
/// from `source()`, so each one in the chain is opened with `get_ref`.
fn tls_failure<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| tls_failure(inner))
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

/// An SMTP failure whose cause is the configuration or the server's, with what to check.
/// Still an outage: every mail would fail the same way, so the consumer stalls (and its
/// alert fires) until someone fixes it, and no mail is dead-lettered meanwhile.
#[derive(Debug, thiserror::Error)]
#[error("{hint} ({detail})")]
struct Misconfigured {
    /// What failed and which settings to check.
    hint: String,
    /// The failure in lettre's or rustls's words (never the password: lettre's errors hold
    /// the server's answer, not what we sent).
    detail: String,
}

impl Mailer for SmtpMailer {
    fn send<'a>(
        &'a self,
        _mail: &'a Mail,
        message: Message,
    ) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let envelope = message.envelope().clone();
            let formatted = message.formatted();
            let mut retries = 0;
            loop {
                let result = self.send_once(&envelope, &formatted).await;
                match &result {
                    Err(MailError::Transient(err))
                        if retries < self.transient_retries && is_deferred(err.as_ref()) =>
                    {
                        retries += 1;
                        metrics::counter!("emails_deferred_retries_total").increment(1);
                        let pause = Duration::from_millis(rand::random_range(100..=300));
                        tracing::debug!(retries, ?pause, error = %err, "mail deferred by the server; retrying it");
                        tokio::time::sleep(pause).await;
                    }
                    _ => return result,
                }
            }
        })
    }
}

/// Whether a transient failure is the server's 4xx answer to this mail (it took the
/// connection and deferred the mail), as opposed to the server being unreachable, silent or
/// refusing our session.
fn is_deferred(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<lettre::transport::smtp::Error>()
        .and_then(lettre::transport::smtp::Error::status)
        .is_some_and(|code| code.severity == Severity::TransientNegativeCompletion)
}

impl SmtpMailer {
    /// One hand-over of a message, classified.
    async fn send_once(&self, envelope: &Envelope, email: &[u8]) -> Result<(), MailError> {
        {
            // lettre bounds only the TCP connect with its timeout; a server that accepts the
            // connection and then stops answering would hold the send forever. The session
            // in use is dropped with the hand-over, never parked again (see `pool`).
            match tokio::time::timeout(self.timeout, self.hand_over(envelope, email)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => match self.diagnose(&err) {
                    Some(misconfigured) => Err(MailError::Transient(Box::new(misconfigured))),
                    None if is_permanent_for_this_mail(err.status()) => {
                        Err(MailError::Permanent(Box::new(err)))
                    }
                    None => Err(MailError::Transient(Box::new(err))),
                },
                // If it timed out after the data went out, the server may have taken the mail:
                // the retry resends it with the same Message-ID.
                Err(elapsed) => Err(MailError::Transient(
                    format!(
                        "SMTP hand-over timed out after {:?}: {elapsed}",
                        self.timeout
                    )
                    .into(),
                )),
            }
        }
    }

    /// Hands the message over on an idle session if there is one, else on a new one.
    ///
    /// An idle session may have been closed by the server meanwhile (its idle timeout, a
    /// restart, a limit of mails per connection): that shows as a dropped connection, a cut
    /// reply or a `421` (closing), never as anything about the mail, so the mail is handed
    /// over again at once on a new connection rather than failed. If the server dropped the
    /// session only after the data went out, it may have kept the mail: the second hand-over
    /// resends it with the same Message-ID, as the consumer's retry of the failure would.
    async fn hand_over(
        &self,
        envelope: &Envelope,
        email: &[u8],
    ) -> Result<(), lettre::transport::smtp::Error> {
        if let Some(mut session) = self.sessions.take() {
            match transact(&mut session, envelope, email).await {
                Err(err) if session_was_stale(&err) => {
                    tracing::debug!(error = %err, "idle SMTP session gone; handing over on a new one");
                }
                result => return self.finish(session, result).await,
            }
        }
        let mut session = self.connect().await?;
        let result = transact(&mut session, envelope, email).await;
        self.finish(session, result).await
    }

    /// Parks `session` for the next mail after the server accepted this one, or after a reply
    /// refusing it (a 4xx or 5xx other than `421`: the session is still in step, and `RSET`
    /// clears the transaction), as an MTA keeps its session through a deferred recipient.
    /// After anything else (a dropped connection, a garbled reply) it is closed: what the
    /// server will read or answer next is unknown.
    async fn finish(
        &self,
        mut session: AsyncSmtpConnection,
        result: Result<(), lettre::transport::smtp::Error>,
    ) -> Result<(), lettre::transport::smtp::Error> {
        match &result {
            Ok(()) => self.sessions.park(session).await,
            Err(err) if err.status().is_some_and(|code| u16::from(code) != 421) => {
                if session.command(Rset).await.is_ok() {
                    self.sessions.park(session).await;
                }
            }
            Err(_) => {}
        }
        result
    }

    /// A new session: connected (TLS from the first byte with `implicit`), greeted, upgraded
    /// with STARTTLS (required: a server not offering it is an error), authenticated, as
    /// lettre's transport does it.
    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let implicit = match self.tls {
            SmtpTls::Implicit => self.tls_parameters.clone(),
            SmtpTls::None | SmtpTls::Starttls => None,
        };
        let mut session = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello_name,
            implicit,
            None,
        )
        .await?;
        if let (SmtpTls::Starttls, Some(parameters)) = (self.tls, &self.tls_parameters) {
            session
                .starttls(parameters.clone(), &self.hello_name)
                .await?;
        }
        if let Some(credentials) = &self.credentials {
            session.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(session)
    }
}

/// One mail transaction on `session`: MAIL, RCPT, DATA and the data. Unlike lettre's
/// `send`, a refusing reply leaves the session open (lettre says QUIT after any failure), so
/// that a deferred mail does not cost a new connection. Mails or addresses that are not
/// ASCII, which need SMTPUTF8 or 8BITMIME and lettre's checks that the server offers them, go
/// through lettre's `send` (our templates' parts are encoded to ASCII).
async fn transact(
    session: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<(), lettre::transport::smtp::Error> {
    let ascii = |address: &lettre::Address| AsRef::<str>::as_ref(address).is_ascii();
    if !email.is_ascii() || !envelope.from().is_none_or(ascii) || !envelope.to().iter().all(ascii) {
        return session.send(envelope, email).await.map(drop);
    }
    session
        .command(MailFrom::new(envelope.from().cloned(), vec![]))
        .await?;
    for recipient in envelope.to() {
        session
            .command(Rcpt::new(recipient.clone(), vec![]))
            .await?;
    }
    session.command(Data).await?;
    session.message(email).await?;
    Ok(())
}

/// Whether a failure on a reused session says the session was gone rather than anything
/// about the mail: the connection dropped or the reply cut off (no reply code, and not a
/// refusal of lettre's own such as a non-ASCII address to a server without SMTPUTF8), or
/// `421`, the server closing the channel.
fn session_was_stale(err: &lettre::transport::smtp::Error) -> bool {
    match err.status() {
        Some(code) => u16::from(code) == 421,
        None => !err.is_client(),
    }
}

/// Whether an SMTP failure with reply code `status` rejects this mail for good (dead-letter
/// it) rather than saying the server cannot take mail from us now (an outage).
///
/// - No code: the connection was refused, dropped or timed out, TLS or DNS failed, the reply
///   was garbled or cut off, or the client refused to go on (e.g. no common AUTH mechanism):
///   the server, the network or our configuration, never the mail.
/// - 4xx: "try again later" by definition (RFC 5321 §4.2.1).
/// - 53x (530 authentication required, 534/535 credentials rejected, 538 encryption required):
///   permanent replies about *our* session, not the mail; every mail would get them, so they
///   stall the consumer (and its alert fires) instead of dead-lettering every order's mail.
/// - Any other 5xx (550 no such user, 552, 553 bad address, 554 rejected): this mail.
pub fn is_permanent_for_this_mail(status: Option<Code>) -> bool {
    match status {
        Some(code) => {
            code.severity == Severity::PermanentNegativeCompletion
                && code.category != Category::Unspecified3
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use lettre::transport::smtp::response::Detail;

    use super::*;

    fn code(severity: Severity, category: Category, detail: Detail) -> Option<Code> {
        Some(Code::new(severity, category, detail))
    }

    #[test]
    fn a_rejected_recipient_or_message_is_permanent() {
        use Category::{MailSystem, Syntax};
        let permanent = Severity::PermanentNegativeCompletion;
        for status in [
            code(permanent, MailSystem, Detail::Zero),  // 550
            code(permanent, MailSystem, Detail::Three), // 553
            code(permanent, MailSystem, Detail::Four),  // 554
            code(permanent, Syntax, Detail::One),       // 501
        ] {
            assert!(is_permanent_for_this_mail(status), "{status:?}");
        }
    }

    #[test]
    fn connection_failures_4xx_and_authentication_failures_are_not_the_mails_fault() {
        let transient = Severity::TransientNegativeCompletion;
        let permanent = Severity::PermanentNegativeCompletion;
        for status in [
            None,                                                  // refused, timeout, TLS, I/O
            code(transient, Category::MailSystem, Detail::One),    // 451
            code(transient, Category::Connections, Detail::One),   // 421
            code(transient, Category::MailSystem, Detail::Two),    // 452
            code(permanent, Category::Unspecified3, Detail::Five), // 535
            code(permanent, Category::Unspecified3, Detail::Zero), // 530
        ] {
            assert!(!is_permanent_for_this_mail(status), "{status:?}");
        }
    }

    fn smtp_settings(port: u16, timeout: Duration) -> EmailSettings {
        EmailSettings {
            transport: TransportKind::Smtp,
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            smtp_timeout: timeout,
            ..EmailSettings::default()
        }
    }

    fn a_mail() -> (Mail, Message) {
        let mail = crate::templates::order_rejected(&spine_events::orders::OrderRejected::of(
            &spine_events::orders::OrderPlaced::new(
                uuid::Uuid::now_v7(),
                "customer",
                "someone@example.com",
                vec![spine_events::orders::LineItem::new("SKU", 1, 100)],
                "EUR",
            ),
            "test",
        ));
        let from: Mailbox = "Spine <orders@spine.local>".parse().unwrap();
        let message = build_message(&from, &mail).unwrap();
        (mail, message)
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        }; // closed again: connections are refused
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)), 4).unwrap();
        let (mail, message) = a_mail();

        let err = mailer.send(&mail, message).await.unwrap_err();

        assert!(matches!(err, MailError::Transient(_)), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out_as_transient() {
        // Accepts the connection (the kernel does, from the backlog) and never says a word,
        // like a frozen server.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_millis(300)), 4).unwrap();
        let (mail, message) = a_mail();

        let sent = tokio::time::timeout(Duration::from_secs(60), mailer.send(&mail, message))
            .await
            .expect("the SMTP timeout ends the send, not the test's guard");

        let err = sent.unwrap_err();
        assert!(matches!(err, MailError::Transient(_)), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        drop(silent);
    }

    /// How the test server behaves.
    #[derive(Clone, Copy, Default)]
    struct Behaviour {
        /// Answers the end of the first this many mails' data with `451`.
        defer: usize,
        /// Closes the connection, without a word, after each accepted mail (as a server
        /// does to a session idle past its timeout).
        close_after_each_mail: bool,
        /// Holds the reply to the first mail's data this long.
        stall_first_reply: Option<Duration>,
    }

    /// What the test server saw.
    #[derive(Clone, Default)]
    struct Seen {
        /// Data sections received.
        datas: Arc<std::sync::atomic::AtomicUsize>,
        /// Connections accepted.
        connections: Arc<std::sync::atomic::AtomicUsize>,
        /// QUIT commands received.
        quits: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Seen {
        fn datas(&self) -> usize {
            self.datas.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn connections(&self) -> usize {
            self.connections.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn quits(&self) -> usize {
            self.quits.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A minimal SMTP server on a free port. Returns its port and what it saw.
    async fn test_server(behaviour: Behaviour) -> (u16, Seen) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Seen::default();
        let counters = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counters.connections.fetch_add(1, Ordering::SeqCst);
                let counters = counters.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test ESMTP\r\n").await?;
                    let mut in_data = false;
                    while let Some(line) = lines.next_line().await? {
                        let reply: &[u8] = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            let n = counters.datas.fetch_add(1, Ordering::SeqCst);
                            if let (0, Some(stall)) = (n, behaviour.stall_first_reply) {
                                tokio::time::sleep(stall).await;
                            }
                            if n < behaviour.defer {
                                b"451 4.3.0 try again later\r\n"
                            } else if behaviour.close_after_each_mail {
                                write.write_all(b"250 2.0.0 queued\r\n").await?;
                                break;
                            } else {
                                b"250 2.0.0 queued\r\n"
                            }
                        } else {
                            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                            match verb.as_str() {
                                "EHLO" | "HELO" => b"250 test\r\n",
                                "DATA" => {
                                    in_data = true;
                                    b"354 go ahead\r\n"
                                }
                                "QUIT" => {
                                    counters.quits.fetch_add(1, Ordering::SeqCst);
                                    write.write_all(b"221 bye\r\n").await?;
                                    break;
                                }
                                _ => b"250 ok\r\n",
                            }
                        };
                        write.write_all(reply).await?;
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
        });
        (port, seen)
    }

    /// A server that answers the end of the first `defer` mails' data with `451` and takes
    /// the rest.
    async fn deferring_server(defer: usize) -> (u16, Seen) {
        test_server(Behaviour {
            defer,
            ..Behaviour::default()
        })
        .await
    }

    #[tokio::test]
    async fn a_mail_the_server_defers_is_handed_over_again_in_place() {
        let (port, seen) = deferring_server(2).await;
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)), 4).unwrap();
        let (mail, message) = a_mail();

        mailer
            .send(&mail, message)
            .await
            .expect("taken on the third try");

        assert_eq!(seen.datas(), 3);
    }

    #[tokio::test]
    async fn a_mail_deferred_past_the_retries_is_transient() {
        let (port, seen) = deferring_server(usize::MAX).await;
        let settings = EmailSettings {
            smtp_transient_retries: 2,
            ..smtp_settings(port, Duration::from_secs(5))
        };
        let mailer = SmtpMailer::new(&settings, 4).unwrap();
        let (mail, message) = a_mail();

        let err = mailer.send(&mail, message).await.unwrap_err();

        assert!(matches!(err, MailError::Transient(_)), "{err}");
        assert!(err.to_string().contains("451"), "{err}");
        assert_eq!(seen.datas(), 3, "the first try and two retries");
    }

    /// Sends `count` mails one after the other.
    async fn send_in_turn(mailer: &SmtpMailer, count: usize) -> Result<(), MailError> {
        for _ in 0..count {
            let (mail, message) = a_mail();
            mailer.send(&mail, message).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn mails_one_after_the_other_share_one_session() {
        let (port, seen) = test_server(Behaviour::default()).await;
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)), 4).unwrap();

        send_in_turn(&mailer, 3).await.expect("all taken");

        assert_eq!(seen.datas(), 3);
        assert_eq!(seen.connections(), 1, "one session for the three mails");
    }

    #[tokio::test]
    async fn a_pool_of_size_zero_connects_once_per_mail() {
        let (port, seen) = test_server(Behaviour::default()).await;
        let settings = EmailSettings {
            smtp_pool_size: Some(0),
            ..smtp_settings(port, Duration::from_secs(5))
        };
        let mailer = SmtpMailer::new(&settings, 4).unwrap();

        send_in_turn(&mailer, 3).await.expect("all taken");

        assert_eq!(seen.datas(), 3);
        assert_eq!(seen.connections(), 3);
    }

    #[tokio::test]
    async fn a_session_the_server_closed_while_idle_costs_no_mail() {
        let (port, seen) = test_server(Behaviour {
            close_after_each_mail: true,
            ..Behaviour::default()
        })
        .await;
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)), 4).unwrap();

        send_in_turn(&mailer, 3)
            .await
            .expect("each mail goes out on a new connection, none fails");

        assert_eq!(seen.datas(), 3);
        assert_eq!(seen.connections(), 3);
    }

    #[tokio::test]
    async fn a_session_whose_hand_over_timed_out_is_not_used_again() {
        // The first mail's reply comes after the timeout: had its session gone back to the
        // pool, the next mail would read that late 250 as the answer to its own MAIL FROM,
        // and every reply after it one step off.
        let (port, seen) = test_server(Behaviour {
            stall_first_reply: Some(Duration::from_millis(1500)),
            defer: 0,
            close_after_each_mail: false,
        })
        .await;
        let settings = EmailSettings {
            smtp_transient_retries: 0,
            ..smtp_settings(port, Duration::from_millis(500))
        };
        let mailer = SmtpMailer::new(&settings, 4).unwrap();
        let (mail, message) = a_mail();
        let err = mailer.send(&mail, message).await.unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");

        send_in_turn(&mailer, 2)
            .await
            .expect("taken on a new session");

        assert_eq!(seen.datas(), 3);
        assert_eq!(
            seen.connections(),
            2,
            "the timed-out session closed, the next two mails on a new one"
        );
    }

    #[tokio::test]
    async fn a_deferred_mail_keeps_its_session_for_the_retry_and_the_next_mail() {
        let (port, seen) = deferring_server(1).await;
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)), 4).unwrap();

        send_in_turn(&mailer, 2).await.expect("taken");

        assert_eq!(seen.datas(), 3, "451, then the retry, then the second mail");
        assert_eq!(seen.connections(), 1);
    }

    #[tokio::test]
    async fn a_session_idle_past_the_idle_timeout_is_closed_with_quit() {
        let (port, seen) = test_server(Behaviour::default()).await;
        let settings = EmailSettings {
            smtp_pool_idle_timeout: Duration::from_millis(200),
            ..smtp_settings(port, Duration::from_secs(5))
        };
        let mailer = SmtpMailer::new(&settings, 4).unwrap();
        send_in_turn(&mailer, 1).await.expect("taken");

        // The sweeper closes it with no mail going on; polled, not timed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.quits() == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen.quits(), 1, "the idle session said goodbye");

        send_in_turn(&mailer, 1)
            .await
            .expect("taken on a new session");
        assert_eq!(seen.connections(), 2);
    }
}
