//! Drivers by name and URL, launchers by name: how `--queue redis` or
//! `--queue redis://host:6379` finds its backend and `--cluster gke` its
//! launcher, and how a user's own crate adds one
//! (`Registry::builtin().with(MyDriver)` or `.with_cluster(MyCluster)`,
//! then `runner::main_with`).
//!
//! The registry only asks the plugs: which one has this name, which one
//! claims this URL. What a URL or a cluster flag means is the plug's business.

use std::fmt;
use std::sync::Arc;

use forloop_core::cluster::{Cluster, LocalCluster};
use forloop_core::{Driver, LaunchError, MemoryDriver, QueueAddress, QueueError, QueueErrorKind};

/// The drivers and launchers a binary knows.
#[derive(Clone, Default)]
pub struct Registry {
    drivers: Vec<Arc<dyn Driver>>,
    clusters: Vec<Arc<dyn Cluster>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("drivers", &self.names())
            .field("clusters", &self.cluster_names())
            .finish()
    }
}

impl Registry {
    /// No drivers and no launchers at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The drivers and launchers compiled into this build of `runner`.
    pub fn builtin() -> Self {
        let registry = Self::empty().with(MemoryDriver).with_cluster(LocalCluster);
        #[cfg(feature = "redis")]
        let registry = registry.with(forloop_queue_redis::RedisDriver);
        #[cfg(feature = "pubsub")]
        let registry = registry.with(forloop_queue_pubsub::PubsubDriver);
        #[cfg(feature = "sqs")]
        let registry = registry.with(forloop_queue_sqs::SqsDriver);
        #[cfg(feature = "k8s")]
        let registry = registry
            .with_cluster(forloop_cluster_k8s::K8sCluster::gke())
            .with_cluster(forloop_cluster_k8s::K8sCluster::k8s());
        registry
    }

    /// Add a launcher; a later one with the same name wins.
    pub fn with_cluster(mut self, cluster: impl Cluster + 'static) -> Self {
        self.clusters.insert(0, Arc::new(cluster));
        self
    }

    /// The names `--cluster` finds a launcher by.
    pub fn cluster_names(&self) -> Vec<&str> {
        sorted(self.clusters.iter().map(|c| c.name()))
    }

    /// The launcher for a `--cluster` value.
    pub fn cluster(&self, name: &str) -> Result<Arc<dyn Cluster>, LaunchError> {
        if let Some(cluster) = self.clusters.iter().find(|c| c.name() == name) {
            return Ok(Arc::clone(cluster));
        }
        // The command line offers gke and k8s in every build; their plug
        // comes with the runner's `k8s` feature.
        Err(LaunchError::new(match name {
            "gke" | "k8s" => format!(
                "--cluster {name} needs a runner built with Kubernetes support: \
                 cargo install --path runner --features k8s (the Dockerfile's FEATURES build arg too)"
            ),
            _ => format!(
                "--cluster {name}: this runner has no such launcher; it knows {}",
                self.cluster_names().join(", ")
            ),
        }))
    }

    /// Add a driver; a later driver with the same name, or claiming the
    /// same URL, wins.
    pub fn with(mut self, driver: impl Driver + 'static) -> Self {
        self.drivers.insert(0, Arc::new(driver));
        self
    }

    /// The names of every driver, for help and error messages.
    pub fn names(&self) -> Vec<&str> {
        sorted(self.drivers.iter().map(|d| d.name()))
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

/// Names once each, in order, for help and error messages.
fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    names
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
    fn clusters_are_found_by_name() {
        let registry = Registry::builtin();
        assert_eq!(registry.cluster("local").unwrap().name(), "local");
        let error = Registry::empty()
            .cluster("local")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no such launcher"), "{error}");
        #[cfg(not(feature = "k8s"))]
        {
            let error = registry.cluster("gke").err().unwrap().to_string();
            assert!(error.contains("--features k8s"), "{error}");
        }
        #[cfg(feature = "k8s")]
        assert_eq!(registry.cluster("k8s").unwrap().name(), "k8s");
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
