//! What the Redis ledger costs the server, measured on a real
//! redis-server (issue 21 item 8): bytes per item, and the settings that
//! could lose it. Each test owns its server. The method and the numbers
//! are in docs/BENCHMARKS.md ("The job ledger's size per item").

use forloop_core::QueueConfig;
use forloop_core::job::{Ledger, Manifest, Receipt, SeqSet, Settled};
use forloop_queue_redis::RedisQueue;
use forloop_testkit::servers::RedisServer;

/// Items of the measured job: enough that the per-item cost dwarfs the
/// fixed cost of a job's keys, few enough to run in a second or two.
const ITEMS: u64 = 100_000;

/// One receipt a worker would write for item `seq` (an item path of 26
/// bytes, a worker name, no stderr: a typical success).
fn receipt(job: &str, seq: u64, state: Settled) -> Receipt {
    Receipt {
        job: job.into(),
        seq,
        state,
        attempt: 1,
        exit_code: Some(if state == Settled::Done { 0 } else { 3 }),
        seconds: 0.25,
        worker: "worker-host-12/3".into(),
        item: format!("videos/clip-{seq:08}.mp4").into(),
        reason: (state == Settled::Dead).then(|| "exit code 3 on attempt 1 of 1".to_string()),
        stderr_tail: None,
        at: 1_700_000_000_000 + seq,
        life: 0,
        value: None,
        value_url: None,
        copy: false,
    }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `MEMORY USAGE` (bytes, `SAMPLES 0`: every element) of every key of
/// `queue`, summed.
async fn bytes_of_queue(server: &RedisServer, queue: &str) -> u64 {
    let mut connection = raw(server).await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{forloop:{queue}}}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut total = 0;
    for key in keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut connection)
            .await
            .unwrap();
        total += bytes.unwrap_or(0);
    }
    total
}

/// A job of [`ITEMS`] items on a queue of its own, every item submitted
/// and settled as workers do (ack batches of 100 receipts), one in
/// `dead_every` dead (none with 0): the bytes its keys hold, per item.
async fn bytes_per_item(
    server: &RedisServer,
    name: &str,
    manifest: Manifest,
    dead_every: u64,
) -> f64 {
    let queue = RedisQueue::connect(server.url(), QueueConfig::new(name))
        .await
        .expect("connect to redis");
    let ledger = queue.jobs_ledger();
    let job = manifest.job.clone();
    ledger.begin(&manifest).await.expect("begin");
    ledger
        .submitted(&job, &SeqSet::first(ITEMS))
        .await
        .expect("submitted");
    let batches: Vec<Vec<Receipt>> = (0..ITEMS)
        .collect::<Vec<_>>()
        .chunks(100)
        .map(|seqs| {
            seqs.iter()
                .map(|&seq| {
                    let state = if dead_every > 0 && seq % dead_every == dead_every - 1 {
                        Settled::Dead
                    } else {
                        Settled::Done
                    };
                    receipt(&job, seq, state)
                })
                .collect()
        })
        .collect();
    for chunk in batches.chunks(50) {
        futures_util::future::join_all(chunk.iter().map(|batch| ledger.record(batch)))
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .expect("record");
    }
    let status = ledger.jobs().await.expect("jobs").remove(0);
    let dead = ITEMS.checked_div(dead_every).unwrap_or(0);
    assert_eq!((status.done, status.dead), (ITEMS - dead, dead));
    bytes_of_queue(server, name).await as f64 / ITEMS as f64
}

/// Issue 21 item 8: the Redis ledger kept a ~170-byte receipt for every
/// done item for ever (1.7 GB at 10 M items). Unless the job asks for
/// them, done items are bits in bitmaps and only the dead keep receipts:
/// under half a byte per item (the submitted and done bitmaps are 2/8 of
/// a byte), so 10 M items cost under 5 MB, plus at most 1 KiB per dead
/// item (a receipt without stderr; with a 4 KiB stderr tail, about 5).
/// Asked for, the done receipts are kept, and what they cost is bounded
/// too.
#[tokio::test]
async fn a_job_costs_redis_under_a_byte_per_item_unless_it_keeps_receipts() {
    let server = RedisServer::local(false);
    let job = || Manifest::new("j", ITEMS, "d");
    let counted = bytes_per_item(&server, "cost-counts", job(), 0).await;
    let with_dead = bytes_per_item(&server, "cost-dead", job(), 1000).await;
    let kept = bytes_per_item(&server, "cost-kept", job().keeping_receipts(), 1000).await;
    let per_dead = (with_dead - counted) * 1000.0;
    eprintln!(
        "redis ledger, {ITEMS} items: {counted:.3} bytes/item as counts (10 M items: {:.1} MB); \
         {per_dead:.0} bytes per dead item; {kept:.1} bytes/item keeping every receipt \
         (10 M items: {:.0} MB)",
        counted * 10.0,
        kept * 10.0
    );
    assert!(
        counted < 0.5,
        "a job that keeps no done receipts costs {counted:.3} bytes per item (10 M items: {:.0} MB)",
        counted * 10.0
    );
    assert!(per_dead < 1024.0, "a dead item costs {per_dead:.0} bytes");
    assert!(
        kept < 200.0,
        "a job that keeps every receipt costs {kept:.1} bytes per item"
    );
}

/// Done receipts come back from `receipts` only when the job asked for
/// them; dead ones always do (`dead list`, `results --state dead`).
#[tokio::test]
async fn done_receipts_are_kept_only_when_the_job_asks_and_dead_ones_always() {
    let server = RedisServer::local(false);
    for (name, manifest, done_kept) in [
        ("asks-not", Manifest::new("j", 4, "d"), 0),
        ("asks", Manifest::new("j", 4, "d").keeping_receipts(), 3),
    ] {
        let queue = RedisQueue::connect(server.url(), QueueConfig::new(name))
            .await
            .unwrap();
        let ledger = queue.jobs_ledger();
        ledger.begin(&manifest).await.unwrap();
        ledger
            .record(&[
                receipt("j", 0, Settled::Done),
                receipt("j", 1, Settled::Done),
                receipt("j", 2, Settled::Dead),
            ])
            .await
            .unwrap();
        // One done on its own path (a seq out of the batch's order).
        ledger
            .record(&[receipt("j", 3, Settled::Done)])
            .await
            .unwrap();
        let kept = ledger.receipts("j").await.unwrap();
        let states: Vec<(u64, Settled)> = kept.iter().map(|r| (r.seq, r.state)).collect();
        let dead = states.iter().filter(|(_, s)| *s == Settled::Dead).count();
        assert_eq!(dead, 1, "{name}: {states:?}");
        assert_eq!(
            states.len() - dead,
            done_kept,
            "{name}: done receipts kept: {states:?}"
        );
        let status = ledger.jobs().await.unwrap().remove(0);
        assert_eq!((status.done, status.dead), (3, 1), "{name}");
    }
}
