//! The Pub/Sub path end to end on the official emulator: real `runner`
//! processes, `queue create`, a poison item, a SIGTERMed worker.

use std::process::{Command, Output};
use std::time::Duration;

use forloop_tests::proxy::FaultProxy;
use forloop_tests::scenarios::{
    a_filtered_requeue_moves_only_the_matching_dead_items,
    a_requeued_item_counts_again_until_it_dies_again, poison_item_is_dead_lettered_and_named,
    server_comes_back_without_the_queue, server_crash_mid_run, sigkill_while_acks_are_in_flight,
    sigterm_hands_items_back,
};
use forloop_tests::servers::{PubsubEmulator, Restartable};
use forloop_tests::{runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn queue(test: &str) -> String {
    format!("pubsub://e2e/{test}-{}", std::process::id())
}

fn on(queue: &str) -> Command {
    at(PubsubEmulator::shared().host(), queue)
}

/// `runner --queue QUEUE` on the emulator at `host` (one of the test's own,
/// or a fault proxy in front of one).
fn at(host: &str, queue: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", queue])
        .env("PUBSUB_EMULATOR_HOST", host);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Delete the queue `queue` made by [`create`] and its sibling queues.
fn delete(queue: &str) {
    let output = on(queue).args(["queue", "delete"]).output().unwrap();
    assert!(output.status.success(), "queue delete: {}", stderr(&output));
}

fn create(queue: &str, lease: &str) {
    create_at(PubsubEmulator::shared().host(), queue, lease);
}

fn create_at(host: &str, queue: &str, lease: &str) {
    let output = at(host, queue)
        .args(["queue", "create", "--lease", lease])
        .output()
        .unwrap();
    assert!(output.status.success(), "queue create: {}", stderr(&output));
}

#[test]
fn a_missing_queue_says_how_to_create_it() {
    let q = queue("missing");
    let output = on(&q).arg("status").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("runner --queue {q} queue create")),
        "{err}"
    );
}

#[test]
fn run_processes_everything_and_names_the_poison_item() {
    let q = queue("poison");
    create(&q, "10s");
    let dir = scratch("pubsub-poison");
    poison_item_is_dead_lettered_and_named(|| on(&q), &["--idle-window", "3s"], RECORD, &dir);
    delete(&q);
}

#[test]
fn dead_requeue_uncounts_the_item_and_its_next_death_shows() {
    let q = queue("requeue");
    create(&q, "10s");
    let dir = scratch("pubsub-requeue");
    a_requeued_item_counts_again_until_it_dies_again(|| on(&q), &dir);
    delete(&q);
}

#[test]
fn a_sigtermed_worker_gives_its_items_back_at_once() {
    let q = queue("sigterm");
    create(&q, "60s");
    let dir = scratch("pubsub-sigterm");
    sigterm_hands_items_back(
        || on(&q),
        &["--idle-window", "3s"],
        RECORD,
        &dir,
        Duration::from_secs(5),
    );
    delete(&q);
}

#[test]
fn sigkilled_workers_lose_nothing_and_duplicate_at_most_their_in_flight_items() {
    let q = queue("kill");
    create(&q, "10s");
    let dir = scratch("pubsub-kill");
    let concurrency = 4;
    let items: Vec<String> = (0..3000).map(|i| format!("item-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    assert!(on(&q).arg("submit").arg(&input).status().unwrap().success());
    let out = dir.join("out.jsonl");
    let mut launch = on(&q);
    launch
        .args([
            "launch",
            "--workers",
            "4",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args([
            "--lease",
            "10s",
            "--idle-window",
            "12s",
            "--max-restarts",
            "1000",
            "--",
        ])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "100");
    forloop_tests::kill_storm(launch, &out, &items, concurrency);
    // The ledger counted each item once, however many times it ran.
    forloop_tests::jobs::assert_every_item_settled_once(&|| on(&q), items.len());
    delete(&q);
}

/// A Monitoring API stand-in on loopback: answers every request with a
/// `num_undelivered_messages` series whose newest point is `value`, `age` old.
fn fake_monitoring(value: u64, age: Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let end = std::time::SystemTime::now() - age;
            let seconds = end.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            // RFC 3339 by hand: days since the epoch to a civil date.
            let (days, rest) = (seconds / 86_400, seconds % 86_400);
            let (year, month, day) = civil(days as i64);
            let stamp = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
                rest / 3600,
                rest % 3600 / 60,
                rest % 60
            );
            let body = format!(
                r#"{{"timeSeries":[{{"points":[{{"interval":{{"endTime":"{stamp}"}},"value":{{"int64Value":"{value}"}}}}]}}]}}"#
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// Year, month, day of `days` after 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[test]
fn status_says_counts_come_from_cloud_monitoring() {
    let q = queue("monitored");
    create(&q, "10s");
    let monitoring = fake_monitoring(17, Duration::from_secs(70));
    let output = on(&q)
        .arg("status")
        .env("FORLOOP_MONITORING_ENDPOINT", &monitoring)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        out.contains("ready ~17, in flight unknown, dead ~17"),
        "{out}"
    );
    assert!(out.contains("from Cloud Monitoring"), "{out}");
    assert!(out.contains("may lag by up to 4m"), "{out}");
    let age: u64 = out
        .split("reading ")
        .nth(1)
        .and_then(|rest| rest.split(" s old").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reading age in {out}"));
    assert!((70..80).contains(&age), "{out}");

    // Without the override the emulator has no counts, and status says why.
    let output = on(&q).args(["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ready"], serde_json::Value::Null, "{json}");
    let output = on(&q).arg("status").output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(out.contains("cannot count its backlog here"), "{out}");
    delete(&q);
}

#[test]
fn a_worker_sigkilled_while_its_acks_are_in_flight_loses_nothing() {
    let q = queue("ack-kill");
    create(&q, "10s");
    let proxy = FaultProxy::start(PubsubEmulator::shared().host());
    let dir = scratch("pubsub-ack-kill");
    // The emulator cannot count: the idle window outlasts the lease, so the
    // second worker waits for the held items to come back.
    sigkill_while_acks_are_in_flight(
        || on(&q),
        || at(&proxy.address(), &q),
        &proxy,
        &["--lease", "10s", "--idle-window", "12s"],
        RECORD,
        &dir,
    );
    delete(&q);
}

#[test]
fn a_worker_rides_out_an_emulator_crash_and_runs_what_is_resubmitted() {
    let mut emulator = PubsubEmulator::local();
    let host = emulator.host().to_string();
    let proxy = FaultProxy::start(&host);
    let q = queue("crash");
    let dir = scratch("pubsub-crash");
    server_crash_mid_run(
        || at(&host, &q),
        || at(&proxy.address(), &q),
        &proxy,
        &mut emulator as &mut dyn Restartable,
        || create_at(&host, &q, "10s"),
        &["--lease", "10s", "--idle-window", "3s"],
        "pub/sub",
        5,
        RECORD,
        &dir,
    );
}

#[test]
fn a_worker_whose_queue_is_lost_in_an_emulator_crash_exits_non_zero_saying_so() {
    let mut emulator = PubsubEmulator::local();
    let host = emulator.host().to_string();
    let q = queue("gone");
    let dir = scratch("pubsub-gone");
    server_comes_back_without_the_queue(
        || at(&host, &q),
        &mut emulator as &mut dyn Restartable,
        || create_at(&host, &q, "10s"),
        &["--lease", "10s", "--idle-window", "3s"],
        &format!("runner --queue {q} queue create"),
        RECORD,
        &dir,
    );
}

#[test]
fn an_idle_worker_waits_for_an_item_a_dead_worker_held() {
    // Pub/Sub's shortest lease is 10 s; an idle window of 1 s would have
    // let the survivor exit long before the held item came back.
    let q = queue("stranded");
    create(&q, "10s");
    forloop_tests::jobs::stranded_item_waits_for_its_lease(
        || on(&q),
        &["--idle-window", "1s"],
        RECORD,
        &scratch("pubsub-stranded"),
        Duration::from_secs(10),
    );
    delete(&q);
}

#[test]
fn a_job_of_300_quick_items_ends_within_2s_of_its_last_item() {
    // The emulator cannot count: without jobs, the end waits out the idle
    // window (30 s by default). With the ledger it follows the last item.
    let q = queue("end300");
    create(&q, "10s");
    let lag = forloop_tests::jobs::run_ends_soon_after_its_last_item(
        || on(&q),
        &[],
        RECORD,
        &scratch("pubsub-end300"),
        300,
        Duration::from_secs(2),
    );
    eprintln!("pubsub: the run ended {lag:?} after its last item");
    delete(&q);
}

#[test]
fn a_job_failing_every_item_halts_leaves_the_rest_queued_and_resumes() {
    let q = queue("halt");
    create(&q, "10s");
    forloop_tests::shared_jobs::a_failing_job_halts_and_resumes(
        || on(&q),
        &[],
        RECORD,
        &scratch("pubsub-halt"),
    );
}

#[test]
fn a_filtered_requeue_moves_only_the_matching_dead_items_and_counts_them_once() {
    let q = queue("rerun");
    create(&q, "10s");
    let dir = scratch("pubsub-rerun");
    a_filtered_requeue_moves_only_the_matching_dead_items(|| on(&q), &dir);
    delete(&q);
}

#[test]
fn a_sigkill_storm_with_one_attempt_dead_letters_nothing_that_did_not_fail() {
    let q = queue("lapses");
    let dir = scratch("pubsub-lapses");
    forloop_tests::scenarios::a_sigkill_storm_with_one_attempt_buries_only_failures(
        || on(&q),
        "10s",
        true,
        &dir,
    );
    delete(&q);
}

/// `--speculate` on the Pub/Sub emulator: a straggler settled by its copy,
/// counted once (the scenario is shared with Redis and SQS).
#[test]
fn speculate_settles_a_straggler_with_a_copy_counted_once() {
    let q = queue("speculate");
    create(&q, "10s");
    let dir = scratch("pubsub-speculate");
    forloop_tests::scenarios::a_straggler_is_settled_by_its_copy_counted_once(
        || on(&q),
        "10s",
        &dir,
    );
    delete(&q);
}
