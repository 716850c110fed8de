//! `runner work`: one worker process, until drained (0), halted (3) or
//! stopped (143/130).

use std::sync::Arc;

use forloop_core::worker::{Shutdown, Worker, WorkerExit};

use super::context::{Context, Prepared};
use super::worker_settings::{for_job, open_joblog, worker_config, worker_name};
use crate::cli::WorkArgs;
use crate::observe::http;
use crate::observe::metrics::serve_workers;
use crate::tally::Tally;
use crate::{Failure, signals};

pub(crate) async fn work(context: &Context<'_>, args: WorkArgs) -> Result<u8, Failure> {
    // Bound first: an address in use is refused before anything starts.
    let listener = match args.metrics.metrics_addr {
        Some(addr) => Some(http::bind("--metrics-addr", addr).await?),
        None => None,
    };
    let prepared = context
        .prepare(context.driver("work", None)?, &args.worker, &args.command)
        .await?;
    let worker_handler = prepared.worker_handler();
    let Prepared {
        driver,
        address,
        handler,
        backend,
        ..
    } = prepared;
    let tally = Arc::new(Tally {
        joblog: open_joblog(&args.worker)?,
        ..Tally::default()
    });
    let mut config = worker_config(&args.worker, worker_name(0));
    handler.configure(&mut config);
    for_job(&mut config, args.job.as_deref(), &args.command);
    let ends = match &args.job {
        Some(job) => format!("ends when job `{job}` is over, whatever else the queue holds"),
        None if backend.ledger.is_some() => "serves the whole queue: ends when every job on it is over              and no item is left (--job NAME ends on one job)"
            .to_string(),
        None => "ends when the queue is drained".to_string(),
    };
    tracing::info!(
        queue = %driver.redact(&address), name = %context.name, concurrency = config.concurrency,
        "worker {} starting; it {ends}", config.name
    );
    let (backend, metrics) = serve_workers(listener, backend);
    let shutdown = Shutdown::new();
    let received = signals::listen(shutdown.clone(), args.worker.grace);
    let ledger = backend.ledger.clone();
    let worker = Worker::new(backend, worker_handler)
        .with_config(config)
        .with_events(tally.clone());
    metrics.watch(&worker);
    let exit = worker.run(shutdown.clone()).await;
    handler.close(received.exit_code().is_some()).await;
    let exit = exit?;
    let halted: Vec<forloop_core::job::JobStatus> = match (&exit, &ledger) {
        (WorkerExit::Halted, Some(ledger)) => ledger
            .jobs()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|job| job.is_halted())
            .collect(),
        _ => Vec::new(),
    };
    let done = tally.done.load(std::sync::atomic::Ordering::Relaxed);
    let dead = tally.dead_items().len();
    match exit {
        WorkerExit::Drained => {
            let linger = args.metrics.metrics_linger;
            if args.metrics.metrics_addr.is_some() && !linger.is_zero() {
                tracing::info!(
                    done,
                    dead,
                    "queue drained; serving the last metrics for {} before exiting",
                    humantime::format_duration(linger)
                );
                tokio::select! {
                    () = tokio::time::sleep(linger) => {}
                    () = shutdown.stopping() => {}
                }
            }
            tracing::info!(done, dead, "queue drained; exiting 0");
            Ok(0)
        }
        WorkerExit::Halted => {
            for job in &halted {
                tracing::warn!(
                    done,
                    dead,
                    "job `{}` {}; exiting {}",
                    job.manifest.job,
                    job.halt_line(),
                    forloop_core::job::HALTED_EXIT
                );
                if let Some(ledger) = &ledger {
                    tracing::warn!("{}", super::summary::halt_causes(&**ledger, job).await);
                }
            }
            Ok(forloop_core::job::HALTED_EXIT)
        }
        WorkerExit::Stopped { interrupted } => {
            tracing::info!(
                done,
                dead,
                interrupted,
                "stopped; unfinished items are back in the queue"
            );
            Ok(received.exit_code().unwrap_or(143))
        }
    }
}
