//! How the receipts of one `record.lua` call travel and are kept.
//!
//! Done receipts of one call are one hash field, so the server does one
//! `HSET` and keeps one entry for the lot rather than one per item. The
//! field is JSON lines: first a header, `h{"job":…,"worker":…,"at":…}`,
//! then per receipt either `[seq,attempt,exit_code,seconds,item,stderr]`
//! (a done receipt from the header's worker at the header's time: what a
//! worker's ack batch holds) or the receipt as a whole JSON object. A dead
//! receipt is a field of its own, one JSON object. JSON escapes newlines,
//! so a line is a receipt. A receipt is ~40 bytes plus its item in the
//! short form against ~150 plus its item whole: the server's work for a
//! call grows with its bytes (`docs/BENCHMARKS.md`).
//!
//! The seqs travel beside the lines, as a bitmap window (`start`, `mask`:
//! the bits to set from byte `start` on, in Redis bit order) for the fast
//! path and as text (`3,4,9`) for when some seq was settled before.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use forloop_core::job::{Receipt, Settled};
use serde::{Deserialize, Serialize};

/// The widest bitmap window a call sends, in bytes; seqs spread wider go
/// by text alone (and the script sets them bit by bit).
pub(crate) const WINDOW: u64 = 4096;

/// What every short line shares.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    job: Cow<'a, str>,
    #[serde(borrow)]
    worker: Cow<'a, str>,
    at: u64,
}

/// A short line: `[seq, attempt, exit_code, seconds, item, stderr]`.
type Short<'a> = (
    u64,
    u32,
    Option<i32>,
    f64,
    Cow<'a, str>,
    Option<Cow<'a, str>>,
);

/// The done receipts of one call, as the script takes them.
#[derive(Default)]
pub(crate) struct DoneLines {
    /// The seqs, in order, as text: `3,4,9`.
    pub(crate) seqs: String,
    /// The header line and a line per receipt.
    pub(crate) lines: Vec<u8>,
    /// Every seq, in order, for the window.
    all: Vec<u64>,
    header: Option<(Arc<str>, Arc<str>, u64)>,
}

impl DoneLines {
    /// Add a done receipt.
    pub(crate) fn push(&mut self, receipt: &Receipt) -> serde_json::Result<()> {
        debug_assert_eq!(receipt.state, Settled::Done);
        let (job, worker, at) = self.header.get_or_insert_with(|| {
            (
                Arc::clone(&receipt.job),
                Arc::clone(&receipt.worker),
                receipt.at,
            )
        });
        if self.lines.is_empty() {
            self.lines.push(b'h');
            serde_json::to_writer(
                &mut self.lines,
                &Header {
                    job: Cow::Borrowed(job),
                    worker: Cow::Borrowed(worker),
                    at: *at,
                },
            )?;
        }
        let short = receipt.job == *job
            && receipt.worker == *worker
            && receipt.at == *at
            && receipt.reason.is_none()
            && receipt.life == 0
            // A value goes in the whole form: the short one has no room.
            && receipt.value.is_none()
            && receipt.value_url.is_none()
            && !receipt.copy;
        self.lines.push(b'\n');
        if short {
            let line: Short<'_> = (
                receipt.seq,
                receipt.attempt,
                receipt.exit_code,
                receipt.seconds,
                receipt.item_text(),
                receipt.stderr_tail.as_deref().map(Cow::Borrowed),
            );
            serde_json::to_writer(&mut self.lines, &line)?;
        } else {
            serde_json::to_writer(&mut self.lines, receipt)?;
        }
        if !self.seqs.is_empty() {
            self.seqs.push(',');
        }
        let _ = write!(self.seqs, "{}", receipt.seq);
        self.all.push(receipt.seq);
        Ok(())
    }

    /// The largest seq, if any.
    pub(crate) fn high(&self) -> Option<u64> {
        self.all.iter().copied().max()
    }

    /// The bitmap window of the seqs: its first byte and the bits to set,
    /// or `None` when they are spread wider than [`WINDOW`] or a seq comes
    /// twice (the script then goes seq by seq).
    pub(crate) fn window(&self) -> Option<(u64, Vec<u8>)> {
        let low = self.all.iter().copied().min()? / 8;
        let high = self.high()? / 8;
        if high - low >= WINDOW {
            return None;
        }
        let mut mask = vec![0u8; (high - low + 1) as usize];
        for seq in &self.all {
            let byte = &mut mask[(seq / 8 - low) as usize];
            let bit = 0x80 >> (seq % 8);
            if *byte & bit != 0 {
                return None;
            }
            *byte |= bit;
        }
        Some((low, mask))
    }
}

/// Every receipt in one field of a job's receipts hash: a done batch
/// (header, then lines) or one receipt. A line that does not read is
/// returned as the error's text, and the rest still read.
pub(crate) fn read_field(field: &[u8]) -> (Vec<Receipt>, Vec<String>) {
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    let mut header: Option<Header<'_>> = None;
    for line in field.split(|b| *b == b'\n') {
        let read = match line.first() {
            Some(b'h') => match serde_json::from_slice::<Header<'_>>(&line[1..]) {
                Ok(h) => {
                    header = Some(h);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            },
            Some(b'[') => match (&header, serde_json::from_slice::<Short<'_>>(line)) {
                (Some(h), Ok((seq, attempt, exit_code, seconds, item, stderr))) => Ok(Receipt {
                    job: Arc::from(&*h.job),
                    seq,
                    state: Settled::Done,
                    attempt,
                    exit_code,
                    seconds,
                    worker: Arc::from(&*h.worker),
                    item: item.into_owned().into(),
                    reason: None,
                    stderr_tail: stderr.map(Cow::into_owned),
                    at: h.at,
                    life: 0,
                    value: None,
                    value_url: None,
                    copy: false,
                }),
                (None, _) => Err("a short receipt before its header".to_string()),
                (_, Err(e)) => Err(e.to_string()),
            },
            _ => serde_json::from_slice::<Receipt>(line).map_err(|e| e.to_string()),
        };
        match read {
            Ok(receipt) => out.push(receipt),
            Err(e) => bad.push(e),
        }
    }
    (out, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(seq: u64, worker: &str, at: u64) -> Receipt {
        Receipt {
            job: "j".into(),
            seq,
            state: Settled::Done,
            attempt: 2,
            exit_code: Some(0),
            seconds: 0.5,
            worker: worker.into(),
            item: format!("item\n\"{seq}\" ✓").into(),
            reason: None,
            stderr_tail: seq.is_multiple_of(2).then(|| "warn\nline".to_string()),
            at,
            life: 0,
            value: None,
            value_url: None,
            copy: false,
        }
    }

    #[test]
    fn a_batch_reads_back_as_written_short_and_long_lines_alike() {
        let receipts = [
            done(9, "w/0", 100),
            done(3, "w/0", 100),
            done(4, "w/1", 100),
            done(5, "w/0", 101),
            // A speculative copy's success keeps its mark: the long form.
            Receipt {
                copy: true,
                ..done(6, "w/0", 100)
            },
        ];
        let mut lines = DoneLines::default();
        for receipt in &receipts {
            lines.push(receipt).unwrap();
        }
        assert_eq!(lines.seqs, "9,3,4,5,6");
        let text = String::from_utf8(lines.lines.clone()).unwrap();
        assert_eq!(text.lines().count(), 6, "a header and a line each: {text}");
        assert_eq!(text.lines().filter(|l| l.starts_with('[')).count(), 2);
        let (read, bad) = read_field(&lines.lines);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(read, receipts);
    }

    #[test]
    fn a_lone_receipt_reads_and_a_bad_line_is_named_not_fatal() {
        let one = done(1, "w", 5);
        let json = serde_json::to_vec(&one).unwrap();
        assert_eq!(read_field(&json), (vec![one.clone()], vec![]));
        let mut field = b"h{\"job\":\"j\",\"worker\":\"w\",\"at\":5}\n[oops\n".to_vec();
        field.extend_from_slice(&json);
        let (read, bad) = read_field(&field);
        assert_eq!((read, bad.len()), (vec![one], 1));
    }

    #[test]
    fn the_window_sets_redis_bit_order_and_gives_up_on_spread_or_repeats() {
        let mut lines = DoneLines::default();
        for seq in [17, 8, 23] {
            lines.push(&done(seq, "w", 1)).unwrap();
        }
        // Bit 8 is the top bit of byte 1; 17 and 23 are bits 1 and 7 of byte 2.
        assert_eq!(lines.window(), Some((1, vec![0x80, 0x41])));
        lines.push(&done(8, "w", 1)).unwrap();
        assert_eq!(lines.window(), None, "a repeated seq");
        let mut spread = DoneLines::default();
        for seq in [0, WINDOW * 8] {
            spread.push(&done(seq, "w", 1)).unwrap();
        }
        assert_eq!(spread.window(), None);
        assert_eq!(DoneLines::default().window(), None);
    }
}
