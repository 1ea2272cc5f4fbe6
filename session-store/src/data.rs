//! [`Data`]: a session's values, read straight from the stored payload until changed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::iter::Peekable;
use std::ops::Index;
use std::sync::Arc;

use crate::msgpack::{bin_len, key_str, read_key, read_raw_entry, str_len};

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
    /// base, every entry is `Some`. Shared between clones (a record snapshot of a session
    /// costs no copy) and copied on the first write after a clone; `None` when empty.
    changes: Option<Arc<Changes>>,
    len: usize,
    /// Total bytes of keys and values.
    size: usize,
}

/// A MessagePack region of `str → bin` entries inside shared payload bytes.
#[derive(Clone)]
struct Base {
    bytes: Arc<[u8]>,
    start: usize,
    end: usize,
    /// Offset in `bytes` of each entry, for binary search (maps of more than a few keys).
    index: Option<Offsets>,
}

/// The offsets of a [`Base`]'s entries.
#[derive(Clone)]
enum Offsets {
    /// In their own allocation, worked out when the payload was decoded.
    Owned(Arc<[u32]>),
    /// `len` little-endian `u32`s at `bytes[at..]`: the shape trailer of a payload this
    /// process wrote (see [`Data::read_shaped`]).
    Inline { at: usize, len: usize },
}

impl Offsets {
    fn len(&self) -> usize {
        match self {
            Offsets::Owned(offsets) => offsets.len(),
            Offsets::Inline { len, .. } => *len,
        }
    }

    /// The offset of entry `i`, if there is one.
    fn get(&self, bytes: &[u8], i: usize) -> Option<usize> {
        let offset = match self {
            Offsets::Owned(offsets) => *offsets.get(i)?,
            Offsets::Inline { at, len } => {
                if i >= *len {
                    return None;
                }
                let from = at.checked_add(i.checked_mul(4)?)?;
                u32::from_le_bytes(*bytes.get(from..)?.first_chunk::<4>()?)
            }
        };
        usize::try_from(offset).ok()
    }
}

/// Maps with more entries than this get an offset index.
pub(crate) const INDEX_FROM: usize = 6;

impl Base {
    fn entries(&self) -> BaseIter<'_> {
        BaseIter {
            input: self.bytes.get(self.start..self.end).unwrap_or_default(),
        }
    }

    fn find(&self, key: &str) -> Option<&[u8]> {
        self.find_raw(key).map(|raw| raw.value)
    }

    /// The entry under `key`. Keys were checked when decoded; byte order is `str` order.
    fn find_raw(&self, key: &str) -> Option<RawEntry<'_>> {
        let key = key.as_bytes();
        let Some(index) = &self.index else {
            return self
                .entries()
                .find(|raw| raw.key >= key)
                .filter(|raw| raw.key == key);
        };
        let low = self.first_not_below(index, key);
        self.entry_at(index, low).filter(|raw| raw.key == key)
    }

    /// The entry at position `i` of the index.
    fn entry_at<'a>(&'a self, index: &Offsets, i: usize) -> Option<RawEntry<'a>> {
        let offset = index.get(&self.bytes, i)?;
        BaseIter {
            input: self.bytes.get(offset..self.end)?,
        }
        .next()
    }

    /// The key of the entry at position `i` of the index (its value is not read).
    fn key_at(&self, index: &Offsets, i: usize) -> Option<&[u8]> {
        let offset = index.get(&self.bytes, i)?;
        read_key(&mut self.bytes.get(offset..self.end)?)
    }

    /// Position in the index of the first entry whose key is not below `key`.
    fn first_not_below(&self, index: &Offsets, key: &[u8]) -> usize {
        let (mut low, mut high) = (0, index.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.key_at(index, mid) {
                Some(k) if key_below(k, key) => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }

    /// Where `key` is or would go, searching from byte `from` on: the byte range of its
    /// entry, or an empty range at the first entry above it.
    fn locate(&self, key: &[u8], from: usize) -> (usize, usize) {
        if let Some(index) = &self.index {
            let i = self.first_not_below(index, key);
            let start = index.get(&self.bytes, i).unwrap_or(self.end);
            let end = match self.entry_at(index, i) {
                Some(raw) if raw.key == key => start + raw.encoded.len(),
                _ => start,
            };
            return (start.max(from), end.max(from));
        }
        let mut input = self.bytes.get(from..self.end).unwrap_or_default();
        loop {
            let start = self.end - input.len();
            match read_raw_entry(&mut input) {
                Some((k, _)) if k < key => {}
                Some((k, _)) if k == key => return (start, self.end - input.len()),
                _ => return (start, start),
            }
        }
    }
}

/// Walks checked entries; stops (never panics) at anything malformed.
struct BaseIter<'a> {
    input: &'a [u8],
}

/// One entry of a payload: key, value, and the whole encoded entry.
#[derive(Clone, Copy)]
struct RawEntry<'a> {
    key: &'a [u8],
    value: &'a [u8],
    encoded: &'a [u8],
}

impl<'a> Iterator for BaseIter<'a> {
    type Item = RawEntry<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.input.is_empty() {
            return None;
        }
        let before = self.input;
        match read_raw_entry(&mut self.input) {
            Some((key, value)) => Some(RawEntry {
                key,
                value,
                encoded: &before[..before.len() - self.input.len()],
            }),
            None => {
                self.input = &[];
                None
            }
        }
    }
}

/// The offset of each entry of `entries` (whole MessagePack `str → bin` entries, as
/// [`Data::pieces`] writes them), stopping at anything malformed.
pub(crate) fn entry_offsets(entries: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut input = entries;
    std::iter::from_fn(move || {
        let offset = entries.len() - input.len();
        read_raw_entry(&mut input).map(|_| offset)
    })
}

/// `a < b` in byte order, without a `memcmp` call for the short keys sessions use.
#[inline]
fn key_below(a: &[u8], b: &[u8]) -> bool {
    if a.len() > 16 || b.len() > 16 {
        return a < b;
    }
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x < y;
        }
    }
    a.len() < b.len()
}

/// Changed keys: `Some` value set, `None` removed.
type Changes = BTreeMap<String, Change>;

/// A changed key.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    /// The new value; `None`: removed.
    value: Option<Vec<u8>>,
    /// The byte range of the key's entry in the base, or the empty range where it would go
    /// (`None` without a base): found once, when the key is first changed, so encoding
    /// needs no second search.
    at: Option<(usize, usize)>,
}

/// What [`Data::find`] found: the length of the current value, and where the key is in the
/// base.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub(crate) len: Option<usize>,
    at: Option<(usize, usize)>,
}

static NO_CHANGES: Changes = BTreeMap::new();

impl Data {
    fn changes(&self) -> &Changes {
        self.changes.as_deref().unwrap_or(&NO_CHANGES)
    }

    fn changes_mut(&mut self) -> &mut Changes {
        Arc::make_mut(self.changes.get_or_insert_with(Default::default))
    }

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
        let mut size = 0;
        let mut previous: Option<&[u8]> = None;
        let mut offsets = Vec::with_capacity(if len > INDEX_FROM { len } else { 0 });
        for _ in 0..len {
            if len > INDEX_FROM {
                offsets.push(u32::try_from(bytes.len() - input.len()).ok()?);
            }
            let (key, value) = read_raw_entry(&mut input)?;
            size += key.len() + value.len();
            if !key.is_ascii() {
                std::str::from_utf8(key).ok()?;
            }
            // Byte order is `str` order.
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
            index: (len > INDEX_FROM).then(|| Offsets::Owned(offsets.into())),
        };
        if sorted {
            return Some(Self {
                base: Some(base),
                changes: None,
                len,
                size,
            });
        }
        // Keys were checked above.
        Some(
            base.entries()
                .filter_map(|e| Some((key_str(e.key)?.to_owned(), e.value.to_vec())))
                .collect(),
        )
    }

    /// [`Data::read_shared`] of a map this process encoded, whose shape was written beside
    /// it: its entries end at `entries_end`, their keys and values total `size` bytes, and
    /// for maps of more than [`INDEX_FROM`] entries the offset of each is a little-endian
    /// `u32` at `bytes[index_at..]`. Nothing is walked; a shape that does not fit `bytes`
    /// gives `None`, and wrong offsets within it can only make lookups miss, never panic.
    pub(crate) fn read_shaped(
        bytes: &Arc<[u8]>,
        at: &mut usize,
        entries_end: usize,
        size: usize,
        index_at: usize,
    ) -> Option<Self> {
        let mut input = bytes.get(*at..entries_end)?;
        let total = input.len();
        let len = rmp::decode::read_map_len(&mut input).ok()? as usize;
        let start = *at + (total - input.len());
        let index = if len > INDEX_FROM {
            let table = len.checked_mul(4)?;
            bytes.get(index_at..index_at.checked_add(table)?)?;
            Some(Offsets::Inline { at: index_at, len })
        } else {
            None
        };
        *at = entries_end;
        Some(Self {
            base: Some(Base {
                bytes: bytes.clone(),
                start,
                end: entries_end,
                index,
            }),
            changes: None,
            len,
            size,
        })
    }

    /// Whether both read the same payload bytes (or neither reads any).
    fn same_base(&self, other: &Data) -> bool {
        match (&self.base, &other.base) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.bytes, &b.bytes) && a.start == b.start,
            _ => false,
        }
    }

    /// Whether `self` is a clone of `earlier` not written to since: nothing can differ.
    pub(crate) fn is_untouched_clone_of(&self, earlier: &Data) -> bool {
        self.same_base(earlier)
            && match (&self.changes, &earlier.changes) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }

    /// Calls `f(key, value in earlier, value in self)` on every key whose value may differ
    /// between `self` and `earlier` (each once), until it returns `true`; returns whether it
    /// did. When both read the same payload, only their changes are visited, and values in
    /// the payload are read where the change found them, without searching.
    pub(crate) fn any_change_since<'a>(
        &'a self,
        earlier: &'a Data,
        mut f: impl FnMut(&'a str, Option<&'a [u8]>, Option<&'a [u8]>) -> bool,
    ) -> bool {
        if self.is_untouched_clone_of(earlier) {
            return false;
        }
        if self.same_base(earlier) {
            let (ours, theirs) = (self.changes(), earlier.changes());
            for (key, change) in ours {
                let then = match theirs.get(key) {
                    Some(c) => c.value.as_deref(),
                    None => self.base_value(key, change.at),
                };
                if f(key, then, change.value.as_deref()) {
                    return true;
                }
            }
            for (key, change) in theirs {
                if !ours.contains_key(key)
                    && f(
                        key,
                        change.value.as_deref(),
                        self.base_value(key, change.at),
                    )
                {
                    return true;
                }
            }
            return false;
        }
        self.iter().any(|(k, v)| f(k, earlier.get(k), Some(v)))
            || earlier
                .iter()
                .any(|(k, v)| !self.contains_key(k) && f(k, Some(v), None))
    }

    /// The payload's value under `key`, read at `at` when a change recorded where it is.
    fn base_value(&self, key: &str, at: Option<(usize, usize)>) -> Option<&[u8]> {
        let base = self.base.as_ref()?;
        match at {
            Some((start, end)) => {
                let entry = base.bytes.get(start..end)?;
                BaseIter { input: entry }.next().map(|raw| raw.value)
            }
            None => base.find(key),
        }
    }

    /// The encoded value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match self.changes().get(key) {
            Some(change) => change.value.as_deref(),
            None => self.base.as_ref()?.find(key),
        }
    }

    /// The length of the value under `key`, and where `key` is in the payload: what
    /// [`Data::insert_found`] needs to set it without searching again.
    pub(crate) fn find(&self, key: &str) -> Found {
        if let Some(change) = self.changes().get(key) {
            return Found {
                len: change.value.as_ref().map(Vec::len),
                at: change.at,
            };
        }
        let Some(base) = &self.base else {
            return Found {
                len: None,
                at: None,
            };
        };
        let (start, end) = base.locate(key.as_bytes(), base.start);
        let len = base
            .bytes
            .get(start..end)
            .and_then(|entry| BaseIter { input: entry }.next())
            .map(|raw| raw.value.len());
        Found {
            len,
            at: Some((start, end)),
        }
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: String, value: Vec<u8>) {
        let found = self.find(&key);
        self.insert_found(key, value, found);
    }

    /// [`Data::insert`] when the caller just looked `key` up with [`Data::find`].
    pub(crate) fn insert_found(&mut self, key: String, value: Vec<u8>, found: Found) {
        match found.len {
            Some(len) => self.size -= len,
            None => {
                self.len += 1;
                self.size += key.len();
            }
        }
        self.size += value.len();
        let change = Change {
            value: Some(value),
            at: found.at,
        };
        self.changes_mut().insert(key, change);
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&mut self, key: &str) -> bool {
        let found = self.find(key);
        let Some(len) = found.len else {
            return false;
        };
        self.size -= key.len() + len;
        self.len -= 1;
        let in_base = found.at.is_some_and(|(start, end)| end > start);
        if in_base {
            let change = Change {
                value: None,
                at: found.at,
            };
            self.changes_mut().insert(key.to_owned(), change);
        } else {
            self.changes_mut().remove(key);
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
            merge: self.merge(),
        }
    }

    fn merge(&self) -> Merge<'_> {
        let base = match &self.base {
            Some(base) => base.entries(),
            None => BaseIter { input: &[] },
        };
        Merge {
            base: base.peekable(),
            changes: self.changes().iter().peekable(),
        }
    }

    /// The entries in key order as pieces of a payload: runs of entries of the decoded
    /// payload still encoded (copied as they are), changed ones as key and value. Each
    /// change is located in the payload (binary search when indexed), so a session with a
    /// few changes is re-encoded as a few copies, whatever its number of keys.
    pub(crate) fn pieces(&self) -> Pieces<'_> {
        Pieces {
            base: self.base.as_ref(),
            cursor: self.base.as_ref().map_or(0, |b| b.start),
            changes: self.changes().iter(),
            pending: None,
            done: false,
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// Total size of keys and encoded values.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The entries as an owned map.
    pub fn to_map(&self) -> BTreeMap<String, Vec<u8>> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect()
    }

    /// The payload bytes of the entries when nothing changed since they were decoded
    /// (the MessagePack entries, without the map header): re-encoding can copy them.
    /// The length of the entries encoded as [`Data::pieces`] gives them.
    pub(crate) fn encoded_len(&self) -> usize {
        let mut len = self.base.as_ref().map_or(0, |b| b.end - b.start);
        for (key, change) in self.changes() {
            match change.at {
                Some((start, end)) => len -= end - start,
                None => {
                    if let Some(old) = self.base.as_ref().and_then(|b| b.find_raw(key)) {
                        len -= old.encoded.len();
                    }
                }
            }
            if let Some(value) = &change.value {
                len += str_len(key.len()) + bin_len(value.len());
            }
        }
        len
    }

    pub(crate) fn unchanged_entries(&self) -> Option<(&[u8], usize)> {
        let base = self.base.as_ref()?;
        if self.changes().is_empty() {
            Some((base.bytes.get(base.start..base.end)?, base.start))
        } else {
            None
        }
    }

    /// Calls `f` with the offset, within `run`, of each entry of a run of payload entries
    /// that starts at byte `from` of the payload ([`Piece::Encoded`]): read from the
    /// payload's index when it has one, else by walking the run.
    pub(crate) fn run_offsets(&self, run: &[u8], from: usize, mut f: impl FnMut(usize)) {
        let Some(index) = self.base.as_ref().and_then(|b| b.index.as_ref()) else {
            entry_offsets(run).for_each(f);
            return;
        };
        let bytes = self.base.as_ref().map_or(&[][..], |b| &b.bytes[..]);
        let (mut low, mut high) = (0, index.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match index.get(bytes, mid) {
                Some(offset) if offset < from => low = mid + 1,
                _ => high = mid,
            }
        }
        for i in low..index.len() {
            match index.get(bytes, i) {
                Some(offset) if offset < from + run.len() => f(offset - from),
                _ => break,
            }
        }
    }
}

/// A part of an encoded data map, from [`Data::pieces`].
pub(crate) enum Piece<'a> {
    /// Whole MessagePack `str → bin` entries, in order.
    /// The second field is where the run starts in the payload (see [`Data::run_offsets`]).
    Encoded(&'a [u8], usize),
    /// An entry to encode.
    Entry(&'a str, &'a [u8]),
}

/// The pieces of [`Data::pieces`].
pub(crate) struct Pieces<'a> {
    base: Option<&'a Base>,
    /// Bytes of the base before this offset have been returned or replaced.
    cursor: usize,
    changes: btree_map::Iter<'a, String, Change>,
    /// A change to return after the run of base entries just returned.
    pending: Option<(&'a str, &'a [u8])>,
    done: bool,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        if let Some((key, value)) = self.pending.take() {
            return Some(Piece::Entry(key, value));
        }
        let Some(base) = self.base else {
            // Without a base every change sets a value.
            return self.changes.find_map(|(key, change)| {
                change
                    .value
                    .as_deref()
                    .map(|value| Piece::Entry(key, value))
            });
        };
        let run = |from: usize, to: usize| {
            let bytes = base.bytes.get(from..to).filter(|r| !r.is_empty())?;
            Some(Piece::Encoded(bytes, from))
        };
        for (key, change) in self.changes.by_ref() {
            let (start, end) = match change.at {
                Some((start, end)) => (start.max(self.cursor), end.max(self.cursor)),
                None => base.locate(key.as_bytes(), self.cursor),
            };
            let before = run(self.cursor, start);
            self.cursor = end;
            match (before, &change.value) {
                (Some(before), Some(value)) => {
                    self.pending = Some((key, value));
                    return Some(before);
                }
                (Some(before), None) => return Some(before),
                (None, Some(value)) => return Some(Piece::Entry(key, value)),
                (None, None) => {}
            }
        }
        if self.done {
            return None;
        }
        self.done = true;
        run(self.cursor, base.end)
    }
}

/// Base entries and changes merged in key order.
struct Merge<'a> {
    base: Peekable<BaseIter<'a>>,
    changes: Peekable<btree_map::Iter<'a, String, Change>>,
}

enum Next<'a> {
    Base(RawEntry<'a>),
    Change(&'a str, &'a [u8]),
}

impl<'a> Iterator for Merge<'a> {
    type Item = Next<'a>;

    fn next(&mut self) -> Option<Next<'a>> {
        loop {
            let order = match (self.base.peek(), self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(b), Some((c, _))) => b.key.cmp(c.as_bytes()),
            };
            if order == Ordering::Less {
                return self.base.next().map(Next::Base);
            }
            if order == Ordering::Equal {
                self.base.next();
            }
            let (key, change) = self.changes.next()?;
            if let Some(value) = &change.value {
                return Some(Next::Change(key.as_str(), value.as_slice()));
            }
        }
    }
}

/// The entries of a [`Data`], in key order.
pub struct Iter<'a> {
    merge: Merge<'a>,
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
            match self.merge.next()? {
                Next::Change(key, value) => return Some((key, value)),
                // Keys of the base were checked when decoded.
                Next::Base(raw) => {
                    if let Some(key) = key_str(raw.key) {
                        return Some((key, raw.value));
                    }
                }
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
        let changes: Changes = iter
            .into_iter()
            .map(|(k, v)| {
                let change = Change {
                    value: Some(v),
                    at: None,
                };
                (k, change)
            })
            .collect();
        let size = changes
            .iter()
            .map(|(k, c)| k.len() + c.value.as_ref().map_or(0, Vec::len))
            .sum();
        Self {
            base: None,
            len: changes.len(),
            changes: (!changes.is_empty()).then(|| Arc::new(changes)),
            size,
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
pub(crate) mod tests {
    use super::*;

    /// A deterministic stream of numbers below `bound` (xorshift64), for randomised tests.
    pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |bound| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        }
    }

    fn payload(entries: &[(&str, &[u8])]) -> Arc<[u8]> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
        for (k, v) in entries {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_bin(&mut out, v).unwrap();
        }
        out.into()
    }

    /// The data's entries as [`Data::pieces`] encodes them.
    fn spliced(d: &Data) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in d.pieces() {
            match piece {
                Piece::Encoded(bytes, _) => out.extend_from_slice(bytes),
                Piece::Entry(k, v) => {
                    rmp::encode::write_str(&mut out, k).unwrap();
                    rmp::encode::write_bin(&mut out, v).unwrap();
                }
            }
        }
        out
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
        assert_eq!(
            d.size(),
            d.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        );
        let owned: Data = d.to_map().into();
        assert_eq!(owned, d);
        assert!(d.remove("b"));
        assert!(!d.changes().contains_key("b"));
        assert_eq!(d.len(), 3);
        d.insert("e".into(), b"5".to_vec());
        assert_eq!(
            d,
            shared(&[("a", b"1"), ("c", b"33"), ("e", b"5"), ("f", b"6")])
        );
    }

    #[test]
    fn indexed_maps_find_every_key_and_encode_to_the_right_length() {
        for n in [INDEX_FROM - 1, INDEX_FROM, INDEX_FROM + 1, 40] {
            let keys: Vec<String> = (0..n).map(|i| format!("k{:03}", i * 2)).collect();
            let entries: Vec<(&str, &[u8])> =
                keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
            let mut d = shared(&entries);
            assert_eq!(d.base.as_ref().unwrap().index.is_some(), n > INDEX_FROM);
            for k in &keys {
                assert_eq!(d.get(k), Some(k.as_bytes()), "{n} {k}");
            }
            for missing in ["", "a", "k001", "k003", "k9", "z"] {
                assert_eq!(d.get(missing), None, "{n} {missing}");
            }
            d.insert("k001".into(), vec![1; 300]);
            d.insert(keys[0].clone(), b"changed".to_vec());
            assert!(d.remove(&keys[n - 1]));
            assert_eq!(d.encoded_len(), spliced(&d).len(), "{n}");
        }
    }

    #[test]
    fn pieces_splice_changes_into_the_payload_like_a_full_reencode() {
        fn encode(entries: impl Iterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
            let mut out = Vec::new();
            for (k, v) in entries {
                rmp::encode::write_str(&mut out, &k).unwrap();
                rmp::encode::write_bin(&mut out, &v).unwrap();
            }
            out
        }
        let mut next = crate::data::tests::xorshift(0x2545_f491_4f6c_dd1d_u64);
        for n in [0, 1, 2, INDEX_FROM, INDEX_FROM + 1, 30] {
            let keys: Vec<String> = (0..n).map(|i| format!("k{:03}", i * 2)).collect();
            let entries: Vec<(&str, &[u8])> =
                keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
            for round in 0..200 {
                let mut d = shared(&entries);
                let mut expected: BTreeMap<String, Vec<u8>> = entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect();
                for _ in 0..next(6) {
                    // Even numbers exist in the payload, odd ones fall between its keys.
                    let key = format!("k{:03}", next(2 * n + 3));
                    if next(3) == 0 {
                        assert_eq!(d.remove(&key), expected.remove(&key).is_some());
                    } else {
                        let value = vec![b'v'; next(40)];
                        d.insert(key.clone(), value.clone());
                        expected.insert(key, value);
                    }
                }
                let spliced = spliced(&d);
                assert_eq!(
                    spliced,
                    encode(expected.into_iter()),
                    "{n} keys, round {round}"
                );
                assert_eq!(d.encoded_len(), spliced.len(), "{n} keys, round {round}");
            }
        }
    }

    #[test]
    fn keys_since_a_clone_cover_every_difference() {
        let mut next = crate::data::tests::xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let keys: Vec<String> = (0..10).map(|i| format!("k{:03}", i * 2)).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        for round in 0..500 {
            let mut d = shared(&entries);
            // Some rounds start from a clone that was itself changed, or from no payload.
            for _ in 0..next(3) {
                d.insert(format!("k{:03}", next(23)), vec![b'w']);
            }
            if next(8) == 0 {
                d.clear();
            }
            let earlier = d.clone();
            assert!(d.is_untouched_clone_of(&earlier));
            assert!(!d.any_change_since(&earlier, |_, _, _| true));
            for _ in 0..next(5) {
                let key = format!("k{:03}", next(23));
                match next(4) {
                    0 => {
                        d.remove(&key);
                    }
                    1 => d.clear(),
                    _ => d.insert(key, vec![b'v' + next(2) as u8]),
                }
            }
            let mut visited = BTreeMap::new();
            d.any_change_since(&earlier, |k, then, now| {
                assert_eq!(then, earlier.get(k), "round {round}: {k} then");
                assert_eq!(now, d.get(k), "round {round}: {k} now");
                *visited.entry(k.to_owned()).or_insert(0) += 1;
                false
            });
            assert!(
                visited.values().all(|&n| n == 1),
                "round {round}: a key twice"
            );
            let (now, then) = (d.to_map(), earlier.to_map());
            for key in now.keys().chain(then.keys()) {
                if now.get(key) != then.get(key) {
                    assert!(visited.contains_key(key), "round {round}: {key} missed");
                }
            }
        }
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
