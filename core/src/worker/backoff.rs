//! How long a failed item waits before its next attempt.

use std::time::Duration;

/// Exponential backoff: `initial * factor^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Share of each delay taken off at random: 0 waits exactly, 0.25 waits
    /// between 75 % and 100 % of it. Items that failed together (a
    /// downstream outage) then do not all come back in the same instant.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 5 minutes.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            factor: 2.0,
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// The delay after attempt number `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exponent);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// [`delay`](Self::delay) shortened by up to `jitter` of it, by an
    /// amount drawn from `seed` (any well-mixed number, e.g. a hash of the
    /// item and attempt). Never longer than the exact delay.
    pub fn jittered(&self, attempt: u32, seed: u64) -> Duration {
        let delay = self.delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return delay;
        }
        // The top 53 bits as a fraction in [0, 1).
        let unit = (seed >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(1.0 - jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            factor: 2.0,
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=5).map(|a| backoff.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(500));
        assert_eq!(backoff.jittered(3, u64::MAX), Duration::from_millis(400));
    }

    #[test]
    fn jitter_spreads_within_its_share_and_never_lengthens() {
        let backoff = Backoff {
            initial: Duration::from_secs(8),
            max: Duration::from_secs(60),
            factor: 2.0,
            jitter: 0.25,
        };
        let exact = backoff.delay(2);
        assert_eq!(backoff.jittered(2, 0), exact);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000u64 {
            let seed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let d = backoff.jittered(2, seed);
            assert!(d <= exact && d >= exact.mul_f64(0.75), "{d:?}");
            seen.insert(d.as_millis() / 400);
        }
        // 12 s to 16 s in 400 ms buckets (30 to 40): every one is hit.
        assert_eq!(seen.len(), 11, "{seen:?}");
    }
}
