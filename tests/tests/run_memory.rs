//! `runner run` on the embedded memory queue, as a user runs it: the real
//! binary, real child processes, real signals.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use forloop_tests::{read_records, runner, scratch};

const RECORD: &str = env!("CARGO_BIN_EXE_record");

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn run_items(dir: &std::path::Path, items: &[u8], extra: &[&str], command: &[&str]) -> Output {
    let input = dir.join("items.txt");
    std::fs::write(&input, items).unwrap();
    runner()
        .arg("run")
        .arg(&input)
        .args(extra)
        .arg("--")
        .args(command)
        .output()
        .expect("runner runs")
}

#[test]
fn tricky_items_reach_the_command_verbatim_without_a_shell() {
    let dir = scratch("tricky");
    let marker = dir.join("pwned");
    let items = [
        "plain".to_string(),
        "with spaces  inside".to_string(),
        "it's \"quoted\" `back`".to_string(),
        format!("$(touch {})", marker.display()),
        format!("; touch {} ; echo", marker.display()),
        "semi;colon|pipe&amp>redirect<".to_string(),
        "-n".to_string(),
        "back\\slash and *glob? [x]".to_string(),
        "naïve café ☕ 漢字".to_string(),
        "{}".to_string(),
    ];
    let out = dir.join("out.jsonl");
    let output = run_items(
        &dir,
        (items.join("\n") + "\n").as_bytes(),
        // `-n` is an item here, passed verbatim as asked.
        &["-j", "4", "--allow-dash-items"],
        &[RECORD, out.to_str().unwrap(), "{}"],
    );
    assert!(
        output.status.success(),
        "runner failed: {}",
        stderr(&output)
    );
    let records = read_records(&out);
    let seen: BTreeSet<_> = records.iter().map(|r| r.args.clone()).collect();
    let want: BTreeSet<_> = items.iter().map(|i| vec![i.clone()]).collect();
    assert_eq!(seen, want, "each item must arrive as exactly one argument");
    assert_eq!(records.len(), items.len(), "each item runs once");
    for record in &records {
        assert_eq!(
            record.args[0], record.item,
            "FORLOOP_ITEM matches the argument"
        );
        assert_eq!(record.attempt, 1);
    }
    assert!(!marker.exists(), "a shell interpreted an item");
}

#[test]
fn placeholder_inside_an_argument_and_item_appended_without_one() {
    let dir = scratch("template");
    let out = dir.join("out.jsonl");
    let output = run_items(
        &dir,
        b"a b\n",
        &[],
        &[
            RECORD,
            out.to_str().unwrap(),
            "https://x/watch?v={}",
            "-o",
            "{}.mp4",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        read_records(&out)[0].args,
        ["https://x/watch?v=a b", "-o", "a b.mp4"]
    );

    let out2 = dir.join("out2.jsonl");
    let output = run_items(
        &dir,
        b"last one\n",
        &[],
        &[RECORD, out2.to_str().unwrap(), "--flag"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(read_records(&out2)[0].args, ["--flag", "last one"]);
}

#[test]
fn crlf_blank_lines_and_stdin() {
    let dir = scratch("stdin");
    let out = dir.join("out.jsonl");
    let mut child = runner()
        .args(["run", "-", "--"])
        .args([RECORD, out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\r\n\r\n   \ntwo\nthree")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let items: BTreeSet<_> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(
        items,
        BTreeSet::from(["one".into(), "two".into(), "three".into()])
    );
    let err = stderr(&output);
    assert!(err.contains("3 items: 3 done"), "{err}");
    assert!(err.contains("2 blank lines skipped"), "{err}");
}

#[test]
fn a_poison_item_is_dead_lettered_named_and_fails_the_run() {
    let dir = scratch("poison");
    let out = dir.join("out.jsonl");
    let joblog = dir.join("joblog.tsv");
    let input = dir.join("items.txt");
    std::fs::write(&input, "good 1\npoison pill\ngood 2\n").unwrap();
    let output = runner()
        .arg("run")
        .arg(&input)
        .args(["--max-attempts", "3", "--backoff", "10ms", "--joblog"])
        .arg(&joblog)
        .args(["--", RECORD, out.to_str().unwrap()])
        .env("RECORD_FAIL", "poison pill")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("3 items: 2 done, 1 dead-lettered, 2 failed attempts retried"),
        "{err}"
    );
    assert!(err.contains("dead: \"poison pill\": exit code 3"), "{err}");
    let done: BTreeSet<_> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(done, BTreeSet::from(["good 1".into(), "good 2".into()]));

    let log = std::fs::read_to_string(&joblog).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some("item\tattempt\texit_code\tseconds\tworker\toutcome")
    );
    let poison: Vec<Vec<&str>> = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|cols| cols[0] == "poison pill")
        .collect();
    let summary: Vec<(&str, &str, &str)> = poison.iter().map(|c| (c[1], c[2], c[5])).collect();
    assert_eq!(
        summary,
        [("1", "3", "retry"), ("2", "3", "retry"), ("3", "3", "dead")]
    );
}

#[test]
fn bad_input_is_refused_whole_before_anything_runs() {
    let dir = scratch("badinput");
    let out = dir.join("out.jsonl");
    let output = run_items(
        &dir,
        b"fine\n\xff\xfebroken\nalso fine\n",
        &[],
        &[RECORD, out.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("line 2: not valid UTF-8"), "{err}");
    assert!(err.contains("nothing was submitted"), "{err}");
    assert!(!out.exists(), "no item may run when the input is refused");
}

#[test]
fn a_missing_program_fails_fast_naming_it() {
    let dir = scratch("noprog");
    let output = run_items(&dir, b"a\nb\n", &[], &["forloop-no-such-program", "{}"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot run `forloop-no-such-program`: not found on PATH"),
        "{err}"
    );
    assert!(!err.contains("dead-lettered"), "{err}");
}

#[test]
fn task_timeout_kills_and_retries_the_attempt() {
    let dir = scratch("timeout");
    let out = dir.join("out.jsonl");
    let input = dir.join("items.txt");
    std::fs::write(&input, "slow\n").unwrap();
    let started = Instant::now();
    let output = runner()
        .arg("run")
        .arg(&input)
        .args([
            "--task-timeout",
            "200ms",
            "--max-attempts",
            "2",
            "--backoff",
            "10ms",
            "--",
        ])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "30000")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout did not kill the task"
    );
    let err = stderr(&output);
    assert!(err.contains("timed out after 200ms"), "{err}");
    assert!(read_records(&out).is_empty());
}

#[test]
fn memory_queue_is_refused_where_it_cannot_be_shared() {
    for args in [
        vec!["submit", "-"],
        vec!["status"],
        vec!["wait"],
        vec!["work", "--", "true"],
    ] {
        let output = runner()
            .args(["--queue", "memory"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains("lives inside one process"), "{args:?}: {err}");
    }
    let output = runner()
        .args(["--queue", "nosuch", "run", "-", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unknown queue `nosuch`"),
        "{}",
        stderr(&output)
    );
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Waits until `path` has `lines` lines (tasks have started).
fn wait_for_lines(path: &std::path::Path, lines: usize) {
    let until = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < lines {
        assert!(Instant::now() < until, "tasks did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_long_run(
    dir: &std::path::Path,
    grace: &str,
) -> (std::process::Child, std::path::PathBuf, std::path::PathBuf) {
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\nb\nc\nd\n").unwrap();
    let out = dir.join("out.jsonl");
    let started = dir.join("started");
    let child = runner()
        .arg("run")
        .arg(&input)
        .args(["-j", "2", "--grace", grace, "--"])
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_SLEEP_MS", "1500")
        .env("RECORD_STARTED", &started)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, out, started)
}

#[test]
fn sigterm_lets_running_tasks_finish_within_grace_and_exits_143() {
    let dir = scratch("sigterm");
    let (child, out, started) = spawn_long_run(&dir, "20s");
    wait_for_lines(&started, 2);
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    // The two running tasks finished; nothing new started after the signal.
    assert_eq!(read_records(&out).len(), 2, "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(&started).unwrap().lines().count(),
        2
    );
    assert!(
        stderr(&output).contains("2 items unfinished"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn grace_over_kills_running_commands_and_a_second_sigint_aborts() {
    let dir = scratch("grace");
    let (child, out, started) = spawn_long_run(&dir, "100ms");
    wait_for_lines(&started, 2);
    let stopped_at = Instant::now();
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143));
    assert!(
        stopped_at.elapsed() < Duration::from_millis(1400),
        "grace was not enforced"
    );
    std::thread::sleep(Duration::from_millis(1800));
    assert!(
        read_records(&out).is_empty(),
        "killed commands must not finish after the worker exits"
    );

    let dir = scratch("sigint");
    let (child, out, started) = spawn_long_run(&dir, "60s");
    wait_for_lines(&started, 2);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        read_records(&out).is_empty(),
        "a second SIGINT must not wait for tasks"
    );
}

#[test]
fn help_lists_the_contract_flags() {
    let output = Command::new(forloop_tests::runner_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--workers",
        "--concurrency",
        "--lease",
        "--max-attempts",
        "--task-timeout",
        "--joblog",
        "--queue",
        "--name",
        "--cluster",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}");
    }
}

#[test]
fn run_ends_right_after_the_last_ack_with_more_workers_than_items() {
    let dir = scratch("tail");
    let start = Instant::now();
    let output = run_items(&dir, b"only\n", &["--workers", "2"], &["true"]);
    let took = start.elapsed();
    assert!(
        output.status.success(),
        "runner failed: {}",
        stderr(&output)
    );
    // A waiting puller woken by the last ack ends the run at once; one that
    // waits out its 1 s poll takes over a second.
    assert!(
        took < Duration::from_millis(700),
        "`run --workers 2` over one item took {took:?}: an idle worker waited out its poll"
    );
}

#[test]
fn an_item_over_the_argument_limit_is_refused_naming_its_line() {
    // Linux refuses any one argument (or environment string) over 128 KiB
    // (MAX_ARG_STRLEN): such an item could never start its command.
    let dir = scratch("arglimit");
    let out = dir.join("out.jsonl");
    let big = "a".repeat(200 * 1024);
    let items = format!("fine\n{big}\nalso fine\n");
    let output = run_items(
        &dir,
        items.as_bytes(),
        &["--max-attempts", "1"],
        &[RECORD, out.to_str().unwrap(), "{}"],
    );
    let err = stderr(&output);
    let err: String = err.chars().take(2000).collect();
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2") && err.contains("128 KiB"),
        "the refusal must name line 2 and the limit: {err}"
    );
    assert!(
        !out.exists(),
        "nothing may run when the input is refused, but the command ran: {err}"
    );
}

#[test]
fn durations_that_cannot_work_are_refused() {
    let dir = scratch("zero-durations");
    for flag in ["--task-timeout", "--max-lease-age", "--idle-window"] {
        let output = run_items(
            &dir,
            b"one\n",
            &["--max-attempts", "1", flag, "0s"],
            &["true"],
        );
        let err = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "`{flag} 0s` must be refused as bad usage: {err}"
        );
        assert!(err.contains(flag) && err.contains("0s"), "{err}");
    }
}

#[test]
fn an_item_that_would_reach_the_command_as_an_option_is_refused() {
    let dir = scratch("dash-items");
    let out = dir.join("out.jsonl");
    let items = b"fine\n--exec=touch /tmp/pwned\n-\n";
    // `{}` alone and no `{}` at all both make the item an argument of its own.
    for command in [
        vec![RECORD, out.to_str().unwrap(), "{}"],
        vec![RECORD, out.to_str().unwrap()],
    ] {
        let output = run_items(&dir, items, &[], &command);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {err}");
        assert!(
            err.contains("line 2") && err.contains("--allow-dash-items"),
            "the refusal must name line 2 and the way out: {err}"
        );
        assert!(!err.contains("line 3"), "a lone `-` is no option: {err}");
        assert!(!out.exists(), "nothing may run when the input is refused");
    }
    // Inside an argument the item cannot start an option.
    let output = run_items(&dir, items, &[], &[RECORD, out.to_str().unwrap(), "x={}"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // After `--` the program takes it as an operand.
    let output = run_items(
        &dir,
        items,
        &[],
        &[RECORD, out.to_str().unwrap(), "--", "{}"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // Asked for, it is passed as it is.
    let output = run_items(
        &dir,
        items,
        &["--allow-dash-items"],
        &[RECORD, out.to_str().unwrap(), "{}"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let args: BTreeSet<_> = read_records(&out).into_iter().map(|r| r.args).collect();
    assert!(args.contains(&vec!["--exec=touch /tmp/pwned".to_string()]));
}

#[test]
fn run_resume_reads_the_joblog_and_runs_only_what_is_not_done() {
    let dir = scratch("resume-joblog");
    let out = dir.join("out.jsonl");
    let joblog = dir.join("joblog.tsv");
    let items: Vec<String> = (0..10).map(|i| format!("item {i}")).collect();
    let input = items.join("\n");
    let joblog_flag = ["--joblog", joblog.to_str().unwrap(), "--max-attempts", "1"];
    let mut first = runner();
    first
        .arg("run")
        .arg(dir.join("items.txt"))
        .args(joblog_flag)
        .arg("--")
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_FAIL", "item 7");
    std::fs::write(dir.join("items.txt"), &input).unwrap();
    let output = first.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(read_records(&out).len(), 9);

    let output = run_items(
        &dir,
        input.as_bytes(),
        &["--resume", joblog_flag[0], joblog_flag[1]],
        &[RECORD, out.to_str().unwrap()],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        err.contains("9 of 10 items are done there, 1 to run"),
        "{err}"
    );
    let items_run: Vec<String> = read_records(&out).into_iter().map(|r| r.item).collect();
    assert_eq!(
        items_run.len(),
        10,
        "only the failed item ran again: {items_run:?}"
    );
    assert_eq!(items_run.last().map(String::as_str), Some("item 7"));
}

#[test]
fn a_fatal_exit_code_is_dead_lettered_at_once_without_retries() {
    let dir = scratch("fatal-codes");
    let out = dir.join("out.jsonl");
    std::fs::write(dir.join("items.txt"), "good\nbad\n").unwrap();
    let mut command = runner();
    command
        .arg("run")
        .arg(dir.join("items.txt"))
        .args([
            "--fatal-exit-codes",
            "2,3",
            "--max-attempts",
            "5",
            "--backoff",
            "10ms",
        ])
        .arg("--")
        .args([RECORD, out.to_str().unwrap()])
        .env("RECORD_FAIL", "bad");
    let output = command.output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("exit code 3, one of --fatal-exit-codes"),
        "{err}"
    );
    assert!(
        err.contains("0 failed attempts retried"),
        "no retry of a fatal exit: {err}"
    );
}

/// The memory queue lives in the `run` process: pods on a cluster could
/// never reach it. `run --cluster k8s` on it is refused up front, saying
/// why and what to pass, before anything is sent or launched.
#[test]
fn a_cluster_run_on_the_memory_queue_is_refused_saying_why() {
    let dir = scratch("memory-cluster");
    let input = dir.join("items.txt");
    std::fs::write(&input, "a\n").unwrap();
    let output = runner()
        .args(["--queue", "memory", "--cluster", "k8s", "run"])
        .arg(&input)
        .args(["--image", "example/worker:1", "--", "true"])
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .output()
        .unwrap();
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains("lives inside this process") && err.contains("--queue"),
        "the refusal says the memory queue cannot reach pods and what to pass: {err}"
    );
}
