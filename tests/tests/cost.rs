//! Bounded cost (issue 21 item 8), through the real `runner`: what a job
//! keeps in the ledger, a Redis server set to evict keys, the retention
//! `queue create` sets and the warning `submit` gives when a job cannot
//! finish within it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use forloop_tests::servers::RedisServer;
use forloop_tests::{runner, scratch};

fn unique(test: &str) -> String {
    format!(
        "cost-{test}-{}-{}",
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

fn ok(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        stderr(&output)
    );
    output
}

fn items(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("items.txt");
    let lines: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Send one command to a local redis-server and read its first reply line.
fn redis_command(server: &RedisServer, args: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request += &format!("${}\r\n{arg}\r\n", arg.len());
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// `results --json` rows of job `job`.
fn results(url: &str, name: &str, job: &str) -> Vec<serde_json::Value> {
    let output = ok(
        on(url, name)
            .args(["results", "--json", "--job", job])
            .output()
            .unwrap(),
        "results",
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Redis keeps a done item's receipt only for a job run with
/// `--keep-receipts`: without it `results` shows every item done, without
/// details, and says why; with it, each with its exit code.
#[test]
fn redis_keeps_done_receipts_only_for_a_job_that_asks() {
    let server = RedisServer::shared();
    let dir = scratch("cost-receipts");
    let input = items(&dir, 5);
    for (flags, details) in [(&[][..], false), (&["--keep-receipts"][..], true)] {
        let name = format!("{}-{details}", unique("receipts"));
        ok(
            on(server.url(), &name)
                .args(["run", "--job", "j"])
                .args(flags)
                .arg(&input)
                .args(["--", "true"])
                .output()
                .unwrap(),
            "run",
        );
        let rows = results(server.url(), &name, "j");
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r["state"] == "done"), "{rows:?}");
        let with_exit_code = rows.iter().filter(|r| r["exit_code"] == 0).count();
        assert_eq!(
            with_exit_code,
            if details { 5 } else { 0 },
            "{flags:?}: {rows:?}"
        );
        if !details {
            let output = on(server.url(), &name)
                .args(["results", "--job", "j"])
                .output()
                .unwrap();
            assert!(
                stderr(&output).contains("--keep-receipts"),
                "results does not say how to keep the details: {}",
                stderr(&output)
            );
        }
    }
}

/// Issue 21 item 8: a server whose `maxmemory-policy` evicts any key can
/// drop the ledger (and items) without a word. Every command that opens
/// the queue warns, naming the setting and the fix; a server that cannot
/// evict our keys gets no warning.
#[test]
fn a_redis_that_evicts_keys_is_named_with_the_fix() {
    let server = RedisServer::local(false);
    let name = unique("evict");
    let status = |server: &RedisServer| {
        ok(
            on(server.url(), &name).arg("status").output().unwrap(),
            "status",
        )
    };
    let quiet = status(&server);
    assert!(
        !stderr(&quiet).contains("maxmemory-policy"),
        "{}",
        stderr(&quiet)
    );
    for policy in ["allkeys-lru", "allkeys-random"] {
        assert_eq!(
            redis_command(&server, &["CONFIG", "SET", "maxmemory-policy", policy]),
            "+OK\r\n"
        );
        let warned = stderr(&status(&server));
        for words in [
            "maxmemory-policy",
            policy,
            "noeviction",
            "CONFIG SET maxmemory-policy noeviction",
        ] {
            assert!(warned.contains(words), "no {words:?} in: {warned}");
        }
    }
    // volatile-*: only keys with a TTL are evicted, and the queue sets none.
    redis_command(
        &server,
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
    );
    let quiet = status(&server);
    assert!(
        !stderr(&quiet).contains("maxmemory-policy"),
        "{}",
        stderr(&quiet)
    );
}
