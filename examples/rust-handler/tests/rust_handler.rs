//! The example binary as a user runs it: through `run` on the memory queue,
//! and through `submit` + `work` on a real Redis.

use std::process::{Command, Output};

use forloop_tests::scratch;
use forloop_tests::servers::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_rust-handler");

fn rust_handler() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("FORLOOP_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sorted_lines(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn run_on_memory_counts_primes_and_dead_letters_what_is_not_a_number() {
    let dir = scratch("rust-handler-run");
    let input = dir.join("numbers.txt");
    std::fs::write(&input, "10\n100\n1000\nten\n1000000\n").unwrap();
    let output = rust_handler()
        .arg("run")
        .arg(&input)
        .args(["-j", "2"])
        .output()
        .unwrap();
    let log = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "one item is dead: {log}");
    assert!(log.contains("5 items: 4 done, 1 dead-lettered"), "{log}");
    assert!(log.contains("\"ten\": not a whole number"), "{log}");
    assert_eq!(
        sorted_lines(&output),
        ["10\t4", "100\t25", "1000\t168", "1000000\t78498"]
    );
}

#[test]
fn help_shows_the_binary_and_no_command_is_needed() {
    let output = rust_handler().args(["run", "--help"]).output().unwrap();
    let help = text(&output.stdout);
    assert!(output.status.success(), "{help}");
    assert!(help.contains("Usage: rust-handler run"), "{help}");
}

#[test]
fn submit_then_work_on_redis() {
    let server = RedisServer::shared();
    let dir = scratch("rust-handler-redis");
    let name = format!("rust-handler-{}", std::process::id());
    let input = dir.join("numbers.txt");
    std::fs::write(&input, "10\n100\n1000\n").unwrap();
    let on = || {
        let mut command = rust_handler();
        command.args(["--queue", server.url(), "--name", &name]);
        command
    };
    let submit = on()
        .args(["submit", "--keep-receipts"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", text(&submit.stderr));
    let work = on().args(["work", "-j", "2"]).output().unwrap();
    assert!(
        work.status.success(),
        "work exits 0 once drained: {}",
        text(&work.stderr)
    );
    assert_eq!(sorted_lines(&work), ["10\t4", "100\t25", "1000\t168"]);
    // What the function returned is each item's value, from any machine.
    let results = on().args(["results", "--json"]).output().unwrap();
    assert!(results.status.success(), "{}", text(&results.stderr));
    let values: Vec<String> = text(&results.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["value"].to_string())
        .collect();
    assert_eq!(
        values,
        [
            r#"{"n":10,"primes":4}"#,
            r#"{"n":100,"primes":25}"#,
            r#"{"n":1000,"primes":168}"#
        ]
    );
    let status = on().args(["status", "--json"]).output().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (
            value["ready"].as_u64(),
            value["in_flight"].as_u64(),
            value["dead"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{value}"
    );
}

#[test]
fn run_on_redis_starts_workers_that_run_this_binary() {
    let server = RedisServer::shared();
    let dir = scratch("rust-handler-redis-run");
    let name = format!("rust-handler-run-{}", std::process::id());
    let input = dir.join("numbers.txt");
    std::fs::write(&input, "10\n100\n").unwrap();
    let output = rust_handler()
        .args(["--queue", server.url(), "--name", &name, "run"])
        .arg(&input)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(sorted_lines(&output), ["10\t4", "100\t25"]);
}
