//! Avro encoding of [`Event`]s in two framings, with schema resolution on read.
//!
//! - **Single-object encoding** (the default, no registry): `C3 01`, the 8-byte little-endian
//!   CRC-64-AVRO fingerprint of the writer's schema, then the Avro binary datum. The fingerprint
//!   names an entry of the embedded [`catalog`], so every reader must ship a schema before any
//!   writer uses it.
//! - **Confluent framing** (what Kafka Connect, ksqlDB, Flink and Confluent's serializers
//!   expect): a `00` magic byte, the 4-byte big-endian id a schema registry gave the writer's
//!   schema, then the datum. The id ↔ catalog entry pairs are learned at run time
//!   ([`learn_schema_id`]): the kit registers or looks up every catalog schema at startup and
//!   resolves ids it has not seen before a handler decodes.
//!
//! Which framing [`encode`] writes is set per process and topic ([`set_framing`]); [`decode`]
//! and [`peek`] read both whatever the writer chose, so a topic can migrate from one to the
//! other with its consumers running. Both the framing and the learned ids are process-wide,
//! like the catalog itself: a process talks to one registry.

use std::collections::HashMap;
use std::io::{self, Read};
use std::ptr;
use std::sync::{LazyLock, PoisonError, RwLock};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::catalog::{CatalogEntry, catalog};
use crate::error::{DecodeError, EncodeError};
use crate::event::Event;

/// The two bytes every single-object encoded message starts with.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: [`MAGIC`] and the 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;

/// The byte every Confluent-framed message starts with.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// Length of the Confluent header: [`CONFLUENT_MAGIC`] and the 4-byte big-endian schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// Content type for a header on messages in single-object encoding.
pub const CONTENT_TYPE: &str = "application/vnd.apache.avro+binary; encoding=single-object";

/// Content type for a header on messages in Confluent framing.
pub const CONFLUENT_CONTENT_TYPE: &str = "application/vnd.apache.avro+binary; encoding=confluent";

/// How a message's value is framed around the Avro datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `C3 01` + CRC-64-AVRO fingerprint: the embedded catalog, no registry.
    #[default]
    SingleObject,
    /// `00` + 4-byte schema registry id: Confluent's wire format.
    Confluent,
}

impl Framing {
    /// The content type header value for messages in this framing.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::SingleObject => CONTENT_TYPE,
            Self::Confluent => CONFLUENT_CONTENT_TYPE,
        }
    }

    /// The framing `bytes` are in, from their first byte; `None` for neither.
    pub fn of(bytes: &[u8]) -> Option<Self> {
        match bytes.first()? {
            0xC3 => Some(Self::SingleObject),
            &CONFLUENT_MAGIC => Some(Self::Confluent),
            _ => None,
        }
    }
}

/// What [`encode`] writes, per topic; and the registry ids learned so far.
#[derive(Default)]
struct Wire {
    framing: Framing,
    topic_framing: HashMap<String, Framing>,
    /// Registry id → catalog entry, for reading (several ids may name one schema).
    entries: HashMap<u32, &'static CatalogEntry>,
    /// Catalog fingerprint → the id this process writes for it.
    ids: HashMap<u64, u32>,
}

static WIRE: LazyLock<RwLock<Wire>> = LazyLock::new(RwLock::default);

fn wire() -> std::sync::RwLockReadGuard<'static, Wire> {
    // The lock guards plain maps that are never left half-written: a poisoned lock is fine.
    WIRE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the framing [`encode`] writes: `default` for every topic, except those in `by_topic`.
/// Call it once at startup, before anything is encoded.
pub fn set_framing(default: Framing, by_topic: impl IntoIterator<Item = (String, Framing)>) {
    let mut wire = WIRE.write().unwrap_or_else(PoisonError::into_inner);
    wire.framing = default;
    wire.topic_framing = by_topic.into_iter().collect();
}

/// The framing [`encode`] writes on `topic`.
pub fn framing_for(topic: &str) -> Framing {
    let wire = wire();
    wire.topic_framing
        .get(topic)
        .copied()
        .unwrap_or(wire.framing)
}

/// Records that the schema registry's `id` names `entry`'s schema. The first id learned for an
/// entry is the one [`encode`] writes.
pub fn learn_schema_id(id: u32, entry: &'static CatalogEntry) {
    let mut wire = WIRE.write().unwrap_or_else(PoisonError::into_inner);
    wire.entries.insert(id, entry);
    wire.ids.entry(entry.fingerprint()).or_insert(id);
}

/// The registry id [`encode`] writes for `entry`, once learned.
pub fn schema_id_of(entry: &CatalogEntry) -> Option<u32> {
    wire().ids.get(&entry.fingerprint()).copied()
}

/// The schema id of Confluent-framed `bytes` when this process has not learned it yet: what
/// the kit resolves with the registry before a handler decodes. `None` for anything else.
pub fn unknown_schema_id(bytes: &[u8]) -> Option<u32> {
    let id = confluent_id(bytes).ok()?;
    (!wire().entries.contains_key(&id)).then_some(id)
}

/// Encodes `event` with the catalog schema of `E::NAME` version `E::VERSION`, in the framing
/// set for its topic ([`set_framing`]; single-object unless told otherwise).
pub fn encode<E: Event>(event: &E) -> Result<Vec<u8>, EncodeError> {
    let entry = catalog()
        .get(E::NAME, E::VERSION)
        .ok_or(EncodeError::NotInCatalog {
            name: E::NAME,
            version: E::VERSION,
        })?;
    let serialize_error = |e: apache_avro::Error| EncodeError::Serialize {
        name: E::NAME,
        version: E::VERSION,
        reason: e.to_string(),
    };
    let mut slot = None;
    let writer = &prepared(entry, &mut slot).map_err(serialize_error)?.writer;
    let mut bytes = Vec::with_capacity(256);
    match framing_for(entry.topic()) {
        Framing::SingleObject => bytes.extend_from_slice(&entry.header()),
        Framing::Confluent => {
            let id = schema_id_of(entry).ok_or_else(|| EncodeError::NoSchemaId {
                name: E::NAME,
                version: E::VERSION,
                topic: entry.topic().to_owned(),
            })?;
            bytes.push(CONFLUENT_MAGIC);
            bytes.extend_from_slice(&id.to_be_bytes());
        }
    }
    writer
        .write_ser(&mut bytes, event)
        .map_err(serialize_error)?;
    Ok(bytes)
}

/// Decodes bytes written by [`encode`] (either framing) with any catalog version of `E::NAME`,
/// resolving the writer's schema to `E`'s (new fields get their defaults, removed ones are
/// dropped).
///
/// Never panics, whatever the input; every error is poison ([`DecodeError::is_poison`]).
pub fn decode<E: Event>(bytes: &[u8]) -> Result<E, DecodeError> {
    let reader_entry = catalog()
        .get(E::NAME, E::VERSION)
        .ok_or(DecodeError::UnknownReader {
            name: E::NAME,
            version: E::VERSION,
        })?;
    let writer_entry = peek(bytes)?;
    if writer_entry.name() != E::NAME {
        return Err(DecodeError::WrongEvent {
            expected: E::NAME,
            found: writer_entry.name(),
            version: writer_entry.version(),
        });
    }
    let written = read_datum(writer_entry, datum(bytes)?)?;
    let incompatible = |reason: String| DecodeError::Incompatible {
        event: E::NAME,
        writer_version: writer_entry.version(),
        reader_version: E::VERSION,
        reason,
    };
    // Resolution is what GenericDatumReader::read_value does after decoding when given a
    // reader schema; doing it as a second step tells malformed bytes from incompatible schemas.
    let value = if ptr::eq(writer_entry, reader_entry) {
        written
    } else {
        written
            .resolve(reader_entry.schema())
            .map_err(|e| incompatible(e.to_string()))?
    };
    apache_avro::from_value(&value).map_err(|e| incompatible(e.to_string()))
}

/// Which event and version wrote `bytes`, read from the header alone (either framing).
///
/// For dispatch on a topic that carries several events: match on [`CatalogEntry::name`], then
/// [`decode`] into that event's type.
pub fn peek(bytes: &[u8]) -> Result<&'static CatalogEntry, DecodeError> {
    if Framing::of(bytes) == Some(Framing::Confluent) {
        let id = confluent_id(bytes)?;
        return wire()
            .entries
            .get(&id)
            .copied()
            .ok_or_else(|| DecodeError::UnknownSchemaId {
                id,
                reason: "the schema registry does not have it, it names a schema outside this build's catalog, or no schemas.registry.url is set".to_owned(),
            });
    }
    let fingerprint = fingerprint(bytes)?;
    catalog()
        .by_fingerprint(fingerprint)
        .ok_or(DecodeError::UnknownFingerprint { fingerprint })
}

/// The Avro datum after the header of either framing.
pub fn datum(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let len = match Framing::of(bytes) {
        Some(Framing::Confluent) => CONFLUENT_HEADER_LEN,
        _ => HEADER_LEN,
    };
    if bytes.len() < len {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    if len == HEADER_LEN {
        // Checks the magic too.
        fingerprint(bytes)?;
    }
    Ok(&bytes[len..])
}

/// The schema registry id from a Confluent header.
pub fn confluent_id(bytes: &[u8]) -> Result<u32, DecodeError> {
    let Some(header) = bytes.first_chunk::<CONFLUENT_HEADER_LEN>() else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    if header[0] != CONFLUENT_MAGIC {
        return Err(DecodeError::BadMagic {
            found: [header[0], header[1]],
        });
    }
    let id: [u8; 4] = header[1..].try_into().expect("the header is 1 + 4 bytes");
    Ok(u32::from_be_bytes(id))
}

/// The writer schema's fingerprint from a single-object header.
pub fn fingerprint(bytes: &[u8]) -> Result<u64, DecodeError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::TooShort { len: bytes.len() });
    };
    let (magic, fingerprint) = header.split_at(2);
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            found: [magic[0], magic[1]],
        });
    }
    let fingerprint: [u8; 8] = fingerprint.try_into().expect("the header is 2 + 8 bytes");
    Ok(u64::from_le_bytes(fingerprint))
}

/// A catalog schema's datum writer, reader and resolved names, built once per schema:
/// resolving a schema's names (which building a writer or reader and validating a value each
/// did per call) cost about as much as decoding the datum itself.
struct Prepared {
    entry: &'static CatalogEntry,
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    names: ResolvedSchema<'static>,
}

impl Prepared {
    fn new(entry: &'static CatalogEntry) -> apache_avro::AvroResult<Self> {
        Ok(Self {
            entry,
            writer: GenericDatumWriter::builder(entry.schema()).build()?,
            reader: GenericDatumReader::builder(entry.schema()).build()?,
            names: ResolvedSchema::try_from(entry.schema())?,
        })
    }
}

/// Every catalog schema, prepared on first use, by fingerprint.
static PREPARED: LazyLock<HashMap<u64, Prepared>> = LazyLock::new(|| {
    catalog()
        .entries()
        .iter()
        .filter_map(|entry| Some((entry.fingerprint(), Prepared::new(entry).ok()?)))
        .collect()
});

/// `entry` prepared: from [`PREPARED`] when it is the process catalog's, else built for this
/// call into `slot`.
fn prepared<'a>(
    entry: &'static CatalogEntry,
    slot: &'a mut Option<Prepared>,
) -> apache_avro::AvroResult<&'a Prepared> {
    if let Some(prepared) = PREPARED
        .get(&entry.fingerprint())
        .filter(|prepared| ptr::eq(prepared.entry, entry))
    {
        return Ok(prepared);
    }
    Ok(slot.insert(Prepared::new(entry)?))
}

/// Decodes the datum with the writer's schema alone, insisting it is whole and exact.
fn read_datum(writer: &'static CatalogEntry, datum: &[u8]) -> Result<Value, DecodeError> {
    let malformed = |reason: String| DecodeError::Malformed {
        event: writer.name(),
        version: writer.version(),
        reason,
    };
    let mut slot = None;
    let prepared = prepared(writer, &mut slot).map_err(|e| malformed(e.to_string()))?;
    let mut input = Datum {
        rest: datum,
        ran_out: false,
    };
    let value = prepared
        .reader
        .read_value(&mut input)
        .map_err(|e| malformed(e.to_string()))?;
    // apache-avro 0.22 turns a string or union cut short by the end of input into null rather
    // than an error, so truncated bytes could decode "successfully" with fields missing.
    if input.ran_out {
        return Err(malformed("the datum is truncated".to_owned()));
    }
    if !input.rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes left over after the datum",
            input.rest.len()
        )));
    }
    // What `Value::validate` checks, with the names resolved once.
    if !value.validate_with_names(writer.schema(), prepared.names.get_names()) {
        return Err(malformed(
            "the decoded value does not match the writer's schema".to_owned(),
        ));
    }
    Ok(value)
}

/// The datum being decoded; remembers whether the decoder asked for bytes past its end, which
/// a whole datum never does.
struct Datum<'a> {
    rest: &'a [u8],
    ran_out: bool,
}

impl Read for Datum<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.ran_out = true;
        }
        self.rest.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::OrderPlaced;

    #[test]
    fn every_catalog_schema_is_prepared_once() {
        // A schema that failed to prepare would be rebuilt on every call, silently.
        assert_eq!(PREPARED.len(), catalog().entries().len());
        for entry in catalog().entries() {
            let mut slot = None;
            let prepared = prepared(entry, &mut slot).unwrap();
            assert!(ptr::eq(prepared, &PREPARED[&entry.fingerprint()]));
            assert!(slot.is_none(), "{} was built again", entry.file());
        }
    }

    #[test]
    fn an_entry_outside_the_catalog_is_prepared_for_the_call() {
        let ours = catalog()
            .get(OrderPlaced::NAME, OrderPlaced::VERSION)
            .unwrap();
        let copy: &'static CatalogEntry = Box::leak(Box::new(
            CatalogEntry::parse(ours.file(), ours.json()).unwrap(),
        ));
        let mut slot = None;
        let prepared = prepared(copy, &mut slot).unwrap();
        assert!(ptr::eq(prepared.entry, copy));
        assert!(slot.is_some());
    }
}
