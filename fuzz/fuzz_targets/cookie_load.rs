//! Cookie header parsing, cookie codec decoding, signature verification and loading.
//!
//! Arbitrary bytes become one or several `Cookie` header fields and go through
//! `SessionManager::cookie_value` and `load_value` (plain, signed with two secrets, private,
//! cookie-only managers over a `MemoryStore`). Checked on every input:
//! - no panic, and loading never fails (the memory store cannot be unavailable);
//! - a loaded (existing) session is one of the sessions stored at start-up, its id passes
//!   the id validator, and it was reached through that session's own cookie;
//! - a fresh session never adopts the id the client sent (session fixation);
//! - `load` (headers) and `load_value(cookie_value(headers))` agree;
//! - `finish` of an untouched session writes nothing to the store.
//!
//! Input layout: byte 0 picks the manager; byte 1 the mode:
//! - mode 0: the rest, split at `\n`, are the raw `Cookie` fields;
//! - mode 1: a valid cookie of the manager with the rest spliced in at a position (tampered
//!   signatures, ciphertexts, percent-encoding);
//! - mode 2: the rest as fields, then a valid cookie field (first occurrence wins);
//! - mode 3: the rest passed straight to `load_value` (already percent-decoded);
//! - mode 4: the rest, base64url-encoded and sealed with the cookie-only manager's key, is
//!   loaded by that manager: the parser behind the authentication (format, expiry, version,
//!   id, payload envelope), which forged cookies cannot reach. Loading and committing a
//!   change must not panic; a loaded session is never expired.

#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use session_store::{
    IdGenerator, MAX_COOKIE_VALUE_LEN, MemoryStore, PrivateCodec, SessionId, SessionManager,
    SignedCodec,
};

struct Case {
    manager: SessionManager,
    store: Option<MemoryStore>,
    ids: IdGenerator,
    /// The stored session's id and its full `name=value` cookie as a browser sends it.
    stored_id: SessionId,
    cookie: String,
}

struct World {
    runtime: tokio::runtime::Runtime,
    cases: Vec<Case>,
    /// The cookie-only manager's key.
    private: PrivateCodec,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let private = PrivateCodec::from_secrets([[7u8; 32], [9u8; 32]]).expect("keys");
        let mut cases = Vec::new();
        let stores: Vec<(MemoryStore, SessionManager, IdGenerator)> = {
            let plain = MemoryStore::new();
            let signed = MemoryStore::new();
            let sealed = MemoryStore::new();
            let express = MemoryStore::new();
            vec![
                (
                    plain.clone(),
                    SessionManager::builder(plain).build().expect("plain"),
                    IdGenerator::nanoid(),
                ),
                (
                    signed.clone(),
                    SessionManager::builder(signed)
                        .cookie_name("connect.sid")
                        .cookie_codec(
                            SignedCodec::new(["new secret", "keyboard cat"]).expect("secrets"),
                        )
                        .build()
                        .expect("signed"),
                    IdGenerator::nanoid(),
                ),
                (
                    sealed.clone(),
                    SessionManager::builder(sealed)
                        .cookie_codec(private.clone())
                        .build()
                        .expect("private"),
                    IdGenerator::nanoid(),
                ),
                (
                    express.clone(),
                    SessionManager::builder(express)
                        .cookie_name("connect.sid")
                        .id_generator(IdGenerator::express_compatible())
                        .cookie_codec(
                            SignedCodec::new(["keyboard cat"])
                                .expect("secret")
                                .without_prefix(),
                        )
                        .build()
                        .expect("express"),
                    IdGenerator::express_compatible(),
                ),
            ]
        };
        for (store, manager, ids) in stores {
            let (stored_id, cookie) = runtime.block_on(seed(&manager));
            assert_eq!(store.len(), 1);
            cases.push(Case {
                manager,
                store: Some(store),
                ids,
                stored_id,
                cookie,
            });
        }
        let cookie_only = SessionManager::cookie_only(private.clone())
            .max_age(std::time::Duration::from_secs(3600))
            .build()
            .expect("cookie-only");
        let (stored_id, cookie) = runtime.block_on(seed(&cookie_only));
        cases.push(Case {
            manager: cookie_only,
            store: None,
            ids: IdGenerator::nanoid(),
            stored_id,
            cookie,
        });
        World {
            runtime,
            cases,
            private,
        }
    })
}

/// Stores one session through a normal request and returns its id and request cookie.
async fn seed(manager: &SessionManager) -> (SessionId, String) {
    let session = manager.load(&HeaderMap::new()).await.expect("fresh");
    session.insert("user", "ann").expect("insert");
    let mut headers = HeaderMap::new();
    manager
        .finish(&session, StatusCode::OK, &mut headers)
        .await
        .expect("finish");
    let set_cookie = headers
        .get(http::header::SET_COOKIE)
        .expect("set-cookie")
        .to_str()
        .expect("ascii");
    let pair = set_cookie.split(';').next().expect("pair").to_owned();
    (session.id(), pair)
}

fn headers_from(fields: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for field in fields {
        if let Ok(value) = HeaderValue::from_bytes(field) {
            headers.append(COOKIE, value);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let [which, mode, rest @ ..] = data else {
        return;
    };
    let w = world();
    if mode % 5 == 4 {
        sealed_plaintext(w, rest);
        return;
    }
    let case = &w.cases[usize::from(*which) % w.cases.len()];
    let spliced;
    let (headers, direct) = match mode % 5 {
        0 => (
            headers_from(&rest.split(|&b| b == b'\n').collect::<Vec<_>>()),
            None,
        ),
        1 => {
            let cookie = case.cookie.as_bytes();
            let (&at, patch) = rest.split_first().unwrap_or((&0, &[]));
            let at = usize::from(at) % (cookie.len() + 1);
            // Odd positions replace bytes, even ones insert.
            let tail = if at % 2 == 1 {
                cookie.get(at + patch.len()..).unwrap_or(&[])
            } else {
                &cookie[at..]
            };
            spliced = [&cookie[..at], patch, tail].concat();
            (headers_from(&[&spliced]), None)
        }
        2 => {
            let mut fields: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
            fields.push(case.cookie.as_bytes());
            (headers_from(&fields), None)
        }
        _ => (
            HeaderMap::new(),
            Some(String::from_utf8_lossy(rest).into_owned()),
        ),
    };

    let value = match &direct {
        Some(direct) => Some(direct.clone()),
        None => case.manager.cookie_value(&headers),
    };
    if direct.is_none()
        && let Some(v) = &value
    {
        assert!(!v.is_empty() && v.len() <= MAX_COOKIE_VALUE_LEN);
    }
    let own = case
        .manager
        .cookie_value(&headers_from(&[case.cookie.as_bytes()]));

    w.runtime.block_on(async {
        let session = case
            .manager
            .load_value(value.as_deref())
            .await
            .expect("loading from a memory store never fails");
        let id = session.id();
        if session.is_new() {
            // Never adopt the id the client sent.
            if let Some(v) = &value {
                assert_ne!(id.as_str(), v.as_str(), "fresh session adopted the cookie");
            }
            assert_ne!(id, case.stored_id);
        } else {
            assert!(
                case.ids.is_valid(id.as_str()),
                "accepted id fails the validator"
            );
            assert_eq!(id, case.stored_id, "loaded a session that was never stored");
            // Forging is infeasible: only the stored session's own cookie value opens it
            // (modulo percent-encoding and quoting, which `cookie_value` undoes).
            assert_eq!(value, own, "forged cookie accepted");
            assert_eq!(
                session.get::<String>("user").ok().flatten().as_deref(),
                Some("ann")
            );
        }
        if direct.is_none() {
            let again = case.manager.load(&headers).await.expect("load");
            assert_eq!(again.is_new(), session.is_new());
        }
        let mut response = HeaderMap::new();
        case.manager
            .finish(&session, StatusCode::OK, &mut response)
            .await
            .expect("finish of an untouched session");
        if let Some(store) = &case.store {
            assert_eq!(store.len(), 1, "an untouched session changed the store");
        }
    });
});

/// Mode 4: arbitrary plaintext behind a valid seal, for the cookie-only manager.
fn sealed_plaintext(w: &World, plain: &[u8]) {
    let case = w.cases.last().expect("the cookie-only case is last");
    assert!(case.manager.is_cookie_only());
    let sealed = w
        .private
        .seal(case.manager.cookie_name(), &URL_SAFE_NO_PAD.encode(plain));
    w.runtime.block_on(async {
        let session = case
            .manager
            .load_value(Some(&sealed))
            .await
            .expect("cookie-only loading never fails");
        if !session.is_new() {
            assert!(
                session.expires() > session_store::time::OffsetDateTime::now_utc(),
                "an expired cookie-only session was loaded"
            );
        }
        let _ = session.get::<serde_json::Value>("user");
        let _ = session.insert("fuzz", 1u8);
        // A version at u64::MAX wraps instead of overflowing (seed-version-overflow).
        let _ = session.commit().await;
        let _ = session.take_set_cookie();
    });
}
