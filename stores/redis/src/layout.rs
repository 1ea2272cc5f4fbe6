//! How a session is laid out in Redis: this library's own binary layout, or connect-redis's
//! express-session JSON for sharing sessions with Node.

use session_store::express::{COOKIE_KEY, ExpressLayout};
use session_store::time::OffsetDateTime;
use session_store::time::format_description::well_known::Rfc3339;
use session_store::{CookieOptions, Error, Record, Result};
use sha2::{Digest, Sha256};

use crate::error::NAME;

/// Bytes before the payload in a [`Layout::Native`] value: the record version and the
/// expiry in Unix milliseconds, 8 bytes each, big-endian.
pub(crate) const HEADER_LEN: usize = 16;
/// Where the expiry starts in a [`Layout::Native`] value.
pub(crate) const EXPIRY_AT: usize = 8;
/// First byte of the owner section that follows the header in the [`Layout::Native`] value
/// of a session with an owner (`o`); a payload envelope never starts with it (its first
/// byte is `0xA5`).
pub(crate) const OWNER_MARK: u8 = b'o';
/// The owner section: [`OWNER_MARK`], then the owner's digest ([`OwnerDigest`]).
pub(crate) const OWNER_SECTION_LEN: usize = 1 + OwnerDigest::LEN;
/// Latest expiry Redis is asked for (9999-12-31T23:59:59.999Z), in Unix milliseconds.
pub(crate) const MAX_EXPIRY_MS: i128 = 253_402_300_799_999;

/// What a [`RedisStore`](crate::RedisStore) writes under each key. Select it with
/// [`RedisStore::with_layout`](crate::RedisStore::with_layout).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Layout {
    /// This library's layout (the default): the record version and the expiry in Unix
    /// milliseconds (8 bytes each, big-endian), then the core's payload envelope
    /// ([`Record::encode_payload`]). The key's TTL is set to the same expiry, so Redis still
    /// removes expired sessions itself, and a read is one `GET`. Every value codec, every
    /// capability including compare-and-set. Default key prefix `session:`.
    ///
    /// A session with an owner ([`Record::owner`]) has an owner section between the header
    /// and the payload: the byte `o` and the owner's SHA-256 in 64 lower-case hex digits,
    /// which name its owner index (`<prefix>owner:<digits>`), so that the store's scripts
    /// find the index of a session without decoding the payload. Values without it (every
    /// session without owner, and values written before owners existed) read as before.
    #[default]
    Native,
    /// connect-redis's layout, shared with Node services running express-session: the value
    /// is express-session's session JSON ([`ExpressLayout`]), the expiry is the key's TTL.
    /// Default key prefix `sess:` (connect-redis's).
    ///
    /// - Records must use [`Codec::Json`](session_store::Codec::Json) (the manager's
    ///   `.codec(Codec::Json)`); anything else fails to save with
    ///   [`Error::Serialization`]. No data key may be named `cookie`.
    /// - The key's TTL is authoritative: `cookie.expires` inside the JSON is written on every
    ///   save and ignored on read, so `touch` stays a payload-free `PEXPIREAT`. A key without
    ///   TTL (connect-redis's `disableTTL`) takes its expiry from `cookie.expires`, and never
    ///   expires if that is `null`.
    /// - The JSON has no room for a record version, so `get` always returns version 0 and
    ///   `compare_and_set` is [`Error::Unsupported`] (`create`, `update` and native `touch`
    ///   remain). Two concurrent requests of one session may overwrite each other's changes,
    ///   exactly as with express-session itself.
    /// - Keys hold the raw session id (`sess:<id>`), because Node looks sessions up by the
    ///   cookie's id: the store answers `true` to `needs_raw_ids`, so the manager does not
    ///   hash ids for it, and a dump of these keys holds usable ids (protect it like the
    ///   cookie secret). There is no owner index (`owned` is unsupported).
    ConnectRedis(ExpressLayout),
}

impl Layout {
    /// connect-redis's layout, writing the `cookie` object of new sessions from `cookie`
    /// (pass the manager's cookie options).
    pub fn connect_redis(cookie: CookieOptions) -> Self {
        Self::ConnectRedis(ExpressLayout::new(cookie))
    }

    /// The key prefix used when none is set: `session:` or connect-redis's `sess:`.
    pub fn default_prefix(&self) -> &'static str {
        match self {
            Self::Native => crate::RedisStore::DEFAULT_PREFIX,
            Self::ConnectRedis(_) => crate::RedisStore::CONNECT_REDIS_PREFIX,
        }
    }

    /// The value to store for `record`. In [`Layout::Native`], `owner` is the digest of
    /// `record.owner` ([`OwnerDigest::of`]), written as the owner section after the header.
    pub(crate) fn encode(&self, record: &Record, owner: Option<&OwnerDigest>) -> Result<Vec<u8>> {
        match self {
            Self::Native => {
                let payload = record.encode_payload();
                let section = if owner.is_some() {
                    OWNER_SECTION_LEN
                } else {
                    0
                };
                let mut value = Vec::with_capacity(HEADER_LEN + section + payload.len());
                value.extend_from_slice(&record.version.to_be_bytes());
                value.extend_from_slice(&expiry_ms(record.expires).to_be_bytes());
                if let Some(owner) = owner {
                    value.extend_from_slice(&owner.section());
                }
                value.extend_from_slice(&payload);
                Ok(value)
            }
            Self::ConnectRedis(express) => express.encode(record),
        }
    }

    /// The record in a native `value` that carries its expiry; `None` if expired at `now`.
    pub(crate) fn decode_native(value: &[u8], now: OffsetDateTime) -> Result<Option<Record>> {
        let Some((header, payload)) = value.split_first_chunk::<HEADER_LEN>() else {
            return Err(Error::corrupt(NAME, "value shorter than its header"));
        };
        let (version, expiry) = header.split_at(EXPIRY_AT);
        let version = u64::from_be_bytes(version.try_into().unwrap_or_default());
        let ms = i64::from_be_bytes(expiry.try_into().unwrap_or_default());
        if !(1..=MAX_EXPIRY_MS as i64).contains(&ms) {
            return Err(Error::corrupt(NAME, "expiry out of range"));
        }
        let expires = from_ms(ms)?;
        if expires <= now {
            return Ok(None);
        }
        // The owner section of an owned session: the owner itself is in the payload.
        let payload = match payload.first() {
            Some(&OWNER_MARK) => payload
                .get(OWNER_SECTION_LEN..)
                .ok_or_else(|| Error::corrupt(NAME, "owner section cut short"))?,
            _ => payload,
        };
        Record::decode_payload(payload, expires, version)
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }

    /// The record in a connect-redis `value` whose key expires at `expires_ms` (a
    /// `PEXPIRETIME` reply: -2 no key, -1 no expiry); `None` if gone or expired at `now`.
    pub(crate) fn decode_connect_redis(
        express: &ExpressLayout,
        value: &[u8],
        expires_ms: i64,
        now: OffsetDateTime,
    ) -> Result<Option<Record>> {
        match expires_ms {
            // The key disappeared between `GET` and `PEXPIRETIME`.
            -2 => Ok(None),
            ms => {
                let ttl_expiry = if ms == -1 { None } else { Some(from_ms(ms)?) };
                if ttl_expiry.is_some_and(|at| at <= now) {
                    return Ok(None);
                }
                let placeholder = ttl_expiry.unwrap_or(OffsetDateTime::UNIX_EPOCH);
                let mut record = express.decode(value, placeholder, 0)?;
                if ttl_expiry.is_none() {
                    record.expires = cookie_expiry(&record)?.unwrap_or_else(never);
                    if record.expires <= now {
                        return Ok(None);
                    }
                }
                Ok(Some(record))
            }
        }
    }
}

/// The SHA-256 of an owner ([`Record::owner`]) in lower-case hex: names the owner's index
/// key (`<prefix>owner:<digest>`) and marks the owner's sessions in [`Layout::Native`], so
/// owners of any length and content give short keys of one shape.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct OwnerDigest([u8; OwnerDigest::LEN]);

impl OwnerDigest {
    /// 64 hex digits.
    pub(crate) const LEN: usize = 64;

    pub(crate) fn of(owner: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(owner.as_bytes());
        let mut hex = [0u8; Self::LEN];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        Self(hex)
    }

    /// The digits.
    pub(crate) fn as_str(&self) -> &str {
        // Hex digits only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The owner section of a value: [`OWNER_MARK`] and the digits.
    pub(crate) fn section(&self) -> [u8; OWNER_SECTION_LEN] {
        let mut section = [OWNER_MARK; OWNER_SECTION_LEN];
        section[1..].copy_from_slice(&self.0);
        section
    }

    /// The digest in an owner section read back from Redis; `None` if it is none.
    pub(crate) fn from_section(section: &[u8]) -> Option<Self> {
        match section.split_first() {
            Some((&OWNER_MARK, digits))
                if digits.len() == Self::LEN && digits.iter().all(u8::is_ascii_hexdigit) =>
            {
                digits.try_into().ok().map(Self)
            }
            _ => None,
        }
    }
}

impl std::fmt::Debug for OwnerDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerDigest(..)")
    }
}

/// `cookie.expires` of an express-session record: `None` when absent or `null`.
fn cookie_expiry(record: &Record) -> Result<Option<OffsetDateTime>> {
    let Some(expires) = record.extra.get(COOKIE_KEY).and_then(|c| c.get("expires")) else {
        return Ok(None);
    };
    if expires.is_null() {
        return Ok(None);
    }
    let text = expires
        .as_str()
        .ok_or_else(|| Error::corrupt(NAME, "cookie.expires is not a string"))?;
    OffsetDateTime::parse(text, &Rfc3339)
        .map(Some)
        .map_err(|e| Error::corrupt(NAME, e))
}

/// The latest expiry Redis accepts: what a session without any expiry gets.
fn never() -> OffsetDateTime {
    from_ms(MAX_EXPIRY_MS as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The expiry in Unix milliseconds (sub-millisecond part dropped), within what Redis accepts:
/// expiries before 1970 become 1 ms, which Redis treats as already expired.
pub(crate) fn expiry_ms(expires: OffsetDateTime) -> i64 {
    let ms = (expires.unix_timestamp_nanos() / 1_000_000).clamp(1, MAX_EXPIRY_MS);
    // Within i64 after the clamp.
    ms as i64
}

pub(crate) fn from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::corrupt(NAME, e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use session_store::Codec;

    use super::*;

    /// A session express-session 1.19 stored through connect-redis 9 (`docs/behaviour.md`).
    const NODE: &str = r#"{"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/"},"views":2}"#;

    /// connect-redis's layout reading `value` whose key expires at `expires_ms`.
    fn decode(value: &[u8], expires_ms: i64, now: OffsetDateTime) -> Result<Option<Record>> {
        let Layout::ConnectRedis(express) = express() else {
            unreachable!("express() is connect-redis's layout")
        };
        Layout::decode_connect_redis(&express, value, expires_ms, now)
    }

    fn express() -> Layout {
        Layout::connect_redis(CookieOptions::default())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn expiry_is_clamped_to_what_redis_accepts() {
        assert_eq!(expiry_ms(OffsetDateTime::UNIX_EPOCH), 1);
        assert_eq!(
            expiry_ms(OffsetDateTime::UNIX_EPOCH - Duration::from_secs(10)),
            1
        );
        assert_eq!(
            expiry_ms(OffsetDateTime::UNIX_EPOCH + Duration::from_micros(1_234_567)),
            1_234
        );
        assert_eq!(
            expiry_ms(session_store::time::PrimitiveDateTime::MAX.assume_utc()),
            MAX_EXPIRY_MS as i64
        );
    }

    #[test]
    fn native_garbage_is_corrupt_not_a_panic() {
        let later = (now().unix_timestamp() + 600) * 1000;
        let header = |ms: i64| [&7u64.to_be_bytes()[..], &ms.to_be_bytes()[..]].concat();
        for value in [
            Vec::new(),
            b"\x00\x01".to_vec(),
            header(later)[..15].to_vec(),
            header(later),
            [header(later), b"{}".to_vec()].concat(),
            [header(0), Record::new(now(), Codec::Json).encode_payload()].concat(),
            [header(-5), Record::new(now(), Codec::Json).encode_payload()].concat(),
            [
                header(i64::MAX),
                Record::new(now(), Codec::Json).encode_payload(),
            ]
            .concat(),
        ] {
            assert!(
                matches!(
                    Layout::decode_native(&value, now()),
                    Err(Error::Corrupt { .. })
                ),
                "{value:?}"
            );
        }
        // An expired header is a miss, whatever follows.
        assert!(Layout::decode_native(&header(1), now()).unwrap().is_none());
        // A value in the layout of an unpublished earlier version (version, then the
        // payload, whose first byte lands in the expiry) is corrupt, not misread.
        let old_layout = [
            &7u64.to_be_bytes()[..],
            &Record::new(now(), Codec::Json).encode_payload(),
        ]
        .concat();
        assert!(matches!(
            Layout::decode_native(&old_layout, now()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn owner_digest_is_the_hex_sha256() {
        let digest = OwnerDigest::of("abc");
        assert_eq!(
            digest.as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let section = digest.section();
        assert_eq!(section[0], b'o');
        assert_eq!(OwnerDigest::from_section(&section), Some(digest.clone()));
        assert_eq!(OwnerDigest::from_section(&section[..64]), None);
        assert_eq!(OwnerDigest::from_section(b""), None);
        let mut upper = section;
        upper[1] = b'Z';
        assert_eq!(OwnerDigest::from_section(&upper), None);
        assert_ne!(OwnerDigest::of("abd"), digest);
        assert_eq!(format!("{digest:?}"), "OwnerDigest(..)");
    }

    #[test]
    fn an_owned_value_carries_the_owner_section() {
        let mut record = Record::new(now() + Duration::from_secs(600), Codec::Json);
        record.version = 4;
        record.owner = Some("user 42 / ü".into());
        record.label = Some("Firefox".into());
        record.data.insert("k".into(), b"1".to_vec());
        let digest = OwnerDigest::of("user 42 / ü");
        let value = Layout::Native.encode(&record, Some(&digest)).unwrap();
        assert_eq!(value[16..16 + OWNER_SECTION_LEN], digest.section());
        assert_eq!(value[16 + OWNER_SECTION_LEN..], record.encode_payload()[..]);
        let back = Layout::decode_native(&value, now()).unwrap().unwrap();
        assert_eq!(back.owner, record.owner);
        assert_eq!(back.label, record.label);
        assert_eq!(back.data, record.data);
        assert_eq!(back.version, 4);
        // Cut inside the section: corrupt, not a panic.
        assert!(matches!(
            Layout::decode_native(&value[..40], now()),
            Err(Error::Corrupt { .. })
        ));
        // Without owner, the value is the header and the payload, as before owners.
        record.owner = None;
        let plain = Layout::Native.encode(&record, None).unwrap();
        assert_eq!(plain[16..], record.encode_payload()[..]);
    }

    #[test]
    fn native_value_round_trips() {
        let mut record = Record::new(now() + Duration::from_secs(600), Codec::Json);
        record.version = u64::MAX - 1;
        record.data.insert("k".into(), b"1".to_vec());
        let ms = expiry_ms(record.expires);
        let value = Layout::Native.encode(&record, None).unwrap();
        assert_eq!(value[..8], record.version.to_be_bytes());
        assert_eq!(value[8..16], ms.to_be_bytes());
        let back = Layout::decode_native(&value, now()).unwrap().unwrap();
        assert_eq!(back.version, record.version);
        assert_eq!(back.data, record.data);
        assert_eq!(expiry_ms(back.expires), ms);
    }

    #[test]
    fn reads_the_node_example_with_the_key_ttl_as_expiry() {
        // The TTL says 10 minutes from now although `cookie.expires` says otherwise.
        let ttl = expiry_ms(now() + Duration::from_secs(600));
        let record = decode(NODE.as_bytes(), ttl, now()).unwrap().expect("live");
        assert_eq!(expiry_ms(record.expires), ttl);
        assert_eq!(record.codec, Codec::Json);
        assert_eq!(record.version, 0);
        assert_eq!(record.data.len(), 1);
        assert_eq!(Codec::Json.decode::<u32>(&record.data["views"]).unwrap(), 2);
        assert_eq!(record.extra["cookie"]["originalMaxAge"], 60000);

        // Written back: same shape, `cookie.expires` from the record, fields kept.
        let written: serde_json::Value =
            serde_json::from_slice(&express().encode(&record, None).unwrap()).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(NODE).unwrap();
        expected["cookie"]["expires"] = written["cookie"]["expires"].clone();
        assert_eq!(written, expected);
        let expires = written["cookie"]["expires"].as_str().unwrap();
        assert_eq!(expires.len(), "2026-11-26T19:58:41.066Z".len());
        assert!(expires.ends_with('Z'));
    }

    #[test]
    fn an_expired_ttl_hides_the_node_session() {
        let past = expiry_ms(now() - Duration::from_secs(1));
        assert!(decode(NODE.as_bytes(), past, now()).unwrap().is_none());
        assert!(decode(NODE.as_bytes(), -2, now()).unwrap().is_none());
    }

    #[test]
    fn without_ttl_the_cookie_expiry_counts() {
        // `cookie.expires` of the example is 2026-11-26T19:58:41.066Z.
        let before = OffsetDateTime::parse("2026-11-26T19:00:00Z", &Rfc3339).unwrap();
        let after = OffsetDateTime::parse("2026-11-26T20:00:00Z", &Rfc3339).unwrap();
        let record = decode(NODE.as_bytes(), -1, before).unwrap().unwrap();
        assert_eq!(
            record.expires,
            OffsetDateTime::parse("2026-11-26T19:58:41.066Z", &Rfc3339).unwrap()
        );
        assert!(decode(NODE.as_bytes(), -1, after).unwrap().is_none());

        let browser = br#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"n":1}"#;
        let record = decode(browser, -1, after).unwrap().unwrap();
        assert_eq!(expiry_ms(record.expires), MAX_EXPIRY_MS as i64);

        let bad = br#"{"cookie":{"expires":"yesterday"},"n":1}"#;
        assert!(matches!(decode(bad, -1, after), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn express_rejects_binary_values_and_foreign_bytes() {
        let mut record = Record::new(now() + Duration::from_secs(60), Codec::MessagePack);
        record
            .data
            .insert("n".into(), Codec::MessagePack.encode(&1u8).unwrap());
        assert!(matches!(
            express().encode(&record, None),
            Err(Error::Serialization { .. })
        ));
        let later = expiry_ms(now() + Duration::from_secs(60));
        let native = Layout::Native.encode(&record, None).unwrap();
        for garbage in [&native[..], b"", b"[1]", b"\"text\"", b"{broken"] {
            assert!(matches!(
                decode(garbage, later, now()),
                Err(Error::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn new_sessions_get_a_cookie_object_node_understands() {
        let layout = Layout::connect_redis(CookieOptions {
            max_age: Some(Duration::from_secs(60)),
            ..CookieOptions::default()
        });
        let expires = OffsetDateTime::parse("2026-11-26T19:58:41.066Z", &Rfc3339).unwrap();
        let mut record = Record::new(expires, Codec::Json);
        record.data.insert("views".into(), b"2".to_vec());
        let written = String::from_utf8(layout.encode(&record, None).unwrap()).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&written).unwrap();
        let node: serde_json::Value = serde_json::from_str(NODE).unwrap();
        assert_eq!(ours, node);
    }
}
