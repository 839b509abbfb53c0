//! The email database: `sent_emails`, the idempotency record of every mail handed over (keyed by
//! the event that asked for it), written together with the outbox row of its EmailSent.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use spine_events::email::EmailSent;
use spine_kit::db::{Migration, migrate, now_millis};
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use tokio::sync::{mpsc, oneshot};
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
    /// The database failed. Shared: one failed group commit fails each mail in it.
    #[error(transparent)]
    Db(Arc<sqlx::Error>),
    /// The event could not be encoded (a bug: our own events always encode).
    #[error(transparent)]
    Encode(#[from] spine_events::EncodeError),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self::Db(Arc::new(err))
    }
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
///
/// The consumer's calls are grouped: what the concurrent handlers ask for within [`LINGER`] of
/// a first request (up to [`MAX_GROUP`]) is done together, by one task for the lookups (one
/// query) and one for the recordings, which it group-commits: one transaction (one commit, one
/// fsync on SQLite), one multi-row insert into `sent_emails` and one into the outbox. Each
/// caller still gets its own answer, a recording's after the commit that holds its mail. The
/// lookups never wait for a commit (a write blocked by a lock holds up only the recordings).
/// Email sends hundreds of mails at once (its handlers wait on the SMTP server, not the CPU); a
/// lookup and a commit per mail bounded its drain by the statements the database could run one
/// after the other.
#[derive(Clone)]
pub struct EmailStore {
    outbox: Outbox,
    /// The grouping tasks' queues, started by the first call on the runtime that makes it.
    queues: Arc<OnceLock<Queues>>,
}

struct Queues {
    lookups: mpsc::UnboundedSender<Lookup>,
    recordings: mpsc::UnboundedSender<Recording>,
}

/// Whether the mail of an event id is recorded.
struct Lookup {
    event_id: String,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// A mail handed over, waiting for its group's commit.
struct Recording {
    row: SentRow,
    email_sent: OutgoingRecord,
    answer: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// A row of `sent_emails`.
struct SentRow {
    event_id: String,
    order_id: String,
    recipient: String,
    template: &'static str,
    message_id: String,
}

/// The most requests one group takes; the rest wait for the next group. A group's lookups are
/// one query of as many parameters, well within both backends' limits.
const MAX_GROUP: usize = 256;
/// How long a group waits for more requests after its first: a mail takes hundreds of
/// milliseconds at the SMTP server, so this costs it nothing, and at hundreds of mails a
/// second it makes groups of several (a commit per one or two mails otherwise).
const LINGER: Duration = Duration::from_millis(10);
/// Rows per multi-row insert into `sent_emails` (6 parameters a row).
const ROW_CHUNK: usize = 200;

impl EmailStore {
    /// Opens the store, migrating the schema.
    pub async fn new(outbox: Outbox) -> Result<Self, sqlx::Error> {
        migrate(outbox.pool(), outbox.backend(), "email", MIGRATIONS).await?;
        Ok(Self {
            outbox,
            queues: Arc::default(),
        })
    }

    /// The outbox, for the relay and the readiness probe.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the mail for `event_id` was already handed over and recorded (looked up with
    /// the other handlers' lookups of its group: see [`EmailStore`]).
    pub async fn already_sent(&self, event_id: Uuid) -> Result<bool, StoreError> {
        let event_id = event_id.to_string();
        ask(&self.queues().lookups, |answer| Lookup { event_id, answer }).await
    }

    /// The grouping tasks' queues, the tasks started on the caller's runtime at the first call.
    fn queues(&self) -> &Queues {
        self.queues.get_or_init(|| {
            let (lookups, looked_up) = mpsc::unbounded_channel();
            let (recordings, recorded) = mpsc::unbounded_channel();
            tokio::spawn(look_up_groups(self.outbox.clone(), looked_up));
            tokio::spawn(write_groups(self.outbox.clone(), recorded));
            Queues {
                lookups,
                recordings,
            }
        })
    }

    /// Records a mail that was handed over and enqueues its EmailSent, in one transaction
    /// (shared with the other mails of its group: see [`EmailStore`]). The EmailSent carries the
    /// trace context of the caller's span. A group that fails for another reason than an
    /// outage is written again mail by mail, so that one bad row fails only its own mail.
    #[tracing::instrument(skip_all, fields(order.id = %mail.order_id, event.id = %mail.event_id))]
    pub async fn record(&self, mail: &Mail) -> Result<Recorded, StoreError> {
        let message_id = mail.message_id();
        let fact = EmailSent::new(
            mail.order_id,
            mail.recipient.as_str(),
            mail.template,
            message_id.as_str(),
        );
        let email_sent = OutgoingRecord::from_event(&fact)?;
        let row = SentRow {
            event_id: mail.event_id.to_string(),
            order_id: mail.order_id.to_string(),
            recipient: mail.recipient.clone(),
            template: mail.template,
            message_id,
        };
        let recordings = &self.queues().recordings;
        ask(recordings, |answer| Recording {
            row,
            email_sent,
            answer,
        })
        .await
    }
}

/// Queues the request that `request` makes around its answer's sender, and waits for the
/// answer. The grouping tasks end only when every store is dropped, or with their runtime: a
/// request they can no longer answer fails as a closed pool would.
async fn ask<T, R>(
    queue: &mpsc::UnboundedSender<T>,
    request: impl FnOnce(oneshot::Sender<Result<R, StoreError>>) -> T,
) -> Result<R, StoreError> {
    let (answer, answered) = oneshot::channel();
    if queue.send(request(answer)).is_err() {
        return Err(sqlx::Error::PoolClosed.into());
    }
    answered
        .await
        .unwrap_or(Err(sqlx::Error::PoolClosed.into()))
}

/// Waits for a first item, then takes what else comes within [`LINGER`], up to
/// [`MAX_GROUP`]. `None` once every sender is gone.
async fn gather<T>(queued: &mut mpsc::UnboundedReceiver<T>, group: &mut Vec<T>) -> Option<()> {
    if queued.recv_many(group, MAX_GROUP).await == 0 {
        return None;
    }
    if group.len() < MAX_GROUP {
        tokio::time::sleep(LINGER).await;
        while group.len() < MAX_GROUP {
            let Ok(item) = queued.try_recv() else {
                break;
            };
            group.push(item);
        }
    }
    Some(())
}

/// The lookup task: answers each group of lookups with one query.
async fn look_up_groups(outbox: Outbox, mut queued: mpsc::UnboundedReceiver<Lookup>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while gather(&mut queued, &mut group).await.is_some() {
        let found = find_recorded(&outbox, &group).await.map_err(Arc::new);
        for Lookup { event_id, answer } in group.drain(..) {
            let result = match &found {
                Ok(found) => Ok(found.contains(&event_id)),
                Err(err) => Err(StoreError::Db(Arc::clone(err))),
            };
            // A caller that gave up looks up again on its retry.
            let _ = answer.send(result);
        }
    }
}

/// The recording task: writes each group of recordings in one transaction.
async fn write_groups(outbox: Outbox, mut queued: mpsc::UnboundedReceiver<Recording>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while gather(&mut queued, &mut group).await.is_some() {
        let answers = match write_group(&outbox, &group).await {
            Err(err) if group.len() > 1 && !spine_kit::db::is_outage(&err) => {
                tracing::warn!(error = %err, mails = group.len(), "group commit failed; writing its mails one by one");
                let mut answers = Vec::with_capacity(group.len());
                for one in &group {
                    let answer = write_group(&outbox, std::slice::from_ref(one)).await;
                    answers.push(
                        answer
                            .map(|mut recorded| recorded.remove(0))
                            .map_err(Into::into),
                    );
                }
                answers
            }
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(err) => {
                let err = Arc::new(err);
                group
                    .iter()
                    .map(|_| Err(StoreError::Db(Arc::clone(&err))))
                    .collect()
            }
        };
        for (recording, answer) in group.drain(..).zip(answers) {
            // A caller that gave up (its handler timed out) finds the record on its retry.
            let _ = recording.answer.send(answer);
        }
    }
}

/// Which of the looked-up event ids have a row in `sent_emails`.
async fn find_recorded(
    outbox: &Outbox,
    lookups: &[Lookup],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut conn = outbox.pool().acquire().await?;
    let sql = format!(
        "SELECT event_id FROM sent_emails WHERE event_id IN ({})",
        spine_kit::db::placeholder_list(1, lookups.len())
    );
    let sql = spine_kit::db::in_order(&conn, sql);
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for lookup in lookups {
        query = query.bind(lookup.event_id.as_str());
    }
    Ok(query.fetch_all(&mut *conn).await?.into_iter().collect())
}

/// Writes `group` in one transaction: what each mail's recording did, in order. Only the first
/// recording of an event id in the group can be new.
async fn write_group(outbox: &Outbox, group: &[Recording]) -> Result<Vec<Recorded>, sqlx::Error> {
    let mut tx = outbox.begin().await?;
    let now = now_millis();
    let mut inserted = HashSet::with_capacity(group.len());
    for chunk in group.chunks(ROW_CHUNK) {
        let values = spine_kit::db::placeholder_rows(chunk.len(), 6);
        let sql = format!(
            "INSERT INTO sent_emails (event_id, order_id, recipient, template, message_id, sent_at)
             VALUES {values}
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id"
        );
        let mut query =
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(spine_kit::db::in_order(&tx, sql)));
        for Recording { row, .. } in chunk {
            query = query
                .bind(row.event_id.as_str())
                .bind(row.order_id.as_str())
                .bind(row.recipient.as_str())
                .bind(row.template)
                .bind(row.message_id.as_str())
                .bind(now);
        }
        inserted.extend(query.fetch_all(&mut *tx).await?);
    }
    let recorded: Vec<Recorded> = group
        .iter()
        .map(|recording| {
            // `remove`: a second recording of the same event in this group is a duplicate.
            if inserted.remove(&recording.row.event_id) {
                Recorded::New
            } else {
                Recorded::Duplicate
            }
        })
        .collect();
    let new: Vec<&OutgoingRecord> = group
        .iter()
        .zip(&recorded)
        .filter(|(_, recorded)| **recorded == Recorded::New)
        .map(|(recording, _)| &recording.email_sent)
        .collect();
    if new.is_empty() {
        tx.rollback().await?;
        return Ok(recorded);
    }
    outbox.enqueue_many(&mut tx, &new).await?;
    tx.commit().await?;
    outbox.committed(new.len() as i64);
    Ok(recorded)
}
