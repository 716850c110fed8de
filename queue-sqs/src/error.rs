//! SQS failures as [`QueueError`]s that say what went wrong and what to do:
//! a missing queue names the create command, refused credentials name where
//! they were looked for, a denied call names the permissions it needs.

use std::fmt;

use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use forloop_core::{QueueError, QueueErrorKind};

use crate::SqsAddress;

/// An error for an address or argument the caller must change.
pub(crate) fn invalid(message: String) -> QueueError {
    QueueError::new(QueueErrorKind::Invalid, message)
}

/// Where credentials are looked for, for error messages.
const CREDENTIAL_SOURCES: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), \
     the profile AWS_PROFILE (else `default`) in ~/.aws/credentials and ~/.aws/config, \
     web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, as EKS IRSA sets them), \
     ECS container credentials, and EC2 instance metadata; this build has no SSO or credential_process";

/// A failed SQS call `what` on `address`, classified by the error code.
pub(crate) fn error<E, R>(what: &str, address: &SqsAddress, err: SdkError<E, R>) -> QueueError
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
