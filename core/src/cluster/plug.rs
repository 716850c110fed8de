//! The plug a launcher crate exports: a [`Cluster`] turns what the runner
//! asks for (a [`WorkerRequest`]) and what the user set (the
//! [`ClusterFlags`]) into a [`LaunchSpec`], renders it for a dry run, and
//! connects the [`ClusterLauncher`] that starts it. Every rule of one
//! platform (what it refuses, what it warns about, how settings reach a
//! worker there) lives behind this plug, in the crate that owns the
//! platform.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{ClusterLauncher, LaunchError, LaunchSpec};
use crate::ScaleTrigger;
use crate::kit::redact_url;

/// The flags of `run`, `launch` and `runner cluster` that say how to place
/// workers on a cluster, as the user gave them. Each launcher reads those
/// it understands and ignores the rest; a field is named after its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterFlags {
    /// `--image`: the worker image, for launchers that run containers.
    pub image: Option<String>,
    /// `--namespace`: where the workers' objects go.
    pub namespace: String,
    /// `--service-account`: the workers' identity on the platform.
    pub service_account: Option<String>,
    /// `--cpu`: CPU per worker.
    pub cpu: String,
    /// `--memory`: memory per worker.
    pub memory: String,
    /// `--preemptible`: the older preemptible nodes instead of spot ones.
    pub preemptible: bool,
    /// `--backoff-limit`: worker failures (not preemptions) before giving up.
    pub backoff_limit: u32,
    /// `--ttl`: how long finished workers' objects are kept.
    pub ttl: Duration,
    /// `--active-deadline`: a limit on the whole launch's running time.
    pub active_deadline: Option<Duration>,
    /// `--env-secret`: secrets whose keys become the workers' environment.
    pub env_secrets: Vec<String>,
    /// `--keda`: let an autoscaler start workers on the queue's backlog.
    pub keda: bool,
    /// `--kubeconfig`: the file that says how to reach the cluster.
    pub kubeconfig: Option<PathBuf>,
    /// What an autoscaler reads to size the workers on the queue, from the
    /// queue's driver, when [`Cluster::scales_on_queue`] asks for it.
    pub scale_trigger: Option<ScaleTrigger>,
    /// `--metrics-port`: workers serve Prometheus metrics on this port, and
    /// the launcher tells the platform's scrapers where.
    pub metrics_port: Option<u16>,
}

impl ClusterFlags {
    /// The flags' defaults, in namespace `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            image: None,
            namespace: namespace.into(),
            service_account: None,
            cpu: "1".to_string(),
            memory: "1Gi".to_string(),
            preemptible: false,
            backoff_limit: 6,
            ttl: Duration::from_secs(3600),
            active_deadline: None,
            env_secrets: Vec::new(),
            keda: false,
            kubeconfig: None,
            scale_trigger: None,
            metrics_port: None,
        }
    }
}

/// The workers the runner asks a launcher for: `workers` copies of this
/// program's `work` command (the program being the one the launcher runs
/// in, or its namesake in an image), with the settings each must run with.
/// The launcher decides how they travel (flags on a local command line,
/// environment in a manifest).
#[derive(Clone)]
#[non_exhaustive]
pub struct WorkerRequest {
    /// The run's name (`--name`): the queue's, and the launch's.
    pub name: String,
    /// How many workers.
    pub workers: u32,
    /// Abnormal worker exits replaced before giving up, where the launcher
    /// replaces them itself.
    pub max_restarts: u32,
    /// The log format (`text` or `json`) the user chose.
    pub log_format: String,
    /// The worker settings as (flag, value): `work` reads each as
    /// `--FLAG=VALUE` or from the variable [`WorkerRequest::variable`] names.
    pub settings: Vec<(String, String)>,
    /// `--joblog`: a file on this machine every worker appends to.
    pub joblog: Option<PathBuf>,
    /// The command run on each item (empty: the program's own function).
    pub command: Vec<String>,
    /// The queue as the user wrote it, password and all: it must reach the
    /// workers and never a command line, a log or a manifest.
    pub queue: String,
    /// Variables the queue's driver reads to find its backend, which
    /// workers on other machines need too when set here.
    pub queue_environment: Vec<String>,
    /// How long a worker may take to hand its items back after SIGTERM.
    pub grace: Duration,
    /// Whether the runner waits for these workers to drain the queue and
    /// end (`run`): a launcher whose workers never end must refuse.
    pub until_drained: bool,
}

impl WorkerRequest {
    /// `workers` copies of `work` on `queue` running `command`, with no
    /// settings, a 10 s grace, 10 restarts, text logs; not until drained.
    pub fn new(
        name: impl Into<String>,
        workers: u32,
        command: Vec<String>,
        queue: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            workers,
            max_restarts: 10,
            log_format: "text".to_string(),
            settings: Vec::new(),
            joblog: None,
            command,
            queue: queue.into(),
            queue_environment: Vec::new(),
            grace: Duration::from_secs(10),
            until_drained: false,
        }
    }

    /// The variable `work` reads a flag from: `FORLOOP_`, then the flag in
    /// upper case with `-` as `_` (`max-attempts` → `FORLOOP_MAX_ATTEMPTS`).
    pub fn variable(flag: &str) -> String {
        format!("FORLOOP_{}", flag.to_ascii_uppercase().replace('-', "_"))
    }
}

/// Never shows the queue's password: it passes through [`redact_url`].
impl fmt::Debug for WorkerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRequest")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("command", &self.command)
            .field("queue", &redact_url(&self.queue))
            .finish_non_exhaustive()
    }
}

/// Where `--cluster NAME` starts workers. Object safe: a registry holds
/// `Arc<dyn Cluster>`.
#[async_trait]
pub trait Cluster: Send + Sync + fmt::Debug {
    /// The name `--cluster` takes (`local`, `gke`).
    fn name(&self) -> &str;

    /// Whether the workers run on this machine. Then `run` on a queue that
    /// lives in this process (memory, its default there) runs them as tasks
    /// here, and the command must start here; otherwise `run` makes the
    /// queue's resources first, so workers elsewhere do not all fail on a
    /// missing queue.
    fn runs_here(&self) -> bool {
        false
    }

    /// Whether launches here scale on the queue's backlog with these flags,
    /// so the runner asks the queue's driver for the trigger
    /// ([`ClusterFlags::scale_trigger`]).
    fn scales_on_queue(&self, flags: &ClusterFlags) -> bool {
        let _ = flags;
        false
    }

    /// The launch of the requested workers here, checked with no side
    /// effects: what the flags cannot mean here is refused now.
    fn spec(
        &self,
        request: &WorkerRequest,
        flags: &ClusterFlags,
    ) -> Result<LaunchSpec, LaunchError>;

    /// What `launch` would create, for a dry run, with no connection.
    fn render(&self, spec: &LaunchSpec, flags: &ClusterFlags) -> Result<String, LaunchError>;

    /// The launcher for these flags, connected where there is something to
    /// connect to.
    async fn connect(&self, flags: &ClusterFlags) -> Result<Arc<dyn ClusterLauncher>, LaunchError>;
}
