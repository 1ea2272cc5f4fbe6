//! The session cookie: its options ([`CookieOptions`], [`SameSite`]), reading its value from
//! a request, and writing `Set-Cookie` (the attributes formatted once by the `cookie` crate,
//! `Max-Age` and `Expires` appended per response).

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use std::time::Duration;
use time::OffsetDateTime;

use std::sync::Arc;

use crate::codec::CookieCodec;
use crate::id::SessionId;

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

/// How the session cookie is written: its name, the codec of its value and its attributes
/// (formatted once, so a response only appends `Max-Age` and `Expires`).
pub(crate) struct CookieFormat {
    pub(crate) name: String,
    pub(crate) codec: Arc<dyn CookieCodec>,
    pub(crate) options: CookieOptions,
    /// The attributes every `Set-Cookie` carries before `Max-Age` (`; HttpOnly; …; Path=/`),
    /// formatted by the `cookie` crate.
    attributes: String,
}

impl CookieFormat {
    /// The format of cookie `name` whose values `codec` encodes, with `options`.
    pub(crate) fn new(name: String, codec: Arc<dyn CookieCodec>, options: CookieOptions) -> Self {
        let mut format = Self {
            name,
            codec,
            options,
            attributes: String::new(),
        };
        let all = format.cookie_base(String::new()).to_string();
        format.attributes = all
            .strip_prefix(&format!("{}=", format.name))
            .unwrap_or_default()
            .to_owned();
        format
    }

    /// `Set-Cookie` for `id`; `expires` is the cookie's expiry (`None`: browser session).
    pub(crate) fn set_cookie(
        &self,
        id: &SessionId,
        expires: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> HeaderValue {
        let value = self.codec.encode_cow(&self.name, id.as_str());
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
        let mut len = self.name.len() + 1 + self.attributes.len();
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
        out.push_str(&self.attributes);
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
        HeaderValue::try_from(out).expect(
            "Set-Cookie holds a token name, attributes without controls (checked by the \
             builder) and a percent-encoded value",
        )
    }

    /// The removal cookie: empty value, `Max-Age=0`, `Expires` in 1970.
    pub(crate) fn removal_cookie(&self) -> HeaderValue {
        let mut cookie = self.cookie_base(String::new());
        cookie.set_max_age(time::Duration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        header_value(&cookie)
    }

    fn cookie_base(&self, value: String) -> cookie::Cookie<'static> {
        let o = &self.options;
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
    HeaderValue::from_str(&cookie.to_string()).expect(
        "Set-Cookie holds a token name, attributes without controls (checked by the builder) \
         and a percent-encoded value",
    )
}

pub(crate) fn decode_cookie_value(raw: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SessionManager, SessionManagerBuilder};

    /// What the `cookie` crate writes for the same cookie, attribute for attribute.
    fn by_cookie_crate(
        c: &CookieFormat,
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
            let c = &manager.config.cookie;
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
