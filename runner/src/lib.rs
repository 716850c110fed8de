//! forloop-runner: the `runner` CLI as a library.
//!
//! A user with their own queue backend links this crate and their driver,
//! and gets the whole CLI:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     // runner::main_with(runner::Registry::builtin().with(my_driver::MyDriver))
//!     runner::main_with(runner::Registry::builtin())
//! }
//! ```
//!
//! A user with their own Rust function gets the whole CLI with that
//! function as `f`: `my-tool run ids.txt` (no `-- CMD`) runs it on every
//! item, and `my-tool --queue redis run ids.txt --workers 4`, `launch` and
//! `--cluster gke` start workers that run `my-tool work`:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     runner::main_with_handler(
//!         runner::Registry::builtin(),
//!         runner::handler::for_str(|item: &str| -> Result<(), std::num::ParseIntError> {
//!             let n: u64 = item.parse()?;
//!             println!("{n} squared is {}", n * n);
//!             Ok(())
//!         }),
//!     )
//! }
//! ```
//!
//! A command after `--` (or `--serve -- CMD`) still works in such a binary,
//! and runs instead of the built-in function.
#![deny(missing_docs)]

mod choice;
mod cli;
mod commands;
mod input;
mod joblog;
mod observe;
mod outputs;
mod progress;
pub mod registry;
mod signals;
mod tally;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

pub use forloop_core::handler;
pub use forloop_core::{Driver, Handler, MemoryDriver, QueueAddress, Task, TaskOutcome};
pub use registry::Registry;

/// Prometheus metrics for worker loops a program of its own runs (see
/// `docs/library.md`): the page `runner work --metrics-addr` serves.
pub mod metrics {
    use forloop_core::Backend;

    pub use crate::observe::metrics::Watched as Metrics;

    /// Serve `/metrics` on `listener`, and give back `backend` with every
    /// queue and ledger call counted and timed (hand it to each
    /// [`Worker`](forloop_core::worker::Worker)), and the [`Metrics`] to
    /// [`watch`](Metrics::watch) each worker with before it runs: the page
    /// reads the counts the worker's loop keeps itself, at each scrape. Call
    /// it inside a Tokio runtime; the page is served on a task of its own.
    pub fn serve(listener: tokio::net::TcpListener, backend: Backend) -> (Backend, Metrics) {
        crate::observe::metrics::serve_workers(Some(listener), backend)
    }
}

/// A failure that ends a command: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }

    /// The same failure, ending the process with `code`.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// The exit code this failure ends the process with.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

macro_rules! failure_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Self::new(forloop_core::ErrorChain(&error).to_string())
            }
        }
    )*};
}

failure_from!(
    forloop_core::QueueError,
    forloop_core::handler::CommandError,
    input::InputError,
    forloop_core::cluster::LaunchError
);

/// Run the CLI with `registry`'s drivers, reading the process's arguments.
pub fn main_with(registry: Registry) -> ExitCode {
    block_on(run_cli(registry, None, Cli::parse()))
}

/// Run the CLI with `registry`'s drivers and `handler` as the function run
/// on each item when no command follows `--`. Workers this process starts
/// (`run` on a shared queue, `launch`, `--cluster gke|k8s`) run this same
/// program's `work`, so the function travels with the binary (on
/// Kubernetes: put the binary in the image under the same name).
pub fn main_with_handler(registry: Registry, handler: impl Handler) -> ExitCode {
    let handler: Arc<dyn Handler> = Arc::new(handler);
    match parse_with_builtin(std::env::args_os()) {
        Ok(cli) => block_on(run_cli(registry, Some(handler), cli)),
        Err(error) => error.exit(),
    }
}

fn block_on(future: impl std::future::Future<Output = u8>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runner: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(future))
}

/// The command line of a binary with a built-in function: the command after
/// `--` becomes optional, and help shows the binary's own name.
fn parse_with_builtin<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    if let Some(name) = args
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
    {
        command = command.bin_name(name);
    }
    for sub in ["run", "work", "launch"] {
        command =
            command.mut_subcommand(sub, |sub| sub.mut_arg("command", |arg| arg.required(false)));
    }
    let matches = command.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Parse `args` (program name first) and run, returning the exit code.
/// For tests and embedding; [`main_with`] is the usual entry point.
pub async fn run_args<I, T>(registry: Registry, args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run_cli(registry, None, cli).await,
        Err(error) => {
            let _ = error.print();
            error.exit_code().try_into().unwrap_or(2)
        }
    }
}

/// [`run_args`] for a binary with a built-in function, as
/// [`main_with_handler`] runs it.
pub async fn run_args_with_handler<I, T>(
    registry: Registry,
    handler: Arc<dyn Handler>,
    args: I,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse_with_builtin(args) {
        Ok(cli) => run_cli(registry, Some(handler), cli).await,
        Err(error) => {
            let _ = error.print();
            error.exit_code().try_into().unwrap_or(2)
        }
    }
}

use cli::Cli;

async fn run_cli(registry: Registry, builtin: Option<Arc<dyn Handler>>, cli: Cli) -> u8 {
    init_logging(cli.log_format);
    match commands::dispatch(&registry, builtin, cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("runner: error: {failure}");
            failure.code()
        }
    }
}

fn init_logging(format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests calling run_args twice) keeps the first subscriber.
    let _ = match format {
        cli::LogFormat::Text => builder.try_init(),
        cli::LogFormat::Json => builder.json().try_init(),
    };
}
