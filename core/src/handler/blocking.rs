//! Rust functions as handlers: plain (blocking) functions of the item, run on
//! tokio's blocking thread pool so CPU-heavy work never stalls the worker's
//! leases, acks and signals.
//!
//! The function sees the item as bytes ([`for_bytes`]), as text
//! ([`for_str`]; an item that is not UTF-8 is dead-lettered) or as a value
//! deserialized from JSON ([`for_json`]; an item that does not parse is
//! dead-lettered, naming the type and the parse error). It returns `()`,
//! `Result<(), E: Display>` (an `Err` is retried with backoff) or a
//! [`TaskOutcome`] (e.g. [`TaskOutcome::fatal`] to dead-letter at once).
//!
//! A thread cannot be stopped from outside: when the worker gives up on a
//! running call (task timeout, shutdown grace over), its outcome is
//! discarded and its item handled as for any handler, but the call itself
//! runs to its end in the background. Keep calls short, or check a deadline
//! inside long ones.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::{Handler, IntoOutcome, Task, TaskOutcome};

type Call = dyn Fn(&Task) -> TaskOutcome + Send + Sync;

/// A blocking function run once per item on the blocking thread pool.
/// Made by [`blocking`], [`for_bytes`], [`for_str`] or [`for_json`].
#[derive(Clone)]
pub struct BlockingHandler {
    call: Arc<Call>,
}

impl std::fmt::Debug for BlockingHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingHandler").finish_non_exhaustive()
    }
}

/// A handler from a blocking function of the whole [`Task`] (item, id,
/// attempt and attributes).
pub fn blocking<F, R>(f: F) -> BlockingHandler
where
    F: Fn(&Task) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    BlockingHandler {
        call: Arc::new(move |task: &Task| f(task).into_outcome()),
    }
}

/// A handler from a blocking function of the item's bytes.
pub fn for_bytes<F, R>(f: F) -> BlockingHandler
where
    F: Fn(&[u8]) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    blocking(move |task: &Task| f(&task.item.payload).into_outcome())
}

/// A handler from a blocking function of the item as text.
///
/// ```
/// let handler = forloop_core::handler::for_str(|item: &str| -> Result<(), std::num::ParseIntError> {
///     let n: u64 = item.parse()?;
///     assert!(n < u64::MAX);
///     Ok(())
/// });
/// # let _ = handler;
/// ```
pub fn for_str<F, R>(f: F) -> BlockingHandler
where
    F: Fn(&str) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    blocking(
        move |task: &Task| match std::str::from_utf8(&task.item.payload) {
            Ok(text) => f(text).into_outcome(),
            Err(error) => TaskOutcome::fatal(format!("the item is not UTF-8 text: {error}")),
        },
    )
}

/// A handler from a blocking function of a value deserialized from the item
/// as JSON.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Video { id: String, height: u32 }
///
/// let handler = forloop_core::handler::for_json(|video: Video| {
///     if video.height > 4320 { Err(format!("{}: too tall", video.id)) } else { Ok(()) }
/// });
/// # let _ = handler;
/// ```
pub fn for_json<T, F, R>(f: F) -> BlockingHandler
where
    T: DeserializeOwned,
    F: Fn(T) -> R + Send + Sync + 'static,
    R: IntoOutcome,
{
    blocking(
        move |task: &Task| match serde_json::from_slice::<T>(&task.item.payload) {
            Ok(value) => f(value).into_outcome(),
            Err(error) => TaskOutcome::fatal(format!(
                "the item is not JSON for {}: {error}",
                std::any::type_name::<T>()
            )),
        },
    )
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

#[async_trait]
impl Handler for BlockingHandler {
    async fn handle(&self, task: Task) -> TaskOutcome {
        let call = Arc::clone(&self.call);
        match tokio::task::spawn_blocking(move || call(&task)).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => TaskOutcome::failed(format!(
                "the handler panicked: {}",
                panic_text(&*error.into_panic())
            )),
            Err(error) => TaskOutcome::failed(format!("the handler did not finish: {error}")),
        }
    }
}
