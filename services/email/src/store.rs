//! The email database: `sent_emails`, the idempotency record of every mail handed over (keyed by
//! the event that asked for it), written together with the outbox row of its EmailSent.

use spine_events::email::EmailSent;
use spine_kit::db::{Migration, migrate, now_millis};
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use uuid::Uuid;

use crate::templates::Mail;

/// The same DDL suits both backends.
const SCHEMA: &str = "
    CREATE TABLE sent_emails (
        event_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        template TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sent_at BIGINT NOT NULL
    );
    CREATE INDEX sent_emails_order ON sent_emails (order_id);";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "sent_emails",
    sqlite: SCHEMA,
    postgres: SCHEMA,
}];

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The event could not be encoded (a bug: our own events always encode).
    #[error(transparent)]
    Encode(#[from] spine_events::EncodeError),
}

/// What `record` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The mail was recorded and its EmailSent enqueued.
    New,
    /// It was recorded before (a concurrent redelivery won); nothing was written.
    Duplicate,
}

/// Sent mails, with the outbox in the same database.
#[derive(Clone)]
pub struct EmailStore {
    outbox: Outbox,
}

impl EmailStore {
    /// Opens the store, migrating the schema.
    pub async fn new(outbox: Outbox) -> Result<Self, sqlx::Error> {
        migrate(outbox.pool(), outbox.backend(), "email", MIGRATIONS).await?;
        Ok(Self { outbox })
    }

    /// The outbox, for the relay and the readiness probe.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the mail for `event_id` was already handed over and recorded.
    pub async fn already_sent(&self, event_id: Uuid) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("SELECT 1 FROM sent_emails WHERE event_id = $1")
            .bind(event_id.to_string())
            .fetch_optional(self.outbox.pool())
            .await?
            .is_some())
    }

    /// Records a mail that was handed over and enqueues its EmailSent, in one transaction.
    #[tracing::instrument(skip_all, fields(order.id = %mail.order_id, event.id = %mail.event_id))]
    pub async fn record(&self, mail: &Mail) -> Result<Recorded, StoreError> {
        let message_id = mail.message_id();
        let fact = EmailSent::new(
            mail.order_id,
            mail.recipient.as_str(),
            mail.template,
            message_id.as_str(),
        );
        let record = OutgoingRecord::from_event(&fact)?;
        let mut tx = self.outbox.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sent_emails (event_id, order_id, recipient, template, message_id, sent_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(mail.event_id.to_string())
        .bind(mail.order_id.to_string())
        .bind(mail.recipient.as_str())
        .bind(mail.template)
        .bind(message_id.as_str())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Recorded::Duplicate);
        }
        self.outbox.enqueue(&mut tx, &record).await?;
        tx.commit().await?;
        self.outbox.committed(1);
        Ok(Recorded::New)
    }
}
