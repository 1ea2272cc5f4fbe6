//! The manager: hostile input.

use super::*;

/// Cookie headers (raw bytes) that must give a fresh session without reaching the store.
fn hostile_headers(valid_signed: &str, id: &str) -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = [
        "",
        ";",
        ";;;;",
        "=",
        "sid",
        "sid=",
        "sid=;",
        "sid=\"\"",
        "sid=\"",
        "sid=\"unterminated",
        "sid==",
        "sid=%",
        "sid=%zz",
        "sid=%E0%A4%A",
        "sid=%FF%FE",
        "sid=%00",
        "sid=%0d%0aSet-Cookie:%20x=1",
        "sid=abc%3B%20Path%3D%2F",
        "sid=../../etc/passwd",
        "sid=%2E%2E%2F%2E%2E%2Fetc",
        "sid='; DROP TABLE sessions; --",
        "sid=\" OR 1=1 --",
        "sid={\"$gt\": \"\"}",
        "sid=*",
        "sid=session:*",
        "sid=\r",
        "sid=\t\t",
        "sid=AAAAAAAAAAAAAAAAAAAA",
        "sid=AAAAAAAAAAAAAAAAAAAAAA",
        "sid=AAAAAAAAAA AAAAAAAAAA",
        "sid=AAAAAAAAAAAAAAAAAAAA+",
        "sid=s:AAAAAAAAAAAAAAAAAAAAA",
        "sid=s%3AAAAAAAAAAAAAAAAAAAAAA.",
        "sid=s%3AAAAAAAAAAAAAAAAAAAAAA.%2B%2B%2B",
        "Sid=AAAAAAAAAAAAAAAAAAAAA",
        " s i d =AAAAAAAAAAAAAAAAAAAAA",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    corpus.push(format!("sid={}", "A".repeat(8 * 1024)).into_bytes());
    corpus.push(format!("sid={}", "%41".repeat(4 * 1024)).into_bytes());
    corpus.push(b"sid=\xff\xfe\xfd".to_vec());
    corpus.push(b"sid=AAAAAAAAAA\x80AAAAAAAAAA".to_vec());
    corpus.push(b"\xc3\x28=1; sid=\xc3\x28".to_vec());
    // Signature tricks: the bare id, a truncated or altered signature, a doubled prefix.
    corpus.push(format!("sid={id}").into_bytes());
    corpus.push(format!("sid={}", &valid_signed[..valid_signed.len() - 1]).into_bytes());
    corpus.push(format!("sid={}A", valid_signed).into_bytes());
    corpus.push(format!("sid=s%3A{valid_signed}").into_bytes());
    corpus.push(format!("sid={}", valid_signed.replacen('.', "..", 1)).into_bytes());
    corpus.push(format!("sid={}", valid_signed.to_lowercase()).into_bytes());
    corpus
}

#[tokio::test]
async fn hostile_cookie_headers_get_a_fresh_session_and_never_reach_the_store() {
    let h = harness(|b| b.cookie_codec(SignedCodec::new(["corpus secret"]).unwrap()));
    let (cookie, id) = h.existing().await;
    let valid = cookie.strip_prefix("sid=").unwrap().to_owned();
    let corpus = hostile_headers(&valid, id.as_str());
    assert!(corpus.len() >= 40, "{}", corpus.len());
    for raw in &corpus {
        h.store.reset();
        let mut headers = HeaderMap::new();
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            continue;
        };
        headers.append(COOKIE, value);
        let lazy = LazySession::new(h.manager.clone(), &headers);
        let session = lazy.get().await.unwrap();
        let shown = String::from_utf8_lossy(raw);
        assert!(session.is_new(), "{shown}");
        assert_ne!(session.id(), id, "{shown}");
        assert_eq!(h.store.total(), 0, "reached the store: {shown}");
        // The request can still use and save its fresh session.
        session.insert("ok", true).unwrap();
        let mut out = HeaderMap::new();
        lazy.finish(StatusCode::OK, &mut out).await.unwrap();
        let set = out.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(set.starts_with("sid=s%3A"), "{set}");
    }
    // The genuine cookie still works after all that.
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert_eq!(r.session.id(), id);
}

#[tokio::test]
async fn hostile_headers_without_signing_never_reach_the_store_either() {
    let h = harness(|b| b);
    for raw in hostile_headers("s%3Aabc.def", "abc") {
        h.store.reset();
        let Ok(value) = HeaderValue::from_bytes(&raw) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, value);
        let session = h.manager.load(&headers).await.unwrap();
        assert!(session.is_new());
        // Only a 21-character nanoid-shaped value may be looked up.
        let looked_up = h.store.total();
        let plausible = h.manager.cookie_value(&headers).is_some_and(|v| {
            v.len() == 21
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        assert_eq!(
            looked_up,
            usize::from(plausible),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[tokio::test]
async fn a_stored_version_at_u64_max_wraps_instead_of_panicking() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let mut record = h.stored(&id).await.unwrap();
    record.version = u64::MAX;
    h.store
        .inner
        .set(&h.manager.store_key(&id), &record)
        .await
        .unwrap();
    let r = h.request(Some(&cookie), bump).await;
    assert!(!r.session.is_new());
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.version, 0);
    assert_eq!(stored_visits(&stored), 2);
}

#[test]
fn lifetimes_beyond_400_days_are_rejected() {
    let year = secs(365 * 24 * 3600);
    for builder in [
        SessionManager::builder(MemoryStore::new()).max_age(2 * year),
        SessionManager::builder(MemoryStore::new()).idle_lifetime(10_000 * year),
    ] {
        assert!(matches!(builder.build(), Err(Error::Config(_))));
    }
}
