use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use session_store::{
    Capabilities, Codec, Error, Record, Result, SessionId, SessionStore, time::OffsetDateTime,
};
use sha2::{Digest, Sha256};
use tsc::session::{Id, Record as TowerRecord};
use tsc::session_store::{self as tower_store, SessionStore as TowerStore};

/// The key under which [`TowerSessionsStore`] keeps our whole record in a tower-sessions
/// record's JSON map.
pub const RESERVED_KEY: &str = "__session_store";

/// Envelope format written under [`RESERVED_KEY`].
const FORMAT: u64 = 1;

/// Domain separation for the id hash, so the mapping cannot be confused with other uses.
const ID_DOMAIN: &[u8] = b"session-store-compat/tower-id/v1\0";

/// The tower-sessions [`Id`] under which our `id` is stored (see the [module docs](self)).
pub fn tower_id(id: &SessionId) -> Id {
    let digest = Sha256::new()
        .chain_update(ID_DOMAIN)
        .chain_update(id.as_str().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Id(i128::from_le_bytes(bytes))
}

/// Our [`SessionId`] for a tower-sessions [`Id`]: its 22-character URL-safe base64 form.
pub fn session_id_of(id: &Id) -> SessionId {
    SessionId::new(id.to_string())
}

/// Maps a tower-sessions error in one place: undecodable stored data is
/// [`Error::Corrupt`], anything else [`Error::Backend`]. (tower-sessions errors carry only
/// a message, so an unreachable backend cannot be told apart.)
fn from_tower_error(store: &'static str, error: tower_store::Error) -> Error {
    match error {
        tower_store::Error::Decode(_) => Error::corrupt(store, error),
        other => Error::backend(store, other),
    }
}

/// Our error as a tower-sessions error: the whole source chain as one message (their error
/// type keeps only a string). Our messages never contain session ids.
fn to_tower_error(error: &Error) -> tower_store::Error {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    match error {
        Error::Corrupt { .. } => tower_store::Error::Decode(message),
        Error::Serialization { .. } => tower_store::Error::Encode(message),
        _ => tower_store::Error::Backend(message),
    }
}

/// The error of a record whose envelope under [`RESERVED_KEY`] is missing or malformed.
#[derive(Debug)]
struct BadEnvelope(&'static str);

impl fmt::Display for BadEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tower-sessions record: {}", self.0)
    }
}

impl std::error::Error for BadEnvelope {}

/// A tower-sessions store used as a [`SessionStore`] of this library.
///
/// See the [module docs](self) for how ids and records are mapped and why no optional
/// operation is offered.
#[derive(Clone)]
pub struct TowerSessionsStore<S> {
    store: S,
}

impl<S: TowerStore> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("store", &self.store)
            .finish()
    }
}

impl<S: TowerStore> TowerSessionsStore<S> {
    /// Wraps a tower-sessions store.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.store
    }
}

const NAME: &str = "tower-sessions";

/// Our record as a tower-sessions record under `id`.
fn to_tower_record(id: &SessionId, record: &Record) -> TowerRecord {
    let envelope = serde_json::json!({
        "format": FORMAT,
        "version": record.version,
        "payload": STANDARD.encode(record.encode_payload()),
    });
    TowerRecord {
        id: tower_id(id),
        data: HashMap::from([(RESERVED_KEY.to_owned(), envelope)]),
        expiry_date: record.expires,
    }
}

/// Our record from a tower-sessions record written by [`to_tower_record`].
fn from_tower_record(record: &TowerRecord) -> Result<Record> {
    let corrupt = |what| Error::corrupt(NAME, BadEnvelope(what));
    let envelope = record
        .data
        .get(RESERVED_KEY)
        .ok_or_else(|| corrupt("no session-store envelope"))?;
    if envelope.get("format").and_then(|f| f.as_u64()) != Some(FORMAT) {
        return Err(corrupt("unknown envelope format"));
    }
    let version = envelope
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("missing version"))?;
    let payload = envelope
        .get("payload")
        .and_then(|p| p.as_str())
        .ok_or_else(|| corrupt("missing payload"))?;
    let bytes = STANDARD
        .decode(payload)
        .map_err(|e| Error::corrupt(NAME, e))?;
    Record::decode_payload(&bytes, record.expiry_date, version).map_err(|e| Error::corrupt(NAME, e))
}

#[async_trait]
impl<S: TowerStore> SessionStore for TowerSessionsStore<S> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let loaded = self
            .store
            .load(&tower_id(id))
            .await
            .map_err(|e| from_tower_error(NAME, e))?;
        // Expiry is checked here too: not every tower-sessions store filters on load.
        match loaded {
            Some(r) if r.expiry_date > OffsetDateTime::now_utc() => from_tower_record(&r).map(Some),
            _ => Ok(None),
        }
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.store
            .save(&to_tower_record(id, record))
            .await
            .map_err(|e| from_tower_error(NAME, e))
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.store
            .delete(&tower_id(id))
            .await
            .map_err(|e| from_tower_error(NAME, e))
    }
}

/// A store of this library used as a tower-sessions store.
///
/// Ids are the `Display` form of tower-sessions' [`Id`]; values are stored one key each,
/// JSON-encoded ([`Codec::Json`]); see the [module docs](self). `create` uses the store's
/// native create-if-absent when it has one and otherwise checks with `get` before `set`;
/// on a collision it picks a fresh random id, as tower-sessions' own stores do.
#[derive(Clone)]
pub struct AsTowerSessionsStore<S> {
    store: S,
}

impl<S: SessionStore> fmt::Debug for AsTowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsTowerSessionsStore")
            .field("store", &self.store.name())
            .finish()
    }
}

/// How many fresh ids `create` tries before giving up (a 128-bit collision even once is
/// practically impossible, so repeated ones mean a broken store).
const CREATE_ATTEMPTS: u32 = 8;

impl<S: SessionStore> AsTowerSessionsStore<S> {
    /// Wraps one of our stores (also `Arc<dyn SessionStore>`).
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.store
    }

    async fn try_create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        if self.store.capabilities().create {
            return self.store.create(id, record).await;
        }
        if self.store.get(id).await?.is_some() {
            return Ok(false);
        }
        self.store.set(id, record).await.map(|()| true)
    }
}

/// A tower-sessions record as one of ours (JSON values).
fn record_from_tower(record: &TowerRecord) -> Result<Record> {
    let codec = Codec::Json;
    let mut ours = Record::new(record.expiry_date, codec);
    for (key, value) in &record.data {
        ours.data.insert(key.clone(), codec.encode(value)?);
    }
    Ok(ours)
}

/// One of our records as a tower-sessions record under `id`.
fn record_to_tower(id: Id, record: &Record) -> Result<TowerRecord> {
    let mut data = HashMap::with_capacity(record.data.len());
    for (key, bytes) in &record.data {
        let value: serde_json::Value = record.codec.decode(bytes).map_err(|e| match e {
            Error::Serialization { source } => Error::Corrupt {
                store: NAME,
                source,
            },
            other => other,
        })?;
        data.insert(key.to_owned(), value);
    }
    Ok(TowerRecord {
        id,
        data,
        expiry_date: record.expires,
    })
}

#[async_trait]
impl<S: SessionStore> TowerStore for AsTowerSessionsStore<S> {
    async fn create(&self, record: &mut TowerRecord) -> tower_store::Result<()> {
        let ours = record_from_tower(record).map_err(|e| to_tower_error(&e))?;
        for _ in 0..CREATE_ATTEMPTS {
            let created = self
                .try_create(&session_id_of(&record.id), &ours)
                .await
                .map_err(|e| to_tower_error(&e))?;
            if created {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(tower_store::Error::Backend(format!(
            "session store `{}` reported an id collision {CREATE_ATTEMPTS} times in a row",
            self.store.name()
        )))
    }

    async fn save(&self, record: &TowerRecord) -> tower_store::Result<()> {
        let ours = record_from_tower(record).map_err(|e| to_tower_error(&e))?;
        self.store
            .set(&session_id_of(&record.id), &ours)
            .await
            .map_err(|e| to_tower_error(&e))
    }

    async fn load(&self, session_id: &Id) -> tower_store::Result<Option<TowerRecord>> {
        let loaded = self
            .store
            .get(&session_id_of(session_id))
            .await
            .map_err(|e| to_tower_error(&e))?;
        loaded
            .map(|r| record_to_tower(*session_id, &r))
            .transpose()
            .map_err(|e| to_tower_error(&e))
    }

    async fn delete(&self, session_id: &Id) -> tower_store::Result<()> {
        self.store
            .destroy(&session_id_of(session_id))
            .await
            .map_err(|e| to_tower_error(&e))
    }
}
