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

use super::{Begun, JobItem, Ledger, Manifest, Receipt, SeqSet, Settled};
use crate::conformance::Harness;
use crate::{Message, QueueErrorKind, WorkQueue};

async fn ledger_of(queue: &Arc<dyn WorkQueue>) -> Arc<dyn Ledger> {
    queue
        .ledger()
        .expect("this queue keeps no ledger: `WorkQueue::ledger` returned None")
}

fn receipt(job: &str, seq: u64, state: Settled) -> Receipt {
    Receipt {
        job: job.to_string(),
        seq,
        state,
        attempt: 2,
        exit_code: Some(if state == Settled::Done { 0 } else { 3 }),
        seconds: 1.5,
        worker: "pod-7/0".to_string(),
        item: format!("item \"{seq}\" café"),
        reason: (state == Settled::Dead).then(|| "exit code 3 on attempt 2 of 2".to_string()),
        stderr_tail: Some("line one\nlast line ✓\n".to_string()),
        at: 1_700_000_000_000 + seq,
    }
}

/// `begin` records a manifest once: the same input again is `Existing`,
/// another input under the same name is refused naming `--job`.
pub async fn ledger_begin_is_idempotent_and_refuses_another_input(harness: &Harness) {
    let queue = harness.queue("ledger_begin", 5).await;
    let ledger = ledger_of(&queue).await;
    let manifest = Manifest::new("job-a", 3, "d1");
    assert_eq!(ledger.begin(&manifest).await.expect("begin"), Begun::New);
    match ledger.begin(&manifest).await.expect("begin again") {
        Begun::Existing(status) => assert_eq!(status.manifest, manifest),
        Begun::New => panic!("a second begin of the same job reported it new"),
    }
    let error = ledger
        .begin(&Manifest::new("job-a", 4, "d2"))
        .await
        .expect_err("another input under the same job name was accepted");
    assert_eq!(error.kind(), QueueErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("--job"), "{error}");
    let jobs = ledger.jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].manifest, manifest);
}

/// Each (job, seq) counts once, in any order; done beats dead; receipts
/// come back whole, one per item.
pub async fn ledger_counts_each_item_once(harness: &Harness) {
    let queue = harness.queue("ledger_once", 5).await;
    let ledger = ledger_of(&queue).await;
    ledger
        .begin(&Manifest::new("job-b", 4, "d"))
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
    let queue = harness.queue("ledger_submitted", 5).await;
    let ledger = ledger_of(&queue).await;
    ledger
        .begin(&Manifest::new("job-c", 100, "d"))
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
    let first = harness.open(&name, 5).await;
    let second = harness.open(&name, 5).await;
    ledger_of(&first)
        .await
        .begin(&Manifest::new("job-d", 1, "d"))
        .await
        .expect("begin");
    ledger_of(&second)
        .await
        .record(&[receipt("job-d", 0, Settled::Done)])
        .await
        .expect("record");
    let jobs = ledger_of(&first).await.jobs().await.expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].is_complete(), "{jobs:?}");
}

/// An item of a job that the backend dead-letters by itself (its holder
/// died on its last attempt) is counted dead: the job can still end.
pub async fn ledger_counts_items_the_backend_dead_letters(harness: &Harness) {
    let queue = harness.queue("ledger_lapse", 1).await;
    let ledger = ledger_of(&queue).await;
    ledger
        .begin(&Manifest::new("job-e", 1, "d"))
        .await
        .expect("begin");
    let mut message = Message::new("doomed");
    JobItem {
        job: "job-e".to_string(),
        seq: 0,
    }
    .stamp(&mut message.attributes);
    queue.publish(vec![message]).await.expect("publish");
    ledger
        .submitted("job-e", &SeqSet::first(1))
        .await
        .expect("submitted");
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
            "an item past max attempts (1) was delivered again: {again:?}"
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
            ledger_counts_items_the_backend_dead_letters);
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
