//! The manager against `docs/behaviour.md`: every row of the commit table, every option, exact
//! `Set-Cookie` strings and store contents, on an injected clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::store::Capabilities;
use session_store::time::OffsetDateTime;
use session_store::time::macros::datetime;
use session_store::{
    CasOutcome, Codec, Error, FnCodec, IdGenerator, LazySession, ManualClock, MemoryStore,
    PrivateCodec, Record, Result, SameSite, Session, SessionId, SessionManager,
    SessionManagerBuilder, SessionStore, SignedCodec, async_trait,
};

type MakeError = fn() -> Error;

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

/// Counts calls per operation and can be told to fail; forwards to a `MemoryStore`.
#[derive(Clone)]
struct Probe {
    inner: MemoryStore,
    calls: Arc<Mutex<HashMap<&'static str, usize>>>,
    fail: Arc<Mutex<Option<MakeError>>>,
    caps: Capabilities,
}

impl Probe {
    fn new(clock: &ManualClock) -> Self {
        Self {
            inner: MemoryStore::with_clock(Arc::new(clock.clone())),
            calls: Default::default(),
            fail: Default::default(),
            caps: Capabilities::ALL,
        }
    }
    fn count(&self, op: &str) -> usize {
        *self.calls.lock().unwrap().get(op).unwrap_or(&0)
    }
    fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
    fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }
    fn fail_with(&self, f: Option<MakeError>) {
        *self.fail.lock().unwrap() = f;
    }
    fn hit(&self, op: &'static str) -> Result<()> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        match *self.fail.lock().unwrap() {
            Some(f) => Err(f()),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl SessionStore for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.hit("get")?;
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.hit("set")?;
        self.inner.set(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.hit("destroy")?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.hit("touch")?;
        if self.caps.native_touch {
            self.inner.touch(id, expires).await
        } else {
            // What the trait's default does: read, then write the whole record.
            let Some(mut record) = self.inner.get(id).await? else {
                return Ok(false);
            };
            record.expires = expires;
            self.inner.update(id, &record).await
        }
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.hit("create")?;
        self.inner.create(id, record).await
    }
    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.hit("update")?;
        self.inner.update(id, record).await
    }
    async fn compare_and_set(&self, id: &SessionId, r: &Record, v: u64) -> Result<CasOutcome> {
        self.hit("cas")?;
        self.inner.compare_and_set(id, r, v).await
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
    let mut store = Probe::new(&clock);
    store.caps = caps;
    let builder = SessionManager::builder(store.clone()).clock(Arc::new(clock.clone()));
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
        self.store.inner.get(id).await.unwrap()
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

// ---- the commit table ----

#[tokio::test]
async fn new_and_empty_sets_nothing_and_stores_nothing() {
    let h = harness(|b| b);
    let r = h.request(None, |_| {}).await;
    assert_eq!(r.set_cookies, Vec::<String>::new());
    assert_eq!(h.store.total(), 0);
    assert!(h.store.inner.is_empty());
    // Inserting then removing leaves it empty too.
    let r = h
        .request(None, |s| {
            s.insert("k", 1).unwrap();
            s.remove("k");
        })
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
}

#[tokio::test]
async fn new_and_populated_creates_and_sets_the_cookie() {
    let h = harness(|b| b);
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(
        r.cookie().unwrap(),
        format!("sid={}; HttpOnly; Path=/", id.as_str())
    );
    assert_eq!((h.store.count("create"), h.store.count("set")), (1, 0));
    let stored = h.stored(&id).await.expect("stored");
    assert_eq!(stored_visits(&stored), 1);
    // Browser-session cookie: the store keeps it for the idle lifetime (one day).
    assert_eq!(stored.expires, at(86400));
    assert!(
        r.session.is_new(),
        "is_new stays true for the whole request"
    );
}

#[tokio::test]
async fn new_session_with_max_age_sends_max_age_and_expires() {
    let h = harness(|b| b.max_age(secs(3600)));
    let r = h.request(None, bump).await;
    let id = r.session.id();
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:00:00 GMT")
    );
    assert_eq!(h.expires(&id).await, at(3600));
}

/// A new session whose id is already taken is stored under a fresh one, and its cookie
/// carries that one; a generator that only repeats itself gives up with `Conflict`.
#[tokio::test]
async fn a_new_session_whose_id_is_taken_moves_to_a_fresh_id() {
    let (a, b) = ("A".repeat(21), "B".repeat(21));
    let script = Arc::new(Mutex::new(vec![b.clone(), a.clone(), a.clone()]));
    let next = script.clone();
    let h = harness(move |builder| {
        builder.id_generator(IdGenerator::custom(
            move || {
                let mut ids = next.lock().unwrap();
                ids.pop().unwrap_or_else(|| "A".repeat(21))
            },
            |id| id.len() == 21,
        ))
    });
    let (cookie, id) = h.existing().await;
    assert_eq!(id.as_str(), a);
    h.store.reset();
    let r = h.request(None, |s| s.insert("user", "bob").unwrap()).await;
    assert_eq!(r.session.id().as_str(), b);
    assert_eq!(r.pair(), format!("sid={b}"));
    assert_eq!(h.store.count("create"), 2);
    let stored = h.stored(&r.session.id()).await.unwrap();
    assert!(stored.data.contains_key("user"));
    // The session that held the id is untouched.
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert_eq!(r.session.id(), id);
    // Every id taken: three attempts, then an error, and nothing is overwritten.
    let s = h.manager.load(&cookie_headers(None)).await.unwrap();
    s.insert("user", "eve").unwrap();
    let err = s.commit().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { attempts: 3 }), "{err:?}");
    let stored = h.stored(&id).await.unwrap();
    assert!(!stored.data.contains_key("user"));
}

#[tokio::test]
async fn existing_modified_writes_without_cookie() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(60));
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(r.set_cookies, Vec::<String>::new(), "expiry did not change");
    assert_eq!(r.session.id(), id);
    assert_eq!((h.store.count("get"), h.store.count("cas")), (1, 1));
    assert_eq!(h.store.total(), 2);
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 2);
    assert_eq!(stored.expires, at(3600), "expiry untouched");
    assert_eq!(stored.version, 1);
}

#[tokio::test]
async fn existing_unmodified_not_due_does_nothing() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(secs(600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(599));
    let r = h.request(Some(&cookie), |s| assert_eq!(visits(s), 1)).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1, "only the load");
    assert_eq!(h.expires(&id).await, at(3600));
}

#[tokio::test]
async fn existing_due_for_touch_touches_and_sets_the_cookie() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(secs(600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(600));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:10:00 GMT")
    );
    assert_eq!((h.store.count("get"), h.store.count("touch")), (1, 1));
    assert_eq!(h.store.total(), 2, "touch writes no data");
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.expires, at(4200));
    assert_eq!(stored.version, 0, "touch leaves the version");
    // The next request within touchAfter of the touch does nothing: the stored expiry is
    // the new one (no stale-expiry storm).
    h.store.reset();
    h.clock.advance(secs(300));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1);
}

#[tokio::test]
async fn touched_and_modified_writes_once_with_the_new_expiry() {
    let h = harness(|b| b.max_age(secs(3600)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    h.clock.advance(secs(10));
    let r = h.request(Some(&cookie), bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&id, "Thu, 01 Jan 2026 01:00:10 GMT")
    );
    assert_eq!((h.store.count("cas"), h.store.count("touch")), (1, 0));
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored.expires, at(3610));
    assert_eq!(stored_visits(&stored), 2);
}

#[tokio::test]
async fn destroyed_sends_the_removal_cookie_and_destroys() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, id) = h.existing().await;
    h.store.reset();
    let r = h.request(Some(&cookie), |s| s.destroy()).await;
    assert_eq!(r.cookie().unwrap(), REMOVAL);
    assert_eq!(h.store.count("destroy"), 1);
    assert!(h.stored(&id).await.is_none());
    // The old cookie now loads a fresh session under a new id.
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new());
    assert_ne!(r.session.id(), id);
}

#[tokio::test]
async fn destroying_a_new_session_clears_only_a_cookie_the_client_sent() {
    let h = harness(|b| b);
    let r = h.request(None, |s| s.destroy()).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
    let r = h
        .request(Some("sid=AAAAAAAAAAAAAAAAAAAAA"), |s| s.destroy())
        .await;
    assert_eq!(r.cookie().unwrap(), REMOVAL);
}

#[tokio::test]
async fn data_inserted_after_destroy_starts_a_new_session() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let r = h
        .request(Some(&cookie), |s| {
            s.destroy();
            s.insert("fresh", true).unwrap();
        })
        .await;
    let new_id = r.session.id();
    assert_ne!(new_id, id);
    assert!(h.stored(&id).await.is_none());
    let stored = h.stored(&new_id).await.unwrap();
    assert!(!stored.data.contains_key("visits"));
    assert_eq!(
        r.cookie().unwrap(),
        format!("sid={}; HttpOnly; Path=/", new_id.as_str())
    );
}

#[tokio::test]
async fn regenerate_moves_the_data_to_a_new_id() {
    let h = harness(|b| b.max_age(secs(3600)));
    let (cookie, old) = h.existing().await;
    h.clock.advance(secs(30));
    h.store.reset();
    let r = h.request(Some(&cookie), |s| s.regenerate()).await;
    let new = r.session.id();
    assert_ne!(new, old);
    assert_eq!(
        r.cookie().unwrap(),
        hour_cookie(&new, "Thu, 01 Jan 2026 01:00:30 GMT")
    );
    assert!(h.stored(&old).await.is_none(), "old record destroyed");
    let stored = h.stored(&new).await.unwrap();
    assert_eq!(stored_visits(&stored), 1);
    assert_eq!((h.store.count("create"), h.store.count("destroy")), (1, 1));
    // The new cookie works; the old one does not.
    let r = h
        .request(Some(&format!("sid={}", new.as_str())), |s| {
            assert_eq!(visits(s), 1)
        })
        .await;
    assert!(!r.session.is_new());
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new());
}

#[tokio::test]
async fn regenerating_an_empty_new_session_stores_nothing() {
    let h = harness(|b| b);
    let r = h.request(None, |s| s.regenerate()).await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
}

// ---- "modified" by value ----

#[tokio::test]
async fn same_value_is_not_a_modification() {
    let h = harness(|b| b);
    let (cookie, _) = h.existing().await;
    h.store.reset();
    let r = h
        .request(Some(&cookie), |s| {
            s.insert("visits", 1u32).unwrap();
            assert!(!s.is_modified());
        })
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 1, "no write for an equal value");
    // Changed and changed back within the request: no write either.
    h.store.reset();
    h.request(Some(&cookie), |s| {
        s.insert("visits", 5u32).unwrap();
        s.insert("visits", 1u32).unwrap();
    })
    .await;
    assert_eq!(h.store.total(), 1);
}

#[tokio::test]
async fn hash_map_reinserted_in_another_order_is_not_a_modification() {
    let h = harness(|b| b);
    let map: HashMap<String, u32> = (0..40).map(|i| (format!("k{i}"), i)).collect();
    let r = h.request(None, |s| s.insert("map", &map).unwrap()).await;
    let cookie = r.pair();
    h.store.reset();
    let mut rebuilt = HashMap::new();
    for i in (0..40).rev() {
        rebuilt.insert(format!("k{i}"), i);
    }
    h.request(Some(&cookie), |s| s.insert("map", &rebuilt).unwrap())
        .await;
    assert_eq!(h.store.total(), 1, "only the load");
}

#[tokio::test]
async fn manual_commit_then_auto_commit_writes_once() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.reset();
    let session = h.load(&cookie).await;
    bump(&session);
    session.commit().await.unwrap();
    session.commit().await.unwrap();
    let mut out = HeaderMap::new();
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(h.store.count("cas"), 1);
    // A change after the manual commit is written by auto commit, once.
    let session = h.load(&cookie).await;
    h.store.reset();
    bump(&session);
    session.commit().await.unwrap();
    bump(&session);
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(h.store.count("cas"), 2);
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 4);
}

#[tokio::test]
async fn manual_commit_of_a_new_session_sets_the_cookie_once() {
    let h = harness(|b| b.auto_commit(false));
    let session = h.manager.load(&HeaderMap::new()).await.unwrap();
    bump(&session);
    let mut out = HeaderMap::new();
    h.finish(&session, &mut out).await.unwrap();
    assert!(out.is_empty(), "auto commit is off");
    assert_eq!(h.store.total(), 0);
    session.commit().await.unwrap();
    h.finish(&session, &mut out).await.unwrap();
    assert_eq!(out.get_all(SET_COOKIE).iter().count(), 1);
    assert_eq!(h.store.count("create"), 1);
}

#[tokio::test]
async fn server_errors_skip_the_save_unless_configured() {
    let h = harness(|b| b);
    let r = h
        .request_status(None, StatusCode::INTERNAL_SERVER_ERROR, bump)
        .await;
    assert!(r.set_cookies.is_empty());
    assert_eq!(h.store.total(), 0);
    let h = harness(|b| b.save_on_server_error(true));
    let r = h
        .request_status(None, StatusCode::SERVICE_UNAVAILABLE, bump)
        .await;
    assert_eq!(r.set_cookies.len(), 1);
}

// ---- touchAfter and lifetimes ----

#[tokio::test]
async fn touch_after_zero_extends_on_every_request() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    for step in 1..=3u64 {
        h.clock.advance(secs(50));
        let r = h.request(Some(&cookie), |_| {}).await;
        assert!(r.cookie().unwrap().contains("Max-Age=100"));
        assert_eq!(h.expires(&id).await, at(50 * step + 100));
    }
}

#[tokio::test]
async fn without_touch_after_the_session_expires_at_max_age() {
    let h = harness(|b| b.max_age(secs(100)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(99));
    let r = h.request(Some(&cookie), bump).await;
    assert!(r.set_cookies.is_empty());
    h.clock.advance(secs(1));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "expired at created + maxAge");
    assert_ne!(r.session.id(), id);
}

#[tokio::test]
async fn browser_session_cookies_slide_in_the_store_without_set_cookie() {
    let h = harness(|b| b.idle_lifetime(secs(1000)).touch_after(secs(100)));
    let (cookie, id) = h.existing().await;
    assert_eq!(h.expires(&id).await, at(1000));
    h.clock.advance(secs(100));
    h.store.reset();
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(
        r.set_cookies.is_empty(),
        "the browser's cookie has no expiry to change"
    );
    assert_eq!(h.store.count("touch"), 1);
    assert_eq!(h.expires(&id).await, at(1100));
    h.clock.advance(secs(999));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(!r.session.is_new(), "alive: the idle lifetime slid");
    h.clock.advance(secs(1000));
    let r = h.request(Some(&cookie), |_| {}).await;
    assert!(r.session.is_new(), "idle for the whole lifetime: gone");
}

#[tokio::test]
async fn manual_touch_extends_regardless_of_touch_after() {
    let h = harness(|b| b.max_age(secs(100)));
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(40));
    let r = h.request(Some(&cookie), |s| s.touch()).await;
    assert!(
        r.cookie()
            .unwrap()
            .contains("Max-Age=100; Expires=Thu, 01 Jan 2026 00:02:20 GMT")
    );
    assert_eq!(h.expires(&id).await, at(140));
}

#[tokio::test]
async fn a_store_without_touch_still_extends_the_expiry() {
    let h = harness_with(Capabilities::NONE.with_update(true), |b| {
        b.max_age(secs(100)).touch_after(Duration::ZERO)
    });
    let (cookie, id) = h.existing().await;
    h.clock.advance(secs(30));
    h.request(Some(&cookie), |_| {}).await;
    assert_eq!(h.expires(&id).await, at(130));
}

// ---- cookie options ----

#[tokio::test]
async fn every_cookie_attribute() {
    let h = harness(|b| {
        b.cookie_name("app.sid")
            .secure(true)
            .http_only(false)
            .path("/app")
            .domain("example.com")
            .same_site(SameSite::Strict)
            .max_age(secs(60))
    });
    let r = h.request(None, bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        format!(
            "app.sid={}; SameSite=Strict; Secure; Path=/app; Domain=example.com; Max-Age=60; Expires=Thu, 01 Jan 2026 00:01:00 GMT",
            r.session.id().as_str()
        )
    );
    let r = h.request(Some(&r.pair()), |s| s.destroy()).await;
    assert_eq!(
        r.cookie().unwrap(),
        "app.sid=; SameSite=Strict; Secure; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
    );
    let h = harness(|b| b.same_site(SameSite::None).secure(true));
    let r = h.request(None, bump).await;
    assert!(r.cookie().unwrap().contains("SameSite=None; Secure"));
    // CHIPS: a cookie of its own per top-level site, for sessions in cross-site iframes.
    let h = harness(|b| b.same_site(SameSite::None).secure(true).partitioned(true));
    let r = h.request(None, bump).await;
    assert_eq!(
        r.cookie().unwrap(),
        format!(
            "sid={}; HttpOnly; SameSite=None; Partitioned; Secure; Path=/",
            r.session.id().as_str()
        )
    );
    let r = h.request(Some(&r.pair()), |s| s.destroy()).await;
    assert!(
        r.cookie()
            .unwrap()
            .contains("; Partitioned; Secure; Path=/; Max-Age=0")
    );
    let h = harness(|b| b.same_site(SameSite::Lax));
    assert!(
        h.request(None, bump)
            .await
            .cookie()
            .unwrap()
            .contains("HttpOnly; SameSite=Lax")
    );
}

#[test]
fn the_builder_rejects_unsafe_or_invalid_cookies() {
    let build = |f: fn(SessionManagerBuilder) -> SessionManagerBuilder| {
        f(SessionManager::builder(MemoryStore::new())).build()
    };
    let rejected: [fn(SessionManagerBuilder) -> SessionManagerBuilder; 11] = [
        |b| b.same_site(SameSite::None),
        |b| b.partitioned(true).same_site(SameSite::None),
        |b| b.cookie_name("__Host-sid"),
        |b| b.cookie_name("__Host-sid").secure(true).path("/app"),
        |b| {
            b.cookie_name("__Host-sid")
                .secure(true)
                .domain("example.com")
        },
        |b| b.cookie_name("__Secure-sid"),
        |b| b.cookie_name(""),
        |b| b.cookie_name("a b"),
        |b| b.cookie_name("a;b"),
        |b| b.path("/x; Domain=evil.com"),
        |b| b.max_age(Duration::from_millis(10)),
    ];
    for f in rejected {
        assert!(matches!(build(f), Err(Error::Config(_))));
    }
    assert!(build(|b| b.cookie_name("__Host-sid").secure(true)).is_ok());
    assert!(build(|b| b.same_site(SameSite::None).secure(true)).is_ok());
    assert!(build(|b| b.same_site(SameSite::None).secure(true).partitioned(true)).is_ok());
}

// ---- ids and codecs ----

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
    let rotated = SessionManager::builder(h.store.clone())
        .cookie_codec(SignedCodec::new(["new secret", "old secret"]).unwrap())
        .clock(Arc::new(h.clock.clone()))
        .build()
        .unwrap();
    let s = rotated.load(&cookie_headers(Some(&cookie))).await.unwrap();
    assert_eq!(s.id(), id);
    let only_new = SessionManager::builder(h.store.clone())
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

// ---- loading ----

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

// ---- failures ----

fn unavailable() -> Error {
    Error::unavailable(
        "probe",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    )
}
fn backend() -> Error {
    Error::backend("probe", "boom")
}
fn corrupt() -> Error {
    Error::corrupt("probe", "garbage")
}

#[tokio::test]
async fn a_failing_store_is_an_error_not_a_fresh_session() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.fail_with(Some(unavailable));
    let err = h.try_load(&cookie).await.unwrap_err();
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    h.store.fail_with(Some(backend));
    let err = h.try_load(&cookie).await.unwrap_err();
    assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!err.to_string().contains(id.as_str()));
    // Without a cookie nothing is loaded, so nothing fails.
    assert!(h.manager.load(&HeaderMap::new()).await.is_ok());
}

#[tokio::test]
async fn a_failed_save_is_reported_and_retried() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let session = h.load(&cookie).await;
    bump(&session);
    h.store.fail_with(Some(backend));
    let mut out = HeaderMap::new();
    let err = h.finish(&session, &mut out).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }));
    assert!(session.is_modified(), "the change is kept");
    h.store.fail_with(None);
    session.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    assert_eq!(stored_visits(&stored), 2);
    // A new session whose create fails is not lost either.
    let fresh = h.manager.load(&HeaderMap::new()).await.unwrap();
    bump(&fresh);
    h.store.fail_with(Some(unavailable));
    assert!(fresh.commit().await.unwrap_err().is_unavailable());
    h.store.fail_with(None);
    fresh.commit().await.unwrap();
    assert!(h.stored(&fresh.id()).await.is_some());
    assert!(fresh.take_set_cookie().is_some());
}

#[tokio::test]
async fn a_failed_touch_is_reported() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, _) = h.existing().await;
    let session = h.load(&cookie).await;
    h.store.fail_with(Some(unavailable));
    assert!(session.commit().await.is_err());
    assert!(
        session.take_set_cookie().is_none(),
        "no cookie for a failed touch"
    );
    h.store.fail_with(None);
    session.commit().await.unwrap();
    assert!(
        session.take_set_cookie().is_some(),
        "the retried touch sets it"
    );
}

#[tokio::test]
async fn an_undecodable_record_gives_a_fresh_session_and_is_left_alone() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    h.store.fail_with(Some(corrupt));
    let session = h.load(&cookie).await;
    assert!(session.is_new());
    assert_ne!(session.id(), id);
    h.store.fail_with(None);
    assert!(h.stored(&id).await.is_some(), "left alone");
}

/// A store that never answers.
struct Stuck;

#[async_trait]
impl SessionStore for Stuck {
    async fn get(&self, _: &SessionId) -> Result<Option<Record>> {
        std::future::pending().await
    }
    async fn set(&self, _: &SessionId, _: &Record) -> Result<()> {
        std::future::pending().await
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_stuck_store_times_out_as_unavailable() {
    let manager = SessionManager::builder(Stuck)
        .store_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let id = IdGenerator::nanoid().generate();
    let err = manager
        .load(&cookie_headers(Some(&format!("sid={}", id.as_str()))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let fresh = manager.new_session();
    fresh.insert("k", 1).unwrap();
    assert!(matches!(fresh.commit().await, Err(Error::Timeout { .. })));
}

// ---- concurrency: no resurrection, no lost updates ----

#[tokio::test]
async fn a_slow_request_never_resurrects_a_destroyed_session() {
    for caps in [Capabilities::ALL, Capabilities::NONE.with_update(true)] {
        let h = harness_with(caps, |b| b);
        let (cookie, id) = h.existing().await;
        let slow = h.load(&cookie).await;
        h.request(Some(&cookie), |s| s.destroy()).await;
        bump(&slow);
        let mut out = HeaderMap::new();
        h.finish(&slow, &mut out).await.unwrap();
        assert!(h.stored(&id).await.is_none(), "resurrected with {caps:?}");
        // The logout already answered with the removal cookie; this late response sends
        // nothing that could override a cookie set since (e.g. by a new login).
        assert!(out.get(SET_COOKIE).is_none(), "{caps:?}: {out:?}");
        assert!(h.store.inner.is_empty());
    }
}

#[tokio::test]
async fn a_slow_touch_never_resurrects_either() {
    let h = harness(|b| b.max_age(secs(100)).touch_after(Duration::ZERO));
    let (cookie, id) = h.existing().await;
    let slow = h.load(&cookie).await;
    h.request(Some(&cookie), |s| s.destroy()).await;
    slow.commit().await.unwrap();
    assert!(h.stored(&id).await.is_none());
}

#[tokio::test]
async fn concurrent_requests_of_one_session_merge_key_by_key() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.insert("cart", vec!["apple"]).unwrap();
    b.insert("theme", "dark").unwrap();
    b.remove("visits");
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    let keys: Vec<&str> = stored.data.keys().collect();
    assert_eq!(keys, ["cart", "theme"]);
    assert_eq!(stored.version, 2);
    // b now sees a's change too.
    assert_eq!(b.get::<Vec<String>>("cart").unwrap().unwrap(), ["apple"]);
}

#[tokio::test]
async fn without_compare_and_set_the_last_writer_wins() {
    let h = harness(|b| b.compare_and_set(false));
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.insert("cart", 1).unwrap();
    b.insert("theme", 2).unwrap();
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    let stored = h.stored(&id).await.unwrap();
    assert!(!stored.data.contains_key("cart"));
    assert_eq!(h.store.count("update"), 2);
}

/// A browser's cookie jar: `Set-Cookie` headers applied in the order responses arrive.
#[derive(Default)]
struct Jar(Option<String>);

impl Jar {
    fn apply(&mut self, set_cookies: &[String]) {
        for set in set_cookies {
            let pair = set.split(';').next().unwrap();
            let removal = set.contains("Max-Age=0");
            self.0 = (!removal).then(|| pair.to_owned());
        }
    }
}

#[tokio::test]
async fn a_request_that_loses_to_a_login_or_logout_keeps_the_winners_cookie() {
    for end in ["regenerate", "destroy"] {
        for touching in [false, true] {
            let h = harness(|b| {
                let b = b.max_age(secs(3600));
                if touching {
                    b.touch_after(Duration::ZERO)
                } else {
                    b
                }
            });
            let mut jar = Jar::default();
            let first = h.request(None, |s| s.insert("visits", 1u32).unwrap()).await;
            jar.apply(&first.set_cookies);
            let cookie = jar.0.clone().unwrap();
            // A slow request of the session is in flight while another one logs in or out.
            let slow = h.load(&cookie).await;
            let winner = h
                .request(Some(&cookie), |s| match end {
                    "regenerate" => {
                        s.regenerate();
                        s.insert("user", "alice").unwrap();
                    }
                    _ => s.destroy(),
                })
                .await;
            jar.apply(&winner.set_cookies);
            let after_winner = jar.0.clone();
            bump(&slow);
            let mut out = HeaderMap::new();
            h.finish(&slow, &mut out).await.unwrap();
            let late: Vec<String> = out
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert!(late.is_empty(), "{end}, touching {touching}: {late:?}");
            jar.apply(&late);
            assert_eq!(jar.0, after_winner, "{end}, touching {touching}");
            // A request sent with the old cookie that reaches the server only after the
            // winner finished: it must not answer with a new anonymous session's cookie.
            let later = h.request(Some(&cookie), bump).await;
            jar.apply(&later.set_cookies);
            if end == "regenerate" {
                assert!(
                    later.set_cookies.is_empty(),
                    "touching {touching}: {:?}",
                    later.set_cookies
                );
                assert_eq!(jar.0, after_winner, "touching {touching}");
                // The jar still holds the login, which loads.
                let logged_in = h.load(jar.0.as_deref().unwrap()).await;
                assert_eq!(logged_in.get::<String>("user").unwrap().unwrap(), "alice");
                // Nothing was stored for the late request: the login's session and the
                // tombstone are all.
                assert_eq!(h.store.inner.len(), 2);
                // A minute later the old cookie is just an unknown one: a fresh session.
                h.clock.advance(secs(61));
                let after = h.request(Some(&cookie), bump).await;
                assert!(after.cookie().is_some(), "touching {touching}");
            } else {
                // After a logout the browser holds no cookie: a fresh session is fine.
                assert!(later.cookie().is_some());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_updates_of_one_key_all_land() {
    let h = Arc::new(harness(|b| b));
    let (cookie, id) = h.existing().await;
    // Sixteen requests load the same version, then all commit at once.
    let mut loaded = Vec::new();
    for _ in 0..16 {
        loaded.push(h.load(&cookie).await);
    }
    let tasks: Vec<_> = loaded
        .into_iter()
        .map(|session| {
            let h = h.clone();
            tokio::spawn(async move {
                let n = session
                    .update("visits", |v: Option<u32>| v.unwrap_or(0) + 1)
                    .unwrap();
                assert_eq!(n, 2, "each request computes from what it loaded");
                let mut out = HeaderMap::new();
                h.finish(&session, &mut out).await.unwrap();
                session.get::<u32>("visits").unwrap().unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    assert_eq!(stored_visits(&h.stored(&id).await.unwrap()), 17);
    // Each request ends seeing the count its own increment produced: all different.
    seen.sort_unstable();
    assert_eq!(seen, (2..=17).collect::<Vec<_>>());
    assert!(h.store.count("cas") > 16, "the commits did conflict");
}

#[tokio::test]
async fn an_update_is_replaced_by_a_later_insert_of_its_key() {
    let h = harness(|b| b);
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    a.update("visits", |v: Option<u32>| v.unwrap_or(0) + 10)
        .unwrap();
    a.insert("visits", 5u32).unwrap();
    b.insert("visits", 7u32).unwrap();
    b.commit().await.unwrap();
    a.commit().await.unwrap();
    // a's plain insert wins over b's value; its update was not applied again.
    assert_eq!(stored_visits(&h.stored(&id).await.unwrap()), 5);
}

#[tokio::test]
async fn commits_that_keep_conflicting_fail_as_a_retryable_conflict() {
    let h = harness(|b| b.commit_attempts(1));
    let (cookie, id) = h.existing().await;
    let a = h.load(&cookie).await;
    let b = h.load(&cookie).await;
    bump(&a);
    b.insert("theme", "dark").unwrap();
    a.commit().await.unwrap();
    let err = b.commit().await.unwrap_err();
    assert!(matches!(err, Error::Conflict { attempts: 1 }), "{err:?}");
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.retry_after(), Some(secs(1)));
    // Nothing of b was written, and b keeps its change for a later commit.
    assert!(!h.stored(&id).await.unwrap().data.contains_key("theme"));
    assert!(b.is_modified());
}

// ---- limits, codecs, redaction ----

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
    let msgpack = SessionManager::builder(h.store.clone())
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

// ---- hostile input ----

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
    h.store.inner.set(&id, &record).await.unwrap();
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
