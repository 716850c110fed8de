//! Interop with Google's own Python client (PyPI google-cloud-pubsub) on the
//! emulator: the blog post's flow in both directions.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use forloop_tests::servers::PubsubEmulator;
use forloop_tests::{read_records, runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");
const PROJECT: &str = "interop";

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
}

fn python(args: &[&str]) -> Output {
    let output = Command::new("python3")
        .args(args)
        .env("PUBSUB_EMULATOR_HOST", PubsubEmulator::shared().host())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed (is google-cloud-pubsub installed? `pip install google-cloud-pubsub`, scripts/test does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn on(queue: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", queue])
        .env("PUBSUB_EMULATOR_HOST", PubsubEmulator::shared().host());
    command
}

fn create(queue: &str) {
    let output = on(queue)
        .args(["queue", "create", "--lease", "10s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn ids_published_by_the_python_client_are_all_processed_by_runner_work() {
    let name = format!("interop-in-{}", std::process::id());
    let queue = format!("pubsub://{PROJECT}/{name}");
    create(&queue);
    let dir = scratch("interop-in");
    let ids: Vec<String> = (0..50).map(|i| format!("yt-{i:03}")).collect();
    let file = dir.join("youtube-ids");
    std::fs::write(&file, ids.join("\n")).unwrap();
    let published = python(&[
        script("publish_ids.py").to_str().unwrap(),
        PROJECT,
        &name,
        file.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&published.stdout).trim(), "50");

    let out = dir.join("out.jsonl");
    let work = on(&queue)
        .args(["work", "--concurrency", "4", "--idle-window", "3s", "--"])
        .args([RECORD, out.to_str().unwrap(), "{}"])
        .output()
        .unwrap();
    assert!(
        work.status.success(),
        "{}",
        String::from_utf8_lossy(&work.stderr)
    );
    let seen: BTreeSet<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(seen, ids.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn items_submitted_by_runner_reach_the_python_client_unchanged() {
    let name = format!("interop-out-{}", std::process::id());
    let queue = format!("pubsub://{PROJECT}/{name}");
    create(&queue);
    let dir = scratch("interop-out");
    let items = [
        "plain",
        "with spaces",
        "it's \"quoted\"",
        "naïve café ☕",
        "$(not a shell)",
    ];
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let submit = on(&queue).arg("submit").arg(&input).output().unwrap();
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );

    let read = python(&[
        script("read_items.py").to_str().unwrap(),
        PROJECT,
        &format!("{name}-workers"),
        "5",
    ]);
    let got: BTreeSet<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            // The item itself is unchanged; runner adds only its job and
            // position, which other programs may ignore.
            let attributes = value["attributes"].as_object().unwrap();
            let keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
            assert_eq!(keys, ["forloop-job", "forloop-seq"], "{value}");
            value["data"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        got,
        items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
}
