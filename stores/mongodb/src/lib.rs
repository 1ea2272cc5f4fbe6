#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use session_store::{
    Capabilities, CasOutcome, Clock, Error, Record, Result, SessionId, SessionStore, SystemClock,
};
use time::OffsetDateTime;

/// The MongoDB driver, re-exported so one dependency line is enough.
pub use mongodb;

/// The store's name in errors and traces.
const NAME: &str = "mongodb";

/// How long a client built by [`MongoStore::connect`] looks for a usable server before an
/// operation fails with [`Error::Unavailable`], unless the connection string sets
/// `serverSelectionTimeoutMS`.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client built by [`MongoStore::connect`] waits for a new connection, unless the
/// connection string sets `connectTimeoutMS` (the driver's own default is 10 s). A short
/// one lets the pool recover quickly after the server was unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The database [`MongoStore::from_url`] uses when the connection string names none.
pub const DEFAULT_DATABASE: &str = "session_store";

/// The collection [`MongoStore::from_url`] uses.
pub const DEFAULT_COLLECTION: &str = "sessions";

/// The name of the index [`MongoStore::create_owner_index`] creates (the name MongoDB would
/// give its keys).
pub const OWNER_INDEX: &str = "owner_1_expires_1";

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Error codes of a server that is shutting down, stepping down or not (yet) primary: the
/// request may succeed later, like after a network error.
const UNAVAILABLE_CODES: [i32; 10] = [
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    10058, // LegacyNotPrimary
    6,     // HostUnreachable
    7,     // HostNotFound
];

/// Sessions in a MongoDB collection (see the [crate docs](crate) for the layout).
///
/// `Clone` is cheap: clones share the driver's connection pool.
#[derive(Clone)]
pub struct MongoStore {
    collection: Collection<Document>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The namespace only: the client's options may hold credentials.
        f.debug_struct("MongoStore")
            .field("namespace", &self.collection.namespace().to_string())
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// Connects with a connection string (`mongodb://…` or `mongodb+srv://…`) and uses
    /// `collection` in `database`, creating the TTL index if it is missing.
    ///
    /// Server selection gives up after [`DEFAULT_SERVER_SELECTION_TIMEOUT`] unless the
    /// string sets `serverSelectionTimeoutMS`; [`DEFAULT_CONNECT_TIMEOUT`] applies likewise. Fails with [`Error::Unavailable`] when no
    /// server answers, and with [`Error::Backend`] on a malformed string.
    pub async fn connect(uri: &str, database: &str, collection: &str) -> Result<Self> {
        let (client, _) = client_from_uri(uri).await?;
        Self::from_client(&client, database, collection).await
    }

    /// Connects with a connection string alone: the database is the one the string names
    /// (`mongodb://host/mydb`), else [`DEFAULT_DATABASE`]; the collection is
    /// [`DEFAULT_COLLECTION`]. Otherwise as [`MongoStore::connect`].
    pub async fn from_url(uri: &str) -> Result<Self> {
        let (client, database) = client_from_uri(uri).await?;
        let database = database.as_deref().unwrap_or(DEFAULT_DATABASE);
        Self::from_client(&client, database, DEFAULT_COLLECTION).await
    }

    /// Uses `collection` in `database` through an existing client, creating the TTL index
    /// if it is missing.
    pub async fn from_client(client: &Client, database: &str, collection: &str) -> Result<Self> {
        Self::from_database(&client.database(database), collection).await
    }

    /// Uses `collection` in an existing database handle, creating the TTL index if it is
    /// missing.
    pub async fn from_database(database: &Database, collection: &str) -> Result<Self> {
        Self::from_collection(database.collection(collection)).await
    }

    /// Uses an existing collection handle (its read and write concerns apply), creating the
    /// TTL index and the owner index if they are missing.
    pub async fn from_collection(collection: Collection<Document>) -> Result<Self> {
        let store = Self {
            collection,
            clock: Arc::new(SystemClock),
        };
        store.create_ttl_index().await?;
        store.create_owner_index().await?;
        Ok(store)
    }

    /// Creates the TTL index `{expires: 1}` with `expireAfterSeconds: 0` (named `expires_1`,
    /// as connect-mongo's). Does nothing if it exists already; fails with
    /// [`Error::Backend`] if an index on `expires` exists with other options. The
    /// constructors call it.
    pub async fn create_ttl_index(&self) -> Result<()> {
        let index = IndexModel::builder()
            .keys(doc! { "expires": 1 })
            .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
            .build();
        self.collection
            .create_index(index)
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    /// Creates the owner index [`OWNER_INDEX`]: `{owner: 1, expires: 1}`, partial on
    /// `{owner: {$gt: ""}}`, so it holds only sessions bound to an owner (unowned sessions
    /// add no index entry) and [`SessionStore::owned`]'s query, `{owner, expires > now}`, is
    /// one index range scan over that owner's live sessions. Does nothing if it exists
    /// already; fails with [`Error::Backend`] if an index of that name exists with another
    /// definition. The constructors call it.
    ///
    /// The partial filter is a comparison rather than `$exists` because a query planner can
    /// only use a partial index for a query it can prove lies inside the filter, and an
    /// equality on a non-empty string provably lies inside `$gt: ""` (owners are never
    /// empty); the expiry is the second key so the range on it is part of the scan.
    pub async fn create_owner_index(&self) -> Result<()> {
        let index = IndexModel::builder()
            .keys(doc! { "owner": 1, "expires": 1 })
            .options(
                IndexOptions::builder()
                    .name(OWNER_INDEX.to_owned())
                    .partial_filter_expression(doc! { "owner": { "$gt": "" } })
                    .build(),
            )
            .build();
        self.collection
            .create_index(index)
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    /// Reads "now" from `clock` instead of the system clock when deciding whether a session
    /// has expired. The server's TTL monitor still uses the server's clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The collection the sessions live in.
    pub fn collection(&self) -> &Collection<Document> {
        &self.collection
    }

    fn now(&self) -> DateTime {
        to_bson_date(self.clock.now())
    }

    /// The filter that matches the live document under `id`.
    fn live(&self, id: &SessionId) -> Document {
        doc! { "_id": id.as_str(), "expires": { "$gt": self.now() } }
    }

    /// The filter that matches the live documents bound to `owner`: an equality on the
    /// owner index's first key and a range on its second.
    fn live_of(&self, owner: &str) -> Document {
        doc! { "owner": owner, "expires": { "$gt": self.now() } }
    }
}

/// A client for `uri` with the store's default server selection timeout, and the database
/// the string names, if any.
async fn client_from_uri(uri: &str) -> Result<(Client, Option<String>)> {
    let mut options = ClientOptions::parse(uri).await.map_err(map_error)?;
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(DEFAULT_SERVER_SELECTION_TIMEOUT);
    }
    if options.connect_timeout.is_none() {
        options.connect_timeout = Some(DEFAULT_CONNECT_TIMEOUT);
    }
    let database = options.default_database.clone();
    let client = Client::with_options(options).map_err(map_error)?;
    Ok((client, database))
}

/// The whole document for `record` under `id`. Every write but `touch` replaces the whole
/// document, so the `owner` field (absent for an unowned record) always follows the record.
fn to_document(id: &SessionId, record: &Record) -> Document {
    let mut document = doc! {
        "_id": id.as_str(),
        "data": Binary { subtype: BinarySubtype::Generic, bytes: record.encode_payload() },
        // Stored as the signed reinterpretation of the bits, so every u64 round-trips.
        "v": record.version as i64,
        "expires": to_bson_date(record.expires),
    };
    if let Some(owner) = &record.owner {
        // A copy of the owner in the payload, for the owner index.
        document.insert("owner", owner.as_str());
    }
    document
}

/// A record from a stored document.
fn from_document(doc: &Document) -> Result<Record> {
    let corrupt = |what: &'static str| Error::corrupt(NAME, what);
    let data = match doc.get("data") {
        Some(Bson::Binary(binary)) => &binary.bytes,
        Some(_) => return Err(corrupt("field `data` is not binary")),
        None => return Err(corrupt("field `data` is missing")),
    };
    let version = match doc.get("v") {
        Some(Bson::Int64(v)) => *v as u64,
        Some(Bson::Int32(v)) => *v as u64,
        Some(_) => return Err(corrupt("field `v` is not an integer")),
        None => return Err(corrupt("field `v` is missing")),
    };
    let expires = match doc.get("expires") {
        Some(Bson::DateTime(date)) => {
            from_bson_date(*date).ok_or_else(|| corrupt("field `expires` is out of range"))?
        }
        Some(_) => return Err(corrupt("field `expires` is not a date")),
        None => return Err(corrupt("field `expires` is missing")),
    };
    Record::decode_payload(data, expires, version).map_err(|e| Error::corrupt(NAME, e))
}

/// Truncates to whole milliseconds (BSON's precision), rounding towards the past.
fn to_bson_date(at: OffsetDateTime) -> DateTime {
    let millis = at.unix_timestamp_nanos().div_euclid(1_000_000);
    DateTime::from_millis(millis.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
}

fn from_bson_date(date: DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(date.timestamp_millis()) * 1_000_000).ok()
}

/// The server error code of a failed command or write, if any.
fn error_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        _ => None,
    }
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    error_code(error) == Some(DUPLICATE_KEY)
}

/// A duplicate key error without the server's message, which quotes the key (the session id).
#[derive(Debug)]
struct DuplicateKey;

impl fmt::Display for DuplicateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "duplicate key error (E11000; the server's message is withheld: it quotes the key)",
        )
    }
}

impl std::error::Error for DuplicateKey {}

/// Maps every driver error to the core's error: the one place that decides.
fn map_error(error: mongodb::error::Error) -> Error {
    if is_duplicate_key(&error) {
        return Error::backend(NAME, DuplicateKey);
    }
    let unavailable = match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => true,
        _ => error_code(&error).is_some_and(|code| UNAVAILABLE_CODES.contains(&code)),
    };
    if unavailable {
        return Error::unavailable(NAME, error);
    }
    match error.kind.as_ref() {
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            Error::corrupt(NAME, error)
        }
        _ => Error::backend(NAME, error),
    }
}

#[async_trait]
impl SessionStore for MongoStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let found = self
            .collection
            .find_one(self.live(id))
            .await
            .map_err(map_error)?;
        found.as_ref().map(from_document).transpose()
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let document = to_document(id, record);
        let upsert = || {
            self.collection
                .replace_one(doc! { "_id": id.as_str() }, &document)
                .upsert(true)
        };
        match upsert().await {
            Ok(_) => Ok(()),
            // Two upserts of a new id raced and the other one inserted first: now the
            // document exists, so replacing it succeeds.
            Err(e) if is_duplicate_key(&e) => upsert().await.map(|_| ()).map_err(map_error),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.collection
            .delete_one(doc! { "_id": id.as_str() })
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let result = self
            .collection
            .update_one(
                self.live(id),
                doc! { "$set": { "expires": to_bson_date(expires) } },
            )
            .await
            .map_err(map_error)?;
        Ok(result.matched_count > 0)
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        // One atomic upsert that may only replace an *expired* document: with no document
        // under the id it inserts; over an expired one it replaces it; over a live one the
        // filter misses, the upsert's insert hits the unique `_id` and the server answers
        // with a duplicate key error, which is the collision. Two concurrent creates cannot
        // both win: the document is replaced or inserted by one of them, and the other's
        // filter then misses the now-live document.
        let filter = doc! { "_id": id.as_str(), "expires": { "$lte": self.now() } };
        match self
            .collection
            .replace_one(filter, to_document(id, record))
            .upsert(true)
            .await
        {
            Ok(result) => Ok(result.matched_count > 0 || result.upserted_id.is_some()),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let result = self
            .collection
            .replace_one(self.live(id), to_document(id, record))
            .await
            .map_err(map_error)?;
        Ok(result.matched_count > 0)
    }

    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let mut cursor = self
            .collection
            .find(self.live_of(owner))
            .await
            .map_err(map_error)?;
        let mut owned = Vec::new();
        while cursor.advance().await.map_err(map_error)? {
            let document = cursor.deserialize_current().map_err(map_error)?;
            let id = match document.get("_id") {
                Some(Bson::String(id)) => SessionId::new(id.as_str()),
                _ => return Err(Error::corrupt(NAME, "field `_id` is not a string")),
            };
            owned.push((id, from_document(&document)?));
        }
        Ok(owned)
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let mut filter = self.live(id);
        filter.insert("v", expected as i64);
        let result = self
            .collection
            .replace_one(filter, to_document(id, record))
            .await
            .map_err(map_error)?;
        if result.matched_count > 0 {
            return Ok(CasOutcome::Written);
        }
        // Nothing matched: a live document with another version, or none at all.
        let live = self
            .collection
            .find_one(self.live(id))
            .projection(doc! { "_id": 1 })
            .await
            .map_err(map_error)?;
        Ok(if live.is_some() {
            CasOutcome::Conflict
        } else {
            CasOutcome::Missing
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_keep_milliseconds_and_round_down() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let date = to_bson_date(at);
        assert_eq!(date.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(
            from_bson_date(date).unwrap().unix_timestamp_nanos(),
            1_700_000_000_123_000_000
        );
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(to_bson_date(before_epoch).timestamp_millis(), -1);
    }

    #[test]
    fn every_version_round_trips() {
        let id = SessionId::new("abc");
        for version in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            let mut record = Record::new(
                OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
                session_store::Codec::MessagePack,
            );
            record.version = version;
            record.data.insert("k".into(), vec![1, 2]);
            let back = from_document(&to_document(&id, &record)).unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn the_owner_is_a_field_only_when_there_is_one() {
        let id = SessionId::new("abc");
        let mut record = Record::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            session_store::Codec::MessagePack,
        );
        assert!(!to_document(&id, &record).contains_key("owner"));
        record.owner = Some("ann".into());
        record.label = Some("Firefox".into());
        let document = to_document(&id, &record);
        assert_eq!(document.get_str("owner").ok(), Some("ann"));
        assert!(
            !document.contains_key("label"),
            "the label stays in the payload"
        );
        assert_eq!(from_document(&document).unwrap(), record);
    }

    #[test]
    fn foreign_documents_are_corrupt_not_panics() {
        let date = DateTime::from_millis(1_700_000_000_000);
        for bad in [
            doc! {},
            doc! { "session": "{}", "expires": date },
            doc! { "data": "text", "v": 1_i64, "expires": date },
            doc! { "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3] }, "v": 1_i64, "expires": date },
            doc! { "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![] }, "v": "1", "expires": date },
            doc! { "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![] }, "v": 1_i64, "expires": "soon" },
            doc! { "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![] }, "v": 1_i64, "expires": DateTime::MAX },
        ] {
            assert!(
                matches!(from_document(&bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }
}
