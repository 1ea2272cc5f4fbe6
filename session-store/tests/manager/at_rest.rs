//! The manager: what the store holds never includes the ids cookies carry.

use super::*;

#[tokio::test]
async fn stores_get_digests_of_ids_not_the_ids() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    let key = h.manager.store_key(&id);
    assert_eq!(key, stored_key(&id));
    assert_ne!(key.as_str(), id.as_str());
    assert_eq!(key.as_str().len(), 43);
    assert!(!key.as_str().contains(id.as_str()));
    assert!(h.store.inner.get(&key).await.unwrap().is_some());
    assert!(
        h.store.inner.get(&id).await.unwrap().is_none(),
        "nothing under the id"
    );
    // The session works as before: one lookup per request.
    h.store.reset();
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(visits(&r.session), 2);
    assert_eq!(h.store.count("get"), 1);
    // A cookie holding the key itself loads nothing.
    let r = h
        .request(Some(&format!("sid={}", key.as_str())), |_| {})
        .await;
    assert!(r.session.is_new());
}

#[tokio::test]
async fn raw_ids_when_asked() {
    let h = harness(|b| b.max_age(secs(3600)).hashed_ids(false));
    let (_, id) = h.existing().await;
    assert_eq!(h.manager.store_key(&id), id);
    assert!(h.store.inner.get(&id).await.unwrap().is_some());
}

#[tokio::test]
async fn sessions_stored_under_raw_ids_move_to_digests_when_read_raw_ids_is_on() {
    let clock = ManualClock::new(START);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let manager = |hashed: bool, read_raw: bool| {
        SessionManager::builder(store.clone())
            .clock(Arc::new(clock.clone()))
            .max_age(secs(3600))
            .hashed_ids(hashed)
            .read_raw_ids(read_raw)
            .build()
            .unwrap()
    };
    // Written by a release that kept raw ids.
    let old = manager(false, false);
    let session = old.new_session();
    bump(&session);
    session.commit().await.unwrap();
    let id = session.id();
    let cookie = cookie_headers(Some(&format!("sid={}", id.as_str())));
    // Without the migration the session is not found (the user logs in again).
    assert!(manager(true, false).load(&cookie).await.unwrap().is_new());
    // With it, the first request finds it and moves it.
    let migrating = manager(true, true);
    let loaded = migrating.load(&cookie).await.unwrap();
    assert!(!loaded.is_new());
    assert_eq!(visits(&loaded), 1);
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "gone from the raw id"
    );
    let moved = store.get(&stored_key(&id)).await.unwrap().unwrap();
    assert_eq!(stored_visits(&moved), 1);
    // Later requests find it under its digest, with or without the migration.
    bump(&loaded);
    loaded.commit().await.unwrap();
    let again = manager(true, false).load(&cookie).await.unwrap();
    assert_eq!(visits(&again), 2);
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn data_encrypted_at_rest_reads_back_and_rotates() {
    let keys = |secrets: &[[u8; 32]]| DataKeys::new(secrets.iter().copied()).unwrap();
    let h = harness(|b| b.max_age(secs(3600)).encrypt_data(keys(&[[1; 32]])));
    let r = h
        .request(None, |s| {
            s.insert("secret", "the cat's name").unwrap();
            s.set_owner("ann").unwrap();
        })
        .await;
    let cookie = r.pair();
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert_eq!(stored.data.keys().collect::<Vec<_>>(), ["\0sealed"]);
    assert!(!format!("{:?}", stored.data.get("\0sealed")).contains("cat"));
    assert_eq!(
        stored.owner.as_deref(),
        Some("ann"),
        "the owner stays readable"
    );
    assert_eq!(h.manager.sessions_of("ann").await.unwrap().len(), 1);
    // Read back, changed, merged: all through the seal.
    let s = h.load(&cookie).await;
    assert_eq!(
        s.get::<String>("secret").unwrap().unwrap(),
        "the cat's name"
    );
    bump(&s);
    s.commit().await.unwrap();
    // A manager with a new first key still reads it; one without the key starts afresh.
    let rotated = SessionManager::builder(h.store.counting.clone())
        .clock(Arc::new(h.clock.clone()))
        .encrypt_data(keys(&[[2; 32], [1; 32]]))
        .build()
        .unwrap();
    let s = rotated.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert_eq!(visits(&s), 1);
    let stranger = SessionManager::builder(h.store.counting.clone())
        .clock(Arc::new(h.clock.clone()))
        .encrypt_data(keys(&[[3; 32]]))
        .build()
        .unwrap();
    assert!(
        stranger
            .load(&cookie_headers(Some(&cookie)))
            .await
            .unwrap()
            .is_new()
    );
    // A record stored before encryption was turned on is read, and sealed at its write.
    let plain = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = plain.existing().await;
    let sealing = SessionManager::builder(plain.store.counting.clone())
        .clock(Arc::new(plain.clock.clone()))
        .encrypt_data(keys(&[[1; 32]]))
        .build()
        .unwrap();
    let s = sealing.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert_eq!(visits(&s), 1);
    bump(&s);
    s.commit().await.unwrap();
    let stored = plain.stored(&id).await.unwrap();
    assert_eq!(stored.data.keys().collect::<Vec<_>>(), ["\0sealed"]);
    // Cookie-only sessions are always encrypted: the builder refuses a second layer.
    let built = SessionManager::cookie_only(PrivateCodec::from_secrets([[9u8; 32]]).unwrap())
        .encrypt_data(keys(&[[1; 32]]))
        .build();
    assert!(matches!(built, Err(Error::Config(_))));
}
