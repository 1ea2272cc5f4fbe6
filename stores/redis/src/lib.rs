//! Redis store for session-store (work in progress)
#![forbid(unsafe_code)]
#![warn(missing_docs)]
