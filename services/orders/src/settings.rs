//! The orders service's settings: the kit's sections plus its own.

use serde::Deserialize;
use spine_kit::settings::{
    DatabaseSettings, KafkaSettings, OutboxSettings, SchemaSettings, TelemetrySettings,
};

/// Everything the service reads at startup (see `spine_kit::config` for the layers).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener and API limits.
    pub http: HttpSettings,
    /// Kafka.
    pub kafka: KafkaSettings,
    /// Logs, traces, metrics.
    pub telemetry: TelemetrySettings,
    /// The orders database (`sqlite://orders.db?mode=rwc` by default).
    pub database: DatabaseSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
    /// The outbox relay and load shedding.
    pub outbox: OutboxSettings,
    /// The service's own settings.
    pub orders: OrdersSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            // Each service owns its database; the embedded default is a file of its own.
            database: DatabaseSettings {
                url: "sqlite://orders.db?mode=rwc".to_owned().into(),
                ..DatabaseSettings::default()
            },
            schemas: SchemaSettings::default(),
            outbox: OutboxSettings::default(),
            orders: OrdersSettings::default(),
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
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// `Retry-After` seconds sent with a 503 when the outbox backlog is over its bound.
    pub retry_after_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            body_limit: 64 * 1024,
            retry_after_secs: 5,
        }
    }
}

/// The orders service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrdersSettings {
    /// Consumer group (and inbox name) for inventory's facts.
    pub consumer_group: String,
}

impl Default for OrdersSettings {
    fn default() -> Self {
        Self {
            consumer_group: "orders".into(),
        }
    }
}
