//! PostgreSQL: the native table and connect-pg-simple's.

use session_store::express::ExpressLayout;
use session_store::near_cache::NearCacheConfig;
use session_store::{CookieOptions, Result};
use time::OffsetDateTime;

use super::Arg::{Data, Expected, Expires, Id, Now, Owner, Version};
use super::{Statement, Statements, Step, Tagged, sealed};
use crate::SqlStore;
use crate::common::{DEFAULT_TABLE_NAME, validate_identifier};

/// connect-pg-simple's default table name, the default in [`PostgresLayout::ConnectPgSimple`].
pub const CONNECT_PG_SIMPLE_TABLE_NAME: &str = "session";

/// The PostgreSQL dialect (feature `postgres`): see [`PostgresStore`].
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

/// Sessions in a PostgreSQL table (feature `postgres`).
///
/// Layout, created by [`SqlStore::migrate`]:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "sessions" (
///     id      TEXT        PRIMARY KEY,
///     data    BYTEA       NOT NULL,      -- Record::encode_payload
///     expires TIMESTAMPTZ NOT NULL,
///     version BIGINT      NOT NULL DEFAULT 0,
///     owner   TEXT                       -- Record::owner, NULL without one
/// );
/// CREATE INDEX IF NOT EXISTS "sessions_expires_idx" ON "sessions" (expires);
/// CREATE INDEX IF NOT EXISTS "sessions_owner_idx" ON "sessions" (owner, expires)
///     WHERE owner IS NOT NULL;
/// ```
///
/// - Everything [`SqlStore`] promises; [`PostgresStore::with_schema_name`] puts the table
///   in a schema of its own, and [`PostgresStore::with_layout`] shares connect-pg-simple's
///   table with Node.
/// - The owner index is partial: rows without an owner have no entry in it, so they cost
///   nothing there. `owned` is `SELECT … WHERE owner = $1 AND expires > $2`, an index
///   range scan over that owner's live sessions.
/// - `migrate` on a table of an earlier release (without `owner`) adds the column (no
///   default, so PostgreSQL changes only the catalog, not the rows) and builds the owner
///   index, which holds no entries until sessions get owners. Column and index are looked
///   up first: a table that has them is never altered, and so never locked exclusively.
///   Building the index reads the whole table once while blocking its writes (not its
///   reads); for a large table, run `ALTER TABLE "sessions" ADD COLUMN owner TEXT` and
///   `CREATE INDEX CONCURRENTLY "sessions_owner_idx" ON "sessions" (owner, expires)
///   WHERE owner IS NOT NULL` by hand before upgrading, and `migrate` finds both.
/// - Postgres text cannot hold NUL: an id containing NUL is never found by reads, and
///   `set`/`create` reject it with [`Error::Backend`](session_store::Error::Backend); an
///   owner containing NUL is rejected by every write, and owns nothing.
///
/// ```no_run
/// # async fn demo() -> session_store::Result<()> {
/// use session_store_sqlx::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
///     .await?
///     .with_schema_name("auth")?
///     .with_table_name("sessions")?;
/// store.migrate().await?;
/// let cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let manager = session_store::SessionManager::new(store);
/// # let _ = (cleanup, manager);
/// # Ok(())
/// # }
/// ```
pub type PostgresStore = SqlStore<Postgres>;

/// What a [`PostgresStore`] keeps in its table. Select it with
/// [`PostgresStore::with_layout`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum PostgresLayout {
    /// This library's table (the default): `id`, `data BYTEA` (the payload envelope),
    /// `expires TIMESTAMPTZ`, `version BIGINT`, `owner TEXT` (indexed). Every codec, every
    /// capability. Default table `sessions`.
    #[default]
    Native,
    /// connect-pg-simple's table, shared with Node services running express-session:
    ///
    /// ```sql
    /// CREATE TABLE IF NOT EXISTS "session" (
    ///     sid    varchar      NOT NULL COLLATE "default" PRIMARY KEY,
    ///     sess   json         NOT NULL,   -- express-session's JSON (ExpressLayout)
    ///     expire timestamp(6) NOT NULL    -- UTC
    /// );
    /// CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" (expire);
    /// ```
    ///
    /// Default table `session` (connect-pg-simple's). `migrate` creates exactly that table
    /// (connect-pg-simple's `table.sql`, `IF NOT EXISTS`), so either side may create it.
    ///
    /// - Values must use [`Codec::Json`](session_store::Codec::Json); anything else fails
    ///   to save with [`Error::Serialization`](session_store::Error::Serialization). No data
    ///   key may be named `cookie`.
    /// - The `expire` column is authoritative: `cookie.expires` inside `sess` is written on
    ///   every save and ignored on read, so `touch` is `UPDATE … SET expire` only.
    /// - `expire` is a `timestamp` without time zone; this store reads and writes it as UTC.
    ///   connect-pg-simple writes `to_timestamp(…)`, which PostgreSQL converts with the
    ///   connection's `TimeZone`: keep the Node side's `TimeZone` at UTC (the server's
    ///   default `timezone`, or `options: "-c TimeZone=UTC"` for `pg`).
    /// - There is no version column: `get` returns version 0 and `compare_and_set` is
    ///   [`Error::Unsupported`](session_store::Error::Unsupported) (`create`, `update` and
    ///   native `touch` remain).
    /// - There is no owner column either (the table is connect-pg-simple's): `owned` is
    ///   [`Error::Unsupported`](session_store::Error::Unsupported), and an owner set on a
    ///   session is not stored.
    /// - `sid` holds the raw session id, because Node looks sessions up by the cookie's id:
    ///   the store answers `true` to `needs_raw_ids`, so the manager does not hash ids for
    ///   it, and a dump of the table holds usable ids (protect it like the cookie secret).
    ConnectPgSimple(ExpressLayout),
}

impl PostgresLayout {
    /// connect-pg-simple's layout, writing the `cookie` object of new sessions from `cookie`
    /// (pass the manager's cookie options).
    pub fn connect_pg_simple(cookie: CookieOptions) -> Self {
        Self::ConnectPgSimple(ExpressLayout::new(cookie))
    }

    /// The table name used when none is set: `sessions`, or connect-pg-simple's `session`.
    pub fn default_table_name(&self) -> &'static str {
        match self {
            Self::Native => DEFAULT_TABLE_NAME,
            Self::ConnectPgSimple(_) => CONNECT_PG_SIMPLE_TABLE_NAME,
        }
    }
}

impl sealed::Dialect for Postgres {
    type Db = sqlx::Postgres;
    type Time = OffsetDateTime;
    type Layout = PostgresLayout;
    const NAME: &'static str = "postgres";

    fn statements(schema: Option<&str>, table: &str, layout: &PostgresLayout) -> Statements {
        let t = match schema {
            Some(s) => format!("\"{s}\".\"{table}\""),
            None => format!("\"{table}\""),
        };
        let mut migrate = vec![Step::always(Statement::new(
            // Concurrent `CREATE … IF NOT EXISTS` can still collide in the catalog: a
            // transaction-scoped lock keyed by the table's name comes first. `t` holds
            // validated identifiers and double quotes only, so it is a safe literal.
            format!("SELECT pg_advisory_xact_lock(hashtext('{t}'))"),
            &[],
        ))];
        if let Some(s) = schema {
            migrate.push(Step::always(Statement::new(
                format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""),
                &[],
            )));
        }
        match layout {
            PostgresLayout::Native => native(t, table, migrate),
            PostgresLayout::ConnectPgSimple(_) => connect_pg_simple(t, table, migrate),
        }
    }

    fn default_table_name(layout: &PostgresLayout) -> &'static str {
        layout.default_table_name()
    }

    fn express(layout: &PostgresLayout) -> Option<&ExpressLayout> {
        match layout {
            PostgresLayout::Native => None,
            PostgresLayout::ConnectPgSimple(express) => Some(express),
        }
    }

    fn layout_name(layout: &PostgresLayout) -> Option<&'static str> {
        Some(match layout {
            PostgresLayout::Native => "native",
            PostgresLayout::ConnectPgSimple(_) => "connect-pg-simple",
        })
    }

    fn time_to_db(t: OffsetDateTime) -> OffsetDateTime {
        t
    }

    fn time_from_db(t: OffsetDateTime) -> Option<OffsetDateTime> {
        Some(t)
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
        // Server shutting down (57P01-57P03), too many connections (53300).
        matches!(
            db.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "53300")
        )
    }

    fn storable(id: &str) -> bool {
        !id.contains('\0')
    }

    fn listen(near: &std::sync::Arc<crate::near::Near>, pool: &sqlx::PgPool) {
        crate::near::start(near, pool);
    }
}

/// This library's table.
fn native(t: String, table: &str, mut migrate: Vec<Step>) -> Statements {
    migrate.push(Step::always(Statement::new(
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY, data BYTEA NOT NULL, \
             expires TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL DEFAULT 0, owner TEXT)"
        ),
        &[],
    )));
    migrate.push(Step::always(Statement::new(
        format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON {t} (expires)"),
        &[],
    )));
    // A table of an earlier release has no `owner`. `ADD COLUMN IF NOT EXISTS` would take
    // the table's exclusive lock on every start, so the catalog is asked first (`t` is a
    // safe literal, as above). Without a default, adding the column rewrites no row.
    migrate.push(Step::unless(
        Statement::new(
            format!(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{t}') \
                 AND attname = 'owner' AND NOT attisdropped"
            ),
            &[],
        ),
        Statement::new(format!("ALTER TABLE {t} ADD COLUMN owner TEXT"), &[]),
    ));
    // Partial: only rows with an owner have an entry. `owner = $1` implies
    // `owner IS NOT NULL`, so the planner uses it for `owned`.
    let owner_idx = format!("{table}_owner_idx");
    migrate.push(Step::unless(
        Statement::new(
            format!(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = to_regclass('{t}') AND c.relname = '{owner_idx}'"
            ),
            &[],
        ),
        Statement::new(
            format!(
                "CREATE INDEX IF NOT EXISTS \"{owner_idx}\" ON {t} (owner, expires) \
                 WHERE owner IS NOT NULL"
            ),
            &[],
        ),
    ));
    let write = &[Id, Data, Expires, Version, Owner, Now];
    let upsert = format!(
        "INSERT INTO {t} AS s (id, data, expires, version, owner) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires, \
         version = EXCLUDED.version, owner = EXCLUDED.owner"
    );
    let update = format!("UPDATE {t} SET data = $2, expires = $3, version = $4, owner = $5");
    Statements {
        migrate,
        get: Statement::new(
            format!("SELECT data, expires, version FROM {t} WHERE id = $1 AND expires > $2"),
            &[Id, Now],
        ),
        set: Statement::new(upsert.clone(), &[Id, Data, Expires, Version, Owner]),
        // Inserts, or replaces a row that has expired; a live row is left alone.
        create: Statement::new(format!("{upsert} WHERE s.expires <= $6"), write),
        reclaim: None,
        update: Statement::new(format!("{update} WHERE id = $1 AND expires > $6"), write),
        cas: Some(Statement::new(
            format!("{update} WHERE id = $1 AND version = $6 AND expires > $7"),
            &[Id, Data, Expires, Version, Owner, Expected, Now],
        )),
        exists: Statement::new(
            format!("SELECT 1 FROM {t} WHERE id = $1 AND expires > $2"),
            &[Id, Now],
        ),
        touch: Statement::new(
            format!("UPDATE {t} SET expires = $2 WHERE id = $1 AND expires > $3"),
            &[Id, Expires, Now],
        ),
        destroy: Statement::new(format!("DELETE FROM {t} WHERE id = $1"), &[Id]),
        delete_expired: Statement::new(format!("DELETE FROM {t} WHERE expires <= $1"), &[Now]),
        owned: Some(Statement::new(
            format!(
                "SELECT convert_to(id, 'UTF8'), data, expires, version FROM {t} \
                 WHERE owner = $1 AND expires > $2"
            ),
            &[Owner, Now],
        )),
        tagged: Some(tagged(&t, table)),
    }
}

/// The row version's tag: the 32-bit id of the transaction that wrote it.
const TAG: &str = "xmin::text::bigint";

/// The setting a near-cached store's write sets for its own transaction: the trigger then
/// announces nothing, and the store announces the write itself once it has committed.
const QUIET: &str = "session_store.announced_by_writer";

/// A one-row `FROM` item that sets [`QUIET`] for the statement's transaction (before any
/// row is written, so before the statement's `AFTER` triggers run).
const QUIET_FROM: &str =
    "(SELECT set_config('session_store.announced_by_writer', 'on', true)) AS quiet";

/// The near-cache's statements for the native table `t` (named `table`), and the trigger
/// that announces the other writers' changes of its rows on the channel: `<tag> <length>
/// <id>` for a row written, `- <length> <id>` for a row deleted, `* 0 ` (empty every cache)
/// for an id too long for a notification. In a trigger, `txid_current()` modulo 2^32 is the
/// `xmin` of the row the statement writes.
fn tagged(t: &str, table: &str) -> Tagged {
    // The writes set [`QUIET`] first: the store announces them after they commit, and the
    // trigger's `WHEN` skips them without queueing an event or calling the function.
    let upsert = format!(
        "INSERT INTO {t} AS s (id, data, expires, version, owner) \
         SELECT $1, $2, $3, $4, $5 FROM {QUIET_FROM} \
         ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires, \
         version = EXCLUDED.version, owner = EXCLUDED.owner"
    );
    let update = format!(
        "UPDATE {t} SET data = $2, expires = $3, version = $4, owner = $5 FROM {QUIET_FROM}"
    );
    let channel = channel_name(t);
    let function = format!("{}_announce", table.trim_matches('"'));
    // In the table's schema, if it has one (`t` is `"schema"."table"` or `"table"`).
    let qualified = match t.rsplit_once("\".\"") {
        Some((schema, _)) => format!("{schema}\".\"{function}\""),
        None => format!("\"{function}\""),
    };
    let trigger = format!("{table}_announce");
    let migrate = vec![
        Step::always(Statement::new(
            format!(
                "CREATE OR REPLACE FUNCTION {qualified}() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN \
                 IF current_setting('{QUIET}', true) = 'on' THEN RETURN NULL; END IF; \
                 IF octet_length(COALESCE(NEW.id, OLD.id)) > 7000 THEN \
                 PERFORM pg_notify('{channel}', '* 0 '); \
                 ELSIF TG_OP = 'DELETE' THEN \
                 PERFORM pg_notify('{channel}', '- ' || octet_length(OLD.id) || ' ' || OLD.id); \
                 ELSE \
                 PERFORM pg_notify('{channel}', (txid_current() % 4294967296)::text || ' ' \
                 || octet_length(NEW.id) || ' ' || NEW.id); \
                 END IF; \
                 RETURN NULL; \
                 END $$"
            ),
            &[],
        )),
        Step::unless(
            installed(t, &trigger),
            Statement::new(
                format!(
                    "CREATE TRIGGER \"{trigger}\" AFTER INSERT OR UPDATE OR DELETE ON {t} \
                     FOR EACH ROW \
                     WHEN (current_setting('{QUIET}', true) IS DISTINCT FROM 'on') \
                     EXECUTE FUNCTION {qualified}()"
                ),
                &[],
            ),
        ),
    ];
    Tagged {
        channel,
        migrate,
        installed: installed(t, &trigger),
        get: Statement::new(
            format!("SELECT data, expires, version, {TAG} FROM {t} WHERE id = $1 AND expires > $2"),
            &[Id, Now],
        ),
        set: Statement::new(
            format!("{upsert} RETURNING {TAG}"),
            &[Id, Data, Expires, Version, Owner],
        ),
        create: Statement::new(
            format!("{upsert} WHERE s.expires <= $6 RETURNING {TAG}"),
            &[Id, Data, Expires, Version, Owner, Now],
        ),
        update: Statement::new(
            format!("{update} WHERE id = $1 AND expires > $6 RETURNING {TAG}"),
            &[Id, Data, Expires, Version, Owner, Now],
        ),
        cas: Statement::new(
            format!("{update} WHERE id = $1 AND version = $6 AND expires > $7 RETURNING {TAG}"),
            &[Id, Data, Expires, Version, Owner, Expected, Now],
        ),
        touch: Statement::new(
            format!(
                "UPDATE {t} SET expires = $2 FROM {QUIET_FROM} WHERE id = $1 AND expires > $3 \
                 RETURNING data, expires, version, {TAG}"
            ),
            &[Id, Expires, Now],
        ),
        destroy: Statement::new(
            format!("DELETE FROM {t} USING {QUIET_FROM} WHERE id = $1"),
            &[Id],
        ),
    }
}

/// Selects a row when the trigger `trigger` is on `t` (a safe literal: validated
/// identifiers and double quotes only).
fn installed(t: &str, trigger: &str) -> Statement {
    Statement::new(
        format!(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('{t}') \
             AND tgname = '{trigger}' AND NOT tgisinternal"
        ),
        &[],
    )
}

/// The announcements' channel of table `t`: a fixed prefix and a hash of the qualified
/// name, as channel names are limited to 63 bytes.
fn channel_name(t: &str) -> String {
    // FNV-1a, 64 bits: stable across releases and platforms.
    let hash = t.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("session_store_{hash:016x}")
}

/// connect-pg-simple's table. The store binds and reads the same types as in the native
/// table, converted in SQL: `sess` as UTF-8 bytes of its JSON, `expire` as UTC.
///
/// The table is connect-pg-simple's own, so it gets no owner column: `owned` is unsupported.
fn connect_pg_simple(t: String, table: &str, mut migrate: Vec<Step>) -> Statements {
    migrate.push(Step::always(Statement::new(
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (sid varchar NOT NULL COLLATE \"default\" \
             PRIMARY KEY, sess json NOT NULL, expire timestamp(6) NOT NULL)"
        ),
        &[],
    )));
    migrate.push(Step::always(Statement::new(
        format!("CREATE INDEX IF NOT EXISTS \"IDX_{table}_expire\" ON {t} (expire)"),
        &[],
    )));
    let sess = "convert_from($2, 'UTF8')::json";
    let utc = |n: u8| format!("(${n} AT TIME ZONE 'UTC')");
    let (expires, now3, now4) = (utc(3), utc(3), utc(4));
    let upsert = format!(
        "INSERT INTO {t} AS s (sid, sess, expire) VALUES ($1, {sess}, {expires}) \
         ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire"
    );
    Statements {
        migrate,
        get: Statement::new(
            format!(
                "SELECT convert_to(sess::text, 'UTF8'), expire AT TIME ZONE 'UTC', 0::bigint \
                 FROM {t} WHERE sid = $1 AND expire > {}",
                utc(2)
            ),
            &[Id, Now],
        ),
        set: Statement::new(upsert.clone(), &[Id, Data, Expires]),
        create: Statement::new(
            format!("{upsert} WHERE s.expire <= {now4}"),
            &[Id, Data, Expires, Now],
        ),
        reclaim: None,
        update: Statement::new(
            format!(
                "UPDATE {t} SET sess = {sess}, expire = {expires} WHERE sid = $1 AND expire > {now4}"
            ),
            &[Id, Data, Expires, Now],
        ),
        cas: None,
        exists: Statement::new(
            format!("SELECT 1 FROM {t} WHERE sid = $1 AND expire > {}", utc(2)),
            &[Id, Now],
        ),
        touch: Statement::new(
            format!(
                "UPDATE {t} SET expire = {} WHERE sid = $1 AND expire > {now3}",
                utc(2)
            ),
            &[Id, Expires, Now],
        ),
        destroy: Statement::new(format!("DELETE FROM {t} WHERE sid = $1"), &[Id]),
        delete_expired: Statement::new(
            format!("DELETE FROM {t} WHERE expire <= {}", utc(1)),
            &[Now],
        ),
        owned: None,
        tagged: None,
    }
}

impl PostgresStore {
    /// Connects a new pool to `url` (sqlx's default options, except a 5 s acquire timeout
    /// and a ping before use only for connections idle for 5 s or more, not before every
    /// statement: one round trip per session operation instead of two), e.g.
    /// `postgres://user:pass@host:5432/db`. Fails with
    /// [`Error::Unavailable`](session_store::Error::Unavailable) when the server cannot be
    /// reached (naming the address and the reason, e.g. "connection refused at
    /// 127.0.0.1:5432") and [`Error::Backend`](session_store::Error::Backend) for a
    /// malformed URL.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::on_own_pool(
            crate::common::connect_network::<Postgres>(url, 5432).await?,
        ))
    }

    /// Selects what the table holds (default [`PostgresLayout::Native`]).
    ///
    /// [`PostgresLayout::ConnectPgSimple`] shares sessions with a Node app using
    /// express-session and connect-pg-simple on the same database: configure the manager
    /// with `Codec::Json`, the cookie name `connect.sid`, a
    /// [`SignedCodec`](session_store::SignedCodec) with the app's secret and
    /// [`IdGenerator::express_compatible`](session_store::IdGenerator), and the same cookie
    /// options as the layout. Compare-and-set is unavailable in that layout.
    ///
    /// ```no_run
    /// # async fn demo() -> session_store::Result<()> {
    /// use session_store::{Codec, CookieOptions, IdGenerator, SessionManager, SignedCodec};
    /// use session_store_sqlx::{PostgresLayout, PostgresStore};
    ///
    /// let cookie = CookieOptions::default();
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
    ///     .await?
    ///     .with_layout(PostgresLayout::connect_pg_simple(cookie.clone())); // table `session`
    /// store.migrate().await?;
    /// let manager = SessionManager::builder(store)
    ///     .cookie_name("connect.sid")
    ///     .cookie(cookie)
    ///     .codec(Codec::Json)
    ///     .cookie_codec(SignedCodec::new(["keyboard cat"])?)
    ///     .id_generator(IdGenerator::express_compatible())
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_layout(self, layout: PostgresLayout) -> Self {
        let table = self.table_override();
        self.rebuild(
            self.schema().map(str::to_owned),
            table,
            self.clock().clone(),
            layout,
        )
    }

    /// Turns on the near-cache: sessions this process read or wrote are kept in its memory
    /// (within `config`'s bounds) and served from there with no round trip, until the
    /// server announces that another client changed them. A commit of a cached session is
    /// then one conditional `UPDATE`, a touch one `UPDATE`.
    ///
    /// How it stays coherent: every change of a row is announced with `pg_notify`, naming
    /// the row and the transaction that wrote it. This store announces its own writes right
    /// after they commit, in batches on a connection of its own; [`SqlStore::migrate`] on a
    /// store with the near-cache on installs a trigger that announces every other writer's
    /// changes (PostgreSQL serializes the commits of notifying transactions, so the store
    /// keeps the trigger quiet for its own writes). The store listens (`LISTEN`) on a
    /// connection of its own, opened with the pool's options, and drops a cached copy when
    /// an announcement names its row and another version; every statement of the store also
    /// reads the version it saw, so the announcement of the store's own write keeps the copy
    /// it just cached. A read that an announcement overtook is not cached. The guarantee:
    /// once this process has received the announcement of a change, it never serves the
    /// older data; before (a loopback round trip after the commit, see RELIABILITY.md) it
    /// may, as it would had its read come a moment earlier. Compare-and-set still checks
    /// every commit on the server, so a commit from a stale copy is refused and merged,
    /// never lost. A process that dies between a commit and its announcement (under a
    /// millisecond) leaves other processes' copies of that session to age out
    /// ([`NearCacheConfig::max_age`]).
    ///
    /// When the listening connection is lost, or a check it sends itself every second has
    /// not come back within 2 s (a frozen server, a partition), the cache is emptied and
    /// bypassed until a new connection listens. Without the trigger (migrate not run), the
    /// cache stays off and a warning is logged.
    ///
    /// Native layout only: [`Error::Config`](session_store::Error::Config) in
    /// connect-pg-simple's (and a later [`PostgresStore::with_layout`] to it turns the cache
    /// off). The announcements carry the stored ids, which are digests of the cookie ids
    /// unless the manager is configured otherwise; any role that may `LISTEN` sees them.
    ///
    /// ```no_run
    /// # async fn demo() -> session_store::Result<()> {
    /// use session_store_sqlx::{NearCacheConfig, PostgresStore};
    ///
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
    ///     .await?
    ///     .with_near_cache(NearCacheConfig::new().max_entries(50_000))?;
    /// store.migrate().await?; // installs the announcing trigger
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_near_cache(self, config: NearCacheConfig) -> Result<Self> {
        if !self.near_cache_available() {
            return Err(session_store::Error::Config(
                "postgres near-cache: available in the native layout only".to_owned(),
            ));
        }
        Ok(self.with_near(Some(config)))
    }

    /// The layout.
    pub fn layout(&self) -> &PostgresLayout {
        self.layout_ref()
    }

    /// Puts the table in schema `name` (default: none, so the `search_path` decides);
    /// [`SqlStore::migrate`] creates the schema if needed. It must be a plain identifier;
    /// anything else is [`Error::Config`](session_store::Error::Config).
    pub fn with_schema_name(self, name: &str) -> Result<Self> {
        validate_identifier("schema name", name)?;
        let table = self.table_override();
        Ok(self.rebuild(
            Some(name.to_owned()),
            table,
            self.clock().clone(),
            self.layout().clone(),
        ))
    }

    /// The schema name, if one was set.
    pub fn schema_name(&self) -> Option<&str> {
        self.schema()
    }
}
