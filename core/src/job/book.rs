//! [`Book`]: the ledger's state as a value: every job's manifest and which
//! of its items were submitted, done and dead. Two books merge by union
//! (done beats dead), in any order and any number of times, so a ledger kept
//! as messages can be read in pieces, merged, and written back whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Begun, JobSeqs, JobStatus, Manifest, Receipt, SeqSet, Settled};

/// Every job's manifest and settled items.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// By job name.
    pub jobs: BTreeMap<String, Entry>,
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
    /// Items dead-lettered and not done since.
    #[serde(default)]
    pub dead: SeqSet,
    /// The first and last settlement (Unix milliseconds), for a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_between: Option<(u64, u64)>,
}

impl Entry {
    fn settle(&mut self, receipts: &[Receipt]) {
        for receipt in receipts {
            self.settle_one(receipt.seq, receipt.state, receipt.at);
        }
    }

    /// Count one receipt of this job (item `seq`, settled `state` at
    /// `at`): once; done beats dead.
    pub(crate) fn settle_one(&mut self, seq: u64, state: Settled, at: u64) {
        self.submitted.insert(seq);
        match state {
            Settled::Done => {
                self.done.insert(seq);
                if !self.dead.is_empty() {
                    self.dead.remove(seq);
                }
            }
            Settled::Dead if !self.done.contains(seq) => {
                self.dead.insert(seq);
            }
            Settled::Dead => {}
        }
        self.settled_at(at);
    }

    fn settled_at(&mut self, at: u64) {
        self.settled_between = Some(match self.settled_between {
            Some((first, last)) => (first.min(at), last.max(at)),
            None => (at, at),
        });
    }
}

impl Book {
    /// Record `manifest` unless the job exists. A job of the same name
    /// with another total or digest is refused: it is a different input.
    pub fn begin(&mut self, manifest: &Manifest) -> Result<Begun, String> {
        let entry = self.jobs.entry(manifest.job.clone()).or_default();
        match &entry.manifest {
            None => {
                entry.manifest = Some(manifest.clone());
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

    /// `job`'s entry, made empty if it has none.
    pub(crate) fn entry(&mut self, job: &str) -> &mut Entry {
        if !self.jobs.contains_key(job) {
            self.jobs.insert(job.to_string(), Entry::default());
        }
        self.jobs.get_mut(job).expect("just made")
    }

    /// Add everything `other` knows.
    pub fn merge(&mut self, other: &Book) {
        for (job, theirs) in &other.jobs {
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
            ours.dead.subtract(&ours.done);
            if let Some((first, last)) = theirs.settled_between {
                ours.settled_at(first);
                ours.settled_at(last);
            }
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
            dead: entry.dead.len_below(total),
            settled_between: entry.settled_between,
            cancelled: None,
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
            dead: entry.dead.clone(),
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
}
