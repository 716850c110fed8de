//! `runner queue create | delete`.

use super::context::Context;
use super::deadline;
use crate::Failure;
use crate::cli::QueueCommand;

pub(crate) async fn queue(context: &Context<'_>, command: QueueCommand) -> Result<u8, Failure> {
    let (driver, address) = context.driver("queue", None)?;
    // Several calls (the queue, its dead place, the ledger's siblings).
    let limit = deadline::call_timeout().map_err(Failure::new)?;
    let server = context.server(&*driver, &address);
    match command {
        QueueCommand::Create {
            lease,
            max_attempts,
            max_lapses,
        } => {
            let config = context
                .queue_config(None)
                .with_lease(lease)
                .with_max_attempts(super::worker_settings::deliveries(max_attempts, max_lapses));
            let create = driver.create(&address, &config);
            if deadline::within(&server, limit * 4, "a queue creation", create).await? {
                eprintln!("queue {} is ready", driver.redact(&address));
            } else {
                eprintln!(
                    "the {} backend makes queues on first use; nothing to create",
                    driver.name()
                );
            }
        }
        QueueCommand::Delete => {
            let config = context.queue_config(None);
            let delete = driver.delete(&address, &config);
            if deadline::within(&server, limit * 4, "a queue deletion", delete).await? {
                eprintln!("queue {} deleted", driver.redact(&address));
            } else {
                eprintln!(
                    "the {} backend has nothing to delete; use `runner dead purge` for dead items",
                    driver.name()
                );
            }
        }
    }
    Ok(0)
}
