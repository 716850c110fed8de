//! `runner run` on a queue that lives in this process (memory): the workers
//! are tasks here, the summary comes from their tally. Exits 0 iff every
//! item succeeded, 3 when the job halted past its `--max-dead`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use forloop_core::worker::{Shutdown, Worker, WorkerExit};
use tokio::task::JoinSet;
use tokio::time::Instant;

use forloop_core::{Driver, QueueAddress};

use super::context::{Context, Prepared};
use super::job::{item_room, send};
use super::worker_settings::{for_job, open_joblog, worker_config, worker_name};
use crate::cli::RunArgs;
use crate::input::{ItemRules, read_items};
use crate::observe::http;
use crate::observe::metrics::serve_workers;
use crate::progress::Progress;
use crate::tally::Tally;
use crate::{Failure, signals};

pub(crate) async fn run(
    context: &Context<'_>,
    args: RunArgs,
    queue: (Arc<dyn Driver>, QueueAddress),
) -> Result<u8, Failure> {
    let started = Instant::now();
    // Bound first: an address in use is refused before anything is sent.
    let listener = match args.metrics.metrics_addr {
        Some(addr) => Some(http::bind("--metrics-addr", addr).await?),
        None => None,
    };
    let prepared = context.prepare(queue, &args.worker, &args.command).await?;
    let handler = prepared.worker_handler();
    let Prepared {
        handler: chosen,
        backend,
        outputs,
        ..
    } = prepared;
    if args.input.input == "-" && std::io::stdin().is_terminal() {
        eprintln!("runner: reading items from the terminal, one per line; end with Ctrl-D");
    }
    let rules = ItemRules::command(item_room(&backend), &args.command, args.allow_dash_items);
    let mut items = read_items(&args.input.input, &rules)?;
    if args.job.resume {
        skip_done(&mut items, &args)?;
    }
    let total = items.items.len();
    let joblog = open_joblog(&args.worker)?;
    let sent = send(
        context,
        &backend,
        &items,
        &args.job,
        Some(&args.command),
        None,
        &Shutdown::new(),
    )
    .await?;
    let blank = items.blank;
    drop(items);

    let progress = Progress::start("done", total as u64);
    let tally = Arc::new(Tally {
        progress: Some(progress.clone()),
        joblog,
        ..Tally::default()
    });
    let shutdown = Shutdown::new();
    let received = signals::listen(shutdown.clone(), args.worker.grace);
    let (backend, metrics) = serve_workers(listener, backend);
    let mut workers = JoinSet::new();
    for index in 0..args.workers as usize {
        let mut config = worker_config(&args.worker, worker_name(index));
        chosen.configure(&mut config);
        for_job(&mut config, sent.job.as_deref(), &args.command);
        let worker = Worker::new(backend.clone(), handler.clone())
            .with_config(config)
            .with_events(tally.clone());
        metrics.watch(&worker);
        workers.spawn(worker.run(shutdown.clone()));
    }
    let mut interrupted = 0;
    let mut drained = false;
    let mut halted = false;
    while let Some(joined) = workers.join_next().await {
        let exit = joined
            .map_err(|e| Failure::new(format!("a worker task failed: {e}")))
            .and_then(|exit| exit.map_err(Failure::from));
        match exit {
            Ok(WorkerExit::Drained) => {
                // The memory queue's backlog is exact: once one worker sees it
                // drained, it is drained for all; let the idle ones go now.
                drained = true;
                shutdown.stop();
            }
            Ok(WorkerExit::Stopped { interrupted: n }) => interrupted += n,
            Ok(WorkerExit::Halted) => {
                // One worker saw the halt in the ledger; the others meet it
                // at their next reading, but need not wait for it.
                halted = true;
                shutdown.stop();
            }
            Err(failure) => {
                workers.shutdown().await;
                chosen.close(true).await;
                return Err(failure);
            }
        }
    }
    chosen.close(received.exit_code().is_some()).await;
    progress.finish();
    if drained {
        crate::outputs::finish(outputs.as_ref(), sent.job.as_deref()).await;
    }

    let done = tally.done.load(Ordering::Relaxed);
    let retried = tally.retried.load(Ordering::Relaxed);
    let dead = tally.dead_items();
    eprintln!(
        "runner: {total} items: {done} done, {} dead-lettered, {retried} failed attempts retried, {} blank lines skipped, in {}",
        dead.len(),
        blank,
        humantime::format_duration(round_ms(started.elapsed()))
    );
    for (item, reason) in dead.iter().take(20) {
        eprintln!("  dead: {item:?}: {reason}");
    }
    if dead.len() > 20 {
        eprintln!("  ... and {} more dead-lettered items", dead.len() - 20);
    }
    if halted && let (Some(ledger), Some(job)) = (&backend.ledger, sent.job.as_deref()) {
        let jobs = ledger.jobs().await.unwrap_or_default();
        if let Some(status) = jobs.iter().find(|s| s.manifest.job == job) {
            eprintln!(
                "runner: job `{job}` {}; the memory queue ends with this process, so \
                 fix the cause and run it again",
                status.halt_line()
            );
            eprintln!("{}", super::summary::halt_causes(&**ledger, status).await);
        }
        return Ok(forloop_core::job::HALTED_EXIT);
    }
    if let Some(code) = received.exit_code().filter(|_| !drained) {
        let left = (total as u64).saturating_sub(done + dead.len() as u64);
        eprintln!(
            "runner: stopped by a signal with {left} items unfinished ({interrupted} cut short); \
             the memory queue ends with this process, so run them again"
        );
        return Ok(code);
    }
    Ok(if dead.is_empty() && done == total as u64 {
        0
    } else {
        1
    })
}

/// `run --resume` on the memory queue: drop the items the joblog records
/// as done (each as many times as it succeeded there).
fn skip_done(items: &mut crate::input::Items, args: &RunArgs) -> Result<(), Failure> {
    let Some(path) = &args.worker.joblog else {
        return Err(Failure::new(
            "the memory queue ends with its process, so `run --resume` reads what was done from \
             the joblog: pass the `--joblog FILE` of the run to resume",
        ));
    };
    let mut done = crate::joblog::done_items(path)
        .map_err(|e| Failure::new(format!("cannot read the joblog {}: {e}", path.display())))?;
    let before = items.items.len();
    let mut keep = Vec::with_capacity(before);
    for (item, line) in items.items.drain(..).zip(items.lines.drain(..)) {
        match done.get_mut(&crate::joblog::escape(&item)) {
            Some(count) if *count > 0 => *count -= 1,
            _ => keep.push((item, line)),
        }
    }
    (items.items, items.lines) = keep.into_iter().unzip();
    eprintln!(
        "runner: resuming from {}: {} of {before} items are done there, {} to run",
        path.display(),
        before - items.items.len(),
        items.items.len()
    );
    Ok(())
}

fn round_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}
