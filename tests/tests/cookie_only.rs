//! Cookie-only sessions through HTTP, once per integration: the behaviour suite minus what a
//! cookie-only session cannot have (store contents, revocation, resurrection checks).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use session_store::time::OffsetDateTime;
use session_store::time::macros::datetime;
use session_store::{ManualClock, PrivateCodec, SessionManager};
use session_tests::{Client, Framework, Server, spawn};

const T0: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

async fn server(fw: Framework, clock: &ManualClock) -> Server {
    let keys = PrivateCodec::from_secrets([[9u8; 32]]).unwrap();
    let builder = SessionManager::cookie_only(keys)
        .clock(Arc::new(clock.clone()))
        .max_age(Duration::from_secs(600))
        .touch_after(Duration::from_secs(60));
    spawn(fw, builder).await
}

fn sid(client: &Client) -> String {
    client.cookie("sid").expect("a session cookie")
}

async fn counter_survives_in_the_cookie_alone(fw: Framework) {
    let clock = ManualClock::new(T0);
    let s = server(fw, &clock).await;
    let c = s.client();
    let r = c.get("/empty").await;
    assert!(r.set_cookies().is_empty(), "empty new session: no cookie");
    for n in 1..=5u64 {
        let r = c.get("/count").await;
        assert_eq!(r.body, n.to_string());
        assert!(r.set_cookie().contains("Max-Age=600"), "re-sent on change");
    }
    let r = c.get("/read").await;
    assert_eq!(r.body, "5");
    assert!(r.set_cookies().is_empty(), "unchanged: not re-sent");
    let r = c.get("/same").await;
    assert!(r.set_cookies().is_empty(), "same value: not re-sent");
    // A second server with the same keys reads the same cookie: no server state.
    let second = server(fw, &clock).await;
    let other = second.client();
    other.set_cookie("sid", &sid(&c));
    assert_eq!(other.get("/read").await.body, "5");
}

async fn touch_destroy_regenerate(fw: Framework) {
    let clock = ManualClock::new(T0);
    let s = server(fw, &clock).await;
    let c = s.client();
    c.get("/count").await;
    clock.advance(Duration::from_secs(61));
    let r = c.get("/read").await;
    assert!(
        r.set_cookie()
            .ends_with("Expires=Tue, 01 Jan 2030 00:11:01 GMT"),
        "{}",
        r.set_cookie()
    );
    let before = sid(&c);
    c.get("/regenerate").await;
    assert_ne!(sid(&c), before);
    assert_eq!(c.get("/read").await.body, "1");
    let r = c.get("/destroy").await;
    assert!(r.set_cookie().contains("Max-Age=0"));
    assert_eq!(c.get("/read").await.body, "0");
    // Expired by the payload, whatever the client sends back.
    c.get("/count").await;
    clock.advance(Duration::from_secs(600));
    assert_eq!(c.get("/read").await.body, "0");
}

async fn tampered_cookies_and_failures(fw: Framework) {
    let clock = ManualClock::new(T0);
    let s = server(fw, &clock).await;
    let c = s.client();
    c.get("/count").await;
    let value = sid(&c);
    for bad in [
        format!("{}x", value),
        value[..value.len() / 2].to_owned(),
        // One character of the sealed value changed (always a change, whatever the value).
        {
            let mut bytes = value.clone().into_bytes();
            let at = bytes.len() / 3;
            bytes[at] = if bytes[at] == b'B' { b'C' } else { b'B' };
            String::from_utf8(bytes).expect("ASCII")
        },
        "garbage".to_owned(),
    ] {
        let t = s.client();
        t.set_cookie("sid", &bad);
        assert_eq!(t.get("/read").await.body, "0", "{bad}");
    }
    let r = c.get("/fail").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.set_cookies().is_empty(), "5xx: not saved");
    assert_eq!(c.get("/read").await.body, "1");
}

async fn concurrent_clients_keep_their_own_counts(fw: Framework) {
    let clock = ManualClock::new(T0);
    let s = server(fw, &clock).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let client = s.client();
        tasks.spawn(async move {
            for n in 1..=20u64 {
                assert_eq!(client.get("/count").await.body, n.to_string());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a client task");
    }
}

macro_rules! instantiate {
    ($module:ident, $framework:ident) => {
        mod $module {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn counter() {
                counter_survives_in_the_cookie_alone(Framework::$framework).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lifecycle() {
                touch_destroy_regenerate(Framework::$framework).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile() {
                tampered_cookies_and_failures(Framework::$framework).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent() {
                concurrent_clients_keep_their_own_counts(Framework::$framework).await
            }
        }
    };
}

instantiate!(axum, Axum);
instantiate!(actix, Actix);
instantiate!(hyper, Hyper);
