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

/// Wait until the file at `path` has `n` lines (the `record` helper's
/// `RECORD_STARTED` file: tasks that have started), failing the test with
/// `what` after `limit`.
pub fn wait_for_lines(path: &Path, n: usize, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < n {
        assert!(Instant::now() < until, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker stopped by SIGTERM gives its running items back at once.
///
/// Two items that take 4 s each are submitted; a first worker (2 slots, a
/// 60 s lease, 200 ms grace) takes both; a second one waits. The first gets
/// SIGTERM and must exit 143; the second must start both items again within
/// `redelivered_within` (far less than the lease, so they were handed back,
/// not left to expire), drain, and exit 0; each item ran twice, and the
/// hand-back cost no attempt.
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
    wait_for_lines(
        &started,
        2,
        Duration::from_secs(30),
        "the first worker did not start its tasks",
    );
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
    // Each ran twice (four starts above), and the hand-back cost no
    // attempt: the finished run is attempt 1 (contract clause 8).
    assert_eq!(
        attempts,
        BTreeMap::from([("long-1".into(), 1), ("long-2".into(), 1)]),
        "a hand-back was charged as a failed attempt"
    );
}

/// `runner run` on 20 good items and one that always fails (the `record`
/// helper exits 3 for it): 20 done, the poison item dead-lettered after 3
/// attempts, named in the summary and in `dead list --json`, exit 1. Returns
/// `run`'s stderr for backend-specific checks.
///
/// `on` makes a `runner` command pointed at the queue; `run_flags` are
/// extra `run` flags (e.g. an idle window).
pub fn poison_item_is_dead_lettered_and_named(
    on: impl Fn() -> Command,
    run_flags: &[&str],
    record: &str,
    dir: &Path,
) -> String {
    let items: Vec<String> = (0..20)
        .map(|i| format!("ok-{i}"))
        .chain(["poison pill".to_string()])
        .collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n") + "\n").unwrap();
    let out = dir.join("out.jsonl");
    let output = on()
        .arg("run")
        .arg(&input)
        .args([
            "--workers",
            "2",
            "--concurrency",
            "2",
            "--max-attempts",
            "3",
        ])
        .args(["--backoff", "50ms"])
        .args(run_flags)
        .arg("--")
        .args([record, out.to_str().unwrap()])
        .env("RECORD_FAIL", "poison pill")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("21 items: 20 done, 1 dead-lettered"), "{err}");
    assert!(
        err.contains("dead: \"poison pill\": exit code 3 on attempt 3 of 3"),
        "{err}"
    );
    let seen: std::collections::BTreeSet<String> =
        read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(seen.len(), 20);
    let list = on().args(["dead", "list", "--json"]).output().unwrap();
    let line: serde_json::Value = serde_json::from_slice(&list.stdout).expect("one JSON line");
    assert_eq!(line["item"], "poison pill");
    assert_eq!(line["attempts"], 3);
    assert!(
        line["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 3"),
        "{line}"
    );
    err
}

/// After [`poison_item_is_dead_lettered_and_named`]: `dead requeue` puts the
/// one dead item back (`after_requeue` checks the counts), then `dead purge`
/// finds nothing left to purge.
pub fn dead_requeue_then_purge(on: impl Fn() -> Command, after_requeue: impl FnOnce()) {
    let requeue = on().args(["dead", "requeue"]).output().unwrap();
    let said = String::from_utf8_lossy(&requeue.stderr);
    assert!(said.contains("requeued 1 dead item"), "{said}");
    after_requeue();
    let purge = on().args(["dead", "purge"]).output().unwrap();
    let said = String::from_utf8_lossy(&purge.stderr);
    assert!(said.contains("purged 0 dead item"), "{said}");
}
