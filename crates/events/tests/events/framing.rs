//! Confluent framing (`00` + big-endian registry id + datum) beside single-object encoding:
//! what each framing writes, that decoding accepts both whatever the writer chose, and the
//! errors of an id nobody taught this process.
//!
//! The framing and the learned ids are process-wide; nextest runs every test in a process of
//! its own, so each test sets what it needs.

use spine_events::codec::{
    CONFLUENT_CONTENT_TYPE, CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, CONTENT_TYPE, HEADER_LEN,
    confluent_id, framing_for, learn_schema_id, schema_id_of, set_framing, unknown_schema_id,
};
use spine_events::email::EmailSent;
use spine_events::orders::{OrderPlaced, v1};
use spine_events::{DecodeError, EncodeError, Event, Framing, catalog, decode, encode, peek};

use crate::support::*;

fn entry<E: Event>() -> &'static spine_events::CatalogEntry {
    catalog().get(E::NAME, E::VERSION).expect("in the catalog")
}

#[test]
fn confluent_framing_is_magic_zero_a_big_endian_id_and_the_same_datum() {
    let placed = order_placed();
    let single = encode(&placed).unwrap();
    assert_eq!(
        framing_for(OrderPlaced::TOPIC),
        Framing::SingleObject,
        "the default"
    );

    set_framing(Framing::Confluent, []);
    learn_schema_id(0x0102_0304, entry::<OrderPlaced>());
    let confluent = encode(&placed).unwrap();

    assert_eq!(confluent[0], CONFLUENT_MAGIC);
    assert_eq!(&confluent[1..CONFLUENT_HEADER_LEN], &[1, 2, 3, 4]);
    assert_eq!(confluent_id(&confluent).unwrap(), 0x0102_0304);
    assert_eq!(
        &confluent[CONFLUENT_HEADER_LEN..],
        &single[HEADER_LEN..],
        "one datum, two headers"
    );
    assert_eq!(Framing::of(&confluent), Some(Framing::Confluent));
    assert_eq!(Framing::Confluent.content_type(), CONFLUENT_CONTENT_TYPE);
    assert_eq!(Framing::SingleObject.content_type(), CONTENT_TYPE);
}

#[test]
fn decoding_accepts_both_framings_whatever_this_process_writes() {
    let placed = order_placed();
    let single = encode(&placed).unwrap();
    set_framing(Framing::Confluent, []);
    learn_schema_id(7, entry::<OrderPlaced>());
    let confluent = encode(&placed).unwrap();

    for bytes in [&single, &confluent] {
        assert_eq!(peek(bytes).unwrap().name(), OrderPlaced::NAME);
        assert_eq!(decode::<OrderPlaced>(bytes).unwrap(), placed);
    }
}

#[test]
fn an_old_version_in_confluent_framing_resolves_to_the_reader_version() {
    set_framing(Framing::Confluent, []);
    learn_schema_id(11, entry::<v1::OrderPlaced>());
    let old = order_placed_v1();
    let bytes = encode(&old).unwrap();
    assert_eq!(confluent_id(&bytes).unwrap(), 11);
    assert_eq!(peek(&bytes).unwrap().version(), 1);
    let read: OrderPlaced = decode(&bytes).unwrap();
    assert_eq!(read.order_id, old.order_id);
    assert_eq!(read.sales_channel, None, "v2's new field gets its default");
}

#[test]
fn framing_is_chosen_per_topic() {
    set_framing(
        Framing::SingleObject,
        [(OrderPlaced::TOPIC.to_owned(), Framing::Confluent)],
    );
    learn_schema_id(21, entry::<OrderPlaced>());
    assert_eq!(encode(&order_placed()).unwrap()[0], CONFLUENT_MAGIC);
    assert_eq!(&encode(&email_sent()).unwrap()[..2], &[0xC3, 0x01]);
    assert_eq!(framing_for(EmailSent::TOPIC), Framing::SingleObject);
}

#[test]
fn encoding_in_confluent_framing_without_a_learned_id_is_an_error_naming_the_event() {
    set_framing(Framing::Confluent, []);
    let err = encode(&order_placed()).unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::NoSchemaId {
                name: "OrderPlaced",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("orders.events"), "{err}");
}

#[test]
fn an_id_nobody_taught_this_process_is_unknown_and_poison() {
    set_framing(Framing::Confluent, []);
    learn_schema_id(5, entry::<OrderPlaced>());
    let mut bytes = encode(&order_placed()).unwrap();
    bytes[1..5].copy_from_slice(&99u32.to_be_bytes());

    assert_eq!(unknown_schema_id(&bytes), Some(99));
    assert_eq!(
        unknown_schema_id(&encode(&order_placed()).unwrap()),
        None,
        "5 is known"
    );
    let err = decode::<OrderPlaced>(&bytes).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnknownSchemaId { id: 99, .. }),
        "{err:?}"
    );
    assert!(err.is_poison());
    assert_eq!(schema_id_of(entry::<OrderPlaced>()), Some(5));
}

#[test]
fn a_short_or_foreign_header_is_a_decode_error_not_a_panic() {
    for bytes in [&[0x00u8][..], &[0x00, 0, 0], &[0x7B, 0x22], &[]] {
        let err = decode::<OrderPlaced>(bytes).unwrap_err();
        assert!(err.is_poison(), "{bytes:?}: {err:?}");
        assert_eq!(unknown_schema_id(bytes), None);
    }
}
