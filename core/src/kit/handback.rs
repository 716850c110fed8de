//! Hand-backs that cost no attempt, and failures counted apart from
//! lapses, for backends that count deliveries themselves and keep nothing
//! else per message (SQS's receive count, Pub/Sub's delivery attempt): the
//! item is published again with its id, the attempts it already had and
//! its failed attempts in attributes, and the old delivery is settled. The
//! driver takes the attributes off on the next pull, so handlers and dead
//! letters never see them, adds the carried attempts to what the backend
//! counts and reports the carried failures
//! ([`Delivery::failures`](crate::Delivery::failures)).
//!
//! A failure is the copy first, then the settle: a process that dies in
//! between leaves the item twice (at least once; its job counts it once),
//! and the old delivery, when it comes back, reads one lapse more and one
//! failure less: a death there never charges a failure that was not told.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Item, MessageId};

/// The attribute that carries the attempts an item had before it was
/// handed back (its next delivery is attempt `carried + backend's count`).
pub const CARRIED_ATTEMPTS_ATTRIBUTE: &str = "forloop-carried-attempts";
/// The attribute that carries the failed attempts an item had (attempts
/// where `f` ran and failed), so that lapses are told apart from them.
pub const CARRIED_FAILURES_ATTRIBUTE: &str = "forloop-carried-failures";
/// The attribute that carries a handed-back item's id, so it keeps one.
pub const ORIGIN_ID_ATTRIBUTE: &str = "forloop-origin-id";

/// What a handed-back item carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// The id it had before it was handed back.
    pub id: Option<MessageId>,
    /// The attempts charged before it was handed back.
    pub attempts: u32,
    /// Of those, the failed attempts.
    pub failures: u32,
}

impl Carried {
    /// What a delivery of `id` at `attempt` carries when it is handed back:
    /// the attempts before this one, which was not charged.
    pub fn handed_back(id: MessageId, attempt: u32, failures: u32) -> Self {
        Self {
            id: Some(id),
            attempts: attempt.saturating_sub(1),
            failures,
        }
    }

    /// What a delivery of `id` at `attempt`, after `failures` failed
    /// attempts, carries when it fails: this attempt charged, and one
    /// failure more.
    pub fn failed(id: MessageId, attempt: u32, failures: u32) -> Self {
        Self {
            id: Some(id),
            attempts: attempt,
            failures: failures.saturating_add(1),
        }
    }

    /// `message` with these attributes.
    pub fn stamp(&self, mut message: Item) -> Item {
        if let Some(id) = &self.id {
            Arc::make_mut(&mut message.attributes)
                .insert(ORIGIN_ID_ATTRIBUTE.to_string(), id.to_string());
        }
        if self.attempts > 0 {
            Arc::make_mut(&mut message.attributes).insert(
                CARRIED_ATTEMPTS_ATTRIBUTE.to_string(),
                self.attempts.to_string(),
            );
        }
        if self.failures > 0 {
            Arc::make_mut(&mut message.attributes).insert(
                CARRIED_FAILURES_ATTRIBUTE.to_string(),
                self.failures.to_string(),
            );
        }
        message
    }

    /// Take these attributes off `attributes` (absent or unreadable: none).
    pub fn take(attributes: &mut BTreeMap<String, String>) -> Self {
        Self {
            id: attributes
                .remove(ORIGIN_ID_ATTRIBUTE)
                .filter(|id| !id.is_empty())
                .map(MessageId::from),
            attempts: attributes
                .remove(CARRIED_ATTEMPTS_ATTRIBUTE)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            failures: attributes
                .remove(CARRIED_FAILURES_ATTRIBUTE)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Take these attributes off a received item, copying its attributes
    /// only when it carries them (a handed-back item).
    pub fn take_from(item: &mut Item) -> Self {
        let carries = [
            ORIGIN_ID_ATTRIBUTE,
            CARRIED_ATTEMPTS_ATTRIBUTE,
            CARRIED_FAILURES_ATTRIBUTE,
        ]
        .iter()
        .any(|key| item.attributes.contains_key(*key));
        if carries {
            Self::take(Arc::make_mut(&mut item.attributes))
        } else {
            Self::default()
        }
    }

    /// The attempt of a delivery the backend counts as its `counted`th.
    pub fn attempt(&self, counted: u32) -> u32 {
        counted.saturating_add(self.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_back_item_keeps_its_id_and_its_attempt() {
        let item = Item::new("x").with_attribute("k", "v");
        let carried = Carried::handed_back(MessageId::from("m-1"), 3, 1);
        let mut again = carried.stamp(item.clone());
        let taken = Carried::take_from(&mut again);
        assert_eq!(again, item, "only the item's own attributes are left");
        assert_eq!(taken.id.as_deref(), Some("m-1"));
        assert_eq!(taken.attempt(1), 3, "its next delivery is attempt 3 again");
        assert_eq!(taken.failures, 1, "and it keeps its failures");
        let mut plain = item.clone();
        assert_eq!(Carried::take_from(&mut plain), Carried::default());
        assert_eq!(plain, item);
        assert_eq!(Carried::default().attempt(4), 4);
    }

    #[test]
    fn a_failed_item_carries_its_attempt_and_one_failure_more() {
        let item = Item::new("x");
        let mut again = Carried::failed(MessageId::from("m-2"), 3, 1).stamp(item.clone());
        let taken = Carried::take_from(&mut again);
        assert_eq!(again, item);
        assert_eq!(taken.attempt(1), 4, "the failed attempt was charged");
        assert_eq!(taken.failures, 2);
    }
}
