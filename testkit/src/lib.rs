//! forloop's test kit: what driver crates and the end-to-end tests share.
//!
//! - [`servers`]: real test servers (redis-server, the Pub/Sub emulator,
//!   fauxqs), or a clear failure that says how to start one.
//! - [`guard`]: cleanup on drop for processes and directories.
//! - [`proxy`]: a loopback TCP proxy that delays, black-holes and cuts
//!   connections between a worker and its server.
//! - [`fake_kube`]: a loopback Kubernetes API whose kubelet runs pods as
//!   processes.
//! - [`scenarios`]: end-to-end scenarios written once, run on every backend.
//! - [`jobs`]: the same for jobs: exact end, stranded items, resume.
//! - here: finding the `runner` binary, scratch directories, and reading what
//!   the `record` helper wrote.
//!
//! It depends on no driver and not on the runner, so a driver crate's tests
//! build only that driver.
#![deny(missing_docs)]

pub mod fake_kube;
pub mod guard;
pub mod jobs;
pub mod proxy;
pub mod scenarios;
pub mod servers;
pub mod shared_jobs;
pub mod stores;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `runner` binary of this build. Tests run it as a real process.
///
/// Built by `cargo build --bins` (the test script does that first); a clear
/// panic says so when it is missing.
pub fn runner_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/runner
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("runner");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins --all-features` (scripts/test does)",
        bin.display()
    );
    // A binary built for one crate alone lacks the drivers these tests use;
    // say so once, clearly, instead of failing on "unknown queue" later.
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let output = Command::new(&bin)
            .args(["--queue", "forloop-probe", "status"])
            .output()
            .expect("run the runner binary");
        let listing = String::from_utf8_lossy(&output.stderr);
        assert!(
            listing.contains("pubsub") && listing.contains("redis") && listing.contains("sqs"),
            "{} was built without the redis, pubsub and sqs drivers: rebuild it with \
             `cargo build --workspace --bins --all-features` (scripts/test does). It said: {listing}",
            bin.display()
        );
    });
    bin
}

/// A `runner` command with a clean forloop environment.
pub fn runner() -> Command {
    let mut command = Command::new(runner_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("FORLOOP_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command
}

/// A fresh empty directory under the system temp dir.
pub fn scratch(test: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "forloop-{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One line the `record` helper wrote: what one task saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Its command-line arguments after the record file.
    pub args: Vec<String>,
    /// `FORLOOP_ITEM`.
    pub item: String,
    /// `FORLOOP_ATTEMPT`.
    pub attempt: u32,
}

/// Every task the `record` helper saw, in the order they finished.
pub fn read_records(path: &Path) -> Vec<Recorded> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("record line is JSON");
            Recorded {
                args: value["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .map(|a| a.as_str().expect("arg").to_string())
                    .collect(),
                item: value["item"].as_str().expect("item").to_string(),
                attempt: value["attempt"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("attempt"),
            }
        })
        .collect()
}

/// The direct children of `pid` (a launcher's worker processes).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// Run `launch` (a `runner launch` whose workers run the `record` helper
/// into `out` with `concurrency` tasks each), SIGKILL one of its workers
/// every 1.5 s (ten times at most) until it exits, then check the contract: it exits 0, every
/// item was processed, and duplicates stay within what the killed workers
/// held: their running tasks and the finished items whose ack had not
/// landed (kills × 2 × concurrency: with a job, each ack waits for its
/// receipt, two publishes on SQS and Pub/Sub, while the slot takes the next
/// item). Returns (kills, duplicates).
pub fn kill_storm(
    mut launch: Command,
    out: &Path,
    items: &[String],
    concurrency: usize,
) -> (usize, usize) {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut launcher = launch
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the launcher");
    let mut kills = 0;
    let mut seed = u64::from(std::process::id());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = launcher.try_wait().expect("launcher status") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = launcher.kill();
            panic!("the job did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(1500));
        let workers = children(launcher.id());
        // Ten kills, then let the job finish: on a queue that cannot count
        // (Pub/Sub) each new worker needs its whole idle window to exit.
        if kills < 10
            && !workers.is_empty()
            && launcher.try_wait().expect("launcher status").is_none()
        {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(
                    workers[(seed >> 33) as usize % workers.len()] as i32,
                    libc::SIGKILL,
                );
            }
            kills += 1;
        }
    };
    let output = launcher.wait_with_output().expect("launcher output");
    assert!(
        status.success(),
        "launch must exit 0 after the drain: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        kills >= 5,
        "only {kills} kills happened before the job finished; make it longer"
    );
    // Commands of killed workers finish on their own (no PDEATHSIG, see
    // docs/BENCHMARKS.md); give them time to record.
    std::thread::sleep(Duration::from_millis(300));
    let records = read_records(out);
    let seen: std::collections::BTreeSet<&str> = records.iter().map(|r| r.item.as_str()).collect();
    let missing: Vec<_> = items
        .iter()
        .filter(|i| !seen.contains(i.as_str()))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "items never processed: {missing:?}");
    let duplicates = records.len() - items.len();
    assert!(
        duplicates <= kills * 2 * concurrency,
        "{duplicates} duplicates after {kills} kills of workers running {concurrency} tasks each"
    );
    eprintln!(
        "{kills} kills, {duplicates} duplicates, {:?}",
        started.elapsed()
    );
    (kills, duplicates)
}
