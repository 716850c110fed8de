//! The Kubernetes side of a launch: what [`forloop_core::LaunchSpec`] does
//! not say because only Kubernetes has it.

use std::time::Duration;

use forloop_core::ScaleTrigger;

/// Which nodes the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// GKE spot VMs (`cloud.google.com/gke-spot`).
    Spot,
    /// GKE's older preemptible VMs (`cloud.google.com/gke-preemptible`).
    Preemptible,
    /// Any node: no selector, no toleration.
    Any,
}

/// Kubernetes settings of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct K8sOptions {
    /// Namespace of the Job.
    pub namespace: String,
    /// Kubernetes service account of the pods (bound to a Google service
    /// account by Workload Identity on GKE); `None` uses the namespace's default.
    pub service_account: Option<String>,
    /// Which nodes.
    pub nodes: Nodes,
    /// CPU request per worker, a Kubernetes quantity (`500m`, `2`).
    pub cpu: String,
    /// Memory request and limit per worker (`512Mi`, `2Gi`).
    pub memory: String,
    /// Worker failures (not preemptions) before the Job fails.
    pub backoff_limit: u32,
    /// How long a finished Job stays before Kubernetes deletes it.
    pub ttl_after_finished: Duration,
    /// Optional limit on the whole Job's running time.
    pub active_deadline: Option<Duration>,
    /// Secrets whose keys become environment variables of the workers (for
    /// credentials such as a Redis password: never put those in `env`).
    pub env_from_secrets: Vec<String>,
    /// With a trigger, the manifests are a KEDA `ScaledJob` instead of a Job.
    pub keda: Option<ScaleTrigger>,
    /// Longest wait for one API call.
    pub call_timeout: Duration,
    /// Workers serve Prometheus metrics on this port: the pods get it as a
    /// named container port (`metrics`) with `prometheus.io/*` annotations,
    /// and on GKE nodes a PodMonitoring (Google Managed Prometheus).
    pub metrics_port: Option<u16>,
}

impl K8sOptions {
    /// Defaults for `namespace`: spot nodes, 1 CPU, 1 GiB, 6 failures, a 1 h
    /// TTL, 30 s per API call.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: None,
            nodes: Nodes::Spot,
            cpu: "1".to_string(),
            memory: "1Gi".to_string(),
            backoff_limit: 6,
            ttl_after_finished: Duration::from_secs(3600),
            active_deadline: None,
            env_from_secrets: Vec::new(),
            keda: None,
            call_timeout: Duration::from_secs(30),
            metrics_port: None,
        }
    }

    /// Serve worker metrics on `port` (see [`Self::metrics_port`]).
    pub fn with_metrics_port(mut self, port: Option<u16>) -> Self {
        self.metrics_port = port;
        self
    }

    /// Set the service account.
    pub fn with_service_account(mut self, name: impl Into<String>) -> Self {
        self.service_account = Some(name.into());
        self
    }

    /// Set the node kind.
    pub fn with_nodes(mut self, nodes: Nodes) -> Self {
        self.nodes = nodes;
        self
    }

    /// Set the CPU and memory requests.
    pub fn with_resources(mut self, cpu: impl Into<String>, memory: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self.memory = memory.into();
        self
    }

    /// Set the failure budget.
    pub fn with_backoff_limit(mut self, limit: u32) -> Self {
        self.backoff_limit = limit;
        self
    }

    /// Set the TTL after the Job finishes.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_after_finished = ttl;
        self
    }

    /// Set the Job's active deadline.
    pub fn with_active_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.active_deadline = deadline;
        self
    }

    /// Add a Secret whose keys become environment variables.
    pub fn with_env_from_secret(mut self, secret: impl Into<String>) -> Self {
        self.env_from_secrets.push(secret.into());
        self
    }

    /// Render a KEDA `ScaledJob` with this trigger instead of a Job.
    pub fn with_keda(mut self, trigger: Option<ScaleTrigger>) -> Self {
        self.keda = trigger;
        self
    }

    /// Set the per-call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }
}
