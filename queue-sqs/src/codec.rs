//! Items as SQS carries them: a body that is valid SQS text travels as is
//! (any SQS client reads it), other bytes as base64 marked by
//! [`ENCODING_ATTRIBUTE`]; attributes as `String` message attributes.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use bytes::Bytes;
use forloop_core::{Item, QueueError};

use crate::error::invalid;

/// The attribute that marks a base64-encoded body (`base64`).
pub const ENCODING_ATTRIBUTE: &str = "forloop-encoding";

/// A message on its way out: body and attributes as SQS takes them.
pub(crate) type Outgoing = (String, BTreeMap<String, String>);

/// Whether SQS takes `text` as a message body as is.
pub(crate) fn is_sqs_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    })
}

/// The body and attributes a message travels as.
pub(crate) fn encode(message: &Item) -> Outgoing {
    let mut attributes = message.wire_attributes().into_owned();
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
pub(crate) fn wire_size(body: &str, attributes: &BTreeMap<String, String>) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + "String".len() + v.len())
            .sum::<usize>()
}

/// One entry of a SendMessageBatch.
pub(crate) fn entry(
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

/// The item a body and its attributes carry (its job's name shared with
/// `known`, [`Item::from_wire`]).
pub(crate) fn decode(
    body: &str,
    mut attributes: BTreeMap<String, String>,
    known: &mut Option<Arc<str>>,
) -> Item {
    let payload = match attributes.remove(ENCODING_ATTRIBUTE).as_deref() {
        Some("empty") => Bytes::new(),
        Some("base64") => aws_smithy_types::base64::decode(body)
            .map(Bytes::from)
            .unwrap_or_else(|_| Bytes::copy_from_slice(body.as_bytes())),
        _ => Bytes::copy_from_slice(body.as_bytes()),
    };
    Item::from_wire(payload, attributes, known)
}

/// The item a received message carries.
pub(crate) fn message_of(
    received: &aws_sdk_sqs::types::Message,
    known: &mut Option<Arc<str>>,
) -> Item {
    let attributes = received
        .message_attributes()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    decode(received.body().unwrap_or_default(), attributes, known)
}

/// The delivery attempt: SQS's receive count.
pub(crate) fn receive_count(received: &aws_sdk_sqs::types::Message) -> u32 {
    received
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `text` with every character SQS would refuse in an attribute as `?`.
pub(crate) fn sqs_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_sqs_text(c.encode_utf8(&mut [0; 4])) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_travels_plain_and_other_bytes_as_base64() {
        let plain = Item::new("naïve café ☕ $(x)\ttab");
        let (body, attributes) = encode(&plain);
        assert_eq!(body, "naïve café ☕ $(x)\ttab");
        assert!(attributes.is_empty());
        let binary = Item::new(b"a\x00b\xff".to_vec()).with_attribute("k", "v");
        let (body, attributes) = encode(&binary);
        assert_ne!(body.as_bytes(), b"a\x00b\xff");
        assert_eq!(
            attributes.get(ENCODING_ATTRIBUTE).map(String::as_str),
            Some("base64")
        );
        assert_eq!(decode(&body, attributes, &mut None), binary);
        let (body, attributes) = encode(&Item::new(""));
        assert_eq!(decode(&body, attributes, &mut None), Item::new(""));
    }

    #[test]
    fn a_job_travels_as_its_two_attributes() {
        let item = Item::new("x")
            .with_attribute("k", "v")
            .with_job(forloop_core::job::JobItem::new("j", 3));
        let (body, attributes) = encode(&item);
        let keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
        assert_eq!(keys, ["forloop-job", "forloop-seq", "k"]);
        assert_eq!(decode(&body, attributes, &mut None), item);
    }

    #[test]
    fn wire_size_counts_attributes() {
        let mut attributes = BTreeMap::new();
        assert_eq!(wire_size("abc", &attributes), 3);
        attributes.insert("k".to_string(), "vv".to_string());
        assert_eq!(wire_size("abc", &attributes), 3 + 1 + 6 + 2);
    }

    #[test]
    fn refused_characters_become_question_marks() {
        assert_eq!(sqs_text("exit 1\u{0}\u{FFFF} ok"), "exit 1?? ok");
    }
}
