//! What the store asks of a sqlx database, said once: bind a statement's values in its
//! order, run it on a connection, read a record row. Implemented for every sqlx database
//! that can bind and decode the column types the store uses, so each dialect only names its
//! database.

use std::future::Future;

use sqlx::query::Query;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use crate::dialect::{Arg, Statement};

/// The values a statement may bind; each statement takes the ones its [`Arg`]s name.
#[derive(Clone, Copy)]
pub struct Values<'q, T> {
    pub(crate) id: &'q str,
    pub(crate) data: &'q [u8],
    pub(crate) expires: Option<T>,
    pub(crate) version: i64,
    pub(crate) expected: i64,
    pub(crate) now: Option<T>,
    /// `None` binds `NULL` (a record without owner).
    pub(crate) owner: Option<&'q str>,
}

impl<'q, T> Values<'q, T> {
    /// Nothing (a statement without parameters, e.g. `migrate`'s).
    pub(crate) fn none() -> Self {
        Self::id("")
    }

    /// Only the id (e.g. `destroy`).
    pub(crate) fn id(id: &'q str) -> Self {
        Self {
            id,
            data: &[],
            expires: None,
            version: 0,
            expected: 0,
            now: None,
            owner: None,
        }
    }
}

/// A record row: `data, expires, version`.
pub type RecordRow<T> = (Vec<u8>, T, i64);

/// A row of a listing: the id's bytes, then the record row.
pub type IdRecordRow<T> = (Vec<u8>, RecordRow<T>);

/// The driver operations of the store, for a database whose expiry column maps to `T`.
pub trait Driver<T>: Database {
    /// Runs `statement`; its result (rows changed).
    fn execute<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<Self::QueryResult, sqlx::Error>> + Send + 'c;

    /// Runs `statement` and reads the record row it selects, if any.
    fn fetch_record<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<Option<RecordRow<T>>, sqlx::Error>> + Send + 'c;

    /// Runs `statement` and reads every row it selects: `id` (bytes), `data, expires,
    /// version`.
    fn fetch_records<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<Vec<IdRecordRow<T>>, sqlx::Error>> + Send + 'c;

    /// Runs `statement` and reads the one `BIGINT` of the row it selects or returns, if any
    /// (a near-cached write: the tag of the row it wrote).
    fn fetch_tag<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send + 'c;

    /// Runs `statement` and reads the record row it selects or returns, followed by its tag,
    /// if any (a near-cached read or touch).
    fn fetch_tagged<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<Option<(RecordRow<T>, i64)>, sqlx::Error>> + Send + 'c;

    /// Runs `statement`; whether it selected a row.
    fn fetch_exists<'c>(
        conn: &'c mut Self::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'c;
}

impl<DB, T> Driver<T> for DB
where
    DB: Database,
    T: Copy + Send + Sync + 'static + for<'q> Encode<'q, DB> + Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    fn execute<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> impl Future<Output = Result<DB::QueryResult, sqlx::Error>> + Send + 'c {
        bind(statement, values).execute(conn)
    }

    async fn fetch_record<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> Result<Option<RecordRow<T>>, sqlx::Error> {
        let Some(row) = bind(statement, values).fetch_optional(conn).await? else {
            return Ok(None);
        };
        Ok(Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
    }

    async fn fetch_records<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> Result<Vec<IdRecordRow<T>>, sqlx::Error> {
        let rows = bind(statement, values).fetch_all(conn).await?;
        rows.iter()
            .map(|row| {
                let record = (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                Ok((row.try_get(0)?, record))
            })
            .collect()
    }

    async fn fetch_tag<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> Result<Option<i64>, sqlx::Error> {
        let row = bind(statement, values).fetch_optional(conn).await?;
        row.map(|row| row.try_get(0)).transpose()
    }

    async fn fetch_tagged<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> Result<Option<(RecordRow<T>, i64)>, sqlx::Error> {
        let Some(row) = bind(statement, values).fetch_optional(conn).await? else {
            return Ok(None);
        };
        let record = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(Some((record, row.try_get(3)?)))
    }

    async fn fetch_exists<'c>(
        conn: &'c mut DB::Connection,
        statement: &'c Statement,
        values: Values<'c, T>,
    ) -> Result<bool, sqlx::Error> {
        let row = bind(statement, values).fetch_optional(conn).await?;
        Ok(row.is_some())
    }
}

/// `statement` with `values` bound in the order of its placeholders.
fn bind<'q, DB, T>(
    statement: &'q Statement,
    values: Values<'q, T>,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    T: Copy + Send + 'q + Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    // The statements are fixed in the dialect files; each names only values its operation
    // provides, so a missing time is a bug in this crate, not a runtime condition.
    const MISSING: &str = "every statement binding a time is given that time";
    let mut query = sqlx::query(&statement.sql);
    for arg in statement.args {
        query = match arg {
            Arg::Id => query.bind(values.id),
            Arg::Data => query.bind(values.data),
            Arg::Expires => query.bind(values.expires.expect(MISSING)),
            Arg::Version => query.bind(values.version),
            Arg::Expected => query.bind(values.expected),
            Arg::Now => query.bind(values.now.expect(MISSING)),
            Arg::Owner => query.bind(values.owner),
        };
    }
    query
}
