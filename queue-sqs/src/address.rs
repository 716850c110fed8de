//! Where a queue lives: `sqs://NAME`, a queue URL, or a bare name; the
//! environment is read once, in [`SqsAddress::resolve`], and parsed by the
//! pure [`SqsAddress::parse`].

use std::fmt;
use std::time::Duration;

use forloop_core::kit::Env;
use forloop_core::kit::address::{bad_address, host, parse_url, segments};
use forloop_core::{QueueError, QueueErrorKind};

/// The variable that sets [`forloop_core::Capabilities::backlog_staleness`] (`90s` if unset).
pub const STALENESS_VAR: &str = "FORLOOP_SQS_STALENESS";

/// How long counts may lag when [`STALENESS_VAR`] is unset: AWS says its
/// approximate counts settle within about a minute of the last change; half
/// a minute more, so a reading at the edge of AWS's bound is not trusted.
pub const DEFAULT_STALENESS: Duration = Duration::from_secs(90);
/// The queue suffix of the dead-letter queue.
pub const DEAD_SUFFIX: &str = "-dead";

const FORMS: &str = "sqs://NAME or https://sqs.REGION.amazonaws.com/ACCOUNT/NAME";

/// Where a queue lives.
#[derive(Clone, PartialEq, Eq)]
pub struct SqsAddress {
    /// The queue name.
    pub name: String,
    /// The full queue URL, when the address gave one.
    pub url: Option<String>,
    /// The region the URL names, if any (else the usual AWS variables).
    pub region: Option<String>,
    /// How long backlog readings may lag (see [`STALENESS_VAR`]).
    pub staleness: Duration,
}

impl fmt::Debug for SqsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.url {
            Some(url) => write!(f, "{url}"),
            None => write!(f, "sqs://{}", self.name),
        }
    }
}

impl SqsAddress {
    /// From `sqs://NAME`, a queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`),
    /// or `name` when `url` is `None`; the staleness from [`STALENESS_VAR`].
    pub fn resolve(url: Option<&str>, name: &str) -> Result<Self, QueueError> {
        Self::parse(url, name, &Env::from_process(&[STALENESS_VAR]))
    }

    /// [`SqsAddress::resolve`] with the environment given.
    pub fn parse(url: Option<&str>, name: &str, env: &Env) -> Result<Self, QueueError> {
        let staleness = match env.get(STALENESS_VAR) {
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                QueueError::new(
                    QueueErrorKind::Invalid,
                    format!("{STALENESS_VAR}=`{text}` is not a duration like 60s or 500ms: {e}"),
                )
            })?,
            None => DEFAULT_STALENESS,
        };
        let (name, url, region) = match url {
            None => (name.to_string(), None, None),
            Some(spec) => {
                let url = parse_url(spec, &["sqs", "https", "http"], FORMS)?;
                match (url.scheme(), host(&url), &segments(&url)[..]) {
                    ("sqs", host, []) => (host.unwrap_or_default().to_string(), None, None),
                    ("https" | "http", Some(host), [_account, queue]) => (
                        queue.to_string(),
                        Some(spec.trim_end_matches('/').to_string()),
                        Self::region_of(host),
                    ),
                    _ => return Err(bad_address(spec, "is not an SQS queue address", FORMS)),
                }
            }
        };
        check_name(&name)?;
        Ok(Self {
            name,
            url,
            region,
            staleness,
        })
    }

    /// The region an SQS host names: `sqs.REGION.amazonaws.com`, or the
    /// legacy `REGION.queue.amazonaws.com`.
    fn region_of(host: &str) -> Option<String> {
        let labels: Vec<&str> = host.split('.').collect();
        match labels.as_slice() {
            ["sqs", region, "amazonaws", ..] | [region, "queue", "amazonaws", ..] => {
                Some(region.to_string())
            }
            _ => None,
        }
    }

    /// Whether `host` is an SQS endpoint (by its name, as AWS spells them).
    pub fn is_sqs_host(host: &str) -> bool {
        Self::region_of(host).is_some()
    }

    /// The dead-letter queue's name.
    pub fn dead_name(&self) -> String {
        format!("{}{DEAD_SUFFIX}", self.name)
    }

    /// What to do about a queue that does not exist.
    pub(crate) fn create_hint(&self) -> String {
        format!(
            "create it with `runner --queue sqs --name {} queue create` (same AWS account and region)",
            forloop_core::kit::sibling_owner(&self.name)
        )
    }
}

/// SQS names: 1 to 80 letters, digits, `-` or `_`; the `-dead` suffix must
/// still fit. FIFO queues (`.fifo`) need message groups forloop does not use.
fn check_name(name: &str) -> Result<(), QueueError> {
    if name.ends_with(".fifo") {
        return Err(QueueError::new(
            QueueErrorKind::Invalid,
            format!(
                "`{name}` is a FIFO queue; forloop uses standard SQS queues (FIFO ordering would hold a whole group behind one slow item)"
            ),
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 80 - DEAD_SUFFIX.len()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(QueueError::new(
            QueueErrorKind::Invalid,
            format!(
                "`{name}` cannot name an SQS queue: use 1 to {} letters, digits, - or _",
                80 - DEAD_SUFFIX.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_are_named() {
        let env = Env::empty();
        let a = SqsAddress::parse(Some("sqs://videos"), "ignored", &env).unwrap();
        assert_eq!((a.name.as_str(), a.url.as_deref()), ("videos", None));
        assert_eq!(a.dead_name(), "videos-dead");
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs_1";
        let b = SqsAddress::parse(Some(url), "ignored", &env).unwrap();
        assert_eq!(b.name, "jobs_1");
        assert_eq!(b.url.as_deref(), Some(url));
        assert_eq!(b.region.as_deref(), Some("eu-west-1"));
        let c = SqsAddress::parse(None, "from-name", &env).unwrap();
        assert_eq!(c.name, "from-name");
        let d = SqsAddress::parse(Some("sqs://MixedCase_1/"), "", &env).unwrap();
        assert_eq!(d.name, "MixedCase_1");
        for bad in [
            "sqs://",
            "https://sqs.x.amazonaws.com/only",
            "redis://x/y",
            "sqs://a b",
            "sqs://a/b",
        ] {
            let e = SqsAddress::parse(Some(bad), "n", &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains('`'), "{e}");
        }
        let e = SqsAddress::parse(Some("sqs://q.fifo"), "n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO"), "{e}");
        let long = "x".repeat(76);
        assert!(
            SqsAddress::parse(None, &long, &env).is_err(),
            "no room for -dead"
        );
    }

    #[test]
    fn staleness_comes_from_the_snapshot() {
        let env = Env::empty().with(STALENESS_VAR, "0s");
        let a = SqsAddress::parse(None, "q", &env).unwrap();
        assert_eq!(a.staleness, Duration::ZERO);
        assert_eq!(
            SqsAddress::parse(None, "q", &Env::empty())
                .unwrap()
                .staleness,
            Duration::from_secs(90),
            "AWS's own minute plus half a minute of margin"
        );
        let bad = Env::empty().with(STALENESS_VAR, "soon");
        let e = SqsAddress::parse(None, "q", &bad).unwrap_err().to_string();
        assert!(e.contains(STALENESS_VAR), "{e}");
    }

    #[test]
    fn debug_shows_the_address_only() {
        let a = SqsAddress::parse(Some("sqs://videos"), "", &Env::empty()).unwrap();
        assert_eq!(format!("{a:?}"), "sqs://videos");
    }
}
