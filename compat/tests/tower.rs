//! tower-sessions 0.14 interop (feature `tower-sessions`): their stores as ours, ours as
//! theirs.
#![cfg(feature = "tower-sessions")]

use session_store_compat::tower as adapter;
use tower_sessions_memory_store as memory_store;

include!("common/tower.rs");
