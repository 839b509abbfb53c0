//! The mailer port and its two transports: `.eml` files (embedded default) and plain SMTP.
//! Errors are classified here, once: a transient failure (SMTP 4xx, connection refused, a
//! timeout, a full disk) may succeed later; a permanent one (SMTP 5xx, an invalid address) never
//! will.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::settings::{EmailSettings, TransportKind};
use crate::templates::Mail;

/// Why a mail was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// It may succeed later: retry.
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
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                // A 5xx reply: the server will never take this mail.
                Err(err) if err.is_permanent() => Err(MailError::Permanent(Box::new(err))),
                // A 4xx reply, a refused or dropped connection, a timeout.
                Err(err) => Err(MailError::Transient(Box::new(err))),
            }
        })
    }
}
