//! forloop's Google Cloud Pub/Sub driver, the backend forloop exists for.
//!
//! # Layout
//!
//! A queue named `NAME` in project `PROJECT` is four resources, made by
//! [`PubsubQueue::create`] (`runner queue create`):
//!
//! | resource | name | role |
//! | --- | --- | --- |
//! | topic | `NAME` | items are published here |
//! | subscription | `NAME-workers` | workers pull from here; its ack deadline is the lease; its dead-letter policy forwards an item after `max_attempts` deliveries (Pub/Sub allows 5 to 100) |
//! | topic | `NAME-dead` | the dead-letter place |
//! | subscription | `NAME-dead-keep` | keeps dead items for `runner dead list / requeue / purge` |
//!
//! # Mapping onto the contract
//!
//! - publish: one `Publish` RPC per batch of up to 1,000 items (the client
//!   library's buffering publisher is not used: its default bundles are tiny).
//! - pull: a unary `Pull` whose deadline travels to the server as
//!   `grpc-timeout`, so the server ends the wait. A pull is never cancelled
//!   from the client: the emulator keeps a cancelled pull registered and it
//!   swallows the next message until its ack deadline.
//! - ack: `Acknowledge`; nack(d) and extend: `ModifyAckDeadline` (0 to 600 s;
//!   the worker's lease keeper renews longer leases).
//! - no retry policy on the subscription, on purpose: the worker's own backoff
//!   is exact (a nack with delay is a modack), and a retry policy would also
//!   delay the delay-0 handback of a stopping worker, which must be at once.
//! - attempt: `delivery_attempt`, which Pub/Sub sets only when the
//!   subscription has a dead-letter policy; `create` always sets one. Without
//!   it the driver reports 1.
//! - dead_letter(reason): publish the item with `forloop-dead-reason` to
//!   `NAME-dead`, then ack it. The driver keeps each held delivery's item
//!   until it is settled, for this.
//! - backlog: Pub/Sub has no exact counts; see below.
//!
//! # Backlog counts
//!
//! On GCP the driver reads `subscription/num_undelivered_messages` from Cloud
//! Monitoring (the [`monitoring`] module). That metric is sampled once a
//! minute and becomes visible up to two minutes later, so:
//!
//! - counts are [`Count::Approximate`], with [`Backlog::age`] the age of the
//!   newest point; the metric counts leased items too, so a non-zero reading
//!   is `ready ~n` with `in_flight` unknown, and zero is zero for both;
//! - `backlog_staleness` is [`monitoring::STALENESS`] (4 minutes): points
//!   older than that are not used, and the worker's drain detector needs
//!   zero readings spanning that long before it exits. A worker therefore
//!   exits about 4 minutes after the queue is empty, and does not exit while
//!   another worker still holds leased items (they are in the count);
//! - no points (a new subscription has none for its first minutes, whatever
//!   it holds), stale points and every Monitoring error (`roles/monitoring.viewer`
//!   missing, API disabled, timeout) read as [`Count::Unknown`], never as
//!   empty: the worker falls back to its idle window of empty pulls, no
//!   shorter than the staleness bound. Errors are logged once per kind;
//! - the workers' identity needs `roles/monitoring.viewer` on the project
//!   (on GKE, the Google service account of their Workload Identity).
//!
//! With `PUBSUB_EMULATOR_HOST` there is no monitoring API: counts are unknown
//! and the staleness is zero, so only `WorkerConfig::idle_window` decides
//! (`runner status` says so). [`PubsubAddress::with_monitoring`] or
//! `FORLOOP_MONITORING_ENDPOINT=URL` points the reader elsewhere (a loopback
//! fake in tests; plain `http://` endpoints get no token), and
//! `FORLOOP_MONITORING_ENDPOINT=off` turns it off.
//!
//! # Design: an exact job ledger (not implemented yet)
//!
//! Monitoring answers "roughly how much is left, a few minutes ago". `runner`
//! could know *exactly* when a job is done with a ledger kept in Pub/Sub
//! itself:
//!
//! 1. `runner submit` names the job (`J`, stable across a retried submit, e.g.
//!    from `--job` or a hash of the input) and stamps every item with the
//!    attributes `forloop-job=J` and `forloop-seq=i` (its input line). Once
//!    every publish succeeded it publishes one manifest, `{job: J, items: N}`,
//!    to a topic `NAME-done`. (Topic labels could hold `N` instead, but they
//!    need `pubsub.topics.update`, which workers and submitters should not
//!    have, and label values are short.)
//! 2. A worker, after `f` succeeded and **before** acking, publishes one
//!    receipt per ack batch to `NAME-done`: `{job: J, seqs: [..]}`.
//!    Before, not after: a crash between ack and receipt would leave an item
//!    done but never counted, and the job would never finish. The cost of
//!    "before" is a receipt for an item whose ack is then lost; it is
//!    delivered again and runs twice, which at-least-once allows anyway.
//!    Items the dead-letter policy forwards get no receipt; their
//!    `forloop-seq` is read from `NAME-dead` through a second ledger
//!    subscription instead.
//! 3. One reader (`runner wait`, `runner status`, or the launcher that then
//!    stops the workers) reads `NAME-done` and `NAME-dead` through its own
//!    subscriptions and counts **distinct** `(J, seq)` pairs: redeliveries,
//!    double acks and re-published receipts are all duplicates and count
//!    once. The job is done when `distinct done + distinct dead = N`, exactly
//!    and at once, on GCP and on the emulator alike. A stateless reader
//!    replays from the job's start with `Seek` (the ledger subscriptions
//!    retain acked messages); a long-lived one keeps the set in memory.
//!
//! Trade-offs: one extra publish per ack batch (about `items / ack_batch`
//! messages; Pub/Sub bills at least 1 kB per request, so a receipt of up to
//! ~100 ids costs what one small item costs) plus one RPC on every ack path;
//! the reader reads the same again, and a replaying reader reads it on every
//! look; a fan-out to every worker would multiply it, which is why there is
//! one reader. The topic and two subscriptions more are made by
//! `runner queue create`, and workers need publisher rights on `NAME-done`.
//! Items published by other programs (the Python interop flow) carry no job
//! and are invisible to it, so Monitoring stays as the fallback.
//!
//! Why not yet: the ledger is not a Pub/Sub matter alone. The worker would
//! need a hook between `f` and the ack, and `submit` a job identity, both in
//! `forloop-core`'s generic contract (and just as useful for SQS, whose counts
//! are approximate too). It belongs in a core change of its own; until then
//! Monitoring's counts with a staleness window are the honest answer.

#![deny(missing_docs)]

mod driver;

pub use driver::PubsubDriver;

pub mod monitoring;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use forloop_core::queue::check_payload_sizes;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, LeaseReport, LeaseToken, Message,
    MessageId, QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use gcloud_gax::conn::{Channel, Environment};
use gcloud_gax::grpc::{Code, Request, Status};
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriber;
use gcloud_googleapis::pubsub::v1::{
    AcknowledgeRequest, DeadLetterPolicy, ModifyAckDeadlineRequest, PubsubMessage, PullRequest,
    ReceivedMessage,
};
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::publisher::{Publisher, PublisherConfig};
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig};
use tokio::time::Instant;

/// Largest item, in bytes (Pub/Sub's limit is 10 MB per message).
pub const MAX_PAYLOAD: usize = 10_000_000;
/// Most items in one publish call (Pub/Sub's per-request limit).
pub const MAX_BATCH: usize = 1000;
/// The attribute that carries why an item was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "forloop-dead-reason";
/// The attribute that carries how many deliveries a dead item had.
pub const ATTEMPTS_ATTRIBUTE: &str = "forloop-dead-attempts";
/// The attribute Pub/Sub sets on items its dead-letter policy forwards.
pub const DELIVERY_COUNT_ATTRIBUTE: &str = "CloudPubSubDeadLetterSourceDeliveryCount";

/// The environment variable that overrides where backlog counts come from:
/// a Monitoring API base URL (`http://127.0.0.1:PORT` for a local fake, which
/// gets no token), or `off`.
pub const MONITORING_ENV: &str = "FORLOOP_MONITORING_ENDPOINT";

/// Where a queue's backlog counts come from (see [`monitoring`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BacklogSource {
    /// Cloud Monitoring on GCP; none on an emulator, which has no
    /// monitoring API.
    #[default]
    Auto,
    /// The Monitoring API at this base URL, emulator or not. Only `https://`
    /// endpoints are sent a token.
    Monitoring(String),
    /// None: counts are unknown and workers use their idle window.
    Off,
}

/// Where a queue lives.
#[derive(Clone, PartialEq, Eq)]
pub struct PubsubAddress {
    /// The GCP project.
    pub project: String,
    /// The queue name (the topic).
    pub name: String,
    /// `host:port` of an emulator, if one is used.
    pub emulator: Option<String>,
    /// Where backlog counts come from.
    pub backlog: BacklogSource,
}

impl fmt::Debug for PubsubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pubsub://{}/{}", self.project, self.name)?;
        if let Some(host) = &self.emulator {
            write!(f, " (emulator {host})")?;
        }
        match &self.backlog {
            BacklogSource::Auto => {}
            BacklogSource::Monitoring(url) => write!(f, " (monitoring {url})")?,
            BacklogSource::Off => write!(f, " (no backlog counts)")?,
        }
        Ok(())
    }
}

fn invalid(message: String) -> QueueError {
    QueueError::new(QueueErrorKind::Invalid, message)
}

impl PubsubAddress {
    /// From `pubsub://PROJECT/NAME`, or from `GOOGLE_CLOUD_PROJECT` and
    /// `name` when `url` is `None`; the emulator from `PUBSUB_EMULATOR_HOST`.
    pub fn resolve(url: Option<&str>, name: &str) -> Result<Self, QueueError> {
        let emulator = std::env::var("PUBSUB_EMULATOR_HOST")
            .ok()
            .filter(|h| !h.is_empty());
        let (project, name) = match url {
            Some(url) => {
                let rest = url.strip_prefix("pubsub://").ok_or_else(|| {
                    invalid(format!(
                        "`{url}` is not a Pub/Sub address; write pubsub://PROJECT/NAME"
                    ))
                })?;
                match rest.split_once('/') {
                    Some((project, queue)) if !project.is_empty() && !queue.is_empty() => {
                        (project.to_string(), queue.to_string())
                    }
                    _ => {
                        return Err(invalid(format!(
                            "`{url}` lacks a project or a name; write pubsub://PROJECT/NAME"
                        )));
                    }
                }
            }
            None => {
                let project = std::env::var("GOOGLE_CLOUD_PROJECT")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .or_else(|| emulator.as_ref().map(|_| "local-project".to_string()))
                    .ok_or_else(|| {
                        invalid(
                            "`--queue pubsub` needs a project: set GOOGLE_CLOUD_PROJECT, or write --queue pubsub://PROJECT/NAME"
                                .to_string(),
                        )
                    })?;
                (project, name.to_string())
            }
        };
        check_name(&name)?;
        let backlog = match std::env::var(MONITORING_ENV).ok().as_deref().map(str::trim) {
            None | Some("") => BacklogSource::Auto,
            Some("off") => BacklogSource::Off,
            Some(url) => BacklogSource::Monitoring(url.to_string()),
        };
        Ok(Self {
            project,
            name,
            emulator,
            backlog,
        })
    }

    /// Use an emulator at `host:port`.
    pub fn with_emulator(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Read backlog counts from the Monitoring API at `endpoint` (a base URL
    /// such as `http://127.0.0.1:9000`), even with an emulator.
    pub fn with_monitoring(mut self, endpoint: impl Into<String>) -> Self {
        self.backlog = BacklogSource::Monitoring(endpoint.into());
        self
    }

    /// Report unknown backlog counts (workers use their idle window).
    pub fn without_monitoring(mut self) -> Self {
        self.backlog = BacklogSource::Off;
        self
    }

    /// The Monitoring API base URL counts are read from, if any.
    pub fn monitoring_endpoint(&self) -> Option<&str> {
        match (&self.backlog, &self.emulator) {
            (BacklogSource::Monitoring(url), _) => Some(url),
            (BacklogSource::Auto, None) => Some(monitoring::DEFAULT_ENDPOINT),
            (BacklogSource::Auto, Some(_)) | (BacklogSource::Off, _) => None,
        }
    }

    fn topic(&self) -> String {
        self.name.clone()
    }
    pub(crate) fn subscription(&self) -> String {
        format!("{}-workers", self.name)
    }
    fn dead_topic(&self) -> String {
        format!("{}-dead", self.name)
    }
    fn dead_subscription(&self) -> String {
        format!("{}-dead-keep", self.name)
    }
}

/// Pub/Sub names: 3 to 255 characters, starting with a letter, of letters,
/// digits and `-_.~+%`; the suffixes this driver adds must still fit.
fn check_name(name: &str) -> Result<(), QueueError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.len() < 3 || name.len() > 240 || !ok_chars || !starts || name.starts_with("goog") {
        return Err(invalid(format!(
            "`{name}` cannot name a Pub/Sub queue: use 3 to 240 letters, digits or -_.~+%, starting with a letter (not `goog`)"
        )));
    }
    Ok(())
}

fn error(what: &str, address: &PubsubAddress, status: Status) -> QueueError {
    let (kind, hint) = match status.code() {
        Code::NotFound => (
            QueueErrorKind::NotFound,
            format!(
                "; create it with `runner --queue pubsub://{}/{} queue create`",
                address.project, address.name
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

/// A forloop queue on Pub/Sub.
pub struct PubsubQueue {
    address: PubsubAddress,
    subscription: Subscription,
    subscription_name: String,
    dead_subscription: Subscription,
    publisher: Publisher,
    dead_publisher: Publisher,
    raw: RawSubscriber<Channel>,
    ack_deadline: Duration,
    /// Items (and delivery attempts) of held deliveries by ack id, for `dead_letter`.
    held: Mutex<HashMap<String, (Message, u32)>>,
    /// The Cloud Monitoring reader, when counts come from there.
    #[cfg(feature = "auth")]
    monitor: Option<monitoring::Monitor>,
}

impl fmt::Debug for PubsubQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubsubQueue")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

async fn client_config(address: &PubsubAddress) -> Result<ClientConfig, QueueError> {
    let mut config = ClientConfig {
        pool_size: 1,
        project_id: Some(address.project.clone()),
        ..ClientConfig::default()
    };
    match &address.emulator {
        Some(host) => config.environment = Environment::Emulator(host.clone()),
        None => config = with_credentials(config).await?,
    }
    Ok(config)
}

#[cfg(feature = "auth")]
async fn with_credentials(config: ClientConfig) -> Result<ClientConfig, QueueError> {
    config.with_auth().await.map_err(|e| {
        QueueError::new(
            QueueErrorKind::PermissionDenied,
            format!(
                "no Google credentials found (tried Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, \
                 gcloud's application-default login, the GKE/GCE metadata server): {e}"
            ),
        )
    })
}

#[cfg(not(feature = "auth"))]
async fn with_credentials(_config: ClientConfig) -> Result<ClientConfig, QueueError> {
    Err(QueueError::new(
        QueueErrorKind::Unsupported,
        "this build of the Pub/Sub driver has no GCP authentication (cargo feature `auth`); \
         set PUBSUB_EMULATOR_HOST to use the emulator, or rebuild with the feature",
    ))
}

fn unreachable(address: &PubsubAddress, e: impl fmt::Display) -> QueueError {
    QueueError::new(
        QueueErrorKind::Unavailable,
        format!("cannot reach Pub/Sub for {address:?}: {e}"),
    )
}

/// A client, and the raw subscriber channel the bounded pulls need, from one
/// config (so credentials are looked up once).
async fn connect_all(
    address: &PubsubAddress,
) -> Result<(Client, RawSubscriber<Channel>), QueueError> {
    let config = client_config(address).await?;
    let connections = ConnectionManager::new(
        1,
        &config.endpoint,
        &config.environment,
        &config.connection_option,
    )
    .await
    .map_err(|e| unreachable(address, e))?;
    let raw = RawSubscriber::new(connections.conn())
        .max_decoding_message_size(MAX_PAYLOAD * 2 + 1024 * 1024);
    let client = Client::new(config)
        .await
        .map_err(|e| unreachable(address, e))?;
    Ok((client, raw))
}

#[cfg(feature = "auth")]
fn monitor(address: &PubsubAddress) -> Option<monitoring::Monitor> {
    let endpoint = address.monitoring_endpoint()?;
    monitoring::Monitor::new(
        endpoint,
        &address.project,
        address.subscription(),
        address.dead_subscription(),
    )
    .inspect_err(|e| tracing::warn!("backlog counts unknown: {e}"))
    .ok()
}

#[cfg(not(feature = "auth"))]
fn no_monitor(address: &PubsubAddress) {
    if let BacklogSource::Monitoring(url) = &address.backlog {
        tracing::warn!(
            "backlog counts unknown: this build of the Pub/Sub driver cannot read Cloud Monitoring at {url} \
             (it lacks the cargo feature `auth`)"
        );
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(i32::MAX)
}

impl PubsubQueue {
    /// Create the queue's topics and subscriptions where missing. The
    /// subscription's ack deadline is `config.lease` (10 to 600 s) and its
    /// dead-letter policy forwards after `config.max_attempts` deliveries
    /// (clamped to Pub/Sub's 5 to 100). On GCP, the Pub/Sub service agent
    /// needs publisher rights on `NAME-dead` and subscriber rights on
    /// `NAME-workers` for forwarding to work.
    pub async fn create(address: &PubsubAddress, config: &QueueConfig) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        let fail = |what: &str, status: Status| error(what, address, status);
        for topic in [address.topic(), address.dead_topic()] {
            let handle = client.topic(&topic);
            if !handle
                .exists(None)
                .await
                .map_err(|s| fail("topic lookup", s))?
            {
                client
                    .create_topic(&topic, None, None)
                    .await
                    .map_err(|s| fail("topic creation", s))?;
            }
        }
        let dead_topic = client.topic(&address.dead_topic());
        let subscriptions = [
            (
                address.subscription(),
                address.topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: seconds(config.lease).clamp(10, 600),
                    dead_letter_policy: Some(DeadLetterPolicy {
                        dead_letter_topic: dead_topic.fully_qualified_name().to_string(),
                        max_delivery_attempts: i32::try_from(config.max_attempts)
                            .unwrap_or(100)
                            .clamp(5, 100),
                    }),
                    ..SubscriptionConfig::default()
                },
            ),
            (
                address.dead_subscription(),
                address.dead_topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: 60,
                    ..SubscriptionConfig::default()
                },
            ),
        ];
        for (name, topic, sub_config) in subscriptions {
            let handle = client.subscription(&name);
            if !handle
                .exists(None)
                .await
                .map_err(|s| fail("subscription lookup", s))?
            {
                client
                    .create_subscription(&name, &topic, sub_config, None)
                    .await
                    .map_err(|s| fail("subscription creation", s))?;
            }
        }
        Ok(())
    }

    /// Delete the queue's subscriptions and topics (items included).
    pub async fn delete(address: &PubsubAddress) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        for name in [address.subscription(), address.dead_subscription()] {
            let handle = client.subscription(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("subscription deletion", address, s))?;
            }
        }
        for name in [address.topic(), address.dead_topic()] {
            let handle = client.topic(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("topic deletion", address, s))?;
            }
        }
        Ok(())
    }

    /// Connect to an existing queue (see [`PubsubQueue::create`]). Its lease
    /// is the subscription's ack deadline, set when it was created.
    pub async fn connect(address: PubsubAddress) -> Result<Self, QueueError> {
        let (client, raw) = connect_all(&address).await?;
        #[cfg(not(feature = "auth"))]
        no_monitor(&address);
        let subscription = client.subscription(&address.subscription());
        let (_, sub_config) = subscription
            .config(None)
            .await
            .map_err(|s| error("subscription lookup", &address, s))?;
        let one_worker = || {
            Some(PublisherConfig {
                workers: 1,
                ..PublisherConfig::default()
            })
        };
        let publisher = client.topic(&address.topic()).new_publisher(one_worker());
        let dead_publisher = client
            .topic(&address.dead_topic())
            .new_publisher(one_worker());
        Ok(Self {
            subscription_name: subscription.fully_qualified_name().to_string(),
            dead_subscription: client.subscription(&address.dead_subscription()),
            subscription,
            publisher,
            dead_publisher,
            raw,
            ack_deadline: Duration::from_secs(
                u64::try_from(sub_config.ack_deadline_seconds)
                    .unwrap_or(10)
                    .max(10),
            ),
            held: Mutex::new(HashMap::new()),
            #[cfg(feature = "auth")]
            monitor: monitor(&address),
            address,
        })
    }

    /// Whether backlog counts come from Cloud Monitoring.
    pub fn monitored(&self) -> bool {
        #[cfg(feature = "auth")]
        return self.monitor.is_some();
        #[cfg(not(feature = "auth"))]
        return false;
    }

    fn fail(&self, what: &str, status: Status) -> QueueError {
        error(what, &self.address, status)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Message, u32)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A unary pull the server ends after `wait` (never cancelled here).
    async fn pull_raw(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let mut request = Request::new(PullRequest {
            subscription: subscription.to_string(),
            max_messages: i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1000),
            ..PullRequest::default()
        });
        request.set_timeout(wait.max(Duration::from_millis(100)));
        if let Ok(value) = format!("subscription={subscription}").parse() {
            request
                .metadata_mut()
                .insert("x-goog-request-params", value);
        }
        match self.raw.clone().pull(request).await {
            Ok(response) => Ok(response.into_inner().received_messages),
            // The server's way of saying "nothing came within the wait".
            Err(status) if status.code() == Code::DeadlineExceeded => Ok(Vec::new()),
            Err(status) => Err(self.fail("pull", status)),
        }
    }

    async fn modify(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
        seconds: i32,
    ) -> Result<(), QueueError> {
        for chunk in ack_ids.chunks(MAX_BATCH) {
            self.subscription
                .get_client()
                .modify_ack_deadline(
                    ModifyAckDeadlineRequest {
                        subscription: subscription.to_string(),
                        ack_ids: chunk.to_vec(),
                        ack_deadline_seconds: seconds,
                    },
                    None,
                )
                .await
                .map_err(|s| self.fail("modify ack deadline", s))?;
        }
        Ok(())
    }

    async fn acknowledge(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), QueueError> {
        for chunk in ack_ids.chunks(MAX_BATCH) {
            self.subscription
                .get_client()
                .acknowledge(
                    AcknowledgeRequest {
                        subscription: subscription.to_string(),
                        ack_ids: chunk.to_vec(),
                    },
                    None,
                )
                .await
                .map_err(|s| self.fail("ack", s))?;
        }
        Ok(())
    }

    /// Drain the dead-keep subscription with bounded pulls, handing each batch
    /// to `each`; stops after `limit` items or an empty pull.
    async fn dead_batches(&self, limit: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        let name = self.dead_subscription.fully_qualified_name().to_string();
        let mut out = Vec::new();
        while out.len() < limit {
            let got = self
                .pull_raw(
                    &name,
                    (limit - out.len()).min(MAX_BATCH),
                    Duration::from_secs(2),
                )
                .await?;
            if got.is_empty() {
                break;
            }
            out.extend(got);
        }
        Ok(out)
    }
}

fn tokens_to_ids(tokens: &[LeaseToken]) -> (Vec<String>, Vec<LeaseToken>) {
    let mut ids = Vec::with_capacity(tokens.len());
    let mut lost = Vec::new();
    for token in tokens {
        match token.as_text() {
            Some(id) => ids.push(id.to_string()),
            None => lost.push(token.clone()),
        }
    }
    (ids, lost)
}

fn to_pubsub(message: &Message) -> PubsubMessage {
    PubsubMessage {
        data: message.payload.to_vec(),
        attributes: message
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..PubsubMessage::default()
    }
}

fn from_pubsub(message: PubsubMessage) -> (Message, String) {
    let id = message.message_id.clone();
    (
        Message {
            payload: Bytes::from(message.data),
            attributes: message.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        },
        id,
    )
}

#[async_trait]
impl WorkQueue for PubsubQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: MAX_PAYLOAD,
            max_batch: MAX_BATCH,
            max_deadline: Duration::from_secs(600),
            min_deadline: Duration::from_secs(10),
            native_dead_letter: true,
            delayed_nack: true,
            exact_backlog: false,
            // Monitoring points are trusted up to this old; without them the
            // counts are unknown and only the worker's idle window counts.
            backlog_staleness: if self.monitored() {
                monitoring::STALENESS
            } else {
                Duration::ZERO
            },
        }
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        check_payload_sizes(&batch, MAX_PAYLOAD)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let messages = batch.iter().map(to_pubsub).collect();
        let ids = self
            .publisher
            .publish_immediately(messages, None)
            .await
            .map_err(|s| self.fail("publish", s))?;
        Ok(ids.into_iter().map(Arc::from).collect())
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let sent = Instant::now();
        let received = self.pull_raw(&self.subscription_name, max, wait).await?;
        let deadline = sent + self.ack_deadline;
        let mut held = self.held();
        Ok(received
            .into_iter()
            .filter_map(|received| {
                let message = received.message?;
                let (message, id) = from_pubsub(message);
                let attempt = u32::try_from(received.delivery_attempt).unwrap_or(0).max(1);
                held.insert(received.ack_id.clone(), (message.clone(), attempt));
                Some(Delivery {
                    id: Arc::from(id),
                    payload: message.payload,
                    attributes: message.attributes,
                    token: LeaseToken::new(received.ack_id),
                    attempt,
                    deadline,
                })
            })
            .collect())
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let (ids, lost) = tokens_to_ids(tokens);
        {
            let mut held = self.held();
            for id in &ids {
                held.remove(id);
            }
        }
        self.acknowledge(&self.subscription_name, ids).await?;
        Ok(LeaseReport { lost })
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let (ids, lost) = tokens_to_ids(tokens);
        {
            let mut held = self.held();
            for id in &ids {
                held.remove(id);
            }
        }
        self.modify(&self.subscription_name, ids, seconds(delay).min(600))
            .await?;
        Ok(LeaseReport { lost })
    }

    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let (ids, lost) = tokens_to_ids(tokens);
        self.modify(&self.subscription_name, ids, seconds(lease).clamp(1, 600))
            .await?;
        Ok(LeaseReport { lost })
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let (ids, mut lost) = tokens_to_ids(tokens);
        let mut letters = Vec::new();
        let mut settled = Vec::new();
        {
            let mut held = self.held();
            for (id, token) in ids.into_iter().zip(tokens) {
                match held.remove(&id) {
                    Some((message, attempt)) => {
                        let mut letter = to_pubsub(&message);
                        letter
                            .attributes
                            .insert(REASON_ATTRIBUTE.to_string(), reason.to_string());
                        letter
                            .attributes
                            .insert(ATTEMPTS_ATTRIBUTE.to_string(), attempt.to_string());
                        letters.push(letter);
                        settled.push(id);
                    }
                    None => lost.push(token.clone()),
                }
            }
        }
        if !letters.is_empty() {
            self.dead_publisher
                .publish_immediately(letters, None)
                .await
                .map_err(|s| self.fail("dead-letter publish", s))?;
            self.acknowledge(&self.subscription_name, settled).await?;
        }
        Ok(LeaseReport { lost })
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        #[cfg(feature = "auth")]
        if let Some(monitor) = &self.monitor {
            return Ok(monitor.backlog().await);
        }
        Ok(Backlog {
            ready: Count::Unknown,
            in_flight: Count::Unknown,
            dead: Count::Unknown,
            age: Duration::ZERO,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let received = self.dead_batches(limit).await?;
        let name = self.dead_subscription.fully_qualified_name().to_string();
        // Looking must not consume: give every one back at once.
        self.modify(
            &name,
            received.iter().map(|r| r.ack_id.clone()).collect(),
            0,
        )
        .await?;
        Ok(received
            .into_iter()
            .filter_map(|r| r.message)
            .map(|message| {
                let (mut message, id) = from_pubsub(message);
                let reason = message.attributes.remove(REASON_ATTRIBUTE);
                let attempts = message
                    .attributes
                    .remove(ATTEMPTS_ATTRIBUTE)
                    .or_else(|| message.attributes.get(DELIVERY_COUNT_ATTRIBUTE).cloned())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                DeadLetter {
                    id: Arc::from(id),
                    attempts,
                    reason: reason.unwrap_or_else(|| {
                        format!(
                            "delivered {attempts} times without an ack (Pub/Sub dead-letter policy)"
                        )
                    }),
                    message,
                }
            })
            .collect())
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        let name = self.dead_subscription.fully_qualified_name().to_string();
        let mut total = 0;
        loop {
            let received = self.dead_batches(MAX_BATCH).await?;
            if received.is_empty() {
                return Ok(total);
            }
            let ack_ids: Vec<String> = received.iter().map(|r| r.ack_id.clone()).collect();
            let messages: Vec<PubsubMessage> = received
                .into_iter()
                .filter_map(|r| r.message)
                .map(|mut m| {
                    m.attributes.retain(|k, _| {
                        k != REASON_ATTRIBUTE && !k.starts_with("CloudPubSubDeadLetter")
                    });
                    PubsubMessage {
                        data: m.data,
                        attributes: m.attributes,
                        ..PubsubMessage::default()
                    }
                })
                .collect();
            total += messages.len() as u64;
            self.publisher
                .publish_immediately(messages, None)
                .await
                .map_err(|s| self.fail("requeue publish", s))?;
            self.acknowledge(&name, ack_ids).await?;
        }
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        let name = self.dead_subscription.fully_qualified_name().to_string();
        let mut total = 0;
        loop {
            let received = self.dead_batches(MAX_BATCH).await?;
            if received.is_empty() {
                return Ok(total);
            }
            total += received.len() as u64;
            self.acknowledge(&name, received.into_iter().map(|r| r.ack_id).collect())
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_names_are_named() {
        let a = PubsubAddress::resolve(Some("pubsub://my-proj/videos"), "ignored").unwrap();
        assert_eq!((a.project.as_str(), a.name.as_str()), ("my-proj", "videos"));
        assert_eq!(a.subscription(), "videos-workers");
        assert_eq!(a.dead_topic(), "videos-dead");
        for bad in ["pubsub://p", "pubsub:///n", "redis://x/y"] {
            let e = PubsubAddress::resolve(Some(bad), "n")
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = PubsubAddress::resolve(Some("pubsub://p/9x"), "n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`9x` cannot name a Pub/Sub queue"), "{e}");
    }

    #[test]
    fn counts_come_from_monitoring_on_gcp_only_unless_told() {
        let gcp = PubsubAddress {
            project: "p".to_string(),
            name: "jobs".to_string(),
            emulator: None,
            backlog: BacklogSource::Auto,
        };
        assert_eq!(
            gcp.monitoring_endpoint(),
            Some("https://monitoring.googleapis.com")
        );
        let emulated = gcp.clone().with_emulator("127.0.0.1:8085");
        assert_eq!(emulated.monitoring_endpoint(), None);
        let faked = emulated.with_monitoring("http://127.0.0.1:9");
        assert_eq!(faked.monitoring_endpoint(), Some("http://127.0.0.1:9"));
        assert!(format!("{faked:?}").contains("monitoring http://127.0.0.1:9"));
        assert_eq!(gcp.without_monitoring().monitoring_endpoint(), None);
    }

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(10_500)), 11);
    }
}
