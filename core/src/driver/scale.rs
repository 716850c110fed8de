//! What an autoscaler reads to size workers on a queue's backlog.

use std::collections::BTreeMap;

/// A KEDA scaler on a queue's backlog: its type, its metadata (the target
/// backlog per worker included) and the pod identity it authenticates with.
///
/// KEDA's scaler vocabulary is the common language of "scale on a queue", so
/// a driver describes its backend in it and a launcher renders it without
/// knowing any backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScaleTrigger {
    /// The KEDA scaler type (`redis`, `aws-sqs-queue`, `prometheus`).
    pub scaler: String,
    /// The scaler's metadata, as KEDA spells it.
    pub metadata: BTreeMap<String, String>,
    /// The pod identity provider the scaler authenticates with (`gcp`),
    /// through a TriggerAuthentication; `None` when it needs none.
    pub pod_identity: Option<String>,
}

impl ScaleTrigger {
    /// The scaler `scaler` with no metadata yet.
    pub fn new(scaler: impl Into<String>) -> Self {
        Self {
            scaler: scaler.into(),
            metadata: BTreeMap::new(),
            pod_identity: None,
        }
    }

    /// Add one metadata entry.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Authenticate through the pod identity `provider` (`gcp`, `aws`).
    pub fn with_pod_identity(mut self, provider: impl Into<String>) -> Self {
        self.pod_identity = Some(provider.into());
        self
    }
}
