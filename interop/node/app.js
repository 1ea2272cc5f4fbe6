// The Node side of the interop test: an express 5 app with express-session, storing
// sessions in Redis (connect-redis 9 + redis 6) or PostgreSQL (connect-pg-simple 10 + pg 8),
// as a Node service being migrated to Rust would.
//
// Configuration (environment, or `--name=value` arguments which win):
//   PORT         port to listen on, 127.0.0.1 only (default 0: any free port)
//   STORE        redis | pg                       (default redis)
//   REDIS_URL    redis://127.0.0.1:6379           (STORE=redis)
//   PREFIX       connect-redis key prefix         (default sess:)
//   PG_URL       postgres://postgres@127.0.0.1:5432/test (STORE=pg)
//   TABLE        connect-pg-simple table name     (default session)
//   SECRET       express-session secret(s), comma separated (required)
//   MAX_AGE_MS   cookie maxAge in ms              (default 3600000)
//
// Once listening it prints one line `listening on <port>` to stdout.
//
// Routes (mirrored by the Rust app of the interop test):
//   GET  /count   views += 1, answers {"views": n}
//   GET  /read    answers {"exists": bool, "data": {...session data}} (without `cookie`
//                 and the Rust side's `__created`)
//   GET  /peek    like /read, but never extends the session (its store has touch disabled)
//   GET  /touch   loads the session without changing it: express-session touches it
//   POST /set     sets the key `?key=` to the JSON value `?value=` (not a reserved key)
//   POST /remember?ms=N  the session's own lifetime, "remember me"
//                 (`req.session.cookie.maxAge = N`); `ms=null` or no `ms`: a browser-session
//                 cookie. Also sets `remember` to N (or null), so that the session is saved
//                 (express-session does not save a change of the cookie alone). Answers
//                 like /read, plus {"maxAge": cookie.originalMaxAge}.
//   POST /logout  destroys the session
//   GET  /health  "ok"

import express from "express";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient } from "redis";
import connectPgSimple from "connect-pg-simple";
import pg from "pg";

function config() {
  const out = { ...process.env };
  for (const arg of process.argv.slice(2)) {
    const match = /^--([A-Za-z_]+)=(.*)$/s.exec(arg);
    if (!match) {
      throw new Error(`unknown argument ${arg} (use --NAME=value)`);
    }
    out[match[1].toUpperCase()] = match[2];
  }
  return out;
}

const env = config();
const port = Number(env.PORT ?? 0);
const kind = env.STORE ?? "redis";
const maxAge = Number(env.MAX_AGE_MS ?? 3_600_000);
if (!env.SECRET) {
  console.error("SECRET is required");
  process.exit(2);
}
const secrets = env.SECRET.split(",");

/** The session store, and the same store with touch disabled (for /peek). */
async function stores() {
  if (kind === "redis") {
    const client = createClient({ url: env.REDIS_URL ?? "redis://127.0.0.1:6379" });
    client.on("error", (err) => console.error("redis client error:", err.message));
    await client.connect();
    const prefix = env.PREFIX ?? "sess:";
    return {
      main: new RedisStore({ client, prefix }),
      peek: new RedisStore({ client, prefix, disableTouch: true }),
    };
  }
  if (kind === "pg") {
    const PgStore = connectPgSimple(session);
    const pool = new pg.Pool({
      connectionString: env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/test",
      // connect-pg-simple writes `expire` (a timestamp without time zone) through
      // `to_timestamp()`, converted with the connection's TimeZone; the Rust side reads the
      // column as UTC. (A no-op where the server's default timezone is already UTC.)
      options: "-c TimeZone=UTC",
    });
    const options = {
      pool,
      tableName: env.TABLE ?? "session",
      createTableIfMissing: false,
      pruneSessionInterval: false,
    };
    return {
      main: new PgStore(options),
      peek: new PgStore({ ...options, disableTouch: true }),
    };
  }
  throw new Error(`STORE must be redis or pg, not ${kind}`);
}

function middleware(store) {
  return session({
    store,
    secret: secrets,
    name: "connect.sid",
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge, httpOnly: true, path: "/" },
  });
}

/**
 * Keys of the stored session that are not session data: express-session's `cookie` object,
 * and the creation time the Rust side keeps in the same JSON (session-store's
 * `express::CREATED_KEY`), which this app keeps like any property but never shows or sets.
 */
const RESERVED = new Set(["cookie", "__created"]);

/** The session's data without the reserved keys. */
function snapshot(req) {
  const data = {};
  for (const [key, value] of Object.entries(req.session ?? {})) {
    if (!RESERVED.has(key)) {
      data[key] = value;
    }
  }
  // A session that came from the store has a cookie id equal to its id.
  const exists = Object.keys(data).length > 0;
  return { exists, data };
}

const { main, peek } = await stores();
const app = express();
app.disable("x-powered-by");

app.get("/health", (_req, res) => res.type("text").send("ok"));
app.get("/peek", middleware(peek), (req, res) => res.json(snapshot(req)));

const sessions = middleware(main);
app.get("/count", sessions, (req, res) => {
  req.session.views = (req.session.views ?? 0) + 1;
  res.json({ views: req.session.views });
});
app.get("/read", sessions, (req, res) => res.json(snapshot(req)));
app.get("/touch", sessions, (req, res) => res.json(snapshot(req)));
app.post("/set", sessions, (req, res) => {
  const key = String(req.query.key ?? "");
  if (!key || RESERVED.has(key)) {
    return res.status(400).type("text").send("bad key");
  }
  try {
    req.session[key] = JSON.parse(String(req.query.value ?? "null"));
  } catch {
    return res.status(400).type("text").send("value is not JSON");
  }
  res.json(snapshot(req));
});
app.post("/remember", sessions, (req, res) => {
  const text = String(req.query.ms ?? "null");
  const ms = text === "null" ? null : Number(text);
  if (ms !== null && !(Number.isSafeInteger(ms) && ms > 0)) {
    return res.status(400).type("text").send("ms must be a positive integer or null");
  }
  // Sets `expires` (null: a browser-session cookie) and with it `originalMaxAge`.
  req.session.cookie.maxAge = ms;
  req.session.remember = ms;
  res.json({ ...snapshot(req), maxAge: req.session.cookie.originalMaxAge });
});
app.post("/logout", sessions, (req, res, next) => {
  req.session.destroy((err) => (err ? next(err) : res.json({ destroyed: true })));
});
app.use((err, _req, res, _next) => {
  console.error("request failed:", err);
  res.status(500).type("text").send(String(err?.message ?? err));
});

const server = app.listen(port, "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
