//! The payload envelope: how a [`Record`]'s data, codec, lifetime fields, owner, label and
//! foreign fields are laid out as bytes ([`Record::encode_payload`] /
//! [`Record::decode_payload`]), and the shaped variant `MemoryStore` keeps, which records
//! where its entries are so reading it back walks nothing. The MessagePack entries inside
//! are `msgpack.rs`'s; [`Data`] reads them in place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::data::{Data, INDEX_FROM, Piece};
use crate::error::{Error, Result};
use crate::msgpack::{PayloadWrite, bin_len, map_header_len, put_entry, read_bin_map, str_len};
use crate::record::{Codec, Lifetime, MAX_LABEL_LEN, MAX_LIFETIME, MAX_OWNER_LEN, Record};

/// First byte of every payload envelope.
const PAYLOAD_MAGIC: u8 = 0xA5;
/// Envelope format version written by this release. Format 1 (no lifetime fields) is still
/// read: its records load with no creation time and the manager's lifetime.
const PAYLOAD_FORMAT: u8 = 2;
/// Lifetime flags of format 2: a creation time follows.
const META_CREATED: u8 = 1;
/// A `max_age` in milliseconds follows ([`Lifetime::MaxAge`]).
const META_MAX_AGE: u8 = 2;
/// [`Lifetime::BrowserSession`].
const META_BROWSER_SESSION: u8 = 4;
/// An owner follows (`u16` length, UTF-8).
const META_OWNER: u8 = 8;
/// A label follows (`u16` length, UTF-8).
const META_LABEL: u8 = 16;
/// Every flag this release knows.
const META_ALL: u8 = META_CREATED | META_MAX_AGE | META_BROWSER_SESSION | META_OWNER | META_LABEL;

/// The owner of the record [`Record::encode_shaped`] wrote after a prefix of `start` bytes,
/// read from the envelope's fields without decoding the rest; `None` without an owner (or
/// for bytes that are not such a record).
pub(crate) fn shaped_owner(bytes: &[u8], start: usize) -> Option<&str> {
    let payload = bytes.get(start.checked_add(4)?..)?;
    let [PAYLOAD_MAGIC, PAYLOAD_FORMAT, _, flags, rest @ ..] = payload else {
        return None;
    };
    if flags & META_OWNER == 0 {
        return None;
    }
    let fixed = [META_CREATED, META_MAX_AGE]
        .iter()
        .filter(|flag| flags & **flag != 0)
        .count()
        * 8;
    let (len, rest) = rest.get(fixed..)?.split_first_chunk::<2>()?;
    std::str::from_utf8(rest.get(..usize::from(u16::from_be_bytes(*len)))?).ok()
}

/// The tag of `codec` in the envelope.
const fn codec_tag(codec: Codec) -> u8 {
    match codec {
        Codec::MessagePack => 1,
        Codec::Json => 2,
    }
}

/// The codec of an envelope's tag.
const fn codec_of_tag(tag: u8) -> Option<Codec> {
    match tag {
        1 => Some(Codec::MessagePack),
        2 => Some(Codec::Json),
        _ => None,
    }
}

impl Record {
    /// Encodes data, codec, lifetime fields and extra fields (not expiry or version, which the
    /// backend keeps in its own fields) into a versioned binary envelope:
    /// `0xA5, format, codec tag`, a flags byte (1: creation time, 2: `max_age`, 4: browser
    /// session, 8: owner, 16: label) followed by the creation time (`i64` ms since the
    /// epoch), the `max_age` (`u64` ms), the owner and the label (each a `u16` length and
    /// UTF-8), all big-endian and present only if flagged, then a MessagePack map of
    /// key → bin, then the extra fields as a MessagePack map.
    pub fn encode_payload(&self) -> Vec<u8> {
        let extra = self.extra_json();
        let mut out = Vec::with_capacity(self.payload_len(&extra).1);
        self.write_payload(&mut out, &extra, None);
        out
    }

    /// What `MemoryStore` keeps per session, in one allocation of the exact size: `prefix`,
    /// the length of the payload (`u32`, little-endian), the payload
    /// ([`Record::encode_payload`]), then its shape, so that reading it back walks nothing:
    /// where the data entries end and their total size (`u32` each), and for maps of more
    /// than a few keys the offset of each entry (`u32` each). Offsets count from the start of
    /// the allocation. A payload too long for `u32` offsets (4 GiB) is written with the
    /// length `u32::MAX` and no shape; [`Record::decode_shaped`] then walks it.
    pub(crate) fn encode_shaped(&self, prefix: &[u8]) -> Arc<[u8]> {
        let extra = self.extra_json();
        let (entries, payload_len) = self.payload_len(&extra);
        let n = self.data.len();
        let trailer = 8 + if n > INDEX_FROM { 4 * n } else { 0 };
        let payload_at = prefix.len() + 4;
        let payload_end = payload_at + payload_len;
        let shaped = u32::try_from(payload_end + trailer).is_ok();
        let len = if shaped {
            payload_end + trailer
        } else {
            payload_end
        };
        let mut bytes: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        let Some(buf) = Arc::get_mut(&mut bytes) else {
            return bytes;
        };
        let (payload, tail) = buf.split_at_mut(payload_end);
        let word = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        let mut out: &mut [u8] = &mut *payload;
        out.put(prefix);
        out.put(&word(if shaped { payload_len } else { usize::MAX }));
        if !shaped {
            self.write_payload(&mut out, &extra, None);
            debug_assert!(out.is_empty(), "payload length mismatch");
            return bytes;
        }
        let entries_at = payload_at + 3 + self.meta_len() + map_header_len(n);
        // Fixed-size words: copied in place, not through `put`.
        let mut words = tail.chunks_exact_mut(4);
        let mut push = |n: usize| {
            if let Some(w) = words.next() {
                w.copy_from_slice(&word(n));
            }
        };
        push(entries_at + entries);
        push(self.data.size());
        if n > INDEX_FROM {
            self.write_payload(&mut out, &extra, Some(&mut |at| push(entries_at + at)));
        } else {
            self.write_payload(&mut out, &extra, None);
        }
        debug_assert!(out.is_empty(), "payload length mismatch");
        debug_assert!(words.next().is_none(), "trailer length mismatch");
        bytes
    }

    /// The length of the lifetime and owner fields of the envelope.
    fn meta_len(&self) -> usize {
        1 + if self.created.is_some() { 8 } else { 0 }
            + if matches!(self.lifetime, Some(Lifetime::MaxAge(_))) {
                8
            } else {
                0
            }
            + self.owner.as_ref().map_or(0, |o| 2 + o.len())
            + self.label.as_ref().map_or(0, |l| 2 + l.len())
    }

    /// Writes the lifetime and owner fields: flags byte, then the flagged values.
    fn write_meta<W: PayloadWrite>(&self, out: &mut W) {
        let (fixed, len) = self.meta();
        let mut flags = fixed[0];
        let texts = [(META_OWNER, &self.owner), (META_LABEL, &self.label)];
        for (flag, text) in texts {
            if text.is_some() {
                flags |= flag;
            }
        }
        out.put(&[flags]);
        out.put(&fixed[1..len]);
        for (_, text) in texts {
            if let Some(text) = text {
                // Lengths are checked where owners and labels are set; cut defensively.
                let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
                out.put(&(bytes.len() as u16).to_be_bytes());
                out.put(bytes);
            }
        }
    }

    /// The fixed-size lifetime fields of the envelope: flags byte, then the flagged values.
    fn meta(&self) -> ([u8; 17], usize) {
        let mut out = [0u8; 17];
        let mut len = 1;
        if let Some(created) = self.created {
            out[0] |= META_CREATED;
            let millis = (created.unix_timestamp_nanos() / 1_000_000) as i64;
            out[len..len + 8].copy_from_slice(&millis.to_be_bytes());
            len += 8;
        }
        match self.lifetime {
            None => {}
            Some(Lifetime::BrowserSession) => out[0] |= META_BROWSER_SESSION,
            Some(Lifetime::MaxAge(d)) => {
                out[0] |= META_MAX_AGE;
                let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                out[len..len + 8].copy_from_slice(&millis.to_be_bytes());
                len += 8;
            }
        }
        (out, len)
    }

    fn extra_json(&self) -> Vec<(&str, Vec<u8>)> {
        self.extra
            .iter()
            .map(|(k, v)| (k.as_str(), serde_json::to_vec(v).unwrap_or_default()))
            .collect()
    }

    /// The exact length of the data entries and of the whole envelope that
    /// [`Record::write_payload`] writes.
    fn payload_len(&self, extra: &[(&str, Vec<u8>)]) -> (usize, usize) {
        let entries = self.data.encoded_len();
        let extra_bytes: usize = extra
            .iter()
            .map(|(k, v)| str_len(k.len()) + bin_len(v.len()))
            .sum();
        let total = 3
            + self.meta_len()
            + map_header_len(self.data.len())
            + entries
            + map_header_len(extra.len())
            + extra_bytes;
        (entries, total)
    }

    /// Writes the envelope into `out` (a `Vec` or a slice of [`Record::payload_len`] bytes;
    /// writing into either cannot fail once sized; lengths above u32::MAX are impossible in
    /// practice).
    ///
    /// `entry_at`, if given, is called with the offset of every data entry, counted from the
    /// first.
    fn write_payload<W: PayloadWrite>(
        &self,
        out: &mut W,
        extra: &[(&str, Vec<u8>)],
        mut entry_at: Option<&mut dyn FnMut(usize)>,
    ) {
        out.put(&[PAYLOAD_MAGIC, PAYLOAD_FORMAT, codec_tag(self.codec)]);
        self.write_meta(out);
        let _ = rmp::encode::write_map_len(out, self.data.len() as u32);
        let mut pos = 0;
        let copy = |out: &mut W,
                    run: &[u8],
                    from: usize,
                    pos: &mut usize,
                    entry_at: &mut Option<&mut dyn FnMut(usize)>| {
            out.put(run);
            if let Some(f) = entry_at.as_deref_mut() {
                let at = *pos;
                self.data.run_offsets(run, from, |offset| f(at + offset));
            }
            *pos += run.len();
        };
        match self.data.unchanged_entries() {
            Some((entries, from)) => copy(out, entries, from, &mut pos, &mut entry_at),
            None => {
                for piece in self.data.pieces() {
                    match piece {
                        Piece::Encoded(run, from) => copy(out, run, from, &mut pos, &mut entry_at),
                        Piece::Entry(key, value) => {
                            if let Some(f) = entry_at.as_deref_mut() {
                                f(pos);
                            }
                            put_entry(out, key, value);
                            pos += str_len(key.len()) + bin_len(value.len());
                        }
                    }
                }
            }
        }
        let _ = rmp::encode::write_map_len(out, extra.len() as u32);
        for (key, json) in extra {
            put_entry(out, key, json);
        }
    }

    /// Decodes an envelope written by [`Record::encode_payload`]; expiry and version come from
    /// the backend's own fields. Garbage gives an error, never a panic. The values stay in
    /// one shared copy of `bytes` and are read from there ([`Data`]), so nothing is copied
    /// per key.
    pub fn decode_payload(bytes: &[u8], expires: OffsetDateTime, version: u64) -> Result<Self> {
        let end = bytes.len();
        Self::decode_envelope(
            Arc::from(bytes),
            0,
            end,
            DataRead::Checked,
            expires,
            version,
        )
    }

    /// Reads back what [`Record::encode_shaped`] wrote after a prefix of `start` bytes.
    pub(crate) fn decode_shaped(
        bytes: Arc<[u8]>,
        start: usize,
        expires: OffsetDateTime,
        version: u64,
    ) -> Result<Self> {
        let word = |at: usize| -> Option<usize> {
            let w = bytes.get(at..)?.first_chunk::<4>()?;
            usize::try_from(u32::from_le_bytes(*w)).ok()
        };
        let too_short = || Error::corrupt("payload", "payload too short".to_owned());
        let payload_len = word(start).ok_or_else(too_short)?;
        let payload_at = start + 4;
        if payload_len == u32::MAX as usize {
            let end = bytes.len();
            // Too long to be shaped (4 GiB): read as bytes from outside would be.
            return Self::decode_envelope(
                bytes,
                payload_at,
                end,
                DataRead::Checked,
                expires,
                version,
            );
        }
        let end = payload_at + payload_len;
        let (Some(entries_end), Some(size)) = (word(end), word(end + 4)) else {
            return Err(too_short());
        };
        let read = DataRead::Shaped {
            entries_end,
            size,
            index_at: end + 8,
        };
        Self::decode_envelope(bytes, payload_at, end, read, expires, version)
    }

    /// Decodes the envelope in `bytes[start..end]`.
    fn decode_envelope(
        bytes: Arc<[u8]>,
        start: usize,
        end: usize,
        read: DataRead,
        expires: OffsetDateTime,
        version: u64,
    ) -> Result<Self> {
        let corrupt = |what: &str| Error::corrupt("payload", what.to_owned());
        let envelope = bytes.get(start..end).unwrap_or_default();
        let [magic, format, tag, ..] = *envelope else {
            return Err(corrupt("payload too short"));
        };
        if magic != PAYLOAD_MAGIC {
            return Err(corrupt("not a session payload"));
        }
        if format != 1 && format != PAYLOAD_FORMAT {
            return Err(corrupt("unknown payload format version"));
        }
        let codec = codec_of_tag(tag).ok_or_else(|| corrupt("unknown value codec"))?;
        let mut at = start + 3;
        let (mut created, mut lifetime, mut owner, mut label) = (None, None, None, None);
        if format >= 2 {
            let mut meta = &envelope[3..];
            let (&flags, rest) = meta
                .split_first()
                .ok_or_else(|| corrupt("payload too short"))?;
            meta = rest;
            let mut word = || -> Result<[u8; 8]> {
                let (w, rest) = meta
                    .split_first_chunk::<8>()
                    .ok_or_else(|| corrupt("payload too short"))?;
                meta = rest;
                Ok(*w)
            };
            if flags & !META_ALL != 0
                || flags & META_MAX_AGE != 0 && flags & META_BROWSER_SESSION != 0
            {
                return Err(corrupt("unknown lifetime flags"));
            }
            if flags & META_CREATED != 0 {
                let millis = i128::from(i64::from_be_bytes(word()?));
                created = Some(
                    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
                        .map_err(|_| corrupt("creation time out of range"))?,
                );
            }
            if flags & META_MAX_AGE != 0 {
                let max_age = Duration::from_millis(u64::from_be_bytes(word()?));
                if max_age.is_zero() || max_age > MAX_LIFETIME {
                    return Err(corrupt("max_age out of range"));
                }
                lifetime = Some(Lifetime::MaxAge(max_age));
            }
            if flags & META_BROWSER_SESSION != 0 {
                lifetime = Some(Lifetime::BrowserSession);
            }
            let mut text = |limit: usize| -> Result<String> {
                let (len, rest) = meta
                    .split_first_chunk::<2>()
                    .ok_or_else(|| corrupt("payload too short"))?;
                let len = usize::from(u16::from_be_bytes(*len));
                let (bytes, rest) = rest
                    .split_at_checked(len)
                    .ok_or_else(|| corrupt("payload too short"))?;
                meta = rest;
                if len > limit {
                    return Err(corrupt("owner or label too long"));
                }
                String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("owner or label not UTF-8"))
            };
            if flags & META_OWNER != 0 {
                owner = Some(text(MAX_OWNER_LEN)?);
            }
            if flags & META_LABEL != 0 {
                label = Some(text(MAX_LABEL_LEN)?);
            }
            at = end - meta.len();
        }
        let data = match read {
            DataRead::Checked => Data::read_shared(&bytes, &mut at),
            DataRead::Shaped {
                entries_end,
                size,
                index_at,
            } => Data::read_shaped(&bytes, &mut at, entries_end, size, index_at),
        }
        .filter(|_| at <= end)
        .ok_or_else(|| corrupt("malformed data map"))?;
        let mut input = &bytes[at..end];
        let raw_extra = read_bin_map(&mut input).ok_or_else(|| corrupt("malformed extra map"))?;
        if !input.is_empty() {
            return Err(corrupt("trailing bytes after payload"));
        }
        let mut extra = BTreeMap::new();
        for (key, json) in raw_extra {
            let value = serde_json::from_slice(json).map_err(|e| Error::corrupt("payload", e))?;
            extra.insert(key.to_owned(), value);
        }
        Ok(Self {
            data,
            expires,
            version,
            codec,
            extra,
            created,
            lifetime,
            owner,
            label,
        })
    }
}

/// How [`Record::decode_envelope`] reads the data map.
enum DataRead {
    /// Every key checked (bytes from outside this process).
    Checked,
    /// Written by [`Record::encode_shaped`], whose shape is read instead of walking.
    Shaped {
        entries_end: usize,
        size: usize,
        index_at: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_shaped_record_is_read_in_place() {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        r.data.insert("a".into(), vec![1]);
        assert_eq!(shaped_owner(&r.encode_shaped(b"xyz"), 3), None);
        r.owner = Some("ann ü".into());
        r.label = Some("Firefox".into());
        for created in [None, Some(time::macros::datetime!(2026-12-04 08:00 UTC))] {
            for lifetime in [
                None,
                Some(Lifetime::BrowserSession),
                Some(Lifetime::MaxAge(Duration::from_secs(60))),
            ] {
                r.created = created;
                r.lifetime = lifetime;
                let shaped = r.encode_shaped(b"xyz");
                assert_eq!(shaped_owner(&shaped, 3), Some("ann ü"));
                assert_eq!(shaped_owner(&shaped[..shaped.len() / 4], 3), None);
            }
        }
        assert_eq!(shaped_owner(b"", 3), None);
        assert_eq!(shaped_owner(&[0; 64], usize::MAX), None);
    }

    #[test]
    fn payload_round_trip() {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        r.data.insert("a".into(), vec![1, 2, 3]);
        r.data.insert("ü".into(), vec![]);
        r.extra
            .insert("cookie".into(), serde_json::json!({"path": "/"}));
        let bytes = r.encode_payload();
        let back = Record::decode_payload(&bytes, r.expires, 0).unwrap();
        assert_eq!(back, r);
        let created = Some(time::macros::datetime!(2026-12-04 08:00:00.123 UTC));
        for lifetime in [
            None,
            Some(Lifetime::BrowserSession),
            Some(Lifetime::MaxAge(Duration::from_millis(1))),
            Some(Lifetime::MaxAge(MAX_LIFETIME)),
        ] {
            for created in [None, created] {
                r.created = created;
                r.lifetime = lifetime;
                let bytes = r.encode_payload();
                assert_eq!(Record::decode_payload(&bytes, r.expires, 0).unwrap(), r);
                let shaped = r.encode_shaped(b"");
                assert_eq!(Record::decode_shaped(shaped, 0, r.expires, 0).unwrap(), r);
            }
        }
    }

    #[test]
    fn format_1_payloads_still_load() {
        // `0xA5, 1, MessagePack`, {"a": bin [1]}, {}: what the first release wrote.
        let bytes = b"\xa5\x01\x01\x81\xa1a\xc4\x01\x01\x80";
        let record = Record::decode_payload(bytes, OffsetDateTime::UNIX_EPOCH, 3).unwrap();
        assert_eq!(record.data.get("a"), Some(&[1u8][..]));
        assert_eq!(
            (record.created, record.lifetime, record.version),
            (None, None, 3)
        );
    }

    #[test]
    fn bad_lifetime_fields_are_errors() {
        let ms = |n: u64| n.to_be_bytes();
        let good = [0xa5, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x80];
        assert!(Record::decode_payload(&good, OffsetDateTime::UNIX_EPOCH, 0).is_ok());
        for meta in [
            vec![8],                                   // unknown flag
            vec![2 | 4],                               // max age and browser session
            vec![1, 0, 0],                             // creation time cut short
            [&[2][..], &ms(0)].concat(),               // zero max age
            [&[2][..], &ms(u64::MAX)].concat(),        // beyond 400 days
            [&[1][..], &ms(i64::MAX as u64)].concat(), // creation time out of range
        ] {
            let bytes = [&[0xa5, 2, 1][..], &meta, &[0x80, 0x80]].concat();
            assert!(
                Record::decode_payload(&bytes, OffsetDateTime::UNIX_EPOCH, 0).is_err(),
                "{meta:?}"
            );
        }
    }

    #[test]
    fn payload_lengths_are_exact_at_every_header_size() {
        for key_len in [0, 31, 32, 255, 256, 65535, 65536] {
            for value_len in [0, 255, 256, 65535, 65536] {
                let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
                r.data.insert("k".repeat(key_len), vec![7; value_len]);
                r.extra.insert("x".repeat(key_len), serde_json::json!(1));
                // Both lifetime fields: 17 bytes between the codec tag and the data map.
                r.created = Some(OffsetDateTime::UNIX_EPOCH);
                r.lifetime = Some(Lifetime::MaxAge(Duration::from_secs(60)));
                let vec = r.encode_payload();
                // The entry is what `rmp` writes.
                let mut entry = Vec::new();
                rmp::encode::write_str(&mut entry, &"k".repeat(key_len)).unwrap();
                rmp::encode::write_bin(&mut entry, &vec![7; value_len]).unwrap();
                assert_eq!(
                    &vec[21..21 + entry.len()],
                    &entry[..],
                    "{key_len} {value_len}"
                );
                let shaped = r.encode_shaped(b"id");
                assert_eq!(&shaped[..2], b"id");
                assert_eq!(shaped[2..6], (vec.len() as u32).to_le_bytes());
                assert_eq!(&shaped[6..6 + vec.len()], &vec[..], "{key_len} {value_len}");
                assert_eq!(Record::decode_payload(&vec, r.expires, 0).unwrap(), r);
                assert_eq!(Record::decode_shaped(shaped, 2, r.expires, 0).unwrap(), r);
            }
        }
        let mut many = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::Json);
        many.lifetime = Some(Lifetime::MaxAge(Duration::from_secs(1)));
        for n in [15, 16, 65536] {
            many.data = (0..n).map(|i| (format!("{i:06}"), vec![1])).collect();
            let vec = many.encode_payload();
            assert_eq!(vec.len(), vec.capacity());
            let shaped = many.encode_shaped(b"");
            assert_eq!(&shaped[4..4 + vec.len()], &vec[..]);
            let back = Record::decode_shaped(shaped, 0, many.expires, 0).unwrap();
            assert_eq!(back, many);
            for (key, value) in many.data.iter() {
                assert_eq!(back.data.get(key), Some(value));
            }
            assert_eq!(back.data_size(), many.data_size());
            let back = Record::decode_payload(&vec, many.expires, 0).unwrap();
            assert_eq!(back, many);
            // Re-encoding an unchanged decoded record copies its entries.
            assert_eq!(back.encode_payload(), vec);
        }
    }

    #[test]
    fn garbage_payloads_are_errors() {
        let good = {
            let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::Json);
            r.data.insert("k".into(), b"\"v\"".to_vec());
            r.encode_payload()
        };
        for cut in 0..good.len() {
            assert!(Record::decode_payload(&good[..cut], OffsetDateTime::UNIX_EPOCH, 0).is_err());
        }
        for bad in [
            &b"\xA5\x01\x01\xdf\xff\xff\xff\xff"[..],
            b"{}",
            b"\xA5\x02\x01\x80\x80",
        ] {
            assert!(Record::decode_payload(bad, OffsetDateTime::UNIX_EPOCH, 0).is_err());
        }
    }

    #[test]
    fn shaped_rewrites_of_changed_records_index_every_entry() {
        let mut next = crate::data::tests::xorshift(0x853c_49e6_748f_ea9b_u64);
        for n in [0, 3, INDEX_FROM, INDEX_FROM + 1, 12, 40] {
            let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
            for i in 0..n {
                r.data
                    .insert(format!("k{:03}", i * 2), vec![b'v'; 1 + i % 5]);
            }
            let mut bytes = r.encode_shaped(b"p");
            for round in 0..60 {
                let mut back = Record::decode_shaped(bytes, 1, r.expires, 0).unwrap();
                assert_eq!(back.data, r.data, "{n} keys, round {round}");
                for _ in 0..next(4) {
                    let key = format!("k{:03}", next(2 * n + 3));
                    if next(3) == 0 {
                        back.data.remove(&key);
                        r.data.remove(&key);
                    } else {
                        let value = vec![b'w'; next(300)];
                        back.data.insert(key.clone(), value.clone());
                        r.data.insert(key, value);
                    }
                }
                bytes = back.encode_shaped(b"p");
                let again = Record::decode_shaped(bytes.clone(), 1, r.expires, 0).unwrap();
                for (key, value) in r.data.iter() {
                    assert_eq!(again.data.get(key), Some(value), "{n} keys, round {round}");
                }
                assert_eq!(again.data.get("k999"), None);
                assert_eq!(again.data_size(), r.data_size());
                assert_eq!(again.encode_payload(), r.encode_payload());
            }
        }
    }

    #[test]
    fn damaged_shaped_bytes_give_errors_or_misses_never_panics() {
        let mut r = Record::new(OffsetDateTime::UNIX_EPOCH, Codec::MessagePack);
        for i in 0..10 {
            r.data.insert(format!("key{i}"), vec![i; 3]);
        }
        let good = r.encode_shaped(b"\x00\x02id");
        let back = Record::decode_shaped(good.clone(), 4, r.expires, 0).unwrap();
        assert_eq!(back, r);
        let probe = |bytes: Arc<[u8]>| {
            if let Ok(d) = Record::decode_shaped(bytes, 4, r.expires, 0) {
                for i in 0..11 {
                    let _ = d.data.get(&format!("key{i}"));
                }
                let _ = d.data.iter().count();
                let _ = d.encode_payload();
            }
        };
        for cut in 0..good.len() {
            probe(Arc::from(&good[..cut]));
        }
        for at in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.to_vec();
                bad[at] ^= flip;
                probe(Arc::from(bad));
            }
        }
    }
}
