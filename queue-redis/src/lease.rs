//! The lease token this driver makes, `ID:ATTEMPT:NONCE` (the `leased`
//! member, see `src/lua/common.lua`): reading one back, and the nonce that
//! makes a token name one delivery forever.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use forloop_core::LeaseToken;

/// A lease `ID:ATTEMPT:NONCE` (see `src/lua/common.lua`): its id and attempt.
pub(crate) fn lease_parts(lease: &str) -> Option<(&str, u64)> {
    let mut parts = lease.splitn(3, ':');
    let id = parts.next()?;
    let attempt = parts.next()?.parse().ok()?;
    parts.next()?;
    id.parse::<u64>().ok()?;
    Some((id, attempt))
}

/// The id of a token this driver made; `None` for any other token, which
/// names no lease here and is reported lost.
pub(crate) fn lease_id(token: &LeaseToken) -> Option<String> {
    token
        .as_text()
        .and_then(lease_parts)
        .map(|(id, _)| id.to_string())
}

/// 64 random bits for one pull's leases, in hex. Random rather than
/// counted, so no state on the server (which can lose it) and no state in
/// this process (which can restart) makes a nonce repeat: SipHash under the
/// standard library's randomly seeded keys, over a process-wide counter.
pub(crate) fn nonce() -> String {
    static PULLS: AtomicU64 = AtomicU64::new(0);
    let n = PULLS.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        RandomState::new().hash_one((n, std::process::id()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_drivers_leases_are_read_and_nonces_differ() {
        assert_eq!(lease_parts("12:3:00ff.0"), Some(("12", 3)));
        assert_eq!(lease_parts("12:3"), None, "a lease without a nonce");
        assert_eq!(lease_parts("x:3:n"), None);
        assert_eq!(lease_id(&LeaseToken::from_numbers(12, 3)), None);
        assert_eq!(
            lease_id(&LeaseToken::new("12:3:ab.1")).as_deref(),
            Some("12")
        );
        assert_ne!(nonce(), nonce());
    }
}
