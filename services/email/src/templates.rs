//! The mails, rendered in code: a subject, a plain-text body and an HTML body (escaped) for each
//! order outcome.

use spine_events::email::{TEMPLATE_ORDER_CONFIRMED, TEMPLATE_ORDER_REJECTED};
use spine_events::orders::{OrderConfirmed, OrderRejected};
use uuid::Uuid;

/// A rendered mail about an order, not yet addressed by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The event the mail answers: its idempotency key and the source of the Message-ID.
    pub event_id: Uuid,
    /// The order it is about.
    pub order_id: Uuid,
    /// The customer's address, as the event carries it.
    pub recipient: String,
    /// [`TEMPLATE_ORDER_CONFIRMED`] or [`TEMPLATE_ORDER_REJECTED`].
    pub template: &'static str,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

impl Mail {
    /// The Message-ID, derived from the event id alone, so that a resend after a crash carries
    /// the same id and receivers (and MTAs) can drop the duplicate.
    pub fn message_id(&self) -> String {
        message_id(self.event_id)
    }
}

/// `<EVENT_ID@spine.email>`.
pub fn message_id(event_id: Uuid) -> String {
    format!("<{event_id}@spine.email>")
}

/// The confirmation mail.
pub fn order_confirmed(fact: &OrderConfirmed) -> Mail {
    let total = money(fact.total_minor, &fact.currency);
    let order = fact.order_id;
    Mail {
        event_id: fact.event_id,
        order_id: order,
        recipient: fact.email.clone(),
        template: TEMPLATE_ORDER_CONFIRMED,
        subject: format!("Your order {order} is confirmed"),
        text: format!(
            "Hello,\n\nyour order {order} is confirmed.\nTotal: {total}\n\nThank you for shopping with us.\n"
        ),
        html: page(&format!(
            "<p>Hello,</p>\n<p>your order <strong>{}</strong> is confirmed.</p>\n<p>Total: <strong>{}</strong></p>\n<p>Thank you for shopping with us.</p>",
            escape(&order.to_string()),
            escape(&total),
        )),
    }
}

/// The rejection mail, with the reason.
pub fn order_rejected(fact: &OrderRejected) -> Mail {
    let order = fact.order_id;
    Mail {
        event_id: fact.event_id,
        order_id: order,
        recipient: fact.email.clone(),
        template: TEMPLATE_ORDER_REJECTED,
        subject: format!("Your order {order} could not be completed"),
        text: format!(
            "Hello,\n\nwe are sorry: your order {order} could not be completed.\nReason: {}\n\nYou have not been charged.\n",
            fact.reason
        ),
        html: page(&format!(
            "<p>Hello,</p>\n<p>we are sorry: your order <strong>{}</strong> could not be completed.</p>\n<p>Reason: {}</p>\n<p>You have not been charged.</p>",
            escape(&order.to_string()),
            escape(&fact.reason),
        )),
    }
}

fn page(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body>\n{body}\n</body></html>\n"
    )
}

/// Minor units as a decimal amount with the currency code. Every currency orders accepts has
/// two decimals.
fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use spine_events::orders::{LineItem, OrderPlaced};

    use super::*;

    fn placed() -> OrderPlaced {
        OrderPlaced::new(
            Uuid::now_v7(),
            "c-1",
            "ada@example.com",
            vec![
                LineItem::new("SKU-1", 2, 1250),
                LineItem::new("SKU-2", 1, 505),
            ],
            "EUR",
        )
    }

    #[test]
    fn a_confirmation_shows_the_order_and_its_total() {
        let fact = OrderConfirmed::of(&placed());
        let mail = order_confirmed(&fact);
        assert_eq!(mail.template, TEMPLATE_ORDER_CONFIRMED);
        assert_eq!(mail.recipient, "ada@example.com");
        for body in [&mail.text, &mail.html] {
            assert!(body.contains(&fact.order_id.to_string()), "{body}");
            assert!(body.contains("30.05 EUR"), "{body}");
        }
    }

    #[test]
    fn a_rejection_shows_the_reason_escaped_in_html() {
        let fact = OrderRejected::of(&placed(), "out of <stock> & \"gone\"");
        let mail = order_rejected(&fact);
        assert!(mail.text.contains("out of <stock> & \"gone\""));
        assert!(
            mail.html
                .contains("out of &lt;stock&gt; &amp; &quot;gone&quot;"),
            "{}",
            mail.html
        );
        assert!(!mail.html.contains("<stock>"));
    }

    #[test]
    fn the_message_id_is_derived_from_the_event_id() {
        let fact = OrderConfirmed::of(&placed());
        let mail = order_confirmed(&fact);
        assert_eq!(
            mail.message_id(),
            format!("<{}@spine.email>", fact.event_id)
        );
        assert_eq!(mail.message_id(), order_confirmed(&fact).message_id());
    }

    #[test]
    fn amounts_have_two_decimals() {
        assert_eq!(money(0, "EUR"), "0.00 EUR");
        assert_eq!(money(7, "USD"), "0.07 USD");
        assert_eq!(money(123_456, "GBP"), "1234.56 GBP");
        assert_eq!(money(-150, "EUR"), "-1.50 EUR");
    }
}
