//! The conformance suite every [`SessionStore`] must pass (feature `testing`).
//!
//! Call [`run`] from a store's tests with the capabilities the store claims; it panics
//! with a message naming the broken rule. Each check is also public on its own. All ids are
//! fresh random ids, so runs against a shared server never collide.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use session_store::testing::{run, SuiteOptions};
//! use session_store::{Capabilities, MemoryStore};
//!
//! run(&MemoryStore::new(), &SuiteOptions::new(Capabilities::ALL)).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::Error;
use crate::id::{IdGenerator, SessionId};
use crate::record::{Codec, Lifetime, Record};
use crate::store::{Capabilities, CasOutcome, SessionStore};

mod counting;
mod relay;

pub use counting::{Calls, CountingStore, Failure};
pub use relay::Relay;

/// What the suite expects of a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SuiteOptions {
    /// The optional operations the store claims; unclaimed ones must return
    /// [`Error::Unsupported`].
    pub capabilities: Capabilities,
    /// How far a returned expiry may be from the one written (0 for stores that keep the
    /// exact expiry; a few ms for stores that derive it from a TTL).
    pub expiry_tolerance: Duration,
    /// How long after its expiry a record may take to stop being returned, beyond the
    /// tolerance (clock skew between the test and a server).
    pub expiry_grace: Duration,
    /// Concurrent tasks in the concurrency check.
    pub concurrency: usize,
    /// The store takes only JSON-encoded values (`Codec::Json`, express-session layouts):
    /// the suite writes JSON records and JSON values only.
    pub json_only: bool,
    /// The store keeps `Record::version` (layouts without a version field do not).
    pub keeps_version: bool,
    /// How long a change made through one instance may take to be seen by another instance
    /// that had the session cached (0: at once). Stores with a near-cache that other
    /// instances' changes reach by invalidation messages give the bound they guarantee.
    pub propagation: Duration,
}

impl SuiteOptions {
    /// Options for a store with these capabilities, exact expiries, 64 concurrent tasks.
    pub fn new(capabilities: Capabilities) -> Self {
        Self {
            capabilities,
            expiry_tolerance: Duration::ZERO,
            expiry_grace: Duration::from_millis(500),
            concurrency: 64,
            json_only: false,
            keeps_version: true,
            propagation: Duration::ZERO,
        }
    }

    /// Sets [`SuiteOptions::propagation`].
    pub fn propagation(mut self, bound: Duration) -> Self {
        self.propagation = bound;
        self
    }

    /// For express-session JSON layouts: JSON records only, no version kept, and foreign
    /// top-level fields may come back as data keys.
    pub fn express_layout(mut self) -> Self {
        self.json_only = true;
        self.keeps_version = false;
        self
    }

    fn codec(&self) -> Codec {
        if self.json_only {
            Codec::Json
        } else {
            Codec::MessagePack
        }
    }

    /// A sample record in the codec this store takes.
    fn sample(&self, expires: OffsetDateTime) -> Record {
        if self.json_only {
            let mut record = Record::new(expires, Codec::Json);
            record.data.insert("user".into(), b"\"alice\"".to_vec());
            record.data.insert("visits".into(), b"7".to_vec());
            record
        } else {
            sample_record(expires)
        }
    }

    /// Sets [`SuiteOptions::expiry_tolerance`].
    pub fn expiry_tolerance(mut self, tolerance: Duration) -> Self {
        self.expiry_tolerance = tolerance;
        self
    }

    /// Sets [`SuiteOptions::expiry_grace`].
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// Sets [`SuiteOptions::concurrency`].
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks;
        self
    }
}

/// Runs every check.
pub async fn run(store: &dyn SessionStore, options: &SuiteOptions) {
    capabilities_are_honest(store, options).await;
    round_trip(store, options).await;
    missing_id(store).await;
    destroy_missing(store).await;
    destroy_removes(store, options).await;
    set_overwrites_and_resets_expiry(store, options).await;
    expired_never_returned_in(store, options).await;
    expires_during_test(store, options).await;
    touch_extends(store, options).await;
    touch_missing_creates_nothing(store, options).await;
    lifetimes_are_kept(store, options).await;
    owners_are_indexed(store, options).await;
    lossless_values(store, options).await;
    large_value(store, options).await;
    odd_keys_and_extra(store, options).await;
    concurrent_distinct_ids(store, options).await;
    if options.capabilities.create {
        create_never_overwrites(store, options).await;
    }
    if options.capabilities.update {
        update_never_recreates(store, options).await;
    }
    if options.capabilities.compare_and_set {
        compare_and_set_versions(store, options).await;
    }
}

/// A fresh random id.
pub fn new_id() -> SessionId {
    IdGenerator::nanoid().generate()
}

/// Now, truncated to whole milliseconds (the precision stores must keep).
pub fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .expect("valid nanosecond")
}

/// A record with a few values, expiring at `expires`.
pub fn sample_record(expires: OffsetDateTime) -> Record {
    let mut record = Record::new(expires, Codec::MessagePack);
    let codec = Codec::MessagePack;
    record
        .data
        .insert("user".into(), codec.encode("alice").unwrap());
    record
        .data
        .insert("visits".into(), codec.encode(&7u32).unwrap());
    record
}

fn assert_expiry(
    store: &dyn SessionStore,
    got: OffsetDateTime,
    want: OffsetDateTime,
    o: &SuiteOptions,
    what: &str,
) {
    let diff = (got - want).abs();
    assert!(
        diff <= o.expiry_tolerance,
        "[{}] {what}: expiry off by {diff} (tolerance {:?})",
        store.name(),
        o.expiry_tolerance
    );
}

fn is_unsupported(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::Unsupported { .. }))
}

/// The claimed capabilities match `store.capabilities()`, and unclaimed optional operations
/// return `Unsupported`.
pub async fn capabilities_are_honest(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    assert_eq!(
        store.capabilities(),
        o.capabilities,
        "[{name}] capabilities() differs from the claim"
    );
    let id = new_id();
    let record = o.sample(now_ms() + Duration::from_secs(60));
    if !o.capabilities.create {
        assert!(
            is_unsupported(&store.create(&id, &record).await),
            "[{name}] create must be Unsupported"
        );
    }
    if !o.capabilities.update {
        assert!(
            is_unsupported(&store.update(&id, &record).await),
            "[{name}] update must be Unsupported"
        );
    }
    if !o.capabilities.compare_and_set {
        assert!(
            is_unsupported(&store.compare_and_set(&id, &record, 0).await),
            "[{name}] compare_and_set must be Unsupported"
        );
    }
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] an unsupported call wrote something"
    );
}

/// `set` then `get` returns the same data, expiry and version.
pub async fn round_trip(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let mut record = o.sample(now_ms() + Duration::from_secs(3600));
    record.version = 41;
    store.set(&id, &record).await.unwrap();
    let got = store
        .get(&id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("[{name}] record not found after set"));
    assert_eq!(
        got.data, record.data,
        "[{name}] data changed in a round trip"
    );
    if o.keeps_version {
        assert_eq!(got.version, 41, "[{name}] version not kept");
    }
    assert_eq!(got.codec, record.codec, "[{name}] codec not kept");
    assert_expiry(store, got.expires, record.expires, o, "round trip");
    store.destroy(&id).await.unwrap();
}

/// `get` of an id never written is `Ok(None)`.
pub async fn missing_id(store: &dyn SessionStore) {
    assert!(
        store.get(&new_id()).await.unwrap().is_none(),
        "[{}] missing id returned a record",
        store.name()
    );
}

/// `destroy` of a missing id succeeds.
pub async fn destroy_missing(store: &dyn SessionStore) {
    store
        .destroy(&new_id())
        .await
        .unwrap_or_else(|e| panic!("[{}] destroy of a missing id failed: {e}", store.name()));
}

/// `destroy` removes the record and leaves other records alone.
pub async fn destroy_removes(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let (a, b) = (new_id(), new_id());
    let record = o.sample(now_ms() + Duration::from_secs(600));
    store.set(&a, &record).await.unwrap();
    store.set(&b, &record).await.unwrap();
    store.destroy(&a).await.unwrap();
    assert!(
        store.get(&a).await.unwrap().is_none(),
        "[{name}] destroyed record still returned"
    );
    assert!(
        store.get(&b).await.unwrap().is_some(),
        "[{name}] destroy removed another record"
    );
    store.destroy(&b).await.unwrap();
}

/// A second `set` replaces the data and the expiry (also to an earlier one).
pub async fn set_overwrites_and_resets_expiry(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    store
        .set(&id, &o.sample(now_ms() + Duration::from_secs(7200)))
        .await
        .unwrap();
    let mut second = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
    second.data.insert("only".into(), b"true".to_vec());
    second.version = 2;
    store.set(&id, &second).await.unwrap();
    let got = store
        .get(&id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("[{name}] overwritten record missing"));
    assert_eq!(got.data, second.data, "[{name}] overwrite kept old data");
    assert_eq!(
        got.codec,
        Codec::Json,
        "[{name}] overwrite kept the old codec"
    );
    if o.keeps_version {
        assert_eq!(got.version, 2, "[{name}] overwrite kept the old version");
    }
    assert_expiry(
        store,
        got.expires,
        second.expires,
        o,
        "overwrite to an earlier expiry",
    );
    store.destroy(&id).await.unwrap();
}

/// A record written with an expiry in the past is never returned.
pub async fn expired_never_returned(store: &dyn SessionStore) {
    expired_never_returned_in(store, &SuiteOptions::new(store.capabilities())).await;
}

/// [`expired_never_returned`] with records in the codec `o` asks for.
pub async fn expired_never_returned_in(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    // Some backends refuse a TTL in the past; either refusing or hiding it is fine.
    let _ = store
        .set(&id, &o.sample(now_ms() - Duration::from_secs(10)))
        .await;
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] returned a record expired 10 s ago"
    );
    store.destroy(&id).await.unwrap();
}

/// A record that expires while the test watches is returned before and never after.
pub async fn expires_during_test(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let expires = now_ms() + Duration::from_secs(3);
    store.set(&id, &o.sample(expires)).await.unwrap();
    let seen = store.get(&id).await.unwrap();
    if OffsetDateTime::now_utc() < expires - Duration::from_millis(500) {
        assert!(seen.is_some(), "[{name}] record missing before its expiry");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let asked = OffsetDateTime::now_utc();
        match store.get(&id).await.unwrap() {
            None => break,
            Some(r) => assert!(
                asked < r.expires + o.expiry_tolerance + o.expiry_grace,
                "[{name}] returned a record past its expiry"
            ),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "[{name}] record never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] expired record came back"
    );
    store.destroy(&id).await.unwrap();
}

/// `touch` moves the expiry (later and earlier), `get` reports the new one, data and version
/// are unchanged.
pub async fn touch_extends(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let mut record = o.sample(now_ms() + Duration::from_secs(60));
    record.version = 5;
    store.set(&id, &record).await.unwrap();
    for later in [Duration::from_secs(7200), Duration::from_secs(1800)] {
        let new_expiry = now_ms() + later;
        assert!(
            store.touch(&id, new_expiry).await.unwrap(),
            "[{name}] touch did not find the record"
        );
        let got = store
            .get(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("[{name}] touched record missing"));
        assert_expiry(store, got.expires, new_expiry, o, "after touch");
        assert_eq!(got.data, record.data, "[{name}] touch changed the data");
        if o.keeps_version {
            assert_eq!(got.version, 5, "[{name}] touch changed the version");
        }
    }
    store.destroy(&id).await.unwrap();
}

/// A record's creation time and own lifetime ([`Record::created`], [`Record::lifetime`])
/// come back as written from every write (`set`, and `create`, `update`,
/// `compare_and_set` where claimed), and a `touch` keeps them.
pub async fn lifetimes_are_kept(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let created = Some(now_ms() - Duration::from_secs(3600));
    let lifetimes = [
        Lifetime::MaxAge(Duration::from_secs(30 * 24 * 3600)),
        Lifetime::BrowserSession,
        Lifetime::MaxAge(Duration::from_millis(1500)),
    ];
    let kept = |got: &Record, want: &Record, what: &str| {
        assert_eq!(
            (got.created, got.lifetime),
            (want.created, want.lifetime),
            "[{name}] {what} lost the creation time or the lifetime"
        );
    };
    for (i, lifetime) in lifetimes.into_iter().enumerate() {
        let id = new_id();
        let mut record = o.sample(now_ms() + Duration::from_secs(600));
        record.created = created;
        record.lifetime = Some(lifetime);
        store.set(&id, &record).await.unwrap();
        let got = store.get(&id).await.unwrap();
        kept(got.as_ref().expect("set record missing"), &record, "set");
        assert!(
            store
                .touch(&id, now_ms() + Duration::from_secs(900))
                .await
                .unwrap()
        );
        let got = store.get(&id).await.unwrap();
        kept(
            got.as_ref().expect("touched record missing"),
            &record,
            "touch",
        );
        // The next write changes the lifetime (the record read back carries the layout's
        // own fields, as the manager's would).
        let mut next = got.expect("touched record missing");
        next.lifetime = Some(lifetimes[(i + 1) % lifetimes.len()]);
        next.version = record.version.wrapping_add(1);
        if o.capabilities.compare_and_set {
            let outcome = store.compare_and_set(&id, &next, record.version).await;
            assert_eq!(outcome.unwrap(), CasOutcome::Written, "[{name}] CAS");
            kept(
                &store.get(&id).await.unwrap().unwrap(),
                &next,
                "compare_and_set",
            );
        } else if o.capabilities.update {
            assert!(store.update(&id, &next).await.unwrap(), "[{name}] update");
            kept(&store.get(&id).await.unwrap().unwrap(), &next, "update");
        }
        store.destroy(&id).await.unwrap();
        if o.capabilities.create {
            assert!(store.create(&id, &record).await.unwrap(), "[{name}] create");
            kept(&store.get(&id).await.unwrap().unwrap(), &record, "create");
            store.destroy(&id).await.unwrap();
        }
    }
}

/// The owner index ([`SessionStore::owned`]): a store that claims
/// [`Capabilities::owners`] lists exactly the live records of an owner, following every
/// write (`set`, `create`, `update`, `compare_and_set`), `touch`, `destroy`, a change or
/// removal of the owner, and expiry. A store that does not claim it answers
/// [`Error::Unsupported`], never an empty list.
pub async fn owners_are_indexed(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let ann = format!("ann {}", new_id().as_str());
    let bob = format!("bob:{}/ü", new_id().as_str());
    if !o.capabilities.owners {
        assert!(
            matches!(store.owned(&ann).await, Err(Error::Unsupported { .. })),
            "[{name}] owned without the owners capability must be Unsupported"
        );
        return;
    }
    let listed = |owner: String| async move {
        let mut ids: Vec<String> = store
            .owned(&owner)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, record)| {
                assert_eq!(
                    record.owner.as_deref(),
                    Some(owner.as_str()),
                    "[{name}] owned() returned another owner's record"
                );
                id.as_str().to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    let sorted = |ids: &[&SessionId]| {
        let mut ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        ids.sort();
        ids
    };
    let owned_by = |owner: Option<&str>| {
        let mut record = o.sample(now_ms() + Duration::from_secs(600));
        record.owner = owner.map(str::to_owned);
        record.label = Some("Firefox on Linux".into());
        record
    };
    let [a1, a2, a3, b1, none] = [(); 5].map(|()| new_id());
    store.set(&a1, &owned_by(Some(&ann))).await.unwrap();
    if o.capabilities.create {
        assert!(store.create(&a2, &owned_by(Some(&ann))).await.unwrap());
    } else {
        store.set(&a2, &owned_by(Some(&ann))).await.unwrap();
    }
    store.set(&a3, &owned_by(Some(&ann))).await.unwrap();
    store.set(&b1, &owned_by(Some(&bob))).await.unwrap();
    store.set(&none, &owned_by(None)).await.unwrap();
    assert_eq!(
        listed(ann.clone()).await,
        sorted(&[&a1, &a2, &a3]),
        "[{name}] owned"
    );
    assert_eq!(listed(bob.clone()).await, sorted(&[&b1]), "[{name}] owned");
    assert_eq!(listed(format!("nobody {ann}")).await, Vec::<String>::new());
    let got = store.owned(&bob).await.unwrap();
    assert_eq!(got[0].1.label.as_deref(), Some("Firefox on Linux"));
    assert_eq!(got[0].1.data, owned_by(None).data, "[{name}] owned() data");
    // A touch keeps a session listed.
    assert!(
        store
            .touch(&b1, now_ms() + Duration::from_secs(900))
            .await
            .unwrap()
    );
    assert_eq!(
        listed(bob.clone()).await,
        sorted(&[&b1]),
        "[{name}] after touch"
    );
    // A session given to another owner moves, through whichever write the store has.
    let mut moved = store.get(&a3).await.unwrap().unwrap();
    moved.owner = Some(bob.clone());
    moved.version = moved.version.wrapping_add(1);
    if o.capabilities.compare_and_set {
        let expected = moved.version.wrapping_sub(1);
        let outcome = store.compare_and_set(&a3, &moved, expected).await.unwrap();
        assert_eq!(outcome, CasOutcome::Written, "[{name}] CAS");
    } else if o.capabilities.update {
        assert!(store.update(&a3, &moved).await.unwrap());
    } else {
        store.set(&a3, &moved).await.unwrap();
    }
    assert_eq!(
        listed(ann.clone()).await,
        sorted(&[&a1, &a2]),
        "[{name}] moved away"
    );
    assert_eq!(
        listed(bob.clone()).await,
        sorted(&[&a3, &b1]),
        "[{name}] moved in"
    );
    // Destroyed and unowned sessions leave the list.
    store.destroy(&a1).await.unwrap();
    store.set(&a2, &owned_by(None)).await.unwrap();
    assert_eq!(
        listed(ann.clone()).await,
        Vec::<String>::new(),
        "[{name}] after destroy"
    );
    // An expired session is never listed.
    let mut brief = owned_by(Some(&ann));
    brief.expires = now_ms() + Duration::from_secs(2);
    store.set(&a1, &brief).await.unwrap();
    // Ends: once a listing asked for after the expiry comes back, it is empty or the check
    // fails (no wall-clock deadline: one slow call on a loaded server must not fail it).
    loop {
        let asked = OffsetDateTime::now_utc();
        let owned = store.owned(&ann).await.unwrap();
        if owned.is_empty() {
            break;
        }
        assert!(
            asked < brief.expires + o.expiry_tolerance + o.expiry_grace,
            "[{name}] owned() listed an expired session"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [&a1, &a2, &a3, &b1, &none] {
        store.destroy(id).await.unwrap();
    }
    assert_eq!(
        listed(bob).await,
        Vec::<String>::new(),
        "[{name}] after destroy"
    );
}

/// What one instance of a store wrote, another instance (its own connections, as in another
/// process or after a restart of the application) reads back whole: data, expiry, version,
/// creation time and lifetime. `writer` and `reader` must be two instances over the same
/// backend (same server, table, prefix or collection).
pub async fn kept_across_instances(
    writer: &dyn SessionStore,
    reader: &dyn SessionStore,
    o: &SuiteOptions,
) {
    let name = writer.name();
    for lifetime in [
        Lifetime::MaxAge(Duration::from_secs(30 * 24 * 3600)),
        Lifetime::BrowserSession,
    ] {
        let id = new_id();
        let mut record = o.sample(now_ms() + Duration::from_secs(600));
        record.version = 9;
        record.created = Some(now_ms() - Duration::from_secs(60));
        record.lifetime = Some(lifetime);
        writer.set(&id, &record).await.unwrap();
        let got = reader
            .get(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("[{name}] another instance does not see the record"));
        assert_eq!(got.data, record.data, "[{name}] data across instances");
        assert_expiry(reader, got.expires, record.expires, o, "across instances");
        assert_eq!(
            (got.created, got.lifetime),
            (record.created, record.lifetime),
            "[{name}] lifetime fields across instances"
        );
        if o.keeps_version {
            assert_eq!(got.version, 9, "[{name}] version across instances");
        }
        reader.destroy(&id).await.unwrap();
        // Polled up to the propagation bound; with none, looked at once.
        let start = std::time::Instant::now();
        while writer.get(&id).await.unwrap().is_some() {
            assert!(
                start.elapsed() < o.propagation,
                "[{name}] a destroy by another instance is seen (within {:?})",
                o.propagation
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// `touch` of a missing or destroyed id returns `false` and creates nothing.
pub async fn touch_missing_creates_nothing(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let later = now_ms() + Duration::from_secs(600);
    assert!(
        !store.touch(&id, later).await.unwrap(),
        "[{name}] touch of a missing id reported success"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] touch created a record"
    );
    store.set(&id, &o.sample(later)).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(
        !store.touch(&id, later).await.unwrap(),
        "[{name}] touch of a destroyed id reported success"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] touch recreated a destroyed record"
    );
    // An expired record (not yet reclaimed by the backend) is not revived by touch.
    let expired = new_id();
    let _ = store
        .set(&expired, &o.sample(now_ms() - Duration::from_secs(10)))
        .await;
    assert!(
        !store.touch(&expired, later).await.unwrap(),
        "[{name}] touch revived an expired record"
    );
    assert!(
        store.get(&expired).await.unwrap().is_none(),
        "[{name}] touch revived an expired record"
    );
    store.destroy(&expired).await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Shape {
    Unit,
    Tuple(i8, String),
    Struct { side: f32 },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Values {
    bytes: Vec<u8>,
    max: u64,
    min: i64,
    neg_zero: f64,
    tiny: f64,
    nested: BTreeMap<String, BTreeMap<String, Vec<Option<bool>>>>,
    shapes: Vec<Shape>,
    text: String,
    empty: String,
}

fn values() -> Values {
    let mut inner = BTreeMap::new();
    inner.insert("x".to_owned(), vec![Some(true), None, Some(false)]);
    let mut nested = BTreeMap::new();
    nested.insert("ключ 🔑".to_owned(), inner);
    Values {
        bytes: (0..=255).collect(),
        max: u64::MAX,
        min: i64::MIN,
        neg_zero: -0.0,
        tiny: f64::MIN_POSITIVE,
        nested,
        shapes: vec![
            Shape::Unit,
            Shape::Tuple(-128, "t".into()),
            Shape::Struct { side: 1.5 },
        ],
        text: "naïve café — 日本語 — \u{0} \"quoted\" 'single' \\ ; -- $gt".into(),
        empty: String::new(),
    }
}

/// Values of every shape survive a round trip bit for bit, in both codecs.
pub async fn lossless_values(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let codecs: &[Codec] = if o.json_only {
        &[Codec::Json]
    } else {
        &[Codec::MessagePack, Codec::Json]
    };
    for &codec in codecs {
        let id = new_id();
        let mut record = Record::new(now_ms() + Duration::from_secs(600), codec);
        record
            .data
            .insert("values".into(), codec.encode(&values()).unwrap());
        record
            .data
            .insert("u64".into(), codec.encode(&u64::MAX).unwrap());
        record
            .data
            .insert("i64".into(), codec.encode(&i64::MIN).unwrap());
        if !o.json_only {
            record
                .data
                .insert("raw bytes".into(), vec![0, 0xFF, 0xC1, b'\'', b'"', 0]);
        }
        store.set(&id, &record).await.unwrap();
        let got = store
            .get(&id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("[{name}] record missing"));
        if o.json_only {
            // A JSON layout may re-serialize values (object keys in another order).
            assert_eq!(got.data.len(), record.data.len(), "[{name}] keys changed");
            for (key, value) in &record.data {
                assert!(
                    codec.same_value(&got.data[key], value),
                    "[{name}] value of {key:?} changed"
                );
            }
        } else {
            assert_eq!(
                got.data, record.data,
                "[{name}] encoded values changed ({codec:?})"
            );
        }
        let back: Values = codec.decode(&got.data["values"]).unwrap();
        assert_eq!(
            back.neg_zero.to_bits(),
            (-0.0f64).to_bits(),
            "[{name}] -0.0 lost"
        );
        assert_eq!(back, values(), "[{name}] values changed ({codec:?})");
        store.destroy(&id).await.unwrap();
    }
}

/// A 100 KB value round-trips.
pub async fn large_value(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let mut record = Record::new(now_ms() + Duration::from_secs(600), o.codec());
    let big: Vec<u8> = if o.json_only {
        let text: String = (0..100 * 1024)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        Codec::Json.encode(&text).unwrap()
    } else {
        (0..100 * 1024).map(|i| (i * 7 % 251) as u8).collect()
    };
    record.data.insert("big".into(), big);
    store.set(&id, &record).await.unwrap();
    let got = store
        .get(&id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("[{name}] large record missing"));
    assert_eq!(got.data, record.data, "[{name}] 100 KB value changed");
    store.destroy(&id).await.unwrap();
}

/// Keys with odd characters, an empty key, and `extra` fields survive.
pub async fn odd_keys_and_extra(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let mut record = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
    for key in ["", "a.b", "$where", "'; DROP TABLE x; --", "ключ", "cookie"] {
        // express-session keeps its own `cookie` object under that key.
        if !(o.json_only && key == "cookie") {
            record.data.insert(key.into(), b"1".to_vec());
        }
    }
    record.extra.insert(
        "foreign".into(),
        serde_json::json!({"kept": [1, "two", null]}),
    );
    store.set(&id, &record).await.unwrap();
    let got = store
        .get(&id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("[{name}] record missing"));
    if o.json_only {
        // A JSON layout keeps foreign fields next to the data keys.
        for (key, value) in &record.data {
            assert_eq!(got.data.get(key), Some(value), "[{name}] odd key changed");
        }
        let foreign = serde_json::to_vec(&record.extra["foreign"]).unwrap();
        assert!(
            got.extra.get("foreign") == record.extra.get("foreign")
                || got.data.get("foreign") == Some(&foreign),
            "[{name}] foreign field not kept"
        );
    } else {
        assert_eq!(got.data, record.data, "[{name}] odd keys changed");
        assert_eq!(got.extra, record.extra, "[{name}] extra fields not kept");
    }
    store.destroy(&id).await.unwrap();
}

/// Many concurrent operations on distinct ids neither fail nor mix records up.
pub async fn concurrent_distinct_ids(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let tasks = (0..o.concurrency).map(|i| async move {
        let id = new_id();
        let codec = o.codec();
        for round in 0..5u32 {
            let mut record = Record::new(now_ms() + Duration::from_secs(600), codec);
            record
                .data
                .insert("task".into(), codec.encode(&(i, round)).unwrap());
            store.set(&id, &record).await.unwrap();
            let got = store
                .get(&id)
                .await
                .unwrap()
                .expect("record missing under concurrency");
            let (task, seen_round): (usize, u32) = codec.decode(&got.data["task"]).unwrap();
            assert_eq!(
                (task, seen_round),
                (i, round),
                "records mixed up under concurrency"
            );
        }
        store.destroy(&id).await.unwrap();
        assert!(store.get(&id).await.unwrap().is_none());
    });
    futures::future::join_all(tasks).await;
    let _ = name;
}

/// `create` writes only where no live record is (expired ones count as absent).
pub async fn create_never_overwrites(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let first = o.sample(now_ms() + Duration::from_secs(600));
    assert!(
        store.create(&id, &first).await.unwrap(),
        "[{name}] create of a new id failed"
    );
    let mut second = first.clone();
    second.data.insert("intruder".into(), b"1".to_vec());
    assert!(
        !store.create(&id, &second).await.unwrap(),
        "[{name}] create overwrote a live record"
    );
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().data,
        first.data,
        "[{name}] create changed a live record"
    );
    store.destroy(&id).await.unwrap();
    assert!(
        store.create(&id, &second).await.unwrap(),
        "[{name}] create after destroy failed"
    );
    store.destroy(&id).await.unwrap();
    let expired = new_id();
    let _ = store
        .set(&expired, &o.sample(now_ms() - Duration::from_secs(5)))
        .await;
    assert!(
        store.create(&expired, &first).await.unwrap(),
        "[{name}] an expired record blocked create"
    );
    assert!(store.get(&expired).await.unwrap().is_some());
    store.destroy(&expired).await.unwrap();
}

/// `update` writes only over a live record and never recreates a destroyed one.
pub async fn update_never_recreates(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let record = o.sample(now_ms() + Duration::from_secs(600));
    assert!(
        !store.update(&id, &record).await.unwrap(),
        "[{name}] update of a missing id reported success"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] update created a record"
    );
    store.set(&id, &record).await.unwrap();
    let mut changed = record.clone();
    changed.data.insert("more".into(), b"1".to_vec());
    changed.expires = now_ms() + Duration::from_secs(1200);
    assert!(
        store.update(&id, &changed).await.unwrap(),
        "[{name}] update of a live record failed"
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, changed.data);
    store.destroy(&id).await.unwrap();
    assert!(
        !store.update(&id, &changed).await.unwrap(),
        "[{name}] update after destroy reported success"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] update resurrected a destroyed record"
    );
}

/// `compare_and_set` writes only over the expected version; concurrent writers of one
/// version: exactly one wins.
pub async fn compare_and_set_versions(store: &dyn SessionStore, o: &SuiteOptions) {
    let name = store.name();
    let id = new_id();
    let mut record = o.sample(now_ms() + Duration::from_secs(600));
    assert_eq!(
        store.compare_and_set(&id, &record, 0).await.unwrap(),
        CasOutcome::Missing,
        "[{name}] CAS on a missing id"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] CAS created a record"
    );
    record.version = 3;
    store.set(&id, &record).await.unwrap();
    let mut next = record.clone();
    next.version = 4;
    next.data.insert("step".into(), b"4".to_vec());
    assert_eq!(
        store.compare_and_set(&id, &next, 2).await.unwrap(),
        CasOutcome::Conflict,
        "[{name}] CAS with a stale version"
    );
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().version,
        3,
        "[{name}] a conflicting CAS wrote"
    );
    assert_eq!(
        store.compare_and_set(&id, &next, 3).await.unwrap(),
        CasOutcome::Written,
        "[{name}] CAS with the right version"
    );
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.version, &got.data),
        (4, &next.data),
        "[{name}] CAS did not write"
    );
    // Eight writers race from version 4: exactly one may win.
    let racers = (0..8u8).map(|i| {
        let mut mine = next.clone();
        mine.version = 5;
        mine.data
            .insert("winner".into(), i.to_string().into_bytes());
        let id = &id;
        async move { store.compare_and_set(id, &mine, 4).await.unwrap() }
    });
    let outcomes = futures::future::join_all(racers).await;
    let winners = outcomes
        .iter()
        .filter(|o| **o == CasOutcome::Written)
        .count();
    assert_eq!(winners, 1, "[{name}] {winners} concurrent CAS writers won");
    store.destroy(&id).await.unwrap();
    assert_eq!(
        store.compare_and_set(&id, &next, 5).await.unwrap(),
        CasOutcome::Missing,
        "[{name}] CAS after destroy"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "[{name}] CAS resurrected a destroyed record"
    );
}
