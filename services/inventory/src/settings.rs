//! The inventory service's settings: the kit's sections plus its own.

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
    /// The inventory database (`sqlite://inventory.db?mode=rwc` by default).
    pub database: DatabaseSettings,
    /// Avro framing on the wire and the schema registry.
    pub schemas: SchemaSettings,
    /// The outbox relay.
    pub outbox: OutboxSettings,
    /// The service's own settings.
    pub inventory: InventorySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            // Each service owns its database; the embedded default is a file of its own.
            database: DatabaseSettings {
                url: "sqlite://inventory.db?mode=rwc".to_owned().into(),
                ..DatabaseSettings::default()
            },
            schemas: SchemaSettings::default(),
            outbox: OutboxSettings::default(),
            inventory: InventorySettings::default(),
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
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8081,
            body_limit: 16 * 1024,
        }
    }
}

/// The inventory service's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventorySettings {
    /// Consumer group (and inbox name) for orders' facts.
    pub consumer_group: String,
    /// The topic orders' facts are read from. Only tests (which need a topic of their own so
    /// that they don't act as inventory for other suites' orders) or a prefixed shared cluster
    /// change it.
    pub orders_topic: String,
    /// Stock written at startup for SKUs the database does not hold yet; a SKU already present
    /// keeps its stock, so a restart never undoes reservations or `PUT /stock`. Setting the
    /// list replaces the default one as a whole.
    pub seed: Vec<SeedEntry>,
}

impl Default for InventorySettings {
    fn default() -> Self {
        let seed = |sku: &str, quantity| SeedEntry {
            sku: sku.into(),
            quantity,
        };
        Self {
            consumer_group: "inventory".into(),
            orders_topic: spine_events::orders::TOPIC.into(),
            // SKU-3 runs out after a few orders and SKU-OUT has none, so a demo can be rejected.
            seed: vec![
                seed("SKU-1", 100),
                seed("SKU-2", 100),
                seed("SKU-3", 5),
                seed("SKU-OUT", 0),
            ],
        }
    }
}

/// One SKU's initial stock. A list of entries rather than a map, because settings keys may be
/// case-folded by the loader and SKUs are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    /// The SKU.
    pub sku: String,
    /// Units available, zero or more.
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use spine_kit::config::{Sources, load_from};

    use super::*;

    #[test]
    fn a_seed_in_yaml_replaces_the_default_and_keeps_the_sku_case() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inventory.yaml");
        std::fs::write(
            &file,
            "inventory:\n  seed:\n    - { sku: Widget-9, quantity: 7 }\n",
        )
        .unwrap();
        let settings: Settings = load_from(&Sources {
            file: Some(file),
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(
            settings.inventory.seed,
            [SeedEntry {
                sku: "Widget-9".into(),
                quantity: 7
            }]
        );
        assert_eq!(settings.inventory.consumer_group, "inventory");
        assert_eq!(settings.http.port, 8081);
    }
}
