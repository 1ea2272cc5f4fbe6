//! The MessagePack pieces of the payload format: the `str → bin` entries that hold a
//! session's values and the maps around them, written and read by hand (these run for every
//! entry of every stored and loaded session). The envelope around them is `payload.rs`'s.

/// Encoded size of a MessagePack str of `n` bytes.
pub(crate) fn str_len(n: usize) -> usize {
    n + match n {
        0..32 => 1,
        32..256 => 2,
        256..65536 => 3,
        _ => 5,
    }
}

/// Encoded size of a MessagePack bin of `n` bytes.
pub(crate) fn bin_len(n: usize) -> usize {
    n + match n {
        0..256 => 2,
        256..65536 => 3,
        _ => 5,
    }
}

/// Reads one `str → bin` entry, checking every length against the input left.
pub(crate) fn read_entry<'a>(input: &mut &'a [u8]) -> Option<(&'a str, &'a [u8])> {
    let (key, value) = read_raw_entry(input)?;
    Some((key_str(key)?, value))
}

/// [`read_entry`] without checking that the key is UTF-8. MessagePack headers are read by
/// hand: this runs for every entry of every loaded session.
pub(crate) fn read_raw_entry<'a>(input: &mut &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let key = read_key(input)?;
    let (&marker, rest) = input.split_first()?;
    *input = rest;
    let value_len = match marker {
        0xc4 => read_len::<1>(input)?,
        0xc5 => read_len::<2>(input)?,
        0xc6 => read_len::<4>(input)?,
        _ => return None,
    };
    let value = take(input, value_len)?;
    Some((key, value))
}

/// The key of an entry: a MessagePack str, not checked for UTF-8.
pub(crate) fn read_key<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&marker, rest) = input.split_first()?;
    *input = rest;
    let key_len = match marker {
        0xa0..=0xbf => usize::from(marker & 0x1f),
        0xd9 => read_len::<1>(input)?,
        0xda => read_len::<2>(input)?,
        0xdb => read_len::<4>(input)?,
        _ => return None,
    };
    take(input, key_len)
}

/// A big-endian length of `N` bytes.
fn read_len<const N: usize>(input: &mut &[u8]) -> Option<usize> {
    let (bytes, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    let mut len = 0usize;
    for b in bytes {
        len = (len << 8) | usize::from(*b);
    }
    Some(len)
}

/// The key as `str`.
pub(crate) fn key_str(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if input.len() < len {
        return None;
    }
    let (head, tail) = input.split_at(len);
    *input = tail;
    Some(head)
}

/// Where the payload is written: a `Vec` or a pre-sized slice.
pub(crate) trait PayloadWrite: rmp::encode::RmpWrite {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl PayloadWrite for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl PayloadWrite for &mut [u8] {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.len());
        let (head, tail) = std::mem::take(self).split_at_mut(n);
        head.copy_from_slice(&bytes[..n]);
        *self = tail;
    }
}

/// Writes a MessagePack `str → bin` entry, in the smallest formats (as `rmp` would), with
/// its headers assembled on the stack.
pub(crate) fn put_entry<W: PayloadWrite>(out: &mut W, key: &str, value: &[u8]) {
    let mut head = [0u8; 5];
    let k = key.len();
    let n = match k {
        0..32 => {
            head[0] = 0xa0 | k as u8;
            1
        }
        32..256 => {
            head[..2].copy_from_slice(&[0xd9, k as u8]);
            2
        }
        256..65536 => {
            head[0] = 0xda;
            head[1..3].copy_from_slice(&(k as u16).to_be_bytes());
            3
        }
        _ => {
            head[0] = 0xdb;
            head[1..5].copy_from_slice(&(k as u32).to_be_bytes());
            5
        }
    };
    out.put(&head[..n]);
    out.put(key.as_bytes());
    let v = value.len();
    let n = match v {
        0..256 => {
            head[..2].copy_from_slice(&[0xc4, v as u8]);
            2
        }
        256..65536 => {
            head[0] = 0xc5;
            head[1..3].copy_from_slice(&(v as u16).to_be_bytes());
            3
        }
        _ => {
            head[0] = 0xc6;
            head[1..5].copy_from_slice(&(v as u32).to_be_bytes());
            5
        }
    };
    out.put(&head[..n]);
    out.put(value);
}

/// Encoded size of a MessagePack map header for `n` entries.
pub(crate) fn map_header_len(n: usize) -> usize {
    match n {
        0..16 => 1,
        16..65536 => 3,
        _ => 5,
    }
}

/// Reads a MessagePack map of str → bin, checking every length against the input left.
pub(crate) fn read_bin_map<'a>(input: &mut &'a [u8]) -> Option<Vec<(&'a str, &'a [u8])>> {
    let len = rmp::decode::read_map_len(input).ok()? as usize;
    // Each entry takes at least two bytes: refuse lengths the input cannot hold.
    if len > input.len() / 2 {
        return None;
    }
    (0..len).map(|_| read_entry(input)).collect()
}
