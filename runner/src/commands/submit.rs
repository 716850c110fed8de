//! `runner submit`: validate the whole input, then publish it as a job with
//! progress (`--resume` sends only what is missing).

use forloop_core::worker::Shutdown;

use super::Context;
use crate::Failure;
use crate::cli::SubmitArgs;
use crate::input::{ItemRules, read_items};
use crate::progress::Progress;
use crate::signals;

pub(crate) async fn submit(context: &Context<'_>, args: SubmitArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("submit", None)?;
    let queue = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let items = read_items(
        &args.input.input,
        &ItemRules::queue(super::item_room(&*queue)),
    )?;
    let stop = Shutdown::new();
    let signals = signals::listen_during_submit(stop.clone());
    let progress = Progress::start("submitted", items.items.len() as u64);
    let result = super::job::send(
        context,
        &*queue,
        &items,
        &args.job,
        None,
        Some(&progress),
        &stop,
    )
    .await;
    progress.finish();
    let sent = result.map_err(|f| f.with_code(signals.exit_code().unwrap_or(1)))?;
    let job = match (&sent.job, &sent.resumed) {
        (Some(job), Some(before)) => format!(
            "; resumed job `{job}` of {} items: {} were done, {} dead, {} queued",
            sent.total,
            before.done,
            before.dead,
            before.submitted.saturating_sub(before.settled()),
        ),
        (Some(job), None) => format!("; job `{job}`"),
        (None, _) => String::new(),
    };
    eprintln!(
        "submitted {} items to {} (queue `{}`{job}; {} blank lines skipped)",
        sent.sent,
        driver.redact(&address),
        context.name,
        items.blank
    );
    Ok(0)
}
