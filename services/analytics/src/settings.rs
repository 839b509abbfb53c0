//! The analytics service's settings: the kit's sections plus its own.

use serde::Deserialize;
use spine_kit::settings::{DatabaseSettings, KafkaSettings, SchemaSettings, TelemetrySettings};

/// Everything the service reads at startup (see `spine_kit::config` for the layers).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    pub http: HttpSettings,
    /// Kafka.
    pub kafka: KafkaSettings,
    /// Logs, traces, metrics.
    pub telemetry: TelemetrySettings,
    /// The analytics database (`sqlite://analytics.db?mode=rwc` by default).
    pub database: DatabaseSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
    /// The service's own settings.
    pub analytics: AnalyticsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            database: DatabaseSettings {
                url: "sqlite://analytics.db?mode=rwc".to_owned().into(),
                ..DatabaseSettings::default()
            },
            schemas: SchemaSettings::default(),
            analytics: AnalyticsSettings::default(),
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
            port: 8083,
        }
    }
}

/// The analytics service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// Consumer group (and inbox name).
    pub consumer_group: String,
    /// How many recent minutes `/stats` lists in `orders_per_minute`.
    pub minutes_shown: u32,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            consumer_group: "analytics".into(),
            minutes_shown: 60,
        }
    }
}
