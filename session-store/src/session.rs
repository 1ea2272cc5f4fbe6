//! The [`Session`] handle a request works with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::config::{Config, SessionManager};
use crate::data::Data;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::keys::handle;
use crate::observe::SessionEvent;
use crate::record::{Codec, Lifetime, MAX_LIFETIME, Record};
use crate::store::CasOutcome;

/// One session, as a request sees it.
///
/// Cheap to clone; clones share state, and the handle can be held across `.await`. Values
/// are encoded when inserted, so `insert` reports serialization errors (and the size
/// limit) at once. Nothing reaches the store before [`Session::commit`], which auto commit
/// calls at the end of the request.
///
/// What `commit` does (the whole behaviour is in `docs/behaviour.md` of the repository):
///
/// | state | `Set-Cookie` | store call |
/// |---|---|---|
/// | new, empty | none | none |
/// | new, populated | yes | `create` (a fresh id on collision) |
/// | existing, modified | only if the expiry changed | `compare_and_set` / `update` / `set` |
/// | existing, unmodified, no touch due | none | none |
/// | existing, touch due, unmodified | yes if `maxAge` is set | `touch` |
/// | destroyed | removal cookie | `destroy` |
/// | regenerated | yes, new id | `create` under the new id, then `destroy` of the old |
///
/// "Modified" compares values, not calls: setting a key to the value it had is no change.
///
/// # Concurrent requests of one session
///
/// Browsers send several requests of one session at once (six connections per host). With a
/// store that has compare-and-set (every store of this project except the express-session
/// layouts), what each request gets is:
///
/// - **Different keys never lose a write.** A commit that finds the stored session changed
///   since its load merges: the keys this request changed are applied to the stored record,
///   every other key keeps the stored value, and the write is tried again. Between attempts
///   the request waits a random, growing time (from 1 ms, doubling, at most 50 ms), so
///   concurrent commits spread out; after
///   [`commit_attempts`](crate::SessionManagerBuilder::commit_attempts) attempts (default
///   32) the commit fails with [`Error::Conflict`], which the integrations answer with
///   `503` and `Retry-After: 1`: nothing was written and the request can be sent again.
/// - **The same key: the last commit wins.** Two requests that each [`insert`](Self::insert)
///   a key write their own value; the one that commits last is stored. A read-modify-write
///   through `get` then `insert` (a counter) can therefore lose increments, and a value
///   already shown to a client can later go back.
/// - **An update that must not be lost:** [`update`](Self::update) applies its closure
///   again to the stored value when it meets a concurrent change, so every increment lands.
/// - **A session that another request destroyed or regenerated meanwhile is never written
///   back**: this request's changes are dropped and its response sends no `Set-Cookie`, so
///   the other request's cookie (the logout's removal, the login's new id) stays in the
///   browser. A request that arrives with the old cookie just after a login moved the
///   session finds a tombstone the regeneration left under a derived key (empty, for a
///   minute, never pointing to the new id): it gets an empty session whose changes are
///   dropped, and no cookie, rather than a new anonymous session whose cookie would log
///   the browser out.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    manager: SessionManager,
    state: Mutex<State>,
    commit_lock: tokio::sync::Mutex<()>,
}

struct State {
    id: SessionId,
    /// A record exists in the store under `id`, as far as this request knows.
    stored: bool,
    /// No stored session was found when loading (or it was destroyed since).
    new: bool,
    data: Data,
    size: usize,
    /// The data as of the last load or commit (a clone: it shares the payload and the
    /// changes with `data` until `data` is written to).
    baseline: Data,
    codec: Codec,
    extra: BTreeMap<String, serde_json::Value>,
    version: u64,
    /// The store expiry to write, for a stored session (an unstored one gets now + the
    /// lifetime when it is committed; see [`Session::expires`]).
    expires: OffsetDateTime,
    expiry_dirty: bool,
    cookie_dirty: bool,
    /// When the session was first stored (`None` until then); the absolute lifetime counts
    /// from it.
    created: Option<OffsetDateTime>,
    /// The session's own lifetime (`None`: the manager's).
    lifetime: Option<Lifetime>,
    /// Whom the session belongs to, and its label for lists of sessions.
    owner: Option<String>,
    label: Option<String>,
    /// The lifetime, owner or label was changed since the last load or commit: a write, not
    /// a touch.
    meta_dirty: bool,
    /// Stored ids to destroy (after regenerate or destroy).
    old_ids: Vec<SessionId>,
    /// Those of `old_ids` that a regeneration left: each gets a tombstone before it is
    /// destroyed (see [`tombstone_id`]).
    moved_ids: Vec<SessionId>,
    /// Loaded from a cookie whose session a regeneration moved moments ago: the request
    /// lost a race with a login, and its commit must neither store nor set a cookie.
    superseded: bool,
    destroy_requested: bool,
    /// Loaded past its absolute lifetime: its destroy is an expiry (reported at load), not a
    /// `destroy` of the application's.
    ended: bool,
    /// The browser holds a cookie of ours (sent with the request, or set by us).
    client_cookie: bool,
    pending_cookie: Option<HeaderValue>,
    /// Bumped by regenerate and destroy, to notice them while a commit awaits the store.
    generation: u64,
    /// Keys set by [`Session::update`] since the last commit, with the update to apply
    /// again if a concurrent request changed the stored session meanwhile, in call order.
    updates: Vec<(String, Updater)>,
}

/// An update of one key, on encoded values: the stored value (if any) in, the new value out.
type Updater = Arc<dyn Fn(Codec, Option<&[u8]>) -> Result<Vec<u8>> + Send + Sync>;

/// How long a regenerated session's tombstone lives: longer than any request that was in
/// flight when the login answered.
const TOMBSTONE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The id under which a regeneration leaves a tombstone for the session id it moved away
/// from: a request still carrying the old cookie then learns that it lost a race with a
/// login (its session did not merely expire) and answers without a cookie, so the login's
/// cookie stays in the browser. The tombstone holds nothing and never leads to the new id.
/// `None` for ids too long to carry the suffix within every store's key limit.
pub(crate) fn tombstone_id(id: &SessionId) -> Option<SessionId> {
    (id.as_str().len() <= 200).then(|| SessionId::new(format!("{}~moved", id.as_str())))
}

/// The first wait between compare-and-set attempts; it doubles with every attempt.
const BACKOFF_BASE: std::time::Duration = std::time::Duration::from_millis(1);
/// The longest wait between two compare-and-set attempts.
const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits before compare-and-set attempt `attempt + 1`: a random time up to 1 ms × 2^attempt,
/// at most 50 ms ("full jitter"), so concurrent requests of one session spread out instead
/// of meeting again.
async fn backoff(attempt: u32) {
    use rand::Rng as _;
    let cap = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(16))
        .min(BACKOFF_MAX);
    let wait = rand::rng().random_range(std::time::Duration::ZERO..=cap);
    tokio::time::sleep(wait).await;
}

/// Whether some key's value in `data` differs (by value, in `codec`) from `earlier`.
fn changed_since(codec: Codec, data: &Data, earlier: &Data) -> bool {
    data.any_change_since(earlier, |_, then, now| differs(codec, then, now))
}

/// Whether a key's value `now` differs (by value, in `codec`) from `old`.
fn differs(codec: Codec, old: Option<&[u8]>, now: Option<&[u8]>) -> bool {
    match (old, now) {
        (None, None) => false,
        (Some(a), Some(b)) => !codec.same_value(a, b),
        _ => true,
    }
}

impl State {
    /// Whether some key's value differs (by value) from the last load or commit, or the
    /// session's lifetime was changed.
    fn has_changes(&self) -> bool {
        self.meta_dirty || changed_since(self.codec, &self.data, &self.baseline)
    }

    fn record(&self, version: u64) -> Record {
        Record {
            data: self.data.clone(),
            expires: self.expires,
            version,
            codec: self.codec,
            extra: self.extra.clone(),
            created: self.created,
            lifetime: self.lifetime,
            owner: self.owner.clone(),
            label: self.label.clone(),
        }
    }

    /// Forgets the lifetime, owner and label: what follows is a new session.
    fn reset_meta(&mut self) {
        self.created = None;
        self.lifetime = None;
        self.owner = None;
        self.label = None;
        self.meta_dirty = false;
    }

    /// After a successful write of `written`, made from `sent` (the data when the commit
    /// began): `written` is the new baseline. With `merged` (another request's changes were
    /// merged in), the data becomes `written`'s, plus what this request changed since `sent`.
    fn settle(&mut self, written: &Record, sent: &Data, merged: bool) {
        if merged {
            let mut data = written.data.clone();
            let mut since = Vec::new();
            self.data.any_change_since(sent, |key, then, now| {
                if differs(self.codec, then, now) {
                    since.push(key);
                }
                false
            });
            for key in since {
                match self.data.get(key) {
                    Some(v) => data.insert(key.to_owned(), v.to_vec()),
                    None => {
                        data.remove(key);
                    }
                }
            }
            self.data = data;
            self.size = self.data.size();
            self.extra = written.extra.clone();
            self.codec = written.codec;
        }
        self.baseline = written.data.clone();
        self.version = written.version;
    }

    /// Whether a commit has nothing to do: no key set or removed since the last load or
    /// commit, no expiry to write, no id to destroy.
    fn settled(&self) -> bool {
        self.data.is_untouched_clone_of(&self.baseline)
            && !self.expiry_dirty
            && !self.meta_dirty
            && self.old_ids.is_empty()
            && !self.destroy_requested
            && (self.stored || self.data.is_empty())
    }

    /// Restores what a failed commit took out of the state (the baseline stays: the data
    /// still differs from it).
    fn restore(&mut self, expiry: bool, cookie: bool, lifetime: bool) {
        self.expiry_dirty |= expiry;
        self.cookie_dirty |= cookie;
        self.meta_dirty |= lifetime;
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Session")
            .field("id", &st.id)
            .field("is_new", &st.new)
            .field("keys", &st.data.len())
            .field("stored", &st.stored)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(manager: SessionManager, state: State) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                state: Mutex::new(state),
                commit_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub(crate) fn fresh(manager: SessionManager, client_cookie: bool) -> Self {
        let c = &manager.config;
        let state = State {
            id: c.new_id(),
            stored: false,
            new: true,
            data: Data::new(),
            size: 0,
            baseline: Data::new(),
            codec: c.codec(),
            extra: BTreeMap::new(),
            version: 0,
            // Set when committed; a clock read and date arithmetic saved per new request.
            expires: OffsetDateTime::UNIX_EPOCH,
            expiry_dirty: false,
            cookie_dirty: false,
            created: None,
            lifetime: None,
            owner: None,
            label: None,
            meta_dirty: false,
            old_ids: Vec::new(),
            moved_ids: Vec::new(),
            superseded: false,
            destroy_requested: false,
            ended: false,
            client_cookie,
            pending_cookie: None,
            generation: 0,
            updates: Vec::new(),
        };
        Self::new(manager, state)
    }

    /// A fresh session for a request whose cookie names a session that a regeneration
    /// moved moments ago (see [`tombstone_id`]).
    pub(crate) fn superseded(manager: SessionManager) -> Self {
        let session = Self::fresh(manager, true);
        session.lock().superseded = true;
        session
    }

    /// A fresh session for a request whose stored session is past its absolute lifetime:
    /// the commit destroys the record under `id` and removes the cookie (unless the request
    /// stores new data, which gets a new id and cookie).
    pub(crate) fn ended(manager: SessionManager, id: SessionId) -> Self {
        let session = Self::fresh(manager, true);
        {
            let mut st = session.lock();
            st.old_ids.push(id);
            st.destroy_requested = true;
            st.ended = true;
        }
        session
    }

    pub(crate) fn loaded(
        manager: SessionManager,
        id: SessionId,
        record: Record,
        now: OffsetDateTime,
    ) -> Self {
        let c = &manager.config;
        // A record from before creation times were kept (or written by Node, which keeps
        // none) starts its absolute clock now; with an absolute lifetime that start is
        // written at this request's commit, so the clock cannot restart on every load.
        let created = Some(record.created.unwrap_or_else(|| millis(now)));
        let unrecorded = record.created.is_none() && c.absolute_lifetime().is_some();
        let mut expires = record.expires;
        let mut due = false;
        if let Some(after) = c.touch_after() {
            let last_extension = record.expires - c.lifetime(record.lifetime);
            // A record already at its absolute deadline cannot be extended.
            let capped = c.deadline(created).is_some_and(|d| record.expires >= d);
            if now - last_extension >= after && !capped {
                expires = c.extended(now, record.lifetime, created);
                due = true;
            }
        }
        let state = State {
            id,
            stored: true,
            new: false,
            size: record.data_size(),
            baseline: record.data.clone(),
            data: record.data,
            codec: record.codec,
            extra: record.extra,
            version: record.version,
            expires,
            expiry_dirty: due,
            cookie_dirty: due && c.max_age(record.lifetime).is_some(),
            created,
            lifetime: record.lifetime,
            owner: record.owner,
            label: record.label,
            meta_dirty: unrecorded,
            old_ids: Vec::new(),
            moved_ids: Vec::new(),
            superseded: false,
            destroy_requested: false,
            ended: false,
            client_cookie: true,
            pending_cookie: None,
            generation: 0,
            updates: Vec::new(),
        };
        Self::new(manager, state)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State changes are single assignments; a panic elsewhere cannot tear them.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> &Config {
        &self.shared.manager.config
    }

    /// The manager this session belongs to.
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }

    /// The session id (redacted in `Debug`). Changes on [`regenerate`](Self::regenerate),
    /// [`destroy`](Self::destroy), and when a new id is needed at commit.
    pub fn id(&self) -> SessionId {
        self.lock().id.clone()
    }

    /// `true` if this request started the session: no stored session was found when it was
    /// loaded, or it was destroyed since. Committing does not change it (next-session's
    /// `isNew`).
    pub fn is_new(&self) -> bool {
        self.lock().new
    }

    /// The expiry the store holds (or will hold after commit: for a session not stored yet,
    /// now + the lifetime, within the absolute lifetime).
    pub fn expires(&self) -> OffsetDateTime {
        let st = self.lock();
        if st.stored {
            return st.expires;
        }
        let c = self.config();
        c.extended(c.now(), st.lifetime, st.created)
    }

    /// The session's cookie lifetime: its own if [`set_max_age`](Self::set_max_age) chose
    /// one, else the manager's `maxAge`. `None`: a browser-session cookie.
    pub fn max_age(&self) -> Option<Duration> {
        self.config().max_age(self.lock().lifetime)
    }

    /// Chooses this session's lifetime, kept with its record for every later request (load,
    /// touch, `touchAfter`, the cookie's `Max-Age`) and across [`regenerate`](Self::regenerate):
    /// `Some(30 days)` for "remember me", `None` for a browser-session cookie (whose record
    /// the store keeps for the manager's idle lifetime). A change is a modification: the
    /// commit writes the record and sends a new cookie; the expiry restarts from now (within
    /// the absolute lifetime).
    ///
    /// Fails, changing nothing, for a lifetime under one second or over
    /// [`MAX_LIFETIME`] (400 days, the longest browsers keep a cookie).
    pub fn set_max_age(&self, max_age: Option<Duration>) -> Result<()> {
        let lifetime = match max_age {
            None => Lifetime::BrowserSession,
            Some(d) if d < std::time::Duration::from_secs(1) || d > MAX_LIFETIME => {
                return Err(Error::Config(format!(
                    "a session's max age must be between one second and 400 days, not {d:?}"
                )));
            }
            Some(d) => Lifetime::MaxAge(d),
        };
        let c = self.config();
        let now = c.now();
        let mut st = self.lock();
        if st.lifetime == Some(lifetime) {
            return Ok(());
        }
        st.lifetime = Some(lifetime);
        st.meta_dirty = true;
        st.expires = c.extended(now, st.lifetime, st.created);
        st.expiry_dirty = st.stored;
        st.cookie_dirty = true;
        Ok(())
    }

    /// Binds the session to `owner` (e.g. the user id, at login), so that
    /// [`SessionManager::sessions_of`] lists it and the `revoke` calls can end it. Kept
    /// across [`regenerate`](Self::regenerate); a change is a modification (written at
    /// commit). Fails, changing nothing, for an empty owner or one over
    /// [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN) bytes.
    pub fn set_owner(&self, owner: impl Into<String>) -> Result<()> {
        let owner = owner.into();
        if owner.is_empty() || owner.len() > crate::record::MAX_OWNER_LEN {
            return Err(Error::Config(format!(
                "an owner must be 1 to {} bytes, not {}",
                crate::record::MAX_OWNER_LEN,
                owner.len()
            )));
        }
        self.set_meta(|st| &mut st.owner, Some(owner));
        Ok(())
    }

    /// Unbinds the session from its owner (a modification if it had one).
    pub fn remove_owner(&self) {
        self.set_meta(|st| &mut st.owner, None);
    }

    /// The owner the session is bound to.
    pub fn owner(&self) -> Option<String> {
        self.lock().owner.clone()
    }

    /// Sets the text shown for this session in [`SessionManager::sessions_of`] (e.g. the
    /// user agent), cut to [`MAX_LABEL_LEN`](crate::MAX_LABEL_LEN) bytes at a character
    /// boundary. A change is a modification.
    pub fn set_label(&self, label: impl Into<String>) {
        let mut label = label.into();
        if label.len() > crate::record::MAX_LABEL_LEN {
            let mut end = crate::record::MAX_LABEL_LEN;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            label.truncate(end);
        }
        self.set_meta(|st| &mut st.label, Some(label));
    }

    /// The session's label.
    pub fn label(&self) -> Option<String> {
        self.lock().label.clone()
    }

    /// The handle of this session in [`SessionManager::sessions_of`]: a one-way digest of
    /// its id, which names the session in a list without letting anyone load it. Changes
    /// with the id ([`regenerate`](Self::regenerate)).
    pub fn handle(&self) -> String {
        let id = self.lock().id.clone();
        handle(&self.config().key(&id))
    }

    /// Sets an owner or label field, marking the session modified if it changed.
    fn set_meta(&self, field: fn(&mut State) -> &mut Option<String>, value: Option<String>) {
        let mut st = self.lock();
        let slot = field(&mut st);
        if *slot != value {
            *slot = value;
            st.meta_dirty = true;
        }
    }

    /// When the session was first stored: the start of its absolute lifetime. `None` for a
    /// session not stored yet.
    pub fn created(&self) -> Option<OffsetDateTime> {
        self.lock().created
    }

    /// The value under `key`, decoded as `T`; `Ok(None)` if absent; an error if the stored
    /// value is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let st = self.lock();
        match st.data.get(key) {
            Some(bytes) => st.codec.decode(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`. Fails, changing nothing, if `value` cannot be serialized
    /// or the session would exceed the manager's size limit.
    pub fn insert<T: Serialize>(&self, key: impl Into<String>, value: T) -> Result<()> {
        self.put(key.into(), value, None)
    }

    /// Sets `key` to `f` of its current value (`None` when absent) and returns the new
    /// value. Unlike a [`get`](Self::get) then [`insert`](Self::insert), the update is kept
    /// until commit: if a concurrent request of this session changed the stored session
    /// meanwhile, the commit applies `f` again to the value it finds there, instead of
    /// overwriting it with this request's result. So 16 parallel requests that each call
    /// `update("n", |n: Option<u64>| n.unwrap_or(0) + 1)` add 16.
    ///
    /// `f` may run more than once and should only compute the value. A later `insert`,
    /// `remove` or `clear` of the key replaces the update. Fails, changing nothing, like
    /// `insert`, or if the current value is not a `T`.
    pub fn update<T, F>(&self, key: impl Into<String>, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let key = key.into();
        let value = f(self.get(&key)?);
        let again: Updater = Arc::new(move |codec: Codec, stored: Option<&[u8]>| {
            let current = stored.map(|bytes| codec.decode(bytes)).transpose()?;
            codec.encode(&f(current))
        });
        self.put(key, &value, Some(again))?;
        Ok(value)
    }

    /// `insert`, recording `update` for the key (or dropping the key's updates without one).
    fn put<T: Serialize>(&self, key: String, value: T, update: Option<Updater>) -> Result<()> {
        let codec = self.lock().codec;
        let bytes = codec.encode(&value)?;
        let mut st = self.lock();
        if st.codec != codec {
            // The codec changed while encoding (a concurrent merge); encode again.
            drop(st);
            return self.put(key, value, update);
        }
        let st = &mut *st;
        // One lookup serves the size check and the insert.
        let found = st.data.find(&key);
        let old_len = found.len;
        let size = st.size - old_len.map_or(0, |len| key.len() + len) + key.len() + bytes.len();
        if let Some(limit) = self.config().max_size().filter(|limit| size > *limit) {
            return Err(Error::TooLarge { size, limit });
        }
        st.size = size;
        match update {
            Some(update) => st.updates.push((key.clone(), update)),
            None if !st.updates.is_empty() => st.updates.retain(|(k, _)| *k != key),
            None => {}
        }
        st.data.insert_found(key, bytes, found);
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&self, key: &str) -> bool {
        let mut st = self.lock();
        let Some(len) = st.data.get(key).map(<[u8]>::len) else {
            return false;
        };
        st.data.remove(key);
        st.size -= key.len() + len;
        st.updates.retain(|(k, _)| k != key);
        true
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.lock().data.contains_key(key)
    }

    /// The keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().data.keys().map(str::to_owned).collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether the session holds no key.
    pub fn is_empty(&self) -> bool {
        self.lock().data.is_empty()
    }

    /// Removes every key (the session itself stays; see [`destroy`](Self::destroy)).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.data.clear();
        st.size = 0;
        st.updates.clear();
    }

    /// Whether the data differs (by value) from what was loaded or last committed.
    pub fn is_modified(&self) -> bool {
        self.lock().has_changes()
    }

    /// Extends the expiry now (to now + `maxAge`, or the idle lifetime), whatever
    /// `touchAfter` says. Written at commit.
    pub fn touch(&self) {
        let c = self.config();
        let now = c.now();
        let mut st = self.lock();
        st.expires = c.extended(now, st.lifetime, st.created);
        st.expiry_dirty = st.stored;
        st.cookie_dirty = c.max_age(st.lifetime).is_some();
    }

    /// Ends the session: at commit its record is destroyed and the response clears the
    /// cookie. Data inserted afterwards starts a new session under a new id.
    pub fn destroy(&self) {
        let new_id = self.config().new_id();
        let mut st = self.lock();
        let old = std::mem::replace(&mut st.id, new_id);
        if st.stored {
            st.old_ids.push(old);
        }
        st.stored = false;
        st.data.clear();
        st.size = 0;
        st.baseline = Data::new();
        st.extra.clear();
        st.version = 0;
        st.expiry_dirty = false;
        st.cookie_dirty = false;
        st.reset_meta();
        st.destroy_requested = true;
        st.new = true;
        st.generation += 1;
        st.updates.clear();
    }

    /// Moves the session to a new id, keeping its data, its lifetime and its creation time
    /// (so the absolute lifetime is not restarted; see
    /// [`absolute_lifetime`](crate::SessionManagerBuilder::absolute_lifetime)): at commit the
    /// data is saved under the new id, the old record is destroyed and the cookie carries
    /// the new id. Call it at login (prevents session fixation).
    pub fn regenerate(&self) {
        let new_id = self.config().new_id();
        let mut st = self.lock();
        let old = std::mem::replace(&mut st.id, new_id);
        if st.stored {
            st.moved_ids.push(old.clone());
            st.old_ids.push(old);
        }
        st.stored = false;
        st.superseded = false;
        st.baseline = Data::new();
        st.version = 0;
        st.expiry_dirty = false;
        st.generation += 1;
    }

    /// The `Set-Cookie` value queued by the last commit, if any (taken: a second call
    /// returns `None`). The integrations copy it into the response.
    pub fn take_set_cookie(&self) -> Option<HeaderValue> {
        self.lock().pending_cookie.take()
    }

    /// Writes what changed since the last load or commit to the store and queues the
    /// `Set-Cookie` header (see the table on [`Session`]). Calling it again, or letting auto
    /// commit run after it, writes only what changed since (nothing, if nothing did).
    ///
    /// Store failures, timeouts and exhausted compare-and-set retries are returned; the
    /// session keeps its changes, so a later commit tries again.
    pub async fn commit(&self) -> Result<()> {
        let _serial = match self.shared.commit_lock.try_lock() {
            Ok(serial) => serial,
            Err(_) => self.shared.commit_lock.lock().await,
        };
        if self.lock().settled() {
            return Ok(());
        }
        if let Some(keys) = self.config().cookie_only() {
            return self.commit_cookie_only(keys);
        }
        let (stored, updates) = {
            let st = self.lock();
            (st.stored, st.updates.len())
        };
        let committed = if stored {
            self.commit_existing().await
        } else {
            self.commit_new().await
        };
        crate::observe::commit(committed.is_ok());
        if committed.is_ok() && updates > 0 {
            // Written: these updates are settled (later ones, made while the commit ran,
            // stay for the next commit).
            let mut st = self.lock();
            let settled = updates.min(st.updates.len());
            st.updates.drain(..settled);
        }
        committed
    }

    /// Cookie-only sessions: every write is a new sealed cookie.
    fn commit_cookie_only(&self, keys: &crate::codec::PrivateCodec) -> Result<()> {
        let c = self.config();
        let now = c.now();
        let mut st = self.lock();
        if st.data.is_empty() && !st.stored {
            let ended = st.destroy_requested || !st.old_ids.is_empty();
            st.old_ids.clear();
            st.destroy_requested = false;
            st.baseline = st.data.clone();
            if ended && st.client_cookie {
                st.pending_cookie = Some(c.cookie().removal_cookie());
                st.client_cookie = false;
            }
            return Ok(());
        }
        let changed = st.has_changes();
        if st.stored && !changed && !st.expiry_dirty {
            st.baseline = st.data.clone();
            return Ok(());
        }
        let created = *st.created.get_or_insert(millis(now));
        let expires = if st.stored {
            st.expires
        } else {
            c.extended(now, st.lifetime, Some(created))
        };
        let version = if st.stored {
            st.version.wrapping_add(1)
        } else {
            0
        };
        let mut record = st.record(version);
        record.expires = expires;
        let sealed = crate::cookie_only::seal(keys, &c.cookie().name, &st.id, &record)?;
        let size = c.cookie().name.len() + 1 + c.cookie().wire_value(&sealed).len();
        if size > crate::cookie_only::MAX_COOKIE_LEN {
            return Err(Error::TooLarge {
                size,
                limit: crate::cookie_only::MAX_COOKIE_LEN,
            });
        }
        let cookie_expiry = c.max_age(st.lifetime).map(|_| expires);
        st.pending_cookie = Some(c.cookie().set_cookie_value(&sealed, cookie_expiry, now));
        st.expires = expires;
        st.version = version;
        st.stored = true;
        st.client_cookie = true;
        st.baseline = record.data;
        st.old_ids.clear();
        st.destroy_requested = false;
        st.expiry_dirty = false;
        st.cookie_dirty = false;
        st.meta_dirty = false;
        Ok(())
    }

    async fn commit_new(&self) -> Result<()> {
        let c = self.config();
        let now = c.now();
        let snapshot = {
            let mut st = self.lock();
            if st.superseded {
                // This request lost a race with a login that moved its session: storing its
                // data under a new id would answer with a cookie that logs the browser out.
                tracing::debug!(
                    store = c.store_name(),
                    "session was moved by a regeneration; this request's changes were dropped"
                );
                st.data.clear();
                st.size = 0;
                st.updates.clear();
                None
            } else if st.data.is_empty() {
                None
            } else {
                let created = *st.created.get_or_insert(millis(now));
                st.expires = c.extended(now, st.lifetime, Some(created));
                let record = st.record(0);
                let moved_from = st.moved_ids.last().cloned();
                Some((st.id.clone(), record, st.generation, moved_from))
            }
        };
        let Some((mut id, record, generation, moved_from)) = snapshot else {
            return self.destroy_old_ids().await;
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let created = match self.create(&id, &record).await {
                Ok(created) => created,
                Err(e) => return Err(e),
            };
            if created {
                break;
            }
            if attempts >= 3 {
                return Err(Error::Conflict { attempts });
            }
            // Another session has this id: a fresh one.
            id = c.new_id();
        }
        {
            let mut st = self.lock();
            if st.generation == generation {
                let cookie_expiry = c.max_age(record.lifetime).map(|_| record.expires);
                // The id differs only if it collided above.
                if st.id != id {
                    st.id = id;
                }
                st.stored = true;
                st.expiry_dirty = false;
                st.cookie_dirty = false;
                st.meta_dirty &= st.lifetime != record.lifetime
                    || st.owner != record.owner
                    || st.label != record.label;
                st.settle(&record, &record.data, false);
                st.pending_cookie = Some(c.cookie().set_cookie(&st.id, cookie_expiry, now));
                st.client_cookie = true;
                c.emit(|| match &moved_from {
                    Some(from) => SessionEvent::Regenerated {
                        from: handle(&c.key(from)),
                        to: handle(&c.key(&st.id)),
                    },
                    None => SessionEvent::Created {
                        handle: handle(&c.key(&st.id)),
                    },
                });
            } else {
                // Regenerated or destroyed while the record was being written.
                st.old_ids.push(id);
            }
        }
        self.destroy_old_ids().await
    }

    /// Destroys the records of earlier ids; queues the removal cookie where the browser
    /// would otherwise keep pointing at a destroyed session.
    async fn destroy_old_ids(&self) -> Result<()> {
        let c = self.config();
        let moved = std::mem::take(&mut self.lock().moved_ids);
        if !moved.is_empty() {
            let tombstone = Record {
                data: Data::new(),
                expires: c.now() + TOMBSTONE_LIFETIME,
                version: 0,
                codec: self.lock().codec,
                extra: BTreeMap::new(),
                created: None,
                lifetime: None,
                owner: None,
                label: None,
            };
            for (done, old) in moved.iter().enumerate() {
                let Some(id) = tombstone_id(old) else {
                    continue;
                };
                if let Err(e) = c.timed("set", c.store().set(&id, &tombstone)).await {
                    let mut st = self.lock();
                    let mut rest = moved[done..].to_vec();
                    rest.append(&mut st.moved_ids);
                    st.moved_ids = rest;
                    return Err(e);
                }
            }
        }
        let (old_ids, destroyed) = {
            let mut st = self.lock();
            (
                std::mem::take(&mut st.old_ids),
                st.destroy_requested && !st.ended,
            )
        };
        for (done, old) in old_ids.iter().enumerate() {
            let result = c.timed("destroy", c.store().destroy(old)).await;
            if result.is_ok() && destroyed && !moved.contains(old) {
                c.emit(|| SessionEvent::Destroyed {
                    handle: handle(&c.key(old)),
                });
            }
            if let Err(e) = result {
                let mut st = self.lock();
                let mut rest = old_ids[done..].to_vec();
                rest.append(&mut st.old_ids);
                st.old_ids = rest;
                return Err(e);
            }
        }
        let mut st = self.lock();
        let ended = st.destroy_requested || !old_ids.is_empty();
        st.destroy_requested = false;
        if ended && !st.stored && st.client_cookie {
            st.pending_cookie = Some(c.cookie().removal_cookie());
            st.client_cookie = false;
        }
        Ok(())
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let c = self.config();
        if c.caps().create {
            return c.timed("create", c.store().create(id, record)).await;
        }
        if c.timed("get", c.store().get(id)).await?.is_some() {
            return Ok(false);
        }
        c.timed("set", c.store().set(id, record))
            .await
            .map(|()| true)
    }

    async fn commit_existing(&self) -> Result<()> {
        let c = self.config();
        let now = c.now();
        let snapshot = {
            let mut st = self.lock();
            let changed = st.has_changes();
            if !changed && !st.expiry_dirty {
                st.baseline = st.data.clone();
                None
            } else {
                let record = changed.then(|| st.record(st.version.wrapping_add(1)));
                let baseline = st.baseline.clone();
                let touched = std::mem::take(&mut st.expiry_dirty);
                let cookie = std::mem::take(&mut st.cookie_dirty);
                let lifetime = std::mem::take(&mut st.meta_dirty);
                let snapshot = (st.id.clone(), record, st.version, baseline);
                Some((snapshot, touched, cookie, lifetime))
            }
        };
        let Some(((id, record, expected, baseline), touched, cookie, lifetime)) = snapshot else {
            return self.destroy_old_ids().await;
        };
        let outcome = match record {
            None => {
                let expires = self.lock().expires;
                c.timed("touch", c.store().touch(&id, expires))
                    .await
                    .map(|found| found.then_some(None))
            }
            Some(record) => {
                let sent = record.data.clone();
                self.write(&id, record, expected, &baseline, touched, lifetime)
                    .await
                    .map(|w| w.map(|(written, merged)| Some((written, merged, sent))))
            }
        };
        let written = match outcome {
            Ok(Some(written)) => written,
            Ok(None) => {
                self.gone();
                return Ok(());
            }
            Err(e) => {
                self.lock().restore(touched, cookie, lifetime);
                return Err(e);
            }
        };
        {
            let mut st = self.lock();
            if let Some((record, merged, sent)) = &written {
                st.settle(record, sent, *merged);
                if *merged {
                    st.expires = record.expires;
                    if !lifetime {
                        st.lifetime = record.lifetime;
                        st.owner = record.owner.clone();
                        st.label = record.label.clone();
                    }
                }
            }
            if cookie && st.id == id {
                let expiry = c.max_age(st.lifetime).map(|_| st.expires);
                st.pending_cookie = Some(c.cookie().set_cookie(&id, expiry, now));
            }
        }
        self.destroy_old_ids().await
    }

    /// Writes an existing session, never recreating it; `Ok(None)` if it is gone. With
    /// compare-and-set, a conflicting write is merged key by key onto the stored record and
    /// retried (same key: this request wins). Returns the written record and whether it was
    /// merged.
    async fn write(
        &self,
        id: &SessionId,
        mut record: Record,
        mut expected: u64,
        baseline: &Data,
        touched: bool,
        meta_changed: bool,
    ) -> Result<Option<(Record, bool)>> {
        let c = self.config();
        if !(c.compare_and_set() && c.caps().compare_and_set) {
            if c.caps().update {
                let found = c.timed("update", c.store().update(id, &record)).await?;
                return Ok(found.then_some((record, false)));
            }
            c.timed("set", c.store().set(id, &record)).await?;
            return Ok(Some((record, false)));
        }
        // This request's changes, worked out from the snapshot on the first conflict, and
        // the updates to apply again.
        let mut changes: Option<Vec<(String, Option<Vec<u8>>)>> = None;
        let mut updates: Option<Vec<(String, Updater)>> = None;
        for attempt in 0..c.max_attempts() {
            match c
                .timed(
                    "compare_and_set",
                    c.store().compare_and_set(id, &record, expected),
                )
                .await?
            {
                CasOutcome::Written => return Ok(Some((record, attempt > 0))),
                CasOutcome::Missing => return Ok(None),
                CasOutcome::Conflict if attempt + 1 == c.max_attempts() => {
                    crate::observe::conflict(c.store_name());
                    break;
                }
                CasOutcome::Conflict => crate::observe::conflict(c.store_name()),
            }
            backoff(attempt).await;
            let Some(theirs) = c.timed("get", c.store().get(id)).await? else {
                return Ok(None);
            };
            expected = theirs.version;
            if theirs.codec != record.codec {
                // Values in different codecs cannot be mixed: this request's data wins.
                record.version = expected.wrapping_add(1);
                continue;
            }
            let changes = changes.get_or_insert_with(|| {
                let mut changes = Vec::new();
                record.data.any_change_since(baseline, |key, then, now| {
                    if differs(record.codec, then, now) {
                        changes.push((key.to_owned(), now.map(<[u8]>::to_vec)));
                    }
                    false
                });
                changes
            });
            let updates = updates.get_or_insert_with(|| self.lock().updates.clone());
            let mut data = theirs.data;
            for (key, value) in changes.iter() {
                let mut again = updates.iter().filter(|(k, _)| k == key).peekable();
                if again.peek().is_some() {
                    // Set by `update`: apply it again to the value stored now.
                    let mut value = data.get(key).map(<[u8]>::to_vec);
                    for (_, update) in again {
                        value = Some(update(record.codec, value.as_deref())?);
                    }
                    if let Some(value) = value {
                        data.insert(key.clone(), value);
                    }
                    continue;
                }
                match value {
                    Some(v) => data.insert(key.clone(), v.clone()),
                    None => {
                        data.remove(key);
                    }
                }
            }
            // This request's lifetime, owner and label win over the stored ones, with its
            // expiry.
            let expires = if meta_changed {
                record.expires
            } else if touched {
                record.expires.max(theirs.expires)
            } else {
                theirs.expires
            };
            record = Record {
                data,
                expires,
                version: expected.wrapping_add(1),
                codec: theirs.codec,
                extra: theirs.extra,
                created: theirs.created.or(record.created),
                lifetime: if meta_changed {
                    record.lifetime
                } else {
                    theirs.lifetime
                },
                owner: if meta_changed {
                    record.owner
                } else {
                    theirs.owner
                },
                label: if meta_changed {
                    record.label
                } else {
                    theirs.label
                },
            };
        }
        Err(Error::Conflict {
            attempts: c.max_attempts(),
        })
    }

    /// The record was destroyed (or moved by a regeneration) by someone else: drop this
    /// request's changes, never recreate it, leave the cookie alone.
    fn gone(&self) {
        let c = self.config();
        tracing::debug!(
            store = c.store_name(),
            "session was destroyed elsewhere; its changes were dropped"
        );
        let new_id = c.new_id();
        let mut st = self.lock();
        st.id = new_id;
        st.stored = false;
        st.new = true;
        st.data.clear();
        st.size = 0;
        st.baseline = Data::new();
        st.extra.clear();
        st.version = 0;
        st.expiry_dirty = false;
        st.cookie_dirty = false;
        st.reset_meta();
        st.generation += 1;
        st.updates.clear();
        // No removal cookie: whoever ended the session answered with its own `Set-Cookie`
        // (a login's new id, a logout's removal), and this late response must not override
        // it in the browser. A cookie that names no session loads as a fresh one anyway.
        st.client_cookie = false;
    }
}

/// `at` truncated to whole milliseconds, the precision stores keep a creation time in.
fn millis(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(u32::from(at.millisecond()) * 1_000_000)
        .unwrap_or(at)
}
