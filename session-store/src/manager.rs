//! The session manager: next-session's `nextSession(options)`.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use time::OffsetDateTime;

use crate::at_rest::DataKeys;
use crate::clock::{Clock, SystemClock};
use crate::codec::{CookieCodec, PlainCodec, PrivateCodec};
use crate::cookie_only;
use crate::error::{Error, Result};
use crate::id::{IdGenerator, SessionId};
use crate::observe::{self, Hook, SessionEvent};
use crate::record::{Codec, Lifetime, MAX_LIFETIME, Record};
use crate::session::Session;
use crate::store::{Capabilities, CasOutcome, SessionStore};

/// Longest cookie *value* (after percent-decoding) the manager reads from a request; longer
/// values mean "no session". A limit on input, where
/// [`MAX_COOKIE_LEN`](crate::MAX_COOKIE_LEN) limits what the manager writes
/// (the whole `name=value` of a cookie-only session); both are browsers' 4096 bytes.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// The bytes [`URI_COMPONENT`] leaves as they are, as a table.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        b += 1;
    }
    table
};

/// JavaScript's `encodeURIComponent` set: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The `SameSite` cookie attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`
    Strict,
    /// `SameSite=Lax`
    Lax,
    /// `SameSite=None` (requires `Secure`)
    None,
}

/// Attributes of the session cookie.
#[derive(Debug, Clone)]
pub struct CookieOptions {
    /// `Secure` (default `false`).
    pub secure: bool,
    /// `HttpOnly` (default `true`).
    pub http_only: bool,
    /// `Path` (default `/`).
    pub path: String,
    /// `Domain` (default unset).
    pub domain: Option<String>,
    /// `SameSite` (default unset).
    pub same_site: Option<SameSite>,
    /// Lifetime; `None` (the default) makes a browser-session cookie.
    pub max_age: Option<Duration>,
    /// `Partitioned` (default `false`): the browser keeps a separate cookie per top-level
    /// site (CHIPS), which lets a session work inside a cross-site `<iframe>` when
    /// third-party cookies are blocked. Requires `Secure` (and usually `SameSite=None`).
    pub partitioned: bool,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            secure: false,
            http_only: true,
            path: "/".into(),
            domain: None,
            same_site: None,
            max_age: None,
            partitioned: false,
        }
    }
}

/// Compare-and-set attempts of one commit unless configured: with the backoff between them,
/// enough for 50 requests of one session at once on every store here (RELIABILITY.md).
const DEFAULT_COMMIT_ATTEMPTS: u32 = 32;

pub(crate) struct Config {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) caps: Capabilities,
    pub(crate) name: String,
    pub(crate) ids: IdGenerator,
    pub(crate) cookie_codec: Arc<dyn CookieCodec>,
    pub(crate) touch_after: Option<Duration>,
    pub(crate) auto_commit: bool,
    pub(crate) cookie: CookieOptions,
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
    /// The attributes every `Set-Cookie` carries before `Max-Age` (`; HttpOnly; …; Path=/`),
    /// formatted once by the `cookie` crate.
    pub(crate) cookie_attributes: String,
}

impl Config {
    /// How long a record lives from its last extension: the session's own lifetime if it
    /// has one, else `maxAge`, or the idle lifetime for browser-session cookies.
    pub(crate) fn lifetime(&self, own: Option<Lifetime>) -> Duration {
        match own {
            None => self.cookie.max_age.unwrap_or(self.idle_lifetime),
            Some(Lifetime::BrowserSession) => self.idle_lifetime,
            Some(Lifetime::MaxAge(d)) => d,
        }
    }

    /// The cookie's `Max-Age` for a session with this own lifetime (`None`: a
    /// browser-session cookie).
    pub(crate) fn max_age(&self, own: Option<Lifetime>) -> Option<Duration> {
        match own {
            None => self.cookie.max_age,
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

    /// `Set-Cookie` for `id`; `expires` is the cookie's expiry (`None`: browser session).
    pub(crate) fn set_cookie(
        &self,
        id: &SessionId,
        expires: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> HeaderValue {
        let value = self.cookie_codec.encode_cow(&self.name, id.as_str());
        self.set_cookie_value(&value, expires, now)
    }

    /// The cookie's value as it goes on the wire (percent-encoded like
    /// `encodeURIComponent`).
    pub(crate) fn wire_value(&self, value: &str) -> String {
        utf8_percent_encode(value, URI_COMPONENT).to_string()
    }

    /// `Set-Cookie` carrying `value` (before percent-encoding).
    pub(crate) fn set_cookie_value(
        &self,
        value: &str,
        expires: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> HeaderValue {
        use std::fmt::Write as _;
        // The layout of the `cookie` crate's `Display`, without building a `Cookie`:
        // `name=value`, the fixed attributes, then `Max-Age` and `Expires`.
        let plain = value.bytes().all(|b| UNRESERVED[usize::from(b)]);
        let max_age = expires.map(|e| {
            let seconds = ((e - now).whole_milliseconds() + 500).div_euclid(1000);
            (e, seconds.max(0))
        });
        // The exact length in the usual case (a URL-safe value, a 4-digit year), so that
        // the header takes the buffer as it is instead of allocating a shared header.
        let mut len = self.name.len() + 1 + self.cookie_attributes.len();
        len += if plain { value.len() } else { value.len() * 3 };
        if let Some((_, seconds)) = max_age {
            let digits = seconds.checked_ilog10().map_or(1, |d| d as usize + 1);
            len += "; Max-Age=".len() + digits + "; Expires=".len() + HTTP_DATE_LEN;
        }
        let mut out = String::with_capacity(len);
        out.push_str(&self.name);
        out.push('=');
        if plain {
            // Ids are URL-safe: nothing to encode.
            out.push_str(value);
        } else {
            for chunk in utf8_percent_encode(value, URI_COMPONENT) {
                out.push_str(chunk);
            }
        }
        out.push_str(&self.cookie_attributes);
        if let Some((expires, seconds)) = max_age {
            let _ = write!(out, "; Max-Age={seconds}; Expires=");
            write_http_date(&mut out, expires);
        }
        debug_assert!(
            !plain
                || max_age.is_some_and(|(e, _)| !(1000..=9999).contains(&e.year()))
                || out.len() == len,
            "Set-Cookie length estimate is off"
        );
        // Every part was validated by the builder or percent-encoded, so this cannot fail;
        // an empty header would be harmless anyway.
        HeaderValue::try_from(out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The removal cookie: empty value, `Max-Age=0`, `Expires` in 1970.
    pub(crate) fn removal_cookie(&self) -> HeaderValue {
        let mut cookie = self.cookie_base(String::new());
        cookie.set_max_age(time::Duration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        header_value(&cookie)
    }

    fn cookie_base(&self, value: String) -> cookie::Cookie<'static> {
        let o = &self.cookie;
        let mut cookie = cookie::Cookie::new(self.name.clone(), value);
        cookie.set_path(o.path.clone());
        if let Some(domain) = &o.domain {
            cookie.set_domain(domain.clone());
        }
        if o.http_only {
            cookie.set_http_only(true);
        }
        if o.secure {
            cookie.set_secure(true);
        }
        if o.partitioned {
            cookie.set_partitioned(true);
        }
        cookie.set_same_site(o.same_site.map(|s| match s {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        }));
        cookie
    }
}

/// The length of [`write_http_date`]'s output for years 1000 to 9999.
const HTTP_DATE_LEN: usize = "Thu, 01 Jan 1970 00:00:00 GMT".len();

/// An HTTP date as the `cookie` crate writes `Expires`: `Thu, 01 Jan 1970 00:00:00 GMT`.
fn write_http_date(out: &mut String, at: OffsetDateTime) {
    use std::fmt::Write as _;
    let at = at.to_offset(time::UtcOffset::UTC);
    let weekday = match at.weekday() {
        time::Weekday::Monday => "Mon",
        time::Weekday::Tuesday => "Tue",
        time::Weekday::Wednesday => "Wed",
        time::Weekday::Thursday => "Thu",
        time::Weekday::Friday => "Fri",
        time::Weekday::Saturday => "Sat",
        time::Weekday::Sunday => "Sun",
    };
    let month = match at.month() {
        time::Month::January => "Jan",
        time::Month::February => "Feb",
        time::Month::March => "Mar",
        time::Month::April => "Apr",
        time::Month::May => "May",
        time::Month::June => "Jun",
        time::Month::July => "Jul",
        time::Month::August => "Aug",
        time::Month::September => "Sep",
        time::Month::October => "Oct",
        time::Month::November => "Nov",
        time::Month::December => "Dec",
    };
    let _ = write!(
        out,
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} GMT",
        at.day(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    );
}

fn header_value(cookie: &cookie::Cookie<'_>) -> HeaderValue {
    // Every part was validated by the builder or percent-encoded, so this cannot fail; an
    // empty header would be harmless anyway.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Reads sessions from requests and writes them back: next-session's `nextSession(options)`.
///
/// Cheap to clone (all clones share one configuration). Framework-agnostic: it reads the
/// request's [`HeaderMap`] and writes `Set-Cookie` into the response's; the integration
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
            .field("cookie_name", &c.name)
            .field("cookie", &c.cookie)
            .field("touch_after", &c.touch_after)
            .field("auto_commit", &c.auto_commit)
            .field("idle_lifetime", &c.idle_lifetime)
            .field("absolute_lifetime", &c.absolute_lifetime)
            .field("store_timeout", &c.store_timeout)
            .field("codec", &c.codec)
            .finish_non_exhaustive()
    }
}

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
        &self.config.cookie
    }

    /// The cookie name.
    pub fn cookie_name(&self) -> &str {
        &self.config.name
    }

    /// Whether sessions are committed automatically at the end of each request.
    pub fn auto_commit(&self) -> bool {
        self.config.auto_commit
    }

    /// The session cookie's value in `headers`: the first cookie of our name across every
    /// `Cookie` field, surrounding quotes removed, percent-decoded. `None` when absent,
    /// longer than [`MAX_COOKIE_VALUE_LEN`], or not valid UTF-8 once decoded.
    pub fn cookie_value(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.config.name.as_bytes();
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
                match cookie_value.and_then(|v| cookie_only::open(codec, &c.name, v)) {
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
            .and_then(|v| c.cookie_codec.decode(&c.name, v))
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

/// The key a session is stored under when ids are hashed (the default; see
/// [`SessionManagerBuilder::hashed_ids`] and [`SessionManager::store_key`]): a SHA-256 of the
/// id under a name of its own (so it is neither the id nor its handle), in URL-safe base64
/// (43 characters). One-way: a dump of the store gives no id a cookie could carry.
pub fn stored_key(id: &SessionId) -> SessionId {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"session-store key v1\0")
        .chain_update(id.as_str().as_bytes())
        .finalize();
    SessionId::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest))
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

/// The event of a session found expired.
fn expired(c: &Config, id: &SessionId) -> SessionEvent {
    SessionEvent::Expired {
        handle: crate::owners::handle(&c.key(id)),
    }
}

fn decode_cookie_value(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_COOKIE_VALUE_LEN * 3 {
        return None;
    }
    let raw = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .unwrap_or(raw);
    // Ids are usually URL-safe: without a `%` there is nothing to decode, and the value is
    // copied once.
    let value = if raw.contains(&b'%') {
        percent_decode(raw).decode_utf8().ok()?.into_owned()
    } else {
        std::str::from_utf8(raw).ok()?.to_owned()
    };
    if value.is_empty() || value.len() > MAX_COOKIE_VALUE_LEN {
        return None;
    }
    Some(value)
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
        let mut config = Config {
            caps,
            store: self.store,
            name: self.name,
            ids: self.ids,
            cookie_codec: self.cookie_codec,
            touch_after: self.touch_after,
            auto_commit: self.auto_commit,
            cookie: self.cookie,
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
            cookie_attributes: String::new(),
        };
        let attributes = config.cookie_base(String::new()).to_string();
        config.cookie_attributes = attributes
            .strip_prefix(&format!("{}=", config.name))
            .unwrap_or_default()
            .to_owned();
        Ok(SessionManager {
            config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `cookie` crate writes for the same cookie, attribute for attribute.
    fn by_cookie_crate(
        c: &Config,
        value: &str,
        expires: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> String {
        let mut cookie = c.cookie_base(c.wire_value(value));
        if let Some(expires) = expires {
            let seconds = ((expires - now).whole_milliseconds() + 500).div_euclid(1000);
            cookie.set_max_age(time::Duration::seconds(seconds.max(0) as i64));
            cookie.set_expires(expires);
        }
        cookie.to_string()
    }

    #[test]
    fn set_cookie_matches_the_cookie_crate_for_every_option() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let builders: Vec<SessionManagerBuilder> = vec![
            SessionManager::builder(crate::MemoryStore::new()),
            SessionManager::builder(crate::MemoryStore::new())
                .cookie_name("connect.sid")
                .max_age(Duration::from_secs(3600))
                .secure(true)
                .same_site(SameSite::None)
                .domain("example.com")
                .path("/app"),
            SessionManager::builder(crate::MemoryStore::new())
                .http_only(false)
                .same_site(SameSite::Lax),
            SessionManager::builder(crate::MemoryStore::new())
                .secure(true)
                .same_site(SameSite::None)
                .partitioned(true)
                .max_age(Duration::from_secs(60)),
            SessionManager::builder(crate::MemoryStore::new()).same_site(SameSite::Strict),
        ];
        for builder in builders {
            let manager = builder.build().unwrap();
            let c = &manager.config;
            for value in ["abc", "s:a b/c+d=é;", ""] {
                for expires in [
                    None,
                    Some(now),
                    Some(now + Duration::from_millis(1499)),
                    Some(now - Duration::from_secs(5)),
                    Some(now + Duration::from_secs(400 * 24 * 3600)),
                ] {
                    let ours = c.set_cookie_value(value, expires, now);
                    assert_eq!(
                        ours.to_str().unwrap(),
                        by_cookie_crate(c, value, expires, now),
                        "{value:?} {expires:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_unreserved_table_is_the_uri_component_set() {
        for b in 0..=255u8 {
            let encoded = utf8_percent_encode(
                std::str::from_utf8(&[b]).unwrap_or("\u{fffd}"),
                URI_COMPONENT,
            )
            .to_string();
            let kept = b.is_ascii() && encoded.as_bytes() == [b];
            assert_eq!(UNRESERVED[usize::from(b)], kept, "byte {b}");
        }
    }

    #[test]
    fn http_dates_match_the_cookie_crate_from_1970_to_9000() {
        let mut at = OffsetDateTime::UNIX_EPOCH;
        let end = OffsetDateTime::from_unix_timestamp(221_845_392_000).unwrap(); // 9000-01-01
        while at < end {
            let mut ours = String::new();
            write_http_date(&mut ours, at);
            let mut cookie = cookie::Cookie::new("a", "");
            cookie.set_expires(at);
            let theirs = cookie.to_string();
            assert_eq!(Some(ours.as_str()), theirs.strip_prefix("a=; Expires="));
            at += Duration::from_secs(86_400 * 37 + 3_661 * 7);
        }
    }
}
