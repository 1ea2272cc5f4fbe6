//! `MongoStore` against a real server: `MONGODB_URL` (default: the SecantusDB that
//! `scripts/mongo.sh start` runs). Every test uses its own random collection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{Capabilities, CasOutcome, Error, ManualClock, SessionStore};
use session_store_mongodb::mongodb::bson::spec::BinarySubtype;
use session_store_mongodb::mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use session_store_mongodb::mongodb::event::EventHandler;
use session_store_mongodb::mongodb::event::command::CommandEvent;
use session_store_mongodb::mongodb::options::ClientOptions;
use session_store_mongodb::mongodb::{Client, IndexModel};
use session_store_mongodb::{MongoStore, OWNER_INDEX};

const DEFAULT_URL: &str = "mongodb://127.0.0.1:27917/?directConnection=true";
const DATABASE: &str = "session_store_test";

fn url() -> String {
    std::env::var("MONGODB_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A store on a fresh collection; fails (not skips) when the server is unreachable.
async fn store() -> MongoStore {
    let collection = format!("sessions_{}", nanoid::nanoid!(12));
    MongoStore::connect(&url(), DATABASE, &collection)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no MongoDB at {} (start one with `scripts/mongo.sh start`): {e}: {:?}",
                url(),
                std::error::Error::source(&e)
            )
        })
}

async fn drop_collection(store: &MongoStore) {
    store.collection().drop().await.unwrap();
}

async fn raw(store: &MongoStore, id: &session_store::SessionId) -> Option<Document> {
    store
        .collection()
        .find_one(doc! { "_id": id.as_str() })
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance() {
    let store = store().await;
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
    let other = MongoStore::connect(&url(), DATABASE, store.collection().name())
        .await
        .unwrap();
    session_store::testing::kept_across_instances(
        &store,
        &other,
        &SuiteOptions::new(Capabilities::ALL),
    )
    .await;
    // Through the trait objects the manager uses.
    let boxed: Box<dyn SessionStore> = Box::new(store.clone());
    run(&boxed, &SuiteOptions::new(Capabilities::ALL).concurrency(8)).await;
    drop_collection(&store).await;
}

#[tokio::test]
async fn document_layout_and_ttl_index() {
    let store = store().await;
    // A second store on the same collection finds the index already there.
    let again = MongoStore::from_collection(store.collection().clone())
        .await
        .expect("creating the TTL index twice must succeed");
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = u64::MAX;
    again.set(&id, &record).await.unwrap();

    let stored = raw(&store, &id).await.expect("document missing");
    let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "data", "v", "expires"]);
    assert_eq!(stored.get_str("_id").unwrap(), id.as_str());
    assert_eq!(
        stored.get_binary_generic("data").unwrap(),
        &record.encode_payload()
    );
    assert_eq!(
        stored.get_i64("v").unwrap(),
        -1,
        "u64::MAX is stored as its i64 bits"
    );
    assert_eq!(
        stored.get_datetime("expires").unwrap().timestamp_millis() as i128,
        record.expires.unix_timestamp_nanos() / 1_000_000
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap(), record);

    let mut indexes = store.collection().list_indexes().await.unwrap();
    let mut ttl = None;
    while indexes.advance().await.unwrap() {
        let index = indexes.deserialize_current().unwrap();
        if index.keys == doc! { "expires": 1 } {
            ttl = Some(index);
        }
    }
    let ttl = ttl.expect("no index on `expires`");
    let options = ttl.options.expect("index without options");
    assert_eq!(options.expire_after, Some(Duration::ZERO));
    drop_collection(&store).await;
}

/// The application's clock decides: a document that the server still holds but that has
/// expired by the store's clock is never returned, touched, updated or compared, and does
/// not block `create`.
#[tokio::test]
async fn expired_by_the_application_clock_is_absent() {
    let store = store().await;
    let clock = ManualClock::new(OffsetDateTime::now_utc());
    let ahead = store.clone().with_clock(Arc::new(clock.clone()));
    let id = new_id();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    store.set(&id, &record).await.unwrap();
    assert!(ahead.get(&id).await.unwrap().is_some());

    clock.advance(Duration::from_secs(601));
    assert!(
        raw(&store, &id).await.is_some(),
        "the server removed a live doc"
    );
    assert!(
        ahead.get(&id).await.unwrap().is_none(),
        "expired doc returned"
    );
    let later = now_ms() + Duration::from_secs(3600);
    assert!(
        !ahead.touch(&id, later).await.unwrap(),
        "expired doc touched"
    );
    assert!(
        !ahead.update(&id, &record).await.unwrap(),
        "expired doc updated"
    );
    assert_eq!(
        ahead.compare_and_set(&id, &record, 0).await.unwrap(),
        CasOutcome::Missing
    );
    let stored = raw(&store, &id).await.unwrap();
    assert_eq!(
        stored.get_datetime("expires").unwrap().timestamp_millis() as i128,
        record.expires.unix_timestamp_nanos() / 1_000_000,
        "a failed touch/update/CAS wrote"
    );

    let mut fresh = sample_record(now_ms() + Duration::from_secs(7200));
    fresh.data.insert("fresh".into(), b"1".to_vec());
    assert!(
        ahead.create(&id, &fresh).await.unwrap(),
        "expired doc blocked create"
    );
    assert_eq!(ahead.get(&id).await.unwrap().unwrap().data, fresh.data);
    assert!(
        !ahead.create(&id, &record).await.unwrap(),
        "create overwrote a live doc"
    );
    drop_collection(&store).await;
}

/// Writes a document expiring in 2 s and watches it until the TTL index removes it: `get`
/// returns it before its expiry and never after. Returns whether the document was seen
/// expired (by `get`) but still stored (by a raw read).
async fn watch_ttl_removal(store: &MongoStore) -> bool {
    let id = new_id();
    let expires = now_ms() + Duration::from_secs(2);
    store.set(&id, &sample_record(expires)).await.unwrap();
    assert!(raw(store, &id).await.is_some());

    let deadline = Instant::now() + Duration::from_secs(150);
    // On a starved machine the first poll may come too late to see the document live.
    let early = OffsetDateTime::now_utc() < expires - Duration::from_millis(500);
    let mut seen_live = false;
    let mut seen_hidden = false;
    loop {
        let before = OffsetDateTime::now_utc();
        let got = store.get(&id).await.unwrap();
        let present = raw(store, &id).await.is_some();
        if got.is_some() {
            assert!(before < expires, "get returned a document past its expiry");
            seen_live = true;
        }
        if !present {
            break;
        }
        if got.is_none() {
            assert!(
                OffsetDateTime::now_utc() >= expires,
                "get hid a live document"
            );
            seen_hidden = true;
        }
        assert!(
            Instant::now() < deadline,
            "the TTL index did not remove the document within 150 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        OffsetDateTime::now_utc() >= expires,
        "the document disappeared before its expiry"
    );
    assert!(
        seen_live || !early,
        "the document was never returned before its expiry"
    );
    assert!(store.get(&id).await.unwrap().is_none());
    seen_hidden
}

/// The TTL index removes an expired document; until then `get` never returns it, although
/// the server still holds it. Needs a server whose TTL monitor runs often
/// (`scripts/mongo.sh` sweeps every second); against mongod (60 s monitor) it passes too,
/// only slower.
#[tokio::test]
async fn ttl_index_removes_expired_documents() {
    let store = store().await;
    // The expired-but-stored window lasts until the next sweep (up to 1 s here); a 50 ms
    // poll can miss a very short one, so try up to three times to see it.
    let mut seen_hidden = false;
    for _ in 0..3 {
        if watch_ttl_removal(&store).await {
            seen_hidden = true;
            break;
        }
    }
    assert!(
        seen_hidden,
        "never saw a document expired but still stored (is the TTL sweep instantaneous?)"
    );
    drop_collection(&store).await;
}

/// Many concurrent creates of one id, new or over an expired document: exactly one wins.
#[tokio::test]
async fn concurrent_creates_have_one_winner() {
    let store = store().await;
    for expired_first in [false, true] {
        let id = new_id();
        if expired_first {
            store
                .set(&id, &sample_record(now_ms() - Duration::from_secs(5)))
                .await
                .unwrap();
        }
        let attempts = (0..16u8).map(|i| {
            let (store, id) = (&store, &id);
            async move {
                let mut record = sample_record(now_ms() + Duration::from_secs(600));
                record.data.insert("writer".into(), vec![i]);
                store.create(id, &record).await.unwrap().then_some(i)
            }
        });
        let winners: Vec<u8> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "winners: {winners:?} (expired first: {expired_first})"
        );
        let got = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            got.data["writer"],
            vec![winners[0]],
            "the winner's data was not kept"
        );
    }
    drop_collection(&store).await;
}

#[tokio::test]
async fn undecodable_documents_are_corrupt() {
    let store = store().await;
    let later =
        DateTime::from_millis((now_ms() + Duration::from_secs(600)).unix_timestamp() * 1000);
    let id = new_id();
    store
        .collection()
        .insert_one(doc! { "_id": id.as_str(), "session": "{\"cookie\":{}}", "expires": later })
        .await
        .unwrap();
    let err = store.get(&id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains(id.as_str()),
        "error shows the id"
    );

    let garbage = new_id();
    store
        .collection()
        .insert_one(doc! {
            "_id": garbage.as_str(),
            "data": Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: b"\xA5\x01\x01garbage".to_vec(),
            }),
            "v": 1_i64,
            "expires": later,
        })
        .await
        .unwrap();
    let err = store.get(&garbage).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    // The record is left alone.
    assert!(raw(&store, &garbage).await.is_some());
    drop_collection(&store).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable_quickly() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = MongoStore::connect(
        &format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        DATABASE,
        "unreachable",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(
        std::error::Error::source(&err).is_some(),
        "driver error not kept"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the default server selection timeout did not apply: {took:?}"
    );
}

#[tokio::test]
async fn malformed_connection_string_is_an_error() {
    let err = MongoStore::connect("postgres://nope", DATABASE, "x")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
}

#[tokio::test]
async fn from_url_uses_the_database_in_the_connection_string() {
    let database = format!(
        "session_store_url_{}",
        nanoid::nanoid!(8, &nanoid::alphabet::SAFE)
    );
    let base = url();
    // Put the database into the path: `mongodb://host:port/<db>?query`.
    let (head, query) = base.split_once('?').unwrap_or((&base, ""));
    let head = head.trim_end_matches('/');
    let with_db = format!("{head}/{database}?{query}");
    let store = MongoStore::from_url(&with_db).await.unwrap();
    let namespace = store.collection().namespace();
    assert_eq!(namespace.db, database);
    assert_eq!(namespace.coll, session_store_mongodb::DEFAULT_COLLECTION);
    let id = new_id();
    store
        .set(&id, &sample_record(now_ms() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    store
        .collection()
        .client()
        .database(&database)
        .drop()
        .await
        .unwrap();
}

#[tokio::test]
async fn conflicting_index_on_expires_is_reported() {
    let store = store().await;
    let other = store
        .collection()
        .client()
        .database(DATABASE)
        .collection::<Document>(&format!("sessions_{}", nanoid::nanoid!(12)));
    let index = session_store_mongodb::mongodb::IndexModel::builder()
        .keys(doc! { "expires": 1 })
        .options(
            session_store_mongodb::mongodb::options::IndexOptions::builder()
                .expire_after(Duration::from_secs(3600))
                .build(),
        )
        .build();
    other.create_index(index).await.unwrap();
    let err = MongoStore::from_collection(other.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    other.drop().await.unwrap();
    drop_collection(&store).await;
}

/// The index of `store`'s collection named `name`, if any.
async fn index_named(store: &MongoStore, name: &str) -> Option<IndexModel> {
    let mut indexes = store.collection().list_indexes().await.unwrap();
    while indexes.advance().await.unwrap() {
        let index = indexes.deserialize_current().unwrap();
        if index.options.as_ref().and_then(|o| o.name.as_deref()) == Some(name) {
            return Some(index);
        }
    }
    None
}

/// The `owner` field follows the record through every write, is absent for unowned
/// sessions, and the owner index is partial: it holds owned sessions only.
#[tokio::test]
async fn owner_field_and_index() {
    let store = store().await;
    MongoStore::from_collection(store.collection().clone())
        .await
        .expect("creating the owner index twice must succeed");
    let index = index_named(&store, OWNER_INDEX)
        .await
        .expect("no owner index");
    assert_eq!(index.keys, doc! { "owner": 1, "expires": 1 });
    let options = index.options.expect("index without options");
    assert_eq!(
        options.partial_filter_expression,
        Some(doc! { "owner": { "$gt": "" } }),
        "unowned sessions must not be indexed"
    );

    let owner_of = |document: Option<Document>| {
        document
            .expect("document missing")
            .get("owner")
            .map(|owner| owner.as_str().expect("owner is a string").to_owned())
    };
    let later = now_ms() + Duration::from_secs(600);
    let owned = |owner: Option<&str>, version: u64| {
        let mut record = sample_record(later);
        record.owner = owner.map(str::to_owned);
        record.label = Some("curl".into());
        record.version = version;
        record
    };
    let id = new_id();
    assert!(store.create(&id, &owned(Some("ann"), 1)).await.unwrap());
    let stored = raw(&store, &id).await.unwrap();
    let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_id", "data", "v", "expires", "owner"]);
    assert_eq!(stored.get_str("owner").unwrap(), "ann");
    assert_eq!(
        store.get(&id).await.unwrap().unwrap(),
        owned(Some("ann"), 1)
    );

    assert!(store.update(&id, &owned(Some("bob"), 2)).await.unwrap());
    assert_eq!(owner_of(raw(&store, &id).await).as_deref(), Some("bob"));
    assert_eq!(
        store
            .compare_and_set(&id, &owned(Some("cy"), 3), 2)
            .await
            .unwrap(),
        CasOutcome::Written
    );
    assert_eq!(owner_of(raw(&store, &id).await).as_deref(), Some("cy"));
    assert!(store.touch(&id, later).await.unwrap());
    assert_eq!(
        owner_of(raw(&store, &id).await).as_deref(),
        Some("cy"),
        "touch keeps the owner"
    );
    store.set(&id, &owned(None, 4)).await.unwrap();
    assert_eq!(owner_of(raw(&store, &id).await), None, "unowned: no field");
    assert!(store.owned("cy").await.unwrap().is_empty());
    drop_collection(&store).await;
}

/// The query `owned` sends walks the owner index: with 10,000 sessions of other owners (and
/// some unowned and expired ones) in the collection, the server's `explain` of exactly the
/// `find` that `owned` sent (captured with the driver's command monitoring) shows an index
/// scan of the owner index and no collection scan, and examines only the owner's documents.
#[tokio::test]
async fn listing_an_owner_scans_the_owner_index_not_the_collection() {
    let sent: Arc<Mutex<Vec<Document>>> = Arc::default();
    let mut options = ClientOptions::parse(url()).await.unwrap();
    let finds = sent.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event
            && started.command_name == "find"
        {
            finds.lock().unwrap().push(started.command);
        }
    }));
    let client = Client::with_options(options).unwrap();
    let name = format!("sessions_{}", nanoid::nanoid!(12));
    let store = MongoStore::from_client(&client, DATABASE, &name)
        .await
        .unwrap();

    // Others' sessions, inserted in bulk in the store's layout.
    const OTHERS: usize = 10_000;
    let later = now_ms() + Duration::from_secs(3600);
    let mut record = sample_record(later);
    let others: Vec<Document> = (0..OTHERS)
        .map(|i| {
            let owner = format!("user-{:05}", i % 2_500);
            record.owner = Some(owner.clone());
            doc! {
                "_id": new_id().as_str(),
                "data": Binary { subtype: BinarySubtype::Generic, bytes: record.encode_payload() },
                "v": 0_i64,
                "expires": DateTime::from_millis(later.unix_timestamp() * 1000),
                "owner": owner,
            }
        })
        .collect();
    store.collection().insert_many(others).await.unwrap();
    // The owner's sessions, a session of theirs that has expired but is still stored, and
    // unowned ones, through the store.
    let owner = "ann";
    let mut mine = Vec::new();
    for _ in 0..3 {
        let id = new_id();
        let mut record = sample_record(later);
        record.owner = Some(owner.into());
        store.set(&id, &record).await.unwrap();
        mine.push(id.as_str().to_owned());
    }
    let mut expired = sample_record(now_ms() - Duration::from_secs(5));
    expired.owner = Some(owner.into());
    store.set(&new_id(), &expired).await.unwrap();
    for _ in 0..5 {
        store.set(&new_id(), &sample_record(later)).await.unwrap();
    }

    sent.lock().unwrap().clear();
    let mut listed: Vec<String> = store
        .owned(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, record)| {
            assert_eq!(record.owner.as_deref(), Some(owner));
            id.as_str().to_owned()
        })
        .collect();
    listed.sort();
    mine.sort();
    assert_eq!(listed, mine);

    let finds = std::mem::take(&mut *sent.lock().unwrap());
    assert_eq!(finds.len(), 1, "owned must be one find: {finds:?}");
    let filter = finds[0].get_document("filter").unwrap().clone();
    let explain = client
        .database(DATABASE)
        .run_command(doc! {
            "explain": { "find": &name, "filter": filter },
            "verbosity": "executionStats",
        })
        .await
        .unwrap_or_else(|e| panic!("the server cannot explain the listing query: {e}"));
    let plan = explain
        .get_document("queryPlanner")
        .and_then(|p| p.get_document("winningPlan"))
        .unwrap_or_else(|_| panic!("no winning plan in {explain}"))
        .clone();
    let stages = stages_of(&plan);
    assert!(
        stages
            .iter()
            .any(|(stage, index)| stage == "IXSCAN" && index.as_deref() == Some(OWNER_INDEX)),
        "no index scan of {OWNER_INDEX}: {plan}"
    );
    assert!(
        !stages.iter().any(|(stage, _)| stage == "COLLSCAN"),
        "a collection scan: {plan}"
    );
    let stats = explain
        .get_document("executionStats")
        .unwrap_or_else(|_| panic!("no execution stats in {explain}"));
    let number = |field: &str| match stats.get(field) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        other => panic!("executionStats.{field} is {other:?}"),
    };
    assert_eq!(number("nReturned"), 3, "{stats}");
    assert!(
        number("totalDocsExamined") <= 4,
        "examined more than the owner's documents: {stats}"
    );
    store.collection().drop().await.unwrap();
}

/// Every `(stage, indexName)` of a plan tree (`inputStage`, `inputStages`).
fn stages_of(plan: &Document) -> Vec<(String, Option<String>)> {
    let mut stages = vec![(
        plan.get_str("stage").unwrap_or_default().to_owned(),
        plan.get_str("indexName").ok().map(str::to_owned),
    )];
    if let Ok(input) = plan.get_document("inputStage") {
        stages.extend(stages_of(input));
    }
    if let Ok(inputs) = plan.get_array("inputStages") {
        for input in inputs {
            if let Bson::Document(input) = input {
                stages.extend(stages_of(input));
            }
        }
    }
    stages
}
