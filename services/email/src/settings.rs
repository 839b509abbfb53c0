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
    /// Plain SMTP (no TLS) to `email.smtp_host:email.smtp_port`, e.g. a local relay.
    Smtp,
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
    /// SMTP server port (`smtp` transport).
    pub smtp_port: u16,
    /// SMTP user name; with `smtp_password`, the service authenticates (PLAIN/LOGIN).
    pub smtp_username: Option<String>,
    /// SMTP password.
    pub smtp_password: Option<SecretString>,
    /// Timeout of one mail's whole SMTP hand-over: connecting and every command, the data
    /// included. A server that accepts the connection and then stops answering fails the
    /// attempt after this long (an outage: retried without limit). If it runs out after the
    /// data went out, the server may have kept the mail: the retry resends it with the same
    /// Message-ID.
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
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
            smtp_username: None,
            smtp_password: None,
            smtp_timeout: Duration::from_secs(10),
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
    fn an_unknown_transport_is_an_error_naming_the_key() {
        let err = load(&[("SPINE__EMAIL__TRANSPORT", "carrier-pigeon")]).unwrap_err();
        assert!(err.to_string().contains("email.transport"), "{err}");
    }
}
