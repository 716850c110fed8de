//! Object stores for the output tests: moto's S3 server, started on a free
//! loopback port, its buckets made by plain HTTP (it checks no signature).
//!
//! A server that cannot be started fails the test with the command that
//! installs it, never a silent skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::guard::ProcessGuard;
use crate::servers::{free_port, spawn_tied};

const MOTO_HELP: &str = "install moto's server with `python3 -m pip install 'moto[server]'` \
     (scripts/install does), or point FORLOOP_TEST_S3 at a running S3-compatible server \
     (e.g. `moto_server -H 127.0.0.1 -p 5000` and FORLOOP_TEST_S3=http://127.0.0.1:5000)";

/// An S3-compatible server (moto) for tests.
pub struct S3Server {
    endpoint: String,
    port: u16,
    child: ProcessGuard,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// One HTTP/1.1 request without a body; returns the status code.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP reply: {reply:.200}")))
}

fn wait_for(port: u16, what: &str, help: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/", "").is_err() {
        assert!(
            Instant::now() < until,
            "{what} on port {port} did not answer within 30 s: {help}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl S3Server {
    /// `http://127.0.0.1:PORT`, the value for AWS_ENDPOINT_URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server this test binary shares (tests use fresh buckets).
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| {
            if let Ok(endpoint) = std::env::var("FORLOOP_TEST_S3") {
                let port = endpoint
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
                    .expect("FORLOOP_TEST_S3 is http://HOST:PORT");
                return S3Server {
                    endpoint,
                    port,
                    child: ProcessGuard::default(),
                };
            }
            Self::local()
        })
    }

    /// A server of the test's own, on a free port.
    pub fn local() -> S3Server {
        let port = free_port();
        let mut command = Command::new("moto_server");
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(command)
            .unwrap_or_else(|e| panic!("cannot start moto_server ({e}): {MOTO_HELP}"));
        let child = ProcessGuard::new(child);
        wait_for(port, "moto_server", MOTO_HELP);
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
        }
    }

    /// Make a bucket.
    pub fn bucket(&self, name: &str) {
        let code = http(self.port, "PUT", &format!("/{name}"), "").expect("moto answers");
        assert!(code < 300, "creating bucket {name} on moto: HTTP {code}");
    }

    /// Every key in `bucket` under `prefix` (up to 1000, one listing).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("moto answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "GET /{bucket}?list-type=2&max-keys=1000&prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("request");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        reply
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Point a client process at this server: endpoint, region and dummy
    /// credentials, and no shared AWS files or instance metadata lookups.
    pub fn configure(&self, command: &mut Command) {
        for (key, value) in self.env() {
            command.env(key, value);
        }
        command
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// The variables [`S3Server::configure`] sets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Stop it (SIGKILL): the store is down.
    pub fn kill(&mut self) {
        self.child.stop_with(libc::SIGKILL);
    }
}
