//! [`MemoryLedger`]: the ledger of one process, the memory queue's, and a
//! reference for the other ledgers' tests.
//!
//! It counts every item, and keeps a receipt for every settled item, or
//! for the dead ones only (the memory queue's default; they are then kept
//! whole, by seq), for as long as the process runs (docs/BENCHMARKS.md:
//! what keeping them costs). Every receipt kept is columns, not
//! [`Receipt`]s:
//! per item a 32-byte [`Slot`] in pages of [`PAGE`] made as receipts
//! arrive, the item's bytes copied into its page's arena (so the payload's
//! own buffer is freed with the delivery, and the memory it held is what
//! the next page is made of), the worker an index into the job's few
//! worker names, the settlement time as an offset from the page's first,
//! and what is rare (a reason, a stderr tail, a time far from its page's)
//! in a side table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::job::{
    Begun, Book, JobSeqs, JobStatus, Ledger, Manifest, Receipt, ReceiptRef, SeqSet, Settled,
};
use crate::{LeaseReport, LeaseToken, QueueError, QueueErrorKind, WorkQueue};

/// The ledger of one process: the memory queue's, and a reference for the
/// others' tests.
///
/// It counts every item. It keeps every receipt ([`MemoryLedger::new`]),
/// or the dead items' only ([`MemoryLedger::without_done_receipts`], the
/// memory queue's unless asked): a done receipt kept in memory for the
/// life of a process that nobody else can read costs ~40 bytes per item,
/// without bound, for a record `runner run` never reads (its per-item
/// record is `--joblog`).
#[derive(Debug)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
    keep_done: bool,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Default)]
struct MemoryState {
    book: Book,
    receipts: HashMap<Arc<str>, JobReceipts>,
}

/// Slots in one page: 256 KiB. Pages are few and large because every
/// page a worker thread's heap has to grow for is a system call
/// (`mprotect`, measured at ~7 µs on this machine's VMs); the memory is
/// only touched, and so only made real, slot by slot.
const PAGE: usize = 8192;

/// One job's receipts, by seq.
#[derive(Debug)]
struct JobReceipts {
    job: Arc<str>,
    /// Page `n` holds seqs `n * PAGE ..`; made when its first receipt
    /// comes.
    pages: Vec<Option<Page>>,
    /// The workers named by the slots' `worker`.
    workers: Vec<Arc<str>>,
    /// The largest page arena so far: a new page's starting room, so an
    /// arena is mostly allocated once, not regrown by doubling.
    arena: usize,
    /// By seq: what only some receipts have.
    rare: HashMap<u64, Rare>,
    /// By seq, where done receipts are not kept: the dead items'
    /// receipts (then no page is made: a few dead items of a large job
    /// must not cost the pages they fall in).
    dead: BTreeMap<u64, Receipt>,
}

/// What a [`Slot`] has no room for.
#[derive(Debug, Default, Clone)]
struct Rare {
    reason: Option<String>,
    stderr_tail: Option<String>,
    /// The item's life, past its first.
    life: u64,
    /// The settlement time, when it is too far from its page's `since`
    /// for [`Slot::at`].
    at: Option<u64>,
    /// What `f` returned.
    value: Option<crate::job::ItemValue>,
    value_url: Option<String>,
    copy: bool,
}

#[derive(Debug)]
struct Page {
    /// Made with room for [`PAGE`] and filled up to the highest slot
    /// written: items settle about in order, so a slot is mostly written
    /// once, when it is reached, not cleared first as well.
    slots: Vec<Slot>,
    /// The slots' items, end to end (a replaced receipt's stay behind).
    items: Vec<u8>,
    /// The settlement time of the page's first receipt (Unix ms): the
    /// slots keep theirs as an offset from it.
    since: u64,
}

/// A receipt as a page keeps it; the job and seq are its place.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seconds: f64,
    /// Milliseconds from the page's `since` (±24 days; else in [`Rare`]).
    at: i32,
    item_start: u32,
    exit_code: i32,
    attempt: u32,
    worker: u32,
    /// Items are cut at [`crate::job::MAX_RECEIPT_ITEM`] bytes.
    item_len: u16,
    /// 0: no receipt; else [`Slot::DONE`] or [`Slot::DEAD`].
    state: u8,
    has_exit_code: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        seconds: 0.0,
        at: 0,
        item_start: 0,
        item_len: 0,
        exit_code: 0,
        attempt: 0,
        worker: 0,
        state: 0,
        has_exit_code: false,
    };
    const DONE: u8 = 1;
    const DEAD: u8 = 2;

    fn state(&self) -> Option<Settled> {
        match self.state {
            Slot::DONE => Some(Settled::Done),
            Slot::DEAD => Some(Settled::Dead),
            _ => None,
        }
    }
}

impl JobReceipts {
    fn new(job: Arc<str>) -> Self {
        Self {
            job,
            pages: Vec::new(),
            workers: Vec::new(),
            rare: HashMap::new(),
            arena: 0,
            dead: BTreeMap::new(),
        }
    }

    /// The index of `worker` in [`JobReceipts::workers`], added if new. A
    /// job has few workers and a batch one: the last is checked first.
    fn worker(&mut self, worker: &Arc<str>) -> u32 {
        if let Some(last) = self.workers.last()
            && (Arc::ptr_eq(last, worker) || last == worker)
        {
            return (self.workers.len() - 1) as u32;
        }
        match self.workers.iter().position(|w| w == worker) {
            Some(i) => i as u32,
            None => {
                self.workers.push(Arc::clone(worker));
                (self.workers.len() - 1) as u32
            }
        }
    }

    /// Keep `receipt` unless its item has one that stays
    /// ([`Settled::replaces`]).
    fn keep(&mut self, receipt: &ReceiptRef<'_>) {
        let Ok(seq) = usize::try_from(receipt.seq) else {
            return;
        };
        let (page, index) = (seq / PAGE, seq % PAGE);
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
        }
        let kept = self.pages[page]
            .as_ref()
            .and_then(|page| page.slots.get(index))
            .and_then(|slot| {
                let life = self.rare.get(&receipt.seq).map_or(0, |rare| rare.life);
                let worker = self.workers.get(slot.worker as usize).map_or("", |w| &**w);
                Some((slot.state()?, life, worker))
            });
        if !receipt.state.replaces(receipt.life, receipt.worker, kept) {
            return;
        }
        let worker = self.worker(receipt.worker);
        let (arena, item) = (&mut self.arena, receipt.item);
        let page = self.pages[page].get_or_insert_with(|| Page {
            slots: Vec::with_capacity(PAGE),
            items: Vec::with_capacity((*arena).max(PAGE * item.len())),
            since: receipt.at,
        });
        if page.slots.len() < index {
            page.slots.resize(index, Slot::EMPTY);
        }
        // Receipts' items are cut at 1 KiB: a page's stay below 4 GiB.
        let item = &item[..item.len().min(usize::from(u16::MAX))];
        let item_start = u32::try_from(page.items.len()).unwrap_or(u32::MAX);
        page.items.extend_from_slice(item);
        self.arena = self.arena.max(page.items.len());
        // The signed distance (times are far below 2^63 ms).
        let at = i32::try_from(receipt.at.wrapping_sub(page.since) as i64).ok();
        let slot = Slot {
            seconds: receipt.seconds,
            at: at.unwrap_or(0),
            item_start,
            item_len: item.len() as u16,
            exit_code: receipt.exit_code.unwrap_or(0),
            attempt: receipt.attempt,
            worker,
            state: match receipt.state {
                Settled::Done => Slot::DONE,
                Settled::Dead => Slot::DEAD,
            },
            has_exit_code: receipt.exit_code.is_some(),
        };
        // Items settle about in order: the next slot is mostly the end.
        match page.slots.get_mut(index) {
            Some(kept) => *kept = slot,
            None => page.slots.push(slot),
        }
        if receipt.reason.is_some()
            || receipt.stderr_tail.is_some()
            || at.is_none()
            || receipt.life != 0
            || receipt.value.is_some()
            || receipt.value_url.is_some()
            || receipt.copy
        {
            let rare = Rare {
                reason: receipt.reason.map(str::to_string),
                stderr_tail: receipt.stderr_tail.map(str::to_string),
                at: at.is_none().then_some(receipt.at),
                life: receipt.life,
                value: receipt.value.cloned(),
                value_url: receipt.value_url.map(str::to_string),
                copy: receipt.copy,
            };
            self.rare.insert(receipt.seq, rare);
        } else if !self.rare.is_empty() {
            self.rare.remove(&receipt.seq);
        }
    }

    /// Where done receipts are not kept: keep `receipt` if it is the
    /// item's first dead one, or drop its dead one if it is done.
    fn keep_dead_only(&mut self, receipt: &ReceiptRef<'_>) {
        if self.dead.is_empty() && receipt.state == Settled::Done {
            return;
        }
        let kept = self
            .dead
            .get(&receipt.seq)
            .map(|kept| (kept.state, kept.life, &*kept.worker));
        if !receipt.state.replaces(receipt.life, receipt.worker, kept) {
            return;
        }
        match receipt.state {
            Settled::Dead => {
                self.dead.insert(receipt.seq, receipt.to_receipt());
            }
            // The done receipt that replaces it is not kept.
            Settled::Done => {
                self.dead.remove(&receipt.seq);
            }
        }
    }

    /// Drop the dead receipt of `seq` in `life`, if that is the one kept:
    /// the item is being requeued.
    fn drop_dead(&mut self, seq: u64, life: u64) {
        if let Some(kept) = self.dead.get(&seq) {
            if kept.life == life {
                self.dead.remove(&seq);
            }
            return;
        }
        let Ok(at) = usize::try_from(seq) else {
            return;
        };
        let kept_life = self.rare.get(&seq).map_or(0, |rare| rare.life);
        let Some(slot) = self
            .pages
            .get_mut(at / PAGE)
            .and_then(Option::as_mut)
            .and_then(|page| page.slots.get_mut(at % PAGE))
        else {
            return;
        };
        if slot.state == Slot::DEAD && kept_life == life {
            *slot = Slot::EMPTY;
            self.rare.remove(&seq);
        }
    }

    /// Every receipt kept, by seq.
    fn receipts(&self) -> Vec<Receipt> {
        // One of the two stores is empty: which depends on the ledger.
        let mut out: Vec<Receipt> = self.dead.values().cloned().collect();
        for (first, page) in (0u64..)
            .step_by(PAGE)
            .zip(&self.pages)
            .filter_map(|(first, page)| Some((first, page.as_ref()?)))
        {
            for (seq, slot) in (first..).zip(page.slots.iter()) {
                let Some(state) = slot.state() else {
                    continue;
                };
                let start = slot.item_start as usize;
                let item = &page.items[start..start + slot.item_len as usize];
                let rare = self.rare.get(&seq).cloned().unwrap_or_default();
                let at = page.since.saturating_add_signed(i64::from(slot.at));
                out.push(Receipt {
                    job: Arc::clone(&self.job),
                    seq,
                    state,
                    attempt: slot.attempt,
                    exit_code: slot.has_exit_code.then_some(slot.exit_code),
                    seconds: slot.seconds,
                    worker: Arc::clone(&self.workers[slot.worker as usize]),
                    item: Bytes::copy_from_slice(item),
                    reason: rare.reason,
                    stderr_tail: rare.stderr_tail,
                    at: rare.at.unwrap_or(at),
                    life: rare.life,
                    value: rare.value,
                    value_url: rare.value_url,
                    copy: rare.copy,
                });
            }
        }
        out
    }
}

impl MemoryLedger {
    /// An empty ledger that keeps every receipt.
    pub fn new() -> Self {
        Self {
            state: Mutex::default(),
            keep_done: true,
        }
    }

    /// An empty ledger that counts every item but keeps only the dead
    /// items' receipts: [`Ledger::receipts`] returns those.
    pub fn without_done_receipts() -> Self {
        Self {
            keep_done: false,
            ..Self::new()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Un-count the deaths `dead` stand for at once (no await): for a
    /// queue that requeues its dead items in its own code, under the lock
    /// it moves them with ([`Ledger::requeued`]).
    pub fn requeued_now(&self, dead: &[Receipt]) {
        let mut state = self.state();
        state.book.requeue(dead);
        for receipt in dead {
            if let Some(kept) = state.receipts.get_mut(&*receipt.job) {
                kept.drop_dead(receipt.seq, receipt.life);
            }
        }
    }

    /// Record receipts at once (no await): for a queue that dead-letters in
    /// its own code.
    pub fn record_now(&self, receipts: &[Receipt]) {
        let borrowed: Vec<ReceiptRef<'_>> = receipts.iter().map(Receipt::borrowed).collect();
        self.record_borrowed(&borrowed);
    }

    /// Record receipts at once, as a worker hands them over
    /// ([`Ledger::record_then_ack`]): nothing of theirs is owned, so nothing is
    /// counted or dropped per receipt.
    pub fn record_borrowed(&self, receipts: &[ReceiptRef<'_>]) {
        let mut state = self.state();
        let MemoryState {
            book,
            receipts: by_job,
        } = &mut *state;
        for run in receipts.chunk_by(ReceiptRef::same_job) {
            let job = run[0].job;
            let entry = book.entry(job);
            // Kept only for the job's own items: a stray seq (up to 2^64)
            // must not size anything.
            let total = entry.manifest.as_ref().map_or(0, |manifest| manifest.total);
            let kept = match by_job.get_mut(&**job) {
                Some(kept) => kept,
                None => by_job
                    .entry(Arc::clone(job))
                    .or_insert_with(|| JobReceipts::new(Arc::clone(job))),
            };
            // One pass: a batch's receipts are read once while in cache.
            for receipt in run {
                // A death in a life a requeue ended is no fact any more.
                let over =
                    receipt.state == Settled::Dead && entry.life_over(receipt.seq, receipt.life);
                entry.settle_one(receipt.seq, receipt.state, receipt.life, receipt.at);
                if receipt.seq >= total || over {
                    continue;
                }
                if self.keep_done {
                    kept.keep(receipt);
                } else {
                    kept.keep_dead_only(receipt);
                }
            }
        }
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        self.state()
            .book
            .begin(manifest)
            .map_err(|message| QueueError::new(QueueErrorKind::Invalid, message))
    }

    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        self.state().book.submitted(job, seqs);
        Ok(())
    }

    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.record_now(receipts);
        Ok(())
    }

    /// Keeps the receipts as lent (nothing copied or counted per receipt
    /// into a [`Receipt`] on the way: see `docs/BENCHMARKS.md`), then acks.
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        self.record_borrowed(receipts);
        queue.ack(tokens).await
    }

    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        Ok(self.state().book.status())
    }

    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        Ok(self.state().book.cancel(job, crate::job::unix_millis()))
    }

    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        Ok(self
            .state()
            .book
            .halt(job, epoch, crate::job::unix_millis()))
    }

    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        Ok(self.state().book.unhalt(job))
    }

    /// The job's counts and receipts go; a `begin` of its name later makes
    /// a new job.
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        let mut state = self.state();
        let forgotten = state.book.forget(job, crate::job::unix_millis());
        if forgotten {
            state.receipts.remove(job);
        }
        Ok(forgotten)
    }

    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.state().book.forgotten())
    }

    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        self.requeued_now(dead);
        Ok(())
    }

    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        Ok(self.state().book.seqs(job))
    }

    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        Ok(self
            .state()
            .receipts
            .get(job)
            .map(JobReceipts::receipts)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(seq: u64, state: Settled, worker: &str) -> Receipt {
        Receipt {
            job: "j".into(),
            seq,
            state,
            attempt: 3,
            exit_code: Some(2),
            seconds: 1.5,
            worker: worker.into(),
            item: Bytes::from(format!("item {seq}")),
            reason: Some("exit code 2".into()),
            stderr_tail: Some("boom".into()),
            at: 7,
            life: 0,
            value: None,
            value_url: None,
            copy: false,
        }
    }

    #[test]
    fn a_slot_is_a_fifth_of_a_receipt() {
        // One slot per item of a job: its size is what a million items
        // cost in memory, beside their items' bytes.
        let (slot, whole) = (size_of::<Slot>(), size_of::<Receipt>());
        assert!(
            slot <= 32 && slot * 4 <= whole,
            "{slot} bytes a slot against {whole}"
        );
    }

    #[tokio::test]
    async fn without_done_receipts_it_counts_every_item_and_keeps_the_dead_ones() {
        let ledger = MemoryLedger::without_done_receipts();
        ledger.begin(&Manifest::new("j", 4, "d")).await.unwrap();
        let dead = receipt(2, Settled::Dead, "w/0");
        ledger
            .record(&[
                receipt(0, Settled::Dead, "w/0"),
                receipt(1, Settled::Done, "w/0"),
                dead.clone(),
            ])
            .await
            .unwrap();
        // Item 0 requeued and done: its dead receipt goes.
        ledger
            .record(&[receipt(0, Settled::Done, "w/1")])
            .await
            .unwrap();
        assert_eq!(ledger.receipts("j").await.unwrap(), [dead]);
        let status = &ledger.jobs().await.unwrap()[0];
        assert_eq!((status.done, status.dead), (2, 1));
        assert!(ledger.state().receipts["j"].pages.is_empty());
        // Done items alone make no page at all, nor a dead one among them.
        let ledger = MemoryLedger::without_done_receipts();
        ledger.begin(&Manifest::new("k", 9000, "d")).await.unwrap();
        let done: Vec<Receipt> = (0..9000)
            .map(|seq| {
                let mut r = receipt(seq, Settled::Done, "w/0");
                r.job = "k".into();
                r
            })
            .collect();
        ledger.record(&done[..8999]).await.unwrap();
        let mut last = done[8999].clone();
        last.state = Settled::Dead;
        ledger.record(&[last.clone()]).await.unwrap();
        assert_eq!(ledger.receipts("k").await.unwrap(), [last]);
        let state = ledger.state();
        assert!(state.receipts["k"].pages.is_empty());
        let status = state.book.status_of("k").unwrap();
        assert_eq!((status.done, status.dead), (8999, 1));
    }

    #[tokio::test]
    async fn receipts_come_back_whole_across_pages_and_replaced_by_the_rule() {
        let ledger = MemoryLedger::new();
        let total = 3 * PAGE as u64;
        ledger.begin(&Manifest::new("j", total, "d")).await.unwrap();
        let mut sent = vec![
            receipt(0, Settled::Dead, "w/0"),
            receipt(PAGE as u64 + 5, Settled::Done, "w/1"),
            receipt(total - 1, Settled::Done, "w/0"),
        ];
        sent[1].exit_code = None;
        (sent[2].reason, sent[2].stderr_tail) = (None, None);
        // A settlement time far from its page's first is kept whole.
        let mut far = receipt(1, Settled::Done, "w/1");
        (far.at, far.reason, far.stderr_tail) = (1 << 40, None, None);
        sent.insert(1, far);
        // A stray seq past the total, and a dead receipt after a done one.
        let mut stray = receipt(total, Settled::Done, "w/0");
        stray.item = Bytes::from_static(b"stray");
        let late = receipt(PAGE as u64 + 5, Settled::Dead, "w/2");
        ledger.record(&sent).await.unwrap();
        ledger.record(&[stray, late]).await.unwrap();
        assert_eq!(ledger.receipts("j").await.unwrap(), sent);
        // Done replaces dead, and drops the dead one's reason.
        let mut done = receipt(0, Settled::Done, "w/2");
        (done.reason, done.stderr_tail) = (None, None);
        ledger.record(std::slice::from_ref(&done)).await.unwrap();
        sent[0] = done;
        assert_eq!(ledger.receipts("j").await.unwrap(), sent);
        assert!(ledger.receipts("other").await.unwrap().is_empty());
    }
}
