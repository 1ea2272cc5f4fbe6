//! The manager: limits, codecs, redaction.

use super::*;

#[tokio::test]
async fn the_size_limit_is_a_clear_error() {
    let h = harness(|b| b.max_size(Some(1000)));
    let s = h.manager.new_session();
    s.insert("small", "x").unwrap();
    let err = s.insert("big", vec![0u8; 2000]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }));
    assert!(!s.contains_key("big"));
    assert_eq!(s.len(), 1);
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_an_error() {
    let h = harness(|b| b);
    let s = h.manager.new_session();
    s.insert("n", "text").unwrap();
    assert!(matches!(
        s.get::<u32>("n"),
        Err(Error::Serialization { .. })
    ));
}

#[tokio::test]
async fn records_of_another_codec_still_load() {
    let h = harness(|b| b.codec(Codec::Json));
    let r = h.request(None, bump).await;
    let cookie = r.pair();
    assert_eq!(
        h.stored(&r.session.id()).await.unwrap().data["visits"],
        b"1"[..]
    );
    let msgpack = SessionManager::builder(h.store.counting.clone())
        .clock(Arc::new(h.clock.clone()))
        .build()
        .unwrap();
    let s = msgpack.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert_eq!(visits(&s), 1);
    bump(&s);
    s.commit().await.unwrap();
    let stored = h.stored(&s.id()).await.unwrap();
    assert_eq!(
        (stored.codec, &stored.data["visits"]),
        (Codec::Json, &b"2"[..])
    );
}

#[tokio::test]
async fn debug_output_never_shows_ids_data_or_secrets() {
    let h = harness(|b| b.cookie_codec(SignedCodec::new(["hunter2-secret"]).unwrap()));
    let r = h
        .request(None, |s| s.insert("password", "letmein-value").unwrap())
        .await;
    let id = r.session.id();
    let record = h.stored(&id).await.unwrap();
    let lazy = LazySession::new(h.manager.clone(), &HeaderMap::new());
    for text in [
        format!("{:?}", r.session),
        format!("{:?}", h.manager),
        format!("{record:?}"),
        format!("{id:?}"),
        format!("{:?}", SignedCodec::new(["hunter2-secret"]).unwrap()),
        format!("{lazy:?}"),
    ] {
        assert!(!text.contains(id.as_str()), "{text}");
        assert!(!text.contains("letmein"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
