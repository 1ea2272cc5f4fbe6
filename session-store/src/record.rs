//! The session record that stores keep, the value [`Codec`], and the binary payload
//! envelope that blob-oriented stores write.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::data::{Data, INDEX_FROM, Piece, bin_len, read_entry, str_len};
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
    /// The tag written in payload envelopes.
    pub const fn tag(self) -> u8 {
        match self {
            Codec::MessagePack => 1,
            Codec::Json => 2,
        }
    }

    /// The codec of a payload tag.
    pub const fn from_tag(tag: u8) -> Option<Codec> {
        match tag {
            1 => Some(Codec::MessagePack),
            2 => Some(Codec::Json),
            _ => None,
        }
    }

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

/// First byte of every payload envelope.
const PAYLOAD_MAGIC: u8 = 0xA5;
/// Envelope format version written by this release. Format 1 (no lifetime fields) is still
/// read: its records load with no creation time and the manager's lifetime.
pub const PAYLOAD_FORMAT: u8 = 2;
/// Lifetime flags of format 2: a creation time follows.
const META_CREATED: u8 = 1;
/// A `max_age` in milliseconds follows ([`Lifetime::MaxAge`]).
const META_MAX_AGE: u8 = 2;
/// [`Lifetime::BrowserSession`].
const META_BROWSER_SESSION: u8 = 4;
/// An owner follows (`u16` length, UTF-8).
const META_OWNER: u8 = 8;
/// A label follows (`u16` length, UTF-8).
const META_LABEL: u8 = 16;
/// Every flag this release knows.
const META_ALL: u8 = META_CREATED | META_MAX_AGE | META_BROWSER_SESSION | META_OWNER | META_LABEL;

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

    /// Encodes data, codec, lifetime fields and extra fields (not expiry or version, which the
    /// backend keeps in its own fields) into a versioned binary envelope:
    /// `0xA5, format, codec tag`, a flags byte (1: creation time, 2: `max_age`, 4: browser
    /// session, 8: owner, 16: label) followed by the creation time (`i64` ms since the
    /// epoch), the `max_age` (`u64` ms), the owner and the label (each a `u16` length and
    /// UTF-8), all big-endian and present only if flagged, then a MessagePack map of
    /// key → bin, then the extra fields as a MessagePack map.
    pub fn encode_payload(&self) -> Vec<u8> {
        let extra = self.extra_json();
        let mut out = Vec::with_capacity(self.payload_len(&extra).1);
        self.write_payload(&mut out, &extra, None);
        out
    }

    /// What `MemoryStore` keeps per session, in one allocation of the exact size: `prefix`,
    /// the length of the payload (`u32`, little-endian), the payload
    /// ([`Record::encode_payload`]), then its shape, so that reading it back walks nothing:
    /// where the data entries end and their total size (`u32` each), and for maps of more
    /// than a few keys the offset of each entry (`u32` each). Offsets count from the start of
    /// the allocation. A payload too long for `u32` offsets (4 GiB) is written with the
    /// length `u32::MAX` and no shape; [`Record::decode_shaped`] then walks it.
    pub(crate) fn encode_shaped(&self, prefix: &[u8]) -> Arc<[u8]> {
        let extra = self.extra_json();
        let (entries, payload_len) = self.payload_len(&extra);
        let n = self.data.len();
        let trailer = 8 + if n > INDEX_FROM { 4 * n } else { 0 };
        let payload_at = prefix.len() + 4;
        let payload_end = payload_at + payload_len;
        let shaped = u32::try_from(payload_end + trailer).is_ok();
        let len = if shaped {
            payload_end + trailer
        } else {
            payload_end
        };
        let mut bytes: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let Some(buf) = Arc::get_mut(&mut bytes) else {
            return bytes;
        };
        let (payload, tail) = buf.split_at_mut(payload_end);
        let word = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        let mut out: &mut [u8] = &mut *payload;
        out.put(prefix);
        out.put(&word(if shaped { payload_len } else { usize::MAX }));
        if !shaped {
            self.write_payload(&mut out, &extra, None);
            debug_assert!(out.is_empty(), "payload length mismatch");
            return bytes;
        }
        let entries_at = payload_at + 3 + self.meta_len() + map_header_len(n);
        // Fixed-size words: copied in place, not through `put`.
        let mut words = tail.chunks_exact_mut(4);
        let mut push = |n: usize| {
            if let Some(w) = words.next() {
                w.copy_from_slice(&word(n));
            }
        };
        push(entries_at + entries);
        push(self.data.size());
        if n > INDEX_FROM {
            self.write_payload(&mut out, &extra, Some(&mut |at| push(entries_at + at)));
        } else {
            self.write_payload(&mut out, &extra, None);
        }
        debug_assert!(out.is_empty(), "payload length mismatch");
        debug_assert!(words.next().is_none(), "trailer length mismatch");
        bytes
    }

    /// The length of the lifetime and owner fields of the envelope.
    fn meta_len(&self) -> usize {
        1 + if self.created.is_some() { 8 } else { 0 }
            + if matches!(self.lifetime, Some(Lifetime::MaxAge(_))) {
                8
            } else {
                0
            }
            + self.owner.as_ref().map_or(0, |o| 2 + o.len())
            + self.label.as_ref().map_or(0, |l| 2 + l.len())
    }

    /// Writes the lifetime and owner fields: flags byte, then the flagged values.
    fn write_meta<W: PayloadWrite>(&self, out: &mut W) {
        let (fixed, len) = self.meta();
        let mut flags = fixed[0];
        let texts = [(META_OWNER, &self.owner), (META_LABEL, &self.label)];
        for (flag, text) in texts {
            if text.is_some() {
                flags |= flag;
            }
        }
        out.put(&[flags]);
        out.put(&fixed[1..len]);
        for (_, text) in texts {
            if let Some(text) = text {
                // Lengths are checked where owners and labels are set; cut defensively.
                let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
                out.put(&(bytes.len() as u16).to_be_bytes());
                out.put(bytes);
            }
        }
    }

    /// The fixed-size lifetime fields of the envelope: flags byte, then the flagged values.
    fn meta(&self) -> ([u8; 17], usize) {
        let mut out = [0u8; 17];
        let mut len = 1;
        if let Some(created) = self.created {
            out[0] |= META_CREATED;
            let millis = (created.unix_timestamp_nanos() / 1_000_000) as i64;
            out[len..len + 8].copy_from_slice(&millis.to_be_bytes());
            len += 8;
        }
        match self.lifetime {
            None => {}
            Some(Lifetime::BrowserSession) => out[0] |= META_BROWSER_SESSION,
            Some(Lifetime::MaxAge(d)) => {
                out[0] |= META_MAX_AGE;
                let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                out[len..len + 8].copy_from_slice(&millis.to_be_bytes());
                len += 8;
            }
        }
        (out, len)
    }

    fn extra_json(&self) -> Vec<(&str, Vec<u8>)> {
        self.extra
            .iter()
            .map(|(k, v)| (k.as_str(), serde_json::to_vec(v).unwrap_or_default()))
            .collect()
    }

    /// The exact length of the data entries and of the whole envelope that
    /// [`Record::write_payload`] writes.
    fn payload_len(&self, extra: &[(&str, Vec<u8>)]) -> (usize, usize) {
        let entries = self.data.encoded_len();
        let extra_bytes: usize = extra
            .iter()
            .map(|(k, v)| str_len(k.len()) + bin_len(v.len()))
            .sum();
        let total = 3
            + self.meta_len()
            + map_header_len(self.data.len())
            + entries
            + map_header_len(extra.len())
            + extra_bytes;
        (entries, total)
    }

    /// Writes the envelope into `out` (a `Vec` or a slice of [`Record::payload_len`] bytes;
    /// writing into either cannot fail once sized; lengths above u32::MAX are impossible in
    /// practice).
    ///
    /// `entry_at`, if given, is called with the offset of every data entry, counted from the
    /// first.
    fn write_payload<W: PayloadWrite>(
        &self,
        out: &mut W,
        extra: &[(&str, Vec<u8>)],
        mut entry_at: Option<&mut dyn FnMut(usize)>,
    ) {
        out.put(&[PAYLOAD_MAGIC, PAYLOAD_FORMAT, self.codec.tag()]);
        self.write_meta(out);
        let _ = rmp::encode::write_map_len(out, self.data.len() as u32);
        let mut pos = 0;
        let copy = |out: &mut W,
                    run: &[u8],
                    from: usize,
                    pos: &mut usize,
                    entry_at: &mut Option<&mut dyn FnMut(usize)>| {
            out.put(run);
            if let Some(f) = entry_at.as_deref_mut() {
                let at = *pos;
                self.data.run_offsets(run, from, |offset| f(at + offset));
            }
            *pos += run.len();
        };
        match self.data.unchanged_entries() {
            Some((entries, from)) => copy(out, entries, from, &mut pos, &mut entry_at),
            None => {
                for piece in self.data.pieces() {
                    match piece {
                        Piece::Encoded(run, from) => copy(out, run, from, &mut pos, &mut entry_at),
                        Piece::Entry(key, value) => {
                            if let Some(f) = entry_at.as_deref_mut() {
                                f(pos);
                            }
                            put_entry(out, key, value);
                            pos += str_len(key.len()) + bin_len(value.len());
                        }
                    }
                }
            }
        }
        let _ = rmp::encode::write_map_len(out, extra.len() as u32);
        for (key, json) in extra {
            put_entry(out, key, json);
        }
    }

    /// Decodes an envelope written by [`Record::encode_payload`]; expiry and version come from
    /// the backend's own fields. Garbage gives an error, never a panic.
    pub fn decode_payload(bytes: &[u8], expires: OffsetDateTime, version: u64) -> Result<Self> {
        Self::decode_shared_payload(Arc::from(bytes), expires, version)
    }

    /// [`Record::decode_payload`] on bytes the record may keep: the values stay in `bytes`
    /// and are read from there ([`Data`]), so nothing is copied per key.
    pub fn decode_shared_payload(
        bytes: Arc<[u8]>,
        expires: OffsetDateTime,
        version: u64,
    ) -> Result<Self> {
        let end = bytes.len();
        Self::decode_envelope(bytes, 0, end, DataRead::Checked, expires, version)
    }

    /// Reads back what [`Record::encode_shaped`] wrote after a prefix of `start` bytes.
    pub(crate) fn decode_shaped(
        bytes: Arc<[u8]>,
        start: usize,
        expires: OffsetDateTime,
        version: u64,
    ) -> Result<Self> {
        let word = |at: usize| -> Option<usize> {
            let w = bytes.get(at..)?.first_chunk::<4>()?;
            usize::try_from(u32::from_le_bytes(*w)).ok()
        };
        let too_short = || Error::corrupt("payload", "payload too short".to_owned());
        let payload_len = word(start).ok_or_else(too_short)?;
        let payload_at = start + 4;
        if payload_len == u32::MAX as usize {
            let end = bytes.len();
            return Self::decode_envelope(
                bytes,
                payload_at,
                end,
                DataRead::Trusted,
                expires,
                version,
            );
        }
        let end = payload_at + payload_len;
        let (Some(entries_end), Some(size)) = (word(end), word(end + 4)) else {
            return Err(too_short());
        };
        let read = DataRead::Shaped {
            entries_end,
            size,
            index_at: end + 8,
        };
        Self::decode_envelope(bytes, payload_at, end, read, expires, version)
    }

    /// Decodes the envelope in `bytes[start..end]`.
    fn decode_envelope(
        bytes: Arc<[u8]>,
        start: usize,
        end: usize,
        read: DataRead,
        expires: OffsetDateTime,
        version: u64,
    ) -> Result<Self> {
        let corrupt = |what: &str| Error::corrupt("payload", what.to_owned());
        let envelope = bytes.get(start..end).unwrap_or_default();
        let [magic, format, tag, ..] = *envelope else {
            return Err(corrupt("payload too short"));
        };
        if magic != PAYLOAD_MAGIC {
            return Err(corrupt("not a session payload"));
        }
        if format != 1 && format != PAYLOAD_FORMAT {
            return Err(corrupt("unknown payload format version"));
        }
        let codec = Codec::from_tag(tag).ok_or_else(|| corrupt("unknown value codec"))?;
        let mut at = start + 3;
        let (mut created, mut lifetime, mut owner, mut label) = (None, None, None, None);
        if format >= 2 {
            let mut meta = &envelope[3..];
            let (&flags, rest) = meta
                .split_first()
                .ok_or_else(|| corrupt("payload too short"))?;
            meta = rest;
            let mut word = || -> Result<[u8; 8]> {
                let (w, rest) = meta
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt("payload too short"))?;
                meta = rest;
                Ok(*w)
            };
            if flags & !META_ALL != 0
                || flags & META_MAX_AGE != 0 && flags & META_BROWSER_SESSION != 0
            {
                return Err(corrupt("unknown lifetime flags"));
            }
            if flags & META_CREATED != 0 {
                let millis = i128::from(i64::from_be_bytes(word()?));
                created = Some(
                    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
                        .map_err(|_| corrupt("creation time out of range"))?,
                );
            }
            if flags & META_MAX_AGE != 0 {
                let max_age = Duration::from_millis(u64::from_be_bytes(word()?));
                if max_age.is_zero() || max_age > MAX_LIFETIME {
                    return Err(corrupt("max_age out of range"));
                }
                lifetime = Some(Lifetime::MaxAge(max_age));
            }
            if flags & META_BROWSER_SESSION != 0 {
                lifetime = Some(Lifetime::BrowserSession);
            }
            let mut text = |limit: usize| -> Result<String> {
                let (len, rest) = meta
                    .split_first_chunk::<2>()
                    .ok_or_else(|| corrupt("payload too short"))?;
                let len = usize::from(u16::from_be_bytes(*len));
                let (bytes, rest) = rest
                    .split_at_checked(len)
                    .ok_or_else(|| corrupt("payload too short"))?;
                meta = rest;
                if len > limit {
                    return Err(corrupt("owner or label too long"));
                }
                String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("owner or label not UTF-8"))
            };
            if flags & META_OWNER != 0 {
                owner = Some(text(MAX_OWNER_LEN)?);
            }
            if flags & META_LABEL != 0 {
                label = Some(text(MAX_LABEL_LEN)?);
            }
            at = end - meta.len();
        }
        let data = match read {
            DataRead::Checked => Data::read_shared(&bytes, &mut at, false),
            DataRead::Trusted => Data::read_shared(&bytes, &mut at, true),
            DataRead::Shaped {
                entries_end,
                size,
                index_at,
            } => Data::read_shaped(&bytes, &mut at, entries_end, size, index_at),
        }
        .filter(|_| at <= end)
        .ok_or_else(|| corrupt("malformed data map"))?;
        let mut input = &bytes[at..end];
        let raw_extra = read_bin_map(&mut input).ok_or_else(|| corrupt("malformed extra map"))?;
        if !input.is_empty() {
            return Err(corrupt("trailing bytes after payload"));
        }
        let mut extra = BTreeMap::new();
        for (key, json) in raw_extra {
            let value = serde_json::from_slice(json).map_err(|e| Error::corrupt("payload", e))?;
            extra.insert(key.to_owned(), value);
        }
        Ok(Self {
            data,
            expires,
            version,
            codec,
            extra,
            created,
            lifetime,
            owner,
            label,
        })
    }

    /// Total size of keys and encoded values, the measure of the manager's size limit.
    pub fn data_size(&self) -> usize {
        self.data.size()
    }
}

/// How [`Record::decode_envelope`] reads the data map.
enum DataRead {
    /// Every key checked (bytes from outside this process).
    Checked,
    /// Written by this process: lengths checked, key order and UTF-8 not.
    Trusted,
    /// Written by [`Record::encode_shaped`], whose shape is read instead of walking.
    Shaped {
        entries_end: usize,
        size: usize,
        index_at: usize,
    },
}

/// Where [`Record::write_payload`] writes: a `Vec` or a pre-sized slice.
trait PayloadWrite: rmp::encode::RmpWrite {
    fn put(&mut self, bytes: &[u8]);
}

impl PayloadWrite for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl PayloadWrite for &mut [u8] {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.len());
        let (head, tail) = std::mem::take(self).split_at_mut(n);
        head.copy_from_slice(&bytes[..n]);
        *self = tail;
    }
}

/// Writes a MessagePack `str → bin` entry, in the smallest formats (as `rmp` would), with
/// its headers assembled on the stack.
fn put_entry<W: PayloadWrite>(out: &mut W, key: &str, value: &[u8]) {
    let mut head = [0u8; 5];
    let k = key.len();
    let n = match k {
        0..32 => {
            head[0] = 0xa0 | k as u8;
            1
        }
        32..256 => {
            head[..2].copy_from_slice(&[0xd9, k as u8]);
            2
        }
        256..65536 => {
            head[0] = 0xda;
            head[1..3].copy_from_slice(&(k as u16).to_be_bytes());
            3
        }
        _ => {
            head[0] = 0xdb;
            head[1..5].copy_from_slice(&(k as u32).to_be_bytes());
            5
        }
    };
    out.put(&head[..n]);
    out.put(key.as_bytes());
    let v = value.len();
    let n = match v {
        0..256 => {
            head[..2].copy_from_slice(&[0xc4, v as u8]);
            2
        }
        256..65536 => {
            head[0] = 0xc5;
            head[1..3].copy_from_slice(&(v as u16).to_be_bytes());
            3
        }
        _ => {
            head[0] = 0xc6;
            head[1..5].copy_from_slice(&(v as u32).to_be_bytes());
            5
        }
    };
    out.put(&head[..n]);
    out.put(value);
}

/// Encoded size of a MessagePack map header for `n` entries.
fn map_header_len(n: usize) -> usize {
    match n {
        0..16 => 1,
        16..65536 => 3,
        _ => 5,
    }
}

/// Reads a MessagePack map of str → bin, checking every length against the input left.
fn read_bin_map<'a>(input: &mut &'a [u8]) -> Option<Vec<(&'a str, &'a [u8])>> {
    let len = rmp::decode::read_map_len(input).ok()? as usize;
    // Each entry takes at least two bytes: refuse lengths the input cannot hold.
    if len > input.len() / 2 {
        return None;
    }
    (0..len).map(|_| read_entry(input)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn payload_round_trip() {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        r.data.insert("a".into(), vec![1, 2, 3]);
        r.data.insert("ü".into(), vec![]);
        r.extra
            .insert("cookie".into(), serde_json::json!({"path": "/"}));
        let bytes = r.encode_payload();
        let back = Record::decode_payload(&bytes, r.expires, 0).unwrap();
        assert_eq!(back, r);
        let created = Some(time::macros::datetime!(2026-12-04 08:00:00.123 UTC));
        for lifetime in [
            None,
            Some(Lifetime::BrowserSession),
            Some(Lifetime::MaxAge(Duration::from_millis(1))),
            Some(Lifetime::MaxAge(MAX_LIFETIME)),
        ] {
            for created in [None, created] {
                r.created = created;
                r.lifetime = lifetime;
                let bytes = r.encode_payload();
                assert_eq!(Record::decode_payload(&bytes, r.expires, 0).unwrap(), r);
                let shaped = r.encode_shaped(b"");
                assert_eq!(Record::decode_shaped(shaped, 0, r.expires, 0).unwrap(), r);
            }
        }
    }

    #[test]
    fn format_1_payloads_still_load() {
        // `0xA5, 1, MessagePack`, {"a": bin [1]}, {}: what the first release wrote.
        let bytes = b"\xa5\x01\x01\x81\xa1a\xc4\x01\x01\x80";
        let record = Record::decode_payload(bytes, OffsetDateTime::UNIX_EPOCH, 3).unwrap();
        assert_eq!(record.data.get("a"), Some(&[1u8][..]));
        assert_eq!(
            (record.created, record.lifetime, record.version),
            (None, None, 3)
        );
    }

    #[test]
    fn bad_lifetime_fields_are_errors() {
        let ms = |n: u64| n.to_be_bytes();
        let good = [0xa5, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x80];
        assert!(Record::decode_payload(&good, OffsetDateTime::UNIX_EPOCH, 0).is_ok());
        for meta in [
            vec![8],                                   // unknown flag
            vec![2 | 4],                               // max age and browser session
            vec![1, 0, 0],                             // creation time cut short
            [&[2][..], &ms(0)].concat(),               // zero max age
            [&[2][..], &ms(u64::MAX)].concat(),        // beyond 400 days
            [&[1][..], &ms(i64::MAX as u64)].concat(), // creation time out of range
        ] {
            let bytes = [&[0xa5, 2, 1][..], &meta, &[0x80, 0x80]].concat();
            assert!(
                Record::decode_payload(&bytes, OffsetDateTime::UNIX_EPOCH, 0).is_err(),
                "{meta:?}"
            );
        }
    }

    #[test]
    fn payload_lengths_are_exact_at_every_header_size() {
        for key_len in [0, 31, 32, 255, 256, 65535, 65536] {
            for value_len in [0, 255, 256, 65535, 65536] {
                let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
                r.data.insert("k".repeat(key_len), vec![7; value_len]);
                r.extra.insert("x".repeat(key_len), serde_json::json!(1));
                // Both lifetime fields: 17 bytes between the codec tag and the data map.
                r.created = Some(OffsetDateTime::UNIX_EPOCH);
                r.lifetime = Some(Lifetime::MaxAge(Duration::from_secs(60)));
                let vec = r.encode_payload();
                // The entry is what `rmp` writes.
                let mut entry = Vec::new();
                rmp::encode::write_str(&mut entry, &"k".repeat(key_len)).unwrap();
                rmp::encode::write_bin(&mut entry, &vec![7; value_len]).unwrap();
                assert_eq!(
                    &vec[21..21 + entry.len()],
                    &entry[..],
                    "{key_len} {value_len}"
                );
                let shaped = r.encode_shaped(b"id");
                assert_eq!(&shaped[..2], b"id");
                assert_eq!(shaped[2..6], (vec.len() as u32).to_le_bytes());
                assert_eq!(&shaped[6..6 + vec.len()], &vec[..], "{key_len} {value_len}");
                assert_eq!(Record::decode_payload(&vec, r.expires, 0).unwrap(), r);
                assert_eq!(Record::decode_shaped(shaped, 2, r.expires, 0).unwrap(), r);
            }
        }
        let mut many = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::Json);
        many.lifetime = Some(Lifetime::MaxAge(Duration::from_secs(1)));
        for n in [15, 16, 65536] {
            many.data = (0..n).map(|i| (format!("{i:06}"), vec![1])).collect();
            let vec = many.encode_payload();
            assert_eq!(vec.len(), vec.capacity());
            let shaped = many.encode_shaped(b"");
            assert_eq!(&shaped[4..4 + vec.len()], &vec[..]);
            let back = Record::decode_shaped(shaped, 0, many.expires, 0).unwrap();
            assert_eq!(back, many);
            for (key, value) in many.data.iter() {
                assert_eq!(back.data.get(key), Some(value));
            }
            assert_eq!(back.data_size(), many.data_size());
            let back = Record::decode_payload(&vec, many.expires, 0).unwrap();
            assert_eq!(back, many);
            // Re-encoding an unchanged decoded record copies its entries.
            assert_eq!(back.encode_payload(), vec);
        }
    }

    #[test]
    fn garbage_payloads_are_errors() {
        let good = {
            let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::Json);
            r.data.insert("k".into(), b"\"v\"".to_vec());
            r.encode_payload()
        };
        for cut in 0..good.len() {
            assert!(Record::decode_payload(&good[..cut], OffsetDateTime::UNIX_EPOCH, 0).is_err());
        }
        for bad in [
            &b"\xA5\x01\x01\xdf\xff\xff\xff\xff"[..],
            b"{}",
            b"\xA5\x02\x01\x80\x80",
        ] {
            assert!(Record::decode_payload(bad, OffsetDateTime::UNIX_EPOCH, 0).is_err());
        }
    }

    #[test]
    fn shaped_rewrites_of_changed_records_index_every_entry() {
        let mut next = crate::data::tests::xorshift(0x853c_49e6_748f_ea9b_u64);
        for n in [0, 3, INDEX_FROM, INDEX_FROM + 1, 12, 40] {
            let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
            for i in 0..n {
                r.data
                    .insert(format!("k{:03}", i * 2), vec![b'v'; 1 + i % 5]);
            }
            let mut bytes = r.encode_shaped(b"p");
            for round in 0..60 {
                let mut back = Record::decode_shaped(bytes, 1, r.expires, 0).unwrap();
                assert_eq!(back.data, r.data, "{n} keys, round {round}");
                for _ in 0..next(4) {
                    let key = format!("k{:03}", next(2 * n + 3));
                    if next(3) == 0 {
                        back.data.remove(&key);
                        r.data.remove(&key);
                    } else {
                        let value = vec![b'w'; next(300)];
                        back.data.insert(key.clone(), value.clone());
                        r.data.insert(key, value);
                    }
                }
                bytes = back.encode_shaped(b"p");
                let again = Record::decode_shaped(bytes.clone(), 1, r.expires, 0).unwrap();
                for (key, value) in r.data.iter() {
                    assert_eq!(again.data.get(key), Some(value), "{n} keys, round {round}");
                }
                assert_eq!(again.data.get("k999"), None);
                assert_eq!(again.data_size(), r.data_size());
                assert_eq!(again.encode_payload(), r.encode_payload());
            }
        }
    }

    #[test]
    fn damaged_shaped_bytes_give_errors_or_misses_never_panics() {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        for i in 0..10 {
            r.data.insert(format!("key{i}"), vec![i; 3]);
        }
        let good = r.encode_shaped(b"\x00\x02id");
        let back = Record::decode_shaped(good.clone(), 4, r.expires, 0).unwrap();
        assert_eq!(back, r);
        let probe = |bytes: Arc<[u8]>| {
            if let Ok(d) = Record::decode_shaped(bytes, 4, r.expires, 0) {
                for i in 0..11 {
                    let _ = d.data.get(&format!("key{i}"));
                }
                let _ = d.data.iter().count();
                let _ = d.encode_payload();
            }
        };
        for cut in 0..good.len() {
            probe(Arc::from(&good[..cut]));
        }
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.to_vec();
                bad[at] ^= flip;
                probe(Arc::from(bad));
            }
        }
    }

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
