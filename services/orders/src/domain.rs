//! The order as the API accepts it: parsed and validated once, into types that can't hold bad
//! values.

use serde::{Deserialize, Serialize};
use spine_events::orders::LineItem;

/// Most items an order may hold.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: i32 = 10_000;
/// ISO 4217 codes the shop accepts.
pub const CURRENCIES: &[&str] = &[
    "AUD", "CAD", "CHF", "CZK", "DKK", "EUR", "GBP", "JPY", "NOK", "NZD", "PLN", "SEK", "USD",
];

/// The body of `POST /orders`, as sent. Unknown fields are rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// Who orders.
    pub customer_id: String,
    /// Where the confirmation goes.
    pub email: String,
    /// ISO 4217 currency of every price.
    pub currency: String,
    /// 1 to 100 lines.
    pub items: Vec<ItemRequest>,
    /// Where the order was placed (`web`, `mobile`, …), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_channel: Option<String>,
}

/// One line of [`OrderRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// Stock-keeping unit.
    pub sku: String,
    /// Units, more than zero.
    pub quantity: i32,
    /// Price of one unit in minor units (cents), zero or more.
    pub unit_price_minor: i64,
}

/// A field that failed validation, by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// JSON path of the field, e.g. `items[2].quantity`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A validated order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Who orders (1–64 printable characters).
    pub customer_id: String,
    /// A plausible address.
    pub email: String,
    /// A code from [`CURRENCIES`].
    pub currency: String,
    /// 1–100 lines.
    pub items: Vec<LineItem>,
    /// The sum of the lines, in minor units.
    pub total_minor: i64,
    /// Where it was placed.
    pub sales_channel: Option<String>,
}

impl NewOrder {
    /// Validates a request, naming the first bad field.
    pub fn parse(request: &OrderRequest) -> Result<Self, Invalid> {
        let customer_id = token("customer_id", &request.customer_id, 64)?;
        let email = parse_email(&request.email)?;
        let currency = request.currency.trim().to_ascii_uppercase();
        if !CURRENCIES.contains(&currency.as_str()) {
            return Err(invalid(
                "currency",
                format!(
                    "unknown currency `{}`; accepted: {}",
                    request.currency,
                    CURRENCIES.join(", ")
                ),
            ));
        }
        if request.items.is_empty() || request.items.len() > MAX_ITEMS {
            return Err(invalid(
                "items",
                format!(
                    "must hold 1 to {MAX_ITEMS} items, not {}",
                    request.items.len()
                ),
            ));
        }
        let mut items = Vec::with_capacity(request.items.len());
        let mut total_minor: i64 = 0;
        for (i, item) in request.items.iter().enumerate() {
            let at = |field: &str| format!("items[{i}].{field}");
            let sku = token(&at("sku"), &item.sku, 64)?;
            if item.quantity <= 0 || item.quantity > MAX_QUANTITY {
                return Err(invalid(
                    at("quantity"),
                    format!("must be 1 to {MAX_QUANTITY}"),
                ));
            }
            if item.unit_price_minor < 0 {
                return Err(invalid(at("unit_price_minor"), "must not be negative"));
            }
            let line = LineItem::new(sku, item.quantity, item.unit_price_minor);
            total_minor = item
                .unit_price_minor
                .checked_mul(i64::from(item.quantity))
                .and_then(|line_total| total_minor.checked_add(line_total))
                .ok_or_else(|| invalid(at("unit_price_minor"), "the order total overflows"))?;
            items.push(line);
        }
        let sales_channel = match &request.sales_channel {
            Some(channel) => Some(token("sales_channel", channel, 32)?),
            None => None,
        };
        Ok(Self {
            customer_id,
            email,
            currency,
            items,
            total_minor,
            sales_channel,
        })
    }
}

/// A non-empty, bounded, printable identifier without surrounding spaces.
fn token(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Plausible, not verified: one `@`, a local part, a dotted domain, no spaces, at most 254
/// characters. The real check is the email reaching its reader.
fn parse_email(value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    let plausible = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if plausible {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "email",
            format!("`{value}` is not a plausible email address"),
        ))
    }
}

/// The life of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Saved; waiting for inventory.
    Pending,
    /// Stock reserved.
    Confirmed,
    /// Stock could not be reserved.
    Rejected,
}

impl OrderStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PENDING" => Some(Self::Pending),
            "CONFIRMED" => Some(Self::Confirmed),
            "REJECTED" => Some(Self::Rejected),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> OrderRequest {
        OrderRequest {
            customer_id: "customer-1".into(),
            email: "ada@example.com".into(),
            currency: "eur".into(),
            items: vec![
                ItemRequest {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: 1_250,
                },
                ItemRequest {
                    sku: "SKU-2".into(),
                    quantity: 1,
                    unit_price_minor: 500,
                },
            ],
            sales_channel: None,
        }
    }

    fn field_of(request: &OrderRequest) -> String {
        NewOrder::parse(request).unwrap_err().field
    }

    #[test]
    fn a_valid_request_parses_with_its_total_and_normalised_currency() {
        let order = NewOrder::parse(&request()).unwrap();
        assert_eq!(order.total_minor, 3_000);
        assert_eq!(order.currency, "EUR");
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut r = request();
        r.items[1].quantity = 0;
        assert_eq!(field_of(&r), "items[1].quantity");
        let mut r = request();
        r.items[0].unit_price_minor = -1;
        assert_eq!(field_of(&r), "items[0].unit_price_minor");
        let mut r = request();
        r.items[0].sku = "  ".into();
        assert_eq!(field_of(&r), "items[0].sku");
        let mut r = request();
        r.items.clear();
        assert_eq!(field_of(&r), "items");
        let mut r = request();
        r.items = vec![r.items[0].clone(); MAX_ITEMS + 1];
        assert_eq!(field_of(&r), "items");
        let mut r = request();
        r.currency = "XXX".into();
        assert_eq!(field_of(&r), "currency");
        let mut r = request();
        r.customer_id = String::new();
        assert_eq!(field_of(&r), "customer_id");
        let mut r = request();
        r.items[0].unit_price_minor = i64::MAX;
        assert_eq!(field_of(&r), "items[0].unit_price_minor");
    }

    #[test]
    fn implausible_emails_are_rejected() {
        for email in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@example..com",
            "ada@.example.com",
        ] {
            let mut r = request();
            r.email = email.into();
            assert_eq!(field_of(&r), "email", "{email:?}");
        }
        for email in ["ada@example.com", "a.b+tag@mail.example.co.uk"] {
            let mut r = request();
            r.email = email.into();
            assert!(NewOrder::parse(&r).is_ok(), "{email:?}");
        }
    }

    #[test]
    fn a_status_survives_its_stored_form() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
        ] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("LOST"), None);
    }
}
