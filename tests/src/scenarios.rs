//! End-to-end scenarios every shared-queue backend must pass, written once
//! and run by each backend's test file with its own queue.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::read_records;

/// Send `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Wait for `child`, killing it and failing the test after `limit`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker stopped by SIGTERM gives its running items back at once.
///
/// Two items that take 4 s each are submitted; a first worker (2 slots, a
/// 60 s lease, 200 ms grace) takes both; a second one waits. The first gets
/// SIGTERM and must exit 143; the second must start both items again within
/// `redelivered_within` (far less than the lease, so they were handed back,
/// not left to expire), drain, and exit 0; each item ran twice.
///
/// `on` makes a `runner` command already pointed at the queue; `work_flags`
/// are extra `work` flags (e.g. an idle window); `record` is the `record`
/// helper's path.
pub fn sigterm_hands_items_back(
    on: impl Fn() -> Command,
    work_flags: &[&str],
    record: &str,
    dir: &Path,
    redelivered_within: Duration,
) {
    let input = dir.join("items.txt");
    std::fs::write(&input, "long-1\nlong-2\n").unwrap();
    assert!(on().arg("submit").arg(&input).status().unwrap().success());
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    let worker = || {
        on().args([
            "work",
            "--concurrency",
            "2",
            "--lease",
            "60s",
            "--grace",
            "200ms",
        ])
        .args(work_flags)
        .arg("--")
        .args([record, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "4000")
        .env("RECORD_STARTED", &started)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    };
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    let mut first = worker();
    let until = Instant::now() + Duration::from_secs(30);
    while lines(&started) < 2 {
        assert!(
            Instant::now() < until,
            "the first worker did not start its tasks"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut second = worker();
    std::thread::sleep(Duration::from_millis(500));
    let termed = Instant::now();
    signal(first.id(), libc::SIGTERM);
    let status = wait_with_deadline(&mut first, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "SIGTERM ends a worker with 143");
    while lines(&started) < 4 {
        assert!(
            termed.elapsed() < redelivered_within,
            "the items were not redelivered within {redelivered_within:?} of SIGTERM (the lease is 60 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = wait_with_deadline(&mut second, Duration::from_secs(60));
    assert!(status.success(), "the second worker drains and exits 0");
    let attempts: BTreeMap<String, u32> = read_records(&out)
        .into_iter()
        .map(|r| (r.item, r.attempt))
        .collect();
    assert_eq!(
        attempts,
        BTreeMap::from([("long-1".into(), 2), ("long-2".into(), 2)])
    );
}
