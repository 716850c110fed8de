//! `runner dead list | requeue | purge`.

use super::Context;
use crate::Failure;
use crate::cli::DeadCommand;

pub(crate) async fn dead(context: &Context<'_>, command: DeadCommand) -> Result<u8, Failure> {
    let (driver, address) = context.driver("dead", None)?;
    let queue = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    match command {
        DeadCommand::List { limit, json } => {
            let letters = queue.dead_letters(limit).await?;
            for letter in &letters {
                let item = String::from_utf8_lossy(&letter.message.payload);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": &*letter.id,
                            "item": item,
                            "attempts": letter.attempts,
                            "reason": letter.reason,
                            "attributes": letter.message.attributes,
                        })
                    );
                } else {
                    println!("{item}\t{}\t{}", letter.attempts, letter.reason);
                }
            }
            if !json {
                eprintln!("{} dead item(s) shown (at most {limit})", letters.len());
            }
        }
        DeadCommand::Requeue => {
            let n = queue.requeue_dead().await?;
            eprintln!(
                "requeued {n} dead item(s) of {} with fresh attempts",
                driver.redact(&address)
            );
        }
        DeadCommand::Purge => {
            let n = queue.purge_dead().await?;
            eprintln!("purged {n} dead item(s) of {}", driver.redact(&address));
        }
    }
    Ok(0)
}
