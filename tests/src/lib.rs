//! Shared helpers for forloop's end-to-end tests: finding the `runner`
//! binary, scratch directories, and reading what the `record` helper wrote.
#![deny(missing_docs)]

pub mod servers;

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
        "{} is missing: build it first with `cargo build -p forloop-runner` (scripts/test does)",
        bin.display()
    );
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
