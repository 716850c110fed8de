//! `runner submit`: validate the whole input, then publish it with progress.

use super::{Context, publish_all};
use crate::Failure;
use crate::cli::SubmitArgs;
use crate::input::{ItemRules, read_items};
use crate::progress::Progress;

pub(crate) async fn submit(context: &Context<'_>, args: SubmitArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("submit", None)?;
    let queue = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let items = read_items(
        &args.input.input,
        &ItemRules::queue(queue.capabilities().max_payload),
    )?;
    let progress = Progress::start("submitted", items.items.len() as u64);
    let result = publish_all(&*queue, &items, Some(&progress)).await;
    progress.finish();
    result?;
    eprintln!(
        "submitted {} items to {} (queue `{}`; {} blank lines skipped)",
        items.items.len(),
        driver.redact(&address),
        context.name,
        items.blank
    );
    Ok(0)
}
