//! `--capture`: a command's stdout and stderr kept whole for the output
//! store, each in a file beside the attempt's output directory
//! ([`Capture::path`]), streamed (an 8 KiB buffer, never the whole output
//! in memory) and cut at [`CAPTURE_LIMIT`] bytes per stream: past it the
//! rest is counted, not kept, and the file ends with a line saying so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// The most of one stream an attempt keeps: 64 MiB. Past it the file ends
/// with `[forloop: ...]` naming how much was written in all, and the
/// item's record says it was cut.
pub const CAPTURE_LIMIT: u64 = 64 << 20;

/// A command's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Which of a command's streams each attempt keeps (`--capture
/// stdout,stderr`). Only with an output directory ([`crate::Task::output_dir`]):
/// the files go where the output store's decorator finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Keep stdout.
    pub stdout: bool,
    /// Keep stderr.
    pub stderr: bool,
}

impl Capture {
    /// Whether `stream` is kept.
    pub fn keeps(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }

    /// Whether any stream is kept.
    pub fn any(&self) -> bool {
        self.stdout || self.stderr
    }

    /// Where an attempt with `output_dir` keeps `stream`: beside the
    /// directory (`DIR.stdout`), so no file `f` makes in it can clash.
    pub fn path(output_dir: &Path, stream: Stream) -> PathBuf {
        let mut path = OsString::from(output_dir.as_os_str());
        path.push(".");
        path.push(stream.name());
        PathBuf::from(path)
    }
}

/// One stream an attempt kept: the file, and how much of the stream it
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Which stream.
    pub stream: Stream,
    /// The file ([`Capture::path`]).
    pub path: PathBuf,
    /// The stream's bytes the file holds (its first ones).
    pub kept: u64,
    /// The stream's bytes in all.
    pub written: u64,
}

impl Captured {
    /// Whether the stream went past the limit and was cut.
    pub fn cut(&self) -> bool {
        self.written > self.kept
    }
}

/// A stream being kept: its first `limit` bytes go to the file, the rest
/// is counted.
#[derive(Debug)]
pub(crate) struct CaptureFile {
    stream: Stream,
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    limit: u64,
    kept: u64,
    written: u64,
}

impl CaptureFile {
    pub(crate) async fn create(
        output_dir: &Path,
        stream: Stream,
        limit: u64,
    ) -> std::io::Result<Self> {
        let path = Capture::path(output_dir, stream);
        let file = tokio::fs::File::create(&path).await?;
        Ok(Self {
            stream,
            path,
            file: tokio::io::BufWriter::with_capacity(8 * 1024, file),
            limit,
            kept: 0,
            written: 0,
        })
    }

    pub(crate) fn stream(&self) -> Stream {
        self.stream
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.written += chunk.len() as u64;
        let room = self.limit.saturating_sub(self.kept);
        let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if take > 0 {
            self.file.write_all(&chunk[..take]).await?;
            self.kept += take as u64;
        }
        Ok(())
    }

    /// Flush the file; a cut stream's file ends with a line saying so.
    pub(crate) async fn finish(mut self) -> std::io::Result<Captured> {
        if self.written > self.kept {
            let marker = format!(
                "\n[forloop: {} cut at {} bytes; {} bytes were written in all]\n",
                self.stream.name(),
                self.kept,
                self.written
            );
            self.file.write_all(marker.as_bytes()).await?;
        }
        self.file.flush().await?;
        Ok(Captured {
            stream: self.stream,
            path: self.path,
            kept: self.kept,
            written: self.written,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_past_the_limit_keeps_its_start_and_says_how_much_was_cut() {
        let dir = std::env::temp_dir().join(format!("forloop-capture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a0");
        let mut file = CaptureFile::create(&out, Stream::Stdout, 10).await.unwrap();
        for chunk in [&b"0123"[..], b"456789ab", b"cdef"] {
            file.write(chunk).await.unwrap();
        }
        let captured = file.finish().await.unwrap();
        assert_eq!(captured.path, dir.join("a0.stdout"));
        assert_eq!((captured.kept, captured.written), (10, 16));
        assert!(captured.cut());
        let text = std::fs::read_to_string(&captured.path).unwrap();
        assert_eq!(
            text,
            "0123456789\n[forloop: stdout cut at 10 bytes; 16 bytes were written in all]\n"
        );

        let mut file = CaptureFile::create(&out, Stream::Stderr, 10).await.unwrap();
        file.write(b"short").await.unwrap();
        let captured = file.finish().await.unwrap();
        assert!(!captured.cut());
        assert_eq!(std::fs::read(&captured.path).unwrap(), b"short");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
