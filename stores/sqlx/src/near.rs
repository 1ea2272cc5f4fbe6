//! The near-cache of a SQL store, fed by the server's announcements of changed rows.
//!
//! PostgreSQL only. Every change of a row is announced on the table's channel
//! (`pg_notify`) with the tag of the row version it left: the id of the transaction that
//! wrote it, which is also the row's `xmin`. The store reads and writes the tag with every
//! statement, so the announcement of a version the cache already holds (the echo of its own
//! write) keeps the copy, and any other drops it.
//!
//! Who announces: a near-cached store announces its own writes once they have committed,
//! in batches ([`Near::announce`], one `pg_notify` per batch, on a connection of its own);
//! its statements tell the table's trigger to stay quiet. The trigger, installed by
//! `migrate`, announces every other write (other tools, stores without the near-cache) in
//! the writing transaction. Why not always the trigger: PostgreSQL serializes the commits of
//! all transactions that notify, each holding a cluster-wide lock through its WAL flush,
//! which measured 0.2× the write throughput at 32 concurrent writers; a transaction that
//! only notifies writes no WAL and holds that lock for microseconds. The cost: a write whose
//! process dies between its commit and its announcement (under a millisecond) is announced
//! to no one, so other processes may serve their copy until [`NearCacheConfig::max_age`].
//!
//! Announcement payloads are entries `<tag or -> <length of the id in bytes> <id>`, each
//! followed by a newline in batches; `-` is a deleted row, and `* 0 ` asks every process to
//! empty its cache (a write of an id too long for a notification).
//!
//! A task per store keeps a dedicated connection listening (`LISTEN`) and hands the
//! announcements to the cache ([`session_store::near_cache`]). Every second it sends itself
//! an announcement through a second connection; one that has not come back within
//! [`PATIENCE`] (a frozen server, a partition), a lost listening connection or a missing
//! trigger disarm the cache, which is then emptied and bypassed until a new connection
//! listens again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_store::near_cache::{NearCache, NearCacheConfig};

/// How often the listening connection is checked.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a check's announcement may take to come back before the connection counts as
/// lost.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const PATIENCE: Duration = Duration::from_secs(2);

/// Announcements kept while the announcing connection fails; more are dropped.
const MAX_OUTBOX: usize = 100_000;

/// The largest announcement payload sent (PostgreSQL takes up to 8000 bytes).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const MAX_PAYLOAD: usize = 7_900;

/// A store's near-cache and what its listening task needs.
pub struct Near {
    pub(crate) cache: NearCache,
    pub(crate) config: NearCacheConfig,
    /// The table's announcement channel.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    channel: String,
    /// Selects a row when the announcing trigger is installed.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    installed: String,
    /// Whether the listening task was started (on the first operation, inside the runtime).
    started: AtomicBool,
    /// This process's committed writes not announced yet, as payload entries.
    outbox: std::sync::Mutex<Vec<String>>,
    /// Wakes the announcing task.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    wake: tokio::sync::Notify,
}

impl Near {
    pub(crate) fn new(config: NearCacheConfig, channel: String, installed: String) -> Self {
        Self {
            cache: NearCache::new(config.clone()),
            config,
            channel,
            installed,
            started: AtomicBool::new(false),
            outbox: std::sync::Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Announces this process's committed write of `key` (`tag`: the row version it left;
    /// `None`: deleted) to every process's near-cache, this one's included.
    pub(crate) fn announce(&self, key: &str, tag: Option<u64>) {
        let tag = tag.map_or_else(|| "-".to_owned(), |tag| tag.to_string());
        let mut entry = format!("{tag} {} {key}\n", key.len());
        if entry.len() > MAX_PAYLOAD {
            // An id too long for a notification (only possible outside the manager, which
            // bounds ids): every process empties its cache instead.
            entry = "* 0 \n".to_owned();
        }
        let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if outbox.len() >= MAX_OUTBOX {
            // The announcing connection is failing: the oldest are given up (other
            // processes' copies then age out, NearCacheConfig::max_age).
            tracing::warn!(
                "postgres near-cache: announcements dropped, the server is not taking them"
            );
            outbox.clear();
        }
        outbox.push(entry);
        drop(outbox);
        self.wake.notify_one();
    }

    /// Whether the listening task has to be started now (true once).
    pub(crate) fn starting(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel)
    }
}

#[cfg(feature = "postgres")]
pub(crate) use listen::start;

#[cfg(feature = "postgres")]
mod listen {
    use std::sync::Weak;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use sqlx::Connection;
    use sqlx::PgPool;
    use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};

    use super::*;

    /// Starts the task that keeps `near`'s cache fed, on connections like `pool`'s (same
    /// server and credentials, named by the cache's configuration).
    pub(crate) fn start(near: &Arc<Near>, pool: &PgPool) {
        let options = (*pool.connect_options())
            .clone()
            .application_name(near.cache.client_name());
        tokio::spawn(announce_batches(Arc::downgrade(near), options.clone()));
        tokio::spawn(supervise(Arc::downgrade(near), options));
    }

    /// Sends this process's announcements in batches, until the store is dropped, on a
    /// connection of its own (not pooled: a pool checks every connection it takes back, one
    /// more round trip before the next batch could go).
    async fn announce_batches(near: Weak<Near>, options: PgConnectOptions) {
        let mut pending: Vec<String> = Vec::new();
        let mut conn: Option<PgConnection> = None;
        loop {
            let Some(strong) = near.upgrade() else { return };
            if pending.is_empty() {
                let woken = strong.wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                pending =
                    std::mem::take(&mut *strong.outbox.lock().unwrap_or_else(|e| e.into_inner()));
                if pending.is_empty() {
                    // Woken by the next announcement; checks now and then that the store
                    // lives (this reference keeps it only until then).
                    let _ = tokio::time::timeout(HEARTBEAT, woken).await;
                    continue;
                }
            }
            let channel = strong.channel.clone();
            drop(strong);
            // As many entries as fit in one payload.
            let mut payload = String::new();
            let mut taken = 0;
            for entry in &pending {
                if !payload.is_empty() && payload.len() + entry.len() > MAX_PAYLOAD {
                    break;
                }
                payload.push_str(entry);
                taken += 1;
            }
            let sent = tokio::time::timeout(PATIENCE, async {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(PgConnection::connect_with(&options).await?),
                };
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(&channel)
                    .bind(&payload)
                    .execute(conn)
                    .await
            })
            .await;
            match sent {
                Ok(Ok(_)) => {
                    pending.drain(..taken);
                }
                failed => {
                    // A connection in an unknown state is not reused.
                    conn = None;
                    tracing::debug!(
                        ?failed,
                        "postgres near-cache: announcement not sent; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Listens, arms the cache, checks the connection every [`HEARTBEAT`], and starts over
    /// when it is lost; returns when the store is dropped.
    async fn supervise(near: Weak<Near>, options: PgConnectOptions) {
        let mut generation = 0_u64;
        let mut warned = false;
        loop {
            generation += 1;
            // A pool per generation: one connection listens, one sends the checks, and
            // neither waits for the application's pool. The listening connection of a lost
            // generation may hang on its way back into its pool (sqlx checks a connection
            // it takes back): it holds up only its own pool.
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .min_connections(0)
                .acquire_timeout(PATIENCE)
                .test_before_acquire(false)
                .connect_lazy_with(options.clone());
            let Some(strong) = near.upgrade() else { return };
            let opened = tokio::time::timeout(PATIENCE * 2, open(&strong, &pool)).await;
            let listener = match opened {
                Ok(Ok(Some(listener))) => listener,
                Ok(Ok(None)) => {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(
                            "postgres near-cache: the table has no announcing trigger \
                             (run migrate() on a store with the near-cache on); not caching"
                        );
                    }
                    drop(strong);
                    tokio::time::sleep(HEARTBEAT).await;
                    continue;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "postgres near-cache: cannot listen");
                    drop(strong);
                    tokio::time::sleep(HEARTBEAT).await;
                    continue;
                }
                Err(_) => {
                    drop(strong);
                    continue;
                }
            };
            strong.cache.arm(generation);
            let echoed = Arc::new(AtomicU64::new(0));
            let receiver =
                tokio::spawn(receive(listener, near.clone(), generation, echoed.clone()));
            let channel = strong.channel.clone();
            drop(strong);
            let mut sent = 0_u64;
            let mut sent_at = Instant::now();
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if near.strong_count() == 0 {
                    receiver.abort();
                    return;
                }
                if receiver.is_finished() {
                    break;
                }
                if echoed.load(Ordering::Acquire) < sent {
                    if sent_at.elapsed() > PATIENCE {
                        tracing::debug!("postgres near-cache: the listening connection is silent");
                        break;
                    }
                    continue;
                }
                sent += 1;
                sent_at = Instant::now();
                let ping = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(&channel)
                    .bind(format!("ping {generation} {sent}"))
                    .execute(&pool);
                // A check that fails to go out is a check that does not come back.
                let _ = tokio::time::timeout(PATIENCE, ping).await;
            }
            if let Some(strong) = near.upgrade() {
                strong.cache.disarm(generation);
            }
            receiver.abort();
        }
    }

    /// A connection listening on `near`'s channel; `None` when the table has no announcing
    /// trigger.
    async fn open(near: &Near, pool: &PgPool) -> Result<Option<PgListener>, sqlx::Error> {
        if sqlx::query(&near.installed)
            .fetch_optional(pool)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let mut listener = PgListener::connect_with(pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener.listen(&near.channel).await?;
        Ok(Some(listener))
    }

    /// Hands each announcement to the cache until the connection is lost (then disarms it).
    async fn receive(
        mut listener: PgListener,
        near: Weak<Near>,
        generation: u64,
        echoed: Arc<AtomicU64>,
    ) {
        loop {
            let received = listener.try_recv().await;
            let Some(near) = near.upgrade() else { return };
            match received {
                Ok(Some(notification)) => {
                    announce(&near.cache, generation, notification.payload(), &echoed);
                }
                _ => {
                    near.cache.disarm(generation);
                    return;
                }
            }
        }
    }

    /// Applies one announcement: entries `<tag> <length> <id>` (a row written) or
    /// `- <length> <id>` (a row deleted), each optionally followed by a newline, or
    /// `ping <generation> <n>` (a check). A payload that cannot be read empties the cache.
    fn announce(cache: &NearCache, generation: u64, payload: &str, echoed: &AtomicU64) {
        if let Some(check) = payload.strip_prefix("ping ") {
            let check = check
                .split_once(' ')
                .and_then(|(g, n)| Some((g.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
            if let Some((g, n)) = check
                && g == generation
            {
                echoed.fetch_max(n, Ordering::AcqRel);
            }
            return;
        }
        let mut rest = payload;
        while !rest.is_empty() {
            let entry = rest.split_once(' ').and_then(|(tag, after)| {
                let (len, after) = after.split_once(' ')?;
                let len = len.parse::<usize>().ok()?;
                Some((tag, after.get(..len)?, after.get(len..)?))
            });
            let Some((tag, id, after)) = entry else {
                tracing::warn!("postgres near-cache: an announcement could not be read");
                cache.flush(generation);
                return;
            };
            match tag {
                "*" => cache.flush(generation),
                "-" => cache.invalidate(generation, id.as_bytes(), None),
                tag => cache.invalidate(generation, id.as_bytes(), tag.parse::<u64>().ok()),
            }
            rest = after.strip_prefix('\n').unwrap_or(after);
        }
    }

    #[cfg(test)]
    mod tests {
        use session_store::Record;

        use super::*;

        #[test]
        fn announcements_are_parsed() {
            let cache = NearCache::new(NearCacheConfig::new());
            cache.arm(3);
            let echoed = AtomicU64::new(0);
            let keep = |cache: &NearCache, tag| {
                let flight = cache.begin("a b", false);
                let record = Record::new(
                    time::OffsetDateTime::now_utc() + Duration::from_secs(60),
                    session_store::Codec::MessagePack,
                );
                cache.end_tagged(flight, Some((&record, Some(tag))));
            };
            let cached = |cache: &NearCache| cache.get("a b", time::OffsetDateTime::now_utc());
            keep(&cache, 7);
            announce(&cache, 3, "7 3 a b", &echoed);
            assert!(cached(&cache).is_some(), "its own version");
            announce(&cache, 3, "8 3 a b", &echoed);
            assert!(cached(&cache).is_none(), "another version");
            keep(&cache, 8);
            announce(&cache, 3, "- 3 a b", &echoed);
            assert!(cached(&cache).is_none(), "deleted");
            // A batch: the second entry is the cached id, with an id holding a newline first.
            keep(&cache, 9);
            announce(&cache, 3, "4 3 x\ny\n5 3 a b\n", &echoed);
            assert!(cached(&cache).is_none(), "the batch's second entry");
            keep(&cache, 9);
            announce(&cache, 3, "9 3 a b\n", &echoed);
            assert!(cached(&cache).is_some());
            // Everything goes: announced so, or unreadable.
            keep(&cache, 9);
            announce(&cache, 3, "* 0 \n", &echoed);
            assert!(cached(&cache).is_none());
            announce(&cache, 3, "9 99 a b", &echoed);
            assert!(cached(&cache).is_none());
            assert_eq!(cache.stats().flushes, 2);
            announce(&cache, 3, "ping 2 5", &echoed);
            assert_eq!(
                echoed.load(Ordering::Relaxed),
                0,
                "another generation's check"
            );
            announce(&cache, 3, "ping 3 5", &echoed);
            assert_eq!(echoed.load(Ordering::Relaxed), 5);
            announce(&cache, 3, "nonsense", &echoed);
            assert_eq!(cache.stats().flushes, 3);
        }
    }
}
