//! Listing, requeueing and purging a dead-letter place that is itself a
//! queue (an SQS queue, a Pub/Sub subscription): written once over
//! [`DeadQueue`], the handful of calls a driver maps onto its backend.
//!
//! - list: receive up to the limit, then release everything at once, so
//!   listing consumes nothing;
//! - requeue: receive a batch, publish each item to the work queue without
//!   its envelope (a fresh item: attempt 1, the attributes it had before it
//!   died), then delete the batch; until a receive comes back empty;
//! - purge: receive and delete, until a receive comes back empty.
//!
//! A crash between publishing and deleting leaves an item both requeued and
//! still dead: at least once, as everywhere else.
//!
//! A driver's dead-letter publish whose delete failed, tried again, leaves
//! two letters of one item, both stamped with its id ([`DeadStamp::id`]):
//! list shows each id once, and requeue publishes each id once and deletes
//! the copies.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;

use super::envelope::DeadStamp;
use super::handback::Carried;
use crate::{DeadLetter, Item, MessageId, QueueError, RequeueWatch};

/// How long listing hides the messages it looks at (released at once after).
/// Short: a lister that dies mid-way (a worker exiting while the ledger
/// looks at the dead place) hides the items only this long; a listing that
/// outlasts it sees some items twice, and the listing drops duplicates by id.
pub const LIST_HOLD: Duration = Duration::from_secs(5);
/// How long requeue and purge hide a batch while they work on it.
pub const WORK_HOLD: Duration = Duration::from_secs(60);

/// One message received from the dead-letter place.
#[derive(Debug, Clone)]
pub struct ReceivedDead {
    /// What releases or deletes it (a receipt handle, an ack id).
    pub handle: String,
    /// Its id in the dead-letter place.
    pub id: MessageId,
    /// The item, decoded, with its envelope still on.
    pub item: Item,
}

/// The calls the dead-letter loops need from a backend.
#[async_trait]
pub trait DeadQueue: Send + Sync {
    /// Most items requeued or purged per round (one publish call's worth).
    fn batch(&self) -> usize;

    /// Receive up to `max` messages of the dead-letter place, hidden from
    /// other readers for about `hold`; empty when none came within a short
    /// wait. May return fewer than are there.
    async fn receive(&self, max: usize, hold: Duration) -> Result<Vec<ReceivedDead>, QueueError>;

    /// Make these messages visible again at once.
    async fn release(&self, handles: Vec<String>) -> Result<(), QueueError>;

    /// Delete these messages for good.
    async fn delete(&self, handles: Vec<String>) -> Result<(), QueueError>;

    /// Publish `messages` to the work queue as new items.
    async fn republish(&self, messages: Vec<Item>) -> Result<(), QueueError>;

    /// What the backend says about an item it dead-lettered by itself (a
    /// redrive or dead-letter policy), taking out every attribute it added
    /// on the way. Parts it cannot say stay `None`.
    fn native_stamp(&self, attributes: &mut BTreeMap<String, String>) -> DeadStamp;
}

/// Receive until `limit` messages or an empty receive.
async fn receive_up_to<D: DeadQueue + ?Sized>(
    dead: &D,
    limit: usize,
    hold: Duration,
) -> Result<Vec<ReceivedDead>, QueueError> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = dead.receive(limit - out.len(), hold).await?;
        if got.is_empty() {
            break;
        }
        out.extend(got);
    }
    Ok(out)
}

/// The item a dead message holds, and what its envelope (or the backend)
/// says about its death.
pub fn unseal<D: DeadQueue + ?Sized>(dead: &D, received: ReceivedDead) -> DeadLetter {
    let mut message = received.item;
    let attributes = std::sync::Arc::make_mut(&mut message.attributes);
    let stamp = DeadStamp::open(attributes);
    let stamp = stamp.or(dead.native_stamp(attributes));
    // An item the backend dead-lettered after a hand-back still carries
    // what the hand-back stamped on it.
    let carried = Carried::take(attributes);
    let attempts = carried.attempt(stamp.attempts.unwrap_or(0));
    DeadLetter {
        id: stamp.id.or(carried.id).unwrap_or(received.id),
        reason: stamp
            .reason
            .unwrap_or_else(|| format!("delivered {attempts} times without an ack")),
        attempts,
        item: message,
    }
}

/// Up to `limit` dead items, consuming none ([`crate::WorkQueue::list_dead`]).
pub async fn list<D: DeadQueue + ?Sized>(
    dead: &D,
    limit: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let received = receive_up_to(dead, limit, LIST_HOLD).await?;
    if !received.is_empty() {
        dead.release(received.iter().map(|r| r.handle.clone()).collect())
            .await?;
    }
    let mut seen = HashSet::new();
    Ok(received
        .into_iter()
        .map(|r| unseal(dead, r))
        .filter(|letter| seen.insert(letter.id.clone()))
        .collect())
}

/// Every dead item back to work, fresh ([`crate::WorkQueue::requeue_dead`]).
pub async fn requeue<D: DeadQueue + ?Sized>(dead: &D) -> Result<u64, QueueError> {
    requeue_telling(dead, None).await
}

/// [`requeue`], telling `watch` of each batch before it is published back
/// ([`crate::WorkQueue::requeue_dead_telling`]): a ledger un-counts the
/// items there, so an item is never counted dead while it is live. A crash
/// (or a failed publish) after `watch` leaves items un-counted and still in
/// the dead place: a requeue run again moves them. Each item of a job goes
/// back in its next life ([`crate::queue::JobItem::next_life`]).
pub async fn requeue_telling<D: DeadQueue + ?Sized>(
    dead: &D,
    watch: Option<&dyn RequeueWatch>,
) -> Result<u64, QueueError> {
    let mut total = 0;
    let mut seen = HashSet::new();
    loop {
        let received = receive_up_to(dead, dead.batch(), WORK_HOLD).await?;
        if received.is_empty() {
            return Ok(total);
        }
        let handles: Vec<String> = received.iter().map(|r| r.handle.clone()).collect();
        let letters: Vec<DeadLetter> = received
            .into_iter()
            .map(|r| unseal(dead, r))
            .filter(|letter| seen.insert(letter.id.clone()))
            .collect();
        if let Some(watch) = watch
            && !letters.is_empty()
            && let Err(error) = watch.before_requeue(&letters).await
        {
            // Still dead and still counted: hand the batch back at once.
            let _ = dead.release(handles).await;
            return Err(error);
        }
        let items: Vec<Item> = letters
            .into_iter()
            .map(|letter| {
                let mut item = letter.item;
                if let Some(job) = item.job.take() {
                    let life = job.next_life();
                    item.job = Some(job.in_life(life));
                }
                item
            })
            .collect();
        total += items.len() as u64;
        if !items.is_empty() {
            dead.republish(items).await?;
        }
        dead.delete(handles).await?;
    }
}

/// Every dead item deleted ([`crate::WorkQueue::purge_dead`]).
pub async fn purge<D: DeadQueue + ?Sized>(dead: &D) -> Result<u64, QueueError> {
    let mut total = 0;
    loop {
        let received = receive_up_to(dead, dead.batch(), WORK_HOLD).await?;
        if received.is_empty() {
            return Ok(total);
        }
        total += received.len() as u64;
        dead.delete(received.into_iter().map(|r| r.handle).collect())
            .await?;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::kit::envelope::REASON_ATTRIBUTE;

    /// A dead queue in memory: `stored` messages, of which `hidden` are
    /// received and not yet released or deleted.
    #[derive(Default)]
    struct Place {
        stored: Mutex<Vec<(String, Item, bool)>>,
        published: Mutex<Vec<Item>>,
    }

    #[async_trait]
    impl DeadQueue for Place {
        fn batch(&self) -> usize {
            2
        }
        async fn receive(&self, max: usize, _: Duration) -> Result<Vec<ReceivedDead>, QueueError> {
            let mut stored = self.stored.lock().unwrap();
            Ok(stored
                .iter_mut()
                .filter(|(_, _, hidden)| !hidden)
                .take(max.min(1))
                .map(|(handle, message, hidden)| {
                    *hidden = true;
                    ReceivedDead {
                        handle: handle.clone(),
                        id: MessageId::from(format!("dead-{handle}")),
                        item: message.clone(),
                    }
                })
                .collect())
        }
        async fn release(&self, handles: Vec<String>) -> Result<(), QueueError> {
            for entry in self.stored.lock().unwrap().iter_mut() {
                if handles.contains(&entry.0) {
                    entry.2 = false;
                }
            }
            Ok(())
        }
        async fn delete(&self, handles: Vec<String>) -> Result<(), QueueError> {
            self.stored
                .lock()
                .unwrap()
                .retain(|(handle, _, _)| !handles.contains(handle));
            Ok(())
        }
        async fn republish(&self, messages: Vec<Item>) -> Result<(), QueueError> {
            self.published.lock().unwrap().extend(messages);
            Ok(())
        }
        fn native_stamp(&self, attributes: &mut BTreeMap<String, String>) -> DeadStamp {
            DeadStamp {
                attempts: attributes
                    .remove("native-count")
                    .and_then(|n| n.parse().ok()),
                ..DeadStamp::default()
            }
        }
    }

    fn place() -> Place {
        let item = Item::new("a").with_attribute("k", "v");
        let sealed = DeadStamp::new(MessageId::from("7"), 3, "exit 1").seal(item.clone());
        let other = DeadStamp::new(MessageId::from("8"), 3, "exit 1").seal(item.clone());
        let native = item.with_attribute("native-count", "5");
        let stored = ["h1", "h2", "h3"]
            .into_iter()
            .zip([sealed, native, other])
            .map(|(handle, message)| (handle.to_string(), message, false))
            .collect();
        Place {
            stored: Mutex::new(stored),
            ..Place::default()
        }
    }

    #[tokio::test]
    async fn listing_consumes_nothing_and_shows_the_items_unsealed() {
        let place = place();
        let first = list(&place, 10).await.unwrap();
        assert_eq!(first, list(&place, 10).await.unwrap());
        assert_eq!(first.len(), 3);
        assert_eq!((first[0].id.as_ref(), first[0].attempts), ("7", 3));
        assert_eq!(first[0].reason, "exit 1");
        assert_eq!((first[1].id.as_ref(), first[1].attempts), ("dead-h2", 5));
        assert!(first[1].reason.contains("5 times"), "{}", first[1].reason);
        for letter in &first {
            assert_eq!(letter.item, Item::new("a").with_attribute("k", "v"));
        }
        assert_eq!(list(&place, 2).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn requeue_publishes_each_item_as_it_was_and_empties_the_place() {
        let place = place();
        assert_eq!(requeue(&place).await.unwrap(), 3);
        assert!(place.stored.lock().unwrap().is_empty());
        let published = place.published.lock().unwrap();
        assert_eq!(published.len(), 3);
        for message in published.iter() {
            assert!(!message.attributes.contains_key(REASON_ATTRIBUTE));
            assert_eq!(message, &Item::new("a").with_attribute("k", "v"));
        }
    }

    #[tokio::test]
    async fn a_letter_stored_twice_is_listed_and_requeued_once() {
        let place = place();
        let twice = DeadStamp::new(MessageId::from("7"), 3, "exit 1").seal(Item::new("a"));
        place
            .stored
            .lock()
            .unwrap()
            .push(("h4".to_string(), twice, false));
        let listed = list(&place, 10).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|l| l.id.as_ref()).collect();
        assert_eq!(ids, ["7", "dead-h2", "8"]);
        assert_eq!(requeue(&place).await.unwrap(), 3);
        assert!(
            place.stored.lock().unwrap().is_empty(),
            "the copy is deleted"
        );
        assert_eq!(place.published.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn purge_deletes_everything_and_publishes_nothing() {
        let place = place();
        assert_eq!(purge(&place).await.unwrap(), 3);
        assert_eq!(purge(&place).await.unwrap(), 0);
        assert!(place.stored.lock().unwrap().is_empty());
        assert!(place.published.lock().unwrap().is_empty());
    }

    struct Watch(Mutex<Vec<Vec<(u64, u64)>>>, bool);

    #[async_trait]
    impl RequeueWatch for Watch {
        async fn before_requeue(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
            let seen = letters
                .iter()
                .filter_map(|l| l.item.job.as_ref().map(|j| (j.seq, j.life)))
                .collect();
            self.0.lock().unwrap().push(seen);
            if self.1 {
                return Err(QueueError::new(
                    crate::QueueErrorKind::NotFound,
                    "no ledger",
                ));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn requeue_tells_the_watch_before_it_moves_and_starts_a_new_life() {
        let place = place();
        let job = crate::queue::JobItem::new("j", 4).in_life(7);
        let item = Item::new("b").with_job(job);
        let sealed = DeadStamp::new(MessageId::from("9"), 1, "exit 1").seal(item);
        place
            .stored
            .lock()
            .unwrap()
            .push(("h9".into(), sealed, false));
        // A watch that fails: nothing moves, nothing is lost.
        let refusing = Watch(Mutex::default(), true);
        assert!(requeue_telling(&place, Some(&refusing)).await.is_err());
        assert!(place.published.lock().unwrap().is_empty());
        assert_eq!(place.stored.lock().unwrap().len(), 4);
        let watch = Watch(Mutex::default(), false);
        assert_eq!(requeue_telling(&place, Some(&watch)).await.unwrap(), 4);
        let told: Vec<(u64, u64)> = watch.0.lock().unwrap().concat();
        assert_eq!(told, [(4, 7)], "told in the life it died in");
        let published = place.published.lock().unwrap();
        let back = published.iter().find_map(|m| m.job.clone()).unwrap();
        assert_eq!(back.seq, 4);
        assert!(back.life > 7, "a new life: {back:?}");
    }
}
