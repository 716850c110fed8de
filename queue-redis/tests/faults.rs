//! Faults a conformance clause cannot stage: lost keys, many tokens at once,
//! large dead lists, deleting a queue. Each test owns its redis-server.

use std::time::Duration;

use forloop_core::job::{JobItem, Ledger, Manifest, Receipt, ReceiptRef, SeqSet, Settled};
use forloop_core::{Driver, Item, LeaseToken, QueueAddress, QueueConfig, WorkQueue};
use forloop_queue_redis::{RedisDriver, RedisQueue};
use forloop_testkit::servers::RedisServer;

async fn queue(server: &RedisServer, name: &str, max_attempts: u32) -> RedisQueue {
    let config = QueueConfig::new(name)
        .with_lease(Duration::from_secs(30))
        .with_max_attempts(max_attempts);
    RedisQueue::connect(server.url(), config)
        .await
        .expect("connect to redis")
}

/// A plain client of `server`, to look at or stage its keys directly.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Issue 11 item 1: a server that lost its keys hands out the same ids
/// again; a token from before the loss must not settle the new delivery.
#[tokio::test]
async fn a_token_from_before_a_key_loss_cannot_settle_a_new_item() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "key-loss", 5).await;
    queue.publish(vec![Item::new("old")]).await.unwrap();
    let old = queue
        .pull(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);

    server.flushall();
    queue.publish(vec![Item::new("new")]).await.unwrap();
    let new = queue
        .pull(1, Duration::from_secs(1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(&new.item.payload[..], b"new");

    for report in [
        queue.ack(std::slice::from_ref(&old.token)).await.unwrap(),
        queue
            .nack(std::slice::from_ref(&old.token), Duration::ZERO)
            .await
            .unwrap(),
        queue
            .extend_lease(std::slice::from_ref(&old.token), Duration::from_secs(1))
            .await
            .unwrap(),
        queue
            .dead_letter(std::slice::from_ref(&old.token), "stale")
            .await
            .unwrap(),
    ] {
        assert_eq!(
            report.lost,
            std::slice::from_ref(&old.token),
            "a token from before the key loss settled the new item"
        );
    }
    let report = queue.ack(std::slice::from_ref(&new.token)).await.unwrap();
    assert!(
        report.lost.is_empty(),
        "the new holder lost its lease: {report:?}"
    );
}

/// Publish `n` items and lease them all.
async fn lease_all(queue: &RedisQueue, n: usize) -> Vec<LeaseToken> {
    let items: Vec<Item> = (0..n).map(|i| Item::new(format!("item-{i}"))).collect();
    for batch in items.chunks(forloop_queue_redis::MAX_BATCH) {
        queue.publish(batch.to_vec()).await.expect("publish");
    }
    let mut tokens = Vec::new();
    while tokens.len() < n {
        let got = queue
            .pull(n - tokens.len(), Duration::from_secs(1))
            .await
            .expect("pull");
        assert!(!got.is_empty(), "published items were not delivered");
        tokens.extend(got.into_iter().map(|d| d.token));
    }
    tokens
}

async fn counts(queue: &RedisQueue) -> (Option<u64>, Option<u64>, Option<u64>) {
    let backlog = queue.backlog().await.expect("backlog");
    (
        backlog.ready.value(),
        backlog.in_flight.value(),
        backlog.dead.value(),
    )
}

/// Issue 11 item 13: one settle call of more tokens than Lua's `unpack`
/// takes (about 8000) settles them all.
#[tokio::test]
async fn a_settle_call_of_ten_thousand_tokens_settles_them_all() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "many-tokens", 5).await;
    let tokens = lease_all(&queue, 10_000).await;
    let report = queue.ack(&tokens).await.expect("ack of 10 000 tokens");
    assert!(report.lost.is_empty(), "{} leases lost", report.lost.len());
    assert_eq!(counts(&queue).await, (Some(0), Some(0), Some(0)));
}

/// Script calls the server has run since the last `CONFIG RESETSTAT`,
/// less those that failed (the first call of a script the server has not
/// cached fails with NOSCRIPT and is sent again whole).
async fn script_calls(server: &RedisServer) -> u64 {
    let mut connection = raw(server).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_eval"))
        .filter_map(|line| {
            let stat = |name: &str| -> Option<u64> {
                let field = line.split(&format!(",{name}=")).nth(1)?;
                field.split(',').next()?.parse().ok()
            };
            let calls = line.split("calls=").nth(1)?.split(',').next()?;
            Some(calls.parse::<u64>().ok()? - stat("failed_calls").unwrap_or(0))
        })
        .sum()
}

async fn reset_stats(server: &RedisServer) {
    let mut connection = raw(server).await;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// Issue 11 item 13: requeue and purge of a large dead list run as several
/// bounded script calls (the server serves others between them), not one.
#[tokio::test]
async fn requeue_and_purge_of_a_large_dead_list_run_in_bounded_scripts() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "big-dead", 5).await;
    // Load the scripts, so that each call below is one EVALSHA.
    assert_eq!(queue.requeue_dead().await.unwrap(), 0);
    assert_eq!(queue.purge_dead().await.unwrap(), 0);
    let tokens = lease_all(&queue, 2500).await;
    let report = queue
        .dead_letter(&tokens, "bury")
        .await
        .expect("dead_letter");
    assert!(report.lost.is_empty());

    reset_stats(&server).await;
    assert_eq!(queue.requeue_dead().await.expect("requeue"), 2500);
    let calls = script_calls(&server).await;
    assert!(
        calls >= 3,
        "2500 dead items were requeued in {calls} script call(s), wanted batches of at most 1000"
    );
    assert_eq!(counts(&queue).await, (Some(2500), Some(0), Some(0)));

    let tokens = lease_all_ready(&queue, 2500).await;
    queue.dead_letter(&tokens, "bury again").await.unwrap();
    reset_stats(&server).await;
    assert_eq!(queue.purge_dead().await.expect("purge"), 2500);
    let calls = script_calls(&server).await;
    assert!(
        calls >= 3,
        "2500 dead items were purged in {calls} script call(s), wanted batches of at most 1000"
    );
    assert_eq!(counts(&queue).await, (Some(0), Some(0), Some(0)));
}

/// Lease `n` items already in the queue.
async fn lease_all_ready(queue: &RedisQueue, n: usize) -> Vec<LeaseToken> {
    let mut tokens = Vec::new();
    while tokens.len() < n {
        let got = queue
            .pull(n - tokens.len(), Duration::from_secs(1))
            .await
            .expect("pull");
        assert!(!got.is_empty(), "ready items were not delivered");
        tokens.extend(got.into_iter().map(|d| d.token));
    }
    tokens
}

/// Issue 11 item 13: `runner queue delete` removes every key of the queue,
/// and only that queue's.
#[tokio::test]
async fn delete_removes_every_key_of_the_queue_and_no_other() {
    let server = RedisServer::local(false);
    let doomed = queue(&server, "doomed", 5).await;
    let kept = queue(&server, "kept", 5).await;
    for q in [&doomed, &kept] {
        let ledger = q.jobs_ledger();
        ledger
            .begin(&Manifest::new("j", 3, "d").keeping_receipts())
            .await
            .unwrap();
        ledger.submitted("j", &SeqSet::first(3)).await.unwrap();
        ledger.record(&[receipt(0, Settled::Done)]).await.unwrap();
        // A receipt of a job with no manifest is ignored.
        let mut stray = receipt(0, Settled::Dead);
        stray.job = "stray".into();
        ledger.record(&[stray]).await.unwrap();
        q.publish(vec![Item::new("a"), Item::new("b")])
            .await
            .unwrap();
        let held = q.pull(1, Duration::from_secs(1)).await.unwrap();
        q.dead_letter(&[held[0].token.clone()], "dead")
            .await
            .unwrap();
    }
    let address = QueueAddress::parse(server.url());
    let config = QueueConfig::new("doomed");
    assert!(
        RedisDriver.delete(&address, &config).await.expect("delete"),
        "delete of a queue with items said there was nothing to remove"
    );
    let mut connection = raw(&server).await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("{forloop:doomed}*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(left.is_empty(), "keys left after delete: {left:?}");
    assert_eq!(counts(&kept).await, (Some(1), Some(0), Some(1)));
    let jobs = kept.jobs_ledger().jobs().await.unwrap();
    assert_eq!((jobs.len(), jobs[0].done), (1, 1), "{jobs:?}");
    assert!(
        !RedisDriver.delete(&address, &config).await.expect("delete"),
        "a second delete found something to remove"
    );
}

/// Issue 12 (ledger cost): the done receipts of one record call are one
/// hash field, not one per item, and read back whole, one per seq, past
/// many `HSCAN` pages; a dead receipt stays under its seq until its item
/// is done.
#[tokio::test]
async fn a_record_calls_done_receipts_are_one_field_and_read_back_whole() {
    let server = RedisServer::local(false);
    let q = queue(&server, "batched", 5).await;
    let ledger = q.jobs_ledger();
    let total = 3000;
    ledger
        .begin(&Manifest::new("j", total, "d").keeping_receipts())
        .await
        .unwrap();
    ledger
        .record(&[receipt(7, Settled::Dead), receipt(8, Settled::Dead)])
        .await
        .unwrap();
    let done: Vec<Receipt> = (0..total)
        .filter(|seq| *seq != 8)
        .map(|seq| receipt(seq, Settled::Done))
        .collect();
    ledger.record(&done).await.unwrap();
    // Again: a redelivered batch writes no second field.
    ledger.record(&done[..500]).await.unwrap();
    let mut connection = raw(&server).await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("{forloop:batched}:job:j:receipts")
        .query_async(&mut connection)
        .await
        .unwrap();
    // 3000 receipts of ~200 bytes in calls of at most 1000: 3 fields, and
    // item 8's dead receipt; item 7's went when it was done.
    assert_eq!(fields.len(), 4, "{fields:?}");
    assert!(fields.contains(&"8".to_string()), "{fields:?}");
    let status = &ledger.jobs().await.unwrap()[0];
    assert_eq!((status.done, status.dead), (total - 1, 1), "{status:?}");
    let receipts = ledger.receipts("j").await.unwrap();
    assert_eq!(receipts.len(), total as usize);
    for (seq, got) in receipts.iter().enumerate() {
        let state = if seq == 8 {
            Settled::Dead
        } else {
            Settled::Done
        };
        assert_eq!(*got, receipt(seq as u64, state), "receipt {seq}");
    }
}

/// The bitmaps take a call's seqs a window at a time, or bit by bit when
/// they are far apart; either way a seq twice in one call, or past the
/// total, counts once or not at all, and its receipt is kept once.
#[tokio::test]
async fn far_apart_and_repeated_seqs_in_one_call_count_once() {
    let server = RedisServer::local(false);
    let q = queue(&server, "spread", 5).await;
    let ledger = q.jobs_ledger();
    ledger
        .begin(&Manifest::new("j", 200_000, "d").keeping_receipts())
        .await
        .unwrap();
    for seqs in [[5, 6, 5, 200_000], [5, 150_000, 150_000, 7]] {
        let batch: Vec<Receipt> = seqs.iter().map(|s| receipt(*s, Settled::Done)).collect();
        ledger.record(&batch).await.unwrap();
    }
    let status = &ledger.jobs().await.unwrap()[0];
    assert_eq!((status.done, status.submitted), (4, 4), "{status:?}");
    let seqs: Vec<u64> = ledger
        .receipts("j")
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [5, 6, 7, 150_000]);
}

/// Items stored by earlier releases stay readable: one from before
/// envelopes (its attributes in the `attrs` hash) and one from before the
/// job's envelope (its job as two attributes in an attributes envelope)
/// are delivered with their attributes and job, as one stored now is, and
/// the server buries each with a dead receipt of the right seq. A new item
/// keeps its attributes in its own value and leaves `attrs` alone.
#[tokio::test]
async fn items_stored_by_earlier_releases_keep_their_attributes_and_job() {
    let server = RedisServer::local(false);
    let config = QueueConfig::new("legacy")
        .with_lease(Duration::from_millis(300))
        .with_max_attempts(1);
    let q = RedisQueue::connect(server.url(), config).await.unwrap();
    q.jobs_ledger()
        .begin(&Manifest::new("j", 7, "d").keeping_receipts())
        .await
        .unwrap();
    let mut c = raw(&server).await;
    let attrs = "11:forloop-job1:j11:forloop-seq1:41:k1:v";
    // The attributes envelope of the release before, its job as attributes.
    let mid_attrs = attrs.replace("1:4", "1:6");
    let mut enveloped = b"\xff\x00FLA1".to_vec();
    enveloped.extend_from_slice(format!("{}:{mid_attrs}mid item", mid_attrs.len()).as_bytes());
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("{forloop:legacy}:payload")
        .arg("900")
        .arg("old item")
        .arg("901")
        .arg(&enveloped)
        .ignore()
        .cmd("HSET")
        .arg("{forloop:legacy}:attrs")
        .arg("900")
        .arg(attrs)
        .ignore()
        .cmd("RPUSH")
        .arg("{forloop:legacy}:ready")
        .arg("900:0")
        .arg("901:0")
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    q.publish(vec![
        Item::new("new item")
            .with_attribute("k", "v")
            .with_job(JobItem::new("j", 5)),
    ])
    .await
    .unwrap();
    let got = q.pull(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 3);
    for (delivery, payload, seq) in [
        (&got[0], "old item", 4),
        (&got[1], "mid item", 6),
        (&got[2], "new item", 5),
    ] {
        assert_eq!(&delivery.item.payload[..], payload.as_bytes());
        assert_eq!(
            delivery.item.attributes.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(delivery.item.attributes.len(), 1, "{delivery:?}");
        assert_eq!(delivery.item.job, Some(JobItem::new("j", seq)));
    }
    let stored: u64 = redis::cmd("HLEN")
        .arg("{forloop:legacy}:attrs")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, 1, "a new item wrote to attrs");
    // Their holder dies; the next pull reaps and buries all three.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        q.pull(1, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    let receipts = q.jobs_ledger().receipts("j").await.unwrap();
    let dead: Vec<(u64, Settled, &[u8])> = receipts
        .iter()
        .map(|r| (r.seq, r.state, &r.item[..]))
        .collect();
    assert_eq!(
        dead,
        [
            (4, Settled::Dead, &b"old item"[..]),
            (5, Settled::Dead, b"new item"),
            (6, Settled::Dead, b"mid item")
        ]
    );
}

fn borrowed(receipts: &[Receipt]) -> Vec<ReceiptRef<'_>> {
    receipts.iter().map(Receipt::borrowed).collect()
}

fn receipt(seq: u64, state: Settled) -> Receipt {
    Receipt {
        job: "j".into(),
        seq,
        state,
        attempt: 1,
        exit_code: Some(0),
        seconds: 0.25,
        worker: "w/0".into(),
        item: format!("item {seq}").into(),
        reason: None,
        stderr_tail: None,
        at: 1_700_000_000_000 + seq,
        life: 0,
        value: None,
        value_url: None,
        copy: false,
    }
}

fn job_message(payload: &str, seq: u64) -> Item {
    Item::new(payload.to_string()).with_job(JobItem::new("j", seq))
}

/// Issue 12: an item the backend buries by itself gets a dead receipt that
/// reads back whole (its item cut at 1 KB on a character boundary); an
/// item the worker dead-letters keeps the worker's fuller receipt.
#[tokio::test]
async fn burials_write_readable_receipts_and_the_workers_receipt_stays() {
    let server = RedisServer::local(false);
    let config = QueueConfig::new("burials")
        .with_lease(Duration::from_millis(200))
        .with_max_attempts(1);
    let queue = RedisQueue::connect(server.url(), config).await.unwrap();
    let ledger = queue.jobs_ledger();
    ledger
        .begin(&Manifest::new("j", 2, "d").keeping_receipts())
        .await
        .unwrap();
    // 1023 ASCII bytes then a 2-byte character: the cut falls inside it.
    let long = format!("{}é{}", "x".repeat(1023), "y".repeat(100));
    queue
        .publish(vec![job_message(&long, 0), job_message("kept", 1)])
        .await
        .unwrap();
    let held = queue.pull(2, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 2);
    // The worker's receipt for item 1, then its dead-letter.
    let mut worker = receipt(1, Settled::Dead);
    worker.reason = Some("exit code 3 on attempt 1 of 1".to_string());
    ledger.record(std::slice::from_ref(&worker)).await.unwrap();
    queue
        .dead_letter(std::slice::from_ref(&held[1].token), "exit code 3")
        .await
        .unwrap();
    // Item 0's holder dies; the next pull reaps and buries it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        queue
            .pull(1, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    let status = &ledger.jobs().await.unwrap()[0];
    assert_eq!((status.done, status.dead), (0, 2), "{status:?}");
    assert!(status.is_complete());
    let receipts = ledger.receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let lapsed = &receipts[0];
    assert_eq!(
        (lapsed.seq, lapsed.state, lapsed.attempt),
        (0, Settled::Dead, 1)
    );
    assert_eq!(lapsed.item, "x".repeat(1023), "cut on a character boundary");
    assert!(
        lapsed
            .reason
            .as_deref()
            .unwrap()
            .contains("lost once (its lease ended with no answer"),
        "{lapsed:?}"
    );
    assert_eq!(receipts[1], worker, "the worker's receipt was replaced");
    let seqs = ledger.seqs("j").await.unwrap().unwrap();
    assert_eq!(seqs.dead, SeqSet::first(2));
    assert!(seqs.unsent().is_empty());
}

/// Issue 12: a million-item job costs bitmaps, not ranges of work: a whole
/// `submitted` call and scattered receipts read back exactly.
#[tokio::test]
async fn a_large_job_reads_back_exactly() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "large-job", 5).await;
    let ledger = queue.jobs_ledger();
    ledger
        .begin(&Manifest::new("j", 1_000_000, "d").keeping_receipts())
        .await
        .unwrap();
    let mut submitted = SeqSet::first(999_990);
    submitted.remove(12_345);
    ledger.submitted("j", &submitted).await.unwrap();
    let receipts: Vec<Receipt> = (0..3000u64)
        .map(|i| {
            receipt(
                i * 333 + 7,
                if i % 10 == 0 {
                    Settled::Dead
                } else {
                    Settled::Done
                },
            )
        })
        .collect();
    ledger.record(&receipts).await.unwrap();
    let status = &ledger.jobs().await.unwrap()[0];
    assert_eq!(
        (status.submitted, status.done, status.dead),
        (999_989, 2700, 300),
        "{status:?}"
    );
    assert_eq!(
        status.settled_between,
        Some((1_700_000_000_007, 1_700_000_000_000 + 2999 * 333 + 7))
    );
    let seqs = ledger.seqs("j").await.unwrap().unwrap();
    let mut unsent: SeqSet = (999_990..1_000_000).collect();
    unsent.insert(12_345);
    assert_eq!(seqs.unsent(), unsent);
    assert_eq!(seqs.done.len() + seqs.dead.len(), 3000);
    let back = ledger.receipts("j").await.unwrap();
    assert_eq!(back.len(), 3000);
    assert_eq!(
        back, receipts,
        "receipts changed on the way or came out of order"
    );
}

/// Issue 12: within one `record` call (done receipts are written at its
/// end) the reference rules hold: each item counts once, done beats dead
/// both ways round, and of two done receipts the first stays.
#[tokio::test]
async fn one_record_call_keeps_the_reference_rules() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "one-call", 5).await;
    let ledger = queue.jobs_ledger();
    let reference = forloop_core::memory::MemoryLedger::new();
    let mut second_done = receipt(7, Settled::Done);
    second_done.worker = "another".into();
    let batch = [
        receipt(5, Settled::Done),
        receipt(5, Settled::Dead),
        receipt(6, Settled::Dead),
        receipt(6, Settled::Done),
        receipt(7, Settled::Done),
        second_done,
        receipt(8, Settled::Dead),
        receipt(8, Settled::Dead),
    ];
    let manifest = Manifest::new("j", 9, "d").keeping_receipts();
    for l in [&*ledger as &dyn Ledger, &reference] {
        l.begin(&manifest).await.unwrap();
        l.record(&batch).await.unwrap();
    }
    assert_eq!(
        ledger.jobs().await.unwrap(),
        reference.jobs().await.unwrap()
    );
    assert_eq!(
        ledger.receipts("j").await.unwrap(),
        reference.receipts("j").await.unwrap()
    );
    assert_eq!(
        ledger.seqs("j").await.unwrap(),
        reference.seqs("j").await.unwrap()
    );
}

/// Issue 12 (ledger cost): a worker's ack batch of one job is one script
/// call that records its receipts and settles its leases, reporting
/// exactly the leases it did not hold; a batch of two jobs still records
/// every receipt before its ack.
#[tokio::test]
async fn an_ack_batch_of_one_job_is_one_call_and_reports_its_lost_leases() {
    let server = RedisServer::local(false);
    let queue = queue(&server, "ack-recorded", 5).await;
    let ledger = queue.jobs_ledger();
    for job in ["j", "k"] {
        ledger
            .begin(&Manifest::new(job, 4, "d").keeping_receipts())
            .await
            .unwrap();
    }
    let messages = (0..4).map(|seq| job_message(&format!("item {seq}"), seq));
    queue.publish(messages.collect()).await.unwrap();
    let tokens = lease_all_ready(&queue, 4).await;
    queue.ack(&tokens[3..]).await.unwrap();
    let foreign = LeaseToken::new("not-a-redis-lease");
    let batch = [
        tokens[0].clone(),
        tokens[3].clone(),
        foreign.clone(),
        tokens[1].clone(),
    ];
    let receipts: Vec<Receipt> = (0..2).map(|seq| receipt(seq, Settled::Done)).collect();

    reset_stats(&server).await;
    let report = ledger
        .record_then_ack(&queue, &batch, &borrowed(&receipts))
        .await
        .unwrap();
    assert_eq!(
        script_calls(&server).await,
        1,
        "receipts and ack in one call"
    );
    let mut lost = report.lost.clone();
    lost.sort_by_key(|t| format!("{t:?}"));
    let mut want = vec![tokens[3].clone(), foreign];
    want.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(lost, want, "the wrong leases were reported lost");
    let status = &ledger.jobs().await.unwrap();
    let j = status.iter().find(|s| s.manifest.job == "j").unwrap();
    assert_eq!((j.done, j.dead), (2, 0), "{j:?}");
    assert_eq!(counts(&queue).await, (Some(0), Some(1), Some(0)));

    // Two jobs in one batch: recorded (one call each), then acked.
    let mut other = receipt(2, Settled::Done);
    other.job = "k".into();
    let receipts = [receipt(2, Settled::Done), other];
    let report = ledger
        .record_then_ack(&queue, &tokens[2..3], &borrowed(&receipts))
        .await
        .unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    let status = ledger.jobs().await.unwrap();
    let done: Vec<u64> = status.iter().map(|s| s.done).collect();
    assert_eq!(done, [3, 1], "{status:?}");
    assert_eq!(counts(&queue).await, (Some(0), Some(0), Some(0)));
}

/// Issue 24: two filtered requeues at once over a dead list of several
/// pages never move an item twice (each picked member is moved by the one
/// script that still finds it); a concurrent pass may skip some (the other
/// shifts its pages), which a pass run alone then moves. The letters left
/// stay in their order.
#[tokio::test]
async fn two_filtered_requeues_at_once_move_each_item_once() {
    let server = RedisServer::local(false);
    let first = queue(&server, "two-requeues", 5).await;
    let second = queue(&server, "two-requeues", 5).await;
    let tokens = lease_all(&first, 1500).await;
    assert!(
        first
            .dead_letter(&tokens, "bury")
            .await
            .unwrap()
            .lost
            .is_empty()
    );
    let even = |letter: &forloop_core::DeadLetter| {
        let text = String::from_utf8_lossy(&letter.item.payload).into_owned();
        let n: u64 = text.trim_start_matches("item-").parse().unwrap();
        n.is_multiple_of(2)
    };
    let (a, b) = tokio::join!(
        first.requeue_dead_where(&even, None),
        second.requeue_dead_where(&even, None)
    );
    let together = a.unwrap().moved + b.unwrap().moved;
    assert!(together <= 750, "an item moved twice: {together} of 750");
    let alone = first.requeue_dead_where(&even, None).await.unwrap();
    assert_eq!(together + alone.moved, 750, "{together} + {alone:?}");
    assert_eq!(alone.left, 750);
    assert_eq!(counts(&first).await, (Some(750), Some(0), Some(750)));
    let left: Vec<String> = first
        .list_dead(2000)
        .await
        .unwrap()
        .iter()
        .map(|l| String::from_utf8_lossy(&l.item.payload).into_owned())
        .collect();
    let odd: Vec<String> = (0..1500)
        .filter(|n| n % 2 == 1)
        .map(|n| format!("item-{n}"))
        .collect();
    assert_eq!(left, odd, "the letters left, in their order");
    let mut back = std::collections::BTreeSet::new();
    for delivery in first.pull(1000, Duration::from_secs(1)).await.unwrap() {
        assert!(
            back.insert(delivery.item.payload.clone()),
            "delivered twice"
        );
    }
    assert_eq!(back.len(), 750);
}

/// What a filtered requeue costs on Redis (docs/BENCHMARKS.md, "Rerun by
/// cause"): `cargo test -p forloop-queue-redis --test faults --
/// --ignored --nocapture filtered_requeue_cost`. Measures, asserts only
/// what moved.
#[tokio::test]
#[ignore = "a measurement: run it by name"]
async fn filtered_requeue_cost() {
    let server = RedisServer::local(false);
    for (n, label, pick) in [
        (20_000usize, "every other item", 0u8),
        (
            20_000,
            "the last half (each LREM walks past the first half)",
            1,
        ),
        (20_000, "none", 2),
    ] {
        let queue = queue(&server, &format!("cost-{pick}"), 5).await;
        let tokens = lease_all(&queue, n).await;
        for chunk in tokens.chunks(1000) {
            assert!(
                queue
                    .dead_letter(chunk, "bury")
                    .await
                    .unwrap()
                    .lost
                    .is_empty()
            );
        }
        let select = move |letter: &forloop_core::DeadLetter| {
            let text = String::from_utf8_lossy(&letter.item.payload).into_owned();
            let i: usize = text.trim_start_matches("item-").parse().unwrap();
            match pick {
                0 => i.is_multiple_of(2),
                1 => i >= n / 2,
                _ => false,
            }
        };
        let start = std::time::Instant::now();
        let report = queue.requeue_dead_where(&select, None).await.unwrap();
        let took = start.elapsed();
        let want = if pick == 2 { 0 } else { n as u64 / 2 };
        assert_eq!(report.moved, want);
        println!(
            "{n} dead, picking {label}: moved {} in {:.0} ms ({:.1} µs per dead item looked at)",
            report.moved,
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1e6 / n as f64
        );
    }
}
