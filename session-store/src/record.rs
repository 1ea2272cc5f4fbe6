//! The session record that stores keep, the value [`Codec`], and the binary payload
//! envelope that blob-oriented stores write.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::data::Data;
use crate::error::{Error, Result};

/// How session values are turned into bytes.
///
/// Each value is encoded once, when it is inserted, and kept encoded in the record, so a
/// store never needs to know the value's type.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    /// MessagePack via `rmp-serde`, structs as maps (field names kept, so adding a
    /// `#[serde(default)]` field to a stored struct does not break old sessions). Lossless
    /// for every serde type, including bytes, `u64::MAX`, `i64::MIN`, `-0.0` and NaN.
    #[default]
    MessagePack,
    /// JSON via `serde_json`. Required by JSON layouts (express-session interop). Floats
    /// that JSON cannot express (NaN, infinities) become `null`.
    Json,
}

impl Codec {
    /// Encodes one value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        match self {
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(Error::serialization),
            Codec::Json => serde_json::to_vec(value).map_err(Error::serialization),
        }
    }

    /// Decodes one value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(Error::serialization),
            Codec::Json => serde_json::from_slice(bytes).map_err(Error::serialization),
        }
    }

    /// Whether two encoded values mean the same thing: equal bytes, or equal once maps are
    /// put in a canonical key order (a `HashMap` encodes its entries in any order). Floats
    /// compare by their bits. Undecodable input compares by bytes only.
    pub fn same_value(self, a: &[u8], b: &[u8]) -> bool {
        if a == b {
            return true;
        }
        if !self.may_hold_container(a) && !self.may_hold_container(b) {
            // Scalars: the bytes decide (encoders write each scalar one way).
            return false;
        }
        match (self.canonical(a), self.canonical(b)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// Whether an encoded value may be a map or an array (whose canonical form can differ
    /// from its bytes); `false` only for values that are certainly scalars.
    fn may_hold_container(self, bytes: &[u8]) -> bool {
        match self {
            Codec::MessagePack => {
                matches!(bytes.first(), None | Some(0x80..=0x9f | 0xdc..=0xdf))
            }
            Codec::Json => matches!(
                bytes.iter().find(|b| !b.is_ascii_whitespace()),
                None | Some(b'{' | b'[')
            ),
        }
    }

    fn canonical(self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self {
            Codec::MessagePack => {
                let mut rest = bytes;
                let value = rmpv::decode::read_value(&mut rest).ok()?;
                if !rest.is_empty() {
                    return None;
                }
                let mut out = Vec::with_capacity(bytes.len());
                rmpv::encode::write_value(&mut out, &sort_maps(value)).ok()?;
                Some(out)
            }
            // serde_json's `Map` is ordered by key, so a round trip is canonical.
            Codec::Json => {
                let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
                serde_json::to_vec(&value).ok()
            }
        }
    }
}

/// Orders every map's entries by the encoding of their keys.
fn sort_maps(value: rmpv::Value) -> rmpv::Value {
    match value {
        rmpv::Value::Array(items) => rmpv::Value::Array(items.into_iter().map(sort_maps).collect()),
        rmpv::Value::Map(entries) => {
            let mut keyed: Vec<(Vec<u8>, rmpv::Value, rmpv::Value)> = entries
                .into_iter()
                .map(|(k, v)| {
                    let k = sort_maps(k);
                    let mut key_bytes = Vec::new();
                    // Writing into a Vec cannot fail.
                    let _ = rmpv::encode::write_value(&mut key_bytes, &k);
                    (key_bytes, k, sort_maps(v))
                })
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            rmpv::Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        other => other,
    }
}

/// The longest lifetime a session, a cookie or the manager may be given: browsers keep a
/// cookie at most 400 days, and longer ones only risk date overflows.
pub const MAX_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// The longest owner ([`Record::owner`]) a session can be bound to, in bytes.
pub const MAX_OWNER_LEN: usize = 256;
/// The longest label ([`Record::label`]) a session keeps, in bytes; longer ones are cut.
pub const MAX_LABEL_LEN: usize = 256;

/// A lifetime chosen for one session ([`Session::set_max_age`](crate::Session::set_max_age)),
/// kept with its record so every later request of the session uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifetime {
    /// A browser-session cookie (no `Max-Age`, gone when the browser closes); the store keeps
    /// the record for the manager's idle lifetime from its last extension.
    BrowserSession,
    /// A cookie with this `Max-Age`; the store keeps the record as long from its last
    /// extension. At most [`MAX_LIFETIME`].
    MaxAge(Duration),
}

/// What a store keeps for one session.
///
/// The data is a map from key to the key's value, already encoded by [`Record::codec`].
/// Stores own only the envelope: how data, expiry and version are laid out in the backend.
/// [`Record::encode_payload`] / [`Record::decode_payload`] give blob stores a versioned
/// binary envelope for the data part.
#[derive(Clone, PartialEq)]
pub struct Record {
    /// Key → encoded value.
    pub data: Data,
    /// Absolute expiry. Stores keep at least millisecond precision and never return a record
    /// whose expiry has passed.
    pub expires: OffsetDateTime,
    /// Version for [`SessionStore::compare_and_set`](crate::SessionStore::compare_and_set).
    /// Stores persist it as given; the manager increments it.
    pub version: u64,
    /// The codec the values are encoded with. A record written with another codec than the
    /// manager's current one is still read correctly.
    pub codec: Codec,
    /// Fields of foreign layouts that this library does not interpret (e.g. unknown
    /// `cookie` attributes in express-session's JSON). Kept and written back unchanged.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// When the session was first stored (millisecond precision); the absolute lifetime
    /// counts from it. `None` for records written before creation times were kept.
    pub created: Option<OffsetDateTime>,
    /// The session's own lifetime; `None`: the manager's (`maxAge`, or the idle lifetime for
    /// a browser-session cookie).
    pub lifetime: Option<Lifetime>,
    /// Whom the session belongs to (e.g. the user id, set at login), at most
    /// [`MAX_OWNER_LEN`] bytes. Stores that claim
    /// [`Capabilities::owners`](crate::Capabilities::owners) index it, so
    /// [`SessionStore::owned`](crate::SessionStore::owned) finds the owner's sessions.
    pub owner: Option<String>,
    /// A short text the application shows in a list of sessions (e.g. the user agent), at
    /// most [`MAX_LABEL_LEN`] bytes.
    pub label: Option<String>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("keys", &self.data.len())
            .field("expires", &self.expires)
            .field("version", &self.version)
            .field("codec", &self.codec)
            .field("created", &self.created)
            .field("lifetime", &self.lifetime)
            .field("owner", &self.owner.is_some())
            .finish_non_exhaustive()
    }
}

impl Record {
    /// An empty record with the given expiry, version 0.
    pub fn new(expires: OffsetDateTime, codec: Codec) -> Self {
        Self {
            data: Data::new(),
            expires,
            version: 0,
            codec,
            extra: BTreeMap::new(),
            created: None,
            lifetime: None,
            owner: None,
            label: None,
        }
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires <= now
    }

    /// Total size of keys and encoded values, the measure of the manager's size limit.
    pub fn data_size(&self) -> usize {
        self.data.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn hash_map_order_is_not_a_change() {
        for codec in [Codec::MessagePack, Codec::Json] {
            let a: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i)).collect();
            let mut b = HashMap::new();
            for i in (0..50).rev() {
                b.insert(format!("k{i}"), i);
            }
            let (ea, eb) = (codec.encode(&a).unwrap(), codec.encode(&b).unwrap());
            assert!(codec.same_value(&ea, &eb));
            let c: HashMap<String, u32> = (0..50).map(|i| (format!("k{i}"), i + 1)).collect();
            assert!(!codec.same_value(&ea, &codec.encode(&c).unwrap()));
        }
    }

    #[test]
    fn negative_zero_is_a_change_in_msgpack() {
        let c = Codec::MessagePack;
        assert!(!c.same_value(&c.encode(&0.0f64).unwrap(), &c.encode(&-0.0f64).unwrap()));
        assert!(c.same_value(&c.encode(&f64::NAN).unwrap(), &c.encode(&f64::NAN).unwrap()));
    }
}
