//! The plug a backend crate exports: a [`Driver`] opens, creates and deletes
//! queues of one backend from what the user wrote after `--queue`, says how
//! to show that address without secrets, and what an autoscaler reads to size
//! the workers on it.
//!
//! The runner keeps a registry of drivers and never parses a backend's URL,
//! key or resource names itself: everything backend-shaped is answered here,
//! by the driver that owns the backend. A driver of your own is a type that
//! implements this trait, added with `runner::Registry::builtin().with(...)`.

mod scale;

use std::fmt;

use async_trait::async_trait;

use crate::job::Backend;
use crate::kit::redact_url;
use crate::{QueueConfig, QueueError, QueueErrorKind};

pub use scale::ScaleTrigger;

/// Where a queue is, as the user said it (`--queue` / `FORLOOP_QUEUE`).
#[derive(Clone, PartialEq, Eq)]
pub struct QueueAddress {
    /// What the user passed: a driver name (`redis`) or a URL.
    pub spec: String,
    /// The URL, when the spec was one.
    pub url: Option<String>,
}

impl QueueAddress {
    /// The address a spec names: a URL when it has a `scheme://`, else a
    /// driver's name.
    pub fn parse(spec: &str) -> Self {
        Self {
            spec: spec.to_string(),
            url: spec.contains("://").then(|| spec.to_string()),
        }
    }

    /// The URL's scheme, when the spec is a URL.
    pub fn scheme(&self) -> Option<&str> {
        self.url.as_deref()?.split_once("://").map(|(s, _)| s)
    }
}

/// Never shows a password or token: the spec passes through [`redact_url`].
impl fmt::Debug for QueueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueAddress")
            .field("spec", &redact_url(&self.spec))
            .finish_non_exhaustive()
    }
}

/// Opens queues of one backend. Object safe: a registry holds `Arc<dyn Driver>`.
#[async_trait]
pub trait Driver: Send + Sync + fmt::Debug {
    /// The name `--queue` takes (`memory`, `redis`).
    fn name(&self) -> &str;

    /// The queue's own name, when `address` is a URL that names one
    /// (`pubsub://P/NAME`, `sqs://NAME`): what `--name` defaults to, so
    /// that two such queues never share job names. Default: `None` (the
    /// URL names a server, not a queue).
    fn queue_name(&self, address: &QueueAddress) -> Option<String> {
        let _ = address;
        None
    }

    /// Whether a `--queue` URL belongs to this driver. Most drivers claim
    /// their own schemes; a backend whose URLs use a common scheme claims
    /// them by host (SQS: `https://sqs.REGION.amazonaws.com/...`).
    fn claims(&self, address: &QueueAddress) -> bool;

    /// Whether the queue lives inside one process (and so cannot be shared
    /// by `submit`, `work` and `status` run as separate commands).
    fn in_process(&self) -> bool {
        false
    }

    /// Where this backend's approximate backlog counts come from, for
    /// `runner status` (`None`: nothing worth saying).
    fn backlog_source(&self) -> Option<&str> {
        None
    }

    /// The environment variables this driver reads to find its backend (a
    /// server URL, a project, a region), which a launcher passes on to
    /// workers on other machines when they are set here. Never credentials:
    /// those come from the workers' own identity or a Secret.
    fn environment(&self) -> &[&str] {
        &[]
    }

    /// The address as it may be shown in a log line, an error or a
    /// manifest preview: no password, no token. The default hides URL
    /// passwords and secret-looking query parameters.
    fn redact(&self, address: &QueueAddress) -> String {
        redact_url(&address.spec)
    }

    /// Open (or connect to) the queue, and its ledger where it keeps jobs.
    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError>;

    /// Make the queue's resources (`runner queue create`); `false` when the
    /// backend makes them on first use and there was nothing to do, which is
    /// the default.
    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let _ = (address, config);
        Ok(false)
    }

    /// Remove the queue's resources and items (`runner queue delete`);
    /// `false` when there was nothing to remove, which is the default.
    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let _ = (address, config);
        Ok(false)
    }

    /// What an autoscaler (KEDA) reads to size the workers on this queue.
    async fn scale_trigger(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<ScaleTrigger, QueueError> {
        let _ = config;
        Err(QueueError::new(
            QueueErrorKind::Unsupported,
            format!(
                "the `{}` queue ({}) has no autoscaler trigger: launch a fixed number of workers instead",
                self.name(),
                self.redact(address)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_a_url_only_with_a_scheme() {
        let named = QueueAddress::parse("redis");
        assert_eq!((named.url.as_deref(), named.scheme()), (None, None));
        let url = QueueAddress::parse("redis://h:6379");
        assert_eq!(url.scheme(), Some("redis"));
        assert_eq!(url.url.as_deref(), Some("redis://h:6379"));
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", QueueAddress::parse("redis://:hunter2@h:6379"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
