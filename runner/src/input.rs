//! Items from a file or stdin: one per line, validated as a whole before
//! anything is published.
//!
//! CRLF and a missing final newline are handled; blank lines are skipped and
//! counted; invalid UTF-8, NUL bytes and items over the queue's payload limit
//! are errors that name the line, and any of them refuses the whole input.

use std::fmt;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

/// The items of one input, in order, with their line numbers.
#[derive(Debug, Default)]
pub struct Items {
    /// Each item's text as bytes.
    pub items: Vec<Bytes>,
    /// The 1-based line number of each item.
    pub lines: Vec<usize>,
    /// Lines skipped because they were blank.
    pub blank: usize,
}

/// Why an input was refused. Lists up to ten bad lines.
#[derive(Debug)]
pub struct InputError {
    source_name: String,
    problems: Vec<(usize, String)>,
    more: usize,
    io: Option<std::io::Error>,
}

const MAX_SHOWN: usize = 10;

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(io) = &self.io {
            return write!(f, "cannot read {}: {io}", self.source_name);
        }
        write!(
            f,
            "{} has {} bad line(s); nothing was submitted. Fix or remove them and run again:",
            self.source_name,
            self.problems.len() + self.more
        )?;
        for (line, problem) in &self.problems {
            write!(f, "\n  line {line}: {problem}")?;
        }
        if self.more > 0 {
            write!(f, "\n  ... and {} more", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for InputError {}

/// Read items from `path`, or stdin when it is `-`.
pub fn read_items(path: &str, max_payload: usize) -> Result<Items, InputError> {
    let source_name = if path == "-" {
        "standard input".to_string()
    } else {
        format!("`{path}`")
    };
    let mut data = Vec::new();
    let read = if path == "-" {
        std::io::stdin().lock().read_to_end(&mut data)
    } else {
        std::fs::File::open(Path::new(path)).and_then(|mut f| f.read_to_end(&mut data))
    };
    if let Err(io) = read {
        return Err(InputError {
            source_name,
            problems: Vec::new(),
            more: 0,
            io: Some(io),
        });
    }
    parse_items(Bytes::from(data), &source_name, max_payload)
}

/// Split and check `data`, naming it `source_name` in errors.
pub fn parse_items(
    data: Bytes,
    source_name: &str,
    max_payload: usize,
) -> Result<Items, InputError> {
    let mut items = Items::default();
    let mut problems = Vec::new();
    let mut more = 0;
    let mut start = 0;
    let mut line = 0;
    while start < data.len() {
        line += 1;
        let end = memchr_newline(&data[start..]).map_or(data.len(), |at| start + at);
        let mut text_end = end;
        if text_end > start && data[text_end - 1] == b'\r' {
            text_end -= 1;
        }
        let line_start = start;
        let raw = &data[line_start..text_end];
        start = end + 1;
        let problem = match std::str::from_utf8(raw) {
            Err(error) => Some(format!(
                "not valid UTF-8 (bad byte 0x{:02x} at column {}); items are lines of text",
                raw[error.valid_up_to()],
                error.valid_up_to() + 1
            )),
            Ok(text) if text.trim().is_empty() => {
                items.blank += 1;
                continue;
            }
            Ok(_) if raw.contains(&0) => {
                Some("contains a NUL byte, which no command argument can carry".to_string())
            }
            Ok(_) if raw.len() > max_payload => Some(format!(
                "the item is {} bytes, over the queue's limit of {max_payload} bytes",
                raw.len()
            )),
            Ok(_) => None,
        };
        match problem {
            Some(problem) if problems.len() < MAX_SHOWN => problems.push((line, problem)),
            Some(_) => more += 1,
            None => {
                items.items.push(data.slice(line_start..text_end));
                items.lines.push(line);
            }
        }
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(InputError {
            source_name: source_name.to_string(),
            problems,
            more,
            io: None,
        })
    }
}

fn memchr_newline(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Result<Items, InputError> {
        parse_items(Bytes::copy_from_slice(text), "`ids.txt`", 16)
    }

    fn texts(items: &Items) -> Vec<&str> {
        items
            .items
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn crlf_blank_lines_and_missing_final_newline() {
        let items = parse(b"a\r\n\r\n  \nb c\n\nd").unwrap();
        assert_eq!(texts(&items), ["a", "b c", "d"]);
        assert_eq!(items.lines, [1, 4, 6]);
        assert_eq!(items.blank, 3);
    }

    #[test]
    fn spaces_inside_items_are_kept() {
        let items = parse(b" x \n").unwrap();
        assert_eq!(texts(&items), [" x "]);
    }

    #[test]
    fn every_bad_line_is_named_and_nothing_is_accepted() {
        let error = parse(b"ok\n\xff\xfe\nfine\nthis line is far too long\na\x00b\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`ids.txt` has 3 bad line(s); nothing was submitted"),
            "{error}"
        );
        assert!(
            error.contains("line 2: not valid UTF-8 (bad byte 0xff at column 1)"),
            "{error}"
        );
        assert!(
            error.contains("line 4: the item is 25 bytes, over the queue's limit of 16"),
            "{error}"
        );
        assert!(error.contains("line 5: contains a NUL byte"), "{error}");
    }

    #[test]
    fn long_lists_of_problems_are_cut() {
        let data = "\u{0}\n".repeat(15);
        let error = parse(data.as_bytes()).unwrap_err().to_string();
        assert!(error.contains("15 bad line(s)"), "{error}");
        assert!(error.contains("... and 5 more"), "{error}");
    }

    #[test]
    fn empty_input_has_no_items() {
        let items = parse(b"").unwrap();
        assert!(items.items.is_empty());
        assert_eq!(items.blank, 0);
    }
}
