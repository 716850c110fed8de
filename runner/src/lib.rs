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
#![deny(missing_docs)]

pub mod cli;
mod commands;
pub mod input;
pub mod joblog;
pub mod progress;
pub mod registry;
mod signals;
mod tally;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;

use clap::Parser;

pub use forloop_core::{Driver, MemoryDriver, QueueAddress};
pub use registry::Registry;

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
    let cli = Cli::parse();
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
    ExitCode::from(runtime.block_on(run_cli(registry, cli)))
}

/// Parse `args` (program name first) and run, returning the exit code.
/// For tests and embedding; [`main_with`] is the usual entry point.
pub async fn run_args<I, T>(registry: Registry, args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run_cli(registry, cli).await,
        Err(error) => {
            let _ = error.print();
            error.exit_code().try_into().unwrap_or(2)
        }
    }
}

use cli::Cli;

async fn run_cli(registry: Registry, cli: Cli) -> u8 {
    init_logging(cli.log_format);
    match commands::dispatch(&registry, cli).await {
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
