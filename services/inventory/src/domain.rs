//! The values the API and the seed accept, validated once into types that can't hold bad
//! values.

use serde::{Deserialize, Serialize};

/// Most units one SKU may hold: far above any shop, far below overflow when orders add up.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Longest SKU.
pub const MAX_SKU_LEN: usize = 64;

/// A value that failed validation, named by its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field, e.g. `quantity`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A stock-keeping unit: 1–64 visible ASCII characters, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    /// Validates a SKU.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > MAX_SKU_LEN {
            return Err(invalid(
                "sku",
                format!("must be 1 to {MAX_SKU_LEN} characters"),
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("sku", "must be visible ASCII without spaces"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units available: 0 to [`MAX_STOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(i64);

impl Quantity {
    /// Validates a quantity.
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        if !(0..=MAX_STOCK).contains(&raw) {
            return Err(invalid(
                "quantity",
                format!("must be 0 to {MAX_STOCK}, got {raw}"),
            ));
        }
        Ok(Self(raw))
    }

    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The body of `PUT /stock/{sku}`, as sent. Unknown fields are rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockRequest {
    /// The new available stock.
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_is_visible_ascii_of_bounded_length() {
        assert_eq!(Sku::parse("SKU-1").unwrap().as_str(), "SKU-1");
        assert_eq!(Sku::parse("").unwrap_err().field, "sku");
        assert!(Sku::parse("has space").is_err());
        assert!(Sku::parse("é").is_err());
        assert!(Sku::parse(&"x".repeat(MAX_SKU_LEN)).is_ok());
        assert!(Sku::parse(&"x".repeat(MAX_SKU_LEN + 1)).is_err());
    }

    #[test]
    fn a_quantity_is_zero_or_more_and_bounded() {
        assert_eq!(Quantity::parse(0).unwrap().get(), 0);
        assert_eq!(Quantity::parse(MAX_STOCK).unwrap().get(), MAX_STOCK);
        let err = Quantity::parse(-1).unwrap_err();
        assert_eq!(err.field, "quantity");
        assert!(err.message.contains("-1"), "{err}");
        assert!(Quantity::parse(MAX_STOCK + 1).is_err());
    }
}
