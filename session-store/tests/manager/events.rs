//! The manager: lifecycle events given to the application's hook.

use super::*;
use session_store::SessionEvent;

/// A harness whose manager records every event.
fn recording(
    configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
) -> (Harness, Arc<Mutex<Vec<SessionEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let h = harness(move |b| {
        configure(b).on_event(move |e: &SessionEvent| seen.lock().unwrap().push(e.clone()))
    });
    (h, events)
}

fn take(events: &Mutex<Vec<SessionEvent>>) -> Vec<SessionEvent> {
    std::mem::take(&mut *events.lock().unwrap())
}

#[tokio::test]
async fn every_change_of_a_sessions_life_is_an_event_named_by_handle() {
    let (h, events) = recording(|b| b.max_age(secs(3600)).absolute_lifetime(secs(7200)));
    h.request(None, |_| {}).await;
    assert!(take(&events).is_empty(), "an empty new session is no event");
    let r = h.request(None, bump).await;
    let first = r.session.handle();
    assert_eq!(
        take(&events),
        [SessionEvent::Created {
            handle: first.clone()
        }]
    );
    let r2 = h.request(Some(&r.pair()), |s| s.regenerate()).await;
    let second = r2.session.handle();
    assert_eq!(
        take(&events),
        [SessionEvent::Regenerated {
            from: first.clone(),
            to: second.clone()
        }]
    );
    let r3 = h.request(Some(&r2.pair()), |s| s.destroy()).await;
    assert_eq!(take(&events), [SessionEvent::Destroyed { handle: second }]);
    assert!(r3.session.is_new());
    // Revoked, with its owner.
    let r = h
        .request(None, |s| {
            bump(s);
            s.set_owner("ann").unwrap();
        })
        .await;
    take(&events);
    h.manager.revoke_all("ann").await.unwrap();
    assert_eq!(
        take(&events),
        [SessionEvent::Revoked {
            handle: r.session.handle(),
            owner: "ann".into()
        }]
    );
    // Found expired: past its absolute lifetime (the option shortened meanwhile, here by a
    // record stored with an older creation time).
    let id = IdGenerator::nanoid().generate();
    let mut record = Record::new(at(10_000), Codec::MessagePack);
    record.created = Some(at(0));
    h.store
        .inner
        .set(&h.manager.store_key(&id), &record)
        .await
        .unwrap();
    h.clock.set(at(7200));
    h.request(Some(&format!("sid={}", id.as_str())), |_| {})
        .await;
    let handle = take(&events);
    assert_eq!(
        handle.len(),
        1,
        "expired, and no destroyed event for it: {handle:?}"
    );
    assert!(matches!(&handle[0], SessionEvent::Expired { .. }));
    assert!(
        !format!("{:?}", handle[0]).contains(id.as_str()),
        "no event carries an id"
    );
}

#[tokio::test]
async fn a_panicking_hook_never_fails_the_request() {
    let h = harness(|b| b.on_event(|_| panic!("the hook is broken")));
    let r = h.request(None, bump).await;
    assert!(r.cookie().is_some(), "the session was still created");
    assert!(h.stored(&r.session.id()).await.is_some());
}
