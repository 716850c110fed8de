//! What `f` says, kept: `--capture` (each attempt's stdout and stderr in
//! the output store), values (a `--serve` reply's, the Python helper's
//! return value; small ones in the receipt, larger ones in the store) and a
//! Python exception's traceback in the item's record. The real `runner`,
//! on the memory queue and on a real redis-server, with a local store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use forloop_tests::servers::RedisServer;
use forloop_tests::{runner, scratch};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unique(test: &str) -> String {
    format!(
        "values-{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// A `runner` on `redis`'s queue `name`, the Python helper on its path.
fn on_redis(redis: &RedisServer, name: &str) -> Command {
    let mut command = runner();
    command
        .args(["--queue", redis.url(), "--name", name])
        .env("PYTHONPATH", root().join("python"));
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The job's manifest in a local store, by item.
fn manifest(store: &Path, job: &str) -> serde_json::Value {
    let path = store.join(job).join("_forloop/manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no manifest at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn record<'a>(manifest: &'a serde_json::Value, item: &str) -> &'a serde_json::Value {
    manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item"] == item)
        .unwrap_or_else(|| panic!("no record of {item}: {manifest:#}"))
}

/// The content of a captured stream a record lists.
fn captured(store: &Path, record: &serde_json::Value, stream: &str) -> Vec<u8> {
    let kept = record["captured"]
        .as_array()
        .unwrap_or_else(|| panic!("nothing captured: {record:#}"))
        .iter()
        .find(|c| c["stream"] == stream)
        .unwrap_or_else(|| panic!("no {stream}: {record:#}"));
    std::fs::read(store.join(kept["key"].as_str().unwrap())).unwrap()
}

/// A command that says which item and attempt it runs, on both streams,
/// and fails `bad` always and `flaky` on its first attempt.
const SAYS: &str = r#"echo "out $1 attempt $FORLOOP_ATTEMPT"; echo "err $1 attempt $FORLOOP_ATTEMPT" >&2
case "$1" in bad) exit 3;; flaky) [ "$FORLOOP_ATTEMPT" -gt 1 ] || exit 4;; esac"#;

#[test]
fn capture_keeps_each_items_stdout_and_stderr_and_a_dead_items_last_attempt() {
    let dir = scratch("values-capture");
    let store = dir.join("store");
    let job = unique("capture");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nflaky\nbad\n").unwrap();
    let output = runner()
        .args([
            "run",
            "--job",
            &job,
            "--max-attempts",
            "2",
            "--backoff",
            "10ms",
        ])
        .arg(&input)
        .arg("--outputs")
        .arg(&store)
        .args([
            "--capture",
            "stdout,stderr",
            "--",
            "sh",
            "-c",
            SAYS,
            "sh",
            "{}",
        ])
        .output()
        .unwrap();
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "one item is dead: {said}");
    // The streams still pass through to the worker's own.
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("out a attempt 1"), "{printed}");
    assert!(said.contains("err a attempt 1"), "{said}");

    let manifest = manifest(&store, &job);
    let a = record(&manifest, "a");
    assert_eq!(captured(&store, a, "stdout"), b"out a attempt 1\n");
    assert_eq!(captured(&store, a, "stderr"), b"err a attempt 1\n");
    assert!(a.get("failed").is_none(), "{a:#}");
    // A redone item keeps the output of the attempt that succeeded.
    let flaky = record(&manifest, "flaky");
    assert_eq!(captured(&store, flaky, "stdout"), b"out flaky attempt 2\n");
    assert_eq!(flaky["attempt"], 2);
    // A dead item keeps its last attempt's output, and says why it failed.
    let bad = record(&manifest, "bad");
    assert_eq!(captured(&store, bad, "stdout"), b"out bad attempt 2\n");
    assert_eq!(captured(&store, bad, "stderr"), b"err bad attempt 2\n");
    assert_eq!(bad["failed"], "exit code 3", "{bad:#}");
    let kept = &bad["captured"][0];
    assert_eq!(kept["size"], "out bad attempt 2\n".len());
    assert_eq!(kept["written"], "out bad attempt 2\n".len());
    // One set per item: a record and its two streams, nothing else.
    let outputs: Vec<_> = std::fs::read_dir(store.join(&job).join("_forloop/output"))
        .unwrap()
        .collect();
    assert_eq!(outputs.len(), 6, "{outputs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// On a shared queue, from another process: `results --json --outputs`
/// lists each item's kept streams with their URLs (a dead item's last
/// attempt's too), and `--download` fetches them beside the files.
#[test]
fn results_list_and_download_the_kept_streams_on_redis() {
    let redis = RedisServer::shared();
    let dir = scratch("values-capture-redis");
    let store = dir.join("store");
    let name = unique("capture-redis");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nbad\n").unwrap();
    let on = || on_redis(redis, &name);
    let output = on()
        .args([
            "run",
            "--job",
            &name,
            "--workers",
            "2",
            "--max-attempts",
            "2",
        ])
        .args(["--backoff", "10ms"])
        .arg(&input)
        .arg("--outputs")
        .arg(&store)
        .args([
            "--capture",
            "stdout,stderr",
            "--",
            "sh",
            "-c",
            SAYS,
            "sh",
            "{}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "bad is dead: {}",
        stderr(&output)
    );
    let fetched = dir.join("fetched");
    let output = on()
        .args(["results", "--json", "--outputs"])
        .arg(&store)
        .arg("--download")
        .arg(&fetched)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    let read = |line: &serde_json::Value, stream: &str| {
        let kept = line["captured"]
            .as_array()
            .unwrap_or_else(|| panic!("no captured streams: {line:#}"))
            .iter()
            .find(|c| c["stream"] == stream)
            .unwrap_or_else(|| panic!("no {stream}: {line:#}"));
        let url = kept["url"].as_str().unwrap();
        std::fs::read_to_string(url.strip_prefix("file://").unwrap()).unwrap()
    };
    assert_eq!(lines[0]["state"], "done");
    assert_eq!(read(&lines[0], "stdout"), "out a attempt 1\n");
    assert_eq!(read(&lines[0], "stderr"), "err a attempt 1\n");
    assert_eq!(lines[1]["state"], "dead");
    assert_eq!(read(&lines[1], "stdout"), "out bad attempt 2\n");
    let mut names: Vec<String> = std::fs::read_dir(&fetched)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('.'))
        .map(|n| n.split_once('-').unwrap().0.to_string() + "." + n.rsplit('.').next().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "000000000.stderr",
            "000000000.stdout",
            "000000001.stderr",
            "000000001.stdout"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stream_past_64_mib_is_cut_and_its_record_says_how_much_was_written() {
    let dir = scratch("values-capture-cut");
    let store = dir.join("store");
    let job = unique("cut");
    let written: u64 = (64 << 20) + 1000;
    let mut run = runner();
    run.args(["run", "-", "--job", &job])
        .arg("--outputs")
        .arg(&store)
        .args(["--capture", "stdout", "--", "sh", "-c"])
        .arg(format!("head -c {written} /dev/zero"))
        .arg("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = run.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"big\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = manifest(&store, &job);
    let big = record(&manifest, "big");
    let kept = &big["captured"][0];
    assert_eq!(
        (kept["cut"].as_bool(), kept["written"].as_u64()),
        (Some(true), Some(written))
    );
    let body = captured(&store, big, "stdout");
    let marker = format!(
        "\n[forloop: stdout cut at {} bytes; {written} bytes were written in all]\n",
        64 << 20
    );
    assert_eq!(body.len(), (64 << 20) + marker.len());
    assert!(body.ends_with(marker.as_bytes()));
    assert!(body[..64 << 20].iter().all(|b| *b == 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capture_is_refused_up_front_without_outputs_or_with_serve() {
    let dir = scratch("values-capture-refused");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\n").unwrap();
    for (flags, says) in [
        (
            vec!["--capture", "stdout"],
            "which only --outputs names: pass --outputs URL",
        ),
        (
            vec!["--capture", "stderr", "--outputs", "store", "--serve"],
            "--capture keeps the output of a command run per item",
        ),
        (vec!["--capture", "stdin"], "invalid value 'stdin'"),
    ] {
        let output = runner()
            .current_dir(&dir)
            .arg("run")
            .arg(&input)
            .args(&flags)
            .args(["--", "cat"])
            .output()
            .unwrap();
        let said = stderr(&output);
        assert!(!output.status.success(), "{flags:?} ran: {said}");
        assert!(!said.contains("items:"), "{flags:?} ran items: {said}");
        assert!(said.contains(says), "{flags:?}: {said}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker on the shipped Python helper: returns a small value, a 3 KiB
/// one, or fails with a traceback two calls deep.
const WORKER: &str = r#"
from forloop_worker import serve

def parse(item):
    raise ValueError(f"cannot parse {item!r}")

def handle(item):
    if item == "boom":
        parse(item)
    if item == "large":
        return {"item": item, "blob": "x" * 3000}
    if item == "nothing":
        return None
    return {"item": item, "frames": len(item), "ok": True}

serve(handle)
"#;

fn python_worker(dir: &Path) -> PathBuf {
    let path = dir.join("worker.py");
    std::fs::write(&path, WORKER).unwrap();
    path
}

#[test]
fn serve_values_and_tracebacks_reach_results_on_redis() {
    let redis = RedisServer::shared();
    let dir = scratch("values-redis");
    let store = dir.join("store");
    let name = unique("redis");
    let input = dir.join("items.txt");
    std::fs::write(&input, "small\nlarge\nnothing\nboom\n").unwrap();
    let on = || on_redis(redis, &name);
    for format in ["--serve", "--serve=json"] {
        let job = format!("{name}{}", format.len());
        let output = on()
            .args([
                "run",
                "--job",
                &job,
                "--keep-receipts",
                "--max-attempts",
                "2",
            ])
            .args(["--backoff", "10ms", "--workers", "2", format])
            .arg(&input)
            .arg("--outputs")
            .arg(&store)
            .args(["--", "python3"])
            .arg(python_worker(&dir))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "boom is dead: {}",
            stderr(&output)
        );

        // From another process: the ledger's receipts, the store's records.
        let output = on()
            .args(["results", "--json", "--job", &job, "--outputs"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let lines = json_lines(&output);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let small = &lines[0];
        assert_eq!(small["state"], "done");
        assert_eq!(
            small["value"],
            serde_json::json!({"item": "small", "frames": 5, "ok": true}),
            "{format}: {small:#}"
        );
        // Over 1 KiB: in the store, the receipt naming it.
        let large = &lines[1];
        assert_eq!(large["value"], serde_json::Value::Null, "{large:#}");
        let url = large["value_url"]
            .as_str()
            .expect("a URL for a large value");
        let path = url.strip_prefix("file://").expect("a local store");
        let kept: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(kept["blob"].as_str().map(str::len), Some(3000));
        assert_eq!(
            lines[2]["value"],
            serde_json::Value::Null,
            "None is no value"
        );
        // The exception: its message as the reason, its traceback as the
        // tail, down to the frame that raised it.
        let boom = &lines[3];
        assert_eq!(boom["state"], "dead");
        assert!(
            boom["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("ValueError: cannot parse 'boom'")),
            "{boom:#}"
        );
        let trace = boom["stderr_tail"].as_str().unwrap_or_default();
        assert!(
            trace.starts_with("Traceback (most recent call last):")
                && trace.contains("in handle")
                && trace.contains("in parse")
                && trace.ends_with("ValueError: cannot parse 'boom'\n"),
            "{format}: {trace}"
        );

        // The table shows the value too, and a large one's URL.
        let output = on().args(["results", "--job", &job]).output().unwrap();
        let table = String::from_utf8_lossy(&output.stdout);
        assert!(
            table
                .lines()
                .next()
                .unwrap()
                .ends_with("\tstderr_tail\tvalue"),
            "{table}"
        );
        assert!(
            table.contains(r#"{"frames":5,"item":"small","ok":true}"#),
            "{table}"
        );
        assert!(table.contains(url), "{table}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_kept_receipts_values_come_from_the_stores_records() {
    let redis = RedisServer::shared();
    let dir = scratch("values-records");
    let store = dir.join("store");
    let name = unique("records");
    let input = dir.join("items.txt");
    std::fs::write(&input, "small\nlarge\n").unwrap();
    let on = || on_redis(redis, &name);
    let output = on()
        .args(["run", "--job", &name, "--serve"])
        .arg(&input)
        .arg("--outputs")
        .arg(&store)
        .args(["--", "python3"])
        .arg(python_worker(&dir))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = on()
        .args(["results", "--json", "--job", &name, "--outputs"])
        .arg(&store)
        .output()
        .unwrap();
    let lines = json_lines(&output);
    assert_eq!(lines[0]["value"]["frames"], 5, "{lines:#?}");
    assert!(
        lines[1]["value_url"]
            .as_str()
            .is_some_and(|u| u.ends_with(".json") && u.contains("/_forloop/values/")),
        "{lines:#?}"
    );
    // The manifest, a pandas read's start, holds every value too.
    let manifest = manifest(&store, &name);
    assert_eq!(record(&manifest, "small")["value"]["frames"], 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_value_too_large_for_the_receipt_without_outputs_fails_naming_outputs() {
    let dir = scratch("values-large");
    let input = dir.join("items.txt");
    std::fs::write(&input, "small\nlarge\n").unwrap();
    let output = runner()
        .args(["run", "--serve"])
        .arg(&input)
        .env("PYTHONPATH", root().join("python"))
        .args(["--", "python3"])
        .arg(python_worker(&dir))
        .output()
        .unwrap();
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("2 items: 1 done, 1 dead-lettered"), "{said}");
    assert!(
        said.contains("over the 1024 bytes a receipt keeps: run with --outputs URL"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ok VALUE` from any serve process (here five lines of shell), and a
/// `Command` so the test reads as the user's line.
#[test]
fn a_shell_serve_process_answers_ok_value_on_the_memory_queue() {
    let dir = scratch("values-shell");
    let store = dir.join("store");
    let job = unique("shell");
    let input = dir.join("items.txt");
    std::fs::write(&input, "3\n40\n").unwrap();
    let mut run: Command = runner();
    run.args(["run", "--job", &job, "--serve"])
        .arg(&input)
        .arg("--outputs")
        .arg(&store)
        .args([
            "--",
            "sh",
            "-c",
            r#"while read -r n; do echo "ok {\"n\": $n, \"double\": $((n * 2))}"; done"#,
        ]);
    let output = run.output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = manifest(&store, &job);
    assert_eq!(
        record(&manifest, "40")["value"],
        serde_json::json!({"n": 40, "double": 80})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--capture` reaches pods as `--outputs` does: in their environment.
#[test]
fn capture_reaches_the_pods_of_a_launch() {
    let output = runner()
        .args(["--queue", "redis://127.0.0.1:1/0", "--cluster", "gke"])
        .args([
            "launch",
            "--dry-run",
            "--image",
            "img",
            "--outputs",
            "s3://b/p",
        ])
        .args(["--capture", "stdout,stderr", "--", "echo", "{}"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let yaml = String::from_utf8_lossy(&output.stdout);
    assert!(
        yaml.contains("- name: \"FORLOOP_CAPTURE\"\n          value: \"stdout,stderr\""),
        "{yaml}"
    );
}
