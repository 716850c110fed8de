//! End-to-end scenarios of jobs (issue 12), written once and run by each
//! shared-queue backend's test file: the ledger counts every item once, an
//! idle worker waits for an item a dead worker held, a stopped run or
//! submit resumes without a duplicate or a gap, and a job's end follows its
//! last item at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::read_records;
use crate::scenarios::{signal, wait_for_lines, wait_with_deadline};

/// `runner results --json` of the queue's newest job, one object per item.
pub fn results(on: &impl Fn() -> Command) -> Vec<serde_json::Value> {
    let output = on().args(["results", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "runner results failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// The ledger holds one record per item, `n` of them, each done or dead,
/// none pending: done + dead = N exactly. Returns (done, dead).
pub fn assert_every_item_settled_once(on: &impl Fn() -> Command, n: usize) -> (usize, usize) {
    let records = results(on);
    assert_eq!(records.len(), n, "one record per item of the job");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..n as u64).collect::<Vec<_>>(),
        "each seq once, in order"
    );
    let state = |s: &str| records.iter().filter(|r| r["state"] == s).count();
    let (done, dead, pending) = (state("done"), state("dead"), state("pending"));
    assert_eq!(pending, 0, "items still pending after the run: {records:?}");
    assert_eq!(done + dead, n);
    (done, dead)
}

/// Two workers; one holds an item and is SIGKILLed with a long lease
/// (`lease`), the other idles: it must not exit 0 before the item came back
/// after the lease and ran. `work_flags` are extra `work` flags (a short
/// idle window shows the old rule's failure on backends that cannot count).
pub fn stranded_item_waits_for_its_lease(
    on: impl Fn() -> Command,
    work_flags: &[&str],
    record: &str,
    dir: &Path,
    lease: Duration,
) {
    let input = dir.join("items.txt");
    std::fs::write(&input, "held\nfree-1\nfree-2\n").unwrap();
    assert!(on().arg("submit").arg(&input).status().unwrap().success());
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    let lease_flag = format!("{}ms", lease.as_millis());
    let worker = |sleep_ms: &str| {
        on().args(["work", "--concurrency", "1", "--lease", &lease_flag])
            .args(work_flags)
            .arg("--")
            .args([record, out.to_str().unwrap()])
            .env("RECORD_SLEEP_MS", sleep_ms)
            .env("RECORD_STARTED", &started)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The holder takes the first item and sleeps on it; then it dies.
    let mut holder = worker("600000");
    wait_for_lines(
        &started,
        1,
        Duration::from_secs(30),
        "the holder did not start its item",
    );
    holder.kill().unwrap();
    let _ = holder.wait();
    let killed = Instant::now();
    let mut survivor = worker("0");
    let status = wait_with_deadline(&mut survivor, lease * 3 + Duration::from_secs(60));
    let ran = killed.elapsed();
    assert!(
        status.success(),
        "the survivor ends with 0 once the job is complete"
    );
    assert!(
        ran + Duration::from_millis(500) >= lease,
        "the survivor exited {ran:?} after the holder died, before its {lease:?} lease ran out: \
         the held item was stranded"
    );
    let done: Vec<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    let mut sorted = done.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["free-1", "free-2", "held"],
        "every item ran once to the end"
    );
    assert_eq!(assert_every_item_settled_once(&on, 3), (3, 0));
}

/// `runner run` stopped by SIGINT part-way, then the same command with
/// `--resume`: every item runs to success exactly once across both runs
/// (nothing done is sent again, nothing queued is duplicated, nothing is
/// skipped), and the ledger counts each once.
pub fn run_resumes_after_sigint(
    on: impl Fn() -> Command,
    run_flags: &[&str],
    record: &str,
    dir: &Path,
) {
    let n = 40;
    let items: Vec<String> = (0..n).map(|i| format!("r-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    let run = |job_flags: &[&str]| {
        let mut command = on();
        command
            .args([
                "run",
                "--workers",
                "2",
                "--concurrency",
                "2",
                "--grace",
                "5s",
            ])
            .args(job_flags)
            .args(run_flags)
            .arg(&input)
            .arg("--")
            .args([record, out.to_str().unwrap()])
            .env("RECORD_SLEEP_MS", "150")
            .env("RECORD_STARTED", &started)
            .stderr(Stdio::piped());
        command
    };
    let mut first = run(&["--job", "resumed"]).spawn().unwrap();
    // Not the first line: let some items finish first.
    wait_for_lines(
        &out,
        8,
        Duration::from_secs(60),
        "the first run did not get going",
    );
    signal(first.id(), libc::SIGINT);
    let status = wait_with_deadline(&mut first, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "SIGINT ends run with 130");
    let done_first = read_records(&out).len();
    assert!(
        done_first < n,
        "the first run finished everything before SIGINT"
    );
    let output = run(&["--job", "resumed", "--resume"]).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("resuming job `resumed`"), "{log}");
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for record in read_records(&out) {
        *runs.entry(record.item).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "items ran to success twice: {twice:?}");
    assert_eq!(runs.len(), n, "items were skipped");
    assert_eq!(assert_every_item_settled_once(&on, n), (n, 0));
}

/// `runner submit` stopped by SIGINT part-way says exactly which lines went
/// in; `submit --resume` sends exactly the rest: the workers then run every
/// item once. `slow_on` reaches the queue through a delaying proxy, so the
/// signal lands between batches.
pub fn submit_resumes_after_sigint(
    on: impl Fn() -> Command,
    slow_on: impl Fn() -> Command,
    record: &str,
    dir: &Path,
    n: usize,
) {
    let items: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let submit = slow_on()
        .args(["submit", "--job", "halved"])
        .arg(&input)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SIGINT once the first batches are in (the ledger says so).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = on().args(["status", "--json"]).output().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&status.stdout).unwrap_or(serde_json::Value::Null);
        if json["jobs"][0]["submitted"].as_u64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the submit sent nothing within a minute"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(submit.id(), libc::SIGINT);
    let output = submit.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(130),
        "the submit of {n} items finished before SIGINT (enlarge the input) or failed: {log}"
    );
    assert!(
        log.contains("stopped part-way") && log.contains("--resume"),
        "{log}"
    );
    let output = on()
        .args(["submit", "--job", "halved", "--resume"])
        .arg(&input)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("resumed job `halved`"), "{log}");
    let out = dir.join("out.jsonl");
    let status = on()
        .args(["work", "--concurrency", "16", "--"])
        .args([record, out.to_str().unwrap()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let records = read_records(&out);
    assert_eq!(
        records.len(),
        n,
        "every item ran once: none skipped, none sent twice"
    );
    assert_eq!(assert_every_item_settled_once(&on, n), (n, 0));
}

/// `runner run` of `n` quick items: the run ends within `within` of its
/// last item (the record file's last write), with no idle or staleness
/// window in between. Returns the lag.
pub fn run_ends_soon_after_its_last_item(
    on: impl Fn() -> Command,
    run_flags: &[&str],
    record: &str,
    dir: &Path,
    n: usize,
    within: Duration,
) -> Duration {
    let items: Vec<String> = (0..n).map(|i| format!("q-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let out = dir.join("out.jsonl");
    let mut run = on()
        .args(["run", "--workers", "2", "--concurrency", "8"])
        .args(run_flags)
        .arg(&input)
        .arg("--")
        .args([record, out.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut run, Duration::from_secs(120));
    let ended = SystemTime::now();
    let mut log = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(read_records(&out).len(), n, "{log}");
    let last_item = std::fs::metadata(&out).unwrap().modified().unwrap();
    let lag = ended.duration_since(last_item).unwrap_or_default();
    assert!(
        lag < within,
        "the run ended {lag:?} after its last item (want < {within:?}): {log}"
    );
    lag
}
