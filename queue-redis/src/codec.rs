//! Items and replies as the Lua scripts speak them: attributes as one
//! netstring-like blob, an item with attributes as one stored value (the
//! envelope), replies as Redis values.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use forloop_core::Item;
use forloop_core::job::JobItem;
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

/// What starts the envelope of an item of a job: [`pack`].
pub(crate) const JOB_ENVELOPE: &[u8] = b"\xff\x00FLJ1";

/// The value an item is stored as, in the `payload` hash: the payload
/// itself when it has no job and no attributes; else an envelope, one of
///
/// - [`ENVELOPE`], the encoded attributes' length, `:`, the attributes,
///   the payload;
/// - [`JOB_ENVELOPE`], the seq, `:`, the job name's length, `:`, the job
///   name, the encoded attributes' length, `:`, the attributes (the job's
///   two excluded), the payload.
///
/// A bare payload that happens to start like an envelope is stored in
/// one. One hash entry per item rather than one in `payload` and one in
/// `attrs`: a job's items all carry their job, and the second entry cost
/// the server about as much as the job's receipt. The job has a form of
/// its own, not its two attributes, because every byte of an item passes
/// through Lua twice (publish, pull) and Lua hashes each string whole
/// (docs/BENCHMARKS.md). `common.lua` opens both (`open_value`).
pub(crate) fn pack<'a>(
    payload: &'a [u8],
    job: Option<&JobItem>,
    attributes: &[u8],
) -> Cow<'a, [u8]> {
    let looks_packed = payload.starts_with(ENVELOPE) || payload.starts_with(JOB_ENVELOPE);
    if job.is_none() && attributes.is_empty() && !looks_packed {
        return Cow::Borrowed(payload);
    }
    let length = attributes.len().to_string();
    let mut out = Vec::with_capacity(40 + length.len() + attributes.len() + payload.len());
    match job {
        Some(job) => {
            out.extend_from_slice(JOB_ENVELOPE);
            let _ = write!(out, "{}:{}:{}", job.seq, job.job.len(), job.job);
        }
        None => out.extend_from_slice(ENVELOPE),
    }
    out.extend_from_slice(length.as_bytes());
    out.push(b':');
    out.extend_from_slice(attributes);
    out.extend_from_slice(payload);
    Cow::Owned(out)
}

/// A stored value, opened.
#[derive(Debug, PartialEq)]
pub(crate) struct Stored {
    /// The item's payload.
    pub(crate) payload: Bytes,
    /// Its encoded attributes, when the value is an envelope (`None`: a
    /// bare payload, whose attributes, from before envelopes, may be in
    /// the `attrs` hash).
    pub(crate) attributes: Option<Bytes>,
    /// Its seq and job name, when the value is a job's envelope.
    pub(crate) job: Option<(u64, Bytes)>,
}

/// Open a stored value ([`pack`]); a value that does not parse is a bare
/// payload. Shares `value`'s bytes.
pub(crate) fn unpack(value: Bytes) -> Stored {
    let bare = |value| Stored {
        payload: value,
        attributes: None,
        job: None,
    };
    let mut at;
    let mut job = None;
    if value.starts_with(ENVELOPE) {
        at = ENVELOPE.len();
    } else if value.starts_with(JOB_ENVELOPE) {
        at = JOB_ENVELOPE.len();
        let Some(seq) = number(&value, &mut at) else {
            return bare(value);
        };
        let Some(name) = counted(&value, &mut at) else {
            return bare(value);
        };
        job = Some((seq, name));
    } else {
        return bare(value);
    }
    let Some(attributes) = counted(&value, &mut at) else {
        return bare(value);
    };
    Stored {
        payload: value.slice(at..),
        attributes: Some(attributes),
        job,
    }
}

/// The decimal number at `value[*at..]` up to a `:`; moves `at` past it.
fn number(value: &[u8], at: &mut usize) -> Option<u64> {
    let rest = value.get(*at..)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let n = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    *at += colon + 1;
    Some(n)
}

/// The `LEN:BYTES` at `value[*at..]`; moves `at` past it.
fn counted(value: &Bytes, at: &mut usize) -> Option<Bytes> {
    let mut end = *at;
    let len = usize::try_from(number(value, &mut end)?).ok()?;
    let bytes = value.get(end..end.checked_add(len)?)?;
    let bytes = value.slice_ref(bytes);
    *at = end + len;
    Some(bytes)
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

/// The message a stored value holds ([`pack`]), its attributes
/// from `attrs` (the `attrs` hash's entry, for an item stored before
/// envelopes) when the value is bare. The job's name is shared with
/// `known_job` ([`JobItem::shared`]).
pub(crate) fn open(value: Bytes, attrs: &Value, known_job: &mut Option<Arc<str>>) -> Item {
    let stored = unpack(value);
    let encoded = stored.attributes.unwrap_or_else(|| as_bytes(attrs));
    let attributes = decode_attributes(&encoded);
    let mut item = Item::from_wire(stored.payload, attributes, known_job);
    if let Some((seq, name)) = stored.job {
        // The stored job, where there is one, wins over attributes.
        item.job = Some(JobItem::shared(
            &String::from_utf8_lossy(&name),
            seq,
            known_job,
        ));
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_a_bare_payload_stays_bare() {
        let attributes = encode_attributes(
            &[("k", "v:1"), ("a", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let job = JobItem::new("videos-3f2a:9", 12);
        for payload in [
            &b"item 1"[..],
            b"",
            b"\xff\x00FLA1 looks like one",
            b"\xff\x00FLJ1 looks like one",
            b"12:ab",
        ] {
            for (job, attributes) in [
                (None, &attributes[..]),
                (Some(&job), &attributes[..]),
                (Some(&job), b""),
            ] {
                let packed = pack(payload, job, attributes).into_owned();
                assert_eq!(
                    unpack(Bytes::from(packed)),
                    Stored {
                        payload: Bytes::copy_from_slice(payload),
                        attributes: Some(Bytes::copy_from_slice(attributes)),
                        job: job.map(|j| (j.seq, Bytes::from(j.job.to_string()))),
                    }
                );
            }
            let bare = unpack(Bytes::from(pack(payload, None, b"").into_owned()));
            assert_eq!(&bare.payload[..], payload);
            assert_eq!(bare.job, None);
            let looks_packed = payload.starts_with(ENVELOPE) || payload.starts_with(JOB_ENVELOPE);
            assert_eq!(bare.attributes.is_some(), looks_packed);
        }
        assert!(matches!(pack(b"plain", None, b""), Cow::Borrowed(_)));
        // A value from before envelopes, or a broken one, is a bare payload.
        for broken in [
            &b"\xff\x00FLA1x:"[..],
            b"\xff\x00FLA1",
            b"\xff\x00FLJ1x:1:j0:",
            b"\xff\x00FLJ13:9:j0:",
            b"\xff\x00FLJ13:1:j",
            b"\xff\x00FLJ13:1:j5:ab",
        ] {
            let value = Bytes::from_static(broken);
            assert_eq!(
                unpack(value.clone()),
                Stored {
                    payload: value,
                    attributes: None,
                    job: None
                },
                "{broken:?}"
            );
        }
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
