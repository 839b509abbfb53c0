"""The broker side of the fault run, with confluent-kafka (its bundled librdkafka talks to tansu):

- `Tail`: reads the event topics from the start to learn where each partition ends; when
  asked, it also produces every record a second time (same partition, key, value and headers,
  plus `chaos-dup`), and after every `poison_every` records one undecodable record with a real
  order's key (header `chaos-poison`);
- `read_dlqs`: every record of the `<group>.dlq` topics;
- `group_lag`: what each consumer group has not committed yet.

The ends of partitions come from reading them, not from ListOffsets: the tansu build we run
answers ListOffsets(latest) with the last batch's base offset + 1, not the log end offset.
"""

import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING

EVENT_TOPICS = ["orders.events", "inventory.events", "email.events"]
# Which groups read which topic (README, "Events and topics").
GROUP_TOPICS = {
    "orders": ["inventory.events"],
    "inventory": ["orders.events"],
    "email": ["orders.events"],
    "analytics": ["orders.events", "inventory.events", "email.events"],
}
DUP, POISON = "chaos-dup", "chaos-poison"
PARTITIONS = 6  # kafka.topics.partitions, the services' default


def _consumer(bootstrap, group="chaos-reader"):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "socket.timeout.ms": 5000,
            "logger": _quiet,
        }
    )


class _Quiet:
    def log(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


_quiet = _Quiet()


def _headers(msg):
    return {k: (v or b"") for k, v in (msg.headers() or [])}


class Tail:
    def __init__(self, bootstrap, duplicates, poison_every):
        self.bootstrap = bootstrap
        self.duplicates, self.poison_every = duplicates, poison_every
        self.seen = 0
        self.duplicated = 0
        self.poison = []  # (topic, partition, offset) of each garbage record, once acked
        self.poison_sent = 0
        self.positions = {}  # (topic, partition) -> next offset to read
        self.last_new = time.monotonic()
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        consumer = _consumer(self.bootstrap)
        consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in EVENT_TOPICS for p in range(PARTITIONS)]
        )
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                # Not idempotent: the durable tansu 0.6.0 panicked in its idempotent-producer
                # check ("more or less than one row") after a broker restart; a duplicate of a
                # duplicate is as harmless as the duplicate itself.
                "enable.idempotence": False,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 300000,
                "logger": _quiet,
            }
        )
        while not self.stop.is_set():
            msg = consumer.poll(0.2)
            producer.poll(0)
            if msg is None:
                continue
            if msg.error():
                continue  # partition EOF, or a transient error while the broker is away
            self.positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            self.last_new = time.monotonic()
            headers = msg.headers() or []
            if any(k in (DUP, POISON) for k, _ in headers):
                continue  # our own injections
            self.seen += 1
            if self.duplicates:
                self._produce(producer, msg.topic(), msg.partition(), msg.key(), msg.value(),
                              headers + [(DUP, b"1")])
                self.duplicated += 1
            if self.poison_every and self.seen % self.poison_every == 0:
                garbage = b"chaos-poison-" + str(self.seen).encode() + b"\x00\xff not avro"
                self._produce(producer, msg.topic(), msg.partition(), msg.key(), garbage,
                              [(POISON, b"1"), ("event-type", b"Garbage")], self._poisoned)
                self.poison_sent += 1
        producer.flush(30)
        consumer.close()

    def _produce(self, producer, topic, partition, key, value, headers, on_delivery=None):
        for _ in range(600):
            try:
                producer.produce(topic, value=value, key=key, partition=partition, headers=headers,
                                 on_delivery=on_delivery or self._delivered)
                return
            except BufferError:
                producer.poll(0.1)

    def _delivered(self, err, msg):
        if err is not None:
            self.errors.append(str(err))

    def _poisoned(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.poison.append((msg.topic(), msg.partition(), msg.offset()))

    def quiet_for(self):
        """Seconds since the last new record on any event topic."""
        return time.monotonic() - self.last_new

    def ends(self):
        return dict(self.positions)

    def close(self):
        self.stop.set()
        self.thread.join(40)


def group_lag(bootstrap, ends):
    """{group: records not committed yet, over its topics, up to `ends` (from a Tail)};
    None for a group whose offsets cannot be read."""
    out = {}
    for group, topics in GROUP_TOPICS.items():
        # OffsetFetch only: this consumer never subscribes, so it never joins the group.
        consumer = _consumer(bootstrap, group)
        try:
            committed = consumer.committed(
                [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)], timeout=10
            )
            lag = 0
            for tp in committed:
                end = ends.get((tp.topic, tp.partition), 0)
                offset = tp.offset if tp.offset >= 0 else 0
                lag += max(0, end - offset)
            out[group] = lag
        except KafkaException:
            out[group] = None
        finally:
            consumer.close()
    return out


def read_dlqs(bootstrap, groups, idle=3.0, timeout=60.0):
    """{group: every record of `<group>.dlq`, as dicts with key, value and headers}: read until
    nothing new came for `idle` seconds (bounded by `timeout`)."""
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(f"{g}.dlq", p, OFFSET_BEGINNING)
                         for g in groups for p in range(PARTITIONS)])
        records = {g: [] for g in groups}
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            records[msg.topic()[: -len(".dlq")]].append(
                {"key": msg.key(), "value": msg.value(), "headers": _headers(msg)})
        return records
    finally:
        consumer.close()
