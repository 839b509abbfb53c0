//! The consumer runner: one dispatcher loop that polls, hands records to per-key lanes, runs
//! handlers concurrently, and stores offsets only behind completed effects.

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::{RunnerContext, commit_sync};
use super::handler::{Handler, Record};
use super::metrics::ConsumerMetrics;
use super::process::{Outcome, PanicInjection, Process};
use super::rate::Pacer;
use super::shared::{Done, Shared, lock};
use super::tracker::{Partition, Ticket};
use super::workers::Workers;
use crate::kafka::config::consumer_config;
use crate::kafka::headers::Headers;
use crate::kafka::producer::{PublishError, Publisher};
use crate::kafka::spans::{ClientInfo, process_span};
use crate::settings::{ConsumerSettings, KafkaSettings};

/// Most messages the dispatcher takes in one turn of its loop (see `take_ready`): enough to
/// amortise the turn, few enough that completions are taken (and slots freed) often.
const READY_BURST: usize = 64;

/// Worker threads of the lowered runtime a runner runs on: two, so that `block_in_place` in
/// the revoke has another worker to leave the record tasks to.
const LOWERED_WORKERS: usize = 2;

/// Why the runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The lower-priority runtime (`kafka.consumer.nice`) could not be started.
    #[error("cannot start the consumer runtime: {0}")]
    Runtime(std::io::Error),
    /// The member got no partition assignment (not even an empty one) within
    /// `kafka.consumer.join_timeout`: its group join is stuck. A restart gets a fresh client.
    #[error(
        "no partition assignment for group {group} within {waited:?} (kafka.consumer.join_timeout): the group join is stuck; stopping for a restart"
    )]
    NotJoined {
        /// The group.
        group: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The consumer could not be created or subscribed.
    #[error("kafka consumer setup failed: {0}")]
    Setup(#[from] KafkaError),
    /// A handler returned [`HandlerError::Fatal`](super::HandlerError::Fatal); its record was not committed.
    #[error("handler failed fatally at {topic}/{partition}@{offset}: {source:#}")]
    Fatal {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record, which will be redelivered.
        offset: i64,
        /// The handler's error.
        source: anyhow::Error,
    },
    /// A handler panicked: treated like [`HandlerError::Fatal`](super::HandlerError::Fatal) (its record is not committed, the
    /// runner stops and the process exits for a restart), with its key and slot released.
    #[error("handler panicked at {topic}/{partition}@{offset}: {message}")]
    Panic {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record, which will be redelivered.
        offset: i64,
        /// The panic's message.
        message: String,
    },
    /// A record could not be dead-lettered, so it could not be let go either.
    #[error("dead-letter publish failed for {topic}/{partition}@{offset}: {source}")]
    DeadLetter {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record, which will be redelivered.
        offset: i64,
        /// The producer's error (boxed: it is large and rare).
        source: Box<PublishError>,
    },
}

/// Runs a [`Handler`] over topics as one consumer group member.
///
/// **Guarantee: at-least-once, plus per-key order.** An offset is stored only after the
/// handler's effect succeeded or the record was dead-lettered, and never past a record still
/// held; stored offsets are committed every `commit_interval`, and synchronously on revoke and
/// on shutdown. A crash therefore redelivers, never loses: make effects idempotent (see
/// [`crate::inbox`]). Records of one key run one at a time, in offset order, retries
/// included; different keys and partitions run concurrently, up to `max_in_flight` records,
/// beyond which the runner pauses its partitions (and keeps polling, so it stays in the group).
///
/// **Steady drain.** With `max_rate` set, records start at that pace at most (after a burst of
/// a tenth of a second's worth): startable records wait for a slot, in order, and count as
/// held, so a backlog fills `max_in_flight` and the backpressure above leaves the rest to the
/// broker and librdkafka's bounded prefetch. Waiting records of a revoked partition are
/// dropped, never started.
///
/// **Faults.** An outage ([`HandlerError::Unavailable`](super::HandlerError::Unavailable)) is retried without limit and never
/// dead-lettered; while it lasts the group stalls: its partitions are paused and one record
/// at a time probes, and the first answer resumes full speed (gauge `spine_consumer_stalled`).
/// Each attempt is bounded by `handler_timeout` (a timeout is an outage). A panicking handler is
/// a fatal failure, with its key and slot released. On revoke, running records of the revoked
/// partitions start no new attempt, retry or dead letter; the revoke waits for them (up to half
/// of `max_poll_interval`, then aborts them) and stores what they finished before the partitions
/// change hands, so a record never runs on two members at once. The pause state is applied
/// explicitly to every new assignment.
pub struct ConsumerRunner<H> {
    handler: Arc<H>,
    settings: KafkaSettings,
    group: Arc<str>,
    topics: Vec<String>,
    dlq_topic: Arc<str>,
    dlq: Publisher,
    client_id: String,
    /// What the `process` spans say about this consumer.
    client: ClientInfo,
    panics: PanicInjection,
    metrics: Arc<ConsumerMetrics>,
}

impl<H: Handler> ConsumerRunner<H> {
    /// A runner for `group` over `topics`. Creates the DLQ producer; the consumer itself is
    /// created by [`ConsumerRunner::run`].
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topics: &[&str],
        handler: H,
    ) -> Result<Self, RunnerError> {
        Ok(Self {
            handler: Arc::new(handler),
            settings: settings.clone(),
            group: Arc::from(group),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            dlq_topic: Arc::from(dlq_topic(&settings.consumer, group)),
            dlq: Publisher::new(settings, &format!("{group}-dlq"))?,
            client_id: group.to_owned(),
            client: ClientInfo::new(settings, group),
            panics: PanicInjection::new(&settings.consumer),
            metrics: Arc::new(ConsumerMetrics::new(group)),
        })
    }

    fn process(&self, shared: &Arc<Shared>, stop: &CancellationToken) -> Process<H> {
        Process {
            handler: self.handler.clone(),
            client: self.client.clone(),
            retry: self.settings.consumer.retry.clone(),
            handler_timeout: self.settings.consumer.handler_timeout,
            shared: shared.clone(),
            dlq_topic: self.dlq_topic.clone(),
            dlq: self.dlq.clone(),
            stop: stop.clone(),
            panics: self.panics.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The dead-letter topic of this group: provision it with the service's topics.
    pub fn dlq_topic(&self) -> &str {
        &self.dlq_topic
    }

    /// Consumes until `shutdown` is cancelled or a handler fails fatally. On the way out it
    /// waits up to `shutdown_timeout` for running handlers, commits synchronously and leaves
    /// the group.
    ///
    /// With `kafka.consumer.nice` above 0 (the default), the dispatcher and the handlers run
    /// on a runtime of their own at that lower priority ([`crate::runtime::run_lowered`]); the
    /// caller's runtime (the edge's) only waits. The consumer itself is created here, on the
    /// caller's thread, so that librdkafka's threads (fetches, heartbeats) keep the normal
    /// priority: a member whose heartbeats starve behind a busy edge loses its partitions.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let shared = Shared::new(self.group.clone(), self.handler.batches());
        let context =
            RunnerContext::new(shared.clone(), self.settings.consumer.max_poll_interval / 2);
        let consumer: StreamConsumer<RunnerContext> =
            consumer_config(&self.settings, &self.client_id, &self.group)
                .create_with_context(context)?;
        match self.settings.consumer.nice {
            0 => self.consume(consumer, shared, shutdown).await,
            nice => crate::runtime::run_lowered(
                "spine-consumer",
                LOWERED_WORKERS,
                nice,
                self.consume(consumer, shared, shutdown),
            )
            .await
            .map_err(RunnerError::Runtime)?,
        }
    }

    async fn consume(
        self,
        consumer: StreamConsumer<RunnerContext>,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
    ) -> Result<(), RunnerError> {
        let max_rate = self.settings.consumer.max_rate;
        // A batch handler gets batches unless the group is rate-limited: a pacer releases
        // records one by one, so there it runs per record (batches of one, a partition at a
        // time).
        let max_batch = (self.handler.batches() && max_rate == 0.0)
            .then(|| self.settings.consumer.max_batch.max(1));
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        // Every outcome series exists from the start at 0, so that `increase()` in an alert
        // sees the first dead letter too (a counter born at 1 shows no increase).
        for topic in &topics {
            self.metrics.topic(topic);
        }
        metrics::gauge!("spine_consumer_max_rate", "group" => self.group.to_string()).set(max_rate);
        let rate_limited = metrics::counter!("spine_consumer_rate_limited_total",
            "group" => self.group.to_string());
        rate_limited.increment(0);
        tracing::info!(group = %self.group, topics = ?self.topics, max_rate,
            max_batch = max_batch.unwrap_or(1), "consumer started");

        let stop = shutdown.child_token();
        let (workers, handoff) = Workers::start(&self.group);
        shared.set_handoff(handoff);
        let mut dispatcher = Dispatcher {
            runner: &self,
            consumer: &consumer,
            process: Arc::new(self.process(&shared, &stop)),
            shared,
            stop,
            failure: None,
            pacer: Pacer::new(max_rate),
            rate_limited,
            max_batch,
            heads: Vec::new(),
            _workers: workers,
        };
        dispatcher.dispatch().await;
        dispatcher.drain().await;
        commit_sync(&consumer, "shutdown");
        consumer.unsubscribe();
        tracing::info!(group = %self.group, "consumer stopped");
        dispatcher.failure.map_or(Ok(()), Err)
    }
}

/// The name of a group's dead-letter topic.
pub fn dlq_topic(settings: &ConsumerSettings, group: &str) -> String {
    format!("{group}{}", settings.dlq_suffix)
}

struct Dispatcher<'a, H> {
    runner: &'a ConsumerRunner<H>,
    consumer: &'a StreamConsumer<RunnerContext>,
    /// What every record task runs, made once and shared by them.
    process: Arc<Process<H>>,
    shared: Arc<Shared>,
    /// Cancelled on shutdown or on the first failure: stops polling and interrupts retries.
    stop: CancellationToken,
    failure: Option<RunnerError>,
    /// Startable records waiting for a slot of `max_rate`; `None` when there is no limit.
    pacer: Option<Pacer>,
    /// Records that could not start at once for `max_rate`.
    rate_limited: metrics::Counter,
    /// The batch path: a partition's waiting records start together, up to this many.
    max_batch: Option<usize>,
    /// The batch path: records taken in this turn that may start (their partition runs
    /// nothing), started by [`Self::start_heads`] with the records of their partition taken
    /// after them, as one batch.
    heads: Vec<(Ticket, Record)>,
    /// The long-lived workers that run what the dispatcher starts (no task is spawned per
    /// record or batch), through `shared`'s hand-off; aborted when the dispatcher is dropped.
    _workers: Workers,
}

impl<H: Handler> Dispatcher<'_, H> {
    /// Polls and starts records until shutdown or a failure.
    ///
    /// Backpressure: at `max_in_flight` held records the dispatcher stops taking records and
    /// only waits for handlers to finish; librdkafka keeps what it has prefetched, so the next
    /// records are ready the moment a slot frees. Only when the bound holds for half of
    /// `max_poll_interval` does it pause its partitions and go on polling, so that it stays in
    /// the group; it resumes at half the bound. (Pausing at once would make librdkafka drop and
    /// refetch its prefetched batch every time a burst filled the bound.)
    ///
    /// Stall: while a dependency is down ([`HandlerError::Unavailable`](super::HandlerError::Unavailable)) it pauses at once and
    /// keeps polling; the records it holds probe one at a time (`shared::Stall`), and the first probe
    /// that gets an answer resumes it at full speed.
    ///
    /// Rate (`max_rate`): records wait for a slot in the pacer, held meanwhile, so a backlog
    /// meets the bound above; the loop wakes when the next slot is due.
    async fn dispatch(&mut self) {
        let max_in_flight = self.runner.settings.consumer.max_in_flight.max(1);
        let patience = self.runner.settings.consumer.max_poll_interval / 2;
        let in_flight =
            metrics::gauge!("spine_consumer_in_flight", "group" => self.runner.group.to_string());
        let mut full_since: Option<tokio::time::Instant> = None;
        // One stream for the whole loop (a `recv` per message registers and unregisters a
        // waker slot each time); it borrows the consumer, not `self`.
        let consumer = self.consumer;
        let mut messages = consumer.stream();
        let shared = self.shared.clone();
        loop {
            let rate_due = self.start_due();
            let held = lock(&shared.tracker).held();
            let stalled = shared.stall.is_stalled();
            if stalled && shared.tasks() == 0 && self.waiting() == 0 {
                // Nobody is left to probe (the records that met the outage were revoked or
                // finished, and none waits for a rate slot to start and probe): take records
                // again, and let the next outage stall anew.
                shared.stall.recovered(&self.runner.group);
            } else if stalled && !shared.paused() {
                self.set_paused(true);
            } else if !stalled && shared.paused() && held <= max_in_flight / 2 {
                self.set_paused(false);
            }
            in_flight.set(held as f64);
            let full = !shared.paused() && held >= max_in_flight;
            let now = tokio::time::Instant::now();
            let pause_at = if full {
                *full_since.get_or_insert(now) + patience
            } else {
                full_since = None;
                now + patience
            };
            let join_deadline = self.join_deadline();
            // The jobs this turn started go to the workers together, before the dispatcher
            // waits (module `workers`).
            shared.hand_off();
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                () = shared.wake.notified() => self.take_completions(),
                () = tokio::time::sleep_until(join_deadline.unwrap_or(now)), if join_deadline.is_some() => {
                    self.check_joined();
                }
                () = tokio::time::sleep_until(pause_at), if full => self.set_paused(true),
                // The next rate slot is due: the loop's start starts the waiting records.
                () = tokio::time::sleep_until(rate_due.unwrap_or(now)), if rate_due.is_some() => {}
                message = messages.next(), if !full => match message {
                    Some(Ok(message)) => {
                        self.on_message(&message);
                        drop(message);
                        self.take_ready(&mut messages, max_in_flight);
                        self.start_heads();
                    }
                    Some(Err(err)) => {
                        tracing::warn!(group = %self.runner.group, error = %err, "consumer error");
                    }
                    None => unreachable!("kafka streams never terminate"),
                },
            }
        }
    }

    /// Takes the messages librdkafka already holds, without waiting, up to [`READY_BURST`]
    /// and while the bound allows, so that a backlog costs one turn of the dispatcher loop
    /// per burst rather than per record. Stops at the first that is not ready, at a stall
    /// (the loop pauses first) and at shutdown.
    fn take_ready(
        &mut self,
        messages: &mut rdkafka::consumer::MessageStream<'_, RunnerContext>,
        max_in_flight: usize,
    ) {
        // A burst on the batch path forms the batches, so it may take a whole one.
        let burst = self
            .max_batch
            .map_or(READY_BURST, |max| max.max(READY_BURST));
        for _ in 0..burst {
            let shared = &self.shared;
            let full = !shared.paused() && lock(&shared.tracker).held() >= max_in_flight;
            if full || shared.stall.is_stalled() || self.stop.is_cancelled() {
                return;
            }
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => self.on_message(&message),
                Some(Some(Err(err))) => {
                    tracing::warn!(group = %self.runner.group, error = %err, "consumer error");
                }
                Some(None) | None => return,
            }
        }
    }

    /// When the join watchdog fires next, while the member waits for an assignment.
    fn join_deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self.runner.settings.consumer.join_timeout;
        if timeout.is_zero() {
            return None;
        }
        let since = self.shared.waiting_for_assignment_since()?;
        Some(tokio::time::Instant::from_std(since + timeout))
    }

    /// Stops the runner if the member still waits for an assignment past `join_timeout`.
    fn check_joined(&mut self) {
        let timeout = self.runner.settings.consumer.join_timeout;
        let Some(since) = self.shared.waiting_for_assignment_since() else {
            return;
        };
        let waited = since.elapsed();
        if timeout.is_zero() || waited < timeout {
            return;
        }
        let err = RunnerError::NotJoined {
            group: self.runner.group.to_string(),
            waited,
        };
        tracing::error!(group = %self.runner.group, error = %err, "stopping consumer");
        self.failure.get_or_insert(err);
        self.stop.cancel();
    }

    /// Waits for running handlers (bounded by `shutdown_timeout`), storing what completes.
    async fn drain(&mut self) {
        let deadline = tokio::time::sleep(self.runner.settings.consumer.shutdown_timeout);
        tokio::pin!(deadline);
        self.shared.hand_off();
        self.take_completions();
        while self.shared.tasks() > 0 {
            tokio::select! {
                () = self.shared.wake.notified() => self.take_completions(),
                () = &mut deadline => {
                    tracing::warn!(group = %self.runner.group, running = self.shared.tasks(),
                        "shutdown timeout: abandoning running handlers; their records will be redelivered");
                    break;
                }
            }
        }
        self.take_completions();
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) {
        let record = Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(Headers::from_borrowed)
                .unwrap_or_default(),
            timestamp_ms: message.timestamp().to_millis(),
            attempt: 1,
        };
        let start = lock(&self.shared.tracker).accept(record);
        if let Some((ticket, record)) = start {
            if self.max_batch.is_some() {
                // Its partition's next records may be in this turn's burst: they start with it.
                self.heads.push((ticket, record));
            } else {
                self.admit(ticket, record);
            }
        }
    }

    /// Starts the batch path's heads taken this turn, each with the records of its
    /// partition that queued behind it meanwhile (up to `max_batch` in all), so that a
    /// fetch of many records starts as batches, not as a batch of one followed by the rest.
    /// A head whose partition was revoked during the turn (the rebalance runs inside the
    /// poll) is dropped, never started: its next owner consumes it.
    fn start_heads(&mut self) {
        if self.heads.is_empty() {
            return;
        }
        let max_batch = self.max_batch.unwrap_or(1);
        let heads = std::mem::take(&mut self.heads);
        let mut batches = Vec::with_capacity(heads.len());
        {
            let mut tracker = lock(&self.shared.tracker);
            for head in heads {
                if !tracker.is_current(&head.0) {
                    continue;
                }
                let mut batch = Vec::new();
                tracker.follow(&head.0, max_batch - 1, &mut batch);
                batch.insert(0, head);
                batches.push(batch);
            }
        }
        // As in `take_completions`: a stopped runner leaves them held, to be redelivered.
        if self.stop.is_cancelled() {
            return;
        }
        for batch in batches {
            self.start_batch(batch);
        }
    }

    /// Takes every queued completion, in order: marks its records done (one tracker lock for
    /// all), stores each partition's offset once (the last it advanced to: offsets only
    /// grow, and nothing runs between the marking and the store), then starts the records
    /// that were waiting behind them, unless a failure among them stopped the runner.
    fn take_completions(&mut self) {
        let dones = self.shared.take_completions();
        if dones.is_empty() {
            return;
        }
        let max_next = self.max_batch.unwrap_or(1);
        let mut stores: Vec<(Partition, i64)> = Vec::new();
        let mut starts = Vec::new();
        {
            let mut tracker = lock(&self.shared.tracker);
            for Done { tickets, outcome } in dones {
                match outcome {
                    Outcome::Handled | Outcome::DeadLettered => {
                        let Some(first) = tickets.first() else {
                            continue;
                        };
                        let (next, store) = tracker.complete_many(&tickets, max_next);
                        if let Some(offset) = store {
                            match stores.iter_mut().find(|(p, _)| *p == first.partition) {
                                Some((_, stored)) => *stored = offset,
                                None => stores.push((first.partition.clone(), offset)),
                            }
                        }
                        if !next.is_empty() {
                            starts.push(next);
                        }
                    }
                    Outcome::Abandoned => {}
                    Outcome::Failed(err) => {
                        tracing::error!(group = %self.runner.group, error = %err, "stopping consumer");
                        self.failure.get_or_insert(err);
                        self.stop.cancel();
                    }
                }
            }
        }
        for (partition, offset) in &stores {
            self.store(partition, *offset);
        }
        // Records not started stay held, unstored: a stopped runner leaves them to be
        // redelivered.
        if self.stop.is_cancelled() {
            return;
        }
        for next in starts {
            if self.max_batch.is_some() {
                self.start_batch(next);
            } else {
                for (ticket, record) in next {
                    self.admit(ticket, record);
                }
            }
        }
    }

    /// A record that may start as far as its key is concerned: starts it now, or, under
    /// `max_rate` without a free slot, queues it for [`Self::start_due`].
    fn admit(&mut self, ticket: Ticket, record: Record) {
        if self.max_batch.is_some() {
            return self.start_batch(vec![(ticket, record)]);
        }
        if self.runner.handler.skips(&record) {
            // Nothing to do: done now, through the completions like any record, so that its
            // offset is stored in order and its key's next record follows.
            self.runner
                .metrics
                .topic(&record.topic)
                .skipped
                .increment(1);
            self.shared.finish(Done {
                tickets: ticket.into(),
                outcome: Outcome::Handled,
            });
            return;
        }
        let Some(pacer) = &mut self.pacer else {
            return self.start(ticket, record);
        };
        match pacer.offer(ticket, record, tokio::time::Instant::now()) {
            Some((ticket, record)) => self.start(ticket, record),
            None => self.rate_limited.increment(1),
        }
    }

    /// Starts the waiting records whose rate slots are due; returns when the next one is due,
    /// if any waits. Runs only in the dispatcher, never during a revoke (which runs inside its
    /// poll), so a record found current here is still assigned when it starts.
    fn start_due(&mut self) -> Option<tokio::time::Instant> {
        let pacer = self.pacer.as_mut()?;
        if pacer.waiting() == 0 || self.stop.is_cancelled() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut due = Vec::new();
        {
            let tracker = lock(&self.shared.tracker);
            // Every current waiting record is held, so more waiting than held means a revoke
            // left records behind: drop them now rather than as they come up, so that what
            // waits stays within `max_in_flight`.
            if pacer.waiting() > tracker.held() {
                pacer.drop_stale(|ticket| tracker.is_current(ticket));
            }
            while let Some(next) = pacer.next(now, |ticket| tracker.is_current(ticket)) {
                due.push(next);
            }
        }
        let wake_at = pacer.wake_at(now);
        for (ticket, record) in due {
            self.start(ticket, record);
        }
        wake_at
    }

    /// Records waiting for a rate slot.
    fn waiting(&self) -> usize {
        self.pacer.as_ref().map_or(0, Pacer::waiting)
    }

    fn start(&mut self, ticket: Ticket, record: Record) {
        let running = self.shared.begin(&ticket.partition);
        let process = self.process.clone();
        self.shared.run(Box::pin(async move {
            // The span is made in the job, on a worker, so that the dispatcher, which every
            // record passes through one at a time, does not pay for it.
            let span = process_span(&process.client, &process.shared.group, &record);
            let outcome = process.run(record, &running.work).instrument(span).await;
            // Queued before `running` is dropped, so that a revoke that saw this record end
            // also finds its completion.
            process.shared.finish(Done {
                tickets: ticket.into(),
                outcome,
            });
            drop(running);
        }));
    }

    /// Starts a batch: records of one partition, in offset order. A batch of one takes the
    /// per-record path.
    fn start_batch(&mut self, mut items: Vec<(Ticket, Record)>) {
        if items.len() == 1 {
            let (ticket, record) = items.pop().expect("one item");
            return self.start(ticket, record);
        }
        let Some((first, _)) = items.first() else {
            return;
        };
        let running = self.shared.begin(&first.partition);
        let process = self.process.clone();
        self.shared.run(Box::pin(async move {
            // The spans are made in the job, not in the dispatcher (see `start`).
            let mut tickets = Vec::with_capacity(items.len());
            let mut records = Vec::with_capacity(items.len());
            for (ticket, record) in items {
                let span = process_span(&process.client, &process.shared.group, &record);
                tickets.push(ticket);
                records.push((record, span));
            }
            let dones = process.run_batch(tickets, records, &running.work).await;
            process.shared.finish_all(dones);
            drop(running);
        }));
    }

    fn store(&self, partition: &Partition, next_offset: i64) {
        store_offset(self.consumer, partition, next_offset);
    }

    fn set_paused(&mut self, paused: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        // Recorded first: an assignment that arrives from now on is paused or resumed to match.
        self.shared.set_paused(paused);
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                tracing::debug!(group = %self.runner.group, paused, "partitions paused or resumed");
            }
            Err(err) => tracing::warn!(error = %err, paused, "cannot pause/resume partitions"),
        }
    }
}

/// Stores `next_offset` for `partition` (committed with the next commit). Fails harmlessly for
/// a partition revoked meanwhile: its next owner redelivers.
pub(super) fn store_offset<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    partition: &Partition,
    next_offset: i64,
) {
    let mut list = TopicPartitionList::new();
    if let Err(err) = list.add_partition_offset(
        &partition.topic,
        partition.partition,
        Offset::Offset(next_offset),
    ) {
        tracing::warn!(error = %err, "cannot build offset list");
        return;
    }
    if let Err(err) = consumer.store_offsets(&list) {
        tracing::debug!(error = %err, topic = %partition.topic, partition = partition.partition,
            "offset not stored (partition revoked?)");
    }
}
