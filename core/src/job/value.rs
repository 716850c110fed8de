//! What `f` returned for an item: its value, as JSON.
//!
//! A `--serve` process answers `ok VALUE` (or `{"status": "ok", "value":
//! ...}`), a Rust function returns [`crate::handler::Value`]; the worker
//! keeps the value in the item's receipt when its JSON text is at most
//! [`MAX_RECEIPT_VALUE`] bytes, and with an output store a larger one goes
//! to the store, the receipt naming its URL. So a receipt stays small on
//! every ledger (a sheet ledger's message holds many).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest value a receipt keeps inline: its JSON text, in bytes.
pub const MAX_RECEIPT_VALUE: usize = 1024;

/// A value as JSON text: compact (no spaces between tokens), so its size
/// is what a receipt pays. Numbers past 64-bit integers are kept as
/// floating point, as `serde_json` reads them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ItemValue {
    text: Arc<str>,
}

impl ItemValue {
    /// The value `text` holds as JSON.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Ok(Self::from_json(&value))
    }

    /// `text` as a JSON string (a reply `ok TEXT` whose text is not JSON).
    pub fn string(text: &str) -> Self {
        Self::from_json(&serde_json::Value::String(text.to_string()))
    }

    /// `value` serialized as JSON.
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_value(value).map(|value| Self::from_json(&value))
    }

    fn from_json(value: &serde_json::Value) -> Self {
        Self {
            text: Arc::from(value.to_string()),
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The JSON text's length in bytes.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Never: the shortest JSON text is one byte.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether a receipt keeps it inline ([`MAX_RECEIPT_VALUE`]).
    pub fn fits_receipt(&self) -> bool {
        self.len() <= MAX_RECEIPT_VALUE
    }

    /// The value, parsed.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).expect("an ItemValue holds JSON")
    }
}

impl fmt::Debug for ItemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text.char_indices().nth(80) {
            Some((at, _)) => write!(f, "ItemValue({}... {} bytes)", &self.text[..at], self.len()),
            None => write!(f, "ItemValue({})", self.text),
        }
    }
}

impl fmt::Display for ItemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ItemValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ItemValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(|value| Self::from_json(&value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_compact_json_and_travels_as_json_not_as_a_string() {
        let value = ItemValue::parse(r#"{"frames": 120, "ok": true,  "tags": ["a"]}"#).unwrap();
        assert_eq!(value.as_str(), r#"{"frames":120,"ok":true,"tags":["a"]}"#);
        let receipt_like = serde_json::json!({ "value": value });
        assert_eq!(receipt_like.to_string(), format!(r#"{{"value":{value}}}"#));
        let back: ItemValue =
            serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
        assert_eq!(back, value);
        assert!(ItemValue::parse("not json").is_err());
        assert_eq!(
            ItemValue::string("done in 3 ms").as_str(),
            r#""done in 3 ms""#
        );
    }

    #[test]
    fn the_receipt_keeps_a_value_up_to_one_kib_of_json() {
        let fits = ItemValue::string(&"x".repeat(MAX_RECEIPT_VALUE - 2));
        assert_eq!(fits.len(), MAX_RECEIPT_VALUE);
        assert!(fits.fits_receipt());
        assert!(!ItemValue::string(&"x".repeat(MAX_RECEIPT_VALUE - 1)).fits_receipt());
    }
}
