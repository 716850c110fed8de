//! One module per subcommand; this one holds what they share: opening the
//! queue, turning flags into a worker config, publishing a whole input.

//! Layout: a file per command (`submit`, `work`, `status` with `wait`,
//! `dead`, `queue_admin`, `run` on the memory queue), the two places
//! workers are started as siblings (`local`, `k8s`), and `shared`, what
//! both of those and `run` use. Nothing imports back up that chain.

mod dead;
mod job;
#[cfg(feature = "k8s")]
mod k8s;
mod local;
mod queue_admin;
mod results;
mod run;
mod shared;
mod status;
mod submit;
mod work;

use std::sync::Arc;

use bytes::Bytes;
use forloop_core::worker::{Backoff, WorkerConfig};
use forloop_core::{Capabilities, ErrorChain, Message, QueueConfig, WorkQueue};

use crate::Failure;
use crate::cli::{Cli, Cluster, Command, WorkerOpts};
use crate::input::Items;
use crate::progress::Progress;
use crate::registry::Registry;
use forloop_core::{Driver, QueueAddress};

/// Flags every command shares.
pub(crate) struct Context<'a> {
    registry: &'a Registry,
    /// The Rust function built into this binary, if any.
    builtin: Option<Arc<dyn forloop_core::Handler>>,
    queue: Option<String>,
    name: String,
    cluster: Cluster,
    log_format: crate::cli::LogFormat,
}

pub(crate) async fn dispatch(
    registry: &Registry,
    builtin: Option<Arc<dyn forloop_core::Handler>>,
    cli: Cli,
) -> Result<u8, Failure> {
    let context = Context {
        registry,
        builtin,
        queue: cli.queue,
        name: cli.name,
        cluster: cli.cluster,
        log_format: cli.log_format,
    };
    match cli.command {
        Command::Run(args) => match context.kubernetes()? {
            #[cfg(feature = "k8s")]
            true => k8s::run(&context, args).await,
            _ => run::run(&context, args).await,
        },
        Command::Submit(args) => submit::submit(&context, args).await,
        Command::Work(args) => work::work(&context, args).await,
        Command::Status(args) => status::status(&context, args).await,
        Command::Wait(args) => status::wait(&context, args).await,
        Command::Launch(args) => match context.kubernetes()? {
            #[cfg(feature = "k8s")]
            true => k8s::launch(&context, args).await,
            _ => local::launch(&context, args).await,
        },
        Command::Results(args) => results::results(&context, args).await,
        Command::Dead(command) => dead::dead(&context, command).await,
        Command::Cluster(command) => {
            if !context.kubernetes()? {
                return Err(Failure::new(
                    "`runner cluster` acts on a Kubernetes Job: pass --cluster gke or --cluster k8s",
                ));
            }
            #[cfg(feature = "k8s")]
            return k8s::cluster(&context, command).await;
            #[cfg(not(feature = "k8s"))]
            unreachable!("{command:?}")
        }
        Command::Queue(command) => queue_admin::queue(&context, command).await,
    }
}

impl Context<'_> {
    /// Whether `--cluster` is a Kubernetes cluster (and this build can reach
    /// one); an unknown cluster is an error.
    fn kubernetes(&self) -> Result<bool, Failure> {
        match self.cluster {
            Cluster::Local => Ok(false),
            Cluster::Gke | Cluster::K8s if cfg!(feature = "k8s") => Ok(true),
            Cluster::Gke | Cluster::K8s => Err(Failure::new(format!(
                "--cluster {} needs a runner built with Kubernetes support: \
                 cargo install --path runner --features k8s (the Dockerfile's FEATURES build arg too)",
                self.cluster
            ))),
        }
    }

    /// The driver for `--queue`, refusing in-process queues for commands
    /// that would lose their items when the process exits.
    fn driver(
        &self,
        command: &str,
        default: Option<&str>,
    ) -> Result<(Arc<dyn Driver>, QueueAddress), Failure> {
        let Some(spec) = self.queue.as_deref().or(default) else {
            return Err(Failure::new(format!(
                "`runner {command}` needs a shared queue: pass --queue (or set FORLOOP_QUEUE) to one of: {}",
                self.shared_drivers()
            )));
        };
        let (driver, address) = self.registry.resolve(spec)?;
        if driver.in_process() && command != "run" {
            return Err(Failure::new(format!(
                "the `{}` queue lives inside one process, so `runner {command}` cannot share it with other commands. \
                 Use `runner run` (submit, work and wait in one process), or a shared queue: {}",
                driver.name(),
                self.shared_drivers()
            )));
        }
        Ok((driver, address))
    }

    fn shared_drivers(&self) -> String {
        let names: Vec<&str> = self
            .registry
            .names()
            .into_iter()
            .filter(|name| *name != "memory")
            .collect();
        if names.is_empty() {
            "none is compiled into this runner (build it with a driver feature, e.g. --features redis)"
                .to_string()
        } else {
            names.join(", ")
        }
    }

    fn queue_config(&self, worker: Option<&WorkerOpts>) -> QueueConfig {
        let config = QueueConfig::new(self.name.clone());
        match worker {
            Some(opts) => config
                .with_lease(opts.lease)
                .with_max_attempts(opts.max_attempts),
            None => config,
        }
    }

    async fn open(
        &self,
        driver: &dyn Driver,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, Failure> {
        driver.open(address, config).await.map_err(|error| {
            Failure::new(format!(
                "cannot open queue `{}`: {}",
                driver.redact(address),
                ErrorChain(&error)
            ))
        })
    }
}

/// What a command that runs items has checked before any work: the program
/// can start, the queue opens, and the worker flags fit the backend.
pub(crate) struct Prepared {
    driver: Arc<dyn Driver>,
    address: QueueAddress,
    handler: crate::choice::Chosen,
    queue: Arc<dyn WorkQueue>,
}

impl Context<'_> {
    async fn prepare(
        &self,
        command: &str,
        default_queue: Option<&str>,
        opts: &WorkerOpts,
        argv: &[String],
    ) -> Result<Prepared, Failure> {
        let (driver, address) = self.driver(command, default_queue)?;
        let handler = crate::choice::Chosen::choose(self.builtin.as_ref(), opts, argv)?;
        let queue = self
            .open(&*driver, &address, self.queue_config(Some(opts)))
            .await?;
        check_worker_opts(opts, &queue.capabilities(), &driver.redact(&address))?;
        Ok(Prepared {
            driver,
            address,
            handler,
            queue,
        })
    }
}

/// The `--joblog` file, if asked for.
fn open_joblog(opts: &WorkerOpts) -> Result<Option<crate::joblog::Joblog>, Failure> {
    opts.joblog
        .as_deref()
        .map(|path| {
            crate::joblog::Joblog::create(path).map_err(|e| {
                Failure::new(format!("cannot create joblog `{}`: {e}", path.display()))
            })
        })
        .transpose()
}

/// Check the worker flags against what the backend can do, before any work.
fn check_worker_opts(opts: &WorkerOpts, caps: &Capabilities, queue: &str) -> Result<(), Failure> {
    if opts.lease < caps.min_lease || opts.lease > caps.max_lease {
        return Err(Failure::new(format!(
            "--lease {} is outside what the `{queue}` queue allows ({} to {}); pick a lease in that range",
            humantime::format_duration(opts.lease),
            humantime::format_duration(caps.min_lease),
            humantime::format_duration(caps.max_lease),
        )));
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

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `host:pid/index`: unique across machines and processes.
fn worker_name(index: usize) -> String {
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

fn worker_config(opts: &WorkerOpts, name: String) -> WorkerConfig {
    WorkerConfig {
        concurrency: opts
            .concurrency
            .map_or_else(default_concurrency, |c| c as usize),
        lease: opts.lease,
        max_lease_age: opts.max_lease_age,
        max_attempts: opts.max_attempts,
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
        ..WorkerConfig::default()
    }
}

/// Publish every item, in the queue's largest batches. On a failure part-way,
/// say exactly which lines went in, so the rest can be submitted alone.
/// The largest item `queue` takes from an input: its payload limit, less
/// the room a job's attributes need where it keeps jobs.
fn item_room(queue: &dyn WorkQueue) -> usize {
    let max = queue.capabilities().max_payload;
    if queue.ledger().is_some() {
        max.saturating_sub(forloop_core::job::JOB_ATTRIBUTES_ROOM)
    } else {
        max
    }
}

async fn publish_all(
    queue: &dyn WorkQueue,
    items: &Items,
    progress: Option<&Progress>,
) -> Result<(), Failure> {
    let batch = queue.capabilities().max_batch.max(1);
    let mut published = 0usize;
    for chunk in items.items.chunks(batch) {
        let messages: Vec<Message> = chunk
            .iter()
            .map(|item: &Bytes| Message::new(item.clone()))
            .collect();
        if let Err(error) = queue.publish(messages).await {
            let message = if published == 0 {
                format!(
                    "publishing failed; nothing was submitted: {}",
                    ErrorChain(&error)
                )
            } else {
                let next_line = items.lines[published];
                format!(
                    "publishing failed after {published} of {} items: {}. Lines before {next_line} are in the queue; \
                     submit the rest with `tail -n +{next_line} FILE | runner submit -`",
                    items.items.len(),
                    ErrorChain(&error)
                )
            };
            return Err(Failure::new(message));
        }
        published += chunk.len();
        if let Some(progress) = progress {
            progress.add(chunk.len() as u64);
        }
    }
    Ok(())
}
