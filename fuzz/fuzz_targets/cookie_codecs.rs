//! The cookie codecs on their own: `SignedCodec::unsign`, `PrivateCodec::open`, their
//! `CookieCodec::decode`, and round trips of `sign`/`seal` for arbitrary values.
//!
//! Byte 0 picks the check; the rest (lossy UTF-8) is the input:
//! - 0: `unsign` / `decode` of arbitrary text never panics, and whatever verifies re-signs
//!   to the same text with one of the secrets;
//! - 1: `open` / `decode` of arbitrary text never panics;
//! - 2: `unsign(sign(v)) == v` and `open(seal(v)) == v` for any value; a sealed value does
//!   not open under another cookie name or another key;
//! - 3: a valid signature with the rest spliced in never verifies unless unchanged.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_store::{CookieCodec, PrivateCodec, SignedCodec};

struct Codecs {
    signed: SignedCodec,
    private: PrivateCodec,
    other_key: PrivateCodec,
}

const SECRETS: [&str; 2] = ["new secret", "keyboard cat"];

fn codecs() -> &'static Codecs {
    static CODECS: OnceLock<Codecs> = OnceLock::new();
    CODECS.get_or_init(|| Codecs {
        signed: SignedCodec::new(SECRETS).expect("secrets"),
        private: PrivateCodec::from_secrets([[7u8; 32], [9u8; 32]]).expect("keys"),
        other_key: PrivateCodec::from_secrets([[8u8; 32]]).expect("key"),
    })
}

fuzz_target!(|data: &[u8]| {
    let [which, rest @ ..] = data else {
        return;
    };
    let c = codecs();
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => {
            if let Some(value) = c.signed.unsign(&text) {
                assert!(
                    SECRETS
                        .iter()
                        .any(|s| SignedCodec::sign(s.as_bytes(), &value) == text),
                    "a signature verified that no secret made"
                );
            }
            let _ = c.signed.decode("sid", &text);
        }
        1 => {
            let _ = c.private.open("sid", &text);
            let _ = c.private.decode("sid", &text);
        }
        2 => {
            for secret in SECRETS {
                let signed = SignedCodec::sign(secret.as_bytes(), &text);
                assert_eq!(c.signed.unsign(&signed).as_deref(), Some(&*text));
            }
            let encoded = c.signed.encode("sid", &text);
            assert_eq!(c.signed.decode("sid", &encoded).as_deref(), Some(&*text));
            let sealed = c.private.seal("sid", &text);
            assert_eq!(c.private.open("sid", &sealed).as_deref(), Some(&*text));
            assert_eq!(c.private.open("other", &sealed), None);
            assert_eq!(c.other_key.open("sid", &sealed), None);
        }
        _ => {
            let good = SignedCodec::sign(SECRETS[1].as_bytes(), "abcdefghijklmnopqrstu");
            let (&at, patch) = rest.split_first().unwrap_or((&0, &[]));
            let at = usize::from(at) % (good.len() + 1);
            let patch = String::from_utf8_lossy(patch);
            let mut tampered = String::from_utf8_lossy(&good.as_bytes()[..at]).into_owned();
            tampered.push_str(&patch);
            let tail = good.as_bytes().get(at + patch.len()..).unwrap_or(&[]);
            tampered.push_str(&String::from_utf8_lossy(tail));
            if tampered != good {
                assert_eq!(
                    c.signed.unsign(&tampered),
                    None,
                    "tampered signature accepted"
                );
            }
        }
    }
});
