//! Listing, requeueing and purging a dead-letter place that is itself a
//! queue (an SQS queue, a Pub/Sub subscription): written once over
//! [`DeadQueue`], the handful of calls a driver maps onto its backend.
//!
//! - list: receive up to the limit, then release everything at once, so
//!   listing consumes nothing;
//! - requeue: receive a batch, publish each item to the work queue without
//!   its envelope (a fresh item: attempt 1, the attributes it had before it
//!   died), then delete the batch; until a receive comes back empty;
//! - requeue where: the same, for the letters a predicate picks; the
//!   others are held until the pass ends, then released untouched
//!   ([`requeue_where`]);
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
use crate::{DeadLetter, DeadSelect, Item, MessageId, QueueError, RequeueWatch, Requeued};

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
    Ok(requeue_where(dead, &|_| true, watch).await?.moved)
}

/// The dead items `select` picks back to work, as [`requeue_telling`]
/// moves them; the others are left dead, untouched
/// ([`crate::WorkQueue::requeue_dead_where`]).
///
/// Neither SQS nor Pub/Sub can look at a message without hiding it, so the
/// letters left dead are held (hidden for [`WORK_HOLD`]) until the pass
/// ends and then released at once: the next receive brings letters not
/// yet looked at. A letter whose hold ran out comes back and is held
/// again; a round that brings nothing new but such letters ends the pass
/// (a dead place too big to go through within the hold leaves some
/// matching letters unmoved: run it again). A requeuer that dies mid-way
/// leaves what it held hidden for at most [`WORK_HOLD`], and at worst a
/// batch both published back (in its next life, its death un-counted by
/// `watch` first) and still dead (in the life that ended, which counts no
/// more): the item counts once in its job.
pub async fn requeue_where<D: DeadQueue + ?Sized>(
    dead: &D,
    select: &DeadSelect<'_>,
    watch: Option<&dyn RequeueWatch>,
) -> Result<Requeued, QueueError> {
    let mut pass = Pass::default();
    let result = pass.run(dead, select, watch).await;
    if !pass.held.is_empty() {
        // On failure they come back by themselves once their hold ends.
        let _ = dead.release(std::mem::take(&mut pass.held)).await;
    }
    result.map(|moved| Requeued {
        moved,
        left: pass.left.len() as u64,
    })
}

/// What one pass of [`requeue_where`] decided so far, by letter id.
#[derive(Default)]
struct Pass {
    moved: HashSet<MessageId>,
    left: HashSet<MessageId>,
    /// Handles of letters left dead, released when the pass ends.
    held: Vec<String>,
}

impl Pass {
    async fn run<D: DeadQueue + ?Sized>(
        &mut self,
        dead: &D,
        select: &DeadSelect<'_>,
        watch: Option<&dyn RequeueWatch>,
    ) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let received = receive_up_to(dead, dead.batch(), WORK_HOLD).await?;
            if received.is_empty() {
                return Ok(total);
            }
            // Handles to delete (the picked letters and copies of letters
            // already moved) and the letters to move.
            let (mut gone, mut going) = (Vec::new(), Vec::new());
            let (mut new, mut back) = (false, false);
            for received in received {
                let handle = received.handle.clone();
                let letter = unseal(dead, received);
                if self.moved.contains(&letter.id) {
                    gone.push(handle);
                } else if self.left.contains(&letter.id) {
                    back = true;
                    self.held.push(handle);
                } else if select(&letter) {
                    new = true;
                    self.moved.insert(letter.id.clone());
                    gone.push(handle);
                    going.push(letter);
                } else {
                    new = true;
                    self.left.insert(letter.id.clone());
                    self.held.push(handle);
                }
            }
            if let Some(watch) = watch
                && !going.is_empty()
                && let Err(error) = watch.before_requeue(&going).await
            {
                // Still dead and still counted: hand the batch back at once.
                let _ = dead.release(gone).await;
                return Err(error);
            }
            let items: Vec<Item> = going
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
            if !gone.is_empty() {
                dead.delete(gone).await?;
            }
            if back && !new {
                // Only letters already looked at: the pass has gone round.
                return Ok(total);
            }
        }
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
        /// Every delete fails (a requeuer that dies before it deletes).
        failing_delete: bool,
        /// Holds end at once: a received message can be received again.
        holds_lapse: bool,
    }

    #[async_trait]
    impl DeadQueue for Place {
        fn batch(&self) -> usize {
            2
        }
        async fn receive(&self, max: usize, _: Duration) -> Result<Vec<ReceivedDead>, QueueError> {
            let mut stored = self.stored.lock().unwrap();
            // Once every message is hidden, a place whose holds lapse
            // hands the hidden ones out again.
            let lapsed = self.holds_lapse && stored.iter().all(|(_, _, hidden)| *hidden);
            Ok(stored
                .iter_mut()
                .filter(|(_, _, hidden)| !hidden || lapsed)
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
            if self.failing_delete {
                return Err(QueueError::new(
                    crate::QueueErrorKind::Unavailable,
                    "the requeuer died",
                ));
            }
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

    fn stored_payloads(place: &Place) -> Vec<String> {
        place
            .stored
            .lock()
            .unwrap()
            .iter()
            .map(|(_, item, _)| String::from_utf8_lossy(&item.payload).into_owned())
            .collect()
    }

    fn with_reasons(reasons: &[&str]) -> Place {
        let stored = reasons
            .iter()
            .enumerate()
            .map(|(n, reason)| {
                let item =
                    Item::new(format!("i{n}")).with_job(crate::queue::JobItem::new("j", n as u64));
                let sealed = DeadStamp::new(MessageId::from(format!("{n}")), 2, *reason).seal(item);
                (format!("h{n}"), sealed, false)
            })
            .collect();
        Place {
            stored: Mutex::new(stored),
            ..Place::default()
        }
    }

    #[tokio::test]
    async fn a_filtered_requeue_moves_the_picked_and_leaves_the_rest_as_they_were() {
        let place = with_reasons(&[
            "exit code 137",
            "exit code 1",
            "exit code 137",
            "exit code 2",
        ]);
        let before = place.stored.lock().unwrap().clone();
        let watch = Watch(Mutex::default(), false);
        let picked = |l: &DeadLetter| l.reason.contains("137");
        let report = requeue_where(&place, &picked, Some(&watch)).await.unwrap();
        assert_eq!(report, Requeued { moved: 2, left: 2 });
        let told: Vec<(u64, u64)> = watch.0.lock().unwrap().concat();
        assert_eq!(
            told,
            [(0, 0), (2, 0)],
            "told of the picked only, before they moved"
        );
        let published = place.published.lock().unwrap();
        let payloads: Vec<&[u8]> = published.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, [b"i0", b"i2"]);
        assert!(
            published.iter().all(|m| m.job.as_ref().unwrap().life > 0),
            "a new life"
        );
        // The rest: the same messages, released, in the order they were.
        let after = place.stored.lock().unwrap().clone();
        let kept: Vec<_> = before
            .into_iter()
            .filter(|(h, _, _)| h == "h1" || h == "h3")
            .collect();
        assert_eq!(after, kept);
        assert_eq!(stored_payloads(&place), ["i1", "i3"]);
    }

    #[tokio::test]
    async fn a_filtered_requeue_ends_when_held_letters_come_back() {
        // A pass longer than the hold: letters left dead come back; the
        // pass ends instead of going round for ever.
        let place = Place {
            holds_lapse: true,
            ..with_reasons(&["exit code 1", "exit code 2"])
        };
        let report = requeue_where(&place, &|_| false, None).await.unwrap();
        assert_eq!(report, Requeued { moved: 0, left: 2 });
        assert_eq!(stored_payloads(&place), ["i0", "i1"]);
    }

    #[tokio::test]
    async fn a_requeuer_that_dies_mid_way_leaves_the_item_live_in_a_new_life_and_dead_in_the_old() {
        let place = Place {
            failing_delete: true,
            ..with_reasons(&["exit code 137", "exit code 1"])
        };
        let watch = Watch(Mutex::default(), false);
        let picked = |l: &DeadLetter| l.reason.contains("137");
        assert!(requeue_where(&place, &picked, Some(&watch)).await.is_err());
        // The ledger was told life 0 is over before the item went back in
        // a later life: the letter still dead is of the life that ended,
        // so its job counts the item once (the sheet ledger's rule).
        assert_eq!(watch.0.lock().unwrap().concat(), [(0, 0)]);
        let published = place.published.lock().unwrap();
        assert_eq!(published.len(), 1);
        assert!(published[0].job.as_ref().unwrap().life > 0);
        assert_eq!(stored_payloads(&place), ["i0", "i1"], "both still dead");
        // What it held is released: nothing stays hidden.
        assert!(
            place
                .stored
                .lock()
                .unwrap()
                .iter()
                .all(|(h, _, hidden)| h == "h0" || !hidden)
        );
    }
}
