//! [`WithOutputs`]: any handler, with a fresh output directory per attempt
//! and its files in the store before the attempt counts as a success.
//!
//! The upload runs inside the attempt, so everything the worker does for a
//! running task goes on during it: the lease is renewed, `--task-timeout`
//! counts it, a lost lease or the end of the shutdown grace stops it (the
//! upload is dropped mid-call), and only an attempt whose files and record
//! are all in the store reaches the receipt and the ack.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use forloop_core::handler::{Capture, OutcomeKind, Stream};
use forloop_core::{Handler, Task, TaskOutcome};

use crate::publish::Extras;
use crate::store::OutputStore;

/// A handler whose attempts each get a fresh, empty output directory
/// (`FORLOOP_OUTPUT_DIR`, `{out}` in a command template,
/// [`Task::output_dir`]) whose files go to the store when the attempt
/// succeeds. The directory is removed when the attempt ends, however it
/// ends.
pub struct WithOutputs {
    inner: Arc<dyn Handler>,
    store: Arc<OutputStore>,
    scratch: PathBuf,
    next: AtomicU64,
}

impl std::fmt::Debug for WithOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithOutputs")
            .field("store", &self.store)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl WithOutputs {
    /// Wrap `inner`; attempts' directories are made under `scratch` (which
    /// is made if missing).
    pub fn new(inner: Arc<dyn Handler>, store: Arc<OutputStore>, scratch: PathBuf) -> Self {
        Self {
            inner,
            store,
            scratch,
            next: AtomicU64::new(0),
        }
    }

    /// A scratch directory of this process under the system's temporary
    /// directory (`$TMPDIR`): `forloop-outputs-PID`.
    pub fn default_scratch() -> PathBuf {
        std::env::temp_dir().join(format!("forloop-outputs-{}", std::process::id()))
    }

    /// Remove the scratch directories ([`WithOutputs::default_scratch`])
    /// of processes that are gone: a worker killed with SIGKILL cannot
    /// clean up after itself, and a restarted one on the same disk should
    /// not inherit its leftovers. Returns how many were removed.
    pub fn sweep_dead_scratch() -> usize {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("forloop-outputs-"))
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove(&entry.path());
                removed += 1;
            }
        }
        removed
    }

    /// The store.
    pub fn store(&self) -> &Arc<OutputStore> {
        &self.store
    }
}

/// Removes an attempt's directory, and the files of its kept streams
/// beside it, when the attempt ends: at once when it returns, or when its
/// future is dropped (timeout, lost lease, shutdown).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.0);
        let clean = move || {
            remove(&dir);
            for stream in [Stream::Stdout, Stream::Stderr] {
                let _ = std::fs::remove_file(Capture::path(&dir, stream));
            }
        };
        // Off the async threads: a large directory takes a while.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn_blocking(clean));
            }
            Err(_) => clean(),
        }
    }
}

fn remove(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove an attempt's output directory");
    }
}

#[async_trait]
impl Handler for WithOutputs {
    async fn handle(&self, mut task: Task) -> TaskOutcome {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.scratch.join(format!("a{n}"));
        // Fresh and empty: whatever an earlier run of this process left
        // under that name goes first.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(error) = std::fs::create_dir_all(&dir) {
            return TaskOutcome::failed(format!(
                "cannot make the output directory `{}`: {error}",
                dir.display()
            ));
        }
        let scratch = Scratch(dir.clone());
        task.output_dir = Some(Arc::from(dir.as_path()));
        let (item, attempt) = (task.item.clone(), task.attempt);
        let mut outcome = self.inner.handle(task).await;
        if outcome.kind != OutcomeKind::Succeeded {
            if !outcome.captured.is_empty() {
                // A failed attempt's output is what its user debugs with:
                // kept, best effort (the attempt has failed anyway).
                let why = outcome.reason.as_deref().unwrap_or("failed");
                match self
                    .store
                    .publish_failed(&item, attempt, &outcome.captured, why)
                    .await
                {
                    Ok(Some(record)) => {
                        tracing::debug!(key = %record.key, "a failed attempt's output stored")
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(
                        "cannot keep the output of a failed attempt: {}",
                        forloop_core::ErrorChain(&error)
                    ),
                }
            }
            drop(scratch);
            return outcome;
        }
        let extras = Extras {
            captured: &outcome.captured,
            value: outcome.value.as_ref(),
        };
        let published = self.store.publish_with(&item, attempt, &dir, extras).await;
        drop(scratch);
        match published {
            Ok(record) => {
                tracing::debug!(key = %record.key, files = record.files.len(), "outputs stored");
                if let Some(file) = &record.value_file {
                    // The receipt names it; the value itself is the store's.
                    outcome.value = None;
                    outcome.value_url = Some(Arc::from(self.store.object_url(&file.key)));
                }
                outcome.captured.clear();
                outcome
            }
            Err(error) => {
                let mut failed = TaskOutcome::failed(format!(
                    "outputs not stored: {}",
                    forloop_core::ErrorChain(&error)
                ));
                failed.exit_code = outcome.exit_code;
                failed.stderr_tail = outcome.stderr_tail;
                failed
            }
        }
    }
}
