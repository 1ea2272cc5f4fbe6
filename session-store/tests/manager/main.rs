//! The manager against `docs/behaviour.md`: every row of the commit table, every option, exact
//! `Set-Cookie` strings and store contents, on an injected clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::store::Capabilities;
use session_store::testing::{CountingStore, Failure};
use session_store::time::OffsetDateTime;
use session_store::time::macros::datetime;
use session_store::{
    Codec, DataKeys, Error, FnCodec, IdGenerator, LazySession, Lifetime, ManualClock, MemoryStore,
    PrivateCodec, Record, Result, SameSite, Session, SessionId, SessionManager,
    SessionManagerBuilder, SessionStore, SignedCodec, async_trait, stored_key,
};

const START: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// The instant `seconds` after `START`.
fn at(seconds: u64) -> OffsetDateTime {
    START + secs(seconds)
}

/// The `Set-Cookie` removing the default `sid` cookie.
const REMOVAL: &str = "sid=; HttpOnly; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

/// The `Set-Cookie` of session `id` under `max_age(3600)`, expiring at `expires`.
fn hour_cookie(id: &SessionId, expires: &str) -> String {
    format!(
        "sid={}; HttpOnly; Path=/; Max-Age=3600; Expires={expires}",
        id.as_str()
    )
}

/// The store of these tests: a `MemoryStore` on the test clock behind the workspace's one
/// counting store (which counts calls and can be switched to fail), named `probe`.
#[derive(Clone)]
struct Probe {
    inner: MemoryStore,
    counting: CountingStore,
}

impl Probe {
    fn new(clock: &ManualClock, caps: Capabilities) -> Self {
        let inner = MemoryStore::with_clock(Arc::new(clock.clone()));
        let counting = CountingStore::new(inner.clone())
            .named("probe")
            .with_capabilities(caps);
        Self { inner, counting }
    }
    /// Calls of `op` (`get`, `set`, `destroy`, `touch`, `create`, `update`, `cas`).
    fn count(&self, op: &str) -> usize {
        let c = self.counting.calls();
        match op {
            "get" => c.get,
            "set" => c.set,
            "destroy" => c.destroy,
            "touch" => c.touch,
            "create" => c.create,
            "update" => c.update,
            "cas" => c.compare_and_set,
            other => panic!("no store operation {other:?}"),
        }
    }
    fn total(&self) -> usize {
        self.counting.calls().total()
    }
    fn reset(&self) {
        self.counting.reset();
    }
    fn fail(&self, failure: Failure) {
        self.counting.fail(failure);
    }
}

struct Harness {
    clock: ManualClock,
    store: Probe,
    manager: SessionManager,
}

fn harness(configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder) -> Harness {
    harness_with(Capabilities::ALL, configure)
}

fn harness_with(
    caps: Capabilities,
    configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
) -> Harness {
    let clock = ManualClock::new(START);
    let store = Probe::new(&clock, caps);
    let builder = SessionManager::builder(store.counting.clone()).clock(Arc::new(clock.clone()));
    let manager = configure(builder).build().expect("valid configuration");
    Harness {
        clock,
        store,
        manager,
    }
}

struct Response {
    set_cookies: Vec<String>,
    session: Session,
}

impl Response {
    fn cookie(&self) -> Option<&str> {
        assert!(self.set_cookies.len() <= 1, "{:?}", self.set_cookies);
        self.set_cookies.first().map(String::as_str)
    }
    /// `name=value` of the Set-Cookie, for the next request.
    fn pair(&self) -> String {
        self.cookie()
            .expect("a Set-Cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
}

fn cookie_headers(cookie: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(c) = cookie {
        headers.insert(COOKIE, HeaderValue::from_str(c).unwrap());
    }
    headers
}

impl Harness {
    async fn request(&self, cookie: Option<&str>, handler: impl FnOnce(&Session)) -> Response {
        self.request_status(cookie, StatusCode::OK, handler).await
    }

    async fn request_status(
        &self,
        cookie: Option<&str>,
        status: StatusCode,
        handler: impl FnOnce(&Session),
    ) -> Response {
        let session = self.manager.load(&cookie_headers(cookie)).await.unwrap();
        handler(&session);
        let mut out = HeaderMap::new();
        self.manager
            .finish(&session, status, &mut out)
            .await
            .unwrap();
        Response {
            set_cookies: out
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect(),
            session,
        }
    }

    /// Loads the session of the `name=value` cookie `cookie`.
    async fn try_load(&self, cookie: &str) -> Result<Session> {
        self.manager.load(&cookie_headers(Some(cookie))).await
    }

    async fn load(&self, cookie: &str) -> Session {
        self.try_load(cookie).await.unwrap()
    }

    /// Finishes `session` as a `200 OK` request, adding to `out`.
    async fn finish(&self, session: &Session, out: &mut HeaderMap) -> Result<()> {
        self.manager.finish(session, StatusCode::OK, out).await
    }

    async fn stored(&self, id: &SessionId) -> Option<Record> {
        self.store
            .inner
            .get(&self.manager.store_key(id))
            .await
            .unwrap()
    }

    /// The stored record's expiry; panics if there is no record.
    async fn expires(&self, id: &SessionId) -> OffsetDateTime {
        self.stored(id).await.unwrap().expires
    }

    /// A session holding `visits = 1`, committed; returns the cookie pair.
    async fn existing(&self) -> (String, SessionId) {
        let r = self
            .request(None, |s| s.insert("visits", 1u32).unwrap())
            .await;
        (r.pair(), r.session.id())
    }
}

fn visits(s: &Session) -> u32 {
    s.get("visits").unwrap().unwrap_or(0)
}

fn bump(s: &Session) {
    s.insert("visits", visits(s) + 1).unwrap();
}

/// `visits` of a stored record, written as MessagePack.
fn stored_visits(record: &Record) -> u32 {
    Codec::MessagePack
        .decode::<u32>(&record.data["visits"])
        .unwrap()
}

// The tests, one module per part of the behaviour.
mod at_rest;
mod commit_table;
mod concurrency;
mod cookie_options;
mod events;
mod failures;
mod hostile;
mod ids_and_codecs;
mod lifetimes;
mod limits;
mod loading;
mod modified;
mod owners;
