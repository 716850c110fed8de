//! What a serve process writes back: one line per item.
//!
//! A reply is a word, optionally followed by a space (or `:`) and a message:
//! `ok`, `error MESSAGE`, `fatal MESSAGE`. The word is case-insensitive;
//! a trailing `\r` is ignored. A line that starts with `{` is read as JSON,
//! `{"status": "ok" | "error" | "fatal", "message": "...", "id": "..."}`;
//! with an `id`, the reply must be for the item that is out.

use crate::TaskOutcome;

/// The longest reply line read; anything longer is not a reply.
pub(crate) const MAX_REPLY: usize = 64 * 1024;

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
    let message = (!message.is_empty()).then(|| message.to_string());
    outcome(&word.to_ascii_lowercase(), message).map(|outcome| Reply { outcome, id: None })
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
    outcome(&status, message).map(|outcome| Reply { outcome, id })
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
