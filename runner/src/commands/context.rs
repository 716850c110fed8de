//! What every command starts from: the global flags, and from them the
//! queue's driver (`--queue`), the queue itself, and the launcher plug
//! (`--cluster`), each found through the registry.

use std::fmt::Display;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use forloop_core::cluster::Cluster;
use forloop_core::{Backend, Driver, ErrorChain, Handler, QueueAddress, QueueConfig};

use super::deadline;
use super::worker_settings::check_worker_opts;
use crate::Failure;
use crate::choice::Chosen;
use crate::cli::{LogFormat, WorkerOpts};
use crate::registry::Registry;

/// Flags every command shares.
pub(crate) struct Context<'a> {
    pub(crate) registry: &'a Registry,
    /// The Rust function built into this binary, if any.
    pub(crate) builtin: Option<Arc<dyn Handler>>,
    pub(crate) queue: Option<String>,
    pub(crate) name: String,
    pub(crate) cluster: crate::cli::Cluster,
    pub(crate) log_format: LogFormat,
}

/// The default name of the queue when `--name` is not given.
pub(crate) const DEFAULT_NAME: &str = "forloop";

/// `--name`, else the name the `--queue` URL gives its queue (two queues
/// by URL then never share job names or Kubernetes Jobs), else
/// [`DEFAULT_NAME`].
pub(crate) fn queue_name(registry: &Registry, queue: Option<&str>, name: Option<String>) -> String {
    name.or_else(|| {
        let (driver, address) = registry.resolve(queue?).ok()?;
        driver.queue_name(&address)
    })
    .unwrap_or_else(|| DEFAULT_NAME.to_string())
}

/// What a command that runs items has checked before any work: the program
/// can start, the queue opens, and the worker flags fit the backend.
pub(crate) struct Prepared {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) address: QueueAddress,
    pub(crate) handler: Chosen,
    /// The queue and, where it keeps jobs, its ledger.
    pub(crate) backend: Backend,
    /// The output store (`--outputs`), probed.
    pub(crate) outputs: Option<Arc<forloop_outputs::OutputStore>>,
}

impl Prepared {
    /// The handler the workers run: the chosen one, with its outputs kept
    /// when `--outputs` is given.
    pub(crate) fn worker_handler(&self) -> Arc<dyn forloop_core::Handler> {
        crate::outputs::wrap(self.handler.handler(), self.outputs.as_ref())
    }
}

impl Context<'_> {
    /// The launcher plug `--cluster` names.
    pub(crate) fn launcher(&self) -> Result<Arc<dyn Cluster>, Failure> {
        Ok(self.registry.cluster(&self.cluster.to_string())?)
    }

    /// The driver for `--queue`, refusing in-process queues for commands
    /// that would lose their items when the process exits.
    pub(crate) fn driver(
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

    pub(crate) fn queue_config(&self, worker: Option<&WorkerOpts>) -> QueueConfig {
        let config = QueueConfig::new(self.name.clone());
        match worker {
            Some(opts) => {
                config
                    .with_lease(opts.lease)
                    .with_max_attempts(super::worker_settings::deliveries(
                        opts.max_attempts,
                        opts.max_lapses,
                    ))
            }
            None => config,
        }
    }

    pub(crate) async fn open(
        &self,
        driver: &dyn Driver,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, Failure> {
        self.open_retrying(driver, address, config, Duration::ZERO)
            .await
    }

    /// [`Self::open`], trying again for up to `bound` while it fails for a
    /// reason that may pass (a server restarting).
    pub(crate) async fn open_retrying(
        &self,
        driver: &dyn Driver,
        address: &QueueAddress,
        config: QueueConfig,
        bound: Duration,
    ) -> Result<Backend, Failure> {
        // Every call has a deadline, naming the server when it passes.
        let limit = deadline::call_timeout().map_err(Failure::new)?;
        let server = self.server(driver, address);
        // Opening reads several things (the queue, its siblings): twice
        // the bound of one call.
        let opened = deadline::retrying("opening the queue", bound, || {
            deadline::within(
                &server,
                limit * 2,
                "when opened",
                driver.open(address, config.clone()),
            )
        })
        .await;
        let backend = opened.map_err(|error| {
            Failure::new(format!(
                "cannot open queue `{}`: {}",
                driver.redact(address),
                ErrorChain(&error)
            ))
        })?;
        Ok(deadline::bounded(backend, &server, limit))
    }

    /// The queue as errors name it: its URL (redacted), or its driver and
    /// name.
    pub(crate) fn server(&self, driver: &dyn Driver, address: &QueueAddress) -> String {
        match address.url {
            Some(_) => format!("the queue `{}`", driver.redact(address)),
            None => format!("the {} queue `{}`", driver.name(), self.name),
        }
    }

    /// Choose the handler, open the queue and check the worker flags
    /// against it.
    pub(crate) async fn prepare(
        &self,
        (driver, address): (Arc<dyn Driver>, QueueAddress),
        opts: &WorkerOpts,
        argv: &[String],
    ) -> Result<Prepared, Failure> {
        let handler = Chosen::choose(self.builtin.as_ref(), opts, argv)?;
        let outputs = crate::outputs::open(opts).await?;
        let backend = self
            .open(&*driver, &address, self.queue_config(Some(opts)))
            .await?;
        check_worker_opts(
            opts,
            &backend.queue.capabilities(),
            &driver.redact(&address),
        )?;
        Ok(Prepared {
            driver,
            address,
            handler,
            backend,
            outputs,
        })
    }
}

/// Lines to standard output. A reader that goes away (`runner status |
/// head -1`) ends the output, not the command: no panic, and the command
/// ends as if all was read.
#[derive(Debug, Default)]
pub(crate) struct Stdout {
    closed: bool,
}

impl Stdout {
    /// Print `text` and a newline, unless the reader went away.
    pub(crate) fn line(&mut self, text: impl Display) -> Result<(), Failure> {
        if self.closed {
            return Ok(());
        }
        match writeln!(std::io::stdout().lock(), "{text}") {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(error) => Err(Failure::new(format!(
                "cannot write to standard output: {error}"
            ))),
        }
    }

    /// Whether the reader went away: the rest need not be made.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }
}
