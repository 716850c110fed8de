//! What runs on an item: a [`Handler`]. Three kinds come with core: a
//! command per item ([`CommandTemplate`]), a warm process per task slot that
//! answers item after item ([`ServeHandler`]), and a Rust function
//! ([`from_fn`] for async code, [`for_str`], [`for_bytes`] and [`for_json`]
//! for blocking code).

mod blocking;
mod capture;
mod command;
mod receipt_values;
pub mod serve;
mod stderr;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;

pub use blocking::{BlockingHandler, blocking, for_bytes, for_json, for_str};
pub use capture::{CAPTURE_LIMIT, Capture, Captured, Stream};
pub use command::{CommandError, CommandTemplate, OUT_PLACEHOLDER};
pub use receipt_values::{ValuesInReceipts, refuse_large_value};

use crate::job::ItemValue;

/// What the worker's environment holds that the user's process must not
/// inherit: the way to the queue, credentials included.
pub(crate) fn hide_worker_env(command: &mut tokio::process::Command) {
    command.env_remove("FORLOOP_QUEUE");
}
pub use serve::{ServeConfig, ServeFormat, ServeHandler};

/// One attempt at one item, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Task {
    /// The backend's id of the item.
    pub id: crate::MessageId,
    /// The item: payload, attributes and job, as delivered.
    pub item: crate::Item,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// The attempt's own fresh, empty directory, when the worker keeps
    /// outputs (`--outputs`): every file `f` leaves in it is uploaded when
    /// the attempt succeeds. A command sees it as `FORLOOP_OUTPUT_DIR` and
    /// `{out}` in its template.
    pub output_dir: Option<std::sync::Arc<std::path::Path>>,
}

/// How an attempt ended, as the worker needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Done: ack.
    Succeeded,
    /// Failed; another attempt may succeed: nack with backoff, or dead-letter
    /// after the last attempt.
    Failed,
    /// Failed in a way no retry can fix (the command cannot start, the item
    /// cannot be passed to it): dead-letter now.
    Fatal,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// How it ended.
    pub kind: OutcomeKind,
    /// The command's exit code, for command handlers.
    pub exit_code: Option<i32>,
    /// Why it failed, for people.
    pub reason: Option<String>,
    /// The last bytes the command wrote to stderr (at most
    /// [`crate::job::STDERR_TAIL`]), for the job's receipt.
    pub stderr_tail: Option<String>,
    /// What `f` returned ([`TaskOutcome::with_value`]): the receipt keeps
    /// it when it fits ([`crate::job::MAX_RECEIPT_VALUE`]); an output store
    /// takes a larger one.
    pub value: Option<ItemValue>,
    /// Where the value is, once an output store took it (its object's URL).
    pub value_url: Option<std::sync::Arc<str>>,
    /// The command's output kept in files for the output store
    /// (`--capture`).
    pub captured: Vec<Captured>,
}

impl TaskOutcome {
    /// Success.
    pub fn success() -> Self {
        Self {
            kind: OutcomeKind::Succeeded,
            exit_code: None,
            reason: None,
            stderr_tail: None,
            value: None,
            value_url: None,
            captured: Vec::new(),
        }
    }

    /// A failure another attempt may fix.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            kind: OutcomeKind::Failed,
            exit_code: None,
            reason: Some(reason.into()),
            stderr_tail: None,
            value: None,
            value_url: None,
            captured: Vec::new(),
        }
    }

    /// A failure no retry can fix.
    pub fn fatal(reason: impl Into<String>) -> Self {
        Self {
            kind: OutcomeKind::Fatal,
            exit_code: None,
            reason: Some(reason.into()),
            stderr_tail: None,
            value: None,
            value_url: None,
            captured: Vec::new(),
        }
    }

    /// Record the command's exit code.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// Record the end of the command's stderr (nothing if it wrote none).
    pub fn with_stderr_tail(mut self, tail: String) -> Self {
        self.stderr_tail = (!tail.is_empty()).then_some(tail);
        self
    }

    /// Record what `f` returned.
    pub fn with_value(mut self, value: ItemValue) -> Self {
        self.value = Some(value);
        self
    }

    /// Success with `value`, serialized as JSON; a value that does not
    /// serialize (a map with non-text keys) fails the attempt, naming why.
    pub fn success_with<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match ItemValue::to_json(value) {
            Ok(value) => Self::success().with_value(value),
            Err(error) => Self::fatal(format!(
                "the value f returned cannot be kept as JSON: {error}"
            )),
        }
    }
}

/// What a Rust `f` returns to keep a value for its item: `Ok(Value(x))`
/// (any `serde::Serialize`), kept as JSON in the item's receipt (and in
/// the output store when larger than [`crate::job::MAX_RECEIPT_VALUE`]).
///
/// ```
/// use forloop_core::handler::{Value, for_str};
///
/// let handler = for_str(|item: &str| -> Result<Value<usize>, std::io::Error> {
///     Ok(Value(item.len()))
/// });
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value<T>(pub T);

impl<T: serde::Serialize> IntoOutcome for Value<T> {
    fn into_outcome(self) -> TaskOutcome {
        TaskOutcome::success_with(&self.0)
    }
}

impl<T: serde::Serialize, E: fmt::Display> IntoOutcome for Result<Value<T>, E> {
    fn into_outcome(self) -> TaskOutcome {
        match self {
            Ok(value) => value.into_outcome(),
            Err(error) => TaskOutcome::failed(error.to_string()),
        }
    }
}

/// Anything a closure handler may return.
pub trait IntoOutcome {
    /// Convert to an outcome.
    fn into_outcome(self) -> TaskOutcome;
}

impl IntoOutcome for TaskOutcome {
    fn into_outcome(self) -> TaskOutcome {
        self
    }
}

impl IntoOutcome for () {
    fn into_outcome(self) -> TaskOutcome {
        TaskOutcome::success()
    }
}

impl<E: fmt::Display> IntoOutcome for Result<(), E> {
    fn into_outcome(self) -> TaskOutcome {
        match self {
            Ok(()) => TaskOutcome::success(),
            Err(error) => TaskOutcome::failed(error.to_string()),
        }
    }
}

/// Runs one attempt at one item.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Do the work. Dropping the future must stop the work (the worker drops
    /// it when a task times out or the shutdown grace runs out).
    async fn handle(&self, task: Task) -> TaskOutcome;
}

/// A handler made from an async closure.
pub struct FnHandler<F, Fut> {
    f: F,
    _future: PhantomData<fn() -> Fut>,
}

impl<F, Fut> fmt::Debug for FnHandler<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler").finish_non_exhaustive()
    }
}

/// Make a handler from an async closure returning `()`, `Result<(), E>` or a
/// [`TaskOutcome`].
///
/// ```
/// let handler = forloop_core::handler::from_fn(|task: forloop_core::Task| async move {
///     if task.item.payload.is_empty() { Err("empty item") } else { Ok(()) }
/// });
/// # let _ = handler;
/// ```
pub fn from_fn<F, Fut>(f: F) -> FnHandler<F, Fut>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    FnHandler {
        f,
        _future: PhantomData,
    }
}

#[async_trait]
impl<F, Fut> Handler for FnHandler<F, Fut>
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: IntoOutcome,
{
    async fn handle(&self, task: Task) -> TaskOutcome {
        (self.f)(task).await.into_outcome()
    }
}
