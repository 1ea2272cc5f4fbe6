//! The near-cache of a SQL store, fed by the server's announcements of changed rows.
//!
//! PostgreSQL only: `migrate` installs a trigger that announces every written or deleted
//! row of the table on the table's channel (`pg_notify`, sent when the writing transaction
//! commits), with the tag of the row version it left: the id of the transaction that wrote
//! it, which is also the row's `xmin`. The store reads and writes the tag with every
//! statement, so the announcement of a version the cache already holds (the echo of its own
//! write) keeps the copy, and any other drops it.
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
}

impl Near {
    pub(crate) fn new(config: NearCacheConfig, channel: String, installed: String) -> Self {
        Self {
            cache: NearCache::new(config.clone()),
            config,
            channel,
            installed,
            started: AtomicBool::new(false),
        }
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

    use sqlx::PgPool;
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

    use super::*;

    /// Starts the task that keeps `near`'s cache fed, on connections like `pool`'s (same
    /// server and credentials, named by the cache's configuration).
    pub(crate) fn start(near: &Arc<Near>, pool: &PgPool) {
        let options = (*pool.connect_options())
            .clone()
            .application_name(near.cache.client_name());
        tokio::spawn(supervise(Arc::downgrade(near), options));
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

    /// Applies one announcement: `<tag> <id>` (a row written), `- <id>` (a row deleted) or
    /// `ping <generation> <n>` (a check).
    fn announce(cache: &NearCache, generation: u64, payload: &str, echoed: &AtomicU64) {
        let Some((head, rest)) = payload.split_once(' ') else {
            return;
        };
        match head {
            "-" => cache.invalidate(generation, rest.as_bytes(), None),
            "ping" => {
                let check = rest
                    .split_once(' ')
                    .and_then(|(g, n)| Some((g.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
                if let Some((g, n)) = check
                    && g == generation
                {
                    echoed.fetch_max(n, Ordering::AcqRel);
                }
            }
            tag => match tag.parse::<u64>() {
                Ok(tag) => cache.invalidate(generation, rest.as_bytes(), Some(tag)),
                // Not one of ours: drop the id's copy to be safe.
                Err(_) => cache.invalidate(generation, rest.as_bytes(), None),
            },
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
            announce(&cache, 3, "7 a b", &echoed);
            assert!(cached(&cache).is_some(), "its own version");
            announce(&cache, 3, "8 a b", &echoed);
            assert!(cached(&cache).is_none(), "another version");
            keep(&cache, 8);
            announce(&cache, 3, "- a b", &echoed);
            assert!(cached(&cache).is_none(), "deleted");
            announce(&cache, 3, "ping 2 5", &echoed);
            assert_eq!(
                echoed.load(Ordering::Relaxed),
                0,
                "another generation's check"
            );
            announce(&cache, 3, "ping 3 5", &echoed);
            assert_eq!(echoed.load(Ordering::Relaxed), 5);
            announce(&cache, 3, "nonsense", &echoed);
        }
    }
}
