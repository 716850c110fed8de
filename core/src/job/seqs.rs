//! [`SeqSet`]: a set of item sequence numbers kept as sorted, disjoint
//! ranges. A job's items mostly finish in about their input order, so the
//! set of a million settled items is a handful of ranges: small enough to
//! keep in one message, merge by union and send whole.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Sequence numbers (0-based input positions) as sorted, disjoint,
/// non-adjacent half-open ranges.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(u64, u64)>", into = "Vec<(u64, u64)>")]
pub struct SeqSet {
    ranges: Vec<Range<u64>>,
}

impl fmt::Debug for SeqSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.ranges.iter()).finish()
    }
}

impl fmt::Display for SeqSet {
    /// `1-400, 601-800`: the 1-based line numbers a person reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if range.end - range.start == 1 {
                write!(f, "{}", range.start + 1)?;
            } else {
                write!(f, "{}-{}", range.start + 1, range.end)?;
            }
        }
        Ok(())
    }
}

impl From<Vec<(u64, u64)>> for SeqSet {
    fn from(pairs: Vec<(u64, u64)>) -> Self {
        let mut set = SeqSet::default();
        for (start, end) in pairs {
            set.insert_range(start..end);
        }
        set
    }
}

impl From<SeqSet> for Vec<(u64, u64)> {
    fn from(set: SeqSet) -> Self {
        set.ranges.into_iter().map(|r| (r.start, r.end)).collect()
    }
}

impl FromIterator<u64> for SeqSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = SeqSet::default();
        for seq in iter {
            set.insert(seq);
        }
        set
    }
}

impl SeqSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// `0..n`.
    pub fn first(n: u64) -> Self {
        let mut set = Self::default();
        set.insert_range(0..n);
        set
    }

    /// Add one number.
    #[inline]
    pub fn insert(&mut self, seq: u64) {
        // Fast path, inline: the number is in or just past the last range
        // (a ledger counts every item this way, mostly in order).
        if let Some(last) = self.ranges.last_mut()
            && seq >= last.start
            && seq <= last.end
        {
            last.end = last.end.max(seq.saturating_add(1));
            return;
        }
        self.insert_range(seq..seq.saturating_add(1));
    }

    /// Add a range of numbers.
    pub fn insert_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        // Fast path: appending at the end, the common case.
        if let Some(last) = self.ranges.last_mut() {
            if range.start >= last.start && range.start <= last.end {
                last.end = last.end.max(range.end);
                return;
            }
            if range.start > last.end {
                self.ranges.push(range);
                return;
            }
        } else {
            self.ranges.push(range);
            return;
        }
        // General case: find every range that touches `range` and merge.
        let first = self.ranges.partition_point(|r| r.end < range.start);
        let last = self.ranges.partition_point(|r| r.start <= range.end);
        let mut merged = range;
        for r in &self.ranges[first..last] {
            merged.start = merged.start.min(r.start);
            merged.end = merged.end.max(r.end);
        }
        self.ranges.splice(first..last, [merged]);
    }

    /// Remove one number.
    pub fn remove(&mut self, seq: u64) {
        self.remove_range(seq..seq.saturating_add(1));
    }

    /// Remove a range of numbers.
    pub fn remove_range(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let first = self.ranges.partition_point(|r| r.end <= range.start);
        let last = self.ranges.partition_point(|r| r.start < range.end);
        if first >= last {
            return;
        }
        let head = self.ranges[first].start..range.start;
        let tail = range.end..self.ranges[last - 1].end;
        self.ranges.splice(
            first..last,
            [head, tail].into_iter().filter(|r| !r.is_empty()),
        );
    }

    /// Remove every number of `other`.
    pub fn subtract(&mut self, other: &SeqSet) {
        for range in &other.ranges {
            self.remove_range(range.clone());
        }
    }

    /// Add every number of `other`.
    pub fn union(&mut self, other: &SeqSet) {
        for range in &other.ranges {
            self.insert_range(range.clone());
        }
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        let at = self.ranges.partition_point(|r| r.end <= seq);
        self.ranges.get(at).is_some_and(|r| r.contains(&seq))
    }

    /// How many numbers the set holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// How many numbers in the set are below `n`.
    pub fn len_below(&self, n: u64) -> u64 {
        self.ranges
            .iter()
            .take_while(|r| r.start < n)
            .map(|r| r.end.min(n) - r.start)
            .sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The numbers below `n` that are not in the set.
    pub fn missing_below(&self, n: u64) -> SeqSet {
        let mut missing = SeqSet::default();
        let mut next = 0;
        for range in &self.ranges {
            if range.start >= n {
                break;
            }
            missing.insert_range(next..range.start);
            next = range.end;
        }
        missing.insert_range(next.min(n)..n);
        missing
    }

    /// The numbers in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|r| r.clone())
    }

    /// The ranges in order.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_into_ranges_in_any_order() {
        let mut set = SeqSet::new();
        for seq in [5, 1, 3, 2, 4, 0, 9, 7] {
            set.insert(seq);
        }
        assert_eq!(set.ranges(), &[0..6, 7..8, 9..10]);
        set.insert(8);
        assert_eq!(set.ranges(), &[0..6, 7..10]);
        set.insert(6);
        assert_eq!(set, SeqSet::first(10));
        assert_eq!(set.len(), 10);
        assert!(set.contains(9) && !set.contains(10));
    }

    #[test]
    fn union_remove_and_missing() {
        let mut a: SeqSet = [0, 1, 2, 10, 11].into_iter().collect();
        let b: SeqSet = [3, 4, 20].into_iter().collect();
        a.union(&b);
        assert_eq!(a.ranges(), &[0..5, 10..12, 20..21]);
        a.remove(1);
        assert_eq!(a.ranges(), &[0..1, 2..5, 10..12, 20..21]);
        assert_eq!(a.missing_below(12).ranges(), &[1..2, 5..10]);
        assert_eq!(SeqSet::new().missing_below(3), SeqSet::first(3));
        assert_eq!(a.to_string(), "1, 3-5, 11-12, 21");
        a.subtract(&[3, 4, 10, 11, 12].into_iter().collect());
        assert_eq!(a.ranges(), &[0..1, 2..3, 20..21]);
    }

    #[test]
    fn serializes_as_pairs() {
        let set: SeqSet = [0, 1, 2, 7].into_iter().collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[0,3],[7,8]]");
        assert_eq!(serde_json::from_str::<SeqSet>(&json).unwrap(), set);
    }
}
