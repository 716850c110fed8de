//! A loopback TCP proxy that injects network faults between a worker and its
//! server: pass, delay, black-hole (nothing gets through, nothing is
//! refused: connections hang as on a partitioned network, then resume when
//! it heals) and cut (every connection is reset).
//!
//! Threads and blocking sockets only, so it works the same under any test
//! runtime; it listens on 127.0.0.1 only.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Forward each chunk after this long.
    Delay(Duration),
    /// Forward nothing, refuse nothing: new and open connections hang.
    BlackHole,
}

#[derive(Debug)]
struct State {
    fault: Mutex<Fault>,
    streams: Mutex<Vec<TcpStream>>,
    closed: AtomicBool,
}

impl State {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The proxy; dropping it closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
}

/// How often a held-up pump looks again.
const TICK: Duration = Duration::from_millis(10);

impl FaultProxy {
    /// Proxy 127.0.0.1:PORT (a fresh port) to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            fault: Mutex::new(Fault::Pass),
            streams: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let state = Arc::clone(&shared);
                let upstream = upstream.clone();
                std::thread::spawn(move || connect(client, &upstream, state));
            }
        });
        Self { port, state }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Apply `fault` from now on, to open connections too.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Reset every open connection (a server restart or a NAT timeout, as
    /// the client sees it); new ones are accepted as before.
    pub fn cut(&self) {
        for stream in self
            .state
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn connect(client: TcpStream, upstream: &str, state: Arc<State>) {
    // A black hole holds new connections too: wait before dialing.
    while state.fault() == Fault::BlackHole && !state.closed.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut streams = state.streams.lock().unwrap_or_else(|p| p.into_inner());
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                streams.push(clone);
            }
        }
    }
    let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = Arc::clone(&state);
    std::thread::spawn(move || pump(client_in, server, up));
    pump(server_in, client, state);
}

/// Copy `from` to `to` under the current fault, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.closed.load(Ordering::SeqCst) {
            break;
        }
        if state.fault() == Fault::BlackHole {
            std::thread::sleep(TICK);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // Read before the hole opened: held until it closes, then sent.
        loop {
            match state.fault() {
                Fault::BlackHole if !state.closed.load(Ordering::SeqCst) => {
                    std::thread::sleep(TICK)
                }
                Fault::Delay(delay) => {
                    std::thread::sleep(delay);
                    break;
                }
                _ => break,
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        address
    }

    fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
        stream.write_all(b"ping")?;
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply)?;
        assert_eq!(&reply, b"ping");
        Ok(())
    }

    #[test]
    fn passes_holds_in_a_black_hole_then_resumes_and_cuts() {
        let proxy = FaultProxy::start(&echo_server());
        let mut stream = TcpStream::connect(proxy.address()).unwrap();
        round_trip(&mut stream).unwrap();

        proxy.set(Fault::BlackHole);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let error = round_trip(&mut stream).unwrap_err();
        assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{error}"
        );
        proxy.set(Fault::Pass);
        let mut reply = [0u8; 4];
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"ping", "what the hole held arrives once it heals");

        proxy.set(Fault::Delay(Duration::from_millis(200)));
        let started = Instant::now();
        round_trip(&mut stream).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400), "both ways");

        proxy.set(Fault::Pass);
        proxy.cut();
        let mut byte = [0u8; 1];
        assert!(
            matches!(stream.read(&mut byte), Ok(0) | Err(_)),
            "a cut connection ends"
        );
        let mut fresh = TcpStream::connect(proxy.address()).unwrap();
        round_trip(&mut fresh).unwrap();
    }
}
