//! A worker's Prometheus metrics: what its loop did with items (read from
//! the counts the loop keeps itself, [`Worker::counts`]), and every queue
//! and ledger call it made, by operation, with latency and errors (through
//! a decorator on each).
//!
//! Names follow Prometheus' conventions: a `forloop_` prefix, `_total` on
//! counters, base units (`_seconds`). The page is OpenMetrics text, which
//! Prometheus and Google Managed Prometheus read.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use forloop_core::job::{JobSeqs, JobStatus, Ledger, LedgerDecorator, Receipt, ReceiptRef};
use forloop_core::worker::Worker;
use forloop_core::{
    Backend, Backlog, DeadLetter, Delivery, Item, LeaseReport, LeaseToken, MessageId,
    QueueDecorator, QueueError, WorkQueue,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::attempts::Attempts;
use super::http::{Page, Route};

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A queue or ledger call, by what it does.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

type Histograms = Family<Operation, Histogram, fn() -> Histogram>;

/// Call latencies: 1 ms to about 65 s, doubling.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// One process's worker metrics, shared by its workers.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    registry: Registry,
    /// Every watched worker's own counts, added up at a scrape.
    attempts: Arc<Attempts>,
    calls: Arc<CallMetrics>,
}

/// Queue and ledger calls by operation: how many, how many failed, how
/// long each took. A worker's, or the dashboard's own reads.
#[derive(Debug)]
pub(crate) struct CallMetrics {
    calls: Family<Operation, Counter>,
    errors: Family<Operation, Counter>,
    seconds: Histograms,
}

impl CallMetrics {
    /// Fresh counters, registered in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Arc<Self> {
        let this = Self {
            calls: Family::default(),
            errors: Family::default(),
            seconds: Family::new_with_constructor(call_histogram),
        };
        registry.register(
            "forloop_queue_calls",
            "Queue and ledger calls made, by operation",
            this.calls.clone(),
        );
        registry.register(
            "forloop_queue_call_errors",
            "Queue and ledger calls that failed or passed their deadline, by operation",
            this.errors.clone(),
        );
        registry.register_with_unit(
            "forloop_queue_call_duration",
            "How long queue and ledger calls took, by operation",
            Unit::Seconds,
            this.seconds.clone(),
        );
        Arc::new(this)
    }

    /// `backend` with each call counted and timed.
    pub(crate) fn metered(self: &Arc<Self>, backend: Backend) -> Backend {
        Backend {
            queue: Arc::new(MeteredQueue {
                inner: backend.queue,
                metrics: Arc::clone(self),
            }),
            ledger: backend.ledger.map(|inner| {
                Arc::new(MeteredLedger {
                    inner,
                    metrics: Arc::clone(self),
                }) as Arc<dyn Ledger>
            }),
        }
    }

    /// Calls made so far, by operation (for the dashboard's own cost).
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        for op in OPERATIONS {
            let label = Operation { operation: op };
            let n = self.calls.get(&label).map_or(0, |c| c.get());
            if n > 0 {
                out.push((op, n));
            }
        }
        out
    }

    /// Time `call` as `operation`. A call dropped before it answered (the
    /// worker's own deadline passed) counts as an error.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let mut guard = CallGuard {
            metrics: self,
            operation,
            started: Instant::now(),
            ok: false,
        };
        let result = call.await;
        guard.ok = result.is_ok();
        result
    }
}

/// Every operation a metered backend names.
const OPERATIONS: [&str; 16] = [
    "publish",
    "pull",
    "ack",
    "nack",
    "release",
    "extend_lease",
    "dead_letter",
    "backlog",
    "list_dead",
    "record_then_ack",
    "record_then_dead_letter",
    "ledger_jobs",
    "ledger_forgotten",
    "ledger_seqs",
    "ledger_receipts",
    "ledger_record",
];

impl WorkerMetrics {
    /// Metrics for workers on a backend whose job ledger is `ledger`.
    pub(crate) fn new(ledger: Option<Arc<dyn Ledger>>) -> Self {
        let mut registry = Registry::default();
        let attempts = Arc::new(Attempts::default());
        let calls = CallMetrics::new(&mut registry);
        registry.register_collector(Box::new(Arc::clone(&attempts)));
        if let Some(ledger) = ledger {
            registry.register_collector(Box::new(LedgerBackendCalls(ledger)));
        }
        Self {
            registry,
            attempts,
            calls,
        }
    }

    /// Put `worker`'s attempts on the page (before it runs).
    pub(crate) fn watch(&self, worker: &Worker) {
        self.attempts.watch(worker.counts());
    }

    /// The route that serves `/metrics` (and says where it is on `/`).
    pub(crate) fn route(self: &Arc<Self>) -> Route {
        let metrics = Arc::clone(self);
        Arc::new(move |target: &str, _: &hyper::HeaderMap| {
            let path = target.split('?').next().unwrap_or(target);
            match path {
                "/metrics" => metrics_page(&metrics.registry),
                "/" => Page::ok(
                    "text/plain; charset=utf-8",
                    "forloop worker: metrics at /metrics\n",
                ),
                _ => Page::error(hyper::StatusCode::NOT_FOUND, "not found: try /metrics\n"),
            }
        })
    }

    /// `backend` with each call counted and timed.
    pub(crate) fn metered(&self, backend: Backend) -> Backend {
        self.calls.metered(backend)
    }
}

/// With `listener` (from `--metrics-addr`): serve metrics there, and give
/// back `backend` metered and the metrics to [`watch`](Watched::watch)
/// each worker with; without, `backend` as it is and metrics that watch
/// nothing.
pub(crate) fn serve_workers(
    listener: Option<tokio::net::TcpListener>,
    backend: Backend,
) -> (Backend, Watched) {
    let Some(listener) = listener else {
        return (backend, Watched(None));
    };
    let metrics = Arc::new(WorkerMetrics::new(backend.ledger.clone()));
    if let Ok(at) = listener.local_addr() {
        tracing::info!("metrics at http://{at}/metrics");
    }
    super::http::serve(listener, metrics.route());
    (metrics.metered(backend), Watched(Some(metrics)))
}

/// A process's worker metrics where it serves them (`--metrics-addr`).
#[derive(Debug, Clone)]
pub struct Watched(Option<Arc<WorkerMetrics>>);

impl Watched {
    /// Put `worker`'s attempts on the page: call it for each worker,
    /// before it runs. Without a page, nothing.
    pub fn watch(&self, worker: &Worker) {
        if let Some(metrics) = &self.0 {
            metrics.watch(worker);
        }
    }
}

/// `registry` as a `/metrics` page.
pub(crate) fn metrics_page(registry: &Registry) -> Page {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    Page::ok(OPENMETRICS, text)
}

/// Records one call when dropped: answered or not.
struct CallGuard<'a> {
    metrics: &'a CallMetrics,
    operation: &'static str,
    started: Instant,
    ok: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let label = Operation {
            operation: self.operation,
        };
        let m = self.metrics;
        m.calls.get_or_create(&label).inc();
        if !self.ok {
            m.errors.get_or_create(&label).inc();
        }
        m.seconds
            .get_or_create(&label)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[derive(Debug)]
struct MeteredQueue {
    inner: Arc<dyn WorkQueue>,
    metrics: Arc<CallMetrics>,
}

#[async_trait]
impl QueueDecorator for MeteredQueue {
    fn inner(&self) -> &dyn WorkQueue {
        &*self.inner
    }
    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        self.metrics
            .timed("publish", self.inner.publish(batch))
            .await
    }
    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.metrics.timed("pull", self.inner.pull(max, wait)).await
    }
    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.metrics.timed("ack", self.inner.ack(tokens)).await
    }
    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.metrics
            .timed("nack", self.inner.nack(tokens, delay))
            .await
    }
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.metrics
            .timed("release", self.inner.release(tokens))
            .await
    }
    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let call = self.inner.extend_lease(tokens, lease);
        self.metrics.timed("extend_lease", call).await
    }
    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let call = self.inner.dead_letter(tokens, reason);
        self.metrics.timed("dead_letter", call).await
    }
    async fn backlog(&self) -> Result<Backlog, QueueError> {
        self.metrics.timed("backlog", self.inner.backlog()).await
    }
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.metrics
            .timed("list_dead", self.inner.list_dead(limit))
            .await
    }
}

#[derive(Debug)]
struct MeteredLedger {
    inner: Arc<dyn Ledger>,
    metrics: Arc<CallMetrics>,
}

/// The calls workers and readers make to a ledger; the rest (submits,
/// admin) pass through uncounted.
#[async_trait]
impl LedgerDecorator for MeteredLedger {
    fn inner(&self) -> &dyn Ledger {
        &*self.inner
    }
    async fn record_then_ack(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        let call = self.inner.record_then_ack(queue, tokens, receipts);
        self.metrics.timed("record_then_ack", call).await
    }
    async fn record_then_dead_letter(
        &self,
        queue: &dyn WorkQueue,
        tokens: &[LeaseToken],
        reason: &str,
        receipts: &[Option<Receipt>],
    ) -> Result<LeaseReport, QueueError> {
        let call = self
            .inner
            .record_then_dead_letter(queue, tokens, reason, receipts);
        self.metrics.timed("record_then_dead_letter", call).await
    }
    async fn jobs(&self) -> Result<Vec<JobStatus>, QueueError> {
        self.metrics.timed("ledger_jobs", self.inner.jobs()).await
    }
    async fn forgotten(&self) -> Result<Vec<String>, QueueError> {
        self.metrics
            .timed("ledger_forgotten", self.inner.forgotten())
            .await
    }
    async fn seqs(&self, job: &str) -> Result<Option<JobSeqs>, QueueError> {
        self.metrics
            .timed("ledger_seqs", self.inner.seqs(job))
            .await
    }
    async fn receipts(&self, job: &str) -> Result<Vec<Receipt>, QueueError> {
        self.metrics
            .timed("ledger_receipts", self.inner.receipts(job))
            .await
    }
    async fn record(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.metrics
            .timed("ledger_record", self.inner.record(receipts))
            .await
    }
}

/// Write one unlabelled metric read at a scrape (a collector's constant
/// counter or gauge) with its name, help and unit.
pub(crate) fn encode_one(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: impl prometheus_client::encoding::EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// What a sheet ledger (SQS, Pub/Sub) has asked of the backend, read at
/// each scrape: one `forloop_ledger_*` call of the metered decorator is
/// several backend calls there (a read pulls every sheet, publishes the
/// merge and acks what it read), and these say how many. Nothing for a
/// ledger that does not count (Redis, memory: one call is one call).
#[derive(Debug)]
pub(crate) struct LedgerBackendCalls(pub(crate) Arc<dyn Ledger>);

/// A backend call a sheet ledger makes, by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    call: &'static str,
}

impl prometheus_client::collector::Collector for LedgerBackendCalls {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let Some(calls) = self.0.calls() else {
            return Ok(());
        };
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "forloop_ledger_backend_calls",
            "Backend calls the sheet ledger made, by kind (SQS and Pub/Sub keep the job ledger as messages)",
            None,
            counter.metric_type(),
        )?;
        for (call, n) in [
            ("pull", calls.pulls),
            ("publish", calls.publishes),
            ("ack", calls.acks),
            ("release", calls.releases),
            ("list_dead", calls.dead_looks),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&Call { call })?)?;
        }
        let totals = [
            (
                "forloop_ledger_sheets_read",
                "Sheets the sheet ledger's pulls brought",
                calls.sheets_read,
            ),
            (
                "forloop_ledger_sheets_written",
                "Sheets the sheet ledger published",
                calls.sheets_written,
            ),
        ];
        for (name, help, n) in totals {
            encode_one(&mut encoder, name, help, None, ConstCounter::new(n))?;
        }
        encode_one(
            &mut encoder,
            "forloop_ledger_written",
            "Bytes of the sheets the sheet ledger published",
            Some(&Unit::Bytes),
            ConstCounter::new(calls.bytes_written),
        )
    }
}
