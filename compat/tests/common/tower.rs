// Included by `tower.rs` (tower-sessions 0.14) and `tower_015.rs` (0.15), which define
// `adapter` (our interop module) and `memory_store` (tower-sessions' memory store crate).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use adapter::tower_sessions_core::session::{Id, Record as TowerRecord};
use adapter::tower_sessions_core::{Session, SessionStore as TowerStore};
use adapter::{AsTowerSessionsStore, RESERVED_KEY, TowerSessionsStore, session_id_of, tower_id};
use memory_store::MemoryStore as TowerMemoryStore;
use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::{Capabilities, Codec, Error, MemoryStore, SessionManager, SessionStore};

#[tokio::test]
async fn conformance_over_tower_memory_store() {
    let store = TowerSessionsStore::new(TowerMemoryStore::default());
    assert_eq!(store.capabilities(), Capabilities::NONE);
    run(&store, &SuiteOptions::new(Capabilities::NONE)).await;
}

#[tokio::test]
async fn conformance_through_both_directions() {
    // Ours → theirs → ours: every mapping is exercised by the suite.
    let store = TowerSessionsStore::new(AsTowerSessionsStore::new(MemoryStore::new()));
    run(&store, &SuiteOptions::new(Capabilities::NONE)).await;
}

#[tokio::test]
async fn records_are_stored_under_the_reserved_key_and_hashed_id() {
    let theirs = TowerMemoryStore::default();
    let store = TowerSessionsStore::new(theirs.clone());
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = u64::MAX;
    store.set(&id, &record).await.unwrap();

    let raw = theirs.load(&tower_id(&id)).await.unwrap().expect("stored");
    assert_eq!(raw.id, tower_id(&id));
    assert_eq!(raw.expiry_date, record.expires);
    assert_eq!(raw.data.keys().collect::<Vec<_>>(), vec![RESERVED_KEY]);
    let text = serde_json::to_string(&raw.data).unwrap();
    assert!(!text.contains(id.as_str()), "the id leaked into the record");
    assert_eq!(raw.data[RESERVED_KEY]["version"], u64::MAX);

    let back = store.get(&id).await.unwrap().unwrap();
    assert_eq!(back, record);
}

#[tokio::test]
async fn foreign_records_are_corrupt_not_panics() {
    let theirs = TowerMemoryStore::default();
    let store = TowerSessionsStore::new(theirs.clone());
    let expiry_date = session_store::time::OffsetDateTime::now_utc() + Duration::from_secs(600);
    let cases = [
        serde_json::json!(null),
        serde_json::json!({"format": 2, "version": 0, "payload": ""}),
        serde_json::json!({"format": 1, "payload": ""}),
        serde_json::json!({"format": 1, "version": 0, "payload": "!!!"}),
        serde_json::json!({"format": 1, "version": 0, "payload": "AAAA"}),
    ];
    for (i, envelope) in cases.into_iter().enumerate() {
        let id = new_id();
        let mut data = HashMap::new();
        if i > 0 {
            data.insert(RESERVED_KEY.to_owned(), envelope);
        } else {
            data.insert(
                "user".to_owned(),
                serde_json::json!("written by tower-sessions"),
            );
        }
        theirs
            .save(&TowerRecord {
                id: tower_id(&id),
                data,
                expiry_date,
            })
            .await
            .unwrap();
        let result = store.get(&id).await;
        assert!(
            matches!(
                result,
                Err(Error::Corrupt {
                    store: "tower-sessions",
                    ..
                })
            ),
            "case {i}: {result:?}"
        );
    }
}

#[test]
fn id_mapping_is_stable_and_distinct() {
    let ids: Vec<_> = (0..20_000).map(|_| new_id()).collect();
    let mapped: HashSet<i128> = ids.iter().map(|id| tower_id(id).0).collect();
    assert_eq!(mapped.len(), ids.len());
    let id = session_store::SessionId::new("fixed");
    assert_eq!(tower_id(&id), tower_id(&id.clone()));
    // Theirs → ours is their own 22-character display form, and bijective.
    let theirs = Id::default();
    let ours = session_id_of(&theirs);
    assert_eq!(ours.as_str().len(), 22);
    assert_eq!(ours.as_str().parse::<Id>().unwrap(), theirs);
}

#[tokio::test]
async fn our_store_serves_tower_sessions() {
    let ours = MemoryStore::new();
    let store = Arc::new(AsTowerSessionsStore::new(ours.clone()));

    let session = Session::new(None, store.clone(), None);
    session.insert("user", "alice").await.unwrap();
    session
        .insert(
            "cart",
            serde_json::json!({"items": [1, 2, 3], "total": 12.5}),
        )
        .await
        .unwrap();
    session.save().await.unwrap();
    let id = session.id().expect("saved sessions have an id");

    // Stored in our store under their id's display form, JSON-encoded.
    let raw = ours
        .get(&session_id_of(&id))
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(raw.codec, Codec::Json);
    assert_eq!(raw.data["user"], b"\"alice\"".to_vec());

    let again = Session::new(Some(id), store.clone(), None);
    assert_eq!(
        again.get::<String>("user").await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(
        again
            .get::<serde_json::Value>("cart")
            .await
            .unwrap()
            .unwrap()["total"],
        12.5
    );
    again.delete().await.unwrap();
    assert!(ours.get(&session_id_of(&id)).await.unwrap().is_none());
    assert!(store.load(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn tower_create_never_overwrites() {
    for native_create in [true, false] {
        let ours: Arc<dyn SessionStore> = if native_create {
            Arc::new(MemoryStore::new())
        } else {
            // Our store without create: the adapter checks with get before set.
            Arc::new(TowerSessionsStore::new(TowerMemoryStore::default()))
        };
        let store = AsTowerSessionsStore::new(ours.clone());
        let expiry_date = session_store::time::OffsetDateTime::now_utc() + Duration::from_secs(60);
        let mut first = TowerRecord {
            id: Id::default(),
            data: HashMap::from([("n".to_owned(), serde_json::json!(1))]),
            expiry_date,
        };
        store.create(&mut first).await.unwrap();
        let mut second = TowerRecord {
            id: first.id,
            data: HashMap::from([("n".to_owned(), serde_json::json!(2))]),
            expiry_date,
        };
        store.create(&mut second).await.unwrap();
        assert_ne!(second.id, first.id, "a colliding create must pick a new id");
        assert_eq!(store.load(&first.id).await.unwrap().unwrap().data["n"], 1);
        assert_eq!(store.load(&second.id).await.unwrap().unwrap().data["n"], 2);
    }
}

#[tokio::test]
async fn our_errors_reach_tower_sessions_with_their_chain() {
    /// A store that is always unreachable.
    struct Down;
    #[session_store::async_trait]
    impl SessionStore for Down {
        fn name(&self) -> &'static str {
            "down"
        }
        async fn get(
            &self,
            _id: &session_store::SessionId,
        ) -> session_store::Result<Option<session_store::Record>> {
            Err(Error::unavailable(
                "down",
                std::io::Error::other("connection refused"),
            ))
        }
        async fn set(
            &self,
            _id: &session_store::SessionId,
            _record: &session_store::Record,
        ) -> session_store::Result<()> {
            Err(Error::unavailable(
                "down",
                std::io::Error::other("connection refused"),
            ))
        }
        async fn destroy(&self, _id: &session_store::SessionId) -> session_store::Result<()> {
            Ok(())
        }
    }
    let store = AsTowerSessionsStore::new(Down);
    let err = store.load(&Id::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unavailable") && text.contains("connection refused"),
        "{text}"
    );
}

#[tokio::test]
async fn manager_over_a_tower_sessions_store() {
    let manager = SessionManager::new(TowerSessionsStore::new(TowerMemoryStore::default()));
    let session = manager.load(&http::HeaderMap::new()).await.unwrap();
    session.insert("visits", 1u32).unwrap();
    let mut headers = http::HeaderMap::new();
    manager
        .finish(&session, http::StatusCode::OK, &mut headers)
        .await
        .unwrap();
    let cookie = headers[http::header::SET_COOKIE].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let mut request = http::HeaderMap::new();
    request.insert(http::header::COOKIE, pair.parse().unwrap());
    let again = manager.load(&request).await.unwrap();
    assert!(!again.is_new());
    assert_eq!(again.get::<u32>("visits").unwrap(), Some(1));
}
