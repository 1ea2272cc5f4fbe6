//! axum extractors.

use std::ops::Deref;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::SessionHandle;

/// The request's session, as an axum extractor. Derefs to [`session_store::Session`].
///
/// Extracting it loads the session (once per request). If the store fails, the handler is
/// not run and the [`SessionLayer`](crate::SessionLayer) answers with its error response.
#[derive(Clone, Debug)]
pub struct Session(pub session_store::Session);

impl Session {
    /// The core session handle.
    pub fn into_inner(self) -> session_store::Session {
        self.0
    }
}

impl Deref for Session {
    type Target = session_store::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Why the [`Session`] extractor failed: the store failed (the layer replaces this response
/// with its error response), or the [`SessionLayer`](crate::SessionLayer) is missing.
#[derive(Debug, Clone, Copy)]
pub struct SessionRejection {
    status: StatusCode,
}

impl SessionRejection {
    /// The status of the rejection's response.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        let text = if self.status == StatusCode::SERVICE_UNAVAILABLE {
            "session store unavailable"
        } else {
            "session error"
        };
        (self.status, text).into_response()
    }
}

fn handle(parts: &Parts) -> Result<SessionHandle, SessionRejection> {
    parts
        .extensions
        .get::<SessionHandle>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("no SessionHandle in the request: is the SessionLayer installed?");
            SessionRejection {
                status: StatusCode::INTERNAL_SERVER_ERROR,
            }
        })
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let handle = handle(parts)?;
        match handle.get_or_report().await {
            Ok(session) => Ok(Session(session)),
            Err(status) => Err(SessionRejection { status }),
        }
    }
}

/// Takes the handle without loading the session (load it with [`SessionHandle::get`]).
impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        handle(parts)
    }
}
