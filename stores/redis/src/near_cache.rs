//! The near-cache: sessions kept in this process, dropped when the server says they changed.
//!
//! The store's one connection is opened in RESP3 with `CLIENT TRACKING ON NOLOOP`: the server
//! remembers the keys that connection read and pushes, on that same connection, the key of
//! each of them that another client then writes, touches, deletes or lets expire. Every
//! command of the store goes over that connection. Its own writes are not echoed back
//! (`NOLOOP`), but they end the server's tracking of the key, so each write is a script that
//! reads the key again (`EXISTS`) in the same atomic step: the server tracks keys read
//! inside a script for the script's caller (Redis 7), no other client's write can come in
//! between, and the cache keeps the record written.
//!
//! Why a read never serves data older than an invalidation the connection received: the
//! server queues the invalidation of a key behind the reply of the read that tracked it, and
//! the driver hands push messages to [`PushSink`] synchronously, in the order they arrive.
//! A request is registered ([`Flight`](session_store::near_cache::Flight)) from before it is sent until its reply is cached: an
//! invalidation of its key that arrives in between stops the caching, one that arrives
//! after drops the cached copy. Replies are cached only while the connection that armed the
//! cache is still the one in use. When the connection is lost (a `Disconnection` push, or the
//! store discarding it after an error) the cache is emptied and not used until a new
//! connection has tracking on again.

use std::sync::Arc;

use redis::aio::AsyncPushSender;
use redis::{PushInfo, PushKind, Value};
pub(crate) use session_store::near_cache::NearCache;
pub use session_store::near_cache::{NearCacheConfig, NearCacheStats};

/// Receives the push messages of the connection of `generation`.
pub(crate) struct PushSink {
    pub(crate) cache: Arc<NearCache>,
    pub(crate) generation: u64,
}

impl AsyncPushSender for PushSink {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            PushKind::Invalidate => {
                // `[keys]`, or `[nil]` when the whole database was flushed.
                match info.data.into_iter().next() {
                    Some(Value::Array(keys)) => {
                        for key in keys {
                            if let Value::BulkString(key) = key {
                                self.cache.invalidate(self.generation, &key, None);
                            }
                        }
                    }
                    _ => self.cache.flush(self.generation),
                }
            }
            PushKind::Disconnection => self.cache.disarm(self.generation),
            _ => {}
        }
        Ok(())
    }
}
