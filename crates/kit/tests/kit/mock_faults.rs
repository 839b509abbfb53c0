//! Fault injection with librdkafka's own mock cluster (`rdkafka::mocking`), not a real broker:
//! it can fail requests and take brokers down on demand, which tansu cannot. Labelled as such
//! in every test name.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use spine_kit::kafka::consumer::{HandlerError, Record, RunnerError};
use spine_kit::kafka::{Headers, OutgoingRecord, Publisher};
use spine_kit::settings::KafkaSettings;

use crate::support::*;

fn mock_settings(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
) -> KafkaSettings {
    let mut s = settings();
    s.bootstrap_servers = mock.bootstrap_servers();
    s.producer.delivery_timeout = Duration::from_secs(5);
    s
}

fn record(topic: &str, payload: &[u8]) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.to_owned(),
        key: Some(b"order-1".to_vec()),
        payload: payload.to_vec(),
        headers: Headers::new(),
    }
}

/// The high watermark of partition 0 of `topic`; an error when the cluster does not answer
/// within 5 s (a loaded machine), which a poll treats as "not yet".
fn high_watermark(settings: &KafkaSettings, topic: &str) -> Result<i64, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .create()?;
    Ok(consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))?
        .1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_transient_produce_errors_are_retried_without_duplicates() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let settings = mock_settings(&mock);
    let publisher = Publisher::new(&settings, "mock-producer").unwrap();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );

    let first = publisher
        .send(&record("orders", b"1"))
        .await
        .expect("retried to success");
    let second = publisher.send(&record("orders", b"2")).await.unwrap();

    assert_eq!((first.offset, second.offset), (0, 1));
    assert_eq!(
        high_watermark(&settings, "orders").unwrap(),
        2,
        "no duplicate was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_publish_waits_out_a_broker_outage() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let mut settings = mock_settings(&mock);
    settings.producer.delivery_timeout = Duration::from_secs(30);
    let publisher = Publisher::new(&settings, "mock-producer").unwrap();
    publisher.send(&record("orders", b"warm-up")).await.unwrap();

    mock.broker_down(1).unwrap();
    let pending = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.send(&record("orders", b"during outage")).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "no acknowledgement while the broker is down"
    );
    mock.broker_up(1).unwrap();

    let delivery = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("delivered after the broker came back")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.offset, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_record_that_cannot_be_dead_lettered_stops_the_runner_uncommitted() {
    let mock = MockCluster::new(1).unwrap();
    let settings = mock_settings(&mock);
    let (topic, group) = (unique("topic"), unique("group"));
    mock.create_topic(&topic, 1, 1).unwrap();
    mock.create_topic(
        &spine_kit::kafka::consumer::dlq_topic(&settings.consumer, &group),
        1,
        1,
    )
    .unwrap();
    let publisher = Publisher::new(&settings, "mock-producer").unwrap();
    publisher.send(&record(&topic, b"poison")).await.unwrap();
    // From now on every produce fails: the DLQ is unreachable.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
    );

    let runner = spine_kit::kafka::consumer::ConsumerRunner::new(
        &settings,
        &group,
        &[&topic],
        handler((), |(), _r: Record| async {
            Err(HandlerError::poison(anyhow::anyhow!("bad record")))
        }),
    )
    .unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        runner.run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("the runner stops by itself");

    match result {
        Err(RunnerError::DeadLetter { offset, .. }) => assert_eq!(offset, 0),
        other => panic!("expected a dead-letter failure, got {other:?}"),
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        committed.find_partition(&topic, 0).unwrap().offset(),
        rdkafka::Offset::Invalid,
        "the poison record's offset was not committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cluster_a_dead_letter_waits_out_a_broker_outage_instead_of_stopping() {
    init_test_log();
    let mock = MockCluster::new(1).unwrap();
    let mut settings = mock_settings(&mock);
    let (topic, group) = (unique("topic"), unique("group"));
    let dlq = spine_kit::kafka::consumer::dlq_topic(&settings.consumer, &group);
    mock.create_topic(&topic, 1, 1).unwrap();
    mock.create_topic(&dlq, 1, 1).unwrap();
    // The poison record goes out with the default delivery timeout: a fresh mock cluster on a
    // loaded machine can take longer than the runner's 1 s below to take its first write.
    let publisher = Publisher::new(&settings, "mock-producer").unwrap();
    publisher.send(&record(&topic, b"poison")).await.unwrap();
    settings.producer.delivery_timeout = Duration::from_secs(1);
    // Produce requests fail with a retriable error for a few seconds' worth of retries: each
    // dead-letter send times out (MessageTimedOut after delivery.timeout), an outage. A send
    // makes three or four requests in its second, so about four sends time out (40 errors
    // took 15 s here, which a loaded CI machine could stretch past the wait below).
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 12],
    );

    let running = spawn_mock_runner(&settings, &group, &topic);
    assert!(
        eventually(Duration::from_secs(60), || high_watermark(&settings, &dlq)
            == Ok(1))
        .await,
        "the record reaches the DLQ once the broker takes writes again"
    );
    assert!(!running.task.is_finished(), "the runner kept going");
    running.stop().await.unwrap();
}

fn spawn_mock_runner(settings: &KafkaSettings, group: &str, topic: &str) -> Running {
    let runner = spine_kit::kafka::consumer::ConsumerRunner::new(
        settings,
        group,
        &[topic],
        handler((), |(), _r: Record| async {
            Err(HandlerError::poison(anyhow::anyhow!("bad record")))
        }),
    )
    .unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(runner.run(token.clone()));
    Running { token, task }
}
