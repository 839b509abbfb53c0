//! Facts produced by the email service on `email.events`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{impl_event, new_event_id, now_millis, uuid_string};

/// The topic every email fact is published on.
pub const TOPIC: &str = "email.events";

/// [`EmailSent::template`] of the mail sent for an `OrderConfirmed`.
pub const TEMPLATE_ORDER_CONFIRMED: &str = "order_confirmed";
/// [`EmailSent::template`] of the mail sent for an `OrderRejected`.
pub const TEMPLATE_ORDER_REJECTED: &str = "order_rejected";

/// The email service handed a mail about an order to the mailer (schema `EmailSent.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSent {
    /// Unique id of this fact.
    #[serde(with = "uuid_string")]
    pub event_id: Uuid,
    /// When the mail was handed over, in milliseconds since the Unix epoch.
    pub occurred_at: i64,
    /// The order the mail is about; the Kafka key.
    #[serde(with = "uuid_string")]
    pub order_id: Uuid,
    /// The address the mail was sent to.
    pub recipient: String,
    /// Which mail was sent: [`TEMPLATE_ORDER_CONFIRMED`] or [`TEMPLATE_ORDER_REJECTED`].
    pub template: String,
    /// The mailer's id for the message, for tracing a delivery.
    pub message_id: String,
}
impl_event!(EmailSent, "EmailSent", 1, "email.events");

impl EmailSent {
    /// A mail about `order_id` sent now.
    pub fn new(
        order_id: Uuid,
        recipient: impl Into<String>,
        template: impl Into<String>,
        message_id: impl Into<String>,
    ) -> Self {
        Self {
            event_id: new_event_id(),
            occurred_at: now_millis(),
            order_id,
            recipient: recipient.into(),
            template: template.into(),
            message_id: message_id.into(),
        }
    }
}
