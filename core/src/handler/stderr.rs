//! A command's stderr (and, when it is kept, its stdout), passed through
//! to the worker's, its last bytes kept for the job's receipt, and the
//! whole of it, with `--capture`, in a file for the output store.

use std::io::Write;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::capture::{CaptureFile, Stream};
use crate::job::STDERR_TAIL;

/// The last [`STDERR_TAIL`] bytes of a stream.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
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

/// Copy `stream` to this process's own stream of the same kind until it
/// ends or `stop` resolves, keeping its tail, and into `keep` when given.
/// After `stop`, what the pipe already holds is still read for a moment: a
/// command's last words come just before it exits, while a grandchild that
/// keeps the pipe open must not hold the task. A write to `keep` that fails
/// (a full disk) is returned as the error; the copy goes on.
pub(crate) async fn pass_through<R: AsyncRead + Unpin>(
    stream: Option<R>,
    kind: Stream,
    mut keep: Option<&mut CaptureFile>,
    stop: impl std::future::Future<Output = ()>,
) -> (Tail, std::io::Result<()>) {
    let mut tail = Tail::default();
    let mut kept = Ok(());
    let Some(mut stream) = stream else {
        stop.await;
        return (tail, kept);
    };
    let mut buffer = [0u8; 8192];
    let echo = |chunk: &[u8]| {
        let _ = match kind {
            Stream::Stderr => std::io::stderr().write_all(chunk),
            Stream::Stdout => std::io::stdout().write_all(chunk),
        };
    };
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return (tail, kept),
                Ok(n) => n,
            },
            () = &mut stop => break,
        };
        echo(&buffer[..n]);
        tail.push(&buffer[..n]);
        if kept.is_ok()
            && let Some(file) = keep.as_deref_mut()
        {
            kept = file.write(&buffer[..n]).await;
        }
    }
    let linger = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
    while let Ok(Ok(n)) = tokio::time::timeout_at(linger, stream.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        echo(&buffer[..n]);
        tail.push(&buffer[..n]);
        if kept.is_ok()
            && let Some(file) = keep.as_deref_mut()
        {
            kept = file.write(&buffer[..n]).await;
        }
    }
    (tail, kept)
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
