//! Presenting records: the one-line summary of `list` (text or JSON), and the full view of
//! `show` with every header and the value decoded to JSON through the schema catalog, or a hex
//! dump when it does not decode.

use std::fmt::Write as _;
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use serde_json::{Value, json};

use crate::record::DlqRecord;

/// The marker of a record that failed again after a replay.
pub const PARK_CANDIDATE: &str = "PARKED-CANDIDATE";

/// One line for `list`: position, origin, key, reason, attempts, replays, age, event type,
/// the park mark when it applies, and the error.
pub fn summary_line(record: &DlqRecord, now_ms: i64) -> String {
    let mark = if record.is_park_candidate() {
        format!(" {PARK_CANDIDATE}")
    } else {
        String::new()
    };
    format!(
        "{position} {origin} key={key} reason={reason} attempts={attempts} replays={replays} age={age} {event}{mark} error={error:?}",
        position = record.position,
        origin = origin(record),
        key = record.key_display(),
        reason = record.reason().unwrap_or("-"),
        attempts = record
            .attempts()
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        replays = record.replay_count(),
        age = age(record, now_ms),
        event = record.event_type(),
        error = record.error().unwrap_or("-"),
    )
}

/// The summary as a JSON object (one per line in `list --json`).
pub fn summary_json(record: &DlqRecord, now_ms: i64) -> Value {
    json!({
        "partition": record.position.partition,
        "offset": record.position.offset,
        "original_topic": record.original_topic(),
        "original_partition": record.original_partition(),
        "original_offset": record.original_offset(),
        "consumer_group": record.consumer_group(),
        "key": record.key_str(),
        "reason": record.reason(),
        "attempts": record.attempts(),
        "replay_count": record.replay_count(),
        "park_candidate": record.is_park_candidate(),
        "failed_at_ms": record.failed_at_ms(),
        "age_ms": record.failed_at_ms().map(|at| now_ms.saturating_sub(at)),
        "event_type": record.event_type(),
        "error": record.error(),
    })
}

/// The full view for `show`: position, key, every header, then the value.
pub fn render(record: &DlqRecord, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "position:  {}", record.position);
    let _ = writeln!(out, "origin:    {}", origin(record));
    let _ = writeln!(out, "key:       {}", record.key_display());
    let _ = writeln!(out, "age:       {}", age(record, now_ms));
    if record.is_park_candidate() {
        let _ = writeln!(
            out,
            "status:    {PARK_CANDIDATE} (failed again after {} replay(s); fix the code, or park it)",
            record.replay_count()
        );
    }
    let _ = writeln!(out, "headers:");
    for (name, value) in record.headers.iter() {
        match std::str::from_utf8(value) {
            Ok(text) => {
                let _ = writeln!(out, "  {name}: {text}");
            }
            Err(_) => {
                let _ = writeln!(out, "  {name}: 0x{}", hex(value));
            }
        }
    }
    match decode_json(&record.payload) {
        Ok((event, value)) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            let _ = writeln!(out, "value ({event}):\n{pretty}");
        }
        Err(reason) => {
            let _ = writeln!(
                out,
                "value (undecodable: {reason}), {} bytes:\n{}",
                record.payload.len(),
                hex_dump(&record.payload)
            );
        }
    }
    out
}

/// Decodes a value (single-object encoding, or Confluent framing with an id this process knows)
/// with its writer's schema from the catalog, into JSON. Returns the event type (`OrderPlaced.v2`) with the value, or why it cannot.
pub fn decode_json(payload: &[u8]) -> Result<(String, Value), String> {
    let entry = spine_events::peek(payload).map_err(|e| e.to_string())?;
    let reader = GenericDatumReader::builder(entry.schema())
        .build()
        .map_err(|e| e.to_string())?;
    let mut datum = spine_events::codec::datum(payload).map_err(|e| e.to_string())?;
    let value = reader.read_value(&mut datum).map_err(|e| e.to_string())?;
    if !datum.is_empty() {
        return Err(format!("{} bytes left over after the datum", datum.len()));
    }
    let json = Value::try_from(value).map_err(|e| e.to_string())?;
    Ok((format!("{}.v{}", entry.name(), entry.version()), json))
}

/// A classic hex dump: offset, 16 bytes in hex, and their printable ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", row * 16);
        for i in 0..16 {
            match chunk.get(i) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
        }
        out.push(' ');
        out.extend(chunk.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn origin(record: &DlqRecord) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
    format!(
        "{}/{}@{}",
        record.original_topic().unwrap_or("?"),
        show(record.original_partition().map(|p| p.to_string())),
        show(record.original_offset().map(|o| o.to_string())),
    )
}

fn age(record: &DlqRecord, now_ms: i64) -> String {
    match record.failed_at_ms() {
        Some(at) => {
            let secs = u64::try_from(now_ms.saturating_sub(at) / 1000).unwrap_or(0);
            humantime::format_duration(Duration::from_secs(secs))
                .to_string()
                .replace(' ', "")
        }
        None => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use spine_events::orders::{LineItem, OrderPlaced};

    use super::*;

    #[test]
    fn an_event_decodes_to_its_json() {
        let placed = OrderPlaced::new(
            uuid::Uuid::now_v7(),
            "customer-1",
            "ada@example.com",
            vec![LineItem::new("SKU-1", 2, 1_250)],
            "EUR",
        );
        let bytes = spine_events::encode(&placed).unwrap();
        let (event, json) = decode_json(&bytes).unwrap();
        assert!(event.starts_with("OrderPlaced.v"), "{event}");
        assert_eq!(json["customer_id"], "customer-1", "{json}");
    }

    #[test]
    fn garbage_does_not_decode_and_dumps_as_hex() {
        assert!(decode_json(b"not avro").is_err());
        let dump = hex_dump(b"not avro\x00");
        assert_eq!(
            dump,
            "00000000  6e 6f 74 20 61 76 72 6f 00                       not avro.\n"
        );
    }
}
