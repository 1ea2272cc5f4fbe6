//! The callback adapter: conformance with and without touch, completions from other
//! threads, and misbehaving callbacks (panic, dropped, called twice).

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{Capabilities, Error, Record, SessionId, SessionStore};
use session_store_compat::{CallbackAdapter, CallbackStore, Completion};

/// Fails the test instead of hanging.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the adapter hung")
}

/// An in-memory callback store. With `threaded`, every operation completes on a thread of
/// its own, after the method has returned.
#[derive(Default)]
struct MapStore {
    map: Arc<Mutex<HashMap<String, Record>>>,
    touch: bool,
    threaded: bool,
}

impl MapStore {
    fn finish<T: Send + 'static>(
        &self,
        done: Completion<T>,
        work: impl FnOnce() -> T + Send + 'static,
    ) {
        if self.threaded {
            std::thread::spawn(move || {
                done.ok(work());
            });
        } else {
            done.ok(work());
        }
    }
}

impl CallbackStore for MapStore {
    fn name(&self) -> &'static str {
        "callback-map"
    }

    fn get(&self, id: SessionId, done: Completion<Option<Record>>) {
        let map = self.map.clone();
        self.finish(done, move || {
            let now = OffsetDateTime::now_utc();
            let map = map.lock().unwrap();
            map.get(id.as_str()).filter(|r| !r.is_expired(now)).cloned()
        });
    }

    fn set(&self, id: SessionId, record: Record, done: Completion<()>) {
        let map = self.map.clone();
        self.finish(done, move || {
            map.lock().unwrap().insert(id.as_str().to_owned(), record);
        });
    }

    fn destroy(&self, id: SessionId, done: Completion<()>) {
        let map = self.map.clone();
        self.finish(done, move || {
            map.lock().unwrap().remove(id.as_str());
        });
    }

    fn supports_touch(&self) -> bool {
        self.touch
    }

    fn touch(&self, id: SessionId, expires: OffsetDateTime, done: Completion<bool>) {
        assert!(
            self.touch,
            "touch called on a store that does not support it"
        );
        let map = self.map.clone();
        self.finish(done, move || {
            let now = OffsetDateTime::now_utc();
            match map.lock().unwrap().get_mut(id.as_str()) {
                Some(r) if !r.is_expired(now) => {
                    r.expires = expires;
                    true
                }
                _ => false,
            }
        });
    }
}

#[tokio::test]
async fn conformance_without_touch() {
    let store = CallbackAdapter::new(MapStore::default());
    assert!(!store.capabilities().native_touch);
    run(&store, &SuiteOptions::new(Capabilities::NONE)).await;
}

#[tokio::test]
async fn conformance_with_touch() {
    let store = CallbackAdapter::new(MapStore {
        touch: true,
        ..MapStore::default()
    });
    run(
        &store,
        &SuiteOptions::new(Capabilities::NONE.with_native_touch(true)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_completions_from_other_threads() {
    for touch in [false, true] {
        let store = CallbackAdapter::new(MapStore {
            touch,
            threaded: true,
            ..MapStore::default()
        });
        let caps = Capabilities::NONE.with_native_touch(touch);
        bounded(run(&store, &SuiteOptions::new(caps))).await;
    }
}

#[tokio::test]
async fn boxed_dyn_callback_store() {
    let boxed: Box<dyn CallbackStore> = Box::new(MapStore {
        touch: true,
        ..MapStore::default()
    });
    let store = CallbackAdapter::new(boxed);
    run(
        &store,
        &SuiteOptions::new(Capabilities::NONE.with_native_touch(true)).concurrency(8),
    )
    .await;
}

#[tokio::test]
async fn works_as_dyn_store() {
    let store: Arc<dyn SessionStore> = Arc::new(CallbackAdapter::new(MapStore {
        threaded: true,
        ..MapStore::default()
    }));
    run(
        &store,
        &SuiteOptions::new(Capabilities::NONE).concurrency(8),
    )
    .await;
}

/// A store that misbehaves in a chosen way on `get`.
enum Misbehaving {
    Panics,
    PanicsAfterCompleting,
    DropsCallback,
    DropsCallbackOnThread,
    CompletesTwice,
    CompletesTwiceFromClones,
    FailsThenSucceeds,
}

impl CallbackStore for Misbehaving {
    fn name(&self) -> &'static str {
        "misbehaving"
    }

    fn get(&self, _id: SessionId, done: Completion<Option<Record>>) {
        let record = sample_record(now_ms() + Duration::from_secs(60));
        match self {
            Misbehaving::Panics => panic!("store exploded"),
            Misbehaving::PanicsAfterCompleting => {
                done.ok(None);
                panic!("store exploded late");
            }
            Misbehaving::DropsCallback => drop(done),
            Misbehaving::DropsCallbackOnThread => {
                let clone = done.clone();
                drop(done);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    drop(clone);
                });
            }
            Misbehaving::CompletesTwice => {
                assert!(!done.is_completed());
                assert!(done.ok(Some(record)), "the first completion must count");
                assert!(done.is_completed());
                assert!(!done.ok(None), "a second completion must be ignored");
                assert!(!done.fail(std::io::Error::other("late")));
            }
            Misbehaving::CompletesTwiceFromClones => {
                let threads: Vec<_> = (0..8)
                    .map(|i| {
                        let done = done.clone();
                        let record = record.clone();
                        std::thread::spawn(move || {
                            if i % 2 == 0 {
                                done.ok(Some(record))
                            } else {
                                done.fail(std::io::Error::other("loser"))
                            }
                        })
                    })
                    .collect();
                let firsts = threads
                    .into_iter()
                    .map(|t| t.join().unwrap())
                    .filter(|first| *first)
                    .count();
                assert_eq!(firsts, 1, "exactly one completion counts");
            }
            Misbehaving::FailsThenSucceeds => {
                done.fail(std::io::Error::other("disk on fire"));
                done.ok(Some(record));
            }
        }
    }

    fn set(&self, _id: SessionId, _record: Record, done: Completion<()>) {
        done.ok(());
    }

    fn destroy(&self, _id: SessionId, done: Completion<()>) {
        done.ok(());
    }
}

fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_panic_is_an_error() {
    for store in [Misbehaving::Panics, Misbehaving::PanicsAfterCompleting] {
        let store = CallbackAdapter::new(store);
        let err = bounded(store.get(&new_id())).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Backend {
                    store: "misbehaving",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(chain(&err).contains("panicked"), "{}", chain(&err));
        // The adapter is still usable after a panic.
        store
            .set(&new_id(), &sample_record(now_ms()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_dropped_callback_is_an_error_not_a_hang() {
    for store in [
        Misbehaving::DropsCallback,
        Misbehaving::DropsCallbackOnThread,
    ] {
        let store = CallbackAdapter::new(store);
        let err = bounded(store.get(&new_id())).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(
            chain(&err).contains("without calling it"),
            "{}",
            chain(&err)
        );
    }
}

#[tokio::test]
async fn the_first_completion_wins() {
    let store = CallbackAdapter::new(Misbehaving::CompletesTwice);
    let got = bounded(store.get(&new_id())).await.unwrap();
    assert!(got.is_some(), "the second completion replaced the first");

    let store = CallbackAdapter::new(Misbehaving::FailsThenSucceeds);
    let err = bounded(store.get(&new_id())).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }));
    assert!(chain(&err).contains("disk on fire"), "{}", chain(&err));

    let store = CallbackAdapter::new(Misbehaving::CompletesTwiceFromClones);
    for _ in 0..20 {
        // Whichever thread came first decides; the call never hangs or errors otherwise.
        match bounded(store.get(&new_id())).await {
            Ok(Some(_)) => {}
            Err(e) => assert!(chain(&e).contains("loser"), "{}", chain(&e)),
            Ok(None) => panic!("an impossible outcome"),
        }
    }
}

#[tokio::test]
async fn completing_after_the_caller_left_is_harmless() {
    /// Completes `get` only when the test says so.
    type Slot = Arc<Mutex<Option<Completion<Option<Record>>>>>;
    struct Parked(Slot);
    impl CallbackStore for Parked {
        fn get(&self, _id: SessionId, done: Completion<Option<Record>>) {
            *self.0.lock().unwrap() = Some(done);
        }
        fn set(&self, _id: SessionId, _record: Record, done: Completion<()>) {
            done.ok(());
        }
        fn destroy(&self, _id: SessionId, done: Completion<()>) {
            done.ok(());
        }
    }
    let slot = Slot::default();
    let parked = slot.clone();
    let store = CallbackAdapter::new(Parked(slot));
    let timed_out = tokio::time::timeout(Duration::from_millis(50), store.get(&new_id())).await;
    assert!(timed_out.is_err(), "a parked call cannot have finished");
    let done = parked.lock().unwrap().take().expect("get was called");
    assert!(!done.ok(None), "nobody is waiting any more");
}

#[tokio::test]
async fn default_touch_never_creates_and_keeps_data() {
    let store = CallbackAdapter::new(MapStore::default());
    let id = new_id();
    let later = now_ms() + Duration::from_secs(900);
    assert!(!store.touch(&id, later).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    let mut record = sample_record(now_ms() + Duration::from_secs(60));
    record.version = 9;
    store.set(&id, &record).await.unwrap();
    assert!(store.touch(&id, later).await.unwrap());
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.expires, got.version, &got.data),
        (later, 9, &record.data)
    );
}

#[test]
fn handles_and_adapters_are_thread_safe() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Completion<Option<Record>>>();
    check::<Completion<()>>();
    check::<CallbackAdapter<MapStore>>();
}

#[test]
fn adapter_debug_names_the_store() {
    let store = CallbackAdapter::new(MapStore::default());
    let text = format!("{store:?}");
    assert!(text.contains("callback-map"), "{text}");
}
