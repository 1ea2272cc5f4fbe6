//! Security properties as tests: id entropy and randomness, cookie attributes, signature
//! verification, and that no id, secret or session data leaks into `tracing` output,
//! `Debug` strings or error messages.
//!
//! # Where ids come from
//!
//! `IdGenerator::nanoid()` makes nanoid-format ids: 21 symbols of the 64-symbol alphabet
//! `[A-Za-z0-9_-]`, i.e. 21 × 6 = 126 bits (`IdGenerator::express_compatible()`: 32 symbols,
//! 192 bits). The random bytes come from rand 0.9's `ThreadRng`: ChaCha12 (a CSPRNG) per
//! thread, seeded with 32 bytes from the operating system (`getrandom`) and reseeded from it
//! after every 64 KiB of output, so ids neither depend on the time nor repeat across
//! threads. (It is not reseeded on `fork`; the docs of `IdGenerator::nanoid` say so.)
//! Because the alphabet has exactly 64 symbols, each random byte picks a symbol by its low
//! six bits (no rejection, no modulo bias). The tests below check what can be checked from
//! the outside: length, alphabet, uniqueness, per-position uniformity, no shared prefixes
//! between consecutive ids, and that the lock file still pins that generator.
//!
//! # Constant-time signatures
//!
//! `SignedCodec::unsign` recomputes the signature for every configured secret and compares
//! it with `subtle::ConstantTimeEq::ct_eq`, OR-ing the results, so neither the position of
//! the first differing byte nor which secret matched changes the work done. Timing cannot be
//! measured reliably in a test; the tests check the behaviour (a signature differing in its
//! first or last byte is rejected alike, with every secret) and guard the source against a
//! refactoring back to `==` or to an early exit.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::express::ExpressLayout;
use session_store::time::OffsetDateTime;
use session_store::wrappers::TracingStore;
use session_store::{
    Capabilities, CasOutcome, CookieCodec, Error, IdGenerator, LazySession, MemoryStore,
    PrivateCodec, Record, Result, SameSite, Session, SessionId, SessionManager,
    SessionManagerBuilder, SessionStore, SignedCodec, async_trait,
};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

fn symbol_index(b: u8) -> usize {
    ALPHABET
        .iter()
        .position(|&a| a == b)
        .unwrap_or_else(|| panic!("byte {b:#04x} is not in the id alphabet"))
}

/// Pearson's chi-square statistic of `counts` against a uniform distribution.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// 63 degrees of freedom: mean 63, standard deviation √126 ≈ 11.2. A uniform source exceeds
/// 250 with probability about 1e-22 per check (Wilson–Hilferty), so the test cannot flake;
/// one symbol over-represented by about 45% at a position (100,000 samples), or by about 10%
/// over all positions together (2.1 million samples), exceeds it.
const CHI_SQUARE_BOUND: f64 = 250.0;

/// The uniformity check can fail: a 62-symbol alphabet fed by `byte % 62` (two symbols never
/// drawn, four drawn 5/256 of the time instead of 4/256) and one symbol 50% too frequent
/// both exceed the bound at 100,000 samples; exact uniformity does not.
#[test]
fn the_uniformity_check_detects_bias() {
    const N: u64 = 100_000;
    let modulo_bias: Vec<u64> = (0..62)
        .map(|s| if s < 256 % 62 { 5 } else { 4 } * N / 256)
        .chain([0, 0])
        .collect();
    assert!(chi_square(&modulo_bias) > CHI_SQUARE_BOUND);
    let mut one_heavy = vec![N / 64; 64];
    one_heavy[0] = N / 64 * 3 / 2;
    assert!(chi_square(&one_heavy) > CHI_SQUARE_BOUND);
    assert!(chi_square(&[N / 64; 64]) < 1.0);
}

#[test]
fn nanoid_ids_carry_126_bits_and_never_repeat() {
    const N: usize = 100_000;
    const LEN: usize = 21;
    // 21 symbols of a 64-symbol alphabet.
    let bits = LEN as f64 * (ALPHABET.len() as f64).log2();
    assert!(bits >= 120.0, "{bits} bits");

    let generator = IdGenerator::nanoid();
    let mut seen = HashSet::with_capacity(N);
    let mut per_position = vec![[0u64; 64]; LEN];
    let mut previous: Option<String> = None;
    for _ in 0..N {
        let id = generator.generate();
        let id = id.as_str();
        assert_eq!(id.len(), LEN);
        assert!(generator.is_valid(id));
        for (position, b) in id.bytes().enumerate() {
            per_position[position][symbol_index(b)] += 1;
        }
        // Consecutive ids share a 6-symbol prefix with probability 64^-6 ≈ 1.5e-11 each.
        if let Some(prev) = &previous {
            assert_ne!(&prev[..6], &id[..6], "consecutive ids share a prefix");
        }
        assert!(
            seen.insert(id.to_owned()),
            "duplicate id after {} ids",
            seen.len()
        );
        previous = Some(id.to_owned());
    }
    for (position, counts) in per_position.iter().enumerate() {
        assert!(
            counts.iter().all(|&c| c > 0),
            "a symbol never appeared at position {position}"
        );
        let chi = chi_square(counts);
        assert!(
            chi < CHI_SQUARE_BOUND,
            "position {position} is not uniform: chi-square {chi:.1} (63 degrees of freedom)"
        );
    }
    // All positions together: 2.1 million symbols.
    let total: Vec<u64> = (0..64)
        .map(|s| per_position.iter().map(|p| p[s]).sum())
        .collect();
    let chi = chi_square(&total);
    assert!(chi < CHI_SQUARE_BOUND, "symbols are not uniform: {chi:.1}");
}

#[test]
fn express_compatible_ids_carry_192_bits() {
    let generator = IdGenerator::express_compatible();
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let id = generator.generate();
        assert_eq!(id.as_str().len(), 32);
        id.as_str().bytes().for_each(|b| {
            symbol_index(b);
        });
        assert!(seen.insert(id));
    }
}

#[test]
fn ids_generated_at_the_same_instant_on_many_threads_differ() {
    // A time- or counter-seeded generator would collide here.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..1000)
                    .map(|_| IdGenerator::nanoid().generate())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for handle in handles {
        for id in handle.join().unwrap() {
            assert!(seen.insert(id), "two threads produced the same id");
        }
    }
    assert_eq!(seen.len(), 8000);
}

#[test]
fn fresh_sessions_get_nanoid_ids_from_the_manager() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let manager = SessionManager::new(MemoryStore::new());
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let session = rt.block_on(manager.load(&HeaderMap::new())).unwrap();
        let id = session.id();
        assert_eq!(id.as_str().len(), 21);
        assert!(IdGenerator::nanoid().is_valid(id.as_str()));
        assert!(seen.insert(id));
    }
}

/// The id generator's randomness is not visible from its output; this pins what was
/// reviewed (see the module docs): rand 0.9, whose `ThreadRng` is ChaCha12 seeded and
/// reseeded from the OS. A change of major version fails here and asks for a new review.
#[test]
fn lock_file_pins_the_reviewed_id_generator() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = std::fs::read_to_string(&lock)
        .unwrap_or_else(|e| panic!("{} unreadable: {e}", lock.display()));
    let ours = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"session-store\"\n"))
        .expect("session-store is locked");
    assert!(
        ours.contains("\"rand 0.9.") || ours.contains("\"rand\""),
        "session-store no longer uses rand 0.9: review the id generator's random source\n{ours}"
    );
    if !ours.contains("\"rand 0.9.") {
        // A single rand in the graph: it must be 0.9.
        let rand = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"rand\"\n"))
            .expect("rand is locked");
        assert!(rand.contains("version = \"0.9."), "{rand}");
    }
    let source = include_str!("../src/id.rs");
    assert!(
        source.contains("rand::rng().fill_bytes"),
        "the id generator changed its random source: review it, then update this test"
    );
}

// ---------------------------------------------------------------------------------------
// Cookie attributes

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The `Set-Cookie` of a new populated session, then the removal cookie of destroying it.
fn set_cookies(builder: SessionManagerBuilder) -> (String, String) {
    let manager = builder.build().unwrap();
    rt().block_on(async {
        let session = manager.load(&HeaderMap::new()).await.unwrap();
        session.insert("k", 1).unwrap();
        let mut out = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut out)
            .await
            .unwrap();
        let created = out[SET_COOKIE].to_str().unwrap().to_owned();
        let cookie = created.split(';').next().unwrap();
        let mut request = HeaderMap::new();
        request.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        let session = manager.load(&request).await.unwrap();
        assert!(!session.is_new());
        session.destroy();
        let mut out = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut out)
            .await
            .unwrap();
        let removed = out[SET_COOKIE].to_str().unwrap().to_owned();
        (created, removed)
    })
}

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn http_only_is_on_by_default_and_secure_and_same_site_are_off() {
    let (created, removed) = set_cookies(SessionManager::builder(MemoryStore::new()));
    for header in [&created, &removed] {
        let attrs = attributes(header);
        assert!(attrs.contains(&"httponly".to_owned()), "{header}");
        assert!(attrs.contains(&"path=/".to_owned()), "{header}");
        assert!(!attrs.iter().any(|a| a == "secure"), "{header}");
        assert!(!attrs.iter().any(|a| a.starts_with("samesite")), "{header}");
    }
    let (created, _) = set_cookies(SessionManager::builder(MemoryStore::new()).http_only(false));
    assert!(!attributes(&created).contains(&"httponly".to_owned()));
}

#[test]
fn secure_and_same_site_are_honoured() {
    for (same_site, text) in [
        (SameSite::Strict, "samesite=strict"),
        (SameSite::Lax, "samesite=lax"),
        (SameSite::None, "samesite=none"),
    ] {
        let (created, removed) = set_cookies(
            SessionManager::builder(MemoryStore::new())
                .secure(true)
                .same_site(same_site),
        );
        for header in [&created, &removed] {
            let attrs = attributes(header);
            assert!(attrs.contains(&"secure".to_owned()), "{header}");
            assert!(attrs.contains(&"httponly".to_owned()), "{header}");
            assert!(attrs.contains(&text.to_owned()), "{header}");
        }
    }
    let insecure_none = SessionManager::builder(MemoryStore::new())
        .same_site(SameSite::None)
        .build();
    assert!(matches!(insecure_none, Err(Error::Config(_))));
    let insecure_host = SessionManager::builder(MemoryStore::new())
        .cookie_name("__Host-sid")
        .build();
    assert!(matches!(insecure_host, Err(Error::Config(_))));
    let insecure_secure_prefix = SessionManager::builder(MemoryStore::new())
        .cookie_name("__Secure-sid")
        .build();
    assert!(matches!(insecure_secure_prefix, Err(Error::Config(_))));
}

// ---------------------------------------------------------------------------------------
// Signatures

#[test]
fn tampered_signatures_are_rejected_wherever_they_differ() {
    let codec = SignedCodec::new(["current secret", "previous secret"]).unwrap();
    let id = IdGenerator::nanoid().generate();
    for secret in ["current secret", "previous secret"] {
        let signed = SignedCodec::sign(secret.as_bytes(), id.as_str());
        assert_eq!(codec.unsign(&signed).as_deref(), Some(id.as_str()));
        let dot = signed.rfind('.').unwrap();
        let flip = |at: usize| {
            let mut bytes = signed.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        };
        let first = flip(dot + 1);
        let last = flip(signed.len() - 1);
        assert_eq!(codec.unsign(&first), None, "first signature byte changed");
        assert_eq!(codec.unsign(&last), None, "last signature byte changed");
        // The value is covered too.
        assert_eq!(codec.unsign(&flip(0)), None);
        assert_eq!(codec.unsign(&flip(dot - 1)), None);
        // Truncated, extended, emptied, or a signature from a secret we do not know.
        assert_eq!(codec.unsign(&signed[..signed.len() - 1]), None);
        assert_eq!(codec.unsign(&format!("{signed}A")), None);
        assert_eq!(codec.unsign(&signed[..=dot]), None);
        assert_eq!(
            codec.unsign(&SignedCodec::sign(b"other secret", id.as_str())),
            None
        );
        // The padded form base64 would also accept is not ours.
        assert_eq!(codec.unsign(&format!("{signed}=")), None);
    }
    // Through the cookie codec: missing prefix and a bare value are no session.
    let cookie = codec.encode("sid", id.as_str());
    assert_eq!(codec.decode("sid", &cookie).as_deref(), Some(id.as_str()));
    assert_eq!(codec.decode("sid", &cookie[2..]), None);
    assert_eq!(codec.decode("sid", id.as_str()), None);
}

/// A guard, not a proof: `unsign` must keep comparing with `ct_eq` over every secret,
/// without `==` on the signature or an early exit from the loop.
#[test]
fn unsign_keeps_its_constant_time_comparison() {
    let source = include_str!("../src/codec.rs");
    let start = source.find("pub fn unsign").expect("unsign exists");
    let body = &source[start..];
    let body = &body[..body.find("\n    }\n").expect("end of unsign")];
    assert!(
        body.contains(".ct_eq("),
        "unsign no longer uses ct_eq:\n{body}"
    );
    assert!(
        body.contains("for secret in"),
        "unsign no longer loops:\n{body}"
    );
    for forbidden in ["== signature", "signature ==", "return ", "break", "find("] {
        assert!(
            !body.contains(forbidden),
            "unsign contains `{forbidden}`:\n{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// No ids, secrets or data in logs, `Debug` strings and errors

/// What the faulty store does on its next calls.
const OK: u8 = 0;
const DOWN: u8 = 1;
const CORRUPT: u8 = 2;
const SLOW: u8 = 3;
const ALWAYS_CONFLICT: u8 = 4;

/// A memory store that fails on demand and remembers every id it was given.
#[derive(Clone, Default)]
struct Faulty {
    inner: MemoryStore,
    mode: Arc<AtomicU8>,
    ids: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

impl Faulty {
    async fn enter(&self, id: &SessionId) -> Result<()> {
        self.ids.lock().unwrap().insert(id.as_str().to_owned());
        match self.mode.load(Ordering::SeqCst) {
            DOWN => Err(Error::unavailable(
                "faulty",
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
            )),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.enter(id).await?;
        if self.mode.load(Ordering::SeqCst) == CORRUPT {
            // What a blob store reports for garbage under a valid id.
            let garbage = Record::decode_payload(b"\xa5\x01\x01\xde\xad", now(), 0);
            return Err(garbage.expect_err("garbage does not decode"));
        }
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.enter(id).await?;
        self.inner.set(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.enter(id).await?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.enter(id).await?;
        self.inner.touch(id, expires).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.enter(id).await?;
        self.inner.create(id, record).await
    }
    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.enter(id).await?;
        self.inner.update(id, record).await
    }
    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        self.enter(id).await?;
        if self.mode.load(Ordering::SeqCst) == ALWAYS_CONFLICT {
            return Ok(CasOutcome::Conflict);
        }
        self.inner.compare_and_set(id, record, expected).await
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Collects everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SIGNING_SECRET: &str = "signing-secret-8c1f0d";
const OLD_SIGNING_SECRET: &str = "old-signing-secret-77e2";
const PRIVATE_SECRET: &[u8; 40] = b"private-master-secret-0123456789abcdefgh";
const DATA: &str = "private-user-data-5b9e";

/// Everything observable that must stay clean, gathered during the cycle.
#[derive(Default)]
struct Observed {
    texts: Vec<String>,
    ids: HashSet<String>,
}

impl Observed {
    fn debug(&mut self, value: &dyn std::fmt::Debug) {
        self.texts.push(format!("{value:?}"));
        self.texts.push(format!("{value:#?}"));
    }
    fn error(&mut self, error: &Error) {
        self.debug(error);
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(e) = source {
            self.texts.push(e.to_string());
            source = e.source();
        }
    }
    fn session(&mut self, session: &Session) {
        self.ids.insert(session.id().as_str().to_owned());
        self.debug(session);
        self.debug(&session.id());
    }
}

fn cookie_pair(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .next_back()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
}

fn request(cookie: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(cookie) = cookie {
        headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    }
    headers
}

/// One manager's full life: create, load, conflicts (merged, exhausted, destroyed
/// elsewhere), regenerate, store down, timeout, corrupt record, too large, destroy.
async fn cycle(manager: &SessionManager, store: &Faulty, seen: &mut Observed) {
    let name = manager.cookie_name().to_owned();
    seen.debug(manager);

    // A client-chosen id that does not exist, and garbage.
    for forged in [
        format!("{name}=V1StGXR8_Z5jdHi6B-myT"),
        format!("{name}=s%3AV1StGXR8_Z5jdHi6B-myT.AAAA"),
        format!("{name}=%ff%fe"),
    ] {
        seen.ids.insert("V1StGXR8_Z5jdHi6B-myT".into());
        let s = manager.load(&request(Some(&forged))).await.unwrap();
        assert!(s.is_new());
        seen.session(&s);
    }

    // Create.
    let lazy = LazySession::new(manager.clone(), &request(None));
    seen.debug(&lazy);
    let session = lazy.get().await.unwrap();
    session.insert("user", DATA).unwrap();
    seen.debug(&lazy);
    let mut out = HeaderMap::new();
    lazy.finish(StatusCode::OK, &mut out).await.unwrap();
    seen.session(&session);
    let cookie = cookie_pair(&out).expect("a new session sets a cookie");

    // Two requests of the same session write concurrently: merged by compare-and-set.
    let a = manager.load(&request(Some(&cookie))).await.unwrap();
    let b = manager.load(&request(Some(&cookie))).await.unwrap();
    assert!(!a.is_new() && !b.is_new());
    a.insert("a", DATA).unwrap();
    b.insert("b", DATA).unwrap();
    a.commit().await.unwrap();
    b.commit().await.unwrap();
    seen.session(&b);
    let stored = store
        .inner
        .get(&manager.store_key(&b.id()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.data.len(), 3, "the concurrent writes were merged");
    seen.debug(&stored);

    // Conflicts that never resolve.
    store.set_mode(ALWAYS_CONFLICT);
    let c = manager.load(&request(Some(&cookie))).await.unwrap();
    c.insert("c", DATA).unwrap();
    let error = c.commit().await.expect_err("conflict");
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    seen.error(&error);
    seen.session(&c);
    store.set_mode(OK);

    // Destroyed by another request while this one saves: dropped, not resurrected.
    let d = manager.load(&request(Some(&cookie))).await.unwrap();
    let e = manager.load(&request(Some(&cookie))).await.unwrap();
    d.destroy();
    d.commit().await.unwrap();
    e.insert("e", DATA).unwrap();
    e.commit().await.unwrap();
    seen.session(&d);
    seen.session(&e);

    // A fresh session, then regenerate it (login).
    let f = manager.load(&request(None)).await.unwrap();
    f.insert("user", DATA).unwrap();
    let mut out = HeaderMap::new();
    manager.finish(&f, StatusCode::OK, &mut out).await.unwrap();
    seen.session(&f);
    let cookie = cookie_pair(&out).unwrap();
    let g = manager.load(&request(Some(&cookie))).await.unwrap();
    seen.session(&g);
    g.regenerate();
    let mut out = HeaderMap::new();
    manager.finish(&g, StatusCode::OK, &mut out).await.unwrap();
    seen.session(&g);
    let cookie = cookie_pair(&out).unwrap();

    // Store down: load and commit fail with errors that name no id.
    store.set_mode(DOWN);
    let error = manager
        .load(&request(Some(&cookie)))
        .await
        .expect_err("store down");
    assert!(error.is_unavailable());
    seen.error(&error);
    store.set_mode(OK);
    let h = manager.load(&request(Some(&cookie))).await.unwrap();
    h.insert("h", DATA).unwrap();
    store.set_mode(DOWN);
    let error = h.commit().await.expect_err("store down");
    seen.error(&error);
    seen.session(&h);

    // Store too slow: the manager's timeout.
    store.set_mode(SLOW);
    let error = h.commit().await.expect_err("timeout");
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    seen.error(&error);
    store.set_mode(OK);
    h.commit().await.unwrap();

    // Garbage stored under a valid id: logged without the id, fresh session.
    store.set_mode(CORRUPT);
    let i = manager.load(&request(Some(&cookie))).await.unwrap();
    assert!(i.is_new());
    seen.session(&i);
    store.set_mode(OK);

    // Too large.
    let j = manager.load(&request(Some(&cookie))).await.unwrap();
    let error = j.insert("big", "x".repeat(4096)).expect_err("too large");
    seen.error(&error);

    // Destroy.
    j.destroy();
    let mut out = HeaderMap::new();
    manager.finish(&j, StatusCode::OK, &mut out).await.unwrap();
    seen.session(&j);

    // Every id any store call saw.
    seen.ids.extend(store.ids.lock().unwrap().iter().cloned());
}

#[test]
fn no_id_secret_or_data_in_logs_debug_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut seen = Observed::default();
    let signed = SignedCodec::new([SIGNING_SECRET, OLD_SIGNING_SECRET]).unwrap();
    let private = PrivateCodec::from_secrets([PRIVATE_SECRET]).unwrap();
    seen.debug(&signed);
    seen.debug(&private);

    rt().block_on(async {
        for codec in 0..3 {
            let store = Faulty::default();
            let builder = SessionManager::builder(TracingStore::new(store.clone()))
                .max_size(Some(1024))
                .store_timeout(Duration::from_millis(200))
                .max_age(Duration::from_secs(3600));
            let manager = match codec {
                0 => builder.build(),
                1 => builder
                    .cookie_name("connect.sid")
                    .cookie_codec(signed.clone())
                    .build(),
                _ => builder.cookie_codec(private.clone()).build(),
            }
            .unwrap();
            cycle(&manager, &store, &mut seen).await;
            seen.debug(&TracingStore::new(store.clone()));
        }

        // Cookie-only sessions: the id travels inside the sealed cookie.
        let manager = SessionManager::cookie_only(private.clone())
            .max_age(Duration::from_secs(3600))
            .build()
            .unwrap();
        seen.debug(&manager);
        let s = manager.load(&request(None)).await.unwrap();
        s.insert("user", DATA).unwrap();
        let mut out = HeaderMap::new();
        manager.finish(&s, StatusCode::OK, &mut out).await.unwrap();
        seen.session(&s);
        let cookie = cookie_pair(&out).unwrap();
        let loaded = manager.load(&request(Some(&cookie))).await.unwrap();
        assert_eq!(loaded.id(), s.id());
        seen.session(&loaded);
        loaded.insert("big", "x".repeat(8192)).unwrap();
        let error = loaded.commit().await.expect_err("cookie too large");
        seen.error(&error);
    });

    // Records and other errors on their own.
    let mut record = Record::new(now(), session_store::Codec::Json);
    record
        .data
        .insert("user".into(), format!("\"{DATA}\"").into_bytes());
    seen.debug(&record);
    seen.debug(&ExpressLayout::default());
    let garbage = ExpressLayout::default()
        .decode(b"[\"V1StGXR8_Z5jdHi6B-myT\"", now(), 0)
        .unwrap_err();
    seen.error(&garbage);
    seen.error(&SignedCodec::new([""]).unwrap_err());
    seen.error(&PrivateCodec::from_secrets([b"short"]).unwrap_err());

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("session store call") && log.contains("could not be decoded"),
        "the capture saw the store calls and the corrupt record:\n{log}"
    );
    assert!(log.contains("destroyed elsewhere"), "{log}");
    assert!(seen.ids.len() > 30, "only {} ids observed", seen.ids.len());

    let secrets = [
        SIGNING_SECRET.to_owned(),
        OLD_SIGNING_SECRET.to_owned(),
        String::from_utf8_lossy(PRIVATE_SECRET).into_owned(),
        // A recognisable slice of the private secret, in case it is printed in part.
        "master-secret".to_owned(),
    ];
    let haystacks: Vec<(&str, &str)> = std::iter::once(("tracing output", log.as_str()))
        .chain(seen.texts.iter().map(|t| ("Debug/Display", t.as_str())))
        .collect();
    for (what, text) in haystacks {
        for id in &seen.ids {
            assert!(
                !text.contains(id.as_str()),
                "{what} holds a session id:\n{text}"
            );
        }
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds a secret:\n{text}"
            );
        }
        assert!(!text.contains(DATA), "{what} holds session data:\n{text}");
    }
}
