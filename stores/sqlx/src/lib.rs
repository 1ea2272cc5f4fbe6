#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
mod common;

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub use common::{CleanupTask, DEFAULT_TABLE_NAME, MAX_IDENTIFIER_LEN};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres_store;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres_store::{CONNECT_PG_SIMPLE_TABLE_NAME, PostgresLayout, PostgresStore};

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite_store;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite_store::SqliteStore;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
mod mysql_store;
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql_store::MySqlStore;

/// The `sqlx` driver this crate is built on (only the features of the enabled dialects), so
/// one dependency line is enough to build pools and connect options.
pub use sqlx;
