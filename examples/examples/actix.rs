//! The smallest actix-web app with sessions: a visit counter.
//!
//! ```text
//! cargo run -p session-demo --example actix
//! curl -c jar -b jar http://127.0.0.1:3000/
//! ```

use std::time::Duration;

use actix_web::{App, HttpServer, web};
use session_store::{MemoryStore, SessionManager};
use session_store_actix::{Session, SessionMiddleware};

async fn index(session: Session) -> String {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    if session.insert("visits", visits).is_err() {
        return "could not count this visit".into();
    }
    format!("In this session, you have visited this website {visits} time(s).")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let manager = SessionManager::builder(MemoryStore::new())
        .max_age(Duration::from_secs(24 * 60 * 60))
        .touch_after(Duration::from_secs(60 * 60))
        .build()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(SessionMiddleware::new(manager.clone()))
                .route("/", web::get().to(index))
        })
        .bind(&listen)?;
        for addr in server.addrs() {
            println!("listening on http://{addr}");
        }
        server.run().await
    })?;
    Ok(())
}
