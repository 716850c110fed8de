//! Jobs that share a queue (issue 21), written once and run by each
//! shared-queue backend's test file: a job stuck for good (its submit
//! stopped) holds no other job's run, which is refused with what to do
//! until the stuck job is cancelled; a job the server lost fails its
//! workers and `wait`, never reads as done.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::read_records;
use crate::scenarios::{signal, wait_for_lines, wait_with_deadline};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `runner submit --job NAME` of `n` items through `slow_on` (a delaying
/// proxy), stopped by SIGINT once the ledger records a first batch: a job
/// that is never sealed.
pub fn stopped_submit(
    on: &impl Fn() -> Command,
    slow_on: &impl Fn() -> Command,
    dir: &Path,
    name: &str,
    n: usize,
) {
    let items: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    let input = dir.join(format!("{name}.txt"));
    std::fs::write(&input, items.join("\n")).unwrap();
    let submit = slow_on()
        .args(["submit", "--job", name])
        .arg(&input)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = on().args(["job", "list", "--json"]).output().unwrap();
        let listed = String::from_utf8_lossy(&status.stdout).into_owned();
        let sent = listed
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|job| job["job"] == name)
            .and_then(|job| job["submitted"].as_u64());
        if sent.is_some_and(|n| n > 0) {
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
    assert_eq!(
        output.status.code(),
        Some(130),
        "the submit of {n} items finished before SIGINT (enlarge the input) or failed: {}",
        stderr(&output)
    );
}

/// The phase `runner job list --json` gives `job` (`None`: not listed).
pub fn phase(on: &impl Fn() -> Command, job: &str) -> Option<String> {
    let output = on().args(["job", "list", "--json"]).output().unwrap();
    assert!(output.status.success(), "job list: {}", stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .find(|listed| listed["job"] == job)
        .map(|listed| listed["phase"].as_str().unwrap_or_default().to_string())
}

/// Scenario 1 of issue 21: a submit of many items stopped part-way, then
/// `runner run` of a one-item job on the same queue. The run is refused at
/// once, naming the stuck job and how to end it (not left running for
/// ever); once the stuck job is cancelled, the run ends on its own job, its
/// command runs only its own item, and the cancelled job's items are
/// settled without running.
pub fn a_stuck_job_holds_no_other_run(
    on: impl Fn() -> Command,
    slow_on: impl Fn() -> Command,
    record: &str,
    dir: &Path,
) {
    stopped_submit(&on, &slow_on, dir, "stuck", 4000);
    assert_eq!(phase(&on, "stuck").as_deref(), Some("unsealed"));
    let input = dir.join("mine.txt");
    std::fs::write(&input, "mine-0\n").unwrap();
    let out = dir.join("out.jsonl");
    let run = || {
        let mut command = on();
        command
            .args(["run", "--job", "mine", "--workers", "1"])
            .arg(&input)
            .args(["--", record, out.to_str().unwrap(), "{}"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let mut refused = run().spawn().unwrap();
    let status = wait_with_deadline(&mut refused, Duration::from_secs(60));
    let log = stderr(&refused.wait_with_output().unwrap());
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("`stuck`")
            && log.contains("runner job cancel stuck")
            && log.contains("--name"),
        "the refusal names the open job and what to do: {log}"
    );
    assert_eq!(
        phase(&on, "mine"),
        None,
        "nothing of the refused job was recorded"
    );

    let output = on().args(["job", "cancel", "stuck"]).output().unwrap();
    assert!(output.status.success(), "job cancel: {}", stderr(&output));
    assert_eq!(phase(&on, "stuck").as_deref(), Some("cancelled"));

    let mut ran = run().spawn().unwrap();
    let status = wait_with_deadline(&mut ran, Duration::from_secs(120));
    let log = stderr(&ran.wait_with_output().unwrap());
    assert!(
        status.success(),
        "the run of `mine` must end on its own job: {log}"
    );
    let items: Vec<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(
        items,
        ["mine-0"],
        "only the run's own item ran under its command"
    );
    assert_eq!(phase(&on, "mine").as_deref(), Some("complete"));

    let output = on().args(["job", "forget", "stuck"]).output().unwrap();
    assert!(output.status.success(), "job forget: {}", stderr(&output));
    assert_eq!(phase(&on, "stuck"), None, "a forgotten job is not listed");
}

/// Scenario 6 of issue 21: the server loses its keys (Redis FLUSHALL) at 4
/// of 20 done. The worker and a `wait` under way fail naming the job,
/// instead of reading the missing job as complete.
pub fn a_lost_job_fails_workers_and_wait(
    on: impl Fn() -> Command,
    lose: impl FnOnce(),
    record: &str,
    dir: &Path,
) {
    let items: Vec<String> = (0..20).map(|i| format!("l-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let output = on()
        .args(["submit", "--job", "lost"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = dir.join("out.jsonl");
    let mut worker = on()
        .args(["work", "--concurrency", "1", "--"])
        .args([record, out.to_str().unwrap(), "{}"])
        .env("RECORD_SLEEP_MS", "200")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut wait = on()
        .args(["wait", "--poll", "100ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(&out, 4, Duration::from_secs(60), "4 items done");
    lose();
    let status = wait_with_deadline(&mut worker, Duration::from_secs(120));
    let log = stderr(&worker.wait_with_output().unwrap());
    assert!(
        !status.success(),
        "a worker must not exit 0 when the server lost its job: {log}"
    );
    assert!(
        log.contains("`lost` was lost"),
        "the worker names the lost job: {log}"
    );
    let status = wait_with_deadline(&mut wait, Duration::from_secs(60));
    let log = stderr(&wait.wait_with_output().unwrap());
    assert!(
        !status.success(),
        "`wait` must not read a lost job as complete: {log}"
    );
    assert!(
        log.contains("`lost` was lost"),
        "`wait` names the lost job: {log}"
    );
}

/// Scenario 2 of issue 21: `run a.txt -- cmdA` and, while it runs, `run
/// b.txt -- cmdB` on the same queue. The second is refused before it
/// records or sends anything, naming the open job and `--name`; the first
/// runs only its own items, under its own command, and exits 0. Then two
/// runs of one command share the queue: each ends with its own items done,
/// every item of both ran exactly once.
pub fn two_runs_on_one_queue(on: impl Fn() -> Command, record: &str, dir: &Path) {
    let input = |name: &str, n: usize| {
        let path = dir.join(format!("{name}.txt"));
        let items: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
        std::fs::write(&path, items.join("\n")).unwrap();
        path
    };
    let (a, b) = (input("a", 6), input("b", 6));
    let out_a = dir.join("a.jsonl");
    let out_b = dir.join("b.jsonl");
    let started = dir.join("started-a");
    let mut first = on()
        .args(["run", "--job", "a", "--workers", "1", "--concurrency", "1"])
        .arg(&a)
        .args(["--", record, out_a.to_str().unwrap(), "A", "{}"])
        .env("RECORD_SLEEP_MS", "300")
        .env("RECORD_STARTED", &started)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(
        &started,
        1,
        Duration::from_secs(60),
        "job a's first item started",
    );
    let second = on()
        .args(["run", "--job", "b", "--workers", "1"])
        .arg(&b)
        .args(["--", record, out_b.to_str().unwrap(), "B", "{}"])
        .output()
        .unwrap();
    let log = stderr(&second);
    assert!(
        !second.status.success(),
        "a second command on the queue must be refused: {log}"
    );
    assert!(
        log.contains("`a`") && log.contains("--name"),
        "the refusal names the open job and --name: {log}"
    );
    assert_eq!(
        phase(&on, "b"),
        None,
        "nothing of the refused job was recorded"
    );
    let status = wait_with_deadline(&mut first, Duration::from_secs(120));
    let log = stderr(&first.wait_with_output().unwrap());
    assert!(status.success(), "{log}");
    let mut ran: Vec<String> = read_records(&out_a).into_iter().map(|r| r.item).collect();
    ran.sort();
    assert_eq!(ran, (0..6).map(|i| format!("a-{i}")).collect::<Vec<_>>());
    assert!(read_records(&out_b).is_empty(), "cmdB ran nothing");

    // One command, two jobs at once: they share the queue and its workers.
    let (c, d) = (input("c", 5), input("d", 5));
    let out = dir.join("shared.jsonl");
    let run = |job: &str, path: &Path| {
        on().args(["run", "--job", job, "--workers", "1", "--concurrency", "2"])
            .arg(path)
            .args(["--", record, out.to_str().unwrap(), "{}"])
            .env("RECORD_SLEEP_MS", "100")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut one = run("c", &c);
    let mut two = run("d", &d);
    for (child, job) in [(&mut one, "c"), (&mut two, "d")] {
        let status = wait_with_deadline(child, Duration::from_secs(120));
        assert!(status.success(), "the run of job {job} ends on its own job");
    }
    let mut ran: Vec<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    ran.sort();
    let mut want: Vec<String> = (0..5)
        .flat_map(|i| [format!("c-{i}"), format!("d-{i}")])
        .collect();
    want.sort();
    assert_eq!(ran, want, "every item of both jobs ran exactly once");
    assert_eq!(phase(&on, "c").as_deref(), Some("complete"));
    assert_eq!(phase(&on, "d").as_deref(), Some("complete"));
}

/// The counts `runner job list --json` gives `job`: (done, dead, remaining).
fn counts(on: &impl Fn() -> Command, job: &str) -> (u64, u64, u64) {
    let output = on().args(["job", "list", "--json"]).output().unwrap();
    assert!(output.status.success(), "job list: {}", stderr(&output));
    let listed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
        .find(|listed| listed["job"] == job)
        .expect("the job is listed");
    let n = |key: &str| {
        listed[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {listed}"))
    };
    (n("done"), n("dead"), n("remaining"))
}

/// Issue 24, halt: `run --max-dead 3` of a job whose command fails for
/// every item, four workers. The job halts after a bounded number of
/// deaths (the limit, the death that passed it, and what the workers had
/// in flight); `run` exits 3 saying "halted: N of 40 dead (limit 3)" and
/// the dominant cause; `status` and `wait` (exit 3) say so too; the rest
/// stay queued. After the fix, `run --resume` continues the same job: every
/// item left runs once, the dead stay dead, the job completes.
pub fn a_failing_job_halts_and_resumes(
    on: impl Fn() -> Command,
    extra: &[&str],
    record: &str,
    dir: &Path,
) {
    const N: u64 = 40;
    const WORKERS: u64 = 4;
    let items: Vec<String> = (0..N).map(|i| format!("h-{i}")).collect();
    let input = dir.join("halt.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let run = |fixed: bool, out: &Path| {
        let mut command = on();
        command
            .args(["run", "--job", "h", "--workers", "4", "--concurrency", "1"])
            .args(["--max-attempts", "1", "--max-dead", "3"])
            .args(extra)
            .arg(&input);
        if fixed {
            command.arg("--resume");
        } else {
            // Every attempt fails until the cause is fixed; the command
            // is the same (the job runs one command).
            command.env("RECORD_FAIL_ALL", "1");
        }
        command.args(["--", record, out.to_str().unwrap(), "{}"]);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    let out = dir.join("resumed.jsonl");
    let mut failing = run(false, &out).spawn().unwrap();
    let status = wait_with_deadline(&mut failing, Duration::from_secs(120));
    let log = stderr(&failing.wait_with_output().unwrap());
    assert_eq!(status.code(), Some(3), "a halted run exits 3: {log}");
    let (done, dead, remaining) = counts(&on, "h");
    // Past the limit only the items in flight can die: one a worker, and
    // one more each whose reading raced its own last death.
    let bound = 3 + 1 + 2 * WORKERS;
    assert!(
        dead > 3 && dead <= bound && done == 0 && remaining == N - dead,
        "halted after {dead} dead (done {done}, remaining {remaining}): within {bound}: {log}"
    );
    assert!(
        log.contains(&format!("halted: {dead} of {N} dead (limit 3)"))
            && log.contains(&format!("exit 1 ({dead})")),
        "run says how many died of how many, the limit and the cause: {log}"
    );
    assert_eq!(phase(&on, "h").as_deref(), Some("halted"));
    let shown = on().arg("status").output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&format!("halted: {dead} of {N} dead (limit 3)"))
            && shown.contains("exit 1"),
        "status says the job halted and why: {shown}"
    );
    let waited = on().args(["wait", "--poll", "100ms"]).output().unwrap();
    assert_eq!(
        waited.status.code(),
        Some(3),
        "wait on a halted job exits 3: {}",
        stderr(&waited)
    );

    let mut fixed = run(true, &out).spawn().unwrap();
    let status = wait_with_deadline(&mut fixed, Duration::from_secs(120));
    let log = stderr(&fixed.wait_with_output().unwrap());
    assert_eq!(
        status.code(),
        Some(1),
        "the resumed run completes the job; its earlier dead items make it exit 1: {log}"
    );
    let mut ran: Vec<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    ran.sort();
    let before = ran.len();
    ran.dedup();
    assert_eq!(before, ran.len(), "every item left ran once");
    assert_eq!(ran.len() as u64, N - dead, "{ran:?}");
    assert_eq!(counts(&on, "h"), (N - dead, dead, 0));
    assert_eq!(phase(&on, "h").as_deref(), Some("complete"));
}
