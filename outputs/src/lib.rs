//! forloop-outputs: what `f` produces leaves the machine before its item
//! counts as done.
//!
//! Each attempt gets a fresh, empty directory ([`WithOutputs`]); when `f`
//! succeeds, every file in it is streamed to the [`OutputStore`] under the
//! item's own prefix ([`item_key`]), then the item's [`ItemRecord`] (each
//! file's key, size and SHA-256), and only then does the worker write the
//! item's receipt and ack it. A failed or timed-out upload fails the
//! attempt, which is retried like any failure; a redelivered item
//! overwrites its own objects and removes the ones it did not make again,
//! so the store holds one set per item.
//!
//! With the files go the command's kept streams (`--capture stdout,stderr`:
//! each attempt's whole stdout and stderr, up to 64 MiB each) and, where
//! `f` returned a value, the value: in the record when its JSON is at most
//! 1 KiB (the receipt keeps it too), else in an object of its own whose URL
//! the receipt names.
//!
//! The store is Apache Arrow's `object_store`: S3 and S3-compatible
//! servers (feature `s3`), Google Cloud Storage (`gcs`), Azure Blob
//! Storage (`azure`), and the local filesystem (always). Each cloud's
//! builder reads its own credential chain; no credential is ever part of
//! the URL, an error, a log line or a `Debug`.
//!
//! Why a crate of its own and not a feature of core: the store clients
//! bring an HTTP stack that no queue driver, and no test of core, needs;
//! the only seams it uses are core's [`forloop_core::Handler`] and
//! [`forloop_core::Task::output_dir`], so the worker loop does not change.
#![deny(missing_docs)]

mod handler;
mod key;
mod publish;
mod store;

pub use handler::WithOutputs;
pub use key::{SLUG_MAX, item_key};
pub use publish::{CapturedOutput, Extras, ItemRecord, Manifest, OutputFile};
pub use store::{OutputStore, OutputsError, StoreSettings, redact};
