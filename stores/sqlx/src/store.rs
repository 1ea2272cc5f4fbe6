//! [`SqlStore`]: sessions in a SQL table, one implementation for every dialect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_store::near_cache::{NearCacheConfig, NearCacheStats};
use session_store::{
    Capabilities, CasOutcome, Clock, Error, Record, Result, SessionId, SessionStore, SystemClock,
    async_trait,
};
use sqlx::Pool;
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard};

use crate::common::{
    CleanupTask, map_sqlx_error, spawn_cleanup, validate_identifier, version_from_db, version_to_db,
};
use crate::conns::{Conn, Conns, Share};
use crate::dialect::{Dialect, Statement, Statements, Step, Tagged};
use crate::driver::{Driver, RecordRow, Values};
use crate::near::Near;

/// Sessions in a SQL table, on the database of dialect `D`. Use it through its aliases,
/// [`PostgresStore`](crate::PostgresStore), [`SqliteStore`](crate::SqliteStore) and
/// [`MySqlStore`](crate::MySqlStore), whose docs give each table's layout.
///
/// What every dialect shares:
/// - Every optional operation of [`SessionStore`] (compare-and-set except in a layout
///   without a version column), each as one statement; `compare_and_set` adds a `SELECT`
///   only when it wrote nothing, to tell a conflict from a missing record.
/// - An `owner` column (except in a layout shared with Node), written from
///   [`Record::owner`] by every write and indexed, so [`SessionStore::owned`] is one
///   `SELECT` through the owner index ([`SqlStore::owned_sql`]) that reads only that
///   owner's rows. Rows without an owner keep `NULL` there.
/// - Expiry filters bind the application's clock ([`SqlStore::with_clock`]), never the
///   server's, and an expired row is never returned; [`SqlStore::delete_expired`] or the
///   task from [`SqlStore::spawn_cleanup`] reclaim expired rows.
/// - Ids and values are always bound parameters; table (and schema) names are checked to
///   be plain identifiers before they are quoted into SQL.
/// - `Clone` is cheap; clones share the pool.
pub struct SqlStore<D: Dialect> {
    inner: Arc<Inner<D>>,
}

struct Inner<D: Dialect> {
    /// The pool, and the connections kept between statements; shared by every store built
    /// from one `new` or `connect`.
    conns: Arc<Conns<D::Db>>,
    /// `Some` where the dialect serializes this process's writes (SQLite), shared by every
    /// store built from one `new` or `connect`.
    writes: Option<Arc<Mutex<()>>>,
    schema: Option<String>,
    /// `None`: the layout's default table name.
    table: Option<String>,
    clock: Arc<dyn Clock>,
    layout: D::Layout,
    sql: Statements,
    /// The near-cache, where it is on (PostgreSQL's native layout only).
    near: Option<Arc<Near>>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct(D::NAME);
        if let Some(schema) = &self.inner.schema {
            s.field("schema", schema);
        }
        s.field("table", &self.table_name());
        if let Some(layout) = D::layout_name(&self.inner.layout) {
            s.field("layout", &layout);
        }
        s.finish_non_exhaustive()
    }
}

fn err<D: Dialect>(e: sqlx::Error) -> Error {
    map_sqlx_error(D::NAME, e, D::is_unavailable)
}

/// An id (rejected by `set` and `create`) or owner (rejected by every write) that the
/// dialect cannot store (Postgres: NUL); names which.
#[derive(Debug)]
struct Unstorable(&'static str);

impl fmt::Display for Unstorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} contains a character this database cannot store (NUL)",
            self.0
        )
    }
}

impl std::error::Error for Unstorable {}

impl<D: Dialect> SqlStore<D> {
    /// A store on `pool`, table `sessions` (or the layout's default), on the system clock.
    /// Call [`SqlStore::migrate`] once to create the table.
    ///
    /// The store keeps the connections it used between its statements (sqlx would test
    /// each one returned to the pool with one more round trip); of a pool given here it
    /// holds at most three quarters of `max_connections`, so your own statements on the
    /// same pool always find the rest. A connection it kept unused for a second goes back
    /// to the pool.
    pub fn new(pool: Pool<D::Db>) -> Self {
        Self::on(Conns::new(pool, Share::WithOthers, D::SERIALIZE_WRITES))
    }

    /// A store on a pool it opened itself (the `connect` constructors), which may use every
    /// connection of it.
    pub(crate) fn on_own_pool(pool: Pool<D::Db>) -> Self {
        Self::on(Conns::new(pool, Share::Own, D::SERIALIZE_WRITES))
    }

    fn on(conns: Arc<Conns<D::Db>>) -> Self {
        let writes = D::SERIALIZE_WRITES.then(Arc::default);
        Self::build(
            conns,
            writes,
            None,
            None,
            Arc::new(SystemClock),
            D::Layout::default(),
            None,
        )
    }

    fn build(
        conns: Arc<Conns<D::Db>>,
        writes: Option<Arc<Mutex<()>>>,
        schema: Option<String>,
        table: Option<String>,
        clock: Arc<dyn Clock>,
        layout: D::Layout,
        near: Option<NearCacheConfig>,
    ) -> Self {
        let name = table
            .as_deref()
            .unwrap_or_else(|| D::default_table_name(&layout));
        let sql = D::statements(schema.as_deref(), name, &layout);
        let near = near.and_then(|config| match &sql.tagged {
            Some(tagged) => Some(Arc::new(Near::new(
                config,
                tagged.channel.clone(),
                tagged.installed.sql.clone(),
            ))),
            None => {
                tracing::warn!(
                    store = D::NAME,
                    "near-cache turned off: not available in this layout"
                );
                None
            }
        });
        Self {
            inner: Arc::new(Inner {
                conns,
                writes,
                schema,
                table,
                clock,
                layout,
                sql,
                near,
            }),
        }
    }

    /// This store with the near-cache of `config` (`None`: without one); a fresh cache.
    pub(crate) fn with_near(&self, config: Option<NearCacheConfig>) -> Self {
        let i = &self.inner;
        Self::build(
            i.conns.clone(),
            i.writes.clone(),
            i.schema.clone(),
            i.table.clone(),
            i.clock.clone(),
            i.layout.clone(),
            config,
        )
    }

    /// Whether the layout supports a near-cache.
    pub(crate) fn near_cache_available(&self) -> bool {
        self.inner.sql.tagged.is_some()
    }

    /// The near-cache's counters, if it is on.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.inner.near.as_ref().map(|near| near.cache.stats())
    }

    /// The near-cache, its listening task started on first use.
    fn near(&self) -> Option<&Near> {
        let near = self.inner.near.as_ref()?;
        if near.starting() {
            D::listen(near, self.inner.conns.pool());
        }
        Some(near)
    }

    /// The near-cache's statements (present whenever the near-cache is on).
    fn tagged(&self) -> Result<&Tagged> {
        self.inner
            .sql
            .tagged
            .as_ref()
            .ok_or_else(|| Error::Config(format!("{}: no near-cache statements", D::NAME)))
    }

    /// This store with one part of its configuration changed (the statements are rebuilt).
    pub(crate) fn rebuild(
        &self,
        schema: Option<String>,
        table: Option<String>,
        clock: Arc<dyn Clock>,
        layout: D::Layout,
    ) -> Self {
        let i = &self.inner;
        Self::build(
            i.conns.clone(),
            i.writes.clone(),
            schema,
            table,
            clock,
            layout,
            i.near.as_ref().map(|near| near.config.clone()),
        )
    }

    /// Uses table `name` (default `sessions`, or the layout's own). It must be a plain
    /// identifier (see [`MAX_IDENTIFIER_LEN`](crate::MAX_IDENTIFIER_LEN)); anything else is
    /// [`Error::Config`].
    pub fn with_table_name(self, name: &str) -> Result<Self> {
        validate_identifier("table name", name)?;
        let i = &self.inner;
        Ok(self.rebuild(
            i.schema.clone(),
            Some(name.to_owned()),
            i.clock.clone(),
            i.layout.clone(),
        ))
    }

    /// Reads the time from `clock` (the one the session manager uses) for every expiry
    /// comparison.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let i = &self.inner;
        self.rebuild(i.schema.clone(), i.table.clone(), clock, i.layout.clone())
    }

    /// The connection pool. Statements you run on it share it with the store, which keeps
    /// the connections it used between its own statements (see [`SqlStore::new`]; a store
    /// from a `connect` constructor may keep all of them but one while it is busy) and hands each
    /// back after a second unused.
    pub fn pool(&self) -> &Pool<D::Db> {
        self.inner.conns.pool()
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        self.inner
            .table
            .as_deref()
            .unwrap_or_else(|| D::default_table_name(&self.inner.layout))
    }

    /// The table name if one was set (`None`: the layout's default).
    pub(crate) fn table_override(&self) -> Option<String> {
        self.inner.table.clone()
    }

    pub(crate) fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    pub(crate) fn layout_ref(&self) -> &D::Layout {
        &self.inner.layout
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The statement [`SqlStore::delete_expired`] runs, with its one parameter the current
    /// time as the dialect stores it (for `EXPLAIN`).
    pub fn delete_expired_sql(&self) -> &str {
        &self.inner.sql.delete_expired.sql
    }

    /// The one statement [`SessionStore::owned`] runs, with its parameters the owner (text)
    /// and the current time as the dialect stores it, in the order of their placeholders
    /// (for `EXPLAIN`); `None` in a layout without an owner column.
    pub fn owned_sql(&self) -> Option<&str> {
        self.inner.sql.owned.as_ref().map(|s| s.sql.as_str())
    }

    /// Creates the table (Postgres: and its schema, if set) and its indexes when missing,
    /// and brings a table of an earlier release up to date (adds the `owner` column and
    /// its index, keeping every row), in one transaction where the dialect's DDL is
    /// transactional. Safe to call on every start, also from several processes at once
    /// (Postgres serializes it with an advisory lock); a table that is already up to date
    /// is only read, never altered.
    pub async fn migrate(&self) -> Result<()> {
        let (_write, mut conn) = self.inner.writing().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(err::<D>)?;
        let announcing = match (&self.inner.near, &self.inner.sql.tagged) {
            (Some(_), Some(tagged)) => tagged.migrate.as_slice(),
            _ => &[],
        };
        for step in self.inner.sql.migrate.iter().chain(announcing) {
            run_step::<D>(&mut tx, step).await.map_err(err::<D>)?;
        }
        tx.commit().await.map_err(err::<D>)?;
        conn.release();
        Ok(())
    }

    /// Deletes every expired row (expiry at or before now); returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }

    /// Spawns a tokio task that runs [`SqlStore::delete_expired`] now and then every
    /// `period`, until the store (every clone of it) is dropped or the returned handle's
    /// [`stop`](CleanupTask::stop) is called. Failed rounds are logged and retried next
    /// period. Must be called within a tokio runtime.
    ///
    /// The task follows this store value and its clones: call it after the `with_*`
    /// configuration methods, which return a new store.
    pub fn spawn_cleanup(&self, period: Duration) -> CleanupTask {
        spawn_cleanup(
            D::NAME,
            Arc::downgrade(&self.inner),
            period,
            |inner: Arc<Inner<D>>| async move { inner.delete_expired().await },
        )
    }

    fn now(&self) -> D::Time {
        D::time_to_db(self.inner.clock.now())
    }

    /// The payload column's bytes for `record`: the payload envelope, or express-session's
    /// JSON in a layout shared with Node.
    fn payload(&self, record: &Record) -> Result<Vec<u8>> {
        match D::express(&self.inner.layout) {
            Some(express) => express.encode(record),
            None => Ok(record.encode_payload()),
        }
    }

    fn check_storable(id: &SessionId) -> Result<()> {
        if D::storable(id.as_str()) {
            Ok(())
        } else {
            Err(Error::backend(D::NAME, Unstorable("session id")))
        }
    }

    /// Every write in a layout with an owner column rejects an owner the dialect cannot
    /// store, rather than storing it changed or failing inside the driver.
    fn check_owner(&self, record: &Record) -> Result<()> {
        match &record.owner {
            Some(owner) if self.inner.sql.owned.is_some() && !D::storable(owner) => {
                Err(Error::backend(D::NAME, Unstorable("owner")))
            }
            _ => Ok(()),
        }
    }

    /// The values of a write of `record` under `id`.
    fn write_values<'q>(
        &self,
        id: &'q SessionId,
        record: &'q Record,
        data: &'q [u8],
    ) -> Values<'q, D::Time> {
        Values {
            id: id.as_str(),
            data,
            expires: Some(D::time_to_db(record.expires)),
            version: version_to_db(record.version),
            expected: 0,
            now: Some(self.now()),
            owner: record.owner.as_deref(),
        }
    }

    /// A near-cached read: from the cache, or one `SELECT` that also reads the row's tag.
    async fn get_cached(&self, near: &Near, id: &SessionId) -> Result<Option<Record>> {
        let now = self.inner.clock.now();
        if let Some(record) = near.cache.get(id.as_str(), now) {
            return Ok(Some(record));
        }
        let values = Values {
            now: Some(D::time_to_db(now)),
            ..Values::id(id.as_str())
        };
        self.fetch_cached(near, &self.tagged()?.get, values, false)
            .await
    }

    /// Runs `statement`, which selects or returns one row and its tag, in a flight of the
    /// near-cache (`local_change`: the statement writes); the row, cached.
    async fn fetch_cached(
        &self,
        near: &Near,
        statement: &Statement,
        values: Values<'_, D::Time>,
        local_change: bool,
    ) -> Result<Option<Record>> {
        let flight = near.cache.begin(values.id, local_change);
        let mut conn = self.inner.conns.acquire().await.map_err(err::<D>)?;
        let row = D::Db::fetch_tagged(&mut conn, statement, values)
            .await
            .map_err(err::<D>)?;
        conn.release();
        match row {
            Some((row, tag)) => {
                if local_change {
                    near.announce(values.id, Some(tag as u64));
                }
                let record = self.decode(row)?;
                near.cache
                    .end_tagged(flight, Some((&record, Some(tag as u64))));
                Ok(Some(record))
            }
            None => {
                near.cache.end(flight, None);
                Ok(None)
            }
        }
    }

    /// A near-cached write of `record`: `statement` returns the tag of the row it wrote
    /// (none: nothing written), and the cache keeps `record` as that row version.
    async fn write_cached(
        &self,
        near: &Near,
        statement: &Statement,
        values: Values<'_, D::Time>,
        record: &Record,
    ) -> Result<bool> {
        let flight = near.cache.begin(values.id, true);
        let mut conn = self.inner.conns.acquire().await.map_err(err::<D>)?;
        let tag = D::Db::fetch_tag(&mut conn, statement, values)
            .await
            .map_err(err::<D>)?;
        conn.release();
        match tag {
            Some(tag) => {
                near.announce(values.id, Some(tag as u64));
                // As a read would return it: the column keeps microseconds.
                let expires = record.expires;
                let stored = Record {
                    expires: expires
                        .replace_nanosecond(expires.nanosecond() / 1000 * 1000)
                        .unwrap_or(expires),
                    ..record.clone()
                };
                near.cache
                    .end_tagged(flight, Some((&stored, Some(tag as u64))));
                Ok(true)
            }
            None => {
                near.cache.end(flight, None);
                Ok(false)
            }
        }
    }

    /// A near-cached `touch`: the statement returns the row it changed, which is cached.
    async fn touch_cached(&self, near: &Near, values: Values<'_, D::Time>) -> Result<bool> {
        let touched = self
            .fetch_cached(near, &self.tagged()?.touch, values, true)
            .await?;
        Ok(touched.is_some())
    }

    fn decode(&self, row: RecordRow<D::Time>) -> Result<Record> {
        let (data, expires, version) = row;
        let expires = D::time_from_db(expires)
            .ok_or_else(|| Error::corrupt(D::NAME, "stored expiry is out of range"))?;
        let version = version_from_db(version);
        match D::express(&self.inner.layout) {
            Some(express) => express.decode(&data, expires, version),
            None => Record::decode_payload(&data, expires, version),
        }
        .map_err(|e| Error::corrupt(D::NAME, e))
    }
}

impl<D: Dialect> Inner<D> {
    async fn write_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match &self.writes {
            Some(writes) => Some(writes.lock().await),
            None => None,
        }
    }

    /// This process's write queue where the dialect has one, then a connection for the
    /// write (where the queue exists, the one set aside for its holder).
    async fn writing(&self) -> Result<(Option<MutexGuard<'_, ()>>, Conn<'_, D::Db>)> {
        let queue = self.write_lock().await;
        let conn = self
            .conns
            .acquire_for(queue.is_some())
            .await
            .map_err(err::<D>)?;
        Ok((queue, conn))
    }

    /// Runs the write `statement` (in the write queue, see [`Inner::writing`]); rows
    /// changed.
    async fn execute(&self, statement: &Statement, values: Values<'_, D::Time>) -> Result<u64> {
        // An explicit acquire keeps the pool's acquire future out of the statement's boxed
        // future (measured: fewer instructions per statement than executing on `&Pool`).
        let (_write, mut conn) = self.writing().await?;
        let done = D::Db::execute(&mut conn, statement, values)
            .await
            .map_err(err::<D>)?;
        conn.release();
        Ok(D::rows_affected(&done))
    }

    async fn delete_expired(&self) -> Result<u64> {
        let values = Values {
            now: Some(D::time_to_db(self.clock.now())),
            ..Values::none()
        };
        self.execute(&self.sql.delete_expired, values).await
    }
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlStore<D> {
    fn name(&self) -> &'static str {
        D::NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
            .with_compare_and_set(self.inner.sql.cas.is_some())
            .with_owners(self.inner.sql.owned.is_some())
    }

    /// connect-pg-simple's layout: Node finds sessions by the cookie's id.
    fn needs_raw_ids(&self) -> bool {
        D::express(&self.inner.layout).is_some()
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        if !D::storable(id.as_str()) {
            return Ok(None);
        }
        if let Some(near) = self.near() {
            return self.get_cached(near, id).await;
        }
        let values = Values {
            now: Some(self.now()),
            ..Values::id(id.as_str())
        };
        let mut conn = self.inner.conns.acquire().await.map_err(err::<D>)?;
        let row = D::Db::fetch_record(&mut conn, &self.inner.sql.get, values)
            .await
            .map_err(err::<D>)?;
        conn.release();
        row.map(|row| self.decode(row)).transpose()
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        Self::check_storable(id)?;
        self.check_owner(record)?;
        let data = self.payload(record)?;
        let values = self.write_values(id, record, &data);
        if let Some(near) = self.near() {
            self.write_cached(near, &self.tagged()?.set, values, record)
                .await?;
            return Ok(());
        }
        self.inner.execute(&self.inner.sql.set, values).await?;
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        if !D::storable(id.as_str()) {
            return Ok(());
        }
        let Some(near) = self.near() else {
            self.inner
                .execute(&self.inner.sql.destroy, Values::id(id.as_str()))
                .await?;
            return Ok(());
        };
        let flight = near.cache.begin(id.as_str(), true);
        self.inner
            .execute(&self.tagged()?.destroy, Values::id(id.as_str()))
            .await?;
        near.announce(id.as_str(), None);
        near.cache.end(flight, None);
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        if !D::storable(id.as_str()) {
            return Ok(false);
        }
        let values = Values {
            expires: Some(D::time_to_db(expires)),
            now: Some(self.now()),
            ..Values::id(id.as_str())
        };
        if let Some(near) = self.near() {
            return self.touch_cached(near, values).await;
        }
        // MySQL connects with CLIENT_FOUND_ROWS: a matched row counts even when unchanged.
        Ok(self.inner.execute(&self.inner.sql.touch, values).await? > 0)
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        Self::check_storable(id)?;
        self.check_owner(record)?;
        let sql = &self.inner.sql;
        let data = self.payload(record)?;
        let values = self.write_values(id, record, &data);
        if let Some(near) = self.near() {
            return self
                .write_cached(near, &self.tagged()?.create, values, record)
                .await;
        }
        let Some(reclaim) = &sql.reclaim else {
            return Ok(self.inner.execute(&sql.create, values).await? > 0);
        };
        // A plain INSERT: one statement when the id is free, as it nearly always is.
        let (_write, mut conn) = self.inner.writing().await?;
        match D::Db::execute(&mut conn, &sql.create, values).await {
            Ok(_) => {
                conn.release();
                return Ok(true);
            }
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(err::<D>(e)),
        }
        // Taken: an expired row must not block the id. Remove it (only if still expired)
        // and try once more; a duplicate key now means a live row. (The connection goes
        // back to the pool, which tests it after the error.)
        D::Db::execute(&mut conn, reclaim, values)
            .await
            .map_err(err::<D>)?;
        match D::Db::execute(&mut conn, &sql.create, values).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(err::<D>(e)),
        }
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.check_owner(record)?;
        if !D::storable(id.as_str()) {
            return Ok(false);
        }
        let data = self.payload(record)?;
        let values = self.write_values(id, record, &data);
        if let Some(near) = self.near() {
            return self
                .write_cached(near, &self.tagged()?.update, values, record)
                .await;
        }
        Ok(self.inner.execute(&self.inner.sql.update, values).await? > 0)
    }

    /// One `SELECT` through the owner index. The owner is checked once more against each
    /// row's payload; a row that cannot be decoded (which `get` reports as
    /// [`Error::Corrupt`], and the manager then treats as no session) is left out with a
    /// warning, so one damaged row does not block listing or revoking the others.
    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let Some(statement) = &self.inner.sql.owned else {
            return Err(Error::Unsupported {
                store: D::NAME,
                operation: "owned",
            });
        };
        if !D::storable(owner) {
            return Ok(Vec::new());
        }
        let values = Values {
            now: Some(self.now()),
            owner: Some(owner),
            ..Values::none()
        };
        let mut conn = self.inner.conns.acquire().await.map_err(err::<D>)?;
        let rows = D::Db::fetch_records(&mut conn, statement, values)
            .await
            .map_err(err::<D>)?;
        conn.release();
        let mut owned = Vec::with_capacity(rows.len());
        for (id, row) in rows {
            let decoded = String::from_utf8(id)
                .map_err(|_| Error::corrupt(D::NAME, "stored session id is not UTF-8"))
                .and_then(|id| Ok((id, self.decode(row)?)));
            match decoded {
                Ok((id, record)) if record.owner.as_deref() == Some(owner) => {
                    owned.push((SessionId::new(id), record));
                }
                // The column and the payload are written by one statement; they differ only
                // if something else rewrote one of them.
                Ok(_) => tracing::warn!(
                    store = D::NAME,
                    "a session's owner column disagrees with its payload; not listed"
                ),
                Err(error) => tracing::warn!(
                    store = D::NAME,
                    error = &error as &(dyn std::error::Error + 'static),
                    "an owner's session could not be decoded; not listed"
                ),
            }
        }
        Ok(owned)
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let Some(cas) = &self.inner.sql.cas else {
            return Err(Error::Unsupported {
                store: D::NAME,
                operation: "compare_and_set",
            });
        };
        self.check_owner(record)?;
        if !D::storable(id.as_str()) {
            return Ok(CasOutcome::Missing);
        }
        let data = self.payload(record)?;
        let values = Values {
            expected: version_to_db(expected),
            ..self.write_values(id, record, &data)
        };
        if let Some(near) = self.near() {
            if self
                .write_cached(near, &self.tagged()?.cas, values, record)
                .await?
            {
                return Ok(CasOutcome::Written);
            }
            let mut conn = self.inner.conns.acquire().await.map_err(err::<D>)?;
            let outcome = self.conflict_or_missing(&mut conn, values).await?;
            conn.release();
            return Ok(outcome);
        }
        let (_write, mut conn) = self.inner.writing().await?;
        let done = D::Db::execute(&mut conn, cas, values)
            .await
            .map_err(err::<D>)?;
        let outcome = if D::rows_affected(&done) > 0 {
            CasOutcome::Written
        } else {
            self.conflict_or_missing(&mut conn, values).await?
        };
        conn.release();
        Ok(outcome)
    }
}

impl<D: Dialect> SqlStore<D> {
    /// After a compare-and-set that wrote nothing: whether a live row holds another
    /// version, or none does.
    async fn conflict_or_missing(
        &self,
        conn: &mut <D::Db as sqlx::Database>::Connection,
        values: Values<'_, D::Time>,
    ) -> Result<CasOutcome> {
        let live = D::Db::fetch_exists(conn, &self.inner.sql.exists, values)
            .await
            .map_err(err::<D>)?;
        Ok(if live {
            CasOutcome::Conflict
        } else {
            CasOutcome::Missing
        })
    }
}

/// Runs one step of `migrate` on `conn`, unless its guard finds it done. A step that fails
/// while its guard now finds it done (another process made the same change in between,
/// where DDL is not transactional) has succeeded.
async fn run_step<D: Dialect>(
    conn: &mut <D::Db as sqlx::Database>::Connection,
    step: &Step,
) -> std::result::Result<(), sqlx::Error> {
    let Some(done) = &step.unless else {
        D::Db::execute(conn, &step.run, Values::none()).await?;
        return Ok(());
    };
    if D::Db::fetch_exists(conn, done, Values::none()).await? {
        return Ok(());
    }
    match D::Db::execute(conn, &step.run, Values::none()).await {
        Ok(_) => Ok(()),
        Err(e) => match D::Db::fetch_exists(conn, done, Values::none()).await {
            Ok(true) => Ok(()),
            _ => Err(e),
        },
    }
}

fn is_duplicate_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
