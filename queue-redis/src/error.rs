//! Redis failures as [`QueueError`]s that say what went wrong and what to
//! do, with the server's URL redacted.

use forloop_core::kit::redact_url;
use forloop_core::{QueueError, QueueErrorKind};

/// The URL with any password replaced, for messages and `Debug`.
pub fn redact(url: &str) -> String {
    redact_url(url)
}

/// A failed Redis call `what` at `url`.
pub(crate) fn error(what: &str, url: &str, e: redis::RedisError) -> QueueError {
    let kind = if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
        QueueErrorKind::Unavailable
    } else if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) {
        QueueErrorKind::PermissionDenied
    } else if matches!(e.kind(), redis::ErrorKind::InvalidClientConfig) {
        QueueErrorKind::Invalid
    } else {
        QueueErrorKind::Other
    };
    let hint = match kind {
        QueueErrorKind::Unavailable => {
            "; is redis-server running there? (start one with `redis-server --port 6379`)"
        }
        QueueErrorKind::PermissionDenied => "; check the password in the URL or REDIS_URL",
        _ => "",
    };
    QueueError::new(
        kind,
        format!("redis {what} at {} failed{hint}", redact(url)),
    )
    .with_source(e)
}

/// A reply the scripts never give: an older or different server.
pub(crate) fn malformed(what: &str) -> QueueError {
    QueueError::new(
        QueueErrorKind::Other,
        format!("unexpected reply from redis to {what}; is the server Redis 6.2 or newer?"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("redis://:hunter2@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        let e = error(
            "ping",
            "redis://:pw@h",
            redis::RedisError::from((redis::ErrorKind::Io, "down")),
        );
        assert!(!e.to_string().contains("pw@"), "{e}");
    }
}
