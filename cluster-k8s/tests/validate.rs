//! Every manifest shape `render` can produce passes `kubernetes-validate
//! --strict` (PyPI) for Kubernetes 1.29, 1.33 and 1.37: no unknown field, no
//! missing required one, right types.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use forloop_cluster_k8s::{K8sOptions, Nodes, ScaleTrigger};
use forloop_core::LaunchSpec;
use serde_json::{Value, json};

const VERSIONS: [&str; 3] = ["1.29.0", "1.33.0", "1.37.0"];

fn spec() -> LaunchSpec {
    LaunchSpec::new(
        "videos",
        50,
        vec![
            "runner".into(),
            "work".into(),
            "--".into(),
            "youtube-dl".into(),
            "-f".into(),
            "mp4".into(),
            "https://youtube.com/watch?v={}".into(),
        ],
    )
    .with_image("europe-west1-docker.pkg.dev/proj/forloop/worker:1")
    .with_env("FORLOOP_QUEUE", "pubsub://proj/videos")
    .with_env("FORLOOP_NAME", "videos")
    .with_env("FORLOOP_LEASE", "30s")
}

/// Each option that changes the manifest, alone or together.
fn variants() -> Vec<(&'static str, LaunchSpec, K8sOptions)> {
    let base = K8sOptions::new("default");
    vec![
        ("defaults (spot)", spec(), base.clone()),
        (
            "preemptible, service account, deadline, secrets, resources",
            spec().with_grace(Duration::from_millis(20_500)),
            base.clone()
                .with_nodes(Nodes::Preemptible)
                .with_service_account("forloop-worker")
                .with_active_deadline(Some(Duration::from_secs(6 * 3600)))
                .with_env_from_secret("redis-auth")
                .with_env_from_secret("more")
                .with_resources("500m", "512Mi")
                .with_backoff_limit(0)
                .with_ttl(Duration::from_secs(0)),
        ),
        (
            "metrics port (prometheus.io annotations, a named container port)",
            spec(),
            base.clone().with_metrics_port(Some(9464)),
        ),
        (
            "any node, one worker",
            LaunchSpec::new("one", 1, vec!["runner".into(), "work".into()]).with_image("w:1"),
            K8sOptions::new("batch-jobs").with_nodes(Nodes::Any),
        ),
        (
            "keda redis",
            spec(),
            base.clone().with_keda(Some(ScaleTrigger::new("redis")
                .with("address", "redis.default.svc:6379")
                .with("listName", "{forloop:videos}:ready")
                .with("listLength", "10"))),
        ),
        (
            "keda sqs",
            spec(),
            base.clone().with_keda(Some(ScaleTrigger::new("aws-sqs-queue")
                .with(
                    "queueURL",
                    "https://sqs.eu-west-1.amazonaws.com/123456789012/videos",
                )
                .with("awsRegion", "eu-west-1"))),
        ),
        (
            "keda pubsub",
            spec(),
            base.with_keda(Some(ScaleTrigger::new("prometheus")
                .with("serverAddress", "https://monitoring.googleapis.com/v1/projects/proj/location/global/prometheus")
                .with("query", "sum(x)")
                .with("threshold", "10")
                .with_pod_identity("gcp"))),
        ),
    ]
}

/// The documents kubernetes-validate has schemas for: KEDA's own kinds are
/// custom resources, so their Job template is checked as a Job.
fn checkable(yaml_documents: Vec<Value>) -> Vec<Value> {
    yaml_documents
        .into_iter()
        .filter_map(|doc| match doc["kind"].as_str() {
            Some("Job") => Some(doc),
            Some("ScaledJob") => Some(json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": doc["metadata"],
                "spec": doc["spec"]["jobTargetRef"],
            })),
            _ => None,
        })
        .collect()
}

fn kubernetes_validate(file: &Path, version: &str) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run kubernetes-validate ({e}): install it with \
                 `python3 -m pip install kubernetes-validate` (scripts/test does)"
            )
        })
}

#[test]
fn every_rendered_manifest_validates_strictly() {
    let dir = std::env::temp_dir().join(format!("forloop-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = 0;
    for (i, (what, spec, options)) in variants().into_iter().enumerate() {
        let yaml = options.render(&spec).unwrap();
        // What --dry-run prints is what gets validated: re-read the YAML.
        let documents: Vec<Value> = yaml.split("\n---\n").map(yaml_to_json).collect();
        if options.keda.is_some() {
            assert!(
                documents.iter().any(|d| d["kind"] == "ScaledJob"),
                "{what}: {yaml}"
            );
        }
        let file = dir.join(format!("{i}.yaml"));
        let jobs = checkable(documents);
        assert!(!jobs.is_empty(), "{what}: nothing to validate in\n{yaml}");
        std::fs::write(&file, forloop_cluster_k8s::to_yaml(&jobs)).unwrap();
        for version in VERSIONS {
            let out = kubernetes_validate(&file, version);
            assert!(
                out.status.success(),
                "{what} does not validate for Kubernetes {version}:\n{}{}\n{yaml}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * VERSIONS.len());
}

#[test]
fn the_validator_catches_a_bad_manifest() {
    // The check above means something only if the validator rejects errors.
    let dir = std::env::temp_dir().join(format!("forloop-validate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = K8sOptions::new("default").render(&spec()).unwrap();
    let mut job = yaml_to_json(&yaml);
    job["spec"]["template"]["spec"]["containers"][0]["bogus"] = json!(1);
    let file = dir.join("bad.yaml");
    std::fs::write(&file, forloop_cluster_k8s::to_yaml(&[job])).unwrap();
    let out = kubernetes_validate(&file, "1.33.0");
    assert!(
        !out.status.success(),
        "kubernetes-validate accepted an unknown field"
    );
}

/// Read one YAML document back with Python's YAML reader (a dependency of
/// kubernetes-validate), so the test checks our writer too.
fn yaml_to_json(document: &str) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(document.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 with PyYAML (installed with kubernetes-validate)");
    assert!(out.status.success(), "PyYAML cannot read:\n{document}");
    serde_json::from_slice(&out.stdout).unwrap()
}
