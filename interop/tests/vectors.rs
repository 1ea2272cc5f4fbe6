//! The express-session interop settings against the reference values of `docs/behaviour.md`:
//! cookie-signature's vectors, express-session's cookie value, and its stored JSON. No
//! service needed.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use session_interop::{COOKIE_NAME, express_manager};
use session_store::express::ExpressLayout;
use session_store::time::OffsetDateTime;
use session_store::time::format_description::well_known::Rfc3339;
use session_store::{
    Codec, CookieCodec, CookieOptions, IdGenerator, MemoryStore, SessionManager, SignedCodec,
};

const NODE_JSON: &str = r#"{"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/"},"views":2}"#;

#[test]
fn cookie_signature_vectors() {
    assert_eq!(
        SignedCodec::sign(b"tobiiscool", "hello"),
        "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
    );
    let codec = SignedCodec::new(["tobiiscool"]).unwrap().without_prefix();
    assert_eq!(
        codec.unsign("hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"),
        Some("hello".to_owned())
    );
    for bad in [
        "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QJ",
        "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI=",
        "hellO.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI",
        "hello",
        "",
        ".",
    ] {
        assert_eq!(codec.unsign(bad), None, "{bad}");
    }
}

#[test]
fn express_cookie_value_vector() {
    let codec = SignedCodec::new(["keyboard cat"]).unwrap();
    assert_eq!(
        codec.encode(COOKIE_NAME, "abc123"),
        "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0"
    );
    // Rotation: a cookie signed with the old secret still verifies after the new one is
    // put first; a stranger's secret does not.
    let rotated = SignedCodec::new(["new secret", "keyboard cat"]).unwrap();
    let old = "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0";
    assert_eq!(rotated.decode(COOKIE_NAME, old), Some("abc123".to_owned()));
    let stranger = SignedCodec::new(["stranger"]).unwrap();
    assert_eq!(stranger.decode(COOKIE_NAME, old), None);
    // Without the `s:` prefix express-session would not treat it as signed.
    assert_eq!(
        codec.decode(
            COOKIE_NAME,
            "abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0"
        ),
        None
    );
}

/// The manager with the interop settings writes exactly express-session's cookie value
/// (`s%3A…`, percent-encoded like `encodeURIComponent`) and reads it back.
#[tokio::test]
async fn manager_writes_and_reads_express_cookies() {
    let store = MemoryStore::new();
    let manager = SessionManager::builder(store.clone())
        .cookie_name(COOKIE_NAME)
        .codec(Codec::Json)
        .cookie_codec(SignedCodec::new(["keyboard cat"]).unwrap())
        .id_generator(IdGenerator::custom(
            || "abc123".to_owned(),
            |id| id == "abc123",
        ))
        .build()
        .unwrap();
    let session = manager.load(&HeaderMap::new()).await.unwrap();
    session.insert("views", 1).unwrap();
    let mut headers = HeaderMap::new();
    manager
        .finish(&session, StatusCode::OK, &mut headers)
        .await
        .unwrap();
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set_cookie
            .starts_with("connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0;"),
        "{set_cookie}"
    );

    let mut request = HeaderMap::new();
    request.insert(
        header::COOKIE,
        HeaderValue::from_static(
            "other=1; connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0",
        ),
    );
    let again = manager.load(&request).await.unwrap();
    assert!(!again.is_new(), "the signed cookie was not accepted");
    assert_eq!(again.get::<u32>("views").unwrap(), Some(1));

    // A tampered signature is no session.
    request.insert(
        header::COOKIE,
        HeaderValue::from_static(
            "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w1",
        ),
    );
    assert!(manager.load(&request).await.unwrap().is_new());
}

#[test]
fn express_manager_accepts_express_ids() {
    let ids = IdGenerator::express_compatible();
    let id = ids.generate();
    assert_eq!(id.as_str().len(), 32);
    assert!(ids.is_valid(id.as_str()));
    assert!(
        ids.is_valid("9A5njsYGqZUCtpxL0MUQT3BxLeBHpkRA"),
        "an id express-session made"
    );
    assert!(!ids.is_valid("9A5njsYGqZUCtpxL0MUQT3BxLeBHpkR"));
    let manager = express_manager(MemoryStore::new(), CookieOptions::default(), &["s"]).unwrap();
    assert_eq!(manager.cookie_name(), "connect.sid");
    assert!(express_manager(MemoryStore::new(), CookieOptions::default(), &[]).is_err());
}

/// express-session's stored JSON (`docs/behaviour.md`) read and written back by the layout.
#[test]
fn express_json_example_round_trips() {
    let layout = ExpressLayout::new(CookieOptions {
        max_age: Some(Duration::from_secs(60)),
        ..CookieOptions::default()
    });
    let expires = OffsetDateTime::parse("2026-11-26T19:58:41.066Z", &Rfc3339).unwrap();
    let record = layout.decode(NODE_JSON.as_bytes(), expires, 0).unwrap();
    assert_eq!(Codec::Json.decode::<u32>(&record.data["views"]).unwrap(), 2);
    let back: serde_json::Value = serde_json::from_slice(&layout.encode(&record).unwrap()).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(NODE_JSON).unwrap()
    );

    // A session created in Rust gets the same shape.
    let mut fresh = session_store::Record::new(expires, Codec::Json);
    fresh.data.insert("views".into(), b"2".to_vec());
    let written: serde_json::Value =
        serde_json::from_slice(&layout.encode(&fresh).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({"cookie": {"originalMaxAge": 60000, "expires": "2026-11-26T19:58:41.066Z",
            "httpOnly": true, "path": "/"}, "views": 2})
    );
}
