//! The SQS path end to end on the fauxqs emulator: real `runner` processes,
//! `queue create`, a poison item, SIGTERMed and SIGKILLed workers, and the
//! messages a user sees when the queue or the credentials are missing.

use std::process::{Command, Output};
use std::time::Duration;

use forloop_tests::proxy::FaultProxy;
use forloop_tests::scenarios::{
    a_filtered_requeue_moves_only_the_matching_dead_items,
    a_requeued_item_counts_again_until_it_dies_again, dead_requeue_then_purge,
    poison_item_is_dead_lettered_and_named, server_comes_back_without_the_queue,
    server_crash_mid_run, sigkill_while_acks_are_in_flight, sigterm_hands_items_back,
};
use forloop_tests::servers::{Restartable, SqsEmulator};
use forloop_tests::{kill_storm, runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn unique(test: &str) -> String {
    format!("e2e-{test}-{}", std::process::id())
}

/// `runner --queue sqs --name NAME` on the emulator. fauxqs counts from its
/// own store, so a 1 s staleness window is plenty (AWS needs the default 60 s).
fn on(name: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", "sqs", "--name", name])
        .env("FORLOOP_SQS_STALENESS", "1s");
    SqsEmulator::shared().configure(&mut command);
    command
}

/// [`on`], but reaching SQS at `endpoint` (an emulator of the test's own,
/// or a fault proxy in front of one).
fn at(endpoint: &str, name: &str) -> Command {
    let mut command = on(name);
    command.env("AWS_ENDPOINT_URL_SQS", endpoint);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Delete the queue `name` made by [`create`] and its sibling queues.
fn delete(name: &str) {
    let output = on(name).args(["queue", "delete"]).output().unwrap();
    assert!(output.status.success(), "queue delete: {}", stderr(&output));
}

fn create(name: &str, lease: &str, max_attempts: &str) {
    create_at(SqsEmulator::shared().endpoint(), name, lease, max_attempts);
}

fn create_at(endpoint: &str, name: &str, lease: &str, max_attempts: &str) {
    let output = at(endpoint, name)
        .args([
            "queue",
            "create",
            "--lease",
            lease,
            "--max-attempts",
            max_attempts,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "queue create: {}", stderr(&output));
}

fn status_of(name: &str) -> serde_json::Value {
    let output = on(name).args(["status", "--json"]).output().unwrap();
    assert!(output.status.success(), "status: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

fn assert_drained_clean(name: &str) {
    let value = status_of(name);
    let counts = ["ready", "in_flight", "dead"].map(|key| value[key].as_u64());
    assert_eq!(counts, [Some(0); 3], "status after the run: {value}");
    assert_eq!(value["exact"], false, "SQS counts are approximate: {value}");
}

#[test]
fn a_missing_queue_says_how_to_create_it() {
    let name = unique("missing");
    let output = on(&name).arg("status").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("runner --queue sqs --name {name} queue create")),
        "{err}"
    );
}

#[test]
fn missing_credentials_say_which_sources_were_tried() {
    let name = unique("nocreds");
    create(&name, "10s", "5");
    let home = scratch("sqs-nocreds");
    let output = on(&name)
        .arg("status")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    for source in [
        "no AWS credentials found",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "instance metadata",
    ] {
        assert!(err.contains(source), "{source} is not named: {err}");
    }
}

#[test]
fn status_json_counts_submitted_items_as_approximate() {
    let name = unique("status");
    create(&name, "10s", "5");
    let dir = scratch("sqs-status");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nb\n").unwrap();
    let output = on(&name).arg("submit").arg(&input).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let value = status_of(&name);
    assert_eq!(value["ready"], 2, "{value}");
    assert_eq!(value["in_flight"], 0, "{value}");
    assert_eq!(value["exact"], false, "{value}");
    delete(&name);
}

#[test]
fn a_poison_item_is_dead_lettered_and_run_exits_non_zero_naming_it() {
    let name = unique("poison");
    create(&name, "10s", "3");
    let dir = scratch("sqs-poison");
    poison_item_is_dead_lettered_and_named(|| on(&name), &[], RECORD, &dir);
    dead_requeue_then_purge(
        || on(&name),
        || {
            let value = status_of(&name);
            assert_eq!(
                (value["ready"].as_u64(), value["dead"].as_u64()),
                (Some(1), Some(0)),
                "{value}"
            );
        },
    );
    delete(&name);
}

#[test]
fn dead_requeue_uncounts_the_item_and_its_next_death_shows() {
    let name = unique("requeue");
    create(&name, "10s", "1");
    let dir = scratch("sqs-requeue");
    a_requeued_item_counts_again_until_it_dies_again(|| on(&name), &dir);
    delete(&name);
}

#[test]
fn a_sigtermed_worker_gives_its_items_back_at_once_and_exits_143() {
    let name = unique("sigterm");
    create(&name, "60s", "5");
    let dir = scratch("sqs-sigterm");
    sigterm_hands_items_back(|| on(&name), &[], RECORD, &dir, Duration::from_secs(5));
    assert_drained_clean(&name);
    delete(&name);
}

#[test]
fn sigkilled_workers_lose_nothing_and_duplicate_at_most_their_in_flight_items() {
    let name = unique("kill");
    // Ten receives before the redrive policy steps in: a few kills must not
    // dead-letter an item that never failed.
    create(&name, "5s", "10");
    let dir = scratch("sqs-kill");
    let concurrency = 4;
    let items: Vec<String> = (0..3000).map(|i| format!("item-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    assert!(
        on(&name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let out = dir.join("out.jsonl");
    let mut launch = on(&name);
    launch
        .args([
            "launch",
            "--workers",
            "4",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args(["--lease", "5s", "--max-restarts", "1000", "--"])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "100");
    kill_storm(launch, &out, &items, concurrency);
    assert_drained_clean(&name);
    // The ledger counted each item once, however many times it ran.
    forloop_tests::jobs::assert_every_item_settled_once(&|| on(&name), items.len());
    delete(&name);
}

#[test]
fn a_worker_sigkilled_while_its_acks_are_in_flight_loses_nothing() {
    let name = unique("ack-kill");
    create(&name, "3s", "5");
    let endpoint = SqsEmulator::shared().endpoint();
    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://"));
    let via = format!("http://{}", proxy.address());
    let dir = scratch("sqs-ack-kill");
    sigkill_while_acks_are_in_flight(
        || on(&name),
        || at(&via, &name),
        &proxy,
        &["--lease", "3s"],
        RECORD,
        &dir,
    );
    assert_drained_clean(&name);
    delete(&name);
}

#[test]
fn a_worker_rides_out_an_emulator_crash_and_runs_what_is_resubmitted() {
    let mut emulator = SqsEmulator::local();
    let endpoint = emulator.endpoint().to_string();
    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://"));
    let via = format!("http://{}", proxy.address());
    let name = unique("crash");
    let dir = scratch("sqs-crash");
    server_crash_mid_run(
        || at(&endpoint, &name),
        || at(&via, &name),
        &proxy,
        &mut emulator as &mut dyn Restartable,
        || create_at(&endpoint, &name, "3s", "5"),
        &["--lease", "3s"],
        "sqs",
        5,
        RECORD,
        &dir,
    );
}

#[test]
fn a_worker_whose_queue_is_lost_in_an_emulator_crash_exits_non_zero_saying_so() {
    let mut emulator = SqsEmulator::local();
    let endpoint = emulator.endpoint().to_string();
    let name = unique("gone");
    let dir = scratch("sqs-gone");
    server_comes_back_without_the_queue(
        || at(&endpoint, &name),
        &mut emulator as &mut dyn Restartable,
        || create_at(&endpoint, &name, "3s", "5"),
        &["--lease", "3s"],
        &format!("runner --queue sqs --name {name} queue create"),
        RECORD,
        &dir,
    );
}

#[test]
fn an_idle_worker_waits_for_an_item_a_dead_worker_held() {
    let name = unique("stranded");
    create(&name, "6s", "5");
    forloop_tests::jobs::stranded_item_waits_for_its_lease(
        || on(&name),
        &["--idle-window", "1s"],
        RECORD,
        &scratch("sqs-stranded"),
        Duration::from_secs(6),
    );
    delete(&name);
}

#[test]
fn a_job_of_300_quick_items_ends_within_3s_of_its_last_item() {
    // AWS's staleness setting: approximate counts are trusted only after
    // 90 s of empty readings. A job's end does not wait for them. It does
    // wait for each worker's open long poll (at most one `--poll`, 1 s:
    // SQS counts a long poll in whole seconds), which would otherwise take
    // the next item published for a lease (see
    // `an_ended_worker_leaves_no_long_poll_to_hide_the_next_item`): hence
    // 3 s here, 2 s on the other backends.
    let name = unique("end300");
    create(&name, "30s", "5");
    let lag = forloop_tests::jobs::run_ends_soon_after_its_last_item(
        || {
            let mut command = on(&name);
            command.env_remove("FORLOOP_SQS_STALENESS");
            command
        },
        &[],
        RECORD,
        &scratch("sqs-end300"),
        300,
        Duration::from_secs(3),
    );
    eprintln!("sqs: the run ended {lag:?} after its last item");
    delete(&name);
}

/// Delete SQS queue `queue` with boto3 (as an operator, or a policy
/// without the sibling, would take it away).
fn delete_queue(queue: &str) {
    const SCRIPT: &str = r#"
import sys, boto3
sqs = boto3.client("sqs")
sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=sys.argv[1])["QueueUrl"])
"#;
    let mut command = Command::new("python3");
    command.args(["-c", SCRIPT, queue]);
    SqsEmulator::shared().configure(&mut command);
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "deleting `{queue}` (boto3 installed? scripts/test installs it): {}",
        stderr(&output)
    );
}

/// Issue 21, scenario 4: the ledger's receipts sibling is gone (deleted,
/// or the workers' IAM policy lacks it). A success cannot be recorded, so
/// it must not be acked or turned into a dead letter: the worker gives its
/// items back and exits non-zero naming the sibling; nothing reads dead.
#[test]
fn a_deleted_results_sibling_stops_the_worker_naming_it() {
    let name = unique("no-results");
    create(&name, "30s", "5");
    let dir = scratch("no-results");
    let input = dir.join("items.txt");
    std::fs::write(&input, "r-0\nr-1\nr-2\n").unwrap();
    let output = on(&name)
        .args(["submit", "--job", "j"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    delete_queue(&format!("{name}-results"));
    let out = dir.join("out.jsonl");
    let mut worker = on(&name)
        .args(["work", "--concurrency", "1", "--"])
        .args([RECORD, out.to_str().unwrap(), "{}"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        forloop_tests::scenarios::wait_with_deadline(&mut worker, Duration::from_secs(120));
    let log = stderr(&worker.wait_with_output().unwrap());
    assert!(
        !status.success(),
        "a worker that cannot record a success must not exit 0: {log}"
    );
    assert!(
        log.contains(&format!("{name}-results")),
        "the error names the missing sibling: {log}"
    );
    let value = status_of(&name);
    assert_eq!(
        value["dead"], 0,
        "no success was turned into a dead letter: {value}"
    );
}

/// Issue 21, item 9, on fauxqs: a worker of four slots ends with its job
/// while a long poll is open at the server. The next job's item, submitted
/// right after, must reach the next worker on its first delivery, not sit
/// leased to the ended worker's poll for a lease and come back as attempt 2.
#[test]
fn an_ended_worker_leaves_no_long_poll_to_hide_the_next_item() {
    let name = unique("leftpoll");
    create(&name, "30s", "5");
    let dir = scratch("sqs-leftpoll");
    // `runner submit --job JOB` of `items`, then `runner work --concurrency
    // SLOTS` until the queue's jobs are over, recording into `out`.
    let submit_and_work = |job: &str, items: &str, slots: &str, out: &std::path::Path| {
        let input = dir.join(format!("{job}.txt"));
        std::fs::write(&input, items).unwrap();
        let submit = on(&name)
            .args(["submit", "--job", job])
            .arg(&input)
            .output()
            .unwrap();
        assert!(submit.status.success(), "submit: {}", stderr(&submit));
        let work = on(&name)
            .args(["work", "--concurrency", slots, "--"])
            .args([RECORD, out.to_str().unwrap(), "{}"])
            .output()
            .unwrap();
        assert!(work.status.success(), "work: {}", stderr(&work));
    };
    for round in 0..3 {
        let out = dir.join(format!("out-{round}.jsonl"));
        submit_and_work(&format!("first-{round}"), "a-1\na-2\na-3\na-4\n", "4", &out);
        submit_and_work(&format!("next-{round}"), &format!("b-{round}\n"), "1", &out);
        let records = forloop_tests::read_records(&out);
        let item = records
            .iter()
            .find(|r| r.item == format!("b-{round}"))
            .expect("the next item ran");
        assert_eq!(
            item.attempt, 1,
            "round {round}: the next item's first delivery went to the ended worker's long poll"
        );
    }
    delete(&name);
}

#[test]
fn a_job_failing_every_item_halts_leaves_the_rest_queued_and_resumes() {
    let name = unique("halt");
    create(&name, "10s", "3");
    forloop_tests::shared_jobs::a_failing_job_halts_and_resumes(
        || on(&name),
        &[],
        RECORD,
        &scratch("sqs-halt"),
    );
}

#[test]
fn a_filtered_requeue_moves_only_the_matching_dead_items_and_counts_them_once() {
    let name = unique("rerun");
    create(&name, "10s", "1");
    let dir = scratch("sqs-rerun");
    a_filtered_requeue_moves_only_the_matching_dead_items(|| on(&name), &dir);
    delete(&name);
}

#[test]
fn a_sigkill_storm_with_one_attempt_dead_letters_nothing_that_did_not_fail() {
    let name = unique("lapses");
    let dir = scratch("sqs-lapses");
    forloop_tests::scenarios::a_sigkill_storm_with_one_attempt_buries_only_failures(
        || on(&name),
        "5s",
        true,
        &dir,
    );
    delete(&name);
}

/// `--speculate` on SQS (fauxqs): a straggler settled by its copy, counted
/// once (the scenario is shared with Redis and Pub/Sub).
#[test]
fn speculate_settles_a_straggler_with_a_copy_counted_once() {
    let name = unique("speculate");
    create(&name, "5s", "5");
    let dir = scratch("sqs-speculate");
    forloop_tests::scenarios::a_straggler_is_settled_by_its_copy_counted_once(
        || on(&name),
        "5s",
        &dir,
    );
    delete(&name);
}
