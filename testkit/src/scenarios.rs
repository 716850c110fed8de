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
    // A worker that exited while its ledger looked at the dead place (SQS,
    // Pub/Sub) hides the letter for the listing's short hold (5 s).
    let until = Instant::now() + Duration::from_secs(15);
    let list = loop {
        let list = on().args(["dead", "list", "--json"]).output().unwrap();
        if !list.stdout.is_empty() || Instant::now() > until {
            break list;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let line: serde_json::Value = serde_json::from_slice(&list.stdout).expect("one JSON line");
    assert_eq!(line["item"], "poison pill");
    assert_eq!(line["attempts"], 3);
    // An item of the run's job shows its job and seq among its attributes,
    // and its last exit code from the job's receipt.
    assert!(line["attributes"]["forloop-job"].is_string(), "{line}");
    assert_eq!(line["attributes"]["forloop-seq"], "20", "{line}");
    assert_eq!(line["exit_code"], 3, "{line}");
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

/// What a `WARN` log line is about: its message without the time, the
/// span before it, the fields after it, or its numbers (so a spin whose
/// counts change is still one kind).
fn warning_kind(line: &str) -> String {
    let message = line.split_once("WARN ").map_or(line, |(_, rest)| rest);
    let message = message.split_once("}: ").map_or(message, |(_, rest)| rest);
    let words: Vec<&str> = message
        .split_whitespace()
        .take_while(|word| !word.contains('='))
        .collect();
    let text = words.join(" ");
    let text = text.split(':').next().unwrap_or_default();
    let mut kind = String::new();
    for c in text.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    kind
}

/// The items in `path`, one a line, written for `submit`.
fn write_items(path: &Path, items: &[String]) {
    std::fs::write(path, items.join("\n") + "\n").unwrap();
}

/// How many times each item ran to the end (the `record` helper's file).
fn runs(out: &Path) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for record in read_records(out) {
        *runs.entry(record.item).or_insert(0) += 1;
    }
    runs
}

/// A `runner work` running the `record` helper into `out` with 2 slots,
/// each task taking `sleep_ms`, starts noted in `started`, its stderr in
/// `log`.
fn record_worker(
    mut on: Command,
    work_flags: &[&str],
    record: &str,
    out: &Path,
    started: &Path,
    sleep_ms: u64,
    log: &Path,
) -> Child {
    on.args(["work", "--concurrency", "2"])
        .args(work_flags)
        .arg("--")
        .args([record, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", sleep_ms.to_string())
        .env("RECORD_STARTED", started)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The queue server crashes (SIGKILL, its in-memory data gone) while a
/// worker runs and holds items, and comes back empty on the same port.
///
/// Twelve items; one worker (2 slots, 1 s tasks) reaches the server
/// through `proxy` (`through`), everything else goes direct (`direct`).
/// Once four tasks have started (two done, two held) the server is killed
/// for 6 s. The worker must say so (a warning that names the queue
/// problem, `backend` in it), retry with backoff rather than spin (at most
/// `max_per_kind` warnings of one kind in the outage), and neither exit nor claim
/// the queue drained. Then the proxy holds the worker off while the server
/// starts again, `create` makes the queue again and the operator
/// re-submits what never finished (the server lost the rest: "nothing
/// lost" can only mean every item ran once the lost ones are re-submitted).
/// Once the proxy lets it through, the worker carries on, runs every
/// re-submitted item and exits 0. Every item ran exactly once: an item that
/// finished during the outage is not re-submitted, and its lost ack runs
/// nothing again.
#[allow(clippy::too_many_arguments)]
pub fn server_crash_mid_run(
    direct: impl Fn() -> Command,
    through: impl Fn() -> Command,
    proxy: &crate::proxy::FaultProxy,
    server: &mut dyn crate::servers::Restartable,
    create: impl Fn(),
    work_flags: &[&str],
    backend: &str,
    max_per_kind: usize,
    record: &str,
    dir: &Path,
) {
    use crate::proxy::Fault;
    let items: Vec<String> = (1..=12).map(|i| format!("crash-{i}")).collect();
    let input = dir.join("items.txt");
    write_items(&input, &items);
    create();
    assert!(
        direct()
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let (out, started, log) = (
        dir.join("out.jsonl"),
        dir.join("started"),
        dir.join("worker.log"),
    );
    let mut worker = record_worker(through(), work_flags, record, &out, &started, 1000, &log);
    wait_for_lines(
        &started,
        4,
        Duration::from_secs(60),
        "the worker did not start four tasks",
    );
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    server.kill();
    let outage = Duration::from_secs(6);
    let killed = Instant::now();
    while killed.elapsed() < outage {
        if let Some(status) = worker.try_wait().unwrap() {
            panic!(
                "the worker exited ({status}) while the server was down: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let said = &text[before..];
    eprintln!("--- the worker during the {outage:?} outage ---\n{said}---");
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("pull failed") && l.contains(backend)),
        "no warning names the queue problem ({backend}) while the server is down: {said}"
    );
    // A spin repeats one warning many times a second; retries with backoff
    // say each thing a few times. Several parts (pulls, acks, lease
    // renewals, the ledger) each warn, so the count is per kind.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in &warnings {
        *kinds.entry(warning_kind(line)).or_default() += 1;
    }
    for (kind, count) in &kinds {
        assert!(
            *count <= max_per_kind,
            "{count} warnings \"{kind}\" in a {outage:?} outage (at most {max_per_kind} of a kind): the worker spins instead of backing off: {said}"
        );
    }
    assert!(
        !said.contains("drained"),
        "the worker took a server it cannot reach for a drained queue: {said}"
    );

    proxy.set(Fault::BlackHole);
    server.start();
    create();
    let done = runs(&out);
    let lost: Vec<String> = items
        .iter()
        .filter(|i| !done.contains_key(*i))
        .cloned()
        .collect();
    assert!(
        lost.len() >= 6,
        "most items were still queued when the server died: {done:?}"
    );
    write_items(&input, &lost);
    assert!(
        direct()
            .args(["submit", "--job", "recovered"])
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    proxy.set(Fault::Pass);

    // The worker carries on and runs what was re-submitted. The job it
    // knew died with the server's data (its manifest and receipts were in
    // the emulator's memory too), so it cannot prove that job complete and
    // may wait on: it never claims an end it cannot see. Once every item
    // has run it either exited 0 (it no longer knew the old job) or is
    // stopped here by SIGTERM and gives nothing back.
    let until = Instant::now() + Duration::from_secs(90);
    while runs(&out).len() < items.len() {
        assert!(
            Instant::now() < until,
            "the worker did not run the re-submitted items: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Some(status) = worker.try_wait().unwrap() {
            panic!("the worker exited ({status}) before it ran the re-submitted items");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if worker.try_wait().unwrap().is_none() {
        signal(worker.id(), libc::SIGTERM);
    }
    let status = wait_with_deadline(&mut worker, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success() || status.code() == Some(143),
        "the worker must carry on once the server is back: {status}: {text}"
    );
    let runs = runs(&out);
    let wrong: Vec<_> = items
        .iter()
        .filter(|i| runs.get(*i) != Some(&1))
        .map(|i| (i, runs.get(i).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "each item runs once (item, runs): {wrong:?}: {text}"
    );
}

/// A worker SIGKILLed while the acks of its finished items are on their way.
///
/// Six items; a first worker (2 slots, 1 s tasks) reaches the queue
/// through `proxy`. Once it has started two tasks the proxy black-holes,
/// so when they finish their ack is sent and never answered; it is
/// SIGKILLed then. A second worker on a clean connection (`direct`) must
/// run everything, the two held items again (their ack never landed) and
/// exactly once more, the rest once, and exit 0 (drained). The caller then
/// checks the queue reads empty where the backend can count.
pub fn sigkill_while_acks_are_in_flight(
    direct: impl Fn() -> Command,
    through: impl Fn() -> Command,
    proxy: &crate::proxy::FaultProxy,
    work_flags: &[&str],
    record: &str,
    dir: &Path,
) {
    use crate::proxy::Fault;
    let items: Vec<String> = (1..=6).map(|i| format!("ack-{i}")).collect();
    let input = dir.join("items.txt");
    write_items(&input, &items);
    assert!(
        direct()
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let (out, started) = (dir.join("out.jsonl"), dir.join("started"));
    let first_log = dir.join("first.log");
    let mut first = record_worker(
        through(),
        work_flags,
        record,
        &out,
        &started,
        1000,
        &first_log,
    );
    wait_for_lines(
        &started,
        2,
        Duration::from_secs(60),
        "the first worker did not start two tasks",
    );
    proxy.set(Fault::BlackHole);
    let held: Vec<String> = std::fs::read_to_string(&started)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an item"))
        .collect();
    // Both finish (the `record` helper writes when a task ends), their ack
    // goes into the hole; then the worker dies with it unanswered.
    wait_for_lines(
        &out,
        2,
        Duration::from_secs(10),
        "the two held tasks did not finish",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first worker is gone before its SIGKILL: {}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    signal(first.id(), libc::SIGKILL);
    first.wait().unwrap();

    let second_log = dir.join("second.log");
    let mut second = record_worker(
        direct(),
        work_flags,
        record,
        &out,
        &started,
        100,
        &second_log,
    );
    let status = wait_with_deadline(&mut second, Duration::from_secs(90));
    let text = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        status.success(),
        "the second worker drains and exits 0: {text}"
    );
    let runs = runs(&out);
    let expected: BTreeMap<String, usize> = items
        .iter()
        .map(|i| (i.clone(), if held.contains(i) { 2 } else { 1 }))
        .collect();
    assert_eq!(
        runs, expected,
        "the held items {held:?} run exactly once more (their ack never landed), the rest once: {text}"
    );
}

/// The queue server crashes and comes back empty, and nobody makes the
/// queue again: a worker that runs and holds items must ride out the
/// outage, then, finding its queue gone, exit non-zero saying so and how to
/// make it (`create_hint`, the command), not loop and not exit 0.
pub fn server_comes_back_without_the_queue(
    direct: impl Fn() -> Command,
    server: &mut dyn crate::servers::Restartable,
    create: impl Fn(),
    work_flags: &[&str],
    create_hint: &str,
    record: &str,
    dir: &Path,
) {
    let items: Vec<String> = (1..=6).map(|i| format!("gone-{i}")).collect();
    let input = dir.join("items.txt");
    write_items(&input, &items);
    create();
    assert!(
        direct()
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let (out, started, log) = (
        dir.join("out.jsonl"),
        dir.join("started"),
        dir.join("worker.log"),
    );
    let mut worker = record_worker(direct(), work_flags, record, &out, &started, 1000, &log);
    wait_for_lines(
        &started,
        2,
        Duration::from_secs(60),
        "the worker did not start two tasks",
    );
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker exited while the server was down: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    server.start();
    let status = wait_with_deadline(&mut worker, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("--- the worker ---\n{text}---");
    assert!(
        !status.success() && status.code().is_some(),
        "a worker whose queue is gone exits non-zero: {status}: {text}"
    );
    assert!(
        text.contains(create_hint),
        "the worker must say its queue is gone and how to make it ({create_hint}): {text}"
    );
}

/// A shell command for [`a_requeued_item_counts_again_until_it_dies_again`]:
/// item `bad` writes `$WHY` to stderr and exits `$CODE`; others succeed.
const DIES_WHEN_BAD: &str =
    r#"if [ "$FORLOOP_ITEM" = bad ]; then echo "$WHY" >&2; exit "$CODE"; fi"#;

/// Wait (up to 60 s) for the worker `work` to end by itself, not by a
/// signal, then read the queue's only job.
fn job_once_it_ends(on: &impl Fn() -> Command, mut work: Child) -> serde_json::Value {
    let status = wait_with_deadline(&mut work, Duration::from_secs(60));
    assert!(
        status.code().is_some(),
        "the worker ended by itself: {status:?}"
    );
    only_job(on)
}

/// The job's line of `status --json` (its only job).
fn only_job(on: &impl Fn() -> Command) -> serde_json::Value {
    let output = on().args(["status", "--json"]).output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "status: {said}");
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("status --json prints JSON");
    let jobs = value["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(jobs.len(), 1, "one job on the queue: {value}");
    jobs[0].clone()
}

/// Issue 21, scenario 3: `dead requeue` un-counts what it puts back. A job
/// whose one bad item died reads complete; after `dead requeue` it reads
/// incomplete with nothing dead (so `wait` waits, and a worker runs the
/// item instead of exiting on a complete job); the item dies again, with
/// another exit code and stderr, and that death is the one shown. The
/// queue must have been made with `--max-attempts 1` where the backend
/// keeps it (SQS, Pub/Sub).
pub fn a_requeued_item_counts_again_until_it_dies_again(on: impl Fn() -> Command, dir: &Path) {
    let input = dir.join("items.txt");
    write_items(&input, &["ok-0".into(), "ok-1".into(), "bad".into()]);
    let run = on()
        .arg("run")
        .arg(&input)
        .args(["--max-attempts", "1", "--workers", "1"])
        .args(["--", "sh", "-c", DIES_WHEN_BAD])
        .env("WHY", "first death")
        .env("CODE", "3")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(said.contains("3 items: 2 done, 1 dead-lettered"), "{said}");
    let job = only_job(&on);
    assert_eq!(
        (&job["dead"], &job["complete"]),
        (&1.into(), &true.into()),
        "{job}"
    );

    // The dead-letter listing may be held a moment by the ledger's look at
    // the dead place (SQS, Pub/Sub): requeue until the item moves.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let requeue = on().args(["dead", "requeue"]).output().unwrap();
        let said = String::from_utf8_lossy(&requeue.stderr);
        assert!(requeue.status.success(), "dead requeue: {said}");
        if said.contains("requeued 1 dead item") {
            break;
        }
        assert!(Instant::now() < until, "the dead item never moved: {said}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let job = only_job(&on);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (&2.into(), &0.into(), &false.into()),
        "a requeued item is live, not dead: {job}"
    );

    // A worker runs it (it does not exit on a job that reads complete); it
    // dies again, otherwise.
    let work = on()
        .args([
            "work",
            "--max-attempts",
            "1",
            "--",
            "sh",
            "-c",
            DIES_WHEN_BAD,
        ])
        .env("WHY", "second death")
        .env("CODE", "7")
        .spawn()
        .unwrap();
    let job = job_once_it_ends(&on, work);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (&2.into(), &1.into(), &true.into()),
        "{job}"
    );
    let until = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let list = on().args(["dead", "list", "--json"]).output().unwrap();
        if !list.stdout.is_empty() || Instant::now() > until {
            break serde_json::from_slice::<serde_json::Value>(&list.stdout)
                .expect("one JSON line");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(line["item"], "bad", "{line}");
    assert_eq!(line["exit_code"], 7, "the later death shows: {line}");
    assert!(
        line["stderr_tail"]
            .as_str()
            .is_some_and(|tail| tail.contains("second death")),
        "{line}"
    );
    let wait = on().arg("wait").output().unwrap();
    assert!(
        wait.status.code().is_some(),
        "wait returns on a complete job: {}",
        String::from_utf8_lossy(&wait.stderr)
    );
}

/// Items that die by cause: `oom-*` are killed by SIGKILL (exit code 137)
/// after saying "out of memory", `bad-*` exit 3 after "HTTP 503"; with
/// `FIXED` set the `oom-*` ones succeed.
const DIES_BY_CAUSE: &str = r#"case "$FORLOOP_ITEM" in
  oom-*) [ -n "$FIXED" ] && exit 0; echo "out of memory" >&2; kill -9 $$ ;;
  bad-*) echo "HTTP 503" >&2; exit 3 ;;
esac"#;

/// The items of `dead list --json`, sorted, once the listing shows `n`
/// (the ledger's look at the dead place may hold letters for a moment).
fn dead_items(on: &impl Fn() -> Command, filter: &[&str], n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let list = on()
            .args(["dead", "list", "--json"])
            .args(filter)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&list.stderr);
        assert!(list.status.success(), "dead list {filter:?}: {said}");
        let mut items: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                value["item"].as_str().expect("its item").to_string()
            })
            .collect();
        items.sort();
        if items.len() == n || Instant::now() > until {
            return items;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 24, rerun by cause: of a job's dead items, `dead requeue
/// --exit-code 137` moves exactly those that exited 137 and leaves the rest
/// dead; `--dry-run` moves nothing; bad filters fail before anything
/// moves; `dead list` and `results` filter the same way; a requeued item
/// that then succeeds counts once in its job. The queue must have been
/// made with `--max-attempts 1` where the backend keeps it (SQS, Pub/Sub).
pub fn a_filtered_requeue_moves_only_the_matching_dead_items(on: impl Fn() -> Command, dir: &Path) {
    let input = dir.join("items.txt");
    let items: Vec<String> = ["ok-0", "oom-0", "bad-0", "ok-1", "oom-1", "bad-1"]
        .map(String::from)
        .to_vec();
    write_items(&input, &items);
    let run = on()
        .arg("run")
        .arg(&input)
        .args(["--max-attempts", "1", "--workers", "1"])
        .args(["--", "sh", "-c", DIES_BY_CAUSE])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(said.contains("6 items: 2 done, 4 dead-lettered"), "{said}");
    let all_dead = ["bad-0", "bad-1", "oom-0", "oom-1"].map(String::from);
    assert_eq!(dead_items(&on, &[], 4), all_dead);

    // Bad input: a clear error, and nothing moves.
    let missing = dir.join("no-such-file.txt");
    let refused: [(&[&str], &str); 4] = [
        (&["--exit-code", "abc"], "not an exit code"),
        (&["--exit-code", "137,x"], "not an exit code"),
        (&["--match", "exit (137"], "no regular expression"),
        (&["--items", missing.to_str().unwrap()], "no-such-file.txt"),
    ];
    for (flags, says) in refused {
        let requeue = on().args(["dead", "requeue"]).args(flags).output().unwrap();
        let said = String::from_utf8_lossy(&requeue.stderr);
        assert!(!requeue.status.success(), "{flags:?} was accepted: {said}");
        assert!(said.contains(says), "{flags:?}: {said}");
    }
    assert_eq!(
        only_job(&on)["dead"],
        4,
        "a refused requeue moved something"
    );

    // A dry run shows what would move and moves nothing.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let dry = on()
            .args(["dead", "requeue", "--exit-code", "137", "--dry-run"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&dry.stderr);
        assert!(dry.status.success(), "dry run: {said}");
        if said.contains("would requeue 2 of 4") {
            let shown = String::from_utf8_lossy(&dry.stdout);
            let mut shown: Vec<&str> = shown
                .lines()
                .map(|l| l.split('\t').next().unwrap())
                .collect();
            shown.sort();
            assert_eq!(shown, ["oom-0", "oom-1"], "{said}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the dry run never saw 4 dead items: {said}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(only_job(&on)["dead"], 4, "a dry run moved something");
    assert_eq!(dead_items(&on, &[], 4), all_dead);

    // The filters of `dead list` and `results`.
    let http_5xx = ["--match", r"HTTP 5\d\d"];
    assert_eq!(dead_items(&on, &http_5xx, 2), ["bad-0", "bad-1"]);
    let chosen = dir.join("chosen.txt");
    write_items(&chosen, &["bad-1".into(), "ok-0".into()]);
    let chosen_items = ["--items", chosen.to_str().unwrap()];
    assert_eq!(dead_items(&on, &chosen_items, 1), ["bad-1"]);
    let results = on()
        .args([
            "results",
            "--json",
            "--exit-code",
            "137,3",
            "--match",
            "memory",
        ])
        .output()
        .unwrap();
    assert!(
        results.status.success(),
        "{}",
        String::from_utf8_lossy(&results.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8_lossy(&results.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["item"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        ["oom-0", "oom-1"],
        "results --exit-code 137,3 --match memory"
    );

    // The requeue: exactly the two that exited 137.
    let until = Instant::now() + Duration::from_secs(20);
    let mut moved = 0;
    while moved < 2 {
        let requeue = on()
            .args(["dead", "requeue", "--exit-code", "137"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&requeue.stderr);
        assert!(requeue.status.success(), "dead requeue: {said}");
        let n: u64 = said
            .split("requeued ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("how many moved: {said}"));
        moved += n;
        assert!(moved <= 2, "moved more than asked: {said}");
        assert!(
            moved == 2 || Instant::now() < until,
            "the items never moved: {said}"
        );
    }
    let job = only_job(&on);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (&2.into(), &2.into(), &false.into()),
        "the requeued items are live: {job}"
    );
    assert_eq!(
        dead_items(&on, &[], 2),
        ["bad-0", "bad-1"],
        "the rest stay dead"
    );

    // Fixed, they run again under the job's command and count once.
    let work = on()
        .args([
            "work",
            "--max-attempts",
            "1",
            "--",
            "sh",
            "-c",
            DIES_BY_CAUSE,
        ])
        .env("FIXED", "1")
        .spawn()
        .unwrap();
    let job = job_once_it_ends(&on, work);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (&4.into(), &2.into(), &true.into()),
        "each item counts once: {job}"
    );
    assert_eq!(dead_items(&on, &[], 2), ["bad-0", "bad-1"]);
}

/// The command of [`a_sigkill_storm_with_one_attempt_buries_only_failures`]:
/// items named `bad-*` fail (exit 3), the others take 0.5 s and succeed.
/// The item is read from the environment, never spliced into the script.
const FAILS_WHEN_BAD: &str = r#"case "$FORLOOP_ITEM" in bad-*) exit 3;; esac; sleep 0.5"#;

/// Issue 24, preemption budget: a SIGKILL storm with `--max-attempts 1`
/// dead-letters nothing that did not fail. 200 items (every tenth fails)
/// run on three workers of two slots (`launch`), one of them SIGKILLed
/// every 1.5 s, so items lapse under killed workers; each killed worker is
/// replaced. At the end exactly the failing items are dead, each on its
/// one attempt, and every other item is done. `make_queue`: the backend
/// needs `queue create` first (`--max-attempts 1`: its own limit is then
/// sized `--max-attempts + --max-lapses`, 11 receives).
pub fn a_sigkill_storm_with_one_attempt_buries_only_failures(
    on: impl Fn() -> Command,
    lease: &str,
    make_queue: bool,
    dir: &Path,
) {
    let items: Vec<String> = (0..200)
        .map(|i| {
            if i % 10 == 0 {
                format!("bad-{i}")
            } else {
                format!("ok-{i}")
            }
        })
        .collect();
    let bad: std::collections::BTreeSet<&str> = items
        .iter()
        .filter(|i| i.starts_with("bad"))
        .map(String::as_str)
        .collect();
    if make_queue {
        let output = on()
            .args(["queue", "create", "--lease", lease, "--max-attempts", "1"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "queue create: {said}");
    }
    let input = dir.join("items.txt");
    write_items(&input, &items);
    let submit = on().arg("submit").arg(&input).output().unwrap();
    let said = String::from_utf8_lossy(&submit.stderr);
    assert!(submit.status.success(), "submit: {said}");
    let mut launcher = on()
        .args(["launch", "--workers", "3", "--concurrency", "2"])
        .args(["--max-attempts", "1", "--lease", lease])
        .args(["--idle-window", "12s", "--max-restarts", "1000"])
        .args(["--", "sh", "-c", FAILS_WHEN_BAD])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut kills = 0;
    let mut seed = u64::from(std::process::id());
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the job did not finish within 300 s"
        );
        std::thread::sleep(Duration::from_millis(1500));
        let workers = crate::children(launcher.id());
        if kills < 8 && !workers.is_empty() && launcher.try_wait().unwrap().is_none() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            signal(
                workers[(seed >> 33) as usize % workers.len()],
                libc::SIGKILL,
            );
            kills += 1;
        }
    };
    let output = launcher.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        kills >= 4,
        "only {kills} kills before the job ended: {said}"
    );
    assert_eq!(
        status.code(),
        Some(0),
        "launch ends 0 once the job is complete, dead items and all: {said}"
    );
    let job = only_job(&on);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (
            &(items.len() - bad.len()).into(),
            &bad.len().into(),
            &true.into()
        ),
        "after {kills} kills only the failing items are dead: {job}"
    );
    let list = on()
        .args(["dead", "list", "--json", "--limit", "1000"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&list.stderr);
    assert!(list.status.success(), "dead list: {said}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let listed: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|line| line["item"].as_str().expect("item"))
        .collect();
    assert_eq!(
        listed, bad,
        "the dead place holds exactly the failing items"
    );
    for line in &lines {
        let reason = line["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("on attempt 1 of 1"), "{line}");
    }
    eprintln!("{kills} kills, {:?}", started.elapsed());
}

/// Issue 24, stragglers: one item whose first run hangs (it takes a
/// marker directory and sleeps 10 minutes; any later run finds the marker
/// and is quick) among 40 quick ones, `run --speculate` with two workers
/// of two slots on `on()`'s queue. A copy settles it, the hung original is
/// stopped, `run` exits 0 long before the hung run would have ended, every
/// item is counted once, and `results --json` marks the straggler
/// `"copy": true`. `lease` is the queue's lease (Pub/Sub's shortest is 10 s).
pub fn a_straggler_is_settled_by_its_copy_counted_once(
    on: impl Fn() -> Command,
    lease: &str,
    dir: &Path,
) {
    let mut items: Vec<String> = (0..40).map(|i| format!("quick-{i}")).collect();
    items.insert(0, "slow".into());
    let input = dir.join("items.txt");
    write_items(&input, &items);
    let marker = dir.join("slow.first");
    let script = format!(
        "if [ \"$1\" = slow ] && mkdir '{}' 2>/dev/null; then sleep 600; else sleep 0.3; fi",
        marker.display()
    );
    let started = Instant::now();
    let output = on()
        .args(["run", "--job", "spec", "--keep-receipts", "--workers", "2"])
        .args(["--concurrency", "2", "--lease", lease, "--speculate"])
        .arg(&input)
        .args(["--", "sh", "-c", &script, "sh", "{}"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{said}");
    // The hung run would have taken 600 s: a copy settled the item.
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "run took {:?}: {said}",
        started.elapsed()
    );
    assert!(said.contains("published a speculative copy"), "{said}");
    let results = on()
        .args(["results", "--json", "--job", "spec"])
        .output()
        .unwrap();
    assert!(
        results.status.success(),
        "{}",
        String::from_utf8_lossy(&results.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&results.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 41);
    assert!(lines.iter().all(|l| l["state"] == "done"), "{lines:?}");
    let seqs: std::collections::BTreeSet<u64> =
        lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 41, "each item once");
    let copies: Vec<&serde_json::Value> = lines.iter().filter(|l| l["copy"] == true).collect();
    let log: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("copy") || l.contains("redundant"))
        .collect();
    assert_eq!(copies.len(), 1, "{log:#?}");
    assert_eq!(copies[0]["item"], "slow");
    let job = only_job(&on);
    assert_eq!(
        (&job["done"], &job["dead"], &job["complete"]),
        (&41.into(), &0.into(), &true.into()),
        "each item counts once: {job}"
    );
}

#[cfg(test)]
mod tests {
    use super::warning_kind;

    #[test]
    fn a_warnings_kind_ignores_time_span_fields_and_numbers() {
        let a = "2026-12-03T07:58:31.72Z  WARN SqsQueue { address: sqs://q }: handing back 3 sheets failed (they come back): sqs visibility change failed";
        let b = "2026-12-03T07:58:33.10Z  WARN SqsQueue { address: sqs://q }: handing back 12 sheets failed (they come back): other";
        assert_eq!(warning_kind(a), warning_kind(b));
        assert_eq!(
            warning_kind("t  WARN could not extend leases error=timeout count=2"),
            "could not extend leases"
        );
        assert_ne!(
            warning_kind("t  WARN pull failed; retrying error=x"),
            warning_kind("t  WARN ack failed; retrying error=x")
        );
    }
}
