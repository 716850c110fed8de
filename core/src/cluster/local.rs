//! `LocalLauncher`: N worker processes on this machine.
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

use super::{ClusterLauncher, LaunchError, LaunchHandle, LaunchSpec, WorkerCounts};

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

    /// Wait until every worker of the launch has ended for good. Does not
    /// hold up `scale` or `teardown` meanwhile.
    pub async fn wait(&self, handle: &LaunchHandle) -> Result<WorkerCounts, LaunchError> {
        let run = self.run(handle)?;
        loop {
            let ended = run.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let counts = run.state().counts;
            if counts.is_finished() {
                return Ok(counts);
            }
            ended.await;
        }
    }
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
        Ok(handle)
    }

    async fn status(&self, handle: &LaunchHandle) -> Result<WorkerCounts, LaunchError> {
        Ok(self.run(handle)?.state().counts)
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
}
