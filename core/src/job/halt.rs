//! Halting a job that is failing: the limit a job is submitted with
//! ([`DeadLimit`], `--max-dead`), the rule that says it is passed, and the
//! halt every ledger keeps ([`Halt`]).
//!
//! The limit is in the job's [`super::Manifest`], so every worker on every
//! machine applies the same one. A worker that finds it passed in a
//! reading of the ledger records the halt ([`super::Ledger::halt`]); from
//! then on no worker takes the job's items (they stay queued, no attempt
//! charged) and the job's own workers exit with [`HALTED_EXIT`]. A resume
//! ([`super::Ledger::unhalt`]) starts a new *epoch*: the limit then counts
//! only what settles after it.
//!
//! The halt is a fact that merges like the rest of a ledger's facts: the
//! later epoch wins whole; within one epoch the earliest halt stays. A
//! worker halts the epoch it read, so a worker whose reading predates a
//! resume cannot halt the resumed job on the old counts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{JobStatus, Receipt, Settled};

/// The exit code of a worker whose job halted (and of `run` and `wait` on
/// it): distinct from a failed item (1) and bad usage (2), so a cluster
/// can fail the whole job at once on it.
pub const HALTED_EXIT: u8 = 3;

/// Items that must settle (since the job began, or since its last resume)
/// before a percentage is judged against the items settled so far.
pub const JUDGE_AFTER: u64 = 100;

/// How many dead items a job tolerates before it halts (`--max-dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLimit {
    /// More than this many dead items halt it (`--max-dead 50`).
    Items(u64),
    /// More than this share of dead items halts it, in hundredths of a
    /// percent (`--max-dead 5%` is 500).
    Percent(u32),
}

impl DeadLimit {
    /// Whether `dead` of `settled` items, out of `total` not settled when
    /// the count began, pass the limit.
    ///
    /// A count passes once `dead` exceeds it. A percentage passes once
    /// `dead` exceeds that share of `total` (the job can no longer end
    /// under it), or, after [`JUDGE_AFTER`] items settled (or all of them,
    /// if fewer), once `dead` exceeds that share of the items settled.
    pub fn passed(self, dead: u64, settled: u64, total: u64) -> bool {
        match self {
            DeadLimit::Items(n) => dead > n,
            DeadLimit::Percent(p) => {
                let over = |of: u64| u128::from(dead) * 10_000 > u128::from(p) * u128::from(of);
                over(total) || (settled >= JUDGE_AFTER.min(total) && over(settled))
            }
        }
    }
}

impl fmt::Display for DeadLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DeadLimit::Items(n) => write!(f, "{n}"),
            DeadLimit::Percent(p) if p.is_multiple_of(100) => write!(f, "{}%", p / 100),
            DeadLimit::Percent(p) => {
                let text = format!("{}.{:02}", p / 100, p % 100);
                write!(f, "{}%", text.trim_end_matches('0'))
            }
        }
    }
}

impl FromStr for DeadLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--max-dead {text:?} is not a limit: write a count of dead items (`50`) or a \
                 percentage of the job's items (`5%`, `0.5%`; above 0 and below 100)"
            )
        };
        let text = text.trim();
        let Some(percent) = text.strip_suffix('%') else {
            return text.parse().map(DeadLimit::Items).map_err(|_| bad());
        };
        let (whole, frac) = percent
            .trim()
            .split_once('.')
            .unwrap_or((percent.trim(), ""));
        if whole.is_empty()
            || frac.len() > 2
            || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        let hundredths = whole.checked_mul(100).and_then(|w| w.checked_add(frac));
        match hundredths {
            Some(p) if p > 0 && p < 10_000 => Ok(DeadLimit::Percent(p)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for DeadLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeadLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A job's halt, as every ledger keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// How many times the job was resumed after a halt.
    #[serde(default)]
    pub epoch: u64,
    /// When the job halted in this epoch (Unix milliseconds; `None`: it
    /// did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// The job's dead items when this epoch began.
    #[serde(default)]
    pub base_dead: u64,
    /// The job's settled items when this epoch began.
    #[serde(default)]
    pub base_settled: u64,
}

impl Halt {
    /// Whether nothing was recorded (no halt, no resume).
    pub fn is_empty(&self) -> bool {
        *self == Halt::default()
    }

    /// Add what `other` knows: the later epoch wins whole; in one epoch
    /// the earliest halt stays and the larger bases (two resumes at once
    /// that read different counts forgive the more).
    pub fn merge(&mut self, other: &Halt) {
        match other.epoch.cmp(&self.epoch) {
            std::cmp::Ordering::Greater => *self = *other,
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                self.at = match (self.at, other.at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                self.base_dead = self.base_dead.max(other.base_dead);
                self.base_settled = self.base_settled.max(other.base_settled);
            }
        }
    }

    /// Record a halt in `epoch` at `at`; `false` where the job is in
    /// another epoch (it was resumed since the reading that found the
    /// limit passed).
    pub fn halt(&mut self, epoch: u64, at: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.at = Some(self.at.map_or(at, |a| a.min(at)));
        true
    }

    /// Start a new epoch from `dead` and `settled` items: the job is no
    /// longer halted, and its limit counts from here.
    pub fn unhalt(&mut self, dead: u64, settled: u64) {
        *self = Halt {
            epoch: self.epoch + 1,
            at: None,
            base_dead: dead,
            base_settled: settled,
        };
    }
}

impl JobStatus {
    /// Whether the job is halted ([`Halt`]).
    pub fn is_halted(&self) -> bool {
        self.halt.at.is_some()
    }

    /// Dead items counted against the limit: those since the last resume.
    pub fn dead_in_epoch(&self) -> u64 {
        self.dead.saturating_sub(self.halt.base_dead)
    }

    /// Whether the job's `--max-dead` is passed by its counts (since its
    /// last resume), and it is neither halted nor over otherwise.
    pub fn should_halt(&self) -> bool {
        let Some(limit) = self.manifest.max_dead else {
            return false;
        };
        if self.is_halted() || self.is_complete() || self.cancelled.is_some() {
            return false;
        }
        let base = self.halt.base_settled;
        limit.passed(
            self.dead_in_epoch(),
            self.settled().saturating_sub(base),
            self.manifest.total.saturating_sub(base),
        )
    }

    /// `halted: 51 of 1,000 dead (limit 5 %)`, for a halted job.
    pub fn halt_line(&self) -> String {
        let limit = match self.manifest.max_dead {
            Some(DeadLimit::Percent(_)) => {
                let text = self.manifest.max_dead.expect("some").to_string();
                format!("limit {} %", text.trim_end_matches('%'))
            }
            Some(DeadLimit::Items(n)) => format!("limit {}", thousands(n)),
            None => "no limit".to_string(),
        };
        let since = if self.halt.epoch > 0 {
            format!(", {} since it was resumed", thousands(self.dead_in_epoch()))
        } else {
            String::new()
        };
        format!(
            "halted: {} of {} dead ({limit}{since})",
            thousands(self.dead),
            thousands(self.manifest.total)
        )
    }
}

/// The causes that dominate `receipts`' deaths, most frequent first (at
/// most `top`): the exit code where there is one, else the reason's
/// first words, each with its count.
pub fn dominant_causes(receipts: &[Receipt], top: usize) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for receipt in receipts.iter().filter(|r| r.state == Settled::Dead) {
        let cause = match receipt.exit_code {
            Some(code) => format!("exit {code}"),
            None => {
                let reason = receipt.reason.as_deref().unwrap_or("no reason");
                // "... on attempt 3 of 5" differs per item: cut it.
                let reason = reason.split(" on attempt ").next().unwrap_or(reason);
                reason.chars().take(80).collect()
            }
        };
        *counts.entry(cause).or_default() += 1;
    }
    let mut causes: Vec<(String, u64)> = counts.into_iter().collect();
    causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    causes.truncate(top);
    causes
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Manifest;

    #[test]
    fn a_limit_reads_as_a_count_or_a_percentage_and_writes_back_the_same() {
        for (text, limit) in [
            ("50", DeadLimit::Items(50)),
            ("0", DeadLimit::Items(0)),
            ("5%", DeadLimit::Percent(500)),
            ("0.5%", DeadLimit::Percent(50)),
            ("12.25%", DeadLimit::Percent(1225)),
        ] {
            assert_eq!(text.parse::<DeadLimit>(), Ok(limit), "{text}");
            assert_eq!(limit.to_string(), text);
        }
        for bad in ["", "%", "-1", "0%", "100%", "1.234%", "five", "5 %%", ".5%"] {
            let error = bad.parse::<DeadLimit>().expect_err(bad);
            assert!(error.contains("--max-dead"), "{error}");
        }
    }

    #[test]
    fn a_percentage_judges_the_settled_items_only_after_enough_settled() {
        let five = DeadLimit::Percent(500);
        // 10 dead of the first 10: too few settled to judge by share, and
        // under 5 % of 1,000.
        assert!(!five.passed(10, 10, 1000));
        // Past 5 % of every item: the job cannot end under the limit.
        assert!(five.passed(51, 60, 1000));
        assert!(!five.passed(50, 60, 1000));
        // 100 settled, 6 dead: judged by share.
        assert!(five.passed(6, 100, 1_000_000));
        assert!(!five.passed(5, 100, 1_000_000));
        // A job of 20 items is judged once all 20 settled.
        assert!(DeadLimit::Items(0).passed(1, 1, 20));
        assert!(!DeadLimit::Items(3).passed(3, 3, 20));
    }

    #[test]
    fn a_later_epoch_wins_and_in_one_epoch_the_first_halt_stays() {
        let mut a = Halt::default();
        assert!(a.halt(0, 50));
        let mut b = Halt::default();
        assert!(b.halt(0, 20));
        a.merge(&b);
        assert_eq!(a.at, Some(20));
        let mut resumed = a;
        resumed.unhalt(51, 60);
        assert!(
            !resumed.halt(0, 99),
            "a reading before the resume halts nothing"
        );
        a.merge(&resumed);
        assert_eq!(a, resumed);
        resumed.merge(&b);
        assert_eq!(resumed.epoch, 1);
        assert_eq!(resumed.at, None);
    }

    #[test]
    fn the_halt_line_says_how_many_died_of_how_many_and_the_limit() {
        let mut manifest = Manifest::new("j", 1000, "d");
        manifest.max_dead = Some(DeadLimit::Percent(500));
        let status = JobStatus {
            manifest,
            submitted: 1000,
            done: 9,
            dead: 51,
            settled_between: None,
            cancelled: None,
            halt: Halt {
                at: Some(1),
                ..Halt::default()
            },
        };
        assert_eq!(status.halt_line(), "halted: 51 of 1,000 dead (limit 5 %)");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
