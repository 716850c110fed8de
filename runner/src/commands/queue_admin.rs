//! `runner queue create | delete`.

use super::context::Context;
use crate::Failure;
use crate::cli::QueueCommand;

pub(crate) async fn queue(context: &Context<'_>, command: QueueCommand) -> Result<u8, Failure> {
    let (driver, address) = context.driver("queue", None)?;
    match command {
        QueueCommand::Create {
            lease,
            max_attempts,
        } => {
            let config = context
                .queue_config(None)
                .with_lease(lease)
                .with_max_attempts(max_attempts);
            if driver.create(&address, &config).await? {
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
            if driver.delete(&address, &config).await? {
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
