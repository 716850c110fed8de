//! Cleanup on drop, written once: what a test starts (a server process, a
//! scratch directory) goes away when its guard does, on success and on panic.

use std::path::{Path, PathBuf};
use std::process::Child;

/// A child process that is stopped when the guard drops: SIGTERM first (as
/// a restart or a node shutdown would), then SIGKILL if asked to hurry.
#[derive(Debug, Default)]
pub struct ProcessGuard(Option<Child>);

impl ProcessGuard {
    /// Guard `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The guarded process, while it runs.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }

    /// Stop it now with `signal` and reap it; a stopped guard drops quietly.
    pub fn stop_with(&mut self, signal: i32) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop_with(libc::SIGKILL);
    }
}

/// A directory removed, with everything in it, when the guard drops.
#[derive(Debug)]
pub struct DirGuard(PathBuf);

impl DirGuard {
    /// Guard `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
