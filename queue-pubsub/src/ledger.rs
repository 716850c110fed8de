//! The job ledger's two sibling topics, `NAME-ledger` (book sheets) and
//! `NAME-results` (receipt sheets), each with one subscription
//! (`NAME-ledger-workers`, `NAME-results-workers`): naming, making and
//! opening them. The ledger itself is [`forloop_core::kit::SheetLedger`],
//! the same on every backend that cannot count; `docs/design/job-ledger.md`
//! says how it works and what it costs.
//!
//! The sibling subscriptions have no dead-letter policy on purpose: a sheet
//! is never buried, however many readers die holding it (with one, the
//! 100th such death would bury a piece of the ledger).

use std::sync::Arc;
use std::time::Duration;

use forloop_core::kit::{LEDGER_SUFFIX, RESULTS_SUFFIX, SheetLedger, SheetOptions};
use forloop_core::{QueueError, WorkQueue};
use gcloud_pubsub::client::Client;
use gcloud_pubsub::subscription::SubscriptionConfig;

use crate::error::error;
use crate::{BacklogSource, PubsubAddress, PubsubQueue};

/// The ack deadline of the sheet subscriptions: how long a reader that dies
/// mid-read hides the sheets it held (an under-count, never a loss).
pub const SHEET_LEASE: Duration = Duration::from_secs(30);

/// How long each pull of a ledger read waits: Pub/Sub may answer a pull
/// with nothing while messages wait, less so when it may wait a little.
pub const SHEET_WAIT: Duration = Duration::from_millis(300);

impl PubsubAddress {
    /// The ledger's siblings, `NAME-ledger` and `NAME-results`, as
    /// addresses (no backlog counts: nobody counts sheets).
    pub fn ledger_siblings(&self) -> [PubsubAddress; 2] {
        [LEDGER_SUFFIX, RESULTS_SUFFIX].map(|suffix| {
            let mut sibling = self.clone();
            sibling.name = format!("{}{suffix}", self.name);
            sibling.backlog = BacklogSource::Off;
            sibling
        })
    }
}

/// Make the siblings' topics and subscriptions where missing.
pub(crate) async fn create_siblings(
    client: &Client,
    address: &PubsubAddress,
) -> Result<(), QueueError> {
    for sibling in address.ledger_siblings() {
        let fail = |what: &str, status| error(what, &sibling, status);
        let topic = client.topic(&sibling.topic());
        if !topic
            .exists(None)
            .await
            .map_err(|s| fail("topic lookup", s))?
        {
            client
                .create_topic(&sibling.topic(), None, None)
                .await
                .map_err(|s| fail("topic creation", s))?;
        }
        let subscription = client.subscription(&sibling.subscription());
        if subscription
            .exists(None)
            .await
            .map_err(|s| fail("subscription lookup", s))?
        {
            crate::admin::ensure_retention(&subscription)
                .await
                .map_err(|s| fail("subscription update", s))?;
        } else {
            let config = SubscriptionConfig {
                ack_deadline_seconds: SHEET_LEASE.as_secs() as i32,
                ..SubscriptionConfig::default()
            };
            crate::admin::create_subscription(
                client,
                &sibling.subscription(),
                &sibling.topic(),
                config,
            )
            .await
            .map_err(|s| fail("subscription creation", s))?;
        }
    }
    Ok(())
}

impl PubsubQueue {
    /// The ledger, where both sibling subscriptions exist; `None` (with a
    /// note saying how to get one) where they do not: an older queue keeps
    /// the backlog rule.
    pub(crate) async fn open_ledger(
        &self,
        client: &Client,
    ) -> Result<Option<Arc<SheetLedger>>, QueueError> {
        let address = &self.address;
        let [books, results] = address.ledger_siblings();
        for sibling in [&books, &results] {
            let exists = client
                .subscription(&sibling.subscription())
                .exists(None)
                .await
                .map_err(|s| error("subscription lookup", sibling, s))?;
            if !exists {
                tracing::info!(
                    "Pub/Sub subscription `{}` does not exist, so `{}` keeps no job ledger: items are sent \
                     without a job and workers end by the backlog rule; `runner --queue pubsub://{}/{} \
                     queue create` adds it (the queue and its items stay as they are)",
                    sibling.subscription(),
                    address.name,
                    address.project,
                    address.name
                );
                return Ok(None);
            }
        }
        let open = |sibling: PubsubAddress, sheets| {
            PubsubQueue::open_with(sibling, client, self.raw.clone(), sheets)
        };
        let books: Arc<dyn WorkQueue> = Arc::new(open(books, true).await?);
        let results: Arc<dyn WorkQueue> = Arc::new(open(results, true).await?);
        // The ledger's reader of the dead place: another client of this queue.
        let mut own = address.clone();
        own.backlog = BacklogSource::Off;
        let main: Arc<dyn WorkQueue> = Arc::new(open(own, false).await?);
        let options = SheetOptions {
            wait: SHEET_WAIT,
            ..SheetOptions::default()
        };
        Ok(Some(Arc::new(SheetLedger::with_options(
            books, results, main, options,
        ))))
    }
}
