//! `LocalLauncher` keeps its semantics with real worker processes: exit 0 is
//! done, other exits are restarted within the budget, signals count as
//! disruptions, scaling starts and stops processes, teardown is SIGTERM then
//! SIGKILL after the grace.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use forloop_core::{ClusterLauncher, LaunchHandle, LaunchSpec, LocalLauncher, WorkerCounts};

/// Bound on every wait in this file: generous, since nothing here should
/// take more than a second or two.
const PATIENCE: Duration = Duration::from_secs(20);

/// A fresh directory for one test's marker files, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "forloop-launcher-{test}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// `workers` copies of a shell script; `$MARK` is the scratch directory.
fn spec(dir: &Path, workers: u32, script: &str) -> LaunchSpec {
    LaunchSpec::new(
        "test",
        workers,
        vec!["sh".into(), "-c".into(), script.into()],
    )
    .with_env("MARK", dir.to_str().unwrap())
    .with_grace(Duration::from_secs(1))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn wait(launcher: &LocalLauncher, handle: &LaunchHandle) -> WorkerCounts {
    tokio::time::timeout(PATIENCE, launcher.wait(handle, &mut |_| {}))
        .await
        .expect("the launch finished in time")
        .unwrap()
        .counts
}

/// Poll until `check` holds, failing with what was last seen.
async fn until(what: &str, mut check: impl AsyncFnMut() -> Option<String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let Some(seen) = check().await else { return };
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; saw {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_counts(
    launcher: &LocalLauncher,
    handle: &LaunchHandle,
    what: &str,
    want: impl Fn(&WorkerCounts) -> bool,
) -> WorkerCounts {
    until(what, async || {
        let counts = launcher.state(handle).await.unwrap().counts;
        (!want(&counts)).then(|| format!("{counts:?}"))
    })
    .await;
    launcher.state(handle).await.unwrap().counts
}

async fn until_exists(path: &Path) {
    until(&format!("{}", path.display()), async || {
        (!path.exists()).then(|| "no file".to_string())
    })
    .await;
}

#[tokio::test]
async fn workers_exiting_0_succeed_once_each_with_their_index() {
    let dir = scratch("succeed");
    let launcher = LocalLauncher::new();
    let script = r#"echo "$FORLOOP_WORKER_INDEX" >> "$MARK/runs""#;
    let handle = launcher.launch(&spec(&dir, 3, script)).await.unwrap();

    let counts = wait(&launcher, &handle).await;

    assert_eq!(
        (
            counts.succeeded,
            counts.failed,
            counts.disrupted,
            counts.running
        ),
        (3, 0, 0, 0),
        "{counts:?}"
    );
    let mut runs = lines(&dir.join("runs"));
    runs.sort();
    assert_eq!(
        runs,
        ["0", "1", "2"],
        "each worker ran once, with its index"
    );
}

#[tokio::test]
async fn a_failing_worker_is_restarted_up_to_max_restarts_then_counted_failed() {
    let dir = scratch("fail");
    let launcher = LocalLauncher::new();
    let script = r#"echo run >> "$MARK/runs"; exit 1"#;
    let handle = launcher
        .launch(&spec(&dir, 1, script).with_max_restarts(2))
        .await
        .unwrap();

    let counts = wait(&launcher, &handle).await;

    assert_eq!(
        lines(&dir.join("runs")).len(),
        3,
        "one run and two restarts"
    );
    assert_eq!(
        (
            counts.failed,
            counts.succeeded,
            counts.disrupted,
            counts.running
        ),
        (3, 0, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_worker_killed_by_sigkill_is_disrupted_and_restarted() {
    let dir = scratch("sigkill");
    let launcher = LocalLauncher::new();
    // Killed on the first run, drained on the second.
    let script = r#"[ -e "$MARK/killed" ] && exit 0; touch "$MARK/killed"; kill -9 $$"#;
    let handle = launcher.launch(&spec(&dir, 1, script)).await.unwrap();

    let counts = wait(&launcher, &handle).await;

    assert_eq!(
        (
            counts.disrupted,
            counts.succeeded,
            counts.failed,
            counts.running
        ),
        (1, 1, 0, 0),
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_launch_is_not_finished_before_its_workers_start() {
    let dir = scratch("fresh");
    let launcher = LocalLauncher::new();
    let handle = launcher
        .launch(&spec(&dir, 2, "exec sleep 30"))
        .await
        .unwrap();

    let counts = launcher.state(&handle).await.unwrap().counts;

    assert!(!counts.is_finished(), "finished at launch: {counts:?}");
    launcher.teardown(&handle).await.unwrap();
}

#[tokio::test]
async fn a_launch_is_not_finished_while_a_restart_is_pending() {
    let dir = scratch("pending");
    let launcher = LocalLauncher::new();
    let script = r#"echo run >> "$MARK/runs"; exit 1"#;
    let handle = launcher
        .launch(&spec(&dir, 1, script).with_max_restarts(3))
        .await
        .unwrap();

    until_exists(&dir.join("runs")).await;
    // The restart pauses (100, 200, 400 ms) are long next to this poll.
    let counts = until_counts(&launcher, &handle, "the end", WorkerCounts::is_finished).await;

    assert_eq!(
        counts.failed, 4,
        "finished only after every restart: {counts:?}"
    );
    assert_eq!(lines(&dir.join("runs")).len(), 4);
}

#[tokio::test]
async fn scaling_up_and_down_changes_the_running_workers() {
    let dir = scratch("scale");
    let launcher = LocalLauncher::new();
    let script = r#"touch "$MARK/started.$FORLOOP_WORKER_INDEX"; exec sleep 30"#;
    let handle = launcher.launch(&spec(&dir, 1, script)).await.unwrap();
    until_exists(&dir.join("started.0")).await;
    until_counts(&launcher, &handle, "1 running", |c| c.running == 1).await;

    launcher.scale(&handle, 3).await.unwrap();
    until_exists(&dir.join("started.1")).await;
    until_exists(&dir.join("started.2")).await;
    let counts = until_counts(&launcher, &handle, "3 running", |c| c.running == 3).await;
    assert_eq!(counts.desired, 3);

    launcher.scale(&handle, 1).await.unwrap();
    let counts = until_counts(&launcher, &handle, "1 running", |c| c.running == 1).await;
    assert_eq!(counts.desired, 1);
    assert_eq!(
        (counts.failed, counts.disrupted, counts.succeeded),
        (0, 0, 0),
        "workers scaled away are neither failures nor disruptions: {counts:?}"
    );

    launcher.teardown(&handle).await.unwrap();
}

#[tokio::test]
async fn teardown_sends_sigterm_then_sigkill_after_the_grace() {
    let dir = scratch("teardown");
    let launcher = LocalLauncher::new();
    // Worker 0 stops cleanly on TERM; worker 1 ignores TERM.
    let script = r#"
        if [ "$FORLOOP_WORKER_INDEX" = 0 ]; then
            trap 'echo term > "$MARK/term"; exit 0' TERM
        else
            trap '' TERM
        fi
        echo $$ > "$MARK/ready.$FORLOOP_WORKER_INDEX"
        while :; do sleep 0.1; done
    "#;
    let grace = Duration::from_secs(1);
    let handle = launcher
        .launch(&spec(&dir, 2, script).with_grace(grace))
        .await
        .unwrap();
    until_exists(&dir.join("ready.0")).await;
    until_exists(&dir.join("ready.1")).await;
    let stubborn: i32 = lines(&dir.join("ready.1"))[0].parse().unwrap();

    let start = Instant::now();
    tokio::time::timeout(PATIENCE, launcher.teardown(&handle))
        .await
        .expect("teardown returned")
        .unwrap();
    let took = start.elapsed();

    assert_eq!(lines(&dir.join("term")), ["term"], "worker 0 got SIGTERM");
    assert!(took >= grace, "killed before the grace ended: {took:?}");
    assert!(
        took < grace + Duration::from_millis(1500),
        "teardown took {took:?}"
    );
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(stubborn, 0) } == 0;
    assert!(!alive, "the worker that ignored SIGTERM was killed");
}

#[tokio::test]
async fn teardown_is_not_blocked_by_a_pending_wait() {
    let dir = scratch("wait");
    let launcher = Arc::new(LocalLauncher::new());
    let handle = launcher
        .launch(&spec(&dir, 1, "exec sleep 30"))
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let (launcher, handle) = (launcher.clone(), handle.clone());
        async move {
            launcher
                .wait(&handle, &mut |_| {})
                .await
                .map(|state| state.counts)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    tokio::time::timeout(Duration::from_secs(5), launcher.teardown(&handle))
        .await
        .expect("teardown was not held up by wait")
        .unwrap();

    let counts = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("wait returned after teardown")
        .unwrap()
        .unwrap();
    assert!(counts.is_finished(), "{counts:?}");
}

#[test]
fn a_dry_run_shows_the_environment_without_passwords() {
    let spec = LaunchSpec::new("job", 2, vec!["runner".into(), "work".into()])
        .with_env("FORLOOP_QUEUE", "redis://:hunter2@10.0.0.5:6379/0")
        .with_env("FORLOOP_NAME", "job");
    let text = LocalLauncher::new().render(&spec).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("FORLOOP_QUEUE=redis://:***@10.0.0.5:6379/0"),
        "{text}"
    );
}
