//! Record decoding: the binary payload envelope, express-session JSON and value codecs.
//!
//! Byte 0 picks what the rest is fed to:
//! - 0: `Record::decode_payload`; an accepted payload re-encodes and decodes to the same
//!   record (data, codec, extra keys);
//! - 1: `ExpressLayout::decode`; an accepted session re-encodes with the layout and decodes
//!   to the same data keys;
//! - 2: `Codec::decode::<serde_json::Value>` with both codecs;
//! - 3: `Codec::same_value` on the rest split in two (at byte 1's position): reflexive and
//!   symmetric, for both codecs.
//!
//! Garbage must give an error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_store::express::ExpressLayout;
use session_store::time::OffsetDateTime;
use session_store::{Codec, Record};

const CODECS: [Codec; 2] = [Codec::MessagePack, Codec::Json];

fuzz_target!(|data: &[u8]| {
    let [which, rest @ ..] = data else {
        return;
    };
    let expires = OffsetDateTime::UNIX_EPOCH;
    match which % 4 {
        0 => {
            if let Ok(record) = Record::decode_payload(rest, expires, 7) {
                assert_eq!(record.version, 7);
                let bytes = record.encode_payload();
                let back =
                    Record::decode_payload(&bytes, expires, 7).expect("an encoded payload decodes");
                assert_eq!(back.data, record.data);
                assert_eq!(back.codec, record.codec);
                assert!(back.extra.keys().eq(record.extra.keys()));
                let _ = format!("{record:?}");
            }
        }
        1 => {
            let layout = ExpressLayout::default();
            if let Ok(record) = layout.decode(rest, expires, 3) {
                assert_eq!(record.codec, Codec::Json);
                assert!(!record.data.contains_key("cookie"));
                let json = layout
                    .encode(&record)
                    .expect("a decoded express session re-encodes");
                let back = layout
                    .decode(&json, expires, 3)
                    .expect("an encoded express session decodes");
                assert!(back.data.keys().eq(record.data.keys()));
            }
        }
        2 => {
            for codec in CODECS {
                let _ = codec.decode::<serde_json::Value>(rest);
                let _ = codec.decode::<String>(rest);
            }
        }
        _ => {
            let (&at, rest) = rest.split_first().unwrap_or((&0, &[]));
            let (a, b) = rest.split_at(usize::from(at).min(rest.len()));
            for codec in CODECS {
                assert!(codec.same_value(a, a));
                assert_eq!(codec.same_value(a, b), codec.same_value(b, a));
            }
        }
    }
});
