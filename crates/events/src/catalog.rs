//! The schema catalog: every `schemas/*.avsc` file, embedded at compile time and parsed once.
//!
//! `build.rs` embeds the files, so adding a schema file is all it takes to add an entry. Each
//! [`CatalogEntry`] knows its event name and version (from the file name), its topic (from the
//! record's namespace: `spine.<service>` publishes on `<service>.events`), the parsed schema, its
//! Parsing Canonical Form and the CRC-64-AVRO fingerprint that single-object encoding writes.

use std::collections::HashMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;

use crate::error::SchemaError;
pub use crate::file_name::parse_file_name;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The schema files embedded at build time, as `(file name, JSON)`.
pub(crate) fn embedded_files() -> impl ExactSizeIterator<Item = (&'static str, &'static str)> {
    embedded::EMBEDDED
        .iter()
        .map(|(file, _, _, json)| (*file, *json))
}

/// One version of one event's schema.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    file: String,
    name: String,
    version: u32,
    full_name: String,
    topic: String,
    json: String,
    schema: Schema,
    canonical_form: String,
    fingerprint: u64,
}

impl CatalogEntry {
    /// Parses the schema file named `file` (e.g. `OrderPlaced.v1.avsc`) holding `json`.
    ///
    /// Checks what every event schema must satisfy on its own: the name pattern, a record
    /// named like the file, and a `spine.<service>` namespace.
    pub fn parse(file: &str, json: &str) -> Result<Self, SchemaError> {
        let (name, version) = parse_file_name(file).ok_or_else(|| SchemaError::FileName {
            file: file.to_owned(),
        })?;
        let schema = Schema::parse_str(json).map_err(|e| SchemaError::Parse {
            reason: e.to_string(),
        })?;
        let Schema::Record(record) = &schema else {
            return Err(SchemaError::NotARecord {
                found: schema_kind(&schema),
            });
        };
        if record.name.name() != name {
            return Err(SchemaError::NameMismatch {
                expected: name.to_owned(),
                found: record.name.name().to_owned(),
            });
        }
        let namespace = record.name.namespace();
        let topic =
            namespace
                .and_then(topic_for_namespace)
                .ok_or_else(|| SchemaError::Namespace {
                    namespace: namespace.map(str::to_owned),
                })?;
        let full_name = record.name.fullname(None);
        let canonical_form = schema.canonical_form();
        let fingerprint = fingerprint_of(&schema);
        Ok(Self {
            file: file.to_owned(),
            name: name.to_owned(),
            version,
            full_name,
            topic,
            json: json.to_owned(),
            schema,
            canonical_form,
            fingerprint,
        })
    }

    /// The file the schema came from, e.g. `OrderPlaced.v2.avsc`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The schema file's JSON as written, docs and defaults included: what a schema registry
    /// is given (the Parsing Canonical Form drops defaults, which compatibility needs).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The event's name, e.g. `OrderPlaced`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema version, counting from 1.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The record's full name, e.g. `spine.orders.OrderPlaced`; the same for every version.
    pub fn full_name(&self) -> &str {
        &self.full_name
    }

    /// The topic the event is published on, e.g. `orders.events`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema's Parsing Canonical Form, as apache-avro computes it.
    pub fn canonical_form(&self) -> &str {
        &self.canonical_form
    }

    /// The CRC-64-AVRO (Rabin) fingerprint of [`Self::canonical_form`].
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The 10-byte single-object header: `C3 01` and the fingerprint, little-endian.
    pub fn header(&self) -> [u8; 10] {
        let mut header = [0; 10];
        header[..2].copy_from_slice(&crate::codec::MAGIC);
        header[2..].copy_from_slice(&self.fingerprint.to_le_bytes());
        header
    }
}

/// Every embedded schema, indexed for the codec.
#[derive(Debug)]
pub struct Catalog {
    /// Sorted by (name, version).
    entries: Vec<CatalogEntry>,
    by_fingerprint: HashMap<u64, usize>,
}

impl Catalog {
    /// Builds a catalog from parsed entries; fails if two share a fingerprint (for instance a
    /// new version that only changed docs, which readers could not tell apart).
    pub(crate) fn new(mut entries: Vec<CatalogEntry>) -> Result<Self, String> {
        entries.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
        let mut by_fingerprint = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if let Some(other) = by_fingerprint.insert(entry.fingerprint(), index) {
                return Err(format!(
                    "{} and {} have the same canonical form (fingerprint {:#018x})",
                    entries[other].file(),
                    entry.file(),
                    entry.fingerprint()
                ));
            }
        }
        Ok(Self {
            entries,
            by_fingerprint,
        })
    }

    /// Every entry, sorted by event name, then version.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry whose schema has this fingerprint.
    pub fn by_fingerprint(&self, fingerprint: u64) -> Option<&CatalogEntry> {
        self.by_fingerprint
            .get(&fingerprint)
            .map(|&i| &self.entries[i])
    }

    /// The entry for one version of one event.
    pub fn get(&self, name: &str, version: u32) -> Option<&CatalogEntry> {
        self.entries
            .binary_search_by(|e| (e.name(), e.version()).cmp(&(name, version)))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The newest version of an event.
    pub fn latest(&self, name: &str) -> Option<&CatalogEntry> {
        let end = self.entries.partition_point(|e| e.name() <= name);
        self.entries[..end].last().filter(|e| e.name() == name)
    }
}

/// The most one decode may allocate. A corrupt length prefix would otherwise make apache-avro
/// reserve up to its 512 MiB default before failing; no Kafka record of ours comes near this.
pub const MAX_DECODE_ALLOCATION: usize = 16 * 1024 * 1024;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    // Process-wide and first-call-wins; every decode goes through the catalog, so this runs
    // before any untrusted bytes are read.
    apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION);
    let entries = embedded_files()
        .map(|(file, json)| {
            // Schemas are compile-time data and the catalog test parses each one, so a bad file
            // fails the build's tests long before it could reach this panic in production.
            CatalogEntry::parse(file, json).unwrap_or_else(|e| panic!("schemas/{file}: {e}"))
        })
        .collect();
    Catalog::new(entries).unwrap_or_else(|e| panic!("schemas/: {e}"))
});

/// The catalog of every schema under `schemas/`, parsed on first use.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// The topic for a namespace: `spine.orders` publishes on `orders.events`.
pub fn topic_for_namespace(namespace: &str) -> Option<String> {
    let service = namespace.strip_prefix("spine.")?;
    let valid = service.starts_with(|c: char| c.is_ascii_lowercase())
        && service
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then(|| format!("{service}.events"))
}

/// The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as a number.
///
/// apache-avro returns the 8 bytes little-endian, the order single-object encoding writes.
pub fn fingerprint_of(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let bytes: [u8; 8] = bytes.try_into().expect("a Rabin fingerprint is 8 bytes");
    u64::from_le_bytes(bytes)
}

fn schema_kind(schema: &Schema) -> String {
    let kind: apache_avro::schema::SchemaKind = schema.into();
    format!("{kind:?}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_PLACED_V1: &str = include_str!("../../../schemas/OrderPlaced.v1.avsc");

    #[test]
    fn every_embedded_schema_file_parses_into_an_entry() {
        // This is what catches a bad file in schemas/, before the catalog static would panic.
        assert!(embedded_files().len() > 0);
        for (file, json) in embedded_files() {
            if let Err(error) = CatalogEntry::parse(file, json) {
                panic!("schemas/{file}: {error}");
            }
        }
    }

    #[test]
    fn a_bad_schema_file_is_rejected_with_a_reason() {
        let parse = |file: &str, json: &str| CatalogEntry::parse(file, json).unwrap_err();

        assert!(matches!(
            parse("OrderPlaced.v1.avsc", "{ not json"),
            SchemaError::Parse { .. }
        ));
        assert!(matches!(
            parse(
                "OrderPlaced.v1.avsc",
                r#"{"type": "record", "name": "X", "fields": [{"name": "a"}]}"#
            ),
            SchemaError::Parse { .. }
        ));
        assert_eq!(
            parse("OrderPlaced.v1.avsc", r#""string""#),
            SchemaError::NotARecord {
                found: "string".into()
            }
        );
        assert_eq!(
            parse("OrderShipped.v1.avsc", ORDER_PLACED_V1),
            SchemaError::NameMismatch {
                expected: "OrderShipped".into(),
                found: "OrderPlaced".into()
            }
        );
        let no_namespace = ORDER_PLACED_V1.replace(r#""namespace": "spine.orders","#, "");
        assert_eq!(
            parse("OrderPlaced.v1.avsc", &no_namespace),
            SchemaError::Namespace { namespace: None }
        );
        for file in [
            "OrderPlaced.avsc",
            "OrderPlaced.v0.avsc",
            "OrderPlaced.v01.avsc",
            "orderPlaced.v1.avsc",
        ] {
            assert_eq!(
                parse(file, ORDER_PLACED_V1),
                SchemaError::FileName { file: file.into() }
            );
        }
    }

    #[test]
    fn file_names_split_into_event_name_and_version() {
        assert_eq!(
            parse_file_name("OrderPlaced.v2.avsc"),
            Some(("OrderPlaced", 2))
        );
        assert_eq!(
            parse_file_name("EmailSent.v10.avsc"),
            Some(("EmailSent", 10))
        );
        assert_eq!(parse_file_name("OrderPlaced.v2.json"), None);
        assert_eq!(parse_file_name("Order.Placed.v2.avsc"), None);
    }

    #[test]
    fn the_namespace_names_the_topic() {
        assert_eq!(
            topic_for_namespace("spine.orders").as_deref(),
            Some("orders.events")
        );
        assert_eq!(topic_for_namespace("spine.Orders"), None);
        assert_eq!(topic_for_namespace("acme.orders"), None);
        assert_eq!(topic_for_namespace("spine.orders.v1"), None);
    }

    #[test]
    fn entries_are_found_by_name_version_and_fingerprint() {
        let catalog = catalog();
        let v2 = catalog
            .latest("OrderPlaced")
            .expect("OrderPlaced is in the catalog");
        assert_eq!(
            (v2.name(), v2.version(), v2.topic()),
            ("OrderPlaced", 2, "orders.events")
        );
        let v1 = catalog
            .get("OrderPlaced", 1)
            .expect("OrderPlaced v1 is in the catalog");
        assert_eq!(v1.full_name(), "spine.orders.OrderPlaced");
        assert!(std::ptr::eq(
            catalog.by_fingerprint(v1.fingerprint()).unwrap(),
            v1
        ));
        assert!(catalog.get("OrderPlaced", 3).is_none());
        assert!(catalog.latest("OrderPlace").is_none());
        assert!(catalog.latest("Nothing").is_none());
    }

    #[test]
    fn two_versions_with_one_canonical_form_cannot_share_a_catalog() {
        let v1 = CatalogEntry::parse("OrderPlaced.v1.avsc", ORDER_PLACED_V1).unwrap();
        let docs_only = ORDER_PLACED_V1.replace("A customer placed an order.", "Docs changed.");
        let v2 = CatalogEntry::parse("OrderPlaced.v2.avsc", &docs_only).unwrap();
        let error = Catalog::new(vec![v1, v2]).unwrap_err();
        assert!(error.contains("same canonical form"), "{error}");
    }
}
