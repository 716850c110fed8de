//! Connecting: the client config (emulator, or Application Default
//! Credentials with the `auth` feature), the client and the raw subscriber
//! channel the bounded pulls use.

use forloop_core::{QueueError, QueueErrorKind};
use gcloud_gax::conn::{Channel, Environment};
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriber;
use gcloud_pubsub::apiv1::conn_pool::ConnectionManager;
use gcloud_pubsub::client::{Client, ClientConfig};

use crate::PubsubAddress;
use crate::codec::MAX_PAYLOAD;
use crate::error::unreachable;

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

/// A client, and the raw subscriber channel the bounded pulls need, from one
/// config (so credentials are looked up once).
pub(crate) async fn connect_all(
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
