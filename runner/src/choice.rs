//! Which `f` runs the items, chosen once per command from the flags: the
//! command after `--` once per item, the same command as a warm process per
//! task slot (`--serve`), or the Rust function built into this binary
//! ([`crate::main_with_handler`]) when no command is given.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::handler::{ServeConfig, ServeFormat, ServeHandler};
use forloop_core::{CommandTemplate, Handler, WorkerConfig};

use crate::Failure;
use crate::cli::{CaptureStream, ServeMode, WorkerOpts};

/// The handler of one `run`, `work` or `launch`.
pub(crate) enum Chosen {
    /// `-- CMD {}`: a process per item.
    Command(Arc<CommandTemplate>),
    /// `--serve -- CMD`: a warm process per task slot.
    Serve(Arc<ServeHandler>),
    /// No command: this binary's own Rust function.
    Builtin(Arc<dyn Handler>),
}

impl Chosen {
    /// Choose from the flags, checking up front that the program can start.
    pub(crate) fn choose(
        builtin: Option<&Arc<dyn Handler>>,
        opts: &WorkerOpts,
        argv: &[String],
    ) -> Result<Self, Failure> {
        let capture = capture(opts, argv)?;
        if argv.is_empty() {
            return match (builtin, opts.serve) {
                (_, Some(_)) => Err(Failure::new(
                    "--serve runs a command as a warm process: put it after `--`, e.g. \
                     `--serve -- python3 worker.py`",
                )),
                (Some(handler), None) => Ok(Self::Builtin(Arc::clone(handler))),
                (None, None) => Err(forloop_core::handler::CommandError::Empty.into()),
            };
        }
        let template = CommandTemplate::new(argv)?
            .with_fatal_exit_codes(opts.fatal_exit_codes.iter().copied())
            .with_capture(capture);
        if template.uses_output_dir() && opts.outputs.is_none() {
            return Err(Failure::new(format!(
                "the command uses `{}`, the attempt's output directory, which only --outputs \
                 makes: pass --outputs URL (s3://, gs://, az://, file:/// or a directory)",
                forloop_core::handler::OUT_PLACEHOLDER
            )));
        }
        template.check_program()?;
        Ok(match opts.serve {
            None => Self::Command(Arc::new(template)),
            Some(mode) => {
                let config = ServeConfig {
                    format: match mode {
                        ServeMode::Lines => ServeFormat::Lines,
                        ServeMode::Json => ServeFormat::Json,
                    },
                    // The serve handler times the answer itself, so its
                    // error can say whether the process ever read the item.
                    reply_timeout: opts.task_timeout,
                    ..ServeConfig::default()
                };
                Self::Serve(Arc::new(ServeHandler::new(argv, config)?))
            }
        })
    }

    /// The handler for the workers.
    pub(crate) fn handler(&self) -> Arc<dyn Handler> {
        match self {
            Self::Command(template) => Arc::clone(template) as Arc<dyn Handler>,
            Self::Serve(serve) => Arc::clone(serve) as Arc<dyn Handler>,
            Self::Builtin(handler) => Arc::clone(handler),
        }
    }

    /// Fit the worker's config to the handler.
    pub(crate) fn configure(&self, config: &mut WorkerConfig) {
        if let Self::Serve(serve) = self
            && let Some(limit) = serve.config().reply_timeout
        {
            // A backstop only: the serve handler answers at `limit`.
            config.task_timeout = Some(limit + Duration::from_secs(5));
        }
    }

    /// After the workers returned: end the warm processes (end of input,
    /// then a kill after a short wait: shorter when stopped by a signal,
    /// whose grace is already spent).
    pub(crate) async fn close(&self, stopped_by_signal: bool) {
        if let Self::Serve(serve) = self {
            let limit = if stopped_by_signal {
                Duration::from_secs(1)
            } else {
                serve.config().stop_timeout
            };
            serve.close_within(limit).await;
        }
    }
}

/// The streams `--capture` keeps, refused up front where they cannot be
/// kept: without an output store, or with no command per item to take
/// them from.
fn capture(opts: &WorkerOpts, argv: &[String]) -> Result<forloop_core::handler::Capture, Failure> {
    let capture = forloop_core::handler::Capture {
        stdout: opts.capture.contains(&CaptureStream::Stdout),
        stderr: opts.capture.contains(&CaptureStream::Stderr),
    };
    if !capture.any() {
        return Ok(capture);
    }
    if opts.outputs.is_none() {
        return Err(Failure::new(
            "--capture keeps each attempt's output in the output store, which only --outputs \
             names: pass --outputs URL (s3://, gs://, az://, file:/// or a directory)",
        ));
    }
    if opts.serve.is_some() || argv.is_empty() {
        return Err(Failure::new(
            "--capture keeps the output of a command run per item (`-- CMD {}`); a --serve \
             process's or this binary's own function's output is not an item's alone: write \
             what to keep into the attempt's output directory (FORLOOP_OUTPUT_DIR) instead",
        ));
    }
    Ok(capture)
}
