//! One serve process: its pipes, its process group, and how it is stopped.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::reply::MAX_REPLY;

/// A running serve process. Dropping it kills its whole process group.
pub(super) struct Process {
    child: Child,
    /// `None` once closed (end of input).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    /// The process group to kill; `None` once the child is reaped.
    pgid: Option<i32>,
}

/// What came back on stdout for one item.
pub(super) enum Read {
    /// A whole line (ending in `\n`).
    Line(Vec<u8>),
    /// The process closed its stdout (it exited) after writing these bytes
    /// of a line that never ended.
    Eof(Vec<u8>),
    /// A line longer than any reply.
    TooLong,
}

impl Process {
    pub(super) fn spawn(
        argv: &[OsString],
        slot: usize,
        env: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env("FORLOOP_SLOT", slot.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group, as command mode: the worker decides when it
            // stops (a terminal's Ctrl-C reaches the worker only), and a kill
            // reaches whatever the process started too.
            .process_group(0)
            .kill_on_drop(true);
        crate::handler::hide_worker_env(&mut command);
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout: BufReader::with_capacity(8 * 1024, stdout),
            pid,
            pgid: i32::try_from(pid).ok(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Output that arrived while no item was out: a second reply to the
    /// last item, or stray text. `Some(empty)` means stdout is closed (the
    /// process exited).
    pub(super) fn unexpected_output(&mut self) -> Option<Vec<u8>> {
        if !self.stdout.buffer().is_empty() {
            return Some(self.stdout.buffer().to_vec());
        }
        match self.stdout.fill_buf().now_or_never() {
            None => None,
            Some(Ok(bytes)) => Some(bytes.to_vec()),
            Some(Err(_)) => Some(Vec::new()),
        }
    }

    /// Write one item line (ending in `\n`) and flush it.
    pub(super) async fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        stdin.write_all(line).await?;
        stdin.flush().await
    }

    /// Read one reply line.
    pub(super) async fn receive(&mut self) -> std::io::Result<Read> {
        let mut line = Vec::with_capacity(16);
        let limit = MAX_REPLY as u64 + 1;
        let n = (&mut self.stdout)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        Ok(if line.last() == Some(&b'\n') {
            Read::Line(line)
        } else if n as u64 >= limit {
            Read::TooLong
        } else {
            Read::Eof(line)
        })
    }

    /// The write end of the process's stdin, for [`unread_input`]; -1 once
    /// closed.
    pub(super) fn stdin_fd(&self) -> RawFd {
        self.stdin.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Kill the process group now (idempotent). The process itself is also
    /// killed directly, so a wait for it always ends.
    pub(super) fn kill(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg has no memory-safety preconditions; the group is
            // led by this child, which has not been reaped yet.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
    }

    /// Kill the group and reap the process, giving how it ended.
    pub(super) async fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        self.kill();
        let status = self.child.wait().await.ok();
        self.pgid = None;
        status
    }

    /// How the process ended, if it ends within `limit`; kills the group
    /// either way, so nothing it started stays behind.
    pub(super) async fn exit_status(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        self.kill();
        if status.is_none() {
            return self.kill_and_reap().await;
        }
        self.pgid = None;
        status
    }

    /// Close stdin (end of input), wait up to `limit` for the process to
    /// exit on its own, then kill it.
    pub(super) async fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        self.exit_status(limit).await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `status` for people: `exit code 3`, `killed by signal 9`.
pub(super) fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "its exit status is unknown".to_string(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => status.to_string(),
        },
    }
}

/// Bytes written to a pipe (`fd`, its write end) that its reader has not
/// read yet. 0 when unknown.
pub(super) fn unread_input(fd: RawFd) -> usize {
    if fd < 0 {
        return 0;
    }
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at
    // a live c_int; an invalid descriptor only makes the call fail.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) };
    if rc == 0 {
        usize::try_from(pending).unwrap_or(0)
    } else {
        0
    }
}
