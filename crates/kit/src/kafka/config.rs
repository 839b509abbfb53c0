//! librdkafka client configuration built from [`KafkaSettings`]: one place for the properties
//! that make the kit's guarantees hold.

use rdkafka::ClientConfig;

use crate::settings::KafkaSettings;

/// Properties common to every client: bootstrap servers, client id and passthrough extras.
pub fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set(
            "client.id",
            settings.client_id.as_deref().unwrap_or(client_id),
        )
        // Our events are small; keep librdkafka's logs out of ours unless asked for.
        .set("log_level", "4");
    for (key, value) in &settings.librdkafka {
        config.set(key, value);
    }
    config
}

/// A producer that never loses or duplicates a record it acknowledged: `acks=all`,
/// idempotence (which also keeps per-partition order across retries), and a bounded delivery
/// timeout so that a dead broker surfaces as an error rather than a hang.
pub fn producer_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = base_config(settings, client_id);
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", millis(settings.producer.linger))
        .set(
            "delivery.timeout.ms",
            millis(settings.producer.delivery_timeout),
        );
    reapply_extras(&mut config, settings);
    config
}

/// librdkafka's `fetch.queue.backoff.ms` for the kit's consumers (see [`consumer_config`]).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// A consumer that stores offsets only when the kit says so (after the effect) and commits them
/// in the background and synchronously on revoke and shutdown.
pub fn consumer_config(settings: &KafkaSettings, client_id: &str, group_id: &str) -> ClientConfig {
    let consumer = &settings.consumer;
    let mut config = base_config(settings, client_id);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", millis(consumer.commit_interval))
        .set("auto.offset.reset", &consumer.auto_offset_reset)
        .set("max.poll.interval.ms", millis(consumer.max_poll_interval))
        .set("session.timeout.ms", millis(consumer.session_timeout))
        .set(
            "heartbeat.interval.ms",
            millis(consumer.session_timeout / 3),
        )
        .set("statistics.interval.ms", "5000")
        // When the prefetch queue is full (`queued.max.messages.kbytes`, 64 MiB), librdkafka
        // waits this long before it fetches again; its default, 1 s, left a consumer that drains
        // the queue faster than that idle for the rest of the second (the kit's consumer ran
        // at a fifth of its speed in `kit-throughput`). With a queue that stays full, 20 ms is
        // a local check 50 times a second per partition, no request to the broker.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set(
            "partition.assignment.strategy",
            &consumer.assignment_strategy,
        );
    if let Some(id) = &consumer.group_instance_id {
        // One member per group and process: the group id keeps two runners of one process
        // apart.
        config.set("group.instance.id", format!("{id}-{group_id}"));
    }
    reapply_extras(&mut config, settings);
    config
}

/// Extras win over the kit's choices, so an operator can still tune anything.
fn reapply_extras(config: &mut ClientConfig, settings: &KafkaSettings) {
    for (key, value) in &settings.librdkafka {
        config.set(key, value);
    }
}

fn millis(duration: std::time::Duration) -> String {
    duration.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_refetches_soon_after_a_full_prefetch_queue_unless_the_operator_says_otherwise() {
        let mut settings = KafkaSettings::default();
        let config = consumer_config(&settings, "svc", "group");
        assert_eq!(
            config.get("fetch.queue.backoff.ms"),
            Some(FETCH_QUEUE_BACKOFF_MS)
        );
        settings
            .librdkafka
            .insert("fetch.queue.backoff.ms".into(), "500".into());
        let config = consumer_config(&settings, "svc", "group");
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("500"));
    }
}
