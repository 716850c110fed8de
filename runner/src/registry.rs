//! Drivers by name and URL scheme: how `--queue redis` or
//! `--queue redis://host:6379` finds its backend, and how a user's own crate
//! adds one (`Registry::builtin().with(MyDriver)` then `runner::main_with`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use forloop_core::{MemoryQueue, QueueConfig, QueueError, QueueErrorKind, WorkQueue};

/// Where a queue is, as the user said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueAddress {
    /// What the user passed to `--queue` (a driver name or a URL).
    pub spec: String,
    /// The URL, when `--queue` was one.
    pub url: Option<String>,
}

/// Opens queues of one backend.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The name `--queue` takes (`memory`, `redis`).
    fn name(&self) -> &str;
    /// URL schemes this driver answers to (`redis`, `rediss`).
    fn schemes(&self) -> &[&str] {
        &[]
    }
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
    /// Open (or connect to) the queue.
    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError>;

    /// Make the queue's resources (`runner queue create`). Backends whose
    /// queues appear on first use need nothing, which is the default.
    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let _ = (address, config);
        Ok(false)
    }

    /// Remove the queue's resources and items (`runner queue delete`).
    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let _ = (address, config);
        Ok(false)
    }
}

/// The embedded in-memory queue.
#[derive(Debug, Default)]
pub struct MemoryDriver;

#[async_trait]
impl Driver for MemoryDriver {
    fn name(&self) -> &str {
        "memory"
    }
    fn schemes(&self) -> &[&str] {
        &["memory"]
    }
    fn in_process(&self) -> bool {
        true
    }
    async fn open(
        &self,
        _address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        Ok(Arc::new(MemoryQueue::new(config)))
    }
}

/// Redis: `--queue redis` (server from `REDIS_URL`, else localhost:6379) or
/// `--queue redis://[:password@]host:port[/db]` (`rediss://` for TLS).
#[cfg(feature = "redis")]
#[derive(Debug, Default)]
pub struct RedisDriver;

#[cfg(feature = "redis")]
#[async_trait]
impl Driver for RedisDriver {
    fn name(&self) -> &str {
        "redis"
    }
    fn schemes(&self) -> &[&str] {
        &["redis", "rediss"]
    }
    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let queue = match &address.url {
            Some(url) => forloop_queue_redis::RedisQueue::connect(url, config).await?,
            None => forloop_queue_redis::RedisQueue::from_env(config).await?,
        };
        Ok(Arc::new(queue))
    }
}

/// Google Cloud Pub/Sub: `--queue pubsub` (project from
/// `GOOGLE_CLOUD_PROJECT`, queue from `--name`) or `--queue pubsub://PROJECT/NAME`;
/// `PUBSUB_EMULATOR_HOST` selects the emulator. Create the queue first with
/// `runner queue create`.
#[cfg(feature = "pubsub")]
#[derive(Debug, Default)]
pub struct PubsubDriver;

#[cfg(feature = "pubsub")]
#[async_trait]
impl Driver for PubsubDriver {
    fn name(&self) -> &str {
        "pubsub"
    }
    fn schemes(&self) -> &[&str] {
        &["pubsub"]
    }
    fn backlog_source(&self) -> Option<&str> {
        Some("Cloud Monitoring's num_undelivered_messages, which counts leased items as ready")
    }
    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let address =
            forloop_queue_pubsub::PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        Ok(Arc::new(
            forloop_queue_pubsub::PubsubQueue::connect(address).await?,
        ))
    }
    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address =
            forloop_queue_pubsub::PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        forloop_queue_pubsub::PubsubQueue::create(&address, config).await?;
        Ok(true)
    }
    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address =
            forloop_queue_pubsub::PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        forloop_queue_pubsub::PubsubQueue::delete(&address).await?;
        Ok(true)
    }
}

/// Amazon SQS: `--queue sqs` (queue from `--name`), `--queue sqs://NAME` or
/// `--queue https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`; credentials and
/// region from the standard AWS chain, `AWS_ENDPOINT_URL_SQS` for an
/// emulator. Create the queue first with `runner queue create`.
#[cfg(feature = "sqs")]
#[derive(Debug, Default)]
pub struct SqsDriver;

#[cfg(feature = "sqs")]
#[async_trait]
impl Driver for SqsDriver {
    fn name(&self) -> &str {
        "sqs"
    }
    fn schemes(&self) -> &[&str] {
        &["sqs", "https"]
    }
    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let address = forloop_queue_sqs::SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        Ok(Arc::new(
            forloop_queue_sqs::SqsQueue::connect(address, &config).await?,
        ))
    }
    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = forloop_queue_sqs::SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        forloop_queue_sqs::SqsQueue::create(&address, config).await?;
        Ok(true)
    }
    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = forloop_queue_sqs::SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        forloop_queue_sqs::SqsQueue::delete(&address).await?;
        Ok(true)
    }
}

/// The drivers a binary knows.
#[derive(Clone, Default)]
pub struct Registry {
    drivers: Vec<Arc<dyn Driver>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.drivers.iter().map(|d| d.name()))
            .finish()
    }
}

impl Registry {
    /// No drivers at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The drivers compiled into this build of `runner`.
    pub fn builtin() -> Self {
        let registry = Self::empty().with(MemoryDriver);
        #[cfg(feature = "redis")]
        let registry = registry.with(RedisDriver);
        #[cfg(feature = "pubsub")]
        let registry = registry.with(PubsubDriver);
        #[cfg(feature = "sqs")]
        let registry = registry.with(SqsDriver);
        registry
    }

    /// Add a driver; a later driver with the same name or scheme wins.
    pub fn with(mut self, driver: impl Driver + 'static) -> Self {
        self.drivers.insert(0, Arc::new(driver));
        self
    }

    /// The names of every driver, for help and error messages.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.drivers.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Find the driver for a `--queue` value.
    pub fn resolve(&self, spec: &str) -> Result<(Arc<dyn Driver>, QueueAddress), QueueError> {
        let (found, url) = match spec.split_once("://") {
            Some((scheme, _)) => (
                self.drivers.iter().find(|d| d.schemes().contains(&scheme)),
                Some(spec.to_string()),
            ),
            None => (self.drivers.iter().find(|d| d.name() == spec), None),
        };
        match found {
            Some(driver) => Ok((
                Arc::clone(driver),
                QueueAddress {
                    spec: spec.to_string(),
                    url,
                },
            )),
            None => Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "unknown queue `{spec}` (from --queue or FORLOOP_QUEUE): this runner knows {}. \
                     Drivers not listed need their cargo feature (e.g. `cargo install forloop-runner --features redis`)",
                    self.names().join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_and_scheme() {
        let registry = Registry::builtin();
        assert_eq!(registry.resolve("memory").unwrap().0.name(), "memory");
        let (driver, address) = registry.resolve("memory://x").unwrap();
        assert_eq!(driver.name(), "memory");
        assert_eq!(address.url.as_deref(), Some("memory://x"));
    }

    #[cfg(feature = "sqs")]
    #[test]
    fn sqs_answers_to_its_name_its_scheme_and_queue_urls() {
        let registry = Registry::builtin();
        for spec in [
            "sqs",
            "sqs://jobs",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
        ] {
            assert_eq!(registry.resolve(spec).unwrap().0.name(), "sqs", "{spec}");
        }
    }

    #[test]
    fn unknown_queue_names_the_input_and_the_choices() {
        let error = Registry::builtin()
            .resolve("rdis")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("`rdis`"), "{error}");
        assert!(error.contains("memory"), "{error}");
    }
}
