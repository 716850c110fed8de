//! `rust-handler`: the whole forloop CLI with a Rust function as `f`.
//!
//! Each item is a whole number N; the function counts the primes below N
//! (a sieve: real CPU work, no network), prints `N<TAB>count` on stdout and
//! returns `{"n": N, "primes": count}` as the item's value, which its
//! receipt keeps (`rust-handler --queue redis results --json`). An item
//! that is not a number, or is too large, is dead-lettered at once.
//!
//! ```sh
//! rust-handler run numbers.txt                    # in this process, memory queue
//! rust-handler --queue redis submit numbers.txt   # or: a shared queue ...
//! rust-handler --queue redis work -j 4            # ... and workers anywhere
//! rust-handler --queue redis --cluster gke run numbers.txt --image IMG --workers 50
//! ```
//!
//! The last one starts pods that run `rust-handler work` (the image must
//! have the binary under that name, and a build with `k8s` and the queue's
//! feature).

use std::collections::BTreeMap;
use std::process::ExitCode;

use runner::{Registry, TaskOutcome};

/// Largest N accepted: a sieve this size needs about 1 GB.
const LIMIT: u64 = 1_000_000_000;

/// How many primes are below `n`.
fn primes_below(n: u64) -> u64 {
    let n = n as usize;
    if n < 3 {
        return 0;
    }
    // composite[i] stands for the odd number 2i + 1.
    let mut composite = vec![false; n / 2];
    let mut count = 1; // 2
    for i in 1..n / 2 {
        if composite[i] {
            continue;
        }
        count += 1;
        let p = 2 * i + 1;
        let mut multiple = p * p;
        while multiple < n {
            composite[multiple / 2] = true;
            multiple += 2 * p;
        }
    }
    count
}

fn handle(item: &str) -> TaskOutcome {
    let n: u64 = match item.trim().parse() {
        Ok(n) => n,
        Err(error) => return TaskOutcome::fatal(format!("not a whole number: {error}")),
    };
    if n > LIMIT {
        return TaskOutcome::fatal(format!("{n} is over the limit of {LIMIT}"));
    }
    let primes = primes_below(n);
    println!("{n}\t{primes}");
    // Any serde value; `Ok(runner::handler::Value(x))` from a function
    // returning a Result does the same.
    TaskOutcome::success_with(&BTreeMap::from([("n", n), ("primes", primes)]))
}

fn main() -> ExitCode {
    runner::main_with_handler(Registry::builtin(), runner::handler::for_str(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_known_values() {
        let known = [
            (0, 0),
            (2, 0),
            (3, 1),
            (10, 4),
            (100, 25),
            (1000, 168),
            (1_000_000, 78_498),
        ];
        for (n, count) in known {
            assert_eq!(primes_below(n), count, "primes below {n}");
        }
    }
}
