//! The manager: cookie options.

use super::*;

#[tokio::test]
async fn every_cookie_attribute() {
    let h = harness(|b| {
        b.cookie_name("app.sid")
            .secure(true)
            .http_only(false)
            .path("/app")
            .domain("example.com")
            .same_site(SameSite::Strict)
            .max_age(secs(60))
    });
    let r = h.request(None, bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        format!(
            "app.sid={}; SameSite=Strict; Secure; Path=/app; Domain=example.com; Max-Age=60; Expires=Thu, 01 Jan 2026 00:01:00 GMT",
            r.session.id().as_str()
        )
    );
    let r = h.request(Some(&r.pair()), |s| s.destroy()).await;
    assert_eq!(
        r.cookie().unwrap(),
        "app.sid=; SameSite=Strict; Secure; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    let h = harness(|b| b.same_site(SameSite::None).secure(true));
    let r = h.request(None, bump).await;
    assert!(r.cookie().unwrap().contains("SameSite=None; Secure"));
    // CHIPS: a cookie of its own per top-level site, for sessions in cross-site iframes.
    let h = harness(|b| b.same_site(SameSite::None).secure(true).partitioned(true));
    let r = h.request(None, bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        format!(
            "sid={}; HttpOnly; SameSite=None; Partitioned; Secure; Path=/",
            r.session.id().as_str()
        )
    );
    let r = h.request(Some(&r.pair()), |s| s.destroy()).await;
    assert!(
        r.cookie()
            .unwrap()
            .contains("; Partitioned; Secure; Path=/; Max-Age=0")
    );
    let h = harness(|b| b.same_site(SameSite::Lax));
    assert!(
        h.request(None, bump)
            .await
            .cookie()
            .unwrap()
            .contains("HttpOnly; SameSite=Lax")
    );
}

#[test]
fn the_builder_rejects_unsafe_or_invalid_cookies() {
    let build = |f: fn(SessionManagerBuilder) -> SessionManagerBuilder| {
        f(SessionManager::builder(MemoryStore::new())).build()
    };
    let rejected: [fn(SessionManagerBuilder) -> SessionManagerBuilder; 11] = [
        |b| b.same_site(SameSite::None),
        |b| b.partitioned(true).same_site(SameSite::None),
        |b| b.cookie_name("__Host-sid"),
        |b| b.cookie_name("__Host-sid").secure(true).path("/app"),
        |b| {
            b.cookie_name("__Host-sid")
                .secure(true)
                .domain("example.com")
        },
        |b| b.cookie_name("__Secure-sid"),
        |b| b.cookie_name(""),
        |b| b.cookie_name("a b"),
        |b| b.cookie_name("a;b"),
        |b| b.path("/x; Domain=evil.com"),
        |b| b.max_age(Duration::from_millis(10)),
    ];
    for f in rejected {
        assert!(matches!(build(f), Err(Error::Config(_))));
    }
    assert!(build(|b| b.cookie_name("__Host-sid").secure(true)).is_ok());
    assert!(build(|b| b.same_site(SameSite::None).secure(true)).is_ok());
    assert!(build(|b| b.same_site(SameSite::None).secure(true).partitioned(true)).is_ok());
}
