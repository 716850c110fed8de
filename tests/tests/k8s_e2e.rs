//! `runner --cluster gke` end to end: the real binary and a real Redis, with
//! a fake API server whose "kubelet" runs each pod of the Job as a local
//! process from the manifest's command and env (tests/src/fake_kube.rs).
//! `--dry-run` output is checked with kubernetes-validate --strict.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::fake_kube::FakeCluster;
use forloop_tests::scenarios::{signal, wait_for_lines};
use forloop_tests::servers::RedisServer;
use forloop_tests::{read_records, runner, runner_bin, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn unique(test: &str) -> String {
    // Job names must be RFC 1123 labels.
    format!("k8s-{test}-{}", std::process::id())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_items(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("items.txt");
    let items: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
    std::fs::write(&path, items.join("\n") + "\n").unwrap();
    path
}

/// `runner --cluster gke SUBCOMMAND --kubeconfig FAKE` on the Redis queue.
fn on_cluster(url: &str, name: &str, subcommand: &str, cluster: &FakeCluster) -> Command {
    let mut command = runner();
    command.args([
        "--queue",
        url,
        "--name",
        name,
        "--cluster",
        "gke",
        subcommand,
    ]);
    command.arg("--kubeconfig").arg(cluster.kubeconfig());
    command
}

fn queue_status(url: &str, name: &str) -> serde_json::Value {
    let output = runner()
        .args(["--queue", url, "--name", name, "status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "status: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn run_on_a_cluster_submits_runs_the_job_and_leaves_nothing() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-run");
    let name = unique("run");
    let out = dir.join("records.jsonl");
    let cluster = FakeCluster::start(runner_bin(), &dir, &[]);
    let items = write_items(&dir, 300);
    let output = on_cluster(redis.url(), &name, "run", &cluster)
        .args(["--image", "forloop-worker:test", "--workers", "3"])
        .args(["--namespace", "batch", "--lease", "10s", "-j", "4"])
        .arg(&items)
        .args(["--", RECORD, out.to_str().unwrap(), "{}"])
        .output()
        .unwrap();
    assert!(output.status.success(), "run failed: {}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("300 items: 300 done, 0 dead-lettered, 0 left"),
        "{text}"
    );
    assert!(text.contains("the Job completed"), "{text}");

    // Every item ran, in the pods the Job described.
    let records = read_records(&out);
    let mut seen: Vec<&str> = records.iter().map(|r| r.item.as_str()).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 300);

    // The manifest: the work-queue shape, settings as env, no flags.
    let created = cluster.created();
    assert_eq!(created.len(), 1);
    let job = &created[0];
    assert_eq!(job["metadata"]["namespace"], "batch");
    assert_eq!(job["spec"]["parallelism"], 3);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "forloop-worker:test");
    assert_eq!(container["command"][0], "runner");
    assert_eq!(container["command"][1], "work");
    let env: std::collections::BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(env["FORLOOP_QUEUE"], redis.url());
    assert_eq!(env["FORLOOP_NAME"], name);
    assert_eq!(env["FORLOOP_LEASE"], "10s");
    assert_eq!(env["FORLOOP_CONCURRENCY"], "4");
    assert_eq!(env["FORLOOP_LOG_FORMAT"], "json");
    assert_eq!(
        job["spec"]["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-spot"],
        "true"
    );

    // Nothing left: the Job was deleted after it completed.
    let requests = cluster.requests();
    let job_path = format!("/apis/batch/v1/namespaces/batch/jobs/{name}");
    assert!(
        requests.contains(&format!("DELETE {job_path}")),
        "{requests:?}"
    );
    assert!(cluster.jobs().is_empty(), "{:?}", cluster.jobs());
    let status = queue_status(redis.url(), &name);
    assert_eq!(
        ["ready", "in_flight", "dead"].map(|k| status[k].as_u64()),
        [Some(0); 3],
        "{status}"
    );
}

#[test]
fn sigint_deletes_the_job_and_the_workers_hand_items_back() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-sigint");
    let name = unique("sigint");
    let out = dir.join("records.jsonl");
    let started = dir.join("started.jsonl");
    let cluster = FakeCluster::start(
        runner_bin(),
        &dir,
        &[
            ("RECORD_SLEEP_MS", "60000"),
            ("RECORD_STARTED", started.to_str().unwrap()),
        ],
    );
    let items = write_items(&dir, 20);
    let child = on_cluster(redis.url(), &name, "run", &cluster)
        .args(["--image", "w:1", "--workers", "2", "-j", "2"])
        .args(["--lease", "60s", "--grace", "1s"])
        .arg(&items)
        .args(["--", RECORD, out.to_str().unwrap(), "{}"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the pods hold items.
    wait_for_lines(
        &started,
        4,
        Duration::from_secs(30),
        "the pods never started tasks",
    );
    signal(child.id(), libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("deleted Job"),
        "{}",
        stderr(&output)
    );
    assert!(cluster.jobs().is_empty());
    // The pods got SIGTERM and gave their items back at once: within a few
    // seconds, against a 60 s lease, nothing is in flight.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = queue_status(redis.url(), &name);
        if status["in_flight"].as_u64() == Some(0) {
            assert_eq!(status["ready"].as_u64(), Some(20), "{status}");
            break;
        }
        assert!(Instant::now() < until, "items still leased: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_preempted_pod_hands_its_items_back_and_the_run_still_succeeds() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-preempt");
    let name = unique("preempt");
    let out = dir.join("records.jsonl");
    let started = dir.join("started.jsonl");
    let cluster = FakeCluster::start(
        runner_bin(),
        &dir,
        &[
            ("RECORD_SLEEP_MS", "2000"),
            ("RECORD_STARTED", started.to_str().unwrap()),
        ],
    );
    let items = write_items(&dir, 16);
    let begun = Instant::now();
    let child = on_cluster(redis.url(), &name, "run", &cluster)
        .args(["--image", "w:1", "--workers", "2", "-j", "2"])
        // A 60 s lease: items come back in time only if they are handed back.
        .args(["--lease", "60s", "--grace", "500ms"])
        .arg(&items)
        .args(["--", RECORD, out.to_str().unwrap(), "{}"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(
        &started,
        4,
        Duration::from_secs(30),
        "the pods never started tasks",
    );
    assert!(cluster.preempt(&name), "no running pod to preempt");
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        begun.elapsed() < Duration::from_secs(50),
        "items waited out their lease"
    );
    assert!(
        text.contains("16 items: 16 done, 0 dead-lettered, 0 left"),
        "{text}"
    );
    assert!(text.contains("1 preempted or evicted"), "{text}");
    // The preempted pod's running items came back and ran again: more
    // starts than items; and the hand-back cost no attempt.
    let records = read_records(&out);
    let mut done: Vec<&str> = records.iter().map(|r| r.item.as_str()).collect();
    done.sort_unstable();
    done.dedup();
    assert_eq!(done.len(), 16);
    let starts = std::fs::read_to_string(&started)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        starts > 16,
        "no item was handed back and retried: {starts} starts"
    );
    assert!(
        records.iter().all(|r| r.attempt == 1),
        "a hand-back was charged as a failed attempt: {:?}",
        records
            .iter()
            .map(|r| (&r.item, &r.attempt))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_job_that_completes_with_items_left_says_so_and_fails() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-left");
    let name = unique("left");
    // The pods work for a job of another queue that is already complete,
    // exit 0, and the Job completes.
    let elsewhere = format!("{name}-elsewhere");
    let one = dir.join("one.txt");
    std::fs::write(&one, "x\n").unwrap();
    let done = runner()
        .args([
            "--queue",
            redis.url(),
            "--name",
            &elsewhere,
            "run",
            "--job",
            "over",
        ])
        .arg(&one)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    let cluster = FakeCluster::start(
        runner_bin(),
        &dir,
        &[("FORLOOP_NAME", &elsewhere), ("FORLOOP_JOB", "over")],
    );
    let items = write_items(&dir, 5);
    let output = on_cluster(redis.url(), &name, "run", &cluster)
        .args(["--image", "w:1"])
        .arg(&items)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("the Job completed"), "{text}");
    assert!(text.contains("5 items are still in the queue"), "{text}");
    assert!(cluster.jobs().is_empty(), "the Job was left behind");
}

#[test]
fn launch_detach_then_cluster_status_scale_and_teardown() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-detach");
    let name = unique("detach");
    let cluster = FakeCluster::start(runner_bin(), &dir, &[("RECORD_SLEEP_MS", "60000")]);
    let items = write_items(&dir, 4);
    let submit = runner()
        .args(["--queue", redis.url(), "--name", &name, "submit"])
        .arg(&items)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", stderr(&submit));
    let out = dir.join("records.jsonl");
    let launch = on_cluster(redis.url(), &name, "launch", &cluster)
        .args([
            "--image",
            "w:1",
            "--workers",
            "2",
            "--detach",
            "--namespace",
            "ns1",
        ])
        .args(["--", RECORD, out.to_str().unwrap(), "{}"])
        .output()
        .unwrap();
    assert!(launch.status.success(), "{}", stderr(&launch));
    assert!(
        stderr(&launch).contains("cluster status"),
        "{}",
        stderr(&launch)
    );

    let cluster_cmd = |args: &[&str]| {
        let mut command = runner();
        command.args(["--name", &name, "--cluster", "gke", "cluster"]);
        command.args(args);
        command.args(["--namespace", "ns1", "--kubeconfig"]);
        command.arg(cluster.kubeconfig());
        command.output().unwrap()
    };
    let status = cluster_cmd(&["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(value["desired"], 2, "{value}");
    assert_eq!(value["running"], 2, "{value}");
    assert_eq!(value["state"], "running", "{value}");

    let scale = cluster_cmd(&["scale", "--workers", "5"]);
    assert!(scale.status.success(), "{}", stderr(&scale));
    let value: serde_json::Value =
        serde_json::from_slice(&cluster_cmd(&["status", "--json"]).stdout).unwrap();
    assert_eq!(value["desired"], 5, "{value}");

    let teardown = cluster_cmd(&["teardown"]);
    assert!(teardown.status.success(), "{}", stderr(&teardown));
    assert!(cluster.jobs().is_empty());
    let requests = cluster.requests();
    let path = format!("/apis/batch/v1/namespaces/ns1/jobs/{name}");
    for expected in [
        "POST /apis/batch/v1/namespaces/ns1/jobs".to_string(),
        format!("PATCH {path}"),
        format!("DELETE {path}"),
    ] {
        assert!(
            requests.contains(&expected),
            "{expected} not in {requests:?}"
        );
    }
    // A missing Job is named in the error.
    let status = cluster_cmd(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(stderr(&status).contains("not found"), "{}", stderr(&status));
}

#[test]
fn an_unreachable_cluster_fails_before_anything_is_published() {
    let redis = RedisServer::shared();
    let dir = scratch("k8s-unreachable");
    let name = unique("unreachable");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"),
    )
    .unwrap();
    let items = write_items(&dir, 10);
    let output = runner()
        .args([
            "--queue",
            redis.url(),
            "--name",
            &name,
            "--cluster",
            "gke",
            "run",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--image", "w:1"])
        .arg(&items)
        .args(["--", "echo", "{}"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot reach http://127.0.0.1:{port}/")),
        "{}",
        stderr(&output)
    );
    let status = queue_status(redis.url(), &name);
    assert_eq!(
        status["ready"].as_u64(),
        Some(0),
        "items were published: {status}"
    );
}

fn dry_run(args: &[&str]) -> Output {
    runner()
        .args(["--name", "videos", "--cluster", "gke"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dry_run_prints_manifests_that_validate_strictly() {
    let dir = scratch("k8s-dry-run");
    for (i, extra) in [
        &[][..],
        &[
            "--preemptible",
            "--service-account",
            "forloop-worker",
            "--active-deadline",
            "6h",
        ][..],
        &["--keda"][..],
    ]
    .iter()
    .enumerate()
    {
        let output = dry_run(
            &[
                &["--queue", "redis://redis:6379", "launch", "--dry-run"][..],
                &["--image", "europe-docker.pkg.dev/p/r/worker:1", "-w", "20"][..],
                extra,
                &[
                    "--",
                    "youtube-dl",
                    "-f",
                    "mp4",
                    "https://youtube.com/watch?v={}",
                ][..],
            ]
            .concat(),
        );
        assert!(output.status.success(), "{extra:?}: {}", stderr(&output));
        let yaml = String::from_utf8(output.stdout).unwrap();
        assert!(
            yaml.contains("FORLOOP_QUEUE") && yaml.contains("redis://redis:6379"),
            "{yaml}"
        );
        if extra.contains(&"--keda") {
            assert!(
                yaml.contains("kind: \"ScaledJob\"") && yaml.contains("{forloop:videos}:ready"),
                "{yaml}"
            );
            // kubernetes-validate has no schema for KEDA's kinds.
            continue;
        }
        let file = dir.join(format!("{i}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        for version in ["1.29.0", "1.33.0", "1.37.0"] {
            let check = Command::new("kubernetes-validate")
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file)
                .output()
                .expect("kubernetes-validate (python3 -m pip install kubernetes-validate)");
            assert!(
                check.status.success(),
                "{extra:?} for {version}: {}{}\n{yaml}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

#[test]
fn credentials_never_reach_a_manifest() {
    let base = [
        "--queue",
        "redis://:hunter2@redis:6379",
        "launch",
        "--dry-run",
        "--image",
        "w:1",
    ];
    let output = dry_run(&[&base[..], &["--", "echo"][..]].concat());
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "a manifest was printed");
    let text = stderr(&output);
    assert!(
        text.contains("--env-secret") && !text.contains("hunter2"),
        "{text}"
    );
    // With a Secret to carry it, the URL stays out of the manifest.
    let output = dry_run(&[&base[..], &["--env-secret", "redis-auth", "--", "echo"][..]].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        !yaml.contains("hunter2") && yaml.contains("redis-auth"),
        "{yaml}"
    );
}

#[test]
fn cluster_flags_are_checked_with_clear_errors() {
    for (args, expect) in [
        (&["launch", "--dry-run", "--", "echo"][..], "--image"),
        (
            &[
                "launch",
                "--dry-run",
                "--image",
                "w:1",
                "--joblog",
                "j.tsv",
                "--",
                "echo",
            ][..],
            "--joblog",
        ),
        (
            &[
                "launch",
                "--dry-run",
                "--image",
                "w:1",
                "--cpu",
                "lots",
                "--",
                "echo",
            ][..],
            "--cpu `lots`",
        ),
    ] {
        let output = dry_run(&[&["--queue", "redis://redis:6379"][..], args].concat());
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(expect),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = runner()
        .args([
            "--queue",
            "redis://redis:6379",
            "--cluster",
            "mars",
            "launch",
            "--",
            "echo",
        ])
        .output()
        .unwrap();
    // --cluster is a clap value enum: a usage error naming the value and the choices.
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid value 'mars' for '--cluster")
            && stderr(&output).contains("local, gke, k8s"),
        "{}",
        stderr(&output)
    );
    let output = runner()
        .args([
            "--name",
            "Bad_Name",
            "--queue",
            "redis://r",
            "--cluster",
            "gke",
        ])
        .args(["launch", "--dry-run", "--image", "w:1", "--", "echo"])
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("`Bad_Name`"),
        "{}",
        stderr(&output)
    );
}
