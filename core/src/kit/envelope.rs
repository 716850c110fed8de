//! The dead-letter envelope: what a driver adds to an item when it moves it
//! to a dead-letter queue of its own, and takes off again when the item is
//! listed or put back to work. One definition, so every driver stamps the
//! same attribute names and strips exactly what it stamped.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Item, MessageId};

/// The attribute that carries why an item was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "forloop-dead-reason";
/// The attribute that carries how many deliveries a dead item had.
pub const ATTEMPTS_ATTRIBUTE: &str = "forloop-dead-attempts";
/// The attribute that carries the item's id in the queue it died in (a
/// dead-letter queue gives the copy an id of its own).
pub const ID_ATTRIBUTE: &str = "forloop-dead-id";

/// What a dead item's envelope says. Each part is optional: an item the
/// backend dead-lettered by itself (a redrive policy) carries none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadStamp {
    /// Why it died.
    pub reason: Option<String>,
    /// How many deliveries it had.
    pub attempts: Option<u32>,
    /// Its id in the queue it died in.
    pub id: Option<MessageId>,
}

impl DeadStamp {
    /// The stamp of an item that dies now.
    pub fn new(id: MessageId, attempts: u32, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            attempts: Some(attempts),
            id: Some(id),
        }
    }

    /// `message` with this stamp among its attributes.
    pub fn seal(&self, mut message: Item) -> Item {
        let attributes = Arc::make_mut(&mut message.attributes);
        if let Some(reason) = &self.reason {
            attributes.insert(REASON_ATTRIBUTE.to_string(), reason.clone());
        }
        if let Some(attempts) = self.attempts {
            attributes.insert(ATTEMPTS_ATTRIBUTE.to_string(), attempts.to_string());
        }
        if let Some(id) = &self.id {
            attributes.insert(ID_ATTRIBUTE.to_string(), id.to_string());
        }
        message
    }

    /// Take the stamp off `attributes`, leaving the ones the item had before
    /// it died. A stamp part that does not parse counts as absent.
    pub fn open(attributes: &mut BTreeMap<String, String>) -> Self {
        Self {
            reason: attributes.remove(REASON_ATTRIBUTE),
            attempts: attributes
                .remove(ATTEMPTS_ATTRIBUTE)
                .and_then(|n| n.parse().ok()),
            id: attributes
                .remove(ID_ATTRIBUTE)
                .filter(|id| !id.is_empty())
                .map(MessageId::from),
        }
    }

    /// Each part of `self`, else the part of `other`.
    pub fn or(self, other: Self) -> Self {
        Self {
            reason: self.reason.or(other.reason),
            attempts: self.attempts.or(other.attempts),
            id: self.id.or(other.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_sealed_item_gives_back_its_own_attributes() {
        let item = Item::new("x").with_attribute("origin", "test");
        let stamp = DeadStamp::new(MessageId::from("41"), 5, "exit code 1");
        let mut dead = stamp.seal(item.clone());
        assert_eq!(dead.attributes.len(), 4);
        assert_eq!(dead.attributes[ATTEMPTS_ATTRIBUTE], "5");
        assert_eq!(DeadStamp::open(Arc::make_mut(&mut dead.attributes)), stamp);
        assert_eq!(dead, item);
    }

    #[test]
    fn an_item_without_a_stamp_opens_empty_and_keeps_its_attributes() {
        let mut attributes = BTreeMap::from([
            ("k".to_string(), "v".to_string()),
            (ATTEMPTS_ATTRIBUTE.to_string(), "many".to_string()),
        ]);
        let stamp = DeadStamp::open(&mut attributes);
        assert_eq!(stamp, DeadStamp::default());
        assert_eq!(attributes.len(), 1, "the stamp's names are taken off");
        let native = DeadStamp {
            attempts: Some(7),
            ..DeadStamp::default()
        };
        assert_eq!(stamp.or(native).attempts, Some(7));
    }
}
