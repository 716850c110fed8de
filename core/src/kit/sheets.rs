//! [`SheetLedger`]: a [`Ledger`] kept as messages ("sheets") in two sibling
//! queues of a job's queue, for backends that can neither count exactly nor
//! be re-read (SQS, Pub/Sub). Written once here; a driver only names, makes
//! and opens the siblings. The design and its costs are in
//! `docs/design/job-ledger.md`.
//!
//! - `NAME-ledger` holds **book sheets**: serialized [`Book`]s (manifests
//!   and sequence sets, no details). Every write publishes one small sheet.
//!   A read pulls every visible sheet, merges them (and what this process
//!   knew of the jobs they name) into one book, publishes that book as one
//!   sheet (more if it is too big for one message) and only then acks the
//!   sheets it read. A crash between the publish and the acks leaves duplicates,
//!   which the union absorbs; a crash before the publish leaves the sheets
//!   to come back after their lease. Nothing is lost either way.
//! - `NAME-results` holds **receipt sheets**, the details (exit code,
//!   stderr tail) one JSON array per `record` call, read only by
//!   [`Ledger::receipts`], which compacts them the same way.
//!
//! A book only grows: sets are unions and "done beats dead" only ever turns
//! a dead item done. So every book a process has ever read or written is
//! still true, and [`SheetLedger`] keeps one in memory and merges it into
//! every answer: a reader that finds the sheets held by another reader (they
//! are leased to it for the moment of its cycle) answers what it knew a
//! moment ago, an under-count, never an over-count. What it knew is
//! written back only for the jobs the sheets it read name (which keeps a
//! job readable while a reader that died holds its other sheets): written
//! back whole into a queue deleted and made again, it planted the old jobs
//! there.
//!
//! Items the backend dead-letters by itself (their holder died on the last
//! attempt) never get a receipt from a worker. [`Ledger::jobs`] lists the
//! main queue's dead place, when a job is incomplete, and counts the items
//! of a job found there as dead, persisting that in the merged sheet.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::chunks_within;
use crate::job::book::Entry;
use crate::job::ledger::keep_receipt;
use crate::job::{Begun, Book, JobSeqs, JobStatus, Ledger, Manifest, Receipt, SeqSet, SheetCalls};
use crate::{Count, DeadLetter, Item, LeaseToken, QueueError, QueueErrorKind, WorkQueue};

/// The attribute that marks a sheet and says which kind it is.
pub const SHEET_ATTRIBUTE: &str = "forloop-sheet";
/// [`SHEET_ATTRIBUTE`] of a book sheet.
pub const BOOK_SHEET: &str = "book-1";
/// [`SHEET_ATTRIBUTE`] of a receipt sheet.
pub const RECEIPT_SHEET: &str = "receipts-1";
/// The attribute of a receipt sheet a [`Ledger::receipts`] read wrote back
/// while it reads on: its value names that read, which holds such sheets
/// rather than reading them again. Other readers read them as any other.
pub const COMPACTED_BY: &str = "forloop-compacted-by";
/// The suffix of the sibling that keeps book sheets: `NAME-ledger`.
pub const LEDGER_SUFFIX: &str = "-ledger";
/// The suffix of the sibling that keeps receipt sheets: `NAME-results`.
pub const RESULTS_SUFFIX: &str = "-results";

/// The queue a ledger sibling belongs to (`videos` for `videos-ledger`):
/// what to name in an error's "create it with ..." hint, since `runner
/// queue create` of the queue makes its siblings too.
pub fn sibling_owner(name: &str) -> &str {
    name.strip_suffix(LEDGER_SUFFIX)
        .or_else(|| name.strip_suffix(RESULTS_SUFFIX))
        .unwrap_or(name)
}
/// The largest sheet written, whatever the backend takes: a read stays light.
pub const MAX_SHEET: usize = 256 * 1024;

/// How a [`SheetLedger`] reads and writes.
#[derive(Debug, Clone)]
pub struct SheetOptions {
    /// How long each pull of a read waits for a sheet. Zero (the default):
    /// a read ends on the first empty answer.
    pub wait: Duration,
    /// Most sheets one pull asks for (cut to the sibling's `max_batch`).
    pub batch: usize,
    /// Most pulls in one read; a ledger bigger than this is read in parts,
    /// each read merging the next part (an under-count in between).
    pub max_pulls: usize,
    /// The largest sheet written (cut to the sibling's `max_payload`).
    pub max_sheet: usize,
    /// Least time between two looks at the main queue's dead place, and how
    /// long the incomplete jobs' counts must stand still before one.
    pub dead_every: Duration,
    /// Most dead items one look lists.
    pub dead_limit: usize,
    /// A writer that has not read the book sheets for this long merges a
    /// few pulls of them after its write ([`Ledger::record`]), so that a
    /// busy run, whose workers do not read, leaves few sheets behind.
    pub compact_every: Duration,
    /// Most pulls of such a merge.
    pub compact_pulls: usize,
    /// The longest pause before a read looks again when it found no sheet
    /// although the ledger has some (another reader held them).
    pub held_retry: Duration,
    /// How long a read that must not answer from a partial view (a fresh
    /// reader that found no job, a job not found by `begin`, `seqs` or
    /// `receipts`) waits out sheets the sibling counts in flight (held by
    /// another reader) before it fails saying so: at least the siblings'
    /// lease, the longest a reader that died holds them.
    pub held_wait: Duration,
    /// Most receipts one round of a [`Ledger::receipts`] read keeps in
    /// memory before it writes them back compacted and reads on: what
    /// bounds its memory, besides the asked job's own receipts.
    pub round_receipts: usize,
    /// A writer that has published this many receipt sheets since its
    /// last fold reads back about as many small ones and rewrites them as
    /// one (or as few as fit): the `NAME-results` sibling then holds a
    /// bounded number of sheets per writer, not one per ack batch, whether
    /// or not anyone runs `results`. Zero: writers never fold.
    pub fold_receipts: usize,
}

impl Default for SheetOptions {
    fn default() -> Self {
        Self {
            wait: Duration::ZERO,
            batch: 100,
            max_pulls: 1000,
            max_sheet: MAX_SHEET,
            dead_every: Duration::from_secs(2),
            dead_limit: 1000,
            held_retry: Duration::from_millis(200),
            held_wait: Duration::from_secs(35),
            round_receipts: 100_000,
            compact_every: Duration::from_secs(5),
            compact_pulls: 10,
            fold_receipts: 16,
        }
    }
}

#[derive(Debug, Default)]
struct Counters([AtomicU64; 8]);

impl Counters {
    fn add(&self, which: usize, n: u64) {
        self.0[which].fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> SheetCalls {
        let n = |i: usize| self.0[i].load(Ordering::Relaxed);
        SheetCalls {
            pulls: n(PULLS),
            sheets_read: n(SHEETS_READ),
            publishes: n(PUBLISHES),
            sheets_written: n(SHEETS_WRITTEN),
            bytes_written: n(BYTES_WRITTEN),
            acks: n(ACKS),
            releases: n(RELEASES),
            dead_looks: n(DEAD_LOOKS),
        }
    }
}

const PULLS: usize = 0;
const SHEETS_READ: usize = 1;
const PUBLISHES: usize = 2;
const SHEETS_WRITTEN: usize = 3;
const BYTES_WRITTEN: usize = 4;
const ACKS: usize = 5;
const RELEASES: usize = 6;
const DEAD_LOOKS: usize = 7;

/// A [`Ledger`] kept as sheets in two sibling queues (see the module docs).
pub struct SheetLedger {
    calls: Counters,
    books: Arc<dyn WorkQueue>,
    results: Arc<dyn WorkQueue>,
    main: Arc<dyn WorkQueue>,
    options: SheetOptions,
    /// Everything this process has read or written: still true (books grow).
    known: Mutex<Book>,
    /// When the dead place was last listed, and the progress seen.
    dead_look: Mutex<DeadLook>,
    /// The look at the dead place under way.
    dead_task: Mutex<Option<DeadListing>>,
    /// When the book sheets were last read (for compaction on write).
    last_read: Mutex<Option<Instant>>,
    /// One book read at a time in this process (its readers would only
    /// take sheets from each other).
    book_cycle: tokio::sync::Mutex<()>,
    results_cycle: tokio::sync::Mutex<()>,
    /// Receipt sheets this process published since its last fold.
    unfolded: AtomicU64,
}

impl fmt::Debug for SheetLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SheetLedger")
            .field("books", &self.books)
            .field("results", &self.results)
            .finish_non_exhaustive()
    }
}

/// A look at the dead place on its own task.
type DeadListing = tokio::task::JoinHandle<Result<Vec<DeadLetter>, QueueError>>;

/// When to list the dead place.
#[derive(Debug, Default)]
struct DeadLook {
    /// The last listing.
    last: Option<Instant>,
    /// The incomplete jobs' settled count, and since when it is that.
    progress: Option<(u64, Instant)>,
}

/// What one read of a sibling found.
struct Read<T> {
    sheets: Vec<T>,
    /// Tokens of the sheets read, to ack once the merged sheet is out.
    tokens: Vec<LeaseToken>,
    /// Tokens of deliveries that were no sheet of this kind: given back.
    foreign: Vec<LeaseToken>,
}

impl SheetLedger {
    /// A ledger in `books` (`NAME-ledger`) and `results` (`NAME-results`)
    /// for the items of `main`, whose dead place it reads.
    pub fn new(
        books: Arc<dyn WorkQueue>,
        results: Arc<dyn WorkQueue>,
        main: Arc<dyn WorkQueue>,
    ) -> Self {
        Self::with_options(books, results, main, SheetOptions::default())
    }

    /// [`SheetLedger::new`] with `options`.
    pub fn with_options(
        books: Arc<dyn WorkQueue>,
        results: Arc<dyn WorkQueue>,
        main: Arc<dyn WorkQueue>,
        options: SheetOptions,
    ) -> Self {
        Self {
            calls: Counters::default(),
            books,
            results,
            main,
            options,
            known: Mutex::new(Book::default()),
            dead_look: Mutex::new(DeadLook::default()),
            last_read: Mutex::new(None),
            dead_task: Mutex::new(None),
            book_cycle: tokio::sync::Mutex::new(()),
            results_cycle: tokio::sync::Mutex::new(()),
            unfolded: AtomicU64::new(0),
        }
    }

    /// The calls made so far (see [`SheetCalls`]).
    pub fn calls(&self) -> SheetCalls {
        self.calls.snapshot()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Book> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn(&self, book: &Book) {
        self.known().merge(book);
    }

    fn max_sheet(queue: &dyn WorkQueue, options: &SheetOptions) -> usize {
        options
            .max_sheet
            .min(queue.capabilities().max_payload)
            .max(1024)
    }

    /// Publish `payloads` as sheets of `kind`, in batches the queue takes.
    async fn publish_sheets(
        &self,
        queue: &dyn WorkQueue,
        kind: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), QueueError> {
        self.publish_marked(queue, kind, payloads, None).await
    }

    /// [`Self::publish_sheets`], each sheet marked as written by the read
    /// `mark` names (see [`COMPACTED_BY`]).
    async fn publish_marked(
        &self,
        queue: &dyn WorkQueue,
        kind: &str,
        payloads: Vec<Vec<u8>>,
        mark: Option<&str>,
    ) -> Result<(), QueueError> {
        self.calls.add(SHEETS_WRITTEN, payloads.len() as u64);
        self.calls
            .add(BYTES_WRITTEN, payloads.iter().map(|p| p.len() as u64).sum());
        let max_batch = queue.capabilities().max_batch.max(1);
        let messages: Vec<Item> = payloads
            .into_iter()
            .map(|p| {
                let sheet = Item::new(Bytes::from(p)).with_attribute(SHEET_ATTRIBUTE, kind);
                match mark {
                    Some(mark) => sheet.with_attribute(COMPACTED_BY, mark),
                    None => sheet,
                }
            })
            .collect();
        for chunk in messages.chunks(max_batch) {
            self.calls.add(PUBLISHES, 1);
            queue.publish(chunk.to_vec()).await?;
        }
        Ok(())
    }

    async fn publish_book(&self, book: &Book) -> Result<(), QueueError> {
        let max = Self::max_sheet(&*self.books, &self.options);
        self.publish_sheets(&*self.books, BOOK_SHEET, book_sheets(book, max))
            .await
    }

    /// Pull every visible sheet of `kind` from `queue` (see
    /// [`SheetOptions`]), decoding each with `decode`.
    /// A book read stops at the first pull that brings less than a full
    /// batch (what is left, if anything, is merged by the next read: an
    /// under-count for a moment, and the shortest hold on the sheets); a
    /// listing (`until_empty`) goes on to an empty pull.
    async fn read<T>(
        &self,
        queue: &dyn WorkQueue,
        kind: &str,
        until_empty: bool,
        max_pulls: usize,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Read<T>, QueueError> {
        let batch = self
            .options
            .batch
            .min(queue.capabilities().max_batch)
            .max(1);
        let mut read = Read {
            sheets: Vec::new(),
            tokens: Vec::new(),
            foreign: Vec::new(),
        };
        let mut seen = HashSet::new();
        for _ in 0..max_pulls.max(1) {
            self.calls.add(PULLS, 1);
            let pulled = match queue.pull(batch, self.options.wait).await {
                Ok(pulled) => pulled,
                Err(error) => {
                    self.give_back(queue, &read.tokens).await;
                    self.give_back(queue, &read.foreign).await;
                    return Err(error);
                }
            };
            self.calls.add(SHEETS_READ, pulled.len() as u64);
            if pulled.is_empty() {
                break;
            }
            let partial = pulled.len() < batch;
            // Let this process's other tasks run between pulls (a long read
            // of an in-process queue would not otherwise).
            tokio::task::yield_now().await;
            let mut wrapped = false;
            for delivery in pulled {
                // A sheet seen twice: its lease lapsed during this read,
                // which has gone round the whole sibling.
                wrapped |= !seen.insert(delivery.id.clone());
                let sheet = (delivery
                    .item
                    .attributes
                    .get(SHEET_ATTRIBUTE)
                    .map(String::as_str)
                    == Some(kind))
                .then(|| decode(&delivery.item.payload))
                .flatten();
                match sheet {
                    Some(sheet) => {
                        read.sheets.push(sheet);
                        read.tokens.push(delivery.token);
                    }
                    None => {
                        tracing::warn!(
                            "{queue:?}: message {} is no {kind} sheet this version reads; left in place",
                            delivery.id
                        );
                        read.foreign.push(delivery.token);
                    }
                }
            }
            if wrapped || (partial && !until_empty) {
                break;
            }
        }
        self.give_back(queue, &read.foreign).await;
        Ok(read)
    }

    /// Read, merge and rewrite the book sheets; with `fold_dead`, count the
    /// items of incomplete jobs (as far as this process knew them) found in
    /// the main queue's dead place.
    async fn read_book(&self, fold_dead: bool) -> Result<Book, QueueError> {
        self.read_book_within(fold_dead, self.options.max_pulls, RETRIES_WHEN_HELD)
            .await
    }

    /// [`Self::read_book`] for a reader that must not answer from a
    /// partial view: while the book read lacks what `found` looks for,
    /// tell "not there" from "held by another reader" before believing
    /// it. Where the sibling counts the sheets in flight, look again while
    /// it counts some, for [`SheetOptions::held_wait`] at most, then fail
    /// saying so; where it cannot count (Pub/Sub), look again a few times,
    /// which waits out a live reader's cycle (not one that died holding
    /// sheets: those come back after their lease).
    async fn read_book_sure(
        &self,
        fold_dead: bool,
        found: impl Fn(&Book) -> bool,
    ) -> Result<Book, QueueError> {
        let started = Instant::now();
        let mut looks = 0;
        loop {
            let book = self.read_book(fold_dead).await?;
            if found(&book) {
                return Ok(book);
            }
            looks += 1;
            match self.held().await {
                Held::No => return Ok(book),
                Held::Unknown if looks > RETRIES_WHEN_UNCOUNTED => return Ok(book),
                Held::Unknown => {}
                Held::Sheets(n) if started.elapsed() >= self.options.held_wait => {
                    return Err(QueueError::new(
                        QueueErrorKind::Unavailable,
                        format!(
                            "cannot read the whole job ledger in {:?}: {n} of its sheets stayed held by \
                             another reader for {} s (a reader that died holds them until their lease \
                             ends); try again",
                            self.books,
                            self.options.held_wait.as_secs()
                        ),
                    ));
                }
                Held::Sheets(_) => {}
            }
            tokio::time::sleep(jitter(self.options.held_retry)).await;
        }
    }

    /// Whether another reader holds book sheets, as far as the sibling
    /// counts them.
    async fn held(&self) -> Held {
        match self.books.backlog().await {
            Ok(backlog) => match backlog.in_flight {
                Count::Exact(0) | Count::Approximate(0) => Held::No,
                Count::Exact(n) | Count::Approximate(n) => Held::Sheets(n),
                Count::Unknown => Held::Unknown,
            },
            Err(error) => {
                tracing::debug!("{:?}: counting the sheets in flight: {error}", self.books);
                Held::Unknown
            }
        }
    }

    async fn read_book_within(
        &self,
        fold_dead: bool,
        max_pulls: usize,
        retries: usize,
    ) -> Result<Book, QueueError> {
        let _cycle = self.book_cycle.lock().await;
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        // The dead place on what this process knew, before the sheets are
        // held (see `lapsed`).
        let known = self.known().clone();
        let lapsed = if fold_dead {
            self.lapsed(&known).await
        } else {
            Vec::new()
        };
        let read_once = || self.read(&*self.books, BOOK_SHEET, false, max_pulls, decode_book);
        let mut read = read_once().await?;
        // Nothing read where something is known: another reader holds the
        // sheets for the moment of its cycle. Look again a little later, at
        // a random moment, so two readers in step do not starve one another.
        for _ in 0..retries {
            if !read.tokens.is_empty() || self.known().jobs.is_empty() {
                break;
            }
            tokio::time::sleep(jitter(self.options.held_retry)).await;
            read = read_once().await?;
        }
        // What is written back: the sheets read, and what this process knew
        // of the jobs they name. Echoing those keeps a job readable while a
        // reader that died holds its other sheets (for a lease): the live
        // readers write it back with each merge. Jobs the sheets read do
        // not name are not written: a queue deleted and made again under
        // this process would get its old jobs back, never to end. The
        // answer is all this process knew.
        let mut merged = Book::default();
        for sheet in &read.sheets {
            merged.merge(sheet);
        }
        let mut book = self.known().clone();
        let mut echo = book.clone();
        echo.jobs.retain(|job, _| merged.jobs.contains_key(job));
        echo.forgotten
            .retain(|job, _| merged.jobs.contains_key(job) || merged.forgotten.contains_key(job));
        merged.merge(&echo);
        book.merge(&merged);
        let before = book.clone();
        book.settle(&lapsed);
        let changed = book != before;
        if changed {
            merged.settle(&lapsed);
        }
        self.learn(&book);
        if read.tokens.is_empty() && !changed {
            return Ok(book);
        }
        // Publish before ack: a crash in between leaves duplicates only.
        match self.publish_book(&merged).await {
            Ok(()) => {
                self.calls.add(ACKS, 1);
                if let Err(error) = self.books.ack(&read.tokens).await {
                    tracing::warn!(
                        "{:?}: acking {} book sheets after their merge failed (they come back and merge again): {error}",
                        self.books,
                        read.tokens.len()
                    );
                }
            }
            Err(error) => {
                tracing::warn!(
                    "{:?}: publishing the merged book failed; the {} sheets read go back: {error}",
                    self.books,
                    read.tokens.len()
                );
                self.give_back(&*self.books, &read.tokens).await;
            }
        }
        Ok(book)
    }

    /// Whether to list the dead place now: some job is incomplete, its
    /// settled count has not moved for `dead_every` (while items settle,
    /// the ones that lapsed can wait for the run to stall), and the last
    /// look is `dead_every` old. A process's first read starts the clock
    /// rather than looking: a worker's first read comes when it first runs
    /// out of work, mostly near a job's end, and a look under way then
    /// held its exit (a listing is released before the process ends) by
    /// the dead place's long poll, so a short job ended up to a second
    /// late on SQS. Items that lapsed while no worker ran are found once
    /// the job has not moved for `dead_every`.
    fn dead_look_due(&self, book: &Book) -> bool {
        let open: Vec<JobStatus> = book
            .status()
            .into_iter()
            .filter(|s| !s.is_complete())
            .collect();
        if open.is_empty() {
            return false;
        }
        let settled: u64 = open.iter().map(JobStatus::settled).sum();
        let now = Instant::now();
        let mut look = self.dead_look.lock().unwrap_or_else(|e| e.into_inner());
        let stalled = match look.progress {
            Some((seen, since)) if seen == settled => {
                now.saturating_duration_since(since) >= self.options.dead_every
            }
            Some(_) => {
                look.progress = Some((settled, now));
                false
            }
            None => {
                look.progress = Some((settled, now));
                false
            }
        };
        let rested = look
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= self.options.dead_every);
        if stalled && rested {
            look.last = Some(now);
            true
        } else {
            false
        }
    }

    /// Lapsed receipts for the items of a job in the main queue's dead place.
    async fn dead_receipts(&self, wanted: impl Fn(&str) -> bool) -> Vec<Receipt> {
        self.calls.add(DEAD_LOOKS, 1);
        let listed = self.main.list_dead(self.options.dead_limit).await;
        self.lapsed_of(listed, wanted)
    }

    fn lapsed_of(
        &self,
        listed: Result<Vec<DeadLetter>, QueueError>,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<Receipt> {
        match listed {
            Ok(letters) => letters
                .iter()
                .filter_map(|letter| {
                    let job = letter.item.job.as_ref()?;
                    Some(Receipt::lapsed(
                        job,
                        &letter.item.payload,
                        letter.attempts,
                        &letter.reason,
                    ))
                })
                .filter(|receipt| wanted(&receipt.job))
                .collect(),
            Err(error) if error.kind() == QueueErrorKind::Unsupported => Vec::new(),
            Err(error) => {
                tracing::warn!(
                    "{:?}: listing the dead place for the ledger failed: {error}",
                    self.main
                );
                Vec::new()
            }
        }
    }

    /// Wait (a few seconds at most) for the look at the dead place under
    /// way: its listing holds the dead items until it releases them.
    async fn finish_look(&self) {
        let task = self
            .dead_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    /// Lapsed receipts for the items of `book`'s incomplete jobs found by
    /// the last look at the main queue's dead place, and a new look started
    /// when one is due. The look runs on its own task: a listing can take a
    /// second (SQS ends it with a long poll), and neither the caller nor
    /// the sheets should wait for it; what it finds counts at the next read.
    async fn lapsed(&self, book: &Book) -> Vec<Receipt> {
        let open: HashSet<String> = book
            .status()
            .into_iter()
            .filter(|s| !s.is_complete())
            .map(|s| s.manifest.job)
            .collect();
        let finished = {
            let mut task = self.dead_task.lock().unwrap_or_else(|e| e.into_inner());
            if task.as_ref().is_some_and(|t| t.is_finished()) {
                task.take()
            } else {
                None
            }
        };
        let mut lapsed = Vec::new();
        if let Some(task) = finished {
            match task.await {
                Ok(listed) => lapsed = self.lapsed_of(listed, |job| open.contains(job)),
                Err(error) => tracing::warn!("the ledger's look at the dead place failed: {error}"),
            }
        }
        let mut task = self.dead_task.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_none() && self.dead_look_due(book) {
            self.calls.add(DEAD_LOOKS, 1);
            let main = self.main.clone();
            let limit = self.options.dead_limit;
            *task = Some(tokio::spawn(async move { main.list_dead(limit).await }));
        }
        lapsed
    }
}

/// How many times a read looks again when another reader held the sheets.
const RETRIES_WHEN_HELD: usize = 2;

/// How many times a read that must not answer from a partial view looks
/// again where the sibling cannot count what is in flight.
const RETRIES_WHEN_UNCOUNTED: usize = 3;

/// Most rounds of one [`Ledger::receipts`] read (each of up to
/// [`SheetOptions::max_pulls`] pulls): a bound, not a limit met in use.
const MAX_RECEIPT_ROUNDS: usize = 100_000;

/// Book sheets in flight on the sibling: held by another reader.
enum Held {
    No,
    Sheets(u64),
    Unknown,
}

/// What one round of a [`Ledger::receipts`] read found.
#[derive(Default)]
struct Round {
    /// Every receipt read, of every job, one per item.
    kept: BTreeMap<(Arc<str>, u64), Receipt>,
    /// The sheets read, to ack once `kept` is written back.
    tokens: Vec<LeaseToken>,
    /// Whether the round ended on an empty pull: nothing left to read.
    ended: bool,
}

/// A random pause of up to `most` (at least a tenth of it).
fn jitter(most: Duration) -> Duration {
    let random = random_u64();
    let tenth = most / 10;
    tenth + (most - tenth).mul_f64((random % 1000) as f64 / 1000.0)
}

impl SheetLedger {
    /// Hand deliveries back without charging an attempt; a failure only
    /// means they come back after their lease.
    async fn give_back(&self, queue: &dyn WorkQueue, tokens: &[LeaseToken]) {
        if tokens.is_empty() {
            return;
        }
        self.calls.add(RELEASES, 1);
        if let Err(error) = queue.release(tokens).await {
            tracing::warn!(
                "{queue:?}: handing back {} sheets failed (they come back after their lease): {error}",
                tokens.len()
            );
        }
    }
}

/// Whether `receipt` still stands in `book`: not a death a requeue
/// un-counted, nor of a forgotten job from before it was forgotten.
fn is_fact(book: &Book, receipt: &Receipt) -> bool {
    if let Some(tomb) = book.forgotten.get(&*receipt.job)
        && receipt.at <= tomb.at
    {
        return false;
    }
    receipt.state != crate::job::Settled::Dead
        || !book
            .jobs
            .get(&*receipt.job)
            .is_some_and(|entry| entry.life_over(receipt.seq, receipt.life))
}

impl SheetLedger {
    /// Publish `job`'s halt as `change` leaves it (given the halt and the
    /// counts this reader merged); `false`: no such job, or `change` said
    /// no.
    async fn write_halt(
        &self,
        job: &str,
        change: impl FnOnce(&mut crate::job::Halt, &JobStatus) -> bool + Send,
    ) -> Result<bool, QueueError> {
        let Some(status) = self.read_book(false).await?.status_of(job) else {
            return Ok(false);
        };
        let mut halt = status.halt;
        if !change(&mut halt, &status) {
            return Ok(false);
        }
        let mut sheet = Book::default();
        sheet.entry(job).halt = halt;
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        Ok(true)
    }
}

#[async_trait]
impl crate::RequeueWatch for SheetLedger {
    async fn before_requeue(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
        let dead: Vec<Receipt> = letters
            .iter()
            .filter_map(|letter| {
                let job = letter.item.job.as_ref()?;
                let (attempts, reason) = (letter.attempts, &letter.reason);
                Some(Receipt::lapsed(job, &letter.item.payload, attempts, reason))
            })
            .collect();
        self.requeued(&dead).await
    }
}

fn decode_book(payload: &[u8]) -> Option<Book> {
    serde_json::from_slice(payload).ok()
}

fn decode_receipts(payload: &[u8]) -> Option<Vec<Receipt>> {
    serde_json::from_slice(payload).ok()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("books and receipts serialize")
}

/// `book` as sheets of at most `max` bytes each: whole if it fits, else by
/// job, and a job too big for one sheet by runs of its ranges. Merging the
/// sheets gives `book` back.
pub fn book_sheets(book: &Book, max: usize) -> Vec<Vec<u8>> {
    let whole = encode(book);
    if whole.len() <= max {
        return vec![whole];
    }
    // Room for the wrapper around the pieces of one sheet.
    let room = max.saturating_sub(256).max(512);
    let mut pieces: Vec<(String, Entry, usize)> = Vec::new();
    for (job, entry) in &book.jobs {
        for part in split_entry(entry, room) {
            let size = encode(&part).len() + job.len() + 8;
            pieces.push((job.clone(), part, size));
        }
    }
    let mut first = true;
    chunks_within(pieces, usize::MAX, room, |(_, _, size)| *size)
        .into_iter()
        .map(|chunk| {
            let mut sheet = Book::default();
            if std::mem::take(&mut first) {
                sheet.forgotten.clone_from(&book.forgotten);
            }
            for (job, part, _) in chunk {
                let mut one = Book::default();
                one.jobs.insert(job, part);
                sheet.merge(&one);
            }
            encode(&sheet)
        })
        .collect()
}

/// One job's entry in parts of about `room` bytes: the manifest and times
/// in the first, then runs of ranges of each set.
fn split_entry(entry: &Entry, room: usize) -> Vec<Entry> {
    if encode(entry).len() <= room {
        return vec![entry.clone()];
    }
    // A range is at most `[u64,u64],`: 43 bytes.
    let per_part = (room / 43).max(1);
    let mut parts = vec![Entry {
        manifest: entry.manifest.clone(),
        settled_between: entry.settled_between,
        cancelled: entry.cancelled,
        // Few: one set per requeue of the job's items.
        redead: entry.redead.clone(),
        requeued: entry.requeued.clone(),
        ..Entry::default()
    }];
    for which in 0..3 {
        let set = match which {
            0 => &entry.submitted,
            1 => &entry.done,
            _ => &entry.dead,
        };
        for run in set.ranges().chunks(per_part) {
            let mut part = Entry::default();
            let target = match which {
                0 => &mut part.submitted,
                1 => &mut part.done,
                _ => &mut part.dead,
            };
            for range in run {
                target.insert_range(range.clone());
            }
            parts.push(part);
        }
    }
    parts
}

#[async_trait]
impl Ledger for SheetLedger {
    async fn close(&self) {
        self.finish_look().await;
    }

    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        // Never call a job new because another reader held its sheets.
        let mut book = self
            .read_book_sure(false, |book| book.jobs.contains_key(&manifest.job))
            .await?;
        let begun = book
            .begin(manifest)
            .map_err(|message| QueueError::new(QueueErrorKind::Invalid, message))?;
        if begun == Begun::New {
            // As the book took it (a forgotten name's is stamped newer).
            let taken = book
                .jobs
                .get(&manifest.job)
                .and_then(|e| e.manifest.clone());
            let mut sheet = Book::default();
            sheet
                .begin(taken.as_ref().unwrap_or(manifest))
                .expect("a new book takes any manifest");
            self.publish_book(&sheet).await?;
            self.learn(&sheet);
        }
        Ok(begun)
    }

    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        let mut sheet = Book::default();
        sheet.submitted(job, seqs);
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        Ok(())
    }

    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let max = Self::max_sheet(&*self.results, &self.options).saturating_sub(64);
        let details: Vec<Vec<u8>> =
            chunks_within(receipts.iter(), usize::MAX, max, |r| encode(*r).len() + 1)
                .into_iter()
                .map(|chunk| encode(&chunk))
                .collect();
        let written = details.len() as u64;
        self.publish_sheets(&*self.results, RECEIPT_SHEET, details)
            .await?;
        let mut sheet = Book::default();
        sheet.settle(receipts);
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        let unfolded = self.unfolded.fetch_add(written, Ordering::Relaxed) + written;
        let fold_at = self.options.fold_receipts as u64;
        if fold_at > 0 && unfolded >= fold_at {
            // The write is done whatever happens here.
            if let Err(error) = self.fold_receipts().await {
                tracing::debug!(
                    "{:?}: folding receipt sheets after a write: {error}",
                    self.results
                );
            }
        }
        let due = self
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= self.options.compact_every);
        if due {
            // The write is done whatever happens here.
            if let Err(error) = self
                .read_book_within(false, self.options.compact_pulls, 0)
                .await
            {
                tracing::debug!(
                    "{:?}: merging book sheets after a write: {error}",
                    self.books
                );
            }
        }
        Ok(())
    }

    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        // A reader that knows no job yet tells "no jobs" from "held by
        // another reader"; one that knows some answers at least those.
        if self.known().jobs.is_empty() {
            let book = self.read_book_sure(true, |book| !book.jobs.is_empty());
            return Ok(book.await?.status());
        }
        Ok(self.read_book(true).await?.status())
    }

    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        if self.read_book(false).await?.status_of(job).is_none() {
            return Ok(false);
        }
        let mut sheet = Book::default();
        sheet.entry(job).cancelled = Some(crate::job::unix_millis());
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        Ok(true)
    }

    /// A sheet with the halt of `epoch`: it merges into whatever epoch
    /// every reader has, and counts only where that is `epoch`.
    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        let at = crate::job::unix_millis();
        self.write_halt(job, |halt, _| halt.halt(epoch, at)).await
    }

    /// A sheet with the next epoch, counted from the counts this reader
    /// merged (two resumes at once: the larger counts win).
    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        self.write_halt(job, |halt, status| {
            halt.unhalt(status.dead, status.settled());
            true
        })
        .await
    }

    /// A tombstone sheet: every reader then drops the job's manifest and
    /// sets wherever they are merged again, and its receipts at the next
    /// compaction of `NAME-results`. A `begin` of its name later makes a
    /// new job (created after the forgotten one, which the tombstone does
    /// not drop).
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        let mut sheet = self.read_book(false).await?;
        sheet.forgotten.clear();
        sheet.jobs.retain(|name, _| name == job);
        if !sheet.forget(job, crate::job::unix_millis()) {
            return Ok(false);
        }
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        Ok(true)
    }

    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.read_book(false).await?.forgotten())
    }

    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut sheet = Book::default();
        sheet.requeue(dead);
        self.publish_book(&sheet).await?;
        self.learn(&sheet);
        Ok(())
    }

    /// Per batch of the dead place: the batch's deaths un-counted (a book
    /// sheet, [`Ledger::requeued`]), then the batch published back in its
    /// items' next life, then deleted from the dead place.
    async fn requeue_dead(&self, queue: &dyn WorkQueue) -> Result<u64, QueueError> {
        queue.requeue_dead_telling(self).await
    }

    /// As [`Ledger::requeue_dead`], for the picked items only.
    async fn requeue_dead_where(
        &self,
        queue: &dyn WorkQueue,
        select: &crate::DeadSelect<'_>,
    ) -> Result<crate::Requeued, QueueError> {
        queue.requeue_dead_where(select, Some(self)).await
    }

    fn calls(&self) -> Option<SheetCalls> {
        Some(self.calls())
    }

    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        let book = self.read_book_sure(false, |book| book.jobs.contains_key(job));
        Ok(book.await?.seqs(job))
    }

    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        // Only the job's own items: none past its total, none without one.
        let book = self
            .read_book_sure(false, |book| book.jobs.contains_key(job))
            .await?;
        let Some(seqs) = book.seqs(job) else {
            return Ok(Vec::new());
        };
        let total = seqs.manifest.total;
        let settled = seqs.done.len_below(total) + seqs.dead.len_below(total);
        let _cycle = self.results_cycle.lock().await;
        let mark = format!("{:016x}", random_u64());
        let mut mine = Vec::new();
        let mut kept: BTreeMap<(Arc<str>, u64), Receipt> = BTreeMap::new();
        let read = self
            .read_receipts(&book, (job, total, settled), &mark, &mut mine, &mut kept)
            .await;
        // The sheets this read wrote back, held so as not to read them
        // again, go back for the next reader.
        self.give_back(&*self.results, &mine).await;
        read?;
        for receipt in self.dead_receipts(|j| j == job).await {
            if is_fact(&book, &receipt) {
                keep_receipt(&mut kept, &receipt);
            }
        }
        Ok(kept
            .range((Arc::from(job), 0)..(Arc::from(job), total))
            .map(|(_, r)| r.clone())
            .collect())
    }
}

impl SheetLedger {
    /// Read the receipt sheets to the end, in rounds: each round reads up
    /// to [`SheetOptions::max_pulls`] pulls (or
    /// [`SheetOptions::round_receipts`] receipts), writes what it read back
    /// as few sheets as fit (marked `mark`: this read holds them when it
    /// meets them again, into `mine`), acks the sheets it read, and keeps
    /// `job`'s receipts below `total` in `kept`. It ends on an empty pull,
    /// or once `kept` has a receipt for each of the `settled` items the
    /// book counts.
    async fn read_receipts(
        &self,
        book: &Book,
        (job, total, settled): (&str, u64, u64),
        mark: &str,
        mine: &mut Vec<LeaseToken>,
        kept: &mut BTreeMap<(Arc<str>, u64), Receipt>,
    ) -> Result<(), QueueError> {
        let range = || (Arc::from(job), 0)..(Arc::from(job), total);
        for _ in 0..MAX_RECEIPT_ROUNDS {
            let round = self.receipt_round(mark, mine).await?;
            for receipt in round.kept.range(range()).map(|(_, r)| r) {
                if is_fact(book, receipt) {
                    keep_receipt(kept, receipt);
                }
            }
            if !round.tokens.is_empty() {
                // Compact: the round's receipts as few sheets as fit, then
                // the sheets read go (publish before ack, as for books).
                let max = Self::max_sheet(&*self.results, &self.options).saturating_sub(64);
                // What is no fact any more (a forgotten job's, a death of
                // a life that is over) is not written back.
                let facts = round.kept.values().filter(|r| is_fact(book, r));
                let sheets: Vec<Vec<u8>> =
                    chunks_within(facts, usize::MAX, max, |r| encode(*r).len() + 1)
                        .into_iter()
                        .map(|chunk| encode(&chunk))
                        .collect();
                let written = self
                    .publish_marked(&*self.results, RECEIPT_SHEET, sheets, Some(mark))
                    .await;
                if let Err(error) = written {
                    self.give_back(&*self.results, &round.tokens).await;
                    return Err(error);
                }
                self.calls.add(ACKS, 1);
                if let Err(error) = self.results.ack(&round.tokens).await {
                    tracing::warn!(
                        "{:?}: acking receipt sheets after their compaction failed (duplicates only): {error}",
                        self.results
                    );
                }
            }
            if round.ended || kept.range(range()).count() as u64 >= settled {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Fold receipt sheets as a writer: read back about as many small
    /// sheets as this process wrote since its last fold and write them
    /// again as one (or as few as fit), by the read-merge-write rules of
    /// the module docs: every receipt read is written back (one per item,
    /// [`crate::job::Settled::replaces`]) before the sheets read are acked, so a crash
    /// leaves duplicates only; the sheets are held for a few pulls, one
    /// publish and one ack. Left in place, handed back at once: sheets of
    /// another kind, a `results` read's own ([`COMPACTED_BY`]: it holds
    /// those while it reads on) and sheets already half full or more
    /// (folding them again would only copy them). A fold that finds fewer
    /// than two small sheets writes nothing. Skipped while this process
    /// reads the receipts (that read compacts them).
    async fn fold_receipts(&self) -> Result<(), QueueError> {
        let Ok(_cycle) = self.results_cycle.try_lock() else {
            return Ok(());
        };
        let want = self.unfolded.swap(0, Ordering::Relaxed).max(2) as usize;
        let queue = &*self.results;
        let max = Self::max_sheet(queue, &self.options).saturating_sub(64);
        let batch = self
            .options
            .batch
            .min(queue.capabilities().max_batch)
            .max(1);
        let pulls = want
            .div_ceil(batch)
            .saturating_add(1)
            .min(self.options.compact_pulls.max(1));
        let mut kept: BTreeMap<(Arc<str>, u64), Receipt> = BTreeMap::new();
        let (mut small, mut left) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for _ in 0..pulls {
            self.calls.add(PULLS, 1);
            let pulled = match queue.pull(batch, self.options.wait).await {
                Ok(pulled) => pulled,
                Err(error) => {
                    self.give_back(queue, &small).await;
                    self.give_back(queue, &left).await;
                    return Err(error);
                }
            };
            self.calls.add(SHEETS_READ, pulled.len() as u64);
            if pulled.is_empty() {
                break;
            }
            for delivery in pulled {
                let attribute = |name: &str| delivery.item.attributes.get(name).map(String::as_str);
                let foldable = seen.insert(delivery.id.clone())
                    && attribute(SHEET_ATTRIBUTE) == Some(RECEIPT_SHEET)
                    && attribute(COMPACTED_BY).is_none()
                    && delivery.item.payload.len() < max / 2;
                match foldable
                    .then(|| decode_receipts(&delivery.item.payload))
                    .flatten()
                {
                    Some(receipts) => {
                        for receipt in &receipts {
                            keep_receipt(&mut kept, receipt);
                        }
                        small.push(delivery.token);
                    }
                    None => left.push(delivery.token),
                }
            }
            if small.len() >= want {
                break;
            }
        }
        self.give_back(queue, &left).await;
        if small.len() < 2 {
            self.give_back(queue, &small).await;
            return Ok(());
        }
        let sheets: Vec<Vec<u8>> =
            chunks_within(kept.values(), usize::MAX, max, |r| encode(*r).len() + 1)
                .into_iter()
                .map(|chunk| encode(&chunk))
                .collect();
        // Publish before ack: a crash in between leaves duplicates only.
        if let Err(error) = self.publish_sheets(queue, RECEIPT_SHEET, sheets).await {
            self.give_back(queue, &small).await;
            return Err(error);
        }
        self.calls.add(ACKS, 1);
        if let Err(error) = queue.ack(&small).await {
            tracing::warn!(
                "{queue:?}: acking {} receipt sheets after their fold failed (duplicates only): {error}",
                small.len()
            );
        }
        Ok(())
    }

    /// One round of a receipts read (see [`Self::read_receipts`]).
    async fn receipt_round(
        &self,
        mark: &str,
        mine: &mut Vec<LeaseToken>,
    ) -> Result<Round, QueueError> {
        let queue = &*self.results;
        let batch = self
            .options
            .batch
            .min(queue.capabilities().max_batch)
            .max(1);
        let mut round = Round::default();
        let mut foreign = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..self.options.max_pulls.max(1) {
            self.calls.add(PULLS, 1);
            let pulled = match queue.pull(batch, self.options.wait).await {
                Ok(pulled) => pulled,
                Err(error) => {
                    self.give_back(queue, &round.tokens).await;
                    self.give_back(queue, &foreign).await;
                    return Err(error);
                }
            };
            self.calls.add(SHEETS_READ, pulled.len() as u64);
            if pulled.is_empty() {
                round.ended = true;
                break;
            }
            tokio::task::yield_now().await;
            let mut wrapped = false;
            for delivery in pulled {
                let attribute = |name: &str| delivery.item.attributes.get(name).map(String::as_str);
                if attribute(COMPACTED_BY) == Some(mark) {
                    mine.push(delivery.token);
                    continue;
                }
                // A sheet seen twice: its lease lapsed during this round.
                // Its receipts are in; the round ends, the next reads on.
                if !seen.insert(delivery.id.clone()) {
                    wrapped = true;
                    round.tokens.push(delivery.token);
                    continue;
                }
                let sheet = (attribute(SHEET_ATTRIBUTE) == Some(RECEIPT_SHEET))
                    .then(|| decode_receipts(&delivery.item.payload))
                    .flatten();
                match sheet {
                    Some(receipts) => {
                        for receipt in &receipts {
                            keep_receipt(&mut round.kept, receipt);
                        }
                        round.tokens.push(delivery.token);
                    }
                    None => {
                        tracing::warn!(
                            "{queue:?}: message {} is no receipt sheet this version reads; left in place",
                            delivery.id
                        );
                        foreign.push(delivery.token);
                    }
                }
            }
            if wrapped || round.kept.len() >= self.options.round_receipts {
                break;
            }
        }
        self.give_back(queue, &foreign).await;
        Ok(round)
    }
}

/// A random number (not for secrets).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests;
