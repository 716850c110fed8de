//! Backlog counts from Cloud Monitoring.
//!
//! Pub/Sub itself has no count RPC. Cloud Monitoring publishes
//! `pubsub.googleapis.com/subscription/num_undelivered_messages`, a gauge
//! sampled every 60 s and visible up to 120 s after sampling, so the newest
//! point is normally up to about three minutes old when it can be read. This
//! module asks `GET /v3/projects/PROJECT/timeSeries` for the last
//! [`LOOKBACK`] of that metric for `NAME-workers` (and `NAME-dead-keep`, for
//! the dead count) and keeps the newest point.
//!
//! # What a reading means
//!
//! - The metric counts every unacked message: those waiting *and* those
//!   leased to a worker. forloop's [`Backlog`] splits the two, which Pub/Sub
//!   cannot, so a reading of `n > 0` is reported as `ready ~n` with
//!   `in_flight` unknown (the sum is what is known), and a reading of `0` as
//!   `ready ~0, in_flight ~0` (an empty sum has empty parts).
//! - The reading's [`Backlog::age`] is now minus the point's end time.
//! - A point older than [`STALENESS`] is not used: the counts are unknown.
//!   This bound is also the driver's `backlog_staleness`, so when the drain
//!   detector has seen zeros for a whole window, the last of them describes a
//!   moment after that window began.
//! - No points in the window is **not** an empty queue: a subscription made
//!   minutes ago has no points yet even if it holds a million items, and
//!   Monitoring may leave gaps. It reads as unknown, and the worker falls back
//!   to its idle window of empty pulls (never shorter than [`STALENESS`]).
//! - Errors (no `roles/monitoring.viewer`, API disabled, timeouts) also read
//!   as unknown, with one warning per kind of problem; they never fail the
//!   worker.
//!
//! Readings are cached for [`REFRESH`]: the metric changes once a minute, and
//! an idle worker asks after every empty pull. So an idle worker makes two
//! Monitoring reads per [`REFRESH`] (busy ones make none); for fleets of
//! hundreds of idle workers, check the project's Monitoring read quota.
//!
//! Auth: Application Default Credentials with the `monitoring.read` scope,
//! sent only to `https://` endpoints, with the credentials' quota project (if
//! any) as `x-goog-user-project`. Every call is bounded by [`TIMEOUT`].

// Without `auth` there is no HTTP client, and only the tests use the parsing
// and mapping below.
#![cfg_attr(not(feature = "auth"), allow(dead_code))]

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use forloop_core::{Backlog, Count};
use serde_json::Value;

/// The Monitoring API on GCP.
pub const DEFAULT_ENDPOINT: &str = "https://monitoring.googleapis.com";
/// The metric read.
pub const METRIC: &str = "pubsub.googleapis.com/subscription/num_undelivered_messages";
/// The oldest point believed: the 60 s sample period plus the documented
/// 120 s before a sample is visible, plus a minute of margin.
pub const STALENESS: Duration = Duration::from_secs(240);
/// How far back each query looks (longer than [`STALENESS`], so that an old
/// point can be told from none).
pub const LOOKBACK: Duration = Duration::from_secs(600);
/// How long one reading is reused.
pub const REFRESH: Duration = Duration::from_secs(30);
/// The bound on every Monitoring call (token fetch, request and body).
pub const TIMEOUT: Duration = Duration::from_secs(10);
#[cfg(feature = "auth")]
const SCOPES: [&str; 1] = ["https://www.googleapis.com/auth/monitoring.read"];

/// What Monitoring said about one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reading {
    /// The newest point: its value and end time.
    Point { value: u64, at: SystemTime },
    /// No points in the window.
    NoPoints,
    /// Monitoring could not be asked or answered with an error.
    Failed(Problem),
}

/// Why a reading has no number; `kind` decides when to warn again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub kind: &'static str,
    pub message: String,
}

impl Problem {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The query for `subscription` over `[now - LOOKBACK, now]`, as
/// `(path, [(name, value)])`.
pub(crate) fn query(
    project: &str,
    subscription: &str,
    now: SystemTime,
) -> (String, Vec<(&'static str, String)>) {
    let start = now.checked_sub(LOOKBACK).unwrap_or(SystemTime::UNIX_EPOCH);
    (
        format!("/v3/projects/{project}/timeSeries"),
        vec![
            (
                "filter",
                format!(
                    "metric.type=\"{METRIC}\" AND resource.type=\"pubsub_subscription\" \
                     AND resource.labels.project_id=\"{project}\" \
                     AND resource.labels.subscription_id=\"{subscription}\""
                ),
            ),
            (
                "interval.startTime",
                humantime::format_rfc3339_seconds(start).to_string(),
            ),
            (
                "interval.endTime",
                humantime::format_rfc3339_seconds(now).to_string(),
            ),
        ],
    )
}

/// The newest point of a `ListTimeSeriesResponse`. Several series (there
/// should be one) sharing the newest end time give the largest value: an
/// overcount delays a drain, an undercount could end it early.
pub(crate) fn parse(body: &[u8]) -> Reading {
    let bad = |why: String| {
        Reading::Failed(Problem::new(
            "response",
            format!("Cloud Monitoring sent a response this driver cannot read: {why}"),
        ))
    };
    let json: Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => return bad(format!("not JSON ({e})")),
    };
    let Some(series) = json.get("timeSeries") else {
        // An empty answer is `{}` (or only `unit`): nothing in the window.
        return Reading::NoPoints;
    };
    let Some(series) = series.as_array() else {
        return bad("`timeSeries` is not a list".to_string());
    };
    let mut newest: Option<(SystemTime, u64)> = None;
    for point in series
        .iter()
        .filter_map(|s| s.get("points").and_then(Value::as_array))
        .flatten()
    {
        let Some(end) = point.pointer("/interval/endTime").and_then(Value::as_str) else {
            return bad("a point has no interval.endTime".to_string());
        };
        let at = match humantime::parse_rfc3339(end) {
            Ok(at) => at,
            Err(e) => return bad(format!("endTime `{end}`: {e}")),
        };
        let value = match point.pointer("/value/int64Value") {
            // Proto3 JSON writes int64 as a string; accept a number too.
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        let Some(value) = value else {
            return bad(format!("the point at {end} has no int64Value"));
        };
        let value = u64::try_from(value).unwrap_or(0);
        newest = match newest {
            Some((t, v)) if t > at || (t == at && v >= value) => Some((t, v)),
            _ => Some((at, value)),
        };
    }
    match newest {
        Some((at, value)) => Reading::Point { value, at },
        None => Reading::NoPoints,
    }
}

fn age(at: SystemTime, now: SystemTime) -> Duration {
    // A point "from the future" (clock skew) is as fresh as can be.
    now.duration_since(at).unwrap_or(Duration::ZERO)
}

/// The fresh value of a reading, or why there is none.
fn fresh(reading: &Reading, now: SystemTime) -> Result<(u64, Duration), Problem> {
    match reading {
        Reading::Point { value, at } => {
            let age = age(*at, now);
            if age > STALENESS {
                Err(Problem::new(
                    "stale",
                    format!(
                        "the newest Cloud Monitoring point is {} s old, older than the {} s this driver trusts",
                        age.as_secs(),
                        STALENESS.as_secs()
                    ),
                ))
            } else {
                Ok((*value, age))
            }
        }
        Reading::NoPoints => Err(Problem::new(
            "no-points",
            format!(
                "Cloud Monitoring has no {METRIC} points in the last {} minutes \
                 (a subscription made minutes ago has none yet); that is not an empty queue",
                LOOKBACK.as_secs() / 60
            ),
        )),
        Reading::Failed(problem) => Err(problem.clone()),
    }
}

/// The [`Backlog`] from the workers' and the dead-keep subscriptions'
/// readings at `now`, and why the counts are unknown when they are.
pub(crate) fn to_backlog(
    workers: &Reading,
    dead: &Reading,
    now: SystemTime,
) -> (Backlog, Option<Problem>) {
    let dead = fresh(dead, now).map_or(Count::Unknown, |(n, _)| Count::Approximate(n));
    match fresh(workers, now) {
        Ok((n, age)) => (
            Backlog {
                ready: Count::Approximate(n),
                // Pub/Sub counts leased items with the waiting ones.
                in_flight: if n == 0 {
                    Count::Approximate(0)
                } else {
                    Count::Unknown
                },
                dead,
                age,
            },
            None,
        ),
        Err(problem) => (
            Backlog {
                ready: Count::Unknown,
                in_flight: Count::Unknown,
                dead,
                age: Duration::ZERO,
            },
            Some(problem),
        ),
    }
}

/// What to say about an HTTP error from Monitoring.
pub(crate) fn http_problem(status: u16, body: &[u8], project: &str) -> Problem {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message: String = json
        .as_ref()
        .and_then(|j| j.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| std::str::from_utf8(body).unwrap_or(""))
        .chars()
        .take(300)
        .collect();
    let disabled = json
        .as_ref()
        .and_then(|j| j.pointer("/error/details"))
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("SERVICE_DISABLED"))
        })
        || message.contains("has not been used")
        || message.contains("is disabled");
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    };
    match status {
        403 if disabled => Problem::new(
            "disabled",
            format!(
                "the Cloud Monitoring API is not enabled in project {project}{said}; enable it with \
                 `gcloud services enable monitoring.googleapis.com --project {project}`"
            ),
        ),
        401 | 403 => Problem::new(
            "permission",
            format!(
                "Cloud Monitoring refused to read metrics of project {project} (HTTP {status}){said}; \
                 the workers' service account needs roles/monitoring.viewer on the project \
                 (on GKE: the Google service account its Workload Identity maps to)"
            ),
        ),
        429 => Problem::new(
            "quota",
            format!("Cloud Monitoring's read quota is exhausted (HTTP 429){said}"),
        ),
        _ => Problem::new(
            "http",
            format!("Cloud Monitoring answered HTTP {status}{said}"),
        ),
    }
}

/// Logs each new kind of problem once, and the recovery after one.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: Mutex<Option<&'static str>>,
}

impl Warnings {
    /// Log `problem` (or its absence) if it differs from the last one.
    pub(crate) fn note(&self, problem: Option<&Problem>, subscription: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let kind = problem.map(|p| p.kind);
        if *last == kind {
            return;
        }
        match problem {
            Some(p) if p.kind == "no-points" || p.kind == "stale" => tracing::info!(
                subscription,
                "backlog counts unknown: {}; workers take the queue as drained after an idle window of empty pulls",
                p.message
            ),
            Some(p) => tracing::warn!(
                subscription,
                "backlog counts unknown: {}; workers take the queue as drained after an idle window of empty pulls",
                p.message
            ),
            None => tracing::info!(
                subscription,
                "backlog counts come from Cloud Monitoring (approximate)"
            ),
        }
        *last = kind;
    }
}

#[cfg(feature = "auth")]
pub(crate) use reader::Monitor;

#[cfg(feature = "auth")]
mod reader {
    use std::sync::Arc;
    use std::time::{Instant, SystemTime};

    use forloop_core::Backlog;
    use token_source::TokenSource;

    use super::{Problem, REFRESH, Reading, SCOPES, TIMEOUT, Warnings};

    /// A token source and the quota project of its credentials.
    type Credentials = (Arc<dyn TokenSource>, Option<String>);

    /// Reads one queue's backlog from Cloud Monitoring.
    pub(crate) struct Monitor {
        endpoint: String,
        project: String,
        workers: String,
        dead: String,
        http: reqwest::Client,
        /// Only `https` endpoints get a token: none is ever sent in clear.
        needs_token: bool,
        /// The token source and the credentials' quota project (user
        /// credentials from `gcloud auth application-default login` bill
        /// API calls to it).
        tokens: tokio::sync::Mutex<Option<Credentials>>,
        /// The last readings and when they were taken; the lock also makes
        /// concurrent callers share one fetch.
        cache: tokio::sync::Mutex<Option<(Instant, Reading, Reading)>>,
        warnings: Warnings,
    }

    impl std::fmt::Debug for Monitor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Monitor")
                .field("endpoint", &self.endpoint)
                .field("subscription", &self.workers)
                .finish_non_exhaustive()
        }
    }

    impl Monitor {
        pub(crate) fn new(
            endpoint: &str,
            project: &str,
            workers: String,
            dead: String,
        ) -> Result<Self, String> {
            let http = reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the Cloud Monitoring HTTP client: {e}"))?;
            Ok(Self {
                endpoint: endpoint.trim_end_matches('/').to_string(),
                project: project.to_string(),
                workers,
                dead,
                needs_token: endpoint.starts_with("https://"),
                http,
                tokens: tokio::sync::Mutex::new(None),
                cache: tokio::sync::Mutex::new(None),
                warnings: Warnings::default(),
            })
        }

        pub(crate) async fn backlog(&self) -> Backlog {
            let (workers, dead) = {
                let mut cache = self.cache.lock().await;
                match &*cache {
                    Some((at, workers, dead)) if at.elapsed() < REFRESH => {
                        (workers.clone(), dead.clone())
                    }
                    _ => {
                        let (workers, dead) =
                            tokio::join!(self.read(&self.workers), self.read(&self.dead));
                        *cache = Some((Instant::now(), workers.clone(), dead.clone()));
                        (workers, dead)
                    }
                }
            };
            let (backlog, problem) = super::to_backlog(&workers, &dead, SystemTime::now());
            self.warnings.note(problem.as_ref(), &self.workers);
            backlog
        }

        /// A bearer token, and the quota project to name, if any.
        async fn token(&self) -> Result<(String, Option<String>), Problem> {
            let credentials = |e: String| {
                Problem::new(
                    "credentials",
                    format!(
                        "no token for Cloud Monitoring from Application Default Credentials: {e}"
                    ),
                )
            };
            let mut tokens = self.tokens.lock().await;
            let (source, quota) = match &*tokens {
                Some((source, quota)) => (Arc::clone(source), quota.clone()),
                None => {
                    let config = gcloud_auth::project::Config::default().with_scopes(&SCOPES);
                    let provider = tokio::time::timeout(
                        TIMEOUT,
                        gcloud_auth::token::DefaultTokenSourceProvider::new(config),
                    )
                    .await
                    .map_err(|_| credentials(format!("no answer within {TIMEOUT:?}")))?
                    .map_err(|e| credentials(e.to_string()))?;
                    let source = token_source::TokenSourceProvider::token_source(&provider);
                    let quota = provider
                        .source_credentials
                        .as_ref()
                        .and_then(|c| c.quota_project_id.clone());
                    *tokens = Some((Arc::clone(&source), quota.clone()));
                    (source, quota)
                }
            };
            drop(tokens);
            let token = tokio::time::timeout(TIMEOUT, source.token())
                .await
                .map_err(|_| credentials(format!("no answer within {TIMEOUT:?}")))?
                .map_err(|e| credentials(e.to_string()))?;
            Ok((token, quota))
        }

        async fn read(&self, subscription: &str) -> Reading {
            match self.try_read(subscription).await {
                Ok(reading) => reading,
                Err(problem) => Reading::Failed(problem),
            }
        }

        async fn try_read(&self, subscription: &str) -> Result<Reading, Problem> {
            let (path, pairs) = super::query(&self.project, subscription, SystemTime::now());
            let mut url =
                reqwest::Url::parse(&format!("{}{path}", self.endpoint)).map_err(|e| {
                    Problem::new(
                        "endpoint",
                        format!(
                            "the Cloud Monitoring endpoint `{}` is not a URL: {e}",
                            self.endpoint
                        ),
                    )
                })?;
            url.query_pairs_mut().extend_pairs(pairs);
            let mut request = self.http.get(url).timeout(TIMEOUT);
            if self.needs_token {
                let (token, quota) = self.token().await?;
                request = request.header(reqwest::header::AUTHORIZATION, token);
                if let Some(quota) = quota {
                    request = request.header("x-goog-user-project", quota);
                }
            }
            let unreachable = |e: reqwest::Error| {
                Problem::new(
                    "unreachable",
                    format!(
                        "cannot reach Cloud Monitoring at {}: {}",
                        self.endpoint,
                        e.without_url()
                    ),
                )
            };
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let body = response.bytes().await.map_err(unreachable)?;
            if !status.is_success() {
                return Err(super::http_problem(status.as_u16(), &body, &self.project));
            }
            Ok(super::parse(&body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds_ago: u64, now: SystemTime) -> SystemTime {
        now - Duration::from_secs(seconds_ago)
    }

    #[test]
    fn the_query_names_the_metric_the_subscription_and_the_window() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let (path, pairs) = query("proj", "jobs-workers", now);
        assert_eq!(path, "/v3/projects/proj/timeSeries");
        let get = |name| &pairs.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get("filter").contains(&format!("metric.type=\"{METRIC}\"")));
        assert!(
            get("filter").contains("resource.labels.subscription_id=\"jobs-workers\""),
            "{}",
            get("filter")
        );
        assert_eq!(get("interval.startTime"), "2026-11-28T11:50:00Z");
        assert_eq!(get("interval.endTime"), "2026-11-28T12:00:00Z");
    }

    #[test]
    fn the_newest_point_wins_whatever_the_order() {
        let body = br#"{"timeSeries":[{"points":[
            {"interval":{"startTime":"2026-11-28T11:58:00Z","endTime":"2026-11-28T11:58:00Z"},"value":{"int64Value":"7"}},
            {"interval":{"endTime":"2026-11-28T11:59:00.500Z"},"value":{"int64Value":"42"}},
            {"interval":{"endTime":"2026-11-28T11:57:00Z"},"value":{"int64Value":9}}
        ]}]}"#;
        assert_eq!(
            parse(body),
            Reading::Point {
                value: 42,
                at: humantime::parse_rfc3339("2026-11-28T11:59:00.500Z").unwrap()
            }
        );
        assert_eq!(parse(b"{}"), Reading::NoPoints);
        assert_eq!(parse(br#"{"unit":"1"}"#), Reading::NoPoints);
        assert_eq!(parse(br#"{"timeSeries":[]}"#), Reading::NoPoints);
        assert!(matches!(parse(b"<html>"), Reading::Failed(p) if p.kind == "response"));
        assert!(matches!(
            parse(br#"{"timeSeries":[{"points":[{"interval":{"endTime":"2026-11-28T11:59:00Z"},"value":{"doubleValue":1.5}}]}]}"#),
            Reading::Failed(p) if p.message.contains("int64Value")
        ));
    }

    #[test]
    fn a_count_includes_leased_items_so_in_flight_is_known_only_at_zero() {
        let now = SystemTime::now();
        let dead = Reading::Point {
            value: 2,
            at: at(90, now),
        };
        let (busy, problem) = to_backlog(
            &Reading::Point {
                value: 5,
                at: at(70, now),
            },
            &dead,
            now,
        );
        assert_eq!(problem, None);
        assert_eq!(busy.ready, Count::Approximate(5));
        assert_eq!(busy.in_flight, Count::Unknown);
        assert_eq!(busy.dead, Count::Approximate(2));
        assert_eq!(busy.age, Duration::from_secs(70));
        assert_eq!(busy.is_empty(), Some(false));

        let (empty, _) = to_backlog(
            &Reading::Point {
                value: 0,
                at: at(10, now),
            },
            &Reading::NoPoints,
            now,
        );
        assert_eq!(
            (empty.ready, empty.in_flight, empty.dead),
            (Count::Approximate(0), Count::Approximate(0), Count::Unknown)
        );
        assert_eq!(empty.is_empty(), Some(true));
    }

    #[test]
    fn no_points_or_old_points_are_unknown_never_empty() {
        let now = SystemTime::now();
        for workers in [
            Reading::NoPoints,
            Reading::Point {
                value: 0,
                at: at(STALENESS.as_secs() + 1, now),
            },
        ] {
            let (backlog, problem) = to_backlog(&workers, &Reading::NoPoints, now);
            assert_eq!(backlog.is_empty(), None, "{workers:?}");
            assert_eq!(backlog.ready, Count::Unknown);
            assert!(problem.is_some());
        }
        let (backlog, problem) = to_backlog(
            &Reading::Point {
                value: 0,
                at: at(STALENESS.as_secs(), now),
            },
            &Reading::NoPoints,
            now,
        );
        assert_eq!((backlog.is_empty(), problem), (Some(true), None));
    }

    #[test]
    fn permission_and_disabled_api_say_what_to_do() {
        let denied = http_problem(
            403,
            br#"{"error":{"code":403,"message":"Permission monitoring.timeSeries.list denied","status":"PERMISSION_DENIED"}}"#,
            "proj",
        );
        assert_eq!(denied.kind, "permission");
        assert!(
            denied.message.contains("roles/monitoring.viewer"),
            "{}",
            denied.message
        );
        assert!(
            denied
                .message
                .contains("Permission monitoring.timeSeries.list denied")
        );
        let disabled = http_problem(
            403,
            br#"{"error":{"code":403,"message":"Cloud Monitoring API has not been used in project 12 before or it is disabled.","details":[{"reason":"SERVICE_DISABLED"}]}}"#,
            "proj",
        );
        assert_eq!(disabled.kind, "disabled");
        assert!(
            disabled
                .message
                .contains("gcloud services enable monitoring.googleapis.com --project proj")
        );
        assert_eq!(http_problem(500, b"oops", "proj").kind, "http");
    }
}
