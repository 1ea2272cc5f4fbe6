//! The manager: concurrency: no resurrection, no lost updates.

use super::*;

#[tokio::test]
async fn a_slow_request_never_resurrects_a_destroyed_session() {
    for caps in [Capabilities::ALL, Capabilities::NONE.with_update(true)] {
        let h = harness_with(caps, |b| b);
        let (cookie, id) = h.existing().await;
        let slow = h.load(&cookie).await;
        h.request(Some(&cookie), |s| s.destroy()).await;
        bump(&slow);
        let mut out = HeaderMap::new();
        h.finish(&slow, &mut out).await.unwrap();
        assert!(h.stored(&id).await.is_none(), "resurrected with {caps:?}");
        // The logout already answered with the removal cookie; this late response sends
        // nothing that could override a cookie set since (e.g. by a new login).
        assert!(out.get(SET_COOKIE).is_none(), "{caps:?}: {out:?}");
        assert!(h.store.inner.is_empty());
    }
}

#[tokio::test]
async fn a_slow_touch_never_resurrects_either() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    let slow = h.load(&cookie).await;
    h.request(Some(&cookie), |s| s.destroy()).await;
    slow.commit().await.unwrap();
    assert!(h.stored(&id).await.is_none());
}

#[tokio::test]
async fn concurrent_requests_of_one_session_merge_key_by_key() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.insert("cart", vec!["apple"]).unwrap();
    b.insert("theme", "dark").unwrap();
    b.remove("visits");
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    let keys: Vec<&str> = stored.data.keys().collect();
    assert_eq!(keys, ["cart", "theme"]);
    assert_eq!(stored.version, 2);
    // b now sees a's change too.
    assert_eq!(b.get::<Vec<String>>("cart").unwrap().unwrap(), ["apple"]);
}

#[tokio::test]
async fn without_compare_and_set_the_last_writer_wins() {
    let h = harness(|b| b.compare_and_set(false));
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.insert("cart", 1).unwrap();
    b.insert("theme", 2).unwrap();
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    assert!(!stored.data.contains_key("cart"));
    assert_eq!(h.store.count("update"), 2);
}

/// A browser's cookie jar: `Set-Cookie` headers applied in the order responses arrive.
#[derive(Default)]
struct Jar(Option<String>);

impl Jar {
    fn apply(&mut self, set_cookies: &[String]) {
        for set in set_cookies {
            let pair = set.split(';').next().unwrap();
            let removal = set.contains("Max-Age=0");
            self.0 = (!removal).then(|| pair.to_owned());
        }
    }
}

#[tokio::test]
async fn a_request_that_loses_to_a_login_or_logout_keeps_the_winners_cookie() {
    for end in ["regenerate", "destroy"] {
        for touching in [false, true] {
            let h = harness(|b| {
                let b = b.max_age(secs(3600));
                if touching {
                    b.touch_after(Duration::ZERO)
                } else {
                    b
                }
            });
            let mut jar = Jar::default();
            let first = h.request(None, |s| s.insert("visits", 1u32).unwrap()).await;
            jar.apply(&first.set_cookies);
            let cookie = jar.0.clone().unwrap();
            // A slow request of the session is in flight while another one logs in or out.
            let slow = h.load(&cookie).await;
            let winner = h
                .request(Some(&cookie), |s| match end {
                    "regenerate" => {
                        s.regenerate();
                        s.insert("user", "alice").unwrap();
                    }
                    _ => s.destroy(),
                })
                .await;
            jar.apply(&winner.set_cookies);
            let after_winner = jar.0.clone();
            bump(&slow);
            let mut out = HeaderMap::new();
            h.finish(&slow, &mut out).await.unwrap();
            let late: Vec<String> = out
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert!(late.is_empty(), "{end}, touching {touching}: {late:?}");
            jar.apply(&late);
            assert_eq!(jar.0, after_winner, "{end}, touching {touching}");
            // A request sent with the old cookie that reaches the server only after the
            // winner finished: it must not answer with a new anonymous session's cookie.
            let later = h.request(Some(&cookie), bump).await;
            jar.apply(&later.set_cookies);
            if end == "regenerate" {
                assert!(
                    later.set_cookies.is_empty(),
                    "touching {touching}: {:?}",
                    later.set_cookies
                );
                assert_eq!(jar.0, after_winner, "touching {touching}");
                // The jar still holds the login, which loads.
                let logged_in = h.load(jar.0.as_deref().unwrap()).await;
                assert_eq!(logged_in.get::<String>("user").unwrap().unwrap(), "alice");
                // Nothing was stored for the late request: the login's session and the
                // tombstone are all.
                assert_eq!(h.store.inner.len(), 2);
                // A minute later the old cookie is just an unknown one: a fresh session.
                h.clock.advance(secs(61));
                let after = h.request(Some(&cookie), bump).await;
                assert!(after.cookie().is_some(), "touching {touching}");
            } else {
                // After a logout the browser holds no cookie: a fresh session is fine.
                assert!(later.cookie().is_some());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_updates_of_one_key_all_land() {
    let h = Arc::new(harness(|b| b));
    let (cookie, id) = h.existing().await;
    // Sixteen requests load the same version, then all commit at once.
    let mut loaded = Vec::new();
    for _ in 0..16 {
        loaded.push(h.load(&cookie).await);
    }
    let tasks: Vec<_> = loaded
        .into_iter()
        .map(|session| {
            let h = h.clone();
            tokio::spawn(async move {
                let n = session
                    .update("visits", |v: Option<u32>| v.unwrap_or(0) + 1)
                    .unwrap();
                assert_eq!(n, 2, "each request computes from what it loaded");
                let mut out = HeaderMap::new();
                h.finish(&session, &mut out).await.unwrap();
                session.get::<u32>("visits").unwrap().unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    assert_eq!(stored_visits(&h.stored(&id).await.unwrap()), 17);
    // Each request ends seeing the count its own increment produced: all different.
    seen.sort_unstable();
    assert_eq!(seen, (2..=17).collect::<Vec<_>>());
    assert!(h.store.count("cas") > 16, "the commits did conflict");
}

#[tokio::test]
async fn an_update_is_replaced_by_a_later_insert_of_its_key() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.update("visits", |v: Option<u32>| v.unwrap_or(0) + 10)
        .unwrap();
    a.insert("visits", 5u32).unwrap();
    b.insert("visits", 7u32).unwrap();
    b.commit().await.unwrap();
    a.commit().await.unwrap();
    // a's plain insert wins over b's value; its update was not applied again.
    assert_eq!(stored_visits(&h.stored(&id).await.unwrap()), 5);
}

#[tokio::test]
async fn commits_that_keep_conflicting_fail_as_a_retryable_conflict() {
    let h = harness(|b| b.commit_attempts(1));
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    bump(&a);
    b.insert("theme", "dark").unwrap();
    a.commit().await.unwrap();
    let err = b.commit().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { attempts: 1 }), "{err:?}");
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.retry_after(), Some(secs(1)));
    // Nothing of b was written, and b keeps its change for a later commit.
    assert!(!h.stored(&id).await.unwrap().data.contains_key("theme"));
    assert!(b.is_modified());
}
