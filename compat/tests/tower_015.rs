//! tower-sessions 0.15 interop (feature `tower-sessions-015`): their stores as ours, ours as
//! theirs.
#![cfg(feature = "tower-sessions-015")]

use session_store_compat::tower_015 as adapter;
use tower_sessions_memory_store_015 as memory_store;

include!("common/tower.rs");
