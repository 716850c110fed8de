//! Every queue call the worker makes while it runs, each with a deadline,
//! running beside the tasks instead of in front of them: an ack, a renewal
//! or a hand-back that never answers holds up nothing but itself, and the
//! loop keeps polling tasks, the grace timer and the stop signal.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::{LeaseReport, LeaseToken, QueueError, QueueErrorKind};

/// Run `call`, or fail it as unavailable once `limit` has passed: a call
/// whose answer was lost on the network is retried like any other outage.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &'static str,
    call: impl Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(QueueError::new(
            QueueErrorKind::Unavailable,
            format!(
                "the queue did not answer {what} within {}",
                super::flag_duration(limit)
            ),
        )),
    }
}

/// A finished call and what it was about.
pub(crate) enum Done<A> {
    /// An ack of these tokens; `A` is what the worker reports once it landed.
    Ack {
        batch: Vec<(LeaseToken, A)>,
        result: Result<LeaseReport, QueueError>,
    },
    /// A renewal of these tokens, sent at `sent`.
    Renew {
        tokens: Vec<LeaseToken>,
        sent: Instant,
        result: Result<LeaseReport, QueueError>,
    },
    /// A nack or dead-letter of one finished attempt; the item's text for logs.
    Settle {
        what: &'static str,
        item: String,
        tokens: Vec<LeaseToken>,
        result: Result<LeaseReport, QueueError>,
    },
    /// The publish of `count` speculative copies.
    Copied {
        count: usize,
        result: Result<(), QueueError>,
    },
    /// A hand-back (nack 0) of these tokens.
    GiveBack {
        tokens: Vec<LeaseToken>,
        result: Result<LeaseReport, QueueError>,
    },
}

/// Calls in flight.
pub(crate) type Calls<A> = FuturesUnordered<Pin<Box<dyn Future<Output = Done<A>> + Send>>>;
