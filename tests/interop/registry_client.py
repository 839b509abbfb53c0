#!/usr/bin/env python3
"""Talks to a schema registry with Confluent's own Python client (confluent-kafka 2.16, extras
`avro,schemaregistry`) and checks every answer: the proof that a registry (spine's in-process
test registry, or any Confluent-compatible one) speaks the dialect Confluent's clients expect.

    registry_client.py URL [--user USER --password PASSWORD] [--schemas DIR] [--subject SUBJECT]

It registers schemas/OrderPlaced.v1.avsc and v2 under the TopicRecordNameStrategy subject
`orders.events-spine.orders.OrderPlaced`, looks them up, reads them by id and version, tests
compatibility (a compatible and an incompatible schema), sets and reads compatibility levels,
and round-trips a record through AvroSerializer and AvroDeserializer in memory (no broker):
the Confluent framing, the schema id in it, and schema evolution (v1 data read as v2).
Run it against a fresh registry: it expects the subject to start empty.

Exits 0 when everything matched; otherwise prints `FAIL: ...` and exits 1 (2 when the client
library is missing: scripts/setup installs it).
"""

import argparse
import datetime
import json
import pathlib
import sys
import uuid

try:
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext
    from confluent_kafka.schema_registry import topic_record_subject_name_strategy
except ImportError as error:  # the message names the fix, not just the missing module
    print(
        f"FAIL: confluent-kafka[avro,schemaregistry] is not importable ({error}); run scripts/setup",
        file=sys.stderr,
    )
    sys.exit(2)

TOPIC = "orders.events"
SUBJECT = "orders.events-spine.orders.OrderPlaced"


class Mismatch(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Mismatch(what)
    print(f"ok   {what}")


def expect_error(call, status, code, what):
    """`call` must raise Confluent's SchemaRegistryError with this HTTP status and error code."""
    try:
        result = call()
    except SchemaRegistryError as error:
        check(
            error.http_status_code == status and error.error_code == code,
            f"{what}: HTTP {status} error_code {code} (got HTTP {error.http_status_code} "
            f"error_code {error.error_code}: {error.error_message})",
        )
        return
    raise Mismatch(f"{what}: expected HTTP {status} error_code {code}, got {result!r}")


def with_field(schema_text, field):
    schema = json.loads(schema_text)
    schema["fields"].append(field)
    return json.dumps(schema)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument(
        "--schemas",
        default=str(pathlib.Path(__file__).resolve().parents[2] / "schemas"),
        help="the directory holding OrderPlaced.v1.avsc and v2 (default: the repository's schemas/)",
    )
    parser.add_argument("--subject", default=SUBJECT)
    args = parser.parse_args()
    subject = args.subject

    conf = {"url": args.url, "max.retries": 0}
    if args.user is not None:
        conf["basic.auth.user.info"] = f"{args.user}:{args.password or ''}"

    def client():
        # A fresh client per question: Confluent's client caches ids and schemas, and what is
        # checked here is the registry's answer, not the cache.
        return SchemaRegistryClient(conf)

    schemas = pathlib.Path(args.schemas)
    v1_text = (schemas / "OrderPlaced.v1.avsc").read_text()
    v2_text = (schemas / "OrderPlaced.v2.avsc").read_text()
    v1 = Schema(v1_text, "AVRO")
    v2 = Schema(v2_text, "AVRO")

    if args.user is not None:
        wrong = dict(conf, **{"basic.auth.user.info": f"{args.user}:not-{args.password}"})
        expect_error(lambda: SchemaRegistryClient(wrong).get_subjects(), 401, 401, "wrong credentials")

    # Register, idempotently.
    id1 = client().register_schema(subject, v1)
    check(isinstance(id1, int) and id1 > 0, f"v1 registered under {subject} with id {id1}")
    again = client().register_schema(subject, v1)
    check(again == id1, f"re-registering v1 answers the same id ({again})")
    check(client().get_versions(subject) == [1], "re-registering v1 made no new version")
    id2 = client().register_schema(subject, v2)
    check(id2 != id1, f"v2 registered with a new id {id2}")
    check(client().get_versions(subject) == [1, 2], "the subject has versions [1, 2]")
    check(subject in client().get_subjects(), "the subject is listed")

    # Look up.
    found = client().lookup_schema(subject, v1)
    check((found.schema_id, found.version) == (id1, 1), f"lookup of v1: id {found.schema_id}, version {found.version}")
    found = client().lookup_schema(subject, v2)
    check((found.schema_id, found.version) == (id2, 2), f"lookup of v2: id {found.schema_id}, version {found.version}")
    unknown = Schema(with_field(v2_text, {"name": "never_registered", "type": "int", "default": 0}), "AVRO")
    expect_error(lambda: client().lookup_schema(subject, unknown), 404, 40403, "lookup of an unregistered schema")
    expect_error(lambda: client().lookup_schema("no-such-subject", v1), 404, 40401, "lookup under an unknown subject")

    # Read by id and version.
    by_id = client().get_schema(id1)
    check(json.loads(by_id.schema_str) == json.loads(v1_text), f"GET /schemas/ids/{id1} is v1")
    check(by_id.schema_type == "AVRO", "its type is AVRO")
    expect_error(lambda: client().get_schema(id2 + 1000), 404, 40403, "an unknown id")
    latest = client().get_latest_version(subject)
    check((latest.schema_id, latest.version) == (id2, 2), "the latest version is v2")
    check(json.loads(latest.schema.schema_str) == json.loads(v2_text), "the latest version's schema is v2")
    first = client().get_version(subject, 1)
    check(first.schema_id == id1 and first.subject == subject, "version 1 is v1")
    expect_error(lambda: client().get_version(subject, 3), 404, 40402, "an unknown version")
    usages = client().get_schema_versions(id2)
    check([(u.subject, u.version) for u in usages] == [(subject, 2)], "id of v2 is used by version 2 only")

    # Compatibility, under the default BACKWARD.
    check(client().get_compatibility() == "BACKWARD", "the global level is BACKWARD by default")
    optional = Schema(with_field(v2_text, {"name": "coupon", "type": ["null", "string"], "default": None}), "AVRO")
    required = Schema(with_field(v2_text, {"name": "coupon", "type": "string"}), "AVRO")
    check(client().test_compatibility(subject, optional) is True, "a new optional field is compatible")
    check(client().test_compatibility(subject, required) is False, "a new required field is incompatible")
    check(
        client().test_compatibility_all_versions(subject, required) is False,
        "a new required field is incompatible with all versions",
    )
    check(client().test_compatibility(subject, v1, version=1) is True, "v1 is compatible with version 1")
    expect_error(lambda: client().register_schema(subject, required), 409, 40901, "registering an incompatible schema")
    check(client().get_versions(subject) == [1, 2], "the incompatible schema made no version")

    # Compatibility levels.
    answer = client().set_compatibility(subject, "FULL")
    check(answer == {"compatibility": "FULL"}, f"PUT /config/{subject} answers {answer}")
    check(client().get_compatibility(subject) == "FULL", "the subject's level reads back FULL")
    check(client().get_compatibility() == "BACKWARD", "the global level is unchanged")
    check(client().get_config(subject).compatibility_level.value == "FULL", "get_config reads FULL too")
    # v1 drops v2's optional field: a v1 reader skips it and v2 fills it with its default.
    check(client().test_compatibility(subject, v1) is True, "under FULL, going back to v1 is compatible")
    check(client().test_compatibility(subject, required) is False, "under FULL, a required field is not")
    answer = client().set_compatibility(level="FULL_TRANSITIVE")
    check(client().get_compatibility() == "FULL_TRANSITIVE", "the global level reads back FULL_TRANSITIVE")
    client().set_compatibility(level="BACKWARD")
    expect_error(lambda: client().set_compatibility(subject, "SIDEWAYS"), 422, 42203, "an unknown level")

    # Serialize and deserialize through the registry, as a Kafka producer and consumer would.
    serializer_conf = {
        "auto.register.schemas": True,
        "subject.name.strategy": topic_record_subject_name_strategy,
    }
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    order = {
        "event_id": uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
        "occurred_at": datetime.datetime(2026, 11, 30, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc),
        "order_id": uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8058"),
        "customer_id": "c-1",
        "email": "c-1@example.com",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250}],
        "total_minor": 2500,
        "currency": "EUR",
        "sales_channel": "web",
    }
    written = AvroSerializer(client(), v2_text, conf=serializer_conf)(order, ctx)
    check(written[0] == 0, "the serializer writes the Confluent magic byte 0x00")
    check(int.from_bytes(written[1:5], "big") == id2, f"then v2's id {id2}, big-endian")
    # Default settings, as a consumer that knows nothing of spine would use.
    read = AvroDeserializer(client())(written, ctx)
    check(read == order, "the deserializer reads the record back")

    v1_order = {k: v for k, v in order.items() if k != "sales_channel"}
    written_v1 = AvroSerializer(client(), v1_text, conf=serializer_conf)(v1_order, ctx)
    check(int.from_bytes(written_v1[1:5], "big") == id1, f"v1 data carries v1's id {id1}")
    read = AvroDeserializer(client(), schema_str=v2_text)(written_v1, ctx)
    check(read == dict(v1_order, sales_channel=None), "v1 data read with the v2 schema gets sales_channel null")

    auto_subject = "interop.auto-spine.orders.OrderPlaced"
    written = AvroSerializer(client(), v2_text, conf=serializer_conf)(order, SerializationContext("interop.auto", MessageField.VALUE))
    check(int.from_bytes(written[1:5], "big") == id2, "auto-registering v2 under a new subject reuses its id")
    check(client().get_versions(auto_subject) == [1], f"and made version 1 of {auto_subject}")

    print("registry interop: every check passed")


if __name__ == "__main__":
    try:
        main()
    except Mismatch as mismatch:
        print(f"FAIL: {mismatch}", file=sys.stderr)
        sys.exit(1)
    except SchemaRegistryError as error:
        print(
            f"FAIL: the registry answered HTTP {error.http_status_code} error_code {error.error_code}: "
            f"{error.error_message}",
            file=sys.stderr,
        )
        sys.exit(1)
    except Exception as error:  # e.g. the registry is unreachable: one clear line, then exit 1
        print(f"FAIL: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
