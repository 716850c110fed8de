//! The SQS client, from the standard AWS chain, and queue lookup by name.

use aws_config::BehaviorVersion;
use aws_sdk_sqs::Client;
use forloop_core::QueueError;

use crate::SqsAddress;
use crate::error::{error, invalid};

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

/// The URL of the queue `name`, or `None` if it does not exist.
pub(crate) async fn queue_url(
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
