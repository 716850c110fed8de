//! Interop with AWS's own Python SDK (PyPI boto3) on the fauxqs emulator:
//! items `runner submit` sends are plain bodies boto3 reads unchanged, and
//! messages a boto3 producer sends are processed by `runner work`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use forloop_tests::servers::SqsEmulator;
use forloop_tests::{read_records, runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
}

fn python(args: &[&str]) -> Output {
    let mut command = Command::new("python3");
    command.args(args);
    SqsEmulator::shared().configure(&mut command);
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed (is boto3 installed? `pip install boto3`, scripts/test does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn on(name: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", "sqs", "--name", name])
        .env("FORLOOP_SQS_STALENESS", "1s");
    SqsEmulator::shared().configure(&mut command);
    command
}

fn create(name: &str) {
    let output = on(name)
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
fn ids_sent_by_boto3_are_all_processed_by_runner_work() {
    let name = format!("interop-in-{}", std::process::id());
    create(&name);
    let dir = scratch("sqs-interop-in");
    let ids: Vec<String> = (0..50).map(|i| format!("yt-{i:03}")).collect();
    let file = dir.join("youtube-ids");
    std::fs::write(&file, ids.join("\n")).unwrap();
    let sent = python(&[
        script("sqs_send.py").to_str().unwrap(),
        &name,
        file.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&sent.stdout).trim(), "50");
    // boto3's items carry no job: `status` names the rule that ends the
    // workers for them.
    let status = on(&name).args(["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["end_rule"], "backlog", "{json}");
    assert_eq!(json["jobs"], serde_json::json!([]), "{json}");

    let out = dir.join("out.jsonl");
    let work = on(&name)
        .args(["work", "--concurrency", "4", "--"])
        .args([RECORD, out.to_str().unwrap(), "{}"])
        .output()
        .unwrap();
    assert!(
        work.status.success(),
        "{}",
        String::from_utf8_lossy(&work.stderr)
    );
    let records = read_records(&out);
    assert!(
        records.iter().all(|r| r.args == [r.item.clone()]),
        "{records:?}"
    );
    let seen: BTreeSet<String> = records.into_iter().map(|r| r.item).collect();
    assert_eq!(seen, ids.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn items_submitted_by_runner_reach_boto3_unchanged() {
    let name = format!("interop-out-{}", std::process::id());
    create(&name);
    let dir = scratch("sqs-interop-out");
    let items = [
        "plain",
        "with spaces",
        "it's \"quoted\"",
        "naïve café ☕",
        "$(not a shell)",
    ];
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n")).unwrap();
    let submit = on(&name).arg("submit").arg(&input).output().unwrap();
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );

    let read = python(&[script("sqs_receive.py").to_str().unwrap(), &name, "5"]);
    let got: BTreeSet<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            // The item itself is unchanged; runner adds only its job and
            // position, which other programs may ignore.
            let attributes = value["attributes"].as_object().unwrap();
            let keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
            assert_eq!(keys, ["forloop-job", "forloop-seq"], "{value}");
            value["body"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        got,
        items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
}
