//! The [`Event`] trait every typed fact implements, and small helpers for building facts.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// A fact one service publishes and others consume, readable and writable as one schema version.
///
/// Implementors are the typed structs in [`crate::orders`], [`crate::inventory`] and
/// [`crate::email`]. `NAME` and `VERSION` pick the catalog entry used by [`crate::encode`] to
/// write and by [`crate::decode`] to read (resolving from whichever version wrote the bytes).
pub trait Event: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The event's name, e.g. `"OrderPlaced"`; also the schema file's name.
    const NAME: &'static str;
    /// The schema version this type reads and writes.
    const VERSION: u32;
    /// The topic the producing service publishes it on, e.g. `"orders.events"`.
    const TOPIC: &'static str;
    /// Unique id of this fact; consumers deduplicate on it.
    fn event_id(&self) -> Uuid;
    /// The order this fact is about: the Kafka key, so facts about one order stay in order.
    fn aggregate_id(&self) -> Uuid;
    /// When the fact happened, in milliseconds since the Unix epoch.
    fn occurred_at_millis(&self) -> i64;
}

/// A fresh event id: a UUID v7, so ids sort roughly by creation time.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

/// The current time in milliseconds since the Unix epoch, as `occurred_at` wants it.
pub fn now_millis() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Implements [`Event`] for a struct with `event_id`, `order_id` and `occurred_at` fields.
macro_rules! impl_event {
    ($ty:ty, $name:literal, $version:literal, $topic:literal) => {
        impl $crate::Event for $ty {
            const NAME: &'static str = $name;
            const VERSION: u32 = $version;
            const TOPIC: &'static str = $topic;
            fn event_id(&self) -> ::uuid::Uuid {
                self.event_id
            }
            fn aggregate_id(&self) -> ::uuid::Uuid {
                self.order_id
            }
            fn occurred_at_millis(&self) -> i64 {
                self.occurred_at
            }
        }
    };
}
pub(crate) use impl_event;

/// Serde adapter writing a [`Uuid`] as its hyphenated string, as Avro's `uuid` logical type on
/// `string` wants.
///
/// `Uuid`'s own impl picks bytes or a string from the format's `is_human_readable`, which
/// apache-avro makes a process-wide setting; this adapter doesn't depend on it. Services
/// defining facts of their own use it too: `#[serde(with = "spine_events::event::uuid_string")]`.
pub mod uuid_string {
    use std::fmt;

    use serde::{Deserializer, Serializer, de};
    use uuid::Uuid;

    /// Writes `id` as its lowercase hyphenated string.
    pub fn serialize<S: Serializer>(id: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }

    /// Reads a UUID from its string (or the 16 bytes an Avro reader may hand over).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        deserializer.deserialize_str(UuidVisitor)
    }

    struct UuidVisitor;

    impl de::Visitor<'_> for UuidVisitor {
        type Value = Uuid;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a UUID string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
            Uuid::parse_str(v).map_err(E::custom)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Uuid, E> {
            Uuid::from_slice(v).map_err(E::custom)
        }
    }
}
