//! The command line: what users' scripts depend on. Keep every name and flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30s, 5m, 1h30m"))
}

/// A duration that must not be zero: a zero time limit, lease age or
/// window cannot work (every attempt would time out at once, no lease would
/// be held, the first empty pull would end a worker).
fn nonzero_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        zero if zero.is_zero() => Err(format!(
            "`{text}` is zero, which cannot work here; give a positive duration, e.g. 30s, 5m"
        )),
        positive => Ok(positive),
    }
}

/// A distributed for loop: run a command on every item, with leases,
/// retries and dead-lettering, on any queue.
#[derive(Debug, Parser)]
#[command(name = "runner", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Queue driver name or URL: memory, or a driver this build carries
    /// (see the error for the list) [default: memory for `run`]
    #[arg(long, global = true, env = "FORLOOP_QUEUE")]
    pub(crate) queue: Option<String>,
    /// Name of the job's queue [default: the queue's own name when --queue
    /// is a URL that names one (`pubsub://P/NAME`, `sqs://NAME`), else forloop]
    #[arg(long, global = true, env = "FORLOOP_NAME")]
    pub(crate) name: Option<String>,
    /// Where `run` and `launch` start workers
    #[arg(long, global = true, env = "FORLOOP_CLUSTER", value_enum, default_value_t = Cluster::Local)]
    pub(crate) cluster: Cluster,
    /// Log format on stderr; RUST_LOG sets the level (default info)
    #[arg(long, global = true, env = "FORLOOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// What to do
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Submit items, run workers until every item is done, print a summary.
    /// Exits 0 only if every item succeeded.
    Run(RunArgs),
    /// Publish items to the queue (validated as a whole first).
    Submit(SubmitArgs),
    /// Run one worker: take items until the queue is drained (exit 0) or a
    /// signal stops it (exit 143 on SIGTERM, 130 on SIGINT).
    Work(WorkArgs),
    /// Show how many items are ready, in flight and dead.
    Status(StatusArgs),
    /// Wait until the queue is drained, showing progress.
    Wait(WaitArgs),
    /// A live page of the queue's jobs in the browser: progress, rate and
    /// ETA, workers, failures grouped by cause, dead items, search.
    /// Read-only; loopback unless given a token
    Dashboard(DashboardArgs),
    /// Start workers and wait for them: processes here (--cluster local),
    /// or a Kubernetes Job (--cluster gke|k8s). Exits 0 when the workers
    /// drained the queue.
    Launch(LaunchArgs),
    /// One record per item of a job: done, dead or pending, with its
    /// attempts, exit code, seconds, worker and the end of its stderr, from
    /// any machine (the cluster-wide joblog).
    Results(ResultsArgs),
    /// The queue's jobs: list them, cancel one, forget one.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect or act on the dead-letter place.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// The workers' Kubernetes Job (--cluster gke|k8s): status, scale, teardown.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create or delete the queue's resources (Pub/Sub topics and
    /// subscriptions; nothing to do for Redis or memory).
    #[command(subcommand)]
    Queue(QueueCommand),
}

/// Where items come from.
#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// File with one item per line; `-` (the default) reads standard input
    #[arg(value_name = "FILE", default_value = "-")]
    pub(crate) input: String,
}

/// How each worker behaves.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerOpts {
    /// Tasks each worker runs at once [default: number of CPUs]
    #[arg(long, short = 'j', env = "FORLOOP_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: Option<u32>,
    /// Lease per item, renewed while its task runs
    #[arg(long, env = "FORLOOP_LEASE", default_value = "30s", value_parser = duration)]
    pub(crate) lease: Duration,
    /// Failed attempts per item (`f` ran and failed) before it is
    /// dead-lettered. A lapse (the worker holding the item vanished:
    /// SIGKILL, a lost node, a network cut past the lease) is no failed
    /// attempt: see --max-lapses
    #[arg(long, env = "FORLOOP_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_attempts: u32,
    /// Lapses per item (its lease ended with no answer: its worker killed
    /// without a chance to hand it back, its node lost, its network cut)
    /// before it is dead-lettered as "lost N times". A graceful hand-back
    /// (SIGTERM) costs nothing. The queue's own dead-letter limit is sized
    /// --max-attempts + --max-lapses
    #[arg(long, env = "FORLOOP_MAX_LAPSES", default_value_t = forloop_core::worker::DEFAULT_MAX_LAPSES)]
    pub(crate) max_lapses: u32,
    /// Time limit per attempt; an attempt over it is killed and retried
    #[arg(long, env = "FORLOOP_TASK_TIMEOUT", value_parser = nonzero_duration)]
    pub(crate) task_timeout: Option<Duration>,
    /// After SIGTERM/SIGINT, how long running tasks may finish before they are
    /// killed and their items given back
    #[arg(long, env = "FORLOOP_GRACE", default_value = "10s", value_parser = duration)]
    pub(crate) grace: Duration,
    /// Longest an item is held (its lease renewed) before it is let go
    #[arg(long, env = "FORLOOP_MAX_LEASE_AGE", default_value = "1h", value_parser = nonzero_duration)]
    pub(crate) max_lease_age: Duration,
    /// Delay before the second attempt of a failed item; doubles each attempt
    /// (each delay is cut at random by up to 25 %)
    #[arg(long, env = "FORLOOP_BACKOFF", default_value = "1s", value_parser = duration)]
    pub(crate) backoff: Duration,
    /// Longest delay between attempts
    #[arg(long, env = "FORLOOP_MAX_BACKOFF", default_value = "5m", value_parser = duration)]
    pub(crate) max_backoff: Duration,
    /// Keep what each item's `f` produces: every file an attempt leaves in
    /// its own fresh directory (FORLOOP_OUTPUT_DIR, `{out}` in CMD) is
    /// uploaded under the item's own prefix before the item counts as done:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX,
    /// file:///DIR or a directory. Credentials come from the cloud's own
    /// chain (AWS_*, Application Default Credentials, ...), never the URL
    #[arg(long, env = "FORLOOP_OUTPUTS", value_name = "URL")]
    pub(crate) outputs: Option<String>,
    /// Keep each attempt's whole stdout (`stdout,stderr`: and stderr) in
    /// the output store beside its files, up to 64 MiB per stream (past it
    /// cut, with a closing line saying how much was written); a failed
    /// attempt's too, until a later attempt replaces it. Needs --outputs
    /// and a command per item (not --serve)
    #[arg(
        long,
        env = "FORLOOP_CAPTURE",
        value_enum,
        value_delimiter = ',',
        value_name = "STREAMS"
    )]
    pub(crate) capture: Vec<CaptureStream>,
    /// Run CMD as one warm process per task slot instead of once per item:
    /// it reads items as lines on stdin and answers each with one line on
    /// stdout: `ok`, `error MESSAGE` (retried) or `fatal MESSAGE`
    /// (dead-lettered). `--serve=json` writes each item as a JSON object
    /// with its attempt and attributes. It sees FORLOOP_SLOT
    #[arg(long, env = "FORLOOP_SERVE", value_enum, num_args = 0..=1, require_equals = true,
        default_missing_value = "lines", value_name = "FORMAT")]
    pub(crate) serve: Option<ServeMode>,
    /// Write one tab-separated line per finished attempt to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) joblog: Option<PathBuf>,
    /// Where the queue cannot count its backlog (Pub/Sub on the emulator, or
    /// without Cloud Monitoring) and holds items without a job: how long
    /// pulls must come back empty before a worker takes the queue as drained
    #[arg(long, env = "FORLOOP_IDLE_WINDOW", default_value = "30s", value_parser = nonzero_duration)]
    pub(crate) idle_window: Duration,
    /// Exit codes that mean "no attempt can succeed" (e.g. `2,64`): an
    /// attempt ending with one is dead-lettered at once, not retried
    #[arg(long, env = "FORLOOP_FATAL_EXIT_CODES", value_delimiter = ',', value_name = "CODES",
        value_parser = clap::value_parser!(i32).range(1..=255))]
    pub(crate) fatal_exit_codes: Vec<i32>,
    /// Stragglers: when a job's tail is shorter than a worker's idle slots
    /// and an item has run over 3 times the median success of its job (and
    /// over 10 s), run one more copy of it on another worker; the first to
    /// succeed settles the item (counted once, `results` says which copy
    /// won) and the other is stopped. The command may then run twice for
    /// one item, at once: one whose effects are not idempotent (it appends,
    /// charges, sends) is your business. Off by default
    #[arg(long, env = "FORLOOP_SPECULATE", num_args = 0..=1, require_equals = true,
        default_value = "false", default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub(crate) speculate: bool,
}

/// Which job a submit belongs to.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobArgs {
    /// The job's name (letters, digits, `.`, `_`, `-`; at most 64). Default:
    /// the queue's name and a digest of the input, so the same command
    /// names the same job
    #[arg(long, env = "FORLOOP_JOB", value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// Continue a job that was stopped or partly failed: send only the
    /// items not yet done or queued (on the memory queue, skip the items
    /// `--joblog FILE` records as done)
    #[arg(long)]
    pub(crate) resume: bool,
    /// Keep every done item's receipt (exit code, seconds, worker, item)
    /// in the ledger, for `runner results`. Without it a Redis queue keeps
    /// done items as counts (under a byte per item; a receipt costs ~170)
    /// and `results` shows their state without details; dead items keep
    /// their receipts always. Recorded in the job's manifest, so every
    /// worker obeys it
    #[arg(long, env = "FORLOOP_KEEP_RECEIPTS")]
    pub(crate) keep_receipts: bool,
    /// Halt the job once more than N items are dead (`50`), or more than
    /// P % of them (`5%`: judged against the items settled so far once
    /// 100 settled, and at once past P % of all the job's items). Recorded
    /// with the job, so every worker on every machine applies it. A halted
    /// job's items stay queued; its workers give back what they hold and
    /// exit 3; `--resume` after the fix continues it
    #[arg(long, env = "FORLOOP_MAX_DEAD", value_name = "N|P%")]
    pub(crate) max_dead: Option<forloop_core::job::DeadLimit>,
}

/// A command's stream `--capture` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CaptureStream {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// How `--serve` writes items to its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServeMode {
    /// The item, one line.
    Lines,
    /// `{"item": ..., "id": ..., "attempt": N, "attributes": {...}}`, one line.
    Json,
}

/// `runner run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Where items come from.
    #[command(flatten)]
    pub(crate) input: InputArgs,
    /// Worker count: tasks in this process for the memory queue, worker
    /// processes (`runner work`) for a shared queue
    #[arg(long, short = 'w', env = "FORLOOP_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: u32,
    /// Worker processes that die abnormally are restarted up to this many times in all
    #[arg(long, env = "FORLOOP_MAX_RESTARTS", default_value_t = 10)]
    pub(crate) max_restarts: u32,
    /// How each worker behaves.
    #[command(flatten)]
    pub(crate) worker: WorkerOpts,
    /// Which job.
    #[command(flatten)]
    pub(crate) job: JobArgs,
    /// Prometheus metrics of the in-process workers (memory queue).
    #[command(flatten)]
    pub(crate) metrics: MetricsOpts,
    /// Where workers run, for --cluster gke|k8s.
    #[command(flatten)]
    pub(crate) cluster: ClusterOpts,
    /// Let items starting with `-` become arguments of their own (`{}`
    /// alone, or no `{}`), where the program reads them as options; without
    /// it such items are refused (put `--` before `{}` if the program takes it)
    #[arg(long, env = "FORLOOP_ALLOW_DASH_ITEMS")]
    pub(crate) allow_dash_items: bool,
    /// The command run on each item, after `--`. Each `{}` becomes the item
    /// (one argument, never through a shell); with no `{}` the item is the
    /// last argument. The task also sees FORLOOP_ITEM and FORLOOP_ATTEMPT.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// `runner submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// Where items come from.
    #[command(flatten)]
    pub(crate) input: InputArgs,
    /// Which job.
    #[command(flatten)]
    pub(crate) job: JobArgs,
}

/// `runner results`.
#[derive(Debug, Args)]
pub(crate) struct ResultsArgs {
    /// The job (default: the queue's only job, or its newest)
    #[arg(long, env = "FORLOOP_JOB", value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    pub(crate) json: bool,
    /// Only items in this state
    #[arg(long, value_enum)]
    pub(crate) state: Option<ResultState>,
    /// Only items whose receipt matches these (pending items have none).
    #[command(flatten)]
    pub(crate) cause: CauseArgs,
    /// The output store the job's workers wrote to (`--outputs` of its
    /// `run`/`work`/`launch`): each item shows its outputs
    #[arg(long, env = "FORLOOP_OUTPUTS", value_name = "URL")]
    pub(crate) outputs: Option<String>,
    /// Fetch every output of the job from the store into DIR
    /// (DIR/ITEMKEY/FILE), then print the results
    #[arg(long, value_name = "DIR", requires = "outputs")]
    pub(crate) download: Option<PathBuf>,
}

/// Which failures: `--exit-code`, `--match` and `--items`, shared by
/// `dead list`, `dead requeue` and `results`. Given together, an item must
/// match each; a flag given several values matches any of them.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CauseArgs {
    /// Only items whose last attempt exited with CODE; repeat the flag or
    /// give a list (137,139). A command killed by signal N counts as 128+N.
    /// Items with no exit code (of no job, or whose lease lapsed) never match
    #[arg(long = "exit-code", value_name = "CODE", value_delimiter = ',', value_parser = exit_code)]
    pub(crate) exit_code: Vec<i32>,
    /// Only items whose reason or stderr tail PATTERN finds something in: a
    /// regular expression (Rust regex syntax, `(?i)` for any case), e.g.
    /// 'Killed|out of memory' or 'HTTP 5\d\d'; a plain word matches itself
    #[arg(long = "match", value_name = "PATTERN")]
    pub(crate) pattern: Option<String>,
    /// Only the items listed in FILE, one a line as `submit` reads them
    /// (`-`: standard input)
    #[arg(long, value_name = "FILE")]
    pub(crate) items: Option<String>,
}

/// `CauseArgs` and a job: the filter of `dead list` and `dead requeue`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct DeadFilterArgs {
    /// Only items of this job. Not read from FORLOOP_JOB: a requeue
    /// filtered by a variable set for something else would move less than
    /// asked without saying so
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// The causes.
    #[command(flatten)]
    pub(crate) cause: CauseArgs,
}

fn exit_code(text: &str) -> Result<i32, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{text}` is not an exit code: give a whole number such as 137 \
             (a command killed by signal N exits 128+N), or several as 137,139"
        )
    })
}

/// An item's state in `runner results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ResultState {
    /// It succeeded.
    Done,
    /// It was dead-lettered.
    Dead,
    /// Not settled yet (queued, running, retrying, or never sent).
    Pending,
}

/// `runner work`.
#[derive(Debug, Args)]
pub(crate) struct WorkArgs {
    /// How each worker behaves.
    #[command(flatten)]
    pub(crate) worker: WorkerOpts,
    /// The job these workers are for: each ends when that job is over
    /// (complete or cancelled), whatever else the queue holds, and hands
    /// back items of other jobs unless they were recorded with the same
    /// command. Without it a worker serves the whole queue: every job's
    /// items and items without a job, until every job is over and the
    /// queue is empty
    #[arg(long, env = "FORLOOP_JOB", value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// Prometheus metrics of this worker.
    #[command(flatten)]
    pub(crate) metrics: MetricsOpts,
    /// The command run on each item, after `--` (see `runner run --help`)
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// A worker's Prometheus metrics endpoint.
#[derive(Debug, Clone, Args)]
pub(crate) struct MetricsOpts {
    /// Serve Prometheus metrics at http://ADDR/metrics while the worker runs
    /// (e.g. 0.0.0.0:9464; port 0 picks a free one and logs it). Counts and
    /// timings only: no item, no queue address, no secret
    #[arg(long, env = "FORLOOP_METRICS_ADDR", value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// After the worker ends (`work`), keep serving its metrics this long,
    /// so the next scrape sees its last counts
    #[arg(long, env = "FORLOOP_METRICS_LINGER", default_value = "0s", value_parser = duration,
        requires = "metrics_addr")]
    pub(crate) metrics_linger: Duration,
}

/// `runner launch`.
#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    /// Worker processes to run
    #[arg(long, short = 'w', env = "FORLOOP_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: u32,
    /// Workers that die abnormally are restarted up to this many times in all
    #[arg(long, env = "FORLOOP_MAX_RESTARTS", default_value_t = 10)]
    pub(crate) max_restarts: u32,
    /// Print what would be started, start nothing (Kubernetes: the manifests as YAML)
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Kubernetes: create the Job and return, instead of waiting for it
    #[arg(long)]
    pub(crate) detach: bool,
    /// The job these workers are for: each ends when that job is over
    /// (complete or cancelled), whatever else the queue holds, and hands
    /// back items of other jobs unless they were recorded with the same
    /// command. Without it a worker serves the whole queue: every job's
    /// items and items without a job, until every job is over and the
    /// queue is empty
    #[arg(long, env = "FORLOOP_JOB", value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// How each worker behaves.
    #[command(flatten)]
    pub(crate) worker: WorkerOpts,
    /// Where workers run, for --cluster gke|k8s.
    #[command(flatten)]
    pub(crate) cluster: ClusterOpts,
    /// The command run on each item, after `--` (see `runner run --help`)
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// Where `run` and `launch` start workers (`--cluster`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Cluster {
    /// Worker processes on this machine
    Local,
    /// A Kubernetes Job on GKE spot nodes
    Gke,
    /// A Kubernetes Job on any nodes (also written `kubernetes`)
    #[value(alias = "kubernetes")]
    K8s,
}

impl std::fmt::Display for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// Kubernetes settings of `run` and `launch` (--cluster gke|k8s).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes (--cluster gke|k8s)")]
pub(crate) struct ClusterOpts {
    /// The worker image, with `runner` and your command in it (see the Dockerfile)
    #[arg(long, env = "FORLOOP_IMAGE", value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// Namespace of the Job
    #[arg(long, env = "FORLOOP_NAMESPACE", default_value = "default")]
    pub(crate) namespace: String,
    /// Kubernetes service account of the workers; bind it to a Google service
    /// account with Workload Identity [default: the namespace's default]
    #[arg(long, env = "FORLOOP_SERVICE_ACCOUNT")]
    pub(crate) service_account: Option<String>,
    /// CPU request per worker
    #[arg(long, env = "FORLOOP_CPU", default_value = "1")]
    pub(crate) cpu: String,
    /// Memory request and limit per worker
    #[arg(long, env = "FORLOOP_MEMORY", default_value = "1Gi")]
    pub(crate) memory: String,
    /// GKE: use the legacy preemptible node label instead of spot
    #[arg(long)]
    pub(crate) preemptible: bool,
    /// Worker failures (not preemptions) before the Job gives up
    #[arg(long, default_value_t = 6)]
    pub(crate) backoff_limit: u32,
    /// How long the finished Job is kept before Kubernetes deletes it
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub(crate) ttl: Duration,
    /// Stop the whole Job after this long
    #[arg(long, value_parser = duration)]
    pub(crate) active_deadline: Option<Duration>,
    /// A Secret whose keys become the workers' environment (credentials such
    /// as REDIS_URL with a password); repeatable
    #[arg(long = "env-secret", value_name = "SECRET")]
    pub(crate) env_secrets: Vec<String>,
    /// Render a KEDA ScaledJob (scales on the queue's backlog) instead of a
    /// Job; with --dry-run, for `kubectl apply -f -`
    #[arg(long)]
    pub(crate) keda: bool,
    /// kubeconfig file [default: KUBECONFIG, ~/.kube/config, or in-cluster]
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Workers serve Prometheus metrics on this port (`work --metrics-addr`):
    /// the pods get the container port and prometheus.io annotations, and
    /// on GKE a PodMonitoring for Google Managed Prometheus
    #[arg(long, env = "FORLOOP_METRICS_PORT", value_name = "PORT",
        value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) metrics_port: Option<u16>,
}

/// Which Job `runner cluster` acts on (its name is `--name`).
#[derive(Debug, Clone, Args)]
pub(crate) struct ClusterTarget {
    /// Namespace of the Job
    #[arg(long, env = "FORLOOP_NAMESPACE", default_value = "default")]
    pub(crate) namespace: String,
    /// kubeconfig file
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
}

/// `runner cluster ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Workers of the run's Job: desired, running, succeeded, failed, disrupted.
    Status {
        /// Which Job.
        #[command(flatten)]
        target: ClusterTarget,
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Change how many workers run at once.
    Scale {
        /// Workers from now on (0 pauses the run)
        #[arg(long, short = 'w')]
        workers: u32,
        /// Which Job.
        #[command(flatten)]
        target: ClusterTarget,
    },
    /// Delete the Job; its workers get SIGTERM and hand their items back.
    Teardown {
        /// Which Job.
        #[command(flatten)]
        target: ClusterTarget,
    },
}

/// `runner queue ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Create the queue (idempotent), with its dead-letter place.
    Create {
        /// The lease (the subscription's ack deadline on Pub/Sub)
        #[arg(long, env = "FORLOOP_LEASE", default_value = "30s", value_parser = duration)]
        lease: Duration,
        /// Failed attempts the workers will allow (`run`/`work --max-attempts`)
        #[arg(long, env = "FORLOOP_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: u32,
        /// Lapses the workers will allow (`run`/`work --max-lapses`): the
        /// backend dead-letters an item on its own after --max-attempts +
        /// --max-lapses deliveries (Pub/Sub takes 5 to 100)
        #[arg(long, env = "FORLOOP_MAX_LAPSES", default_value_t = forloop_core::worker::DEFAULT_MAX_LAPSES)]
        max_lapses: u32,
    },
    /// Delete the queue and every item in it.
    Delete,
}

/// `runner dead ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
    /// List dead-lettered items, oldest first: item, attempts, reason, and
    /// for items of a job the last exit code and stderr line.
    List {
        /// Show at most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
        /// Which dead items.
        #[command(flatten)]
        filter: DeadFilterArgs,
    },
    /// Put dead items back to work with a fresh attempt count: every one,
    /// or those the filters pick (the rest stay dead, untouched).
    Requeue {
        /// Which dead items.
        #[command(flatten)]
        filter: DeadFilterArgs,
        /// Show what would move (as `dead list` does) and move nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every dead item for good.
    Purge,
}

/// `runner job`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Every job on the queue: its phase (unsealed, running, complete,
    /// cancelled), done, dead and total, and the command it runs.
    List {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: nobody waits for it any more, and its items still in
    /// the queue are settled without running. Items running now finish.
    Cancel {
        /// The job's name (see `runner job list`)
        job: String,
    },
    /// Forget a job that is over (complete or cancelled): its records leave
    /// the ledger; stray items of it are settled without running.
    Forget {
        /// The job's name (see `runner job list`)
        job: String,
    },
}

/// `runner status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print `{"ready":..,"in_flight":..,"dead":..,"exact":..}`
    #[arg(long)]
    pub(crate) json: bool,
    /// Read again every DUR (default 2s) until Ctrl-C: on a terminal the
    /// screen is redrawn; with --json one object a line
    #[arg(long, value_name = "DUR", num_args = 0..=1, require_equals = true,
        default_missing_value = "2s", value_parser = nonzero_duration)]
    pub(crate) watch: Option<Duration>,
}

/// `runner dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Where to serve the page. Another address than loopback needs a
    /// token: --new-token, or FORLOOP_DASHBOARD_TOKEN
    #[arg(
        long,
        env = "FORLOOP_DASHBOARD_LISTEN",
        default_value = "127.0.0.1:8787",
        value_name = "ADDR"
    )]
    pub(crate) listen: std::net::SocketAddr,
    /// Make a random token, print the page's URL with it, and refuse
    /// requests without it
    #[arg(long)]
    pub(crate) new_token: bool,
    /// How often the one reader (shared by every open page) reads the
    /// ledger's jobs and the backlog
    #[arg(long, default_value = "5s", value_parser = nonzero_duration)]
    pub(crate) poll: Duration,
    /// How often it reads a running job's receipts (workers, durations,
    /// failures, search): each read lists every receipt of the job
    #[arg(long, default_value = "30s", value_parser = nonzero_duration)]
    pub(crate) receipts_poll: Duration,
    /// A worker with no receipt for this long while its job runs shows
    /// as gone
    #[arg(long, default_value = "60s", value_parser = nonzero_duration)]
    pub(crate) stalled_after: Duration,
    /// Let the page change the queue: requeue a failure group of a job's
    /// dead items (a filtered `dead requeue`) and resume a halted job.
    /// Each action is a POST carrying this process's action token from the
    /// page and sent from the page itself (its Origin); without this flag
    /// the page is read-only
    #[arg(long)]
    pub(crate) allow_actions: bool,
}

/// `runner wait`.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// How often to read the backlog
    #[arg(long, default_value = "1s", value_parser = nonzero_duration)]
    pub(crate) poll: Duration,
}
