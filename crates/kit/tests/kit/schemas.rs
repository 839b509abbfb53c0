//! The Confluent framing in the kit: startup (`schemas::init`) registers the catalog and names
//! the setting when it cannot, and the runner resolves unknown schema ids before a handler,
//! treating a registry outage as an outage (stall, retry, never the DLQ) and an id the
//! registry does not have as poison.
//!
//! The learned ids and the registry client are process-wide; nextest runs each test in a
//! process of its own.

use std::time::Duration;

use spine_events::codec::{CONFLUENT_MAGIC, HEADER_LEN};
use spine_events::orders::{LineItem, OrderPlaced};
use spine_events::{Event, Framing, catalog};
use spine_kit::kafka::consumer::Record;
use spine_kit::kafka::headers::dlq;
use spine_kit::schemas;
use spine_kit::settings::{RegistrySettings, SchemaSettings};
use spine_kit::testing::registry::TestRegistry;

use crate::support::*;

fn placed() -> OrderPlaced {
    OrderPlaced::new(
        uuid::Uuid::now_v7(),
        "customer-1",
        "ada@example.com",
        vec![LineItem::new("SKU-1", 1, 100)],
        "EUR",
    )
}

/// `event` in Confluent framing with schema id `id`, built by hand: this process has not
/// learned any id, as a consumer that never wrote the event has not.
fn confluent_bytes(event: &OrderPlaced, id: u32) -> Vec<u8> {
    let single = spine_events::encode(event).unwrap();
    let mut bytes = vec![CONFLUENT_MAGIC];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&single[HEADER_LEN..]);
    bytes
}

fn registry_settings(registry: &TestRegistry) -> RegistrySettings {
    RegistrySettings {
        url: Some(registry.url()),
        request_timeout: Duration::from_secs(2),
        ..RegistrySettings::default()
    }
}

fn subject_of_placed() -> String {
    format!("{}-{}", OrderPlaced::TOPIC, "spine.orders.OrderPlaced")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_while_resolving_an_id_stalls_the_group_and_never_dead_letters() {
    let registry = TestRegistry::start().await;
    let entry = catalog()
        .get(OrderPlaced::NAME, OrderPlaced::VERSION)
        .unwrap();
    let id = registry
        .register(&subject_of_placed(), entry.json())
        .unwrap()
        .id;
    schemas::connect(&registry_settings(&registry)).unwrap();
    registry.set_down(true);

    let fx = Fixture::new(settings()).await;
    let event = placed();
    fx.send("order-1", &confluent_bytes(&event, id), "e-1")
        .await;
    let handled = log();
    let running = fx.spawn(handler(handled.clone(), |handled, r: Record| async move {
        let placed: OrderPlaced = r.decode()?;
        handled.lock().unwrap().push(placed.order_id);
        Ok(())
    }));

    let asked = eventually(Duration::from_secs(30), || {
        registry.requests("GET /schemas/ids/{id}") >= 3
    })
    .await;
    assert!(
        asked,
        "the runner keeps asking the registry while it is down"
    );
    assert!(
        handled.lock().unwrap().is_empty(),
        "nothing decoded without its schema"
    );
    assert!(
        fx.read(&fx.dlq, 1, Duration::from_secs(2)).is_empty(),
        "a registry outage is not the record's fault: nothing dead-lettered"
    );

    registry.set_down(false);
    let done = eventually(Duration::from_secs(30), || {
        handled.lock().unwrap().len() == 1
    })
    .await;
    running.stop().await.unwrap();
    assert!(done, "handled once the registry is back");
    assert_eq!(*handled.lock().unwrap(), vec![event.order_id]);
    assert!(fx.read(&fx.dlq, 1, Duration::from_secs(2)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_the_registry_does_not_have_is_poison_with_the_id_in_the_reason() {
    let registry = TestRegistry::start().await;
    schemas::connect(&registry_settings(&registry)).unwrap();
    let fx = Fixture::new(settings()).await;
    fx.send("order-2", &confluent_bytes(&placed(), 4242), "e-2")
        .await;
    let handled = log();
    let running = fx.spawn(handler(handled.clone(), |handled, r: Record| async move {
        let placed: OrderPlaced = r.decode()?;
        handled.lock().unwrap().push(placed.order_id);
        Ok(())
    }));
    let letters = fx.read(&fx.dlq, 1, Duration::from_secs(30));
    running.stop().await.unwrap();

    assert_eq!(letters.len(), 1);
    let h = &letters[0].headers;
    assert_eq!(h.get_str(dlq::REASON), Some("poison"));
    let error = h.get_str(dlq::ERROR).unwrap();
    assert!(error.contains("schema id 4242"), "{error}");
    assert!(handled.lock().unwrap().is_empty());
    assert!(
        registry.requests("GET /schemas/ids/{id}") >= 1,
        "the registry was asked"
    );
}

#[tokio::test]
async fn init_registers_the_whole_catalog_and_encoding_then_writes_the_registry_ids() {
    let registry = TestRegistry::start().await;
    let settings = SchemaSettings {
        framing: Framing::Confluent,
        registry: registry_settings(&registry),
        ..SchemaSettings::default()
    };
    schemas::init(&settings).await.unwrap();

    for entry in catalog().entries() {
        let subject = format!("{}-{}", entry.topic(), entry.full_name());
        let versions = registry.versions(&subject);
        assert!(
            versions.iter().any(|v| v.version == entry.version()),
            "{} registered as version {} of {subject}: {versions:?}",
            entry.file(),
            entry.version()
        );
    }
    let bytes = spine_events::encode(&placed()).unwrap();
    let latest = registry.versions(&subject_of_placed()).pop().unwrap();
    assert_eq!(bytes[0], CONFLUENT_MAGIC);
    assert_eq!(&bytes[1..5], &latest.id.to_be_bytes());

    // A second service starting against the same registry gets the same ids, no new versions.
    let before = registry.versions(&subject_of_placed()).len();
    schemas::init(&settings).await.unwrap();
    assert_eq!(registry.versions(&subject_of_placed()).len(), before);
}

#[tokio::test]
async fn startup_errors_name_the_setting() {
    let confluent_without_url = SchemaSettings {
        framing: Framing::Confluent,
        ..SchemaSettings::default()
    };
    let err = format!(
        "{:#}",
        schemas::init(&confluent_without_url).await.unwrap_err()
    );
    assert!(err.contains("schemas.registry.url"), "{err}");

    let registry = TestRegistry::start().await;
    let url = registry.url();
    registry.shutdown().await;
    let down = SchemaSettings {
        registry: RegistrySettings {
            url: Some(url),
            ..RegistrySettings::default()
        },
        ..SchemaSettings::default()
    };
    let err = format!("{:#}", schemas::init(&down).await.unwrap_err());
    assert!(
        err.contains("schemas.registry.url") && err.contains("unavailable"),
        "{err}"
    );

    let empty = TestRegistry::start().await;
    let lookup_only = SchemaSettings {
        registry: RegistrySettings {
            auto_register: false,
            ..registry_settings(&empty)
        },
        ..SchemaSettings::default()
    };
    let err = format!("{:#}", schemas::init(&lookup_only).await.unwrap_err());
    assert!(
        err.contains("is not registered") && err.contains("auto_register"),
        "{err}"
    );
    assert!(
        empty.versions(&subject_of_placed()).is_empty(),
        "look-up only registers nothing"
    );
}

#[tokio::test]
async fn with_basic_auth_wrong_credentials_are_an_outage_that_names_the_settings() {
    let registry = TestRegistry::with_basic_auth("spine", "right").await;
    let settings = |password: &str| SchemaSettings {
        registry: RegistrySettings {
            username: Some("spine".into()),
            password: Some(password.to_owned().into()),
            ..registry_settings(&registry)
        },
        ..SchemaSettings::default()
    };
    let err = format!("{:#}", schemas::init(&settings("wrong")).await.unwrap_err());
    assert!(err.contains("schemas.registry.password"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password is never printed: {err}"
    );
    schemas::init(&settings("right")).await.unwrap();
    assert!(!registry.versions(&subject_of_placed()).is_empty());
}
