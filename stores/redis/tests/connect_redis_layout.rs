//! connect-redis's layout (`Layout::ConnectRedis`): the store contract, checked with
//! JSON records, on a single server and on the Redis Cluster, plus the exact bytes and TTLs
//! a Node app using express-session + connect-redis writes and reads.
//!
//! The shared conformance suite writes MessagePack records with versions, which this layout
//! cannot hold (express-session's JSON has no room for either); the checks of the suite that
//! do not depend on them run as is, the others are restated below with JSON records.
//!
//! Services: `REDIS_URL` (default `redis://127.0.0.1:6379`), `REDIS_CLUSTER_URLS`
//! (`scripts/redis-cluster.sh start`). A missing service fails the test.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use session_store::testing::{self, SuiteOptions, now_ms};
use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, Codec, CookieOptions, Error, IdGenerator, Record, SessionId, SessionStore,
};
use session_store_redis::redis::AsyncCommands;
use session_store_redis::{Layout, RedisStore, redis};

const CAPS: Capabilities = Capabilities::ALL
    .with_compare_and_set(false)
    .with_owners(false);

fn layout() -> Layout {
    Layout::connect_redis(CookieOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..CookieOptions::default()
    })
}

fn single(what: &str) -> RedisStore {
    RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_layout(layout())
        .with_prefix(common::random_prefix(what))
}

async fn raw() -> redis::aio::MultiplexedConnection {
    let url = common::redis_url();
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable: {e}"))
}

/// A JSON record with a few values.
fn json_record(expires: OffsetDateTime) -> Record {
    let mut record = Record::new(expires, Codec::Json);
    record
        .data
        .insert("user".into(), Codec::Json.encode("alice").unwrap());
    record
        .data
        .insert("visits".into(), Codec::Json.encode(&7u32).unwrap());
    record
}

fn express_id() -> SessionId {
    IdGenerator::express_compatible().generate()
}

/// The store contract with JSON records, version 0.
async fn json_suite(store: &RedisStore) {
    let name = format!("{store:?}");
    // The suite's checks that hold in this layout as they are.
    let options = SuiteOptions::new(CAPS);
    testing::capabilities_are_honest(store, &options).await;
    testing::missing_id(store).await;
    testing::destroy_missing(store).await;
    testing::expired_never_returned(store).await;

    // Round trip: data, codec, expiry exact to the ms; version is always 0.
    let id = express_id();
    let mut record = json_record(now_ms() + Duration::from_secs(3600));
    record.version = 41;
    store.set(&id, &record).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("record after set");
    assert_eq!(got.data, record.data, "{name}: data changed");
    assert_eq!(got.codec, Codec::Json);
    assert_eq!(got.expires, record.expires, "{name}: expiry changed");
    assert_eq!(got.version, 0, "{name}: this layout keeps no version");
    assert!(
        got.extra.contains_key("cookie"),
        "{name}: the cookie object is kept"
    );

    // A second set replaces data and expiry, also to an earlier one.
    let mut second = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
    second.data.insert("only".into(), b"true".to_vec());
    store.set(&id, &second).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("overwritten record");
    assert_eq!(got.data, second.data, "{name}: overwrite kept old data");
    assert_eq!(got.expires, second.expires, "{name}: expiry not reset");

    // touch moves the expiry both ways, data unchanged.
    for later in [Duration::from_secs(7200), Duration::from_secs(1800)] {
        let new_expiry = now_ms() + later;
        assert!(store.touch(&id, new_expiry).await.unwrap());
        let got = store.get(&id).await.unwrap().expect("touched record");
        assert_eq!(got.expires, new_expiry, "{name}: touch expiry");
        assert_eq!(got.data, second.data, "{name}: touch changed data");
    }

    // destroy removes only its own record.
    let other = express_id();
    store.set(&other, &record).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(store.get(&other).await.unwrap().is_some());
    store.destroy(&other).await.unwrap();

    // touch of missing, destroyed or expired ids creates nothing.
    let later = now_ms() + Duration::from_secs(600);
    assert!(!store.touch(&id, later).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    let expired = express_id();
    let _ = store
        .set(&expired, &json_record(now_ms() - Duration::from_secs(10)))
        .await;
    assert!(!store.touch(&expired, later).await.unwrap());
    assert!(store.get(&expired).await.unwrap().is_none());

    // create never overwrites; an expired record counts as absent.
    let id = express_id();
    let first = json_record(later);
    assert!(store.create(&id, &first).await.unwrap());
    let mut intruder = first.clone();
    intruder.data.insert("intruder".into(), b"1".to_vec());
    assert!(!store.create(&id, &intruder).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, first.data);
    store.destroy(&id).await.unwrap();
    assert!(store.create(&expired, &first).await.unwrap());
    store.destroy(&expired).await.unwrap();

    // update never recreates a destroyed record.
    assert!(!store.update(&id, &first).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    store.set(&id, &first).await.unwrap();
    assert!(store.update(&id, &intruder).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, intruder.data);
    store.destroy(&id).await.unwrap();
    assert!(!store.update(&id, &intruder).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());

    // compare-and-set is unsupported and writes nothing.
    assert!(matches!(
        store.compare_and_set(&id, &first, 0).await,
        Err(Error::Unsupported { .. })
    ));
    assert!(store.get(&id).await.unwrap().is_none());

    // JSON values of every shape survive, as do odd keys and foreign top-level fields.
    let mut rich = Record::new(later, Codec::Json);
    let values = json!({
        "max": u64::MAX, "min": i64::MIN, "float": 1.5, "tiny": f64::MIN_POSITIVE,
        "text": "naïve café — 日本語 — \u{0} \"quoted\" 'single' \\ ; -- $gt",
        "nested": {"ключ 🔑": [true, null, false]}, "empty": "", "list": [],
    });
    rich.data
        .insert("values".into(), Codec::Json.encode(&values).unwrap());
    for key in [
        "",
        "a.b",
        "$where",
        "'; DROP TABLE x; --",
        "ключ",
        "__proto__",
    ] {
        rich.data.insert(key.into(), b"1".to_vec());
    }
    store.set(&id, &rich).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("rich record");
    assert_eq!(got.data, rich.data, "{name}: values or keys changed");
    let back: serde_json::Value = Codec::Json.decode(&got.data["values"]).unwrap();
    assert_eq!(back, values);
    store.destroy(&id).await.unwrap();

    // What the layout cannot express fails to save, clearly, and writes nothing.
    let mut binary = Record::new(later, Codec::MessagePack);
    binary
        .data
        .insert("n".into(), Codec::MessagePack.encode(&1u8).unwrap());
    let mut reserved = Record::new(later, Codec::Json);
    reserved.data.insert("cookie".into(), b"1".to_vec());
    let mut not_json = Record::new(later, Codec::Json);
    not_json.data.insert("raw".into(), vec![0, 0xFF, 0xC1]);
    for bad in [&binary, &reserved, &not_json] {
        for result in [
            store.set(&id, bad).await.map(|()| true),
            store.create(&id, bad).await,
        ] {
            assert!(
                matches!(result, Err(Error::Serialization { .. })),
                "{name}: {result:?}"
            );
        }
        assert!(store.get(&id).await.unwrap().is_none());
    }
    let err = store.set(&id, &binary).await.unwrap_err();
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.as_deref().is_some_and(|s| s.contains("Codec::Json")),
        "the error says what to configure: {err} / {source:?}"
    );

    // Many concurrent sessions do not mix up.
    let tasks = (0..32u32).map(|task| async move {
        let id = express_id();
        for round in 0..5u32 {
            let mut record = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
            record
                .data
                .insert("task".into(), Codec::Json.encode(&(task, round)).unwrap());
            store.set(&id, &record).await.unwrap();
            let got = store.get(&id).await.unwrap().expect("record");
            let seen: (u32, u32) = Codec::Json.decode(&got.data["task"]).unwrap();
            assert_eq!(seen, (task, round), "records mixed up");
        }
        store.destroy(&id).await.unwrap();
    });
    futures::future::join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_keeps_the_contract() {
    let store = single("express");
    store
        .connect()
        .await
        .expect("Redis at REDIS_URL must be reachable");
    assert_eq!(store.capabilities(), CAPS);
    json_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_the_contract() {
    let urls = common::cluster_urls();
    let store = RedisStore::cluster_from_urls(urls.clone())
        .unwrap()
        .with_layout(layout())
        .with_prefix(common::random_prefix("express-cluster"));
    store.connect().await.unwrap_or_else(|e| {
        panic!("Redis Cluster at {urls:?} unreachable (scripts/redis-cluster.sh start): {e:?}")
    });
    json_suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires_while_watched() {
    let store = single("express-expiry");
    let id = express_id();
    let expires = now_ms() + Duration::from_secs(2);
    store.set(&id, &json_record(expires)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let asked = OffsetDateTime::now_utc();
        match store.get(&id).await.unwrap() {
            None => break,
            Some(r) => assert!(asked < r.expires + Duration::from_millis(500)),
        }
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(OffsetDateTime::now_utc() >= expires - Duration::from_millis(500));
}

#[tokio::test]
async fn default_prefix_is_connect_redis_own() {
    let url = common::redis_url();
    let store = RedisStore::from_url(&url).unwrap().with_layout(layout());
    assert_eq!(store.prefix(), "sess:");
    assert_eq!(RedisStore::CONNECT_REDIS_PREFIX, "sess:");
    assert_eq!(RedisStore::from_url(&url).unwrap().prefix(), "session:");
    // An explicit prefix wins in either order.
    let a = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix("app:")
        .with_layout(layout());
    let b = RedisStore::from_url(&url)
        .unwrap()
        .with_layout(layout())
        .with_prefix("app:");
    assert_eq!((a.prefix(), b.prefix()), ("app:", "app:"));
    assert!(format!("{a:?}").contains("connect-redis"));
    assert!(matches!(a.layout(), Layout::ConnectRedis(_)));
}

#[tokio::test]
async fn bytes_and_ttl_are_what_connect_redis_uses() {
    let store = single("express-bytes");
    let mut conn = raw().await;
    let id = express_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    let expires = now_ms() + Duration::from_secs(600);
    let mut record = Record::new(expires, Codec::Json);
    record.data.insert("views".into(), b"2".to_vec());
    store.set(&id, &record).await.unwrap();

    // The value is express-session's JSON, parseable by `JSON.parse`.
    let value: String = conn.get(&key).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&value).unwrap();
    let expires_iso = stored["cookie"]["expires"].as_str().unwrap().to_owned();
    assert_eq!(
        stored,
        json!({"cookie": {"originalMaxAge": 3_600_000, "expires": expires_iso,
            "httpOnly": true, "path": "/"}, "views": 2})
    );
    let parsed = OffsetDateTime::parse(
        &expires_iso,
        &session_store::time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(parsed, expires, "cookie.expires is the record's expiry");
    let pexpiretime: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        i128::from(pexpiretime),
        expires.unix_timestamp_nanos() / 1_000_000
    );

    // touch is payload-free: only the key's TTL moves; `cookie.expires` stays stale and is
    // ignored on read.
    let later = now_ms() + Duration::from_secs(3600);
    assert!(store.touch(&id, later).await.unwrap());
    let after: String = conn.get(&key).await.unwrap();
    assert_eq!(after, value, "touch rewrote the value");
    assert_eq!(store.get(&id).await.unwrap().unwrap().expires, later);

    // destroy deletes the key.
    store.destroy(&id).await.unwrap();
    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn reads_and_rewrites_what_node_wrote() {
    let store = single("express-node");
    let mut conn = raw().await;
    let id = express_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    // What connect-redis 9 writes: `SET key json EX ttl` (seconds), from `docs/behaviour.md` plus
    // fields express-session may add.
    let node = r#"{"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/","sameSite":"lax","priority":"high"},"views":2,"user":{"name":"ann","tags":["a",null]},"flash":{}}"#;
    let _: () = conn.set_ex(&key, node, 60).await.unwrap();
    let before = OffsetDateTime::now_utc();
    let record = store.get(&id).await.unwrap().expect("Node's session");
    // The expiry is the TTL (about a minute from now), not the stale cookie.expires.
    let ttl_left = record.expires - before;
    assert!(
        ttl_left > Duration::from_secs(50) && ttl_left <= Duration::from_secs(61),
        "{ttl_left}"
    );
    assert_eq!(Codec::Json.decode::<u32>(&record.data["views"]).unwrap(), 2);
    let user: BTreeMap<String, serde_json::Value> =
        Codec::Json.decode(&record.data["user"]).unwrap();
    assert_eq!(user["tags"], json!(["a", null]));

    // Modified and written back: Node's fields are kept, the expiry moves to the record's.
    let mut changed = record.clone();
    changed.data.insert("views".into(), b"3".to_vec());
    assert!(store.update(&id, &changed).await.unwrap());
    let value: String = conn.get(&key).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert_eq!(stored["views"], 3);
    assert_eq!(stored["flash"], json!({}));
    assert_eq!(stored["cookie"]["priority"], "high");
    assert_eq!(stored["cookie"]["sameSite"], "lax");
    assert_eq!(stored["cookie"]["originalMaxAge"], 60000);
    assert_ne!(stored["cookie"]["expires"], "2026-11-26T19:58:41.066Z");

    // Garbage under the key is corrupt (the manager then starts a fresh session).
    for garbage in ["not json", "[1,2]", "", "\"s\""] {
        let _: () = conn.set_ex(&key, garbage, 60).await.unwrap();
        let got = store.get(&id).await;
        assert!(
            matches!(got, Err(Error::Corrupt { .. })),
            "{garbage:?}: {got:?}"
        );
        let message = got.unwrap_err().to_string();
        assert!(!message.contains(id.as_str()), "{message}");
    }
    let _: () = conn.del(&key).await.unwrap();
}

/// The shared conformance suite, in its express-session mode (JSON records, no version).
#[tokio::test]
async fn passes_the_conformance_suite_in_express_mode() {
    let store = single("suite");
    testing::run(&store, &SuiteOptions::new(CAPS).express_layout()).await;
}
