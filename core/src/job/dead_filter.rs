//! Which failures a person means: the filter `runner dead list | requeue`
//! and `runner results` share (issue 24, "rerun by cause"), written once.
//!
//! A filter is a conjunction of its parts, each a disjunction of its
//! values: `--exit-code 137 --exit-code 139 --match OOM` is "(137 or 139)
//! and OOM". A part not given matches everything.
//!
//! - **exit code**: the worker's receipt of the item's death (same job,
//!   seq and life) carries it; a dead item with no such receipt (an item of
//!   no job, a lease that lapsed on its last attempt, a receipt not yet
//!   readable) has none and never matches;
//! - **pattern**: a regular expression (Rust `regex` syntax: linear time
//!   whatever the input, so a pattern cannot hang a requeue; `(?i)` for
//!   case-insensitive) searched for in the death's reason and in the
//!   stderr tail of its receipt. A regular expression rather than a
//!   substring because the causes people group by come in several
//!   spellings (`Killed|out of memory`, `HTTP 5\d\d`); a plain word is a
//!   pattern that matches itself;
//! - **job**: the item's job;
//! - **items**: the item's text is one of a list (a file of items, as
//!   `submit` reads them). A receipt keeps an item's first
//!   [`super::MAX_RECEIPT_ITEM`] bytes, so `results` compares those.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::{Receipt, Settled, cut_item};
use crate::DeadLetter;

/// A pattern that is no regular expression.
#[derive(Debug)]
pub struct BadPattern {
    pattern: String,
    source: regex::Error,
}

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--match {:?} is no regular expression: {}; escape characters such as ( [ . * + ? | \\ \
             with a backslash to match them as they are",
            self.pattern, self.source
        )
    }
}

impl std::error::Error for BadPattern {}

/// Which dead items (or results) a command acts on; [`DeadFilter::default`]
/// matches every one.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    exit_codes: Vec<i32>,
    pattern: Option<regex::Regex>,
    job: Option<String>,
    /// The items, whole (dead letters) and as a receipt keeps them.
    items: Option<(HashSet<Bytes>, HashSet<Bytes>)>,
}

impl DeadFilter {
    /// Only items whose last attempt ended with one of `codes` (none given:
    /// any).
    pub fn exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.exit_codes.extend(codes);
        self
    }

    /// Only items whose reason or stderr tail `pattern` (a regular
    /// expression) finds something in.
    pub fn pattern(mut self, pattern: &str) -> Result<Self, BadPattern> {
        let regex = regex::Regex::new(pattern).map_err(|source| BadPattern {
            pattern: pattern.to_string(),
            source,
        })?;
        self.pattern = Some(regex);
        Ok(self)
    }

    /// Only items of `job`.
    pub fn job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }

    /// Only these items (their text).
    pub fn items(mut self, items: impl IntoIterator<Item = Bytes>) -> Self {
        let whole: HashSet<Bytes> = items.into_iter().collect();
        let cut = whole.iter().map(cut_item).collect();
        self.items = Some((whole, cut));
        self
    }

    /// Whether it matches everything.
    pub fn is_all(&self) -> bool {
        self.exit_codes.is_empty()
            && self.pattern.is_none()
            && self.job.is_none()
            && self.items.is_none()
    }

    /// Whether it reads the receipts (exit code, stderr tail): the dead
    /// items' receipts must be read first ([`DeadDetails`]).
    pub fn needs_receipts(&self) -> bool {
        !self.exit_codes.is_empty() || self.pattern.is_some()
    }

    /// The job it is limited to, if any.
    pub fn only_job(&self) -> Option<&str> {
        self.job.as_deref()
    }

    /// Whether `letter` matches, given the receipt of its death
    /// ([`DeadDetails::of`]).
    pub fn matches_letter(&self, letter: &DeadLetter, receipt: Option<&Receipt>) -> bool {
        let job = letter.item.job.as_ref();
        if let Some(wanted) = &self.job
            && job.is_none_or(|j| *j.job != **wanted)
        {
            return false;
        }
        if let Some((whole, _)) = &self.items
            && !whole.contains(&letter.item.payload)
        {
            return false;
        }
        self.matches_details(
            Some(&letter.reason),
            receipt.and_then(|r| r.exit_code),
            receipt.and_then(|r| r.stderr_tail.as_deref()),
        )
    }

    /// Whether a settled item's receipt matches (`runner results`).
    pub fn matches_receipt(&self, receipt: &Receipt) -> bool {
        if self
            .job
            .as_ref()
            .is_some_and(|wanted| **wanted != *receipt.job)
        {
            return false;
        }
        if let Some((_, cut)) = &self.items
            && !cut.contains(&receipt.item)
        {
            return false;
        }
        self.matches_details(
            receipt.reason.as_deref(),
            receipt.exit_code,
            receipt.stderr_tail.as_deref(),
        )
    }

    fn matches_details(
        &self,
        reason: Option<&str>,
        exit_code: Option<i32>,
        stderr_tail: Option<&str>,
    ) -> bool {
        if !self.exit_codes.is_empty() && exit_code.is_none_or(|c| !self.exit_codes.contains(&c)) {
            return false;
        }
        match &self.pattern {
            Some(pattern) => [reason, stderr_tail]
                .into_iter()
                .flatten()
                .any(|text| pattern.is_match(text)),
            None => true,
        }
    }
}

/// The worker's receipts of dead items, by (job, seq): what a dead letter
/// alone does not say (its exit code, its stderr tail).
#[derive(Debug, Clone, Default)]
pub struct DeadDetails {
    receipts: HashMap<(Arc<str>, u64), Receipt>,
}

impl DeadDetails {
    /// Keep the dead receipts among `receipts` (as [`super::Ledger::receipts`]
    /// returns them: one per item).
    pub fn add(&mut self, receipts: impl IntoIterator<Item = Receipt>) {
        self.receipts.extend(
            receipts
                .into_iter()
                .filter(|r| r.state == Settled::Dead)
                .map(|r| ((r.job.clone(), r.seq), r)),
        );
    }

    /// The receipt of `letter`'s death: of its job and seq, in the life it
    /// died in. An older death's receipt (the item was requeued since) is
    /// not this one's.
    pub fn of(&self, letter: &DeadLetter) -> Option<&Receipt> {
        let job = letter.item.job.as_ref()?;
        self.receipts
            .get(&(job.job.clone(), job.seq))
            .filter(|r| r.life == job.life)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Item;
    use crate::queue::JobItem;

    fn letter(item: &str, job: Option<(&str, u64, u64)>, reason: &str) -> DeadLetter {
        let mut it = Item::new(item.to_string());
        if let Some((name, seq, life)) = job {
            it = it.with_job(JobItem::new(name, seq).in_life(life));
        }
        DeadLetter {
            id: crate::MessageId::from(item),
            item: it,
            attempts: 3,
            reason: reason.to_string(),
        }
    }

    fn dead(job: &str, seq: u64, life: u64, code: i32, stderr: &str) -> Receipt {
        let item = JobItem::new(job, seq).in_life(life);
        let mut r = Receipt::lapsed(&item, &Bytes::from(format!("i{seq}")), 3, "x");
        (r.exit_code, r.stderr_tail) = (Some(code), Some(stderr.to_string()));
        r
    }

    #[test]
    fn parts_are_anded_and_values_ored() {
        let mut details = DeadDetails::default();
        details.add([
            dead("j", 0, 0, 137, "Killed"),
            dead("j", 1, 0, 1, "HTTP 503"),
        ]);
        let oom = letter("i0", Some(("j", 0, 0)), "exit code 137 on attempt 3 of 3");
        let http = letter("i1", Some(("j", 1, 0)), "exit code 1 on attempt 3 of 3");
        let loose = letter("x", None, "exit code 137 on attempt 3 of 3");
        let check = |filter: &DeadFilter| {
            [&oom, &http, &loose]
                .map(|l| filter.matches_letter(l, details.of(l)))
                .to_vec()
        };
        assert_eq!(check(&DeadFilter::default()), [true, true, true]);
        let codes = DeadFilter::default().exit_codes([137, 139]);
        // An item of no job has no receipt, so no exit code: never matched.
        assert_eq!(check(&codes), [true, false, false]);
        let both = DeadFilter::default().exit_codes([137, 1]);
        assert_eq!(check(&both), [true, true, false]);
        let http_5xx = DeadFilter::default().pattern(r"HTTP 5\d\d").unwrap();
        assert_eq!(check(&http_5xx), [false, true, false], "the stderr tail");
        let reason = DeadFilter::default().pattern("code 137").unwrap();
        assert_eq!(check(&reason), [true, false, true], "the reason");
        let and = DeadFilter::default()
            .exit_codes([1])
            .pattern("Killed")
            .unwrap();
        assert_eq!(check(&and), [false, false, false]);
        let job = DeadFilter::default().job("j");
        assert_eq!(check(&job), [true, true, false]);
        let items = DeadFilter::default().items([Bytes::from("x"), Bytes::from("i1")]);
        assert_eq!(check(&items), [false, true, true]);
    }

    #[test]
    fn a_receipt_of_an_earlier_life_is_not_this_deaths() {
        let mut details = DeadDetails::default();
        details.add([dead("j", 0, 0, 137, "")]);
        let again = letter("i0", Some(("j", 0, 5)), "killed by signal 9");
        assert!(details.of(&again).is_none());
        let codes = DeadFilter::default().exit_codes([137]);
        assert!(!codes.matches_letter(&again, details.of(&again)));
    }

    #[test]
    fn a_bad_pattern_says_what_and_how_to_fix_it() {
        let error = DeadFilter::default().pattern("exit (137").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("--match \"exit (137\""), "{text}");
        assert!(text.contains("backslash"), "{text}");
    }

    #[test]
    fn results_match_on_what_a_receipt_keeps() {
        let long = "y".repeat(super::super::MAX_RECEIPT_ITEM + 10);
        let mut r = dead("j", 0, 0, 2, "");
        r.item = cut_item(&Bytes::from(long.clone()));
        let filter = DeadFilter::default().items([Bytes::from(long)]);
        assert!(filter.matches_receipt(&r));
        assert!(!DeadFilter::default().job("k").matches_receipt(&r));
        assert!(DeadFilter::default().exit_codes([2]).matches_receipt(&r));
    }
}
