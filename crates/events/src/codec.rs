//! Avro single-object encoding of [`Event`]s, with schema resolution on read.
//!
//! A message is `C3 01`, then the 8-byte little-endian CRC-64-AVRO fingerprint of the writer's
//! schema, then the Avro binary datum. No registry is involved: the fingerprint names an entry
//! of the embedded [`catalog`], so every reader must ship a schema before any writer uses it.

use std::io::{self, Read};
use std::ptr;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::catalog::{CatalogEntry, catalog};
use crate::error::{DecodeError, EncodeError};
use crate::event::Event;

/// The two bytes every single-object encoded message starts with.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: [`MAGIC`] and the 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;

/// Content type for a header on messages written by [`encode`].
pub const CONTENT_TYPE: &str = "application/vnd.apache.avro+binary; encoding=single-object";

/// Encodes `event` with the catalog schema of `E::NAME` version `E::VERSION`.
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
    let writer = GenericDatumWriter::builder(entry.schema())
        .build()
        .map_err(serialize_error)?;
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(&entry.header());
    writer
        .write_ser(&mut bytes, event)
        .map_err(serialize_error)?;
    Ok(bytes)
}

/// Decodes bytes written by [`encode`] with any catalog version of `E::NAME`, resolving the
/// writer's schema to `E`'s (new fields get their defaults, removed ones are dropped).
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
    let written = read_datum(writer_entry, &bytes[HEADER_LEN..])?;
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

/// Which event and version wrote `bytes`, read from the header alone.
///
/// For dispatch on a topic that carries several events: match on [`CatalogEntry::name`], then
/// [`decode`] into that event's type.
pub fn peek(bytes: &[u8]) -> Result<&'static CatalogEntry, DecodeError> {
    let fingerprint = fingerprint(bytes)?;
    catalog()
        .by_fingerprint(fingerprint)
        .ok_or(DecodeError::UnknownFingerprint { fingerprint })
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

/// Decodes the datum with the writer's schema alone, insisting it is whole and exact.
fn read_datum(writer: &'static CatalogEntry, datum: &[u8]) -> Result<Value, DecodeError> {
    let malformed = |reason: String| DecodeError::Malformed {
        event: writer.name(),
        version: writer.version(),
        reason,
    };
    let reader = GenericDatumReader::builder(writer.schema())
        .build()
        .map_err(|e| malformed(e.to_string()))?;
    let mut input = Datum {
        rest: datum,
        ran_out: false,
    };
    let value = reader
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
    if !value.validate(writer.schema()) {
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
