//! Checks shared by the dialect test files. Every test uses its own random table name.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_store::testing::{new_id, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{CasOutcome, Error, ManualClock, SessionId, SessionStore};
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
