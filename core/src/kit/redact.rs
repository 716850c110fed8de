//! Addresses as they may be shown: in a log line, an error, a dry run or a
//! `Debug` output, a URL never carries its password or a token.

use std::fmt;

/// Query parameters whose values are hidden (matched case-insensitively, as
/// a part of the name: `sas_token`, `X-Amz-Signature`, `apikey`).
const SECRET_PARAMETERS: [&str; 7] = [
    "password",
    "passwd",
    "secret",
    "token",
    "signature",
    "key",
    "credential",
];

/// `url` with its password (and any secret-looking query parameter)
/// replaced by `***`. Text that is not a URL comes back unchanged.
///
/// ```
/// use forloop_core::kit::redact_url;
/// assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return redact_userinfo(text);
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let lower = key.to_ascii_lowercase();
                let hidden = SECRET_PARAMETERS.iter().any(|s| lower.contains(s));
                let value = if hidden {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let shown = url.to_string();
    // `Url` adds a `/` to an authority with no path; keep the user's form.
    match shown.strip_suffix('/') {
        Some(trimmed) if !text.ends_with('/') => trimmed.to_string(),
        _ => shown,
    }
}

/// The fallback for text `url` cannot parse: cut everything between `://`
/// and the last `@` of the authority.
fn redact_userinfo(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &text[..start], &text[start + at + 1..]),
        None => text.to_string(),
    }
}

/// A text that shows itself redacted, in `Display` and `Debug` alike: hold a
/// URL in one of these and no formatting of it can leak the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// Hold `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself, secrets included: for the connection, never a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_never_show() {
        for (text, shown) in [
            ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://user:pw@h", "rediss://user:***@h"),
            ("redis://h:6379", "redis://h:6379"),
            ("redis://user@h", "redis://user@h"),
            (
                "https://h/q?X-Amz-Signature=abc&region=eu",
                "https://h/q?X-Amz-Signature=***&region=eu",
            ),
            ("https://h/q?api_key=abc", "https://h/q?api_key=***"),
            ("redis", "redis"),
            ("weird://a:b@c d/x", "weird://***@c d/x"),
        ] {
            assert_eq!(redact_url(text), shown, "{text}");
        }
    }

    #[test]
    fn the_wrapper_redacts_in_display_and_debug() {
        let url = Redacted::new("redis://:hunter2@h");
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "redis://:hunter2@h");
    }
}
