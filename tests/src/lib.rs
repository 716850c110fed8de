//! forloop's end-to-end tests (in `tests/`): the real `runner` binary, real
//! processes, real servers. The helpers they share live in the test kit
//! (`forloop-testkit`), which driver crates use too without building the
//! runner; this crate re-exports it so the tests read `forloop_tests::...`.
#![deny(missing_docs)]

pub use forloop_testkit::*;

pub mod browser;
