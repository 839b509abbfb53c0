//! One record's life in the runner: attempts (bounded in time, panics caught), retries by
//! class, the stall on an outage, and the dead letter.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::dlq::{DeadLetterReason, dead_letter};
use super::handler::{Batch, Handler, HandlerError, Record};
use super::metrics::{ConsumerMetrics, TopicMetrics};
use super::retry::backoff;
use super::runner::RunnerError;
use super::shared::{Done, PartitionWork, Shared};
use super::tracker::Ticket;
use crate::kafka::producer::Publisher;
use crate::kafka::spans::{self, ClientInfo};
use crate::settings::{ConsumerSettings, RetrySettings};

/// How a record's processing ended.
pub(super) enum Outcome {
    Handled,
    DeadLettered,
    /// Shutdown or a revoke interrupted it; the offset is not stored, so the record is
    /// redelivered (to this member or the partition's next owner).
    Abandoned,
    Failed(RunnerError),
}

/// What a record task needs: made once per run of the runner and shared by its tasks.
#[derive(Clone)]
pub(super) struct Process<H> {
    pub handler: Arc<H>,
    /// What the `process` spans say about this consumer.
    pub client: ClientInfo,
    pub retry: RetrySettings,
    pub handler_timeout: Duration,
    pub shared: Arc<Shared>,
    pub dlq_topic: Arc<str>,
    pub dlq: Publisher,
    /// Shutdown: no new attempt starts.
    pub stop: CancellationToken,
    pub panics: PanicInjection,
    /// The per-topic metric handles.
    pub metrics: Arc<ConsumerMetrics>,
}

/// The test-only `inject_panic_every`: every n-th record's first attempt panics.
#[derive(Clone)]
pub(super) struct PanicInjection {
    every: u64,
    seen: Arc<AtomicU64>,
}

impl PanicInjection {
    pub fn new(settings: &ConsumerSettings) -> Self {
        Self {
            every: settings.inject_panic_every,
            seen: Arc::default(),
        }
    }

    fn fire(&self, record: &Record) -> bool {
        self.every > 0
            && record.attempt == 1
            && (self.seen.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.every)
    }
}

/// How one attempt ended.
enum Attempt {
    Returned(Result<(), HandlerError>),
    Panicked(String),
    Aborted,
}

impl<H: Handler> Process<H> {
    pub async fn run(&self, mut record: Record, work: &PartitionWork) -> Outcome {
        let group = &self.shared.group;
        let stall = &self.shared.stall;
        let metrics = self.metrics.topic(&record.topic);
        let max_attempts = self.retry.max_attempts.max(1);
        // Attempts that failed with `Retryable`; outages do not count against the budget.
        let mut failures = 0;
        loop {
            if self.stop.is_cancelled() || work.cancel.is_cancelled() {
                return Outcome::Abandoned;
            }
            // While the group is stalled, one record at a time probes the dependency; the
            // probe holds the lock through its backoff, so probes are spaced by it.
            let Some(probe) = stall.admit(&work.cancel).await else {
                return Outcome::Abandoned;
            };
            let started = Instant::now();
            let result = match self.attempt(&record, work).await {
                Attempt::Returned(result) => result,
                Attempt::Aborted => return Outcome::Abandoned,
                Attempt::Panicked(message) => {
                    spans::record_error(&tracing::Span::current(), "panic");
                    return Outcome::Failed(RunnerError::Panic {
                        topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        message,
                    });
                }
            };
            self.account(&metrics, started, &result, probe.is_some());
            let retry = match &result {
                Err(err @ HandlerError::Unavailable(source)) => {
                    let outages = stall.failed(group, source);
                    self.shared.wake.notify_one();
                    Some((err, backoff(&self.retry, outages)))
                }
                Err(err @ HandlerError::Retryable(_)) if failures + 1 < max_attempts => {
                    failures += 1;
                    Some((err, backoff(&self.retry, failures)))
                }
                _ => None,
            };
            if let Some((err, delay)) = retry {
                metrics.retries.increment(1);
                tracing::warn!(attempt = record.attempt, ?delay, class = err.kind(), error = %err, "retrying record");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.stop.cancelled() => return Outcome::Abandoned,
                    () = work.cancel.cancelled() => return Outcome::Abandoned,
                }
                drop(probe);
                record.attempt += 1;
                continue;
            }
            drop(probe);
            let (reason, err) = match result {
                Ok(()) => {
                    metrics.handled.increment(1);
                    return Outcome::Handled;
                }
                // A partition given away is not ours to dead-letter: its next owner decides.
                Err(_) if work.cancel.is_cancelled() => return Outcome::Abandoned,
                Err(HandlerError::Retryable(err)) => (DeadLetterReason::RetriesExhausted, err),
                Err(HandlerError::Poison(err)) => (DeadLetterReason::Poison, err),
                Err(HandlerError::Fatal(source)) => {
                    spans::record_error(&tracing::Span::current(), "fatal");
                    return Outcome::Failed(RunnerError::Fatal {
                        topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        source,
                    });
                }
                Err(HandlerError::Unavailable(_)) => unreachable!("outages are retried above"),
            };
            // The `process` span (current here) ends failed, with the class that ended it.
            let class = match reason {
                DeadLetterReason::Poison => "poison",
                DeadLetterReason::RetriesExhausted => "retryable",
            };
            spans::record_error(&tracing::Span::current(), class);
            return self.dead_letter(&record, reason, &err, work).await;
        }
    }

    /// A batch's life: records of one partition, in offset order, applied by one
    /// `handle_batch` call, all or nothing (see [`super::BatchHandler`]). An outage retries the
    /// whole batch (stalling the group as a record's outage does); a poison or retryable error
    /// splits it, and each record then runs alone, in order, through [`Process::run`], so that
    /// only the bad one is dead-lettered; a fatal error or a panic stops the runner with none
    /// of the batch stored. Returns the completions to queue, a failure before the records
    /// handled (so the dispatcher stops before it starts what follows them); records abandoned
    /// to a revoke or shutdown are not in them.
    pub async fn run_batch(
        &self,
        tickets: Vec<Ticket>,
        mut batch: Vec<(Record, tracing::Span)>,
        work: &PartitionWork,
    ) -> Vec<Done> {
        let group = &self.shared.group;
        let stall = &self.shared.stall;
        let metrics = self.metrics.topic(&batch[0].0.topic);
        loop {
            if self.stop.is_cancelled() || work.cancel.is_cancelled() {
                return Vec::new();
            }
            let Some(probe) = stall.admit(&work.cancel).await else {
                return Vec::new();
            };
            let started = Instant::now();
            let result = match self.attempt_batch(&batch, work).await {
                Attempt::Returned(result) => result,
                Attempt::Aborted => return Vec::new(),
                Attempt::Panicked(message) => {
                    let (first, span) = &batch[0];
                    spans::record_error(span, "panic");
                    let failure = RunnerError::Panic {
                        topic: first.topic.clone(),
                        partition: first.partition,
                        offset: first.offset,
                        message,
                    };
                    return vec![failed(tickets, failure)];
                }
            };
            self.account(&metrics, started, &result, probe.is_some());
            match result {
                Ok(()) => {
                    metrics.handled.increment(batch.len() as u64);
                    return vec![Done {
                        tickets: tickets.into(),
                        outcome: Outcome::Handled,
                    }];
                }
                Err(HandlerError::Unavailable(source)) => {
                    let outages = stall.failed(group, &source);
                    self.shared.wake.notify_one();
                    let delay = backoff(&self.retry, outages);
                    metrics.retries.increment(1);
                    tracing::warn!(records = batch.len(), attempt = batch[0].0.attempt, ?delay,
                        class = "unavailable", error = %format!("{source:#}"), "retrying batch");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Vec::new(),
                        () = work.cancel.cancelled() => return Vec::new(),
                    }
                    drop(probe);
                    for (record, _) in &mut batch {
                        record.attempt += 1;
                    }
                }
                Err(HandlerError::Fatal(source)) => {
                    let (first, span) = &batch[0];
                    spans::record_error(span, "fatal");
                    let failure = RunnerError::Fatal {
                        topic: first.topic.clone(),
                        partition: first.partition,
                        offset: first.offset,
                        source: source.context(format!("a batch of {} records", batch.len())),
                    };
                    return vec![failed(tickets, failure)];
                }
                Err(err) => {
                    drop(probe);
                    return self.split(tickets, batch, &err, work).await;
                }
            }
        }
    }

    /// Accounts for one attempt (of a record or a batch): its time and error class, and, for
    /// a probe that got an answer other than an outage, the end of the stall.
    fn account(
        &self,
        metrics: &TopicMetrics,
        started: Instant,
        result: &Result<(), HandlerError>,
        probed: bool,
    ) {
        metrics
            .handler_seconds
            .record(started.elapsed().as_secs_f64());
        if let Err(err) = result {
            metrics.error(err).increment(1);
        }
        if probed && !matches!(result, Err(HandlerError::Unavailable(_))) {
            self.shared.stall.recovered(&self.shared.group);
            self.shared.wake.notify_one();
        }
    }

    /// Runs a failed batch's records one at a time, in order, each through the per-record
    /// path (its own retries and dead letter), stopping at the first record abandoned or
    /// failed: what follows it must not run before it.
    async fn split(
        &self,
        tickets: Vec<Ticket>,
        batch: Vec<(Record, tracing::Span)>,
        err: &HandlerError,
        work: &PartitionWork,
    ) -> Vec<Done> {
        tracing::info!(records = batch.len(), class = err.kind(), error = %err,
            "batch failed: running its records one at a time");
        metrics::counter!("spine_consumer_batch_splits_total", "group" => self.shared.group.to_string())
            .increment(1);
        let mut handled = Vec::with_capacity(tickets.len());
        let mut dones = Vec::new();
        for (ticket, (mut record, span)) in tickets.into_iter().zip(batch) {
            // The batch's attempt was this record's too.
            record.attempt += 1;
            match self.run(record, work).instrument(span).await {
                Outcome::Handled | Outcome::DeadLettered => handled.push(ticket),
                Outcome::Abandoned => break,
                Outcome::Failed(failure) => {
                    dones.push(Done {
                        tickets: ticket.into(),
                        outcome: Outcome::Failed(failure),
                    });
                    break;
                }
            }
        }
        if !handled.is_empty() {
            dones.push(Done {
                tickets: handled.into(),
                outcome: Outcome::Handled,
            });
        }
        dones
    }

    /// One `handle_batch` call: like [`Process::attempt`], for a batch.
    async fn attempt_batch(
        &self,
        batch: &[(Record, tracing::Span)],
        work: &PartitionWork,
    ) -> Attempt {
        // Every record counts toward the injection period, as it would one by one.
        let inject = batch
            .iter()
            .filter(|(record, _)| self.panics.fire(record))
            .count()
            > 0;
        let records: Vec<&Record> = batch.iter().map(|(record, _)| record).collect();
        self.bounded(
            inject,
            &records,
            self.handler.handle_batch(&Batch::new(batch)),
            work,
        )
        .await
    }

    /// One call of the handler, bounded by `handler_timeout` (a hung dependency is an outage),
    /// with a panic caught as the record's fatal failure, and dropped if a revoke aborts it.
    async fn attempt(&self, record: &Record, work: &PartitionWork) -> Attempt {
        let inject = self.panics.fire(record);
        self.bounded(inject, &[record], self.handler.handle(record), work)
            .await
    }

    /// Runs `call` for `records` (after resolving their schema ids) within `handler_timeout`,
    /// catching a panic (`inject`: the test-only injected one), dropped if a revoke aborts it.
    async fn bounded(
        &self,
        inject: bool,
        records: &[&Record],
        call: impl Future<Output = Result<(), HandlerError>>,
        work: &PartitionWork,
    ) -> Attempt {
        let call = AssertUnwindSafe(async {
            assert!(
                !inject,
                "injected panic (kafka.consumer.inject_panic_every = {})",
                self.panics.every
            );
            // A Confluent-framed record's schema id is resolved with the registry first, so
            // that the handler's synchronous decode finds it (a registry outage is an outage).
            for record in records {
                crate::schemas::resolve(record.payload.as_deref()).await?;
            }
            call.await
        })
        .catch_unwind();
        tokio::select! {
            biased;
            () = work.abort.cancelled() => Attempt::Aborted,
            result = tokio::time::timeout(self.handler_timeout, call) => match result {
                Err(_) => Attempt::Returned(Err(HandlerError::Unavailable(anyhow::anyhow!(
                    "handler attempt timed out after {:?}", self.handler_timeout
                )))),
                Ok(Err(panic)) => Attempt::Panicked(panic_message(&*panic)),
                Ok(Ok(result)) => Attempt::Returned(result),
            },
        }
    }

    async fn dead_letter(
        &self,
        record: &Record,
        reason: DeadLetterReason,
        err: &anyhow::Error,
        work: &PartitionWork,
    ) -> Outcome {
        let error = format!("{err:#}");
        tracing::error!(
            reason = reason.as_str(),
            attempts = record.attempt,
            error,
            "dead-lettering record"
        );
        let letter = dead_letter(&self.dlq_topic, &self.shared.group, record, reason, &error);
        // The producer already retries inside `delivery.timeout`. A broker still unreachable
        // after that is an outage like any other: stall and try again. Any other failure means
        // the record can be neither handled nor let go: stop rather than drop it.
        let mut outages = 0;
        // The letter keeps the original trace headers (the replay tool links to them), so its
        // `send` span, a child of the `process` span, links to that creation context instead
        // of replacing it.
        let original = letter
            .headers
            .extract_context()
            .span()
            .span_context()
            .clone();
        loop {
            let span = self.dlq.send_span(&letter);
            span.add_link(original.clone());
            let result = self.dlq.send(&letter).instrument(span.clone()).await;
            spans::record_send(&span, &result);
            match result {
                Ok(_) => {
                    if outages > 0 {
                        self.shared.stall.recovered(&self.shared.group);
                        self.shared.wake.notify_one();
                    }
                    self.metrics.topic(&record.topic).dead_lettered.increment(1);
                    return Outcome::DeadLettered;
                }
                Err(source) if source.is_outage() => {
                    let err = anyhow::Error::new(source).context("dead-letter publish");
                    outages = self.shared.stall.failed(&self.shared.group, &err);
                    self.shared.wake.notify_one();
                    tokio::select! {
                        () = tokio::time::sleep(backoff(&self.retry, outages)) => {}
                        () = self.stop.cancelled() => return Outcome::Abandoned,
                        () = work.cancel.cancelled() => return Outcome::Abandoned,
                    }
                }
                Err(source) => {
                    return Outcome::Failed(RunnerError::DeadLetter {
                        topic: record.topic.clone(),
                        partition: record.partition,
                        offset: record.offset,
                        source: Box::new(source),
                    });
                }
            }
        }
    }
}

/// A failure that stops the runner, for the records it leaves unstored.
fn failed(tickets: Vec<Ticket>, failure: RunnerError) -> Done {
    Done {
        tickets: tickets.into(),
        outcome: Outcome::Failed(failure),
    }
}

/// The message a panic was raised with.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
