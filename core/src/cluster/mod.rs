//! Where workers run: the [`ClusterLauncher`] trait, and [`LocalLauncher`],
//! which runs them as processes on this machine.

mod local;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalLauncher;

/// What to launch: N copies of one worker command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaunchSpec {
    /// The run's name; launchers label what they create with it.
    pub name: String,
    /// How many workers.
    pub workers: u32,
    /// The worker's command line: program, then arguments.
    pub command: Vec<String>,
    /// Environment for each worker. Local workers get their queue here (a
    /// password in it stays off command lines; `render` redacts it);
    /// manifests never carry credentials: on a cluster they come from the
    /// platform or a Secret.
    pub env: BTreeMap<String, String>,
    /// The container image, for launchers that run containers.
    pub image: Option<String>,
    /// How long a worker may take to stop after SIGTERM before it is killed.
    pub grace: Duration,
    /// How many abnormal worker exits are replaced before giving up.
    pub max_restarts: u32,
}

impl LaunchSpec {
    /// `workers` copies of `command`, with a 15 s grace and 10 restarts.
    pub fn new(name: impl Into<String>, workers: u32, command: Vec<String>) -> Self {
        Self {
            name: name.into(),
            workers,
            command,
            env: BTreeMap::new(),
            image: None,
            grace: Duration::from_secs(15),
            max_restarts: 10,
        }
    }

    /// Add an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Set the stop grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Set the restart budget.
    pub fn with_max_restarts(mut self, max_restarts: u32) -> Self {
        self.max_restarts = max_restarts;
        self
    }

    /// Set the container image.
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }
}

/// Names one launch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaunchHandle(pub String);

impl fmt::Display for LaunchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a launch's workers are doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Workers asked for.
    pub desired: u32,
    /// Workers running now, counting those starting or waiting to be
    /// restarted: 0 only when none will run again.
    pub running: u32,
    /// Workers that exited 0 (the queue was drained).
    pub succeeded: u32,
    /// Workers that exited non-zero.
    pub failed: u32,
    /// Workers killed from outside (signal, preemption, eviction).
    pub disrupted: u32,
}

impl WorkerCounts {
    /// Whether the launch is over: nothing runs and nothing will be restarted.
    pub fn is_finished(&self) -> bool {
        self.running == 0
    }
}

/// An error from a launcher, with a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LaunchError {
    /// An error with a user-facing message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// Attach the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Starts, watches, scales and stops a set of workers somewhere.
#[async_trait]
pub trait ClusterLauncher: Send + Sync {
    /// Start the workers.
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError>;
    /// How they are doing.
    async fn status(&self, handle: &LaunchHandle) -> Result<WorkerCounts, LaunchError>;
    /// Run `workers` of them from now on.
    async fn scale(&self, handle: &LaunchHandle, workers: u32) -> Result<(), LaunchError>;
    /// Stop them all (SIGTERM, then a kill after the grace period) and clean up.
    async fn teardown(&self, handle: &LaunchHandle) -> Result<(), LaunchError>;
    /// What `launch` would create, for a dry run.
    fn render(&self, spec: &LaunchSpec) -> Result<String, LaunchError>;
}
