//! The manager: the commit table.

use super::*;

#[tokio::test]
async fn new_and_empty_sets_nothing_and_stores_nothing() {
    let h = harness(|b| b);
    let r = h.request(None, |_| {}).await;
    assert_eq!(r.set_cookies, Vec::<String>::new());
    assert_eq!(h.store.total(), 0);
    assert!(h.store.inner.is_empty());
    // Inserting then removing leaves it empty too.
    let r = h
        .request(None, |s| {
            s.insert("k", 1).unwrap();
            s.remove("k");
        })
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
}

#[tokio::test]
async fn new_and_populated_creates_and_sets_the_cookie() {
    let h = harness(|b| b);
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(
        r.cookie().unwrap(),
        format!("sid={}; HttpOnly; Path=/", id.as_str())
    );
    assert_eq!((h.store.count("create"), h.store.count("set")), (1, 0));
    let stored = h.stored(&id).await.expect("stored");
    assert_eq!(stored_visits(&stored), 1);
    // Browser-session cookie: the store keeps it for the idle lifetime (one day).
    assert_eq!(stored.expires, at(86400));
    assert!(
        r.session.is_new(),
        "is_new stays true for the whole request"
    );
}

#[tokio::test]
async fn new_session_with_max_age_sends_max_age_and_expires() {
    let h = harness(|b| b.max_age(secs(3600)));
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:00:00 GMT")
    );
    assert_eq!(h.expires(&id).await, at(3600));
}

/// A new session whose id is already taken is stored under a fresh one, and its cookie
/// carries that one; a generator that only repeats itself gives up with `Conflict`.
#[tokio::test]
async fn a_new_session_whose_id_is_taken_moves_to_a_fresh_id() {
    let (a, b) = ("A".repeat(21), "B".repeat(21));
    let script = Arc::new(Mutex::new(vec![b.clone(), a.clone(), a.clone()]));
    let next = script.clone();
    let h = harness(move |builder| {
        builder.id_generator(IdGenerator::custom(
            move || {
                let mut ids = next.lock().unwrap();
                ids.pop().unwrap_or_else(|| "A".repeat(21))
            },
            |id| id.len() == 21,
        ))
    });
    let (cookie, id) = h.existing().await;
    assert_eq!(id.as_str(), a);
    h.store.reset();
    let r = h.request(None, |s| s.insert("user", "bob").unwrap()).await;
    assert_eq!(r.session.id().as_str(), b);
    assert_eq!(r.pair(), format!("sid={b}"));
    assert_eq!(h.store.count("create"), 2);
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert!(stored.data.contains_key("user"));
    // The session that held the id is untouched.
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert_eq!(r.session.id(), id);
    // Every id taken: three attempts, then an error, and nothing is overwritten.
    let s = h.manager.load(&cookie_headers(None)).await.unwrap();
    s.insert("user", "eve").unwrap();
    let err = s.commit().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { attempts: 3 }), "{err:?}");
    let stored = h.stored(&id).await.unwrap();
    assert!(!stored.data.contains_key("user"));
}

#[tokio::test]
async fn existing_modified_writes_without_cookie() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(60));
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(r.set_cookies, Vec::<String>::new(), "expiry did not change");
    assert_eq!(r.session.id(), id);
    assert_eq!((h.store.count("get"), h.store.count("cas")), (1, 1));
    assert_eq!(h.store.total(), 2);
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 2);
    assert_eq!(stored.expires, at(3600), "expiry untouched");
    assert_eq!(stored.version, 1);
}

#[tokio::test]
async fn existing_unmodified_not_due_does_nothing() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(secs(600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(599));
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1, "only the load");
    assert_eq!(h.expires(&id).await, at(3600));
}

#[tokio::test]
async fn existing_due_for_touch_touches_and_sets_the_cookie() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(secs(600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(600));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:10:00 GMT")
    );
    assert_eq!((h.store.count("get"), h.store.count("touch")), (1, 1));
    assert_eq!(h.store.total(), 2, "touch writes no data");
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.expires, at(4200));
    assert_eq!(stored.version, 0, "touch leaves the version");
    // The next request within touchAfter of the touch does nothing: the stored expiry is
    // the new one (no stale-expiry storm).
    h.store.reset();
    h.clock.advance(secs(300));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1);
}

#[tokio::test]
async fn touched_and_modified_writes_once_with_the_new_expiry() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(10));
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:00:10 GMT")
    );
    assert_eq!((h.store.count("cas"), h.store.count("touch")), (1, 0));
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.expires, at(3610));
    assert_eq!(stored_visits(&stored), 2);
}

#[tokio::test]
async fn destroyed_sends_the_removal_cookie_and_destroys() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    let r = h.request(Some(&cookie), |s| s.destroy()).await;
    assert_eq!(r.cookie().unwrap(), REMOVAL);
    assert_eq!(h.store.count("destroy"), 1);
    assert!(h.stored(&id).await.is_none());
    // The old cookie now loads a fresh session under a new id.
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new());
    assert_ne!(r.session.id(), id);
}

#[tokio::test]
async fn destroying_a_new_session_clears_only_a_cookie_the_client_sent() {
    let h = harness(|b| b);
    let r = h.request(None, |s| s.destroy()).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
    let r = h
        .request(Some("sid=AAAAAAAAAAAAAAAAAAAAA"), |s| s.destroy())
        .await;
    assert_eq!(r.cookie().unwrap(), REMOVAL);
}

#[tokio::test]
async fn data_inserted_after_destroy_starts_a_new_session() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let r = h
        .request(Some(&cookie), |s| {
            s.destroy();
            s.insert("fresh", true).unwrap();
        })
        .await;
    let new_id = r.session.id();
    assert_ne!(new_id, id);
    assert!(h.stored(&id).await.is_none());
    let stored = h.stored(&new_id).await.unwrap();
    assert!(!stored.data.contains_key("visits"));
    assert_eq!(
        r.cookie().unwrap(),
        format!("sid={}; HttpOnly; Path=/", new_id.as_str())
    );
}

#[tokio::test]
async fn regenerate_moves_the_data_to_a_new_id() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, old) = h.existing().await;
    h.clock.advance(secs(30));
    h.store.reset();
    let r = h.request(Some(&cookie), |s| s.regenerate()).await;
    let new = r.session.id();
    assert_ne!(new, old);
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&new, "Thu, 01 Jan 2026 01:00:30 GMT")
    );
    assert!(h.stored(&old).await.is_none(), "old record destroyed");
    let stored = h.stored(&new).await.unwrap();
    assert_eq!(stored_visits(&stored), 1);
    assert_eq!((h.store.count("create"), h.store.count("destroy")), (1, 1));
    // The new cookie works; the old one does not.
    let r = h
        .request(Some(&format!("sid={}", new.as_str())), |s| {
            assert_eq!(visits(s), 1)
        })
        .await;
    assert!(!r.session.is_new());
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new());
}

#[tokio::test]
async fn regenerating_an_empty_new_session_stores_nothing() {
    let h = harness(|b| b);
    let r = h.request(None, |s| s.regenerate()).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
}
