//! The manager: failures.

use super::*;

#[tokio::test]
async fn a_failing_store_is_an_error_not_a_fresh_session() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.fail(Failure::Unavailable);
    let err = h.try_load(&cookie).await.unwrap_err();
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    h.store.fail(Failure::Backend);
    let err = h.try_load(&cookie).await.unwrap_err();
    assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!err.to_string().contains(id.as_str()));
    // Without a cookie nothing is loaded, so nothing fails.
    assert!(h.manager.load(&HeaderMap::new()).await.is_ok());
}

#[tokio::test]
async fn a_failed_save_is_reported_and_retried() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let session = h.load(&cookie).await;
    bump(&session);
    h.store.fail(Failure::Backend);
    let mut out = HeaderMap::new();
    let err = h.finish(&session, &mut out).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }));
    assert!(session.is_modified(), "the change is kept");
    h.store.fail(Failure::None);
    session.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 2);
    // A new session whose create fails is not lost either.
    let fresh = h.manager.load(&HeaderMap::new()).await.unwrap();
    bump(&fresh);
    h.store.fail(Failure::Unavailable);
    assert!(fresh.commit().await.unwrap_err().is_unavailable());
    h.store.fail(Failure::None);
    fresh.commit().await.unwrap();
    assert!(h.stored(&fresh.id()).await.is_some());
    assert!(fresh.take_set_cookie().is_some());
}

#[tokio::test]
async fn a_failed_touch_is_reported() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, _) = h.existing().await;
    let session = h.load(&cookie).await;
    h.store.fail(Failure::Unavailable);
    assert!(session.commit().await.is_err());
    assert!(
        session.take_set_cookie().is_none(),
        "no cookie for a failed touch"
    );
    h.store.fail(Failure::None);
    session.commit().await.unwrap();
    assert!(
        session.take_set_cookie().is_some(),
        "the retried touch sets it"
    );
}

#[tokio::test]
async fn an_undecodable_record_gives_a_fresh_session_and_is_left_alone() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.fail(Failure::Corrupt);
    let session = h.load(&cookie).await;
    assert!(session.is_new());
    assert_ne!(session.id(), id);
    h.store.fail(Failure::None);
    assert!(h.stored(&id).await.is_some(), "left alone");
}

/// A store that never answers.
struct Stuck;

#[async_trait]
impl SessionStore for Stuck {
    async fn get(&self, _: &SessionId) -> Result<Option<Record>> {
        std::future::pending().await
    }
    async fn set(&self, _: &SessionId, _: &Record) -> Result<()> {
        std::future::pending().await
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_stuck_store_times_out_as_unavailable() {
    let manager = SessionManager::builder(Stuck)
        .store_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let id = IdGenerator::nanoid().generate();
    let err = manager
        .load(&cookie_headers(Some(&format!("sid={}", id.as_str()))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let fresh = manager.new_session();
    fresh.insert("k", 1).unwrap();
    assert!(matches!(fresh.commit().await, Err(Error::Timeout { .. })));
}
