//! The command-template handler: `cmd --flag {}` with the item as one argument.
//!
//! No shell is ever involved: the item is substituted into argv entries and
//! handed to `execve` as bytes, so spaces, quotes, `$(...)` and `;` reach the
//! command exactly as they are in the item.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use async_trait::async_trait;

use super::capture::{CAPTURE_LIMIT, Capture, CaptureFile, Stream};
use super::{Handler, Task, TaskOutcome};

/// The text in an argument that the item replaces.
pub(crate) const PLACEHOLDER: &str = "{}";
/// The text in an argument that the attempt's output directory replaces
/// (with `--outputs`): `yt-dlp -o '{out}/%(id)s.mp4' {}`.
pub const OUT_PLACEHOLDER: &str = "{out}";

/// A command line to run once per item.
#[derive(Debug, Clone)]
pub struct CommandTemplate {
    argv: Vec<OsString>,
    has_placeholder: bool,
    fatal_exit_codes: Vec<i32>,
    capture: Capture,
}

/// Why a command template cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// No command was given.
    #[error("no command given: put the command after `--`, e.g. `-- echo {{}}`")]
    Empty,
    /// The program is not on PATH or not executable.
    #[error("cannot run `{program}`: {why}")]
    NotRunnable {
        /// The program as given.
        program: String,
        /// What is wrong with it.
        why: String,
    },
}

impl CommandTemplate {
    /// A template from a command line; `{}` anywhere in it is replaced by the
    /// item, and with no `{}` the item becomes the last argument.
    pub fn new<I, S>(argv: I) -> Result<Self, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        if argv.is_empty() {
            return Err(CommandError::Empty);
        }
        let has_placeholder = argv.iter().any(|arg| contains(arg, PLACEHOLDER.as_bytes()));
        Ok(Self {
            argv,
            has_placeholder,
            fatal_exit_codes: Vec::new(),
            capture: Capture::default(),
        })
    }

    /// Exit codes that mean "no attempt can succeed" (bad input, usage
    /// error): an attempt ending with one is dead-lettered at once instead
    /// of retried, as Kubernetes' `FailIndex` and AWS Batch's
    /// `evaluateOnExit` do.
    pub fn with_fatal_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.fatal_exit_codes = codes.into_iter().collect();
        self
    }

    /// Keep the streams `capture` names, for attempts that have an output
    /// directory ([`Task::output_dir`]): each goes, as well as to the
    /// worker's own, to a file beside that directory ([`Capture::path`]),
    /// its first [`CAPTURE_LIMIT`] bytes kept, and the outcome lists the
    /// files ([`TaskOutcome::captured`]).
    pub fn with_capture(mut self, capture: Capture) -> Self {
        self.capture = capture;
        self
    }

    /// The argv for one item.
    pub fn argv_for(&self, item: &[u8]) -> Vec<OsString> {
        self.argv_for_attempt(item, None)
    }

    /// The argv for one attempt: the item, and the attempt's output
    /// directory for `{out}` (left as it is without one).
    pub fn argv_for_attempt(&self, item: &[u8], out: Option<&Path>) -> Vec<OsString> {
        let out = out.map(|dir| dir.as_os_str().as_bytes());
        let mut argv: Vec<OsString> = self
            .argv
            .iter()
            .map(|arg| substitute(arg, item, out))
            .collect();
        if !self.has_placeholder {
            argv.push(OsStr::from_bytes(item).to_os_string());
        }
        argv
    }

    /// Whether `{out}` is anywhere in the template (it needs `--outputs`).
    pub fn uses_output_dir(&self) -> bool {
        self.argv
            .iter()
            .any(|arg| contains(arg, OUT_PLACEHOLDER.as_bytes()))
    }

    /// Check up front that the program can be started, so a typo fails once
    /// instead of dead-lettering every item. Returns the resolved path.
    pub fn check_program(&self) -> Result<Option<PathBuf>, CommandError> {
        let program = &self.argv[0];
        if contains(program, PLACEHOLDER.as_bytes()) {
            return Ok(None); // The item chooses the program; nothing to check.
        }
        let shown = program.to_string_lossy().into_owned();
        let not_runnable = |why: String| CommandError::NotRunnable {
            program: shown.clone(),
            why,
        };
        if program.as_bytes().contains(&b'/') {
            let path = Path::new(program);
            return if is_executable(path) {
                Ok(Some(path.to_path_buf()))
            } else if path.exists() {
                Err(not_runnable("the file is not executable".into()))
            } else {
                Err(not_runnable("no such file".into()))
            };
        }
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .map(Some)
            .ok_or_else(|| {
                not_runnable("not found on PATH; check the spelling or give its full path".into())
            })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn contains(haystack: &OsStr, needle: &[u8]) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window == needle)
}

fn substitute(arg: &OsStr, item: &[u8], out: Option<&[u8]>) -> OsString {
    let bytes = arg.as_bytes();
    let needle = PLACEHOLDER.as_bytes();
    let out_needle = OUT_PLACEHOLDER.as_bytes();
    let has_out = out.is_some() && contains(arg, out_needle);
    if !has_out && !contains(arg, needle) {
        return arg.to_os_string();
    }
    // One pass over the template: text put in (the item, the directory)
    // is never scanned again, so an item holding `{out}` stays as it is.
    let mut result = Vec::with_capacity(bytes.len() + item.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            result.extend_from_slice(item);
            rest = &rest[needle.len()..];
        } else if let Some(out) = out.filter(|_| rest.starts_with(out_needle)) {
            result.extend_from_slice(out);
            rest = &rest[out_needle.len()..];
        } else {
            result.push(rest[0]);
            rest = &rest[1..];
        }
    }
    OsString::from_vec(result)
}

/// Kills the task's whole process group if the task is dropped while its
/// command still runs (timeout, shutdown grace over).
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg has no memory-safety preconditions; the group is
            // the one this task's child leads and it has not been reaped.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

fn describe(status: ExitStatus, fatal_exit_codes: &[i32]) -> TaskOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => TaskOutcome::success().with_exit_code(0),
        (Some(code), _) if fatal_exit_codes.contains(&code) => {
            TaskOutcome::fatal(format!("exit code {code}, one of --fatal-exit-codes"))
                .with_exit_code(code)
        }
        (Some(code), _) => TaskOutcome::failed(format!("exit code {code}")).with_exit_code(code),
        (None, Some(signal)) => {
            TaskOutcome::failed(format!("killed by signal {signal}")).with_exit_code(128 + signal)
        }
        (None, None) => TaskOutcome::failed(format!("ended with {status}")),
    }
}

#[async_trait]
impl Handler for CommandTemplate {
    async fn handle(&self, task: Task) -> TaskOutcome {
        let item = &task.item.payload[..];
        if item.contains(&0) {
            return TaskOutcome::fatal(
                "the item contains a NUL byte, which no command argument can carry",
            );
        }
        let argv = self.argv_for_attempt(item, task.output_dir.as_deref());
        let mut command = tokio::process::Command::new(&argv[0]);
        if let Some(dir) = &task.output_dir {
            command.env("FORLOOP_OUTPUT_DIR", &**dir);
        }
        command
            .args(&argv[1..])
            .env("FORLOOP_ITEM", OsStr::from_bytes(item))
            .env("FORLOOP_ATTEMPT", task.attempt.to_string())
            .env("FORLOOP_ITEM_ID", &*task.id)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches the worker,
            // which decides how running commands end, not every child at once.
            .process_group(0)
            .kill_on_drop(true);
        if self.capture.stdout && task.output_dir.is_some() {
            // Kept: through a pipe to its file and on to ours.
            command.stdout(Stdio::piped());
        }
        super::hide_worker_env(&mut command);
        // No pre_exec hook (e.g. PR_SET_PDEATHSIG): it forces fork+exec
        // instead of posix_spawn and costs ~50% of command-mode throughput
        // (docs/BENCHMARKS.md). So a worker killed with SIGKILL leaves its
        // running commands to finish on their own; their items come back
        // after the lease. SIGTERM/SIGINT and timeouts kill the whole group.
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let program = argv[0].to_string_lossy();
                let message = format!("cannot start `{program}`: {error}");
                return match error.kind() {
                    std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput => TaskOutcome::fatal(message),
                    // Out of processes or file descriptors: may pass.
                    _ => TaskOutcome::failed(message),
                };
            }
        };
        let mut guard = GroupGuard {
            pgid: child.id().and_then(|pid| i32::try_from(pid).ok()),
        };
        let (mut out_file, mut err_file) = (None, None);
        if let Some(dir) = &task.output_dir {
            for (stream, file) in [
                (Stream::Stdout, &mut out_file),
                (Stream::Stderr, &mut err_file),
            ] {
                if !self.capture.keeps(stream) {
                    continue;
                }
                match CaptureFile::create(dir, stream, CAPTURE_LIMIT).await {
                    Ok(made) => *file = Some(made),
                    Err(error) => {
                        return TaskOutcome::failed(format!(
                            "cannot make the file for the command's {} (--capture) beside `{}`: \
                             {error}",
                            stream.name(),
                            dir.display()
                        ));
                    }
                }
            }
        }
        // Its stderr passes through to ours, and its tail goes with the
        // outcome into the job's receipt; a kept stream also goes to its
        // file.
        let (exited, exit) = tokio::sync::watch::channel(false);
        let stop = || {
            let mut exit = exit.clone();
            async move {
                let _ = exit.wait_for(|done| *done).await;
            }
        };
        let stderr = super::stderr::pass_through(
            child.stderr.take(),
            Stream::Stderr,
            err_file.as_mut(),
            stop(),
        );
        let stdout = super::stderr::pass_through(
            child.stdout.take(),
            Stream::Stdout,
            out_file.as_mut(),
            stop(),
        );
        let wait = async {
            let status = child.wait().await;
            let _ = exited.send(true);
            status
        };
        let (status, (tail, err_kept), (_, out_kept)) = tokio::join!(wait, stderr, stdout);
        guard.pgid = None;
        let mut outcome = match status {
            Ok(status) => describe(status, &self.fatal_exit_codes),
            Err(error) => TaskOutcome::failed(format!("waiting for the command failed: {error}")),
        };
        for (file, kept) in [(out_file, out_kept), (err_file, err_kept)] {
            let Some(file) = file else { continue };
            let stream = file.stream();
            match kept {
                Ok(()) => match file.finish().await {
                    Ok(captured) => outcome.captured.push(captured),
                    Err(error) => return keep_failed(outcome, stream, &error),
                },
                Err(error) => return keep_failed(outcome, stream, &error),
            }
        }
        outcome.with_stderr_tail(tail.into_text())
    }
}

/// The attempt fails when a stream it was asked to keep could not be
/// written (a full disk): never a success without its output.
fn keep_failed(outcome: TaskOutcome, stream: Stream, error: &std::io::Error) -> TaskOutcome {
    let mut failed = TaskOutcome::failed(format!(
        "cannot keep the command's {} (--capture): {error}",
        stream.name()
    ));
    failed.exit_code = outcome.exit_code;
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(template: &[&str], item: &str) -> Vec<String> {
        CommandTemplate::new(template.iter().copied())
            .unwrap()
            .argv_for(item.as_bytes())
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    #[test]
    fn placeholder_becomes_one_argument_inside_text() {
        assert_eq!(
            argv(&["dl", "https://x/watch?v={}", "-o", "{}.mp4"], "a b;$(c)"),
            ["dl", "https://x/watch?v=a b;$(c)", "-o", "a b;$(c).mp4"]
        );
    }

    #[test]
    fn out_becomes_the_attempt_directory_and_an_item_holding_it_stays_as_is() {
        let template = CommandTemplate::new(["dl", "-o", "{out}/%(id)s.mp4", "{}"]).unwrap();
        let argv: Vec<String> = template
            .argv_for_attempt(b"{out}/x", Some(Path::new("/tmp/a1")))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(argv, ["dl", "-o", "/tmp/a1/%(id)s.mp4", "{out}/x"]);
        assert!(template.uses_output_dir());
        assert_eq!(
            argv_for_none(&template),
            ["dl", "-o", "{out}/%(id)s.mp4", "v"]
        );
    }

    fn argv_for_none(template: &CommandTemplate) -> Vec<String> {
        template
            .argv_for(b"v")
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    #[test]
    fn without_placeholder_item_is_last_argument() {
        assert_eq!(argv(&["echo", "-n"], "it's"), ["echo", "-n", "it's"]);
    }

    #[test]
    fn empty_command_is_refused() {
        assert_eq!(
            CommandTemplate::new(Vec::<String>::new()).unwrap_err(),
            CommandError::Empty
        );
    }

    #[test]
    fn missing_program_is_named() {
        let err = CommandTemplate::new(["forloop-no-such-program", "{}"])
            .unwrap()
            .check_program()
            .unwrap_err();
        assert!(err.to_string().contains("forloop-no-such-program"), "{err}");
        assert!(err.to_string().contains("not found on PATH"), "{err}");
    }

    #[test]
    fn program_on_path_is_found() {
        let path = CommandTemplate::new(["true"])
            .unwrap()
            .check_program()
            .unwrap();
        assert!(path.unwrap().ends_with("true"));
    }
}
