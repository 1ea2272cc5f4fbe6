#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod common;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod conns;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod dialect;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod driver;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod near;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod store;

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use common::{CleanupTask, DEFAULT_TABLE_NAME, MAX_IDENTIFIER_LEN};
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use dialect::Dialect;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use store::SqlStore;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use dialect::{CONNECT_PG_SIMPLE_TABLE_NAME, Postgres, PostgresLayout, PostgresStore};

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use dialect::{Sqlite, SqliteStore};

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use dialect::{MySql, MySqlStore};

/// The near-cache's bounds and counters ([`PostgresStore::with_near_cache`]).
#[cfg(feature = "postgres")]
pub use session_store::near_cache::{NearCacheConfig, NearCacheStats};

/// The `sqlx` driver this crate is built on (only the features of the enabled dialects), so
/// one dependency line is enough to build pools and connect options.
pub use sqlx;
