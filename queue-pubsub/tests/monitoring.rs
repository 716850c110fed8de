//! Backlog counts from Cloud Monitoring, against a loopback fake of the
//! Monitoring API while Pub/Sub itself is the official emulator.
#![cfg(feature = "auth")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use forloop_core::{Count, QueueConfig, WorkQueue};
use forloop_queue_pubsub::monitoring::{LOOKBACK, METRIC, STALENESS};
use forloop_queue_pubsub::{PubsubAddress, PubsubQueue};
use forloop_testkit::servers::PubsubEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: Vec<(String, String)>,
    authorization: bool,
}

impl Seen {
    fn get(&self, name: &str) -> &str {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no `{name}` in {:?}", self.query))
    }
}

/// Answers each request with `respond(subscription_id)`: (status, body).
struct FakeMonitoring {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeMonitoring {
    async fn start(respond: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let respond = Arc::clone(&respond);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let url = reqwest::Url::parse(&format!("http://fake{target}")).unwrap();
                    let query: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    let filter = query
                        .iter()
                        .find(|(k, _)| k == "filter")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    let subscription = filter
                        .split("resource.labels.subscription_id=\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or("")
                        .to_string();
                    log.lock().unwrap().push(Seen {
                        path: url.path().to_string(),
                        authorization: head.to_ascii_lowercase().contains("\nauthorization:"),
                        query,
                    });
                    let (status, body) = respond(&subscription);
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn points(values: &[(u64, u64)]) -> String {
    let now = SystemTime::now();
    let points: Vec<String> = values
        .iter()
        .map(|(seconds_ago, value)| {
            let end = rfc3339(now - Duration::from_secs(*seconds_ago));
            format!(
                r#"{{"interval":{{"startTime":"{end}","endTime":"{end}"}},"value":{{"int64Value":"{value}"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"timeSeries":[{{"metric":{{"type":"{METRIC}"}},"resource":{{"type":"pubsub_subscription"}},"metricKind":"GAUGE","valueType":"INT64","points":[{}]}}]}}"#,
        points.join(",")
    )
}

async fn queue(name: &str, monitoring: &str) -> PubsubQueue {
    let address = PubsubAddress::resolve(Some(&format!("pubsub://monitored/{name}")), "")
        .unwrap()
        .with_emulator(PubsubEmulator::shared().host())
        .with_monitoring(monitoring);
    let config = QueueConfig::new(name).with_lease(Duration::from_secs(10));
    PubsubQueue::create(&address, &config).await.unwrap();
    PubsubQueue::connect(address).await.unwrap()
}

/// Captures what the driver logs.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || logs.clone())
                .with_ansi(false)
                .finish(),
        )
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

#[tokio::test]
async fn the_backlog_is_the_newest_monitoring_point() {
    let fake = FakeMonitoring::start(|subscription| match subscription {
        "mon-count-workers" => (200, points(&[(50, 17), (110, 3), (170, 9)])),
        "mon-count-dead-keep" => (200, points(&[(80, 2)])),
        other => (404, format!("unexpected subscription `{other}`")),
    })
    .await;
    let queue = queue("mon-count", &fake.url).await;
    assert!(queue.monitored());
    assert_eq!(queue.capabilities().backlog_staleness, STALENESS);

    let before = SystemTime::now();
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.ready, Count::Approximate(17), "{backlog:?}");
    // Pub/Sub counts leased items with the waiting ones: no split is known.
    assert_eq!(backlog.in_flight, Count::Unknown);
    assert_eq!(backlog.dead, Count::Approximate(2));
    assert!(
        backlog.age >= Duration::from_secs(49) && backlog.age <= Duration::from_secs(60),
        "the newest point is ~50 s old, got {:?}",
        backlog.age
    );
    assert_eq!(backlog.is_empty(), Some(false));

    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one query per subscription: {seen:?}");
    for request in &seen {
        assert_eq!(request.path, "/v3/projects/monitored/timeSeries");
        assert!(
            !request.authorization,
            "no token goes to an http:// endpoint"
        );
        let filter = request.get("filter");
        assert!(
            filter.contains(&format!("metric.type=\"{METRIC}\"")),
            "{filter}"
        );
        assert!(
            filter.contains("resource.labels.project_id=\"monitored\""),
            "{filter}"
        );
        let start = humantime::parse_rfc3339(request.get("interval.startTime")).unwrap();
        let end = humantime::parse_rfc3339(request.get("interval.endTime")).unwrap();
        assert_eq!(end.duration_since(start).unwrap(), LOOKBACK);
        let skew = end
            .duration_since(before)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .unwrap();
        assert!(
            skew < Duration::from_secs(5),
            "the window ends now: {end:?}"
        );
    }
    let mut subscriptions: Vec<String> = seen
        .iter()
        .map(|r| {
            r.get("filter")
                .split("subscription_id=")
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    subscriptions.sort();
    assert_eq!(
        subscriptions,
        ["\"mon-count-dead-keep\"", "\"mon-count-workers\""]
    );

    // A second look within the refresh period reuses the reading.
    assert_eq!(queue.backlog().await.unwrap().ready, Count::Approximate(17));
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn a_zero_reading_is_an_approximately_empty_queue() {
    let fake = FakeMonitoring::start(|_| (200, points(&[(30, 0), (90, 4)]))).await;
    let queue = queue("mon-zero", &fake.url).await;
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(
        (backlog.ready, backlog.in_flight, backlog.dead),
        (
            Count::Approximate(0),
            Count::Approximate(0),
            Count::Approximate(0)
        )
    );
    assert_eq!(backlog.is_empty(), Some(true));
}

#[tokio::test]
async fn permission_denied_reads_unknown_and_says_which_role_once() {
    let fake = FakeMonitoring::start(|_| {
        (
            403,
            r#"{"error":{"code":403,"message":"Permission monitoring.timeSeries.list denied (or the resource may not exist).","status":"PERMISSION_DENIED"}}"#
                .to_string(),
        )
    })
    .await;
    let logs = Logs::default();
    let _guard = logs.capture();
    let queue = queue("mon-denied", &fake.url).await;
    for _ in 0..3 {
        let backlog = queue
            .backlog()
            .await
            .expect("a Monitoring error never fails the worker");
        assert_eq!(
            (backlog.ready, backlog.in_flight, backlog.dead),
            (Count::Unknown, Count::Unknown, Count::Unknown)
        );
        assert_eq!(backlog.is_empty(), None);
    }
    let text = logs.text();
    assert_eq!(
        text.matches("roles/monitoring.viewer").count(),
        1,
        "one warning, naming the role: {text}"
    );
    assert!(text.contains("WARN"), "{text}");
    assert!(
        text.contains("Permission monitoring.timeSeries.list denied"),
        "{text}"
    );
}

#[tokio::test]
async fn no_points_or_stale_points_are_unknown_not_empty() {
    let fake = FakeMonitoring::start(|subscription| match subscription {
        // A new (or long idle) subscription: Monitoring has nothing.
        "mon-none-workers" => (200, "{}".to_string()),
        // Points exist but the newest is older than the driver trusts.
        _ => (200, points(&[(STALENESS.as_secs() + 60, 0)])),
    })
    .await;
    let logs = Logs::default();
    let _guard = logs.capture();
    let none = queue("mon-none", &fake.url).await;
    let backlog = none.backlog().await.unwrap();
    assert_eq!(
        (backlog.ready, backlog.in_flight),
        (Count::Unknown, Count::Unknown)
    );
    assert_eq!(backlog.is_empty(), None);
    assert!(
        logs.text().contains("not an empty queue"),
        "{}",
        logs.text()
    );

    let stale = queue("mon-stale", &fake.url).await;
    let backlog = stale.backlog().await.unwrap();
    assert_eq!(backlog.is_empty(), None, "{backlog:?}");
    assert_eq!(backlog.dead, Count::Unknown);
}

#[tokio::test]
async fn an_unreachable_endpoint_reads_unknown() {
    let port = forloop_testkit::servers::free_port();
    let queue = queue("mon-gone", &format!("http://127.0.0.1:{port}")).await;
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.is_empty(), None);
}

#[tokio::test]
async fn the_emulator_alone_has_no_counts() {
    let address = PubsubAddress::resolve(Some("pubsub://monitored/mon-emulator"), "")
        .unwrap()
        .with_emulator(PubsubEmulator::shared().host());
    assert_eq!(address.monitoring_endpoint(), None);
    let config = QueueConfig::new("mon-emulator").with_lease(Duration::from_secs(10));
    PubsubQueue::create(&address, &config).await.unwrap();
    let queue = PubsubQueue::connect(address).await.unwrap();
    assert!(!queue.monitored());
    assert_eq!(queue.capabilities().backlog_staleness, Duration::ZERO);
    let backlog = queue.backlog().await.unwrap();
    assert_eq!(backlog.is_empty(), None);
}
