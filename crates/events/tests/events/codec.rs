//! The single-object codec: round trips, evolution both ways, the header format, and errors.

use std::fmt::Debug;

use apache_avro::reader::single_object::GenericSingleObjectReader;
use apache_avro::writer::single_object::GenericSingleObjectWriter;
use spine_events::codec::{HEADER_LEN, MAGIC, fingerprint};
use spine_events::orders::{OrderConfirmed, OrderPlaced, v1};
use spine_events::{DecodeError, Event, catalog, decode, encode, peek};

use crate::support::*;

fn assert_round_trips<E: Event + PartialEq + Debug>(event: E) {
    let bytes = encode(&event).unwrap_or_else(|e| panic!("{} encodes: {e}", E::NAME));
    let writer = peek(&bytes).expect("the writer is in the catalog");
    assert_eq!(
        (writer.name(), writer.version(), writer.topic()),
        (E::NAME, E::VERSION, E::TOPIC)
    );
    let decoded: E = decode(&bytes).unwrap_or_else(|e| panic!("{} decodes: {e}", E::NAME));
    assert_eq!(decoded, event);
    assert_eq!(decoded.aggregate_id(), event.aggregate_id());
}

#[test]
fn every_event_type_round_trips() {
    assert_round_trips(order_placed());
    assert_round_trips(order_placed_v1());
    assert_round_trips(order_confirmed());
    assert_round_trips(order_rejected());
    assert_round_trips(stock_reserved());
    assert_round_trips(stock_reservation_failed());
    assert_round_trips(email_sent());
}

#[test]
fn every_event_type_is_the_latest_version_of_its_schema() {
    fn latest<E: Event>() -> u32 {
        catalog()
            .latest(E::NAME)
            .map(|e| e.version())
            .unwrap_or_default()
    }
    assert_eq!(OrderPlaced::VERSION, latest::<OrderPlaced>());
    assert_eq!(OrderConfirmed::VERSION, latest::<OrderConfirmed>());
    assert_eq!(1, latest::<spine_events::orders::OrderRejected>());
    assert_eq!(1, latest::<spine_events::inventory::StockReserved>());
    assert_eq!(
        1,
        latest::<spine_events::inventory::StockReservationFailed>()
    );
    assert_eq!(1, latest::<spine_events::email::EmailSent>());
}

#[test]
fn new_reader_reads_old_data_and_the_added_field_gets_its_default() {
    let old = order_placed_v1();
    let bytes = encode(&old).unwrap();
    assert_eq!(peek(&bytes).unwrap().version(), 1);

    let new: OrderPlaced = decode(&bytes).expect("v2 reads v1 data");

    assert_eq!(new.sales_channel, None);
    assert_eq!(
        (new.event_id, new.order_id, new.occurred_at),
        (old.event_id, old.order_id, old.occurred_at)
    );
    assert_eq!(
        (new.items, new.total_minor, new.currency),
        (old.items, old.total_minor, old.currency)
    );
}

#[test]
fn old_reader_reads_new_data() {
    let new = order_placed();
    assert_eq!(new.sales_channel.as_deref(), Some("web"));
    let bytes = encode(&new).unwrap();
    assert_eq!(peek(&bytes).unwrap().version(), 2);

    let old: v1::OrderPlaced = decode(&bytes).expect("v1 reads v2 data");

    assert_eq!(
        (old.event_id, old.order_id, old.occurred_at),
        (new.event_id, new.order_id, new.occurred_at)
    );
    assert_eq!((old.customer_id, old.email), (new.customer_id, new.email));
    assert_eq!(
        (old.items, old.total_minor, old.currency),
        (new.items, new.total_minor, new.currency)
    );
}

/// CRC-64-AVRO exactly as the Avro specification's reference code computes it.
fn spec_fingerprint64(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let table: Vec<u64> = (0..256u64)
        .map(|i| (0..8).fold(i, |fp, _| (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1))))
        .collect();
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

#[test]
fn the_reference_fingerprint_matches_the_avro_test_vectors() {
    // From the Avro project's share/test/data/schema-tests.txt.
    assert_eq!(
        spec_fingerprint64(br#""null""#) as i64,
        7_195_948_357_588_979_594
    );
    assert_eq!(
        spec_fingerprint64(br#""boolean""#) as i64,
        -6_970_731_678_124_411_036
    );
}

#[test]
fn header_is_magic_then_little_endian_crc64_avro_of_the_canonical_form() {
    for entry in catalog().entries() {
        let expected = spec_fingerprint64(entry.canonical_form().as_bytes());
        assert_eq!(entry.fingerprint(), expected, "{}", entry.file());

        let header = entry.header();
        assert_eq!(header[..2], [0xC3, 0x01]);
        assert_eq!(header[..2], MAGIC);
        assert_eq!(
            header[2..],
            expected.to_le_bytes(),
            "the spec says little-endian"
        );
    }
    let bytes = encode(&order_placed()).unwrap();
    let entry = catalog().get("OrderPlaced", 2).unwrap();
    assert_eq!(bytes[..HEADER_LEN], entry.header());
    assert_eq!(fingerprint(&bytes), Ok(entry.fingerprint()));
}

#[test]
fn encoding_matches_apache_avros_own_single_object_writer_and_reader() {
    let event = order_placed();
    let ours = encode(&event).unwrap();
    let schema = catalog().get("OrderPlaced", 2).unwrap().schema();
    let value = apache_avro::to_value(&event)
        .unwrap()
        .resolve(schema)
        .unwrap();

    let mut theirs = Vec::new();
    GenericSingleObjectWriter::new_with_capacity(schema, 256)
        .unwrap()
        .write_value(value.clone(), &mut theirs)
        .unwrap();
    assert_eq!(ours[..HEADER_LEN], theirs[..HEADER_LEN], "same header");
    assert_eq!(ours, theirs, "same bytes");

    let read = GenericSingleObjectReader::builder()
        .schema(schema.clone())
        .build()
        .unwrap()
        .read_value(&mut &ours[..])
        .unwrap();
    assert_eq!(read, value);
}

#[test]
fn an_unknown_fingerprint_is_a_typed_error_showing_it_in_hex() {
    let mut bytes = encode(&order_placed()).unwrap();
    bytes[2..HEADER_LEN].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_le_bytes());

    let error = decode::<OrderPlaced>(&bytes).unwrap_err();

    assert_eq!(
        error,
        DecodeError::UnknownFingerprint {
            fingerprint: 0x0123_4567_89ab_cdef
        }
    );
    assert!(error.to_string().contains("0x0123456789abcdef"), "{error}");
    assert!(error.is_poison());
    assert!(matches!(
        peek(&bytes),
        Err(DecodeError::UnknownFingerprint { .. })
    ));
}

#[test]
fn garbage_is_a_typed_error() {
    assert_eq!(
        decode::<OrderPlaced>(b""),
        Err(DecodeError::TooShort { len: 0 })
    );
    assert_eq!(
        decode::<OrderPlaced>(&[0xC3, 0x01, 0]),
        Err(DecodeError::TooShort { len: 3 })
    );
    let error = decode::<OrderPlaced>(br#"{"order_id": "not avro"}"#).unwrap_err();
    assert_eq!(error, DecodeError::BadMagic { found: *b"{\"" });
    assert!(error.is_poison());
}

#[test]
fn a_different_event_is_a_typed_error() {
    let bytes = encode(&order_confirmed()).unwrap();

    let error = decode::<OrderPlaced>(&bytes).unwrap_err();

    assert_eq!(
        error,
        DecodeError::WrongEvent {
            expected: "OrderPlaced",
            found: "OrderConfirmed",
            version: 1
        }
    );
    assert!(error.is_poison());
}

#[test]
fn truncated_or_padded_datums_are_malformed() {
    let bytes = encode(&order_placed()).unwrap();

    let truncated = decode::<OrderPlaced>(&bytes[..bytes.len() - 1]).unwrap_err();
    let mut padded = bytes.clone();
    padded.push(0);
    let padded = decode::<OrderPlaced>(&padded).unwrap_err();

    assert!(truncated.to_string().contains("truncated"), "{truncated}");
    assert!(padded.to_string().contains("1 bytes left over"), "{padded}");
    for error in [truncated, padded] {
        assert!(
            matches!(
                error,
                DecodeError::Malformed {
                    event: "OrderPlaced",
                    version: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.is_poison());
    }
}

/// A small deterministic PRNG, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn decoding_arbitrary_bytes_returns_an_error_and_never_panics() {
    let messages = [
        encode(&order_placed()).unwrap(),
        encode(&order_placed_v1()).unwrap(),
        encode(&stock_reservation_failed()).unwrap(),
        encode(&email_sent()).unwrap(),
    ];
    for message in &messages {
        for len in 0..message.len() {
            assert!(
                decode::<OrderPlaced>(&message[..len]).is_err(),
                "prefix of {len} bytes"
            );
            assert!(
                decode::<v1::OrderPlaced>(&message[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    let mut rng = XorShift(0x5EED_CAFE_F00D_BEEF);
    for _ in 0..500 {
        let len = (rng.next() % 128) as usize;
        let mut random = rng.bytes(len);
        if random.len() >= 2 && random[..2] == MAGIC {
            random[0] = 0;
        }
        assert!(decode::<OrderPlaced>(&random).is_err());

        // A known header over a random body exercises the datum decoder itself.
        let header = &messages[(rng.next() % messages.len() as u64) as usize][..HEADER_LEN];
        let mut body = header.to_vec();
        body.extend(rng.bytes(len));
        let _ = decode::<OrderPlaced>(&body);
        let _ = decode::<v1::OrderPlaced>(&body);
    }

    // Every single-byte corruption of a valid message, too.
    let message = &messages[0];
    for at in 0..message.len() {
        for flip in [0x01, 0x80, 0xFF] {
            let mut corrupt = message.clone();
            corrupt[at] ^= flip;
            let _ = decode::<OrderPlaced>(&corrupt);
            let _ = decode::<v1::OrderPlaced>(&corrupt);
        }
    }
}
