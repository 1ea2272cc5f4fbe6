//! `sqlx-driver-bench VERSION MODE N`: N session reads (`SELECT data, expires, version …`)
//! on one task, through sqlx 0.8 (`08`) or 0.9 (`09`), for valgrind to count.
//!
//! MODE: `pool` executes on `&PgPool` (the usual way), `conn` on a connection acquired for
//! each statement (what the store does), `none` only sets up (to subtract). Prints the size
//! of the futures involved, which is where the versions differ.
use time::OffsetDateTime;

macro_rules! run {
    ($sqlx:ident, $mode:expr, $n:expr, $url:expr) => {{
        use $sqlx as sqlx;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .connect($url)
            .await
            .expect("connect");
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS driver_bench (id TEXT PRIMARY KEY, data BYTEA NOT NULL, \
             expires TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL DEFAULT 0)",
        )
        .execute(&pool)
        .await
        .expect("table");
        let expires = OffsetDateTime::now_utc() + time::Duration::hours(1);
        sqlx::query(
            "INSERT INTO driver_bench (id, data, expires) VALUES ('k', $1, $2) \
             ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires",
        )
        .bind(vec![7u8; 1300])
        .bind(expires)
        .execute(&pool)
        .await
        .expect("seed");
        let select =
            "SELECT data, expires, version FROM driver_bench WHERE id = $1 AND expires > $2";
        type Row = (Vec<u8>, OffsetDateTime, i64);
        let acquire = pool.acquire();
        eprintln!(
            "{}: pool.acquire() future: {} bytes",
            stringify!($sqlx),
            size_of_val(&acquire)
        );
        drop(acquire);
        for _ in 0..$n {
            let now = OffsetDateTime::now_utc();
            let query = sqlx::query_as::<_, Row>(select).bind("k").bind(now);
            let row = match $mode {
                "pool" => query.fetch_optional(&pool).await,
                "conn" => {
                    query
                        .fetch_optional(&mut *pool.acquire().await.expect("acquire"))
                        .await
                }
                _ => break,
            };
            assert!(row.expect("select").is_some());
        }
    }};
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let version = args.get(1).map_or("08", String::as_str);
    let mode = args.get(2).map_or("none", String::as_str);
    let n: u64 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match version {
            "08" => run!(sqlx08, mode, n, &url),
            "09" => run!(sqlx09, mode, n, &url),
            other => panic!("unknown version {other}"),
        }
    });
}
