//! Session data encrypted at rest ([`DataKeys`], through
//! [`SessionManagerBuilder::encrypt_data`](crate::SessionManagerBuilder::encrypt_data)).
//!
//! The manager seals a record's data before any store sees it: AES-256-GCM under the first
//! key, a fresh random nonce per write, and the session's store key as associated data, so a
//! sealed record copied to another session's key does not open. The sealed record holds one
//! data entry, [`SEALED_KEY`]: a format byte, the key's 4-byte fingerprint (so rotation finds
//! the right key without trying each), the 12-byte nonce, then the ciphertext of the data
//! map (as [`Record::encode_payload`] writes it) with its tag. Expiry, version, creation
//! time, lifetime, owner and label stay readable: stores need them (expiry, owner index).

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use crate::data::Data;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::record::Record;

/// The one data key of a sealed record.
pub const SEALED_KEY: &str = "\u{0}sealed";
/// The format byte of a sealed value.
const FORMAT: u8 = 1;

/// The keys session data is encrypted with at rest: the first encrypts, every one decrypts
/// (rotation: put a new key first, keep the old ones until the sessions they sealed have
/// expired). `Debug` shows how many keys, never a key.
#[derive(Clone)]
pub struct DataKeys {
    keys: Arc<[([u8; 4], Aes256Gcm)]>,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl DataKeys {
    /// Keys from 32-byte secrets (random bytes, e.g. from a secret manager), newest first.
    /// Fails for an empty list or two equal keys.
    pub fn new(secrets: impl IntoIterator<Item = [u8; 32]>) -> Result<Self> {
        let mut keys: Vec<([u8; 4], Aes256Gcm)> = Vec::new();
        for secret in secrets {
            let digest = Sha256::new()
                .chain_update(b"session-store data key v1\0")
                .chain_update(secret)
                .finalize();
            let fingerprint = [digest[0], digest[1], digest[2], digest[3]];
            if keys.iter().any(|(f, _)| *f == fingerprint) {
                return Err(Error::Config("two data keys are equal".into()));
            }
            keys.push((fingerprint, Aes256Gcm::new(&secret.into())));
        }
        if keys.is_empty() {
            return Err(Error::Config("at least one data key is needed".into()));
        }
        Ok(Self { keys: keys.into() })
    }

    /// `record` with its data sealed for the session stored under `key`.
    pub(crate) fn seal(&self, key: &SessionId, record: &Record) -> Record {
        let mut plain = Record::new(record.expires, record.codec);
        plain.data = record.data.clone();
        let plaintext = plain.encode_payload();
        let (fingerprint, cipher) = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let payload = Payload {
            msg: &plaintext,
            aad: key.as_str().as_bytes(),
        };
        // Encryption fails only past 64 GiB, far beyond any session the size limit allows.
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(1 + 4 + 12 + ciphertext.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(fingerprint);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        let mut out = record.clone();
        out.data = Data::new();
        out.data.insert(SEALED_KEY.to_owned(), sealed);
        out
    }

    /// `record` (read from under `key`) with its data opened. A record that is not sealed
    /// (written before encryption was turned on) is returned as it is; one that does not
    /// open (another key, another session's key, tampered bytes) is [`Error::Corrupt`].
    pub(crate) fn open(&self, key: &SessionId, mut record: Record) -> Result<Record> {
        let Some(sealed) = record.data.get(SEALED_KEY) else {
            return Ok(record);
        };
        let corrupt = |what: &str| Error::corrupt("encrypted data", what.to_owned());
        let [format, f0, f1, f2, f3, rest @ ..] = sealed else {
            return Err(corrupt("sealed value too short"));
        };
        if *format != FORMAT || rest.len() < 12 {
            return Err(corrupt("unknown sealed format"));
        }
        let fingerprint = [*f0, *f1, *f2, *f3];
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(f, _)| *f == fingerprint)
            .ok_or_else(|| corrupt("sealed with a key that is not configured"))?;
        let (nonce, ciphertext) = rest.split_at(12);
        let payload = Payload {
            msg: ciphertext,
            aad: key.as_str().as_bytes(),
        };
        let plaintext = cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| corrupt("does not authenticate"))?;
        let plain = Record::decode_payload(&plaintext, record.expires, record.version)?;
        record.data = plain.data;
        record.codec = plain.codec;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Codec;
    use time::OffsetDateTime;

    fn record() -> Record {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        r.data.insert("user".into(), b"\xa3ann".to_vec());
        r.owner = Some("ann".into());
        r
    }

    #[test]
    fn sealed_data_opens_only_under_its_key_and_keys() {
        let keys = DataKeys::new([[1; 32]]).unwrap();
        let key = SessionId::new("k1");
        let sealed = keys.seal(&key, &record());
        assert_eq!(sealed.data.keys().collect::<Vec<_>>(), [SEALED_KEY]);
        assert_eq!(
            sealed.owner.as_deref(),
            Some("ann"),
            "the owner stays readable"
        );
        let raw = sealed.data.get(SEALED_KEY).unwrap();
        assert!(!raw.windows(3).any(|w| w == b"ann"), "no plaintext");
        assert_eq!(keys.open(&key, sealed.clone()).unwrap(), record());
        // Another session's key, another key, a flipped bit: corrupt, never a panic.
        assert!(keys.open(&SessionId::new("k2"), sealed.clone()).is_err());
        let other = DataKeys::new([[2; 32]]).unwrap();
        assert!(other.open(&key, sealed.clone()).is_err());
        for at in 0..raw.len() {
            let mut bad = sealed.clone();
            let mut bytes = raw.to_vec();
            bytes[at] ^= 1;
            bad.data.insert(SEALED_KEY.into(), bytes);
            assert!(keys.open(&key, bad).is_err(), "bit flip at {at}");
        }
        // Rotation: a new first key still opens what the old one sealed.
        let rotated = DataKeys::new([[3; 32], [1; 32]]).unwrap();
        assert_eq!(rotated.open(&key, sealed).unwrap(), record());
        // Unsealed records pass through.
        assert_eq!(keys.open(&key, record()).unwrap(), record());
        assert!(DataKeys::new([]).is_err());
        assert!(DataKeys::new([[1; 32], [1; 32]]).is_err());
        assert!(!format!("{keys:?}").contains("1, 1"));
    }
}
