//! A small HTTP/1.1 server (hyper's server half): GET and HEAD, a bounded
//! request, a fixed set of pages answered from memory; POST only where a
//! caller gives an action route ([`serve_with_actions`]: the dashboard
//! started with `--allow-actions`), with a body of at most 8 KiB.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Failure;

/// What a page handler answers: status, content type, body.
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    /// A Content-Security-Policy for an HTML page.
    pub(crate) csp: Option<&'static str>,
}

impl Page {
    /// A 200 page.
    pub(crate) fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
            csp: None,
        }
    }

    /// A plain-text error page.
    pub(crate) fn error(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text.into()),
            csp: None,
        }
    }
}

/// Answers one request: its path and query (`/metrics`, `/api?x=1`) and
/// its headers.
pub(crate) type Route = Arc<dyn Fn(&str, &hyper::HeaderMap) -> Page + Send + Sync>;

/// Answers one POST: its path and query, headers and body. Async: an
/// action calls the queue.
pub(crate) type ActionRoute = Arc<
    dyn Fn(String, hyper::HeaderMap, Bytes) -> std::pin::Pin<Box<dyn Future<Output = Page> + Send>>
        + Send
        + Sync,
>;

/// The most of a POST body read.
const MAX_BODY: usize = 8 * 1024;

/// Bind `addr`, with an error that names the flag, the address and what to
/// do (another port; a free one with port 0).
pub(crate) async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr).await.map_err(|error| {
        let why = match error.kind() {
            std::io::ErrorKind::AddrInUse => "the address is in use by another program".to_string(),
            std::io::ErrorKind::AddrNotAvailable => {
                "no interface of this machine has that IP".to_string()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need privileges)".to_string()
            }
            _ => error.to_string(),
        };
        Failure::new(format!(
            "{flag} {addr}: cannot listen there: {why}; give another port (port 0 picks a free one)"
        ))
    })
}

/// Serve `route` on `listener` until the process ends: each connection on
/// a task of its own, so a slow client holds up nobody.
pub(crate) fn serve(listener: TcpListener, route: Route) {
    serve_with_actions(listener, route, None);
}

/// [`serve`], with POSTs going to `actions` (none: refused, read-only).
pub(crate) fn serve_with_actions(
    listener: TcpListener,
    route: Route,
    actions: Option<ActionRoute>,
) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: try again shortly.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let route = Arc::clone(&route);
            let actions = actions.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let route = Arc::clone(&route);
                    let actions = actions.clone();
                    async move {
                        let response = match actions {
                            Some(act) if request.method() == Method::POST => {
                                respond(post(&*act, request).await, false)
                            }
                            _ => answer(&*route, &request),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .max_buf_size(16 * 1024)
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn answer(
    route: &(dyn Fn(&str, &hyper::HeaderMap) -> Page + Send + Sync),
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let page = if request.method() == Method::GET || request.method() == Method::HEAD {
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        route(target, request.headers())
    } else {
        Page::error(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n")
    };
    respond(page, request.method() == Method::HEAD)
}

/// A POST's body (at most [`MAX_BODY`]), then its answer from `act`.
async fn post(
    act: &(
         dyn Fn(
        String,
        hyper::HeaderMap,
        Bytes,
    ) -> std::pin::Pin<Box<dyn Future<Output = Page> + Send>>
             + Send
             + Sync
     ),
    request: Request<Incoming>,
) -> Page {
    use http_body_util::BodyExt;
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let (parts, body) = request.into_parts();
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => act(target, parts.headers, body.to_bytes()).await,
        Err(_) => Page::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 8 KiB, or was cut\n",
        ),
    }
}

fn respond(page: Page, head: bool) -> Response<Full<Bytes>> {
    let body = if head { Bytes::new() } else { page.body };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = page.status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(page.content_type),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    // A token in the address never leaves for another site in a Referer.
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // page's own form posts, and the actions' same-origin check (which
    // needs the real Origin) would refuse them all.
    headers.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("same-origin"),
    );
    if let Some(csp) = page.csp {
        headers.insert(
            hyper::header::CONTENT_SECURITY_POLICY,
            hyper::header::HeaderValue::from_static(csp),
        );
        headers.insert(
            hyper::header::X_FRAME_OPTIONS,
            hyper::header::HeaderValue::from_static("DENY"),
        );
    }
    response
}
