//! Adapters for callback-style, blocking and tower-sessions stores (work in progress)
#![forbid(unsafe_code)]
#![warn(missing_docs)]
