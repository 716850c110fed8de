//! Drivers by name and URL: how `--queue redis` or `--queue redis://host:6379`
//! finds its backend, and how a user's own crate adds one
//! (`Registry::builtin().with(MyDriver)` then `runner::main_with`).
//!
//! The registry only asks drivers: which one has this name, which one claims
//! this URL. What a URL means is the driver's business.

use std::fmt;
use std::sync::Arc;

use forloop_core::{Driver, MemoryDriver, QueueAddress, QueueError, QueueErrorKind};

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
        let registry = registry.with(forloop_queue_redis::RedisDriver);
        #[cfg(feature = "pubsub")]
        let registry = registry.with(forloop_queue_pubsub::PubsubDriver);
        #[cfg(feature = "sqs")]
        let registry = registry.with(forloop_queue_sqs::SqsDriver);
        registry
    }

    /// Add a driver; a later driver with the same name, or claiming the
    /// same URL, wins.
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
        let address = QueueAddress::parse(spec);
        let found = match address.url {
            Some(_) => self.drivers.iter().find(|d| d.claims(&address)),
            None => self.drivers.iter().find(|d| d.name() == spec),
        };
        match found {
            Some(driver) => Ok((Arc::clone(driver), address)),
            None => Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "unknown queue `{}` (from --queue or FORLOOP_QUEUE): this runner knows {}. \
                     Drivers not listed need their cargo feature (e.g. `cargo install forloop-runner --features redis`)",
                    forloop_core::kit::redact_url(spec),
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

    #[test]
    fn no_driver_claims_every_https_url() {
        let error = Registry::builtin()
            .resolve("https://example.com/queue")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("unknown queue"), "{error}");
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

    #[test]
    fn unknown_queue_urls_are_shown_without_their_password() {
        let error = Registry::builtin()
            .resolve("nope://:hunter2@h")
            .err()
            .unwrap()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
