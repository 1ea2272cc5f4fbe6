#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
pub mod callback;
// tower-sessions' `SessionStore` trait is identical in 0.14 and 0.15: one body
// (`src/tower/body.rs`, which names the crate `tsc`) is compiled against each version.
#[cfg(feature = "tower-sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-sessions")))]
pub mod tower {
    #![doc = include_str!("tower/docs.md")]
    //!
    //! # Example (tower-sessions 0.14)
    //!
    //! ```
    //! use std::sync::Arc;
    //!
    //! use session_store::{MemoryStore, SessionManager};
    //! use session_store_compat::tower::tower_sessions_core::Session;
    //! use session_store_compat::tower::{AsTowerSessionsStore, TowerSessionsStore};
    //!
    //! # #[tokio::main(flavor = "current_thread")]
    //! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    //! // Ours as theirs: a tower-sessions `Session` over our MemoryStore.
    //! let store = Arc::new(AsTowerSessionsStore::new(MemoryStore::new()));
    //! let session = Session::new(None, store.clone(), None);
    //! session.insert("visits", 1).await?;
    //! session.save().await?;
    //! let again = Session::new(session.id(), store, None);
    //! assert_eq!(again.get::<u32>("visits").await?, Some(1));
    //!
    //! // Theirs as ours: our manager over tower-sessions' MemoryStore.
    //! let theirs = tower_sessions_memory_store::MemoryStore::default();
    //! let manager = SessionManager::new(TowerSessionsStore::new(theirs));
    //! # let _ = manager;
    //! # Ok(())
    //! # }
    //! ```

    /// The `tower-sessions-core` crate (0.14) this module implements.
    pub use tower_sessions_core;
    use tower_sessions_core as tsc;

    include!("tower/body.rs");
}

#[cfg(feature = "tower-sessions-015")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-sessions-015")))]
pub mod tower_015 {
    #![doc = include_str!("tower/docs.md")]
    //!
    //! # Example (tower-sessions 0.15)
    //!
    //! ```
    //! use std::sync::Arc;
    //!
    //! use session_store::{MemoryStore, SessionManager};
    //! use session_store_compat::tower_015::tower_sessions_core::Session;
    //! use session_store_compat::tower_015::{AsTowerSessionsStore, TowerSessionsStore};
    //!
    //! # #[tokio::main(flavor = "current_thread")]
    //! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    //! let store = Arc::new(AsTowerSessionsStore::new(MemoryStore::new()));
    //! let session = Session::new(None, store.clone(), None);
    //! session.insert("visits", 1).await?;
    //! session.save().await?;
    //! let again = Session::new(session.id(), store, None);
    //! assert_eq!(again.get::<u32>("visits").await?, Some(1));
    //!
    //! let theirs = tower_sessions_memory_store_015::MemoryStore::default();
    //! let manager = SessionManager::new(TowerSessionsStore::new(theirs));
    //! # let _ = manager;
    //! # Ok(())
    //! # }
    //! ```

    /// The `tower-sessions-core` crate (0.15) this module implements.
    pub use tower_sessions_core_015 as tower_sessions_core;
    use tower_sessions_core_015 as tsc;

    include!("tower/body.rs");
}

pub use blocking::{BlockingAdapter, BlockingStore, DEFAULT_MAX_CONCURRENCY};
pub use callback::{CallbackAdapter, CallbackStore, Completion};
#[cfg(feature = "tower-sessions")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-sessions")))]
pub use tower::{AsTowerSessionsStore, TowerSessionsStore};

/// The core crate, for [`SessionStore`](session_store::SessionStore), `Record` and friends.
pub use session_store;
