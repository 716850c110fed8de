//! Rust functions as handlers (`for_str`, `for_bytes`, `for_json`) and the
//! library's own loop: publish_all checks the whole input first, and a
//! worker stops on a Shutdown the program triggers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use forloop_core::handler::{OutcomeKind, for_bytes, for_json, for_str};
use forloop_core::{
    Handler, Item, MemoryQueue, QueueConfig, Shutdown, Task, TaskOutcome, WorkQueue, Worker,
    WorkerConfig, WorkerExit, publish_all,
};

fn task(payload: &[u8]) -> Task {
    Task {
        id: Arc::from("1"),
        item: Item::new(Bytes::copy_from_slice(payload)),
        attempt: 1,
        output_dir: None,
    }
}

#[tokio::test]
async fn for_str_runs_the_function_and_dead_letters_what_is_not_text() {
    let handler = for_str(|item: &str| -> Result<(), String> {
        if item == "bad" {
            Err(format!("{item} failed"))
        } else {
            Ok(())
        }
    });
    assert_eq!(handler.handle(task(b"good")).await, TaskOutcome::success());
    assert_eq!(
        handler.handle(task(b"bad")).await,
        TaskOutcome::failed("bad failed")
    );
    let outcome = handler.handle(task(b"\xff\xfe")).await;
    assert_eq!(outcome.kind, OutcomeKind::Fatal);
    assert!(outcome.reason.unwrap().contains("not UTF-8"));
}

#[tokio::test]
async fn for_bytes_sees_the_raw_item() {
    let handler = for_bytes(|item: &[u8]| {
        if item == b"\xff" {
            TaskOutcome::fatal("binary")
        } else {
            TaskOutcome::success()
        }
    });
    assert_eq!(
        handler.handle(task(b"\xff")).await,
        TaskOutcome::fatal("binary")
    );
}

#[derive(serde::Deserialize)]
struct Video {
    id: String,
    height: u32,
}

#[tokio::test]
async fn for_json_deserializes_each_item_and_names_the_type_when_it_cannot() {
    let handler = for_json(|video: Video| {
        if video.height > 4320 {
            Err(format!("{} is too tall", video.id))
        } else {
            Ok(())
        }
    });
    assert_eq!(
        handler.handle(task(br#"{"id": "a", "height": 720}"#)).await,
        TaskOutcome::success()
    );
    assert_eq!(
        handler
            .handle(task(br#"{"id": "b", "height": 9000}"#))
            .await,
        TaskOutcome::failed("b is too tall")
    );
    let outcome = handler.handle(task(b"b 9000")).await;
    assert_eq!(outcome.kind, OutcomeKind::Fatal);
    let reason = outcome.reason.unwrap();
    assert!(
        reason.contains("not JSON for") && reason.contains("Video"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_panicking_function_fails_the_attempt_with_its_message() {
    let handler = for_str(|item: &str| -> Result<(), String> { panic!("cannot handle {item}") });
    let outcome = handler.handle(task(b"x")).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert!(outcome.reason.unwrap().contains("cannot handle x"));
}

#[tokio::test]
async fn publish_all_checks_every_item_before_sending_any() {
    let config = QueueConfig::new("publish");
    let queue = MemoryQueue::new(config);
    let limit = queue.capabilities().max_payload;
    let mut items: Vec<Item> = (0..10).map(|i| Item::new(i.to_string())).collect();
    items.push(Item::new(vec![b'x'; limit + 1]));
    let error = publish_all(&queue, items, |_| {}).await.unwrap_err();
    assert_eq!(error.published, 0);
    assert!(
        error.to_string().contains("item 10 of the batch"),
        "{error}"
    );
    assert_eq!(
        queue.backlog().await.unwrap().ready.value(),
        Some(0),
        "nothing was sent"
    );
}

#[tokio::test]
async fn publish_all_sends_in_the_largest_batches_in_order() {
    let queue = MemoryQueue::new(QueueConfig::new("publish"));
    let batch = queue.capabilities().max_batch;
    let total = batch * 2 + 3;
    let items = (0..total).map(|i| Item::new(i.to_string())).collect();
    let mut sizes = Vec::new();
    let ids = publish_all(&queue, items, |n| sizes.push(n)).await.unwrap();
    assert_eq!(ids.len(), total);
    assert_eq!(sizes, [batch, batch, 3]);
    let first = queue.pull(1, Duration::ZERO).await.unwrap();
    assert_eq!(&first[0].item.payload[..], b"0");
}

#[tokio::test(start_paused = true)]
async fn a_library_shutdown_stops_the_worker_and_gives_the_running_item_back() {
    let queue = Arc::new(MemoryQueue::new(QueueConfig::new("lib")));
    publish_all(&*queue, vec![Item::new("slow")], |_| {})
        .await
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&started);
    let handler = forloop_core::handler::from_fn(move |_task: Task| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { tokio::time::sleep(Duration::from_secs(3600)).await }
    });
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(queue.clone(), Arc::new(handler))
            .with_config(WorkerConfig {
                grace: Duration::from_secs(2),
                ..WorkerConfig::default()
            })
            .run(shutdown.clone()),
    );
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.stop();
    let exit = worker.await.unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 1 });
    assert_eq!(queue.backlog().await.unwrap().ready.value(), Some(1));
}
