//! What counts as a secret, defined once, and addresses as they may be
//! shown: in a log line, an error, a dry run or a `Debug` output, a URL
//! never carries its password or a token, and a Kubernetes manifest refuses
//! exactly what a log line hides (`forloop-cluster-k8s` asks
//! [`has_url_secret`] and [`is_secret_name`], the same rules
//! [`redact_url`] hides by).

use std::fmt;

/// Parts of a name that mark it as holding a credential wherever they
/// appear in it (case-insensitively): `DB_PASS`, `PASSWD`, `sas_token`,
/// `X-Amz-Signature`, `BASIC_AUTH_HEADER`, `X-Amz-Credential`.
const SECRET_PARTS: [&str; 6] = ["PASS", "SECRET", "TOKEN", "CREDENTIAL", "SIGNATURE", "AUTH"];

/// Words that mark a name as holding a credential when they are a whole
/// word of it (split at `-`, `_`, `.`): Google API keys (`key=`), Azure SAS
/// signatures (`sig=`), OAuth codes (`code=`). As parts they would hide
/// `keyword` or `codec`.
const SECRET_WORDS: [&str; 3] = ["KEY", "SIG", "CODE"];

/// Whether a name (a query parameter, an environment variable) holds a
/// credential: it contains one of the secret parts, or one of its words is
/// a secret word or ends in `KEY` (`API_KEY`, `apikey`, `AccessKey`,
/// `PRIVATE_KEY`).
///
/// ```
/// use forloop_core::kit::is_secret_name;
/// assert!(is_secret_name("AWS_SECRET_ACCESS_KEY") && is_secret_name("sig"));
/// assert!(!is_secret_name("region") && !is_secret_name("FORLOOP_QUEUE"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    SECRET_PARTS.iter().any(|part| name.contains(part))
        || name
            .split(['-', '_', '.'])
            .any(|word| SECRET_WORDS.contains(&word) || word.ends_with("KEY"))
}

/// Whether a value carries a credential in a URL: a password
/// (`scheme://user:pass@host`) or a query parameter whose name
/// [`is_secret_name`] (`?token=`, `&api_key=`, `?key=`, `&sig=`,
/// `X-Amz-Signature=`). Exactly what [`redact_url`] hides.
///
/// ```
/// use forloop_core::kit::has_url_secret;
/// assert!(has_url_secret("redis://:hunter2@h") && has_url_secret("https://h/?sig=x"));
/// assert!(!has_url_secret("redis://user@h:6379") && !has_url_secret("plain text"));
/// ```
pub fn has_url_secret(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let query = rest
        .split_once('?')
        .map_or("", |(_, query)| query.split('#').next().unwrap_or(""));
    password
        || query
            .split(['&', ';'])
            .any(|pair| is_secret_name(pair.split('=').next().unwrap_or("")))
}

/// `url` with its password and every query parameter whose name
/// [`is_secret_name`] replaced by `***`. Text that is not a URL comes back
/// unchanged.
///
/// ```
/// use forloop_core::kit::redact_url;
/// assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return redact_unparsed(text);
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some("***"));
    }
    if let Some(query) = url.query() {
        let hidden = redact_query(query);
        url.set_query(Some(&hidden));
    }
    let shown = url.to_string();
    // `Url` adds a `/` to an authority with no path; keep the user's form.
    match shown.strip_suffix('/') {
        Some(trimmed) if !text.ends_with('/') => trimmed.to_string(),
        _ => shown,
    }
}

/// A query string with the values of its secret parameters replaced by
/// `***`, split as [`has_url_secret`] splits it (at `&` and `;`), its
/// spelling otherwise kept.
fn redact_query(query: &str) -> String {
    let mut shown = String::with_capacity(query.len());
    for pair in query.split_inclusive(['&', ';']) {
        let (body, separator) = match pair.strip_suffix(['&', ';']) {
            Some(body) => (body, &pair[body.len()..]),
            None => (pair, ""),
        };
        match body.split_once('=') {
            Some((name, _)) if is_secret_name(name) => {
                shown.push_str(name);
                shown.push_str("=***");
            }
            _ => shown.push_str(body),
        }
        shown.push_str(separator);
    }
    shown
}

/// The fallback for text `url` cannot parse: cut everything between `://`
/// and the last `@` of the authority, and hide secret query values.
fn redact_unparsed(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    let text = match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &text[..start], &text[start + at + 1..]),
        None => text.to_string(),
    };
    match text.split_once('?') {
        Some((head, rest)) => {
            let (query, fragment) = rest
                .split_once('#')
                .map_or((rest, None), |(q, f)| (q, Some(f)));
            let mut shown = format!("{head}?{}", redact_query(query));
            if let Some(fragment) = fragment {
                shown.push('#');
                shown.push_str(fragment);
            }
            shown
        }
        None => text,
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
            ("https://h/c?sv=2024&sig=abc", "https://h/c?sv=2024&sig=***"),
            (
                "https://h/in?auth=abc;page=2",
                "https://h/in?auth=***;page=2",
            ),
            ("https://h/q?keyword=1&q=a+b", "https://h/q?keyword=1&q=a+b"),
            ("redis", "redis"),
            ("weird://a:b@c d/x", "weird://***@c d/x"),
            ("weird://c d/x?token=t#top", "weird://c d/x?token=***#top"),
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
