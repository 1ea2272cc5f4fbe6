//! Session ids: the redacted [`SessionId`] newtype and the [`IdGenerator`] that makes and
//! validates them.

use std::fmt;
use std::sync::Arc;

/// Longest id any built-in validator accepts; longer cookie values never reach a store.
pub const MAX_ID_LEN: usize = 256;

/// A session id.
///
/// Its `Debug` output is redacted and it has no `Display`, so an id cannot end up in a log by
/// accident. Use [`SessionId::as_str`] where a store needs the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Box<str>);

impl SessionId {
    /// Wraps an id. Nothing is validated here: the manager validates ids from cookies with its
    /// [`IdGenerator`] before any store sees them.
    pub fn new(id: impl Into<Box<str>>) -> Self {
        Self(id.into())
    }

    /// The id's text, for stores.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

type Generate = dyn Fn() -> String + Send + Sync;
type Validate = dyn Fn(&str) -> bool + Send + Sync;

/// Makes new session ids and decides which ids from cookies are plausible.
///
/// A generator always comes with its validator: an id that the validator rejects never
/// reaches the store (the request gets a fresh session instead).
#[derive(Clone)]
pub struct IdGenerator {
    generate: Arc<Generate>,
    validate: Arc<Validate>,
}

impl fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdGenerator").finish_non_exhaustive()
    }
}

/// `[A-Za-z0-9_-]`: the URL-safe alphabet of nanoid and of express-session's ids.
fn url_safe(id: &str, lengths: &[usize]) -> bool {
    lengths.contains(&id.len()) && id.bytes().all(|b| URL_SAFE[usize::from(b)])
}

/// Byte classes as tables (one load per byte of every id a request presents): `[A-Za-z0-9_-]`,
/// and the bytes no id may hold whatever its generator (controls, space, `;` and `,`).
static URL_SAFE: [bool; 256] = byte_table(true);
static NEVER_IN_ID: [bool; 256] = byte_table(false);

const fn byte_table(url_safe: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if url_safe {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        } else {
            b.is_ascii_control() || b == b' ' || b == b';' || b == b','
        };
        i += 1;
    }
    table
}

/// The 64 symbols of ids: each random byte picks one by its low six bits, so every symbol is
/// equally likely (256 is a multiple of 64) and each carries 6 bits.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// `len` (at most 32) symbols of [`ALPHABET`], from `rand`'s thread-local CSPRNG: ChaCha12,
/// seeded from the operating system and reseeded from it after every 64 KiB of output. It
/// is not reseeded on `fork`: a process that forks without `exec` should create sessions
/// in one of the two processes only.
fn random_id(len: usize) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    let bytes = &mut bytes[..len.min(32)];
    rand::rng().fill_bytes(bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect()
}

impl IdGenerator {
    /// The default: nanoid's format, 21 characters of `[A-Za-z0-9_-]`, i.e. 126 bits; accepts
    /// exactly such ids.
    ///
    /// The bits come from `rand`'s thread-local CSPRNG (ChaCha12, seeded from the operating
    /// system and reseeded from it after every 64 KiB of output), one random byte per
    /// symbol. It is not reseeded on `fork`: a process that forks without `exec` should
    /// create sessions in one of the two processes only.
    pub fn nanoid() -> Self {
        Self {
            generate: Arc::new(|| random_id(21)),
            validate: Arc::new(|id| url_safe(id, &[21])),
        }
    }

    /// Interop with express-session: makes 32-character ids (192 bits, the length of
    /// express-session's `uid-safe` ids: 24 bytes in URL-safe base64) and accepts both those
    /// and nanoid ids.
    pub fn express_compatible() -> Self {
        Self {
            generate: Arc::new(|| random_id(32)),
            validate: Arc::new(|id| url_safe(id, &[21, 32])),
        }
    }

    /// A custom generator with its own validator. Ids longer than [`MAX_ID_LEN`] or holding
    /// control characters, spaces or `;` are rejected before `validate` is asked.
    pub fn custom(
        generate: impl Fn() -> String + Send + Sync + 'static,
        validate: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            generate: Arc::new(generate),
            validate: Arc::new(validate),
        }
    }

    /// A fresh id.
    pub fn generate(&self) -> SessionId {
        SessionId::new((self.generate)())
    }

    /// Whether `id` could be one of ours.
    pub fn is_valid(&self, id: &str) -> bool {
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && !id.bytes().any(|b| NEVER_IN_ID[usize::from(b)])
            && (self.validate)(id)
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::nanoid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let id = SessionId::new("secret-id-value");
        assert!(!format!("{id:?}").contains("secret"));
    }

    #[test]
    fn nanoid_ids_are_valid_and_distinct() {
        let g = IdGenerator::nanoid();
        let a = g.generate();
        let b = g.generate();
        assert_eq!(a.as_str().len(), 21);
        assert!(g.is_valid(a.as_str()));
        assert_ne!(a, b);
        assert!(!g.is_valid("short"));
        assert!(!g.is_valid("aaaaaaaaaaaaaaaaaaa;a"));
        assert!(!g.is_valid(&"a".repeat(32)));
    }

    #[test]
    fn express_ids() {
        let g = IdGenerator::express_compatible();
        let id = g.generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(g.is_valid(id.as_str()));
        assert!(g.is_valid(IdGenerator::nanoid().generate().as_str()));
    }

    #[test]
    fn byte_tables_match_the_character_classes() {
        let g = IdGenerator::nanoid();
        let base = "A".repeat(20);
        for b in 0..=255u8 {
            let url_safe = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
            assert_eq!(URL_SAFE[usize::from(b)], url_safe, "{b}");
            let never = b.is_ascii_control() || b" ;,".contains(&b);
            assert_eq!(NEVER_IN_ID[usize::from(b)], never, "{b}");
            if b.is_ascii() {
                let id = format!("{base}{}", char::from(b));
                assert_eq!(g.is_valid(&id), url_safe, "{b}");
            }
        }
    }
}
