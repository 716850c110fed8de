//! `LocalLauncher`: N worker processes on this machine, and
//! [`LocalCluster`], the plug `--cluster local` finds.
//!
//! Each worker slot is a small supervisor task: start the process, wait, and
//! decide. Exit 0 means the queue is drained, so the slot is done. Any other
//! end (non-zero exit, killed by a signal) is replaced, after a short pause,
//! while the launch's restart budget lasts. Teardown sends SIGTERM, waits the
//! grace period, then SIGKILL.
//!
//! Each worker runs in a process group of its own, so a terminal's Ctrl-C
//! (SIGINT to the whole foreground group) reaches only the launcher, which
//! then stops each worker with one SIGTERM: a worker that got both would take
//! the second as "stop now" and kill its tasks without their grace.
//!
//! A slot counts as running from the moment it is created until it ends for
//! good, including while its process starts or waits to be restarted, so
//! [`WorkerCounts::is_finished`] never reports a launch that is not over.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Cluster, ClusterFlags, ClusterLauncher, LaunchError, LaunchHandle, LaunchOutcome, LaunchSpec,
    LaunchState, WorkerCounts, WorkerRequest,
};

/// Runs workers as child processes of this one.
#[derive(Debug, Default)]
pub struct LocalLauncher {
    runs: Mutex<HashMap<String, Arc<Run>>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Run {
    spec: LaunchSpec,
    state: Mutex<RunState>,
    slots: tokio::sync::Mutex<Slots>,
    /// Woken each time a slot ends for good.
    ended: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Slots {
    tasks: JoinSet<()>,
    stops: Vec<CancellationToken>,
}

#[derive(Debug, Default)]
struct RunState {
    counts: WorkerCounts,
    restarts: u32,
}

impl Run {
    fn state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalLauncher {
    /// A launcher with no runs.
    pub fn new() -> Self {
        Self::default()
    }

    fn run(&self, handle: &LaunchHandle) -> Result<Arc<Run>, LaunchError> {
        lock(&self.runs)
            .get(&handle.0)
            .cloned()
            .ok_or_else(|| LaunchError::new(format!("no local launch named `{handle}`")))
    }
}

/// The state of a launch with these counts: over once nothing runs and
/// nothing will be restarted; complete if every worker exited 0 and none
/// failed on the way.
fn state_of(counts: WorkerCounts) -> LaunchState {
    let outcome = counts.is_finished().then(|| {
        if counts.failed == 0 && counts.succeeded >= counts.desired {
            LaunchOutcome::Complete
        } else {
            LaunchOutcome::Failed {
                reason: "WorkersFailed".to_string(),
                message: format!(
                    "{} of {} workers exited 0; {} exits failed",
                    counts.succeeded, counts.desired, counts.failed
                ),
            }
        }
    });
    LaunchState { counts, outcome }
}

fn spawn(spec: &LaunchSpec, slot: usize) -> std::io::Result<Child> {
    let mut command = Command::new(&spec.command[0]);
    command
        .args(&spec.command[1..])
        .envs(&spec.env)
        .env("FORLOOP_WORKER_INDEX", slot.to_string())
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    command.spawn()
}

async fn stop_child(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill has no memory-safety preconditions; the child has not
        // been reaped, so the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            warn!("a worker did not stop within {grace:?} of SIGTERM; killing it");
            child.kill().await?;
            child.wait().await
        }
    }
}

/// Count how a worker ended; returns whether to start it again.
fn record_exit(run: &Run, slot: usize, status: std::io::Result<ExitStatus>) -> bool {
    let mut state = run.state();
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            warn!(%error, slot, "lost track of a worker");
            state.counts.failed += 1;
            return false;
        }
    };
    if status.success() {
        state.counts.succeeded += 1;
        info!(slot, "worker exited 0: queue drained");
        return false;
    }
    match status.signal() {
        Some(signal) => {
            state.counts.disrupted += 1;
            warn!(slot, signal, "worker killed by a signal");
        }
        None if status.code() == Some(i32::from(crate::job::HALTED_EXIT)) => {
            // As a cluster's podFailurePolicy does: a replacement would
            // only find the job halted too.
            state.counts.failed += 1;
            warn!(
                slot,
                "worker exited {}: its job halted past --max-dead; not replacing it",
                crate::job::HALTED_EXIT
            );
            return false;
        }
        None => {
            state.counts.failed += 1;
            warn!(slot, code = status.code(), "worker exited non-zero");
        }
    }
    if state.restarts >= run.spec.max_restarts {
        warn!(
            slot,
            restarts = state.restarts,
            "restart budget spent; not replacing this worker"
        );
        return false;
    }
    state.restarts += 1;
    true
}

/// One worker slot, counted as running (by `set_workers`) until it ends here.
async fn supervise(run: Arc<Run>, slot: usize, stop: CancellationToken) {
    keep_running(&run, slot, &stop).await;
    run.state().counts.running -= 1;
    run.ended.notify_waiters();
}

/// Run the slot's process until it exits 0, is stopped, or the restart
/// budget is spent.
async fn keep_running(run: &Run, slot: usize, stop: &CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        let mut child = match spawn(&run.spec, slot) {
            Ok(child) => child,
            Err(error) => {
                warn!(%error, program = %run.spec.command[0], "cannot start a worker");
                run.state().counts.failed += 1;
                return;
            }
        };
        let status = tokio::select! {
            status = child.wait() => status,
            _ = stop.cancelled() => {
                let status = stop_child(&mut child, run.spec.grace).await;
                info!(slot, ?status, "worker stopped");
                return;
            }
        };
        if !record_exit(run, slot, status) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Run {
    async fn set_workers(self: &Arc<Self>, workers: u32) {
        let mut slots = self.slots.lock().await;
        let workers = workers as usize;
        while slots.stops.len() < workers {
            let stop = CancellationToken::new();
            let slot = slots.stops.len();
            slots.stops.push(stop.clone());
            self.state().counts.running += 1;
            slots.tasks.spawn(supervise(Arc::clone(self), slot, stop));
        }
        while slots.stops.len() > workers {
            slots.stops.pop().expect("non-empty").cancel();
        }
        self.state().counts.desired = workers as u32;
    }
}

#[async_trait]
impl ClusterLauncher for LocalLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchHandle, LaunchError> {
        if spec.command.is_empty() {
            return Err(LaunchError::new("the worker command is empty"));
        }
        let handle = LaunchHandle(format!(
            "{}-{}",
            spec.name,
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let run = Arc::new(Run {
            spec: spec.clone(),
            state: Mutex::new(RunState::default()),
            slots: tokio::sync::Mutex::new(Slots::default()),
            ended: tokio::sync::Notify::new(),
        });
        run.set_workers(spec.workers).await;
        lock(&self.runs).insert(handle.0.clone(), run);
        info!(
            workers = spec.workers,
            "launched {} local workers", spec.workers
        );
        Ok(handle)
    }

    async fn state(&self, handle: &LaunchHandle) -> Result<LaunchState, LaunchError> {
        Ok(state_of(self.run(handle)?.state().counts))
    }

    /// Told of each end, so no polling: returns as the last worker ends.
    /// Does not hold up `scale` or `teardown` meanwhile.
    async fn wait(
        &self,
        handle: &LaunchHandle,
        _seen: &mut (dyn for<'s> FnMut(&'s LaunchState) + Send),
    ) -> Result<LaunchState, LaunchError> {
        let run = self.run(handle)?;
        loop {
            let ended = run.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let state = state_of(run.state().counts);
            if state.is_over() {
                return Ok(state);
            }
            ended.await;
        }
    }

    /// Nothing to read remotely: this paces only the runner's progress.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }

    async fn scale(&self, handle: &LaunchHandle, workers: u32) -> Result<(), LaunchError> {
        self.run(handle)?.set_workers(workers).await;
        Ok(())
    }

    async fn teardown(&self, handle: &LaunchHandle) -> Result<(), LaunchError> {
        let run = self.run(handle)?;
        run.set_workers(0).await;
        let mut slots = run.slots.lock().await;
        while slots.tasks.join_next().await.is_some() {}
        drop(slots);
        lock(&self.runs).remove(&handle.0);
        Ok(())
    }

    fn render(&self, spec: &LaunchSpec) -> Result<String, LaunchError> {
        // The environment may carry the queue's address, password and all.
        let env: String = spec
            .env
            .iter()
            .map(|(key, value)| format!("{key}={} ", crate::kit::redact_url(value)))
            .collect();
        Ok(format!(
            "# {} local worker processes, each:\n{env}{}\n",
            spec.workers,
            spec.command.join(" ")
        ))
    }

    fn describe_workers(&self, counts: &WorkerCounts) -> String {
        format!(
            "workers: {} exited 0, {} failed, {} killed from outside",
            counts.succeeded, counts.failed, counts.disrupted
        )
    }

    /// The counts say how a local launch ended.
    fn describe(&self, state: &LaunchState) -> String {
        self.describe_workers(&state.counts)
    }
}

/// `--cluster local`: the workers are `work` processes of this same
/// program, started and restarted here by a [`LocalLauncher`].
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalCluster;

/// Time past the worker's own grace before the launcher kills it, so a
/// worker gets to give its items back first.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

#[async_trait]
impl Cluster for LocalCluster {
    fn name(&self) -> &str {
        "local"
    }

    fn runs_here(&self) -> bool {
        true
    }

    /// `PROGRAM --name=NAME --log-format=F work --FLAG=VALUE... [-- CMD]`,
    /// with the queue in `FORLOOP_QUEUE`: never on the command line, where
    /// `ps` would show a password to every user of the machine.
    fn spec(
        &self,
        request: &WorkerRequest,
        _flags: &ClusterFlags,
    ) -> Result<LaunchSpec, LaunchError> {
        let exe = std::env::current_exe().map_err(|e| {
            LaunchError::new(format!(
                "cannot find this runner's own path to start workers: {e}"
            ))
        })?;
        let mut argv = vec![
            exe.to_string_lossy().into_owned(),
            format!("--name={}", request.name),
            format!("--log-format={}", request.log_format),
            "work".to_string(),
        ];
        argv.extend(
            request
                .settings
                .iter()
                .map(|(flag, value)| format!("--{flag}={value}")),
        );
        if let Some(path) = &request.joblog {
            argv.push(format!("--joblog={}", path.display()));
        }
        // No command: the binary's own Rust function.
        if !request.command.is_empty() {
            argv.push("--".to_string());
            argv.extend(request.command.iter().cloned());
        }
        Ok(LaunchSpec::new(request.name.clone(), request.workers, argv)
            .with_env(WorkerRequest::variable("queue"), request.queue.clone())
            .with_grace(request.grace + EXIT_MARGIN)
            .with_max_restarts(request.max_restarts))
    }

    fn render(&self, spec: &LaunchSpec, _flags: &ClusterFlags) -> Result<String, LaunchError> {
        LocalLauncher::new().render(spec)
    }

    async fn connect(
        &self,
        _flags: &ClusterFlags,
    ) -> Result<Arc<dyn ClusterLauncher>, LaunchError> {
        Ok(Arc::new(LocalLauncher::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_worker_gets_its_settings_as_flags_and_its_queue_in_the_environment() {
        let mut request = WorkerRequest::new(
            "videos",
            3,
            vec!["echo".into(), "{}".into()],
            "redis://:hunter2@h",
        );
        request.settings = vec![("lease".into(), "30s".into())];
        request.joblog = Some("/tmp/j.tsv".into());
        request.max_restarts = 4;
        let spec = LocalCluster
            .spec(&request, &ClusterFlags::new("default"))
            .unwrap();
        assert_eq!(
            &spec.command[1..],
            [
                "--name=videos",
                "--log-format=text",
                "work",
                "--lease=30s",
                "--joblog=/tmp/j.tsv",
                "--",
                "echo",
                "{}"
            ]
        );
        assert!(!spec.command.concat().contains("hunter2"));
        assert_eq!(spec.env["FORLOOP_QUEUE"], "redis://:hunter2@h");
        assert_eq!((spec.workers, spec.max_restarts), (3, 4));
        assert_eq!(spec.grace, Duration::from_secs(15));
        let shown = LocalCluster
            .render(&spec, &ClusterFlags::new("default"))
            .unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_local_launch_is_complete_only_if_every_worker_exited_0_and_none_failed() {
        let counts = |succeeded, failed, running| WorkerCounts {
            desired: 2,
            running,
            succeeded,
            failed,
            disrupted: 0,
        };
        assert_eq!(state_of(counts(1, 0, 1)).outcome, None);
        assert_eq!(
            state_of(counts(2, 0, 0)).outcome,
            Some(LaunchOutcome::Complete)
        );
        assert!(matches!(
            state_of(counts(2, 1, 0)).outcome,
            Some(LaunchOutcome::Failed { .. })
        ));
        assert!(matches!(
            state_of(counts(1, 0, 0)).outcome,
            Some(LaunchOutcome::Failed { .. })
        ));
    }
}
