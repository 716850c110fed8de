//! The manifests a launch creates, as JSON (see the crate docs for why each
//! field is there). Everything is checked before anything is sent.

use forloop_core::kit::{is_secret_name, whole_seconds};
use forloop_core::{LaunchError, LaunchSpec, ScaleTrigger};
use serde_json::{Value, json};

use crate::options::{K8sOptions, Nodes};

/// The label that ties a run's Job and pods together (its value is the run's name).
pub const RUN_LABEL: &str = "app.kubernetes.io/instance";
/// The worker container's name.
pub(crate) const CONTAINER: &str = "worker";
/// The exit code `runner` gives for a usage error, which no retry fixes.
const USAGE_EXIT_CODE: i32 = 2;
/// The variable `runner work` reads `--metrics-addr` from.
const METRICS_ADDR_VAR: &str = "FORLOOP_METRICS_ADDR";
/// The container port's name scrapers find the metrics by.
const METRICS_PORT_NAME: &str = "metrics";
/// The user the worker image runs as.
const WORKER_UID: i64 = 10001;

/// Check that `name` can name a Job (an RFC 1123 label of at most 63
/// characters), with an error that says what to write instead.
pub fn validate_name(what: &str, name: &str) -> Result<(), LaunchError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LaunchError::new(format!(
            "{what} `{name}` cannot name a Kubernetes object: use at most 63 lowercase letters, \
             digits and '-', starting and ending with a letter or digit"
        )))
    }
}

/// Whether `text` is a Kubernetes quantity such as `500m`, `2`, `1.5Gi`.
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    !number.is_empty()
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
        && SUFFIXES.contains(&suffix)
}

/// Whether a value carries a credential in a URL: core's one definition,
/// the same rules by which every log line hides it. Such values never go
/// into a manifest.
pub use forloop_core::kit::has_url_secret;

/// Check the whole launch before anything is created.
fn check(spec: &LaunchSpec, options: &K8sOptions) -> Result<(), LaunchError> {
    validate_name("the run's name (--name)", &spec.name)?;
    validate_name("the namespace", &options.namespace)?;
    if let Some(account) = &options.service_account {
        validate_name("the service account", account)?;
    }
    for secret in &options.env_from_secrets {
        validate_name("the secret", secret)?;
    }
    match spec.image.as_deref() {
        None | Some("") => {
            return Err(LaunchError::new(
                "a Kubernetes launch needs the worker image: pass --image REGISTRY/IMAGE:TAG \
                 (build it from the Dockerfile; README \"Deploy to GKE\")",
            ));
        }
        Some(image) if image.chars().any(char::is_whitespace) => {
            return Err(LaunchError::new(format!(
                "the image `{image}` contains whitespace; write REGISTRY/IMAGE:TAG"
            )));
        }
        Some(_) => {}
    }
    if spec.workers == 0 {
        return Err(LaunchError::new("a launch needs at least 1 worker"));
    }
    if spec.command.is_empty() {
        return Err(LaunchError::new("a launch needs the worker's command"));
    }
    for (what, quantity) in [("--cpu", &options.cpu), ("--memory", &options.memory)] {
        if !is_quantity(quantity) {
            return Err(LaunchError::new(format!(
                "{what} `{quantity}` is not a Kubernetes quantity; write e.g. 500m or 2 for CPU, \
                 512Mi or 2Gi for memory"
            )));
        }
    }
    for (key, value) in &spec.env {
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_key {
            return Err(LaunchError::new(format!(
                "`{key}` is not a valid environment variable name"
            )));
        }
        if is_secret_name(key) || has_url_secret(value) {
            return Err(LaunchError::new(format!(
                "the worker environment variable {key} looks like a credential; credentials never \
                 go into a manifest. Put it in a Kubernetes Secret (kubectl create secret generic \
                 NAME --from-literal={key}=...) and pass --env-secret NAME; on GKE prefer Workload \
                 Identity, which needs no secret at all"
            )));
        }
    }
    Ok(())
}

fn labels(spec: &LaunchSpec) -> Value {
    json!({
        "app.kubernetes.io/name": "forloop",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "forloop-runner",
        RUN_LABEL: spec.name,
    })
}

/// The pod template of the workers.
fn pod_template(spec: &LaunchSpec, options: &K8sOptions) -> Value {
    let labels = labels(spec);
    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    if let Some(port) = options.metrics_port {
        env.push(json!({"name": METRICS_ADDR_VAR, "value": format!("0.0.0.0:{port}")}));
    }
    let env_from: Vec<Value> = options
        .env_from_secrets
        .iter()
        .map(|s| json!({"secretRef": {"name": s}}))
        .collect();
    let mut container = json!({
        "name": CONTAINER,
        "image": spec.image,
        "command": spec.command,
        "env": env,
        "resources": {
            "requests": {"cpu": options.cpu, "memory": options.memory},
            "limits": {"memory": options.memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    });
    if !env_from.is_empty() {
        container["envFrom"] = Value::Array(env_from);
    }
    if let Some(port) = options.metrics_port {
        container["ports"] =
            json!([{"name": METRICS_PORT_NAME, "containerPort": port, "protocol": "TCP"}]);
    }
    let spread = |key: &str| {
        json!({
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {RUN_LABEL: spec.name}},
        })
    };
    let mut pod = json!({
        "restartPolicy": "Never",
        // The container's `command` replaces the image's entrypoint, and
        // with it the image's init (tini): with one process namespace the
        // pod's pause process is PID 1 and reaps the orphans commands leave.
        "shareProcessNamespace": true,
        "terminationGracePeriodSeconds": whole_seconds(spec.grace),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "topologySpreadConstraints": [
            spread("kubernetes.io/hostname"),
            spread("topology.kubernetes.io/zone"),
        ],
    });
    if let Some(account) = &options.service_account {
        pod["serviceAccountName"] = json!(account);
    }
    let node_label = match options.nodes {
        Nodes::Spot => Some("cloud.google.com/gke-spot"),
        Nodes::Preemptible => Some("cloud.google.com/gke-preemptible"),
        Nodes::Any => None,
    };
    if let Some(label) = node_label {
        pod["nodeSelector"] = json!({label: "true"});
        pod["tolerations"] = json!([{
            "key": label,
            "operator": "Equal",
            "value": "true",
            "effect": "NoSchedule",
        }]);
    }
    let mut metadata = json!({"labels": labels});
    if let Some(port) = options.metrics_port {
        // What plain Prometheus' common pod scrape config reads.
        metadata["annotations"] = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": port.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    json!({"metadata": metadata, "spec": pod})
}

/// Google Managed Prometheus' scrape config for the run's pods, on GKE
/// nodes with `metrics_port` set; `None` otherwise.
pub(crate) fn pod_monitoring(spec: &LaunchSpec, options: &K8sOptions) -> Option<Value> {
    options.metrics_port?;
    if options.nodes == Nodes::Any {
        return None;
    }
    Some(json!({
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": metadata(spec, options),
        "spec": {
            "selector": {"matchLabels": {RUN_LABEL: spec.name}},
            "endpoints": [{"port": METRICS_PORT_NAME, "path": "/metrics", "interval": "30s"}],
        },
    }))
}

/// The Job spec: the work-queue pattern (parallelism N, completions unset).
fn job_spec(spec: &LaunchSpec, options: &K8sOptions, parallelism: u32) -> Value {
    let mut job = json!({
        "parallelism": parallelism,
        "backoffLimit": options.backoff_limit,
        "ttlSecondsAfterFinished": whole_seconds(options.ttl_after_finished),
        "podFailurePolicy": {"rules": [
            {
                "action": "Ignore",
                // "True" in quotes: schemas up to 1.34 require the status.
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [USAGE_EXIT_CODE],
                },
            },
            {
                // The job halted past its --max-dead: every worker would
                // exit so, and a restart would only hand its items back.
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [forloop_core::job::HALTED_EXIT],
                },
            },
        ]},
        "template": pod_template(spec, options),
    });
    if let Some(deadline) = options.active_deadline {
        job["activeDeadlineSeconds"] = json!(whole_seconds(deadline).max(1));
    }
    job
}

fn metadata(spec: &LaunchSpec, options: &K8sOptions) -> Value {
    json!({"name": spec.name, "namespace": options.namespace, "labels": labels(spec)})
}

/// The batch/v1 Job of a launch.
pub(crate) fn job(spec: &LaunchSpec, options: &K8sOptions) -> Result<Value, LaunchError> {
    check(spec, options)?;
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(spec, options),
        "spec": job_spec(spec, options, spec.workers),
    }))
}

/// A KEDA ScaledJob (plus the TriggerAuthentication its trigger needs):
/// KEDA starts one-pod Jobs while the queue has items, up to `workers`.
fn scaled_job(
    spec: &LaunchSpec,
    options: &K8sOptions,
    trigger: &ScaleTrigger,
) -> Result<Vec<Value>, LaunchError> {
    check(spec, options)?;
    let mut documents = Vec::new();
    let auth_name = format!("{}-keda", spec.name);
    // The driver describes its backend in KEDA's own terms; only the
    // authentication object is Kubernetes' business.
    let mut rendered = json!({"type": trigger.scaler, "metadata": trigger.metadata});
    if let Some(provider) = &trigger.pod_identity {
        documents.push(json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": metadata(&LaunchSpec::new(auth_name.clone(), 1, vec![]), options),
            "spec": {"podIdentity": {"provider": provider}},
        }));
        rendered["authenticationRef"] = json!({"name": auth_name});
    }
    let trigger = rendered;
    // Each KEDA Job runs one worker, which drains and exits 0.
    let mut job = job_spec(spec, options, 1);
    job["completions"] = json!(1);
    documents.push(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": metadata(spec, options),
        "spec": {
            "jobTargetRef": job,
            "pollingInterval": 30,
            "maxReplicaCount": spec.workers,
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "triggers": [trigger],
        },
    }));
    Ok(documents)
}

/// Every manifest of a launch, checked: the Job, or with
/// [`K8sOptions::keda`] the KEDA objects.
pub fn manifests(spec: &LaunchSpec, options: &K8sOptions) -> Result<Vec<Value>, LaunchError> {
    let mut out = match &options.keda {
        None => vec![job(spec, options)?],
        Some(trigger) => scaled_job(spec, options, trigger)?,
    };
    out.extend(pod_monitoring(spec, options));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec::new(
            "videos",
            50,
            vec!["runner".into(), "work".into(), "--".into(), "echo".into()],
        )
        .with_image("europe-docker.pkg.dev/p/r/worker:1")
        .with_env("FORLOOP_NAME", "videos")
    }

    #[test]
    fn a_metrics_port_gives_the_pods_a_port_annotations_and_on_gke_a_pod_monitoring() {
        let options = K8sOptions::new("default").with_metrics_port(Some(9464));
        let all = manifests(&spec(), &options).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let pod = &all[0]["spec"]["template"];
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["ports"],
            json!([{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}])
        );
        let env = container["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "FORLOOP_METRICS_ADDR", "value": "0.0.0.0:9464"})));
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
        assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9464");
        let monitoring = &all[1];
        assert_eq!(monitoring["apiVersion"], "monitoring.googleapis.com/v1");
        assert_eq!(monitoring["kind"], "PodMonitoring");
        assert_eq!(
            monitoring["spec"]["selector"]["matchLabels"][RUN_LABEL],
            "videos"
        );
        assert_eq!(monitoring["spec"]["endpoints"][0]["port"], "metrics");
        // Plain Kubernetes: annotations only, no Managed Prometheus kind.
        let plain = options.clone().with_nodes(Nodes::Any);
        assert_eq!(manifests(&spec(), &plain).unwrap().len(), 1);
        // No port: nothing of it.
        let none = manifests(&spec(), &K8sOptions::new("default")).unwrap();
        assert!(
            none[0]["spec"]["template"]["metadata"]
                .get("annotations")
                .is_none()
        );
    }

    #[test]
    fn names_follow_rfc_1123() {
        for good in ["a", "videos-2026", &"x".repeat(63)] {
            assert!(validate_name("n", good).is_ok(), "{good}");
        }
        for bad in ["", "Videos", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            let error = validate_name("the run's name (--name)", bad).unwrap_err();
            assert!(error.to_string().contains("--name"), "{error}");
        }
    }

    #[test]
    fn quantities() {
        for good in ["1", "500m", "0.5", "2Gi", "512Mi", "1.5G"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "Gi", "1GB", "1..5", "one", "-1", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn credentials_are_refused_before_anything_is_rendered() {
        let options = K8sOptions::new("default");
        for (key, value) in [
            ("REDIS_PASSWORD", "x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("FORLOOP_QUEUE", "redis://:hunter2@redis:6379"),
            ("FORLOOP_QUEUE", "redis://user:pw@redis/0"),
            ("OPENAI_API_KEY", "x"),
            ("GITHUB_AUTH", "x"),
            ("BASIC_AUTH_HEADER", "x"),
            ("DB_PASS", "x"),
            ("SMTP_PASSWD", "x"),
            ("WEBHOOK", "https://hooks.example.com/in?token=hunter2"),
            (
                "FEED",
                "https://api.example.com/v1/items?page=2&api_key=hunter2",
            ),
            ("MAPS", "https://maps.example.com/?key=hunter2"),
            (
                "BLOB",
                "https://x.blob.core.windows.net/c/f?sv=2024&sig=hunter2",
            ),
            (
                "S3_GET",
                "https://b.s3.amazonaws.com/k?X-Amz-Signature=hunter2",
            ),
        ] {
            let error = job(&spec().with_env(key, value), &options).unwrap_err();
            let text = error.to_string();
            assert!(
                text.contains(key) && text.contains("--env-secret"),
                "{text}"
            );
            assert!(
                !text.contains("hunter2"),
                "the message leaks the value: {text}"
            );
        }
        // A user without a password is not a credential.
        job(
            &spec().with_env("FORLOOP_QUEUE", "redis://redis:6379"),
            &options,
        )
        .unwrap();
        job(&spec().with_env("URL", "https://a.b/c@d"), &options).unwrap();
        job(
            &spec().with_env("FEED", "https://a.b/items?page=2&sort=new"),
            &options,
        )
        .unwrap();
    }

    #[test]
    fn job_has_the_work_queue_shape() {
        let job = job(&spec(), &K8sOptions::new("batch")).unwrap();
        let s = &job["spec"];
        assert_eq!(s["parallelism"], 50);
        assert!(s.get("completions").is_none());
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Never");
        // The container's `command` bypasses the image's init (tini), so the
        // pod's own pause process must be PID 1 and reap orphans.
        assert_eq!(s["template"]["spec"]["shareProcessNamespace"], true);
        let halted = &s["podFailurePolicy"]["rules"][2];
        assert_eq!(halted["action"], "FailJob");
        assert_eq!(
            halted["onExitCodes"]["values"],
            json!([forloop_core::job::HALTED_EXIT])
        );
        let rule = &s["podFailurePolicy"]["rules"][0];
        assert_eq!(rule["action"], "Ignore");
        assert_eq!(
            rule["onPodConditions"][0],
            json!({"type": "DisruptionTarget", "status": "True"})
        );
        assert_eq!(job["metadata"]["namespace"], "batch");
        assert_eq!(
            s["template"]["metadata"]["labels"][RUN_LABEL],
            job["metadata"]["labels"][RUN_LABEL]
        );
        let pod = &s["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["cloud.google.com/gke-spot"], "true");
        assert_eq!(pod["terminationGracePeriodSeconds"], 15);
        let c = &pod["containers"][0];
        assert_eq!(
            c["resources"]["limits"]["memory"],
            c["resources"]["requests"]["memory"]
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            c["env"][0],
            json!({"name": "FORLOOP_NAME", "value": "videos"})
        );
    }

    #[test]
    fn bad_input_names_the_input() {
        let options = K8sOptions::new("default");
        let no_image = LaunchSpec::new("v", 1, vec!["runner".into()]);
        assert!(
            job(&no_image, &options)
                .unwrap_err()
                .to_string()
                .contains("--image")
        );
        let cpu = options.clone().with_resources("lots", "1Gi");
        assert!(
            job(&spec(), &cpu)
                .unwrap_err()
                .to_string()
                .contains("--cpu `lots`")
        );
        let ns = K8sOptions::new("My_NS");
        assert!(
            job(&spec(), &ns)
                .unwrap_err()
                .to_string()
                .contains("namespace `My_NS`")
        );
    }
}
