//! `--outputs` end to end: the real `runner`, a real redis-server, moto's
//! S3 server; the blog post's job (a file per item) through a SIGKILL
//! storm; bad URLs refused before anything is sent; a large output
//! streamed with flat memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::servers::{PubsubEmulator, RedisServer};
use forloop_tests::stores::S3Server;
use forloop_tests::{children, runner, scratch};

fn unique(test: &str) -> String {
    format!(
        "out-{test}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `runner` on `queue` named `name`, pointed at `s3`.
fn on(queue: &str, name: &str, s3: &S3Server) -> Command {
    let mut command = runner();
    command.args(["--queue", queue, "--name", name]);
    s3.configure(&mut command);
    command
}

/// A stand-in for `yt-dlp -o '{out}/%(id)s.mp4' ID`: writes one "video"
/// per id into the directory it is given, after a short while.
fn fake_ytdlp(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-yt-dlp");
    std::fs::write(
        &path,
        "#!/bin/sh\n# fake-yt-dlp OUTDIR ID\nsleep 0.2\nprintf 'video of %s\\n' \"$2\" > \"$1/$2.mp4\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_blog_post_job_survives_a_sigkill_storm_with_every_video_in_the_bucket_once() {
    let redis = RedisServer::shared();
    let name = unique("blog");
    let s3 = S3Server::shared();
    let here = || on(redis.url(), &name, s3);
    blog_post_storm(&here, "3s", &name.to_lowercase());
}

/// The same on the Pub/Sub emulator: its ledger is kept in sheets, it
/// counts deliveries itself, and its shortest lease is 10 s.
#[test]
fn the_blog_post_job_survives_a_sigkill_storm_on_pubsub_with_every_video_in_the_bucket_once() {
    let host = PubsubEmulator::shared().host();
    let name = unique("blog-ps");
    let queue = format!("pubsub://outputs/{name}");
    let s3 = S3Server::shared();
    let here = || {
        let mut command = runner();
        command
            .args(["--queue", &queue])
            .env("PUBSUB_EMULATOR_HOST", host);
        s3.configure(&mut command);
        command
    };
    let created = here()
        .args(["queue", "create", "--lease", "10s"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    blog_post_storm(&here, "10s", &name.to_lowercase());
    assert!(here().args(["queue", "delete"]).status().unwrap().success());
}

/// The blog post's job (a fake `yt-dlp` writing a video per id) run by
/// three local workers on `on()`'s queue, a worker SIGKILLed every 0.7 s:
/// every video ends in bucket `bucket` once, listed and fetched from
/// another process.
fn blog_post_storm(on: &dyn Fn() -> Command, lease: &str, bucket: &str) {
    let s3 = S3Server::shared();
    s3.bucket(bucket);
    let dir = scratch("outputs-blog");
    let ids: Vec<String> = (0..60).map(|i| format!("vid{i:03}")).collect();
    let input = dir.join("ids.txt");
    std::fs::write(&input, ids.join("\n") + "\n").unwrap();
    let url = format!("s3://{bucket}/videos");
    let mut run = on();
    run.arg("run")
        .arg(&input)
        .args(["--workers", "3", "--concurrency", "2", "--lease", lease])
        .args([
            "--max-restarts",
            "100",
            "--backoff",
            "100ms",
            "--outputs",
            &url,
        ])
        .arg("--")
        .arg(fake_ytdlp(&dir))
        .args(["{out}", "{}"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut run = run.spawn().unwrap();
    // SIGKILL a worker every 700 ms, six times: some die while their
    // command runs, some while they upload, some between upload and ack.
    let started = Instant::now();
    let mut kills = 0;
    while run.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run did not end"
        );
        std::thread::sleep(Duration::from_millis(700));
        let workers = children(run.id());
        if kills < 6 && !workers.is_empty() {
            let victim = workers[kills % workers.len()];
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(victim as i32, libc::SIGKILL);
            }
            kills += 1;
        }
    }
    let output = run.wait_with_output().unwrap();
    let said = stderr(&output);
    assert!(
        output.status.success(),
        "run failed after {kills} kills: {said}"
    );
    assert!(kills >= 3, "only {kills} kills: make the job longer");
    assert!(
        said.contains(&format!("s3://{bucket}/videos/")) && said.contains("manifest.json"),
        "the manifest is named: {said}"
    );

    // From another process: each item done, with its one output's URL.
    let output = on()
        .args(["results", "--json", "--outputs", &url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ids.len());
    for line in &lines {
        assert_eq!(line["state"], "done", "{line}");
        let outputs = line["outputs"].as_array().expect("outputs listed");
        assert_eq!(outputs.len(), 1, "{line}");
        // Redis keeps done items as counts (no receipt, no item text):
        // the outputs come from the store's records, by seq.
        let item = &ids[line["seq"].as_u64().unwrap() as usize];
        assert_eq!(outputs[0]["path"], format!("{item}.mp4"));
        let key = outputs[0]["key"].as_str().unwrap();
        assert_eq!(outputs[0]["url"], format!("s3://{bucket}/{key}"));
        assert_eq!(outputs[0]["size"], format!("video of {item}\n").len());
    }
    // The bucket holds one file per item, its record, and the manifest:
    // nothing a killed attempt left behind.
    let keys = s3.keys(bucket, "videos/");
    let videos = keys.iter().filter(|k| k.ends_with(".mp4")).count();
    let records = keys
        .iter()
        .filter(|k| k.contains("/_forloop/items/"))
        .count();
    assert_eq!((videos, records), (ids.len(), ids.len()), "{keys:#?}");
    assert_eq!(keys.len(), 2 * ids.len() + 1, "{keys:#?}");

    // And any machine can fetch them.
    let fetched = dir.join("fetched");
    let output = on()
        .args(["results", "--outputs", &url, "--download"])
        .arg(&fetched)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let mut contents = BTreeMap::new();
    for folder in std::fs::read_dir(&fetched).unwrap() {
        for file in std::fs::read_dir(folder.unwrap().path()).unwrap() {
            let file = file.unwrap();
            contents.insert(
                file.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(file.path()).unwrap(),
            );
        }
    }
    assert_eq!(contents.len(), ids.len());
    for id in &ids {
        assert_eq!(contents[&format!("{id}.mp4")], format!("video of {id}\n"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_output_stores_stop_run_before_anything_is_sent() {
    let redis = RedisServer::shared();
    let s3 = S3Server::shared();
    let name = unique("bad");
    let dir = scratch("outputs-bad");
    let input = dir.join("ids.txt");
    std::fs::write(&input, "a\nb\n").unwrap();
    for (flags, says) in [
        (
            vec!["--outputs", "s3://no-such-bucket-for-forloop/x"],
            "cannot write the probe object in the output store `s3://no-such-bucket-for-forloop/x`",
        ),
        (vec!["--outputs", "ftp://host/x"], "`ftp://` is not a store"),
        (
            vec!["--outputs", "s3://b/x?key=hunter2"],
            "never from the URL",
        ),
        (vec![], "only --outputs makes"),
    ] {
        let output = on(redis.url(), &name, s3)
            .arg("run")
            .arg(&input)
            .args(&flags)
            .args(["--", "cp", "/dev/null", "{out}/x"])
            .output()
            .unwrap();
        let said = stderr(&output);
        assert!(!output.status.success(), "{flags:?} ran: {said}");
        assert!(said.contains(says), "{flags:?}: {said}");
        assert!(!said.contains("hunter2"), "{said}");
    }
    // Nothing was submitted: the queue has no job.
    let output = on(redis.url(), &name, s3)
        .args(["job", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(!listed.contains(&name), "a job was made: {listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first file named `name` under `dir`.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Peak RSS of `command`'s process (its own, from wait4), with its status.
// Reaped by wait4 itself, which is what gives its own peak RSS.
#[allow(clippy::zombie_processes)]
fn run_measured(mut command: Command) -> (std::process::ExitStatus, u64, String) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unreaped child; the pointers are valid.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32);
    let text = reader.join().unwrap();
    (
        std::process::ExitStatus::from_raw(status),
        usage.ru_maxrss as u64 / 1024,
        text,
    )
}

/// `runner run` of one item whose command makes a `size` sparse file in
/// `{out}` (with `--outputs`) or in a scratch folder (without): its
/// status, peak RSS (MB) and stderr.
fn run_large(dir: &Path, size: &str, outputs: bool) -> (std::process::ExitStatus, u64, String) {
    let mut command = runner();
    command.args(["run", "-"]);
    let target = if outputs {
        command.arg("--outputs").arg(dir.join("store"));
        "{out}/{}.bin".to_string()
    } else {
        format!("{}/{{}}.bin", dir.display())
    };
    command.args(["--", "truncate", "-s", size, &target]);
    let input = dir.join("items.txt");
    std::fs::write(&input, "large\n").unwrap();
    command.stdin(std::fs::File::open(&input).unwrap());
    run_measured(command)
}

/// Memory stays flat as files grow: the runner that uploads a 128 MiB
/// output peaks within a part (8 MiB) of the same run with a 16 MiB one,
/// and under 100 MB.
#[test]
fn a_128_mib_output_is_streamed_with_flat_memory() {
    let dir = scratch("outputs-large");
    let (status, baseline, said) = run_large(&dir, "0", false);
    assert!(status.success(), "{said}");
    let (status, small, said) = run_large(&dir, "16M", true);
    assert!(status.success(), "{said}");
    let (status, peak, said) = run_large(&dir, "128M", true);
    assert!(status.success(), "{said}");
    let file = find(&dir.join("store"), "large.bin")
        .unwrap_or_else(|| panic!("no large.bin stored: {said}"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 128 << 20);
    eprintln!(
        "peak RSS: {baseline} MB keeping nothing, {small} MB uploading 16 MiB, {peak} MB uploading 128 MiB"
    );
    assert!(
        peak <= small + 8 && peak < 100,
        "peak RSS {peak} MB uploading 128 MiB against {small} MB uploading 16 MiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
