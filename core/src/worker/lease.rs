//! `LeaseKeeper`: knows every lease the worker holds and when each needs
//! renewing, so a running task never loses its item to a lapsed deadline.
//!
//! A lease is renewed when a third of the worker's lease length is left,
//! for another full lease, until the item has been held `max_age`. Past that
//! the keeper gives the lease up ([`GiveUp::MaxAge`]) at the moment it would
//! have renewed it, while it is still live, so the worker can stop the task
//! and settle the attempt as failed; a lease whose renewals keep failing
//! reaches its deadline ([`GiveUp::Lapsed`]), and the task stops then too.
//! Either way one copy of a task runs at a time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::time::Duration;

use tokio::time::Instant;

use crate::LeaseToken;
use crate::fasthash::FastHasher;

/// Why the keeper lets a lease go while its task still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum GiveUp {
    /// Held for `max_age`: not renewed again; the lease is still live.
    MaxAge,
    /// The deadline passed without a renewal: the lease is gone.
    Lapsed,
}

#[derive(Debug)]
struct Lease {
    deadline: Instant,
    leased_at: Instant,
    /// Bumped on each renewal so stale heap entries can be told apart.
    generation: u64,
}

/// Tracks held leases and says which are due for renewal.
#[derive(Debug)]
pub(crate) struct LeaseKeeper {
    lease: Duration,
    margin: Duration,
    max_age: Duration,
    leases: HashMap<LeaseToken, Lease, BuildHasherDefault<FastHasher>>,
    due: BinaryHeap<Reverse<(Instant, u64, LeaseToken)>>,
    /// When a lease is given up: max age reached, or its deadline.
    give_ups: BinaryHeap<Reverse<(Instant, GiveUp, u64, LeaseToken)>>,
    next_generation: u64,
}

impl LeaseKeeper {
    /// A keeper that renews for `lease` at a time, up to `max_age` in all.
    pub(crate) fn new(lease: Duration, max_age: Duration) -> Self {
        Self {
            lease,
            margin: lease / 3,
            max_age,
            leases: HashMap::default(),
            due: BinaryHeap::new(),
            give_ups: BinaryHeap::new(),
            next_generation: 0,
        }
    }

    /// Start keeping a lease that ends at `deadline`.
    pub(crate) fn hold(&mut self, token: LeaseToken, deadline: Instant, now: Instant) {
        self.track(token, deadline, now);
    }

    fn track(&mut self, token: LeaseToken, deadline: Instant, leased_at: Instant) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let renew_at = deadline.checked_sub(self.margin).unwrap_or(deadline);
        if renew_at.saturating_duration_since(leased_at) < self.max_age {
            self.due
                .push(Reverse((renew_at, generation, token.clone())));
        } else {
            self.give_ups.push(Reverse((
                renew_at,
                GiveUp::MaxAge,
                generation,
                token.clone(),
            )));
        }
        self.give_ups.push(Reverse((
            deadline,
            GiveUp::Lapsed,
            generation,
            token.clone(),
        )));
        self.leases.insert(
            token,
            Lease {
                deadline,
                leased_at,
                generation,
            },
        );
    }

    /// Stop keeping a lease (the task finished, or the lease was lost).
    pub(crate) fn release(&mut self, token: &LeaseToken) {
        self.leases.remove(token);
        if self.leases.is_empty() {
            self.due.clear();
            self.give_ups.clear();
        }
    }

    /// When the next renewal or give-up is due.
    pub(crate) fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale();
        let renew = self.due.peek().map(|Reverse((at, _, _))| *at);
        let give_up = self.give_ups.peek().map(|Reverse((at, _, _, _))| *at);
        renew.into_iter().chain(give_up).min()
    }

    /// Leases given up at `now`, with why; each is released here, so the
    /// worker only has to stop its task.
    pub(crate) fn give_ups(&mut self, now: Instant) -> Vec<(LeaseToken, GiveUp)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, _, _))) = self.give_ups.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, why, generation, token)) = self.give_ups.pop().expect("peeked");
            if self.gives_up(&token, at, why, generation) {
                self.release(&token);
                out.push((token, why));
            }
        }
        out
    }

    /// Leases due for renewal at `now`; pass them to `extend_lease` with
    /// [`Self::lease`], then report back with [`Self::renewed`].
    pub(crate) fn due(&mut self, now: Instant) -> Vec<LeaseToken> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, generation, token)) = self.due.pop().expect("peeked");
            if self.is_current(&token, generation) {
                out.push(token);
            }
        }
        out
    }

    /// The lease length each renewal asks for.
    pub(crate) fn lease(&self) -> Duration {
        self.lease
    }

    /// The renewal of `token` succeeded at `now`.
    pub(crate) fn renewed(&mut self, token: &LeaseToken, now: Instant) {
        if let Some(leased_at) = self.leases.get(token).map(|lease| lease.leased_at) {
            self.track(token.clone(), now + self.lease, leased_at);
        }
    }

    /// The renewal of `token` failed: try again at `at`, if that is still
    /// before its deadline.
    pub(crate) fn retry_at(&mut self, token: &LeaseToken, at: Instant) {
        let Some(lease) = self.leases.get_mut(token) else {
            return;
        };
        if at < lease.deadline {
            let generation = self.next_generation;
            self.next_generation += 1;
            lease.generation = generation;
            self.due.push(Reverse((at, generation, token.clone())));
        }
    }

    /// Whether a lease is held past its deadline (renewal failed or max age).
    #[cfg(test)]
    fn expired(&self, token: &LeaseToken, now: Instant) -> bool {
        self.leases
            .get(token)
            .is_some_and(|lease| lease.deadline <= now)
    }

    /// Whether no lease is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Whether a give-up entry still stands.
    fn gives_up(&self, token: &LeaseToken, at: Instant, why: GiveUp, generation: u64) -> bool {
        self.leases.get(token).is_some_and(|lease| match why {
            // Stands while no renewal or retry replaced it.
            GiveUp::MaxAge => lease.generation == generation,
            // Stands while the deadline is the one it was made for.
            GiveUp::Lapsed => lease.deadline == at,
        })
    }

    fn is_current(&self, token: &LeaseToken, generation: u64) -> bool {
        self.leases
            .get(token)
            .is_some_and(|lease| lease.generation == generation)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, generation, token))) = self.due.peek() {
            if self.is_current(token, *generation) {
                break;
            }
            self.due.pop();
        }
        while let Some(Reverse((at, why, generation, token))) = self.give_ups.peek() {
            if self.gives_up(token, *at, *why, *generation) {
                break;
            }
            self.give_ups.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn renews_a_third_before_the_deadline_until_max_age() {
        let lease = Duration::from_secs(30);
        let mut keeper = LeaseKeeper::new(lease, Duration::from_secs(100));
        let start = Instant::now();
        let token = LeaseToken::new("t");
        keeper.hold(token.clone(), start + lease, start);
        assert_eq!(keeper.next_due(), Some(start + Duration::from_secs(20)));
        assert!(keeper.due(start + Duration::from_secs(19)).is_empty());

        let mut renewals = Vec::new();
        while let Some(at) = keeper.next_due() {
            let due = keeper.due(at);
            if due.is_empty() {
                // Not a renewal: the give-up at max age (see the next test).
                break;
            }
            assert_eq!(due, vec![token.clone()]);
            keeper.renewed(&token, at);
            renewals.push((at - start).as_secs());
        }
        // 20, 40, 60, 80; the renewal at 100 would pass max age: the keeper
        // gives the lease up then, while it is still live (deadline 110).
        assert_eq!(renewals, [20, 40, 60, 80]);
        assert!(!keeper.expired(&token, start + Duration::from_secs(109)));
        assert!(keeper.expired(&token, start + Duration::from_secs(110)));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_age_while_live_and_at_the_deadline_when_renewals_fail() {
        let lease = Duration::from_secs(30);
        let start = Instant::now();
        let mut keeper = LeaseKeeper::new(lease, Duration::from_secs(100));
        let old = LeaseToken::new("old");
        keeper.hold(old.clone(), start + lease, start);
        let mut now = start;
        while let Some(at) = keeper.next_due() {
            now = at;
            for token in keeper.due(at) {
                keeper.renewed(&token, at);
            }
            let given = keeper.give_ups(at);
            if !given.is_empty() {
                assert_eq!(given, vec![(old.clone(), GiveUp::MaxAge)]);
                break;
            }
        }
        assert_eq!(
            now - start,
            Duration::from_secs(100),
            "at the renewal it skips"
        );
        assert!(keeper.is_empty(), "a given-up lease is released");

        let failing = LeaseToken::new("failing");
        keeper.hold(failing.clone(), now + lease, now);
        let due = keeper.next_due().unwrap();
        assert_eq!(keeper.due(due), vec![failing.clone()]);
        // The renewal never answers: nothing is due until the deadline.
        assert_eq!(keeper.next_due(), Some(now + lease));
        assert_eq!(
            keeper.give_ups(now + lease),
            vec![(failing, GiveUp::Lapsed)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn released_leases_are_never_due() {
        let mut keeper = LeaseKeeper::new(Duration::from_secs(3), Duration::from_secs(60));
        let now = Instant::now();
        let a = LeaseToken::new("a");
        let b = LeaseToken::new("b");
        keeper.hold(a.clone(), now + Duration::from_secs(3), now);
        keeper.hold(b.clone(), now + Duration::from_secs(6), now);
        keeper.release(&a);
        assert_eq!(keeper.next_due(), Some(now + Duration::from_secs(5)));
        assert_eq!(keeper.due(now + Duration::from_secs(10)), vec![b]);
    }
}
