//! Durations in whole seconds, for backends whose deadlines and timeouts
//! count only those (SQS visibility, Pub/Sub ack deadlines).

use std::time::Duration;

/// `duration` rounded up to whole seconds, so a lease is never cut short;
/// saturates at `i32::MAX`, the type the SDKs take. Callers clamp to their
/// backend's range.
///
/// ```
/// use std::time::Duration;
/// use forloop_core::kit::whole_seconds;
/// assert_eq!(whole_seconds(Duration::from_millis(10_500)), 11);
/// ```
pub fn whole_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(10_500)), 11);
        assert_eq!(whole_seconds(Duration::MAX), i32::MAX);
    }
}
