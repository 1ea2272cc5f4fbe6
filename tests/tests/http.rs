//! The HTTP behaviour suite: `docs/behaviour.md` observed through real HTTP on loopback, once per
//! integration (tower/axum, actix-web, plain hyper with manual commit).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use session_store::time::OffsetDateTime;
use session_store::time::macros::{datetime, format_description};
use session_store::{Error, ManualClock, SessionManager, SessionManagerBuilder, SignedCodec};
use session_tests::{Calls, Client, Failure, Framework, Server, TestStore, spawn};

/// The manual clock's start.
const T0: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);
const MAX_AGE: u64 = 3600;

struct Fixture {
    clock: ManualClock,
    store: TestStore,
    server: Server,
}

impl Fixture {
    async fn new(
        framework: Framework,
        configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
    ) -> Self {
        Self::with_max_age(framework, Some(MAX_AGE), configure).await
    }

    async fn with_max_age(
        framework: Framework,
        max_age: Option<u64>,
        configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
    ) -> Self {
        let clock = ManualClock::new(T0);
        let store = TestStore::new(Arc::new(clock.clone()));
        let mut builder = SessionManager::builder(store.store()).clock(Arc::new(clock.clone()));
        if let Some(max_age) = max_age {
            builder = builder.max_age(Duration::from_secs(max_age));
        }
        let server = spawn(framework, configure(builder)).await;
        Self {
            clock,
            store,
            server,
        }
    }

    fn client(&self) -> Client {
        self.server.client()
    }

    /// A new client that has made one `/count` (its session holds `count = 1`), and the
    /// value of its `sid` cookie.
    async fn counted_client(&self) -> (Client, String) {
        let client = self.client();
        client.get("/count").await;
        let sid = sid(&client);
        (client, sid)
    }

    /// The expiry of the stored record of `id`; panics if there is none.
    async fn expires(&self, id: &str) -> OffsetDateTime {
        self.store.record(id).await.expect("stored").expires
    }

    /// `client` sending the cookie `sid=value` gets a new session (`count` 1) without the
    /// store being asked for `value`.
    async fn assert_never_looked_up(&self, client: &Client, value: &str) {
        client.set_cookie("sid", value);
        self.store.reset_calls();
        assert_eq!(client.get("/count").await.body, "1");
        assert_eq!(self.store.calls().get, 0);
    }

    fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
    }
}

/// The `Set-Cookie` the manager must send for `value` when it sets it `elapsed` seconds
/// after `T0`, so expiring `MAX_AGE` later (our format: `Max-Age` and `Expires`, after
/// `HttpOnly` and `Path`).
fn cookie_set_at(value: &str, elapsed: u64) -> String {
    let http_date = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let expires = T0 + secs(elapsed + MAX_AGE);
    let date = expires.format(http_date).expect("format the date");
    format!("sid={value}; HttpOnly; Path=/; Max-Age={MAX_AGE}; Expires={date}")
}

const REMOVAL: &str = "sid=; HttpOnly; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

/// No store call at all.
const NO_CALLS: Calls = Calls {
    get: 0,
    set: 0,
    destroy: 0,
    touch: 0,
    create: 0,
    update: 0,
    compare_and_set: 0,
    owned: 0,
};
/// Only the `create` of a new session.
const CREATED: Calls = Calls {
    create: 1,
    ..NO_CALLS
};
/// Only the load of an existing session.
const LOADED: Calls = Calls { get: 1, ..NO_CALLS };
/// The load and the touch of an existing session.
const LOADED_AND_TOUCHED: Calls = Calls {
    get: 1,
    touch: 1,
    ..NO_CALLS
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn sid(client: &Client) -> String {
    client
        .cookie("sid")
        .expect("the client holds a session cookie")
}

/// `GET path` answers `status` and sets no cookie.
/// `GET path` answers `status` without a cookie; a 503 says when to retry, a 500 does not.
async fn assert_status_without_cookie(c: &Client, path: &str, status: StatusCode) {
    let r = c.get(path).await;
    assert_eq!(r.status, status);
    assert!(r.set_cookies().is_empty());
    let retry_after = r.headers.get(http::header::RETRY_AFTER);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(retry_after.map(|v| v.to_str().unwrap()), Some("1"));
    } else {
        assert!(retry_after.is_none(), "{retry_after:?}");
    }
}

// --- the cases -------------------------------------------------------------------------

async fn lazy_session_never_touches_the_store(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    let r = c.get("/none").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "no session"));
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls(), NO_CALLS);
    // With a session cookie, still no store call.
    c.get("/count").await;
    f.store.reset_calls();
    assert_status_without_cookie(&c, "/none", StatusCode::OK).await;
    assert_eq!(f.store.calls(), NO_CALLS);
    // Even when the store is down.
    f.store.fail(Failure::Unavailable);
    assert_eq!(c.get("/none").await.status, StatusCode::OK);
}

async fn new_session_left_empty_is_not_saved(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    let r = c.get("/empty").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "0"));
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls(), NO_CALLS);
    assert!(f.store.is_empty());
}

async fn new_populated_session_is_created(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    let r = c.get("/count").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "1"));
    let id = sid(&c);
    assert_eq!(id.len(), 21, "a nanoid");
    assert_eq!(
        r.set_cookie(),
        format!("sid={id}; HttpOnly; Path=/; Max-Age=3600; Expires=Tue, 01 Jan 2030 01:00:00 GMT")
    );
    assert_eq!(f.store.calls(), CREATED);
    assert_eq!(f.store.value(&id, "count").await, Some(1));
    assert_eq!(f.expires(&id).await, T0 + secs(MAX_AGE));
}

async fn existing_modified_session_is_saved_without_cookie(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let (c, id) = f.counted_client().await;
    f.store.reset_calls();
    f.advance(10);
    let r = c.get("/count").await;
    assert_eq!(r.body, "2");
    assert!(r.set_cookies().is_empty(), "the expiry did not change");
    let calls = f.store.calls();
    assert_eq!((calls.get, calls.writes(), calls.total()), (1, 1, 2));
    assert_eq!(f.store.value(&id, "count").await, Some(2));
    assert_eq!(f.expires(&id).await, T0 + secs(MAX_AGE));
}

async fn existing_unmodified_session_is_left_alone(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    c.get("/count").await;
    f.store.reset_calls();
    f.advance(10);
    let r = c.get("/read").await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls(), LOADED);
    // Writing a key's current value is not a modification.
    f.store.reset_calls();
    let r = c.get("/same").await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls(), LOADED);
}

async fn touch_after_extends_when_due(fw: Framework) {
    let f = Fixture::new(fw, |b| b.touch_after(secs(600))).await;
    let (c, id) = f.counted_client().await;
    // Not due yet.
    f.advance(300);
    f.store.reset_calls();
    let r = c.get("/read").await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls().total(), 1);
    // Due, unmodified: a touch and a new cookie.
    f.advance(400);
    f.store.reset_calls();
    let r = c.get("/read").await;
    assert_eq!(r.body, "1");
    assert_eq!(r.set_cookie(), cookie_set_at(&id, 700));
    assert_eq!(f.store.calls(), LOADED_AND_TOUCHED);
    assert_eq!(
        f.expires(&id).await,
        T0 + secs(700 + MAX_AGE),
        "the store has the new expiry"
    );
    assert_eq!(f.store.value(&id, "count").await, Some(1));
    // Just touched: not due again.
    f.store.reset_calls();
    let r = c.get("/read").await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls().total(), 1);
    // Due and modified: one write carrying the new expiry, no separate touch.
    f.advance(700);
    f.store.reset_calls();
    let r = c.get("/count").await;
    assert_eq!(r.body, "2");
    assert_eq!(r.set_cookie(), cookie_set_at(&id, 1400));
    let calls = f.store.calls();
    assert_eq!((calls.get, calls.writes(), calls.touch), (1, 1, 0));
    assert_eq!(f.expires(&id).await, T0 + secs(1400 + MAX_AGE));
    // Expired sessions are gone: a fresh one under a new id.
    f.advance(MAX_AGE + 1);
    let r = c.get("/count").await;
    assert_eq!(r.body, "1");
    assert_ne!(sid(&c), id);
}

async fn browser_session_cookie_has_no_expiry(fw: Framework) {
    const IDLE: u64 = 24 * 60 * 60;
    let f = Fixture::with_max_age(fw, None, |b| b.touch_after(secs(600))).await;
    let c = f.client();
    let r = c.get("/count").await;
    let id = sid(&c);
    assert_eq!(r.set_cookie(), format!("sid={id}; HttpOnly; Path=/"));
    assert_eq!(f.expires(&id).await, T0 + secs(IDLE), "the idle lifetime");
    // Touch due: the store's expiry slides; the cookie has no expiry to change.
    f.advance(700);
    f.store.reset_calls();
    let r = c.get("/read").await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
    assert_eq!(f.store.calls(), LOADED_AND_TOUCHED);
    assert_eq!(f.expires(&id).await, T0 + secs(700 + IDLE));
}

async fn every_cookie_field_is_read(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let (c, id) = f.counted_client().await;
    c.clear_cookies();
    let r = c
        .request_with(
            http::Method::GET,
            "/count",
            &[
                (http::header::COOKIE, "theme=dark; lang=en"),
                (http::header::COOKIE, &format!("sid=\"{id}\"")),
            ],
        )
        .await;
    assert_eq!(
        r.body, "2",
        "the session cookie in the second field, quoted"
    );
    assert_eq!(f.store.value(&id, "count").await, Some(2));
}

async fn explicit_touch_extends_the_expiry(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let (c, id) = f.counted_client().await;
    f.advance(100);
    f.store.reset_calls();
    let r = c.get("/touch").await;
    assert_eq!(r.set_cookie(), cookie_set_at(&id, 100));
    assert_eq!(f.store.calls(), LOADED_AND_TOUCHED);
    assert_eq!(f.expires(&id).await, T0 + secs(100 + MAX_AGE));
}

async fn destroy_removes_record_and_cookie(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let (c, id) = f.counted_client().await;
    f.store.reset_calls();
    let r = c.post("/destroy").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.set_cookie(), REMOVAL);
    let calls = f.store.calls();
    assert_eq!((calls.get, calls.destroy, calls.total()), (1, 1, 2));
    assert!(f.store.record(&id).await.is_none());
    assert!(c.cookie("sid").is_none(), "the browser dropped the cookie");
    let r = c.get("/count").await;
    assert_eq!(r.body, "1");
    assert_ne!(sid(&c), id);
}

async fn regenerate_moves_data_to_a_new_id(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    c.get("/count").await;
    c.get("/count").await;
    let old = sid(&c);
    f.store.reset_calls();
    f.advance(50);
    let r = c.post("/regenerate").await;
    assert_eq!(r.body, "2");
    let new = sid(&c);
    assert_ne!(new, old);
    assert_eq!(r.set_cookie(), cookie_set_at(&new, 50));
    let calls = f.store.calls();
    // Load; create the new id; the old id's tombstone (a `set` under a derived key, so a
    // request still carrying the old cookie answers without a cookie); destroy the old id.
    assert_eq!(
        (
            calls.get,
            calls.create,
            calls.set,
            calls.destroy,
            calls.total()
        ),
        (1, 1, 1, 1, 4)
    );
    assert!(f.store.record(&old).await.is_none(), "old record destroyed");
    assert_eq!(f.store.value(&new, "count").await, Some(2));
    let r = c.get("/count").await;
    assert_eq!(r.body, "3");
    assert!(r.set_cookies().is_empty());
}

fn signed(b: SessionManagerBuilder) -> SessionManagerBuilder {
    b.cookie_codec(SignedCodec::new(["keyboard cat"]).expect("valid secret"))
}

/// The id inside an express-style signed cookie value, after checking the signature format.
fn unsign(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .expect("utf-8")
        .into_owned();
    let signed = decoded.strip_prefix("s:").expect("`s:` prefix");
    let (id, _) = signed.rsplit_once('.').expect("a signature");
    assert_eq!(SignedCodec::sign(b"keyboard cat", id), signed);
    id.to_owned()
}

async fn signed_cookies_round_trip(fw: Framework) {
    let f = Fixture::new(fw, signed).await;
    let c = f.client();
    let r = c.get("/count").await;
    let raw = sid(&c);
    assert!(raw.starts_with("s%3A"), "express-session's format: {raw}");
    let id = unsign(&raw);
    assert_eq!(r.set_cookie(), cookie_set_at(&raw, 0));
    assert_eq!(f.store.value(&id, "count").await, Some(1));
    assert_eq!(c.get("/count").await.body, "2");
    assert_eq!(f.store.value(&id, "count").await, Some(2));
}

async fn tampered_cookie_gets_a_new_session(fw: Framework) {
    let f = Fixture::new(fw, signed).await;
    let (c, raw) = f.counted_client().await;
    let id = unsign(&raw);
    // Flip the signature's last character.
    let mut tampered = raw.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    c.set_cookie("sid", &tampered);
    f.store.reset_calls();
    let r = c.get("/count").await;
    assert_eq!(r.body, "1", "a new session");
    assert_eq!(
        f.store.calls().get,
        0,
        "a bad signature never reaches the store"
    );
    let new = unsign(&sid(&c));
    assert_ne!(new, id);
    assert_eq!(
        f.store.value(&id, "count").await,
        Some(1),
        "old one untouched"
    );
    // An unsigned id is no session either.
    f.assert_never_looked_up(&c, &id).await;
}

async fn unknown_id_is_never_adopted(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    let planted = "AAAAAAAAAAAAAAAAAAAAA";
    c.set_cookie("sid", planted);
    let r = c.get("/count").await;
    assert_eq!(r.body, "1");
    // The id, then whether a regeneration moved it moments ago (its tombstone).
    assert_eq!(f.store.calls().get, 2);
    let id = sid(&c);
    assert_ne!(id, planted, "session fixation");
    assert!(f.store.record(planted).await.is_none());
    // Garbage never reaches the store.
    f.assert_never_looked_up(&c, "not%20an%20id").await;
}

async fn server_error_is_not_saved(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    assert_status_without_cookie(&c, "/fail", StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(f.store.is_empty());
    assert_eq!(f.store.calls(), NO_CALLS);
    c.get("/count").await;
    let id = sid(&c);
    f.store.reset_calls();
    assert_status_without_cookie(&c, "/fail", StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(f.store.calls().writes(), 0);
    assert_eq!(f.store.value(&id, "count").await, Some(1));
    assert_eq!(c.get("/read").await.body, "1");
}

/// The captured logs hold the store-failure event and never the session id `id`.
fn assert_failure_logged_without(id: &str) {
    let logs = session_tests::captured_logs();
    assert!(
        logs.contains("session store failed"),
        "an error event: {logs}"
    );
    assert!(!logs.contains(id), "the session id must never be logged");
}

async fn store_down_while_loading(fw: Framework) {
    session_tests::capture_logs();
    let f = Fixture::new(fw, |b| b).await;
    let (c, id) = f.counted_client().await;
    f.store.fail(Failure::Unavailable);
    assert_status_without_cookie(&c, "/read", StatusCode::SERVICE_UNAVAILABLE).await;
    f.store.fail(Failure::Backend);
    assert_status_without_cookie(&c, "/count", StatusCode::INTERNAL_SERVER_ERROR).await;
    f.store.fail(Failure::None);
    assert_eq!(
        c.get("/count").await.body,
        "2",
        "nothing was lost or replaced"
    );
    assert_eq!(sid(&c), id);
    assert_failure_logged_without(&id);
}

async fn store_down_while_committing(fw: Framework) {
    session_tests::capture_logs();
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    f.store.fail(Failure::WritesUnavailable);
    assert_status_without_cookie(&c, "/count", StatusCode::SERVICE_UNAVAILABLE).await;
    f.store.fail(Failure::WritesBackend);
    assert_status_without_cookie(&c, "/count", StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(f.store.is_empty());
    f.store.fail(Failure::None);
    assert_eq!(c.get("/count").await.body, "1");
    let id = sid(&c);
    f.store.fail(Failure::WritesUnavailable);
    let r = c.get("/count").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    f.store.fail(Failure::None);
    assert_eq!(f.store.value(&id, "count").await, Some(1));
    assert_eq!(c.get("/count").await.body, "2");
    assert_failure_logged_without(&id);
}

async fn manual_commit_then_auto_commit_writes_once(fw: Framework) {
    let f = Fixture::new(fw, |b| b).await;
    let c = f.client();
    let r = c.get("/commit").await;
    assert_eq!(r.body, "1");
    let id = sid(&c);
    assert_eq!(r.set_cookie(), cookie_set_at(&id, 0));
    assert_eq!(f.store.calls(), CREATED);
    f.store.reset_calls();
    let r = c.get("/commit").await;
    assert_eq!(r.body, "2");
    assert!(r.set_cookies().is_empty());
    let calls = f.store.calls();
    assert_eq!((calls.get, calls.writes(), calls.total()), (1, 1, 2));
    assert_eq!(f.store.value(&id, "count").await, Some(2));
}

async fn concurrent_clients_keep_their_own_counts(fw: Framework) {
    const CLIENTS: usize = 200;
    const REQUESTS: u64 = 20;
    let f = Fixture::new(fw, |b| b).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let client = f.client();
        tasks.spawn(async move {
            for n in 1..=REQUESTS {
                let r = client.get("/count").await;
                assert_eq!(r.status, StatusCode::OK);
                assert_eq!(r.body, n.to_string());
            }
            sid(&client)
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("a client task"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), CLIENTS, "every client has its own session");
    for id in &ids {
        assert_eq!(f.store.value(id, "count").await, Some(REQUESTS));
    }
    assert_eq!(f.store.len(), CLIENTS);
}

macro_rules! instantiate {
    ($module:ident, $framework:ident; $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Framework::$framework).await
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        instantiate!(axum_suite, Axum; $($case),*);
        instantiate!(actix_suite, Actix; $($case),*);
        instantiate!(hyper_suite, Hyper; $($case),*);
    };
}

suite!(
    lazy_session_never_touches_the_store,
    new_session_left_empty_is_not_saved,
    new_populated_session_is_created,
    existing_modified_session_is_saved_without_cookie,
    existing_unmodified_session_is_left_alone,
    touch_after_extends_when_due,
    explicit_touch_extends_the_expiry,
    browser_session_cookie_has_no_expiry,
    every_cookie_field_is_read,
    destroy_removes_record_and_cookie,
    regenerate_moves_data_to_a_new_id,
    signed_cookies_round_trip,
    tampered_cookie_gets_a_new_session,
    unknown_id_is_never_adopted,
    server_error_is_not_saved,
    store_down_while_loading,
    store_down_while_committing,
    manual_commit_then_auto_commit_writes_once,
    concurrent_clients_keep_their_own_counts,
);

// --- integration-specific ----------------------------------------------------------------

/// Auto commit only: `save_on_server_error(true)` saves what a 5xx handler changed.
async fn server_error_saved_when_configured(fw: Framework) {
    let f = Fixture::new(fw, |b| b.save_on_server_error(true)).await;
    let c = f.client();
    let r = c.get("/fail").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let id = sid(&c);
    assert_eq!(r.set_cookie(), cookie_set_at(&id, 0));
    assert_eq!(f.store.value(&id, "count").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_server_error_saved_when_configured() {
    server_error_saved_when_configured(Framework::Axum).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_server_error_saved_when_configured() {
    server_error_saved_when_configured(Framework::Actix).await
}

/// A failed load and a failed save of `server`'s app, on `store`, both answer the
/// user-supplied error page with the error's status.
async fn assert_custom_error_page(server: &Server, store: &TestStore) {
    let c = server.client();
    c.get("/count").await;
    store.fail(Failure::Unavailable);
    let r = c.get("/read").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "custom error page")
    );
    store.fail(Failure::WritesBackend);
    c.clear_cookies();
    let r = c.get("/count").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "custom error page")
    );
}

fn failing_manager() -> (TestStore, SessionManager) {
    let store = TestStore::new(Arc::new(session_store::SystemClock));
    let manager = SessionManager::builder(store.store())
        .build()
        .expect("valid manager");
    (store, manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_user_supplied_error_response() {
    let (store, manager) = failing_manager();
    let layer = session_store_tower::SessionLayer::new(manager).on_error(|error: &Error| {
        let mut response = http::Response::new(axum::body::Body::from("custom error page"));
        *response.status_mut() = error.status_code();
        response
    });
    let server = session_tests::spawn_axum(layer).await;
    assert_custom_error_page(&server, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_user_supplied_error_response() {
    let (store, manager) = failing_manager();
    let middleware =
        session_store_actix::SessionMiddleware::new(manager).on_error(|error: &Error| {
            let status = actix_web::http::StatusCode::from_u16(error.status_code().as_u16())
                .expect("a valid status");
            actix_web::HttpResponse::build(status).body("custom error page")
        });
    let server = session_tests::spawn_actix(middleware);
    assert_custom_error_page(&server, &store).await;
}
