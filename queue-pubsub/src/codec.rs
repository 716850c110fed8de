//! Items as Pub/Sub carries them: the payload as the message's data, the
//! attributes as its attributes, unchanged.

use std::collections::BTreeMap;

use bytes::Bytes;
use forloop_core::Message;
use gcloud_googleapis::pubsub::v1::PubsubMessage;

/// The message an item is published as.
pub(crate) fn to_pubsub(message: &Message) -> PubsubMessage {
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

/// The item a received message carries, and its id.
pub(crate) fn from_pubsub(message: PubsubMessage) -> (Message, String) {
    let id = message.message_id.clone();
    (
        Message {
            payload: Bytes::from(message.data),
            attributes: message.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        },
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_with_their_attributes() {
        let item = Message::new(b"a\x00b".to_vec()).with_attribute("k", "v");
        let mut sent = to_pubsub(&item);
        sent.message_id = "9".to_string();
        assert_eq!(from_pubsub(sent), (item, "9".to_string()));
    }
}
