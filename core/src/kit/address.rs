//! Queue addresses: the environment read once, into an [`Env`], and URLs
//! parsed from it with the `url` crate by pure functions, so parsing is
//! testable without touching the process environment (object_store's
//! `from_env` step, separate from its URL parse).

use std::collections::BTreeMap;
use std::fmt;

use url::Url;

use super::redact::redact_url;
use crate::{QueueError, QueueErrorKind};

/// A snapshot of the environment variables a driver reads.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// No variables (for tests, and for addresses that must not depend on
    /// the environment).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The variables `names` as the process has them now. The one place a
    /// driver reads the environment.
    pub fn from_process(names: &[&str]) -> Self {
        let vars = names
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        Self { vars }
    }

    /// This snapshot with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// The value of `name`, trimmed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }
}

impl fmt::Debug for Env {
    /// Names and redacted values: a variable may hold a URL with a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.vars.iter().map(|(k, v)| (k, redact_url(v))))
            .finish()
    }
}

/// The error for an address that does not fit: names it (redacted) and
/// says what to write instead.
pub fn bad_address(spec: &str, problem: &str, forms: &str) -> QueueError {
    QueueError::new(
        QueueErrorKind::Invalid,
        format!("`{}` {problem}; write {forms}", redact_url(spec)),
    )
}

/// `spec` as a URL of one of `schemes`; `forms` (e.g. `pubsub://PROJECT/NAME`)
/// is what the error tells the user to write.
pub fn parse_url(spec: &str, schemes: &[&str], forms: &str) -> Result<Url, QueueError> {
    let url = Url::parse(spec)
        .map_err(|e| bad_address(spec, &format!("is not a URL ({e})"), forms).with_source(e))?;
    if !schemes.contains(&url.scheme()) {
        return Err(bad_address(
            spec,
            &format!(
                "is not an address of this backend (scheme `{}`)",
                url.scheme()
            ),
            forms,
        ));
    }
    Ok(url)
}

/// The URL's host, if it has a non-empty one.
pub fn host(url: &Url) -> Option<&str> {
    url.host_str().filter(|host| !host.is_empty())
}

/// The URL's path segments, without empty ones (`/a//b/` is `[a, b]`).
pub fn segments(url: &Url) -> Vec<&str> {
    url.path_segments()
        .map(|parts| parts.filter(|part| !part.is_empty()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_reads_only_what_it_was_given() {
        let env = Env::empty().with("A", "  x ").with("B", " ");
        assert_eq!(env.get("A"), Some("x"));
        assert_eq!(env.get("B"), None, "blank is unset");
        assert_eq!(env.get("C"), None);
        let shown = format!("{:?}", Env::empty().with("REDIS_URL", "redis://:pw@h"));
        assert!(!shown.contains("pw@"), "{shown}");
    }

    #[test]
    fn urls_parse_into_host_and_segments_and_bad_ones_are_named() {
        let url = parse_url("pubsub://proj/name/", &["pubsub"], "pubsub://P/N").unwrap();
        assert_eq!((host(&url), segments(&url)), (Some("proj"), vec!["name"]));
        let bare = parse_url("sqs://", &["sqs"], "sqs://NAME").unwrap();
        assert_eq!(host(&bare), None);
        let wrong = parse_url("redis://:pw@h/0", &["sqs"], "sqs://NAME").unwrap_err();
        let text = wrong.to_string();
        assert!(
            text.contains("`redis://:***@h/0`") && text.contains("write sqs://NAME"),
            "{text}"
        );
        assert!(parse_url("a b", &["sqs"], "sqs://NAME").is_err());
    }
}
