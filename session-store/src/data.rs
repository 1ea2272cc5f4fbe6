//! [`Data`]: a session's values, read straight from the stored payload until changed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::iter::Peekable;
use std::ops::Index;
use std::sync::Arc;

/// A session's data: key → encoded value, iterated in key order (byte order of the keys).
///
/// It behaves like a `BTreeMap<String, Vec<u8>>`, with one difference in cost: data decoded
/// from a payload envelope keeps the payload's bytes and reads values from them in place,
/// so loading a session allocates nothing per key, and [`Data::get`] borrows from the
/// payload. Changes are kept beside those bytes and merged in key order when the data is
/// iterated or encoded again.
#[derive(Clone, Default)]
pub struct Data {
    /// Entries of a payload, checked when decoded: keys valid UTF-8, strictly ascending.
    base: Option<Base>,
    /// Changes over `base`: `Some` sets a value, `None` removes a key of `base`. Without a
    /// base, every entry is `Some`.
    changes: BTreeMap<String, Option<Vec<u8>>>,
    len: usize,
}

/// A MessagePack region of `str → bin` entries inside shared payload bytes.
#[derive(Clone)]
struct Base {
    bytes: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl Base {
    fn entries(&self) -> BaseIter<'_> {
        BaseIter {
            input: self.bytes.get(self.start..self.end).unwrap_or_default(),
        }
    }

    fn find(&self, key: &str) -> Option<&[u8]> {
        for (k, v) in self.entries() {
            match k.cmp(key) {
                Ordering::Less => {}
                Ordering::Equal => return Some(v),
                Ordering::Greater => return None,
            }
        }
        None
    }
}

/// Walks checked entries; stops (never panics) at anything malformed.
struct BaseIter<'a> {
    input: &'a [u8],
}

impl<'a> Iterator for BaseIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.input.is_empty() {
            return None;
        }
        let entry = read_entry(&mut self.input);
        if entry.is_none() {
            self.input = &[];
        }
        entry
    }
}

/// Reads one `str → bin` entry, checking every length against the input left.
pub(crate) fn read_entry<'a>(input: &mut &'a [u8]) -> Option<(&'a str, &'a [u8])> {
    let key_len = rmp::decode::read_str_len(input).ok()? as usize;
    let key = std::str::from_utf8(take(input, key_len)?).ok()?;
    let value_len = rmp::decode::read_bin_len(input).ok()? as usize;
    let value = take(input, value_len)?;
    Some((key, value))
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if input.len() < len {
        return None;
    }
    let (head, tail) = input.split_at(len);
    *input = tail;
    Some(head)
}

impl Data {
    /// No data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a MessagePack map of `str → bin` from `bytes[*at..]`, advancing `*at` past it.
    /// Keys in strictly ascending order (what [`Record::encode_payload`] writes) are kept
    /// in place; any other order is copied into a map, a repeated key keeping its last
    /// value. `None` if the map is malformed or runs past the input.
    ///
    /// [`Record::encode_payload`]: crate::Record::encode_payload
    pub(crate) fn read_shared(bytes: &Arc<[u8]>, at: &mut usize) -> Option<Self> {
        let mut input = bytes.get(*at..)?;
        let total = input.len();
        let len = rmp::decode::read_map_len(&mut input).ok()? as usize;
        // Each entry takes at least two bytes: refuse lengths the input cannot hold.
        if len > input.len() / 2 {
            return None;
        }
        let start = *at + (total - input.len());
        let mut sorted = true;
        let mut previous: Option<&str> = None;
        for _ in 0..len {
            let (key, _) = read_entry(&mut input)?;
            if previous.is_some_and(|p| p >= key) {
                sorted = false;
            }
            previous = Some(key);
        }
        let end = *at + (total - input.len());
        *at = end;
        let base = Base {
            bytes: bytes.clone(),
            start,
            end,
        };
        if sorted {
            return Some(Self {
                base: Some(base),
                changes: BTreeMap::new(),
                len,
            });
        }
        Some(
            base.entries()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        )
    }

    /// The encoded value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match self.changes.get(key) {
            Some(change) => change.as_deref(),
            None => self.base.as_ref()?.find(key),
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: String, value: Vec<u8>) {
        if !self.contains_key(&key) {
            self.len += 1;
        }
        self.changes.insert(key, Some(value));
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        if !self.contains_key(key) {
            return false;
        }
        self.len -= 1;
        let in_base = self.base.as_ref().is_some_and(|b| b.find(key).is_some());
        if in_base {
            self.changes.insert(key.to_owned(), None);
        } else {
            self.changes.remove(key);
        }
        true
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys and encoded values, in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            base: self
                .base
                .as_ref()
                .map(Base::entries)
                .into_iter()
                .flatten()
                .peekable(),
            changes: self.changes.iter().peekable(),
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Total size of keys and encoded values.
    pub fn size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The entries as an owned map.
    pub fn to_map(&self) -> BTreeMap<String, Vec<u8>> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect()
    }

    /// The payload bytes of the entries when nothing changed since they were decoded
    /// (the MessagePack entries, without the map header): re-encoding can copy them.
    pub(crate) fn unchanged_entries(&self) -> Option<&[u8]> {
        let base = self.base.as_ref()?;
        if self.changes.is_empty() {
            base.bytes.get(base.start..base.end)
        } else {
            None
        }
    }
}

type BaseEntries<'a> = std::iter::Flatten<std::option::IntoIter<BaseIter<'a>>>;

/// The entries of a [`Data`], in key order.
pub struct Iter<'a> {
    base: Peekable<BaseEntries<'a>>,
    changes: Peekable<btree_map::Iter<'a, String, Option<Vec<u8>>>>,
}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((b, _)), Some((c, _))) => (*b).cmp(c.as_str()),
            };
            if order == Ordering::Less {
                return self.base.next();
            }
            if order == Ordering::Equal {
                self.base.next();
            }
            let (key, change) = self.changes.next()?;
            if let Some(value) = change {
                return Some((key.as_str(), value.as_slice()));
            }
        }
    }
}

impl<'a> IntoIterator for &'a Data {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Data {}

impl Index<&str> for Data {
    type Output = [u8];

    /// The value under `key`; panics if it is absent (like `BTreeMap`'s index).
    fn index(&self, key: &str) -> &[u8] {
        match self.get(key) {
            Some(value) => value,
            None => panic!("no entry for this key in the session data"),
        }
    }
}

impl FromIterator<(String, Vec<u8>)> for Data {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        let changes: BTreeMap<String, Option<Vec<u8>>> =
            iter.into_iter().map(|(k, v)| (k, Some(v))).collect();
        Self {
            base: None,
            len: changes.len(),
            changes,
        }
    }
}

impl Extend<(String, Vec<u8>)> for Data {
    fn extend<I: IntoIterator<Item = (String, Vec<u8>)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl From<BTreeMap<String, Vec<u8>>> for Data {
    fn from(map: BTreeMap<String, Vec<u8>>) -> Self {
        map.into_iter().collect()
    }
}

impl fmt::Debug for Data {
    /// Keys and value sizes only: values may be personal data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Len(usize);
        impl fmt::Debug for Len {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} bytes>", self.0)
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, Len(v.len()))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(entries: &[(&str, &[u8])]) -> Arc<[u8]> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
        for (k, v) in entries {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_bin(&mut out, v).unwrap();
        }
        out.into()
    }

    fn shared(entries: &[(&str, &[u8])]) -> Data {
        let bytes = payload(entries);
        let mut at = 0;
        let data = Data::read_shared(&bytes, &mut at).unwrap();
        assert_eq!(at, bytes.len());
        data
    }

    #[test]
    fn reads_in_place_and_merges_changes_in_order() {
        let mut d = shared(&[("a", b"1"), ("c", b"3"), ("e", b"5")]);
        assert!(d.base.is_some());
        assert_eq!(d.get("c"), Some(&b"3"[..]));
        assert_eq!(d.get("b"), None);
        d.insert("b".into(), b"2".to_vec());
        d.insert("c".into(), b"33".to_vec());
        assert!(d.remove("e"));
        assert!(!d.remove("e"));
        assert!(!d.remove("zz"));
        d.insert("f".into(), b"6".to_vec());
        let got: Vec<(&str, &[u8])> = d.iter().collect();
        assert_eq!(
            got,
            vec![("a", &b"1"[..]), ("b", b"2"), ("c", b"33"), ("f", b"6")]
        );
        assert_eq!(d.len(), 4);
        let owned: Data = d.to_map().into();
        assert_eq!(owned, d);
        assert!(d.remove("b"));
        assert!(!d.changes.contains_key("b"));
        assert_eq!(d.len(), 3);
        d.insert("e".into(), b"5".to_vec());
        assert_eq!(
            d,
            shared(&[("a", b"1"), ("c", b"33"), ("e", b"5"), ("f", b"6")])
        );
    }

    #[test]
    fn unsorted_or_repeated_keys_are_copied_last_value_winning() {
        let d = shared(&[("b", b"1"), ("a", b"2"), ("b", b"3")]);
        assert!(d.base.is_none());
        assert_eq!(d.len(), 2);
        assert_eq!(d.get("b"), Some(&b"3"[..]));
        assert_eq!(d.keys().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn malformed_maps_are_refused() {
        let good = payload(&[("a", b"1"), ("b", b"2")]);
        for cut in 0..good.len() {
            let bytes: Arc<[u8]> = good[..cut].into();
            assert!(Data::read_shared(&bytes, &mut 0).is_none(), "cut at {cut}");
        }
        let bad_utf8: Arc<[u8]> = vec![0x81, 0xa1, 0xff, 0xc4, 0x00].into();
        assert!(Data::read_shared(&bad_utf8, &mut 0).is_none());
        let huge: Arc<[u8]> = vec![0xdf, 0xff, 0xff, 0xff, 0xff].into();
        assert!(Data::read_shared(&huge, &mut 0).is_none());
    }

    #[test]
    fn debug_shows_sizes_not_values() {
        let d: Data = [("token".to_owned(), b"secret".to_vec())]
            .into_iter()
            .collect();
        let text = format!("{d:?}");
        assert!(text.contains("token") && text.contains("6 bytes"));
        assert!(!text.contains("secret"));
    }
}
