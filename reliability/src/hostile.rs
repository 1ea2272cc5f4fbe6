//! Hostile cookies through HTTP: the corpus and the driver that runs it against a store.
//!
//! The app's manager signs its cookies (express-session format, [`SECRET`]). For every
//! case the driver sends `GET /read` (must not touch the store at all) and `GET /count`
//! (may create one fresh session, never read or write the one the attacker aimed at), each
//! on a fresh connection with the raw header bytes, and checks that the answer is a fresh
//! session or a clear 4xx, that the store saw no call for the invalid id, and that the
//! backend's own record count moved only by the fresh session.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use session_store::{CookieCodec, SessionManager, SessionStore, SignedCodec};

use crate::raw_http::{RawReply, get_request, send_raw};
use session_store::testing::CountingStore;

/// The secret the app signs with.
pub const SECRET: &str = "reliability corpus secret";
/// Another secret, for signatures the app must reject.
pub const OTHER_SECRET: &str = "not the app's secret";
/// Per-exchange timeout (generous).
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a case must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Not a session of ours: fresh session or 4xx, and the store is never asked about it.
    Invalid,
    /// The genuine cookie in another spelling the manager accepts: the session loads.
    Genuine,
    /// A plausible, validly signed id of no session: one `get`, then a fresh session.
    Unknown,
}

/// One hostile request: header lines inserted verbatim (each ends in CRLF).
#[derive(Debug, Clone)]
pub struct Case {
    /// What it tries.
    pub label: String,
    /// Raw header lines.
    pub head: Vec<u8>,
    /// The expected outcome.
    pub expect: Expect,
}

fn cookie_line(value: &[u8]) -> Vec<u8> {
    let mut line = b"Cookie: ".to_vec();
    line.extend_from_slice(value);
    line.extend_from_slice(b"\r\n");
    line
}

/// The corpus: at least 40 hostile `Cookie` headers and ids. `genuine` is the wire value of
/// a real session cookie (`s%3A<id>.<sig>`), `id` its id.
pub fn corpus(genuine: &str, id: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |label: &str, value: Vec<u8>| {
        cases.push(Case {
            label: label.to_owned(),
            head: cookie_line(&value),
            expect: Expect::Invalid,
        });
    };
    let text = |s: &str| s.as_bytes().to_vec();
    let signed_other = SignedCodec::new([OTHER_SECRET])
        .expect("secret")
        .encode("sid", id);
    let other_id = "BBBBBBBBBBBBBBBBBBBBB";
    let signed_real_sig = genuine
        .rsplit_once('.')
        .map_or("", |(_, sig)| sig)
        .to_owned();

    // Empty and malformed.
    add("empty header", text(""));
    add("only separators", text(";;;; ;"));
    add("empty value", text("sid="));
    add("empty quoted value", text("sid=\"\""));
    add("unterminated quote", text("sid=\"abc"));
    add("lone percent", text("sid=%"));
    add("bad percent escape", text("sid=%zz%"));
    // Non-UTF-8: escaped and raw.
    add("escaped non-UTF-8", text("sid=%FF%FE%FD"));
    add("raw non-UTF-8 bytes", b"sid=\xff\xfe\xfd\x80".to_vec());
    add("raw non-UTF-8 name", b"\xc3\x28=1; sid=\xc3\x28".to_vec());
    add("overlong UTF-8 slash", text("sid=%C0%AF"));
    // NUL and control characters.
    add("escaped NUL", text("sid=%00"));
    add(
        "escaped NUL inside a signed id",
        format!("sid=s%3A{id}%00.{signed_real_sig}").into_bytes(),
    );
    add("raw NUL byte", b"sid=abc\x00def".to_vec());
    add("raw bare CR", b"sid=abc\rdef".to_vec());
    add(
        "escaped CRLF header injection",
        text("sid=%0d%0aSet-Cookie:%20admin=1"),
    );
    add("tab padding", text("sid=\t\t"));
    add("vertical tab and form feed", b"sid=\x0b\x0c".to_vec());
    // Path tricks.
    add("path traversal", text("sid=../../../../etc/passwd"));
    add(
        "escaped path traversal",
        text("sid=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
    );
    add(
        "backslash traversal",
        text("sid=..%5C..%5Cwindows%5Cwin.ini"),
    );
    add("absolute path", text("sid=/etc/shadow"));
    // SQL injection.
    add("SQL tautology", text("sid=' OR '1'='1"));
    add("SQL drop", text("sid='; DROP TABLE sessions; --"));
    add(
        "SQL union",
        text("sid=x' UNION SELECT sid, sess FROM session --"),
    );
    add(
        "escaped SQL tautology",
        text("sid=%27%20OR%20%271%27%3D%271"),
    );
    add("SQL comment id", text("sid=AAAAAAAAAAAAAAAAAAAA'--"));
    // Mongo operators.
    add("Mongo $gt", text("sid={\"$gt\": \"\"}"));
    add("escaped Mongo $gt", text("sid=%7B%22%24gt%22%3A%22%22%7D"));
    add("Mongo $ne null", text("sid={\"$ne\": null}"));
    add("Mongo $where", text("sid={\"$where\": \"sleep(5000)\"}"));
    add("Mongo $regex", text("sid={\"$regex\": \".*\"}"));
    add("array value", text("sid=[\"a\",\"b\"]"));
    // Redis patterns and commands.
    add("Redis wildcard", text("sid=*"));
    add("Redis key pattern", text("sid=session:*"));
    add("Redis escaped command", text("sid=%0D%0AFLUSHALL%0D%0A"));
    add("Redis KEYS command", text("sid=KEYS%20*"));
    add("Redis glob class", text("sid=[a-z]?*"));
    // Oversized.
    add(
        "8 KiB id",
        format!("sid={}", "A".repeat(8 * 1024)).into_bytes(),
    );
    add(
        "4 KiB of escapes",
        format!("sid={}", "%41".repeat(4 * 1024)).into_bytes(),
    );
    add(
        "64 KiB header",
        format!("sid={}", "B".repeat(64 * 1024)).into_bytes(),
    );
    add(
        "2000 cookies then sid",
        format!("{}sid=x", "a=1; ".repeat(2000)).into_bytes(),
    );
    add(
        "overlong signed id",
        format!("sid=s%3A{}.{signed_real_sig}", "A".repeat(300)).into_bytes(),
    );
    // Signatures.
    add("bare id, unsigned", format!("sid={id}").into_bytes());
    add(
        "prefix without signature",
        format!("sid=s%3A{id}").into_bytes(),
    );
    add(
        "signature truncated",
        format!("sid={}", &genuine[..genuine.len() - 1]).into_bytes(),
    );
    add("signature extended", format!("sid={genuine}A").into_bytes());
    add(
        "signature flipped",
        format!("sid={}", flip_last(genuine)).into_bytes(),
    );
    add(
        "signed with another secret",
        format!("sid={}", encode(&signed_other)).into_bytes(),
    );
    add(
        "another id with the genuine signature",
        format!("sid=s%3A{other_id}.{signed_real_sig}").into_bytes(),
    );
    add("doubled prefix", format!("sid=s%3A{genuine}").into_bytes());
    add(
        "lower-cased",
        format!("sid={}", genuine.to_lowercase()).into_bytes(),
    );
    add("empty signature", format!("sid=s%3A{id}.").into_bytes());
    add(
        "signature of the empty value",
        format!("sid=s%3A.{signed_real_sig}").into_bytes(),
    );
    // Cookie-name tricks.
    add(
        "first occurrence is hostile",
        format!("sid=*; sid={genuine}").into_bytes(),
    );
    add(
        "name differs in case",
        format!("Sid={genuine}").into_bytes(),
    );
    add(
        "spaces inside the name",
        format!("s i d={genuine}").into_bytes(),
    );
    add("Unicode bidi override", text("sid=%E2%80%AE%E2%80%AD"));
    add(
        "plain Unicode",
        "sid=ünïcödé-ünïcödé-ünï".as_bytes().to_vec(),
    );
    add("JavaScript literals", text("sid=undefined"));
    add("number", text("sid=-1"));

    // Hostile ids inside a *valid* signature (a leaked secret, or a custom codec): the id
    // validator alone must keep them from the store.
    let app_codec = SignedCodec::new([SECRET]).expect("secret");
    for (label, hostile_id) in [
        ("SQL tautology", "' OR '1'='1"),
        ("SQL drop", "x'; DROP TABLE session; --"),
        ("Mongo $gt", "{\"$gt\": \"\"}"),
        ("Redis wildcard", "*"),
        ("Redis pattern", "session:*"),
        ("CRLF Redis command", "x\r\nFLUSHALL\r\n"),
        ("path traversal", "../../etc/passwd"),
        ("NUL", "AAAAAAAAAA\0AAAAAAAAAA"),
        ("21 characters with a space", "AAAAAAAAAA AAAAAAAAAA"),
        ("20 characters", "AAAAAAAAAAAAAAAAAAAA"),
        ("22 characters", "AAAAAAAAAAAAAAAAAAAAAA"),
        ("21 characters with a dot", "AAAAAAAAAA.AAAAAAAAAA"),
        ("21 non-ASCII letters", "ééééééééééééééééééééé"),
        ("5000 characters", &"A".repeat(5000)),
        ("empty id", ""),
    ] {
        let value = encode_all(&app_codec.encode("sid", hostile_id));
        add(
            &format!("validly signed id: {label}"),
            format!("sid={value}").into_bytes(),
        );
    }

    // Whole-header tricks the manager must also survive.
    let mut raw = |label: &str, head: Vec<u8>, expect: Expect| {
        cases.push(Case {
            label: label.to_owned(),
            head,
            expect,
        })
    };
    raw(
        "two Cookie fields, hostile first",
        [
            cookie_line(b"sid={\"$gt\":\"\"}"),
            cookie_line(format!("sid={genuine}").as_bytes()),
        ]
        .concat(),
        Expect::Invalid,
    );
    raw(
        "obsolete line folding",
        format!("Cookie: a=1;\r\n sid={genuine}\r\n").into_bytes(),
        Expect::Invalid,
    );
    raw(
        "header name with a space",
        format!("Cookie : sid={genuine}\r\n").into_bytes(),
        Expect::Invalid,
    );
    // Control cases: a validly signed id of no session reaches the store (one `get`)…
    raw(
        "validly signed unknown id (control)",
        cookie_line(
            format!(
                "sid={}",
                encode(&app_codec.encode("sid", "CCCCCCCCCCCCCCCCCCCCC"))
            )
            .as_bytes(),
        ),
        Expect::Unknown,
    );
    // …and the genuine cookie in spellings the manager must accept loads the session.
    raw(
        "genuine cookie (control)",
        cookie_line(format!("sid={genuine}").as_bytes()),
        Expect::Genuine,
    );
    raw(
        "genuine cookie quoted (control)",
        cookie_line(format!("sid=\"{genuine}\"").as_bytes()),
        Expect::Genuine,
    );
    raw(
        "genuine cookie in a second Cookie field (control)",
        [
            cookie_line(b"a=1"),
            cookie_line(format!("sid={genuine}").as_bytes()),
        ]
        .concat(),
        Expect::Genuine,
    );
    cases
}

/// Changes the last character of the signature to another valid base64 character.
fn flip_last(value: &str) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

/// Percent-encodes `:`, `/`, `+` and `=` as the manager does on the wire.
pub fn encode(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

/// Percent-encodes every byte but `A-Z a-z 0-9 - _ . ~`.
pub fn encode_all(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Reads the backend directly (not through the store): how many records it holds, and
/// garbage written under an id with the driver.
pub trait Backend: Send + Sync {
    /// Records the backend holds for this test (its prefix, collection or table).
    fn count(&self) -> Pin<Box<dyn Future<Output = usize> + Send + '_>>;
    /// Labels of the garbage this backend can write (empty: it holds no raw bytes).
    fn garbage_kinds(&self) -> Vec<&'static str>;
    /// Writes garbage `kind` under `id` with the driver, bypassing the store.
    fn write_garbage<'a>(
        &'a self,
        id: &'a str,
        kind: usize,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
    /// The raw stored form under `id` (to check the garbage is left alone).
    fn raw<'a>(&'a self, id: &'a str) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;
}

/// What a hostile run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The store.
    pub store: String,
    /// Corpus cases.
    pub cases: usize,
    /// HTTP requests sent.
    pub requests: usize,
    /// Answered with a fresh session.
    pub fresh: usize,
    /// Rejected by the HTTP server with a 4xx before reaching the app.
    pub rejected_4xx: usize,
    /// Garbage records tried.
    pub garbage: usize,
    /// Problems (the test asserts none).
    pub violations: Vec<String>,
}

impl Outcome {
    /// One line with the figures.
    pub fn figures(&self) -> String {
        format!(
            "FIGURES hostile store={} cases={} requests={} fresh={} rejected_4xx={} garbage_records={} panics=0 violations={}",
            self.store,
            self.cases,
            self.requests,
            self.fresh,
            self.rejected_4xx,
            self.garbage,
            self.violations.len()
        )
    }
}

async fn exchange(addr: SocketAddr, path: &str, head: &[u8]) -> Result<RawReply, String> {
    send_raw(addr, &get_request(path, head), EXCHANGE_TIMEOUT)
        .await
        .map_err(|e| format!("transport error (a panic drops the connection): {e}"))
}

fn shown(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    if text.len() > 80 {
        format!(
            "{}… ({} bytes)",
            &text[..text.floor_char_boundary(80)],
            head.len()
        )
    } else {
        format!("{text:?}")
    }
}

/// Runs the corpus and the garbage records against `store` through HTTP.
pub async fn run(store: Arc<dyn SessionStore>, backend: &dyn Backend) -> Outcome {
    let name = store.name().to_owned();
    let counting = CountingStore::from_arc(store);
    let manager = SessionManager::builder_arc(Arc::new(counting.clone()))
        .cookie_codec(SignedCodec::new([SECRET]).expect("secret"))
        .max_age(Duration::from_secs(600))
        .store_timeout(Duration::from_secs(10))
        .build()
        .expect("valid manager");
    let app = crate::app::serve(manager.clone()).await;
    let mut out = Outcome {
        store: name,
        ..Outcome::default()
    };
    let mut violations = Vec::new();

    // The session the attacker aims at: count = 2.
    let first = exchange(app.addr, "/count", b"")
        .await
        .expect("first request");
    assert_eq!(first.status, 200, "{}", first.text());
    let genuine = first.cookie("sid").expect("a session cookie");
    let decoded = genuine
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2B", "+");
    let id = decoded
        .strip_prefix("s:")
        .and_then(|s| s.rsplit_once('.'))
        .map(|(id, _)| id.to_owned())
        .expect("a signed cookie");
    let genuine_head = cookie_line(format!("sid={genuine}").as_bytes());
    let second = exchange(app.addr, "/count", &genuine_head)
        .await
        .expect("second request");
    assert_eq!((second.status, second.text().as_str()), (200, "2"));

    let cases = corpus(&genuine, &id);
    out.cases = cases.len();
    for case in &cases {
        let what = format!("{} {}", case.label, shown(&case.head));
        // 1. /read: an invalid cookie never reaches the store; nothing is written.
        let before = backend.count().await;
        counting.reset();
        out.requests += 1;
        let reply = match exchange(app.addr, "/read", &case.head).await {
            Ok(reply) => reply,
            Err(e) => {
                violations.push(format!("{what}: {e}"));
                continue;
            }
        };
        let calls = counting.calls();
        match (case.expect, reply.status) {
            (Expect::Genuine, 200) => {
                if reply.text() != "2" || calls.get != 1 || calls.total() != 1 {
                    violations.push(format!(
                        "{what}: genuine cookie read {:?} with calls {calls:?}",
                        reply.text()
                    ));
                }
            }
            (Expect::Unknown, 200) => {
                // The id, then its tombstone (was it moved by a login moments ago?).
                if reply.text() != "0" || calls.get != 2 || calls.total() != 2 {
                    violations.push(format!(
                        "{what}: unknown id read {:?} with calls {calls:?}",
                        reply.text()
                    ));
                }
            }
            (Expect::Invalid, 200) => {
                if reply.text() != "0" {
                    violations.push(format!("{what}: /read answered {:?}", reply.text()));
                }
                if calls.total() != 0 {
                    violations.push(format!("{what}: reached the store: {calls:?}"));
                }
                if reply.set_cookies().iter().any(|c| c.contains(&id)) {
                    violations.push(format!("{what}: answer names the target id"));
                }
            }
            (Expect::Invalid, status) if (400..500).contains(&status) => {
                out.rejected_4xx += 1;
                if calls.total() != 0 {
                    violations.push(format!("{what}: {status} but reached the store: {calls:?}"));
                }
            }
            (_, status) => violations.push(format!(
                "{what}: /read answered {status} {:?}",
                reply.text()
            )),
        }
        let after = backend.count().await;
        if after != before {
            violations.push(format!(
                "{what}: /read changed the backend: {before} -> {after} records"
            ));
        }

        // 2. /count: a fresh session under a new id, the target untouched.
        if case.expect == Expect::Genuine {
            continue;
        }
        counting.reset();
        out.requests += 1;
        let reply = match exchange(app.addr, "/count", &case.head).await {
            Ok(reply) => reply,
            Err(e) => {
                violations.push(format!("{what}: {e}"));
                continue;
            }
        };
        let calls = counting.calls();
        match reply.status {
            200 => {
                out.fresh += 1;
                let new_cookie = reply.cookie("sid");
                if reply.text() != "1" {
                    violations.push(format!("{what}: /count answered {:?}", reply.text()));
                }
                match new_cookie {
                    Some(cookie) if !cookie.is_empty() && !cookie.contains(&id) => {}
                    other => violations.push(format!("{what}: fresh session cookie {other:?}")),
                }
                // An unknown (validly signed) id: the id and its tombstone are looked up.
                let gets = 2 * usize::from(case.expect == Expect::Unknown);
                if calls.get != gets || calls.create != 1 || calls.total() != gets + 1 {
                    violations.push(format!(
                        "{what}: store calls {calls:?} (want {gets} get, one create)"
                    ));
                }
                let now = backend.count().await;
                if now != after + 1 {
                    violations.push(format!(
                        "{what}: backend went from {after} to {now} records (want +1)"
                    ));
                }
            }
            status if (400..500).contains(&status) => {
                if calls.total() != 0 {
                    violations.push(format!("{what}: {status} but reached the store: {calls:?}"));
                }
            }
            status => violations.push(format!(
                "{what}: /count answered {status} {:?}",
                reply.text()
            )),
        }
    }

    // The target session survived the whole corpus unchanged.
    let check = exchange(app.addr, "/read", &genuine_head).await;
    match check {
        Ok(reply) if reply.status == 200 && reply.text() == "2" => {}
        other => violations.push(format!("target session after the corpus: {other:?}")),
    }

    // Garbage under a valid id: a fresh session, the garbage left alone.
    let codec = SignedCodec::new([SECRET]).expect("secret");
    for (kind, label) in backend.garbage_kinds().into_iter().enumerate() {
        out.garbage += 1;
        let victim = session_store::IdGenerator::nanoid().generate();
        // The garbage goes where the store keeps this id's session (its digest).
        let key = manager.store_key(&victim);
        let key = key.as_str();
        let victim = victim.as_str().to_owned();
        backend.write_garbage(key, kind).await;
        let stored = backend.raw(key).await;
        if stored.is_none() {
            violations.push(format!("garbage {label}: not found after writing it"));
        }
        let head = cookie_line(format!("sid={}", encode(&codec.encode("sid", &victim))).as_bytes());
        counting.reset();
        for path in ["/read", "/count"] {
            out.requests += 1;
            match exchange(app.addr, path, &head).await {
                Ok(reply) if reply.status == 200 => {
                    let want = if path == "/read" { "0" } else { "1" };
                    if reply.text() != want {
                        violations.push(format!(
                            "garbage {label}: {path} answered {:?}",
                            reply.text()
                        ));
                    }
                    if path == "/count" {
                        match reply.cookie("sid") {
                            Some(c) if !c.is_empty() && !c.contains(&victim) => {}
                            other => violations
                                .push(format!("garbage {label}: fresh session cookie {other:?}")),
                        }
                    }
                }
                other => violations.push(format!("garbage {label}: {path} gave {other:?}")),
            }
        }
        let calls = counting.calls();
        if calls.get != 2 {
            violations.push(format!(
                "garbage {label}: the id was not looked up: {calls:?}"
            ));
        }
        if backend.raw(key).await != stored {
            violations.push(format!("garbage {label}: the stored garbage was changed"));
        }
    }
    if !app.is_alive() {
        violations.push("the app's server task ended (panicked?)".into());
    }
    out.violations = violations;
    out
}
