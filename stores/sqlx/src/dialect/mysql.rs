//! MySQL and MariaDB: positional `?` placeholders, `DATETIME(6)` in UTC, and a create that
//! is a plain `INSERT` (no conditional upsert).

use session_store::Result;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::Arg::{Data, Expected, Expires, Id, Now, Owner, Version};
use super::{Statement, Statements, Step, sealed};
use crate::SqlStore;

/// The MySQL/MariaDB dialect (feature `mysql`): see [`MySqlStore`].
#[derive(Debug, Clone, Copy)]
pub struct MySql;

/// Sessions in a MySQL 8 or MariaDB 10.5+ table (feature `mysql`).
///
/// Layout, created by [`SqlStore::migrate`]:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS `sessions` (
///     id      VARBINARY(256) NOT NULL PRIMARY KEY,  -- exact, case-sensitive match
///     data    LONGBLOB       NOT NULL,              -- Record::encode_payload
///     expires DATETIME(6)    NOT NULL,              -- UTC, microseconds
///     version BIGINT         NOT NULL DEFAULT 0,
///     owner   VARBINARY(256)     NULL,              -- Record::owner, exact match
///     INDEX `sessions_expires_idx` (expires),
///     INDEX `sessions_owner_idx` (owner)
/// );
/// ```
///
/// - Everything [`SqlStore`] promises. The expiry is stored in UTC with microsecond
///   precision (rounded down), whatever the session time zone.
/// - `owned` is `SELECT … WHERE owner = ? AND expires > ?`, a lookup of that owner in the
///   owner index. MySQL has no partial indexes, so a row without an owner has a `NULL`
///   entry there; the index leaves `expires` out so that a `touch` never rewrites it. It
///   reads the owner's rows that have expired but not yet been deleted too (and skips
///   them): run the cleanup task.
/// - `migrate` on a table of an earlier release (without `owner`) adds the column (at the
///   end and without a default: an instant change on MySQL 8 and MariaDB 10.5+) and then
///   builds the owner index online (writes go on meanwhile). Both are looked up in
///   `information_schema` first, so a table that has them is never altered; DDL commits
///   on its own in MySQL, so a step that another process completed first is accepted.
/// - `create` is a plain `INSERT`, one statement when the id is free; on a duplicate key it
///   deletes the row if it has expired and inserts once more (a duplicate key then means a
///   live row). No `INSERT IGNORE`, which would also hide truncation errors.
/// - The id column is binary, so ids compare exactly (a case-insensitive collation would
///   let `abc` and `ABC` share a row). Ids longer than 256 bytes cannot be stored.
/// - Works on MySQL 8 and MariaDB 10.5+ (tested on MariaDB 10.11).
///
/// ```no_run
/// # async fn demo() -> session_store::Result<()> {
/// use session_store_sqlx::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://root@127.0.0.1:3306/app").await?;
/// store.migrate().await?;
/// let _cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let manager = session_store::SessionManager::new(store);
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
pub type MySqlStore = SqlStore<MySql>;

impl sealed::Dialect for MySql {
    type Db = sqlx::MySql;
    type Time = PrimitiveDateTime;
    type Layout = ();
    const NAME: &'static str = "mysql";

    fn statements(_schema: Option<&str>, table: &str, _layout: &()) -> Statements {
        let t = format!("`{table}`");
        let owner_idx = format!("{table}_owner_idx");
        Statements {
            // DDL commits implicitly in MySQL; the indexes are part of the table
            // definition, which keeps the first statement idempotent. A table of an earlier
            // release lacks `owner` and its index: MySQL 8 has no `IF NOT EXISTS` for
            // either, so each is looked up first. `table` is a validated identifier, so it
            // is a safe literal.
            migrate: vec![
                Step::always(Statement::new(
                    format!(
                        "CREATE TABLE IF NOT EXISTS {t} (id VARBINARY(256) NOT NULL PRIMARY KEY, \
                         data LONGBLOB NOT NULL, expires DATETIME(6) NOT NULL, \
                         version BIGINT NOT NULL DEFAULT 0, owner VARBINARY(256) NULL, \
                         INDEX `{table}_expires_idx` (expires), INDEX `{owner_idx}` (owner))"
                    ),
                    &[],
                )),
                Step::unless(
                    Statement::new(
                        format!(
                            "SELECT 1 FROM information_schema.columns \
                             WHERE table_schema = DATABASE() AND table_name = '{table}' \
                             AND column_name = 'owner'"
                        ),
                        &[],
                    ),
                    Statement::new(
                        format!("ALTER TABLE {t} ADD COLUMN owner VARBINARY(256) NULL"),
                        &[],
                    ),
                ),
                Step::unless(
                    Statement::new(
                        format!(
                            "SELECT 1 FROM information_schema.statistics \
                             WHERE table_schema = DATABASE() AND table_name = '{table}' \
                             AND index_name = '{owner_idx}'"
                        ),
                        &[],
                    ),
                    Statement::new(
                        format!("ALTER TABLE {t} ADD INDEX `{owner_idx}` (owner)"),
                        &[],
                    ),
                ),
            ],
            get: Statement::new(
                format!("SELECT data, expires, version FROM {t} WHERE id = ? AND expires > ?"),
                &[Id, Now],
            ),
            set: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version, owner) VALUES (?, ?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE data = VALUES(data), \
                     expires = VALUES(expires), version = VALUES(version), owner = VALUES(owner)"
                ),
                &[Id, Data, Expires, Version, Owner],
            ),
            create: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version, owner) VALUES (?, ?, ?, ?, ?)"
                ),
                &[Id, Data, Expires, Version, Owner],
            ),
            reclaim: Some(Statement::new(
                format!("DELETE FROM {t} WHERE id = ? AND expires <= ?"),
                &[Id, Now],
            )),
            update: Statement::new(
                format!(
                    "UPDATE {t} SET data = ?, expires = ?, version = ?, owner = ? \
                     WHERE id = ? AND expires > ?"
                ),
                &[Data, Expires, Version, Owner, Id, Now],
            ),
            cas: Some(Statement::new(
                format!(
                    "UPDATE {t} SET data = ?, expires = ?, version = ?, owner = ? \
                     WHERE id = ? AND version = ? AND expires > ?"
                ),
                &[Data, Expires, Version, Owner, Id, Expected, Now],
            )),
            exists: Statement::new(
                format!("SELECT 1 FROM {t} WHERE id = ? AND expires > ?"),
                &[Id, Now],
            ),
            touch: Statement::new(
                format!("UPDATE {t} SET expires = ? WHERE id = ? AND expires > ?"),
                &[Expires, Id, Now],
            ),
            destroy: Statement::new(format!("DELETE FROM {t} WHERE id = ?"), &[Id]),
            delete_expired: Statement::new(format!("DELETE FROM {t} WHERE expires <= ?"), &[Now]),
            owned: Some(Statement::new(
                format!(
                    "SELECT id, data, expires, version FROM {t} WHERE owner = ? AND expires > ?"
                ),
                &[Owner, Now],
            )),
            tagged: None,
        }
    }

    /// UTC with microseconds (rounded down), as `DATETIME(6)` holds it.
    fn time_to_db(t: OffsetDateTime) -> PrimitiveDateTime {
        let utc = t.to_offset(UtcOffset::UTC);
        let micros = utc.time().replace_microsecond(utc.microsecond());
        PrimitiveDateTime::new(utc.date(), micros.unwrap_or(utc.time()))
    }

    fn time_from_db(t: PrimitiveDateTime) -> Option<OffsetDateTime> {
        Some(t.assume_utc())
    }

    fn rows_affected(done: &sqlx::mysql::MySqlQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl MySqlStore {
    /// Connects a new pool to `url` (`mysql://user:pass@host:3306/db`; `mariadb://` works
    /// too), with the same pool settings as [`PostgresStore::connect`](crate::PostgresStore).
    /// Fails with [`Error::Unavailable`](session_store::Error::Unavailable) when the server
    /// cannot be reached (naming the address and the reason) and
    /// [`Error::Backend`](session_store::Error::Backend) for a malformed URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::on_own_pool(
            crate::common::connect_network::<MySql>(url, 3306).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::sealed::Dialect as _;
    use super::*;

    #[test]
    fn utc_micros_round_down() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_999)
            .unwrap()
            .to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        let db = MySql::time_to_db(t);
        assert_eq!(db.nanosecond(), 123_456_000);
        assert_eq!(
            MySql::time_from_db(db).unwrap().unix_timestamp(),
            1_700_000_000
        );
    }
}
