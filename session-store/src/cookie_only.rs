//! Cookie-only sessions: the whole record travels in the cookie, encrypted and authenticated
//! with a [`PrivateCodec`]; the server keeps nothing.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use crate::codec::PrivateCodec;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::record::Record;
use crate::store::SessionStore;

/// Largest `name=value` a browser keeps for one cookie: a cookie-only session whose sealed
/// cookie would be longer fails to commit with [`Error::TooLarge`](crate::Error::TooLarge).
/// (The limit on what the manager *reads* is
/// [`MAX_COOKIE_VALUE_LEN`](crate::MAX_COOKIE_VALUE_LEN).)
pub const MAX_COOKIE_LEN: usize = 4096;

const FORMAT: [u8; 2] = [b'C', 1];

/// The store of a cookie-only manager: never called, since the record is the cookie.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoStore;

fn unsupported<T>(operation: &'static str) -> Result<T> {
    Err(Error::Unsupported {
        store: "cookie",
        operation,
    })
}

#[async_trait]
impl SessionStore for NoStore {
    fn name(&self) -> &'static str {
        "cookie"
    }
    async fn get(&self, _: &SessionId) -> Result<Option<Record>> {
        unsupported("get")
    }
    async fn set(&self, _: &SessionId, _: &Record) -> Result<()> {
        unsupported("set")
    }
    async fn destroy(&self, _: &SessionId) -> Result<()> {
        unsupported("destroy")
    }
}

/// Seals `record` under `id` into a cookie value: the binary form (format, expiry in ms,
/// version, id, payload envelope), URL-safe base64, then encrypted for the cookie `name`.
/// The id's length is one byte: an id over 255 bytes (possible only from a custom
/// generator) is an error.
pub(crate) fn seal(
    codec: &PrivateCodec,
    name: &str,
    id: &SessionId,
    record: &Record,
) -> Result<String> {
    let id = id.as_str().as_bytes();
    let Ok(id_len) = u8::try_from(id.len()) else {
        return Err(Error::Config(format!(
            "cookie-only sessions need ids of at most 255 bytes, not {}",
            id.len()
        )));
    };
    let payload = record.encode_payload();
    let mut plain = Vec::with_capacity(payload.len() + id.len() + 20);
    plain.extend_from_slice(&FORMAT);
    let millis = (record.expires.unix_timestamp_nanos() / 1_000_000) as i64;
    plain.extend_from_slice(&millis.to_be_bytes());
    plain.extend_from_slice(&record.version.to_be_bytes());
    plain.push(id_len);
    plain.extend_from_slice(id);
    plain.extend_from_slice(&payload);
    Ok(codec.seal(name, &URL_SAFE_NO_PAD.encode(plain)))
}

/// Opens a cookie value sealed by [`seal`]; `None` if it does not authenticate or parse.
pub(crate) fn open(codec: &PrivateCodec, name: &str, value: &str) -> Option<(SessionId, Record)> {
    let plain = URL_SAFE_NO_PAD.decode(codec.open(name, value)?).ok()?;
    let rest = plain.strip_prefix(&FORMAT)?;
    let (millis, rest) = rest.split_first_chunk::<8>()?;
    let (version, rest) = rest.split_first_chunk::<8>()?;
    let (&id_len, rest) = rest.split_first()?;
    let (id, payload) = rest.split_at_checked(usize::from(id_len))?;
    let expires = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(i64::from_be_bytes(*millis)) * 1_000_000,
    )
    .ok()?;
    let record = Record::decode_payload(payload, expires, u64::from_be_bytes(*version)).ok()?;
    let id = std::str::from_utf8(id).ok()?;
    Some((SessionId::new(id), record))
}
