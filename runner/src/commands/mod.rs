//! Dispatch: each subcommand to the file that does it. Nothing else lives
//! here, and no file imports back from here.
//!
//! - `context`: the global flags, the queue's driver and the launcher plug.
//! - `worker_settings`: worker flags checked, as a config, as settings.
//! - `submit` and `job`: sending an input, as a job where the queue keeps jobs.
//! - `run`: submit, start workers, wait, summarize; `in_process` when the
//!   queue lives in this process; `launch`: start workers and follow them;
//!   `summary`: the end of a run; `cluster`: what the runner asks of
//!   `--cluster`, and `runner cluster`. `run` and `launch` are written once
//!   for every launcher.
//! - `work`, `status` (with `wait`), `results`, `dead`, `queue_admin`,
//!   `job_admin` (`runner job list | cancel | forget`).

mod cluster;
pub(crate) mod context;
mod dead;
mod deadline;
mod in_process;
mod job;
mod job_admin;
mod launch;
mod queue_admin;
mod results;
mod run;
mod status;
mod submit;
mod summary;
mod work;
mod worker_settings;

use std::sync::Arc;

use crate::Failure;
use crate::cli::{Cli, Command};
use crate::registry::Registry;

pub(crate) async fn dispatch(
    registry: &Registry,
    builtin: Option<Arc<dyn forloop_core::Handler>>,
    cli: Cli,
) -> Result<u8, Failure> {
    let name = context::queue_name(registry, cli.queue.as_deref(), cli.name);
    let context = context::Context {
        registry,
        builtin,
        queue: cli.queue,
        name,
        cluster: cli.cluster,
        log_format: cli.log_format,
    };
    match cli.command {
        Command::Run(args) => run::run(&context, args).await,
        Command::Submit(args) => submit::submit(&context, args).await,
        Command::Work(args) => work::work(&context, args).await,
        Command::Status(args) => status::status(&context, args).await,
        Command::Wait(args) => status::wait(&context, args).await,
        Command::Dashboard(args) => crate::observe::dashboard::dashboard(&context, args).await,
        Command::Launch(args) => launch::launch(&context, args).await,
        Command::Results(args) => results::results(&context, args).await,
        Command::Job(command) => job_admin::job(&context, command).await,
        Command::Dead(command) => dead::dead(&context, command).await,
        Command::Cluster(command) => cluster::cluster(&context, command).await,
        Command::Queue(command) => queue_admin::queue(&context, command).await,
    }
}
