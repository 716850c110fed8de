//! The read-merge-write on memory siblings, with the tokio clock paused.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::job::{JobItem, Settled};
use crate::{MemoryQueue, QueueConfig};

const LEASE: Duration = Duration::from_secs(30);

struct Siblings {
    books: Arc<dyn WorkQueue>,
    results: Arc<dyn WorkQueue>,
    main: Arc<dyn WorkQueue>,
}

impl Siblings {
    fn new() -> Self {
        let open = |name: &str, attempts| {
            Arc::new(MemoryQueue::new(
                QueueConfig::new(name)
                    .with_lease(LEASE)
                    .with_max_attempts(attempts),
            )) as Arc<dyn WorkQueue>
        };
        Self {
            books: open("q-ledger", 1000),
            results: open("q-results", 1000),
            main: open("q", 1),
        }
    }

    fn ledger(&self) -> SheetLedger {
        self.ledger_with(SheetOptions::default())
    }

    fn ledger_with(&self, options: SheetOptions) -> SheetLedger {
        SheetLedger::with_options(
            self.books.clone(),
            self.results.clone(),
            self.main.clone(),
            options,
        )
    }

    /// Book sheets waiting, exactly (the memory queue counts).
    async fn book_sheets(&self) -> u64 {
        self.books.backlog().await.unwrap().ready.value().unwrap()
    }
}

fn receipt(job: &str, seq: u64, state: Settled) -> Receipt {
    Receipt {
        job: job.into(),
        seq,
        state,
        attempt: 1,
        exit_code: Some(0),
        seconds: 0.5,
        worker: "w".into(),
        item: format!("item {seq}").into(),
        reason: None,
        stderr_tail: None,
        at: 1_000 + seq,
        life: 0,
        value: None,
        value_url: None,
        copy: false,
    }
}

async fn done(ledger: &SheetLedger, job: &str) -> u64 {
    ledger
        .jobs()
        .await
        .unwrap()
        .iter()
        .find(|s| s.manifest.job == job)
        .map_or(0, |s| s.done)
}

#[tokio::test(start_paused = true)]
async fn a_read_merges_every_sheet_into_one() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 10, "d")).await.unwrap();
    for seq in 0..10 {
        writer
            .record(&[receipt("j", seq, Settled::Done)])
            .await
            .unwrap();
    }
    assert_eq!(siblings.book_sheets().await, 11);
    let reader = siblings.ledger();
    let status = &reader.jobs().await.unwrap()[0];
    assert_eq!((status.done, status.is_complete()), (10, true));
    assert_eq!(siblings.book_sheets().await, 1, "the read left one sheet");
    // A fresh reader (no memory) reads the one sheet and leaves one: an
    // idle read is one pull (it brought less than a batch), one publish,
    // one ack.
    let again = siblings.ledger();
    assert!(again.jobs().await.unwrap()[0].is_complete());
    assert_eq!(siblings.book_sheets().await, 1);
    let calls = again.calls();
    assert_eq!(
        (
            calls.pulls,
            calls.publishes,
            calls.acks,
            calls.releases,
            calls.dead_looks
        ),
        (1, 1, 1, 0, 0),
        "{calls:?}"
    );
    // Receipts: one per item, and the listing consumed nothing.
    let receipts = siblings.ledger().receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 10);
    assert_eq!(siblings.ledger().receipts("j").await.unwrap(), receipts);
    let results = siblings.results.backlog().await.unwrap();
    assert_eq!(
        results.ready.value(),
        Some(1),
        "receipts compacted to one sheet"
    );
}

#[tokio::test(start_paused = true)]
async fn two_readers_at_once_under_count_and_converge() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 40, "d")).await.unwrap();
    for seq in 0..40 {
        writer
            .record(&[receipt("j", seq, Settled::Done)])
            .await
            .unwrap();
    }
    // One sheet per pull, so the two reads interleave and each takes a part.
    let options = SheetOptions {
        batch: 1,
        ..SheetOptions::default()
    };
    let a = siblings.ledger_with(options.clone());
    let b = siblings.ledger_with(options);
    let (seen_a, seen_b) = tokio::join!(done(&a, "j"), done(&b, "j"));
    assert!(
        seen_a <= 40 && seen_b <= 40,
        "over-count: {seen_a} {seen_b}"
    );
    assert!(
        seen_a < 40 || seen_b < 40,
        "the readers did not overlap ({seen_a}, {seen_b}): the test shows nothing"
    );
    // The next cycles converge, each reader's answer never shrinking.
    let mut last = (seen_a, seen_b);
    for _ in 0..4 {
        let now = tokio::join!(done(&a, "j"), done(&b, "j"));
        assert!(now.0 >= last.0 && now.1 >= last.1 && now.0 <= 40 && now.1 <= 40);
        last = now;
    }
    assert_eq!(last, (40, 40));
    assert!(siblings.book_sheets().await <= 2);
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_dies_mid_cycle_loses_nothing() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 5, "d")).await.unwrap();
    writer
        .record(&[
            receipt("j", 0, Settled::Done),
            receipt("j", 1, Settled::Dead),
        ])
        .await
        .unwrap();
    // Reader 1 pulls every sheet and dies before publishing the merge.
    let held = siblings.books.pull(100, Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 2);
    // A fresh reader finds nothing, sees the sheets counted in flight, and
    // waits them out (they come back after their lease) instead of saying
    // "no jobs".
    let fresh = siblings.ledger();
    let status = &fresh.jobs().await.unwrap()[0];
    assert_eq!(
        (status.done, status.dead),
        (1, 1),
        "after the lease, all is back"
    );

    // Reader 2 pulls, publishes its merge and dies before the acks:
    // duplicates, counted once.
    writer
        .record(&[receipt("j", 2, Settled::Done)])
        .await
        .unwrap();
    let held = siblings.books.pull(100, Duration::ZERO).await.unwrap();
    let mut merged = Book::default();
    for delivery in &held {
        merged.merge(&decode_book(&delivery.item.payload).unwrap());
    }
    let messages = book_sheets(&merged, MAX_SHEET)
        .into_iter()
        .map(|sheet| Item::new(sheet).with_attribute(SHEET_ATTRIBUTE, BOOK_SHEET))
        .collect();
    siblings.books.publish(messages).await.unwrap();
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let status = &siblings.ledger().jobs().await.unwrap()[0];
    assert_eq!((status.done, status.dead), (2, 1), "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn items_the_backend_dead_letters_are_counted_and_kept() {
    let siblings = Siblings::new();
    let ledger = siblings.ledger();
    ledger.begin(&Manifest::new("j", 2, "d")).await.unwrap();
    let first = Item::new("a").with_job(JobItem::new("j", 0));
    siblings.main.publish(vec![first]).await.unwrap();
    ledger
        .record(&[receipt("j", 1, Settled::Done)])
        .await
        .unwrap();
    // Its holder dies on its only attempt: the queue buries it itself.
    assert_eq!(
        siblings.main.pull(1, Duration::ZERO).await.unwrap().len(),
        1
    );
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(
        siblings
            .main
            .pull(1, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    // The first read starts the stall clock, a read once the job has not
    // moved for `dead_every` looks, and the read after the look counts it
    // (the look runs on its own task).
    ledger.jobs().await.unwrap();
    tokio::time::sleep(SheetOptions::default().dead_every).await;
    ledger.jobs().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let status = &ledger.jobs().await.unwrap()[0];
    assert_eq!(
        (status.done, status.dead, status.is_complete()),
        (1, 1, true)
    );
    // Persisted: a reader that never lists the dead place sees it too.
    siblings.main.purge_dead().await.unwrap();
    let status = &siblings.ledger().jobs().await.unwrap()[0];
    assert_eq!(status.dead, 1, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn a_big_book_is_split_to_fit_and_merges_back() {
    let siblings = Siblings::new();
    let ledger = siblings.ledger_with(SheetOptions {
        max_sheet: 2048,
        ..SheetOptions::default()
    });
    ledger.begin(&Manifest::new("j", 2000, "d")).await.unwrap();
    // Every other item done: 500 ranges, far more than one 2 KiB sheet.
    let receipts: Vec<Receipt> = (0..1000)
        .step_by(2)
        .map(|seq| receipt("j", seq, Settled::Done))
        .collect();
    ledger.record(&receipts).await.unwrap();
    let reader = siblings.ledger_with(SheetOptions {
        max_sheet: 2048,
        ..SheetOptions::default()
    });
    assert_eq!(reader.jobs().await.unwrap()[0].done, 500);
    let sheets = siblings.books.pull(1000, Duration::ZERO).await.unwrap();
    assert!(sheets.len() > 1, "{}", sheets.len());
    let mut book = Book::default();
    for sheet in &sheets {
        assert!(
            sheet.item.payload.len() <= 2048,
            "{}",
            sheet.item.payload.len()
        );
        book.merge(&decode_book(&sheet.item.payload).unwrap());
    }
    assert_eq!(book.status_of("j").unwrap().done, 500);
    // Receipt sheets fit too.
    let results = siblings.results.pull(1000, Duration::ZERO).await.unwrap();
    assert!(results.len() > 1 && results.iter().all(|r| r.item.payload.len() <= 2048));
}

#[test]
fn a_small_book_is_one_sheet() {
    let mut book = Book::default();
    book.begin(&Manifest::new("j", 3, "d")).unwrap();
    assert_eq!(book_sheets(&book, MAX_SHEET).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_busy_writer_keeps_the_sheets_few() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 100, "d")).await.unwrap();
    for seq in 0..100 {
        writer
            .record(&[receipt("j", seq, Settled::Done)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let sheets = siblings.book_sheets().await;
    assert!(sheets <= 6, "{sheets} book sheets after 100 writes");
    assert_eq!(done(&siblings.ledger(), "j").await, 100);
}

#[tokio::test(start_paused = true)]
async fn the_dead_place_is_listed_when_the_job_stalls() {
    let siblings = Siblings::new();
    let ledger = siblings.ledger();
    ledger.begin(&Manifest::new("j", 100, "d")).await.unwrap();
    ledger.jobs().await.unwrap();
    assert_eq!(
        ledger.calls().dead_looks,
        0,
        "a first read looked (it would hold a short job's end)"
    );
    for seq in 0..10 {
        ledger
            .record(&[receipt("j", seq, Settled::Done)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        ledger.jobs().await.unwrap();
    }
    assert_eq!(ledger.calls().dead_looks, 0, "looked while items settled");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ledger.jobs().await.unwrap();
    assert_eq!(ledger.calls().dead_looks, 1, "no look once the job stalled");
}

/// A job's receipts as one sheet per receipt, as many one-item writes leave them.
async fn receipt_sheets(siblings: &Siblings, job: &str, n: u64) {
    let sheets: Vec<Item> = (0..n)
        .map(|seq| {
            Item::new(encode(&vec![receipt(job, seq, Settled::Done)]))
                .with_attribute(SHEET_ATTRIBUTE, RECEIPT_SHEET)
        })
        .collect();
    for chunk in sheets.chunks(500) {
        siblings.results.publish(chunk.to_vec()).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn receipts_are_read_to_the_end_past_the_pull_cap() {
    let siblings = Siblings::new();
    // Ten sheets a pull, three pulls a read: a cap of 30 sheets, for a job
    // of 100 items each with its own receipt sheet (as on SQS, where the
    // cap was 10,000 and a 21,000-item job showed 613 settled items as
    // pending).
    let options = SheetOptions {
        batch: 10,
        max_pulls: 3,
        ..SheetOptions::default()
    };
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 100, "d")).await.unwrap();
    writer
        .record(
            &(0..100)
                .map(|seq| receipt("j", seq, Settled::Done))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    // The book says 100 done; the details are in 100 separate sheets.
    let stale = siblings.results.pull(1000, Duration::ZERO).await.unwrap();
    let tokens: Vec<LeaseToken> = stale.into_iter().map(|d| d.token).collect();
    siblings.results.ack(&tokens).await.unwrap();
    receipt_sheets(&siblings, "j", 100).await;

    let reader = siblings.ledger_with(options.clone());
    let receipts = reader.receipts("j").await.unwrap();
    assert_eq!(
        receipts.len(),
        100,
        "a read capped at 30 sheets showed {} of 100 receipts",
        receipts.len()
    );
    // Every sheet it wrote back is visible again, and a second read agrees.
    let again = siblings.ledger_with(options).receipts("j").await.unwrap();
    assert_eq!(again, receipts);
}

#[tokio::test(start_paused = true)]
async fn a_receipts_read_keeps_other_jobs_and_bounds_its_rounds() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    for job in ["a", "b"] {
        writer.begin(&Manifest::new(job, 60, "d")).await.unwrap();
        writer
            .record(
                &(0..60)
                    .map(|seq| receipt(job, seq, Settled::Done))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
    }
    receipt_sheets(&siblings, "a", 60).await;
    receipt_sheets(&siblings, "b", 60).await;
    // Rounds of at most 25 receipts: memory stays bounded by a round.
    let options = SheetOptions {
        batch: 10,
        max_pulls: 2,
        round_receipts: 25,
        ..SheetOptions::default()
    };
    let reader = siblings.ledger_with(options.clone());
    assert_eq!(reader.receipts("a").await.unwrap().len(), 60);
    // Job b's receipts were written back, not lost.
    assert_eq!(
        siblings
            .ledger_with(options)
            .receipts("b")
            .await
            .unwrap()
            .len(),
        60
    );
}

#[tokio::test(start_paused = true)]
async fn a_fresh_reader_tells_held_sheets_from_no_jobs() {
    let siblings = Siblings::new();
    let writer = siblings.ledger();
    writer.begin(&Manifest::new("j", 5, "d")).await.unwrap();
    // Another reader holds every book sheet, and hands them back a second
    // later (a live reader's cycle, stretched).
    let held = siblings.books.pull(100, Duration::ZERO).await.unwrap();
    assert!(!held.is_empty());
    let books = siblings.books.clone();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tokens: Vec<LeaseToken> = held.into_iter().map(|d| d.token).collect();
        books.release(&tokens).await.unwrap();
    });
    let fresh = siblings.ledger();
    let jobs = fresh.jobs().await.unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "a fresh reader said \"no jobs\" while the sheets were held"
    );
    holder.await.unwrap();

    // `begin` of the same job while the sheets are held: never new.
    let held = siblings.books.pull(100, Duration::ZERO).await.unwrap();
    let books = siblings.books.clone();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let tokens: Vec<LeaseToken> = held.into_iter().map(|d| d.token).collect();
        books.release(&tokens).await.unwrap();
    });
    let begun = siblings
        .ledger()
        .begin(&Manifest::new("j", 5, "d"))
        .await
        .unwrap();
    assert!(
        matches!(begun, Begun::Existing(_)),
        "an existing job was taken for new: {begun:?}"
    );
    holder.await.unwrap();

    // Held past the wait: an error that says so, not "no jobs".
    let _held = siblings.books.pull(100, Duration::ZERO).await.unwrap();
    let impatient = siblings.ledger_with(SheetOptions {
        held_wait: Duration::from_secs(5),
        ..SheetOptions::default()
    });
    let error = impatient.jobs().await.unwrap_err();
    assert_eq!(error.kind(), QueueErrorKind::Unavailable);
    assert!(
        error.to_string().contains("held by another reader"),
        "{error}"
    );
    // An empty ledger is believed at once.
    let empty = Siblings::new();
    assert!(empty.ledger().jobs().await.unwrap().is_empty());
}

/// Receipt sheets waiting, exactly (the memory queue counts).
async fn receipt_sheet_count(siblings: &Siblings) -> u64 {
    siblings
        .results
        .backlog()
        .await
        .unwrap()
        .ready
        .value()
        .unwrap()
}

/// Issue 21 item 8: only `results` compacted the receipt sheets, so a job
/// nobody read left one sheet per ack batch for ever. A writer folds what
/// it wrote as it goes: after 300 ack batches of two writers the sibling
/// holds a bounded number of sheets, and every receipt is still there.
#[tokio::test(start_paused = true)]
async fn writers_fold_their_receipt_sheets_as_they_go() {
    let siblings = Siblings::new();
    let writers = [siblings.ledger(), siblings.ledger()];
    writers[0]
        .begin(&Manifest::new("j", 1500, "d"))
        .await
        .unwrap();
    for batch in 0..300u64 {
        let receipts: Vec<Receipt> = (batch * 5..batch * 5 + 5)
            .map(|seq| receipt("j", seq, Settled::Done))
            .collect();
        writers[(batch % 2) as usize]
            .record(&receipts)
            .await
            .unwrap();
    }
    let sheets = receipt_sheet_count(&siblings).await;
    let bound = 2 * SheetOptions::default().fold_receipts as u64 + 2;
    assert!(
        sheets <= bound,
        "{sheets} receipt sheets after 300 ack batches (bound {bound})"
    );
    let receipts = siblings.ledger().receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 1500, "a fold lost receipts");
    assert!(receipts.iter().all(|r| r.state == Settled::Done));
}

/// A fold leaves what it cannot fold in place: sheets of another kind, a
/// `results` read's own (marked) sheets, and sheets already near full.
#[tokio::test(start_paused = true)]
async fn a_fold_leaves_foreign_marked_and_full_sheets_alone() {
    let siblings = Siblings::new();
    let foreign = Item::new("not a sheet");
    let marked = Item::new(encode(&vec![receipt("j", 0, Settled::Done)]))
        .with_attribute(SHEET_ATTRIBUTE, RECEIPT_SHEET)
        .with_attribute(COMPACTED_BY, "someone");
    let full = Item::new(encode(
        &(100..2100)
            .map(|seq| receipt("j", seq, Settled::Done))
            .collect::<Vec<_>>(),
    ))
    .with_attribute(SHEET_ATTRIBUTE, RECEIPT_SHEET);
    siblings
        .results
        .publish(vec![foreign, marked, full])
        .await
        .unwrap();
    let writer = siblings.ledger_with(SheetOptions {
        max_sheet: 64 * 1024,
        ..SheetOptions::default()
    });
    writer.begin(&Manifest::new("j", 3000, "d")).await.unwrap();
    let per_fold = writer.options.fold_receipts as u64;
    for seq in 1..=per_fold {
        writer
            .record(&[receipt("j", seq, Settled::Done)])
            .await
            .unwrap();
    }
    // The three stay as they were; the writer's sheets became one.
    assert_eq!(receipt_sheet_count(&siblings).await, 4);
    let left = siblings.results.pull(10, Duration::ZERO).await.unwrap();
    let payloads: Vec<usize> = left.iter().map(|d| d.item.payload.len()).collect();
    assert!(
        left.iter().any(|d| &d.item.payload[..] == b"not a sheet"),
        "{payloads:?}"
    );
    assert!(
        left.iter()
            .any(|d| d.item.attributes.get(COMPACTED_BY).map(String::as_str) == Some("someone")),
        "{payloads:?}"
    );
}

/// Every sheet gone at once, as when a queue is deleted and created again
/// or an emulator restarts: pulled and acked.
async fn wipe(queue: &Arc<dyn WorkQueue>) {
    loop {
        let sheets = queue.pull(100, Duration::ZERO).await.unwrap();
        if sheets.is_empty() {
            return;
        }
        let tokens: Vec<_> = sheets.into_iter().map(|d| d.token).collect();
        queue.ack(&tokens).await.unwrap();
    }
}

/// A queue re-created (or an emulator restarted) under a process that
/// read the old ledger: that process goes on answering what it knew, but
/// its reads of the new ledger must not plant the old jobs in it.
#[tokio::test(start_paused = true)]
async fn a_recreated_ledger_gets_no_old_job_back_from_a_process_that_knew_it() {
    let siblings = Siblings::new();
    let old = siblings.ledger();
    old.begin(&Manifest::new("old", 3, "d")).await.unwrap();
    old.record(&[receipt("old", 0, Settled::Done)])
        .await
        .unwrap();
    assert_eq!(done(&old, "old").await, 1);

    wipe(&siblings.books).await;
    wipe(&siblings.results).await;
    let new = siblings.ledger();
    new.begin(&Manifest::new("new", 2, "d")).await.unwrap();
    // The old process reads the new ledger's sheets, merges and rewrites.
    old.jobs().await.unwrap();

    let fresh = siblings.ledger();
    let jobs: Vec<String> = fresh
        .jobs()
        .await
        .unwrap()
        .iter()
        .map(|s| s.manifest.job.to_string())
        .collect();
    assert_eq!(jobs, ["new"], "the old job came back into the new ledger");
}
