//! Cookie codecs: how a session id becomes the cookie's value and back
//! (next-session's `encode` / `decode`).
//!
//! - [`PlainCodec`]: the id itself (the default).
//! - [`FnCodec`]: your own pair of functions.
//! - [`SignedCodec`]: HMAC-SHA256 signatures byte-compatible with express-session's
//!   `cookie-signature` (`s:` prefix), several secrets for rotation.
//! - [`PrivateCodec`]: the id encrypted and authenticated (AES-256-GCM), several keys for
//!   rotation.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use cookie::{Cookie, CookieJar, Key};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Turns a session id into a cookie value and back.
///
/// `encode` returns the value before percent-encoding (the manager percent-encodes it like
/// JavaScript's `encodeURIComponent`); `decode` receives it percent-decoded and returns
/// `None` for "no session". `decode` must not panic on any input.
pub trait CookieCodec: Send + Sync + 'static {
    /// The cookie value for `id`. `cookie_name` is given for codecs that bind it.
    fn encode(&self, cookie_name: &str, id: &str) -> String;
    /// The id inside `value`, or `None` if the value is not one of ours.
    fn decode(&self, cookie_name: &str, value: &str) -> Option<String>;
    /// [`CookieCodec::encode`], borrowing `id` when the value is the id itself. The default
    /// calls `encode`; [`PlainCodec`] borrows, which saves an allocation per `Set-Cookie`.
    fn encode_cow<'a>(&self, cookie_name: &str, id: &'a str) -> Cow<'a, str> {
        Cow::Owned(self.encode(cookie_name, id))
    }
}

impl fmt::Debug for dyn CookieCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieCodec")
    }
}

/// The id is the cookie value.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainCodec;

impl CookieCodec for PlainCodec {
    fn encode(&self, _: &str, id: &str) -> String {
        id.to_owned()
    }
    fn encode_cow<'a>(&self, _: &str, id: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(id)
    }
    fn decode(&self, _: &str, value: &str) -> Option<String> {
        Some(value.to_owned())
    }
}

type EncodeFn = dyn Fn(&str) -> String + Send + Sync;
type DecodeFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// A codec made of two functions, next-session's `encode` / `decode` options.
#[derive(Clone)]
pub struct FnCodec {
    encode: Arc<EncodeFn>,
    decode: Arc<DecodeFn>,
}

impl FnCodec {
    /// `encode` maps an id to a cookie value; `decode` maps it back, `None` meaning
    /// "no session".
    pub fn new(
        encode: impl Fn(&str) -> String + Send + Sync + 'static,
        decode: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            encode: Arc::new(encode),
            decode: Arc::new(decode),
        }
    }
}

impl fmt::Debug for FnCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCodec")
    }
}

impl CookieCodec for FnCodec {
    fn encode(&self, _: &str, id: &str) -> String {
        (self.encode)(id)
    }
    fn decode(&self, _: &str, value: &str) -> Option<String> {
        (self.decode)(value)
    }
}

/// Signs the id with HMAC-SHA256 in express-session's format:
/// `s:` + id + `.` + base64(HMAC-SHA256(secret, id)) with standard base64 and no `=` padding.
///
/// The first secret signs; every secret is tried when verifying (rotate by putting the new
/// secret first and keeping the old one until its cookies have expired). Signatures are
/// compared in constant time. Anything that does not verify is "no session".
#[derive(Clone)]
pub struct SignedCodec {
    secrets: Arc<[Vec<u8>]>,
    prefix: &'static str,
}

impl fmt::Debug for SignedCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCodec")
            .field("secrets", &self.secrets.len())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SignedCodec {
    /// A codec signing with the first of `secrets` and verifying with all of them, writing
    /// express-session's `s:` prefix. Fails if no secret or an empty one is given.
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Result<Self> {
        let secrets: Vec<Vec<u8>> = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        if secrets.is_empty() || secrets.iter().any(Vec::is_empty) {
            return Err(Error::Config(
                "a signed cookie codec needs at least one non-empty secret".into(),
            ));
        }
        Ok(Self {
            secrets: secrets.into(),
            prefix: "s:",
        })
    }

    /// Plain `cookie-signature` values, without express-session's `s:` prefix.
    pub fn without_prefix(mut self) -> Self {
        self.prefix = "";
        self
    }

    /// `value + "." + signature`, as `cookie-signature`'s `sign`.
    pub fn sign(secret: &[u8], value: &str) -> String {
        let mut signed = String::with_capacity(value.len() + 44);
        signed.push_str(value);
        signed.push('.');
        STANDARD_NO_PAD.encode_string(mac(secret, value), &mut signed);
        signed
    }

    /// The value inside `signed` if one of the secrets signed it (constant-time comparison).
    pub fn unsign(&self, signed: &str) -> Option<String> {
        let (value, signature) = signed.rsplit_once('.')?;
        let mut expected = String::with_capacity(44);
        let mut found = false;
        for secret in self.secrets.iter() {
            expected.clear();
            STANDARD_NO_PAD.encode_string(mac(secret, value), &mut expected);
            // Evaluate every secret, so timing does not reveal which one matched.
            found |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
        }
        found.then(|| value.to_owned())
    }
}

fn mac(secret: &[u8], value: &str) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

impl CookieCodec for SignedCodec {
    fn encode(&self, _: &str, id: &str) -> String {
        let mut out = String::from(self.prefix);
        out.push_str(&Self::sign(&self.secrets[0], id));
        out
    }

    fn decode(&self, _: &str, value: &str) -> Option<String> {
        self.unsign(value.strip_prefix(self.prefix)?)
    }
}

/// Encrypts and authenticates the id with AES-256-GCM (the `cookie` crate's private cookies;
/// the cookie name is bound as associated data). The first key encrypts, every key decrypts.
#[derive(Clone)]
pub struct PrivateCodec {
    keys: Arc<[Key]>,
}

impl fmt::Debug for PrivateCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateCodec")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl PrivateCodec {
    /// A codec over `keys` (first encrypts). Fails if none is given.
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Result<Self> {
        let keys: Vec<Key> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(Error::Config("a private cookie codec needs a key".into()));
        }
        Ok(Self { keys: keys.into() })
    }

    /// A codec with one freshly generated random key: cookies it seals can be opened only by
    /// this process (they stop working at restart).
    pub fn random() -> Self {
        Self {
            keys: vec![Key::generate()].into(),
        }
    }

    /// Keys derived from master secrets of at least 32 bytes each (first encrypts).
    pub fn from_secrets<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Result<Self> {
        let keys = secrets
            .into_iter()
            .map(|s| {
                let s = s.as_ref();
                if s.len() < 32 {
                    Err(Error::Config(
                        "private cookie secrets need at least 32 bytes".into(),
                    ))
                } else {
                    Ok(Key::derive_from(s))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(keys)
    }

    /// Encrypts `plain` for the cookie `name` with the first key.
    pub fn seal(&self, name: &str, plain: &str) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.keys[0])
            .add(Cookie::new(name.to_owned(), plain.to_owned()));
        jar.get(name)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// Decrypts `sealed` from the cookie `name` with any key; `None` if none authenticates.
    pub fn open(&self, name: &str, sealed: &str) -> Option<String> {
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            jar.private(key)
                .decrypt(Cookie::new(name.to_owned(), sealed.to_owned()))
                .map(|c| c.value().to_owned())
        })
    }
}

impl CookieCodec for PrivateCodec {
    fn encode(&self, name: &str, id: &str) -> String {
        self.seal(name, id)
    }
    fn decode(&self, name: &str, value: &str) -> Option<String> {
        self.open(name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_signature_vectors() {
        assert_eq!(
            SignedCodec::sign(b"tobiiscool", "hello"),
            "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
        let codec = SignedCodec::new(["keyboard cat"]).unwrap();
        assert_eq!(
            codec.encode("connect.sid", "abc123"),
            "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0"
        );
        assert_eq!(
            codec.decode(
                "connect.sid",
                "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0"
            ),
            Some("abc123".into())
        );
    }

    #[test]
    fn rotation_and_tampering() {
        let old = SignedCodec::new(["old"]).unwrap();
        let rotated = SignedCodec::new(["new", "old"]).unwrap();
        let value = old.encode("sid", "abc");
        assert_eq!(rotated.decode("sid", &value).as_deref(), Some("abc"));
        assert!(rotated.encode("sid", "abc") != value);
        assert_eq!(
            SignedCodec::new(["new"]).unwrap().decode("sid", &value),
            None
        );
        for bad in [
            "abc",
            "s:abc",
            "s:abc.",
            "s:.",
            "",
            "s:abd.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0",
        ] {
            assert_eq!(old.decode("sid", bad), None, "{bad}");
        }
        let mut tampered = value.clone();
        tampered.pop();
        assert_eq!(old.decode("sid", &tampered), None);
        assert!(!format!("{old:?}").contains("old\""));
    }

    #[test]
    fn private_round_trip_and_rotation() {
        let a = PrivateCodec::from_secrets([[1u8; 32]]).unwrap();
        let ab = PrivateCodec::from_secrets([[2u8; 32], [1u8; 32]]).unwrap();
        let sealed = a.encode("sid", "the-id");
        assert!(!sealed.contains("the-id"));
        assert_eq!(ab.decode("sid", &sealed).as_deref(), Some("the-id"));
        assert_eq!(ab.decode("other", &sealed), None);
        assert_eq!(
            PrivateCodec::from_secrets([[2u8; 32]])
                .unwrap()
                .decode("sid", &sealed),
            None
        );
        assert_eq!(a.decode("sid", "garbage!!"), None);
        assert!(PrivateCodec::from_secrets([b"short"]).is_err());
    }
}
