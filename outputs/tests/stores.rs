//! The output store against real stores: the local filesystem and moto's
//! S3 server (started by the test kit). No GCS emulator here speaks the
//! XML API object_store's GCS client uses (see the crate's notes). Items run
//! through the real worker loop on the memory queue.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use forloop_core::handler::from_fn;
use forloop_core::job::{Ledger, Manifest, SeqSet};
use forloop_core::queue::JobItem;
use forloop_core::worker::Backoff;
use forloop_core::{
    Handler, Item, MemoryQueue, QueueConfig, Shutdown, Task, TaskOutcome, Worker, WorkerConfig,
    WorkerExit, publish_all,
};
use forloop_outputs::{ItemRecord, OutputStore, StoreSettings, WithOutputs};
use forloop_testkit::proxy::{Fault, FaultProxy};
use forloop_testkit::scratch;
use forloop_testkit::stores::S3Server;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unique(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn s3(server: &S3Server, url: &str, settings: StoreSettings) -> OutputStore {
    let env = server.env();
    OutputStore::open_with_env(url, settings, &|key| {
        env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// What the test function writes for an item: `out.txt` (the item) and
/// `sub/deeper/n.bin` (its length).
fn write_outputs(dir: &Path, item: &[u8]) {
    std::fs::write(dir.join("out.txt"), item).unwrap();
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("sub/deeper/n.bin"), item.len().to_string()).unwrap();
}

fn writer() -> Arc<dyn Handler> {
    Arc::new(from_fn(|task: Task| async move {
        let dir = task.output_dir.expect("an output dir with --outputs");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "fresh and empty"
        );
        write_outputs(&dir, &task.item.payload);
    }))
}

async fn run_items(
    handler: Arc<dyn Handler>,
    items: Vec<Item>,
    config: WorkerConfig,
) -> WorkerExit {
    let queue = Arc::new(MemoryQueue::new(QueueConfig::new(unique("q"))));
    // The job the items belong to, recorded as `submit` records it.
    let ledger = queue.ledger();
    let job = items[0]
        .job
        .as_ref()
        .map(|j| j.job.to_string())
        .expect("a job");
    let seqs: SeqSet = items
        .iter()
        .filter_map(|i| Some(i.job.as_ref()?.seq))
        .collect();
    let manifest = Manifest::new(&job, items.len() as u64, format!("digest-{job}"));
    ledger.begin(&manifest).await.unwrap();
    publish_all(&*queue, items, |_| {}).await.unwrap();
    ledger.submitted(&job, &seqs).await.unwrap();
    Worker::new(queue, handler)
        .with_config(config)
        .run(Shutdown::new())
        .await
        .unwrap()
}

fn job_items(job: &str, payloads: &[Vec<u8>]) -> Vec<Item> {
    payloads
        .iter()
        .enumerate()
        .map(|(seq, p)| Item::new(p.clone()).with_job(JobItem::new(job, seq as u64)))
        .collect()
}

fn check_records(store_root: Option<&Path>, records: &[ItemRecord], payloads: &[Vec<u8>]) {
    assert_eq!(records.len(), payloads.len(), "{records:#?}");
    for (record, payload) in records.iter().zip(payloads) {
        let paths: Vec<&str> = record.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["out.txt", "sub/deeper/n.bin"]);
        assert_eq!(record.files[0].size, payload.len() as u64);
        assert_eq!(record.files[0].sha256, sha(payload));
        if let Some(root) = store_root {
            let stored = std::fs::read(root.join(&record.files[0].key)).unwrap();
            assert_eq!(&stored, payload);
        }
    }
}

/// `dir` is empty, or becomes so soon: an attempt's directory is removed
/// off the async threads once the attempt ends.
async fn assert_emptied(dir: &Path) {
    for _ in 0..250 {
        if std::fs::read_dir(dir).unwrap().count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    panic!("attempt directories left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_items_stay_inside_their_prefix_and_stay_readable() {
    let dir = scratch("outputs-hostile");
    let root = dir.join("store");
    let store =
        Arc::new(OutputStore::open(root.to_str().unwrap(), StoreSettings::default()).unwrap());
    store.probe().await.unwrap();
    let payloads: Vec<Vec<u8>> = vec![
        b"../../etc/passwd".to_vec(),
        b"/".to_vec(),
        b"?".to_vec(),
        "ü ".repeat(700).into_bytes(),
        b"..".to_vec(),
    ];
    let scratch_dir = dir.join("attempts");
    let handler = Arc::new(WithOutputs::new(
        writer(),
        Arc::clone(&store),
        scratch_dir.clone(),
    ));
    let exit = run_items(handler, job_items("j", &payloads), WorkerConfig::default()).await;
    assert_eq!(exit, WorkerExit::Drained);

    let records = store.records("j").await.unwrap();
    check_records(Some(&root), &records, &payloads);
    // Nothing escaped: every object is a file under store/j, and nothing
    // was written beside the store.
    let mut all = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(folder).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                all.push(entry.path());
            }
        }
    }
    assert!(
        all.iter().all(|p| p.starts_with(root.join("j"))),
        "{all:#?}"
    );
    assert_eq!(
        all.len(),
        payloads.len() * 3,
        "2 files and a record per item: {all:#?}"
    );
    let top: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, BTreeSet::from(["attempts".into(), "store".into()]));
    // Every attempt's directory is gone once its item is done.
    assert_emptied(&scratch_dir).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_attempt_stores_nothing_and_leaves_no_directory() {
    let dir = scratch("outputs-failed");
    let store = Arc::new(
        OutputStore::open(
            dir.join("store").to_str().unwrap(),
            StoreSettings::default(),
        )
        .unwrap(),
    );
    let inner: Arc<dyn Handler> = Arc::new(from_fn(|task: Task| async move {
        write_outputs(task.output_dir.as_deref().unwrap(), b"partial");
        TaskOutcome::failed("f failed after writing")
    }));
    let handler = WithOutputs::new(inner, Arc::clone(&store), dir.join("attempts"));
    let item = Item::new("x").with_job(JobItem::new("j", 0));
    let outcome = handler
        .handle(Task {
            id: Arc::from("1"),
            item,
            attempt: 1,
            output_dir: None,
        })
        .await;
    assert_eq!(outcome.reason.as_deref(), Some("f failed after writing"));
    assert!(store.records("j").await.unwrap().is_empty());
    assert!(!dir.join("store/j").exists());
    assert_emptied(&dir.join("attempts")).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_redelivered_item_overwrites_its_own_objects_and_drops_the_rest() {
    let dir = scratch("outputs-redo");
    let root = dir.join("store");
    let store = OutputStore::open(root.to_str().unwrap(), StoreSettings::default()).unwrap();
    let item = Item::new("video-7").with_job(JobItem::new("j", 7));
    let first = dir.join("first");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::write(first.join("a.mp4"), "attempt 1").unwrap();
    std::fs::write(first.join("b.part"), "left by attempt 1").unwrap();
    store.publish(&item, 1, &first).await.unwrap();
    let second = dir.join("second");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("a.mp4"), "attempt 2").unwrap();
    let record = store.publish(&item, 2, &second).await.unwrap();

    let records = store.records("j").await.unwrap();
    assert_eq!(records, std::slice::from_ref(&record));
    assert_eq!(record.attempt, 2);
    assert_eq!(record.files.len(), 1);
    let item_dir = root.join("j").join(&record.key);
    let left: Vec<String> = std::fs::read_dir(&item_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["a.mp4"]);
    assert_eq!(
        std::fs::read_to_string(item_dir.join("a.mp4")).unwrap(),
        "attempt 2"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A failed attempt's kept output (`--capture`) goes under the item's keys
/// with a record saying it failed; the next attempt replaces it; once an
/// attempt succeeded, a later failure (an item redone after its success
/// was recorded) leaves the successful set whole.
#[tokio::test]
async fn a_failed_attempts_output_is_kept_until_replaced_and_never_replaces_a_success() {
    use forloop_core::handler::{Captured, Stream};
    use forloop_outputs::Extras;
    let dir = scratch("outputs-failed-capture");
    let root = dir.join("store");
    let store = OutputStore::open(root.to_str().unwrap(), StoreSettings::default()).unwrap();
    let item = Item::new("video-3").with_job(JobItem::new("j", 3));
    let stdout = |text: &str| {
        let path = dir.join("a.stdout");
        std::fs::write(&path, text).unwrap();
        vec![Captured {
            stream: Stream::Stdout,
            path,
            kept: text.len() as u64,
            written: text.len() as u64,
        }]
    };
    let read =
        |record: &ItemRecord| std::fs::read_to_string(root.join(&record.captured[0].key)).unwrap();
    let first = store
        .publish_failed(&item, 1, &stdout("attempt 1 failed"), "exit code 2")
        .await
        .unwrap()
        .expect("written");
    assert_eq!(first.failed.as_deref(), Some("exit code 2"));
    assert_eq!(read(&first), "attempt 1 failed");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a.mp4"), "video").unwrap();
    let success = store
        .publish_with(
            &item,
            2,
            &files,
            Extras {
                captured: &stdout("attempt 2 worked"),
                value: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        success.captured[0].key, first.captured[0].key,
        "the same keys"
    );
    assert_eq!(read(&success), "attempt 2 worked");
    let late = store
        .publish_failed(&item, 3, &stdout("attempt 3 failed"), "exit code 2")
        .await
        .unwrap();
    assert_eq!(late, None, "a success's record stays");
    assert_eq!(
        store.records("j").await.unwrap(),
        std::slice::from_ref(&success)
    );
    assert_eq!(read(&success), "attempt 2 worked");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_large_files_go_up_in_parts_and_come_back_the_same() {
    let server = S3Server::shared();
    let bucket = unique("big").to_lowercase();
    server.bucket(&bucket);
    let settings = StoreSettings {
        part_size: 5 << 20,
        ..StoreSettings::default()
    };
    let store = s3(server, &format!("s3://{bucket}/runs/today"), settings);
    store.probe().await.unwrap();
    let dir = scratch("outputs-s3-big");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // 12 MiB and a bit: three parts, the last a short one.
    let big: Vec<u8> = (0..(12 << 20) + 12345u32)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(out.join("video.mp4"), &big).unwrap();
    std::fs::write(out.join("small.txt"), "small").unwrap();
    let item = Item::new("https://x/watch?v=a/b").with_job(JobItem::new("job1", 3));
    let record = store.publish(&item, 1, &out).await.unwrap();
    assert_eq!(record.files[1].size, big.len() as u64);
    assert_eq!(record.files[1].sha256, sha(&big));
    assert!(
        record.files[1]
            .key
            .starts_with("runs/today/job1/000000003-"),
        "{record:?}"
    );

    let fetched = dir.join("fetched");
    let (files, bytes) = store.download("job1", &fetched).await.unwrap();
    assert_eq!((files, bytes), (2, big.len() as u64 + 5));
    let back = std::fs::read(fetched.join(&record.key).join("video.mp4")).unwrap();
    assert!(back == big, "the downloaded file differs");
    assert_eq!(
        store.object_url(&record.files[0].key),
        format!("s3://{bucket}/{}", record.files[0].key)
    );
    let (manifest, items) = store.write_manifest("job1").await.unwrap();
    assert_eq!(items, 1);
    assert_eq!(
        manifest,
        format!("s3://{bucket}/runs/today/job1/_forloop/manifest.json")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn s3_a_missing_bucket_or_bad_url_is_one_clear_error_naming_the_url() {
    let server = S3Server::shared();
    let store = s3(
        server,
        "s3://no-such-bucket-here/p",
        StoreSettings::default(),
    );
    let error = store.probe().await.unwrap_err().to_string();
    assert!(error.contains("`s3://no-such-bucket-here/p`"), "{error}");
    assert!(error.contains("does not exist"), "{error}");
    assert!(
        !error.contains("test"),
        "no credential in the error: {error}"
    );

    for (url, says) in [
        ("ftp://host/x", "not a store this runner knows"),
        ("s3:///prefix", "names no bucket"),
        ("s3://b/p?secret=hunter2", "never from the URL"),
    ] {
        let error = OutputStore::open(url, StoreSettings::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains(says), "{url}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
    let debug = format!("{store:?}");
    assert!(
        !debug.contains("test"),
        "Debug shows no credentials: {debug}"
    );
}

/// The store black-holed while the first attempt uploads: the upload's
/// deadline fails the attempt, the item is retried, and its second
/// attempt's outputs are the ones stored; the item is acked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_hangs_fails_the_attempt_and_the_item_is_redone() {
    let server = S3Server::shared();
    let bucket = unique("down").to_lowercase();
    server.bucket(&bucket);
    let proxy = Arc::new(FaultProxy::start(&format!("127.0.0.1:{}", server.port())));
    let env = [
        ("AWS_ENDPOINT_URL_S3", format!("http://{}", proxy.address())),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
    ];
    let settings = StoreSettings {
        call_timeout: Duration::from_millis(1500),
        ..StoreSettings::default()
    };
    let store = Arc::new(
        OutputStore::open_with_env(&format!("s3://{bucket}/p"), settings, &|key| {
            env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
        })
        .unwrap(),
    );
    store.probe().await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let inner: Arc<dyn Handler> = {
        let (proxy, attempts) = (Arc::clone(&proxy), Arc::clone(&attempts));
        Arc::new(from_fn(move |task: Task| {
            let (proxy, attempts) = (Arc::clone(&proxy), Arc::clone(&attempts));
            async move {
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                // The store goes down as the first attempt's upload starts,
                // and is back for the second.
                proxy.set(if n == 1 {
                    Fault::BlackHole
                } else {
                    Fault::Pass
                });
                std::fs::write(
                    task.output_dir.unwrap().join("v.mp4"),
                    format!("attempt {n}"),
                )
                .unwrap();
            }
        }))
    };
    let handler = Arc::new(WithOutputs::new(
        inner,
        Arc::clone(&store),
        scratch("outputs-down"),
    ));
    let config = WorkerConfig {
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            ..Backoff::default()
        },
        ..WorkerConfig::default()
    };
    let exit = run_items(handler, job_items("d", &[b"v1".to_vec()]), config).await;
    assert_eq!(exit, WorkerExit::Drained);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let records = store.records("d").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].attempt, 2);
    assert_eq!(records[0].files[0].sha256, sha(b"attempt 2"));
}

/// A process killed between its probe's write and its delete (a worker
/// SIGKILLed as it starts, in a storm) leaves `_forloop/probe-*`: the
/// job's end removes it, so only outputs, records and the manifest stay;
/// a probe of a live process, whose delete finds its object swept, still
/// passes.
#[tokio::test]
async fn a_probe_left_by_a_killed_process_is_gone_at_the_jobs_end() {
    let dir = scratch("outputs-probes");
    let root = dir.join("store");
    let store = OutputStore::open(root.to_str().unwrap(), StoreSettings::default()).unwrap();
    store.probe().await.unwrap();
    std::fs::create_dir_all(root.join("_forloop")).unwrap();
    let left = root.join("_forloop/probe-4242-1");
    std::fs::write(&left, "forloop probe").unwrap();
    // A young one survives a worker's probe (it may be a live process's)...
    store.probe().await.unwrap();
    assert!(left.exists(), "a probe a minute old is not yet stale");
    // ...and goes with the job's end.
    store.write_manifest("j").await.unwrap();
    assert!(!left.exists(), "the killed process's probe is still there");
    // (An emptied folder goes too, on a local store.)
    let leftover: Vec<_> = std::fs::read_dir(root.join("_forloop"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker that lost an item's lease (frozen, or cut off from the
/// network) can land a put after the item's last attempt wrote its record:
/// the object then holds other bytes than the record names. A download
/// checks every object against its record's SHA-256: the good ones are
/// kept, the bad one is not handed on, and the error names it.
#[tokio::test]
async fn a_download_refuses_an_object_that_is_not_what_its_record_names() {
    let dir = scratch("outputs-mismatch");
    let root = dir.join("store");
    let store = OutputStore::open(root.to_str().unwrap(), StoreSettings::default()).unwrap();
    for (seq, name) in [(0, "clip-a"), (1, "clip-b")] {
        let item = Item::new(name).with_job(JobItem::new("j", seq));
        let attempt = dir.join(name);
        std::fs::create_dir_all(&attempt).unwrap();
        std::fs::write(attempt.join("video.mp4"), format!("video of {name}")).unwrap();
        store.publish(&item, 1, &attempt).await.unwrap();
    }
    let records = store.records("j").await.unwrap();
    let late = root.join(&records[1].files[0].key);
    std::fs::write(&late, "a zombie's late put").unwrap();

    let fetched = dir.join("fetched");
    let error = store.download("j", &fetched).await.unwrap_err().to_string();
    assert!(
        error.contains("not the bytes their item's record names")
            && error.contains(&records[1].files[0].key),
        "{error}"
    );
    let good = fetched.join(&records[0].key).join("video.mp4");
    assert_eq!(std::fs::read_to_string(good).unwrap(), "video of clip-a");
    assert!(
        !fetched.join(&records[1].key).join("video.mp4").exists(),
        "the mismatched object was handed on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
