//! The user's binary gets the whole CLI and their driver, and their queue
//! keeps the delivery contract.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::conformance::Harness;
use forloop_core::{MemoryQueue, WorkQueue};
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

fn harness() -> Harness {
    Harness::new(|config| async move {
        Arc::new(CountingQueue::new(MemoryQueue::new(config))) as Arc<dyn WorkQueue>
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

forloop_core::conformance_tests!(harness, #[tokio::test(start_paused = true)]);
