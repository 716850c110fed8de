//! Items as Pub/Sub carries them: the payload as the message's data, the
//! attributes as its attributes, unchanged; and Pub/Sub's limits on a
//! message and a request, with items cut into requests within them.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use forloop_core::Item;
use forloop_core::kit::chunks_within;
use gcloud_googleapis::pubsub::v1::PubsubMessage;

/// Largest item, in bytes (Pub/Sub's limit is 10 MB per message).
pub const MAX_PAYLOAD: usize = 10_000_000;
/// Most items in one publish call (Pub/Sub's per-request limit).
pub const MAX_BATCH: usize = 1000;
/// Pub/Sub's limit on one publish request's size, less room for framing.
const MAX_REQUEST_BYTES: usize = 9_000_000;

/// Messages cut into publish requests within Pub/Sub's count and byte limits.
pub(crate) fn publish_chunks(messages: &[Item]) -> Vec<Vec<PubsubMessage>> {
    chunks_within(
        messages.iter().map(to_pubsub),
        MAX_BATCH,
        MAX_REQUEST_BYTES,
        |m| {
            m.data.len()
                + m.attributes
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 8)
                    .sum::<usize>()
                + 16
        },
    )
}

/// The message an item is published as.
pub(crate) fn to_pubsub(message: &Item) -> PubsubMessage {
    PubsubMessage {
        data: message.payload.to_vec(),
        attributes: message
            .wire_attributes()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..PubsubMessage::default()
    }
}

/// The item a received message carries (its job's name shared with
/// `known`, [`Item::from_wire`]), and its id.
pub(crate) fn from_pubsub(message: PubsubMessage, known: &mut Option<Arc<str>>) -> (Item, String) {
    let id = message.message_id.clone();
    (
        Item::from_wire(
            Bytes::from(message.data),
            message.attributes.into_iter().collect::<BTreeMap<_, _>>(),
            known,
        ),
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_with_their_attributes() {
        let item = Item::new(b"a\x00b".to_vec()).with_attribute("k", "v");
        let mut sent = to_pubsub(&item);
        sent.message_id = "9".to_string();
        assert_eq!(from_pubsub(sent, &mut None), (item, "9".to_string()));
    }

    #[test]
    fn a_job_travels_as_its_two_attributes() {
        let item = Item::new("x")
            .with_attribute("k", "v")
            .with_job(forloop_core::job::JobItem::new("j", 3));
        let sent = to_pubsub(&item);
        let mut keys: Vec<&str> = sent.attributes.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["forloop-job", "forloop-seq", "k"]);
        assert_eq!(from_pubsub(sent, &mut None).0, item);
    }
}
