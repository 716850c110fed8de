//! The page, drawn on the server: HTML and SVG written here from the
//! snapshot, with every value escaped. The page's own script only fetches
//! this again (`/fragment`) and swaps it in.

use std::fmt::Write as _;

use forloop_core::job::{Receipt, Settled, SheetCalls};
use forloop_core::{Backlog, Count};

use super::state::{JobView, Point, Snapshot, failure_groups, now_ms, workers};

/// What the page was asked for.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pub(crate) job: Option<String>,
    pub(crate) search: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) token: Option<String>,
}

impl Query {
    /// Parse `a=1&b=2` (percent- and plus-decoded).
    pub(crate) fn parse(query: &str) -> Self {
        let mut out = Self::default();
        for (key, value) in pairs(query) {
            let value = (!value.is_empty()).then_some(value);
            match key {
                "job" => out.job = value,
                "q" => out.search = value,
                "state" => out.state = value,
                "token" => out.token = value,
                _ => {}
            }
        }
        out
    }
}

/// The `key=value` pairs of a query string or form body (`a=1&b=2`),
/// values percent- and plus-decoded.
pub(crate) fn pairs(text: &str) -> impl Iterator<Item = (&str, String)> {
    text.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key, decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match text
                    .get(i + 1..i + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` safe in HTML text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// How the page is drawn: the queue it shows, the stall rule, the refresh.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The queue, redacted.
    pub(crate) queue: String,
    pub(crate) stalled_after_ms: u64,
    pub(crate) refresh_ms: u64,
    /// What the reader has cost the backend, by operation, and over how long.
    pub(crate) cost: Vec<(&'static str, u64)>,
    /// On a sheet ledger (SQS, Pub/Sub): the backend calls its reads made
    /// inside the `ledger_*` calls above (pulls, publishes, acks).
    pub(crate) sheet_calls: Option<SheetCalls>,
    pub(crate) up_ms: u64,
    /// With `--allow-actions`: the token every action form carries.
    pub(crate) actions: Option<ActionToken>,
}

/// The per-process token the page's action forms carry and every POST
/// must give back. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct ActionToken(pub(crate) String);

impl std::fmt::Debug for ActionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionToken(..)")
    }
}

/// A form that POSTs `fields` to `action/NAME` with the action token (and
/// the page's access token, where it has one); empty without actions.
fn action_form(
    frame: &Frame,
    query: &Query,
    action: &str,
    fields: &[(&str, String)],
    label: &str,
) -> String {
    let Some(csrf) = &frame.actions else {
        return String::new();
    };
    let token = query
        .token
        .as_deref()
        .map(|t| format!("?token={}", url_encode(t)))
        .unwrap_or_default();
    let mut inputs = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&csrf.0)
    );
    for (name, value) in fields {
        let _ = write!(
            inputs,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            esc(value)
        );
    }
    format!(
        "<form class=\"action\" method=\"post\" action=\"action/{action}{token}\">{inputs}\
<button>{label}</button></form>"
    )
}

/// The whole page.
pub(crate) fn page(frame: &Frame, snapshot: &Snapshot, query: &Query) -> String {
    let token = query
        .token
        .as_deref()
        .map(|t| {
            format!(
                "<input type=\"hidden\" name=\"token\" value=\"{}\">",
                esc(t)
            )
        })
        .unwrap_or_default();
    let job = query
        .job
        .as_deref()
        .map(|j| format!("<input type=\"hidden\" name=\"job\" value=\"{}\">", esc(j)))
        .unwrap_or_default();
    let state_options = ["", "done", "dead"]
        .iter()
        .map(|s| {
            let selected = if query.state.as_deref().unwrap_or("") == *s {
                " selected"
            } else {
                ""
            };
            let label = if s.is_empty() { "done or dead" } else { s };
            format!("<option value=\"{s}\"{selected}>{label}</option>")
        })
        .collect::<String>();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>forloop · {queue}</title><link rel=\"stylesheet\" href=\"page.css\">\
<script src=\"page.js\" defer></script></head>\
<body data-refresh=\"{refresh}\"><header><h1>forloop</h1><span class=\"queue\">{queue}</span>\
<span id=\"live\" class=\"live\">live</span></header>\
<form id=\"search\" method=\"get\" action=\"./\">{token}{job}\
<input id=\"q\" name=\"q\" type=\"search\" placeholder=\"search the job's results (item text)\" value=\"{q}\">\
<select name=\"state\">{state_options}</select><button>search</button></form>\
<main id=\"main\">{main}</main></body></html>",
        queue = esc(&frame.queue),
        refresh = frame.refresh_ms,
        q = esc(query.search.as_deref().unwrap_or("")),
        main = main(frame, snapshot, query),
    )
}

/// The live part of the page.
pub(crate) fn main(frame: &Frame, snapshot: &Snapshot, query: &Query) -> String {
    let now = now_ms();
    let mut out = String::new();
    match snapshot.read_at {
        None => out.push_str("<p class=\"note\">reading the job ledger…</p>"),
        Some(at) => {
            let _ = write!(
                out,
                "<p class=\"note\">read <span id=\"age\">{}</span> ago; {}</p>",
                ago(now.saturating_sub(at)),
                backlog_line(snapshot.backlog.as_ref())
            );
        }
    }
    if let Some(error) = &snapshot.error {
        let _ = write!(out, "<p class=\"error\" id=\"error\">{}</p>", esc(error));
    }
    if snapshot.jobs.is_empty() && snapshot.read_at.is_some() {
        out.push_str(
            "<p>No jobs on this queue yet: `runner submit` or `runner run` makes one.</p>",
        );
    }
    // Newest first; the page shows the asked-for job, else the newest running one.
    let mut jobs: Vec<&JobView> = snapshot.jobs.values().collect();
    jobs.sort_by_key(|job| std::cmp::Reverse(job.status.manifest.created));
    let chosen = query
        .job
        .as_deref()
        .and_then(|name| snapshot.jobs.get(name))
        .or_else(|| jobs.iter().copied().find(|j| !j.status.is_over()))
        .or_else(|| jobs.first().copied());
    if !jobs.is_empty() {
        out.push_str(
            "<table id=\"jobs\"><thead><tr><th>job</th><th>phase</th><th>done</th><th>dead</th>\
<th>remaining</th><th>of N</th><th>progress</th><th>rate</th><th>ETA</th></tr></thead><tbody>",
        );
        for job in &jobs {
            let s = &job.status;
            let total = s.manifest.total.max(1);
            let pct = (s.settled() as f64 / total as f64 * 100.0).min(100.0);
            let link = link(query, Some(&s.manifest.job), None);
            let _ = write!(
                out,
                "<tr data-job=\"{name}\"><td><a href=\"{link}\">{name}</a></td><td>{phase}</td>\
<td>{done}</td><td>{dead}</td><td>{left}</td><td>{total}</td>\
<td><span class=\"bar\"><span style=\"width:{pct:.1}%\"></span></span></td><td>{rate}</td><td>{eta}</td></tr>",
                name = esc(&s.manifest.job),
                phase = match job.missing_since {
                    Some(_) =>
                        "not in the ledger now (forgotten, or the server lost it)".to_string(),
                    None => esc(&s.phase().to_string()),
                },
                done = s.done,
                dead = s.dead,
                left = s.remaining(),
                total = s.manifest.total,
                rate = recent_rate(&job.history).map_or("–".into(), |r| format!("{r:.1}/s")),
                eta = eta(job, now),
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(job) = chosen {
        detail(&mut out, frame, job, query, now);
    }
    let up_min = (frame.up_ms as f64 / 60_000.0).max(1.0 / 60.0);
    let calls: u64 = frame.cost.iter().map(|(_, n)| n).sum();
    let by: Vec<String> = frame
        .cost
        .iter()
        .map(|(op, n)| format!("{op} {:.1}", *n as f64 / up_min))
        .collect();
    // A sheet ledger's read is several backend calls: say how many.
    let sheets = frame.sheet_calls.as_ref().map_or(String::new(), |c| {
        format!(
            " The ledger keeps its sheets in sibling queues: its reads made {} calls to them \
(per minute pull {:.1}, publish {:.1}, ack {:.1}).",
            c.total(),
            c.pulls as f64 / up_min,
            c.publishes as f64 / up_min,
            c.acks as f64 / up_min
        )
    });
    let _ = write!(
        out,
        "<footer>This page's one reader (shared by every open page) made {calls} queue and ledger \
calls in {}: per minute {}.{sheets} Read-only: it changes nothing.</footer>",
        ago(frame.up_ms),
        esc(&by.join(", "))
    );
    out
}

fn backlog_line(backlog: Option<&Backlog>) -> String {
    match backlog {
        None => "backlog not read".to_string(),
        Some(b) => format!(
            "queue: <b id=\"ready\">{}</b> ready, <b id=\"running\">{}</b> running (in flight), <b>{}</b> in the dead place",
            count(b.ready),
            count(b.in_flight),
            count(b.dead)
        ),
    }
}

fn count(c: Count) -> String {
    match c {
        Count::Exact(n) => n.to_string(),
        Count::Approximate(n) => format!("~{n}"),
        Count::Unknown => "?".to_string(),
    }
}

fn link(query: &Query, job: Option<&str>, search: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(token) = &query.token {
        parts.push(format!("token={}", url_encode(token)));
    }
    if let Some(job) = job.or(query.job.as_deref()) {
        parts.push(format!("job={}", url_encode(job)));
    }
    if let Some(q) = search {
        parts.push(format!("q={}", url_encode(q)));
    }
    format!("?{}", esc(&parts.join("&")))
}

/// `ms` as `4 s`, `3 min`, `2 h 5 min`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, s / 60 % 60)
    }
}

/// Items per second over the last minute of history (or all of it).
fn recent_rate(history: &std::collections::VecDeque<Point>) -> Option<f64> {
    let last = history.back()?;
    let first = history
        .iter()
        .find(|p| p.at + 60_000 >= last.at)
        .filter(|p| p.at < last.at)
        .or_else(|| history.front().filter(|p| p.at < last.at))?;
    let settled = (last.done + last.dead).saturating_sub(first.done + first.dead);
    Some(settled as f64 * 1000.0 / (last.at - first.at) as f64)
}

fn eta(job: &JobView, now: u64) -> String {
    let s = &job.status;
    if s.is_complete() {
        return "complete".into();
    }
    if s.cancelled.is_some() {
        return "cancelled".into();
    }
    match recent_rate(&job.history) {
        Some(rate) if rate > 0.0 => {
            let secs = s.remaining() as f64 / rate;
            let _ = now;
            format!("in {}", ago((secs * 1000.0) as u64))
        }
        _ => "–".into(),
    }
}

fn detail(out: &mut String, frame: &Frame, job: &JobView, query: &Query, now: u64) {
    let s = &job.status;
    let _ = write!(
        out,
        "<section id=\"job\" data-job=\"{name}\"><h2>job {name}</h2><div class=\"counts\">\
<div><b id=\"done\">{done}</b>done</div><div><b id=\"dead\">{dead}</b>dead</div>\
<div><b id=\"remaining\">{left}</b>remaining</div><div><b id=\"total\">{total}</b>items (N)</div>\
<div><b>{eta}</b>ETA</div></div>",
        name = esc(&s.manifest.job),
        done = s.done,
        dead = s.dead,
        left = s.remaining(),
        total = s.manifest.total,
        eta = esc(&eta(job, now)),
    );
    if s.is_halted() {
        out.push_str(&action_form(
            frame,
            query,
            "resume",
            &[("job", s.manifest.job.clone())],
            "resume this halted job",
        ));
    }
    out.push_str("<div class=\"charts\"><figure><figcaption>settled over time (done + dead), dashed: at the last minute's rate</figcaption>");
    out.push_str(&progress_chart(&job.history, s.manifest.total));
    out.push_str("</figure>");
    let receipts: &[Receipt] = job.receipts.as_ref().map_or(&[], |(_, r)| r.as_slice());
    let seconds: Vec<f64> = receipts.iter().map(|r| r.seconds).collect();
    out.push_str(
        "<figure><figcaption>attempt durations (settling attempts, from receipts)</figcaption>",
    );
    out.push_str(&histogram(&seconds));
    out.push_str("</figure></div>");
    let done_receipts = receipts.iter().filter(|r| r.state == Settled::Done).count() as u64;
    if s.done > done_receipts {
        let _ = write!(
            out,
            "<p class=\"note\">{} done items have no receipt here (on Redis a job keeps done items' \
receipts only with <code>--keep-receipts</code>): workers, durations and search see the {} that do.</p>",
            s.done - done_receipts,
            receipts.len()
        );
    }
    let read_at = job.receipts.as_ref().map_or(now, |(at, _)| *at);
    out.push_str(
        "<h3>workers</h3><table id=\"workers\"><thead><tr><th>worker</th><th>settled</th>\
<th>last minute</th><th>items/min</th><th>mean seconds</th><th>last seen</th><th>state</th></tr></thead><tbody>",
    );
    for w in workers(receipts, read_at) {
        let silent = now.saturating_sub(w.last);
        let (class, state) = if s.is_over() {
            ("", "finished".to_string())
        } else if silent > frame.stalled_after_ms {
            ("gone", format!("gone: no receipt for {}", ago(silent)))
        } else {
            ("", "active".to_string())
        };
        let span_min = ((w.last - w.first) as f64 / 60_000.0).max(1.0 / 60.0);
        let _ = write!(
            out,
            "<tr class=\"{class}\" data-worker=\"{name}\"><td>{name}</td><td>{settled}</td><td>{minute}</td>\
<td>{per_min:.1}</td><td>{mean:.3}</td><td>{seen} ago</td><td class=\"state\">{state}</td></tr>",
            name = esc(&w.name),
            settled = w.settled,
            minute = w.last_minute,
            per_min = w.settled as f64 / span_min,
            mean = w.seconds / w.settled.max(1) as f64,
            seen = ago(silent),
            state = esc(&state),
        );
    }
    out.push_str("</tbody></table>");
    let groups = failure_groups(receipts);
    out.push_str("<h3>failures, grouped</h3>");
    if groups.is_empty() {
        out.push_str("<p class=\"note\">no dead items</p>");
    } else {
        let _ = write!(
            out,
            "<table id=\"failures\"><thead><tr><th>count</th><th>exit code</th><th>signature \
(numbers, hex and paths made alike)</th><th>examples</th>{}</tr></thead><tbody>",
            if frame.actions.is_some() {
                "<th></th>"
            } else {
                ""
            }
        );
        for g in groups {
            let examples: String = g
                .examples
                .iter()
                .map(|(item, tail)| {
                    format!(
                        "<div><code>{}</code> <small>{}</small></div>",
                        esc(item),
                        esc(&tail_of(tail, 160))
                    )
                })
                .collect();
            let requeue = if frame.actions.is_some() {
                let form = action_form(
                    frame,
                    query,
                    "requeue",
                    &[
                        ("job", s.manifest.job.clone()),
                        (
                            "exit_code",
                            g.exit_code.map_or(String::new(), |c| c.to_string()),
                        ),
                        ("signature", g.signature.clone()),
                    ],
                    "requeue these",
                );
                format!("<td>{form}</td>")
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<tr class=\"group\"><td class=\"count\">{}</td><td class=\"exit\">{}</td><td><code>{}</code></td><td>{}</td>{}</tr>",
                g.count,
                g.exit_code.map_or("–".into(), |c| c.to_string()),
                esc(&g.signature),
                examples,
                requeue
            );
        }
        out.push_str("</tbody></table>");
        out.push_str("<h3>dead items</h3><table id=\"dead-items\"><thead><tr><th>item</th><th>attempt</th><th>exit</th><th>stderr (end)</th></tr></thead><tbody>");
        let dead: Vec<&Receipt> = receipts
            .iter()
            .filter(|r| r.state == Settled::Dead)
            .collect();
        for r in dead.iter().take(50) {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                esc(&r.item_text()),
                r.attempt,
                r.exit_code.map_or("–".into(), |c| c.to_string()),
                esc(&tail_of(
                    r.stderr_tail
                        .as_deref()
                        .or(r.reason.as_deref())
                        .unwrap_or(""),
                    600
                ))
            );
        }
        out.push_str("</tbody></table>");
        if dead.len() > 50 {
            let _ = write!(
                out,
                "<p class=\"note\">and {} more: <code>runner results --state dead</code></p>",
                dead.len() - 50
            );
        }
    }
    if let Some(search) = &query.search {
        search_results(out, receipts, search, query.state.as_deref());
    }
    out.push_str("</section>");
}

fn search_results(out: &mut String, receipts: &[Receipt], search: &str, state: Option<&str>) {
    let needle = search.to_lowercase();
    let want = match state {
        Some("done") => Some(Settled::Done),
        Some("dead") => Some(Settled::Dead),
        _ => None,
    };
    let hits: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| want.is_none_or(|w| r.state == w))
        .filter(|r| r.item_text().to_lowercase().contains(&needle))
        .collect();
    let _ = write!(
        out,
        "<h3>results matching <q>{}</q>: <span id=\"hits\">{}</span></h3><table id=\"results\"><thead><tr>\
<th>seq</th><th>state</th><th>attempt</th><th>exit</th><th>seconds</th><th>worker</th><th>item</th></tr></thead><tbody>",
        esc(search),
        hits.len()
    );
    for r in hits.iter().take(200) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td><code>{}</code></td></tr>",
            r.seq,
            if r.state == Settled::Done {
                "done"
            } else {
                "dead"
            },
            r.attempt,
            r.exit_code.map_or("–".into(), |c| c.to_string()),
            r.seconds,
            esc(&r.worker),
            esc(&r.item_text())
        );
    }
    out.push_str("</tbody></table>");
}

/// The last `max` characters of `text`.
fn tail_of(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        text.to_string()
    } else {
        let tail: String = text.chars().skip(count - max).collect();
        format!("…{tail}")
    }
}

const W: f64 = 560.0;
const H: f64 = 170.0;
const PAD: f64 = 34.0;

/// Settled items over time, and the projection to N at the recent rate.
fn progress_chart(history: &std::collections::VecDeque<Point>, total: u64) -> String {
    let mut svg = format!(
        "<svg class=\"chart\" id=\"progress-chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"settled items over time\">"
    );
    let (Some(first), Some(last)) = (history.front(), history.back()) else {
        svg.push_str("</svg>");
        return svg;
    };
    let settled = |p: &Point| (p.done + p.dead) as f64;
    let rate = recent_rate(history).unwrap_or(0.0);
    let left = total as f64 - settled(last);
    let end_at = if left > 0.0 && rate > 0.0 {
        // Cut the projection at twice the time shown so far.
        let eta = last.at as f64 + left / rate * 1000.0;
        eta.min(last.at as f64 + (last.at - first.at).max(60_000) as f64 * 2.0)
    } else {
        last.at as f64
    };
    let span = (end_at - first.at as f64).max(1.0);
    let x = |at: f64| PAD + (at - first.at as f64) / span * (W - 2.0 * PAD);
    let y = |n: f64| H - PAD + 10.0 - n / total.max(1) as f64 * (H - PAD - 10.0);
    let points: String = history
        .iter()
        .map(|p| format!("{:.1},{:.1} ", x(p.at as f64), y(settled(p))))
        .collect();
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{PAD}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\"/>\
<line class=\"axis\" x1=\"{PAD}\" y1=\"{t:.1}\" x2=\"{PAD}\" y2=\"{b:.1}\"/>\
<line class=\"goal\" x1=\"{PAD}\" y1=\"{t:.1}\" x2=\"{r:.1}\" y2=\"{t:.1}\"/>\
<text x=\"2\" y=\"{ty:.1}\">{total}</text><text x=\"2\" y=\"{b:.1}\">0</text>\
<polyline class=\"line\" points=\"{points}\"/>",
        b = y(0.0),
        t = y(total as f64),
        ty = y(total as f64) + 4.0,
        r = W - PAD,
    );
    if end_at > last.at as f64 {
        let end_y = settled(last) + rate * (end_at - last.at as f64) / 1000.0;
        let _ = write!(
            svg,
            "<line class=\"eta\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
            x(last.at as f64),
            y(settled(last)),
            x(end_at),
            y(end_y.min(total as f64))
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{PAD}\" y=\"{H}\" dy=\"-4\">start</text><text x=\"{:.1}\" y=\"{H}\" dy=\"-4\" text-anchor=\"end\">+{}</text></svg>",
        W - PAD,
        ago(span as u64)
    );
    svg
}

/// A histogram of `seconds` in buckets doubling from 1 ms.
fn histogram(seconds: &[f64]) -> String {
    let mut svg = format!(
        "<svg class=\"chart\" id=\"durations-chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"attempt durations\">"
    );
    if seconds.is_empty() {
        svg.push_str("<text x=\"10\" y=\"20\">no receipts read yet</text></svg>");
        return svg;
    }
    let bucket = |s: f64| ((s.max(0.001) / 0.001).log2().floor().max(0.0)) as usize;
    let lo = seconds.iter().map(|&s| bucket(s)).min().unwrap_or(0);
    let hi = seconds.iter().map(|&s| bucket(s)).max().unwrap_or(0);
    let mut counts = vec![0u64; hi - lo + 1];
    for &s in seconds {
        counts[bucket(s) - lo] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let n = counts.len() as f64;
    let bar_w = (W - 2.0 * PAD) / n;
    for (i, &c) in counts.iter().enumerate() {
        let h = c as f64 / most as f64 * (H - PAD - 10.0);
        let x = PAD + i as f64 * bar_w;
        let from = 0.001 * 2f64.powi((lo + i) as i32);
        let _ = write!(
            svg,
            "<rect class=\"bin\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{} to {}: {c}</title></rect>",
            H - PAD - h,
            (bar_w - 2.0).max(1.0),
            short_secs(from),
            short_secs(from * 2.0)
        );
        if counts.len() <= 12 || i % 2 == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\" class=\"small\">{}</text>",
                H - PAD + 12.0,
                short_secs(from)
            );
        }
    }
    let _ = write!(svg, "<text x=\"2\" y=\"14\">{most}</text></svg>");
    svg
}

fn short_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.0}s")
    } else {
        format!("{:.0}m", s / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{Query, esc};

    #[test]
    fn queries_are_decoded_and_values_escaped() {
        let q = Query::parse("job=a%2Db&q=x+y%3C&state=dead&token=t%25");
        assert_eq!(q.job.as_deref(), Some("a-b"));
        assert_eq!(q.search.as_deref(), Some("x y<"));
        assert_eq!(q.state.as_deref(), Some("dead"));
        assert_eq!(q.token.as_deref(), Some("t%"));
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        // A lone or broken escape stays as it is.
        assert_eq!(Query::parse("q=100%").search.as_deref(), Some("100%"));
        assert_eq!(Query::parse("q=%zz").search.as_deref(), Some("%zz"));
    }
}
