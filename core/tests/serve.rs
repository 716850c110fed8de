//! Warm serve processes: the reply protocol and every way a process can
//! misbehave. These run real processes (`sh`, `python3`), so they use the
//! real clock; every wait is for a condition, with a deadline, and every
//! timing assertion is a lower bound the code must cause.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forloop_core::handler::{OutcomeKind, ServeConfig, ServeFormat, ServeHandler};
use forloop_core::worker::{AttemptRecord, Backoff, Settlement, Shutdown, WorkerEvents};
use forloop_core::{
    Handler, Item, MemoryQueue, QueueConfig, Task, TaskOutcome, WorkQueue, Worker, WorkerConfig,
    WorkerExit,
};

fn scratch(test: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "forloop-serve-{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn task(item: &str) -> Task {
    Task {
        id: Arc::from(format!("id-{item}")),
        item: Item::new(item.to_string()),
        attempt: 1,
        output_dir: None,
    }
}

/// A serve handler running `script` with `sh -c`; `$D` in it is `dir`.
fn sh(script: &str, dir: &Path, config: ServeConfig) -> ServeHandler {
    let script = format!("D='{}'\n{script}", dir.display());
    ServeHandler::new(["sh", "-c", &script], config).unwrap()
}

fn python(script: &str, config: ServeConfig) -> ServeHandler {
    ServeHandler::new(["python3", "-c", script], config).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait until `path` exists (10 s at most).
async fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_ended(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn reason(outcome: &TaskOutcome) -> &str {
    outcome.reason.as_deref().unwrap_or("")
}

const ECHO_OK: &str = r#"while read -r item; do echo "$FORLOOP_SLOT $FORLOOP_SERVE $$ $item" >> "$D/seen"; echo ok; done"#;

#[tokio::test]
async fn a_loop_that_prints_ok_serves_every_item_in_one_process() {
    let dir = scratch("ok");
    let handler = sh(ECHO_OK, &dir, ServeConfig::default());
    for item in ["a", "b c", "it's $(x)"] {
        let outcome = handler.handle(task(item)).await;
        assert_eq!(outcome, TaskOutcome::success(), "{item}");
    }
    let seen = lines(&dir.join("seen"));
    assert_eq!(seen.len(), 3, "{seen:?}");
    let pid = seen[0].split(' ').nth(2).unwrap().to_string();
    for (line, item) in seen.iter().zip(["a", "b c", "it's $(x)"]) {
        assert_eq!(*line, format!("0 lines {pid} {item}"));
    }
    assert_eq!(handler.processes_started(), 1);
}

#[tokio::test]
async fn concurrent_tasks_get_one_process_per_slot() {
    let dir = scratch("slots");
    let handler = sh(ECHO_OK, &dir, ServeConfig::default());
    let (a, b) = tokio::join!(handler.handle(task("a")), handler.handle(task("b")));
    assert_eq!(
        (a.kind, b.kind),
        (OutcomeKind::Succeeded, OutcomeKind::Succeeded)
    );
    let mut slots: Vec<String> = lines(&dir.join("seen"))
        .iter()
        .map(|line| line.split(' ').next().unwrap().to_string())
        .collect();
    slots.sort();
    assert_eq!(slots, ["0", "1"]);
    assert_eq!(handler.processes_started(), 2);
}

#[tokio::test]
async fn error_and_fatal_replies_carry_their_messages() {
    let dir = scratch("replies");
    let script = r#"while read -r item; do
  case "$item" in
    flaky) echo "error: the database is busy" ;;
    bad) echo "FATAL no such video" ;;
    json) echo '{"status": "error", "message": "from json"}' ;;
    *) echo "ok done" ;;
  esac
done"#;
    let handler = sh(script, &dir, ServeConfig::default());
    let flaky = handler.handle(task("flaky")).await;
    assert_eq!(flaky, TaskOutcome::failed("the database is busy"));
    let bad = handler.handle(task("bad")).await;
    assert_eq!(bad, TaskOutcome::fatal("no such video"));
    let json = handler.handle(task("json")).await;
    assert_eq!(json, TaskOutcome::failed("from json"));
    // The words after `ok` are the item's value (here not JSON: a string).
    assert_eq!(
        handler.handle(task("fine")).await,
        TaskOutcome::success().with_value(forloop_core::job::ItemValue::string("done"))
    );
    assert_eq!(
        handler.processes_started(),
        1,
        "replies never restart the process"
    );
}

#[tokio::test]
async fn a_crash_mid_item_fails_that_attempt_and_the_next_item_gets_a_new_process() {
    let dir = scratch("crash");
    let script = r#"while read -r item; do
  echo $$ >> "$D/pids"
  if [ "$item" = crash ]; then echo "dying on $item" >&2; exit 3; fi
  echo ok
done"#;
    let handler = sh(script, &dir, ServeConfig::default());
    assert_eq!(handler.handle(task("a")).await, TaskOutcome::success());
    let crash = handler.handle(task("crash")).await;
    assert_eq!(crash.kind, OutcomeKind::Failed, "{crash:?}");
    for part in [
        "serve process",
        "slot 0",
        "sh -c",
        "exited while holding item \"crash\"",
        "exit code 3",
    ] {
        assert!(reason(&crash).contains(part), "{part:?} in {crash:?}");
    }
    assert_eq!(handler.handle(task("b")).await, TaskOutcome::success());
    let pids = lines(&dir.join("pids"));
    assert_eq!(pids.len(), 3);
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2], "a new process after the crash");
    assert_eq!(handler.processes_started(), 2);
}

#[tokio::test]
async fn a_process_that_exits_before_reading_fails_the_attempt_saying_so() {
    let dir = scratch("noread");
    let handler = sh("exit 0", &dir, ServeConfig::default());
    let outcome = handler.handle(task("x")).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert!(
        reason(&outcome).contains("before reading item \"x\""),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn half_a_reply_line_at_exit_is_not_a_reply() {
    let dir = scratch("partial");
    let handler = sh(
        "read -r item; printf ok; exit 0",
        &dir,
        ServeConfig::default(),
    );
    let outcome = handler.handle(task("x")).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed, "{outcome:?}");
    assert!(
        reason(&outcome).contains("in the middle of its reply to item \"x\""),
        "{outcome:?}"
    );
    assert!(
        reason(&outcome).contains("wrote `ok` without the ending newline"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn output_that_is_not_a_reply_fails_the_item_and_restarts_the_process() {
    let dir = scratch("garbage");
    let script = r#"while read -r item; do
  echo $$ >> "$D/pids"
  if [ "$item" = chatty ]; then echo "loading model..."; fi
  echo ok
done"#;
    let handler = sh(script, &dir, ServeConfig::default());
    let outcome = handler.handle(task("chatty")).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    for part in [
        "answered item \"chatty\" with `loading model...`",
        "not a reply",
        "print logs to stderr",
        "slot 0",
    ] {
        assert!(reason(&outcome).contains(part), "{part:?} in {outcome:?}");
    }
    // The `ok` it printed after the garbage must not be taken as the next
    // item's reply: the process was replaced.
    assert_eq!(handler.handle(task("b")).await, TaskOutcome::success());
    let pids = lines(&dir.join("pids"));
    assert_ne!(pids[0], pids[1], "{pids:?}");
}

#[tokio::test]
async fn a_double_reply_is_caught_before_the_next_item_is_written() {
    let script = r#"
import os, sys
for line in sys.stdin:
    with open(os.environ["D"] + "/seen", "a") as seen:
        seen.write(f"{os.getpid()} {line}")
    # Two replies to one item, in one write.
    sys.stdout.write("ok\nok\n" if line.strip() == "twice" else "ok\n")
    sys.stdout.flush()
"#;
    let dir = scratch("double");
    let handler = ServeHandler::new(
        [
            "env".to_string(),
            format!("D={}", dir.display()),
            "python3".into(),
            "-c".into(),
            script.into(),
        ],
        ServeConfig::default(),
    )
    .unwrap();
    assert_eq!(handler.handle(task("twice")).await, TaskOutcome::success());
    assert_eq!(handler.handle(task("next")).await, TaskOutcome::success());
    let seen = lines(&dir.join("seen"));
    assert_eq!(seen.len(), 2, "{seen:?}");
    let pid = |line: &str| line.split(' ').next().unwrap().to_string();
    assert_ne!(
        pid(&seen[0]),
        pid(&seen[1]),
        "the process that replied twice must not answer the next item: {seen:?}"
    );
    assert_eq!(handler.processes_started(), 2);
}

#[tokio::test]
async fn a_json_reply_naming_another_item_fails_the_item_it_reached() {
    // The second reply to `twice` is written late, after the runner sent
    // the next item: only the id tells it apart from that item's answer.
    let script = r#"
import json, sys, time
late = None
for line in sys.stdin:
    task = json.loads(line)
    if late:
        sys.stdout.write(late); sys.stdout.flush(); late = None
        time.sleep(0.2)
    sys.stdout.write(json.dumps({"status": "ok", "id": task["id"]}) + "\n"); sys.stdout.flush()
    if task["item"] == "twice":
        late = json.dumps({"status": "ok", "id": task["id"]}) + "\n"
"#;
    let config = ServeConfig {
        format: ServeFormat::Json,
        ..ServeConfig::default()
    };
    let handler = python(script, config);
    assert_eq!(handler.handle(task("twice")).await, TaskOutcome::success());
    let next = handler.handle(task("next")).await;
    assert_eq!(next.kind, OutcomeKind::Failed, "{next:?}");
    assert!(
        reason(&next).contains("answered item \"next\" (id id-next) with a reply for id id-twice"),
        "{next:?}"
    );
    assert_eq!(handler.handle(task("again")).await, TaskOutcome::success());
    assert_eq!(handler.processes_started(), 2);
}

/// The JSON line of a job's item shows its job and seq among its
/// attributes, as published (`forloop-job`, `forloop-seq`).
#[tokio::test]
async fn a_json_line_shows_a_jobs_item_with_its_job_attributes() {
    let dir = scratch("json-job");
    let script = format!(
        r#"
import json, sys
for line in sys.stdin:
    open({seen:?}, "a").write(json.dumps(json.loads(line)["attributes"], sort_keys=True) + "\n")
    sys.stdout.write("ok\n"); sys.stdout.flush()
"#,
        seen = dir.join("seen").display().to_string()
    );
    let config = ServeConfig {
        format: ServeFormat::Json,
        ..ServeConfig::default()
    };
    let handler = python(&script, config);
    let mut of_job = task("a");
    of_job.item.attributes = BTreeMap::from([("k".to_string(), "v".to_string())]).into();
    of_job.item.job = Some(forloop_core::job::JobItem::new("j", 4));
    assert_eq!(handler.handle(of_job).await, TaskOutcome::success());
    assert_eq!(handler.handle(task("b")).await, TaskOutcome::success());
    assert_eq!(
        lines(&dir.join("seen")),
        [
            r#"{"forloop-job": "j", "forloop-seq": "4", "k": "v"}"#,
            "{}"
        ]
    );
}

#[tokio::test]
async fn a_hang_past_the_reply_timeout_kills_the_process_group_and_restarts_it() {
    let dir = scratch("hang");
    let script = r#"while read -r item; do
  echo $$ >> "$D/pids"
  if [ "$item" = hang ]; then sleep 1000 & echo $! > "$D/sleep"; wait; fi
  echo ok
done"#;
    let config = ServeConfig {
        reply_timeout: Some(Duration::from_millis(300)),
        ..ServeConfig::default()
    };
    let handler = sh(script, &dir, config);
    let started = Instant::now();
    let outcome = handler.handle(task("hang")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert!(
        reason(&outcome).contains("did not answer item \"hang\" within 300ms (--task-timeout)"),
        "{outcome:?}"
    );
    assert!(!reason(&outcome).contains("never read"), "{outcome:?}");
    let pids = lines(&dir.join("pids"));
    wait_ended(pids[0].parse().unwrap()).await;
    wait_ended(read_pid(&dir.join("sleep"))).await;
    assert_eq!(handler.handle(task("b")).await, TaskOutcome::success());
    assert_eq!(handler.processes_started(), 2);
}

#[tokio::test]
async fn a_process_that_never_reads_is_named_at_the_timeout() {
    let dir = scratch("deaf");
    let config = ServeConfig {
        reply_timeout: Some(Duration::from_millis(300)),
        ..ServeConfig::default()
    };
    let handler = sh("echo $$ > \"$D/pid\"; exec sleep 1000", &dir, config);
    let outcome = handler.handle(task("x")).await;
    assert_eq!(outcome.kind, OutcomeKind::Failed);
    assert!(
        reason(&outcome).contains("it never read the item from its stdin"),
        "{outcome:?}"
    );
    wait_ended(read_pid(&dir.join("pid"))).await;
}

#[tokio::test]
async fn restarts_back_off_while_a_slot_keeps_crashing() {
    let dir = scratch("backoff");
    let config = ServeConfig {
        restart_delay: Duration::from_millis(200),
        ..ServeConfig::default()
    };
    let handler = sh("read -r item; exit 1", &dir, config);
    let started = Instant::now();
    for item in ["a", "b", "c"] {
        let outcome = handler.handle(task(item)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed, "{outcome:?}");
    }
    // Restarts after 200 ms, then 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(handler.processes_started(), 3);
}

#[tokio::test]
async fn an_item_with_a_newline_is_fatal_in_the_lines_format() {
    let dir = scratch("newline");
    let handler = sh(ECHO_OK, &dir, ServeConfig::default());
    let outcome = handler.handle(task("two\nlines")).await;
    assert_eq!(outcome.kind, OutcomeKind::Fatal);
    assert!(reason(&outcome).contains("--serve=json"), "{outcome:?}");
    assert_eq!(handler.processes_started(), 0);
}

#[tokio::test]
async fn dropping_a_running_task_kills_its_process() {
    let dir = scratch("drop");
    let handler = sh(
        r#"while read -r item; do echo $$ > "$D/pid"; sleep 1000; done"#,
        &dir,
        ServeConfig::default(),
    );
    let running = handler.handle(task("x"));
    let pid_file = dir.join("pid");
    tokio::select! {
        _ = running => panic!("the item cannot finish"),
        () = wait_for(&pid_file) => {}
    }
    wait_ended(read_pid(&dir.join("pid"))).await;
    handler.close().await;
}

#[tokio::test]
async fn close_ends_idle_processes_through_end_of_input() {
    let dir = scratch("close");
    let handler = sh(
        &format!("{ECHO_OK}\necho bye > \"$D/bye\""),
        &dir,
        ServeConfig::default(),
    );
    assert_eq!(handler.handle(task("a")).await, TaskOutcome::success());
    assert!(!dir.join("bye").exists());
    handler.close().await;
    assert_eq!(
        lines(&dir.join("bye")),
        ["bye"],
        "the process saw EOF and exited on its own"
    );
}

// --- through the worker loop --------------------------------------------

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u32, OutcomeKind, Settlement)>>);

impl WorkerEvents for Recorder {
    fn attempt_finished(&self, record: &AttemptRecord<'_>) {
        self.0.lock().unwrap().push((
            String::from_utf8_lossy(record.payload).into_owned(),
            record.attempt,
            record.outcome.kind,
            record.settlement,
        ));
    }
}

async fn queue_with(items: &[&str], max_attempts: u32) -> Arc<MemoryQueue> {
    let queue = Arc::new(MemoryQueue::new(
        QueueConfig::new("serve").with_max_attempts(max_attempts),
    ));
    let batch = items
        .iter()
        .map(|item| Item::new(item.to_string()))
        .collect();
    queue.publish(batch).await.unwrap();
    queue
}

/// (ready, in flight, dead)
async fn backlog(queue: &MemoryQueue) -> (u64, u64, u64) {
    let b = queue.backlog().await.unwrap();
    (
        b.ready.value().unwrap(),
        b.in_flight.value().unwrap(),
        b.dead.value().unwrap(),
    )
}

fn config(grace: Duration) -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        grace,
        poll: Duration::from_millis(20),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            factor: 2.0,
            jitter: 0.0,
        },
        ..WorkerConfig::default()
    }
}

#[tokio::test]
async fn json_format_carries_the_attempt_and_replies_drive_retry_and_dead_letter() {
    let script = r#"
import json, sys
for line in sys.stdin:
    task = json.loads(line)
    if task["item"] == "poison":
        print("fatal: cannot parse " + task["id"], flush=True)
    elif task["attempt"] < 2:
        print(json.dumps({"status": "error", "message": "flaky"}), flush=True)
    else:
        print("ok", flush=True)
"#;
    let config_serve = ServeConfig {
        format: ServeFormat::Json,
        ..ServeConfig::default()
    };
    let handler = Arc::new(python(script, config_serve));
    let queue = queue_with(&["flaky", "poison"], 5).await;
    let events = Arc::new(Recorder::default());
    let exit = Worker::new(queue.clone(), handler.clone())
        .with_config(config(Duration::from_secs(5)))
        .with_events(events.clone())
        .run(Shutdown::new())
        .await
        .unwrap();
    handler.close().await;
    assert_eq!(exit, WorkerExit::Drained);
    let mut attempts = events.0.lock().unwrap().clone();
    attempts.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        attempts,
        [
            (
                "flaky".into(),
                1,
                OutcomeKind::Failed,
                Settlement::Retrying {
                    delay: Duration::from_millis(10)
                }
            ),
            ("flaky".into(), 2, OutcomeKind::Succeeded, Settlement::Acked),
            (
                "poison".into(),
                1,
                OutcomeKind::Fatal,
                Settlement::DeadLettered
            ),
        ]
    );
    assert_eq!(backlog(&queue).await, (0, 0, 1));
    let letters = queue.list_dead(10).await.unwrap();
    assert!(
        letters[0].reason.contains("cannot parse"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test]
async fn sigterm_mid_item_lets_it_finish_within_the_grace_then_processes_see_end_of_input() {
    let dir = scratch("term-grace");
    let handler = Arc::new(sh(
        r#"while read -r item; do touch "$D/started"; sleep 0.3; echo ok; done; echo bye > "$D/bye""#,
        &dir,
        ServeConfig::default(),
    ));
    let queue = queue_with(&["a"], 5).await;
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(queue.clone(), handler.clone())
            .with_config(config(Duration::from_secs(10)))
            .run(shutdown.clone()),
    );
    wait_for(&dir.join("started")).await;
    shutdown.stop();
    let exit = worker.await.unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 0 });
    assert_eq!(
        backlog(&queue).await,
        (0, 0, 0),
        "the item finished and was acked"
    );
    handler.close().await;
    assert_eq!(lines(&dir.join("bye")), ["bye"]);
}

#[tokio::test]
async fn sigterm_past_the_grace_gives_the_item_back_and_kills_the_process() {
    let dir = scratch("term-kill");
    let handler = Arc::new(sh(
        r#"while read -r item; do echo $$ > "$D/pid"; sleep 1000; echo ok; done"#,
        &dir,
        ServeConfig::default(),
    ));
    let queue = queue_with(&["a"], 5).await;
    let shutdown = Shutdown::new();
    let worker = tokio::spawn(
        Worker::new(queue.clone(), handler.clone())
            .with_config(config(Duration::from_millis(200)))
            .run(shutdown.clone()),
    );
    wait_for(&dir.join("pid")).await;
    shutdown.stop();
    let exit = worker.await.unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped { interrupted: 1 });
    assert_eq!(
        backlog(&queue).await,
        (1, 0, 0),
        "the item is back, ready at once"
    );
    wait_ended(read_pid(&dir.join("pid"))).await;
    handler.close().await;
    // Given back, not failed: the hand-back costs no attempt, so the next
    // delivery is attempt 1 again.
    let again = queue.pull(1, Duration::ZERO).await.unwrap();
    assert_eq!(again[0].attempt, 1);
}
