//! Items from a file or stdin: one per line, validated as a whole before
//! anything is published.
//!
//! CRLF and a missing final newline are handled; blank lines are skipped and
//! counted; invalid UTF-8, NUL bytes, items over the queue's payload limit
//! and, in command mode, items that cannot be a command's argument are errors
//! that name the line, and any of them refuses the whole input.

use std::fmt;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

/// The items of one input, in order, with their line numbers.
#[derive(Debug, Default)]
pub(crate) struct Items {
    /// Each item's text as bytes.
    pub(crate) items: Vec<Bytes>,
    /// The 1-based line number of each item.
    pub(crate) lines: Vec<usize>,
    /// Lines skipped because they were blank.
    pub(crate) blank: usize,
}

/// Why an input was refused. Lists up to ten bad lines.
#[derive(Debug)]
pub(crate) struct InputError {
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

/// What every item must fit, besides being a line of text.
#[derive(Debug, Clone)]
pub(crate) struct ItemRules {
    /// The queue's payload limit in bytes.
    pub(crate) max_payload: usize,
    /// In command mode, how the item becomes the command's arguments.
    pub(crate) command: Option<CommandFit>,
}

impl ItemRules {
    /// Items that only need to fit the queue (`submit`: no command known).
    pub(crate) fn queue(max_payload: usize) -> Self {
        Self {
            max_payload,
            command: None,
        }
    }

    /// Items that must fit the queue and become arguments of `command`;
    /// `allow_dash_items` lets items through that the program would read as
    /// options (`--allow-dash-items`).
    pub(crate) fn command(max_payload: usize, command: &[String], allow_dash_items: bool) -> Self {
        let mut fit = CommandFit::new(command);
        fit.option_slot &= !allow_dash_items;
        Self {
            max_payload,
            command: Some(fit),
        }
    }

    fn problem(&self, item: &[u8]) -> Option<String> {
        if item.len() > self.max_payload {
            return Some(format!(
                "the item is {} bytes, over the queue's limit of {} bytes",
                item.len(),
                self.max_payload
            ));
        }
        self.command.as_ref()?.problem(item)
    }
}

/// Linux's limit on one argument or environment string, NUL included
/// (`MAX_ARG_STRLEN`, 32 pages): a longer one fails `execve` with E2BIG,
/// on every attempt.
pub(crate) const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The variable each task gets its item in (see the command handler).
const ITEM_VARIABLE: &str = "FORLOOP_ITEM";

/// How an item of `n` bytes becomes strings of a command's `execve`: each
/// is `fixed + per_byte * n` bytes (an argument with `{}` in it, the
/// appended item, the `FORLOOP_ITEM` variable).
#[derive(Debug, Clone)]
pub(crate) struct CommandFit {
    /// (fixed bytes, copies of the item) of each string the item is in.
    strings: Vec<(usize, usize)>,
    /// Some argument begins with the item (`{}` at its start, or the item
    /// appended) with no `--` before it: an item starting with `-` would
    /// reach the program as an option (`--exec=...`), so it is refused.
    option_slot: bool,
    /// The program, for messages.
    program: String,
}

impl CommandFit {
    /// The fit of a command line as the user wrote it after `--`: each `{}`
    /// becomes the item, and with none the item is appended.
    pub(crate) fn new(command: &[String]) -> Self {
        let mut strings: Vec<(usize, usize)> = command
            .iter()
            .filter_map(|arg| {
                let copies = arg.matches(PLACEHOLDER).count();
                (copies > 0).then(|| (arg.len() - copies * PLACEHOLDER.len(), copies))
            })
            .collect();
        let appended = strings.is_empty();
        if appended {
            strings.push((0, 1));
        }
        strings.push((ITEM_VARIABLE.len() + 1, 1));
        // Arguments up to the first `--` (the conventional end of options;
        // the program's own name is not one of them).
        let options = command
            .iter()
            .skip(1)
            .take_while(|arg| arg.as_str() != "--");
        let ends_options = command.iter().skip(1).any(|arg| arg == "--");
        let option_slot =
            options.clone().any(|arg| arg.starts_with(PLACEHOLDER)) || (appended && !ends_options);
        Self {
            strings,
            option_slot,
            program: command.first().cloned().unwrap_or_default(),
        }
    }

    /// The largest string `item` becomes, with its NUL.
    fn longest(&self, item: &[u8]) -> usize {
        self.strings
            .iter()
            .map(|(fixed, copies)| fixed + copies * item.len() + 1)
            .max()
            .unwrap_or(0)
    }

    fn problem(&self, item: &[u8]) -> Option<String> {
        if self.option_slot && item.starts_with(b"-") && item != b"-" {
            return Some(format!(
                "the item starts with `-`, so `{}` would read it as an option, not as an item; \
                 put `--` before `{{}}` in the command if the program takes it, or pass \
                 --allow-dash-items if options are what the items are",
                self.program
            ));
        }
        let longest = self.longest(item);
        (longest > MAX_ARG_STRLEN).then(|| {
            format!(
                "the item is {} bytes and would make a {longest}-byte argument, over Linux's \
                 128 KiB limit per argument (MAX_ARG_STRLEN), so its command could never start; \
                 pass large data through a file and put the file's name in the item",
                item.len()
            )
        })
    }
}

/// What the command handler replaces by the item.
const PLACEHOLDER: &str = "{}";

/// Read items from `path`, or stdin when it is `-`.
pub(crate) fn read_items(path: &str, rules: &ItemRules) -> Result<Items, InputError> {
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
    parse_items(Bytes::from(data), &source_name, rules)
}

/// Split and check `data`, naming it `source_name` in errors.
pub(crate) fn parse_items(
    data: Bytes,
    source_name: &str,
    rules: &ItemRules,
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
            Ok(_) => rules.problem(raw),
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
        parse_items(
            Bytes::copy_from_slice(text),
            "`ids.txt`",
            &ItemRules::queue(16),
        )
    }

    fn parse_for(command: &[&str], text: &[u8]) -> Result<Items, InputError> {
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let rules = ItemRules::command(usize::MAX, &command, false);
        parse_items(Bytes::copy_from_slice(text), "`ids.txt`", &rules)
    }

    #[test]
    fn an_item_that_would_be_an_option_is_named_unless_an_option_cannot_start_there() {
        let items = b"ok\n--exec=rm\n-\n-n\n";
        for command in [
            &["dl", "{}"][..],
            &["dl", "-o", "out"],
            &["dl", "{}.mp4", "--"],
        ] {
            let error = parse_for(command, items).unwrap_err().to_string();
            assert!(error.contains("2 bad line(s)"), "{command:?}: {error}");
            assert!(
                error.contains("line 2: the item starts with `-`"),
                "{error}"
            );
            assert!(error.contains("line 4"), "{error}");
        }
        for command in [
            &["dl", "--", "{}"][..],
            &["dl", "-o", "out", "--"],
            &["dl", "--url={}"],
            &["dl", "x{}"],
        ] {
            assert!(parse_for(command, items).is_ok(), "{command:?}");
        }
        let command = vec!["dl".to_string(), "{}".to_string()];
        let rules = ItemRules::command(usize::MAX, &command, true);
        assert!(parse_items(Bytes::from_static(items), "`ids.txt`", &rules).is_ok());
    }

    #[test]
    fn an_item_that_cannot_be_an_argument_is_named() {
        // The FORLOOP_ITEM variable alone caps an item at the limit less
        // `FORLOOP_ITEM=` and the NUL.
        let most = MAX_ARG_STRLEN - "FORLOOP_ITEM=".len() - 1;
        let fits = "a".repeat(most);
        let over = "a".repeat(most + 1);
        let text = format!("{fits}\n{over}\n");
        let error = parse_for(&["echo", "{}"], text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("1 bad line(s)"), "{error}");
        assert!(
            error.contains("line 2: the item is 131059 bytes"),
            "{error}"
        );
        // Two copies in one argument halve what fits.
        let half = "a".repeat(MAX_ARG_STRLEN / 2);
        let error = parse_for(&["cp", "{}", "{}.bak{}"], format!("{half}\n").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(parse_for(&["cp", "{}"], format!("{half}\n").as_bytes()).is_ok());
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
