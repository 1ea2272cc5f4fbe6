#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod at_rest;
mod clock;
pub mod codec;
mod config;
mod cookie;
mod cookie_only;
pub mod data;
mod error;
pub mod express;
mod id;
mod keys;
mod lazy;
mod manager;
mod memory;
mod msgpack;
pub mod near_cache;
mod observe;
mod owners;
mod payload;
mod record;
mod session;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod wrappers;

pub use async_trait::async_trait;
pub use at_rest::DataKeys;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{CookieCodec, FnCodec, PlainCodec, PrivateCodec, SignedCodec};
pub use config::SessionManager;
pub use cookie::{CookieOptions, MAX_COOKIE_VALUE_LEN, SameSite};
pub use cookie_only::MAX_COOKIE_LEN;
pub use data::Data;
pub use error::{BoxError, Error, Result};
pub use id::{IdGenerator, MAX_ID_LEN, SessionId};
pub use keys::stored_key;
pub use lazy::LazySession;
pub use manager::SessionManagerBuilder;
pub use memory::MemoryStore;
pub use observe::SessionEvent;
pub use owners::SessionInfo;
pub use record::{Codec, Lifetime, MAX_LABEL_LEN, MAX_LIFETIME, MAX_OWNER_LEN, Record};
pub use session::Session;
pub use store::{Capabilities, CasOutcome, SessionStore};

/// The `time` crate, whose `OffsetDateTime` the record and the trait use.
pub use time;
