//! The manager's configuration ([`Config`], shared by every clone of a [`SessionManager`] and
//! read by each [`Session`](crate::Session)), the lifetime arithmetic, and the store as the
//! manager calls it ([`Keyed`]: ids turned into store keys, data sealed at rest, every call
//! under the store timeout).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use time::OffsetDateTime;

use crate::at_rest::DataKeys;
use crate::clock::Clock;
use crate::codec::PrivateCodec;
use crate::cookie::CookieFormat;
use crate::error::{Error, Result};
use crate::id::{IdGenerator, SessionId};
use crate::keys::stored_key;
use crate::observe::{self, Hook, SessionEvent};
use crate::record::{Codec, Lifetime, Record};
use crate::store::{Capabilities, CasOutcome, SessionStore};

/// Set once by [`SessionManagerBuilder::build`](crate::SessionManagerBuilder::build); the
/// session and the owner functions read it through the methods below.
pub(crate) struct Config {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) caps: Capabilities,
    pub(crate) ids: IdGenerator,
    pub(crate) touch_after: Option<Duration>,
    pub(crate) auto_commit: bool,
    /// The cookie's name, value codec and attributes.
    pub(crate) cookie: CookieFormat,
    pub(crate) idle_lifetime: Duration,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) codec: Codec,
    pub(crate) max_size: Option<usize>,
    pub(crate) compare_and_set: bool,
    pub(crate) max_attempts: u32,
    pub(crate) save_on_server_error: bool,
    pub(crate) cookie_only: Option<PrivateCodec>,
    pub(crate) events: Option<Hook>,
    /// Sessions are stored under digests of their ids ([`stored_key`]).
    pub(crate) hashed_ids: bool,
    /// While ids are hashed: a session not found under its digest is looked up under its
    /// raw id too, and moved.
    pub(crate) read_raw_ids: bool,
    /// Keys session data is encrypted with at rest.
    pub(crate) data_keys: Option<DataKeys>,
}

impl Config {
    /// The time now, by the manager's clock.
    pub(crate) fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// A fresh session id.
    pub(crate) fn new_id(&self) -> SessionId {
        self.ids.generate()
    }

    /// The codec new values are encoded with.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    /// The cookie's name, value codec and attributes.
    pub(crate) fn cookie(&self) -> &CookieFormat {
        &self.cookie
    }

    /// What the store implements natively.
    pub(crate) fn caps(&self) -> Capabilities {
        self.caps
    }

    /// The store's name, for errors, logs and metrics.
    pub(crate) fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Whether commits use compare-and-set (the manager allows it; the store's support is
    /// [`Config::caps`]).
    pub(crate) fn compare_and_set(&self) -> bool {
        self.compare_and_set
    }

    /// How many compare-and-set attempts a commit makes before it reports a conflict.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// `touchAfter`: the least time between two automatic expiry extensions.
    pub(crate) fn touch_after(&self) -> Option<Duration> {
        self.touch_after
    }

    /// The longest a session lives from its creation, whatever its activity.
    pub(crate) fn absolute_lifetime(&self) -> Option<Duration> {
        self.absolute_lifetime
    }

    /// The largest data (keys and values, in bytes) a session may hold.
    pub(crate) fn max_size(&self) -> Option<usize> {
        self.max_size
    }

    /// The keys of cookie-only sessions (the whole record in the cookie), if enabled.
    pub(crate) fn cookie_only(&self) -> Option<&PrivateCodec> {
        self.cookie_only.as_ref()
    }

    /// How long a record lives from its last extension: the session's own lifetime if it
    /// has one, else `maxAge`, or the idle lifetime for browser-session cookies.
    pub(crate) fn lifetime(&self, own: Option<Lifetime>) -> Duration {
        match own {
            None => self.cookie.options.max_age.unwrap_or(self.idle_lifetime),
            Some(Lifetime::BrowserSession) => self.idle_lifetime,
            Some(Lifetime::MaxAge(d)) => d,
        }
    }

    /// The cookie's `Max-Age` for a session with this own lifetime (`None`: a
    /// browser-session cookie).
    pub(crate) fn max_age(&self, own: Option<Lifetime>) -> Option<Duration> {
        match own {
            None => self.cookie.options.max_age,
            Some(Lifetime::BrowserSession) => None,
            Some(Lifetime::MaxAge(d)) => Some(d),
        }
    }

    /// When a session created at `created` ends whatever its activity (the absolute
    /// lifetime), if the manager has one.
    pub(crate) fn deadline(&self, created: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
        Some(created? + self.absolute_lifetime?)
    }

    /// The store expiry of a session extended at `now`: now + its lifetime, never past its
    /// absolute deadline.
    pub(crate) fn extended(
        &self,
        now: OffsetDateTime,
        own: Option<Lifetime>,
        created: Option<OffsetDateTime>,
    ) -> OffsetDateTime {
        let expires = now + self.lifetime(own);
        match self.deadline(created) {
            Some(deadline) => expires.min(deadline),
            None => expires,
        }
    }

    /// The store, as the manager calls it: with session ids turned into the keys the
    /// sessions are stored under ([`Config::key`]). Called through the store's own vtable:
    /// calling on the `Arc` would go through the `Arc` forwarding impl, one more boxed future
    /// per call.
    pub(crate) fn store(&self) -> Keyed<'_> {
        Keyed {
            store: &*self.store,
            hashed: self.hashed_ids,
            keys: self.data_keys.as_ref(),
        }
    }

    /// The key session `id` is stored under: its digest ([`stored_key`]), or the id itself
    /// where ids are kept raw.
    pub(crate) fn key<'a>(&self, id: &'a SessionId) -> Cow<'a, SessionId> {
        self.store().key(id)
    }

    /// Runs the store call `operation` under the store timeout (and measures it, with the
    /// feature `metrics`).
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let result = self.under_timeout(call).await;
        #[cfg(feature = "metrics")]
        observe::call(self.store.name(), operation, started, &result);
        #[cfg(not(feature = "metrics"))]
        let _ = operation;
        result
    }

    async fn under_timeout<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let mut call = std::pin::pin!(call);
        // A store that answers at once (memory, a cache hit) needs no timer: poll once
        // before arming one.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            return result;
        }
        match tokio::time::timeout(self.store_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                store: self.store.name(),
                after: self.store_timeout,
            }),
        }
    }

    /// Gives the application's hook the event `make` builds (built only if there is a hook).
    pub(crate) fn emit(&self, make: impl FnOnce() -> SessionEvent) {
        observe::emit(self.events.as_ref(), make);
    }
}

/// Reads sessions from requests and writes them back: next-session's `nextSession(options)`.
///
/// Cheap to clone (all clones share one configuration). Framework-agnostic: it reads the
/// request's [`HeaderMap`](http::HeaderMap) and writes `Set-Cookie` into the response's; the integration
/// crates call it for you.
///
/// ```
/// use session_store::{MemoryStore, SessionManager};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> session_store::Result<()> {
/// let manager = SessionManager::builder(MemoryStore::new())
///     .cookie_name("sid")
///     .max_age(Duration::from_secs(3600))
///     .touch_after(Duration::from_secs(60))
///     .build()?;
///
/// // One request: load, use, commit, copy the cookie into the response.
/// let request_headers = http::HeaderMap::new();
/// let session = manager.load(&request_headers).await?;
/// let visits: u32 = session.get("visits")?.unwrap_or(0);
/// session.insert("visits", visits + 1)?;
/// let mut response_headers = http::HeaderMap::new();
/// manager.finish(&session, http::StatusCode::OK, &mut response_headers).await?;
/// assert!(response_headers.contains_key(http::header::SET_COOKIE));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) config: Arc<Config>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("SessionManager")
            .field("store", &c.store.name())
            .field("cookie_name", &c.cookie.name)
            .field("cookie", &c.cookie.options)
            .field("touch_after", &c.touch_after)
            .field("auto_commit", &c.auto_commit)
            .field("idle_lifetime", &c.idle_lifetime)
            .field("absolute_lifetime", &c.absolute_lifetime)
            .field("store_timeout", &c.store_timeout)
            .field("codec", &c.codec)
            .finish_non_exhaustive()
    }
}

/// The store, with session ids turned into the keys they are stored under (see
/// [`Config::store`]). Methods taking a `key` take one already turned (from `owned`).
pub(crate) struct Keyed<'a> {
    store: &'a dyn SessionStore,
    hashed: bool,
    /// Seals data on the way in and opens it on the way out.
    keys: Option<&'a DataKeys>,
}

impl Keyed<'_> {
    pub(crate) fn key<'i>(&self, id: &'i SessionId) -> Cow<'i, SessionId> {
        if self.hashed {
            Cow::Owned(stored_key(id))
        } else {
            Cow::Borrowed(id)
        }
    }

    /// `record` as stored under `key`: sealed where data is encrypted at rest.
    fn sealed<'r>(&self, key: &SessionId, record: &'r Record) -> Cow<'r, Record> {
        match self.keys {
            Some(keys) => Cow::Owned(keys.seal(key, record)),
            None => Cow::Borrowed(record),
        }
    }

    /// A record read from under `key`, opened where data is encrypted at rest.
    fn opened(&self, key: &SessionId, record: Option<Record>) -> Result<Option<Record>> {
        match (self.keys, record) {
            (Some(keys), Some(record)) => keys.open(key, record).map(Some),
            (_, record) => Ok(record),
        }
    }

    pub(crate) async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let key = self.key(id);
        let found = self.store.get(&key).await?;
        self.opened(&key, found)
    }

    pub(crate) async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let key = self.key(id);
        self.store.set(&key, &self.sealed(&key, record)).await
    }

    pub(crate) async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(&self.key(id)).await
    }

    pub(crate) async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.store.touch(&self.key(id), expires).await
    }

    pub(crate) async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let key = self.key(id);
        self.store.create(&key, &self.sealed(&key, record)).await
    }

    pub(crate) async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let key = self.key(id);
        self.store.update(&key, &self.sealed(&key, record)).await
    }

    pub(crate) async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let key = self.key(id);
        self.store
            .compare_and_set(&key, &self.sealed(&key, record), expected)
            .await
    }

    /// The sessions of `owner`, by key. Their data is left sealed: listings read only the
    /// fields stores keep in the clear.
    pub(crate) async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        self.store.owned(owner).await
    }

    /// Destroys the session stored under `key`.
    pub(crate) async fn destroy_key(&self, key: &SessionId) -> Result<()> {
        self.store.destroy(key).await
    }

    /// The session stored under the raw `id`, as before ids were hashed.
    pub(crate) async fn get_raw(&self, id: &SessionId) -> Result<Option<Record>> {
        let found = self.store.get(id).await?;
        self.opened(id, found)
    }

    /// Destroys the session stored under the raw `id`.
    pub(crate) async fn destroy_raw(&self, id: &SessionId) -> Result<()> {
        self.store.destroy(id).await
    }
}
