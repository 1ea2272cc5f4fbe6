//! What differs between the SQL databases: one file each.
//!
//! A dialect is its SQL text ([`Statements`]), its type mapping (how an expiry is stored;
//! ids and owners are text, payloads bytes and versions `BIGINT` everywhere) and its error
//! classification. Everything else (pooling, binding, decoding, the store's rules) is
//! [`SqlStore`](crate::SqlStore), written once.

use std::fmt::Debug;

use session_store::express::ExpressLayout;
use time::OffsetDateTime;

use crate::driver::Driver;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use mysql::{MySql, MySqlStore};
#[cfg(feature = "postgres")]
pub use postgres::{CONNECT_PG_SIMPLE_TABLE_NAME, Postgres, PostgresLayout, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Sqlite, SqliteStore};

/// A SQL database that [`SqlStore`](crate::SqlStore) runs on: [`Postgres`], [`Sqlite`] or
/// [`MySql`] (each behind its cargo feature). Sealed: this crate's dialects are the only
/// ones.
pub trait Dialect: sealed::Dialect {}

impl<D: sealed::Dialect> Dialect for D {}

pub(crate) mod sealed {
    use super::*;

    /// The dialect's side of the store. Not nameable outside the crate.
    pub trait Dialect: Send + Sync + Sized + 'static {
        /// The sqlx database.
        type Db: Driver<Self::Time>;
        /// How the expiry column is bound and read.
        type Time: Copy + Send + Sync + 'static;
        /// What else selects the table's shape (Postgres: [`PostgresLayout`]).
        type Layout: Clone + Debug + Default + Send + Sync + 'static;

        /// The store's name in errors and logs.
        const NAME: &'static str;
        /// Whether this process's writes queue in one in-process lock (SQLite: one writer at
        /// a time, and a busy handler that is not fair).
        const SERIALIZE_WRITES: bool = false;

        /// Every statement, for `table` (already validated) in `schema`.
        fn statements(schema: Option<&str>, table: &str, layout: &Self::Layout) -> Statements;

        /// The table name used when none is set.
        fn default_table_name(_layout: &Self::Layout) -> &'static str {
            crate::common::DEFAULT_TABLE_NAME
        }

        /// The express-session JSON layout, when the table is shared with Node.
        fn express(_layout: &Self::Layout) -> Option<&ExpressLayout> {
            None
        }

        /// The layout's name in `Debug` output.
        fn layout_name(_layout: &Self::Layout) -> Option<&'static str> {
            None
        }

        /// An expiry as the column stores it (rounded down where the column is coarser).
        fn time_to_db(t: OffsetDateTime) -> Self::Time;

        /// A stored expiry back; `None` when it is out of range (a corrupt row).
        fn time_from_db(t: Self::Time) -> Option<OffsetDateTime>;

        /// Rows changed by a statement.
        fn rows_affected(done: &<Self::Db as sqlx::Database>::QueryResult) -> u64;

        /// Whether a database error means "the server cannot serve us now" rather than a
        /// failed statement (besides SQLSTATE class `08`, which every dialect shares).
        fn is_unavailable(_db: &dyn sqlx::error::DatabaseError) -> bool {
            false
        }

        /// Whether the id can be stored at all (Postgres text cannot hold NUL). Reads of an
        /// id that cannot be stored find nothing; writes fail with `Error::Backend`.
        fn storable(_id: &str) -> bool {
            true
        }

        /// Starts the task that feeds `near` with the server's announcements of changed
        /// rows (only dialects whose statements have [`Tagged`] forms are ever asked).
        fn listen(_near: &std::sync::Arc<crate::near::Near>, _pool: &sqlx::Pool<Self::Db>) {}
    }
}

/// A value a statement binds, in the order of its placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The session id (text).
    Id,
    /// The payload (bytes).
    Data,
    /// The record's expiry.
    Expires,
    /// The record's version (`BIGINT`).
    Version,
    /// The version a compare-and-set expects (`BIGINT`).
    Expected,
    /// The application clock's now, which every expiry filter compares against.
    Now,
    /// The record's owner (nullable text): `Record::owner` in a write, the owner asked for
    /// in a listing.
    Owner,
}

/// One statement: its text (only validated, quoted identifiers are formatted into it) and
/// what it binds.
#[derive(Debug)]
pub struct Statement {
    pub(crate) sql: String,
    pub(crate) args: &'static [Arg],
}

impl Statement {
    pub(crate) fn new(sql: String, args: &'static [Arg]) -> Self {
        Self { sql, args }
    }
}

/// One step of `migrate`: a statement, skipped when its guard finds the change already
/// made (e.g. a column that an older table lacks: `ALTER TABLE … ADD COLUMN` has no
/// `IF NOT EXISTS` in every dialect, and where it has, it locks the table even when the
/// column is there).
#[derive(Debug)]
pub struct Step {
    pub(crate) run: Statement,
    /// Selects a row when `run` is not needed; `None`: always run (the statement is
    /// idempotent itself, e.g. `CREATE TABLE IF NOT EXISTS`).
    pub(crate) unless: Option<Statement>,
}

impl Step {
    /// A statement that is idempotent itself.
    pub(crate) fn always(run: Statement) -> Self {
        Self { run, unless: None }
    }

    /// `run`, unless `done` selects a row.
    pub(crate) fn unless(done: Statement, run: Statement) -> Self {
        Self {
            run,
            unless: Some(done),
        }
    }
}

/// Every statement of a store, built once per table.
///
/// Reads select `data, expires, version`, in that order (`owned`: `id` as bytes first).
/// Writes report the rows they changed: 0 means "not written" (`create`: a live row holds
/// the id; `update`, `touch`, `cas`: no live row, or another version). In a layout with an
/// owner column, every statement that writes `data` also writes `owner` ([`Arg::Owner`]).
#[derive(Debug)]
pub struct Statements {
    /// Run in order, in one transaction (as far as the dialect's DDL is transactional), by
    /// `migrate`.
    pub(crate) migrate: Vec<Step>,
    pub(crate) get: Statement,
    pub(crate) set: Statement,
    /// Inserts, or replaces an expired row. A dialect without a conditional upsert makes
    /// this a plain `INSERT` and sets `reclaim`.
    pub(crate) create: Statement,
    /// Deletes the id's row only if it has expired; run when `create` met a duplicate key,
    /// before `create` is tried once more.
    pub(crate) reclaim: Option<Statement>,
    pub(crate) update: Statement,
    /// `None`: the layout has no version column, so compare-and-set is unsupported.
    pub(crate) cas: Option<Statement>,
    /// Selects a row when it is live (`cas` wrote nothing: conflict or missing?).
    pub(crate) exists: Statement,
    pub(crate) touch: Statement,
    pub(crate) destroy: Statement,
    pub(crate) delete_expired: Statement,
    /// Selects `id` (as bytes), `data, expires, version` of the live rows of one owner
    /// ([`Arg::Owner`]), through the owner index. `None`: the layout has no owner column,
    /// so `owned` is unsupported.
    pub(crate) owned: Option<Statement>,
    /// The near-cache's statements; `None`: the dialect or layout has no near-cache.
    pub(crate) tagged: Option<Tagged>,
}

/// The statements of a near-cached store: they also read or return the tag of the row
/// version they read or wrote (PostgreSQL: the id of the transaction that wrote it), the
/// tag the server's announcements of changed rows carry. Its writes keep the table's
/// trigger from announcing them: the store announces each once it has committed.
#[derive(Debug)]
pub struct Tagged {
    /// The announcements' channel.
    pub(crate) channel: String,
    /// Installs what announces every change of the table's rows (run by `migrate` when the
    /// near-cache is on).
    pub(crate) migrate: Vec<Step>,
    /// Selects a row when the announcements are installed.
    pub(crate) installed: Statement,
    /// `get`, selecting the tag after `data, expires, version`.
    pub(crate) get: Statement,
    /// `set`, `create`, `update` and `cas`, each returning the tag of the row it wrote (no
    /// row: nothing written).
    pub(crate) set: Statement,
    pub(crate) create: Statement,
    pub(crate) update: Statement,
    pub(crate) cas: Statement,
    /// `touch`, returning the row it changed (`data, expires, version`, tag).
    pub(crate) touch: Statement,
    /// `destroy`.
    pub(crate) destroy: Statement,
}
