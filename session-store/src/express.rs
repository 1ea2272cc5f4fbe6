//! express-session's stored JSON, for sharing sessions with Node services.
//!
//! express-session (with connect-redis, connect-pg-simple, connect-mongo, ...) stores a
//! session as one JSON object: the session's data keys at the top level, plus a `cookie`
//! object (`originalMaxAge` in ms, `expires` as an ISO-8601 string, `httpOnly`, `path`,
//! `secure`, `domain`, `sameSite` as present):
//!
//! ```json
//! {"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/"},"views":2}
//! ```
//!
//! [`ExpressLayout`] turns a [`Record`] into that JSON and back. Values must be encoded with
//! [`Codec::Json`] (configure the manager with `.codec(Codec::Json)`); the `cookie` object of
//! a session written by Node is kept in [`Record::extra`] and written back with its unknown
//! fields intact. The backend's own expiry (key TTL, `expire` column) is authoritative:
//! `cookie.expires` is written on every save (`null` for a browser-session cookie, as
//! express-session writes it) and ignored on read, so a touch can stay a payload-free
//! `EXPIRE`/`UPDATE`.
//!
//! A session's own lifetime ([`Record::lifetime`], `Session::set_max_age`) is
//! `cookie.originalMaxAge`, which is where express-session keeps it too: a number of
//! milliseconds, or `null` for a browser-session cookie. A Node app that sets
//! `req.session.cookie.maxAge` changes it, and Rust keeps that lifetime on every touch and
//! write; Rust's choice is kept by Node the same way. The creation time
//! ([`Record::created`], the start of the absolute lifetime) has no place in
//! express-session's JSON; it is kept under the top-level key `__created` (an ISO-8601
//! string), which Node keeps like any session property and apps should leave alone (a data
//! value under that key is kept, and the creation time is then not stored).

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cookie::{CookieOptions, SameSite};
use crate::error::{Error, Result};
use crate::record::{Codec, Lifetime, MAX_LIFETIME, Record};

/// The key express-session keeps its cookie under; not usable as a data key in this layout.
pub const COOKIE_KEY: &str = "cookie";

/// The key this layout keeps a session's creation time under. Leave it to the layout: a
/// session whose data holds this key (a Node app's own value) keeps that value, and its
/// creation time is then not stored.
pub const CREATED_KEY: &str = "__created";

/// How sessions are written as express-session JSON: the cookie attributes Node expects in
/// the `cookie` object of sessions this library creates.
#[derive(Debug, Clone)]
pub struct ExpressLayout {
    cookie: CookieOptions,
}

impl Default for ExpressLayout {
    fn default() -> Self {
        Self::new(CookieOptions::default())
    }
}

impl ExpressLayout {
    /// A layout writing `cookie` attributes like these options (use the manager's own:
    /// [`SessionManager::cookie_options`](crate::SessionManager::cookie_options)).
    pub fn new(cookie: CookieOptions) -> Self {
        Self { cookie }
    }

    /// The session as express-session JSON. Fails if the values are not JSON-encoded or a
    /// data key is `cookie`.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        if record.codec != Codec::Json {
            return Err(Error::serialization(
                "the express-session layout needs JSON values: configure the manager with Codec::Json",
            ));
        }
        let mut object = Map::new();
        let mut cookie = match record.extra.get(COOKIE_KEY) {
            Some(Value::Object(kept)) => kept.clone(),
            _ => self.fresh_cookie(),
        };
        if let Some(lifetime) = record.lifetime
            && lifetime_of(&cookie) != Some(lifetime)
        {
            let original = match lifetime {
                Lifetime::BrowserSession => Value::Null,
                Lifetime::MaxAge(d) => Value::from(u64::try_from(d.as_millis()).unwrap_or(0)),
            };
            cookie.insert("originalMaxAge".into(), original);
        }
        let expires = if lifetime_of(&cookie) == Some(Lifetime::BrowserSession) {
            Value::Null
        } else {
            Value::String(iso(record.expires)?)
        };
        cookie.insert("expires".into(), expires);
        object.insert(COOKIE_KEY.into(), Value::Object(cookie));
        if let Some(created) = record.created {
            // A data value under the key (a Node app's own) replaces it below.
            object.insert(CREATED_KEY.into(), Value::String(iso(created)?));
        }
        for (key, raw) in &record.data {
            if key == COOKIE_KEY {
                return Err(Error::serialization(
                    "`cookie` is reserved by express-session and cannot be a session key",
                ));
            }
            let value: Value = serde_json::from_slice(raw).map_err(Error::serialization)?;
            object.insert(key.to_owned(), value);
        }
        for (key, value) in &record.extra {
            if key != COOKIE_KEY && !object.contains_key(key) {
                object.insert(key.clone(), value.clone());
            }
        }
        serde_json::to_vec(&Value::Object(object)).map_err(Error::serialization)
    }

    /// A record from express-session JSON; `expires` and `version` come from the backend.
    /// Anything that is not a JSON object is [`Error::Corrupt`].
    pub fn decode(&self, json: &[u8], expires: OffsetDateTime, version: u64) -> Result<Record> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| Error::corrupt("express-session", e))?;
        let Value::Object(object) = value else {
            return Err(Error::corrupt(
                "express-session",
                "stored session is not a JSON object",
            ));
        };
        let mut record = Record::new(expires, Codec::Json);
        record.version = version;
        for (key, value) in object {
            if key == COOKIE_KEY {
                if let Value::Object(cookie) = &value {
                    record.lifetime = lifetime_of(cookie);
                }
                record.extra.insert(key, value);
            } else if let Some(created) = (key == CREATED_KEY)
                .then(|| value.as_str())
                .flatten()
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
            {
                record.created = Some(created);
            } else {
                let raw = serde_json::to_vec(&value).map_err(Error::serialization)?;
                record.data.insert(key, raw);
            }
        }
        Ok(record)
    }

    /// The `cookie` object for a session created here.
    fn fresh_cookie(&self) -> Map<String, Value> {
        let o = &self.cookie;
        let mut cookie = Map::new();
        cookie.insert(
            "originalMaxAge".into(),
            o.max_age
                .map_or(Value::Null, |d| Value::from(d.as_millis() as u64)),
        );
        cookie.insert("expires".into(), Value::Null);
        if o.secure {
            cookie.insert("secure".into(), Value::Bool(true));
        }
        cookie.insert("httpOnly".into(), Value::Bool(o.http_only));
        if let Some(domain) = &o.domain {
            cookie.insert("domain".into(), Value::String(domain.clone()));
        }
        cookie.insert("path".into(), Value::String(o.path.clone()));
        if let Some(same_site) = o.same_site {
            let text = match same_site {
                SameSite::Strict => "strict",
                SameSite::Lax => "lax",
                SameSite::None => "none",
            };
            cookie.insert("sameSite".into(), Value::String(text.into()));
        }
        if o.partitioned {
            cookie.insert("partitioned".into(), Value::Bool(true));
        }
        cookie
    }
}

/// The lifetime an express-session `cookie` object gives: `originalMaxAge` in ms
/// (within one ms and [`MAX_LIFETIME`]), `null` for a browser-session cookie, `None` when
/// absent or not a number.
fn lifetime_of(cookie: &Map<String, Value>) -> Option<Lifetime> {
    match cookie.get("originalMaxAge")? {
        Value::Null => Some(Lifetime::BrowserSession),
        Value::Number(n) => {
            let ms = n.as_f64().filter(|ms| *ms > 0.0)?;
            let max = MAX_LIFETIME.as_millis() as f64;
            Some(Lifetime::MaxAge(std::time::Duration::from_millis(
                ms.clamp(1.0, max) as u64,
            )))
        }
        _ => None,
    }
}

/// `at` as JavaScript's `toISOString` writes it.
fn iso(at: OffsetDateTime) -> Result<String> {
    let text = at
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(Error::serialization)?;
    Ok(iso_millis(&text))
}

/// RFC 3339 as JavaScript's `toISOString` writes it: milliseconds and `Z`.
fn iso_millis(rfc3339: &str) -> String {
    // `time` writes `2026-11-26T19:58:41.066000000Z` or `...41Z`; JavaScript wants `.066Z`.
    let Some(body) = rfc3339.strip_suffix('Z') else {
        return rfc3339.to_owned();
    };
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    let mut millis: String = fraction.chars().take(3).collect();
    while millis.len() < 3 {
        millis.push('0');
    }
    format!("{seconds}.{millis}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NODE: &str = r#"{"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/","priority":"high"},"views":2,"user":{"name":"ann","tags":["a",null]}}"#;

    #[test]
    fn reads_and_rewrites_a_node_session() {
        let layout = ExpressLayout::default();
        let expires = datetime!(2026-11-26 20:10:00.5 UTC);
        let record = layout.decode(NODE.as_bytes(), expires, 0).unwrap();
        assert_eq!(record.codec, Codec::Json);
        assert_eq!(Codec::Json.decode::<u32>(&record.data["views"]).unwrap(), 2);
        assert!(!record.data.contains_key("cookie"));
        let written: Value = serde_json::from_slice(&layout.encode(&record).unwrap()).unwrap();
        assert_eq!(written["views"], 2);
        assert_eq!(written["user"]["tags"][1], Value::Null);
        assert_eq!(
            written["cookie"]["priority"], "high",
            "unknown cookie fields kept"
        );
        assert_eq!(written["cookie"]["originalMaxAge"], 60000);
        assert_eq!(written["cookie"]["expires"], "2026-11-26T20:10:00.500Z");
    }

    #[test]
    fn writes_a_cookie_for_new_sessions() {
        let layout = ExpressLayout::new(CookieOptions {
            max_age: Some(std::time::Duration::from_secs(60)),
            same_site: Some(SameSite::Lax),
            ..CookieOptions::default()
        });
        let mut record = Record::new(datetime!(2026-11-26 19:58:41 UTC), Codec::Json);
        record.data.insert("views".into(), b"1".to_vec());
        let written: Value = serde_json::from_slice(&layout.encode(&record).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"cookie": {"originalMaxAge": 60000, "expires": "2026-11-26T19:58:41.000Z",
                "httpOnly": true, "path": "/", "sameSite": "lax"}, "views": 1})
        );
    }

    #[test]
    fn lifetimes_are_original_max_age_and_created() {
        let layout = ExpressLayout::default();
        let expires = datetime!(2026-11-26 20:10:00 UTC);
        let record = layout.decode(NODE.as_bytes(), expires, 0).unwrap();
        assert_eq!(
            record.lifetime,
            Some(Lifetime::MaxAge(std::time::Duration::from_secs(60)))
        );
        assert_eq!(record.created, None);
        // Rust chooses "remember me" and the record gets a creation time.
        let mut record = record;
        let month = std::time::Duration::from_secs(30 * 24 * 3600);
        record.lifetime = Some(Lifetime::MaxAge(month));
        record.created = Some(datetime!(2026-11-26 19:00:00.25 UTC));
        let json = layout.encode(&record).unwrap();
        let written: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(written["cookie"]["originalMaxAge"], 2_592_000_000u64);
        assert_eq!(written["__created"], "2026-11-26T19:00:00.250Z");
        assert_eq!(written["cookie"]["priority"], "high", "the rest kept");
        let back = layout.decode(&json, expires, 0).unwrap();
        assert_eq!(
            (back.created, back.lifetime),
            (record.created, record.lifetime)
        );
        assert!(!back.data.contains_key(CREATED_KEY));
        // A browser-session cookie: `originalMaxAge` and `expires` are null, as Node writes.
        record.lifetime = Some(Lifetime::BrowserSession);
        let json = layout.encode(&record).unwrap();
        let written: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(written["cookie"]["originalMaxAge"], Value::Null);
        assert_eq!(written["cookie"]["expires"], Value::Null);
        let back = layout.decode(&json, expires, 0).unwrap();
        assert_eq!(back.lifetime, Some(Lifetime::BrowserSession));
        // What Node may hold: no `originalMaxAge`, odd numbers, a foreign `__created`.
        for (cookie, lifetime) in [
            (r#"{"path":"/"}"#, None),
            (r#"{"originalMaxAge":"x"}"#, None),
            (r#"{"originalMaxAge":-5}"#, None),
            (
                r#"{"originalMaxAge":0.5}"#,
                Some(Lifetime::MaxAge(std::time::Duration::from_millis(1))),
            ),
            (
                r#"{"originalMaxAge":1e300}"#,
                Some(Lifetime::MaxAge(MAX_LIFETIME)),
            ),
        ] {
            let json = format!(r#"{{"cookie":{cookie},"__created":"yesterday"}}"#);
            let back = layout.decode(json.as_bytes(), expires, 0).unwrap();
            assert_eq!(back.lifetime, lifetime, "{cookie}");
            assert_eq!(back.created, None);
            assert_eq!(
                back.data.get(CREATED_KEY),
                Some(&b"\"yesterday\""[..]),
                "kept as data"
            );
            // Written back as it was, even once the record has a creation time.
            let mut back = back;
            back.created = Some(expires);
            let written: Value = serde_json::from_slice(&layout.encode(&back).unwrap()).unwrap();
            assert_eq!(written[CREATED_KEY], "yesterday");
        }
    }

    #[test]
    fn rejects_what_it_cannot_express() {
        let layout = ExpressLayout::default();
        let mut record = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        assert!(layout.encode(&record).is_err());
        record.codec = Codec::Json;
        record.data.insert("cookie".into(), b"1".to_vec());
        assert!(layout.encode(&record).is_err());

        for garbage in [&b"[1,2]"[..], b"not json", b"", b"\xff"] {
            assert!(matches!(
                layout.decode(garbage, OffsetDateTime::UNIX_EPOCH, 0),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
