//! Items and replies as the Lua scripts speak them: attributes as one
//! netstring-like blob, an item with attributes as one stored value (the
//! envelope), replies as Redis values.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use redis::Value;

/// Attributes as `len:key len:value ...` (netstring-like, any bytes allowed).
pub(crate) fn encode_attributes(attributes: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in attributes {
        for part in [key, value] {
            out.extend_from_slice(part.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// What starts a stored value that is an envelope: [`pack`].
pub(crate) const ENVELOPE: &[u8] = b"\xff\x00FLA1";

/// The value an item is stored as, in the `payload` hash: the payload
/// itself when it has no attributes, else the envelope: [`ENVELOPE`], the
/// encoded attributes' length, `:`, the attributes, the payload (also for
/// a bare payload that happens to start like an envelope). One hash entry
/// per item rather than one in `payload` and one in `attrs`: a job's items
/// all carry attributes, and the second entry cost the server about as
/// much as the job's receipt (docs/BENCHMARKS.md). `common.lua` opens it
/// too (`open_value`).
pub(crate) fn pack<'a>(payload: &'a [u8], attributes: &[u8]) -> Cow<'a, [u8]> {
    if attributes.is_empty() && !payload.starts_with(ENVELOPE) {
        return Cow::Borrowed(payload);
    }
    let length = attributes.len().to_string();
    let mut out =
        Vec::with_capacity(ENVELOPE.len() + length.len() + 1 + attributes.len() + payload.len());
    out.extend_from_slice(ENVELOPE);
    out.extend_from_slice(length.as_bytes());
    out.push(b':');
    out.extend_from_slice(attributes);
    out.extend_from_slice(payload);
    Cow::Owned(out)
}

/// A stored value's payload and, for an envelope, its encoded attributes
/// (`None`: a bare payload, whose attributes, from before envelopes, may be
/// in the `attrs` hash). Shares `value`'s bytes.
pub(crate) fn unpack(value: Bytes) -> (Bytes, Option<Bytes>) {
    let Some(rest) = value.strip_prefix(ENVELOPE) else {
        return (value, None);
    };
    let parsed = rest.iter().position(|&b| b == b':').and_then(|colon| {
        let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
        let start = ENVELOPE.len() + colon + 1;
        (start + len <= value.len()).then_some((start, start + len))
    });
    match parsed {
        Some((start, end)) => (value.slice(end..), Some(value.slice(start..end))),
        None => (value, None),
    }
}

/// The attributes [`encode_attributes`] wrote.
pub(crate) fn decode_attributes(mut data: &[u8]) -> BTreeMap<String, String> {
    let mut parts = Vec::new();
    while let Some(colon) = data.iter().position(|&b| b == b':') {
        let Some(len) = std::str::from_utf8(&data[..colon])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        else {
            break;
        };
        let Some(part) = data.get(colon + 1..colon + 1 + len) else {
            break;
        };
        parts.push(String::from_utf8_lossy(part).into_owned());
        data = &data[colon + 1 + len..];
    }
    let mut map = BTreeMap::new();
    let mut iter = parts.into_iter();
    while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
        map.insert(key, value);
    }
    map
}

/// A reply as bytes (empty for nil).
pub(crate) fn as_bytes(value: &Value) -> Bytes {
    match value {
        Value::BulkString(bytes) => Bytes::copy_from_slice(bytes),
        Value::SimpleString(text) => Bytes::copy_from_slice(text.as_bytes()),
        _ => Bytes::new(),
    }
}

/// A reply as a count.
pub(crate) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// A reply as a signed number (milliseconds).
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_a_bare_payload_stays_bare() {
        let attributes = encode_attributes(
            &[("forloop-job", "j"), ("k", "v:1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        for payload in [
            &b"item 1"[..],
            b"",
            b"\xff\x00FLA1 looks like one",
            b"12:ab",
        ] {
            let packed = pack(payload, &attributes).into_owned();
            let (back, attrs) = unpack(Bytes::from(packed));
            assert_eq!(
                (&back[..], attrs.as_deref()),
                (payload, Some(&attributes[..]))
            );
            let bare = pack(payload, b"").into_owned();
            let (back, attrs) = unpack(Bytes::from(bare));
            assert_eq!(&back[..], payload);
            assert_eq!(attrs.is_some(), payload.starts_with(ENVELOPE));
        }
        assert!(matches!(pack(b"plain", b""), Cow::Borrowed(_)));
        // A value from before envelopes, or a broken one, is a bare payload.
        let (back, attrs) = unpack(Bytes::from_static(b"\xff\x00FLA1x:"));
        assert_eq!((&back[..], attrs), (&b"\xff\x00FLA1x:"[..], None));
    }

    #[test]
    fn attributes_round_trip_any_text() {
        let attributes: BTreeMap<String, String> = [("a:b", "1:2"), ("", "x"), ("ключ", "знач 3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            decode_attributes(&encode_attributes(&attributes)),
            attributes
        );
        assert!(encode_attributes(&BTreeMap::new()).is_empty());
    }
}
