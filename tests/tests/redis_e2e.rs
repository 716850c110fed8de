//! The Redis path end to end: real `runner` processes, a real redis-server,
//! workers killed with SIGKILL and SIGTERM, the server restarted mid-run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::proxy::{Fault, FaultProxy};
use forloop_tests::scenarios::{
    a_filtered_requeue_moves_only_the_matching_dead_items,
    a_requeued_item_counts_again_until_it_dies_again, dead_requeue_then_purge,
    poison_item_is_dead_lettered_and_named, sigterm_hands_items_back, wait_with_deadline,
};
use forloop_tests::servers::RedisServer;
use forloop_tests::{kill_storm, read_records, runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn unique(test: &str) -> String {
    format!(
        "e2e-{test}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

fn on(url: &str, name: &str) -> Command {
    let mut command = runner();
    command.args(["--queue", url, "--name", name]);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_items(dir: &Path, items: &[String]) -> std::path::PathBuf {
    let path = dir.join("items.txt");
    std::fs::write(&path, items.join("\n") + "\n").unwrap();
    path
}

fn status_of(url: &str, name: &str) -> serde_json::Value {
    let output = on(url, name).args(["status", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "status failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

/// `status --json` reads 0 ready, 0 in flight, 0 dead.
fn assert_drained_clean(url: &str, name: &str) {
    let value = status_of(url, name);
    let counts = ["ready", "in_flight", "dead"].map(|key| value[key].as_u64());
    assert_eq!(counts, [Some(0); 3], "status after the run: {value}");
}

#[test]
fn status_json_has_the_documented_shape() {
    let server = RedisServer::shared();
    let name = unique("status");
    let dir = scratch("status");
    let input = write_items(&dir, &["a".into(), "b".into()]);
    let output = on(server.url(), &name)
        .arg("submit")
        .arg(&input)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let value = status_of(server.url(), &name);
    assert_eq!(value["ready"], 2);
    assert_eq!(value["in_flight"], 0);
    assert_eq!(value["dead"], 0);
    assert_eq!(value["exact"], true);
}

#[test]
fn sigkilled_workers_lose_nothing_and_duplicate_at_most_their_in_flight_items() {
    let server = RedisServer::shared();
    let name = unique("kill");
    let dir = scratch("kill");
    let total = 10_000;
    let concurrency = 4;
    let items: Vec<String> = (0..total).map(|i| format!("item-{i}")).collect();
    let input = write_items(&dir, &items);
    let out = dir.join("out.jsonl");
    let output = on(server.url(), &name)
        .arg("submit")
        .arg(&input)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let mut launch = on(server.url(), &name);
    launch
        .args([
            "launch",
            "--workers",
            "4",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .args(["--lease", "5s", "--max-restarts", "1000", "--"])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "20");
    kill_storm(launch, &out, &items, concurrency);
    assert_drained_clean(server.url(), &name);
    // The ledger counted each item once, however many times it ran.
    forloop_tests::jobs::assert_every_item_settled_once(&|| on(server.url(), &name), items.len());
}

#[test]
fn a_sigtermed_worker_gives_its_items_back_at_once_and_exits_143() {
    let server = RedisServer::shared();
    let name = unique("sigterm");
    let dir = scratch("sigterm");
    sigterm_hands_items_back(
        || on(server.url(), &name),
        &[],
        RECORD,
        &dir,
        Duration::from_millis(1500),
    );
    assert_drained_clean(server.url(), &name);
}

#[test]
fn a_redis_restart_mid_run_loses_nothing_and_crashes_no_worker() {
    let mut server = RedisServer::local(true);
    let url = server.url().to_string();
    let name = unique("restart");
    let dir = scratch("restart");
    let total = 2000;
    let items: Vec<String> = (0..total).map(|i| format!("r-{i}")).collect();
    let input = write_items(&dir, &items);
    let out = dir.join("out.jsonl");
    assert!(
        on(&url, &name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let mut launcher = on(&url, &name)
        .args([
            "launch",
            "--workers",
            "2",
            "--concurrency",
            "4",
            "--lease",
            "5s",
            "--max-restarts",
            "0",
            "--",
        ])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while read_records(&out).len() < total / 4 {
        assert!(Instant::now() < until, "no progress before the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.restart(Duration::from_secs(1));
    let status = wait_with_deadline(&mut launcher, Duration::from_secs(120));
    let output = launcher.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(
        status.success(),
        "workers must ride out the restart and exit 0: {err}"
    );
    assert!(err.contains("2 exited 0, 0 failed, 0 killed"), "{err}");
    let seen: BTreeSet<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(seen.len(), total, "items lost across the restart");
    assert_drained_clean(&url, &name);
}

#[test]
fn a_poison_item_is_dead_lettered_and_run_exits_non_zero_naming_it() {
    let server = RedisServer::shared();
    let name = unique("poison");
    let dir = scratch("poison");
    let on = || on(server.url(), &name);
    let err = poison_item_is_dead_lettered_and_named(on, &[], RECORD, &dir);
    assert!(err.contains("20 done, 1 dead-lettered, 0 left"), "{err}");
    dead_requeue_then_purge(on, || {
        assert_eq!(status_of(server.url(), &name)["ready"], 1);
    });
}

#[test]
fn dead_requeue_uncounts_the_item_and_its_next_death_shows() {
    let server = RedisServer::shared();
    let name = unique("requeue");
    let dir = scratch("requeue");
    a_requeued_item_counts_again_until_it_dies_again(|| on(server.url(), &name), &dir);
}

#[test]
fn wait_returns_once_workers_drain_the_queue() {
    let server = RedisServer::shared();
    let name = unique("wait");
    let dir = scratch("wait");
    let input = write_items(&dir, &["w-1".into(), "w-2".into(), "w-3".into()]);
    assert!(
        on(server.url(), &name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let mut waiting = on(server.url(), &name)
        .args(["wait", "--poll", "100ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "wait returned before any work was done"
    );
    let work = on(server.url(), &name)
        .args(["work", "--", "true"])
        .output()
        .unwrap();
    assert!(work.status.success(), "{}", stderr(&work));
    let status = wait_with_deadline(&mut waiting, Duration::from_secs(10));
    assert!(
        status.success(),
        "wait exits 0 once drained with nothing dead"
    );
}

/// Every process under `pid`, depth first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for child in forloop_tests::children(pid) {
        out.push(child);
        out.extend(descendants(child));
    }
    out
}

#[test]
fn ctrl_c_on_a_local_run_lets_running_tasks_finish_within_the_grace() {
    let server = RedisServer::shared();
    let name = unique("ctrl-c");
    let dir = scratch("ctrl-c");
    let items: Vec<String> = (1..=4).map(|i| format!("c-{i}")).collect();
    let input = write_items(&dir, &items);
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    let mut run = on(server.url(), &name);
    run.arg("run")
        .arg(&input)
        .args([
            "--workers",
            "2",
            "--concurrency",
            "2",
            "--grace",
            "10s",
            "--",
        ])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "3000")
        .env("RECORD_STARTED", &started)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A terminal's Ctrl-C goes to its whole foreground process group: give
    // the run a group of its own and signal that group, as the terminal does.
    std::os::unix::process::CommandExt::process_group(&mut run, 0);
    let mut run = run.spawn().unwrap();
    forloop_tests::scenarios::wait_for_lines(
        &started,
        4,
        Duration::from_secs(30),
        "the workers did not start their four tasks",
    );
    let pgid = i32::try_from(run.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions; the group is ours.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let status = wait_with_deadline(&mut run, Duration::from_secs(30));
    let err = stderr(&run.wait_with_output().unwrap());
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C ends `run` with 130: {err}"
    );
    let done: BTreeSet<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(
        done.len(),
        4,
        "one Ctrl-C must give running tasks the 10 s grace (their 3 s tasks finish), \
         not kill them: the workers took the launcher's SIGTERM as a second signal. {err}"
    );
}

#[test]
fn the_queue_password_appears_in_no_log_error_argv_or_dry_run() {
    const PASSWORD: &str = "hunter2";
    let server = RedisServer::local_with_password(PASSWORD);
    let url = server.url().to_string();
    assert!(
        url.contains(PASSWORD),
        "the test needs a URL with the password"
    );
    let name = unique("secret");
    let dir = scratch("secret");
    let input = write_items(&dir, &["s-1".into(), "s-2".into()]);
    let out = dir.join("out.jsonl");
    let started = dir.join("started");

    // A local run: its log, its workers' command lines and logs.
    let mut run = on(&url, &name)
        .arg("run")
        .arg(&input)
        .args(["--workers", "2", "--concurrency", "1", "--"])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "1500")
        .env("RECORD_STARTED", &started)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    forloop_tests::scenarios::wait_for_lines(
        &started,
        2,
        Duration::from_secs(30),
        "the workers did not start",
    );
    let processes = descendants(run.id());
    assert!(
        processes.len() >= 4,
        "two workers and their tasks: {processes:?}"
    );
    for pid in processes {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        assert!(
            !argv.contains(PASSWORD),
            "process {pid} has the password on its command line (`ps` shows it): {argv}"
        );
        // The workers need the queue; the user's command does not get it.
        if argv.starts_with(RECORD) {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let env = String::from_utf8_lossy(&env).replace('\0', "\n");
            let leaked: Vec<&str> = env.lines().filter(|v| v.contains(PASSWORD)).collect();
            assert!(
                leaked.is_empty(),
                "the task {pid} inherited the queue's password in its environment: {leaked:?}"
            );
        }
    }
    let status = wait_with_deadline(&mut run, Duration::from_secs(60));
    let output = run.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(status.success(), "{err}");
    assert_eq!(read_records(&out).len(), 2, "{err}");
    assert!(
        !err.contains(PASSWORD),
        "the password is in the run's log: {err}"
    );

    // A dry run prints what it would start.
    let output = on(&url, &name)
        .args(["launch", "--workers", "2", "--dry-run", "--", "true"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    assert!(output.status.success(), "{printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password is in the dry run: {printed}"
    );

    // Errors quote the queue: a wrong database index, a server that is gone.
    let closed = format!(
        "redis://:{PASSWORD}@127.0.0.1:{}",
        forloop_tests::servers::free_port()
    );
    for queue in [format!("{url}/nope"), closed] {
        let output = on(&queue, &name).args(["status"]).output().unwrap();
        let err = stderr(&output);
        assert!(!output.status.success(), "{queue} must fail");
        assert!(
            !err.contains(PASSWORD),
            "the password is in an error: {err}"
        );
    }
}

/// Workers reach Redis through the fault proxy; submit and status go direct.
fn through(proxy: &FaultProxy, name: &str) -> Command {
    on(&format!("redis://{}", proxy.address()), name)
}

#[test]
fn a_black_hole_of_twice_the_lease_mid_run_loses_nothing() {
    let server = RedisServer::local(false);
    let url = server.url().to_string();
    let proxy = FaultProxy::start(url.trim_start_matches("redis://"));
    let name = unique("blackhole");
    let dir = scratch("blackhole");
    let total = 40;
    let items: Vec<String> = (0..total).map(|i| format!("b-{i}")).collect();
    let input = write_items(&dir, &items);
    let out = dir.join("out.jsonl");
    assert!(
        on(&url, &name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let (workers, concurrency) = (2, 2);
    let mut launcher = through(&proxy, &name)
        .args([
            "launch",
            "--workers",
            "2",
            "--concurrency",
            "2",
            "--lease",
            "3s",
        ])
        .args(["--max-restarts", "0", "--"])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while read_records(&out).len() < 4 {
        assert!(Instant::now() < until, "no progress before the black hole");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Twice the lease: every lease the workers hold lapses unrenewed.
    proxy.set(Fault::BlackHole);
    std::thread::sleep(Duration::from_secs(6));
    proxy.set(Fault::Pass);
    let status = wait_with_deadline(&mut launcher, Duration::from_secs(120));
    let output = launcher.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(
        status.success(),
        "the workers ride out the partition: {err}"
    );
    let records = read_records(&out);
    let seen: BTreeSet<&str> = records.iter().map(|r| r.item.as_str()).collect();
    assert_eq!(seen.len(), total, "items lost across the black hole: {err}");
    // Held: a running task, or a finished one whose ack was in the hole.
    assert!(
        records.len() - total <= 2 * workers * concurrency,
        "only what the workers held may run twice: {} runs of {total} items",
        records.len()
    );
    assert_drained_clean(&url, &name);
}

#[test]
fn sigterm_during_a_black_hole_still_exits_within_the_grace() {
    let server = RedisServer::local(false);
    let url = server.url().to_string();
    let proxy = FaultProxy::start(url.trim_start_matches("redis://"));
    let name = unique("blackhole-term");
    let dir = scratch("blackhole-term");
    let input = write_items(&dir, &["t-1".into(), "t-2".into(), "t-3".into()]);
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    assert!(
        on(&url, &name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let mut worker = through(&proxy, &name)
        .args([
            "work",
            "--concurrency",
            "2",
            "--lease",
            "30s",
            "--grace",
            "3s",
            "--",
        ])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "60000")
        .env("RECORD_STARTED", &started)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    forloop_tests::scenarios::wait_for_lines(
        &started,
        2,
        Duration::from_secs(30),
        "the worker did not start its tasks",
    );
    proxy.set(Fault::BlackHole);
    // Let a renewal (due at 20 s) or any call be caught in the hole first.
    std::thread::sleep(Duration::from_secs(1));
    let sent = Instant::now();
    forloop_tests::scenarios::signal(worker.id(), libc::SIGTERM);
    // Kubernetes kills at grace + 5 s; the worker must be gone before.
    let status = wait_with_deadline(&mut worker, Duration::from_secs(3 + 5));
    let took = sent.elapsed();
    let output = worker.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(143), "{}", stderr(&output));
    assert!(took <= Duration::from_secs(8), "took {took:?}");
    // Once the network heals, both held items are back in the queue (their
    // hand-back was lost in the hole; the 30 s leases lapse), none lost.
    proxy.set(Fault::Pass);
    let status = status_of(&url, &name);
    let held = status["ready"].as_u64().unwrap() + status["in_flight"].as_u64().unwrap();
    assert_eq!(held, 3, "every item is still in the queue: {status}");
}

#[test]
fn a_frozen_worker_that_comes_back_settles_nothing_it_lost() {
    let server = RedisServer::local(false);
    let url = server.url().to_string();
    let name = unique("frozen");
    let dir = scratch("frozen");
    let total = 10;
    let items: Vec<String> = (0..total).map(|i| format!("f-{i}")).collect();
    let input = write_items(&dir, &items);
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    assert!(
        on(&url, &name)
            .arg("submit")
            .arg(&input)
            .status()
            .unwrap()
            .success()
    );
    let worker = |log: &str| {
        on(&url, &name)
            .args(["work", "--concurrency", "2", "--lease", "3s", "--"])
            .args([RECORD, out.to_str().unwrap()])
            .env("RECORD_SLEEP_MS", "1000")
            .env("RECORD_STARTED", &started)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let mut frozen = worker("frozen.log");
    forloop_tests::scenarios::wait_for_lines(
        &started,
        2,
        Duration::from_secs(30),
        "the first worker did not start",
    );
    // A node that stops answering (SIGSTOP: no renewals, no acks) for well
    // past its lease, while another worker carries on.
    forloop_tests::scenarios::signal(frozen.id(), libc::SIGSTOP);
    let mut other = worker("other.log");
    std::thread::sleep(Duration::from_secs(8));
    forloop_tests::scenarios::signal(frozen.id(), libc::SIGCONT);
    for (child, log) in [(&mut frozen, "frozen.log"), (&mut other, "other.log")] {
        let status = wait_with_deadline(child, Duration::from_secs(90));
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        assert!(status.success(), "{log}: {text}");
    }
    let records = read_records(&out);
    let seen: BTreeSet<&str> = records.iter().map(|r| r.item.as_str()).collect();
    assert_eq!(seen.len(), total, "items lost to the frozen worker");
    assert!(
        records.len() - total <= 2,
        "only the two items the frozen worker held may run twice: {} runs",
        records.len()
    );
    let frozen_log = std::fs::read_to_string(dir.join("frozen.log")).unwrap_or_default();
    assert!(
        frozen_log.contains("after the lease ended") || frozen_log.contains("its lease ran out"),
        "the frozen worker must see that its leases are gone, not settle them: {frozen_log}"
    );
    assert_drained_clean(&url, &name);
}

#[test]
fn a_worker_sigkilled_while_its_acks_are_in_flight_loses_nothing() {
    let server = RedisServer::local(false);
    let url = server.url().to_string();
    let proxy = FaultProxy::start(url.trim_start_matches("redis://"));
    let name = unique("ack-kill");
    let dir = scratch("ack-kill");
    forloop_tests::scenarios::sigkill_while_acks_are_in_flight(
        || on(&url, &name),
        || through(&proxy, &name),
        &proxy,
        &["--lease", "3s"],
        RECORD,
        &dir,
    );
    assert_drained_clean(&url, &name);
}

#[test]
fn an_idle_worker_waits_for_an_item_a_dead_worker_held() {
    let server = RedisServer::local(false);
    let name = unique("stranded");
    forloop_tests::jobs::stranded_item_waits_for_its_lease(
        || on(server.url(), &name),
        &["--idle-window", "1s"],
        RECORD,
        &scratch("stranded"),
        Duration::from_secs(4),
    );
}

#[test]
fn a_run_stopped_by_sigint_resumes_without_duplicates_or_gaps() {
    let server = RedisServer::local(false);
    let name = unique("resume-run");
    forloop_tests::jobs::run_resumes_after_sigint(
        || on(server.url(), &name),
        &[],
        RECORD,
        &scratch("resume-run"),
    );
}

#[test]
fn a_submit_stopped_by_sigint_says_what_went_in_and_resumes_exactly() {
    let server = RedisServer::local(false);
    let proxy = FaultProxy::start(server.url().trim_start_matches("redis://"));
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let name = unique("resume-submit");
    forloop_tests::jobs::submit_resumes_after_sigint(
        || on(server.url(), &name),
        || through(&proxy, &name),
        RECORD,
        &scratch("resume-submit"),
        3000,
    );
}

#[test]
fn a_stuck_job_holds_no_other_run_and_is_cancelled_then_forgotten() {
    let server = RedisServer::local(false);
    let proxy = FaultProxy::start(server.url().trim_start_matches("redis://"));
    proxy.set(Fault::Delay(Duration::from_millis(100)));
    let name = unique("stuck");
    forloop_tests::shared_jobs::a_stuck_job_holds_no_other_run(
        || on(server.url(), &name),
        || through(&proxy, &name),
        RECORD,
        &scratch("stuck"),
    );
}

#[test]
fn a_flushall_fails_the_workers_and_wait_naming_the_lost_job() {
    let server = RedisServer::local(false);
    let name = unique("flushed");
    forloop_tests::shared_jobs::a_lost_job_fails_workers_and_wait(
        || on(server.url(), &name),
        || server.flushall(),
        RECORD,
        &scratch("flushed"),
    );
}

#[test]
fn two_runs_of_two_commands_never_share_a_queue_and_of_one_command_do() {
    let server = RedisServer::shared();
    let name = unique("two-runs");
    forloop_tests::shared_jobs::two_runs_on_one_queue(
        || on(server.url(), &name),
        RECORD,
        &scratch("two-runs"),
    );
}

#[test]
fn a_job_of_300_quick_items_ends_within_2s_of_its_last_item() {
    let server = RedisServer::shared();
    let name = unique("end300");
    let lag = forloop_tests::jobs::run_ends_soon_after_its_last_item(
        || on(server.url(), &name),
        &[],
        RECORD,
        &scratch("redis-end300"),
        300,
        Duration::from_secs(2),
    );
    eprintln!("redis: the run ended {lag:?} after its last item");
}

#[test]
fn a_job_failing_every_item_halts_leaves_the_rest_queued_and_resumes() {
    let server = RedisServer::shared();
    let name = unique("halt");
    forloop_tests::shared_jobs::a_failing_job_halts_and_resumes(
        || on(server.url(), &name),
        &[],
        RECORD,
        &scratch("redis-halt"),
    );
}

#[test]
fn a_filtered_requeue_moves_only_the_matching_dead_items_and_counts_them_once() {
    let server = RedisServer::shared();
    let name = unique("rerun");
    let dir = scratch("rerun");
    a_filtered_requeue_moves_only_the_matching_dead_items(|| on(server.url(), &name), &dir);
}

#[test]
fn a_sigkill_storm_with_one_attempt_dead_letters_nothing_that_did_not_fail() {
    let server = RedisServer::shared();
    let name = unique("lapses");
    let dir = scratch("lapses");
    forloop_tests::scenarios::a_sigkill_storm_with_one_attempt_buries_only_failures(
        || on(server.url(), &name),
        "5s",
        false,
        &dir,
    );
}

/// `--speculate` through the binary on Redis: one item whose first run
/// hangs (its "node" is slow: the first run takes a marker directory and
/// sleeps 10 minutes; any later run finds it and is quick) among 40 quick
/// ones. A copy settles it, the hung original is stopped, `run` exits 0
/// long before the hung run would have ended, every item is counted once,
/// and `results --json` marks the straggler `"copy": true`.
#[test]
fn speculate_settles_a_straggler_with_a_copy_counted_once() {
    let server = RedisServer::shared();
    let name = unique("speculate");
    let dir = scratch("speculate");
    forloop_tests::scenarios::a_straggler_is_settled_by_its_copy_counted_once(
        || on(server.url(), &name),
        "5s",
        &dir,
    );
    // The stopped original was acked: nothing ready, in flight or dead.
    assert_drained_clean(server.url(), &name);
}
