//! `--joblog FILE`: one tab-separated line per finished attempt, like GNU
//! parallel's joblog, so a run can be audited or its failures re-run.
//!
//! Columns: item, attempt, exit_code, seconds, worker, outcome. Tabs,
//! newlines and backslashes in items are escaped as `\t`, `\n`, `\\`.
//! exit_code is empty when no command ran (Rust handlers, refused items).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use forloop_core::worker::{AttemptRecord, Settlement};

/// The header line.
pub(crate) const HEADER: &str = "item\tattempt\texit_code\tseconds\tworker\toutcome";

/// An open joblog.
#[derive(Debug)]
pub(crate) struct Joblog {
    out: Mutex<BufWriter<File>>,
}

impl Joblog {
    /// Open `path` for appending, writing the header if the file is new or
    /// empty. Several worker processes may share one joblog: each line goes
    /// out in one `write` to a file opened with O_APPEND, so lines never mix.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let empty = file.metadata()?.len() == 0;
        let mut out = BufWriter::new(file);
        if empty {
            writeln!(out, "{HEADER}")?;
            out.flush()?;
        }
        Ok(Self {
            out: Mutex::new(out),
        })
    }

    /// Append one attempt; flushed at once so a killed worker loses nothing.
    pub(crate) fn record(&self, record: &AttemptRecord<'_>) {
        let line = format_line(record);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(%error, "cannot write the joblog");
        }
    }
}

/// How many times each item (escaped, as in the file) succeeded in the
/// joblog at `path`: what `run --resume` skips on the memory queue, as GNU
/// parallel's `--resume` does.
pub(crate) fn done_items(path: &Path) -> std::io::Result<std::collections::HashMap<String, usize>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let mut done = std::collections::HashMap::new();
    for line in text.lines().filter(|line| *line != HEADER) {
        let columns: Vec<&str> = line.split('\t').collect();
        if columns.len() == 6 && columns[5] == "ok" {
            *done.entry(columns[0].to_string()).or_insert(0) += 1;
        }
    }
    Ok(done)
}

/// An item as the joblog writes it.
pub(crate) fn escape(item: &[u8]) -> String {
    let text = String::from_utf8_lossy(item);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// One joblog line, with its newline.
pub(crate) fn format_line(record: &AttemptRecord<'_>) -> String {
    let outcome = match record.settlement {
        Settlement::Acked => "ok",
        Settlement::Retrying { .. } => "retry",
        Settlement::DeadLettered => "dead",
        Settlement::Unsettled => "unsettled",
    };
    let exit = record
        .outcome
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_default();
    format!(
        "{}\t{}\t{}\t{:.3}\t{}\t{}\n",
        escape(record.payload),
        record.attempt,
        exit,
        record.elapsed.as_secs_f64(),
        record.worker,
        outcome
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use forloop_core::TaskOutcome;
    use std::time::Duration;

    #[test]
    fn line_escapes_the_item_and_keeps_columns() {
        let outcome = TaskOutcome::failed("exit code 3").with_exit_code(3);
        let record = AttemptRecord {
            id: "1",
            payload: b"a\tb\\c",
            attempt: 2,
            outcome: &outcome,
            settlement: Settlement::Retrying {
                delay: Duration::from_secs(2),
            },
            elapsed: Duration::from_millis(1500),
            worker: "host:1/0",
        };
        assert_eq!(
            format_line(&record),
            "a\\tb\\\\c\t2\t3\t1.500\thost:1/0\tretry\n"
        );
    }
}
