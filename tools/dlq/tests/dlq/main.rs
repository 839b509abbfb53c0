//! spine-dlq's integration tests, against the real broker named by `KAFKA_BOOTSTRAP_SERVERS`
//! (default 127.0.0.1:9092; `scripts/broker start` runs one).

mod support;

mod end_to_end;
mod list;
mod replay;
