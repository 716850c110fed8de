//! `--outputs`: a worker killed at each moment of an item's upload, one
//! moment per case, each caught on a real store rather than hoped for in a
//! storm. The real `runner`, a real redis-server, moto's S3 server behind
//! the test kit's fault proxy (every chunk delayed, so each store call is
//! slow enough to kill the worker between two of them).
//!
//! Each case: one item, whose command writes three files of fresh random
//! content (so two attempts never write the same bytes); worker A is
//! SIGKILLed at the moment, seen in the bucket; worker B (straight to the
//! store) redoes the item. Then: the job counts the item once, done; the
//! store holds exactly B's set (three files and one record, attempt 2)
//! and each file's bytes hash to what the record says.
//!
//! After the receipt and before the ack is not a moment on Redis: its
//! receipt and its ack are one script call, landing together or not at all.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::proxy::{Fault, FaultProxy};
use forloop_tests::servers::RedisServer;
use forloop_tests::stores::S3Server;
use forloop_tests::{runner, scratch};
use sha2::{Digest, Sha256};

/// When worker A dies.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// `f` runs: its files partly written in its own directory.
    WhileFRuns,
    /// Some of the item's files are in the store, not all.
    MidUpload,
    /// Every file in the store, the item's record not yet.
    BeforeTheRecord,
    /// The record in the store; the receipt and the ack not yet.
    AfterTheRecord,
}

fn unique(test: &str) -> String {
    format!(
        "mom-{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// `f`: marks that it started, then writes three files of random content
/// into the directory it is given, a moment apart.
fn writer(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("write-three");
    std::fs::write(
        &path,
        "#!/bin/sh\n# write-three MARKER OUTDIR\ntouch \"$1\"\nfor f in a b c; do\n  \
         head -c 64 /dev/urandom | od -An -tx1 > \"$2/$f.txt\"\n  sleep 0.3\ndone\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One object's bytes, straight from moto.
fn get(s3: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s3.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\r\n",
        s3.port()
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP reply");
    let head = String::from_utf8_lossy(&reply[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "GET {key}: {head}");
    reply[split + 4..].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kill(child: &mut Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

fn killed_at(moment: Moment) {
    let redis = RedisServer::shared();
    let s3 = S3Server::shared();
    let name = unique(&format!("{moment:?}").to_lowercase());
    let bucket = name.to_lowercase();
    s3.bucket(&bucket);
    let dir = scratch("outputs-moments");
    let items = dir.join("items.txt");
    std::fs::write(&items, "clip-1\n").unwrap();
    let url = format!("s3://{bucket}/out");
    let marker = dir.join("started");
    let f = writer(&dir);

    let on = |endpoint: &str| {
        let mut command = runner();
        command.args(["--queue", redis.url(), "--name", &name]);
        s3.configure(&mut command);
        command.env("AWS_ENDPOINT_URL_S3", endpoint);
        command
    };
    let submit = on(s3.endpoint())
        .args(["submit", "--job", "j"])
        .arg(&items)
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let work = |endpoint: &str| {
        let mut command = on(endpoint);
        command
            .args(["work", "--job", "j", "--lease", "2s", "--backoff", "100ms"])
            .args(["--outputs", &url, "--"])
            .arg(&f)
            .arg(&marker)
            .arg("{out}")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };

    // Worker A reaches the store through the proxy: every chunk 150 ms
    // late, so a put takes at least 300 ms and the bucket can be watched
    // between two of its calls.
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", s3.port()));
    proxy.set(Fault::Delay(Duration::from_millis(150)));
    let mut a = work(&format!("http://{}", proxy.address()))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let seen = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{moment:?} was never seen; the bucket holds {:?}",
            s3.keys(&bucket, "out/")
        );
        assert!(
            a.try_wait().unwrap().is_none(),
            "worker A ended before {moment:?}"
        );
        let keys = s3.keys(&bucket, "out/");
        let files = keys.iter().filter(|k| k.ends_with(".txt")).count();
        let record = keys.iter().any(|k| k.contains("/_forloop/items/"));
        let now = match moment {
            Moment::WhileFRuns => marker.exists() && files == 0,
            Moment::MidUpload => (1..3).contains(&files) && !record,
            Moment::BeforeTheRecord => files == 3 && !record,
            Moment::AfterTheRecord => record,
        };
        if now {
            kill(&mut a);
            break keys;
        }
        std::thread::sleep(Duration::from_millis(10));
    };

    // Worker B redoes the item once A's lease lapses, and ends with the job.
    let b = work(s3.endpoint()).output().unwrap();
    assert!(
        b.status.success(),
        "worker B after {moment:?} (bucket then: {seen:?}): {}",
        String::from_utf8_lossy(&b.stderr)
    );

    // Counted once, done.
    let results = on(s3.endpoint())
        .args(["results", "--json", "--job", "j", "--outputs", &url])
        .output()
        .unwrap();
    assert!(results.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&results.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["state"], "done", "{lines:?}");

    // Exactly one set: three files and their record, B's.
    let keys = s3.keys(&bucket, "out/");
    let (records, files): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .filter(|k| !k.ends_with("manifest.json"))
        .partition(|k| k.contains("/_forloop/items/"));
    assert_eq!(records.len(), 1, "after {moment:?}: {keys:#?}");
    assert_eq!(files.len(), 3, "after {moment:?}: {keys:#?}");
    let record: serde_json::Value = serde_json::from_slice(&get(s3, &bucket, records[0])).unwrap();
    assert_eq!(record["attempt"], 2, "B's record: {record}");
    let listed = record["files"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{record}");
    for file in listed {
        let key = file["key"].as_str().unwrap();
        assert!(files.iter().any(|k| *k == key), "{key} not in {files:?}");
        let bytes = get(s3, &bucket, key);
        assert_eq!(
            hex(&Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap(),
            "after {moment:?}, {key} is not the bytes its record names"
        );
        assert_eq!(bytes.len() as u64, file["size"].as_u64().unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_while_f_runs_the_item_is_redone_into_one_set() {
    killed_at(Moment::WhileFRuns);
}

#[test]
fn killed_mid_upload_the_item_is_redone_into_one_set() {
    killed_at(Moment::MidUpload);
}

#[test]
fn killed_after_the_files_before_the_record_the_item_is_redone_into_one_set() {
    killed_at(Moment::BeforeTheRecord);
}

#[test]
fn killed_after_the_record_before_the_ack_the_item_is_redone_into_one_set() {
    killed_at(Moment::AfterTheRecord);
}
