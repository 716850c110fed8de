//! The one error type queue drivers return, with a kind that tells the worker
//! loop whether trying again can help.

use std::fmt;

/// What went wrong, coarsely: enough for the worker loop to pick a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueErrorKind {
    /// The request was wrong and will stay wrong (bad name, bad config).
    Invalid,
    /// A payload is over the driver's size limit; nothing was sent.
    PayloadTooLarge,
    /// The queue (topic, subscription, list) does not exist.
    NotFound,
    /// Credentials are missing or refused.
    PermissionDenied,
    /// The backend could not be reached or timed out; retrying may help.
    Unavailable,
    /// The operation is not supported by this backend.
    Unsupported,
    /// Anything else the backend reported.
    Other,
}

/// An error from a [`crate::WorkQueue`] operation.
///
/// The message is meant for a user: it names the thing, the value and what
/// to do next. Drivers must never put credentials into it.
#[derive(Debug, thiserror::Error)]
pub struct QueueError {
    kind: QueueErrorKind,
    message: String,
    /// For [`QueueErrorKind::PayloadTooLarge`]: the index of the offending item in the batch.
    item_index: Option<usize>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The message alone: the cause is reachable through `source()` (and
/// [`ErrorChain`] prints both), never repeated here.
impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl QueueError {
    /// A new error of `kind` with a user-facing `message`.
    pub fn new(kind: QueueErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            item_index: None,
            source: None,
        }
    }

    /// The refusal of an item over `max` bytes, at `index` in its batch.
    pub fn payload_too_large(index: usize, size: usize, max: usize) -> Self {
        Self {
            kind: QueueErrorKind::PayloadTooLarge,
            message: format!(
                "item {index} of the batch is {size} bytes, over this queue's limit of {max} bytes; nothing was published"
            ),
            item_index: Some(index),
            source: None,
        }
    }

    /// The refusal of an operation this backend does not have (`what`:
    /// "list its dead letters").
    pub fn unsupported(what: &str) -> Self {
        Self::new(
            QueueErrorKind::Unsupported,
            format!("this queue cannot {what}; use the backend's own tools"),
        )
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> QueueErrorKind {
        self.kind
    }

    /// For a refused payload: which item of the batch it was.
    pub fn item_index(&self) -> Option<usize> {
        self.item_index
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            QueueErrorKind::Unavailable | QueueErrorKind::Other
        )
    }
}

/// An error followed by each of its causes, `: `-separated, for a person to
/// read: `format!("{}", ErrorChain(&error))`. A cause whose text the line
/// already holds (a library that prints its own source) is not repeated.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_says_the_message_once_and_the_chain_adds_the_cause() {
        let cause = std::io::Error::other("connection refused");
        let error =
            QueueError::new(QueueErrorKind::Unavailable, "redis at h failed").with_source(cause);
        assert_eq!(error.to_string(), "redis at h failed");
        assert_eq!(
            ErrorChain(&error).to_string(),
            "redis at h failed: connection refused"
        );
    }
}
