//! Readers never answer from a partial view, and every command is robust
//! where a user meets it, through the real `runner` binary: a fresh
//! `status` or `submit` while another reader holds the ledger's sheets,
//! `results` while its receipt sheets are held, `wait` and `status` across
//! a server restart, a black-holed server, a second Ctrl-C, a closed pipe,
//! URL queues' default names, and the queue's own attempt limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::proxy::{Fault, FaultProxy};
use forloop_tests::scenarios::{signal, wait_with_deadline};
use forloop_tests::servers::{RedisServer, SqsEmulator};
use forloop_tests::{runner, scratch};

fn unique(test: &str) -> String {
    format!("rd-{test}-{}", std::process::id())
}

/// `runner --queue sqs --name NAME` on the shared emulator.
fn sqs(name: &str) -> Command {
    sqs_at(SqsEmulator::shared().endpoint(), name)
}

/// [`sqs`], reaching SQS at `endpoint` (a fault proxy in front of it).
fn sqs_at(endpoint: &str, name: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", "sqs", "--name", name])
        .env("FORLOOP_SQS_STALENESS", "1s");
    SqsEmulator::shared().configure(&mut command);
    command.env("AWS_ENDPOINT_URL_SQS", endpoint);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: Output, what: &str) -> Output {
    assert!(output.status.success(), "{what}: {}", stderr(&output));
    output
}

fn create(name: &str) {
    ok(
        sqs(name)
            .args(["queue", "create", "--lease", "10s", "--max-attempts", "3"])
            .output()
            .unwrap(),
        "queue create",
    );
}

fn items(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("items.txt");
    let lines: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Receive every visible message of SQS queue `queue` with a visibility
/// of `hold_seconds`, deleting none: another reader holding the sheets
/// (they come back when the hold ends). Returns how many it holds.
fn hold(queue: &str, hold_seconds: u32) -> usize {
    const SCRIPT: &str = r#"
import sys, boto3
sqs = boto3.client("sqs")
url = sqs.get_queue_url(QueueName=sys.argv[1])["QueueUrl"]
held = 0
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                              VisibilityTimeout=int(sys.argv[2]), WaitTimeSeconds=0)
    messages = got.get("Messages", [])
    if not messages:
        break
    held += len(messages)
print(held)
"#;
    let mut command = Command::new("python3");
    command.args(["-c", SCRIPT, queue, &hold_seconds.to_string()]);
    SqsEmulator::shared().configure(&mut command);
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "holding `{queue}` (boto3 installed? scripts/test installs it): {}",
        stderr(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn status_json(command: &mut Command) -> serde_json::Value {
    let output = ok(
        command.args(["status", "--json"]).output().unwrap(),
        "status",
    );
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

#[test]
fn a_fresh_status_or_submit_waits_out_sheets_another_reader_holds() {
    let name = unique("held");
    create(&name);
    let dir = scratch("readers-held");
    let input = items(&dir, 5);
    let submit = || {
        sqs(&name)
            .args(["submit", "--job", "held"])
            .arg(&input)
            .output()
            .unwrap()
    };
    ok(submit(), "the first submit");

    // Another reader holds every book sheet for 4 s.
    assert!(hold(&format!("{name}-ledger"), 4) > 0, "no book sheets");
    let status = status_json(&mut sqs(&name));
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.len(),
        1,
        "a fresh status said there are no jobs while the sheets were held: {status}"
    );
    assert_eq!(jobs[0]["job"], "held");

    // The same submit again while they are held: the job exists, so it is
    // refused (never taken for new and sent again).
    assert!(hold(&format!("{name}-ledger"), 4) > 0);
    let again = submit();
    assert!(
        !again.status.success(),
        "a submit while the sheets were held took the job for new: {}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("was submitted before"),
        "{}",
        stderr(&again)
    );
    let status = status_json(&mut sqs(&name));
    assert_eq!(status["jobs"][0]["submitted"], 5, "{status}");
}

#[test]
fn results_never_show_a_settled_item_as_pending_when_its_receipts_are_held() {
    let name = unique("results");
    create(&name);
    let dir = scratch("readers-results");
    let input = items(&dir, 6);
    ok(
        sqs(&name)
            .args(["submit", "--job", "r"])
            .arg(&input)
            .output()
            .unwrap(),
        "submit",
    );
    ok(
        sqs(&name)
            .args(["work", "--idle-window", "2s", "--", "true"])
            .output()
            .unwrap(),
        "work",
    );
    // Another reader holds the receipt sheets: the details cannot be read,
    // but the book says all six are done.
    assert!(
        hold(&format!("{name}-results"), 20) > 0,
        "no receipt sheets"
    );
    let output = ok(
        sqs(&name)
            .args(["results", "--json", "--job", "r"])
            .output()
            .unwrap(),
        "results",
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    let states: Vec<&str> = rows.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(
        states, ["done"; 6],
        "settled items shown as pending: {rows:?}"
    );
    assert!(
        stderr(&output).contains("6 settled item(s) of job `r` show no details"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_closed_pipe_ends_status_and_results_quietly() {
    let name = unique("pipe");
    create(&name);
    let dir = scratch("readers-pipe");
    let input = items(&dir, 3);
    ok(
        sqs(&name)
            .args(["submit", "--job", "p"])
            .arg(&input)
            .output()
            .unwrap(),
        "submit",
    );
    for command in [&["status"][..], &["results", "--job", "p"]] {
        // `true` reads nothing and exits at once: the runner writes to a
        // closed pipe, as under `| head -1`.
        let mut script = sqs(&name);
        let program = script.get_program().to_owned();
        let args: Vec<_> = script.get_args().map(|a| a.to_owned()).collect();
        script = Command::new("bash");
        script
            .arg("-c")
            .arg("\"$@\" | true; exit \"${PIPESTATUS[0]}\"")
            .arg("bash")
            .arg(program)
            .args(args)
            .args(command)
            .env("FORLOOP_SQS_STALENESS", "1s");
        SqsEmulator::shared().configure(&mut script);
        let output = script.output().unwrap();
        assert!(
            output.status.success() && !stderr(&output).contains("panicked"),
            "`runner {command:?} | true`: {:?} {}",
            output.status,
            stderr(&output)
        );
    }
}

#[test]
fn a_black_holed_server_fails_each_command_within_its_deadline_naming_it() {
    let name = unique("blackhole");
    create(&name);
    let endpoint = SqsEmulator::shared().endpoint().to_string();
    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://"));
    let via = format!("http://{}", proxy.address());
    let dir = scratch("readers-blackhole");
    let input = items(&dir, 3);
    proxy.set(Fault::BlackHole);
    for args in [
        vec!["status".to_string()],
        vec!["submit".to_string(), input.display().to_string()],
        vec!["results".to_string()],
    ] {
        let started = Instant::now();
        let mut child = sqs_at(&via, &name)
            .args(&args)
            .env("FORLOOP_CALL_TIMEOUT", "2s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_with_deadline(&mut child, Duration::from_secs(90));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
        assert!(
            !status.success(),
            "`{args:?}` succeeded against a black hole"
        );
        assert!(
            text.contains("did not answer") && text.contains(&name),
            "`{args:?}` did not name the server: {text}"
        );
        assert!(
            // status retries for 30 s what may pass (see its test below).
            started.elapsed() < Duration::from_secs(50),
            "`{args:?}` took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_second_ctrl_c_stops_a_stuck_submit_at_once() {
    let name = unique("ctrlc");
    create(&name);
    let endpoint = SqsEmulator::shared().endpoint().to_string();
    let proxy = FaultProxy::start(endpoint.trim_start_matches("http://"));
    let via = format!("http://{}", proxy.address());
    let dir = scratch("readers-ctrlc");
    let input = items(&dir, 100_000);
    let mut child = sqs_at(&via, &name)
        .args(["submit", "--job", "c"])
        .arg(&input)
        .env("FORLOOP_CALL_TIMEOUT", "10m")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Publishing is under way; then the server stops answering.
    std::thread::sleep(Duration::from_secs(3));
    proxy.set(Fault::BlackHole);
    std::thread::sleep(Duration::from_millis(500));
    signal(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C should wait for the batch on its way"
    );
    signal(child.id(), libc::SIGINT);
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");
    proxy.set(Fault::Pass);
}

#[test]
fn a_url_queue_names_its_jobs_after_itself() {
    let dir = scratch("readers-url");
    let input = items(&dir, 2);
    let mut names = Vec::new();
    for queue in [unique("url-a"), unique("url-b")] {
        let url = format!("sqs://{queue}");
        let on = || {
            let mut command = runner();
            command
                .args(["--queue", &url])
                .env("FORLOOP_SQS_STALENESS", "1s")
                .env_remove("FORLOOP_NAME");
            SqsEmulator::shared().configure(&mut command);
            command
        };
        ok(on().args(["queue", "create"]).output().unwrap(), "create");
        ok(on().arg("submit").arg(&input).output().unwrap(), "submit");
        let status = status_json(&mut on());
        let job = status["jobs"][0]["job"].as_str().unwrap().to_string();
        assert!(
            job.starts_with(&format!("{queue}-")),
            "the job on `{url}` is `{job}`, not named after the queue"
        );
        names.push(job);
    }
    assert_ne!(names[0], names[1]);
}

#[test]
fn a_worker_says_when_max_attempts_differs_from_the_queues_own_limit() {
    let name = unique("attempts");
    create(&name); // --max-attempts 3: maxReceiveCount 13 with the default 10 lapses
    let dir = scratch("readers-attempts");
    let input = items(&dir, 1);
    let output = ok(
        sqs(&name)
            .args(["run", "--max-attempts", "5"])
            .arg(&input)
            .args(["--", "true"])
            .output()
            .unwrap(),
        "run",
    );
    let text = stderr(&output);
    assert!(
        text.contains("--max-attempts 5 with --max-lapses 10 (15 deliveries) differs from")
            && text.contains("own limit of 13"),
        "{text}"
    );
}

/// `wait` and `status` ride out a Redis restart: they retry what failed
/// for a reason that may pass, with backoff, instead of exiting 1.
#[test]
fn wait_and_status_ride_out_a_server_restart() {
    let mut server = RedisServer::local(true);
    let url = server.url().to_string();
    let name = unique("restart");
    let on = || {
        let mut command = runner();
        command.args(["--queue", &url, "--name", &name]);
        command
    };
    let dir = scratch("readers-restart");
    let input = items(&dir, 4);
    ok(
        on().args(["submit", "--job", "w"])
            .arg(&input)
            .output()
            .unwrap(),
        "submit",
    );
    let mut waiting = on()
        .args(["wait", "--poll", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A status started while the server is down (it goes down for 3 s).
    let status = std::thread::spawn({
        let mut status = on();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            status.arg("status").output().unwrap()
        }
    });
    server.restart(Duration::from_secs(3));
    let status = status.join().unwrap();
    assert!(
        status.status.success(),
        "status during a restart: {}",
        stderr(&status)
    );
    ok(
        on().args(["work", "--", "true"]).output().unwrap(),
        "work after the restart",
    );
    let code = wait_with_deadline(&mut waiting, Duration::from_secs(60));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut text).unwrap();
    assert!(code.success(), "wait across a restart: {code:?} {text}");
}

/// A job whose receipts lie in more sheets than one read used to take
/// (10,000 on SQS: 1,000 pulls of 10), as many small writes leave them:
/// `results` reads them all, every row with its details.
#[test]
fn results_read_every_receipt_sheet_past_ten_thousand() {
    const SHEETS: u64 = 10_050;
    let name = unique("many");
    create(&name);
    // The book (every item done) and one receipt sheet per item, written
    // straight to the siblings as workers' writes would leave them.
    const SCRIPT: &str = r#"
import json, sys, boto3
from concurrent.futures import ThreadPoolExecutor
sqs = boto3.client("sqs")
name, n = sys.argv[1], int(sys.argv[2])
def url(q): return sqs.get_queue_url(QueueName=q)["QueueUrl"]
def sheet(kind): return {"forloop-sheet": {"DataType": "String", "StringValue": kind}}
book = {"jobs": {"big": {"manifest": {"job": "big", "total": n, "digest": "d", "created": 1},
                         "submitted": [[0, n]], "done": [[0, n]], "dead": []}}}
sqs.send_message(QueueUrl=url(name + "-ledger"), MessageBody=json.dumps(book),
                 MessageAttributes=sheet("book-1"))
results = url(name + "-results")
def send(start):
    entries = [{"Id": str(seq), "MessageAttributes": sheet("receipts-1"),
                "MessageBody": json.dumps([{"job": "big", "seq": seq, "state": "done", "attempt": 1,
                                            "exit_code": 0, "seconds": 0.1, "worker": "w",
                                            "item": "item-%d" % seq, "at": 1}])}
               for seq in range(start, min(start + 10, n))]
    assert not sqs.send_message_batch(QueueUrl=results, Entries=entries).get("Failed")
with ThreadPoolExecutor(8) as pool:
    list(pool.map(send, range(0, n, 10)))
"#;
    let mut command = Command::new("python3");
    command.args(["-c", SCRIPT, &name, &SHEETS.to_string()]);
    SqsEmulator::shared().configure(&mut command);
    ok(
        command.output().expect("python3 runs"),
        "writing the sheets",
    );

    let output = ok(
        sqs(&name)
            .args(["results", "--json", "--job", "big"])
            .output()
            .unwrap(),
        "results",
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, SHEETS);
    let without: Vec<u64> = rows
        .iter()
        .filter(|r| r["state"] != "done" || r["attempts"].is_null())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        without.is_empty(),
        "{} of {SHEETS} rows without their receipt (first: {:?}); stderr: {}",
        without.len(),
        &without[..without.len().min(5)],
        stderr(&output)
    );
}
