#!/usr/bin/env python3
"""Interop with Confluent's own Python client, through the real broker and a schema registry.

Run by tests/e2e/flow.rs (the registry-framing flow) once spine's services have written their
facts in Confluent framing:

  read   --count records of the given topics, from the beginning, with Confluent's AvroDeserializer (its
         SchemaRegistryClient fetching the writer schemas by id), and print one JSON line per
         record: {"topic", "record" (the Avro record name), "order_id"};
  write  one OrderPlaced with Confluent's AvroSerializer (TopicRecordNameStrategy, the
         schema file spine ships) on orders.events, keyed by its order id, and print its
         order id: spine's consumers must take it like their own.

Exits non-zero with a message on anything unexpected. Needs confluent-kafka[avro,schemaregistry]
(scripts/setup installs it).
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def fail(message):
    print(f"confluent_roundtrip: {message}", file=sys.stderr)
    sys.exit(1)


def read(args, registry):
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"interop-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(timeout=10)
    for topic in args.topics:
        if topic not in metadata.topics:
            fail(f"topic {topic} does not exist")
    consumer.assign([
        TopicPartition(topic, partition, OFFSET_BEGINNING)
        for topic in args.topics
        for partition in metadata.topics[topic].partitions
    ])
    read_count = 0
    deadline = time.monotonic() + 30
    while read_count < args.count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            fail(f"consume error: {message.error()}")
        value = message.value()
        if value[:1] != b"\x00":
            fail(f"{message.topic()}/{message.partition()} offset {message.offset()}: "
                 f"not Confluent framing: {value[:5].hex()}")
        ctx = SerializationContext(message.topic(), MessageField.VALUE)
        record = deserializer(value, ctx)
        # The writer schema's record name is not in the dict: ask the registry by id.
        schema_id = int.from_bytes(value[1:5], "big")
        name = json.loads(registry.get_schema(schema_id).schema_str)["name"]
        print(json.dumps({
            "topic": message.topic(),
            "record": name,
            "schema_id": schema_id,
            "order_id": str(record.get("order_id")),
        }))
        read_count += 1
    consumer.close()
    if read_count < args.count:
        fail(f"read {read_count} records in 30 s, expected {args.count}")


def write(args, registry):
    with open(args.schema) as f:
        schema = f.read()
    serializer = AvroSerializer(
        registry,
        schema,
        conf={
            "auto.register.schemas": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    order_id = str(uuid.uuid4())
    placed = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": int(time.time() * 1000),
        "order_id": order_id,
        "customer_id": "confluent-client",
        "email": "confluent@example.com",
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 990}],
        "total_minor": 990,
        "currency": "EUR",
        "sales_channel": "python",
    }
    value = serializer(placed, SerializationContext("orders.events", MessageField.VALUE))
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    errors = []
    producer.produce(
        "orders.events",
        key=order_id.encode(),
        value=value,
        on_delivery=lambda err, _msg: err and errors.append(err),
    )
    producer.flush(30)
    if errors:
        fail(f"delivery failed: {errors}")
    print(json.dumps({"order_id": order_id, "schema_id": int.from_bytes(value[1:5], "big")}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["read", "write"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topics", nargs="*", default=[])
    parser.add_argument("--count", type=int, default=0, help="records to read (read)")
    parser.add_argument("--schema", help="the .avsc file to write with (write)")
    args = parser.parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    if args.command == "read":
        read(args, registry)
    else:
        write(args, registry)


if __name__ == "__main__":
    main()
