//! The manager: loading.

use super::*;

#[tokio::test]
async fn cookie_header_parsing() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let raw = cookie.strip_prefix("sid=").unwrap();
    let loads = |headers: Vec<&str>| {
        let mut map = HeaderMap::new();
        for v in headers {
            map.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        let manager = h.manager.clone();
        async move { manager.load(&map).await.unwrap() }
    };
    for headers in [
        vec![format!("a=1; sid={raw}; b=2")],
        vec![format!("sid=\"{raw}\"")],
        vec![format!("  sid = {raw}  ")],
        vec!["a=1".to_owned(), format!("sid={raw}")],
        vec![format!("sid={raw}"), "sid=other".to_owned()],
        vec![format!("sid={}", raw.replace('-', "%2D"))],
    ] {
        let s = loads(headers.iter().map(String::as_str).collect()).await;
        assert_eq!(s.id(), id, "{headers:?}");
    }
    // First occurrence wins, even when it is not valid.
    let s = loads(vec!["sid=bogus", &cookie]).await;
    assert!(s.is_new());
    // The value as decoded: quotes removed, then percent-decoded; not UTF-8 or empty: none.
    let value = |raw: &[u8]| {
        let mut map = HeaderMap::new();
        map.append(COOKIE, HeaderValue::from_bytes(raw).unwrap());
        h.manager.cookie_value(&map)
    };
    assert_eq!(value(b"sid=\"a%20b\"").as_deref(), Some("a b"));
    assert_eq!(value(b"sid=a%2").as_deref(), Some("a%2"));
    assert_eq!(value(b"sid=ab\xff").as_deref(), None);
    assert_eq!(value(b"sid=ab%FF").as_deref(), None);
    assert_eq!(value(b"sid=\"\"").as_deref(), None);
    assert_eq!(value(b"sid=\"").as_deref(), Some("\""));
}

#[tokio::test]
async fn loading_twice_in_one_request_gives_the_same_session() {
    let h = harness(|b| b);
    let (cookie, _) = h.existing().await;
    h.store.reset();
    let lazy = LazySession::new(h.manager.clone(), &cookie_headers(Some(&cookie)));
    assert!(lazy.loaded().is_none());
    let a = lazy.get().await.unwrap();
    let b = lazy.get().await.unwrap();
    a.insert("seen", true).unwrap();
    assert_eq!(b.get::<bool>("seen").unwrap(), Some(true));
    assert_eq!(h.store.count("get"), 1);
    let mut out = HeaderMap::new();
    lazy.finish(StatusCode::OK, &mut out).await.unwrap();
    assert_eq!(h.store.count("cas"), 1);
    // Never asked for: the store is not touched.
    h.store.reset();
    let lazy = LazySession::new(h.manager.clone(), &cookie_headers(Some(&cookie)));
    lazy.finish(StatusCode::OK, &mut out).await.unwrap();
    assert_eq!(h.store.total(), 0);
}

#[tokio::test]
async fn an_expired_record_gives_a_fresh_session_under_a_new_id() {
    let h = harness(|b| b.max_age(secs(10)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(10));
    let r = h.request(Some(&cookie), bump).await;
    assert!(r.session.is_new());
    assert_ne!(r.session.id(), id);
    assert_eq!(visits(&r.session), 1);
}
