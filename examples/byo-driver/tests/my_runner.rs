//! The user's binary gets the whole CLI and their driver, and their queue
//! keeps the delivery contract and the ledger's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::conformance::Harness;
use forloop_core::{Backend, MemoryQueue};
use forloop_example_byo_driver::CountingQueue;

#[test]
fn my_runner_runs_a_job_on_its_own_driver() {
    let dir = std::env::temp_dir().join(format!("forloop-byo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_my-runner"))
        .args(["--queue", "counting", "run"])
        .arg(&input)
        .args(["--", "true"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("counting: 3 items published"), "{stderr}");
    assert!(stderr.contains("3 items: 3 done"), "{stderr}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_my-runner"))
        .args(["--queue", "nosuch", "run", "-", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("counting, memory"),
        "the error lists the user's driver: {stderr}"
    );
}

/// A user's job on their own driver: `--job` names it, the ledger counts
/// it, and the summary is the job's.
#[test]
fn my_runner_runs_a_named_job_on_its_own_driver() {
    let dir = std::env::temp_dir().join(format!("forloop-byo-job-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_my-runner"))
        .args(["--queue", "counting", "run", "--job", "nightly"])
        .arg(&input)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("3 items: 3 done"), "{stderr}");
}

/// Queues by name, each a counting decorator over one memory queue, so
/// that opening a name twice reaches one queue (as two processes reach one
/// server) and every call goes through the decorator.
fn harness() -> Harness {
    let queues: Arc<Mutex<HashMap<String, MemoryQueue>>> = Arc::default();
    Harness::new(move |config| {
        let queue = queues
            .lock()
            .unwrap()
            .entry(config.name.clone())
            .or_insert_with(|| MemoryQueue::new(config).with_done_receipts())
            .clone();
        let ledger = queue.ledger();
        async move { Backend::new(Arc::new(CountingQueue::new(queue))).with_ledger(ledger) }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

forloop_core::conformance_tests!(harness, #[tokio::test(start_paused = true)]);
forloop_core::ledger_conformance_tests!(harness, #[tokio::test(start_paused = true)]);
