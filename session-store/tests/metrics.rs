//! The `metrics` feature: counters and latency histograms reach an installed recorder.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, StatusCode};
use metrics::{Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata};
use metrics::{Recorder, SharedString, Unit};
use session_store::testing::{CountingStore, Failure};
use session_store::{MemoryStore, SessionManager};

/// Every counter's total and every histogram's number of samples, by name and labels.
#[derive(Default, Clone)]
struct Totals(Arc<Mutex<BTreeMap<String, f64>>>);

struct Slot(Totals, String);

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0
            .0
            .lock()
            .unwrap()
            .insert(self.1.clone(), value as f64);
    }
}

impl HistogramFn for Slot {
    fn record(&self, _: f64) {
        *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += 1.0;
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Totals {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Slot(self.clone(), name(key))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Slot(self.clone(), name(key))))
    }
}

#[tokio::test]
async fn loads_commits_calls_and_errors_are_counted() {
    let totals = Totals::default();
    metrics::set_global_recorder(totals.clone()).expect("the only recorder of this binary");
    let store = CountingStore::new(MemoryStore::new()).named("probe");
    let manager = SessionManager::builder(store.clone()).build().unwrap();
    let mut out = HeaderMap::new();
    let session = manager.load(&HeaderMap::new()).await.unwrap();
    session.insert("n", 1).unwrap();
    manager
        .finish(&session, StatusCode::OK, &mut out)
        .await
        .unwrap();
    let cookie = out.get(http::header::SET_COOKIE).unwrap().to_str().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        cookie.split(';').next().unwrap().parse().unwrap(),
    );
    let session = manager.load(&headers).await.unwrap();
    session.insert("n", 2).unwrap();
    store.fail(Failure::Unavailable);
    assert!(session.commit().await.is_err());
    assert!(manager.load(&headers).await.is_err());
    let totals = totals.0.lock().unwrap().clone();
    let get = |key: &str| totals.get(key).copied().unwrap_or(0.0);
    assert_eq!(
        get("session_store_loads_total{outcome=new}"),
        1.0,
        "{totals:?}"
    );
    assert_eq!(get("session_store_loads_total{outcome=found}"), 1.0);
    assert_eq!(get("session_store_loads_total{outcome=error}"), 1.0);
    assert_eq!(get("session_store_commits_total{outcome=ok}"), 1.0);
    assert_eq!(get("session_store_commits_total{outcome=error}"), 1.0);
    assert_eq!(
        get("session_store_call_seconds{operation=create,store=probe}"),
        1.0
    );
    assert_eq!(
        get("session_store_call_seconds{operation=get,store=probe}"),
        2.0
    );
    assert_eq!(
        get("session_store_errors_total{kind=unavailable,operation=compare_and_set,store=probe}"),
        1.0
    );
}
