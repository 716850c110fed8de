//! Items and replies as the Lua scripts speak them: attributes as one
//! netstring-like blob, replies as Redis values.

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
