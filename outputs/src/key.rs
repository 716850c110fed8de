//! Where an item's objects go: a key made from the item that stays one
//! path segment whatever the item holds (`../../etc/passwd`, `/`, `?`,
//! 2 KB of text, bytes that are not UTF-8), is the same on every attempt
//! and every worker (a redelivered item overwrites its own objects), and
//! still says which item it is to a person listing the bucket.

use sha2::{Digest, Sha256};

use forloop_core::Item;

/// The most of an item its key shows (the slug), in bytes.
pub const SLUG_MAX: usize = 40;

/// The folder of a job's items, and of items that belong to no job.
pub(crate) const NO_JOB: &str = "_no-job";

/// The key of an item: `{seq:09}-{slug}-{hash}` for an item of a job,
/// `{hash}-{slug}` otherwise.
///
/// - `seq` makes keys unique in their job and sorts them in input order;
/// - the slug is the item's first [`SLUG_MAX`] bytes with everything but
///   ASCII letters, digits, `.`, `_` and `-` turned into `_` (runs of them
///   into one), so it is never a path separator, never `.` or `..` on its
///   own (a digit or the hash comes first), and needs no escaping in any
///   store or shell;
/// - the hash (the first 8 bytes of the SHA-256 of the whole item, in hex)
///   tells apart items whose slugs agree: items without a job are told
///   apart by it alone.
pub fn item_key(item: &Item) -> String {
    let hash = short_hash(&item.payload);
    let slug = slug(&item.payload);
    match &item.job {
        Some(job) => format!("{:09}-{slug}-{hash}", job.seq),
        None => format!("{hash}-{slug}"),
    }
}

/// The folder an item's job gets in the store: the job's name (job names
/// are already path-safe: letters, digits, `.`, `_`, `-`), or [`NO_JOB`].
pub(crate) fn job_folder(item: &Item) -> String {
    match &item.job {
        Some(job) => {
            let folder = slug_of(job.job.as_bytes(), usize::MAX);
            // `.` and `..` are valid job names but no folder's.
            if folder.bytes().all(|b| b == b'.') {
                folder.replace('.', "_")
            } else {
                folder
            }
        }
        None => NO_JOB.to_string(),
    }
}

fn short_hash(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn slug(payload: &[u8]) -> String {
    let slug = slug_of(payload, SLUG_MAX);
    if slug.is_empty() {
        "_".to_string()
    } else {
        slug
    }
}

fn slug_of(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(max) {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if keep {
            out.push(b as char);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use forloop_core::queue::JobItem;

    use super::*;

    fn key(payload: &[u8], seq: Option<u64>) -> String {
        let mut item = Item::new(payload.to_vec());
        if let Some(seq) = seq {
            item = item.with_job(JobItem::new("j", seq));
        }
        item_key(&item)
    }

    fn one_safe_segment(key: &str) {
        assert!(!key.is_empty());
        assert!(key != "." && key != "..", "{key}");
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
            "{key}"
        );
        assert!(key.len() <= 9 + 1 + SLUG_MAX + 1 + 16 + 20, "{key}");
    }

    #[test]
    fn hostile_items_stay_one_readable_segment() {
        let long = "x".repeat(2048);
        for payload in [
            &b"../../etc/passwd"[..],
            b"/",
            b"?",
            b"..",
            b".",
            b"",
            b"a/b?c=d#e f",
            long.as_bytes(),
            b"\xff\xfe\x00bin",
        ] {
            for seq in [Some(7), None] {
                let key = key(payload, seq);
                one_safe_segment(&key);
            }
        }
        assert_eq!(
            key(b"../../etc/passwd", Some(3)),
            format!(
                "000000003-.._.._etc_passwd-{}",
                short_hash(b"../../etc/passwd")
            )
        );
    }

    #[test]
    fn the_key_is_the_same_every_time_and_differs_between_items() {
        assert_eq!(key(b"video 1", Some(1)), key(b"video 1", Some(1)));
        assert_ne!(key(b"a?", None), key(b"a/", None));
        assert_ne!(key(b"a", Some(1)), key(b"a", Some(2)));
    }
}
