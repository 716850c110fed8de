//! The queue's [`Ledger`], kept in the queue's own keys (same hash tag), so
//! it moves with the queue and `queue delete` removes it.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `jobs` | hash | job → manifest (JSON) |
//! | `settled` | hash | job → `FIRST LAST`, the first and last settlement (ms) |
//! | `ledger` | set | every job with keys, for `delete` |
//! | `job:JOB:submitted`, `done`, `dead` | bitmaps | bit `seq` set: the item is in that set |
//! | `job:JOB:receipts` | hash | `bSEQ` → the done receipts of one `record` call (JSON lines, SEQ the first); seq → a dead receipt (JSON) |
//!
//! A bitmap costs 125 KB per million items and counts with `BITCOUNT`;
//! the receipts (up to 1 KB of item and 4 KB of stderr each) are what a
//! large job spends its memory on. Done receipts are written a batch to a
//! field, so the server does one `HSET` and no per-item hash entry for
//! them (a field per item cost about as much server time as the ack
//! itself); dead ones, rare and replaced when the item is done after all,
//! keep a field each. Sequence numbers stop below 2^32 (a
//! Redis bit offset).
//!
//! Writes that must agree are one script each (`record.lua`, `begin.lua`,
//! and the burial in `common.lua`), so done beats dead and each (job, seq)
//! counts once whatever the interleaving; `submitted` only sets bits (a
//! union), so it is a plain pipeline. The scripts read the manifest's total
//! once per job per call and settle no seq at or past it (nor any of a job
//! without a manifest), so a stray `forloop-seq` neither completes a job
//! nor grows its bitmaps.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use forloop_core::job::{
    Begun, Book, Halt, JobSeqs, JobStatus, Ledger, Manifest, Receipt, ReceiptRef, SeqSet, Settled,
};
use forloop_core::{LeaseReport, LeaseToken, QueueError, QueueErrorKind, WorkQueue};
use futures_util::future::join_all;
use redis::Value;
use tracing::warn;

use crate::codec::{as_bytes, as_u64};
use crate::error::malformed;
use crate::keys::job_key;
use crate::link::{Link, SETTLE_CHUNK};
use crate::receipts::{DoneLines, read_field};

/// The largest sequence number a bitmap holds (Redis bit offsets are
/// below 2^32).
pub(crate) const MAX_SEQ: u64 = u32::MAX as u64;

/// At most this many bytes of receipts in one `record.lua` call (so in one
/// hash field of done receipts); a receipt is at most ~5 KiB.
const RECORD_BYTES: usize = 256 * 1024;

/// Most commands in one `submitted` pipeline.
const PIPE_CHUNK: usize = 1000;

/// Most bytes one `SETRANGE` writes.
const MAX_SETRANGE: u64 = 1 << 20;

/// Most fields one `HSCAN` step asks for.
const SCAN_COUNT: u64 = 100;

/// The jobs of one Redis queue: manifests, submitted/done/dead bitmaps and
/// one receipt per settled item (the ledger of the [`Backend`](forloop_core::Backend)
/// the driver opens).
pub struct RedisLedger {
    link: Link,
    /// The queue's: its ack script dead-letters at this many attempts.
    max_attempts: u32,
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("url", &self.link.shown_url)
            .field("queue", &self.link.name)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    pub(crate) fn new(link: Link, max_attempts: u32) -> Self {
        Self { link, max_attempts }
    }

    fn key(&self, job: &str, part: &str) -> String {
        job_key(&self.link.name, job, part)
    }
}

fn invalid(message: String) -> QueueError {
    QueueError::new(QueueErrorKind::Invalid, message)
}

fn check_seq(job: &str, seq: u64) -> Result<(), QueueError> {
    if seq > MAX_SEQ {
        return Err(invalid(format!(
            "item {seq} of job `{job}` is past the redis ledger's last sequence number ({MAX_SEQ})"
        )));
    }
    Ok(())
}

/// A job's status as `job_status` in `common.lua` returns it:
/// `[manifest, submitted, done, dead, "FIRST LAST" or "", cancelled or "",
/// "EPOCH AT BASE_DEAD BASE_SETTLED" or ""]`.
fn status_of(reply: &[Value]) -> Option<JobStatus> {
    let [manifest, submitted, done, dead, between, cancelled, halt] = reply else {
        return None;
    };
    let halt = halt_of(&String::from_utf8_lossy(&as_bytes(halt)))?;
    let cancelled = String::from_utf8_lossy(&as_bytes(cancelled)).parse().ok();
    let manifest: Manifest = serde_json::from_slice(&as_bytes(manifest)).ok()?;
    let between = String::from_utf8_lossy(&as_bytes(between)).into_owned();
    let settled_between = between
        .split_once(' ')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    Some(JobStatus {
        manifest,
        submitted: as_u64(submitted)?,
        done: as_u64(done)?,
        dead: as_u64(dead)?,
        settled_between,
        cancelled,
        halt,
    })
}

/// A job's halt as `job_halt` in `common.lua` writes it.
fn halt_of(text: &str) -> Option<Halt> {
    if text.is_empty() {
        return Some(Halt::default());
    }
    let mut parts = text.split(' ');
    let mut next = || parts.next();
    let epoch = next()?.parse().ok()?;
    let at = match next()? {
        "-" => None,
        at => Some(at.parse().ok()?),
    };
    Some(Halt {
        epoch,
        at,
        base_dead: next()?.parse().ok()?,
        base_settled: next()?.parse().ok()?,
    })
}

/// Why `manifest` is refused where `known` is recorded: the words the
/// reference ledger ([`Book::begin`]) uses.
fn refusal(known: &Manifest, manifest: &Manifest) -> String {
    let mut book = Book::default();
    let _ = book.begin(known);
    match book.begin(manifest) {
        Err(message) => message,
        Ok(_) => format!(
            "job `{}` already exists with another input; name this one with `--job NEW-NAME`",
            known.job
        ),
    }
}

/// How to set the bits of `range`: single bits at the unaligned ends,
/// whole `0xff` bytes between.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BitOp {
    /// `SETBIT key seq 1`.
    Bit(u64),
    /// `SETRANGE key byte "\xff" * len`.
    Bytes { byte: u64, len: u64 },
}

fn bit_ops(range: Range<u64>, out: &mut Vec<BitOp>) {
    let (mut seq, end) = (range.start, range.end);
    while seq < end && seq % 8 != 0 {
        out.push(BitOp::Bit(seq));
        seq += 1;
    }
    let mut byte = seq / 8;
    let mut whole = end.saturating_sub(seq) / 8;
    seq += whole * 8;
    while whole > 0 {
        let len = whole.min(MAX_SETRANGE);
        out.push(BitOp::Bytes { byte, len });
        byte += len;
        whole -= len;
    }
    while seq < end {
        out.push(BitOp::Bit(seq));
        seq += 1;
    }
}

/// The set a Redis bitmap holds (bit 0 is the high bit of byte 0).
fn bitmap_seqs(bytes: &[u8]) -> SeqSet {
    let mut set = SeqSet::new();
    let mut start: Option<u64> = None;
    for (i, &byte) in bytes.iter().enumerate() {
        match (byte, start) {
            (0xff, Some(_)) | (0, None) => continue,
            _ => {}
        }
        let base = i as u64 * 8;
        for bit in 0..8 {
            let on = byte & (0x80 >> bit) != 0;
            match (on, start) {
                (true, None) => start = Some(base + bit),
                (false, Some(first)) => {
                    set.insert_range(first..base + bit);
                    start = None;
                }
                _ => {}
            }
        }
    }
    if let Some(first) = start {
        set.insert_range(first..bytes.len() as u64 * 8);
    }
    set
}

#[async_trait]
impl Ledger for RedisLedger {
    /// A worker's ack batch is one job's receipts and at most 1000
    /// leases (a settle chunk): one `ack_recorded.lua` call, one round
    /// trip, where the receipts and the ack land together or not at all
    /// (two calls re-run an item whose ack fails after its receipt), on
    /// the queue this ledger was opened with (its keys are this ledger's).
    /// Anything larger records, then acks on `queue`.
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        let receipts: Vec<Receipt> = receipts.iter().map(ReceiptRef::to_receipt).collect();
        let calls = record_calls(&receipts)?;
        let ([call], true) = (&calls[..], tokens.len() <= SETTLE_CHUNK) else {
            self.record(&receipts).await?;
            return queue.ack(tokens).await;
        };
        let max_attempts = self.max_attempts;
        self.link
            .settle_after(
                "receipt and ack",
                &self.link.scripts.ack_recorded,
                tokens,
                &|inv| {
                    inv.arg(call.arg_count());
                    call.args(inv);
                    inv.arg(max_attempts);
                },
            )
            .await
    }

    async fn begin(&self, manifest: &Manifest) -> Result<Begun, QueueError> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| invalid(format!("job `{}`: {e}", manifest.job)))?;
        let reply: Vec<Value> = self
            .link
            .run("ledger begin", &self.link.scripts.begin, |inv| {
                inv.arg(&manifest.job).arg(json);
            })
            .await?;
        if reply.is_empty() {
            return Ok(Begun::New);
        }
        let status = status_of(&reply).ok_or_else(|| malformed("ledger begin"))?;
        let known = &status.manifest;
        if known.total == manifest.total && known.digest == manifest.digest {
            Ok(Begun::Existing(status))
        } else {
            Err(invalid(refusal(known, manifest)))
        }
    }

    async fn submitted(&self, job: &str, seqs: &SeqSet) -> Result<(), QueueError> {
        let Some(last) = seqs.ranges().last() else {
            return Ok(());
        };
        check_seq(job, last.end - 1)?;
        let mut ops = Vec::new();
        for range in seqs.ranges() {
            bit_ops(range.clone(), &mut ops);
        }
        let key = self.key(job, "submitted");
        let mut first = true;
        for chunk in ops.chunks(PIPE_CHUNK) {
            let mut pipe = redis::pipe();
            if first {
                pipe.cmd("SADD")
                    .arg(&self.link.keys.ledger)
                    .arg(job)
                    .ignore();
                first = false;
            }
            for op in chunk {
                match *op {
                    BitOp::Bit(seq) => pipe.cmd("SETBIT").arg(&key).arg(seq).arg(1),
                    BitOp::Bytes { byte, len } => pipe
                        .cmd("SETRANGE")
                        .arg(&key)
                        .arg(byte)
                        .arg(vec![0xffu8; len as usize]),
                }
                .ignore();
            }
            self.link.pipe("ledger submitted", &pipe).await?;
        }
        Ok(())
    }

    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        let calls = record_calls(receipts)?;
        join_all(calls.iter().map(|call| async move {
            let _: Value = self
                .link
                .run("ledger record", &self.link.scripts.record, |inv| {
                    call.args(inv)
                })
                .await?;
            Ok::<_, QueueError>(())
        }))
        .await
        .into_iter()
        .collect()
    }

    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        let reply: Vec<Value> = self
            .link
            .run("ledger jobs", &self.link.scripts.jobs, |_| {})
            .await?;
        let mut jobs = reply
            .chunks_exact(8)
            .map(|row| status_of(&row[1..]).ok_or_else(|| malformed("ledger jobs")))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| a.manifest.job.cmp(&b.manifest.job));
        Ok(jobs)
    }

    async fn cancel(&self, job: &str) -> Result<bool, QueueError> {
        let done: u64 = self
            .link
            .run("ledger cancel", &self.link.scripts.cancel, |inv| {
                inv.arg(job).arg(forloop_core::job::unix_millis());
            })
            .await?;
        Ok(done == 1)
    }

    async fn halt(&self, job: &str, epoch: u64) -> Result<bool, QueueError> {
        let done: u64 = self
            .link
            .run("ledger halt", &self.link.scripts.halt, |inv| {
                inv.arg(job)
                    .arg(epoch)
                    .arg(forloop_core::job::unix_millis());
            })
            .await?;
        Ok(done == 1)
    }

    /// The new epoch's counts are read in the script that starts it.
    async fn unhalt(&self, job: &str) -> Result<bool, QueueError> {
        let done: u64 = self
            .link
            .run("ledger unhalt", &self.link.scripts.unhalt, |inv| {
                inv.arg(job);
            })
            .await?;
        Ok(done == 1)
    }

    /// Its keys go in one script and its name joins the forgotten; a
    /// `begin` of the name later makes a new job (and takes the name off
    /// the forgotten).
    async fn forget(&self, job: &str) -> Result<bool, QueueError> {
        let done: u64 = self
            .link
            .run("ledger forget", &self.link.scripts.forget, |inv| {
                inv.arg(job).arg(forloop_core::job::unix_millis());
            })
            .await?;
        Ok(done == 1)
    }

    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> = self
            .link
            .run("ledger forgotten", &self.link.scripts.forgotten, |_| {})
            .await?;
        names.sort();
        Ok(names)
    }

    /// The dead bits and receipts go (`requeued.lua`); the queue's own
    /// requeue does the same in the script that moves the items.
    async fn requeued(&self, dead: &[Receipt]) -> Result<(), QueueError> {
        for chunk in dead.chunks(SETTLE_CHUNK) {
            let _: Value = self
                .link
                .run("ledger requeued", &self.link.scripts.requeued, |inv| {
                    for receipt in chunk {
                        inv.arg(&*receipt.job).arg(receipt.seq);
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// One `dead_letter_recorded.lua` call per chunk: the burial and the
    /// worker's receipt land together, and a lost lease gets neither.
    async fn record_then_dead_letter(
        &self,
        _queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        let mut report = LeaseReport::default();
        for (tokens, receipts) in tokens
            .chunks(SETTLE_CHUNK)
            .zip(receipts.chunks(SETTLE_CHUNK))
        {
            let mut json = Vec::with_capacity(receipts.len());
            for (token, receipt) in tokens.iter().zip(receipts) {
                let receipt = match receipt {
                    Some(receipt) => {
                        check_seq(&receipt.job, receipt.seq)?;
                        serde_json::to_vec(receipt).map_err(|e| {
                            invalid(format!("a receipt of job `{}`: {e}", receipt.job))
                        })?
                    }
                    None => Vec::new(),
                };
                json.push((token.as_text().unwrap_or_default(), receipt));
            }
            let part = self
                .link
                .settle_after(
                    "dead-letter and receipt",
                    &self.link.scripts.dead_letter_recorded,
                    tokens,
                    &|inv| {
                        inv.arg(reason).arg(json.len());
                        for (token, receipt) in &json {
                            inv.arg(*token).arg(receipt);
                        }
                    },
                )
                .await?;
            report.lost.extend(part.lost);
        }
        Ok(report)
    }

    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        let reply: Vec<Value> = self
            .link
            .run("ledger seqs", &self.link.scripts.seqs, |inv| {
                inv.arg(job);
            })
            .await?;
        let [manifest, submitted, done, dead] = &reply[..] else {
            return match reply.len() {
                0 => Ok(None),
                _ => Err(malformed("ledger seqs")),
            };
        };
        let manifest: Manifest =
            serde_json::from_slice(&as_bytes(manifest)).map_err(|_| malformed("ledger seqs"))?;
        Ok(Some(JobSeqs {
            manifest,
            submitted: bitmap_seqs(&as_bytes(submitted)),
            done: bitmap_seqs(&as_bytes(done)),
            dead: bitmap_seqs(&as_bytes(dead)),
        }))
    }

    /// `HSCAN`, 1000 fields at a time, so a job of a million receipts
    /// never holds the server in one reply.
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        let key = self.key(job, "receipts");
        let mut kept = BTreeMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, pairs): (u64, Vec<Vec<u8>>) = self
                .link
                .query(
                    "ledger receipts",
                    redis::cmd("HSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            for pair in pairs.chunks_exact(2) {
                let (read, bad) = read_field(&pair[1]);
                for receipt in read {
                    keep(&mut kept, receipt);
                }
                for error in bad {
                    warn!(
                        job,
                        field = %String::from_utf8_lossy(&pair[0]),
                        error,
                        "skipped an unreadable receipt"
                    );
                }
            }
            if next == 0 {
                return Ok(kept.into_values().collect());
            }
            cursor = next;
        }
    }
}

/// `receipts` as `record.lua` calls: one job a call, at most
/// [`SETTLE_CHUNK`] receipts and about [`RECORD_BYTES`] each.
pub(crate) fn record_calls(receipts: &[Receipt]) -> Result<Vec<RecordCall<'_>>, QueueError> {
    let mut calls: Vec<RecordCall<'_>> = Vec::new();
    for receipt in receipts {
        check_seq(&receipt.job, receipt.seq)?;
        // About what the receipt adds: its item and stderr dominate.
        let len = 64 + receipt.item.len() + receipt.stderr_tail.as_ref().map_or(0, String::len);
        let open = calls
            .iter_mut()
            .rev()
            .find(|call| call.job == &*receipt.job && call.takes(len));
        match open {
            Some(call) => call.add(receipt)?,
            None => {
                let mut call = RecordCall::new(&receipt.job, receipt.at);
                call.add(receipt)?;
                calls.push(call);
            }
        }
    }
    Ok(calls)
}

/// One `record.lua` call: receipts of one job, at most [`SETTLE_CHUNK`] of
/// them and about [`RECORD_BYTES`]. The done ones travel as a batch
/// ([`DoneLines`]: their bitmap window, their seqs, their lines) and become
/// one hash field; the dead ones as a (seq, JSON) pair each.
pub(crate) struct RecordCall<'a> {
    job: &'a str,
    first: u64,
    last: u64,
    count: usize,
    bytes: usize,
    done: DoneLines,
    dead: Vec<(u64, Vec<u8>)>,
}

impl<'a> RecordCall<'a> {
    fn new(job: &'a str, at: u64) -> Self {
        Self {
            job,
            first: at,
            last: at,
            count: 0,
            bytes: 0,
            done: DoneLines::default(),
            dead: Vec::new(),
        }
    }

    /// How many arguments [`RecordCall::args`] adds.
    pub(crate) fn arg_count(&self) -> usize {
        8 + 2 * self.dead.len()
    }

    /// Its arguments, `record.lua`'s ARGV, added to `inv`.
    pub(crate) fn args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.arg(self.job).arg(self.first).arg(self.last);
        match self.done.window() {
            Some((start, mask)) => inv.arg(start).arg(mask),
            None => inv.arg("").arg(""),
        };
        inv.arg(self.done.high().unwrap_or(0))
            .arg(&self.done.seqs)
            .arg(&self.done.lines);
        for (seq, json) in &self.dead {
            inv.arg(seq).arg(json);
        }
    }

    /// Whether one more receipt of about `len` bytes fits.
    fn takes(&self, len: usize) -> bool {
        self.count < SETTLE_CHUNK && self.bytes + len <= RECORD_BYTES
    }

    fn add(&mut self, receipt: &Receipt) -> Result<(), QueueError> {
        let unreadable = |e: serde_json::Error| {
            invalid(format!(
                "the receipt of item {} of job `{}`: {e}",
                receipt.seq, receipt.job
            ))
        };
        self.count += 1;
        self.first = self.first.min(receipt.at);
        self.last = self.last.max(receipt.at);
        let before = self.done.lines.len();
        match receipt.state {
            Settled::Done => self.done.push(receipt).map_err(unreadable)?,
            Settled::Dead => {
                let json = serde_json::to_vec(receipt).map_err(unreadable)?;
                self.bytes += json.len();
                self.dead.push((receipt.seq, json));
            }
        }
        self.bytes += self.done.lines.len() - before;
        Ok(())
    }
}

/// Keep one receipt per seq, as the scripts count ([`Settled::replaces`]).
fn keep(kept: &mut BTreeMap<u64, Receipt>, receipt: Receipt) {
    if receipt.replaces(kept.get(&receipt.seq)) {
        kept.insert(receipt.seq, receipt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis does with `ops` on an empty bitmap.
    fn apply(ops: &[BitOp]) -> Vec<u8> {
        let mut bitmap = Vec::new();
        let grow = |bitmap: &mut Vec<u8>, len: usize| {
            if bitmap.len() < len {
                bitmap.resize(len, 0);
            }
        };
        for op in ops {
            match *op {
                BitOp::Bit(seq) => {
                    grow(&mut bitmap, seq as usize / 8 + 1);
                    bitmap[seq as usize / 8] |= 0x80 >> (seq % 8);
                }
                BitOp::Bytes { byte, len } => {
                    grow(&mut bitmap, (byte + len) as usize);
                    bitmap[byte as usize..(byte + len) as usize].fill(0xff);
                }
            }
        }
        bitmap
    }

    #[test]
    fn ranges_become_bits_and_bits_become_ranges() {
        let sets: Vec<SeqSet> = vec![
            SeqSet::new(),
            SeqSet::first(1),
            SeqSet::first(8),
            SeqSet::first(100),
            (3..5).chain(7..30).chain(64..65).chain(70..200).collect(),
            (13..14).collect(),
        ];
        for set in sets {
            let mut ops = Vec::new();
            for range in set.ranges() {
                bit_ops(range.clone(), &mut ops);
            }
            assert!(ops.len() <= 16 * set.ranges().len(), "{ops:?}");
            assert_eq!(bitmap_seqs(&apply(&ops)), set, "{ops:?}");
        }
        assert_eq!(
            bitmap_seqs(&[0b0110_0000, 0, 0xff, 0x01]),
            [1, 2].into_iter().chain(16..24).chain(31..32).collect()
        );
    }

    #[test]
    fn a_refusal_names_the_job_flag_and_bad_seqs_are_refused() {
        let known = Manifest::new("j", 3, "d1");
        let message = refusal(&known, &Manifest::new("j", 4, "d2"));
        assert!(message.contains("--job"), "{message}");
        assert!(check_seq("j", MAX_SEQ).is_ok());
        assert_eq!(
            check_seq("j", MAX_SEQ + 1).unwrap_err().kind(),
            QueueErrorKind::Invalid
        );
    }
}
