//! Seeing a job while it runs: a worker's Prometheus metrics
//! (`work --metrics-addr`), the live page of `runner dashboard`, and the
//! small HTTP server that serves both.
//!
//! Everything here reads; nothing here changes the queue. A metric is
//! counted on the worker's loop through its [`WorkerEvents`] (a counter
//! bumped, never a wait) and on each queue call through a decorator; the
//! page is encoded only when a scraper asks for it.
//!
//! [`WorkerEvents`]: forloop_core::worker::WorkerEvents

mod attempts;
pub(crate) mod dashboard;
pub(crate) mod http;
pub(crate) mod metrics;
