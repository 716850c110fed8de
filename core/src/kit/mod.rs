//! The driver kit: plumbing that several queue drivers need and that is
//! written once, here, so the copies cannot drift.
//!
//! - [`redact_url`] and [`Redacted`]: addresses shown without passwords or
//!   tokens.

mod redact;

pub use redact::{Redacted, redact_url};
