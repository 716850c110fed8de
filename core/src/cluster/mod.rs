//! Where workers run. A launcher crate exports a [`Cluster`], the plug
//! `--cluster NAME` finds, as a queue crate exports a [`crate::Driver`]: it
//! turns the runner's [`WorkerRequest`] and the [`ClusterFlags`] into a
//! [`LaunchSpec`] and connects a [`ClusterLauncher`], which starts, watches,
//! waits for, scales and stops the workers, and says in its own words how
//! they are doing. [`LocalCluster`] and [`LocalLauncher`] run them as
//! processes on this machine.
//!
//! The runner writes `run` and `launch` once, against these two traits; a
//! launcher of its own (Cloud Run jobs, AWS Batch) is a crate implementing
//! them, added with `runner::Registry::builtin().with_cluster(...)`.

mod local;
mod plug;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use local::{LocalCluster, LocalLauncher};
pub use plug::{Cluster, ClusterFlags, WorkerRequest};

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

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// The workers drained the queue and every one of them has ended.
    Complete,
    /// The launch gave up, or its workers failed.
    Failed {
        /// A short word for why (`BackoffLimitExceeded`, `WorkersFailed`).
        reason: String,
        /// What happened, for people.
        message: String,
    },
}

/// A launch's workers, and how the launch ended once it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchState {
    /// The workers by state.
    pub counts: WorkerCounts,
    /// `None` while the launch is still going.
    pub outcome: Option<LaunchOutcome>,
}

impl LaunchState {
    /// Whether the launch is over.
    pub fn is_over(&self) -> bool {
        self.outcome.is_some()
    }
}

/// How many state reads in a row may fail before [`ClusterLauncher::wait`]
/// gives up: a blip of the launcher's API is not the end of a run.
const WAIT_FAILURES: u32 = 5;

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

/// Starts, watches, waits for, scales and stops a set of workers somewhere,
/// and says how they are doing in its own words. Object safe: the runner
/// holds an `Arc<dyn ClusterLauncher>` from [`Cluster::connect`].
#[async_trait]
pub trait ClusterLauncher: Send + Sync + fmt::Debug {
    /// Whatever can be checked before `launch` without starting anything:
    /// the spec is valid here, and nothing of the same name is running
    /// (a finished leftover may be cleaned away). The default checks nothing.
    async fn check(&self, spec: &LaunchSpec) -> Result<(), LaunchError> {
        let _ = spec;
        Ok(())
    }

    /// Start the workers.
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError>;

    /// How they are doing, and how the launch ended once it has.
    async fn state(&self, handle: &LaunchHandle) -> Result<LaunchState, LaunchError>;

    /// Wait until the launch is over. `seen` gets each state read on the
    /// way (a launcher that is told of each end may read none). The default
    /// reads [`state`](Self::state) every [`poll_interval`](Self::poll_interval),
    /// and gives up only after a few failed reads in a row.
    async fn wait(
        &self,
        handle: &LaunchHandle,
        seen: &mut (dyn for<'s> FnMut(&'s LaunchState) + Send),
    ) -> Result<LaunchState, LaunchError> {
        let mut tick = tokio::time::interval(self.poll_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0;
        loop {
            tick.tick().await;
            match self.state(handle).await {
                Ok(state) => {
                    failures = 0;
                    seen(&state);
                    if state.is_over() {
                        return Ok(state);
                    }
                }
                Err(error) if failures < WAIT_FAILURES => {
                    failures += 1;
                    tracing::warn!("reading the launch failed ({failures} in a row): {error}");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// How often to read the launch's state (and, in the runner, the
    /// queue's progress beside it).
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Run `workers` of them from now on.
    async fn scale(&self, handle: &LaunchHandle, workers: u32) -> Result<(), LaunchError>;

    /// Stop them all (SIGTERM, then a kill after the grace period) and clean up.
    async fn teardown(&self, handle: &LaunchHandle) -> Result<(), LaunchError>;

    /// What `launch` would create, for a dry run.
    fn render(&self, spec: &LaunchSpec) -> Result<String, LaunchError>;

    /// Whether a launch stays when this process ends (a Kubernetes Job
    /// does, local processes do not). Then `launch --detach` may return at
    /// once, a finished `launch` leaves it to the platform to clean up, and
    /// `runner cluster` can find it again by its name.
    fn persists(&self) -> bool {
        false
    }

    /// Whether a launch ends on its own once the queue is drained; one that
    /// keeps scaling on new items (KEDA) does not, so `launch` returns once
    /// it is made.
    fn ends(&self) -> bool {
        true
    }

    /// The launch as people call it (`Job videos`).
    fn name_of(&self, handle: &LaunchHandle) -> String {
        handle.to_string()
    }

    /// The workers' counts in this launcher's words.
    fn describe_workers(&self, counts: &WorkerCounts) -> String {
        format!(
            "workers: {} running, {} exited 0, {} failed, {} disrupted",
            counts.running, counts.succeeded, counts.failed, counts.disrupted
        )
    }

    /// How the launch ended, in this launcher's words.
    fn describe_outcome(&self, outcome: &LaunchOutcome) -> String {
        match outcome {
            LaunchOutcome::Complete => "the launch completed".to_string(),
            LaunchOutcome::Failed { reason, message } => {
                format!("the launch failed: {reason}: {message}")
            }
        }
    }

    /// The whole state in one line: how it ended, where it has, then the workers.
    fn describe(&self, state: &LaunchState) -> String {
        let workers = self.describe_workers(&state.counts);
        match &state.outcome {
            Some(outcome) => format!("{}; {workers}", self.describe_outcome(outcome)),
            None => workers,
        }
    }

    /// What to tell people once the workers are started, if anything;
    /// `cluster` is the `--cluster` name it was reached by.
    fn launched(&self, handle: &LaunchHandle, spec: &LaunchSpec, cluster: &str) -> Option<String> {
        let _ = (handle, spec, cluster);
        None
    }

    /// How to follow a launch `launch --detach` left running.
    fn follow_hint(&self, handle: &LaunchHandle, cluster: &str) -> String {
        format!("follow it with `runner --cluster {cluster} --name {handle} cluster status`")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A launch whose state reads answer from a script, one per read.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Result<LaunchState, &'static str>>>);

    fn running() -> Result<LaunchState, &'static str> {
        Ok(LaunchState {
            counts: WorkerCounts {
                desired: 1,
                running: 1,
                ..WorkerCounts::default()
            },
            outcome: None,
        })
    }

    fn complete() -> Result<LaunchState, &'static str> {
        Ok(LaunchState {
            counts: WorkerCounts {
                desired: 1,
                succeeded: 1,
                ..WorkerCounts::default()
            },
            outcome: Some(LaunchOutcome::Complete),
        })
    }

    #[async_trait]
    impl ClusterLauncher for Scripted {
        async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError> {
            Ok(LaunchHandle(spec.name.clone()))
        }
        async fn state(&self, _: &LaunchHandle) -> Result<LaunchState, LaunchError> {
            self.0.lock().unwrap().remove(0).map_err(LaunchError::new)
        }
        async fn scale(&self, _: &LaunchHandle, _: u32) -> Result<(), LaunchError> {
            Ok(())
        }
        async fn teardown(&self, _: &LaunchHandle) -> Result<(), LaunchError> {
            Ok(())
        }
        fn render(&self, _: &LaunchSpec) -> Result<String, LaunchError> {
            Ok(String::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_polls_until_the_launch_is_over_forgiving_a_few_failed_reads() {
        let mut script = vec![running(), Err("blip")];
        script.extend((0..4).map(|_| Err("blip")));
        script.extend([running(), complete()]);
        let launcher = Scripted(Mutex::new(script));
        let started = tokio::time::Instant::now();
        let mut seen = 0;
        let state = launcher
            .wait(&LaunchHandle("x".into()), &mut |_| seen += 1)
            .await
            .unwrap();
        assert_eq!(state.outcome, Some(LaunchOutcome::Complete));
        assert_eq!(seen, 3, "only good reads are seen");
        // Eight reads, the first at once, then one every 2 s.
        assert_eq!(started.elapsed(), Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_after_too_many_failed_reads_in_a_row() {
        let script = (0..=WAIT_FAILURES).map(|_| Err("gone")).collect();
        let launcher = Scripted(Mutex::new(script));
        let error = launcher
            .wait(&LaunchHandle("x".into()), &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "gone");
    }

    #[test]
    fn the_default_words_put_the_outcome_first() {
        let launcher = Scripted(Mutex::new(Vec::new()));
        let failed = LaunchState {
            counts: WorkerCounts {
                desired: 2,
                failed: 2,
                ..WorkerCounts::default()
            },
            outcome: Some(LaunchOutcome::Failed {
                reason: "WorkersFailed".into(),
                message: "both exited 1".into(),
            }),
        };
        assert_eq!(
            launcher.describe(&failed),
            "the launch failed: WorkersFailed: both exited 1; \
             workers: 0 running, 0 exited 0, 2 failed, 0 disrupted"
        );
    }
}
