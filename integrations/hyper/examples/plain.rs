//! next-session's plain `http.createServer` example, in Rust: hyper 1, no framework,
//! auto commit off and a manual `commit`.
//!
//! ```text
//! cargo run -p session-store-hyper --example plain
//! curl -c jar -b jar http://127.0.0.1:3000/
//! ```

use session_store::{MemoryStore, SessionManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let manager = SessionManager::builder(MemoryStore::new())
        .auto_commit(false)
        .build()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    session_store_hyper::serve(listener, manager, session_store_hyper::visit_counter).await;
    Ok(())
}
