//! The deliveries a process holds, by token text, for backends whose
//! dead-lettering is "publish a copy elsewhere, then settle": the copy must
//! come from this process, since the backend cannot move the item itself.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

use super::envelope::DeadStamp;
use super::handback::Carried;
use super::tokens::TokenSplit;
use crate::{Delivery, Item, LeaseToken, MessageId};

/// One held delivery: the item as delivered and when it was received.
#[derive(Debug, Clone)]
pub struct HeldDelivery {
    /// The item's id.
    pub id: MessageId,
    /// The item, its attributes and its job.
    pub item: Item,
    /// Its delivery attempt.
    pub attempt: u32,
    /// The failed attempts before it ([`Delivery::failures`], 0 if unknown).
    pub failures: u32,
    /// When the pull that delivered it was sent (no later than the server's
    /// receive), for backends that cap a lease counted from the receive.
    pub received: Instant,
    /// When its lease ends, as this process knows it (the pull's deadline,
    /// moved by [`HeldDeliveries::extended`]): for backends that do not say
    /// when a lease is gone.
    pub deadline: Instant,
}

/// Dead letters ready to publish, from held deliveries.
#[derive(Debug, Default)]
pub struct Letters {
    /// The items, each sealed in the dead-letter envelope.
    pub messages: Vec<Item>,
    /// The token text and token of each, to settle once they are published.
    pub settled: Vec<(String, LeaseToken)>,
    /// Tokens this process does not hold (lease lost, already settled).
    pub lost: Vec<LeaseToken>,
}

/// Held deliveries by token text. Every settlement forgets its tokens, so
/// the map holds only what is leased to this process.
#[derive(Debug, Default)]
pub struct HeldDeliveries {
    map: Mutex<HashMap<String, HeldDelivery>>,
}

impl HeldDeliveries {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HeldDelivery>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep each of `deliveries` (text tokens only; others are not held).
    pub fn hold<'a>(&self, deliveries: impl IntoIterator<Item = &'a Delivery>, received: Instant) {
        let mut map = self.lock();
        for delivery in deliveries {
            if let Some(text) = delivery.token.as_text() {
                let held = HeldDelivery {
                    id: delivery.id.clone(),
                    item: delivery.item.clone(),
                    attempt: delivery.attempt,
                    failures: delivery.failures.unwrap_or(0),
                    received,
                    deadline: delivery.deadline,
                };
                map.insert(text.to_string(), held);
            }
        }
    }

    /// Hold deliveries of handed-back items that already had `max` attempts
    /// (the backend's own count saw only the copy's deliveries), as the
    /// driver's to dead-letter itself: returns their tokens and the reason.
    /// The delivery past the last is no attempt (nothing ran it), so each
    /// is held as attempt `max`.
    pub fn hold_past_max(
        &self,
        mut deliveries: Vec<Delivery>,
        max: u32,
        received: Instant,
    ) -> (Vec<LeaseToken>, String) {
        for delivery in &mut deliveries {
            delivery.attempt = max;
        }
        self.hold(&deliveries, received);
        let tokens = deliveries.into_iter().map(|d| d.token).collect();
        let reason = format!("delivered {max} times without an ack (max attempts {max})");
        (tokens, reason)
    }

    /// Split `tokens` and forget the known ones: what ack and nack start with.
    pub fn release(&self, tokens: &[LeaseToken]) -> TokenSplit<String> {
        let split = TokenSplit::text(tokens);
        self.forget(split.known.iter().map(|(text, _)| text));
        split
    }

    /// Forget `texts` (settled, handed back or dead).
    pub fn forget<'a>(&self, texts: impl IntoIterator<Item = &'a String>) {
        let mut map = self.lock();
        for text in texts {
            map.remove(text);
        }
    }

    /// When the delivery `text` was received, if it is held.
    pub fn received(&self, text: &str) -> Option<Instant> {
        self.lock().get(text).map(|held| held.received)
    }

    /// The lease of each of `texts` held here, renewed by a call sent at
    /// `sent`, now ends at `deadline`; except for leases that had ended
    /// before `sent` (a late renewal revives nothing): those are returned,
    /// and forgotten.
    pub fn extended(&self, texts: &[String], sent: Instant, deadline: Instant) -> Vec<String> {
        let mut map = self.lock();
        let mut ended = Vec::new();
        for text in texts {
            match map.get_mut(text) {
                Some(held) if held.deadline > sent => held.deadline = deadline,
                Some(_) => {
                    map.remove(text);
                    ended.push(text.clone());
                }
                None => {}
            }
        }
        ended
    }

    /// Those of `texts` whose lease ends before `by` (or that are not held).
    pub fn ending_before(&self, texts: &[String], by: Instant) -> Vec<String> {
        let map = self.lock();
        texts
            .iter()
            .filter(|text| map.get(*text).is_none_or(|held| held.deadline <= by))
            .cloned()
            .collect()
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dead letters for `tokens`, each sealed with `reason` and its
    /// attempt. Nothing is forgotten: forget [`Letters::settled`] once the
    /// letters are published, so a failed publish can be tried again.
    pub fn letters(&self, tokens: &TokenSplit<String>, reason: &str) -> Letters {
        let map = self.lock();
        let mut letters = Letters {
            lost: tokens.lost.clone(),
            ..Letters::default()
        };
        for (text, token) in &tokens.known {
            match map.get(text) {
                Some(held) => {
                    let stamp = DeadStamp::new(held.id.clone(), held.attempt, reason);
                    letters.messages.push(stamp.seal(held.item.clone()));
                    letters.settled.push((text.clone(), token.clone()));
                }
                None => letters.lost.push(token.clone()),
            }
        }
        letters
    }

    /// The items of `tokens` to publish again on a hand-back that costs no
    /// attempt, each stamped with its id and the attempts it had
    /// ([`Carried`]). Like [`HeldDeliveries::letters`], nothing is
    /// forgotten.
    pub fn handbacks(&self, tokens: &TokenSplit<String>) -> Letters {
        self.copies(tokens, |held| {
            Carried::handed_back(held.id.clone(), held.attempt, held.failures)
        })
    }

    /// The items of `tokens` to publish again as failed attempts, each
    /// stamped with its id, its attempts (this one charged) and one failure
    /// more ([`Carried::failed`]). Like [`HeldDeliveries::letters`], nothing
    /// is forgotten.
    pub fn failures(&self, tokens: &TokenSplit<String>) -> Letters {
        self.copies(tokens, |held| {
            Carried::failed(held.id.clone(), held.attempt, held.failures)
        })
    }

    fn copies(
        &self,
        tokens: &TokenSplit<String>,
        carry: impl Fn(&HeldDelivery) -> Carried,
    ) -> Letters {
        let map = self.lock();
        let mut out = Letters {
            lost: tokens.lost.clone(),
            ..Letters::default()
        };
        for (text, token) in &tokens.known {
            match map.get(text) {
                Some(held) => {
                    out.messages.push(carry(held).stamp(held.item.clone()));
                    out.settled.push((text.clone(), token.clone()));
                }
                None => out.lost.push(token.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::kit::envelope::{ATTEMPTS_ATTRIBUTE, REASON_ATTRIBUTE};

    fn delivery(token: &str, attempt: u32) -> Delivery {
        Delivery {
            id: MessageId::from(format!("id-{token}")),
            item: Item::new("item")
                .with_attribute("k", "v")
                .with_job(crate::job::JobItem::new("j", 4)),
            token: LeaseToken::new(token),
            attempt,
            failures: Some(0),
            deadline: Instant::now(),
        }
    }

    #[test]
    fn letters_come_sealed_from_held_items_and_unknown_tokens_are_lost() {
        let held = HeldDeliveries::new();
        let now = Instant::now();
        held.hold(&[delivery("a", 3), delivery("b", 1)], now);
        assert_eq!(held.received("a"), Some(now));
        let tokens = [
            LeaseToken::new("a"),
            LeaseToken::new("gone"),
            LeaseToken::from_numbers(1, 1),
        ];
        let letters = held.letters(&TokenSplit::text(&tokens), "exit 1");
        assert_eq!(letters.messages.len(), 1);
        let attributes = &letters.messages[0].attributes;
        assert_eq!(attributes[REASON_ATTRIBUTE], "exit 1");
        assert_eq!(attributes[ATTEMPTS_ATTRIBUTE], "3");
        assert_eq!(attributes["k"], "v");
        assert_eq!(
            letters.messages[0].job,
            Some(crate::job::JobItem::new("j", 4)),
            "a dead letter keeps its job"
        );
        assert_eq!(letters.settled, [("a".to_string(), tokens[0].clone())]);
        assert_eq!(letters.lost, [tokens[2].clone(), tokens[1].clone()]);
        assert_eq!(held.len(), 2, "letters forget nothing by themselves");
        let split = held.release(&[LeaseToken::new("a"), LeaseToken::new("b")]);
        assert_eq!(split.texts(), ["a", "b"]);
        assert!(held.is_empty());
    }
}
