//! Where a queue lives: `pubsub://PROJECT/NAME`, or a name in the project of
//! `GOOGLE_CLOUD_PROJECT`; the emulator and where backlog counts come from.
//! The environment is read once, in [`PubsubAddress::resolve`], and parsed
//! by the pure [`PubsubAddress::parse`].

use std::fmt;

use forloop_core::kit::address::{bad_address, host, parse_url, segments};
use forloop_core::kit::{Env, redact_url};
use forloop_core::{QueueError, QueueErrorKind};

use crate::monitoring;

/// The environment variable that overrides where backlog counts come from:
/// a Monitoring API base URL (`http://127.0.0.1:PORT` for a local fake, which
/// gets no token), or `off`.
pub const MONITORING_ENV: &str = "FORLOOP_MONITORING_ENDPOINT";
/// The variable that selects the emulator (`host:port`).
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";
/// The variable that names the project when the address does not.
pub const PROJECT_ENV: &str = "GOOGLE_CLOUD_PROJECT";

const FORMS: &str = "pubsub://PROJECT/NAME";

/// Where a queue's backlog counts come from (see [`monitoring`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BacklogSource {
    /// Cloud Monitoring on GCP; none on an emulator, which has no
    /// monitoring API.
    #[default]
    Auto,
    /// The Monitoring API at this base URL, emulator or not. Only `https://`
    /// endpoints are sent a token.
    Monitoring(String),
    /// None: counts are unknown and workers use their idle window.
    Off,
}

/// Where a queue lives.
#[derive(Clone, PartialEq, Eq)]
pub struct PubsubAddress {
    /// The GCP project.
    pub project: String,
    /// The queue name (the topic).
    pub name: String,
    /// `host:port` of an emulator, if one is used.
    pub emulator: Option<String>,
    /// Where backlog counts come from.
    pub backlog: BacklogSource,
}

impl fmt::Debug for PubsubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pubsub://{}/{}", self.project, self.name)?;
        if let Some(host) = &self.emulator {
            write!(f, " (emulator {host})")?;
        }
        match &self.backlog {
            BacklogSource::Auto => {}
            BacklogSource::Monitoring(url) => write!(f, " (monitoring {})", redact_url(url))?,
            BacklogSource::Off => write!(f, " (no backlog counts)")?,
        }
        Ok(())
    }
}

fn invalid(message: String) -> QueueError {
    QueueError::new(QueueErrorKind::Invalid, message)
}

impl PubsubAddress {
    /// From `pubsub://PROJECT/NAME`, or from `GOOGLE_CLOUD_PROJECT` and
    /// `name` when `url` is `None`; the emulator from `PUBSUB_EMULATOR_HOST`,
    /// the backlog source from [`MONITORING_ENV`].
    pub fn resolve(url: Option<&str>, name: &str) -> Result<Self, QueueError> {
        let env = Env::from_process(&[EMULATOR_ENV, PROJECT_ENV, MONITORING_ENV]);
        Self::parse(url, name, &env)
    }

    /// [`PubsubAddress::resolve`] with the environment given.
    pub fn parse(url: Option<&str>, name: &str, env: &Env) -> Result<Self, QueueError> {
        let emulator = env.get(EMULATOR_ENV).map(str::to_string);
        let (project, name) = match url {
            Some(spec) => {
                let url = parse_url(spec, &["pubsub"], FORMS)?;
                match (host(&url), &segments(&url)[..]) {
                    (Some(project), [queue]) => (project.to_string(), queue.to_string()),
                    _ => return Err(bad_address(spec, "lacks a project or a name", FORMS)),
                }
            }
            None => {
                let project = env
                    .get(PROJECT_ENV)
                    .map(str::to_string)
                    .or_else(|| emulator.as_ref().map(|_| "local-project".to_string()))
                    .ok_or_else(|| {
                        invalid(
                            "`--queue pubsub` needs a project: set GOOGLE_CLOUD_PROJECT, or write --queue pubsub://PROJECT/NAME"
                                .to_string(),
                        )
                    })?;
                (project, name.to_string())
            }
        };
        check_name(&name)?;
        let backlog = match env.get(MONITORING_ENV) {
            None => BacklogSource::Auto,
            Some("off") => BacklogSource::Off,
            Some(url) => BacklogSource::Monitoring(url.to_string()),
        };
        Ok(Self {
            project,
            name,
            emulator,
            backlog,
        })
    }

    /// Use an emulator at `host:port`.
    pub fn with_emulator(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Read backlog counts from the Monitoring API at `endpoint` (a base URL
    /// such as `http://127.0.0.1:9000`), even with an emulator.
    pub fn with_monitoring(mut self, endpoint: impl Into<String>) -> Self {
        self.backlog = BacklogSource::Monitoring(endpoint.into());
        self
    }

    /// Report unknown backlog counts (workers use their idle window).
    pub fn without_monitoring(mut self) -> Self {
        self.backlog = BacklogSource::Off;
        self
    }

    /// The Monitoring API base URL counts are read from, if any.
    pub fn monitoring_endpoint(&self) -> Option<&str> {
        match (&self.backlog, &self.emulator) {
            (BacklogSource::Monitoring(url), _) => Some(url),
            (BacklogSource::Auto, None) => Some(monitoring::DEFAULT_ENDPOINT),
            (BacklogSource::Auto, Some(_)) | (BacklogSource::Off, _) => None,
        }
    }

    /// The topic items are published to.
    pub(crate) fn topic(&self) -> String {
        self.name.clone()
    }
    /// The subscription workers pull from.
    pub(crate) fn subscription(&self) -> String {
        format!("{}-workers", self.name)
    }
    /// The dead-letter topic.
    pub(crate) fn dead_topic(&self) -> String {
        format!("{}-dead", self.name)
    }
    /// The subscription that keeps dead items.
    pub(crate) fn dead_subscription(&self) -> String {
        format!("{}-dead-keep", self.name)
    }
}

/// Pub/Sub names: 3 to 255 characters, starting with a letter, of letters,
/// digits and `-_.~+%`; the suffixes this driver adds must still fit.
fn check_name(name: &str) -> Result<(), QueueError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if name.len() < 3 || name.len() > 240 || !ok_chars || !starts || name.starts_with("goog") {
        return Err(invalid(format!(
            "`{name}` cannot name a Pub/Sub queue: use 3 to 240 letters, digits or -_.~+%, starting with a letter (not `goog`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_names_are_named() {
        let env = Env::empty();
        let a = PubsubAddress::parse(Some("pubsub://my-proj/videos"), "ignored", &env).unwrap();
        assert_eq!((a.project.as_str(), a.name.as_str()), ("my-proj", "videos"));
        assert_eq!(a.subscription(), "videos-workers");
        assert_eq!(a.dead_topic(), "videos-dead");
        for bad in ["pubsub://p", "pubsub:///n", "redis://x/y", "pubsub://p/a/b"] {
            let e = PubsubAddress::parse(Some(bad), "n", &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{e}");
        }
        let e = PubsubAddress::parse(Some("pubsub://p/9x"), "n", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`9x` cannot name a Pub/Sub queue"), "{e}");
    }

    #[test]
    fn project_emulator_and_counts_come_from_the_snapshot() {
        let e = PubsubAddress::parse(None, "jobs", &Env::empty()).unwrap_err();
        assert!(e.to_string().contains(PROJECT_ENV), "{e}");
        let env = Env::empty()
            .with(EMULATOR_ENV, "127.0.0.1:8085")
            .with(MONITORING_ENV, "off");
        let a = PubsubAddress::parse(None, "jobs", &env).unwrap();
        assert_eq!(a.project, "local-project");
        assert_eq!(a.emulator.as_deref(), Some("127.0.0.1:8085"));
        assert_eq!(a.backlog, BacklogSource::Off);
        let gcp = PubsubAddress::parse(None, "jobs", &Env::empty().with(PROJECT_ENV, "p")).unwrap();
        assert_eq!((gcp.project.as_str(), gcp.emulator), ("p", None));
    }

    #[test]
    fn counts_come_from_monitoring_on_gcp_only_unless_told() {
        let gcp = PubsubAddress {
            project: "p".to_string(),
            name: "jobs".to_string(),
            emulator: None,
            backlog: BacklogSource::Auto,
        };
        assert_eq!(
            gcp.monitoring_endpoint(),
            Some("https://monitoring.googleapis.com")
        );
        let emulated = gcp.clone().with_emulator("127.0.0.1:8085");
        assert_eq!(emulated.monitoring_endpoint(), None);
        let faked = emulated.with_monitoring("http://127.0.0.1:9");
        assert_eq!(faked.monitoring_endpoint(), Some("http://127.0.0.1:9"));
        assert!(format!("{faked:?}").contains("monitoring http://127.0.0.1:9"));
        assert_eq!(gcp.without_monitoring().monitoring_endpoint(), None);
    }
}
