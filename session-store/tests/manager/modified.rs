//! The manager: "modified" by value.

use super::*;

#[tokio::test]
async fn same_value_is_not_a_modification() {
    let h = harness(|b| b);
    let (cookie, _) = h.existing().await;
    h.store.reset();
    let r = h
        .request(Some(&cookie), |s| {
            s.insert("visits", 1u32).unwrap();
            assert!(!s.is_modified());
        })
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1, "no write for an equal value");
    // Changed and changed back within the request: no write either.
    h.store.reset();
    h.request(Some(&cookie), |s| {
        s.insert("visits", 5u32).unwrap();
        s.insert("visits", 1u32).unwrap();
    })
    .await;
    assert_eq!(h.store.total(), 1);
}

#[tokio::test]
async fn hash_map_reinserted_in_another_order_is_not_a_modification() {
    let h = harness(|b| b);
    let map: HashMap<String, u32> = (0..40).map(|i| (format!("k{i}"), i)).collect();
    let r = h.request(None, |s| s.insert("map", &map).unwrap()).await;
    let cookie = r.pair();
    h.store.reset();
    let mut rebuilt = HashMap::new();
    for i in (0..40).rev() {
        rebuilt.insert(format!("k{i}"), i);
    }
    h.request(Some(&cookie), |s| s.insert("map", &rebuilt).unwrap())
        .await;
    assert_eq!(h.store.total(), 1, "only the load");
}

#[tokio::test]
async fn manual_commit_then_auto_commit_writes_once() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.reset();
    let session = h.load(&cookie).await;
    bump(&session);
    session.commit().await.unwrap();
    session.commit().await.unwrap();
    let mut out = HeaderMap::new();
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(h.store.count("cas"), 1);
    // A change after the manual commit is written by auto commit, once.
    let session = h.load(&cookie).await;
    h.store.reset();
    bump(&session);
    session.commit().await.unwrap();
    bump(&session);
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(h.store.count("cas"), 2);
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 4);
}

#[tokio::test]
async fn manual_commit_of_a_new_session_sets_the_cookie_once() {
    let h = harness(|b| b.auto_commit(false));
    let session = h.manager.load(&HeaderMap::new()).await.unwrap();
    bump(&session);
    let mut out = HeaderMap::new();
    h.finish(&session, &mut out).await.unwrap();
    assert!(out.is_empty(), "auto commit is off");
    assert_eq!(h.store.total(), 0);
    session.commit().await.unwrap();
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(out.get_all(SET_COOKIE).iter().count(), 1);
    assert_eq!(h.store.count("create"), 1);
}

#[tokio::test]
async fn server_errors_skip_the_save_unless_configured() {
    let h = harness(|b| b);
    let r = h
        .request_status(None, StatusCode::INTERNAL_SERVER_ERROR, bump)
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
    let h = harness(|b| b.save_on_server_error(true));
    let r = h
        .request_status(None, StatusCode::SERVICE_UNAVAILABLE, bump)
        .await;
    assert_eq!(r.set_cookies.len(), 1);
}
