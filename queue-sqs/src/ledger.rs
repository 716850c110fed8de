//! The job ledger's two sibling queues, `NAME-ledger` (book sheets) and
//! `NAME-results` (receipt sheets): naming and opening them (`admin.rs`
//! makes them, with the queue). The
//! ledger itself is [`forloop_core::kit::SheetLedger`], the same on every
//! backend that cannot count; `docs/design/job-ledger.md` says how it works
//! and what it costs.
//!
//! The siblings have no redrive policy on purpose: a sheet is never
//! dead-lettered, however many readers die holding it (with one, the
//! 1,000th such death would bury a piece of the ledger).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use forloop_core::QueueError;
use forloop_core::kit::HeldDeliveries;
use forloop_core::kit::{LEDGER_SUFFIX, RESULTS_SUFFIX, SheetLedger, SheetOptions};

use crate::batch::SQS_BATCH;
use crate::client::queue_url;
use crate::{SqsAddress, SqsQueue};

/// The visibility a ledger read holds sheets for: how long a reader that
/// dies mid-read hides them from the others (an under-count, never a loss).
pub const SHEET_LEASE: Duration = Duration::from_secs(30);

impl SqsAddress {
    /// The names of the ledger's sibling queues: `NAME-ledger`, `NAME-results`.
    pub fn ledger_names(&self) -> [String; 2] {
        [LEDGER_SUFFIX, RESULTS_SUFFIX].map(|suffix| format!("{}{suffix}", self.name))
    }
}

impl SqsQueue {
    /// The ledger, where both siblings exist; `None` (with a note saying
    /// how to get one) where they do not: an older queue keeps the backlog
    /// rule.
    pub(crate) async fn open_ledger(&self) -> Result<Option<Arc<SheetLedger>>, QueueError> {
        let names = self.address.ledger_names();
        let mut urls = Vec::new();
        for name in &names {
            match queue_url(&self.client, &self.address, name).await? {
                Some(url) => urls.push(url),
                None => {
                    tracing::info!(
                        "SQS queue `{name}` does not exist, so `{queue}` keeps no job ledger: items are sent \
                         without a job and workers end by the backlog rule; `runner --queue sqs --name {queue} \
                         queue create` adds it (the queue and its items stay as they are)",
                        queue = self.address.name
                    );
                    return Ok(None);
                }
            }
        }
        let [books, results] = [0, 1].map(|i| {
            Arc::new(self.sibling(&names[i], urls[i].clone())) as Arc<dyn forloop_core::WorkQueue>
        });
        let main = Arc::new(self.sibling(&self.address.name, self.url().to_string()));
        // Ten a pull: one ReceiveMessage (a bigger pull is ten of them).
        let options = SheetOptions {
            batch: SQS_BATCH,
            ..SheetOptions::default()
        };
        Ok(Some(Arc::new(SheetLedger::with_options(
            books, results, main, options,
        ))))
    }

    /// Another client of queue `name` at `url`, with this one's connection:
    /// no redrive (a sheet is never buried) and the sheet lease. With this
    /// queue's own name and URL it is the dead-place reader of the ledger
    /// (it keeps the dead queue).
    fn sibling(&self, name: &str, url: String) -> SqsQueue {
        let own = name == self.address.name;
        let mut address = self.address.clone();
        address.name = name.to_string();
        if !own {
            address.url = None;
        }
        SqsQueue {
            address,
            client: self.client.clone(),
            url,
            dead_url: if own { self.dead_url.clone() } else { None },
            lease: SHEET_LEASE,
            max_payload: self.max_payload,
            max_receive_count: if own { self.max_receive_count } else { None },
            held: HeldDeliveries::new(),
            quiet: AtomicBool::new(false),
            ledger: None,
        }
    }
}
