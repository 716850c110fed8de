//! `record FILE ARG...`: the task the end-to-end tests run. Appends one JSON
//! line (its arguments, FORLOOP_ITEM, FORLOOP_ATTEMPT) to FILE with a single
//! O_APPEND write, so concurrent tasks never interleave.
//!
//! Behaviour switches, by environment:
//! - RECORD_FAIL=ITEM: exit 3 when FORLOOP_ITEM is ITEM.
//! - RECORD_FAIL_ALL=1: exit 1 for every item, after a line on stderr (a
//!   site that answers 429 to every request).
//! - RECORD_SLEEP_MS=N: sleep N ms before recording (a long task).
//! - RECORD_STARTED=FILE: append the item to FILE when the task starts.

use std::io::Write;

fn append(path: &str, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open record file");
    file.write_all(line.as_bytes()).expect("write record");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().expect("usage: record FILE ARG...");
    let args: Vec<String> = args.collect();
    let item = std::env::var("FORLOOP_ITEM").unwrap_or_default();
    let attempt = std::env::var("FORLOOP_ATTEMPT").unwrap_or_default();
    if let Ok(started) = std::env::var("RECORD_STARTED") {
        append(&started, &format!("{}\n", serde_json::json!(item)));
    }
    if let Some(ms) = std::env::var("RECORD_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if std::env::var_os("RECORD_FAIL_ALL").is_some() {
        eprintln!("HTTP 429 Too Many Requests for {item}");
        std::process::exit(1);
    }
    if std::env::var("RECORD_FAIL").is_ok_and(|fail| fail == item) {
        std::process::exit(3);
    }
    let line = serde_json::json!({ "args": args, "item": item, "attempt": attempt });
    append(&file, &format!("{line}\n"));
}
