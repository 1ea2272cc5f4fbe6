//! [`LazySession`]: the per-request session that framework integrations share.

use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::config::SessionManager;
use crate::error::Result;
use crate::session::Session;

/// The session of one request, loaded from the store only when first asked for.
///
/// An integration creates one per request from the request headers, lets handlers call
/// [`LazySession::get`] (every call in the request returns the same [`Session`]), and calls
/// [`LazySession::finish`] when the handler has answered. A request whose handler never
/// asked for its session never touches the store.
pub struct LazySession {
    manager: SessionManager,
    cookie_value: Option<String>,
    cell: tokio::sync::OnceCell<Session>,
}

impl fmt::Debug for LazySession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazySession")
            .field("loaded", &self.cell.initialized())
            .finish_non_exhaustive()
    }
}

impl LazySession {
    /// Prepares the session of a request with these headers (reads only the cookie).
    pub fn new(manager: SessionManager, request_headers: &HeaderMap) -> Self {
        let cookie_value = manager.cookie_value(request_headers);
        Self {
            manager,
            cookie_value,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// The request's session, loading it on the first call. A failed load is returned and
    /// tried again on the next call.
    pub async fn get(&self) -> Result<Session> {
        self.cell
            .get_or_try_init(|| self.manager.load_value(self.cookie_value.as_deref()))
            .await
            .cloned()
    }

    /// The session if it was loaded.
    pub fn loaded(&self) -> Option<&Session> {
        self.cell.get()
    }

    /// Ends the request: if the session was loaded, auto commit (see
    /// [`SessionManager::finish`]) and `Set-Cookie` into `response_headers`.
    pub async fn finish(&self, status: StatusCode, response_headers: &mut HeaderMap) -> Result<()> {
        match self.cell.get() {
            Some(session) => self.manager.finish(session, status, response_headers).await,
            None => Ok(()),
        }
    }
}
