//! The worker flags: checked against what the backend can do, turned into
//! a worker's config in this process, or into the (flag, value) settings a
//! launcher hands to workers it starts elsewhere.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::Capabilities;
use forloop_core::worker::{Backoff, WorkerConfig};

use crate::Failure;
use crate::cli::WorkerOpts;
use crate::joblog::Joblog;

/// The worker settings of `opts` as (flag, value) pairs: `runner work`
/// reads each as `--FLAG=VALUE` or as the variable `FORLOOP_FLAG` (upper
/// case, `-` → `_`), so local launches pass flags and Kubernetes passes env.
/// The joblog is not here: it names a file on one machine.
pub(crate) fn worker_settings(opts: &WorkerOpts) -> Vec<(&'static str, String)> {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let mut settings = vec![
        ("lease", duration(opts.lease)),
        ("max-attempts", opts.max_attempts.to_string()),
        ("max-lapses", opts.max_lapses.to_string()),
        ("grace", duration(opts.grace)),
        ("max-lease-age", duration(opts.max_lease_age)),
        ("backoff", duration(opts.backoff)),
        ("max-backoff", duration(opts.max_backoff)),
        ("idle-window", duration(opts.idle_window)),
    ];
    if let Some(c) = opts.concurrency {
        settings.push(("concurrency", c.to_string()));
    }
    if let Some(t) = opts.task_timeout {
        settings.push(("task-timeout", duration(t)));
    }
    if !opts.fatal_exit_codes.is_empty() {
        let codes: Vec<String> = opts.fatal_exit_codes.iter().map(i32::to_string).collect();
        settings.push(("fatal-exit-codes", codes.join(",")));
    }
    if let Some(url) = &opts.outputs {
        settings.push(("outputs", url.clone()));
    }
    if !opts.capture.is_empty() {
        let streams: Vec<String> = opts
            .capture
            .iter()
            .map(|s| {
                let s = clap::ValueEnum::to_possible_value(s).expect("no hidden values");
                s.get_name().to_string()
            })
            .collect();
        settings.push(("capture", streams.join(",")));
    }
    if opts.speculate {
        settings.push(("speculate", "true".to_string()));
    }
    if let Some(mode) = opts.serve {
        let mode = clap::ValueEnum::to_possible_value(&mode).expect("no hidden values");
        settings.push(("serve", mode.get_name().to_string()));
    }
    settings
}

/// Check the worker flags against what the backend can do, before any work.
pub(crate) fn check_worker_opts(
    opts: &WorkerOpts,
    caps: &Capabilities,
    queue: &str,
) -> Result<(), Failure> {
    if opts.lease < caps.min_lease || opts.lease > caps.max_lease {
        return Err(Failure::new(format!(
            "--lease {} is outside what the `{queue}` queue allows ({} to {}); pick a lease in that range",
            humantime::format_duration(opts.lease),
            humantime::format_duration(caps.min_lease),
            humantime::format_duration(caps.max_lease),
        )));
    }
    if let Some(max) = caps.max_nack_delay
        && opts.max_backoff > max
    {
        return Err(Failure::new(format!(
            "--max-backoff {} is longer than the `{queue}` queue can delay a retry ({}): \
             pick --max-backoff {} or less",
            humantime::format_duration(opts.max_backoff),
            humantime::format_duration(max),
            humantime::format_duration(max),
        )));
    }
    let deliveries = deliveries(opts.max_attempts, opts.max_lapses);
    if let Some(queue_max) = caps.queue_max_attempts
        && queue_max != deliveries
    {
        let who = if queue_max < deliveries {
            format!(
                "the queue buries an item after {queue_max} deliveries, failed or lapsed, before \
                 workers would ({} failed attempts, {} lapses)",
                opts.max_attempts, opts.max_lapses
            )
        } else {
            format!(
                "workers bury an item after {} failed attempts or {} lapses; the queue's own \
                 limit of {queue_max} deliveries only catches items whose workers died",
                opts.max_attempts, opts.max_lapses
            )
        };
        tracing::warn!(
            "--max-attempts {} with --max-lapses {} ({deliveries} deliveries) differs from the \
             `{queue}` queue's own limit of {queue_max}: {who}; `runner queue create --max-attempts {} \
             --max-lapses {}` sets the queue's to match",
            opts.max_attempts,
            opts.max_lapses,
            opts.max_attempts,
            opts.max_lapses
        );
    }
    if opts.backoff > opts.max_backoff {
        return Err(Failure::new(format!(
            "--backoff {} is longer than --max-backoff {}",
            humantime::format_duration(opts.backoff),
            humantime::format_duration(opts.max_backoff)
        )));
    }
    Ok(())
}

/// The deliveries after which the backend dead-letters an item on its own
/// ([`forloop_core::worker::deliveries_allowed`]).
pub(crate) fn deliveries(max_attempts: u32, max_lapses: u32) -> u32 {
    forloop_core::worker::deliveries_allowed(max_attempts, max_lapses)
}

/// The `--joblog` file, if asked for.
pub(crate) fn open_joblog(opts: &WorkerOpts) -> Result<Option<Joblog>, Failure> {
    opts.joblog
        .as_deref()
        .map(|path| {
            Joblog::create(path).map_err(|e| {
                Failure::new(format!("cannot create joblog `{}`: {e}", path.display()))
            })
        })
        .transpose()
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `host:pid/index`: unique across machines and processes.
pub(crate) fn worker_name(index: usize) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes
    // at most that many bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    format!("{host}:{}/{index}", std::process::id())
}

/// Make `config` a worker for `job` (where it was started for one), which
/// runs `command` (empty: a built-in handler, not a command).
pub(crate) fn for_job(config: &mut WorkerConfig, job: Option<&str>, command: &[String]) {
    config.for_jobs = job.map(|job| vec![Arc::from(job)]);
    config.command = (!command.is_empty()).then(|| Arc::from(command.join(" ")));
}

/// The config of a worker in this process.
pub(crate) fn worker_config(opts: &WorkerOpts, name: String) -> WorkerConfig {
    WorkerConfig {
        concurrency: opts
            .concurrency
            .map_or_else(default_concurrency, |c| c as usize),
        lease: opts.lease,
        max_lease_age: opts.max_lease_age,
        max_attempts: opts.max_attempts,
        max_lapses: opts.max_lapses,
        task_timeout: opts.task_timeout,
        backoff: Backoff {
            initial: opts.backoff,
            max: opts.max_backoff,
            factor: 2.0,
            ..Backoff::default()
        },
        grace: opts.grace,
        idle_window: opts.idle_window,
        name: Arc::from(name),
        speculate: opts.speculate,
        ..WorkerConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn opts(flags: &[&str]) -> WorkerOpts {
        let args = ["runner", "work"]
            .iter()
            .chain(flags)
            .chain(&["--", "true"])
            .copied();
        match Cli::parse_from(args).command {
            Command::Work(args) => args.worker,
            _ => unreachable!("a work command"),
        }
    }

    #[test]
    fn a_backoff_longer_than_the_queue_can_delay_is_refused_not_cut() {
        let pubsub = Capabilities::new(1024, 10).with_max_nack_delay(Duration::from_secs(600));
        let error = check_worker_opts(&opts(&["--max-backoff", "20m"]), &pubsub, "pubsub://p/q")
            .unwrap_err();
        assert!(
            error.to_string().contains(
                "--max-backoff 20m is longer than the `pubsub://p/q` queue can delay a retry (10m)"
            ),
            "{error}"
        );
        check_worker_opts(&opts(&["--max-backoff", "10m"]), &pubsub, "q").unwrap();
        // A queue with no such limit takes any.
        check_worker_opts(
            &opts(&["--max-backoff", "2h"]),
            &Capabilities::new(1024, 10),
            "q",
        )
        .unwrap();
    }

    #[test]
    fn capture_travels_to_workers_as_one_setting_that_reads_back() {
        let sent = worker_settings(&opts(&[
            "--outputs",
            "s3://b/p",
            "--capture",
            "stdout,stderr",
        ]));
        assert!(
            sent.contains(&("capture", "stdout,stderr".to_string())),
            "{sent:?}"
        );
        // A worker started elsewhere reads it back, as a flag.
        let flag = format!("--capture={}", "stdout,stderr");
        let back = opts(&["--outputs", "s3://b/p", &flag]);
        assert_eq!(
            back.capture,
            [
                crate::cli::CaptureStream::Stdout,
                crate::cli::CaptureStream::Stderr
            ]
        );
        assert!(
            !worker_settings(&opts(&[]))
                .iter()
                .any(|(k, _)| *k == "capture")
        );
    }

    #[test]
    fn speculate_is_off_by_default_and_travels_to_workers() {
        assert!(!opts(&[]).speculate);
        assert!(!worker_config(&opts(&[]), "w".into()).speculate);
        assert!(
            !worker_settings(&opts(&[]))
                .iter()
                .any(|(k, _)| *k == "speculate")
        );
        let on = opts(&["--speculate"]);
        assert!(worker_config(&on, "w".into()).speculate);
        let sent = worker_settings(&on);
        assert!(
            sent.contains(&("speculate", "true".to_string())),
            "{sent:?}"
        );
        // A worker started elsewhere reads it back, as a flag.
        assert!(opts(&["--speculate=true"]).speculate);
    }
}
