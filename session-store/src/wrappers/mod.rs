//! Stores that wrap other stores: a local cache in front of a remote store, and tracing
//! instrumentation. Both pass the conformance suite over any store.

mod cache;
mod trace;

pub use cache::{CacheOptions, CachingStore};
pub use trace::TracingStore;
