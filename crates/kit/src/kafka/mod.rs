//! Kafka: client configuration, headers, topic provisioning, the producer, the consumer runner
//! and their OpenTelemetry spans.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod headers;
pub mod producer;
pub mod spans;

pub use admin::{TopicSpec, ensure_topics, provision};
pub use headers::Headers;
pub use producer::{Delivery, OutgoingRecord, PublishError, Publisher};
