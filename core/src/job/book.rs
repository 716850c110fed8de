//! [`Book`]: the ledger's state as a value: every job's manifest and which
//! of its items were submitted, done and dead, which deaths a requeue
//! un-counted, which jobs were cancelled and which forgotten. Two books
//! merge by union, in any order and any number of times, so a ledger kept
//! as messages can be read in pieces, merged, and written back whole.
//!
//! Every fact only grows, so the merge needs no clock:
//! - done beats dead, for good;
//! - a death is of one life of the item ([`crate::job::JobItem::life`]):
//!   a requeue records that life as over ([`Book::requeue`]) before the item
//!   moves, and a later death is of a later life, so it counts again
//!   whatever order the two facts are merged in;
//! - a cancellation keeps the earliest time any reader recorded;
//! - a halt is of one epoch (resumes start new ones): the latest epoch
//!   wins, and in it the earliest halt ([`Halt::merge`]);
//! - a forgotten job leaves a tombstone ([`Tomb`]) that drops its manifest
//!   and sets wherever they are merged again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Begun, Halt, JobSeqs, JobStatus, Manifest, Receipt, SeqSet, Settled};

/// Every job's manifest and settled items.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// By job name.
    pub jobs: BTreeMap<String, Entry>,
    /// Jobs forgotten ([`Book::forget`]), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forgotten: BTreeMap<String, Tomb>,
}

/// What is left of a forgotten job: its name, when it was forgotten, and
/// which manifests it drops (those created up to `created`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tomb {
    /// When it was forgotten (Unix milliseconds).
    pub at: u64,
    /// The forgotten manifest's `created` (Unix seconds): a manifest
    /// created then or before is of the forgotten job.
    pub created: u64,
}

/// One job in a [`Book`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Written by `submit` before the first item goes out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Items known to be in the queue (or past it).
    #[serde(default)]
    pub submitted: SeqSet,
    /// Items that succeeded.
    #[serde(default)]
    pub done: SeqSet,
    /// Items dead in their first life (life 0), not done since and not
    /// requeued.
    #[serde(default)]
    pub dead: SeqSet,
    /// Items dead in a later life, by life: not done since and not
    /// requeued.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redead: BTreeMap<u64, SeqSet>,
    /// Lives that are over, by life: the items a requeue put back to work
    /// (a death in that life counts no more).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requeued: BTreeMap<u64, SeqSet>,
    /// The first and last settlement (Unix milliseconds), for a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_between: Option<(u64, u64)>,
    /// When the job was cancelled (Unix milliseconds): the earliest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<u64>,
    /// Its halt and resumes ([`Halt::merge`]).
    #[serde(default, skip_serializing_if = "Halt::is_empty")]
    pub halt: Halt,
}

impl Entry {
    fn settle(&mut self, receipts: &[Receipt]) {
        for receipt in receipts {
            self.settle_one(receipt.seq, receipt.state, receipt.life, receipt.at);
        }
    }

    /// Count one receipt of this job (item `seq`, settled `state` in
    /// `life` at `at`): once; done beats dead; a death in a life a requeue
    /// ended counts for nothing.
    pub(crate) fn settle_one(&mut self, seq: u64, state: Settled, life: u64, at: u64) {
        self.submitted.insert(seq);
        match state {
            Settled::Done => {
                self.done.insert(seq);
                if !self.dead.is_empty() {
                    self.dead.remove(seq);
                }
                if !self.redead.is_empty() {
                    self.redead.values_mut().for_each(|set| set.remove(seq));
                    self.redead.retain(|_, set| !set.is_empty());
                }
            }
            Settled::Dead if self.done.contains(seq) || self.life_over(seq, life) => {}
            Settled::Dead if life == 0 => self.dead.insert(seq),
            Settled::Dead => self.redead.entry(life).or_default().insert(seq),
        }
        self.settled_at(at);
    }

    /// Whether a requeue ended `life` of item `seq`.
    pub(crate) fn life_over(&self, seq: u64, life: u64) -> bool {
        !self.requeued.is_empty()
            && self
                .requeued
                .get(&life)
                .is_some_and(|set| set.contains(seq))
    }

    /// Record that `life` of item `seq` is over (it is being requeued):
    /// its death in that life no longer counts.
    pub(crate) fn requeue(&mut self, seq: u64, life: u64) {
        self.requeued.entry(life).or_default().insert(seq);
        if life == 0 {
            self.dead.remove(seq);
        } else if let Some(set) = self.redead.get_mut(&life) {
            set.remove(seq);
            if set.is_empty() {
                self.redead.remove(&life);
            }
        }
    }

    /// Items dead now: in their first life or a later one.
    pub fn dead_now(&self) -> std::borrow::Cow<'_, SeqSet> {
        if self.redead.is_empty() {
            return std::borrow::Cow::Borrowed(&self.dead);
        }
        let mut all = self.dead.clone();
        for set in self.redead.values() {
            all.union(set);
        }
        std::borrow::Cow::Owned(all)
    }

    /// Drop the deaths that done items or ended lives outweigh.
    fn normalize(&mut self) {
        self.dead.subtract(&self.done);
        if let Some(over) = self.requeued.get(&0) {
            self.dead.subtract(over);
        }
        for (life, set) in &mut self.redead {
            set.subtract(&self.done);
            if let Some(over) = self.requeued.get(life) {
                set.subtract(over);
            }
        }
        self.redead.retain(|_, set| !set.is_empty());
    }

    fn settled_at(&mut self, at: u64) {
        self.settled_between = Some(match self.settled_between {
            Some((first, last)) => (first.min(at), last.max(at)),
            None => (at, at),
        });
    }

    fn is_of(&self, tomb: &Tomb) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|manifest| manifest.created <= tomb.created)
    }
}

impl Book {
    /// Record `manifest` unless the job exists. A job of the same name
    /// with another total or digest is refused: it is a different input.
    /// A job of a forgotten name is new: its manifest is stamped created
    /// after the forgotten one, so the tombstone does not drop it.
    pub fn begin(&mut self, manifest: &Manifest) -> Result<Begun, String> {
        let tomb = self.forgotten.get(&manifest.job).copied();
        let entry = self.jobs.entry(manifest.job.clone()).or_default();
        match &entry.manifest {
            None => {
                let mut manifest = manifest.clone();
                if let Some(tomb) = tomb {
                    manifest.created = manifest.created.max(tomb.created + 1);
                }
                entry.manifest = Some(manifest);
                Ok(Begun::New)
            }
            Some(known) if known.total == manifest.total && known.digest == manifest.digest => {
                let status = self.status_of(&manifest.job).expect("just seen");
                Ok(Begun::Existing(status))
            }
            Some(known) => Err(format!(
                "job `{}` already exists with {} items of another input (digest {}); this input has {} items (digest {}). \
                 Name this one with `--job NEW-NAME`",
                known.job,
                known.total,
                short(&known.digest),
                manifest.total,
                short(&manifest.digest)
            )),
        }
    }

    /// Mark `seqs` of `job` as in the queue.
    pub fn submitted(&mut self, job: &str, seqs: &SeqSet) {
        self.jobs
            .entry(job.to_string())
            .or_default()
            .submitted
            .union(seqs);
    }

    /// Count `receipts`: each (job, seq) once; done beats dead.
    pub fn settle(&mut self, receipts: &[Receipt]) {
        // A batch's receipts are mostly of one job: one lookup per run.
        for run in receipts.chunk_by(Receipt::same_job) {
            self.entry(&run[0].job).settle(run);
        }
    }

    /// Un-count the deaths `dead` stand for (each its item's life as the
    /// receipt has it): their items are being put back to work.
    pub fn requeue(&mut self, dead: &[Receipt]) {
        for receipt in dead {
            self.entry(&receipt.job).requeue(receipt.seq, receipt.life);
        }
    }

    /// Record `job` as cancelled at `at` (the earliest stays); `false`:
    /// no such job.
    pub fn cancel(&mut self, job: &str, at: u64) -> bool {
        match self.jobs.get_mut(job) {
            Some(entry) if entry.manifest.is_some() => {
                entry.cancelled = Some(entry.cancelled.map_or(at, |c| c.min(at)));
                true
            }
            _ => false,
        }
    }

    /// Record `job` as halted in `epoch` at `at` ([`Halt::halt`]);
    /// `false`: no such job, or it is in another epoch.
    pub fn halt(&mut self, job: &str, epoch: u64, at: u64) -> bool {
        match self.jobs.get_mut(job) {
            Some(entry) if entry.manifest.is_some() => entry.halt.halt(epoch, at),
            _ => false,
        }
    }

    /// Resume `job` from a halt: a new epoch from its counts now;
    /// `false`: no such job.
    pub fn unhalt(&mut self, job: &str) -> bool {
        let Some(status) = self.status_of(job) else {
            return false;
        };
        self.entry(job).halt.unhalt(status.dead, status.settled());
        true
    }

    /// Forget `job` at `at`: its entry goes, a tombstone stays; `false`:
    /// no such job.
    pub fn forget(&mut self, job: &str, at: u64) -> bool {
        let Some(created) = self
            .jobs
            .get(job)
            .and_then(|entry| Some(entry.manifest.as_ref()?.created))
        else {
            return false;
        };
        let tomb = self.forgotten.entry(job.to_string()).or_default();
        tomb.at = tomb.at.max(at);
        tomb.created = tomb.created.max(created);
        self.jobs.remove(job);
        true
    }

    /// The forgotten jobs' names: those with a tombstone and no newer job
    /// of the name.
    pub fn forgotten(&self) -> Vec<String> {
        self.forgotten
            .keys()
            .filter(|job| {
                self.jobs
                    .get(*job)
                    .is_none_or(|entry| entry.manifest.is_none())
            })
            .cloned()
            .collect()
    }

    /// `job`'s entry, made empty if it has none.
    pub(crate) fn entry(&mut self, job: &str) -> &mut Entry {
        if !self.jobs.contains_key(job) {
            self.jobs.insert(job.to_string(), Entry::default());
        }
        self.jobs.get_mut(job).expect("just made")
    }

    /// Add everything `other` knows.
    pub fn merge(&mut self, other: &Book) {
        for (job, tomb) in &other.forgotten {
            let ours = self.forgotten.entry(job.clone()).or_default();
            ours.at = ours.at.max(tomb.at);
            ours.created = ours.created.max(tomb.created);
        }
        // Tombstones first: what they drop goes before anything merges
        // into it (a new job of the name must not merge into the old one).
        if !other.forgotten.is_empty() {
            let forgotten = &self.forgotten;
            self.jobs
                .retain(|job, entry| forgotten.get(job).is_none_or(|tomb| !entry.is_of(tomb)));
        }
        for (job, theirs) in &other.jobs {
            // A forgotten job's facts, merged again: dropped.
            if self
                .forgotten
                .get(job)
                .is_some_and(|tomb| theirs.is_of(tomb))
            {
                continue;
            }
            let ours = self.jobs.entry(job.clone()).or_default();
            // Two manifests for one job (two submits of different inputs
            // under one name at the same moment): the older wins, the same
            // way whatever the order of the merge.
            let theirs_first = match (&ours.manifest, &theirs.manifest) {
                (None, Some(_)) => true,
                (Some(o), Some(t)) => {
                    (t.created, &t.digest, t.total) < (o.created, &o.digest, o.total)
                }
                _ => false,
            };
            if theirs_first {
                ours.manifest.clone_from(&theirs.manifest);
            }
            ours.submitted.union(&theirs.submitted);
            ours.done.union(&theirs.done);
            ours.dead.union(&theirs.dead);
            for (life, set) in &theirs.redead {
                ours.redead.entry(*life).or_default().union(set);
            }
            for (life, set) in &theirs.requeued {
                ours.requeued.entry(*life).or_default().union(set);
            }
            ours.normalize();
            if let Some((first, last)) = theirs.settled_between {
                ours.settled_at(first);
                ours.settled_at(last);
            }
            if let Some(at) = theirs.cancelled {
                ours.cancelled = Some(ours.cancelled.map_or(at, |c| c.min(at)));
            }
            ours.halt.merge(&theirs.halt);
        }
    }

    /// Every job that has a manifest, with its counts.
    pub fn status(&self) -> Vec<JobStatus> {
        self.jobs
            .keys()
            .filter_map(|job| self.status_of(job))
            .collect()
    }

    /// One job's counts, if it has a manifest.
    pub fn status_of(&self, job: &str) -> Option<JobStatus> {
        let entry = self.jobs.get(job)?;
        let manifest = entry.manifest.clone()?;
        // Only the job's own items count: a seq past its total (a stray
        // attribute) must not complete it.
        let total = manifest.total;
        Some(JobStatus {
            submitted: entry.submitted.len_below(total),
            done: entry.done.len_below(total),
            dead: entry.dead_now().len_below(total),
            settled_between: entry.settled_between,
            cancelled: entry.cancelled,
            halt: entry.halt,
            manifest,
        })
    }

    /// One job's sets, if it has a manifest.
    pub fn seqs(&self, job: &str) -> Option<JobSeqs> {
        let entry = self.jobs.get(job)?;
        Some(JobSeqs {
            manifest: entry.manifest.clone()?,
            submitted: entry.submitted.clone(),
            done: entry.done.clone(),
            dead: entry.dead_now().into_owned(),
        })
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(job: &str, seq: u64, state: Settled) -> Receipt {
        Receipt {
            job: job.into(),
            seq,
            state,
            attempt: 1,
            exit_code: None,
            seconds: 0.0,
            worker: "w".into(),
            item: bytes::Bytes::new(),
            reason: None,
            stderr_tail: None,
            at: 1000 + seq,
            life: 0,
            value: None,
            value_url: None,
            copy: false,
        }
    }

    #[test]
    fn counts_each_item_once_and_done_beats_dead() {
        let mut book = Book::default();
        book.begin(&Manifest::new("j", 3, "d")).unwrap();
        book.settle(&[
            receipt("j", 0, Settled::Done),
            receipt("j", 0, Settled::Done),
        ]);
        book.settle(&[receipt("j", 1, Settled::Dead)]);
        let status = book.status_of("j").unwrap();
        assert_eq!(
            (status.done, status.dead, status.is_complete()),
            (1, 1, false)
        );
        book.settle(&[
            receipt("j", 1, Settled::Done),
            receipt("j", 2, Settled::Dead),
        ]);
        book.settle(&[receipt("j", 1, Settled::Dead)]);
        let status = book.status_of("j").unwrap();
        assert_eq!(
            (status.done, status.dead, status.is_complete()),
            (2, 1, true)
        );
    }

    #[test]
    fn merging_in_any_order_gives_the_same_book() {
        let mut a = Book::default();
        a.begin(&Manifest::new("j", 4, "d")).unwrap();
        a.settle(&[
            receipt("j", 0, Settled::Dead),
            receipt("j", 1, Settled::Done),
        ]);
        let mut b = Book::default();
        b.settle(&[
            receipt("j", 0, Settled::Done),
            receipt("j", 3, Settled::Dead),
        ]);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        ba.merge(&a);
        assert_eq!(ab, ba);
        let status = ab.status_of("j").unwrap();
        assert_eq!((status.done, status.dead), (2, 1));
    }

    #[test]
    fn a_seq_past_the_total_counts_for_nothing() {
        // A stray `forloop-seq` (another program's item, a bug) must not
        // complete a job whose own items are still out.
        let mut book = Book::default();
        book.begin(&Manifest::new("j", 2, "d")).unwrap();
        book.settle(&[
            receipt("j", 0, Settled::Done),
            receipt("j", 2, Settled::Done),
            receipt("j", 7, Settled::Dead),
        ]);
        let status = book.status_of("j").unwrap();
        assert_eq!(
            (
                status.done,
                status.dead,
                status.submitted,
                status.is_complete()
            ),
            (1, 0, 1, false)
        );
    }

    #[test]
    fn another_input_under_the_same_name_is_refused() {
        let mut book = Book::default();
        assert_eq!(book.begin(&Manifest::new("j", 3, "d1")), Ok(Begun::New));
        assert!(matches!(
            book.begin(&Manifest::new("j", 3, "d1")),
            Ok(Begun::Existing(_))
        ));
        let error = book.begin(&Manifest::new("j", 4, "d2")).unwrap_err();
        assert!(error.contains("--job"), "{error}");
    }

    fn dead_in(job: &str, seq: u64, life: u64) -> Receipt {
        let mut r = receipt(job, seq, Settled::Dead);
        r.life = life;
        r
    }

    #[test]
    fn a_requeue_uncounts_a_death_and_a_later_life_counts_in_any_merge_order() {
        // The facts of one item: died in life 0, requeued, died in life 9.
        let mut begun = Book::default();
        begun.begin(&Manifest::new("j", 2, "d")).unwrap();
        begun.settle(&[receipt("j", 0, Settled::Done), dead_in("j", 1, 0)]);
        let mut requeued = Book::default();
        requeued.requeue(&[dead_in("j", 1, 0)]);
        let mut again = Book::default();
        again.settle(&[dead_in("j", 1, 9)]);
        let facts = [begun, requeued, again];
        let mut seen = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1], [2, 0, 1]] {
            let mut book = Book::default();
            for i in order {
                book.merge(&facts[i]);
                book.merge(&facts[i]);
            }
            let status = book.status_of("j").unwrap();
            assert_eq!((status.done, status.dead), (1, 1), "{order:?}: {book:?}");
            seen.push(book);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "one book whatever the order"
        );
        // Without the later death, the item is live.
        let mut book = facts[0].clone();
        book.merge(&facts[1]);
        let status = book.status_of("j").unwrap();
        assert_eq!((status.dead, status.is_complete()), (0, false));
        // A late copy of the first death counts for nothing.
        book.settle(&[dead_in("j", 1, 0)]);
        assert_eq!(book.status_of("j").unwrap().dead, 0);
        // Done beats every death.
        book.settle(&[dead_in("j", 1, 9), receipt("j", 1, Settled::Done)]);
        let status = book.status_of("j").unwrap();
        assert_eq!((status.done, status.dead), (2, 0));
    }

    #[test]
    fn a_cancellation_merges_to_the_earliest_and_survives_a_round_trip() {
        let mut a = Book::default();
        a.begin(&Manifest::new("j", 2, "d")).unwrap();
        let mut b = a.clone();
        assert!(a.cancel("j", 50) && b.cancel("j", 20) && b.cancel("j", 70));
        assert!(!a.cancel("other", 1));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        let status = ab.status_of("j").unwrap();
        assert_eq!(status.cancelled, Some(20));
        assert!(status.is_over() && !status.is_complete());
        let back: Book = serde_json::from_slice(&serde_json::to_vec(&ab).unwrap()).unwrap();
        assert_eq!(back, ab);
    }

    #[test]
    fn a_forgotten_job_stays_gone_where_its_facts_merge_again_and_its_name_begins_anew() {
        let mut old = Book::default();
        old.begin(&Manifest::new("j", 3, "d")).unwrap();
        old.settle(&[receipt("j", 0, Settled::Done)]);
        let mut book = old.clone();
        assert!(book.forget("j", 5_000));
        assert!(!book.forget("j", 6_000), "forgotten already");
        assert!(book.status().is_empty());
        assert_eq!(book.forgotten(), ["j"]);
        // An old sheet merged again (another reader held it): still gone.
        book.merge(&old);
        assert!(book.status().is_empty(), "{book:?}");
        let mut other = old.clone();
        other.merge(&book);
        assert!(other.status().is_empty(), "{other:?}");
        // The name again: a new job, created after the forgotten one.
        let manifest = Manifest::new("j", 2, "d2");
        assert_eq!(book.begin(&manifest), Ok(Begun::New));
        book.merge(&old);
        let status = book.status_of("j").expect("the new job");
        assert_eq!((status.manifest.total, status.done), (2, 0));
        assert!(book.forgotten().is_empty());
        let mut fresh = old.clone();
        fresh.merge(&book);
        assert_eq!(fresh.status_of("j").unwrap().manifest.digest, "d2");
    }
}
