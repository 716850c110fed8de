//! A command's stderr, passed through to the worker's and its last bytes
//! kept for the job's receipt.

use std::io::Write;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::job::STDERR_TAIL;

/// The last [`STDERR_TAIL`] bytes of a stream.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * STDERR_TAIL {
            let cut = self.bytes.len() - STDERR_TAIL;
            self.bytes.drain(..cut);
        }
    }

    /// The kept bytes as text, starting on a line where one starts in them.
    pub(crate) fn into_text(mut self) -> String {
        if self.bytes.len() > STDERR_TAIL {
            let cut = self.bytes.len() - STDERR_TAIL;
            self.bytes.drain(..cut);
            if let Some(newline) = self.bytes.iter().position(|&b| b == b'\n') {
                self.bytes.drain(..=newline);
            }
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Copy `stream` to this process's stderr until it ends or `stop` resolves,
/// keeping its tail. After `stop`, what the pipe already holds is still
/// read for a moment: a command's last words come just before it exits,
/// while a grandchild that keeps the pipe open must not hold the task.
pub(crate) async fn pass_through<R: AsyncRead + Unpin>(
    stream: Option<R>,
    stop: impl std::future::Future<Output = ()>,
) -> Tail {
    let mut tail = Tail::default();
    let Some(mut stream) = stream else {
        stop.await;
        return tail;
    };
    let mut buffer = [0u8; 8192];
    let copy = |tail: &mut Tail, chunk: &[u8]| {
        let _ = std::io::stderr().write_all(chunk);
        tail.push(chunk);
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return tail,
                Ok(n) => copy(&mut tail, &buffer[..n]),
            },
            () = &mut stop => break,
        }
    }
    let linger = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
    while let Ok(Ok(n)) = tokio::time::timeout_at(linger, stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        copy(&mut tail, &buffer[..n]);
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_from_a_line_start() {
        let mut tail = Tail::default();
        for i in 0..2000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let text = tail.into_text();
        assert!(text.len() <= STDERR_TAIL);
        assert!(text.starts_with("line "), "{text:?}");
        assert!(text.ends_with("line 1999\n"));
    }
}
