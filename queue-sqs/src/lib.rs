//! forloop's Amazon SQS driver.
//!
//! # Layout
//!
//! A queue named `NAME` is two standard SQS queues, made by
//! [`SqsQueue::create`] (`runner queue create`):
//!
//! | queue | role |
//! | --- | --- |
//! | `NAME` | items; its `VisibilityTimeout` is the default lease and its `RedrivePolicy` moves an item to `NAME-dead` once it was received more than `max_attempts` times |
//! | `NAME-dead` | the dead-letter place, read by `runner dead list / requeue / purge` |
//!
//! # Mapping onto the contract
//!
//! - publish: `SendMessageBatch` of at most 10 entries and at most the
//!   queue's `MaximumMessageSize` bytes in total (SQS's limits); one driver
//!   call of up to [`MAX_BATCH`] items sends its tens concurrently. Entries
//!   that fail on the server's side are sent again (three tries); entries SQS
//!   refuses are reported by their index in the batch.
//! - bodies: an item that is valid SQS text (UTF-8 without the control
//!   characters SQS refuses) is the message body unchanged, so any SQS client
//!   reads it as is. Other bytes travel base64-encoded, marked by the message
//!   attribute [`ENCODING_ATTRIBUTE`].
//! - pull: `ReceiveMessage` of up to 10 with the lease as `VisibilityTimeout`
//!   and a long poll of `wait` (whole seconds, at most 20); a pull of more
//!   than 10 sends one long poll and short polls for the rest, concurrently.
//!   attempt = `ApproximateReceiveCount`; lease token = the receipt handle.
//! - ack: `DeleteMessageBatch`. SQS answers success for a stale receipt
//!   handle and deletes nothing (so a lost lease cannot settle the item, as
//!   the contract wants), which means an ack cannot report a lost lease
//!   unless SQS calls the handle invalid.
//! - nack(d) and extend: `ChangeMessageVisibilityBatch`; a handle SQS calls
//!   invalid or not in flight is a lost lease. SQS caps a message's
//!   visibility at 12 hours from its receive: longer extensions are cut to
//!   what is left, and a lease with nothing left is reported lost.
//! - dead_letter(reason): send the item with [`REASON_ATTRIBUTE`] to
//!   `NAME-dead`, then delete it. The driver keeps each held delivery's item
//!   until it is settled, for this.
//! - backlog: `ApproximateNumberOfMessages` (+ `…Delayed`) as ready,
//!   `…NotVisible` as in flight, and the dead queue's total as dead, all
//!   [`Count::Approximate`]. AWS says the numbers settle within about a
//!   minute, so [`Capabilities::backlog_staleness`] is 60 s unless
//!   `FORLOOP_SQS_STALENESS` says otherwise (fauxqs counts from its own store
//!   on every call, so `0s` is right there).

#![deny(missing_docs)]

mod driver;

pub use driver::SqsDriver;

use futures_util::future::join_all;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use bytes::Bytes;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, LeaseReport, LeaseToken, Message,
    MessageId, QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use tokio::time::Instant;

/// Most messages in one SQS batch request.
pub const SQS_BATCH: usize = 10;
/// Most items in one driver publish or ack call (sent as concurrent tens).
pub const MAX_BATCH: usize = 100;
/// SQS's cap on a message's visibility, counted from its receive.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// The payload limit when the queue does not say (AWS's default today).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// The attribute that carries why an item was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "forloop-dead-reason";
/// The attribute that carries how many deliveries a dead item had.
pub const ATTEMPTS_ATTRIBUTE: &str = "forloop-dead-attempts";
/// The attribute that marks a base64-encoded body (`base64`).
pub const ENCODING_ATTRIBUTE: &str = "forloop-encoding";
/// The variable that sets [`Capabilities::backlog_staleness`] (`60s` if unset).
pub const STALENESS_VAR: &str = "FORLOOP_SQS_STALENESS";
/// The queue suffix of the dead-letter queue.
pub const DEAD_SUFFIX: &str = "-dead";

const RETENTION_SECONDS: &str = "1209600"; // 14 days, SQS's longest

/// Where a queue lives.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsAddress {
    /// The queue name.
    pub name: String,
    /// The full queue URL, when the address gave one.
    pub url: Option<String>,
    /// The region the URL names, if any (else the usual AWS variables).
    pub region: Option<String>,
    /// How long backlog readings may lag (see [`STALENESS_VAR`]).
    pub staleness: Duration,
}

impl fmt::Debug for SqsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.url {
            Some(url) => write!(f, "{url}"),
            None => write!(f, "sqs://{}", self.name),
        }
    }
}

fn invalid(message: String) -> QueueError {
    QueueError::new(QueueErrorKind::Invalid, message)
}

impl SqsAddress {
    /// From `sqs://NAME`, a queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`),
    /// or `name` when `url` is `None`; the staleness from [`STALENESS_VAR`].
    pub fn resolve(url: Option<&str>, name: &str) -> Result<Self, QueueError> {
        let staleness = match std::env::var(STALENESS_VAR) {
            Ok(text) if !text.trim().is_empty() => {
                humantime::parse_duration(text.trim()).map_err(|e| {
                    invalid(format!(
                        "{STALENESS_VAR}=`{text}` is not a duration like 60s or 500ms: {e}"
                    ))
                })?
            }
            _ => Duration::from_secs(60),
        };
        let (name, url, region) = match url {
            None => (name.to_string(), None, None),
            Some(spec) => {
                if let Some(rest) = spec.strip_prefix("sqs://") {
                    (rest.trim_end_matches('/').to_string(), None, None)
                } else if let Some(rest) = spec
                    .strip_prefix("https://")
                    .or_else(|| spec.strip_prefix("http://"))
                {
                    let mut parts = rest.split('/');
                    let host = parts.next().unwrap_or_default();
                    let (account, queue) = (parts.next(), parts.next());
                    match (account, queue, parts.next()) {
                        (Some(account), Some(queue), None | Some(""))
                            if !account.is_empty() && !queue.is_empty() =>
                        {
                            let region = Self::region_of(host.split(':').next().unwrap_or(""));
                            (
                                queue.to_string(),
                                Some(spec.trim_end_matches('/').to_string()),
                                region,
                            )
                        }
                        _ => {
                            return Err(invalid(format!(
                                "`{spec}` is not an SQS queue URL; write https://sqs.REGION.amazonaws.com/ACCOUNT/NAME or sqs://NAME"
                            )));
                        }
                    }
                } else {
                    return Err(invalid(format!(
                        "`{spec}` is not an SQS address; write sqs://NAME or https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
                    )));
                }
            }
        };
        check_name(&name)?;
        Ok(Self {
            name,
            url,
            region,
            staleness,
        })
    }

    /// The region an SQS host names: `sqs.REGION.amazonaws.com`, or the
    /// legacy `REGION.queue.amazonaws.com`.
    fn region_of(host: &str) -> Option<String> {
        let labels: Vec<&str> = host.split('.').collect();
        match labels.as_slice() {
            ["sqs", region, "amazonaws", ..] | [region, "queue", "amazonaws", ..] => {
                Some(region.to_string())
            }
            _ => None,
        }
    }

    /// Whether `host` is an SQS endpoint (by its name, as AWS spells them).
    pub fn is_sqs_host(host: &str) -> bool {
        Self::region_of(host).is_some()
    }

    /// The dead-letter queue's name.
    pub fn dead_name(&self) -> String {
        format!("{}{DEAD_SUFFIX}", self.name)
    }

    fn create_hint(&self) -> String {
        format!(
            "create it with `runner --queue sqs --name {} queue create` (same AWS account and region)",
            self.name
        )
    }
}

/// SQS names: 1 to 80 letters, digits, `-` or `_`; the `-dead` suffix must
/// still fit. FIFO queues (`.fifo`) need message groups forloop does not use.
fn check_name(name: &str) -> Result<(), QueueError> {
    if name.ends_with(".fifo") {
        return Err(invalid(format!(
            "`{name}` is a FIFO queue; forloop uses standard SQS queues (FIFO ordering would hold a whole group behind one slow item)"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 80 - DEAD_SUFFIX.len()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(invalid(format!(
            "`{name}` cannot name an SQS queue: use 1 to {} letters, digits, - or _",
            80 - DEAD_SUFFIX.len()
        )));
    }
    Ok(())
}

/// Where credentials are looked for, for error messages.
const CREDENTIAL_SOURCES: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), \
     the profile AWS_PROFILE (else `default`) in ~/.aws/credentials and ~/.aws/config, \
     web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, as EKS IRSA sets them), \
     ECS container credentials, and EC2 instance metadata; this build has no SSO or credential_process";

fn error<E, R>(what: &str, address: &SqsAddress, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().unwrap_or_default().to_string();
    let detail = err
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
    let (kind, text) = match &err {
        SdkError::ServiceError(_) => classify(&code, &detail, address),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => (
            QueueErrorKind::Unavailable,
            format!("no answer from SQS: {detail}"),
        ),
        _ => {
            let context = without_debug(&DisplayErrorContext(&err).to_string());
            let lower = context.to_ascii_lowercase();
            if lower.contains("credential") || lower.contains("identity") {
                (
                    QueueErrorKind::PermissionDenied,
                    format!("no AWS credentials found (tried {CREDENTIAL_SOURCES}): {context}"),
                )
            } else if lower.contains("region") {
                (
                    QueueErrorKind::Invalid,
                    format!(
                        "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or `region` in ~/.aws/config), or give the full queue URL: {context}"
                    ),
                )
            } else {
                (
                    QueueErrorKind::Unavailable,
                    format!(
                        "cannot reach SQS (endpoint from AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL if set): {context}"
                    ),
                )
            }
        }
    };
    QueueError::new(kind, format!("sqs {what} on {address:?} failed: {text}"))
}

/// The readable chain of a `DisplayErrorContext`, without the `(Variant(...))`
/// debug dump it ends with.
fn without_debug(context: &str) -> String {
    let bytes = context.as_bytes();
    for (i, _) in context.match_indices(" (") {
        let rest = &bytes[i + 2..];
        let name = rest
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name > 0 && rest[0].is_ascii_uppercase() && rest.get(name) == Some(&b'(') {
            return context[..i].to_string();
        }
    }
    context.to_string()
}

fn classify(code: &str, detail: &str, address: &SqsAddress) -> (QueueErrorKind, String) {
    match code {
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => (
            QueueErrorKind::NotFound,
            format!(
                "queue `{}` does not exist ({detail}); {}",
                address.name,
                address.create_hint()
            ),
        ),
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "RequestExpired" => (
            QueueErrorKind::PermissionDenied,
            format!(
                "SQS refused the credentials ({code}: {detail}); they come from the first of {CREDENTIAL_SOURCES}"
            ),
        ),
        "AccessDenied" | "AccessDeniedException" | "AuthorizationError" | "KmsAccessDenied" => (
            QueueErrorKind::PermissionDenied,
            format!(
                "access denied ({code}: {detail}); the role needs sqs:SendMessage, ReceiveMessage, DeleteMessage, ChangeMessageVisibility and GetQueueAttributes on `{}` and `{}`",
                address.name,
                address.dead_name()
            ),
        ),
        "RequestThrottled"
        | "ThrottlingException"
        | "ServiceUnavailable"
        | "InternalError"
        | "InternalFailure"
        | "KmsThrottled"
        | "OverLimit" => (QueueErrorKind::Unavailable, format!("{code}: {detail}")),
        c if c.starts_with("InvalidParameter")
            || c.starts_with("InvalidAttribute")
            || c.starts_with("Missing")
            || c == "InvalidMessageContents"
            || c == "UnsupportedOperation" =>
        {
            (QueueErrorKind::Invalid, format!("{code}: {detail}"))
        }
        _ => (QueueErrorKind::Other, format!("{code}: {detail}")),
    }
}

/// A message on its way out: body and attributes as SQS takes them.
type Outgoing = (String, BTreeMap<String, String>);
/// An outgoing message with its index in the caller's batch.
type Indexed = (usize, String, BTreeMap<String, String>);

/// A delivery this process holds: its item, for `dead_letter`, and when it
/// was received, for the 12-hour visibility cap.
#[derive(Clone)]
struct Held {
    message: Message,
    attempt: u32,
    received: Instant,
}

/// A forloop queue on SQS.
pub struct SqsQueue {
    address: SqsAddress,
    client: Client,
    url: String,
    dead_url: Option<String>,
    lease: Duration,
    max_payload: usize,
    max_receive_count: Option<u32>,
    held: Mutex<HashMap<String, Held>>,
}

impl fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the client: its config holds the credentials provider.
        f.debug_struct("SqsQueue")
            .field("address", &self.address)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// An SQS client from the standard AWS chain: region from AWS_REGION /
/// AWS_DEFAULT_REGION / the profile (or the queue URL), credentials from
/// env, profile, web identity, ECS or IMDS, endpoint from
/// AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL.
pub async fn client(address: &SqsAddress) -> Result<Client, QueueError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &address.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(invalid(format!(
            "no AWS region for {address:?}: set AWS_REGION (or AWS_DEFAULT_REGION, or `region` in ~/.aws/config), or give the full queue URL"
        )));
    }
    Ok(Client::new(&config))
}

async fn queue_url(
    client: &Client,
    address: &SqsAddress,
    name: &str,
) -> Result<Option<String>, QueueError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url().map(str::to_string)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist()) =>
        {
            Ok(None)
        }
        Err(e) => Err(error("queue lookup", address, e)),
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(i32::MAX)
}

/// Whether SQS takes `text` as a message body as is.
fn is_sqs_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    })
}

/// The body and attributes a message travels as.
fn encode(message: &Message) -> Outgoing {
    let mut attributes = message.attributes.clone();
    let body = match std::str::from_utf8(&message.payload) {
        Ok(text) if is_sqs_text(text) && !text.is_empty() => text.to_string(),
        // SQS refuses an empty body.
        Ok("") => {
            attributes.insert(ENCODING_ATTRIBUTE.to_string(), "empty".to_string());
            "-".to_string()
        }
        _ => {
            attributes.insert(ENCODING_ATTRIBUTE.to_string(), "base64".to_string());
            aws_smithy_types::base64::encode(&message.payload)
        }
    };
    (body, attributes)
}

/// What SQS counts against `MaximumMessageSize`: body, attribute names, types and values.
fn wire_size(body: &str, attributes: &BTreeMap<String, String>) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>()
}

fn entry(
    id: usize,
    body: String,
    attributes: BTreeMap<String, String>,
) -> Result<SendMessageBatchRequestEntry, QueueError> {
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(body);
    for (key, value) in attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map_err(|e| invalid(format!("attribute `{key}`: {e}")))?;
        builder = builder.message_attributes(key, value);
    }
    builder
        .build()
        .map_err(|e| invalid(format!("message {id}: {e}")))
}

fn decode(body: &str, mut attributes: BTreeMap<String, String>) -> Message {
    let payload = match attributes.remove(ENCODING_ATTRIBUTE).as_deref() {
        Some("empty") => Bytes::new(),
        Some("base64") => aws_smithy_types::base64::decode(body)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::copy_from_slice(body.as_bytes())),
        _ => Bytes::copy_from_slice(body.as_bytes()),
    };
    Message {
        payload,
        attributes,
    }
}

fn message_of(received: &aws_sdk_sqs::types::Message) -> Message {
    let attributes = received
        .message_attributes()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    decode(received.body().unwrap_or_default(), attributes)
}

fn receive_count(received: &aws_sdk_sqs::types::Message) -> u32 {
    received
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Failed batch entries SQS will not take however often they are sent.
fn is_lost_lease(entry: &BatchResultErrorEntry) -> bool {
    matches!(
        entry.code(),
        "ReceiptHandleIsInvalid" | "MessageNotInflight" | "InvalidParameterValue"
    ) || entry
        .code()
        .starts_with("AWS.SimpleQueueService.MessageNotInflight")
}

impl SqsQueue {
    /// Create `NAME-dead` and `NAME` where missing (or update their
    /// attributes where present): `NAME`'s visibility timeout is
    /// `config.lease` and its redrive policy moves an item to `NAME-dead`
    /// after `config.max_attempts` receives (SQS allows 1 to 1,000). Both
    /// keep messages 14 days, SQS's longest.
    pub async fn create(address: &SqsAddress, config: &QueueConfig) -> Result<(), QueueError> {
        Self::create_with_client(&client(address).await?, address, config).await
    }

    /// [`SqsQueue::create`] with a client of the caller's.
    pub async fn create_with_client(
        client: &Client,
        address: &SqsAddress,
        config: &QueueConfig,
    ) -> Result<(), QueueError> {
        let dead_url = ensure_queue(client, address, &address.dead_name(), Vec::new()).await?;
        let arn = client
            .get_queue_attributes()
            .queue_url(&dead_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| error("dead queue lookup", address, e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| {
                QueueError::new(
                    QueueErrorKind::Other,
                    format!("SQS did not say the ARN of `{}`", address.dead_name()),
                )
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": config.max_attempts.clamp(1, 1000).to_string(),
        })
        .to_string();
        let attributes = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                seconds(config.lease).clamp(0, 43_200).to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ];
        ensure_queue(client, address, &address.name, attributes).await?;
        Ok(())
    }

    /// Delete `NAME` and `NAME-dead`, items included. (AWS lets a deleted
    /// name be made again only after 60 s.)
    pub async fn delete(address: &SqsAddress) -> Result<(), QueueError> {
        Self::delete_with_client(&client(address).await?, address).await
    }

    /// [`SqsQueue::delete`] with a client of the caller's.
    pub async fn delete_with_client(
        client: &Client,
        address: &SqsAddress,
    ) -> Result<(), QueueError> {
        for name in [address.name.clone(), address.dead_name()] {
            if let Some(url) = queue_url(client, address, &name).await? {
                client
                    .delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map_err(|e| error("queue deletion", address, e))?;
            }
        }
        Ok(())
    }

    /// Open an existing queue. `config.lease` is the visibility each pull
    /// asks for; the payload limit and dead-letter setup come from the queue.
    pub async fn connect(address: SqsAddress, config: &QueueConfig) -> Result<Self, QueueError> {
        let client = client(&address).await?;
        Self::with_client(address, client, config).await
    }

    /// Open an existing queue with a client of the caller's.
    pub async fn with_client(
        address: SqsAddress,
        client: Client,
        config: &QueueConfig,
    ) -> Result<Self, QueueError> {
        let url = match &address.url {
            Some(url) => url.clone(),
            None => queue_url(&client, &address, &address.name)
                .await?
                .ok_or_else(|| {
                    QueueError::new(
                        QueueErrorKind::NotFound,
                        format!(
                            "SQS queue `{}` does not exist; {}",
                            address.name,
                            address.create_hint()
                        ),
                    )
                })?,
        };
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| error("queue attributes", &address, e))?;
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        let max_payload = attributes
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_MAX_PAYLOAD);
        let redrive: Option<serde_json::Value> = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|text| serde_json::from_str(text).ok());
        let max_receive_count = redrive.as_ref().and_then(|r| match &r["maxReceiveCount"] {
            serde_json::Value::String(n) => n.parse().ok(),
            n => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        });
        let dead_name = redrive
            .as_ref()
            .and_then(|r| r["deadLetterTargetArn"].as_str())
            .and_then(|arn| arn.rsplit(':').next())
            .map(str::to_string)
            .unwrap_or_else(|| address.dead_name());
        let dead_url = queue_url(&client, &address, &dead_name).await?;
        Ok(Self {
            address,
            client,
            url,
            dead_url,
            lease: config.lease,
            max_payload,
            max_receive_count,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dead_url(&self) -> Result<&str, QueueError> {
        self.dead_url.as_deref().ok_or_else(|| {
            QueueError::new(
                QueueErrorKind::NotFound,
                format!(
                    "the dead-letter queue `{}` does not exist; {}",
                    self.address.dead_name(),
                    self.address.create_hint()
                ),
            )
        })
    }

    /// Send `messages` (already checked against the size limit) to `url`,
    /// in requests of at most 10 entries and `max_payload` bytes, all at once.
    async fn send_all(
        &self,
        url: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<MessageId>, QueueError> {
        let mut chunks: Vec<Vec<Indexed>> = Vec::new();
        let mut bytes = 0;
        for (index, (body, attributes)) in messages.into_iter().enumerate() {
            let size = wire_size(&body, &attributes);
            match chunks.last_mut() {
                Some(chunk) if chunk.len() < SQS_BATCH && bytes + size <= self.max_payload => {
                    bytes += size;
                    chunk.push((index, body, attributes));
                }
                _ => {
                    bytes = size;
                    chunks.push(vec![(index, body, attributes)]);
                }
            }
        }
        let total: usize = chunks.iter().map(Vec::len).sum();
        let results = join_all(chunks.into_iter().map(|chunk| self.send_chunk(url, chunk))).await;
        let mut ids: Vec<Option<MessageId>> = vec![None; total];
        let mut refused = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok((sent, bad)) => {
                    for (index, id) in sent {
                        ids[index] = Some(id);
                    }
                    refused.extend(bad);
                }
                Err(e) => failure = Some(e),
            }
        }
        if refused.is_empty() && failure.is_none() {
            return Ok(ids.into_iter().flatten().collect());
        }
        let went = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_some())
            .map(|(i, _)| i.to_string())
            .collect::<Vec<_>>();
        refused.sort_by_key(|(index, _)| *index);
        let refused_text = refused
            .iter()
            .map(|(index, why)| format!("item {index}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        let went_text = if went.is_empty() {
            "none of this batch went in".to_string()
        } else {
            format!("items {} of this batch went in", went.join(", "))
        };
        let (kind, cause) = match failure {
            Some(e) if refused.is_empty() => (e.kind(), e.to_string()),
            Some(e) => (e.kind(), format!("{refused_text}; {e}")),
            None => (
                QueueErrorKind::Invalid,
                format!("SQS refused {refused_text}"),
            ),
        };
        Err(QueueError::new(
            kind,
            format!("publish to {:?}: {cause}; {went_text}", self.address),
        ))
    }

    /// One SendMessageBatch, with failed server-side entries tried again.
    /// Returns what went in, by batch index, and what SQS refused, with why.
    async fn send_chunk(
        &self,
        url: &str,
        chunk: Vec<Indexed>,
    ) -> Result<(Vec<(usize, MessageId)>, Vec<(usize, String)>), QueueError> {
        let mut pending = chunk;
        let mut sent = Vec::new();
        let mut refused = Vec::new();
        for round in 0..3u32 {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let entries = pending
                .iter()
                .map(|(index, body, attributes)| entry(*index, body.clone(), attributes.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("publish", &self.address, e))?;
            for ok in out.successful() {
                if let Ok(index) = ok.id().parse::<usize>() {
                    sent.push((index, Arc::from(ok.message_id())));
                }
            }
            let mut retry = Vec::new();
            for failed in out.failed() {
                let Ok(index) = failed.id().parse::<usize>() else {
                    continue;
                };
                let why = format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                );
                if failed.sender_fault() || round == 2 {
                    refused.push((index, why));
                } else {
                    retry.push(index);
                }
            }
            pending.retain(|(index, _, _)| retry.contains(index));
        }
        Ok((sent, refused))
    }

    /// One ReceiveMessage of up to 10 from `url`.
    async fn receive(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let wait_seconds = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.clamp(1, SQS_BATCH)).unwrap_or(10))
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(seconds(visibility).clamp(0, 43_200))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| error("receive", &self.address, e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// DeleteMessageBatch in tens, all at once; returns the handles SQS
    /// called invalid.
    async fn delete_handles(
        &self,
        url: &str,
        handles: &[String],
    ) -> Result<Vec<String>, QueueError> {
        in_batches(handles, |chunk| async move {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("delete", &self.address, e))?;
            let mut lost = Vec::new();
            let mut retry = Vec::new();
            for failed in out.failed() {
                let Some(handle) = failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                else {
                    continue;
                };
                if is_lost_lease(failed) {
                    lost.push(handle.clone());
                } else {
                    retry.push(handle.clone());
                }
            }
            for handle in retry {
                // One more try, alone; a second server fault is an error.
                self.client
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(&handle)
                    .send()
                    .await
                    .map_err(|e| error("delete", &self.address, e))?;
            }
            Ok(lost)
        })
        .await
    }

    /// ChangeMessageVisibilityBatch in tens, all at once, each handle with
    /// its own timeout; returns the handles whose lease is gone.
    async fn change_visibility(
        &self,
        url: &str,
        changes: &[(String, i32)],
    ) -> Result<Vec<String>, QueueError> {
        in_batches(changes, |chunk| async move {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (handle, timeout))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(*timeout)
                        .build()
                        .map_err(|e| invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("visibility change", &self.address, e))?;
            let mut lost = Vec::new();
            for failed in out.failed() {
                let Some((handle, timeout)) =
                    failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                else {
                    continue;
                };
                if is_lost_lease(failed) {
                    lost.push(handle.clone());
                } else {
                    self.client
                        .change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .visibility_timeout(*timeout)
                        .send()
                        .await
                        .map_err(|e| error("visibility change", &self.address, e))?;
                }
            }
            Ok(lost)
        })
        .await
    }

    /// Up to `limit` messages of the dead queue, held for `hold`.
    async fn receive_dead(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let url = self.dead_url()?.to_string();
        let mut out = Vec::new();
        while out.len() < limit {
            let got = self
                .receive(
                    &url,
                    (limit - out.len()).min(SQS_BATCH),
                    Duration::from_secs(1),
                    hold,
                )
                .await?;
            if got.is_empty() {
                break;
            }
            out.extend(got);
        }
        Ok(out)
    }

    async fn counts(&self, url: &str) -> Result<(u64, u64, u64), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| error("queue attributes", &self.address, e))?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

/// Make the queue `name` with `attributes`, or set them on it if it exists
/// with others; returns its URL.
async fn ensure_queue(
    client: &Client,
    address: &SqsAddress,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, QueueError> {
    let mut all = vec![(
        QueueAttributeName::MessageRetentionPeriod,
        RETENTION_SECONDS.to_string(),
    )];
    all.extend(attributes);
    let mut create = client.create_queue().queue_name(name);
    for (key, value) in &all {
        create = create.attributes(key.clone(), value.clone());
    }
    match create.send().await {
        Ok(out) => out.queue_url().map(str::to_string).ok_or_else(|| {
            QueueError::new(
                QueueErrorKind::Other,
                format!("SQS did not say the URL of `{name}`"),
            )
        }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists()) =>
        {
            let url = queue_url(client, address, name).await?.ok_or_else(|| {
                QueueError::new(
                    QueueErrorKind::Other,
                    format!("`{name}` exists and does not"),
                )
            })?;
            let mut set = client.set_queue_attributes().queue_url(&url);
            for (key, value) in all {
                set = set.attributes(key, value);
            }
            set.send()
                .await
                .map_err(|e| error("queue update", address, e))?;
            Ok(url)
        }
        Err(e) => Err(error("queue creation", address, e)),
    }
}

/// Run `per_batch` on every batch of ten at once, and gather the receipt
/// handles whose lease is gone from all of them.
async fn in_batches<'a, T, F, Fut>(items: &'a [T], per_batch: F) -> Result<Vec<String>, QueueError>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, QueueError>>,
{
    let mut lost = Vec::new();
    for result in join_all(items.chunks(SQS_BATCH).map(per_batch)).await {
        lost.extend(result?);
    }
    Ok(lost)
}

fn handles(tokens: &[LeaseToken]) -> (Vec<(String, LeaseToken)>, Vec<LeaseToken>) {
    let mut out = Vec::with_capacity(tokens.len());
    let mut lost = Vec::new();
    for token in tokens {
        match token.as_text() {
            Some(handle) => out.push((handle.to_string(), token.clone())),
            None => lost.push(token.clone()),
        }
    }
    (out, lost)
}

fn lost_tokens(pairs: &[(String, LeaseToken)], lost_handles: &[String]) -> Vec<LeaseToken> {
    pairs
        .iter()
        .filter(|(handle, _)| lost_handles.contains(handle))
        .map(|(_, token)| token.clone())
        .collect()
}

#[async_trait]
impl WorkQueue for SqsQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: self.max_payload,
            max_batch: MAX_BATCH,
            max_deadline: MAX_VISIBILITY,
            min_deadline: Duration::from_secs(1),
            native_dead_letter: self.max_receive_count.is_some() && self.dead_url.is_some(),
            delayed_nack: true,
            exact_backlog: false,
            backlog_staleness: self.address.staleness,
        }
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        let encoded: Vec<_> = batch.iter().map(encode).collect();
        if let Some((index, size)) = encoded
            .iter()
            .map(|(body, attributes)| wire_size(body, attributes))
            .enumerate()
            .find(|(_, size)| *size > self.max_payload)
        {
            return Err(QueueError::payload_too_large(index, size, self.max_payload));
        }
        if encoded.is_empty() {
            return Ok(Vec::new());
        }
        self.send_all(&self.url, encoded).await
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let sent = Instant::now();
        // One long poll; short polls for the rest, so a wide worker fills
        // its slots in one round trip without waiting on empty polls.
        let calls = (0..max.div_ceil(SQS_BATCH)).map(|i| {
            let n = (max - i * SQS_BATCH).min(SQS_BATCH);
            let wait = if i == 0 { wait } else { Duration::ZERO };
            self.receive(&self.url, n, wait, self.lease)
        });
        let mut received = Vec::new();
        let mut failure = None;
        for result in join_all(calls).await {
            match result {
                Ok(messages) => received.extend(messages),
                Err(e) => failure = Some(e),
            }
        }
        if received.is_empty()
            && let Some(e) = failure
        {
            return Err(e);
        }
        let deadline = sent + self.lease;
        let mut held = self.held();
        Ok(received
            .into_iter()
            .filter_map(|m| {
                let handle = m.receipt_handle()?.to_string();
                let message = message_of(&m);
                let attempt = receive_count(&m);
                held.insert(
                    handle.clone(),
                    Held {
                        message: message.clone(),
                        attempt,
                        received: sent,
                    },
                );
                Some(Delivery {
                    id: Arc::from(m.message_id().unwrap_or_default()),
                    payload: message.payload,
                    attributes: message.attributes,
                    token: LeaseToken::new(handle),
                    attempt,
                    deadline,
                })
            })
            .collect())
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let (pairs, mut lost) = handles(tokens);
        {
            let mut held = self.held();
            for (handle, _) in &pairs {
                held.remove(handle);
            }
        }
        let list: Vec<String> = pairs.iter().map(|(h, _)| h.clone()).collect();
        let gone = self.delete_handles(&self.url, &list).await?;
        lost.extend(lost_tokens(&pairs, &gone));
        Ok(LeaseReport { lost })
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let (pairs, mut lost) = handles(tokens);
        let changes: Vec<(String, i32)> = {
            let mut held = self.held();
            pairs
                .iter()
                .map(|(handle, _)| {
                    // What is left of the 12 h from the receive bounds the delay.
                    let left = held.remove(handle).map_or(MAX_VISIBILITY, |h| {
                        MAX_VISIBILITY.saturating_sub(h.received.elapsed())
                    });
                    (handle.clone(), seconds(delay.min(left)).clamp(0, 43_200))
                })
                .collect()
        };
        let gone = self.change_visibility(&self.url, &changes).await?;
        lost.extend(lost_tokens(&pairs, &gone));
        Ok(LeaseReport { lost })
    }

    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let (pairs, mut lost) = handles(tokens);
        let mut changes = Vec::with_capacity(pairs.len());
        let mut asked = Vec::with_capacity(pairs.len());
        {
            let held = self.held();
            for (handle, token) in &pairs {
                let left = held.get(handle).map_or(MAX_VISIBILITY, |h| {
                    MAX_VISIBILITY.saturating_sub(h.received.elapsed())
                });
                if left < Duration::from_secs(1) {
                    // SQS's 12 h cap: this lease cannot be kept any longer.
                    lost.push(token.clone());
                } else {
                    changes.push((handle.clone(), seconds(lease.min(left)).clamp(1, 43_200)));
                    asked.push((handle.clone(), token.clone()));
                }
            }
        }
        let gone = self.change_visibility(&self.url, &changes).await?;
        lost.extend(lost_tokens(&asked, &gone));
        Ok(LeaseReport { lost })
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let (pairs, mut lost) = handles(tokens);
        let dead_url = self.dead_url()?.to_string();
        let reason: String = reason
            .chars()
            .map(|c| {
                if is_sqs_text(c.encode_utf8(&mut [0; 4])) {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let mut letters = Vec::new();
        let mut settled = Vec::new();
        {
            let held = self.held();
            for (handle, token) in &pairs {
                match held.get(handle) {
                    Some(h) => {
                        let (body, mut attributes) = encode(&h.message);
                        attributes.insert(REASON_ATTRIBUTE.to_string(), reason.clone());
                        attributes.insert(ATTEMPTS_ATTRIBUTE.to_string(), h.attempt.to_string());
                        letters.push((body, attributes));
                        settled.push((handle.clone(), token.clone()));
                    }
                    None => lost.push(token.clone()),
                }
            }
        }
        if !letters.is_empty() {
            self.send_all(&dead_url, letters).await?;
            {
                let mut held = self.held();
                for (handle, _) in &settled {
                    held.remove(handle);
                }
            }
            let list: Vec<String> = settled.iter().map(|(h, _)| h.clone()).collect();
            let gone = self.delete_handles(&self.url, &list).await?;
            lost.extend(lost_tokens(&settled, &gone));
        }
        Ok(LeaseReport { lost })
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let main = self.counts(&self.url);
        let dead = async {
            match &self.dead_url {
                Some(url) => self
                    .counts(url)
                    .await
                    .map(|(a, b, c)| Count::Approximate(a + b + c)),
                None => Ok(Count::Exact(0)),
            }
        };
        let (main, dead) = tokio::join!(main, dead);
        let (visible, not_visible, delayed) = main?;
        Ok(Backlog {
            ready: Count::Approximate(visible + delayed),
            in_flight: Count::Approximate(not_visible),
            dead: dead?,
            age: Duration::ZERO,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let received = self.receive_dead(limit, Duration::from_secs(30)).await?;
        // Looking must not consume: give every one back at once.
        let changes: Vec<(String, i32)> = received
            .iter()
            .filter_map(|m| Some((m.receipt_handle()?.to_string(), 0)))
            .collect();
        self.change_visibility(self.dead_url()?, &changes).await?;
        Ok(received
            .iter()
            .map(|m| {
                let mut message = message_of(m);
                let reason = message.attributes.remove(REASON_ATTRIBUTE);
                let attempts = message
                    .attributes
                    .remove(ATTEMPTS_ATTRIBUTE)
                    .and_then(|n| n.parse().ok())
                    .or(self.max_receive_count)
                    .unwrap_or(0);
                DeadLetter {
                    id: Arc::from(m.message_id().unwrap_or_default()),
                    attempts,
                    reason: reason.unwrap_or_else(|| {
                        format!("received {attempts} times without an ack (SQS redrive policy)")
                    }),
                    message,
                }
            })
            .collect())
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        let dead_url = self.dead_url()?.to_string();
        let mut total = 0;
        loop {
            let received = self
                .receive_dead(MAX_BATCH, Duration::from_secs(60))
                .await?;
            if received.is_empty() {
                return Ok(total);
            }
            let letters: Vec<_> = received
                .iter()
                .map(|m| {
                    let mut message = message_of(m);
                    message.attributes.remove(REASON_ATTRIBUTE);
                    message.attributes.remove(ATTEMPTS_ATTRIBUTE);
                    encode(&message)
                })
                .collect();
            self.send_all(&self.url, letters).await?;
            let list: Vec<String> = received
                .iter()
                .filter_map(|m| m.receipt_handle().map(str::to_string))
                .collect();
            self.delete_handles(&dead_url, &list).await?;
            total += received.len() as u64;
        }
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        let dead_url = self.dead_url()?.to_string();
        let mut total = 0;
        loop {
            let received = self
                .receive_dead(MAX_BATCH, Duration::from_secs(60))
                .await?;
            if received.is_empty() {
                return Ok(total);
            }
            let list: Vec<String> = received
                .iter()
                .filter_map(|m| m.receipt_handle().map(str::to_string))
                .collect();
            self.delete_handles(&dead_url, &list).await?;
            total += received.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_named() {
        let a = SqsAddress::resolve(Some("sqs://videos"), "ignored").unwrap();
        assert_eq!((a.name.as_str(), a.url.as_deref()), ("videos", None));
        assert_eq!(a.dead_name(), "videos-dead");
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs_1";
        let b = SqsAddress::resolve(Some(url), "ignored").unwrap();
        assert_eq!(b.name, "jobs_1");
        assert_eq!(b.url.as_deref(), Some(url));
        assert_eq!(b.region.as_deref(), Some("eu-west-1"));
        let c = SqsAddress::resolve(None, "from-name").unwrap();
        assert_eq!(c.name, "from-name");
        for bad in [
            "sqs://",
            "https://sqs.x.amazonaws.com/only",
            "redis://x/y",
            "sqs://a b",
        ] {
            let e = SqsAddress::resolve(Some(bad), "n").unwrap_err().to_string();
            assert!(e.contains('`'), "{e}");
        }
        let e = SqsAddress::resolve(Some("sqs://q.fifo"), "n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO"), "{e}");
        let long = "x".repeat(76);
        assert!(
            SqsAddress::resolve(None, &long).is_err(),
            "no room for -dead"
        );
    }

    #[test]
    fn text_travels_plain_and_other_bytes_as_base64() {
        let plain = Message::new("naïve café ☕ $(x)\ttab");
        let (body, attributes) = encode(&plain);
        assert_eq!(body, "naïve café ☕ $(x)\ttab");
        assert!(attributes.is_empty());
        let binary = Message::new(b"a\x00b\xff".to_vec()).with_attribute("k", "v");
        let (body, attributes) = encode(&binary);
        assert_ne!(body.as_bytes(), b"a\x00b\xff");
        assert_eq!(
            attributes.get(ENCODING_ATTRIBUTE).map(String::as_str),
            Some("base64")
        );
        assert_eq!(decode(&body, attributes), binary);
    }

    #[test]
    fn wire_size_counts_attributes() {
        let mut attributes = BTreeMap::new();
        assert_eq!(wire_size("abc", &attributes), 3);
        attributes.insert("k".to_string(), "vv".to_string());
        assert_eq!(wire_size("abc", &attributes), 3 + 1 + 6 + 2);
    }

    #[test]
    fn error_context_loses_its_debug_dump() {
        assert_eq!(
            without_debug(
                "dispatch failure: no providers (see docs) (DispatchFailure(DispatchFailure { x }))"
            ),
            "dispatch failure: no providers (see docs)"
        );
        assert_eq!(without_debug("plain"), "plain");
    }

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::ZERO), 0);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(10_500)), 11);
    }

    #[test]
    fn debug_shows_the_address_only() {
        let a = SqsAddress::resolve(Some("sqs://videos"), "").unwrap();
        assert_eq!(format!("{a:?}"), "sqs://videos");
    }
}
