//! [`K8sCluster`]: the plug `--cluster gke` and `--cluster k8s` find. It
//! reads the cluster flags into [`K8sOptions`], turns the runner's workers
//! into `runner work -- CMD` in the image with every setting as a
//! `FORLOOP_*` variable, and keeps the Kubernetes rules: no joblog (a pod
//! loses its files), no credential in a manifest unless a Secret brings it,
//! and no `run` under KEDA, whose workers never end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::cluster::{Cluster, ClusterFlags, WorkerRequest};
use forloop_core::{ClusterLauncher, LaunchError, LaunchSpec};

use crate::launcher::K8sLauncher;
use crate::manifest::has_url_secret;
use crate::options::{K8sOptions, Nodes};

/// Time past the worker's own grace for it to hand items back and exit.
pub(crate) const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// Environment the workers inherit from this process when it is set here,
/// besides what the queue's driver names.
const PASSED_ENV: [&str; 1] = ["RUST_LOG"];

/// Workers as a Kubernetes Job: on GKE spot nodes (`gke`) or any nodes (`k8s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct K8sCluster {
    nodes: Nodes,
}

impl K8sCluster {
    /// `--cluster gke`: GKE spot nodes (preemptible ones with `--preemptible`).
    pub fn gke() -> Self {
        Self { nodes: Nodes::Spot }
    }

    /// `--cluster k8s`: any nodes (preemptible ones with `--preemptible`).
    pub fn k8s() -> Self {
        Self { nodes: Nodes::Any }
    }

    /// The Kubernetes options the flags say.
    pub fn options(&self, flags: &ClusterFlags) -> K8sOptions {
        let nodes = if flags.preemptible {
            Nodes::Preemptible
        } else {
            self.nodes
        };
        let keda = flags.scale_trigger.clone().filter(|_| flags.keda);
        let mut options = K8sOptions::new(flags.namespace.clone())
            .with_nodes(nodes)
            .with_resources(flags.cpu.clone(), flags.memory.clone())
            .with_backoff_limit(flags.backoff_limit)
            .with_ttl(flags.ttl)
            .with_active_deadline(flags.active_deadline)
            .with_keda(keda)
            .with_metrics_port(flags.metrics_port);
        if let Some(account) = &flags.service_account {
            options = options.with_service_account(account.clone());
        }
        for secret in &flags.env_secrets {
            options = options.with_env_from_secret(secret.clone());
        }
        options
    }
}

/// Put `key=value` into the workers' environment, unless the value carries a
/// credential (a URL password or query token): then a Secret (`--env-secret`)
/// must provide it instead.
fn carry(
    env: &mut BTreeMap<String, String>,
    key: &str,
    value: &str,
    secrets: &[String],
) -> Result<(), LaunchError> {
    if !has_url_secret(value) {
        env.insert(key.to_string(), value.to_string());
        return Ok(());
    }
    if secrets.is_empty() {
        return Err(LaunchError::new(format!(
            "{key} carries a credential (a password or token), which never goes into a Kubernetes manifest. Put it in a \
             Secret (`kubectl create secret generic forloop-queue --from-literal={key}=...`) and \
             pass --env-secret forloop-queue"
        )));
    }
    // The Secret provides it.
    Ok(())
}

#[async_trait]
impl Cluster for K8sCluster {
    fn name(&self) -> &str {
        match self.nodes {
            Nodes::Any => "k8s",
            _ => "gke",
        }
    }

    fn scales_on_queue(&self, flags: &ClusterFlags) -> bool {
        flags.keda
    }

    /// `runner work -- CMD` in the image, settings as `FORLOOP_*`; the
    /// manifests are rendered, so whatever they refuse is refused now.
    fn spec(
        &self,
        request: &WorkerRequest,
        flags: &ClusterFlags,
    ) -> Result<LaunchSpec, LaunchError> {
        if request.until_drained && flags.keda {
            return Err(LaunchError::new(
                "--keda hands the workers to KEDA, which keeps scaling them as items arrive, so \
                 there is no end for `run` to wait for: `runner launch --keda` once, then \
                 `runner submit` as often as you like",
            ));
        }
        if request.joblog.is_some() {
            return Err(LaunchError::new(
                "--joblog writes a file on one machine, which a Kubernetes pod loses; leave it out \
                 (workers log every attempt as JSON on stderr: read them in your cluster's logs)",
            ));
        }
        let image = flags.image.clone().ok_or_else(|| {
            LaunchError::new(
                "--cluster gke|k8s needs --image REGISTRY/IMAGE:TAG: the worker image with runner and \
                 your command in it (README: \"Deploy to GKE\")",
            )
        })?;
        let secrets = &flags.env_secrets;
        let mut env = BTreeMap::new();
        carry(
            &mut env,
            &WorkerRequest::variable("queue"),
            &request.queue,
            secrets,
        )?;
        env.insert(WorkerRequest::variable("name"), request.name.clone());
        for (flag, value) in &request.settings {
            env.insert(WorkerRequest::variable(flag), value.clone());
        }
        // Cloud logging reads one JSON object per line: text only when the
        // environment asks for it by name.
        let log_format = WorkerRequest::variable("log-format");
        let text = request.log_format == "text" && std::env::var_os(&log_format).is_some();
        env.insert(log_format, if text { "text" } else { "json" }.to_string());
        // The root filesystem is read-only; /tmp is the pod's scratch volume.
        env.insert("HOME".to_string(), "/tmp".to_string());
        let passed = PASSED_ENV
            .iter()
            .copied()
            .chain(request.queue_environment.iter().map(String::as_str));
        for key in passed {
            if let Ok(value) = std::env::var(key) {
                carry(&mut env, key, &value, secrets)?;
            }
        }
        // The image runs this program by the same name: `runner`, or a user's
        // own binary with its Rust function built in (then with no command).
        let program = std::env::current_exe()
            .ok()
            .and_then(|exe| {
                exe.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "runner".to_string());
        let mut argv = vec![program, "work".to_string()];
        if !request.command.is_empty() {
            argv.push("--".to_string());
            argv.extend(request.command.iter().cloned());
        }
        let mut spec = LaunchSpec::new(request.name.clone(), request.workers, argv)
            .with_image(image)
            .with_grace(request.grace + EXIT_MARGIN);
        spec.env = env;
        self.options(flags).render(&spec)?;
        Ok(spec)
    }

    fn render(&self, spec: &LaunchSpec, flags: &ClusterFlags) -> Result<String, LaunchError> {
        self.options(flags).render(spec)
    }

    async fn connect(&self, flags: &ClusterFlags) -> Result<Arc<dyn ClusterLauncher>, LaunchError> {
        let launcher =
            K8sLauncher::connect(flags.kubeconfig.as_deref(), self.options(flags)).await?;
        Ok(Arc::new(launcher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(until_drained: bool) -> WorkerRequest {
        let mut request = WorkerRequest::new("videos", 2, vec!["echo".into()], "redis://h:6379");
        request.settings = vec![("max-attempts".into(), "3".into())];
        request.until_drained = until_drained;
        request
    }

    fn flags() -> ClusterFlags {
        let mut flags = ClusterFlags::new("batch");
        flags.image = Some("w:1".into());
        flags
    }

    #[test]
    fn the_nodes_follow_the_cluster_name_and_preemptible() {
        assert_eq!(K8sCluster::gke().options(&flags()).nodes, Nodes::Spot);
        assert_eq!(K8sCluster::k8s().options(&flags()).nodes, Nodes::Any);
        let mut preemptible = flags();
        preemptible.preemptible = true;
        assert_eq!(
            K8sCluster::k8s().options(&preemptible).nodes,
            Nodes::Preemptible
        );
        assert_eq!(
            (K8sCluster::gke().name(), K8sCluster::k8s().name()),
            ("gke", "k8s")
        );
    }

    #[test]
    fn settings_travel_as_environment_in_the_image() {
        let spec = K8sCluster::gke().spec(&request(true), &flags()).unwrap();
        assert_eq!(spec.command[1..], ["work", "--", "echo"]);
        assert_eq!(spec.image.as_deref(), Some("w:1"));
        assert_eq!(spec.env["FORLOOP_QUEUE"], "redis://h:6379");
        assert_eq!(spec.env["FORLOOP_NAME"], "videos");
        assert_eq!(spec.env["FORLOOP_MAX_ATTEMPTS"], "3");
        assert_eq!(spec.grace, Duration::from_secs(15));
    }

    #[test]
    fn what_kubernetes_cannot_do_is_refused_before_anything_starts() {
        let mut keda = flags();
        keda.keda = true;
        let error = K8sCluster::gke()
            .spec(&request(true), &keda)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no end for `run` to wait for"), "{error}");

        let mut joblog = request(false);
        joblog.joblog = Some("/tmp/j".into());
        let error = K8sCluster::gke()
            .spec(&joblog, &flags())
            .unwrap_err()
            .to_string();
        assert!(error.contains("--joblog"), "{error}");

        let mut secret = request(false);
        secret.queue = "redis://:hunter2@h:6379".into();
        let error = K8sCluster::gke()
            .spec(&secret, &flags())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--env-secret") && !error.contains("hunter2"),
            "{error}"
        );
        let mut from_secret = flags();
        from_secret.env_secrets = vec!["forloop-queue".into()];
        let spec = K8sCluster::gke().spec(&secret, &from_secret).unwrap();
        assert!(!spec.env.contains_key("FORLOOP_QUEUE"));

        let error = K8sCluster::gke()
            .spec(&request(false), &ClusterFlags::new("batch"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--image"), "{error}");
    }
}
