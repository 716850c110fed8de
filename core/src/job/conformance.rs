//! The ledger's contract as public test functions (feature `conformance`),
//! run by every driver whose queue keeps a [`Ledger`]:
//!
//! ```ignore
//! forloop_core::ledger_conformance_tests!(harness);
//! ```
//!
//! Each uses the driver's [`Harness`] and a fresh queue, so what is checked
//! is the ledger as the backend keeps it: shared between clients, counted
//! once per item, and told of items the backend dead-letters by itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{Backend, Begun, JobItem, Ledger, Manifest, Receipt, SeqSet, Settled};
use crate::conformance::Harness;
use crate::{Item, QueueErrorKind, WorkQueue};

fn ledger_of(backend: &Backend) -> Arc<dyn Ledger> {
    backend
        .ledger
        .clone()
        .expect("this backend keeps no ledger: its harness opened it without one")
}

fn receipt(job: &str, seq: u64, state: Settled) -> Receipt {
    Receipt {
        job: job.into(),
        seq,
        state,
        attempt: 2,
        exit_code: Some(if state == Settled::Done { 0 } else { 3 }),
        seconds: 1.5,
        worker: "pod-7/0".into(),
        item: format!("item \"{seq}\" café").into(),
        reason: (state == Settled::Dead).then(|| "exit code 3 on attempt 2 of 2".to_string()),
        stderr_tail: Some("line one\nlast line ✓\n".to_string()),
        at: 1_700_000_000_000 + seq,
        life: 0,
        // What `f` returned comes back as it went in (seq 2's is read back
        // by `ledger_counts_each_item_once`).
        value: (state == Settled::Done && seq == 2).then(|| {
            crate::job::ItemValue::parse(r#"{"frames": 120, "title": "café \"2\""}"#).expect("JSON")
        }),
        value_url: None,
        copy: false,
    }
}

/// A manifest that asks for every receipt (these clauses read the done
/// items' details back; a ledger may keep only counts of a job that does
/// not ask, [`Manifest::keep_receipts`]).
fn manifest(job: &str, total: u64, digest: &str) -> Manifest {
    Manifest::new(job, total, digest).keeping_receipts()
}

/// `begin` records a manifest once: the same input again is `Existing`,
/// another input under the same name is refused naming `--job`.
pub async fn ledger_begin_is_idempotent_and_refuses_another_input(harness: &Harness) {
    let backend = harness.backend("ledger_begin", 5).await;
    let ledger = ledger_of(&backend);
    let first = manifest("job-a", 3, "d1");
    assert_eq!(ledger.begin(&first).await.expect("begin"), Begun::New);
    match ledger.begin(&first).await.expect("begin again") {
        Begun::Existing(status) => assert_eq!(status.manifest, first),
        Begun::New => panic!("a second begin of the same job reported it new"),
    }
    let error = ledger
        .begin(&manifest("job-a", 4, "d2"))
        .await
        .expect_err("another input under the same job name was accepted");
    assert_eq!(error.kind(), QueueErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("--job"), "{error}");
    let jobs = ledger.jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].manifest, first);
}

/// Each (job, seq) counts once, in any order; done beats dead; receipts
/// come back whole, one per item.
pub async fn ledger_counts_each_item_once(harness: &Harness) {
    let backend = harness.backend("ledger_once", 5).await;
    let ledger = ledger_of(&backend);
    ledger
        .begin(&manifest("job-b", 4, "d"))
        .await
        .expect("begin");
    let dead1 = receipt("job-b", 1, Settled::Dead);
    ledger
        .record(&[receipt("job-b", 0, Settled::Done), dead1.clone()])
        .await
        .expect("record");
    // Redeliveries, double acks and re-sent receipts.
    ledger
        .record(&[receipt("job-b", 0, Settled::Done), dead1.clone()])
        .await
        .expect("record again");
    let status = &ledger.jobs().await.expect("jobs")[0];
    assert_eq!((status.done, status.dead), (1, 1), "{status:?}");
    assert!(!status.is_complete());
    // Item 1 was requeued and succeeded: done beats dead, both ways round.
    ledger
        .record(&[
            receipt("job-b", 1, Settled::Done),
            receipt("job-b", 3, Settled::Dead),
        ])
        .await
        .expect("record");
    ledger.record(&[dead1]).await.expect("a late dead receipt");
    let status = &ledger.jobs().await.expect("jobs")[0];
    assert_eq!((status.done, status.dead), (2, 1), "{status:?}");
    ledger
        .record(&[receipt("job-b", 2, Settled::Done)])
        .await
        .expect("record");
    let status = &ledger.jobs().await.expect("jobs")[0];
    assert!(status.is_complete(), "{status:?}");
    let receipts = ledger.receipts("job-b").await.expect("receipts");
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3], "one receipt per item, by seq");
    assert_eq!(
        receipts[2],
        receipt("job-b", 2, Settled::Done),
        "a receipt changed on the way"
    );
    assert_eq!(receipts[1].state, Settled::Done, "done beats dead");
    assert_eq!(receipts[3], receipt("job-b", 3, Settled::Dead));
}

/// What was submitted is remembered, so a resume sends only the rest.
pub async fn ledger_remembers_what_was_submitted(harness: &Harness) {
    let backend = harness.backend("ledger_submitted", 5).await;
    let ledger = ledger_of(&backend);
    ledger
        .begin(&manifest("job-c", 100, "d"))
        .await
        .expect("begin");
    ledger
        .submitted("job-c", &SeqSet::first(30))
        .await
        .expect("submitted");
    ledger
        .submitted("job-c", &(50..60).collect())
        .await
        .expect("submitted");
    ledger
        .record(&[receipt("job-c", 70, Settled::Done)])
        .await
        .expect("record");
    let seqs = ledger
        .seqs("job-c")
        .await
        .expect("seqs")
        .expect("the job exists");
    let mut want: SeqSet = (30..50).collect();
    want.union(&(60..70).collect());
    want.union(&(71..100).collect());
    assert_eq!(seqs.unsent(), want);
    assert_eq!(ledger.jobs().await.expect("jobs")[0].submitted, 41);
    assert!(ledger.seqs("no-such-job").await.expect("seqs").is_none());
}

/// Two clients of one queue see one ledger.
pub async fn ledger_is_shared_between_clients(harness: &Harness) {
    let name = Harness::fresh_name("ledger_shared");
    let first = harness.open_backend(&name, 5).await;
    let second = harness.open_backend(&name, 5).await;
    ledger_of(&first)
        .begin(&manifest("job-d", 1, "d"))
        .await
        .expect("begin");
    ledger_of(&second)
        .record(&[receipt("job-d", 0, Settled::Done)])
        .await
        .expect("record");
    let jobs = ledger_of(&first).jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].is_complete(), "{jobs:?}");
}

/// An item of a job that the backend dead-letters by itself (its holder
/// died on its last attempt) is counted dead: the job can still end.
pub async fn ledger_counts_items_the_backend_dead_letters(harness: &Harness) {
    // Buried after its first delivery where the backend allows it; where it
    // takes no fewer than `least` attempts, the first ones fail (nack) and
    // the holder dies on the last.
    let least = harness.least_attempts_taken();
    let backend = harness.backend("ledger_lapse", least).await;
    let (queue, ledger) = (Arc::clone(&backend.queue), ledger_of(&backend));
    ledger
        .begin(&manifest("job-e", 1, "d"))
        .await
        .expect("begin");
    let message = Item::new("doomed").with_job(JobItem::new("job-e", 0));
    queue.publish(vec![message]).await.expect("publish");
    ledger
        .submitted("job-e", &SeqSet::first(1))
        .await
        .expect("submitted");
    for attempt in 1..least {
        let failed = queue
            .pull(1, harness.slack_length() * 4)
            .await
            .expect("pull");
        assert_eq!(failed.len(), 1, "attempt {attempt} was not delivered");
        queue
            .nack(&[failed[0].token.clone()], Duration::ZERO)
            .await
            .expect("nack");
    }
    let held = queue
        .pull(1, harness.slack_length() * 4)
        .await
        .expect("pull");
    assert_eq!(held.len(), 1, "the item was not delivered");
    // The holder dies: nothing settles the item. Pull again after the lease
    // so backends that bury on the next delivery get their chance.
    let until = Instant::now() + harness.lease_length() * 4 + Duration::from_secs(5);
    sleep(harness.lease_length()).await;
    loop {
        let again = queue
            .pull(1, Duration::from_millis(500))
            .await
            .expect("pull");
        assert!(
            again.is_empty(),
            "an item past max attempts ({least}) was delivered again: {again:?}"
        );
        let status = &ledger.jobs().await.expect("jobs")[0];
        if status.dead == 1 {
            assert!(status.is_complete(), "{status:?}");
            return;
        }
        assert!(
            Instant::now() < until,
            "the backend dead-lettered the item but the ledger never counted it: {status:?}"
        );
    }
}

/// Only a job's own items count: a receipt whose seq is past the job's
/// total (a stray `forloop-seq`, near 2^32 even) or of a job with no
/// manifest neither completes anything nor comes back as a result.
pub async fn ledger_ignores_seqs_past_the_total(harness: &Harness) {
    let backend = harness.backend("ledger_stray", 5).await;
    let ledger = ledger_of(&backend);
    ledger
        .begin(&manifest("job-s", 2, "d"))
        .await
        .expect("begin");
    ledger
        .record(&[
            receipt("job-s", 0, Settled::Done),
            receipt("job-s", 2, Settled::Done),
            receipt("job-s", u64::from(u32::MAX) - 1, Settled::Dead),
            receipt("no-manifest", 0, Settled::Done),
        ])
        .await
        .expect("a stray receipt is ignored, not refused");
    let jobs = ledger.jobs().await.expect("jobs");
    let names: Vec<&str> = jobs.iter().map(|j| j.manifest.job.as_str()).collect();
    assert_eq!(names, ["job-s"], "only jobs with a manifest are listed");
    let status = &jobs[0];
    assert_eq!((status.done, status.dead), (1, 0), "{status:?}");
    assert!(
        !status.is_complete(),
        "stray seqs completed the job: {status:?}"
    );
    let seqs: Vec<u64> = ledger
        .receipts("job-s")
        .await
        .expect("receipts")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [0], "a stray receipt came back as a result");
}

/// [`Ledger::record_then_ack`] records and acks: the item is counted once
/// however often the call is repeated (a retried batch), is not delivered
/// again, and its receipt comes back whole.
pub async fn ledger_record_then_ack_counts_once_and_settles(harness: &Harness) {
    let backend = harness.backend("ledger_record_then_ack", 5).await;
    let (queue, ledger) = (Arc::clone(&backend.queue), ledger_of(&backend));
    ledger
        .begin(&manifest("job-f", 2, "d"))
        .await
        .expect("begin");
    let messages = (0..2)
        .map(|seq| Item::new(format!("item {seq}")).with_job(JobItem::new("job-f", seq)))
        .collect();
    queue.publish(messages).await.expect("publish");
    let mut held = Vec::new();
    let until = Instant::now() + harness.slack_length() * 4 + Duration::from_secs(5);
    while held.len() < 2 {
        held.extend(
            queue
                .pull(2, Duration::from_millis(500))
                .await
                .expect("pull"),
        );
        assert!(Instant::now() < until, "the job's items were not delivered");
    }
    let receipts: Vec<Receipt> = held
        .iter()
        .map(|d| {
            let item = d.item.job.clone().expect("a job's item");
            let mut r = receipt(&item.job, item.seq, Settled::Done);
            r.item = d.item.payload.clone();
            r
        })
        .collect();
    let tokens: Vec<_> = held.iter().map(|d| d.token.clone()).collect();
    let borrowed: Vec<_> = receipts.iter().map(Receipt::borrowed).collect();
    let report = ledger
        .record_then_ack(&*queue, &tokens, &borrowed)
        .await
        .expect("record_then_ack");
    assert!(report.lost.is_empty(), "{report:?}");
    // The batch again, as a worker retries one whose answer it lost.
    ledger
        .record_then_ack(&*queue, &tokens, &borrowed)
        .await
        .expect("record_then_ack again");
    let status = &ledger.jobs().await.expect("jobs")[0];
    assert_eq!((status.done, status.dead), (2, 0), "{status:?}");
    assert!(status.is_complete(), "{status:?}");
    let back = ledger.receipts("job-f").await.expect("receipts");
    let mut want = receipts.clone();
    want.sort_by_key(|r| r.seq);
    assert_eq!(back, want, "receipts changed on the way");
    let again = queue
        .pull(2, harness.lease_length() + harness.slack_length())
        .await
        .expect("pull");
    assert!(again.is_empty(), "an acked item came back: {again:?}");
}

/// What [`ledger_cost`] measured: the ledger's calls to the backend,
/// summed over every client.
#[derive(Debug, Clone, Copy)]
pub struct LedgerCost {
    /// Items in the job.
    pub items: u64,
    /// Worker clients.
    pub workers: usize,
    /// Items per ack batch (one `record` each).
    pub batch: usize,
    /// `record` calls made.
    pub records: u64,
    /// Calls from `begin` to the last worker seeing the job complete.
    pub run: super::SheetCalls,
    /// `jobs` reads in the idle phase, and their calls.
    pub idle_reads: u64,
    /// Calls of the idle phase (every job complete, every worker reading).
    pub idle: super::SheetCalls,
    /// How long after the last record the last worker saw the job complete.
    pub end_seen_after: Duration,
}

fn sum_calls(ledgers: &[Arc<dyn Ledger>]) -> super::SheetCalls {
    let mut sum = super::SheetCalls::default();
    for calls in ledgers.iter().filter_map(|l| l.calls()) {
        sum.pulls += calls.pulls;
        sum.sheets_read += calls.sheets_read;
        sum.publishes += calls.publishes;
        sum.sheets_written += calls.sheets_written;
        sum.bytes_written += calls.bytes_written;
        sum.acks += calls.acks;
        sum.releases += calls.releases;
        sum.dead_looks += calls.dead_looks;
    }
    sum
}

/// Not a clause: run a job of `items` through `workers` clients the way
/// workers do (pull up to `batch`, record, ack; after an empty pull read
/// `jobs` until the job is complete), then `idle_reads` reads per worker,
/// and count what the ledger asked of the backend.
pub async fn ledger_cost(
    harness: &Harness,
    items: u64,
    workers: usize,
    batch: usize,
    idle_reads: usize,
) -> LedgerCost {
    let name = Harness::fresh_name("ledger_cost");
    let mut queues = Vec::new();
    for _ in 0..workers {
        queues.push(harness.open_backend(&name, 5).await);
    }
    let ledgers: Vec<Arc<dyn Ledger>> = queues.iter().map(ledger_of).collect();
    let queues: Vec<Arc<dyn WorkQueue>> = queues.into_iter().map(|b| b.queue).collect();
    ledgers[0]
        .begin(&manifest("cost", items, "d"))
        .await
        .expect("begin");
    let messages: Vec<Item> = (0..items)
        .map(|seq| Item::new(format!("item {seq}")).with_job(JobItem::new("cost", seq)))
        .collect();
    let max_batch = queues[0].capabilities().max_batch.min(100);
    for chunk in messages.chunks(max_batch) {
        queues[0].publish(chunk.to_vec()).await.expect("publish");
    }
    ledgers[0]
        .submitted("cost", &SeqSet::first(items))
        .await
        .expect("submitted");
    let last_record = Arc::new(std::sync::Mutex::new(Instant::now()));
    let records = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (queue, ledger) in queues.iter().cloned().zip(ledgers.iter().cloned()) {
        let last_record = last_record.clone();
        let records = records.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let held = queue
                    .pull(batch, Duration::from_millis(500))
                    .await
                    .expect("pull");
                if held.is_empty() {
                    let jobs = ledger.jobs().await.expect("jobs");
                    if jobs.iter().all(|job| job.is_complete()) && !jobs.is_empty() {
                        return Instant::now();
                    }
                    sleep(Duration::from_millis(500)).await;
                    continue;
                }
                let receipts: Vec<Receipt> = held
                    .iter()
                    .filter_map(|d| d.item.job.clone())
                    .map(|item| {
                        let mut r = receipt(&item.job, item.seq, Settled::Done);
                        r.stderr_tail = None;
                        r.item = format!("item {}", item.seq).into();
                        r
                    })
                    .collect();
                ledger.record(&receipts).await.expect("record");
                records.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *last_record.lock().unwrap() = Instant::now();
                let tokens: Vec<_> = held.into_iter().map(|d| d.token).collect();
                queue.ack(&tokens).await.expect("ack");
            }
        }));
    }
    let mut last_seen = Instant::now();
    for task in tasks {
        last_seen = last_seen.max(task.await.expect("worker"));
    }
    let end_seen_after = last_seen.saturating_duration_since(*last_record.lock().unwrap());
    let run = sum_calls(&ledgers);
    for _ in 0..idle_reads {
        for ledger in &ledgers {
            let jobs = ledger.jobs().await.expect("jobs");
            assert!(jobs[0].is_complete(), "{jobs:?}");
        }
    }
    let after = sum_calls(&ledgers);
    let idle = super::SheetCalls {
        pulls: after.pulls - run.pulls,
        sheets_read: after.sheets_read - run.sheets_read,
        publishes: after.publishes - run.publishes,
        sheets_written: after.sheets_written - run.sheets_written,
        bytes_written: after.bytes_written - run.bytes_written,
        acks: after.acks - run.acks,
        releases: after.releases - run.releases,
        dead_looks: after.dead_looks - run.dead_looks,
    };
    LedgerCost {
        items,
        workers,
        batch,
        records: records.load(std::sync::atomic::Ordering::Relaxed),
        run,
        idle_reads: (idle_reads * workers) as u64,
        idle,
        end_seen_after,
    }
}

/// Cancel and forget (issue 21): a cancellation is recorded once, read the
/// same by every reader, and makes the job over; a forgotten job leaves
/// `jobs()` and its receipts go, its name is kept among `forgotten()`, and
/// a `begin` of the name later makes a new, empty job.
pub async fn ledger_cancels_and_forgets_jobs(harness: &Harness) {
    let name = Harness::fresh_name("ledger_cancel");
    let (one, two) = (
        harness.open_backend(&name, 5).await,
        harness.open_backend(&name, 5).await,
    );
    let (ledger, other) = (ledger_of(&one), ledger_of(&two));
    ledger
        .begin(&manifest("job-f", 2, "d"))
        .await
        .expect("begin");
    ledger
        .record(&[receipt("job-f", 0, Settled::Done)])
        .await
        .expect("record");
    assert!(
        !ledger.cancel("no-such-job").await.expect("cancel"),
        "cancelled a job that is not there"
    );
    assert!(ledger.cancel("job-f").await.expect("cancel"));
    let first = ledger.jobs().await.expect("jobs")[0].clone();
    let at = first.cancelled.expect("a cancelled job says when");
    assert!(first.is_over() && !first.is_complete(), "{first:?}");
    assert!(
        other.cancel("job-f").await.expect("cancel again"),
        "idempotent"
    );
    for reader in [&ledger, &other] {
        let job = reader.jobs().await.expect("jobs")[0].clone();
        assert_eq!(
            job.cancelled,
            Some(at),
            "the first cancellation stays, for every reader: {job:?}"
        );
        assert_eq!(job.done, 1, "{job:?}");
    }
    assert!(!ledger.forget("no-such-job").await.expect("forget"));
    assert!(other.forget("job-f").await.expect("forget"));
    for reader in [&ledger, &other] {
        let jobs = reader.jobs().await.expect("jobs");
        assert!(jobs.is_empty(), "a forgotten job is still listed: {jobs:?}");
        assert_eq!(reader.forgotten().await.expect("forgotten"), ["job-f"]);
        assert!(reader.receipts("job-f").await.expect("receipts").is_empty());
        assert!(reader.seqs("job-f").await.expect("seqs").is_none());
    }
    assert!(
        !ledger.forget("job-f").await.expect("forget again"),
        "forgotten already"
    );
    // The name again: a new job, with nothing of the old one.
    let again = manifest("job-f", 3, "d2");
    assert_eq!(ledger.begin(&again).await.expect("begin anew"), Begun::New);
    for reader in [&ledger, &other] {
        let jobs = reader.jobs().await.expect("jobs");
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let job = &jobs[0];
        assert_eq!(
            (job.manifest.total, job.done, job.dead, job.cancelled),
            (3, 0, 0, None),
            "{job:?}"
        );
        assert!(reader.forgotten().await.expect("forgotten").is_empty());
    }
}

/// Halt and resume (issue 24): a job's `--max-dead` survives the trip
/// through the ledger; a halt is recorded in the epoch it was decided in,
/// once (two workers halting at once: the first halt stays, both are
/// told yes), is read the same by every reader and makes the job over; a
/// resume starts a new epoch from the counts then, and a halt decided on
/// a reading from before the resume is refused.
pub async fn ledger_halts_and_resumes_jobs(harness: &Harness) {
    let name = Harness::fresh_name("ledger_halt");
    let (one, two) = (
        harness.open_backend(&name, 5).await,
        harness.open_backend(&name, 5).await,
    );
    let (ledger, other) = (ledger_of(&one), ledger_of(&two));
    let limited = manifest("job-h", 4, "d").with_max_dead(super::DeadLimit::Items(0));
    ledger.begin(&limited).await.expect("begin");
    ledger
        .record(&[receipt("job-h", 0, Settled::Dead)])
        .await
        .expect("record");
    let job = other.jobs().await.expect("jobs")[0].clone();
    assert_eq!(
        job.manifest.max_dead,
        Some(super::DeadLimit::Items(0)),
        "{job:?}"
    );
    assert!(job.should_halt() && !job.is_halted(), "{job:?}");
    assert!(!ledger.halt("no-such-job", 0).await.expect("halt"));
    let (a, b) = tokio::join!(ledger.halt("job-h", 0), other.halt("job-h", 0));
    assert!(
        a.expect("halt") && b.expect("halt"),
        "both halts are told yes"
    );
    let mut at = None;
    for reader in [&ledger, &other] {
        let job = reader.jobs().await.expect("jobs")[0].clone();
        assert!(
            job.is_halted() && job.is_over() && !job.should_halt(),
            "{job:?}"
        );
        assert_eq!(job.phase(), super::JobPhase::Halted);
        let when = job.halt.at.expect("halted");
        assert_eq!(*at.get_or_insert(when), when, "one halt for every reader");
    }
    assert!(!ledger.unhalt("no-such-job").await.expect("unhalt"));
    assert!(other.unhalt("job-h").await.expect("unhalt"));
    for reader in [&ledger, &other] {
        let job = reader.jobs().await.expect("jobs")[0].clone();
        assert!(!job.is_halted() && !job.is_over(), "{job:?}");
        assert_eq!(
            (job.halt.epoch, job.halt.base_dead, job.halt.base_settled),
            (1, 1, 1),
            "{job:?}"
        );
        assert!(!job.should_halt(), "the old death is forgiven: {job:?}");
    }
    assert!(
        !ledger.halt("job-h", 0).await.expect("stale halt"),
        "a halt decided before the resume must not halt the resumed job"
    );
    assert!(!other.jobs().await.expect("jobs")[0].is_halted());
    ledger
        .record(&[receipt("job-h", 1, Settled::Dead)])
        .await
        .expect("record");
    let job = other.jobs().await.expect("jobs")[0].clone();
    assert!(
        job.should_halt(),
        "a new death passes the limit again: {job:?}"
    );
    assert!(other.halt("job-h", 1).await.expect("halt"));
    assert!(ledger.jobs().await.expect("jobs")[0].is_halted());
}

/// A requeue un-counts the death it puts back ([`Ledger::requeued`]): the
/// job reads incomplete, with no dead receipt for the item; its next death
/// (a later life) counts and shows, even if the first death's receipt
/// comes again after it.
pub async fn ledger_requeued_items_count_again_and_the_later_death_shows(harness: &Harness) {
    let backend = harness.backend("ledger_requeued", 5).await;
    let ledger = ledger_of(&backend);
    ledger
        .begin(&manifest("job-r", 2, "d"))
        .await
        .expect("begin");
    let first = receipt("job-r", 1, Settled::Dead);
    ledger
        .record(&[receipt("job-r", 0, Settled::Done), first.clone()])
        .await
        .expect("record");
    assert!(ledger.jobs().await.expect("jobs")[0].is_complete());
    ledger
        .requeued(std::slice::from_ref(&first))
        .await
        .expect("requeued");
    let job = ledger.jobs().await.expect("jobs")[0].clone();
    assert_eq!(
        (job.done, job.dead),
        (1, 0),
        "a requeued item is live: {job:?}"
    );
    assert!(!job.is_complete(), "{job:?}");
    let seqs: Vec<u64> = ledger
        .receipts("job-r")
        .await
        .expect("receipts")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        seqs,
        [0],
        "a requeued item has no receipt until it settles again"
    );
    let mut second = receipt("job-r", 1, Settled::Dead);
    (second.exit_code, second.life, second.at) = (Some(9), first.at + 60_000, first.at + 60_000);
    second.stderr_tail = Some("the second death".into());
    ledger
        .record(std::slice::from_ref(&second))
        .await
        .expect("record");
    // The first death's receipt, late: the later death stays.
    ledger
        .record(std::slice::from_ref(&first))
        .await
        .expect("record");
    let job = ledger.jobs().await.expect("jobs")[0].clone();
    assert_eq!((job.done, job.dead), (1, 1), "{job:?}");
    assert!(job.is_complete(), "{job:?}");
    let shown = ledger.receipts("job-r").await.expect("receipts");
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(shown[1], second, "the later death shows");
}

/// A worker's dead-letter ([`Ledger::record_then_dead_letter`]) counts
/// the item dead, with the worker's receipt, exactly when it went to the
/// dead place: a token whose lease is over buries nothing and records
/// nothing. [`Ledger::requeue_dead`] un-counts what it moves, and the
/// item's next death shows.
pub async fn ledger_counts_dead_only_what_is_in_the_dead_place(harness: &Harness) {
    let backend = harness.backend("ledger_buried", 5).await;
    let (queue, ledger) = (Arc::clone(&backend.queue), ledger_of(&backend));
    if matches!(queue.list_dead(1).await, Err(e) if e.kind() == QueueErrorKind::Unsupported) {
        return;
    }
    ledger
        .begin(&manifest("job-g", 2, "d"))
        .await
        .expect("begin");
    let items = (0..2)
        .map(|seq| Item::new(format!("g{seq}")).with_job(JobItem::new("job-g", seq)))
        .collect();
    queue.publish(items).await.expect("publish");
    ledger
        .submitted("job-g", &SeqSet::first(2))
        .await
        .expect("submitted");
    let mut held = Vec::new();
    let until = Instant::now() + Duration::from_secs(30);
    while held.len() < 2 && Instant::now() < until {
        held.extend(
            queue
                .pull(2 - held.len(), Duration::from_secs(1))
                .await
                .expect("pull"),
        );
    }
    assert_eq!(held.len(), 2, "both items delivered");
    held.sort_by_key(|d| d.item.job.as_ref().map(|j| j.seq));
    let dead_receipt = |delivery: &crate::Delivery, code: i32| {
        let job = delivery.item.job.clone().expect("an item of the job");
        let mut r = receipt("job-g", job.seq, Settled::Dead);
        (r.exit_code, r.life, r.item) = (Some(code), job.life, delivery.item.payload.clone());
        r
    };
    // Item 1's lease ends (handed back): its dead-letter comes too late.
    let late = held[1].token.clone();
    queue
        .release(std::slice::from_ref(&late))
        .await
        .expect("release");
    let report = ledger
        .record_then_dead_letter(
            &*queue,
            std::slice::from_ref(&late),
            "too late",
            &[Some(dead_receipt(&held[1], 3))],
        )
        .await
        .expect("a dead-letter of a lost lease");
    assert_eq!(report.lost, [late], "the lease was over");
    let first = dead_receipt(&held[0], 3);
    ledger
        .record_then_dead_letter(
            &*queue,
            std::slice::from_ref(&held[0].token),
            "exit 3",
            &[Some(first.clone())],
        )
        .await
        .expect("dead-letter");
    let job = ledger.jobs().await.expect("jobs")[0].clone();
    assert_eq!(
        (job.done, job.dead),
        (0, 1),
        "only the buried item is dead: {job:?}"
    );
    let shown = ledger.receipts("job-g").await.expect("receipts");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(
        shown[0].exit_code,
        Some(3),
        "the worker's receipt, not the backend's: {shown:?}"
    );
    // Requeue: un-counted as it moves, then delivered again and buried again.
    let until = Instant::now() + Duration::from_secs(30);
    let mut moved = 0;
    while moved == 0 {
        moved = ledger.requeue_dead(&*queue).await.expect("requeue");
        assert!(
            moved > 0 || Instant::now() < until,
            "the dead item never moved"
        );
    }
    let job = ledger.jobs().await.expect("jobs")[0].clone();
    assert_eq!(job.dead, 0, "requeued, so live: {job:?}");
    let until = Instant::now() + Duration::from_secs(30);
    let again = loop {
        let got = queue.pull(2, Duration::from_secs(1)).await.expect("pull");
        if let Some(d) = got
            .iter()
            .find(|d| d.item.job.as_ref().is_some_and(|j| j.seq == 0))
        {
            break d.clone();
        }
        assert!(Instant::now() < until, "the requeued item never came back");
    };
    let second = dead_receipt(&again, 9);
    ledger
        .record_then_dead_letter(
            &*queue,
            std::slice::from_ref(&again.token),
            "exit 9",
            &[Some(second)],
        )
        .await
        .expect("dead-letter again");
    let job = ledger.jobs().await.expect("jobs")[0].clone();
    assert_eq!(job.dead, 1, "{job:?}");
    let shown = ledger.receipts("job-g").await.expect("receipts");
    let zero = shown.iter().find(|r| r.seq == 0).expect("item 0's receipt");
    assert_eq!(zero.exit_code, Some(9), "the later death shows: {shown:?}");
}

/// Run every ledger clause as a test: `forloop_core::ledger_conformance_tests!(harness);`
#[macro_export]
macro_rules! ledger_conformance_tests {
    ($harness:path) => {
        $crate::ledger_conformance_tests!($harness, #[::tokio::test]);
    };
    ($harness:path, #[$attr:meta]) => {
        $crate::__ledger_conformance_each!(($harness) (#[$attr])
            ledger_begin_is_idempotent_and_refuses_another_input
            ledger_counts_each_item_once
            ledger_remembers_what_was_submitted
            ledger_is_shared_between_clients
            ledger_counts_items_the_backend_dead_letters
            ledger_ignores_seqs_past_the_total
            ledger_record_then_ack_counts_once_and_settles
            ledger_cancels_and_forgets_jobs
            ledger_halts_and_resumes_jobs
            ledger_requeued_items_count_again_and_the_later_death_shows
            ledger_counts_dead_only_what_is_in_the_dead_place);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ledger_conformance_each {
    (($harness:path) (#[$attr:meta]) $($name:ident)*) => {
        $(
            #[$attr]
            async fn $name() {
                $crate::job::conformance::$name(&$harness()).await;
            }
        )*
    };
}
