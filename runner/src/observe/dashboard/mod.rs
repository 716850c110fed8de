//! `runner dashboard`: a live page of a queue's jobs, served by this
//! binary with everything it needs inside it (no CDN, no third-party
//! script): done, dead, running and remaining of N, the rate and an ETA,
//! durations, each worker's throughput and last receipt, failures grouped
//! by cause, dead items and a search over the results.
//!
//! It reads only what `status` and `results` read (the ledger's jobs, the
//! backlog, the receipts), through one reader shared by every open page
//! (`state.rs`), and changes nothing unless started with
//! `--allow-actions`: then the page can requeue a failure group and
//! resume a halted job, each a POST that must carry this process's action
//! token (in the page's forms) and come from the page's own origin
//! (`Site::act`). Loopback by default; any other address needs a token,
//! which the command prints.

mod render;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use forloop_core::job::{DeadDetails, DeadFilter, Ledger};
use forloop_core::{DeadLetter, ErrorChain, Requeued, WorkQueue};
use hyper::StatusCode;
use prometheus_client::registry::Registry;

use self::render::{ActionToken, Frame, Query};
use self::state::{Rates, Shared, signature_of};
use super::http::{self, Page};
use super::metrics::{CallMetrics, LedgerBackendCalls, metrics_page};
use crate::Failure;
use crate::cli::DashboardArgs;
use crate::commands::context::Context;

const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");
/// Where the page may load from and connect to: itself only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The variable a token for a non-loopback address is read from (never a
/// flag: argv is visible to every user of the machine).
const TOKEN_VAR: &str = "FORLOOP_DASHBOARD_TOKEN";

/// Serve the dashboard until the process is stopped.
pub(crate) async fn dashboard(context: &Context<'_>, args: DashboardArgs) -> Result<u8, Failure> {
    let token = token_for(args.listen, args.new_token)?;
    let listener = http::bind("--listen", args.listen).await?;
    let (driver, address) = context.driver("dashboard", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let queue_name = driver.redact(&address);
    let mut registry = Registry::default();
    let calls = CallMetrics::new(&mut registry);
    let backend = calls.metered(backend);
    let Some(ledger) = backend.ledger else {
        return Err(Failure::new(format!(
            "{queue_name} keeps no job ledger, and the dashboard shows jobs from it: this queue was \
             made before jobs were kept, or by another program. Recreate it with `runner queue \
             create` (Pub/Sub and SQS keep the ledger in sibling queues it makes), or follow it \
             with `runner status`"
        )));
    };
    registry.register_collector(Box::new(LedgerBackendCalls(Arc::clone(&ledger))));
    let actions = match args.allow_actions {
        true => Some(Actions {
            csrf: random_token()?,
            queue: Arc::clone(&backend.queue),
            ledger: Arc::clone(&ledger),
        }),
        false => None,
    };
    let shared = Shared::new();
    let rates = Rates {
        poll: args.poll,
        receipts_poll: args.receipts_poll,
    };
    tokio::spawn(state::read_forever(
        Arc::clone(&shared),
        Arc::clone(&backend.queue),
        Arc::clone(&ledger),
        rates,
    ));
    let at = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("--listen: {e}")))?;
    let url = match &token {
        Some(token) => format!("http://{at}/?token={token}"),
        None => format!("http://{at}/"),
    };
    // The URL (with its token) goes to stdout for the user, not to the log.
    println!("runner dashboard: {url}");
    tracing::info!(
        queue = %queue_name,
        "dashboard at http://{at}/ ({}); it reads the ledger every {} and receipts every {}",
        if actions.is_some() {
            "with actions: requeue a failure group, resume a halted job"
        } else {
            "read-only"
        },
        humantime::format_duration(args.poll),
        humantime::format_duration(args.receipts_poll)
    );
    let site = Arc::new(Site {
        shared,
        token,
        loopback: args.listen.ip().is_loopback(),
        registry,
        calls,
        ledger: Arc::clone(&ledger),
        frame: Frame {
            queue: queue_name,
            stalled_after_ms: args.stalled_after.as_millis() as u64,
            refresh_ms: args.poll.as_millis() as u64,
            cost: Vec::new(),
            sheet_calls: None,
            up_ms: 0,
            actions: actions.as_ref().map(|a| ActionToken(a.csrf.clone())),
        },
        actions,
        started: Instant::now(),
    });
    let act: Option<http::ActionRoute> = site.actions.is_some().then(|| {
        let site = Arc::clone(&site);
        Arc::new(
            move |target: String, headers: hyper::HeaderMap, body: Bytes| {
                let site = Arc::clone(&site);
                Box::pin(async move { site.act(&target, &headers, &body).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = Page> + Send>>
            },
        ) as http::ActionRoute
    });
    http::serve_with_actions(
        listener,
        Arc::new(move |target: &str, headers: &hyper::HeaderMap| site.answer(target, headers)),
        act,
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(0)
}

/// The token a bind to `listen` needs: none on loopback; else the one in
/// [`TOKEN_VAR`], or a new one with `--new-token`; else an error.
fn token_for(listen: SocketAddr, new_token: bool) -> Result<Option<String>, Failure> {
    let from_env = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
    if let Some(token) = &from_env
        && token.len() < 16
    {
        return Err(Failure::new(format!(
            "{TOKEN_VAR} is shorter than 16 characters: a token guarded page needs a long random \
             one (or pass --new-token and let the command make one)"
        )));
    }
    match (from_env, new_token) {
        (Some(token), _) => Ok(Some(token)),
        (None, true) => Ok(Some(random_token()?)),
        (None, false) if listen.ip().is_loopback() => Ok(None),
        (None, false) => Err(Failure::new(format!(
            "--listen {listen} is not a loopback address: anyone who reaches it would see the \
             queue's jobs and items. Pass --new-token (the command makes a token and prints the \
             URL with it) or set {TOKEN_VAR}; or listen on 127.0.0.1"
        ))
        .with_code(2)),
    }
}

/// 128 random bits as hex, from the kernel.
fn random_token() -> Result<String, Failure> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Failure::new(format!("cannot make a token from /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct Site {
    shared: Arc<Shared>,
    token: Option<String>,
    loopback: bool,
    registry: Registry,
    calls: Arc<CallMetrics>,
    ledger: Arc<dyn Ledger>,
    frame: Frame,
    /// With `--allow-actions`.
    actions: Option<Actions>,
    started: Instant,
}

/// What the page's actions need: the token its forms carry, and the queue
/// and ledger they act on.
struct Actions {
    csrf: String,
    queue: Arc<dyn WorkQueue>,
    ledger: Arc<dyn Ledger>,
}

impl Actions {
    /// Requeue the dead items of `job` in the failure group (`exit_code`,
    /// `signature`), as a filtered `dead requeue`: each letter picked by
    /// its own death's receipt, the rest left dead.
    async fn requeue(
        &self,
        job: &str,
        exit_code: Option<i32>,
        signature: &str,
    ) -> Result<String, String> {
        let receipts = self.ledger.receipts(job).await.map_err(|e| {
            format!(
                "cannot read the receipts of job `{job}`; nothing was requeued: {}",
                ErrorChain(&e)
            )
        })?;
        let mut details = DeadDetails::default();
        details.add(receipts);
        let filter = DeadFilter::default().job(job).exit_codes(exit_code);
        let select = |letter: &DeadLetter| {
            let receipt = details.of(letter);
            filter.matches_letter(letter, receipt)
                && receipt.is_some_and(|r| r.exit_code == exit_code && signature_of(r) == signature)
        };
        let Requeued { moved, left } = self
            .ledger
            .requeue_dead_where(&*self.queue, &select)
            .await
            .map_err(|e| format!("the requeue failed: {}", ErrorChain(&e)))?;
        tracing::info!(%job, ?exit_code, %signature, moved, "dashboard: requeued a failure group");
        Ok(format!(
            "requeued {moved} dead item(s) of job `{job}` with fresh attempts; {left} others \
             looked at stay dead"
        ))
    }

    /// Resume a halted job (as `--resume` does to its halt).
    async fn resume(&self, job: &str) -> Result<String, String> {
        match self.ledger.unhalt(job).await {
            Ok(true) => {
                tracing::info!(%job, "dashboard: resumed a halted job");
                Ok(format!(
                    "job `{job}` resumed: workers take its items again (start some if none run)"
                ))
            }
            Ok(false) => Err(format!("no job `{job}` on this queue")),
            Err(e) => Err(format!("the resume failed: {}", ErrorChain(&e))),
        }
    }
}

/// An action's form fields (`application/x-www-form-urlencoded`).
#[derive(Debug, Default)]
struct Form {
    csrf: Option<String>,
    job: Option<String>,
    exit_code: Option<String>,
    signature: Option<String>,
}

impl Form {
    fn parse(body: &str) -> Self {
        let mut out = Self::default();
        for (key, value) in render::pairs(body) {
            let value = Some(value);
            match key {
                "csrf" => out.csrf = value,
                "job" => out.job = value,
                "exit_code" => out.exit_code = value,
                "signature" => out.signature = value,
                _ => {}
            }
        }
        out
    }
}

/// Why a POST is refused as cross-site, if it is: it must come from this
/// dashboard's own page, so its `Origin` must be `http://` and the `Host`
/// it was sent to (browsers send `Origin` with every POST; a page on
/// another site cannot forge it), and `Sec-Fetch-Site`, where the browser
/// sends it, must say `same-origin`.
fn cross_site(headers: &hyper::HeaderMap) -> Option<Page> {
    let header = |name: hyper::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let host = header(hyper::header::HOST).unwrap_or_default();
    let same_origin = header(hyper::header::ORIGIN).is_some_and(|o| o == format!("http://{host}"));
    let fetch_site = header(hyper::header::HeaderName::from_static("sec-fetch-site"));
    if !same_origin || fetch_site.is_some_and(|s| s != "same-origin") {
        return Some(Page::error(
            StatusCode::FORBIDDEN,
            "an action must be sent from this dashboard's own page (its Origin must be \
             http://HOST of this request)\n",
        ));
    }
    None
}

impl Site {
    fn answer(&self, target: &str, headers: &hyper::HeaderMap) -> Page {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        // Static parts hold no data: served to anyone who reaches the port.
        match path {
            "/page.js" => return Page::ok("text/javascript; charset=utf-8", PAGE_JS),
            "/page.css" => return Page::ok("text/css; charset=utf-8", PAGE_CSS),
            _ => {}
        }
        if let Some(refused) = self.refuse(query, headers) {
            return refused;
        }
        let query = Query::parse(query);
        match path {
            "/" | "/fragment" => {
                self.shared.viewed();
                let frame = Frame {
                    cost: self.calls.counts(),
                    sheet_calls: self.ledger.calls(),
                    up_ms: self.started.elapsed().as_millis() as u64,
                    ..self.frame.clone()
                };
                let snapshot = self.shared.lock();
                let html = if path == "/" {
                    render::page(&frame, &snapshot, &query)
                } else {
                    render::main(&frame, &snapshot, &query)
                };
                let mut page = Page::ok("text/html; charset=utf-8", html);
                page.csp = Some(CSP);
                page
            }
            // What the dashboard's reader costs the backend, by operation.
            "/metrics" => metrics_page(&self.registry),
            _ => Page::error(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// A POST from the page: refused unless this process allows actions,
    /// the page's access rules pass ([`Site::refuse`]), it is not
    /// cross-site ([`cross_site`]) and it carries the action token.
    async fn act(&self, target: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Page {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(actions) = &self.actions else {
            return Page::error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n");
        };
        if let Some(refused) = self.refuse(query, headers).or_else(|| cross_site(headers)) {
            return refused;
        }
        let form = Form::parse(&String::from_utf8_lossy(body));
        if !form.csrf.as_deref().is_some_and(|c| same(c, &actions.csrf)) {
            return Page::error(
                StatusCode::FORBIDDEN,
                "this action needs the action token of the page: reload the page and try again\n",
            );
        }
        let Some(job) = form.job.filter(|j| !j.is_empty()) else {
            return Page::error(StatusCode::BAD_REQUEST, "which job? the form has no job\n");
        };
        let outcome = match path {
            "/action/requeue" => {
                let exit_code = match form.exit_code.as_deref().unwrap_or("") {
                    "" => None,
                    code => match code.parse() {
                        Ok(code) => Some(code),
                        Err(_) => {
                            return Page::error(
                                StatusCode::BAD_REQUEST,
                                format!("exit_code `{code}` is not a whole number\n"),
                            );
                        }
                    },
                };
                let signature = form.signature.unwrap_or_default();
                actions.requeue(&job, exit_code, &signature).await
            }
            "/action/resume" => actions.resume(&job).await,
            _ => return Page::error(StatusCode::NOT_FOUND, "no such action\n"),
        };
        let token = Query::parse(query)
            .token
            .map(|t| format!("&token={}", render::url_encode(&t)))
            .unwrap_or_default();
        let (status, text) = match outcome {
            Ok(text) => (StatusCode::OK, text),
            Err(text) => (StatusCode::BAD_GATEWAY, text),
        };
        let mut page = Page::ok(
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>forloop</title></head><body><p id=\"outcome\">{}</p>\
<p><a href=\"../?job={}{token}\">back to the page</a></p></body></html>",
                render::esc(&text),
                render::url_encode(&job),
            ),
        );
        page.status = status;
        page.csp = Some(CSP);
        page
    }

    /// Why a request is refused, if it is: a wrong or missing token; on
    /// loopback without a token, a Host that is not this machine (a page
    /// elsewhere that rebinds its name to 127.0.0.1 cannot read this one).
    fn refuse(&self, query: &str, headers: &hyper::HeaderMap) -> Option<Page> {
        match &self.token {
            Some(token) => {
                let given = Query::parse(query).token.or_else(|| {
                    headers
                        .get(hyper::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_string)
                });
                match given {
                    Some(given) if same(&given, token) => None,
                    _ => Some(Page::error(
                        StatusCode::UNAUTHORIZED,
                        "this dashboard needs its token: open the URL `runner dashboard` printed\n",
                    )),
                }
            }
            None if self.loopback => {
                let host = headers
                    .get(hyper::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let name = match host.rsplit_once(':') {
                    Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                    _ => host,
                };
                let local = name == "localhost"
                    || name == "[::1]"
                    || name
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (!local).then(|| {
                    Page::error(
                        StatusCode::FORBIDDEN,
                        "this dashboard answers only to localhost and 127.0.0.1\n",
                    )
                })
            }
            None => Some(Page::error(StatusCode::UNAUTHORIZED, "no token\n")),
        }
    }
}
