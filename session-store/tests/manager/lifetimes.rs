//! The manager: touchAfter and lifetimes.

use super::*;

#[tokio::test]
async fn touch_after_zero_extends_on_every_request() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    for step in 1..=3u64 {
        h.clock.advance(secs(50));
        let r = h.request(Some(&cookie), |_| {}).await;
        assert!(r.cookie().unwrap().contains("Max-Age=100"));
        assert_eq!(h.expires(&id).await, at(50 * step + 100));
    }
}

#[tokio::test]
async fn without_touch_after_the_session_expires_at_max_age() {
    let h = harness(|b| b.max_age(secs(100)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(99));
    let r = h.request(Some(&cookie), bump).await;
    assert!(r.set_cookies.is_empty());
    h.clock.advance(secs(1));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "expired at created + maxAge");
    assert_ne!(r.session.id(), id);
}

#[tokio::test]
async fn browser_session_cookies_slide_in_the_store_without_set_cookie() {
    let h = harness(|b| b.idle_lifetime(secs(1000)).touch_after(secs(100)));
    let (cookie, id) = h.existing().await;
    assert_eq!(h.expires(&id).await, at(1000));
    h.clock.advance(secs(100));
    h.store.reset();
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(
        r.set_cookies.is_empty(),
        "the browser's cookie has no expiry to change"
    );
    assert_eq!(h.store.count("touch"), 1);
    assert_eq!(h.expires(&id).await, at(1100));
    h.clock.advance(secs(999));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(!r.session.is_new(), "alive: the idle lifetime slid");
    h.clock.advance(secs(1000));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "idle for the whole lifetime: gone");
}

#[tokio::test]
async fn manual_touch_extends_regardless_of_touch_after() {
    let h = harness(|b| b.max_age(secs(100)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(40));
    let r = h.request(Some(&cookie), |s| s.touch()).await;
    assert!(
        r.cookie()
            .unwrap()
            .contains("Max-Age=100; Expires=Thu, 01 Jan 2026 00:02:20 GMT")
    );
    assert_eq!(h.expires(&id).await, at(140));
}

#[tokio::test]
async fn a_store_without_touch_still_extends_the_expiry() {
    let h = harness_with(Capabilities::NONE.with_update(true), |b| {
        b.max_age(secs(100)).touch_after(Duration::ZERO)
    });
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(30));
    h.request(Some(&cookie), |_| {}).await;
    assert_eq!(h.expires(&id).await, at(130));
}

const DAY: u64 = 24 * 3600;

#[tokio::test]
async fn remember_me_gives_one_session_its_own_max_age() {
    let h = harness(|b| b.idle_lifetime(secs(1000)).touch_after(Duration::ZERO));
    let login = h
        .request(None, |s| {
            s.insert("user", "ann").unwrap();
            assert_eq!(s.max_age(), None, "the manager's: a browser-session cookie");
            s.set_max_age(Some(secs(30 * DAY))).unwrap();
            assert_eq!(s.max_age(), Some(secs(30 * DAY)));
        })
        .await;
    assert!(login.cookie().unwrap().contains("Max-Age=2592000;"));
    let id = login.session.id();
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.lifetime, Some(Lifetime::MaxAge(secs(30 * DAY))));
    assert_eq!(
        (stored.created, stored.expires),
        (Some(at(0)), at(30 * DAY))
    );
    // Every later request of this session uses its lifetime: touch, cookie, touchAfter.
    h.clock.advance(secs(5000));
    let r = h.request(Some(&login.pair()), |_| {}).await;
    assert!(!r.session.is_new(), "alive past the idle lifetime");
    assert_eq!(r.session.max_age(), Some(secs(30 * DAY)));
    assert!(r.cookie().unwrap().contains("Max-Age=2592000;"));
    assert_eq!(h.expires(&id).await, at(5000 + 30 * DAY));
    // Another session of the same manager keeps the manager's lifetime.
    let (other, other_id) = h.existing().await;
    assert!(!other.contains("Max-Age"), "{other}");
    assert_eq!(h.expires(&other_id).await, at(6000));
}

#[tokio::test]
async fn a_browser_session_choice_overrides_the_managers_max_age() {
    let h = harness(|b| {
        b.max_age(secs(3600))
            .idle_lifetime(secs(1000))
            .touch_after(secs(100))
    });
    let r = h
        .request(None, |s| {
            bump(s);
            s.set_max_age(None).unwrap();
        })
        .await;
    let cookie = r.cookie().unwrap();
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
    let id = r.session.id();
    assert_eq!(h.expires(&id).await, at(1000), "the idle lifetime");
    h.clock.advance(secs(500));
    let r = h.request(Some(&r.pair()), |_| {}).await;
    assert!(
        r.set_cookies.is_empty(),
        "a browser-session cookie is not re-sent"
    );
    assert_eq!(r.session.max_age(), None);
    assert_eq!(h.expires(&id).await, at(1500), "slid by the idle lifetime");
}

#[tokio::test]
async fn changing_the_lifetime_is_a_write_and_a_new_cookie() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(10));
    h.store.reset();
    let r = h
        .request(Some(&cookie), |s| {
            s.set_max_age(Some(secs(7200))).unwrap();
            assert!(s.is_modified());
        })
        .await;
    assert_eq!(h.store.count("cas"), 1, "a write, not a touch");
    assert_eq!(h.store.count("touch"), 0);
    assert!(r.cookie().unwrap().contains("Max-Age=7200;"));
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.lifetime, Some(Lifetime::MaxAge(secs(7200))));
    assert_eq!(stored.expires, at(10 + 7200));
    // Choosing the lifetime it already has changes nothing.
    h.store.reset();
    let r = h
        .request(Some(&cookie), |s| s.set_max_age(Some(secs(7200))).unwrap())
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1, "the load only");
}

#[tokio::test]
async fn regenerate_keeps_the_lifetime_and_the_creation_time() {
    let h = harness(|b| b.max_age(secs(3600)));
    let first = h
        .request(None, |s| {
            bump(s);
            s.set_max_age(Some(secs(DAY))).unwrap();
        })
        .await;
    h.clock.advance(secs(60));
    let r = h.request(Some(&first.pair()), |s| s.regenerate()).await;
    assert_ne!(r.session.id(), first.session.id());
    assert!(r.cookie().unwrap().contains("Max-Age=86400;"));
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert_eq!(stored.lifetime, Some(Lifetime::MaxAge(secs(DAY))));
    assert_eq!(
        stored.created,
        Some(at(0)),
        "regenerate keeps the absolute clock"
    );
    assert_eq!(stored.expires, at(60 + DAY));
    // A destroyed session's successor starts over.
    let r = h
        .request(Some(&r.pair()), |s| {
            s.destroy();
            assert_eq!(s.max_age(), Some(secs(3600)));
            bump(s);
        })
        .await;
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert_eq!((stored.created, stored.lifetime), (Some(at(60)), None));
}

#[tokio::test]
async fn bad_lifetimes_are_errors_at_the_call() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, _) = h.existing().await;
    let session = h.load(&cookie).await;
    for bad in [Duration::ZERO, Duration::from_millis(999), secs(401 * DAY)] {
        let err = session.set_max_age(Some(bad)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad:?}: {err}");
    }
    assert_eq!(session.max_age(), Some(secs(3600)), "nothing changed");
    assert!(!session.is_modified());
    session.set_max_age(Some(secs(400 * DAY))).unwrap();
    for bad in [Duration::ZERO, Duration::from_millis(500), secs(401 * DAY)] {
        let built = SessionManager::builder(MemoryStore::new())
            .absolute_lifetime(bad)
            .build();
        assert!(matches!(built, Err(Error::Config(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn the_absolute_lifetime_ends_a_session_whatever_its_activity() {
    let h = harness(|b| {
        b.max_age(secs(300))
            .touch_after(Duration::ZERO)
            .absolute_lifetime(secs(1000))
    });
    let (cookie, id) = h.existing().await;
    for t in [200, 400, 600] {
        h.clock.set(at(t));
        let r = h.request(Some(&cookie), |_| {}).await;
        assert!(!r.session.is_new());
        assert_eq!(h.expires(&id).await, at(t + 300));
    }
    // The next extensions stop at creation + 1000 s, and so does the cookie.
    h.clock.set(at(800));
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(h.expires(&id).await, at(1000));
    assert!(r.cookie().unwrap().contains("Max-Age=200;"));
    h.clock.set(at(900));
    let r = h
        .request(Some(&cookie), |s| {
            s.touch();
            s.set_max_age(Some(secs(DAY))).unwrap();
        })
        .await;
    assert_eq!(r.session.expires(), at(1000));
    assert_eq!(h.expires(&id).await, at(1000));
    h.clock.set(at(1000));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "past the absolute lifetime");
    assert_ne!(r.session.id(), id);
}

#[tokio::test]
async fn a_shorter_absolute_lifetime_ends_older_sessions_and_removes_them() {
    let clock = ManualClock::new(START);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let build = |absolute: Option<Duration>| {
        let b = SessionManager::builder(store.clone())
            .clock(Arc::new(clock.clone()))
            .max_age(secs(DAY));
        match absolute {
            Some(d) => b.absolute_lifetime(d),
            None => b,
        }
        .build()
        .unwrap()
    };
    let before = Harness {
        clock: clock.clone(),
        store: Probe::new(&clock, Capabilities::ALL),
        manager: build(None),
    };
    let (cookie, id) = before.existing().await;
    clock.advance(secs(2000));
    // Deployed with an absolute lifetime of 1000 s: the 2000 s old session is over.
    let manager = build(Some(secs(1000)));
    let session = manager.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert!(session.is_new() && session.is_empty());
    let mut out = HeaderMap::new();
    manager
        .finish(&session, StatusCode::OK, &mut out)
        .await
        .unwrap();
    assert_eq!(out.get(SET_COOKIE).unwrap(), REMOVAL);
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "its record is destroyed"
    );
}

#[tokio::test]
async fn a_record_without_a_creation_time_gets_one_at_its_next_write() {
    let h = harness(|b| b.max_age(secs(3600)).absolute_lifetime(secs(7200)));
    let id = IdGenerator::nanoid().generate();
    let mut record = Record::new(at(3600), Codec::MessagePack);
    record
        .data
        .insert("visits".into(), Codec::MessagePack.encode(&1u32).unwrap());
    h.store
        .inner
        .set(&h.manager.store_key(&id), &record)
        .await
        .unwrap();
    h.clock.advance(secs(100));
    let cookie = format!("sid={}", id.as_str());
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(
        r.session.created(),
        Some(at(100)),
        "the clock starts at its first load"
    );
    assert_eq!(h.stored(&id).await.unwrap().created, Some(at(100)));
    assert_eq!(visits(&r.session), 2);
    // With an absolute lifetime, even a request that only reads such a session writes its
    // creation time, so the clock does not restart on every load.
    let other = IdGenerator::nanoid().generate();
    h.store
        .inner
        .set(&h.manager.store_key(&other), &record)
        .await
        .unwrap();
    h.clock.advance(secs(100));
    let cookie = format!("sid={}", other.as_str());
    h.request(Some(&cookie), |_| {}).await;
    assert_eq!(h.stored(&other).await.unwrap().created, Some(at(200)));
}
