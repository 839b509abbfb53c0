//! The producer: `acks=all`, idempotent, with the kit's headers on every event.
//!
//! A full local queue is not an error but backpressure: [`Publisher::send`] waits and retries.
//! A short, named list of error codes is fatal (the producer cannot go on, see
//! [`PublishError::is_fatal`]); everything else is a failed delivery the caller may retry.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use spine_events::Event;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::config::producer_config;
use super::headers::{self, Headers};
use super::spans::{self, ClientInfo};
use crate::settings::KafkaSettings;

pub use rdkafka::producer::future_producer::Delivery;

/// A record ready to send: what the outbox stores and what the relay and the DLQ publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key: the aggregate id, so a key's records stay in order.
    pub key: Option<Vec<u8>>,
    /// The encoded value.
    pub payload: Vec<u8>,
    /// Headers, trace context included.
    pub headers: Headers,
}

impl OutgoingRecord {
    /// Encodes `event` for its topic, keyed by its aggregate id, with the standard headers
    /// (event id, type, schema version, content type) and the current trace context.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, spine_events::EncodeError> {
        let payload = spine_events::encode(event)?;
        let mut headers = Headers::new()
            .with(headers::EVENT_ID, event.event_id().to_string())
            .with(headers::EVENT_TYPE, E::NAME)
            .with(headers::EVENT_VERSION, E::VERSION.to_string())
            .with(
                headers::CONTENT_TYPE,
                spine_events::codec::framing_for(E::TOPIC).content_type(),
            );
        headers.inject_current_context();
        Ok(Self {
            topic: E::TOPIC.to_owned(),
            key: Some(event.aggregate_id().to_string().into_bytes()),
            payload,
            headers,
        })
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(#[from] spine_events::EncodeError),
    /// The broker did not acknowledge the record in time, or rejected it.
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        /// The destination topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The producer was dropped before the delivery report arrived.
    #[error("producer closed before delivery was confirmed")]
    Canceled,
}

/// Error codes after which this producer instance cannot publish again.
pub const FATAL_CODES: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::Fatal,
    RDKafkaErrorCode::ProducerFenced,
    RDKafkaErrorCode::InvalidProducerEpoch,
    RDKafkaErrorCode::TopicAuthorizationFailed,
    RDKafkaErrorCode::ClusterAuthorizationFailed,
    RDKafkaErrorCode::UnsupportedVersion,
];

impl PublishError {
    /// Whether the producer is unusable: restart the process rather than retry.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::Delivery { source, .. } => source
                .rdkafka_error_code()
                .is_some_and(|code| FATAL_CODES.contains(&code)),
            Self::Encode(_) | Self::Canceled => false,
        }
    }
}

/// Error codes that mean "the broker cannot be reached or cannot take writes right now", not
/// "this record is wrong": an outage, to wait out.
pub const OUTAGE_CODES: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageTimedOut,
    RDKafkaErrorCode::RequestTimedOut,
    RDKafkaErrorCode::BrokerTransportFailure,
    RDKafkaErrorCode::AllBrokersDown,
    RDKafkaErrorCode::LeaderNotAvailable,
    RDKafkaErrorCode::NotLeaderForPartition,
    RDKafkaErrorCode::NotEnoughReplicas,
    RDKafkaErrorCode::NotEnoughReplicasAfterAppend,
    RDKafkaErrorCode::NetworkException,
    RDKafkaErrorCode::QueueFull,
    RDKafkaErrorCode::UnknownTopicOrPartition,
];

impl PublishError {
    /// Whether the broker is unreachable or unable to take writes (an outage): the same record
    /// will go through once it is back.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Delivery { source, .. } => source
                .rdkafka_error_code()
                .is_some_and(|code| OUTAGE_CODES.contains(&code)),
            Self::Encode(_) | Self::Canceled => false,
        }
    }
}

/// A cheap-to-clone idempotent producer.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    queue_full_backoff: Duration,
    client: ClientInfo,
}

impl Publisher {
    /// Creates a producer from the kit's settings.
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer_config(settings, client_id).create()?,
            queue_full_backoff: settings.producer.queue_full_backoff,
            client: ClientInfo::new(settings, client_id),
        })
    }

    /// Encodes and publishes one event under a `send {topic}` span (child of the current
    /// span, and the record's creation context), returning where the broker stored it.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Delivery, PublishError> {
        let mut record = OutgoingRecord::from_event(event)?;
        let span = self.send_span(&record);
        record.headers.inject_context(&span.context());
        let result = self.send(&record).instrument(span.clone()).await;
        spans::record_send(&span, &result);
        result
    }

    /// A `send {topic}` PRODUCER span for `record` by this producer (see [`spans`]), for a
    /// caller that sends with [`Publisher::send`] and reports with [`spans::record_send`].
    pub fn send_span(&self, record: &OutgoingRecord) -> tracing::Span {
        spans::send_span(&self.client, record)
    }

    /// The client id and bootstrap server this producer's spans name.
    pub fn client_info(&self) -> &ClientInfo {
        &self.client
    }

    /// Sends a record and waits for the broker's acknowledgement (all in-sync replicas).
    pub async fn send(&self, record: &OutgoingRecord) -> Result<Delivery, PublishError> {
        let delivery = loop {
            let mut future = FutureRecord::to(&record.topic)
                .payload(&record.payload)
                .headers(record.headers.to_owned_headers());
            if let Some(key) = &record.key {
                future = future.key(key);
            }
            match self.producer.send_result(future) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    metrics::counter!("spine_producer_queue_full_total").increment(1);
                    tokio::time::sleep(self.queue_full_backoff).await;
                }
                Err((source, _)) => {
                    return Err(PublishError::Delivery {
                        topic: record.topic.clone(),
                        source,
                    });
                }
            }
        };
        match delivery.await {
            Ok(Ok(delivery)) => Ok(delivery),
            Ok(Err((source, _))) => Err(PublishError::Delivery {
                topic: record.topic.clone(),
                source,
            }),
            Err(_) => Err(PublishError::Canceled),
        }
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }

    /// The underlying librdkafka producer, for what the kit doesn't wrap.
    pub fn inner(&self) -> &FutureProducer {
        &self.producer
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use spine_events::orders::{LineItem, OrderPlaced};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn order() -> OrderPlaced {
        OrderPlaced::new(
            uuid::Uuid::now_v7(),
            "customer-1",
            "ada@example.com",
            vec![LineItem::new("SKU-1", 1, 100)],
            "EUR",
        )
    }

    #[test]
    fn an_event_record_carries_the_standard_headers_and_the_current_trace() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let placed = order();
        let (record, trace_id) = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("POST /orders");
            let _entered = span.enter();
            let trace_id = span.context().span().span_context().trace_id();
            (OutgoingRecord::from_event(&placed).unwrap(), trace_id)
        });
        let h = &record.headers;
        assert_eq!(record.topic, "orders.events");
        assert_eq!(record.key, Some(placed.order_id.to_string().into_bytes()));
        assert_eq!(
            h.get_str(headers::EVENT_ID),
            Some(placed.event_id.to_string().as_str())
        );
        assert_eq!(h.get_str(headers::EVENT_TYPE), Some("OrderPlaced"));
        assert_eq!(h.get_str(headers::EVENT_VERSION), Some("2"));
        assert_eq!(
            h.get_str(headers::CONTENT_TYPE),
            Some(spine_events::CONTENT_TYPE)
        );
        let traceparent = h
            .get_str(headers::TRACEPARENT)
            .expect("traceparent written");
        assert!(
            traceparent.contains(&trace_id.to_string()),
            "{traceparent} vs {trace_id}"
        );
    }

    #[test]
    fn no_trace_header_is_written_outside_a_trace() {
        let record = OutgoingRecord::from_event(&order()).unwrap();
        assert_eq!(record.headers.get(headers::TRACEPARENT), None);
    }
}
