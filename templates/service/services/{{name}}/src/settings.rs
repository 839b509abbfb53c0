//! The {{name}} service's settings: the kit's sections plus its own (`{{name}}.*`).

use serde::Deserialize;
use spine_kit::settings::{DatabaseSettings, KafkaSettings, OutboxSettings, SchemaSettings, TelemetrySettings};

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
    /// The {{name}} database (`sqlite://{{name}}.db?mode=rwc` by default).
    pub database: DatabaseSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
    /// The outbox relay.
    pub outbox: OutboxSettings,
    /// The service's own settings.
    pub {{name}}: {{Name}}Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            // Each service owns its database; the embedded default is a file of its own.
            database: DatabaseSettings {
                url: "sqlite://{{name}}.db?mode=rwc".to_owned().into(),
                ..DatabaseSettings::default()
            },
            schemas: SchemaSettings::default(),
            outbox: OutboxSettings::default(),
            {{name}}: {{Name}}Settings::default(),
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
            port: {{port}},
        }
    }
}

/// The {{name}} service's own settings.
// TODO(your domain): add the knobs your effect needs here; each one needs a doc comment and a
// default, and `deny_unknown_fields` makes a misspelt key an error that names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct {{Name}}Settings {
    /// Consumer group for orders' facts; also the inbox's name and the DLQ's prefix
    /// (`<group>.dlq`).
    pub consumer_group: String,
    /// The topic orders' facts are read from. Only tests (which need a topic of their own so
    /// that they don't see other suites' orders) or a prefixed shared cluster change it.
    pub orders_topic: String,
}

impl Default for {{Name}}Settings {
    fn default() -> Self {
        Self {
            consumer_group: "{{name}}".into(),
            orders_topic: spine_events::orders::TOPIC.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use spine_kit::config::{Sources, load_from};

    use super::*;

    #[test]
    fn defaults_can_be_overridden_by_spine_env_vars() {
        let defaults = Settings::default();
        assert_eq!(defaults.http.port, {{port}});
        assert_eq!(defaults.{{name}}.consumer_group, "{{name}}");
        assert_eq!(defaults.{{name}}.orders_topic, "orders.events");

        let env = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let settings: Settings = load_from(&Sources {
            env: vec![
                env("SPINE__{{NAME}}__CONSUMER_GROUP", "{{name}}-blue"),
                env("SPINE__HTTP__PORT", "9999"),
            ],
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(settings.{{name}}.consumer_group, "{{name}}-blue");
        assert_eq!(settings.http.port, 9999);
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = load_from::<Settings>(&Sources {
            env: vec![("SPINE__{{NAME}}__CONSUMER_GRUOP".into(), "x".into())],
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("consumer_gruop"), "{err}");
    }
}
