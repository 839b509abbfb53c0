//! The mailer port and its two transports: `.eml` files (embedded default) and plain SMTP.
//! Errors are classified here, once: a transient failure may succeed later without anything
//! changing in the mail (the server or the disk is unavailable: a refused, dropped or timed-out
//! connection, an SMTP 4xx, a 53x authentication failure, a full disk); a permanent one never
//! will (an SMTP 5xx about this mail, such as an unknown recipient; an invalid address).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::response::{Category, Code, Severity};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::settings::{EmailSettings, TransportKind};
use crate::templates::Mail;

/// Why a mail was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail server (or the disk) cannot take mail now; nothing is wrong with the mail.
    /// The consumer treats it as an outage: retried without limit, never dead-lettered.
    #[error("transient mail failure: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// It never will (rejected recipient, invalid address): dead-letter.
    #[error("permanent mail failure: {0}")]
    Permanent(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Something that hands a built message over for delivery. Returns once the message is
/// accepted (by the SMTP server, or written to disk).
pub trait Mailer: Send + Sync + 'static {
    /// Hands `message` over; `mail` names it (the file transport uses the event id).
    fn send<'a>(&'a self, mail: &'a Mail, message: Message)
    -> BoxFuture<'a, Result<(), MailError>>;
}

/// Builds the mailer that `settings.transport` names.
pub fn from_settings(settings: &EmailSettings) -> anyhow::Result<Arc<dyn Mailer>> {
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
        TransportKind::Smtp => Arc::new(SmtpMailer::new(settings)),
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

/// Plain SMTP without TLS, for a local relay or a sidecar; one connection per mail.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
}

impl SmtpMailer {
    /// A mailer for `smtp_host:smtp_port`, authenticating when credentials are set.
    pub fn new(settings: &EmailSettings) -> Self {
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.smtp_host.as_str())
                .port(settings.smtp_port)
                .timeout(Some(settings.smtp_timeout));
        if let (Some(user), Some(password)) = (&settings.smtp_username, &settings.smtp_password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Self {
            transport: builder.build(),
            timeout: settings.smtp_timeout,
        }
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(
        &'a self,
        _mail: &'a Mail,
        message: Message,
    ) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            // lettre's tokio transport bounds only the TCP connect with its timeout; a server
            // that accepts the connection and then stops answering would hold the send forever.
            match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) if is_permanent_for_this_mail(err.status()) => {
                    Err(MailError::Permanent(Box::new(err)))
                }
                Ok(Err(err)) => Err(MailError::Transient(Box::new(err))),
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
        })
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
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_secs(5)));
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
        let mailer = SmtpMailer::new(&smtp_settings(port, Duration::from_millis(300)));
        let (mail, message) = a_mail();

        let sent = tokio::time::timeout(Duration::from_secs(60), mailer.send(&mail, message))
            .await
            .expect("the SMTP timeout ends the send, not the test's guard");

        let err = sent.unwrap_err();
        assert!(matches!(err, MailError::Transient(_)), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        drop(silent);
    }
}
