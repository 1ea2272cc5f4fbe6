//! A legacy synchronous session store: one file per session on `std::fs`.
//!
//! - File name: the hex SHA-256 of the session id (ids never reach the file system as
//!   names, whatever characters a custom id generator uses).
//! - Layout: `b"SSF1"`, expiry as Unix nanoseconds (`i128` LE), version (`u64` LE), then the
//!   core's versioned payload envelope (`Record::encode_payload`).
//! - `set` writes a temporary file in the same directory, syncs it and renames it over the
//!   old one, so readers see the old or the new record, never half of one, even after a
//!   crash.
//! - `get` checks the expiry on read; `touch` rewrites only the 16 expiry bytes in place;
//!   [`FileStore::sweep`] deletes expired files (and leaves files it cannot read alone).
//! - Operations on one id are serialized by striped in-process locks: one process owns the
//!   directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use session_store::time::OffsetDateTime;
use session_store::{Error, Record, Result, SessionId};
use session_store_compat::BlockingStore;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"SSF1";
const EXPIRY_AT: u64 = 4;
const HEADER_LEN: usize = 4 + 16 + 8;
const STRIPES: usize = 64;
const SUFFIX: &str = ".session";
const NAME: &str = "file";

/// Sessions as files in one directory.
pub struct FileStore {
    dir: PathBuf,
    stripes: Vec<Mutex<()>>,
}

/// Numbers temporary files, process-wide, so two stores on one directory never share one.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Maps I/O errors in one place: malformed files are `Corrupt`, everything else means the
/// directory cannot be used right now (`Unavailable`).
fn io_error(error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Error::corrupt(NAME, error),
        _ => Error::unavailable(NAME, error),
    }
}

fn corrupt(what: &'static str) -> Error {
    Error::corrupt(NAME, io::Error::new(io::ErrorKind::InvalidData, what))
}

impl FileStore {
    /// A store in `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    fn digest(id: &SessionId) -> [u8; 32] {
        Sha256::digest(id.as_str().as_bytes()).into()
    }

    fn path_of(&self, digest: &[u8; 32]) -> PathBuf {
        let mut name = String::with_capacity(64 + SUFFIX.len());
        for b in digest {
            name.push_str(&format!("{b:02x}"));
        }
        name.push_str(SUFFIX);
        self.dir.join(name)
    }

    fn lock(&self, first_byte: u8) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a poisoned lock is safe to keep using.
        self.stripes[first_byte as usize % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every expired session file; returns how many were removed.
    pub fn sweep(&self) -> io::Result<usize> {
        let now = OffsetDateTime::now_utc();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(first) = name
                .strip_suffix(SUFFIX)
                .filter(|hex| hex.len() == 64)
                .and_then(|hex| u8::from_str_radix(&hex[..2], 16).ok())
            else {
                continue;
            };
            let _guard = self.lock(first);
            // Only files that parse as expired sessions are removed; anything unreadable is
            // left for a person to look at.
            if let Ok(Some((expires, _))) = read_header(&path)
                && expires <= now
            {
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Writes `bytes` to `path` atomically and durably: temporary file, sync, rename, sync
    /// of the directory (so the rename survives a crash).
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            fs::rename(&temp, path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Expiry and version from the header of the file at `path`; `None` if there is no file.
fn read_header(path: &Path) -> io::Result<Option<(OffsetDateTime, u64)>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)?;
    parse_header(&header).map(Some)
}

fn parse_header(header: &[u8]) -> io::Result<(OffsetDateTime, u64)> {
    let bad = |what| io::Error::new(io::ErrorKind::InvalidData, what);
    if header.len() < HEADER_LEN || &header[..4] != MAGIC {
        return Err(bad("not a session file"));
    }
    let nanos = i128::from_le_bytes(header[4..20].try_into().expect("16 bytes"));
    let version = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
    let expires =
        OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad("expiry out of range"))?;
    Ok((expires, version))
}

impl BlockingStore for FileStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let digest = Self::digest(id);
        let path = self.path_of(&digest);
        let _guard = self.lock(digest[0]);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt("session file too short"));
        }
        let (expires, version) = parse_header(&bytes).map_err(io_error)?;
        if expires <= OffsetDateTime::now_utc() {
            return Ok(None);
        }
        Record::decode_payload(&bytes[HEADER_LEN..], expires, version)
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }

    fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let digest = Self::digest(id);
        let path = self.path_of(&digest);
        let payload = record.encode_payload();
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&record.expires.unix_timestamp_nanos().to_le_bytes());
        bytes.extend_from_slice(&record.version.to_le_bytes());
        bytes.extend_from_slice(&payload);
        let _guard = self.lock(digest[0]);
        self.write_atomically(&path, &bytes).map_err(io_error)
    }

    fn destroy(&self, id: &SessionId) -> Result<()> {
        let digest = Self::digest(id);
        let path = self.path_of(&digest);
        let _guard = self.lock(digest[0]);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn supports_touch(&self) -> bool {
        true
    }

    fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let digest = Self::digest(id);
        let path = self.path_of(&digest);
        let _guard = self.lock(digest[0]);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(e)),
        };
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header).map_err(io_error)?;
        let (old, _) = parse_header(&header).map_err(io_error)?;
        if old <= OffsetDateTime::now_utc() {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(EXPIRY_AT)).map_err(io_error)?;
        file.write_all(&expires.unix_timestamp_nanos().to_le_bytes())
            .map_err(io_error)?;
        file.sync_data().map_err(io_error)?;
        Ok(true)
    }
}
