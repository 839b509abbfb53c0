//! One error enum per boundary: loading a schema, encoding an event, decoding bytes.
//!
//! Reasons from apache-avro are kept as text: every one of these errors is terminal (a bug, or
//! a poison message bound for a dead-letter topic), so callers log or forward them, never match
//! on avro's internals.

/// Why a schema file cannot become a catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The file is not named `<EventName>.v<N>.avsc`.
    #[error("file name {file:?} is not <EventName>.v<N>.avsc (e.g. OrderPlaced.v1.avsc)")]
    FileName {
        /// The offending file name.
        file: String,
    },
    /// apache-avro rejected the JSON.
    #[error("not a valid Avro schema: {reason}")]
    Parse {
        /// apache-avro's message.
        reason: String,
    },
    /// Every event is a record; this file holds some other type.
    #[error("an event schema must be a record, found {found}")]
    NotARecord {
        /// The kind of schema found instead.
        found: String,
    },
    /// The record's name differs from the event name in the file name.
    #[error("the record is named {found:?} but the file name says {expected:?}")]
    NameMismatch {
        /// The event name taken from the file name.
        expected: String,
        /// The record's (short) name.
        found: String,
    },
    /// The namespace does not say which service produces the event, so it has no topic.
    #[error(
        "namespace {namespace:?} must be spine.<service> (lowercase), which puts the event on <service>.events"
    )]
    Namespace {
        /// The record's namespace, if any.
        namespace: Option<String>,
    },
}

/// Why an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The event type names a schema version that is not under `schemas/`.
    #[error("{name} v{version} is not in the schema catalog")]
    NotInCatalog {
        /// The event's name.
        name: &'static str,
        /// The event type's schema version.
        version: u32,
    },
    /// The value does not fit the schema (a Rust type out of step with its `.avsc`).
    #[error("{name} v{version} does not fit its schema: {reason}")]
    Serialize {
        /// The event's name.
        name: &'static str,
        /// The schema version written.
        version: u32,
        /// apache-avro's message.
        reason: String,
    },
    /// The topic is written in Confluent framing but this schema has no registry id here: the
    /// service did not register or look it up at startup (`spine_kit::schemas::init`).
    #[error(
        "{name} v{version} has no schema registry id in this process (topic {topic} uses Confluent framing)"
    )]
    NoSchemaId {
        /// The event's name.
        name: &'static str,
        /// The schema version written.
        version: u32,
        /// Its topic.
        topic: String,
    },
}

/// Why bytes could not be decoded into the requested event.
///
/// Every variant is permanent for the given bytes: see [`DecodeError::is_poison`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header of their framing (10 for single-object, 5 for Confluent).
    #[error("{len} bytes is too short for an Avro header (single-object 10 bytes, Confluent 5)")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The bytes start with neither the single-object marker `C3 01` nor the Confluent magic
    /// byte `00`.
    #[error("not Avro single-object encoding (c3 01) nor Confluent framing (00): starts with {:02x} {:02x}", found[0], found[1])]
    BadMagic {
        /// The two bytes found instead.
        found: [u8; 2],
    },
    /// No schema in the catalog has the writer's fingerprint: a schema this build doesn't know.
    #[error("no schema in the catalog has fingerprint {fingerprint:#018x}")]
    UnknownFingerprint {
        /// The CRC-64-AVRO fingerprint from the header (read little-endian).
        fingerprint: u64,
    },
    /// The bytes hold a different event than the one asked for.
    #[error("expected {expected} but the bytes hold {found} v{version}")]
    WrongEvent {
        /// The event asked for.
        expected: &'static str,
        /// The event the bytes hold.
        found: &'static str,
        /// The version of `found` that wrote the bytes.
        version: u32,
    },
    /// The datum does not decode under the writer's schema (truncated, corrupt, trailing bytes).
    #[error("malformed {event} v{version} datum: {reason}")]
    Malformed {
        /// The event named by the header.
        event: &'static str,
        /// The writer's schema version.
        version: u32,
        /// What went wrong.
        reason: String,
    },
    /// The writer's data cannot be resolved to the reader's schema or type.
    #[error("{event} v{writer_version} data cannot be read as v{reader_version}: {reason}")]
    Incompatible {
        /// The event.
        event: &'static str,
        /// The writer's schema version.
        writer_version: u32,
        /// The reader's schema version.
        reader_version: u32,
        /// apache-avro's message.
        reason: String,
    },
    /// Confluent framing whose schema id this process has not resolved: the registry does not
    /// know the id, or it names a schema that is not in this build's catalog. (The kit's
    /// consumer resolves unknown ids with the registry before decoding; a registry that is
    /// down is an outage there, never this error.)
    #[error("schema id {id} is not known here: {reason}")]
    UnknownSchemaId {
        /// The 4-byte big-endian id after the `00` magic byte.
        id: u32,
        /// Why it is not known.
        reason: String,
    },
    /// The reader type names a schema version that is not in the catalog (a bug in the caller).
    #[error("{name} v{version} is not in the schema catalog, so nothing can be read as it")]
    UnknownReader {
        /// The reader type's event name.
        name: &'static str,
        /// The reader type's schema version.
        version: u32,
    },
}

impl DecodeError {
    /// True for every variant: retrying the same bytes can never succeed, so a consumer should
    /// dead-letter the message at once (the runner's `Poison` class) rather than retry it.
    pub fn is_poison(&self) -> bool {
        match self {
            Self::TooShort { .. }
            | Self::BadMagic { .. }
            | Self::UnknownFingerprint { .. }
            | Self::WrongEvent { .. }
            | Self::Malformed { .. }
            | Self::Incompatible { .. }
            | Self::UnknownSchemaId { .. }
            | Self::UnknownReader { .. } => true,
        }
    }
}
