//! What a serve process writes back: one line per item.
//!
//! A reply is a word, optionally followed by a space (or `:`) and a message:
//! `ok`, `ok VALUE`, `error MESSAGE`, `fatal MESSAGE`. The word is
//! case-insensitive; a trailing `\r` is ignored. After `ok` the rest of the
//! line is the item's value: JSON when it reads as JSON (`ok 42`, `ok
//! {"frames": 120}`), else the text as a JSON string. A line that starts
//! with `{` is read as JSON, `{"status": "ok" | "error" | "fatal",
//! "message": "...", "id": "...", "value": ..., "traceback": "..."}`; with
//! an `id`, the reply must be for the item that is out; a `traceback`
//! (the failure's, as the Python helper sends it) goes where a command's
//! stderr tail goes in the receipt.

use crate::TaskOutcome;
use crate::job::ItemValue;

/// The longest reply line read (16 MiB, room for a large value);
/// anything longer is not a reply.
pub(crate) const MAX_REPLY: usize = 16 << 20;

/// A reply: its outcome, and the item id it names (JSON replies only).
pub(crate) struct Reply {
    pub(crate) outcome: TaskOutcome,
    pub(crate) id: Option<String>,
}

/// The reply `line` stands for, or `None` when it is not a reply.
pub(crate) fn parse(line: &[u8]) -> Option<Reply> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).ok()?.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let (word, message) = match text.find(|c: char| c.is_whitespace() || c == ':') {
        Some(at) => (&text[..at], text[at + 1..].trim()),
        None => (text, ""),
    };
    let word = word.to_ascii_lowercase();
    if word == "ok" {
        let outcome = TaskOutcome::success();
        let outcome = match message {
            "" => outcome,
            text => outcome
                .with_value(ItemValue::parse(text).unwrap_or_else(|_| ItemValue::string(text))),
        };
        return Some(Reply { outcome, id: None });
    }
    let message = (!message.is_empty()).then(|| message.to_string());
    outcome(&word, message).map(|outcome| Reply { outcome, id: None })
}

fn parse_json(text: &str) -> Option<Reply> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let status = value.get("status")?.as_str()?.to_ascii_lowercase();
    let message = match value.get("message") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    let id = match value.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(other) => Some(other.to_string()),
    };
    let mut outcome = outcome(&status, message)?;
    if outcome.kind == crate::handler::OutcomeKind::Succeeded
        && let Some(value) = value.get("value").filter(|v| !v.is_null())
    {
        outcome = outcome.with_value(ItemValue::to_json(value).ok()?);
    }
    if let Some(traceback) = value.get("traceback").and_then(|t| t.as_str()) {
        let mut tail = crate::handler::stderr::Tail::default();
        tail.push(traceback.as_bytes());
        outcome = outcome.with_stderr_tail(tail.into_text());
    }
    Some(Reply { outcome, id })
}

fn outcome(word: &str, message: Option<String>) -> Option<TaskOutcome> {
    Some(match word {
        "ok" => TaskOutcome::success(),
        "error" => {
            TaskOutcome::failed(message.unwrap_or_else(|| "the process answered `error`".into()))
        }
        "fatal" => {
            TaskOutcome::fatal(message.unwrap_or_else(|| "the process answered `fatal`".into()))
        }
        _ => return None,
    })
}

/// `bytes` for a message: lossy UTF-8, trimmed, cut at 200 characters.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::OutcomeKind;

    fn kind(line: &str) -> Option<(OutcomeKind, Option<String>)> {
        parse(line.as_bytes()).map(|r| (r.outcome.kind, r.outcome.reason))
    }

    #[test]
    fn words_with_and_without_messages() {
        assert_eq!(kind("ok\n"), Some((OutcomeKind::Succeeded, None)));
        assert_eq!(kind("OK\r\n"), Some((OutcomeKind::Succeeded, None)));
        assert_eq!(
            kind("ok done in 3 ms\n"),
            Some((OutcomeKind::Succeeded, None))
        );

        assert_eq!(
            kind("error timeout talking to db\n"),
            Some((OutcomeKind::Failed, Some("timeout talking to db".into())))
        );
        assert_eq!(
            kind("fatal: no such video\n"),
            Some((OutcomeKind::Fatal, Some("no such video".into())))
        );
        assert_eq!(kind("error\n").map(|(k, _)| k), Some(OutcomeKind::Failed));
    }

    #[test]
    fn json_replies() {
        assert_eq!(
            kind(r#"{"status": "error", "message": "busy"}"#),
            Some((OutcomeKind::Failed, Some("busy".into())))
        );
        assert_eq!(
            kind(r#"{"status":"ok"}"#),
            Some((OutcomeKind::Succeeded, None))
        );
        assert_eq!(kind(r#"{"state":"ok"}"#), None);
        let reply = parse(br#"{"status":"ok","id":"17"}"#).unwrap();
        assert_eq!(reply.id.as_deref(), Some("17"));
    }

    fn value(line: &str) -> Option<String> {
        parse(line.as_bytes())
            .and_then(|r| r.outcome.value)
            .map(|v| v.as_str().to_string())
    }

    #[test]
    fn an_ok_carries_a_value_as_json_or_as_text() {
        assert_eq!(value("ok\n"), None);
        assert_eq!(value("ok 42\n").as_deref(), Some("42"));
        assert_eq!(
            value("ok {\"frames\": 120, \"title\": \"a b\"}\n").as_deref(),
            Some(r#"{"frames":120,"title":"a b"}"#)
        );
        assert_eq!(
            value("OK done in 3 ms\r\n").as_deref(),
            Some(r#""done in 3 ms""#)
        );
        assert_eq!(
            value(r#"{"status": "ok", "id": "7", "value": [1, {"x": null}]}"#).as_deref(),
            Some(r#"[1,{"x":null}]"#)
        );
        assert_eq!(value(r#"{"status": "ok", "value": null}"#), None);
        // Only a success has a value.
        assert_eq!(value(r#"{"status": "error", "value": 1}"#), None);
        assert_eq!(value("error 42"), None);
    }

    #[test]
    fn a_traceback_goes_where_stderr_goes() {
        let reply = parse(
            br#"{"status": "error", "message": "ValueError: bad", "traceback": "Traceback (most recent call last):\n  File \"w.py\", line 3, in handle\nValueError: bad\n"}"#,
        )
        .unwrap();
        assert_eq!(reply.outcome.reason.as_deref(), Some("ValueError: bad"));
        let tail = reply.outcome.stderr_tail.unwrap();
        assert!(
            tail.starts_with("Traceback (most recent call last):"),
            "{tail}"
        );
        assert!(tail.contains("line 3, in handle"), "{tail}");
    }

    #[test]
    fn anything_else_is_not_a_reply() {
        for line in [
            "",
            "\n",
            "loading model...",
            "okay",
            "0",
            "{not json",
            "okidoki\n",
        ] {
            assert_eq!(kind(line), None, "{line:?}");
        }
        assert!(parse(b"ok\xff\n").is_none());
    }
}
