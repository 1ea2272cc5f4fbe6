//! Cookie-only sessions: the record is the (encrypted) cookie; no server state.

use std::sync::Arc;
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::time::macros::datetime;
use session_store::{Error, ManualClock, PrivateCodec, Session, SessionManager};

struct Reply {
    cookie: Option<String>,
    session: Session,
}

async fn request(m: &SessionManager, cookie: Option<&str>, f: impl FnOnce(&Session)) -> Reply {
    let mut headers = HeaderMap::new();
    if let Some(c) = cookie {
        headers.insert(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    let session = m.load(&headers).await.unwrap();
    f(&session);
    let mut out = HeaderMap::new();
    m.finish(&session, StatusCode::OK, &mut out).await.unwrap();
    let cookie = out.get(SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    Reply { cookie, session }
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn keys(seed: u8) -> PrivateCodec {
    PrivateCodec::from_secrets([[seed; 32]]).unwrap()
}

fn manager(keys: PrivateCodec, clock: &ManualClock) -> SessionManager {
    SessionManager::cookie_only(keys)
        .clock(Arc::new(clock.clone()))
        .max_age(Duration::from_secs(600))
        .touch_after(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn visits(s: &Session) -> u32 {
    s.get("visits").unwrap().unwrap_or(0)
}

fn bump(s: &Session) {
    s.insert("visits", visits(s) + 1).unwrap();
}

#[tokio::test]
async fn the_whole_session_lives_in_the_cookie() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let m = manager(keys(1), &clock);
    assert!(m.is_cookie_only());
    assert!(
        request(&m, None, |_| {}).await.cookie.is_none(),
        "empty: no cookie"
    );
    let r = request(&m, None, bump).await;
    let set = r.cookie.unwrap();
    assert!(
        set.ends_with("; HttpOnly; Path=/; Max-Age=600; Expires=Thu, 01 Jan 2026 00:10:00 GMT"),
        "{set}"
    );
    assert!(!set.contains("visits"));
    let id = r.session.id();
    let mut cookie = pair(&set);
    // Read without changes: nothing re-sent.
    let r = request(&m, Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert!(r.cookie.is_none());
    assert_eq!(r.session.id(), id);
    // Each change re-sends the cookie with the new data.
    for n in 2..=4 {
        let r = request(&m, Some(&cookie), bump).await;
        cookie = pair(&r.cookie.expect("re-sent on change"));
        let r = request(&m, Some(&cookie), |s| assert_eq!(visits(s), n)).await;
        assert!(!r.session.is_new());
    }
    // A touch that is due re-sends it with a later expiry.
    clock.advance(Duration::from_secs(61));
    let r = request(&m, Some(&cookie), |_| {}).await;
    assert!(
        r.cookie
            .unwrap()
            .ends_with("Expires=Thu, 01 Jan 2026 00:11:01 GMT")
    );
    // Destroy clears it.
    let r = request(&m, Some(&cookie), |s| s.destroy()).await;
    assert_eq!(
        r.cookie.unwrap(),
        "sid=; HttpOnly; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
}

#[tokio::test]
async fn tampered_truncated_expired_and_rotated_out_cookies_give_a_fresh_session() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let m = manager(keys(1), &clock);
    let cookie = pair(&request(&m, None, bump).await.cookie.unwrap());
    let value = cookie.strip_prefix("sid=").unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    for bad in [
        format!("sid={}", String::from_utf8(flipped).unwrap()),
        format!("sid={}", &value[..value.len() - 4]),
        format!("sid={}", &value[..10]),
        "sid=".to_owned() + &"A".repeat(200),
        "sid=%%%".to_owned(),
    ] {
        let r = request(&m, Some(&bad), |s| assert_eq!(visits(s), 0)).await;
        assert!(r.session.is_new(), "{bad}");
    }
    // Rotation: new key first, old still accepted; once the old key is dropped, rejected.
    let rotated =
        SessionManager::cookie_only(PrivateCodec::from_secrets([[2u8; 32], [1u8; 32]]).unwrap())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
    assert_eq!(
        visits(&request(&rotated, Some(&cookie), |_| {}).await.session),
        1
    );
    let dropped = manager(keys(2), &clock);
    assert!(
        request(&dropped, Some(&cookie), |_| {})
            .await
            .session
            .is_new()
    );
    // Expiry comes from the authenticated payload, whatever the browser keeps.
    clock.advance(Duration::from_secs(600));
    let r = request(&m, Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "expired");
}

#[tokio::test]
async fn a_session_too_big_for_a_cookie_is_a_clear_error() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let m = manager(keys(1), &clock);
    let session = m.load(&HeaderMap::new()).await.unwrap();
    session.insert("big", "x".repeat(3000)).unwrap();
    match session.commit().await {
        Err(Error::TooLarge { size, limit: 4096 }) => assert!(size > 4096),
        other => panic!("{other:?}"),
    }
    assert!(session.take_set_cookie().is_none());
    session.insert("big", "x".repeat(100)).unwrap();
    session.commit().await.unwrap();
    assert!(session.take_set_cookie().is_some());
}

#[tokio::test]
async fn regenerate_gives_a_new_id_in_the_cookie() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let m = manager(keys(1), &clock);
    let r = request(&m, None, bump).await;
    let (old, cookie) = (r.session.id(), pair(&r.cookie.unwrap()));
    let r = request(&m, Some(&cookie), |s| s.regenerate()).await;
    let new_cookie = pair(&r.cookie.unwrap());
    let r = request(&m, Some(&new_cookie), |s| assert_eq!(visits(s), 1)).await;
    assert_ne!(r.session.id(), old);
}

#[tokio::test]
async fn lifetimes_live_in_the_cookie_too() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let m = SessionManager::cookie_only(keys(7))
        .clock(Arc::new(clock.clone()))
        .touch_after(Duration::from_secs(60))
        .absolute_lifetime(Duration::from_secs(3 * 24 * 3600))
        .build()
        .unwrap();
    let day = Duration::from_secs(24 * 3600);
    let login = request(&m, None, |s| {
        bump(s);
        s.set_max_age(Some(30 * day)).unwrap();
    })
    .await;
    // Remember me: capped by the absolute lifetime of three days.
    let cookie = login.cookie.unwrap();
    assert!(cookie.contains("Max-Age=259200;"), "{cookie}");
    clock.advance(day);
    let r = request(&m, Some(&pair(&cookie)), |_| {}).await;
    assert_eq!(r.session.max_age(), Some(30 * day), "kept in the cookie");
    assert!(!r.session.is_new());
    assert!(
        r.cookie.is_none(),
        "already at its absolute deadline: touchAfter has nothing to extend"
    );
    // Past the absolute lifetime the sealed cookie gives a fresh session.
    clock.advance(2 * day);
    let r = request(&m, Some(&pair(&cookie)), |_| {}).await;
    assert!(r.session.is_new() && r.session.is_empty());
}

#[tokio::test]
async fn an_id_too_long_for_the_sealed_form_is_a_clear_error() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let ids = session_store::IdGenerator::custom(|| "a".repeat(256), |_| true);
    let m = SessionManager::cookie_only(keys(5))
        .clock(Arc::new(clock))
        .id_generator(ids)
        .build()
        .unwrap();
    let session = m.load(&HeaderMap::new()).await.unwrap();
    bump(&session);
    assert!(matches!(session.commit().await, Err(Error::Config(_))));
    assert!(session.take_set_cookie().is_none());
}
