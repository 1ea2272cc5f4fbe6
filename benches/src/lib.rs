//! Criterion benchmarks for session-store; run them with `cargo bench -p session-benches`.
//!
//! This crate also compiles the repository README's code blocks as doctests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc = include_str!("../../README.md")]
pub mod readme {}
