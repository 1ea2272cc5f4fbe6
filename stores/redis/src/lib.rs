#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connection;
mod error;
mod layout;
mod near_cache;
mod store;

pub use layout::Layout;
pub use near_cache::{NearCacheConfig, NearCacheStats};
pub use store::RedisStore;

/// The `deadpool-redis` crate, for pool configuration (`Config`, `PoolConfig`, cluster and
/// sentinel configs).
pub use deadpool_redis;
/// The `redis` driver this store is built on.
pub use redis;
