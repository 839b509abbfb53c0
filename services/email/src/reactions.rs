//! Email reacts to orders' outcomes: OrderConfirmed and OrderRejected each send one mail.
//!
//! The flow per event: skip it if `sent_emails` has its id; else render, hand the mail over,
//! note the hand-over in memory, and then record it and enqueue EmailSent in one transaction.
//! When the recording fails, the runner retries the record, and the retry finds the note and
//! only records: a failing database never makes the mail go out twice. What memory cannot cover
//! is a process that dies between the hand-over and the commit: the redelivery sends the mail
//! again, with the same Message-ID (derived from the event id), so receivers can drop it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use spine_events::Event;
use spine_events::orders::{OrderConfirmed, OrderRejected};
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};
use uuid::Uuid;

use crate::mailer::{MailError, Mailer, build_message};
use crate::store::{EmailStore, Recorded, StoreError};
use crate::templates::{self, Mail};

/// The handler of `orders.events`.
pub struct OrderMails {
    store: EmailStore,
    mailer: Arc<dyn Mailer>,
    from: Mailbox,
    handed_over: HandedOver,
}

impl OrderMails {
    /// Reactions sending through `mailer` from `from` and recording in `store`.
    pub fn new(store: EmailStore, mailer: Arc<dyn Mailer>, from: Mailbox) -> Self {
        Self {
            store,
            mailer,
            from,
            handed_over: HandedOver::default(),
        }
    }

    #[tracing::instrument(skip_all, fields(order.id = %mail.order_id, event.id = %mail.event_id, template = mail.template))]
    async fn deliver(&self, mail: Mail) -> Result<(), HandlerError> {
        if self.handed_over.contains(mail.event_id) {
            // An earlier attempt handed the mail over and then failed to record it: record only.
            tracing::info!("mail handed over before; recording it");
        } else {
            // Records of one key (order) never run concurrently, so a redelivery cannot race
            // this check; a second replica after a rebalance can, which `record` tolerates.
            if self
                .store
                .already_sent(mail.event_id)
                .await
                .map_err(classify_store)?
            {
                metrics::counter!("emails_duplicates_total", "template" => mail.template)
                    .increment(1);
                tracing::debug!("already sent; skipped");
                return Ok(());
            }
            let sent = match build_message(&self.from, &mail) {
                Ok(message) => self.mailer.send(&mail, message).await,
                Err(err) => Err(err),
            };
            if let Err(err) = sent {
                let kind = match err {
                    MailError::Transient(_) => "transient",
                    MailError::Permanent(_) => "permanent",
                };
                metrics::counter!("emails_failed_total", "template" => mail.template, "kind" => kind)
                    .increment(1);
                tracing::warn!(error = %err, kind, "mail not sent");
                return Err(classify_mail(err));
            }
            // No await between the accept and this note: a cancelled attempt either never got
            // the accept or has noted it.
            self.handed_over.insert(mail.event_id);
        }
        let recorded = self.store.record(&mail).await;
        if recorded.is_ok() {
            self.handed_over.remove(mail.event_id);
        }
        match recorded {
            Ok(Recorded::New) => {
                metrics::counter!("emails_sent_total", "template" => mail.template).increment(1);
                tracing::info!(recipient = %mail.recipient, "mail sent");
                Ok(())
            }
            Ok(Recorded::Duplicate) => Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "mail handed over but not recorded; the retry records only");
                Err(classify_store(err))
            }
        }
    }
}

impl Handler for OrderMails {
    /// OrderPlaced and any other fact but an outcome: no mail, so no task and no `max_rate`
    /// slot (an order is two records on the topic; only one is mailed).
    fn skips(&self, record: &Record) -> bool {
        not_mailed(record.payload.as_deref().unwrap_or_default())
    }

    async fn handle(&self, record: &Record) -> Result<(), HandlerError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        let mail = match spine_events::peek(payload)?.name() {
            OrderConfirmed::NAME => templates::order_confirmed(&record.decode()?),
            OrderRejected::NAME => templates::order_rejected(&record.decode()?),
            _ => return Ok(()), // OrderPlaced and the like: not ours to mail
        };
        self.deliver(mail).await
    }
}

/// Whether `payload` is a fact that gets no mail. An undecodable one is not skipped: the
/// handler dead-letters it.
fn not_mailed(payload: &[u8]) -> bool {
    spine_events::peek(payload)
        .is_ok_and(|event| !matches!(event.name(), OrderConfirmed::NAME | OrderRejected::NAME))
}

/// A mail that was not handed over: the server (or disk) being unable to take mail is an
/// outage, retried without limit and never dead-lettered; a mail the server refuses for good is
/// poison.
fn classify_mail(err: MailError) -> HandlerError {
    match err {
        MailError::Transient(_) => HandlerError::unavailable(err),
        MailError::Permanent(_) => HandlerError::poison(err),
    }
}

/// A mail handed over but not recorded. A database outage is `Unavailable`, any other database
/// error `Retryable`; neither resends the mail (see [`HandedOver`]).
fn classify_store(err: StoreError) -> HandlerError {
    match err {
        StoreError::Db(err) if spine_kit::db::is_outage(&err) => HandlerError::unavailable(err),
        StoreError::Db(err) => HandlerError::retryable(err),
        // Our own event not encoding is a bug in this build: stop uncommitted, restart, fix.
        err @ StoreError::Encode(_) => HandlerError::fatal(err),
    }
}

/// The event ids whose mail the server accepted but whose recording has not committed yet, so
/// that a retry of the record records without sending again.
///
/// In memory, on purpose: the failure it covers is the database's, so the database cannot hold
/// it. An id stays only while its recording keeps failing; one that is never retried here (the
/// record dead-lettered after its retries, or its partition moved to another member) is
/// forgotten after [`HandedOver::TTL`].
#[derive(Default)]
struct HandedOver(Mutex<HashMap<Uuid, Instant>>);

impl HandedOver {
    /// Longer than any retry of one record on this member, short enough to bound the map.
    const TTL: Duration = Duration::from_secs(24 * 3600);

    fn contains(&self, id: Uuid) -> bool {
        self.lock().contains_key(&id)
    }

    fn insert(&self, id: Uuid) {
        let mut ids = self.lock();
        let now = Instant::now();
        ids.retain(|_, at| now.duration_since(*at) < Self::TTL);
        ids.insert(id, now);
    }

    fn remove(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        // The map stays consistent whatever panicked while holding it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outcomes_are_mailed_and_an_undecodable_record_is_not_skipped() {
        let placed = spine_events::orders::OrderPlaced::new(
            uuid::Uuid::now_v7(),
            "customer",
            "someone@example.com",
            vec![spine_events::orders::LineItem::new("SKU", 1, 100)],
            "EUR",
        );
        let encode = |bytes: Result<Vec<u8>, _>| bytes.unwrap();
        assert!(not_mailed(&encode(spine_events::encode(&placed))));
        assert!(!not_mailed(&encode(spine_events::encode(
            &OrderConfirmed::of(&placed)
        ))));
        assert!(!not_mailed(&encode(spine_events::encode(
            &OrderRejected::of(&placed, "short")
        ))));
        assert!(
            !not_mailed(b"not avro"),
            "poison goes to the handler, and the DLQ"
        );
    }

    #[test]
    fn a_server_that_cannot_take_mail_now_is_an_outage_and_a_refused_mail_poison() {
        let transient = MailError::Transient("connection refused".into());
        assert!(matches!(
            classify_mail(transient),
            HandlerError::Unavailable(_)
        ));
        let permanent = MailError::Permanent("550 no such user".into());
        assert!(matches!(classify_mail(permanent), HandlerError::Poison(_)));
    }

    #[test]
    fn a_recording_that_fails_on_an_outage_is_unavailable_else_retryable() {
        let outage = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(
            classify_store(outage),
            HandlerError::Unavailable(_)
        ));
        let failure = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(
            classify_store(failure),
            HandlerError::Retryable(_)
        ));
    }

    #[test]
    fn a_handed_over_mail_is_remembered_until_recorded() {
        let handed_over = HandedOver::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        handed_over.insert(a);
        assert!(handed_over.contains(a));
        assert!(!handed_over.contains(b));
        handed_over.remove(a);
        assert!(!handed_over.contains(a));
    }
}
