//! A headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): the W3C protocol spoken directly over loopback
//! HTTP, a handful of calls, so the tests need no WebDriver crate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one headless browser session in it; both
/// end when this is dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to the driver; its JSON answer's `value`.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    // chromedriver may keep the connection open whatever we ask: read the
    // head, then exactly its Content-Length (or chunks up to the last).
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    let json = loop {
        let n = stream.read(&mut buffer).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the driver closed the connection mid-answer".into());
        }
        response.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        if head.contains("transfer-encoding: chunked") {
            if let Some(json) = unchunk(body) {
                break json;
            }
            continue;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or("an answer without Content-Length")?;
        if body.len() >= length {
            break body[..length].to_string();
        }
    };
    let value: Value = serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))?;
    if value["value"]["error"].is_string() {
        return Err(format!("{method} {path}: {}", value["value"]));
    }
    Ok(value["value"].clone())
}

/// A chunked body's content, once its last chunk is in.
fn unchunk(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

impl Browser {
    /// Start chromedriver and a headless Chromium, or fail saying how to
    /// install them.
    pub fn start() -> Self {
        for path in [CHROMIUM, DRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's browser with \
                 `apt-get install chromium chromium-driver` (scripts/install does)"
            );
        }
        let port = free_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut driver = driver;
        let until = Instant::now() + Duration::from_secs(30);
        while let Err(error) = call(port, "GET", "/status", None) {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < until,
                "chromedriver did not answer within 30 s: {error}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-background-networking",
                         "--window-size=1280,1400"],
            },
        }}});
        let session = call(port, "POST", "/session", Some(&capabilities))
            .expect("a headless Chromium session");
        let session = session["sessionId"].as_str().unwrap().to_string();
        Self {
            driver,
            port,
            session,
        }
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(self.port, method, &path, body).unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    /// Open `url`.
    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({"url": url})));
    }

    /// Run `script` (a function body; `return` its answer) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// The text of the element with `id`, or `None` when there is none.
    pub fn text_of(&self, id: &str) -> Option<String> {
        let script = format!(
            "var e = document.getElementById({}); return e ? e.textContent : null;",
            json!(id)
        );
        self.eval(&script).as_str().map(str::to_string)
    }

    /// A PNG of the page as it is now.
    pub fn screenshot(&self) -> Vec<u8> {
        let value = self.session_call("GET", "/screenshot", None);
        decode_base64(value.as_str().expect("a base64 screenshot"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = call(self.port, "DELETE", &path, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}
