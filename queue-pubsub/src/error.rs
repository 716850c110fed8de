//! Pub/Sub failures as [`QueueError`]s that say what went wrong and what to
//! do: a missing resource names the create command, a refused call names
//! the credentials and role it needs.

use std::fmt;

use forloop_core::{QueueError, QueueErrorKind};
use gcloud_gax::grpc::{Code, Status};

use crate::PubsubAddress;

/// A failed Pub/Sub call `what` on `address`, classified by its status code.
pub(crate) fn error(what: &str, address: &PubsubAddress, status: Status) -> QueueError {
    let (kind, hint) = match status.code() {
        Code::NotFound => (
            QueueErrorKind::NotFound,
            format!(
                "; create it with `runner --queue pubsub://{}/{} queue create`",
                address.project,
                forloop_core::kit::sibling_owner(&address.name)
            ),
        ),
        Code::PermissionDenied | Code::Unauthenticated => (
            QueueErrorKind::PermissionDenied,
            "; check Application Default Credentials (Workload Identity on GKE, `gcloud auth application-default login` on a laptop) and the roles/pubsub.editor role".to_string(),
        ),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            (QueueErrorKind::Invalid, String::new())
        }
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => (QueueErrorKind::Unavailable, String::new()),
        _ => (QueueErrorKind::Other, String::new()),
    };
    QueueError::new(
        kind,
        format!(
            "pub/sub {what} on {address:?} failed: {}{hint}",
            status.message()
        ),
    )
}

/// No connection to Pub/Sub at all.
pub(crate) fn unreachable(address: &PubsubAddress, e: impl fmt::Display) -> QueueError {
    QueueError::new(
        QueueErrorKind::Unavailable,
        format!("cannot reach Pub/Sub for {address:?}: {e}"),
    )
}
