//! The services the deployment files must agree with: one entry per `services/<name>` crate.
//!
//! This is the one list to keep up to date when a service is added; `scripts/new-service`
//! adds the services it generates (an entry above the marker in [`services`], and the crate
//! as a dev-dependency in `tests/Cargo.toml`). The entry is what the files can't say
//! themselves: how to load the service's real `Settings` (its crate's type) and which topics
//! its consumer group reads. [`every_service_in_the_workspace_is_checked`] fails, naming the
//! directory, when a service under `services/` has no entry here.

use std::collections::BTreeSet;

use spine_kit::config::{Sources, load_from};
use spine_kit::settings::{KafkaSettings, LogFormat};

use crate::repo;

/// What the test needs of one service's loaded settings.
#[derive(Debug)]
pub struct Loaded {
    /// `http.port`.
    pub port: u16,
    /// `http.host`.
    pub host: String,
    /// Its consumer group, if it consumes.
    pub group: Option<String>,
    /// `kafka.*`.
    pub kafka: KafkaSettings,
    /// `database.url`.
    pub database_url: String,
    /// `telemetry.log_format`.
    pub log_format: LogFormat,
}

/// One service as the code defines it.
pub struct Service {
    /// Its directory under `services/`, its binary, and its compose service and Deployment.
    pub name: &'static str,
    /// Topics its consumer group reads (its DLQ is `<group><dlq_suffix>`).
    pub consumes: Vec<&'static str>,
    /// Scaled by KEDA on its group's lag (every consumer-only service); otherwise by an HPA on
    /// CPU (orders, whose load is its HTTP API).
    pub scales_on_lag: bool,
    /// Loads its settings from the given sources, as the service does at startup.
    pub load: fn(&Sources) -> Result<Loaded, String>,
}

const ORDERS: &str = spine_events::orders::TOPIC;
const INVENTORY: &str = spine_events::inventory::TOPIC;

/// Loads `$krate::settings::Settings`, whose own section `$own` has the consumer group.
macro_rules! loader {
    ($krate:ident, $own:ident) => {
        |sources: &Sources| {
            let s: $krate::settings::Settings = load_from(sources).map_err(|e| e.to_string())?;
            Ok(Loaded {
                port: s.http.port,
                host: s.http.host.clone(),
                group: Some(s.$own.consumer_group.clone()),
                kafka: s.kafka.clone(),
                database_url: secrecy::ExposeSecret::expose_secret(&s.database.url).to_owned(),
                log_format: s.telemetry.log_format,
            })
        }
    };
}

/// Every topic that has facts, as analytics subscribes to them (it counts every fact): the
/// catalog's topics, so a generated service's `<name>.events` is among them.
fn catalog_topics() -> Vec<&'static str> {
    let topics: BTreeSet<&'static str> = spine_events::catalog()
        .entries()
        .iter()
        .map(|entry| entry.topic())
        .collect();
    topics.into_iter().collect()
}

/// Every service in the workspace.
pub fn services() -> Vec<Service> {
    vec![
        Service {
            name: "orders",
            consumes: vec![INVENTORY],
            scales_on_lag: false,
            load: loader!(spine_orders, orders),
        },
        Service {
            name: "inventory",
            consumes: vec![ORDERS],
            scales_on_lag: true,
            load: loader!(spine_inventory, inventory),
        },
        Service {
            name: "email",
            consumes: vec![ORDERS],
            scales_on_lag: true,
            load: loader!(spine_email, email),
        },
        Service {
            name: "analytics",
            consumes: catalog_topics(),
            scales_on_lag: true,
            load: loader!(spine_analytics, analytics),
        },
        // scripts/new-service adds the services it generates above this line.
    ]
}

/// The service crates in the workspace: the directories under `services/` with a Cargo.toml.
fn workspace_services() -> BTreeSet<String> {
    let dir = repo().join("services");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|path| {
            path.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_service_in_the_workspace_is_checked() {
    let listed: BTreeSet<String> = services().iter().map(|s| s.name.to_owned()).collect();
    let present = workspace_services();
    let unchecked: Vec<String> = present
        .difference(&listed)
        .map(|name| format!("services/{name}"))
        .collect();
    assert!(
        unchecked.is_empty(),
        "{unchecked:?} are not checked against the deployment files: add each to \
         services() in tests/deploy/services.rs and as a dev-dependency in tests/Cargo.toml \
         (scripts/new-service does both for the services it generates)"
    );
    let gone: Vec<&String> = listed.difference(&present).collect();
    assert!(
        gone.is_empty(),
        "tests/deploy/services.rs lists {gone:?}, which have no services/<name>/Cargo.toml"
    );
}

/// The consumer settings are the kit's in every service, so the steady drain rate is one
/// variable for any of them (`SPINE__KAFKA__CONSUMER__MAX_RATE=500`), and off by default.
#[test]
fn every_service_takes_its_drain_rate_from_the_environment() {
    for service in services() {
        let defaults = (service.load)(&Sources::default())
            .unwrap_or_else(|err| panic!("{}: {err}", service.name));
        assert_eq!(defaults.kafka.consumer.max_rate, 0.0, "{}", service.name);
        let sources = Sources {
            env: vec![("SPINE__KAFKA__CONSUMER__MAX_RATE".into(), "500".into())],
            ..Sources::default()
        };
        let limited =
            (service.load)(&sources).unwrap_or_else(|err| panic!("{}: {err}", service.name));
        assert_eq!(limited.kafka.consumer.max_rate, 500.0, "{}", service.name);
    }
}
