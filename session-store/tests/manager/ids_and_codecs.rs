//! The manager: ids and codecs.

use super::*;

#[tokio::test]
async fn ids_are_nanoids_and_client_ids_are_never_adopted() {
    let h = harness(|b| b);
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(id.as_str().len(), 21);
    assert!(
        id.as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
    // A plausible id that is not in the store: fresh session under a NEW id.
    let planted = "PLANTEDplantedPLANTED";
    let r = h.request(Some(&format!("sid={planted}")), bump).await;
    assert_ne!(r.session.id().as_str(), planted);
    assert!(h.stored(&SessionId::new(planted)).await.is_none());
}

#[tokio::test]
async fn a_custom_generator_comes_with_its_validator() {
    let h = harness(|b| {
        b.id_generator(IdGenerator::custom(
            || format!("u-{}", nanoid::nanoid!(30)),
            |id| id.starts_with("u-") && id.len() == 32,
        ))
    });
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert!(id.as_str().starts_with("u-"));
    h.store.reset();
    let r = h
        .request(Some(&r.pair()), |s| assert_eq!(visits(s), 1))
        .await;
    assert_eq!(r.session.id(), id);
    h.store.reset();
    h.request(Some("sid=AAAAAAAAAAAAAAAAAAAAA"), |_| {}).await;
    assert_eq!(
        h.store.total(),
        0,
        "a nanoid is not valid for this generator"
    );
}

#[tokio::test]
async fn user_encode_and_decode() {
    let h = harness(|b| {
        b.cookie_codec(FnCodec::new(
            |id| format!("v1-{id}"),
            |value| value.strip_prefix("v1-").map(str::to_owned),
        ))
    });
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(
        r.cookie().unwrap(),
        format!("sid=v1-{}; HttpOnly; Path=/", id.as_str())
    );
    let r = h
        .request(Some(&r.pair()), |s| assert_eq!(visits(s), 1))
        .await;
    assert_eq!(r.session.id(), id);
    h.store.reset();
    let r = h
        .request(Some(&format!("sid={}", id.as_str())), |_| {})
        .await;
    assert!(r.session.is_new(), "decode returned None");
    assert_eq!(h.store.total(), 0);
}

#[tokio::test]
async fn express_session_signed_cookie_vector() {
    let h = harness(|b| {
        b.cookie_name("connect.sid")
            .cookie_codec(SignedCodec::new(["keyboard cat"]).unwrap())
            .id_generator(IdGenerator::custom(|| "abc123".into(), |id| id == "abc123"))
    });
    let r = h.request(None, bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0; HttpOnly; Path=/"
    );
    let r = h
        .request(Some(&r.pair()), |s| assert_eq!(visits(s), 1))
        .await;
    assert!(!r.session.is_new());
}

#[tokio::test]
async fn signed_cookies_reject_tampering_and_rotate_secrets() {
    let h = harness(|b| b.cookie_codec(SignedCodec::new(["old secret"]).unwrap()));
    let (cookie, id) = h.existing().await;
    let value = cookie.strip_prefix("sid=").unwrap().to_owned();
    h.store.reset();
    let tampered = [
        format!("sid={}", id.as_str()),
        format!("sid=s%3A{}", id.as_str()),
        format!("sid={}x", value),
        format!("sid={}", &value[..value.len() - 3]),
        format!("sid={}", value.replacen(&id.as_str()[..4], "AAAA", 1)),
        format!("sid={}", value.replace("s%3A", "")),
    ];
    for t in &tampered {
        let r = h.request(Some(t), |_| {}).await;
        assert!(r.session.is_new(), "{t}");
    }
    assert_eq!(h.store.total(), 0, "unverified ids never reach the store");
    // Rotation: a manager signing with a new secret still reads the old cookie.
    let rotated = SessionManager::builder(h.store.counting.clone())
        .cookie_codec(SignedCodec::new(["new secret", "old secret"]).unwrap())
        .clock(Arc::new(h.clock.clone()))
        .build()
        .unwrap();
    let s = rotated.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert_eq!(s.id(), id);
    let only_new = SessionManager::builder(h.store.counting.clone())
        .cookie_codec(SignedCodec::new(["new secret"]).unwrap())
        .build()
        .unwrap();
    assert!(
        only_new
            .load(&cookie_headers(Some(&cookie)))
            .await
            .unwrap()
            .is_new()
    );
}

#[tokio::test]
async fn private_cookies_hide_the_id() {
    let h = harness(|b| b.cookie_codec(PrivateCodec::from_secrets([[7u8; 64]]).unwrap()));
    let (cookie, id) = h.existing().await;
    assert!(!cookie.contains(id.as_str()));
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert_eq!(r.session.id(), id);
    let r = h
        .request(Some(&format!("sid={}", id.as_str())), |_| {})
        .await;
    assert!(r.session.is_new());
}
