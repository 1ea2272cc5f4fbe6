//! The manager: sessions of an owner, listed and revoked.

use super::*;

/// Logs a new session in as `owner` with `label`; returns its cookie pair and handle.
async fn login(h: &Harness, owner: &str, label: &str) -> (String, String) {
    let r = h
        .request(None, |s| {
            bump(s);
            s.set_owner(owner).unwrap();
            s.set_label(label);
        })
        .await;
    (r.pair(), r.session.handle())
}

#[tokio::test]
async fn an_owners_sessions_are_listed_with_handles_not_ids() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(secs(60)));
    let (phone, phone_handle) = login(&h, "ann", "phone").await;
    h.clock.advance(secs(100));
    let (laptop, laptop_handle) = login(&h, "ann", "laptop").await;
    login(&h, "bob", "bob's").await;
    h.existing().await; // no owner
    h.clock.advance(secs(100));
    let sessions = h.manager.sessions_of("ann").await.unwrap();
    let labels: Vec<_> = sessions
        .iter()
        .map(|s| s.label.as_deref().unwrap())
        .collect();
    assert_eq!(labels, ["laptop", "phone"], "most recently active first");
    assert_eq!(sessions[0].handle, laptop_handle);
    assert_eq!(sessions[1].handle, phone_handle);
    assert_eq!(
        (
            sessions[1].created,
            sessions[1].last_seen,
            sessions[1].expires
        ),
        (Some(at(0)), at(0), at(3600))
    );
    // Activity moves `last_seen`.
    h.request(Some(&phone), |_| {}).await;
    let sessions = h.manager.sessions_of("ann").await.unwrap();
    assert_eq!(sessions[0].label.as_deref(), Some("phone"));
    assert_eq!(sessions[0].last_seen, at(200));
    // A handle is no id: it loads nothing.
    let id = h.load(&laptop).await.id();
    assert!(!laptop_handle.contains(id.as_str()));
    let r = h
        .request(Some(&format!("sid={laptop_handle}")), |_| {})
        .await;
    assert!(r.session.is_new());
    assert!(h.manager.sessions_of("nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn revoking_is_scoped_to_the_owner() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (ann, ann_handle) = login(&h, "ann", "a").await;
    let (bob, bob_handle) = login(&h, "bob", "b").await;
    assert!(!h.manager.revoke("ann", &bob_handle).await.unwrap());
    assert!(!h.manager.revoke("ann", "not-a-handle").await.unwrap());
    assert!(!h.load(&bob).await.is_new(), "bob's session survives");
    assert!(h.manager.revoke("ann", &ann_handle).await.unwrap());
    assert!(h.load(&ann).await.is_new(), "ann's session is over");
    assert!(
        !h.manager.revoke("ann", &ann_handle).await.unwrap(),
        "only once"
    );
}

#[tokio::test]
async fn revoke_all_and_revoke_others() {
    let h = harness(|b| b.max_age(secs(3600)));
    let devices: Vec<_> = futures_join(&h, 3).await;
    let current = h.load(&devices[0].0).await;
    assert_eq!(h.manager.revoke_others(&current).await.unwrap(), 2);
    assert!(
        !h.load(&devices[0].0).await.is_new(),
        "the current one stays"
    );
    for (cookie, _) in &devices[1..] {
        assert!(h.load(cookie).await.is_new());
    }
    let (bob, _) = login(&h, "bob", "b").await;
    assert_eq!(h.manager.revoke_all("ann").await.unwrap(), 1);
    assert!(h.load(&devices[0].0).await.is_new());
    assert!(!h.load(&bob).await.is_new());
    let unowned = h.manager.new_session();
    assert_eq!(h.manager.revoke_others(&unowned).await.unwrap(), 0);
}

async fn futures_join(h: &Harness, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(login(h, "ann", &format!("device {i}")).await);
    }
    out
}

#[tokio::test]
async fn owner_and_label_are_kept_across_regenerate_and_are_modifications() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    let r = h
        .request(Some(&cookie), |s| {
            s.set_owner("ann").unwrap();
            assert!(s.is_modified());
        })
        .await;
    assert_eq!(h.store.count("cas"), 1, "binding an owner is a write");
    assert!(r.set_cookies.is_empty(), "the cookie does not change");
    assert_eq!(h.stored(&id).await.unwrap().owner.as_deref(), Some("ann"));
    let r = h.request(Some(&cookie), |s| s.regenerate()).await;
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert_eq!(stored.owner.as_deref(), Some("ann"));
    let sessions = h.manager.sessions_of("ann").await.unwrap();
    assert_eq!(sessions.len(), 1, "the old id is gone from the list");
    assert_eq!(sessions[0].handle, r.session.handle());
    // Bad owners are errors at the call; long labels are cut at a character boundary.
    let s = h.load(&r.pair()).await;
    assert!(matches!(s.set_owner(""), Err(Error::Config(_))));
    assert!(matches!(
        s.set_owner("x".repeat(257)),
        Err(Error::Config(_))
    ));
    s.set_label("é".repeat(200));
    assert_eq!(s.label().unwrap().len(), 256);
    s.remove_owner();
    s.commit().await.unwrap();
    assert!(h.manager.sessions_of("ann").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_request_in_flight_cannot_bring_a_revoked_session_back() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(Duration::ZERO));
    let (cookie, _) = login(&h, "ann", "a").await;
    // Loaded before the revoke, committed after: a write and a touch.
    let writer = h.load(&cookie).await;
    let toucher = h.load(&cookie).await;
    bump(&writer);
    assert_eq!(h.manager.revoke_all("ann").await.unwrap(), 1);
    for session in [&writer, &toucher] {
        let mut out = HeaderMap::new();
        h.finish(session, &mut out).await.unwrap();
        assert!(
            out.get(SET_COOKIE).is_none(),
            "no cookie from a revoked session"
        );
    }
    assert!(h.load(&cookie).await.is_new(), "still revoked");
    assert!(h.manager.sessions_of("ann").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_wins_a_race_with_concurrent_requests() {
    let h = Arc::new(harness(|b| b.max_age(secs(3600))));
    for round in 0..20 {
        let (cookie, _) = login(&h, "ann", "a").await;
        let requests: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                let cookie = cookie.clone();
                tokio::spawn(async move {
                    let session = h.load(&cookie).await;
                    tokio::task::yield_now().await;
                    bump(&session);
                    let _ = session.commit().await;
                })
            })
            .collect();
        let revoke = {
            let h = h.clone();
            tokio::spawn(async move { h.manager.revoke_all("ann").await.unwrap() })
        };
        for request in requests {
            request.await.unwrap();
        }
        assert_eq!(revoke.await.unwrap(), 1, "round {round}");
        assert!(h.load(&cookie).await.is_new(), "round {round}: resurrected");
        assert!(h.manager.sessions_of("ann").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_store_without_an_owner_index_says_so() {
    let h = harness_with(Capabilities::ALL.with_owners(false), |b| b);
    for result in [
        h.manager.sessions_of("ann").await.map(|_| ()),
        h.manager.revoke("ann", "h").await.map(|_| ()),
        h.manager.revoke_all("ann").await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "{result:?}"
        );
    }
}
