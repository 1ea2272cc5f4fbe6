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
