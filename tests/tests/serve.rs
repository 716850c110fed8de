//! `--serve` end to end: the shipped Python helper and bash example through
//! `run` on memory, `run`/`work` on a real Redis, the flags reaching worker
//! processes and Kubernetes pods, a double reply named in the log, and
//! SIGTERM handing the running item back and stopping the processes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::scenarios::{signal, wait_for_lines, wait_with_deadline};
use forloop_tests::servers::RedisServer;
use forloop_tests::{runner, scratch};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn unique(test: &str) -> String {
    format!(
        "serve-{test}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

/// A worker on the shipped helper: records `pid slot attempt item` per
/// item in `$OUT`, prints to stdout (which the helper sends to stderr),
/// dead-letters `poison`, fails `flaky` on its first attempt (JSON format),
/// sleeps on `slow`, and answers `twice` twice (JSON format, two writes).
const WORKER: &str = r#"
import os, sys, time
from forloop_worker import Fatal, serve

out = os.environ["OUT"]

def handle(task):
    with open(out, "a") as f:
        f.write(f"{os.getpid()} {os.environ['FORLOOP_SLOT']} {task.attempt} {task.item}\n")
    print(f"handled {task.item}")
    if task.item == "poison":
        raise Fatal("not wanted here")
    if task.item == "flaky" and task.attempt == 1:
        raise ValueError("first try fails")
    if task.item == "slow":
        time.sleep(60)
    if task.item == "twice":
        reply = '{"status": "ok", "id": "%s"}\n' % task.id
        sys.__stdout__.buffer.write(reply.encode())
        sys.__stdout__.buffer.flush()

serve(handle, task=True)
"#;

fn worker(dir: &Path) -> PathBuf {
    let path = dir.join("worker.py");
    std::fs::write(&path, WORKER).unwrap();
    path
}

fn with_worker(mut command: Command, dir: &Path) -> Command {
    command
        .env("PYTHONPATH", root().join("python"))
        .env("OUT", dir.join("seen"));
    command
}

/// (pid, slot, attempt, item) per handled item.
fn seen(dir: &Path) -> Vec<(String, String, String, String)> {
    std::fs::read_to_string(dir.join("seen"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ').map(str::to_string);
            let mut next = || parts.next().unwrap();
            (next(), next(), next(), next())
        })
        .collect()
}

fn write_items(dir: &Path, items: &[&str]) -> PathBuf {
    let path = dir.join("items.txt");
    std::fs::write(&path, items.join("\n") + "\n").unwrap();
    path
}

#[test]
fn the_python_helper_serves_every_item_from_one_warm_process_per_slot() {
    let dir = scratch("serve-python");
    let mut items: Vec<String> = (0..40).map(|i| format!("item-{i}")).collect();
    items.push("poison".into());
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let input = write_items(&dir, &refs);
    let output = with_worker(runner(), &dir)
        .arg("run")
        .arg(&input)
        .args(["-j", "2", "--serve", "--"])
        .arg("python3")
        .arg(worker(&dir))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a dead-lettered item fails the run: {log}"
    );
    assert!(log.contains("41 items: 40 done, 1 dead-lettered"), "{log}");
    assert!(
        log.contains("not wanted here"),
        "the fatal message is the reason: {log}"
    );
    assert!(
        log.contains("handled item-7"),
        "print() goes to stderr: {log}"
    );
    let seen = seen(&dir);
    assert_eq!(seen.len(), 41, "each item handled once: {seen:?}");
    let pids: BTreeSet<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    let slots: BTreeSet<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert!(
        pids.len() <= 2,
        "one process per slot, not per item: {pids:?}"
    );
    assert!(
        slots.iter().all(|slot| ["0", "1"].contains(slot)),
        "{slots:?}"
    );
}

#[test]
fn the_bash_and_python_examples_run_the_sample_items() {
    for worker in [
        ["bash", "examples/serve/worker.sh"],
        ["python3", "examples/serve/worker.py"],
    ] {
        let output = runner()
            .current_dir(root())
            .args(["run", "examples/items.txt", "--serve", "--"])
            .args(worker)
            .output()
            .unwrap();
        let log = stderr(&output);
        assert!(output.status.success(), "{worker:?}: {log}");
        assert!(
            log.contains("10 items: 10 done, 0 dead-lettered"),
            "{worker:?}: {log}"
        );
    }
}

#[test]
fn a_late_second_reply_never_answers_the_next_item() {
    // In the JSON format the helper's replies name their item's id, so a
    // second reply (written apart from the first, so it may arrive after
    // the next item went out) is caught whenever it arrives.
    let dir = scratch("serve-double");
    let input = write_items(&dir, &["twice", "after"]);
    let output = with_worker(runner(), &dir)
        .arg("run")
        .arg(&input)
        .args(["-j", "1", "--backoff", "10ms", "--serve=json", "--"])
        .arg("python3")
        .arg(worker(&dir))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("serve process"), "{log}");
    assert!(
        log.contains("a second reply or stray output")
            || log.contains("a second reply to an earlier item (the last item before it was"),
        "{log}"
    );
    let seen = seen(&dir);
    let twice = &seen[0];
    let last_after = seen.iter().rev().find(|s| s.3 == "after").unwrap();
    assert_ne!(
        twice.0, last_after.0,
        "the item was answered by a fresh process: {seen:?}"
    );
}

#[test]
fn run_on_redis_passes_serve_json_to_its_workers_and_retries_by_attempt() {
    let server = RedisServer::shared();
    let dir = scratch("serve-redis-run");
    let name = unique("run");
    let input = write_items(&dir, &["a", "flaky", "b", "c"]);
    let output = with_worker(runner(), &dir)
        .args(["--queue", server.url(), "--name", &name, "run"])
        .arg(&input)
        .args([
            "--workers",
            "2",
            "-j",
            "2",
            "--backoff",
            "10ms",
            "--serve=json",
            "--",
        ])
        .arg("python3")
        .arg(worker(&dir))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("4 items: 4 done, 0 dead-lettered, 0 left"),
        "{log}"
    );
    let mut flaky: Vec<String> = seen(&dir)
        .into_iter()
        .filter(|s| s.3 == "flaky")
        .map(|s| s.2)
        .collect();
    flaky.sort();
    assert_eq!(flaky, ["1", "2"], "the JSON line carries the attempt");
}

#[test]
fn work_on_redis_with_serve_hands_the_running_item_back_on_sigterm_and_stops_the_process() {
    let server = RedisServer::shared();
    let dir = scratch("serve-redis-term");
    let name = unique("term");
    let input = write_items(&dir, &["slow"]);
    let submit = runner()
        .args(["--queue", server.url(), "--name", &name, "submit"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", stderr(&submit));
    let mut work = with_worker(runner(), &dir)
        .args(["--queue", server.url(), "--name", &name, "work"])
        .args([
            "-j",
            "1",
            "--grace",
            "200ms",
            "--lease",
            "60s",
            "--serve=json",
            "--",
        ])
        .arg("python3")
        .arg(worker(&dir))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(
        &dir.join("seen"),
        1,
        Duration::from_secs(30),
        "the item started",
    );
    signal(work.id(), libc::SIGTERM);
    let status = wait_with_deadline(&mut work, Duration::from_secs(20));
    let mut log = String::new();
    std::io::Read::read_to_string(work.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(143), "{log}");
    let pid: u32 = seen(&dir)[0].0.parse().unwrap();
    let gone = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z')
    }) {
        assert!(
            Instant::now() < gone,
            "serve process {pid} still runs after the worker exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = runner()
        .args(["--queue", server.url(), "--name", &name, "status", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (
            value["ready"].as_u64(),
            value["in_flight"].as_u64(),
            value["dead"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "the item is back at once, not failed: {value}"
    );
}

#[test]
fn gke_pods_get_the_serve_setting_and_the_command() {
    let output = runner()
        .args([
            "--queue",
            "redis://redis.default.svc:6379",
            "--name",
            "videos",
            "--cluster",
            "gke",
        ])
        .args([
            "launch",
            "--dry-run",
            "--image",
            "example.invalid/worker:1",
            "--serve=json",
        ])
        .args(["--", "python3", "/app/worker.py"])
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(yaml.contains("FORLOOP_SERVE"), "{yaml}");
    let after = &yaml[yaml.find("FORLOOP_SERVE").unwrap()..];
    let value_line = after.lines().nth(1).unwrap_or_default();
    assert_eq!(value_line.trim(), "value: \"json\"", "{yaml}");
    let command = [
        "- \"runner\"",
        "- \"work\"",
        "- \"--\"",
        "- \"python3\"",
        "- \"/app/worker.py\"",
    ];
    let at = yaml.find("command:").expect("a container command");
    let lines: Vec<&str> = yaml[at..].lines().skip(1).take(5).map(str::trim).collect();
    assert_eq!(lines, command, "{yaml}");
}

#[test]
fn task_timeout_kills_a_hung_serve_process_and_the_item_is_dead_lettered_after_its_attempts() {
    let dir = scratch("serve-timeout");
    let input = write_items(&dir, &["slow", "a"]);
    let started = Instant::now();
    let output = with_worker(runner(), &dir)
        .arg("run")
        .arg(&input)
        .args([
            "-j",
            "1",
            // Long enough for python to start on a loaded machine; the hung
            // item sleeps 60 s.
            "--task-timeout",
            "2s",
            "--max-attempts",
            "2",
            "--backoff",
            "10ms",
        ])
        .args(["--serve", "--"])
        .arg("python3")
        .arg(worker(&dir))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("2 items: 1 done, 1 dead-lettered"), "{log}");
    assert!(log.contains("within 2s (--task-timeout)"), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hung item (60 s) was not cut at its timeout"
    );
    let slow: Vec<_> = seen(&dir).into_iter().filter(|s| s.3 == "slow").collect();
    assert_eq!(slow.len(), 2, "two attempts: {slow:?}");
    assert_ne!(
        slow[0].0, slow[1].0,
        "the hung process was replaced: {slow:?}"
    );
}
