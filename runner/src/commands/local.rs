//! `--cluster local`: `runner launch` and `runner run` on a shared queue
//! with worker processes (`runner work`) started here by the
//! [`LocalLauncher`].

use std::sync::Arc;
use std::time::Duration;

use forloop_core::WorkQueue;
use forloop_core::cluster::{ClusterLauncher, LaunchSpec, LocalLauncher, WorkerCounts};
use forloop_core::worker::Shutdown;

use super::Context;
use super::shared::{follow_backlog, submit_input, summarize, worker_settings};
use crate::cli::{LaunchArgs, LogFormat, RunArgs, WorkerOpts};
use crate::progress::Progress;
use crate::{Failure, signals};

/// The `runner work` flags that reproduce `opts` in a child process.
fn worker_flags(opts: &WorkerOpts) -> Vec<String> {
    let mut flags: Vec<String> = worker_settings(opts)
        .into_iter()
        .map(|(flag, value)| format!("--{flag}={value}"))
        .collect();
    if let Some(path) = &opts.joblog {
        flags.push(format!("--joblog={}", path.display()));
    }
    flags
}

/// The variable `runner work` reads `--queue` from. The queue goes to the
/// workers through it, never on their command lines, where `ps` would show
/// a password to every user of the machine.
const QUEUE_VARIABLE: &str = "FORLOOP_QUEUE";

/// The launch of `workers` × `runner work` (restarted up to `max_restarts`)
/// on `queue` (a dry run passes it redacted).
fn spec(
    context: &Context<'_>,
    queue: &str,
    opts: &WorkerOpts,
    (workers, max_restarts): (u32, u32),
    command: &[String],
) -> Result<LaunchSpec, Failure> {
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(format!(
            "cannot find this runner's own path to start workers: {e}"
        ))
    })?;
    let mut argv = vec![
        exe.to_string_lossy().into_owned(),
        format!("--name={}", context.name),
        format!(
            "--log-format={}",
            match context.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
        ),
        "work".to_string(),
    ];
    argv.extend(worker_flags(opts));
    // No command: the binary's own Rust function.
    if !command.is_empty() {
        argv.push("--".to_string());
        argv.extend(command.iter().cloned());
    }
    // The launcher waits a little longer than the worker's own grace, so a
    // worker gets to give its items back before it is killed.
    Ok(LaunchSpec::new(context.name.clone(), workers, argv)
        .with_env(QUEUE_VARIABLE, queue)
        .with_grace(opts.grace + Duration::from_secs(5))
        .with_max_restarts(max_restarts))
}

/// Wait for every worker to end, tearing down on SIGTERM/SIGINT. Returns
/// the final counts and the signal's exit code, if one came.
async fn supervise(
    launcher: &LocalLauncher,
    handle: &forloop_core::LaunchHandle,
    grace: Duration,
    mut on_tick: impl FnMut(),
) -> Result<(WorkerCounts, Option<u8>), Failure> {
    let shutdown = Shutdown::new();
    let received = signals::listen(shutdown.clone(), grace);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            counts = launcher.wait(handle) => {
                let counts = counts?;
                launcher.teardown(handle).await?;
                return Ok((counts, received.exit_code()));
            }
            _ = tick.tick() => on_tick(),
            _ = shutdown.stopping() => {
                // Workers got the same signal from the terminal, or get it now.
                let counts = launcher.status(handle).await?;
                launcher.teardown(handle).await?;
                return Ok((counts, received.exit_code()));
            }
        }
    }
}

fn describe(counts: &WorkerCounts) -> String {
    format!(
        "workers: {} exited 0, {} failed, {} killed from outside",
        counts.succeeded, counts.failed, counts.disrupted
    )
}

pub(crate) async fn launch(context: &Context<'_>, args: LaunchArgs) -> Result<u8, Failure> {
    let launcher = LocalLauncher::new();
    if args.dry_run {
        let (driver, address) = context.driver("launch", None)?;
        let spec = spec(
            context,
            &driver.redact(&address),
            &args.worker,
            (args.workers, args.max_restarts),
            &args.command,
        )?;
        print!("{}", launcher.render(&spec)?);
        return Ok(0);
    }
    let prepared = context
        .prepare("launch", None, &args.worker, &args.command)
        .await?;
    let spec = spec(
        context,
        &prepared.address.spec,
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
    )?;
    let handle = launcher.launch(&spec).await?;
    tracing::info!(
        workers = args.workers,
        "launched {} local workers",
        args.workers
    );
    let (counts, signal) = supervise(&launcher, &handle, args.worker.grace, || {}).await?;
    eprintln!("runner: {}", describe(&counts));
    if let Some(code) = signal {
        return Ok(code);
    }
    Ok(if counts.succeeded == args.workers && counts.failed == 0 {
        0
    } else {
        1
    })
}

/// `runner run` on a shared queue: submit, launch, wait, tear down, summarize.
pub(crate) async fn run(
    context: &Context<'_>,
    args: RunArgs,
    queue: Arc<dyn WorkQueue>,
    queue_spec: &str,
) -> Result<u8, Failure> {
    let submitted = submit_input(context, &*queue, &args).await?;
    let spec = spec(
        context,
        queue_spec,
        &args.worker,
        (args.workers, args.max_restarts),
        &args.command,
    )?;
    let launcher = LocalLauncher::new();
    let handle = launcher.launch(&spec).await?;
    let progress = Progress::start("done", submitted.total);
    let (tick, reader) = follow_backlog(&queue, &progress, &submitted);
    let (counts, signal) = supervise(&launcher, &handle, args.worker.grace, || {
        let _ = tick.send(());
    })
    .await?;
    drop(tick);
    let _ = reader.await;
    progress.finish();
    summarize(
        &*queue,
        &submitted,
        &describe(&counts),
        counts.failed == 0,
        signal,
    )
    .await
}
