//! The manager's per-request cost on `MemoryStore`, `MemoryStore` under concurrency, and the
//! cost of compare-and-set writes against plain updates (Memory, Redis), and the cost of
//! hashed ids and encrypted data at rest.
//!
//! `cargo bench -p session-benches --bench core`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::testing::{new_id, now_ms, sample_record};
use session_store::{MemoryStore, SessionManager, SessionStore};
use session_store_redis::RedisStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A stored session of ten small keys and one 1 KB value; returns its request headers.
fn existing_session(rt: &tokio::runtime::Runtime, manager: &SessionManager) -> HeaderMap {
    rt.block_on(async {
        let session = manager.load(&HeaderMap::new()).await.unwrap();
        for i in 0..10 {
            session
                .insert(format!("key{i}"), format!("value {i}"))
                .unwrap();
        }
        session.insert("blob", vec![7u8; 1024]).unwrap();
        session.insert("counter", 0u64).unwrap();
        let mut out = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut out)
            .await
            .unwrap();
        let set_cookie = out.get(http::header::SET_COOKIE).unwrap().to_str().unwrap();
        let pair = set_cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(pair).unwrap());
        headers
    })
}

fn manager_per_request(c: &mut Criterion) {
    let rt = runtime();
    let manager = SessionManager::builder(MemoryStore::new())
        .max_age(Duration::from_secs(3600))
        .touch_after(Duration::from_secs(3600))
        .build()
        .unwrap();
    let headers = existing_session(&rt, &manager);
    let mut group = c.benchmark_group("manager");
    group.bench_function("read (load, get, commit: no write)", |b| {
        b.to_async(&rt).iter(|| async {
            let session = manager.load(&headers).await.unwrap();
            let value: Option<String> = session.get("key3").unwrap();
            black_box(value);
            let mut out = HeaderMap::new();
            manager
                .finish(&session, StatusCode::OK, &mut out)
                .await
                .unwrap();
            black_box(out);
        })
    });
    group.bench_function("write (load, increment, commit)", |b| {
        b.to_async(&rt).iter(|| async {
            let session = manager.load(&headers).await.unwrap();
            let n: u64 = session.get("counter").unwrap().unwrap_or(0);
            session.insert("counter", n + 1).unwrap();
            let mut out = HeaderMap::new();
            manager
                .finish(&session, StatusCode::OK, &mut out)
                .await
                .unwrap();
            black_box(out);
        })
    });
    let empty = HeaderMap::new();
    group.bench_function("new (no cookie, insert, create)", |b| {
        b.to_async(&rt).iter(|| async {
            let session = manager.load(&empty).await.unwrap();
            session.insert("user", "alice").unwrap();
            let mut out = HeaderMap::new();
            manager
                .finish(&session, StatusCode::OK, &mut out)
                .await
                .unwrap();
            black_box(out);
        })
    });
    group.finish();
}

fn memory_store_concurrency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("memory_store");
    for tasks in [1usize, 8, 64] {
        const OPS: u64 = 100;
        group.throughput(Throughput::Elements(tasks as u64 * OPS * 2));
        group.bench_with_input(BenchmarkId::new("get+set", tasks), &tasks, |b, &tasks| {
            let store = MemoryStore::new();
            let ids: Vec<_> = (0..tasks).map(|_| new_id()).collect();
            let record = sample_record(now_ms() + Duration::from_secs(3600));
            rt.block_on(async {
                for id in &ids {
                    store.set(id, &record).await.unwrap();
                }
            });
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        let handles: Vec<_> = ids
                            .iter()
                            .map(|id| {
                                let (store, id, record) =
                                    (store.clone(), id.clone(), record.clone());
                                tokio::spawn(async move {
                                    for _ in 0..OPS {
                                        let got = store.get(&id).await.unwrap();
                                        black_box(&got);
                                        store.set(&id, &record).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.unwrap();
                        }
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// One write request: load the session, increment its counter, commit.
async fn increment(manager: &SessionManager, headers: &HeaderMap) {
    let session = manager.load(headers).await.unwrap();
    let n: u64 = session.get("counter").unwrap().unwrap_or(0);
    session.insert("counter", n + 1).unwrap();
    session.commit().await.unwrap();
}

/// The cost of compare-and-set (the default) against a plain `update`, per write request:
/// on `MemoryStore`, and on Redis (`EVALSHA` vs `SET XX`) when `REDIS_URL` answers.
fn compare_and_set_cost(c: &mut Criterion) {
    let rt = runtime();
    let mut stores: Vec<(&str, Arc<dyn SessionStore>)> =
        vec![("memory", Arc::new(MemoryStore::new()))];
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match rt.block_on(async {
        let store =
            RedisStore::from_url(&url)?.with_prefix(format!("bench:{}:", new_id().as_str()));
        store.connect().await.map(|()| store)
    }) {
        Ok(store) => stores.push(("redis", Arc::new(store))),
        Err(e) => eprintln!("skipping the Redis comparison: {e}"),
    }
    let mut group = c.benchmark_group("write");
    for (name, store) in stores {
        for cas in [true, false] {
            let manager = SessionManager::builder_arc(store.clone())
                .compare_and_set(cas)
                .build()
                .unwrap();
            let headers = existing_session(&rt, &manager);
            let label = if cas { "compare_and_set" } else { "update" };
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.to_async(&rt).iter(|| increment(&manager, &headers))
            });
        }
    }
    group.finish();
}

/// What the protections at rest cost per request: plain ids, hashed ids (the default), and
/// hashed ids with the data encrypted, on `MemoryStore` (read and write of the ten-key
/// session above). Compare the three lines of one run as ratios.
fn at_rest_cost(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("at_rest");
    let keys = session_store::DataKeys::new([[7u8; 32]]).unwrap();
    for (label, hashed, encrypted) in [
        ("raw ids", false, false),
        ("hashed ids", true, false),
        ("hashed ids + encrypted data", true, true),
    ] {
        let mut builder = SessionManager::builder(MemoryStore::new()).hashed_ids(hashed);
        if encrypted {
            builder = builder.encrypt_data(keys.clone());
        }
        let manager = builder.build().unwrap();
        let headers = existing_session(&rt, &manager);
        group.bench_function(BenchmarkId::new("read", label), |b| {
            b.to_async(&rt).iter(|| async {
                let session = manager.load(&headers).await.unwrap();
                let value: Option<String> = session.get("key3").unwrap();
                black_box(value);
                session.commit().await.unwrap();
            })
        });
        group.bench_function(BenchmarkId::new("write", label), |b| {
            b.to_async(&rt).iter(|| increment(&manager, &headers))
        });
    }
    group.finish();
}

/// What `RedisStore::with_replica_ack` costs: the same session write (load, increment,
/// commit) on a master with a replica, plain and waiting for one replica's
/// acknowledgement, side by side in one run. `REDIS_REPLICATED_URL` names a master that has
/// a replica (default: the master of `scripts/redis-sentinel.sh`, port 6390); skipped when
/// it does not answer.
fn replica_ack_cost(c: &mut Criterion) {
    let rt = runtime();
    let url =
        std::env::var("REDIS_REPLICATED_URL").unwrap_or_else(|_| "redis://127.0.0.1:6390".into());
    let prefix = format!("bench:{}:", new_id().as_str());
    let Ok(plain) = rt.block_on(async {
        let store = RedisStore::from_url(&url)?.with_prefix(prefix.clone());
        store.connect().await.map(|()| store)
    }) else {
        eprintln!("skipping the replica ack cost: no master at {url}");
        return;
    };
    let acked = plain
        .clone()
        .with_replica_ack(1, Duration::from_millis(500))
        .unwrap();
    let mut group = c.benchmark_group("replica_ack");
    for (label, store) in [("plain write", plain), ("WAIT 1 replica", acked)] {
        let manager = SessionManager::builder(store).build().unwrap();
        let headers = existing_session(&rt, &manager);
        group.bench_function(BenchmarkId::new("redis", label), |b| {
            b.to_async(&rt).iter(|| increment(&manager, &headers))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = manager_per_request, memory_store_concurrency, compare_and_set_cost, at_rest_cost,
        replica_ack_cost
}
criterion_main!(benches);
