//! The one-way digests of a session id: the key a store keeps it under ([`stored_key`]) and
//! the handle that names it in a list of sessions ([`handle`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::id::SessionId;

/// The key a session is stored under when ids are hashed (the default; see
/// [`SessionManagerBuilder::hashed_ids`](crate::SessionManagerBuilder::hashed_ids) and
/// [`SessionManager::store_key`](crate::SessionManager::store_key)): a SHA-256 of the
/// id under a name of its own (so it is neither the id nor its handle), in URL-safe base64
/// (43 characters). One-way: a dump of the store gives no id a cookie could carry.
pub fn stored_key(id: &SessionId) -> SessionId {
    let digest = Sha256::new()
        .chain_update(b"session-store key v1\0")
        .chain_update(id.as_str().as_bytes())
        .finalize();
    SessionId::new(URL_SAFE_NO_PAD.encode(digest))
}

/// The handle of the session stored under `id` (its key: the digest of its id, or the id
/// where ids are kept raw): the first 128 bits of a SHA-256 of it under a name of its own (so
/// it is no other digest), in URL-safe base64. Ids carry at least 120 random bits, so a
/// handle can neither be guessed nor turned back into an id or a key.
pub(crate) fn handle(id: &SessionId) -> String {
    let digest = Sha256::new()
        .chain_update(b"session-store handle v1\0")
        .chain_update(id.as_str().as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_fixed_digests_of_the_id() {
        let id = SessionId::new("abc123");
        assert_eq!(handle(&id), handle(&SessionId::new("abc123")));
        assert_ne!(handle(&id), handle(&SessionId::new("abc124")));
        assert_eq!(handle(&id).len(), 22);
        assert!(!handle(&id).contains("abc123"));
    }
}
