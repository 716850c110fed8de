//! Test servers every driver's tests share.
//!
//! Where a server comes from, in order:
//! 1. the ecosystem's own variable (`REDIS_URL`), when set: a server you run;
//! 2. a Docker engine, when one answers: testcontainers starts the official
//!    image (the usual path on a developer laptop);
//! 3. the locally installed binary (`redis-server`), started on a free port
//!    in a scratch directory (the path on CI machines, which run no Docker).
//!
//! A server that cannot be had is a test failure that says how to get one,
//! never a silent skip. Tests that restart the server always own a local one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

use crate::guard::{DirGuard, ProcessGuard};
use crate::scratch;

/// A free TCP port on 127.0.0.1 (free when asked; bind soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether a Docker engine answers here.
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server of the test's own that can crash and come back on the same
/// port, as a pod or a VM restarting would. Emulators keep their data in
/// memory only, so a killed one comes back empty.
pub trait Restartable {
    /// SIGKILL the server: no clean shutdown, connections reset.
    fn kill(&mut self);
    /// Start it again on the same port; returns once it answers.
    fn start(&mut self);
}

/// A Redis server for tests.
pub struct RedisServer {
    url: String,
    port: u16,
    dir: Option<DirGuard>,
    appendonly: bool,
    /// `requirepass`, for tests that a password never leaks.
    password: Option<String>,
    child: ProcessGuard,
    _container: Option<Container<GenericImage>>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish()
    }
}

const REDIS_HELP: &str = "install it with `apt-get install redis-server` (scripts/test does), \
     or point REDIS_URL at a running server (e.g. `redis-server --port 6390 --save '' --appendonly no` \
     and REDIS_URL=redis://127.0.0.1:6390)";

impl RedisServer {
    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server this test binary shares (unique queue names keep tests apart).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(url) = std::env::var("REDIS_URL") {
                return RedisServer {
                    url,
                    port: 0,
                    dir: None,
                    appendonly: false,
                    password: None,
                    child: ProcessGuard::default(),
                    _container: None,
                };
            }
            if docker_answers() {
                return Self::container();
            }
            Self::local(false)
        })
    }

    fn container() -> RedisServer {
        let container = GenericImage::new("redis", "7-alpine")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .start()
            .unwrap_or_else(|e| {
                panic!("Docker answers, but the redis container did not start: {e}")
            });
        let port = container.get_host_port_ipv4(6379).expect("mapped port");
        RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir: None,
            appendonly: false,
            password: None,
            child: ProcessGuard::default(),
            _container: Some(container),
        }
    }

    /// A redis-server of this test's own, from the local binary, on a free
    /// port; with `appendonly` its data survives [`RedisServer::restart`].
    pub fn local(appendonly: bool) -> RedisServer {
        Self::local_with(appendonly, None)
    }

    /// A local redis-server of this test's own that requires `password`;
    /// its [`url`](Self::url) carries it (`redis://:PASSWORD@127.0.0.1:PORT`).
    pub fn local_with_password(password: &str) -> RedisServer {
        Self::local_with(false, Some(password.to_string()))
    }

    fn local_with(appendonly: bool, password: Option<String>) -> RedisServer {
        let port = free_port();
        let userinfo = password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        let mut server = RedisServer {
            url: format!("redis://{userinfo}127.0.0.1:{port}"),
            port,
            dir: Some(DirGuard::new(scratch("redis"))),
            appendonly,
            password,
            child: ProcessGuard::default(),
            _container: None,
        };
        server.start();
        server
    }

    /// The port a local server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn start(&mut self) {
        let dir = self.dir.as_ref().expect("a local server").path();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = spawn_tied(command)
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {REDIS_HELP}"));
        self.child = ProcessGuard::new(child);
        wait_for_ping(self.port, self.password.as_deref());
    }

    /// Stop the server (SIGTERM, as a restart would) and start it again on
    /// the same port and data directory.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.start();
    }

    fn stop(&mut self) {
        self.child.stop_with(libc::SIGTERM);
    }

    /// Delete every key on the server (`FLUSHALL`), as a restart without
    /// persistence, a failover to an empty replica or an operator would.
    /// Only for a server of the test's own ([`RedisServer::local`]).
    pub fn flushall(&self) {
        assert!(
            self.dir.is_some(),
            "flushall would empty a shared server: use RedisServer::local"
        );
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut reply = [0u8; 5];
        stream
            .write_all(b"FLUSHALL\r\n")
            .and_then(|()| stream.read_exact(&mut reply))
            .expect("FLUSHALL");
        assert_eq!(&reply, b"+OK\r\n", "FLUSHALL did not answer OK");
    }

    /// The data directory of a local server.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(DirGuard::path)
    }
}

impl Drop for RedisServer {
    /// A clean stop (SIGTERM), then the guards remove the data directory.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawn a server that dies with this test process, even when the process
/// ends without dropping it (statics are never dropped). The kernel signals
/// the child when the *thread* that spawned it ends, so one parked thread that
/// lives as long as the process does all the spawning.
pub fn spawn_tied(command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                // SAFETY: prctl is async-signal-safe; runs in the child before exec.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    });
                }
                let _ = reply.send(command.spawn());
            }
            // The sender lives in a static, so the loop never ends.
            loop {
                std::thread::park();
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .expect("spawner thread");
    answer.recv().expect("spawner answers")
}

fn wait_for_ping(port: u16, password: Option<&str>) {
    let until = Instant::now() + Duration::from_secs(10);
    let (request, expected) = match password {
        Some(password) => (
            format!("AUTH {password}\r\nPING\r\n"),
            &b"+OK\r\n+PONG\r\n"[..],
        ),
        None => ("PING\r\n".to_string(), &b"+PONG\r\n"[..]),
    };
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = vec![0u8; expected.len()];
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && reply == expected
            {
                return;
            }
        }
        assert!(
            Instant::now() < until,
            "redis-server on port {port} did not answer PING within 10 s: {REDIS_HELP}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where Debian puts the official Pub/Sub emulator
/// (package google-cloud-cli-pubsub-emulator).
pub const PUBSUB_EMULATOR: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

const PUBSUB_HELP: &str = "install the official emulator with `apt-get install google-cloud-cli-pubsub-emulator` \
     (from Google's Cloud SDK apt repository; it needs Java 17), or point PUBSUB_EMULATOR_HOST at a running one \
     (e.g. `gcloud beta emulators pubsub start --host-port=127.0.0.1:8085` and PUBSUB_EMULATOR_HOST=127.0.0.1:8085)";

/// The official Pub/Sub emulator for tests.
pub struct PubsubEmulator {
    host: String,
    /// The port of an emulator of the test's own ([`PubsubEmulator::local`]).
    port: Option<u16>,
    child: ProcessGuard,
    _container: Option<Container<GenericImage>>,
}

impl std::fmt::Debug for PubsubEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubEmulator")
            .field("host", &self.host)
            .finish()
    }
}

impl PubsubEmulator {
    /// `host:port`, the value for PUBSUB_EMULATOR_HOST.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The emulator this test binary shares (tests use fresh topic names).
    pub fn shared() -> &'static PubsubEmulator {
        static SHARED: OnceLock<PubsubEmulator> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(host) = std::env::var("PUBSUB_EMULATOR_HOST") {
                return PubsubEmulator {
                    host,
                    port: None,
                    child: ProcessGuard::default(),
                    _container: None,
                };
            }
            if docker_answers() {
                let container = GenericImage::new(
                    "gcr.io/google.com/cloudsdktool/google-cloud-cli",
                    "emulators",
                )
                .with_exposed_port(8085.tcp())
                .with_wait_for(WaitFor::message_on_stderr("Server started"))
                .with_cmd([
                    "gcloud",
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    "--host-port=0.0.0.0:8085",
                ])
                .start()
                .unwrap_or_else(|e| {
                    panic!("Docker answers, but the Pub/Sub emulator container did not start: {e}")
                });
                let port = container.get_host_port_ipv4(8085).expect("mapped port");
                return PubsubEmulator {
                    host: format!("127.0.0.1:{port}"),
                    port: None,
                    child: ProcessGuard::default(),
                    _container: Some(container),
                };
            }
            Self::local()
        })
    }

    /// An emulator of this test's own, from the local install, on a free port.
    pub fn local() -> PubsubEmulator {
        let port = free_port();
        let mut emulator = PubsubEmulator {
            host: format!("127.0.0.1:{port}"),
            port: Some(port),
            child: ProcessGuard::default(),
            _container: None,
        };
        emulator.start();
        emulator
    }
}

impl Restartable for PubsubEmulator {
    fn kill(&mut self) {
        assert!(
            self.port.is_some(),
            "only an emulator of the test's own (PubsubEmulator::local) can be killed"
        );
        self.child.stop_with(libc::SIGKILL);
    }

    fn start(&mut self) {
        let port = self
            .port
            .expect("an emulator of the test's own (PubsubEmulator::local)");
        let mut command = Command::new(PUBSUB_EMULATOR);
        command
            .args(["--host=127.0.0.1", &format!("--port={port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(command).unwrap_or_else(|e| {
            panic!("cannot start the Pub/Sub emulator {PUBSUB_EMULATOR} ({e}): {PUBSUB_HELP}")
        });
        self.child = ProcessGuard::new(child);
        wait_for_http_ok(port, Duration::from_secs(60));
    }
}

/// Wait until `GET /` on `port` answers with a body containing `Ok`.
fn wait_for_http_ok(port: u16, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            // The emulator keeps the connection open after answering, so read
            // until the body shows up rather than until the end.
            let mut reply = Vec::new();
            let mut chunk = [0u8; 256];
            if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() {
                while let Ok(n @ 1..) = stream.read(&mut chunk) {
                    reply.extend_from_slice(&chunk[..n]);
                    if reply.windows(6).any(|w| w == b"\r\n\r\nOk") {
                        return;
                    }
                }
            }
        }
        assert!(
            Instant::now() < until,
            "the Pub/Sub emulator on port {port} did not answer within {limit:?}: {PUBSUB_HELP}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const FAUXQS_HELP: &str = "install the fauxqs SQS emulator with \
     `npm install --prefix \"$HOME/.cache/forloop/fauxqs\" fauxqs@1.9.2` (scripts/test does; it needs Node 20), \
     or point AWS_ENDPOINT_URL_SQS at a running one (e.g. `node scripts/fauxqs.mjs 4566` and \
     AWS_ENDPOINT_URL_SQS=http://127.0.0.1:4566)";

/// The fauxqs SQS emulator for tests, started by `scripts/fauxqs.mjs`.
pub struct SqsEmulator {
    endpoint: String,
    /// The port of an emulator of the test's own ([`SqsEmulator::local`]).
    port: Option<u16>,
    child: ProcessGuard,
}

impl std::fmt::Debug for SqsEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsEmulator")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl SqsEmulator {
    /// `http://127.0.0.1:PORT`, the value for AWS_ENDPOINT_URL_SQS.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region the tests use (fauxqs accepts any, and any credentials).
    pub const REGION: &'static str = "us-east-1";

    /// Point a client process at this emulator: endpoint, region and dummy
    /// credentials, and no shared AWS files or instance metadata lookups.
    pub fn configure(&self, command: &mut Command) {
        command
            .env("AWS_ENDPOINT_URL_SQS", &self.endpoint)
            .env("AWS_REGION", Self::REGION)
            // boto3 reads only this one.
            .env("AWS_DEFAULT_REGION", Self::REGION)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// The emulator this test binary shares (tests use fresh queue names).
    pub fn shared() -> &'static SqsEmulator {
        static SHARED: OnceLock<SqsEmulator> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Some(endpoint) = ["AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"]
                .into_iter()
                .find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
            {
                return SqsEmulator {
                    endpoint,
                    port: None,
                    child: ProcessGuard::default(),
                };
            }
            Self::local()
        })
    }

    /// An emulator of this test's own, on a free port.
    pub fn local() -> SqsEmulator {
        let (child, port) = Self::spawn(0);
        SqsEmulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            port: Some(port),
            child: ProcessGuard::new(child),
        }
    }

    /// Start `scripts/fauxqs.mjs` on `port` (0: a free one): the child and
    /// the port it listens on.
    fn spawn(port: u16) -> (Child, u16) {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fauxqs.mjs");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied(command).unwrap_or_else(|e| {
            panic!(
                "cannot start node {} ({e}): {FAUXQS_HELP}",
                script.display()
            )
        });
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let read = stdout.read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("fauxqs listening on ")
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("fauxqs did not start ({read:?}, said {line:?} {err}): {FAUXQS_HELP}");
        };
        // Keep both pipes drained so the emulator never blocks on a write.
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        if let Some(mut stderr) = stderr {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            });
        }
        (child, port)
    }
}

impl Restartable for SqsEmulator {
    fn kill(&mut self) {
        assert!(
            self.port.is_some(),
            "only an emulator of the test's own (SqsEmulator::local) can be killed"
        );
        self.child.stop_with(libc::SIGKILL);
    }

    fn start(&mut self) {
        let port = self
            .port
            .expect("an emulator of the test's own (SqsEmulator::local)");
        let (child, _) = Self::spawn(port);
        self.child = ProcessGuard::new(child);
    }
}
