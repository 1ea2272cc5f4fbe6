use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use time::OffsetDateTime;
use tracing::Instrument;

use crate::error::Result;
use crate::id::SessionId;
use crate::record::Record;
use crate::store::{Capabilities, CasOutcome, SessionStore};

/// Emits one `tracing` span per store call (`session_store.call`, level INFO) with the
/// operation, the store's name, the outcome and the duration in microseconds, and an event at
/// the end of the call (DEBUG on success, WARN on error). Never the id or the data.
#[derive(Debug, Clone)]
pub struct TracingStore<S> {
    inner: S,
}

impl<S: SessionStore> TracingStore<S> {
    /// Instruments `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn traced<T, F>(
        &self,
        operation: &'static str,
        outcome: fn(&T) -> &'static str,
        call: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let span = tracing::info_span!(
            "session_store.call",
            operation,
            store = self.inner.name(),
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let micros = started.elapsed().as_micros() as u64;
        span.record("duration_us", micros);
        let _entered = span.enter();
        match &result {
            Ok(value) => {
                let outcome = outcome(value);
                span.record("outcome", outcome);
                tracing::debug!(
                    operation,
                    outcome,
                    duration_us = micros,
                    "session store call"
                );
            }
            Err(error) => {
                span.record("outcome", "error");
                tracing::warn!(
                    operation,
                    outcome = "error",
                    duration_us = micros,
                    error = error as &dyn std::error::Error,
                    "session store call failed"
                );
            }
        }
        result
    }
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

fn found(value: &Option<Record>) -> &'static str {
    if value.is_some() { "hit" } else { "miss" }
}

fn done(value: &bool) -> &'static str {
    if *value { "ok" } else { "missing" }
}

fn cas(value: &CasOutcome) -> &'static str {
    match value {
        CasOutcome::Written => "ok",
        CasOutcome::Conflict => "conflict",
        CasOutcome::Missing => "missing",
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for TracingStore<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn needs_raw_ids(&self) -> bool {
        self.inner.needs_raw_ids()
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.traced("get", found, self.inner.get(id)).await
    }
    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.traced("set", ok, self.inner.set(id, record)).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.traced("destroy", ok, self.inner.destroy(id)).await
    }
    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.traced("touch", done, self.inner.touch(id, expires))
            .await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.traced("create", done, self.inner.create(id, record))
            .await
    }
    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.traced("update", done, self.inner.update(id, record))
            .await
    }
    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        self.traced(
            "compare_and_set",
            cas,
            self.inner.compare_and_set(id, record, expected),
        )
        .await
    }
    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        self.traced("owned", ok, self.inner.owned(owner)).await
    }
}
