//! `--outputs URL`: the output store, opened and probed once per command
//! before anything is sent or started, the handler that fills it, and the
//! job's manifest at its end. The store's URL forms and clients are
//! forloop-outputs' business: the runner only passes the URL on.

use std::sync::Arc;

use forloop_core::Handler;
use forloop_outputs::{OutputStore, StoreSettings, WithOutputs};

use crate::Failure;
use crate::cli::WorkerOpts;

/// Open the store `opts` names and write and delete a probe object in it:
/// a bad URL, a missing bucket, no credentials or no write permission is
/// one error naming the URL, before anything runs.
pub(crate) async fn open(opts: &WorkerOpts) -> Result<Option<Arc<OutputStore>>, Failure> {
    let Some(url) = opts.outputs.as_deref() else {
        return Ok(None);
    };
    let fail = |error: forloop_outputs::OutputsError| {
        Failure::new(forloop_core::ErrorChain(&error).to_string())
    };
    let store = OutputStore::open(url, StoreSettings::default()).map_err(fail)?;
    store.probe().await.map_err(fail)?;
    tracing::debug!(store = store.url(), "output store ready");
    Ok(Some(Arc::new(store)))
}

/// `handler`, with an output directory per attempt whose files go to
/// `store` before the attempt counts as a success. Without a store, a
/// value over what a receipt keeps fails its attempt (it would be lost).
pub(crate) fn wrap(
    handler: Arc<dyn Handler>,
    store: Option<&Arc<OutputStore>>,
) -> Arc<dyn Handler> {
    match store {
        Some(store) => {
            flat_large_allocations();
            let swept = WithOutputs::sweep_dead_scratch();
            if swept > 0 {
                tracing::info!(
                    swept,
                    "removed the output directories of workers that are gone"
                );
            }
            Arc::new(WithOutputs::new(
                handler,
                Arc::clone(store),
                WithOutputs::default_scratch(),
            ))
        }
        None => Arc::new(forloop_core::handler::ValuesInReceipts::new(handler)),
    }
}

/// Upload parts (8 MiB each) are allocated and freed on whichever thread
/// runs the task: glibc then raises its mmap threshold past them and keeps
/// freed parts in per-thread arenas, so the peak RSS grew with the size of
/// the file (47 MB for 16 MiB, 71 MB for 128 MiB, 87 MB for 256 MiB).
/// A fixed threshold of 1 MiB maps every large buffer on its own and gives
/// it back when freed: memory stays flat as files grow.
fn flat_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // upload buffer exists, it has no other effect.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// At a job's end: its manifest beside its outputs. A manifest that cannot
/// be written is said, not fatal: every item's record is in the store, and
/// `runner results --json` lists them.
pub(crate) async fn finish(store: Option<&Arc<OutputStore>>, job: Option<&str>) {
    let (Some(store), Some(job)) = (store, job) else {
        return;
    };
    match store.write_manifest(job).await {
        Ok((url, items)) => eprintln!("runner: outputs of {items} items listed in {url}"),
        Err(error) => eprintln!(
            "runner: cannot write the manifest of job `{job}`: {}; every item's record is in the \
             store: `runner results --json --job {job}` lists them",
            forloop_core::ErrorChain(&error)
        ),
    }
}
