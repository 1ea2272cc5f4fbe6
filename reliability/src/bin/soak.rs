//! The soak (not a test, not in CI): the reliability app on a Redis or PostgreSQL store,
//! 32 clients logging in, counting and logging out (a quarter of the visits abandoned to
//! expire) for 30 minutes, with the process's memory, the store's records and the latency
//! percentiles sampled every minute. Ends with a Markdown table and a verdict: it fails when
//! a request failed or when memory or record counts kept growing over the last third.
//!
//! ```sh
//! cargo run --release -p session-reliability --bin soak -- redis://127.0.0.1:6379
//! cargo run --release -p session-reliability --bin soak -- postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! The clients are paced (a visit every 250 ms each, about 1,500 requests a second in
//! all), so the load, and with it the level the records settle at, does not depend on the
//! machine. Options: `--minutes N` (30), `--clients N` (32), `--lifetime-secs N` (120: the session
//! lifetime, short so that abandoned sessions expire during the run), `--cleanup-secs N`
//! (60: the SQL store's cleanup period), `--sample-secs N` (60), `--near-cache`. Each run uses its own key prefix
//! or table and removes it at the end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use session_reliability::app::serve;
use session_reliability::soak::{self, Held, Plan, Sample};
use session_reliability::unique;
use session_store::{SessionManager, SessionStore};
use session_store_redis::RedisStore;
use session_store_sqlx::{NearCacheConfig, PostgresStore, sqlx};

const USAGE: &str = "usage: soak STORE-URL (redis://… or postgres://…) [--minutes N] \
                     [--clients N] [--lifetime-secs N] [--cleanup-secs N] [--sample-secs N] [--near-cache]";

struct Options {
    url: String,
    minutes: u64,
    clients: usize,
    lifetime: Duration,
    cleanup: Duration,
    sample: Duration,
    near_cache: bool,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        url: String::new(),
        minutes: 30,
        clients: 32,
        lifetime: Duration::from_secs(120),
        cleanup: Duration::from_secs(60),
        sample: Duration::from_secs(60),
        near_cache: false,
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{name} takes a positive whole number"))
        };
        match arg.as_str() {
            "--minutes" => options.minutes = number("--minutes")?,
            "--clients" => options.clients = number("--clients")? as usize,
            "--lifetime-secs" => options.lifetime = Duration::from_secs(number("--lifetime-secs")?),
            "--cleanup-secs" => options.cleanup = Duration::from_secs(number("--cleanup-secs")?),
            "--sample-secs" => options.sample = Duration::from_secs(number("--sample-secs")?),
            "--near-cache" => options.near_cache = true,
            "-h" | "--help" => return Err(USAGE.into()),
            url if options.url.is_empty() && !url.starts_with('-') => options.url = url.into(),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    if options.url.is_empty() {
        return Err(USAGE.into());
    }
    Ok(options)
}

/// Counts what a Redis store holds under `prefix`: session keys, and owner indexes
/// (`<prefix>owner:…`), with `redis-cli --scan` (a blocking child process).
fn redis_held(url: &str, prefix: &str) -> Held {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern", &format!("{prefix}*")])
        .output();
    let Ok(output) = output else {
        eprintln!("soak: redis-cli did not run: counts are 0");
        return Held::default();
    };
    let owner = format!("{prefix}owner:");
    let mut held = Held::default();
    for key in String::from_utf8_lossy(&output.stdout).lines() {
        if key.starts_with(&owner) {
            held.other += 1;
        } else {
            held.sessions += 1;
        }
    }
    held
}

/// Counts the rows of a PostgreSQL store's table: all of them, and those past their expiry
/// that the cleanup has not deleted yet.
async fn postgres_held(store: &PostgresStore) -> Held {
    let sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE expires <= now()) FROM \"{}\"",
        store.table_name()
    );
    match sqlx::query_as::<_, (i64, i64)>(&sql)
        .fetch_one(store.pool())
        .await
    {
        Ok((all, expired)) => Held {
            sessions: all as u64,
            other: expired as u64,
        },
        Err(error) => {
            eprintln!("soak: counting rows failed: {error}");
            Held::default()
        }
    }
}

fn print_sample(sample: &Sample) {
    println!(
        "SAMPLE minute={:.1} requests={} visits={} errors={} p50={:?} p99={:?} p999={:?} max={:?} rss_kib={} sessions={} other={}",
        sample.at.as_secs_f64() / 60.0,
        sample.requests,
        sample.visits,
        sample.errors,
        sample.p50,
        sample.p99,
        sample.p999,
        sample.max,
        sample.rss_kib,
        sample.held.sessions,
        sample.held.other,
    );
}

async fn soak(options: Options) -> Result<soak::Report, String> {
    let plan = Plan {
        clients: options.clients,
        duration: Duration::from_secs(options.minutes * 60),
        sample_every: options.sample,
        ..Plan::default()
    };
    let failed = |what: &str, error: session_store::Error| format!("{what}: {error}");
    let scheme = options.url.split("://").next().unwrap_or_default();
    match scheme {
        "redis" | "rediss" => {
            let prefix = format!("{}:", unique("soak"));
            let mut store = RedisStore::from_url(&options.url)
                .map_err(|e| failed("redis store", e))?
                .with_prefix(prefix.clone());
            if options.near_cache {
                store = store
                    .with_near_cache(NearCacheConfig::new())
                    .map_err(|e| failed("near-cache", e))?;
            }
            store.connect().await.map_err(|e| failed("connect", e))?;
            let report = run_app(Arc::new(store), &options, plan, || {
                let (url, prefix) = (options.url.clone(), prefix.clone());
                async move {
                    tokio::task::spawn_blocking(move || redis_held(&url, &prefix))
                        .await
                        .unwrap_or_default()
                }
            })
            .await;
            // The run's keys go; the rest of the server is left alone.
            let url = options.url.clone();
            let _ = tokio::task::spawn_blocking(move || {
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "redis-cli -u \"$0\" --scan --pattern '{prefix}*' | xargs -r -n 500 redis-cli -u \"$0\" DEL >/dev/null"
                    ))
                    .arg(url)
                    .status()
            })
            .await;
            Ok(report)
        }
        "postgres" | "postgresql" => {
            let table = unique("soak");
            let mut store = PostgresStore::connect(&options.url)
                .await
                .map_err(|e| failed("postgres store", e))?
                .with_table_name(&table)
                .map_err(|e| failed("table name", e))?;
            if options.near_cache {
                store = store
                    .with_near_cache(NearCacheConfig::new())
                    .map_err(|e| failed("near-cache", e))?;
            }
            store.migrate().await.map_err(|e| failed("migrate", e))?;
            let cleanup = Arc::new(store.spawn_cleanup(options.cleanup));
            let counted = store.clone();
            let report = run_app(Arc::new(store), &options, plan, || {
                let (store, cleanup) = (counted.clone(), cleanup.clone());
                async move {
                    println!(
                        "CLEANUP rounds={} failed={} deleted={}",
                        cleanup.rounds_succeeded(),
                        cleanup.rounds_failed(),
                        cleanup.rows_deleted()
                    );
                    postgres_held(&store).await
                }
            })
            .await;
            let _ = sqlx::query(&format!("DROP TABLE IF EXISTS \"{table}\" CASCADE"))
                .execute(counted.pool())
                .await;
            Ok(report)
        }
        other => Err(format!(
            "the soak runs on redis:// or postgres://, not {other:?}"
        )),
    }
}

async fn run_app<H: std::future::Future<Output = Held>>(
    store: Arc<dyn SessionStore>,
    options: &Options,
    plan: Plan,
    held: impl FnMut() -> H,
) -> soak::Report {
    let manager = SessionManager::builder_arc(store)
        .max_age(options.lifetime)
        .store_timeout(Duration::from_secs(2))
        .build()
        .expect("the soak's manager options are valid");
    let app = serve(manager).await;
    println!(
        "soak: {} clients for {} min, session lifetime {:?}{}",
        plan.clients,
        options.minutes,
        options.lifetime,
        if options.near_cache {
            ", near-cache on"
        } else {
            ""
        }
    );
    soak::run(app.addr, plan, held, print_sample).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let report = match soak(options).await {
        Ok(report) => report,
        Err(message) => {
            eprintln!("soak: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!("\n{}", report.table());
    let mut ok = true;
    if report.error_count() > 0 {
        ok = false;
        println!("FAILED: {} errors; the first:", report.error_count());
        for error in &report.errors {
            println!("  {error}");
        }
    }
    match report.levelled(0.2) {
        Ok(()) => {
            println!("LEVELLED: memory and records held stayed within 20 % over the last third")
        }
        Err(why) => {
            ok = false;
            println!("GREW: {why}");
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
