//! Checks shared by the dialect test files. Every test uses its own random table name.
#![allow(dead_code)]

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use session_store::testing::{new_id, now_ms, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{CasOutcome, Error, ManualClock, Record, SessionId, SessionStore};
use session_store_sqlx::sqlx;

/// A fresh table name: `sess_` and 21 random lower-case characters.
pub fn random_table() -> String {
    let id = new_id();
    let suffix: String = id
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("sess_{suffix}")
}

/// `var` from the environment, else `default`.
pub fn env_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids that would break a statement built by splicing: quotes, `;`, `--`, comments,
/// backslashes, and ids differing only in case or a trailing space (which must be distinct
/// rows).
pub fn hostile_ids() -> Vec<SessionId> {
    [
        "it's",
        "\"quoted\"",
        "`tick`",
        "a'; DROP TABLE sessions; --",
        "x' OR '1'='1",
        "-- comment",
        "/* c */",
        "back\\slash",
        "semi;colon",
        "CaseSensitive",
        "casesensitive",
        "trailing",
        "trailing ",
        "ключ",
    ]
    .into_iter()
    .map(SessionId::new)
    .collect()
}

/// Every operation with every hostile id works and touches only its own row.
pub async fn hostile_ids_are_bound(store: &dyn SessionStore) {
    let ids = hostile_ids();
    let later = session_store::testing::now_ms() + Duration::from_secs(600);
    for (i, id) in ids.iter().enumerate() {
        let mut record = sample_record(later);
        record.data.insert("n".into(), vec![i as u8]);
        assert!(store.create(id, &record).await.unwrap(), "create #{i}");
        assert!(
            !store.create(id, &record).await.unwrap(),
            "second create #{i}"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let got = store.get(id).await.unwrap().expect("hostile id stored");
        assert_eq!(
            got.data["n"],
            vec![i as u8],
            "rows of distinct ids mixed up (#{i})"
        );
        assert!(
            store
                .touch(id, later + Duration::from_secs(1))
                .await
                .unwrap()
        );
        let mut next = got.clone();
        next.version = 1;
        assert!(store.update(id, &next).await.unwrap());
        next.version = 2;
        assert_eq!(
            store.compare_and_set(id, &next, 1).await.unwrap(),
            CasOutcome::Written
        );
        store.set(id, &next).await.unwrap();
    }
    for (i, id) in ids.iter().enumerate() {
        store.destroy(id).await.unwrap();
        assert!(store.get(id).await.unwrap().is_none(), "destroy #{i}");
        for other in &ids[i + 1..] {
            assert!(
                store.get(other).await.unwrap().is_some(),
                "destroying #{i} removed another row"
            );
        }
    }
}

/// An id holding NUL: either stored and found exactly, or a clear error; never a panic and
/// never a match with the id cut at the NUL.
pub async fn nul_id(store: &dyn SessionStore, must_store: bool) {
    let nul = SessionId::new("nul\0id");
    let cut = SessionId::new("nul");
    let record = sample_record(session_store::testing::now_ms() + Duration::from_secs(600));
    store.set(&cut, &record).await.unwrap();
    match store.set(&nul, &record).await {
        Ok(()) => {
            let got = store.get(&nul).await.unwrap();
            assert!(got.is_some(), "NUL id stored but not found");
            store.destroy(&nul).await.unwrap();
            assert!(store.get(&nul).await.unwrap().is_none());
        }
        Err(e) => {
            assert!(!must_store, "NUL id must be storable here: {e}");
            assert!(matches!(e, Error::Backend { .. }), "{e:?}");
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            assert!(
                source.is_some_and(|s| s.contains("NUL")),
                "NUL error should say why"
            );
            assert!(store.get(&nul).await.unwrap().is_none());
            assert!(!store.create(&nul, &record).await.is_ok_and(|b| b));
            assert!(!store.touch(&nul, record.expires).await.unwrap());
            assert!(!store.update(&nul, &record).await.unwrap());
            store.destroy(&nul).await.unwrap();
        }
    }
    assert!(
        store.get(&cut).await.unwrap().is_some(),
        "the NUL id reached the row of its prefix"
    );
    store.destroy(&cut).await.unwrap();
}

/// `delete_expired` removes exactly the rows whose expiry is at or before the store's clock.
/// `make` builds the store on `clock`; `delete` runs its `delete_expired`.
pub async fn delete_expired_is_exact<S, D, Fut>(store: &S, clock: &ManualClock, delete: D)
where
    S: SessionStore,
    D: Fn() -> Fut,
    Fut: Future<Output = session_store::Result<u64>>,
{
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    clock.set(now);
    let ms = Duration::from_millis(1);
    let expired = [
        now - Duration::from_secs(86_400),
        now - Duration::from_secs(10),
        now - ms,
        now,
    ];
    let live = [
        now + ms,
        now + Duration::from_secs(10),
        now + Duration::from_secs(86_400),
    ];
    let mut gone = Vec::new();
    for expires in expired {
        let id = new_id();
        store.set(&id, &sample_record(expires)).await.unwrap();
        gone.push(id);
    }
    let mut kept = Vec::new();
    for expires in live {
        let id = new_id();
        store.set(&id, &sample_record(expires)).await.unwrap();
        kept.push(id);
    }
    assert_eq!(
        delete().await.unwrap(),
        expired.len() as u64,
        "rows deleted"
    );
    assert_eq!(delete().await.unwrap(), 0, "second round deleted more");
    // Look from before every expiry: deleted rows are gone, the others are all there.
    clock.set(now - Duration::from_secs(2 * 86_400));
    for id in &gone {
        assert!(store.get(id).await.unwrap().is_none(), "expired row kept");
    }
    for id in &kept {
        assert!(store.get(id).await.unwrap().is_some(), "live row deleted");
        store.destroy(id).await.unwrap();
    }
}

/// A manual clock shared with a store.
pub fn manual_clock() -> (ManualClock, Arc<dyn session_store::Clock>) {
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    (clock.clone(), Arc::new(clock))
}

/// Runs `sql` (a test's own set-up or clean-up) on `pool`.
pub async fn execute<DB>(pool: &sqlx::Pool<DB>, sql: &str)
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// The first column of the one row `sql` selects, as an `i64` (e.g. `count(*)`).
pub async fn scalar<DB>(pool: &sqlx::Pool<DB>, sql: &str) -> i64
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row as _;
    sqlx::query(sql).fetch_one(pool).await.unwrap().get(0)
}

/// A stored record whose payload `update` (a statement binding the id as its one
/// parameter) overwrites with garbage loads as `Error::Corrupt` of `store`, not as a panic
/// or a fresh record.
pub async fn garbage_payload_is_corrupt<DB>(
    store: &dyn SessionStore,
    pool: &sqlx::Pool<DB>,
    update: &str,
) where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let id = new_id();
    let later = session_store::testing::now_ms() + Duration::from_secs(60);
    store.set(&id, &sample_record(later)).await.unwrap();
    sqlx::query(update)
        .bind(id.as_str())
        .execute(pool)
        .await
        .unwrap();
    let err = store.get(&id).await.unwrap_err();
    let name = store.name();
    assert!(
        matches!(err, Error::Corrupt { store, .. } if store == name),
        "{err:?}"
    );
}

/// Another store on `store`'s pool and table, which does not keep `store` (and so its
/// cleanup task) alive.
pub fn same_table<D: session_store_sqlx::Dialect>(
    store: &session_store_sqlx::SqlStore<D>,
) -> session_store_sqlx::SqlStore<D> {
    session_store_sqlx::SqlStore::new(store.pool().clone())
        .with_table_name(store.table_name())
        .unwrap()
}

/// Stores `n` records that expired a second ago.
pub async fn expired_records(store: &dyn SessionStore, n: usize) {
    let past = session_store::testing::now_ms() - Duration::from_secs(1);
    for _ in 0..n {
        store.set(&new_id(), &sample_record(past)).await.unwrap();
    }
}

/// Waits until the cleanup `task` has ended (at most 10 s).
pub async fn task_ends(task: &session_store_sqlx::CleanupTask) {
    eventually(
        Duration::from_secs(10),
        "the cleanup task ended",
        || async { task.is_finished() },
    )
    .await;
}

/// `err` is `Error::Unavailable` whose cause says what happened, and where:
/// "connection refused at `endpoint`".
pub fn assert_refused_at(err: &Error, endpoint: &str) {
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let cause = std::error::Error::source(err).map(ToString::to_string);
    let want = format!("connection refused at {endpoint}");
    assert_eq!(cause.as_deref(), Some(want.as_str()), "{err:?}");
}

/// How many sessions of other owners the cost tests store around the listed owner.
pub const OTHER_OWNERS_SESSIONS: usize = 10_000;

/// Counts the statements sqlx runs whose text contains `needle` (a test's own table
/// name), on any thread: sqlx reports each statement as a `sqlx::query` event carrying its
/// text, and a process-wide subscriber ([`SqlxEvents`]) hands each to every live counter.
pub struct StatementCounter {
    needle: String,
    seen: AtomicUsize,
}

/// The live counters of this test process.
static COUNTERS: Mutex<Vec<Weak<StatementCounter>>> = Mutex::new(Vec::new());

impl StatementCounter {
    /// Installs the subscriber (the process's global default), if not yet done. Call it a
    /// while before counting: see [`StatementCounter::install`].
    ///
    /// A thread-scoped subscriber would miss statements that sqlx runs on its own threads
    /// (SQLite's worker), and `tracing` caches each callsite's interest process-wide: a
    /// statement's callsite first reached by another thread around the moment a
    /// subscriber is set can be cached as uninteresting. Hence a global subscriber, and
    /// the caches rebuilt when counting starts, long after it was set.
    pub fn prepare() {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            tracing::subscriber::set_global_default(SqlxEvents)
                .expect("no other global tracing subscriber in the store tests");
        });
    }

    /// A counter of the statements that name `needle` from now on, until it is dropped.
    /// [`StatementCounter::prepare`] must have run earlier in the test (e.g. before it
    /// fills its table).
    pub fn install(needle: &str) -> Arc<Self> {
        Self::prepare();
        tracing::callsite::rebuild_interest_cache();
        let counter = Arc::new(Self {
            needle: needle.to_owned(),
            seen: AtomicUsize::new(0),
        });
        let mut counters = COUNTERS.lock().unwrap();
        counters.retain(|c| c.strong_count() > 0);
        counters.push(Arc::downgrade(&counter));
        counter
    }

    /// Statements counted so far.
    pub fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Every field of an event, as text.
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, _field: &tracing::field::Field, value: &str) {
        self.0.push_str(value);
        self.0.push('\n');
    }

    fn record_debug(&mut self, _field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!("{value:?}\n"));
    }
}

/// The global subscriber behind [`StatementCounter`]: sqlx's statement events only.
struct SqlxEvents;

impl tracing::Subscriber for SqlxEvents {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "sqlx::query"
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let counters: Vec<Arc<StatementCounter>> = COUNTERS
            .lock()
            .unwrap()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        if counters.is_empty() {
            return;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        for counter in counters {
            if fields.0.contains(&counter.needle) {
                counter.seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

/// A record bound to `owner`, live for ten minutes.
pub fn owned_record(owner: Option<&str>) -> Record {
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.owner = owner.map(str::to_owned);
    record.label = Some("test agent".into());
    record
}

/// An owner name made of `[a-z0-9_-]` only (safe inside a SQL literal), unique to the
/// test.
pub fn test_owner() -> String {
    format!("user-{}", new_id().as_str().to_ascii_lowercase())
}

/// `store` (table `table`) already holds [`OTHER_OWNERS_SESSIONS`] sessions of other
/// owners, written after [`StatementCounter::prepare`]. Stores three live sessions of `owner`, one expired one, and sessions of owners
/// that differ from it only in case, a trailing space or a missing last character; then
/// `owned(owner)` must list exactly the three live ones, in exactly one statement on
/// `table`. Returns the three ids.
pub async fn owned_is_exact_and_one_statement(
    store: &dyn SessionStore,
    table: &str,
    owner: &str,
) -> Vec<SessionId> {
    let mut mine = Vec::new();
    for _ in 0..3 {
        let id = new_id();
        store.set(&id, &owned_record(Some(owner))).await.unwrap();
        mine.push(id);
    }
    let mut expired = owned_record(Some(owner));
    expired.expires = now_ms() - Duration::from_secs(1);
    store.set(&new_id(), &expired).await.unwrap();
    let near = [
        owner.to_uppercase(),
        format!("{owner} "),
        owner[..owner.len() - 1].to_owned(),
    ];
    for other in &near {
        store
            .set(&new_id(), &owned_record(Some(other)))
            .await
            .unwrap();
    }
    store.set(&new_id(), &owned_record(None)).await.unwrap();

    let counter = StatementCounter::install(table);
    let owned = store.owned(owner).await.unwrap();
    let statements = counter.count();
    drop(counter);
    assert_eq!(
        statements, 1,
        "owned() ran {statements} statements on its table"
    );
    let mut got: Vec<&str> = owned.iter().map(|(id, _)| id.as_str()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = mine.iter().map(SessionId::as_str).collect();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "owned() must list exactly the owner's live sessions"
    );
    for (_, record) in &owned {
        assert_eq!(record.owner.as_deref(), Some(owner));
        assert_eq!(record.label.as_deref(), Some("test agent"));
        assert_eq!(record.data, owned_record(None).data);
    }
    for other in &near {
        let listed = store.owned(other).await.unwrap();
        assert_eq!(listed.len(), 1, "owner {other:?} is a different owner");
        assert_eq!(listed[0].1.owner.as_deref(), Some(other.as_str()));
    }
    mine
}

/// A stored session of a table of the previous release (no `owner` column), which the
/// migrated store must still load, and which then gets an owner; `store` is already
/// migrated. Checks that the old row is listed under no owner, that giving it one through
/// `compare_and_set` and `update` indexes it, and that a new session's owner is indexed
/// too.
pub async fn old_session_gets_an_owner(store: &dyn SessionStore, old: &SessionId, record: &Record) {
    assert!(store.capabilities().owners, "a native layout claims owners");
    let loaded = store
        .get(old)
        .await
        .unwrap()
        .expect("the session of the previous release is still there");
    assert_eq!(&loaded, record, "the old session loads unchanged");
    assert_eq!(loaded.owner, None);
    let owner = test_owner();
    assert!(store.owned(&owner).await.unwrap().is_empty());

    let mut bound = loaded.clone();
    bound.owner = Some(owner.clone());
    bound.version = loaded.version + 1;
    assert_eq!(
        store
            .compare_and_set(old, &bound, loaded.version)
            .await
            .unwrap(),
        CasOutcome::Written
    );
    let fresh = new_id();
    assert!(
        store
            .create(&fresh, &owned_record(Some(&owner)))
            .await
            .unwrap()
    );
    let mut listed: Vec<String> = store
        .owned(&owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.as_str().to_owned())
        .collect();
    listed.sort_unstable();
    let mut want = vec![old.as_str().to_owned(), fresh.as_str().to_owned()];
    want.sort_unstable();
    assert_eq!(listed, want);

    // `update` moves the old session to another owner.
    let other = test_owner();
    bound.owner = Some(other.clone());
    bound.version += 1;
    assert!(store.update(old, &bound).await.unwrap());
    assert_eq!(store.owned(&owner).await.unwrap().len(), 1);
    let moved = store.owned(&other).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0.as_str(), old.as_str());
    assert_eq!(moved[0].1, bound);
}

/// An owner holding NUL: either stored and listed exactly (never as the owner cut at the
/// NUL), or rejected by every write with a clear error and owning nothing.
pub async fn nul_owner(store: &dyn SessionStore, must_store: bool) {
    let nul = "nul\0owner";
    let cut = "nul";
    let (id, plain) = (new_id(), new_id());
    store.set(&plain, &owned_record(Some(cut))).await.unwrap();
    let record = owned_record(Some(nul));
    match store.set(&id, &record).await {
        Ok(()) => {
            let listed = store.owned(nul).await.unwrap();
            assert_eq!(listed.len(), 1, "NUL owner stored but not listed");
            assert_eq!(listed[0].0.as_str(), id.as_str());
            store.destroy(&id).await.unwrap();
        }
        Err(e) => {
            assert!(!must_store, "a NUL owner must be storable here: {e}");
            assert!(matches!(e, Error::Backend { .. }), "{e:?}");
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            assert!(
                source.is_some_and(|s| s.contains("owner") && s.contains("NUL")),
                "the error should say why"
            );
            assert!(matches!(
                store.create(&id, &record).await,
                Err(Error::Backend { .. })
            ));
            assert!(matches!(
                store.update(&plain, &record).await,
                Err(Error::Backend { .. })
            ));
            assert!(matches!(
                store.compare_and_set(&plain, &record, 0).await,
                Err(Error::Backend { .. })
            ));
            assert!(store.owned(nul).await.unwrap().is_empty());
        }
    }
    let listed = store.owned(cut).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the NUL owner reached the owner cut at the NUL"
    );
    assert_eq!(listed[0].0.as_str(), plain.as_str());
    store.destroy(&plain).await.unwrap();
}
