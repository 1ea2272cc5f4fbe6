//! The session manager: next-session's `nextSession(options)`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, StatusCode};

use crate::at_rest::DataKeys;
use crate::clock::{Clock, SystemClock};
use crate::codec::{CookieCodec, PlainCodec, PrivateCodec};
use crate::config::{Config, SessionManager};
use crate::cookie::{CookieFormat, CookieOptions, SameSite, decode_cookie_value};
use crate::cookie_only;
use crate::error::{Error, Result};
use crate::id::{IdGenerator, SessionId};
use crate::keys::handle;
use crate::observe::{self, Hook, SessionEvent};
use crate::record::{Codec, MAX_LIFETIME, Record};
use crate::session::Session;
use crate::store::SessionStore;

/// Compare-and-set attempts of one commit unless configured: with the backoff between them,
/// enough for 50 requests of one session at once on every store here (RELIABILITY.md).
const DEFAULT_COMMIT_ATTEMPTS: u32 = 32;

impl SessionManager {
    /// A manager over `store` with every default (cookie `sid`, nanoid ids, plain cookie
    /// value, `HttpOnly`, `Path=/`, browser-session cookie, auto commit).
    pub fn new(store: impl SessionStore) -> Self {
        Self::builder(store)
            .build()
            .expect("the default configuration is valid")
    }

    /// Starts a configuration over `store` (which the manager then owns). For a store that
    /// is already an `Arc<dyn SessionStore>` (chosen at run time, or shared with other code),
    /// use [`SessionManager::builder_arc`], which does not wrap it in a second `Arc`.
    pub fn builder(store: impl SessionStore) -> SessionManagerBuilder {
        SessionManagerBuilder::new(Arc::new(store))
    }

    /// Starts a configuration for cookie-only sessions: no store; the whole session travels
    /// in the cookie, encrypted and authenticated with `keys` (the first encrypts, all
    /// decrypt, for rotation).
    ///
    /// The cookie is re-sent whenever the data or the expiry changes; a session whose
    /// encoded cookie would exceed 4096 bytes fails to commit with [`Error::TooLarge`]; the
    /// expiry is enforced from the authenticated payload, not from the browser. Weaker than
    /// a store: a destroyed session cannot be revoked (an old cookie can be replayed until it
    /// expires), and concurrent requests cannot merge.
    pub fn cookie_only(keys: PrivateCodec) -> SessionManagerBuilder {
        let mut builder = SessionManagerBuilder::new(Arc::new(cookie_only::NoStore));
        builder.cookie_only = Some(keys);
        builder
    }

    /// Whether this manager keeps sessions in the cookie only.
    pub fn is_cookie_only(&self) -> bool {
        self.config.cookie_only.is_some()
    }

    /// Starts a configuration over a store that is already shared: the same as
    /// [`SessionManager::builder`] without a second `Arc` (every call would otherwise go
    /// through two pointers and the `Arc` forwarding implementation).
    pub fn builder_arc(store: Arc<dyn SessionStore>) -> SessionManagerBuilder {
        SessionManagerBuilder::new(store)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.config.store
    }

    /// The cookie attributes.
    pub fn cookie_options(&self) -> &CookieOptions {
        &self.config.cookie.options
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.config.cookie.name
    }

    /// Whether sessions are committed automatically at the end of each request.
    pub fn auto_commit(&self) -> bool {
        self.config.auto_commit
    }

    /// The session cookie's value in `headers`: the first cookie of our name across every
    /// `Cookie` field, surrounding quotes removed, percent-decoded. `None` when absent,
    /// longer than [`MAX_COOKIE_VALUE_LEN`](crate::MAX_COOKIE_VALUE_LEN), or not valid UTF-8 once decoded.
    pub fn cookie_value(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.config.cookie.name.as_bytes();
        for field in headers.get_all(COOKIE) {
            for pair in field.as_bytes().split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let (key, value) = match pair.iter().position(|&b| b == b'=') {
                    Some(at) => (&pair[..at], &pair[at + 1..]),
                    None => continue,
                };
                if key.trim_ascii() != name {
                    continue;
                }
                // First occurrence wins, whether or not it is usable.
                return decode_cookie_value(value.trim_ascii());
            }
        }
        None
    }

    /// Loads the session of a request from its headers. See [`SessionManager::load_value`].
    pub async fn load(&self, headers: &HeaderMap) -> Result<Session> {
        self.load_value(self.cookie_value(headers).as_deref()).await
    }

    /// Loads the session for a (percent-decoded) cookie value.
    ///
    /// The value is decoded with the cookie codec and checked with the id generator's
    /// validator; an implausible id never reaches the store. A missing, expired or
    /// undecodable record gives a fresh session under a **new** id (never the one the client
    /// sent); so does one past the [absolute
    /// lifetime](SessionManagerBuilder::absolute_lifetime), whose record is destroyed and
    /// whose cookie is removed at commit. A store error is returned as an error.
    pub async fn load_value(&self, cookie_value: Option<&str>) -> Result<Session> {
        let loaded = self.load_inner(cookie_value).await;
        observe::load(match &loaded {
            Ok(session) if !session.is_new() => "found",
            Ok(_) => "new",
            Err(_) => "error",
        });
        loaded
    }

    async fn load_inner(&self, cookie_value: Option<&str>) -> Result<Session> {
        let c = &self.config;
        let had_cookie = cookie_value.is_some();
        if let Some(codec) = &c.cookie_only {
            let now = c.clock.now();
            return Ok(
                match cookie_value.and_then(|v| cookie_only::open(codec, &c.cookie.name, v)) {
                    Some((id, record)) if !record.is_expired(now) => {
                        if c.deadline(record.created).is_some_and(|d| d <= now) {
                            c.emit(|| expired(c, &id));
                            Session::ended(self.clone(), id)
                        } else {
                            Session::loaded(self.clone(), id, record, now)
                        }
                    }
                    Some((id, _)) => {
                        c.emit(|| expired(c, &id));
                        Session::fresh(self.clone(), had_cookie)
                    }
                    None => Session::fresh(self.clone(), had_cookie),
                },
            );
        }
        let id = cookie_value
            .and_then(|v| c.cookie.codec.decode(&c.cookie.name, v))
            .filter(|id| c.ids.is_valid(id));
        let Some(id) = id.map(SessionId::new) else {
            return Ok(Session::fresh(self.clone(), had_cookie));
        };
        let found = match c.timed("get", c.store().get(&id)).await {
            Ok(None) if c.read_raw_ids => self.migrate(&id).await,
            found => found,
        };
        match found {
            Ok(Some(record)) => {
                let now = c.clock.now();
                if record.is_expired(now) {
                    c.emit(|| expired(c, &id));
                    return Ok(Session::fresh(self.clone(), had_cookie));
                }
                if c.deadline(record.created).is_some_and(|d| d <= now) {
                    // Past its absolute lifetime (set shorter since it was last extended).
                    c.emit(|| expired(c, &id));
                    return Ok(Session::ended(self.clone(), id));
                }
                Ok(Session::loaded(self.clone(), id, record, now))
            }
            Ok(None) => self.missing(&id).await,
            Err(error @ Error::Corrupt { .. }) => {
                tracing::warn!(
                    store = c.store.name(),
                    error = &error as &dyn std::error::Error,
                    "stored session could not be decoded; starting a fresh session"
                );
                Ok(Session::fresh(self.clone(), had_cookie))
            }
            Err(error) => Err(error),
        }
    }

    /// Moves a session stored under its raw id (before ids were hashed) to its key; the
    /// record, or `None` if there is none under the raw id either.
    async fn migrate(&self, id: &SessionId) -> Result<Option<Record>> {
        let c = &self.config;
        let store = c.store();
        let Some(record) = c.timed("get", store.get_raw(id)).await? else {
            return Ok(None);
        };
        let moved = if c.caps.create {
            c.timed("create", store.create(id, &record)).await?
        } else {
            c.timed("set", store.set(id, &record))
                .await
                .map(|()| true)?
        };
        if !moved {
            // A concurrent request moved it first: its copy is the one to use.
            return c.timed("get", store.get(id)).await;
        }
        c.timed("destroy", store.destroy_raw(id)).await?;
        Ok(Some(record))
    }

    /// The session for a valid cookie whose id the store does not hold: superseded if a
    /// regeneration moved it moments ago (its tombstone is there), else fresh.
    async fn missing(&self, id: &SessionId) -> Result<Session> {
        let c = &self.config;
        let Some(tombstone) = crate::session::tombstone_id(id) else {
            return Ok(Session::fresh(self.clone(), true));
        };
        match c.timed("get", c.store().get(&tombstone)).await {
            Ok(Some(record)) if !record.is_expired(c.clock.now()) => {
                Ok(Session::superseded(self.clone()))
            }
            Ok(_) | Err(Error::Corrupt { .. }) => Ok(Session::fresh(self.clone(), true)),
            Err(error) => Err(error),
        }
    }

    /// The key the store keeps session `id` under: a one-way digest of the id (see
    /// [`SessionManagerBuilder::hashed_ids`]), or the id itself where ids are kept raw. For
    /// operators and tests that look into the store.
    pub fn store_key(&self, id: &SessionId) -> SessionId {
        self.config.key(id).into_owned()
    }

    /// A new, empty session (nothing is stored until it holds data and is committed).
    pub fn new_session(&self) -> Session {
        Session::fresh(self.clone(), false)
    }

    /// The end of a request: commits `session` if auto commit is on (and, unless
    /// configured otherwise, only when `status` is not a 5xx), then appends any pending
    /// `Set-Cookie` to `response_headers`. A failed commit is returned, not swallowed.
    pub async fn finish(
        &self,
        session: &Session,
        status: StatusCode,
        response_headers: &mut HeaderMap,
    ) -> Result<()> {
        let c = &self.config;
        if c.auto_commit && (c.save_on_server_error || !status.is_server_error()) {
            session.commit().await?;
        }
        if let Some(cookie) = session.take_set_cookie() {
            response_headers.append(SET_COOKIE, cookie);
        }
        Ok(())
    }
}

/// The event of a session found expired.
fn expired(c: &Config, id: &SessionId) -> SessionEvent {
    SessionEvent::Expired {
        handle: handle(&c.key(id)),
    }
}

/// Configures a [`SessionManager`]; every option of next-session plus ours.
pub struct SessionManagerBuilder {
    store: Arc<dyn SessionStore>,
    name: String,
    ids: IdGenerator,
    cookie_codec: Arc<dyn CookieCodec>,
    touch_after: Option<Duration>,
    auto_commit: bool,
    cookie: CookieOptions,
    idle_lifetime: Duration,
    absolute_lifetime: Option<Duration>,
    store_timeout: Duration,
    clock: Arc<dyn Clock>,
    codec: Codec,
    max_size: Option<usize>,
    compare_and_set: bool,
    max_attempts: u32,
    save_on_server_error: bool,
    cookie_only: Option<PrivateCodec>,
    events: Option<Hook>,
    hashed_ids: bool,
    read_raw_ids: bool,
    data_keys: Option<DataKeys>,
}

impl fmt::Debug for SessionManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("cookie_name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SessionManagerBuilder {
    fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            name: "sid".into(),
            ids: IdGenerator::nanoid(),
            cookie_codec: Arc::new(PlainCodec),
            touch_after: None,
            auto_commit: true,
            cookie: CookieOptions::default(),
            idle_lifetime: Duration::from_secs(24 * 60 * 60),
            absolute_lifetime: None,
            store_timeout: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
            codec: Codec::MessagePack,
            max_size: Some(1024 * 1024),
            compare_and_set: true,
            max_attempts: DEFAULT_COMMIT_ATTEMPTS,
            save_on_server_error: false,
            cookie_only: None,
            events: None,
            hashed_ids: true,
            read_raw_ids: false,
            data_keys: None,
        }
    }

    /// Cookie name (`name`, default `sid`; express-session uses `connect.sid`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Id generator and its validator (`genid`; default nanoid).
    pub fn id_generator(mut self, ids: IdGenerator) -> Self {
        self.ids = ids;
        self
    }

    /// Cookie value codec (`encode` / `decode`; default: the id itself).
    pub fn cookie_codec(mut self, codec: impl CookieCodec) -> Self {
        self.cookie_codec = Arc::new(codec);
        self
    }

    /// Extend the expiry only when at least this long has passed since the last extension
    /// (`touchAfter`; default: never extend automatically). `Duration::ZERO` extends on
    /// every request (rolling sessions).
    pub fn touch_after(mut self, after: Duration) -> Self {
        self.touch_after = Some(after);
        self
    }

    /// Commit automatically at the end of each request (`autoCommit`, default `true`).
    pub fn auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }

    /// All cookie attributes at once.
    pub fn cookie(mut self, options: CookieOptions) -> Self {
        self.cookie = options;
        self
    }

    /// `cookie.secure`.
    pub fn secure(mut self, on: bool) -> Self {
        self.cookie.secure = on;
        self
    }

    /// `cookie.httpOnly` (default `true`).
    pub fn http_only(mut self, on: bool) -> Self {
        self.cookie.http_only = on;
        self
    }

    /// `cookie.path` (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// `cookie.domain`.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// `cookie.sameSite`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = Some(same_site);
        self
    }

    /// The `Partitioned` attribute (CHIPS; see [`CookieOptions::partitioned`]). The builder
    /// rejects it without `Secure`.
    pub fn partitioned(mut self, on: bool) -> Self {
        self.cookie.partitioned = on;
        self
    }

    /// `cookie.maxAge`: session lifetime (whole seconds in the cookie). A session can choose
    /// its own with [`Session::set_max_age`] ("remember me").
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.cookie.max_age = Some(max_age);
        self
    }

    /// How long the store keeps a browser-session cookie's record after its last extension
    /// (default one day; sliding, extended by touch like `maxAge`).
    pub fn idle_lifetime(mut self, lifetime: Duration) -> Self {
        self.idle_lifetime = lifetime;
        self
    }

    /// The absolute lifetime (default none): a session created longer ago than this is
    /// treated as expired whatever its activity (never returned; the request gets a fresh
    /// session and the stale record and cookie are removed), and no extension (touch,
    /// `touchAfter`, a write) moves its expiry past that point. It counts from the session's
    /// creation, which [`Session::regenerate`] keeps: rotating the id at login must not
    /// extend the session, or regenerating on every request would make it endless. To start
    /// the clock again at login, [`destroy`](Session::destroy) the anonymous session and
    /// insert the user's data into the new one. Between one second and 400 days.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// Whether stores keep sessions under a one-way digest of their ids (default `true`):
    /// nothing in Redis, SQL or MongoDB then holds an id a cookie carries, so a leaked dump,
    /// replica, backup or query log logs no one in; the lookup stays one call. Stores whose
    /// layout is shared with Node's express-session
    /// ([`SessionStore::needs_raw_ids`]) always get raw ids.
    ///
    /// Sessions stored by a release that kept raw ids are not found under their digests:
    /// turn on [`read_raw_ids`](Self::read_raw_ids) for as long as such sessions may live,
    /// or keep raw ids with `hashed_ids(false)`.
    pub fn hashed_ids(mut self, on: bool) -> Self {
        self.hashed_ids = on;
        self
    }

    /// The migration to hashed ids (default off): a session not found under the digest of
    /// its id is looked up under the raw id, and if found moved to the digest (written
    /// there, then removed from the raw id) before the request sees it. Costs one more
    /// store read for requests whose cookie names no session, and two writes once per
    /// migrated session. Turn it off when the longest session stored before the change has
    /// expired.
    pub fn read_raw_ids(mut self, on: bool) -> Self {
        self.read_raw_ids = on;
        self
    }

    /// Encrypts session data at rest with these keys (default off): every store write seals
    /// the data with AES-256-GCM bound to the session's store key, every read opens it, so a
    /// dump of the store shows no session data either. Expiry, version, creation time,
    /// lifetime, owner and label stay readable (stores need them). Records written before
    /// encryption was turned on are still read, and sealed at their next write; a record
    /// that does not open (a key no longer listed) gives a fresh session. Not for stores
    /// shared with express-session (the builder refuses it).
    pub fn encrypt_data(mut self, keys: DataKeys) -> Self {
        self.data_keys = Some(keys);
        self
    }

    /// Calls `hook` with every [`SessionEvent`]: created, regenerated, destroyed, found
    /// expired, revoked. Sessions are named by handle, never by id. The hook runs inside the
    /// request, so keep it short (hand the event to a channel for slow work); a hook that
    /// panics is logged and never fails the request. Without a hook no event is built.
    pub fn on_event(mut self, hook: impl Fn(&SessionEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(std::sync::Arc::new(hook));
        self
    }

    /// Per-store-call timeout (default 5 s); a call that takes longer is
    /// [`Error::Timeout`] (HTTP 503).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Where time comes from (default the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Value codec for new sessions (default MessagePack).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Largest total size of keys and encoded values (default 1 MiB; `None`: unlimited).
    /// An insert that would exceed it fails with [`Error::TooLarge`].
    pub fn max_size(mut self, limit: Option<usize>) -> Self {
        self.max_size = limit;
        self
    }

    /// Use the store's compare-and-set for existing sessions, merging key by key when
    /// another request wrote in between (default on where the store supports it).
    pub fn compare_and_set(mut self, on: bool) -> Self {
        self.compare_and_set = on;
        self
    }

    /// How many compare-and-set writes a commit of an existing session tries before it fails
    /// with [`Error::Conflict`] (default 32, at least 1). Between attempts it waits a random
    /// time that grows with each attempt (from 1 ms, doubling, at most 50 ms), so concurrent
    /// requests of one session spread out. See "Concurrent requests of one session" on
    /// [`Session`](crate::Session).
    pub fn commit_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Still save when the handler answered 5xx (default `false`: skip the save).
    pub fn save_on_server_error(mut self, on: bool) -> Self {
        self.save_on_server_error = on;
        self
    }

    /// Checks the configuration and builds the manager.
    ///
    /// Rejected: an empty or non-token cookie name, `SameSite=None` without `Secure`,
    /// `__Secure-` names without `Secure`, `__Host-` names without `Secure`, `Path=/` and no
    /// `Domain`, a `Path` or `Domain` with `;` or control characters, zero lifetimes.
    pub fn build(self) -> Result<SessionManager> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        if !token(&self.name) {
            return bad("the cookie name must be a non-empty token");
        }
        let o = &self.cookie;
        let clean = |s: &str| !s.bytes().any(|b| b.is_ascii_control() || b == b';');
        if !clean(&o.path) || !o.path.starts_with('/') {
            return bad("the cookie path must start with `/` and hold no `;` or controls");
        }
        if o.domain
            .as_deref()
            .is_some_and(|d| d.is_empty() || !clean(d))
        {
            return bad("the cookie domain must be non-empty and hold no `;` or controls");
        }
        if o.same_site == Some(SameSite::None) && !o.secure {
            return bad("SameSite=None requires Secure");
        }
        if o.partitioned && !o.secure {
            return bad("Partitioned requires Secure");
        }
        if self.name.starts_with("__Secure-") && !o.secure {
            return bad("`__Secure-` cookies require Secure");
        }
        if self.name.starts_with("__Host-") && (!o.secure || o.path != "/" || o.domain.is_some()) {
            return bad("`__Host-` cookies require Secure, Path=/ and no Domain");
        }
        if o.max_age.is_some_and(|d| d < Duration::from_secs(1)) {
            return bad("maxAge must be at least one second");
        }
        let longest = MAX_LIFETIME;
        if o.max_age.is_some_and(|d| d > longest) || self.idle_lifetime > longest {
            return bad("maxAge and the idle lifetime must be at most 400 days");
        }
        if self
            .absolute_lifetime
            .is_some_and(|d| d < Duration::from_secs(1) || d > longest)
        {
            return bad("the absolute lifetime must be between one second and 400 days");
        }
        if self.idle_lifetime < Duration::from_secs(1) || self.store_timeout.is_zero() {
            return bad("the idle lifetime and the store timeout must be positive");
        }
        let caps = self.store.capabilities();
        let hashed_ids = self.hashed_ids && !self.store.needs_raw_ids();
        if self.data_keys.is_some() && (self.store.needs_raw_ids() || self.cookie_only.is_some()) {
            return bad(
                "data encryption at rest is for this library's own store layouts: a store \
                 shared with express-session must stay readable by Node, and cookie-only \
                 sessions are always encrypted",
            );
        }
        let config = Config {
            caps,
            store: self.store,
            ids: self.ids,
            touch_after: self.touch_after,
            auto_commit: self.auto_commit,
            cookie: CookieFormat::new(self.name, self.cookie_codec, self.cookie),
            idle_lifetime: self.idle_lifetime,
            absolute_lifetime: self.absolute_lifetime,
            store_timeout: self.store_timeout,
            clock: self.clock,
            codec: self.codec,
            max_size: self.max_size,
            compare_and_set: self.compare_and_set,
            max_attempts: self.max_attempts,
            save_on_server_error: self.save_on_server_error,
            cookie_only: self.cookie_only,
            events: self.events,
            hashed_ids,
            read_raw_ids: self.read_raw_ids && hashed_ids,
            data_keys: self.data_keys,
        };
        Ok(SessionManager {
            config: Arc::new(config),
        })
    }
}
