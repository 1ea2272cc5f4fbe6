//! The session-store demo server (axum + `session-store-tower`).
//!
//! ```text
//! cargo run --release -p session-demo -- [--store URL] [--listen ADDR] [--max-age DUR]
//!                                         [--touch-after DUR] [--absolute-lifetime DUR]
//!                                         [--secret S]... [--near-cache]
//! ```
//!
//! - `GET /`: counts visits in the session:
//!   `In this session, you have visited this website N time(s).`
//! - `POST /login?user=NAME&remember=1`: stores the user and regenerates the session id (the
//!   data stays); `remember=1` keeps the session for 30 days ("remember me"), without it the
//!   cookie is a browser-session cookie.
//! - `POST /logout`: destroys the session.
//! - `GET /whoami`: reads the session without modifying it.
//! - `GET /sessions`: the logged-in user's sessions (one per device or browser), as JSON.
//! - `POST /sessions/revoke?handle=H`: ends one of them (e.g. a lost phone).
//! - `POST /logout-everywhere`: ends all of them, this one included; `?others=1`: all but
//!   this one.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use session_store::time::OffsetDateTime;
use session_store::time::format_description::well_known::Rfc3339;
use session_store::{
    Error, MAX_LIFETIME, MemoryStore, PrivateCodec, SameSite, SessionInfo, SessionManager,
    SessionManagerBuilder, SessionStore, SignedCodec,
};
use session_store_mongodb::MongoStore;
use session_store_redis::{NearCacheConfig, RedisStore};
use session_store_sqlx::{MySqlStore, PostgresStore, SqliteStore};
use session_store_tower::{Session, SessionLayer};

const USAGE: &str = "\
session-demo: a session-store demo server

USAGE:
    session-demo [OPTIONS]

OPTIONS (each also read from the environment variable in brackets; flags win):
    --store URL          where sessions live [SESSION_STORE] (default: memory)
                         memory | sqlite://PATH | postgres://… | mysql://… | redis://… |
                         redis+cluster://… | mongodb://… | cookie
    --listen ADDR        address to serve on [SESSION_LISTEN] (default: 127.0.0.1:3000)
    --max-age DUR        session lifetime, e.g. 3600, 90s, 30m, 12h, 7d [SESSION_MAX_AGE]
                         (default: none, a browser-session cookie)
    --touch-after DUR    extend the expiry at most this often [SESSION_TOUCH_AFTER]
                         (default: never; 0 extends on every request)
    --absolute-lifetime DUR
                         end every session this long after it started, however active
                         (1s to 400d) [SESSION_ABSOLUTE_LIFETIME] (default: none)
    --secret SECRET      sign cookies (express-session format); repeat to rotate keys,
                         the first signs [SESSION_SECRET, one secret]
    --cookie-name NAME   cookie name [SESSION_COOKIE_NAME] (default: sid)
    --secure             send the cookie only over HTTPS [SESSION_SECURE=1]
    --same-site VALUE    strict | lax | none (none needs --secure) [SESSION_SAME_SITE]
                         (default: not set)
    --near-cache         keep sessions in this process too, served without a round trip
                         and dropped when the server says another process changed them
                         (redis:// and postgres:// stores) [SESSION_NEAR_CACHE=1]
    -h, --help           this text

LOGGING:
    RUST_LOG             a level (error, warn, info, debug, trace, off) or directives such
                         as `info,session_store=debug` (default: info). Session store
                         errors are logged at most once a second; how many were left out
                         is logged every 10 seconds.

ROUTES:
    GET  /         count visits in the session
    POST /login    ?user=NAME[&remember=1]: store the user, regenerate the session id;
                   remember=1: a 30-day cookie, else a browser-session cookie
    POST /logout   destroy the session
    GET  /whoami   read the session without modifying it
    GET  /sessions the logged-in user's sessions as JSON: handle, created, last_seen,
                   expires, label (the browser's User-Agent), current
    POST /sessions/revoke
                   ?handle=H: end one of the user's sessions (404 if none has handle H)
    POST /logout-everywhere
                   end all the user's sessions, this one included;
                   ?others=1: all but this one
                   (the last three need a store that indexes sessions by user: 501 in
                   cookie-only mode)
";

/// The demo's configuration.
struct Options {
    store: String,
    listen: String,
    max_age: Option<Duration>,
    touch_after: Option<Duration>,
    absolute_lifetime: Option<Duration>,
    secrets: Vec<String>,
    cookie_name: String,
    secure: bool,
    same_site: Option<SameSite>,
    near_cache: bool,
}

impl Options {
    /// Parses the flags after the program name, falling back to `env` for flags not given.
    /// `Ok(None)`: help was asked for.
    fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let mut store = None;
        let mut listen = None;
        let mut max_age = None;
        let mut touch_after = None;
        let mut absolute_lifetime = None;
        let mut secrets = Vec::new();
        let mut cookie_name = None;
        let mut secure = None;
        let mut same_site = None;
        let mut near_cache = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            if flag == "--secure" && inline.is_none() {
                secure = Some(true);
                continue;
            }
            if flag == "--near-cache" && inline.is_none() {
                near_cache = Some(true);
                continue;
            }
            let mut value = || match inline {
                Some(value) => Ok(value.to_owned()),
                None => args.next().ok_or_else(|| format!("`{flag}` needs a value")),
            };
            match flag.as_str() {
                "--store" => store = Some(value()?),
                "--listen" => listen = Some(value()?),
                "--max-age" => max_age = Some(value()?),
                "--touch-after" => touch_after = Some(value()?),
                "--absolute-lifetime" => absolute_lifetime = Some(value()?),
                "--secret" => secrets.push(value()?),
                "--cookie-name" => cookie_name = Some(value()?),
                "--secure" => secure = Some(parse_bool("--secure", &value()?)?),
                "--near-cache" => near_cache = Some(parse_bool("--near-cache", &value()?)?),
                "--same-site" => same_site = Some(value()?),
                _ => return Err(format!("unknown argument `{flag}` (see --help)")),
            }
        }
        if secrets.is_empty()
            && let Some(secret) = env("SESSION_SECRET").filter(|s| !s.is_empty())
        {
            secrets.push(secret);
        }
        let duration = |flag: &str, value: Option<String>, var: &str| {
            value
                .or_else(|| env(var).filter(|v| !v.is_empty()))
                .map(|v| parse_duration(&v).map_err(|e| format!("{flag}: {e}")))
                .transpose()
        };
        Ok(Some(Self {
            store: store
                .or_else(|| env("SESSION_STORE").filter(|v| !v.is_empty()))
                .unwrap_or_else(|| "memory".into()),
            listen: listen
                .or_else(|| env("SESSION_LISTEN").filter(|v| !v.is_empty()))
                .unwrap_or_else(|| "127.0.0.1:3000".into()),
            max_age: duration("--max-age", max_age, "SESSION_MAX_AGE")?,
            touch_after: duration("--touch-after", touch_after, "SESSION_TOUCH_AFTER")?,
            absolute_lifetime: duration(
                "--absolute-lifetime",
                absolute_lifetime,
                "SESSION_ABSOLUTE_LIFETIME",
            )?
            .map(|d| within_limits("--absolute-lifetime", d))
            .transpose()?,
            secrets,
            cookie_name: cookie_name
                .or_else(|| env("SESSION_COOKIE_NAME").filter(|v| !v.is_empty()))
                .unwrap_or_else(|| "sid".into()),
            secure: match secure {
                Some(on) => on,
                None => env("SESSION_SECURE")
                    .filter(|v| !v.is_empty())
                    .map(|v| parse_bool("SESSION_SECURE", &v))
                    .transpose()?
                    .unwrap_or(false),
            },
            same_site: same_site
                .or_else(|| env("SESSION_SAME_SITE").filter(|v| !v.is_empty()))
                .map(|v| parse_same_site(&v))
                .transpose()?,
            near_cache: match near_cache {
                Some(on) => on,
                None => env("SESSION_NEAR_CACHE")
                    .filter(|v| !v.is_empty())
                    .map(|v| parse_bool("SESSION_NEAR_CACHE", &v))
                    .transpose()?
                    .unwrap_or(false),
            },
        }))
    }
}

/// `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`.
fn parse_bool(what: &str, text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{what}: `{text}` is not true or false")),
    }
}

/// `strict`, `lax` or `none`, in any case.
fn parse_same_site(text: &str) -> Result<SameSite, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "strict" => Ok(SameSite::Strict),
        "lax" => Ok(SameSite::Lax),
        "none" => Ok(SameSite::None),
        _ => Err(format!("--same-site: `{text}` is not strict, lax or none")),
    }
}

/// `90`, `90s`, `30m`, `12h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (e.g. 3600, 90s, 30m, 12h, 7d)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 3600, 90s, 30m, 12h, 7d)"))
}

/// `duration` if it is between one second and [`MAX_LIFETIME`] (400 days), the range the
/// manager accepts for lifetimes.
fn within_limits(flag: &str, duration: Duration) -> Result<Duration, String> {
    if duration < Duration::from_secs(1) || duration > MAX_LIFETIME {
        return Err(format!(
            "{flag}: {} is out of range (1s to 400d)",
            describe(duration)
        ));
    }
    Ok(duration)
}

/// The scheme of a store URL (`memory` for `memory` and `memory://`), if it looks like one.
fn scheme_of(url: &str) -> Option<&str> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    let plausible = !scheme.is_empty()
        && scheme.len() <= 32
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    plausible.then_some(scheme)
}

/// How often SQL stores delete expired rows.
const CLEANUP_PERIOD: Duration = Duration::from_secs(300);

/// Opens the store that `url` names, with the near-cache where `near_cache` asks for it.
/// Adding a store is one match arm.
async fn open_store(url: &str, near_cache: bool) -> Result<Arc<dyn SessionStore>, String> {
    // Never echo the URL itself: it may hold a password.
    let Some(scheme) = scheme_of(url) else {
        return Err("the store URL has no recognizable scheme (see --help)".into());
    };
    if near_cache && !matches!(scheme, "redis" | "rediss" | "postgres" | "postgresql") {
        return Err(format!(
            "--near-cache works with redis:// and postgres:// stores, not `{scheme}`"
        ));
    }
    match scheme {
        "memory" => {
            let store = MemoryStore::new();
            store.spawn_sweeper(Duration::from_secs(60));
            Ok(Arc::new(store))
        }
        "redis" | "rediss" => {
            let mut store = RedisStore::from_url(url).map_err(|e| store_error(scheme, &e))?;
            if near_cache {
                store = store
                    .with_near_cache(NearCacheConfig::new())
                    .map_err(|e| store_error(scheme, &e))?;
            }
            store.connect().await.map_err(|e| store_error(scheme, &e))?;
            Ok(Arc::new(store))
        }
        "redis+cluster" | "rediss+cluster" => {
            // redis+cluster://host1:port1,host2:port2 → one URL per seed node.
            let plain = scheme.trim_end_matches("+cluster");
            let nodes = url[scheme.len() + 3..]
                .split(',')
                .map(|node| format!("{plain}://{node}"))
                .collect::<Vec<_>>();
            let store =
                RedisStore::cluster_from_urls(nodes).map_err(|e| store_error(scheme, &e))?;
            store.connect().await.map_err(|e| store_error(scheme, &e))?;
            Ok(Arc::new(store))
        }
        "redis+sentinel" => {
            // redis+sentinel://host1:port1,host2:port2/master-name
            let rest = &url[scheme.len() + 3..];
            let (hosts, master) = rest
                .split_once('/')
                .filter(|(_, m)| !m.is_empty())
                .ok_or("redis+sentinel URLs end in /MASTER-NAME")?;
            let sentinels = hosts
                .split(',')
                .map(|host| format!("redis://{host}"))
                .collect::<Vec<_>>();
            let store = RedisStore::sentinel_from_urls(sentinels, master)
                .map_err(|e| store_error(scheme, &e))?;
            store.connect().await.map_err(|e| store_error(scheme, &e))?;
            Ok(Arc::new(store))
        }
        "mongodb" | "mongodb+srv" => {
            let store = MongoStore::from_url(url)
                .await
                .map_err(|e| store_error(scheme, &e))?;
            Ok(Arc::new(store))
        }
        "postgres" | "postgresql" => {
            let mut store = PostgresStore::connect(url)
                .await
                .map_err(|e| store_error(scheme, &e))?;
            if near_cache {
                store = store
                    .with_near_cache(NearCacheConfig::new())
                    .map_err(|e| store_error(scheme, &e))?;
            }
            // With the near-cache, also installs the trigger that announces changed rows.
            store.migrate().await.map_err(|e| store_error(scheme, &e))?;
            store.spawn_cleanup(CLEANUP_PERIOD);
            Ok(Arc::new(store))
        }
        "mysql" | "mariadb" => {
            let store = MySqlStore::connect(url)
                .await
                .map_err(|e| store_error(scheme, &e))?;
            store.migrate().await.map_err(|e| store_error(scheme, &e))?;
            store.spawn_cleanup(CLEANUP_PERIOD);
            Ok(Arc::new(store))
        }
        "sqlite" => {
            let store = SqliteStore::connect(url)
                .await
                .map_err(|e| store_error(scheme, &e))?;
            store.migrate().await.map_err(|e| store_error(scheme, &e))?;
            store.spawn_cleanup(CLEANUP_PERIOD);
            Ok(Arc::new(store))
        }
        "cookie" => Err("`cookie` sessions have no store: see run()".into()),
        other => Err(format!("unknown store `{other}` (see --help)")),
    }
}

/// A store error for the user, with its causes but never the URL (it may hold a password).
fn store_error(scheme: &str, error: &session_store::Error) -> String {
    let mut text = format!("cannot open the `{scheme}` store: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Builds the manager for `options` over `store`.
fn manager(options: &Options, store: Arc<dyn SessionStore>) -> Result<SessionManager, String> {
    let mut builder = lifetimes(
        options,
        cookie_attributes(
            options,
            SessionManager::builder_arc(store).cookie_name(&options.cookie_name),
        ),
    );
    if !options.secrets.is_empty() {
        let codec = SignedCodec::new(&options.secrets).map_err(|e| format!("--secret: {e}"))?;
        builder = builder.cookie_codec(codec);
    }
    builder.build().map_err(|e| e.to_string())
}

/// `--secure` and `--same-site` on `builder` (its `build` rejects `SameSite=None` without
/// `Secure`).
fn cookie_attributes(options: &Options, builder: SessionManagerBuilder) -> SessionManagerBuilder {
    let builder = builder.secure(options.secure);
    match options.same_site {
        Some(same_site) => builder.same_site(same_site),
        None => builder,
    }
}

/// `--max-age`, `--touch-after` and `--absolute-lifetime` on `builder`.
fn lifetimes(options: &Options, mut builder: SessionManagerBuilder) -> SessionManagerBuilder {
    if let Some(max_age) = options.max_age {
        builder = builder.max_age(max_age);
    }
    if let Some(after) = options.touch_after {
        builder = builder.touch_after(after);
    }
    if let Some(lifetime) = options.absolute_lifetime {
        builder = builder.absolute_lifetime(lifetime);
    }
    builder
}

/// Cookie-only sessions: the session itself travels in an encrypted cookie. Keys come from
/// `--secret` (at least 32 bytes each; the first encrypts); without one, a random key is made
/// at start-up and sessions end with the process.
fn cookie_manager(options: &Options) -> Result<SessionManager, String> {
    let keys = if options.secrets.is_empty() {
        tracing::warn!("no --secret: cookie sessions will not survive a restart");
        PrivateCodec::random()
    } else {
        PrivateCodec::from_secrets(&options.secrets).map_err(|e| format!("--secret: {e}"))?
    };
    lifetimes(
        options,
        cookie_attributes(
            options,
            SessionManager::cookie_only(keys).cookie_name(&options.cookie_name),
        ),
    )
    .build()
    .map_err(|e| e.to_string())
}

/// The demo's routes. The handlers that list and revoke a user's sessions also get the
/// manager, as state.
fn app(manager: SessionManager) -> Router {
    Router::new()
        .route("/", get(visit))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/whoami", get(whoami))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/logout-everywhere", post(logout_everywhere))
        .layer(SessionLayer::new(manager.clone()))
        .with_state(manager)
}

type Reply = (StatusCode, String);

fn failed(error: session_store::Error) -> Reply {
    (error.status_code(), "session error\n".into())
}

async fn visit(session: Session) -> Reply {
    // `update`, not get + insert: parallel requests of one session each count (the commit
    // applies the increment again to a value another request stored meanwhile).
    match session.update("visits", |visits: Option<u64>| visits.unwrap_or(0) + 1) {
        Ok(visits) => (
            StatusCode::OK,
            format!("In this session, you have visited this website {visits} time(s)."),
        ),
        Err(error) => failed(error),
    }
}

/// How long `remember=1` keeps a login: the session's own cookie `Max-Age`.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The first value of `name` in the query of `uri` (`Some("")` for `name=` and a bare
/// `name`).
fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn bad_request(text: &str) -> Reply {
    (StatusCode::BAD_REQUEST, format!("{text}\n"))
}

/// `?user=NAME` (letters, digits, `-`, `_`; at most 32), default `demo`.
fn user_of(uri: &Uri) -> Result<String, Reply> {
    let name = query_param(uri, "user").unwrap_or("demo");
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(bad_request("user: 1 to 32 of A-Z a-z 0-9 - _"))
    }
}

/// `?remember=1` (or `true`, `yes`, `on`; `0`, `false`, `no`, `off`), default off.
fn remember_of(uri: &Uri) -> Result<bool, Reply> {
    match query_param(uri, "remember") {
        None => Ok(false),
        Some(value) => parse_bool("remember", value).map_err(|e| bad_request(&e)),
    }
}

/// `30 days`, `1 hour`, `90 seconds`: the largest unit that divides `duration`.
fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size))
        .map_or((seconds, "second"), |(size, unit)| (seconds / size, unit));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

async fn login(uri: Uri, headers: HeaderMap, session: Session) -> Reply {
    let (user, remember) = match (user_of(&uri), remember_of(&uri)) {
        (Ok(user), Ok(remember)) => (user, remember),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    // A new id at login: whoever knew the old one (session fixation) is left out. The data
    // (the visit count) stays, and so does the session's start: a login does not extend
    // `--absolute-lifetime`.
    session.regenerate();
    if let Err(error) = session.insert("user", &user) {
        return failed(error);
    }
    // Bound to the user, so `GET /sessions` lists it and `/logout-everywhere` ends it; the
    // label tells the user which browser it is.
    if let Err(error) = session.set_owner(&user) {
        return failed(error);
    }
    session.set_label(user_agent(&headers));
    // "Remember me": a cookie that outlives the browser; otherwise a browser-session cookie,
    // whatever `--max-age` says.
    if let Err(error) = session.set_max_age(remember.then_some(REMEMBER_FOR)) {
        return failed(error);
    }
    let lifetime = match session.max_age() {
        Some(max_age) => format!("remembered for {}", describe(max_age)),
        None => "until the browser is closed".into(),
    };
    (StatusCode::OK, format!("Logged in as {user}, {lifetime}."))
}

/// The `User-Agent` header, or `unknown` if there is none (or it is not text).
fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|agent| !agent.is_empty())
        .unwrap_or("unknown")
}

/// One session in `GET /sessions`.
#[derive(Serialize)]
struct SessionView {
    /// Names the session for `POST /sessions/revoke` (a digest of the id, never the id).
    handle: String,
    /// RFC 3339 times; `created` is `null` for sessions stored before creation times were
    /// kept.
    created: Option<String>,
    last_seen: String,
    expires: String,
    label: Option<String>,
    /// Whether this is the session of the request that asked.
    current: bool,
}

/// RFC 3339 in whole seconds, e.g. `2026-12-04T08:39:33Z`.
fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

impl SessionView {
    fn new(info: SessionInfo, current: &str) -> Self {
        Self {
            current: info.handle == current,
            handle: info.handle,
            created: info.created.map(rfc3339),
            last_seen: rfc3339(info.last_seen),
            expires: rfc3339(info.expires),
            label: info.label,
        }
    }
}

/// The answer to a request that needs a logged-in user (one bound to the session) and has
/// none.
fn not_logged_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "Not logged in (POST /login first).\n",
    )
        .into_response()
}

/// The answer to a failed listing or revocation: 501 if the store cannot find a user's
/// sessions (never an empty list, which would read as "no other sessions"), else the
/// store's error status.
fn owners_failed(error: Error) -> Response {
    match error {
        Error::Unsupported {
            store: "cookie", ..
        } => (
            StatusCode::NOT_IMPLEMENTED,
            "Cookie-only sessions live in the browser, not in a store: they cannot be listed \
             or revoked. Run the demo with a store (--store) for this.\n"
                .to_owned(),
        )
            .into_response(),
        Error::Unsupported { store, .. } => (
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "The `{store}` store keeps no index of sessions by user: it cannot list or \
                 revoke a user's sessions.\n"
            ),
        )
            .into_response(),
        error => failed(error).into_response(),
    }
}

async fn sessions(State(manager): State<SessionManager>, session: Session) -> Response {
    let Some(owner) = session.owner() else {
        return not_logged_in();
    };
    match manager.sessions_of(&owner).await {
        Ok(list) => {
            let current = session.handle();
            let list: Vec<SessionView> = list
                .into_iter()
                .map(|info| SessionView::new(info, &current))
                .collect();
            // Pretty, for people reading it with curl.
            match serde_json::to_string_pretty(&list) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "session error\n").into_response(),
            }
        }
        Err(error) => owners_failed(error),
    }
}

async fn revoke(State(manager): State<SessionManager>, uri: Uri, session: Session) -> Response {
    let Some(handle) = query_param(&uri, "handle").filter(|h| !h.is_empty()) else {
        return bad_request("handle: the handle of one of your sessions (GET /sessions)")
            .into_response();
    };
    let Some(owner) = session.owner() else {
        return not_logged_in();
    };
    match manager.revoke(&owner, handle).await {
        Ok(true) if handle == session.handle() => {
            // This request's own session: clear its cookie too.
            session.destroy();
            (StatusCode::OK, "Revoked this session: logged out.").into_response()
        }
        Ok(true) => (StatusCode::OK, "Revoked.").into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            "None of your sessions has that handle.\n",
        )
            .into_response(),
        Err(error) => owners_failed(error),
    }
}

async fn logout_everywhere(
    State(manager): State<SessionManager>,
    uri: Uri,
    session: Session,
) -> Response {
    let others = match query_param(&uri, "others") {
        None => false,
        Some(value) => match parse_bool("others", value) {
            Ok(others) => others,
            Err(error) => return bad_request(&error).into_response(),
        },
    };
    let Some(owner) = session.owner() else {
        return not_logged_in();
    };
    if others {
        return match manager.revoke_others(&session).await {
            Ok(n) => (
                StatusCode::OK,
                format!("Logged out {n} other session(s); this one stays."),
            )
                .into_response(),
            Err(error) => owners_failed(error),
        };
    }
    match manager.revoke_all(&owner).await {
        Ok(n) => {
            // Already gone from the store; this clears the cookie.
            session.destroy();
            (
                StatusCode::OK,
                format!("Logged out {n} session(s), this one included."),
            )
                .into_response()
        }
        Err(error) => owners_failed(error),
    }
}

async fn logout(session: Session) -> Reply {
    session.destroy();
    (StatusCode::OK, "Logged out.".into())
}

async fn whoami(session: Session) -> Reply {
    let user = session.get::<String>("user").ok().flatten();
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0);
    let who = match user {
        Some(user) => format!("You are {user}."),
        None => "You are not logged in.".into(),
    };
    (
        StatusCode::OK,
        format!("{who} Visits in this session: {visits}."),
    )
}

async fn run(options: Options) -> Result<(), String> {
    let (manager, store_name) = if options.store == "cookie" {
        (cookie_manager(&options)?, "cookie")
    } else {
        let store = open_store(&options.store, options.near_cache).await?;
        let name = store.name();
        (manager(&options, store)?, name)
    };
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        store = store_name,
        signed = !options.secrets.is_empty(),
        "session demo started"
    );
    println!("listening on http://{addr}");
    axum::serve(listener, app(manager))
        .await
        .map_err(|e| format!("server failed: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init();
    let options = match Options::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("session-demo: {error}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("session-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logging to stderr, filtered by `RUST_LOG`, with session store errors rate-limited: an
/// outage fails every request, and one line per request would flood the log.
mod logging {
    use std::io::{Sink, Stderr};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tracing::{Level, Metadata};
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::writer::EitherWriter;
    use tracing_subscriber::prelude::*;

    /// How often left-out store errors are counted in the log.
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    /// The second in which the last store error was written (Unix time), and how many were
    /// left out since the last report.
    static LAST_WRITTEN: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);

    /// Whether an event is a store failure reported by the session layer.
    fn is_store_error(meta: &Metadata<'_>) -> bool {
        *meta.level() == Level::ERROR && meta.target().starts_with("session_store")
    }

    /// Writes every event, except store errors beyond the first in each second.
    struct RateLimited;

    impl<'a> MakeWriter<'a> for RateLimited {
        type Writer = EitherWriter<Stderr, Sink>;

        fn make_writer(&'a self) -> Self::Writer {
            EitherWriter::A(std::io::stderr())
        }

        fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
            if !is_store_error(meta) {
                return self.make_writer();
            }
            let second = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if LAST_WRITTEN.swap(second, Ordering::Relaxed) == second {
                LEFT_OUT.fetch_add(1, Ordering::Relaxed);
                EitherWriter::B(std::io::sink())
            } else {
                self.make_writer()
            }
        }
    }

    /// Installs the subscriber; starts the report of left-out errors when a runtime runs.
    pub(crate) fn init() {
        let filter = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.parse::<Targets>(), v));
        let (targets, bad) = match filter {
            Some((Ok(targets), _)) => (targets, None),
            Some((Err(_), text)) => (Targets::new().with_default(Level::INFO), Some(text)),
            None => (Targets::new().with_default(Level::INFO), None),
        };
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(RateLimited))
            .with(targets)
            .init();
        if let Some(text) = bad {
            tracing::warn!("RUST_LOG={text:?} is not a level or a list of directives; using info");
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async {
                let mut every = tokio::time::interval(REPORT_EVERY);
                loop {
                    every.tick().await;
                    let left_out = LEFT_OUT.swap(0, Ordering::Relaxed);
                    if left_out > 0 {
                        tracing::warn!(
                            left_out,
                            "session store errors not logged in the last {REPORT_EVERY:?}"
                        );
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Option<Options>, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::parse(args.iter().map(|s| s.to_string()), move |key| {
            env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults() {
        let o = parse(&[], &[]).unwrap().unwrap();
        assert_eq!(o.store, "memory");
        assert_eq!(o.listen, "127.0.0.1:3000");
        assert_eq!((o.max_age, o.touch_after), (None, None));
        assert_eq!(o.absolute_lifetime, None);
        assert!(o.secrets.is_empty());
        assert_eq!(o.cookie_name, "sid");
    }

    #[test]
    fn flags_and_env() {
        let o = parse(
            &[
                "--store",
                "memory://",
                "--listen=0.0.0.0:8080",
                "--max-age",
                "2h",
                "--secret",
                "new",
                "--secret=old",
            ],
            &[("SESSION_TOUCH_AFTER", "90"), ("SESSION_MAX_AGE", "5")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.store, "memory://");
        assert_eq!(o.listen, "0.0.0.0:8080");
        assert_eq!(o.max_age, Some(Duration::from_secs(7200)), "flags win");
        assert_eq!(o.touch_after, Some(Duration::from_secs(90)));
        assert_eq!(o.secrets, ["new", "old"]);
        let o = parse(
            &[],
            &[("SESSION_STORE", "redis://x"), ("SESSION_SECRET", "s")],
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.store.as_str(), o.secrets.len()), ("redis://x", 1));
    }

    #[test]
    fn cookie_attribute_flags() {
        let o = parse(&[], &[]).unwrap().unwrap();
        assert_eq!((o.secure, o.same_site, o.near_cache), (false, None, false));
        assert!(parse(&["--near-cache"], &[]).unwrap().unwrap().near_cache);
        assert!(
            parse(&[], &[("SESSION_NEAR_CACHE", "1")])
                .unwrap()
                .unwrap()
                .near_cache
        );
        assert!(
            !parse(&["--near-cache=0"], &[("SESSION_NEAR_CACHE", "1")])
                .unwrap()
                .unwrap()
                .near_cache
        );
        let o = parse(&["--secure", "--same-site", "None"], &[])
            .unwrap()
            .unwrap();
        assert_eq!((o.secure, o.same_site), (true, Some(SameSite::None)));
        let o = parse(
            &["--secure=false"],
            &[("SESSION_SECURE", "1"), ("SESSION_SAME_SITE", "lax")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.secure, o.same_site),
            (false, Some(SameSite::Lax)),
            "flags win"
        );
        assert!(parse(&["--same-site", "sometimes"], &[]).is_err());
        assert!(parse(&["--secure=maybe"], &[]).is_err());
        // The manager's builder refuses SameSite=None without Secure.
        let o = parse(&["--same-site", "none"], &[]).unwrap().unwrap();
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let err = manager(&o, store.clone()).unwrap_err();
        assert!(err.contains("Secure"), "{err}");
        let o = parse(&["--same-site", "none", "--secure"], &[])
            .unwrap()
            .unwrap();
        assert!(manager(&o, store).is_ok());
    }

    #[test]
    fn bad_arguments() {
        assert!(parse(&["--help"], &[]).unwrap().is_none());
        assert!(parse(&["--bogus"], &[]).is_err());
        assert!(parse(&["--store"], &[]).is_err());
        assert!(parse(&["--max-age", "soon"], &[]).is_err());
        assert!(parse(&["--max-age", "5w"], &[]).is_err());
    }

    #[test]
    fn absolute_lifetime() {
        let o = parse(&["--absolute-lifetime", "12h"], &[])
            .unwrap()
            .unwrap();
        assert_eq!(o.absolute_lifetime, Some(Duration::from_secs(43_200)));
        let o = parse(
            &["--absolute-lifetime=90s"],
            &[("SESSION_ABSOLUTE_LIFETIME", "7d")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            o.absolute_lifetime,
            Some(Duration::from_secs(90)),
            "flags win"
        );
        let o = parse(&[], &[("SESSION_ABSOLUTE_LIFETIME", "400d")])
            .unwrap()
            .unwrap();
        assert_eq!(o.absolute_lifetime, Some(MAX_LIFETIME));
        assert!(manager(&o, Arc::new(MemoryStore::new())).is_ok());
        assert!(cookie_manager(&o).is_ok());
        for bad in [
            "soon",
            "5w",
            "-1s",
            "",
            "0",
            "0s",
            "401d",
            "99999999999999999999d",
        ] {
            let err = parse(&["--absolute-lifetime", bad], &[])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(err.starts_with("--absolute-lifetime: "), "{err}");
        }
        let err = parse(&[], &[("SESSION_ABSOLUTE_LIFETIME", "0")])
            .err()
            .unwrap();
        assert!(err.contains("out of range"), "{err}");
        assert!(parse(&["--absolute-lifetime"], &[]).is_err());
    }

    #[test]
    fn login_query() {
        let uri = |q: &str| q.parse::<Uri>().unwrap();
        assert_eq!(user_of(&uri("/login")).unwrap(), "demo");
        assert_eq!(
            user_of(&uri("/login?user=alice&user=bob")).unwrap(),
            "alice"
        );
        for bad in [
            "/login?user=",
            "/login?user",
            "/login?user=a%20b",
            "/login?user=a.b",
        ] {
            assert_eq!(user_of(&uri(bad)).unwrap_err().0, StatusCode::BAD_REQUEST);
        }
        let long = format!("/login?user={}", "a".repeat(33));
        assert_eq!(user_of(&uri(&long)).unwrap_err().0, StatusCode::BAD_REQUEST);
        assert!(user_of(&uri(&format!("/login?user={}", "a".repeat(32)))).is_ok());
        assert_eq!(remember_of(&uri("/login?user=a")), Ok(false));
        assert_eq!(remember_of(&uri("/login?user=a&remember=1")), Ok(true));
        assert_eq!(remember_of(&uri("/login?remember=0&user=a")), Ok(false));
        assert_eq!(remember_of(&uri("/login?rememberme=1")), Ok(false));
        assert!(remember_of(&uri("/login?remember=maybe")).is_err());
        assert!(remember_of(&uri("/login?remember")).is_err());
    }

    #[test]
    fn durations_described() {
        assert_eq!(describe(REMEMBER_FOR), "30 days");
        assert_eq!(describe(Duration::from_secs(3600)), "1 hour");
        assert_eq!(describe(Duration::from_secs(90)), "90 seconds");
        assert_eq!(describe(Duration::from_secs(120)), "2 minutes");
        assert_eq!(describe(Duration::from_secs(1)), "1 second");
        assert_eq!(describe(Duration::ZERO), "0 seconds");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[tokio::test]
    async fn stores() {
        assert_eq!(open_store("memory", false).await.unwrap().name(), "memory");
        let error = open_store("memory", true).await.err().unwrap();
        assert!(
            error.contains("--near-cache works with redis://"),
            "{error}"
        );
        // Nothing listens on port 1: a clear error naming the store, not the URL.
        let error = open_store("redis://:hunter2@127.0.0.1:1", false)
            .await
            .err()
            .unwrap();
        assert!(
            error.starts_with("cannot open the `redis` store"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        let error = open_store("redis+sentinel://127.0.0.1:1", false)
            .await
            .err()
            .unwrap();
        assert!(error.contains("MASTER-NAME"), "{error}");
        let error = open_store("ftp://x", false).await.err().unwrap();
        assert!(error.contains("unknown store `ftp`"), "{error}");
        let error = open_store("user:secret@host", false).await.err().unwrap();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn manager_options() {
        let o = parse(&["--max-age", "0"], &[]).unwrap().unwrap();
        assert!(manager(&o, Arc::new(MemoryStore::new())).is_err());
        let o = parse(&["--secret", "s", "--touch-after", "0"], &[])
            .unwrap()
            .unwrap();
        assert!(manager(&o, Arc::new(MemoryStore::new())).is_ok());
    }
}
