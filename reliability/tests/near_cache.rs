//! How long a change on one instance takes to stop being served by another instance's
//! near-cache, under load: on a Redis server of the test's own, and on PostgreSQL
//! (`POSTGRES_URL`, a table of the test's own).
//!
//! Two stores with the near-cache on, A and B, as two processes would have them. While 16
//! tasks keep reading warm sessions through B and 16 keep writing other sessions through A,
//! a probe repeats: A writes a session, B reads it until it is cached, then A changes (or
//! destroys) it and B reads it in a loop until it gets the new state. The time from A's
//! acknowledged write to B's first read of the new state is the window in which B may still
//! serve the old one. Run with `--nocapture` to see the `FIGURES` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_reliability::servers::RedisServer;
use session_reliability::unique;
use session_store::SessionStore;
use session_store::near_cache::NearCacheStats;
use session_store::testing::{new_id, now_ms, sample_record};
use session_store_redis::{NearCacheConfig, RedisStore};
use session_store_sqlx::PostgresStore;

/// Probes per kind (change, destroy).
const PROBES: usize = 300;
/// A window longer than this fails the test (the target is milliseconds; this is the
/// deadline for a loaded 2-core machine).
const LIMIT: Duration = Duration::from_secs(2);

async fn cached(url: &str, prefix: &str) -> Arc<RedisStore> {
    let store = RedisStore::from_url(url)
        .expect("store")
        .with_prefix(prefix)
        .with_near_cache(NearCacheConfig::new())
        .expect("near-cache");
    store.connect().await.expect("connect");
    Arc::new(store)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn cached_postgres(url: &str, table: &str) -> Arc<PostgresStore> {
    let store = PostgresStore::connect(url)
        .await
        .expect("PostgreSQL at POSTGRES_URL")
        .with_table_name(table)
        .expect("table")
        .with_near_cache(NearCacheConfig::new())
        .expect("near-cache");
    store.migrate().await.expect("migrate");
    // Armed by its listening task, started on first use.
    let deadline = Instant::now() + LIMIT * 5;
    while !store.near_cache_stats().unwrap().armed {
        store.get(&new_id()).await.unwrap();
        assert!(Instant::now() < deadline, "the near-cache never armed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instance_stops_serving_old_data_within_milliseconds() {
    let server = RedisServer::start();
    let prefix = format!("{}:", unique("near"));
    let (a, b) = (
        cached(&server.url(), &prefix).await,
        cached(&server.url(), &prefix).await,
    );
    let stats = b.clone();
    measure("redis", a, b, move || stats.near_cache_stats().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_postgres_instance_stops_serving_old_data_within_milliseconds() {
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let table = unique("near").replace('-', "_");
    let (a, b) = (
        cached_postgres(&url, &table).await,
        cached_postgres(&url, &table).await,
    );
    let stats = b.clone();
    measure("postgres", a.clone(), b, move || {
        stats.near_cache_stats().unwrap()
    })
    .await;
    sqlx_drop(&a, &table).await;
}

async fn sqlx_drop(store: &PostgresStore, table: &str) {
    session_store_sqlx::sqlx::query(&format!("DROP TABLE \"{table}\""))
        .execute(store.pool())
        .await
        .expect("drop the test's table");
}

/// The probes and the background load on A and B, whose near-cache counters `b_stats`
/// reads; prints the `FIGURES` line.
async fn measure<A, B>(label: &str, a: Arc<A>, b: Arc<B>, b_stats: impl Fn() -> NearCacheStats)
where
    A: SessionStore + 'static,
    B: SessionStore + 'static,
{
    let later = || now_ms() + Duration::from_secs(600);

    // Background load: reads of warm sessions on B, writes of other sessions on A.
    let warm: Arc<Vec<_>> = Arc::new((0..200).map(|_| new_id()).collect());
    for id in warm.iter() {
        a.set(id, &sample_record(later())).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..32 {
        let (a, b, warm, stop) = (a.clone(), b.clone(), warm.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = &warm[(task * 7 + n) % warm.len()];
                if task % 2 == 0 {
                    b.get(id).await.unwrap();
                } else {
                    let mut record = sample_record(later());
                    record.version = n as u64;
                    a.set(id, &record).await.unwrap();
                }
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        }));
    }

    let mut windows = (Vec::new(), Vec::new());
    let mut reads_before_new = 0usize;
    for probe in 0..2 * PROBES {
        let destroy = probe % 2 == 1;
        let id = new_id();
        let mut record = sample_record(later());
        record.version = 1;
        a.set(&id, &record).await.unwrap();
        // B caches it (the first read may race its own arming: read until it hits).
        let hits = b_stats().hits;
        while b_stats().hits == hits {
            assert!(b.get(&id).await.unwrap().is_some());
        }
        let written = if destroy {
            a.destroy(&id).await.unwrap();
            Instant::now()
        } else {
            record.version = 2;
            a.set(&id, &record).await.unwrap();
            Instant::now()
        };
        loop {
            let got = b.get(&id).await.unwrap();
            let new = match &got {
                None => destroy,
                Some(r) => !destroy && r.version == 2,
            };
            if new {
                break;
            }
            reads_before_new += 1;
            assert!(
                written.elapsed() < LIMIT,
                "B served the old state {LIMIT:?} after A's write"
            );
            tokio::task::yield_now().await;
        }
        let window = written.elapsed();
        if destroy {
            windows.1.push(window);
        } else {
            windows.0.push(window);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut background = 0;
    for task in load {
        background += task.await.unwrap();
    }
    let (mut changed, mut destroyed) = windows;
    changed.sort();
    destroyed.sort();
    let show = |w: &[Duration]| {
        format!(
            "p50={:?} p99={:?} max={:?}",
            percentile(w, 0.5),
            percentile(w, 0.99),
            w[w.len() - 1]
        )
    };
    println!(
        "FIGURES near-cache {label} probes={} change[{}] destroy[{}] stale_reads_in_windows={} background_ops={} b={:?}",
        2 * PROBES,
        show(&changed),
        show(&destroyed),
        reads_before_new,
        background,
        b_stats()
    );
}
