//! Email reacts to orders' outcomes: OrderConfirmed and OrderRejected each send one mail.
//!
//! The flow per event: skip it if `sent_emails` has its id; else render, hand the mail over,
//! and then record it and enqueue EmailSent in one transaction. The hand-over cannot join the
//! database transaction, so a crash between the two resends the mail on redelivery; the
//! Message-ID (and the file name) derived from the event id lets receivers drop that duplicate.

use std::sync::Arc;

use lettre::message::Mailbox;
use spine_events::Event;
use spine_events::orders::{OrderConfirmed, OrderRejected};
use spine_kit::kafka::consumer::{Handler, HandlerError, Record};

use crate::mailer::{MailError, Mailer, build_message};
use crate::store::{EmailStore, Recorded, StoreError};
use crate::templates::{self, Mail};

/// The handler of `orders.events`.
pub struct OrderMails {
    store: EmailStore,
    mailer: Arc<dyn Mailer>,
    from: Mailbox,
}

impl OrderMails {
    /// Reactions sending through `mailer` from `from` and recording in `store`.
    pub fn new(store: EmailStore, mailer: Arc<dyn Mailer>, from: Mailbox) -> Self {
        Self {
            store,
            mailer,
            from,
        }
    }

    #[tracing::instrument(skip_all, fields(order.id = %mail.order_id, event.id = %mail.event_id, template = mail.template))]
    async fn deliver(&self, mail: Mail) -> Result<(), HandlerError> {
        // Records of one key (order) never run concurrently, so a redelivery cannot race this
        // check; a second replica after a rebalance can, which `record` tolerates.
        if self
            .store
            .already_sent(mail.event_id)
            .await
            .map_err(HandlerError::retryable)?
        {
            metrics::counter!("emails_duplicates_total", "template" => mail.template).increment(1);
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
            return Err(match err {
                MailError::Transient(_) => HandlerError::retryable(err),
                MailError::Permanent(_) => HandlerError::poison(err),
            });
        }
        match self.store.record(&mail).await {
            Ok(Recorded::New) => {
                metrics::counter!("emails_sent_total", "template" => mail.template).increment(1);
                tracing::info!(recipient = %mail.recipient, "mail sent");
                Ok(())
            }
            Ok(Recorded::Duplicate) => Ok(()),
            // Retrying resends the mail (same Message-ID): the documented duplicate window.
            Err(err @ StoreError::Db(_)) => Err(HandlerError::retryable(err)),
            Err(err @ StoreError::Encode(_)) => Err(HandlerError::fatal(err)),
        }
    }
}

impl Handler for OrderMails {
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
