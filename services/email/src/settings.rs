//! The email service's settings: the kit's sections plus its own.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use spine_kit::settings::{
    DatabaseSettings, KafkaSettings, OutboxSettings, SchemaSettings, TelemetrySettings,
};

/// Everything the service reads at startup (see `spine_kit::config` for the layers).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener (health and metrics only).
    pub http: HttpSettings,
    /// Kafka.
    pub kafka: KafkaSettings,
    /// Logs, traces, metrics.
    pub telemetry: TelemetrySettings,
    /// The email database (`sqlite://email.db?mode=rwc` by default).
    pub database: DatabaseSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
    /// The outbox relay of EmailSent.
    pub outbox: OutboxSettings,
    /// The service's own settings.
    pub email: EmailSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            // Each service owns its database; the embedded default is a file of its own.
            database: DatabaseSettings {
                url: "sqlite://email.db?mode=rwc".to_owned().into(),
                ..DatabaseSettings::default()
            },
            schemas: SchemaSettings::default(),
            outbox: OutboxSettings::default(),
            email: EmailSettings::default(),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8082,
        }
    }
}

/// Where mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Embedded: one `.eml` file per mail in `email.outbox_dir`, named by the event id.
    File,
    /// SMTP to `email.smtp_host:email.smtp_port`, secured as `email.smtp_tls` says.
    Smtp,
}

/// How the SMTP connection is secured (`email.smtp_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP, never encrypted: a local relay, a sidecar or a test sink on a trusted
    /// network. Credentials, when set, go over the wire in clear.
    None,
    /// A plain connection upgraded with STARTTLS before anything else is sent (typically port
    /// 587). Required: a server that does not offer STARTTLS is an error, never a fallback to
    /// plain text.
    Starttls,
    /// TLS from the first byte ("SMTPS", typically port 465).
    Implicit,
}

impl SmtpTls {
    /// The value as written in the settings, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starttls => "starttls",
            Self::Implicit => "implicit",
        }
    }
}

/// The email service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// Consumer group for `orders.events` (its DLQ is `<group>.dlq`).
    pub consumer_group: String,
    /// The `From` mailbox, e.g. `Spine Shop <orders@spine.local>`.
    pub from: String,
    /// `file` (default) or `smtp`.
    pub transport: TransportKind,
    /// Directory of the `file` transport; created if missing.
    pub outbox_dir: PathBuf,
    /// SMTP server host (`smtp` transport).
    pub smtp_host: String,
    /// SMTP server port (`smtp` transport): 25 for a relay, 587 with `starttls`, 465 with
    /// `implicit`.
    pub smtp_port: u16,
    /// How the connection is secured: `none`, `starttls` or `implicit`. Unset: `starttls` when
    /// credentials are set (they never go out in clear unless `none` is asked for), else
    /// `none` (a local relay or sink). See [`EmailSettings::tls`].
    pub smtp_tls: Option<SmtpTls>,
    /// A PEM file of CA certificates trusted, besides the Mozilla roots built into the binary,
    /// to verify the server's certificate (a private or self-made CA). Read at startup.
    pub smtp_ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry; unset: `smtp_host`. For a server reached
    /// by an address or an alias its certificate does not name (a tunnel, a sidecar).
    pub smtp_tls_server_name: Option<String>,
    /// SMTP user name; with `smtp_password`, the service authenticates (PLAIN/LOGIN). Setting
    /// only one of the two is an error at startup. From the environment
    /// (`SPINE__EMAIL__SMTP_USERNAME`) or a Secret, like the password.
    pub smtp_username: Option<String>,
    /// SMTP password (`SPINE__EMAIL__SMTP_PASSWORD`); never logged.
    pub smtp_password: Option<SecretString>,
    /// Timeout of one mail's whole SMTP hand-over: connecting and every command, the data
    /// included. A server that accepts the connection and then stops answering fails the
    /// attempt after this long (an outage: retried without limit). If it runs out after the
    /// data went out, the server may have kept the mail: the retry resends it with the same
    /// Message-ID.
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
    /// `smtp`: how many more times one mail is handed over, after 100-300 ms, when the server
    /// answered it with a 4xx reply ("try again later": greylisting, a throttled or busy
    /// mailbox), before the consumer treats the failure as an outage (which stalls the whole
    /// group). A provider that defers one mail in ten must not stall every other mail; one
    /// that defers them all still stalls the group after these few tries. Connection failures
    /// and timeouts are not retried here: they are outages at once. 0 turns it off.
    pub smtp_transient_retries: u32,
    /// `smtp`: the most SMTP sessions (connection, EHLO, TLS, AUTH done) kept open between
    /// mails, so that a mail costs its MAIL, RCPT and DATA only. Unset: one per mail the
    /// consumer runs at once (`kafka.consumer.max_in_flight`), so that a steady stream never
    /// opens a new connection. 0 opens a connection per mail and closes it after (for a server
    /// that limits sessions or mails per connection badly); sessions beyond the pool's size
    /// are closed after their mail. A session closed by the server while idle costs no mail:
    /// the mail goes out on a new connection.
    pub smtp_pool_size: Option<usize>,
    /// `smtp`: how long a session may stay idle in the pool before it is closed (with a
    /// QUIT). Below the server's own idle timeout (RFC 5321 asks servers for 5 minutes; some
    /// providers cut sooner), so that we leave first.
    #[serde(with = "humantime_serde")]
    pub smtp_pool_idle_timeout: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            consumer_group: "email".into(),
            from: "Spine Shop <orders@spine.local>".into(),
            transport: TransportKind::File,
            outbox_dir: PathBuf::from("emails"),
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            smtp_tls: None,
            smtp_ca_file: None,
            smtp_tls_server_name: None,
            smtp_username: None,
            smtp_password: None,
            smtp_timeout: Duration::from_secs(10),
            smtp_transient_retries: 3,
            smtp_pool_size: None,
            smtp_pool_idle_timeout: Duration::from_secs(30),
        }
    }
}

impl EmailSettings {
    /// The TLS mode in force: `smtp_tls` when set, else `starttls` with credentials and `none`
    /// without.
    pub fn tls(&self) -> SmtpTls {
        match self.smtp_tls {
            Some(tls) => tls,
            None if self.smtp_username.is_some() || self.smtp_password.is_some() => {
                SmtpTls::Starttls
            }
            None => SmtpTls::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use spine_kit::config::{Sources, load_from};

    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, spine_kit::config::ConfigError> {
        load_from(&Sources {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Sources::default()
        })
    }

    #[test]
    fn the_defaults_write_files_to_an_embedded_outbox() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.email.transport, TransportKind::File);
        assert_eq!(settings.email.outbox_dir, PathBuf::from("emails"));
        assert_eq!(settings.email.consumer_group, "email");
        assert_eq!(settings.http.port, 8082);
        assert_eq!(
            settings.database.url.expose_secret(),
            "sqlite://email.db?mode=rwc"
        );
    }

    #[test]
    fn smtp_is_configured_from_the_environment() {
        let settings = load(&[
            ("SPINE__EMAIL__TRANSPORT", "smtp"),
            ("SPINE__EMAIL__SMTP_HOST", "mail.internal"),
            ("SPINE__EMAIL__SMTP_PORT", "1025"),
            ("SPINE__EMAIL__SMTP_TIMEOUT", "3s"),
            ("SPINE__EMAIL__SMTP_USERNAME", "spine"),
            ("SPINE__EMAIL__SMTP_PASSWORD", "hunter2"),
        ])
        .unwrap();
        let email = settings.email;
        assert_eq!(email.transport, TransportKind::Smtp);
        assert_eq!(email.smtp_host, "mail.internal");
        assert_eq!(email.smtp_port, 1025);
        assert_eq!(email.smtp_timeout, Duration::from_secs(3));
        assert_eq!(email.smtp_username.as_deref(), Some("spine"));
        assert_eq!(
            email.smtp_password.as_ref().map(|p| p.expose_secret()),
            Some("hunter2")
        );
        assert!(
            !format!("{email:?}").contains("hunter2"),
            "the password is not logged"
        );
    }

    #[test]
    fn tls_is_configured_from_the_environment() {
        let settings = load(&[
            ("SPINE__EMAIL__SMTP_TLS", "implicit"),
            ("SPINE__EMAIL__SMTP_CA_FILE", "/etc/spine/smtp-ca.pem"),
            ("SPINE__EMAIL__SMTP_TLS_SERVER_NAME", "smtp.example.com"),
        ])
        .unwrap();
        let email = settings.email;
        assert_eq!(email.tls(), SmtpTls::Implicit);
        assert_eq!(
            email.smtp_ca_file,
            Some(PathBuf::from("/etc/spine/smtp-ca.pem"))
        );
        assert_eq!(
            email.smtp_tls_server_name.as_deref(),
            Some("smtp.example.com")
        );
    }

    #[test]
    fn tls_defaults_to_starttls_with_credentials_and_to_none_without() {
        assert_eq!(load(&[]).unwrap().email.tls(), SmtpTls::None);
        let with_credentials = load(&[
            ("SPINE__EMAIL__SMTP_USERNAME", "spine"),
            ("SPINE__EMAIL__SMTP_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert_eq!(with_credentials.email.tls(), SmtpTls::Starttls);
        let plain_on_purpose = load(&[
            ("SPINE__EMAIL__SMTP_TLS", "none"),
            ("SPINE__EMAIL__SMTP_USERNAME", "spine"),
            ("SPINE__EMAIL__SMTP_PASSWORD", "hunter2"),
        ])
        .unwrap();
        assert_eq!(plain_on_purpose.email.tls(), SmtpTls::None);
    }

    #[test]
    fn an_unknown_tls_mode_is_an_error_naming_the_key() {
        let err = load(&[("SPINE__EMAIL__SMTP_TLS", "ssl")]).unwrap_err();
        assert!(err.to_string().contains("email.smtp_tls"), "{err}");
    }

    #[test]
    fn an_unknown_transport_is_an_error_naming_the_key() {
        let err = load(&[("SPINE__EMAIL__TRANSPORT", "carrier-pigeon")]).unwrap_err();
        assert!(err.to_string().contains("email.transport"), "{err}");
    }
}
