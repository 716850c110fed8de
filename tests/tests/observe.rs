//! Seeing a job while it runs: the workers' Prometheus metrics scraped
//! during a run on Redis and read with a strict text-format parser; the
//! dashboard followed in headless Chromium on Redis and on the Pub/Sub
//! emulator; bad input to the metrics and dashboard flags.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use forloop_tests::servers::{PubsubEmulator, RedisServer};
use forloop_tests::{runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn unique(test: &str) -> String {
    format!("obs-{test}-{}", std::process::id())
}

fn on(url: &str, name: &str) -> Command {
    let mut command = runner();
    command.args(["--queue", url, "--name", name]);
    command
}

/// One sample: its metric name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus / OpenMetrics text format: every line
/// is a `# HELP`, `# TYPE`, `# UNIT` or `# EOF` comment or a sample
/// `name{label="value",...} number`; anything else fails the test, as does
/// a sample whose family was not declared with `# TYPE` first, a name
/// that breaks Prometheus' rules, or a missing `# EOF`.
fn parse(text: &str) -> Vec<Sample> {
    fn is_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("a family name"));
            assert!(is_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let ty = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "unknown"].contains(&ty),
                        "bad type in {line:?}"
                    );
                    assert!(
                        families.insert(name.to_string(), ty.to_string()).is_none(),
                        "family declared twice: {line:?}"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("a sample: NAME VALUE");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair.split_once('=').expect("label=\"value\"");
                    assert!(is_name(key), "bad label name in {line:?}");
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("a quoted label value");
                    labels.insert(key.to_string(), value.to_string());
                }
                (name, labels)
            }
            None => (head, BTreeMap::new()),
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = families
            .keys()
            .find(|f| {
                name == f.as_str()
                    || ["_total", "_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("a sample of no declared family: {line:?}"));
        if families[family] == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "a counter without _total: {line:?}"
            );
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert!(eof, "no # EOF at the end:\n{text}");
    samples
}

/// The value of `name` with exactly `labels` (0 when absent: a family with
/// labels shows a series only once it was touched).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map_or(0.0, |s| s.value)
}

/// GET `path` from `addr` with plain HTTP/1.0: (status line, headers and body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics address");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    (head.to_string(), body.to_string())
}

fn scrape(addr: &str) -> Vec<Sample> {
    let (head, body) = get(addr, "/metrics");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse(&body)
}

/// A worker whose stderr lines arrive on a channel.
struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Worker {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner work");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Wait (at most 60 s) for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} from the worker; it said:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// The address the worker logged for its metrics.
    fn metrics_addr(&mut self) -> String {
        let line = self.wait_for("metrics at http://");
        let start = line.find("http://").unwrap() + "http://".len();
        let rest = &line[start..];
        rest[..rest.find("/metrics").expect("/metrics in the line")].to_string()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn worker_metrics_rise_during_a_run_and_add_up_to_the_ledgers_count() {
    let server = RedisServer::shared();
    let name = unique("metrics");
    let job = "metrics-job";
    let dir = scratch("metrics");
    let total = 240;
    let items: Vec<String> = (0..total).map(|i| format!("item-{i}")).collect();
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n") + "\n").unwrap();
    let out = dir.join("out.jsonl");
    let output = on(server.url(), &name)
        .args(["submit", "--job", job])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut workers: Vec<Worker> = (0..2)
        .map(|_| {
            let mut command = on(server.url(), &name);
            command
                .args([
                    "work",
                    "--job",
                    job,
                    "-j",
                    "3",
                    "--metrics-addr",
                    "127.0.0.1:0",
                ])
                .args(["--metrics-linger", "60s", "--", RECORD])
                .arg(&out)
                .env("RECORD_SLEEP_MS", "15");
            Worker::start(command)
        })
        .collect();
    let addrs: Vec<String> = workers.iter_mut().map(Worker::metrics_addr).collect();

    // Scraped while items settle: every counter only rises, and some
    // scrape sees the job part-way.
    let mut last = vec![0.0; addrs.len()];
    let mut part_way = false;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let mut sum = 0.0;
        for (i, addr) in addrs.iter().enumerate() {
            let samples = scrape(addr);
            let done = value(&samples, "forloop_items_done_total", &[]);
            let started = value(&samples, "forloop_items_started_total", &[]);
            assert!(done >= last[i], "done fell from {} to {done}", last[i]);
            assert!(started >= done, "started {started} < done {done}");
            last[i] = done;
            sum += done;
        }
        if sum > 0.0 && sum < total as f64 {
            part_way = true;
        }
        if sum >= total as f64 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the run did not end: done {sum} of {total}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(part_way, "no scrape saw the job part-way");

    // Both workers past their loop: the counts are final.
    for worker in &mut workers {
        worker.wait_for("serving the last metrics");
    }
    let finals: Vec<Vec<Sample>> = addrs.iter().map(|a| scrape(a)).collect();
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
        finals.iter().map(|s| value(s, name, labels)).sum()
    };
    let status = on(server.url(), &name)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let ledger_done = status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == job)
        .expect("the job in status")["done"]
        .as_u64()
        .unwrap();
    assert_eq!(ledger_done, total as u64);
    assert_eq!(sum("forloop_items_done_total", &[]), ledger_done as f64);
    assert_eq!(sum("forloop_items_dead_total", &[]), 0.0);
    assert_eq!(
        sum("forloop_task_duration_seconds_count", &[]),
        total as f64
    );
    assert_eq!(sum("forloop_slots_busy", &[]), 0.0);
    assert_eq!(sum("forloop_slots_free", &[]), 6.0);
    let receipts = sum(
        "forloop_queue_calls_total",
        &[("operation", "record_then_ack")],
    );
    assert!(receipts >= 1.0, "no record_then_ack counted");
    assert!(sum("forloop_queue_calls_total", &[("operation", "pull")]) >= 2.0);
    assert_eq!(
        sum(
            "forloop_queue_call_duration_seconds_count",
            &[("operation", "record_then_ack")]
        ),
        receipts
    );
    // No item and no queue address on the page.
    for addr in &addrs {
        let (_, body) = get(addr, "/metrics");
        assert!(!body.contains("item-1"), "an item on the metrics page");
        assert!(
            !body.contains(server.url()),
            "the queue's address on the metrics page"
        );
    }
}

/// `output` exited with `code` and its stderr names every one of `needles`.
fn assert_refused(output: &std::process::Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
}

/// `runner ARGS` with `ADDR` in them standing for an address another
/// listener holds: exit 1, naming `flag`, the address and that it is in use.
fn assert_address_in_use_is_refused(flag: &str, args: &[&str]) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let args = args
        .iter()
        .map(|a| if *a == "ADDR" { addr.as_str() } else { a });
    let output = runner()
        .args(["--queue", "redis://127.0.0.1:1"])
        .args(args)
        .output()
        .unwrap();
    assert_refused(&output, 1, &[&format!("{flag} {addr}"), "in use"]);
}

#[test]
fn a_metrics_address_in_use_is_refused_before_the_worker_starts() {
    // The queue is never opened and `true` never runs: the bind comes first.
    assert_address_in_use_is_refused(
        "--metrics-addr",
        &["work", "--metrics-addr", "ADDR", "--", "true"],
    );
}

#[test]
fn a_metrics_address_that_is_no_address_is_a_usage_error() {
    let output = runner()
        .args(["work", "--metrics-addr", "localhost", "--", "true"])
        .output()
        .unwrap();
    assert_refused(&output, 2, &["--metrics-addr"]);
}

/// `runner dashboard` started on `url`/`name` with `args`; its page URL
/// (read from its stdout).
struct Dashboard {
    child: Child,
    url: String,
}

impl Dashboard {
    /// `runner ... dashboard ARGS`, `on` naming the queue.
    fn start(mut on: Command, args: &[&str]) -> Self {
        let mut child = on
            .arg("dashboard")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start runner dashboard");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("runner dashboard: ")
            .unwrap_or_else(|| panic!("no URL line from the dashboard: {line:?}"))
            .to_string();
        Self { child, url }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A count shown on the page (`None` while the element is not there).
fn shown(browser: &forloop_tests::browser::Browser, id: &str) -> Option<u64> {
    browser.text_of(id).and_then(|t| t.trim().parse().ok())
}

/// Poll `check` every 100 ms for up to 60 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_follows_a_redis_job_live_in_a_real_browser() {
    let server = RedisServer::shared();
    let name = unique("dash");
    a_dashboard_follows_a_job_live(&|| on(server.url(), &name), "4s", "dash", false);
}

/// The same page over the Pub/Sub emulator, whose ledger is kept in sheets
/// (every page read rewrites them) and whose shortest lease is 10 s.
#[test]
fn the_dashboard_follows_a_pubsub_job_live_in_a_real_browser() {
    let host = PubsubEmulator::shared().host();
    let queue = format!("pubsub://obs/{}", unique("dash"));
    let on = || {
        let mut command = runner();
        command
            .args(["--queue", &queue])
            .env("PUBSUB_EMULATOR_HOST", host);
        command
    };
    let created = on()
        .args(["queue", "create", "--lease", "10s"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    a_dashboard_follows_a_job_live(&on, "10s", "dash-pubsub", true);
    assert!(on().args(["queue", "delete"]).status().unwrap().success());
}

/// A job of 240 items, three of which fail with one cause, followed on the
/// page in headless Chromium: the numbers move through the page's own
/// refresh and reach N exactly, a SIGKILLed worker shows as gone, the
/// failures are one group of three, and search finds them.
fn a_dashboard_follows_a_job_live(on: &dyn Fn() -> Command, lease: &str, tag: &str, sheets: bool) {
    let job = "dash-job";
    let dir = scratch(tag);
    let total: u64 = 240;
    let failing = ["fail-a", "fail-b", "fail-c"];
    let mut items: Vec<String> = (0..total as usize - failing.len())
        .map(|i| format!("ok-{i}"))
        .collect();
    items.extend(failing.iter().map(|s| s.to_string()));
    let input = dir.join("items.txt");
    std::fs::write(&input, items.join("\n") + "\n").unwrap();
    let output = on()
        .args(["submit", "--keep-receipts", "--job", job])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dashboard = Dashboard::start(
        on(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--poll",
            "250ms",
            "--receipts-poll",
            "250ms",
            "--stalled-after",
            "3s",
        ],
    );
    let browser = forloop_tests::browser::Browser::start();
    browser.open(&format!("{}?job={job}", dashboard.url));
    eventually("the page to show the job", || {
        shown(&browser, "total") == Some(total)
    });
    assert_eq!(shown(&browser, "done"), Some(0));

    // A failure every time, for the three `fail-` items: same cause,
    // different numbers and paths. 100 ms an item on four slots: the job
    // lasts several seconds past the kill below, longer than the page
    // takes to call the killed worker gone (at 30 ms an item, on a quiet
    // machine, the Pub/Sub job ended first and the row read "finished").
    let script = "case \"$1\" in fail-*) echo \"HTTP 429 from /srv/api/$1 after $$ ms\" >&2; exit 7;; esac; sleep 0.1";
    let worker = |slots: &str| {
        let mut command = on();
        command
            .args([
                "work",
                "--job",
                job,
                "-j",
                slots,
                "--max-attempts",
                "3",
                "--fatal-exit-codes",
                "7",
                "--lease",
                lease,
            ])
            .args(["--", "sh", "-c", script, "sh"]);
        Worker::start(command)
    };
    let mut steady = worker("2");
    let mut doomed = worker("2");
    let doomed_pid = doomed.child.id();

    // The numbers move while items settle: seen part-way by the page's
    // own refresh (no reload).
    let mut seen = Vec::new();
    eventually("the page to show the job part-way", || {
        let done = shown(&browser, "done").unwrap_or(0);
        if seen.last() != Some(&done) {
            seen.push(done);
        }
        done > 20 && done < total - 60
    });
    // A worker SIGKILLed mid-job: the page shows it gone while the job runs.
    let worker_row = format!(
        "var r = [...document.querySelectorAll('#workers tr')].find(r => (r.dataset.worker || '').includes(':{doomed_pid}/')); return r ? r.className + '|' + r.querySelector('.state').textContent : null;"
    );
    eventually("the doomed worker's row", || {
        browser.eval(&worker_row).is_string()
    });
    // Child::kill is SIGKILL: no grace, no hand-back.
    doomed.child.kill().unwrap();
    let _ = doomed.child.wait();
    let mut last = serde_json::Value::Null;
    eventually("the killed worker to show as gone", || {
        let row = browser.eval(&worker_row);
        if row != last {
            // What the row went through, for a failure's report.
            eprintln!("the killed worker's row: {row}");
            last = row;
        }
        last.as_str()
            .is_some_and(|row| row.starts_with("gone|gone"))
    });
    let during = shown(&browser, "done").unwrap();
    if seen.last() != Some(&during) {
        seen.push(during);
    }
    assert!(
        during < total - 3,
        "the job ended before the page showed the worker gone"
    );
    std::fs::create_dir_all(dir.join("shots")).unwrap();
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(path) = std::env::var("FORLOOP_DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &shot).unwrap();
    }

    // To the end: done + dead reach N exactly, and the three failures are
    // one group of three.
    steady.wait_for("exiting 0");
    let mut last = None;
    let reached = (0..600).any(|_| {
        last = shown(&browser, "done").zip(shown(&browser, "dead"));
        let reached = last == Some((total - failing.len() as u64, failing.len() as u64));
        if !reached {
            std::thread::sleep(Duration::from_millis(100));
        }
        reached
    });
    assert!(
        reached,
        "the page shows (done, dead) {last:?}, not {} and {}; worker said:\n{}",
        total - failing.len() as u64,
        failing.len(),
        steady.log.join("\n")
    );
    assert_eq!(shown(&browser, "remaining"), Some(0));
    // A ledger kept in sheets moves in steps (writers merge every few
    // seconds): the page's own readings, start to end, must still show
    // the job in between.
    seen.push(total - failing.len() as u64);
    assert!(
        seen.len() >= 3,
        "the page's numbers moved only through {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "done went down: {seen:?}"
    );
    eventually("the failure group", || {
        let groups = browser.eval(
            "return [...document.querySelectorAll('#failures tr.group')].map(r => r.querySelector('.count').textContent + ' ' + r.querySelector('.exit').textContent + ' ' + r.cells[2].textContent);",
        );
        groups
            .as_array()
            .is_some_and(|g| g.len() == 1 && g[0] == "3 7 HTTP <n> from <path> after <n> ms")
    });
    // Search over the results.
    browser.open(&format!("{}?job={job}&q=fail-&state=dead", dashboard.url));
    eventually("search hits", || {
        browser.text_of("hits").as_deref() == Some("3")
    });

    // What its reads cost: a sheet ledger's reads are counted in backend
    // calls (pulls of the sheets, publishes of the merge, acks), in the
    // dashboard's own metrics and at the foot of the page; a ledger that
    // is one call per read (Redis) has no such count.
    let addr = dashboard
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let samples = scrape(addr);
    let sheet_calls = |call| {
        value(
            &samples,
            "forloop_ledger_backend_calls_total",
            &[("call", call)],
        )
    };
    let footer = browser.eval("return document.querySelector('footer').textContent;");
    let footer = footer.as_str().unwrap_or_default();
    if sheets {
        assert!(
            sheet_calls("pull") > 0.0 && sheet_calls("publish") > 0.0,
            "{samples:?}"
        );
        assert!(footer.contains("sibling queues"), "{footer}");
    } else {
        assert!(
            !samples
                .iter()
                .any(|s| s.name.starts_with("forloop_ledger_backend")),
            "{samples:?}"
        );
        assert!(!footer.contains("sibling queues"), "{footer}");
    }
}

#[test]
fn a_dashboard_address_in_use_is_refused() {
    assert_address_in_use_is_refused("--listen", &["dashboard", "--listen", "ADDR"]);
}

#[test]
fn a_dashboard_on_another_address_than_loopback_needs_a_token() {
    let output = runner()
        .args([
            "--queue",
            "redis://127.0.0.1:1",
            "dashboard",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_refused(&output, 2, &["not a loopback address", "--new-token"]);
}

#[test]
fn a_tokened_dashboard_refuses_requests_without_its_token_and_a_loopback_one_foreign_hosts() {
    let server = RedisServer::shared();
    let name = unique("token");
    let dashboard = Dashboard::start(
        on(server.url(), &name),
        &["--listen", "127.0.0.1:0", "--new-token"],
    );
    let (base, token) = dashboard
        .url
        .split_once("/?token=")
        .expect("a URL with its token");
    assert_eq!(token.len(), 32, "{}", dashboard.url);
    let addr = base.strip_prefix("http://").unwrap();
    let (head, _) = get(addr, "/");
    assert!(
        head.starts_with("HTTP/1.0 401") || head.starts_with("HTTP/1.1 401"),
        "{head}"
    );
    let (head, body) = get(addr, &format!("/?token={token}"));
    assert!(head.contains(" 200"), "{head}");
    assert!(body.contains("forloop"), "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );

    let open = Dashboard::start(on(server.url(), &name), &["--listen", "127.0.0.1:0"]);
    let addr = open
        .url
        .strip_prefix("http://")
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(stream, "GET / HTTP/1.0\r\nHost: evil.example:80\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 403") || response.starts_with("HTTP/1.1 403"),
        "{response}"
    );
}

#[test]
fn a_dashboard_on_a_queue_without_a_ledger_says_so() {
    use forloop_tests::servers::SqsEmulator;
    let name = unique("noledger").replace('_', "-");
    let sqs = |args: &[&str]| {
        let mut command = runner();
        command.args(["--queue", "sqs", "--name", &name]).args(args);
        SqsEmulator::shared().configure(&mut command);
        command.output().unwrap()
    };
    let created = sqs(&["queue", "create", "--lease", "10s"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // An older queue: its ledger sibling gone.
    let mut python = Command::new("python3");
    python.args([
        "-c",
        "import boto3, sys; c = boto3.client('sqs'); \
         c.delete_queue(QueueUrl=c.get_queue_url(QueueName=sys.argv[1])['QueueUrl'])",
        &format!("{name}-ledger"),
    ]);
    SqsEmulator::shared().configure(&mut python);
    let deleted = python.output().expect("python3 runs");
    assert!(
        deleted.status.success(),
        "python failed (is boto3 installed? `pip install boto3`, scripts/install does): {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let output = sqs(&["dashboard", "--listen", "127.0.0.1:0"]);
    assert_refused(&output, 1, &["keeps no job ledger", "runner queue create"]);
}

#[test]
fn run_serves_metrics_of_its_in_process_workers_and_refuses_the_flag_on_a_shared_queue() {
    let dir = scratch("run-metrics");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nb\nc\n").unwrap();
    let output = runner()
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .arg(&input)
        .args(["--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("metrics at http://127.0.0.1:"), "{stderr}");

    let output = runner()
        .args([
            "--queue",
            "redis://127.0.0.1:1",
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg(&input)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_refused(
        &output,
        2,
        &["--metrics-port", "runner work --metrics-addr"],
    );
}

/// One HTTP/1.1 request to the dashboard at `base` (`http://HOST:PORT`):
/// its status and body.
fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let host = base
        .strip_prefix("http://")
        .expect("an http URL")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).expect("connect to the dashboard");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Type: application/x-www-form-urlencoded\r\n\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the first hidden input `name` after `after` in `html`.
fn hidden_after(html: &str, after: &str, name: &str) -> Option<String> {
    let rest = &html[html.find(after)?..];
    let marker = format!("name=\"{name}\" value=\"");
    let rest = &rest[rest.find(&marker)? + marker.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Run job `job` of three items on `on`'s queue, each dead on its one
/// attempt: `oom-0` and `oom-1` killed by signal 9 after "out of memory"
/// (exit code 137), `bad-0` exiting 3 after "HTTP 503". Two failure groups.
fn three_dead_of_two_causes(mut on: Command, job: &str, dir: &std::path::Path) {
    let input = dir.join("items.txt");
    std::fs::write(&input, "oom-0\noom-1\nbad-0\n").unwrap();
    let script = r#"case "$FORLOOP_ITEM" in
  oom-*) echo "out of memory" >&2; kill -9 $$ ;;
  *) echo "HTTP 503" >&2; exit 3 ;;
esac"#;
    let run = on
        .arg("run")
        .arg(&input)
        .args(["--job", job, "--max-attempts", "1", "--workers", "1"])
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Issue 23's actions: without `--allow-actions` a POST is refused; with
/// it, requeueing a failure group needs the page's action token and the
/// page's own origin (a cross-site form or a forged origin is refused),
/// and then moves exactly that group's dead items.
#[test]
fn dashboard_actions_need_the_flag_the_page_token_and_its_own_origin() {
    let server = RedisServer::shared();
    let name = unique("dash-act");
    three_dead_of_two_causes(on(server.url(), &name), "act", &scratch("dash-act"));

    let plain = Dashboard::start(on(server.url(), &name), &["--listen", "127.0.0.1:0"]);
    let origin = plain.url.trim_end_matches('/').to_string();
    let (status, _) = request(
        &plain.url,
        "POST",
        "/action/requeue",
        &[("Origin", &origin)],
        "job=act&exit_code=137",
    );
    assert_eq!(status, 405, "a read-only dashboard took a POST");
    drop(plain);

    let dash = Dashboard::start(
        on(server.url(), &name),
        &[
            "--listen",
            "127.0.0.1:0",
            "--allow-actions",
            "--poll",
            "1s",
            "--receipts-poll",
            "1s",
        ],
    );
    let origin = dash.url.trim_end_matches('/').to_string();
    let mut page = String::new();
    eventually("the failure groups with their forms", || {
        page = request(&dash.url, "GET", "/?job=act", &[], "").1;
        page.contains("name=\"exit_code\" value=\"137\"")
    });
    let csrf = hidden_after(&page, "<form", "csrf").expect("the action token in the page");
    let signature = hidden_after(&page, "name=\"exit_code\" value=\"137\"", "signature")
        .expect("the group's signature");
    assert!(
        signature
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' '),
        "{signature}"
    );
    let form = |csrf: &str| {
        format!(
            "csrf={csrf}&job=act&exit_code=137&signature={}",
            signature.replace(' ', "+")
        )
    };
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let refused: [(Headers, String, &str); 4] = [
        (&[("Origin", &origin)], form(""), "no action token"),
        (
            &[("Origin", &origin)],
            form("0123456789abcdef0123456789abcdef"),
            "a wrong action token",
        ),
        (
            &[("Origin", "http://evil.example")],
            form(&csrf),
            "another site's origin",
        ),
        (&[], form(&csrf), "no origin"),
    ];
    for (headers, body, what) in &refused {
        let (status, text) = request(&dash.url, "POST", "/action/requeue", headers, body);
        assert_eq!(status, 403, "{what} was accepted: {text}");
    }
    let cross = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "cross-site"),
    ];
    let (status, _) = request(&dash.url, "POST", "/action/requeue", &cross, &form(&csrf));
    assert_eq!(status, 403, "a cross-site fetch was accepted");
    let status_of = || {
        let output = on(server.url(), &name)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        value["jobs"][0]["dead"].as_u64()
    };
    assert_eq!(status_of(), Some(3), "a refused action moved something");

    let (status, text) = request(
        &dash.url,
        "POST",
        "/action/requeue",
        &[("Origin", &origin), ("Sec-Fetch-Site", "same-origin")],
        &form(&csrf),
    );
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("requeued 2 dead item(s) of job `act`"),
        "{text}"
    );
    assert_eq!(status_of(), Some(1), "only the exit-137 group moved");
    let list = on(server.url(), &name)
        .args(["dead", "list", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.contains("\"bad-0\""), "{listed}");
}

/// Issue 23's other action: a halted job's *resume* form un-halts it, under
/// the same rules (the action token and the page's own origin).
#[test]
fn the_dashboard_resumes_a_halted_job_only_from_its_own_page() {
    let server = RedisServer::shared();
    let name = unique("dash-resume");
    let dir = scratch("dash-resume");
    let input = dir.join("items.txt");
    // More items than the one slot: the first death halts the job with
    // the rest still queued (with every item running at once, all three
    // could die before the halt, and a job with nothing left is over, not
    // halted: exit 1, not 3).
    std::fs::write(&input, "a\nb\nc\nd\ne\nf\n").unwrap();
    let run = on(server.url(), &name)
        .arg("run")
        .arg(&input)
        .args(["--job", "halts", "--max-dead", "0", "--max-attempts", "1"])
        .args([
            "--workers",
            "1",
            "--concurrency",
            "1",
            "--",
            "sh",
            "-c",
            "exit 5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let phase = || {
        let output = on(server.url(), &name)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        value["jobs"][0]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(phase(), "halted");
    let dash = Dashboard::start(
        on(server.url(), &name),
        &["--listen", "127.0.0.1:0", "--allow-actions", "--poll", "1s"],
    );
    let origin = dash.url.trim_end_matches('/').to_string();
    let mut page = String::new();
    eventually("the resume form", || {
        page = request(&dash.url, "GET", "/?job=halts", &[], "").1;
        page.contains("action=\"action/resume\"")
    });
    let csrf = hidden_after(&page, "action=\"action/resume\"", "csrf").expect("the action token");
    let body = format!("csrf={csrf}&job=halts");
    let (status, _) = request(
        &dash.url,
        "POST",
        "/action/resume",
        &[("Origin", "http://evil.example")],
        &body,
    );
    assert_eq!(status, 403, "another site's origin was accepted");
    assert_eq!(phase(), "halted");
    let (status, text) = request(
        &dash.url,
        "POST",
        "/action/resume",
        &[("Origin", &origin)],
        &body,
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("job `halts` resumed"), "{text}");
    assert_ne!(phase(), "halted", "the job is still halted");
}

/// The requeue button pressed in a real browser (headless Chromium): the
/// request the page's own form makes carries what the server demands (the
/// action token, the page's Origin, `Sec-Fetch-Site: same-origin`), and
/// exactly the pressed group moves.
#[test]
fn a_failure_groups_requeue_button_works_in_a_real_browser() {
    let server = RedisServer::shared();
    let name = unique("dash-click");
    three_dead_of_two_causes(on(server.url(), &name), "click", &scratch("dash-click"));
    let dash = Dashboard::start(
        on(server.url(), &name),
        &[
            "--listen",
            "127.0.0.1:0",
            "--allow-actions",
            "--poll",
            "500ms",
            "--receipts-poll",
            "500ms",
        ],
    );
    let browser = forloop_tests::browser::Browser::start();
    browser.open(&format!("{}?job=click", dash.url));
    let button = "document.querySelector('input[name=exit_code][value=\"137\"]')";
    eventually("the exit-137 group's requeue form", || {
        browser.eval(&format!("return {button} !== null;")) == serde_json::Value::Bool(true)
    });
    browser.eval(&format!("{button}.form.requestSubmit(); return true;"));
    let dead = || {
        let output = on(server.url(), &name)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        value["jobs"][0]["dead"].as_u64()
    };
    let mut said = serde_json::Value::Null;
    eventually("the pressed group to move", || {
        said = browser.eval("return document.body.innerText;");
        eprintln!("{said}");
        dead() == Some(1)
    });
    assert!(
        said.as_str()
            .is_some_and(|t| t.contains("requeued 2 dead item(s) of job `click`")),
        "{said}"
    );
    let list = on(server.url(), &name)
        .args(["dead", "list", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.lines().count() == 1 && listed.contains("\"bad-0\""),
        "{listed}"
    );
}
