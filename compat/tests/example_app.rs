//! The `axum_file_store` example app, driven in-process: sessions survive across requests
//! in the file store behind the blocking adapter, and logout removes the file.

#[allow(dead_code)]
#[path = "../examples/axum_file_store/main.rs"]
mod example;

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use session_store::SessionManager;
use session_store_compat::BlockingAdapter;
use tower::ServiceExt;

use example::file_store::FileStore;

async fn call(
    app: &axum::Router,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (
        status,
        set_cookie,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn session_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".session")
        })
        .count()
}

#[tokio::test]
async fn visits_are_counted_in_files() {
    let dir = std::env::temp_dir().join(format!(
        "compat-app-{}",
        session_store::testing::new_id().as_str()
    ));
    let store = BlockingAdapter::new(FileStore::open(&dir).unwrap());
    let manager = SessionManager::builder(store)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let app = example::app(manager);

    let (status, set_cookie, body) = call(&app, "/", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "visits: 1\n"));
    let cookie = set_cookie.expect("a new session sets a cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(session_files(&dir), 1);

    for n in 2..=4 {
        let (status, _, body) = call(&app, "/", Some(&pair)).await;
        assert_eq!((status, body), (StatusCode::OK, format!("visits: {n}\n")));
    }
    assert_eq!(session_files(&dir), 1);

    let (status, set_cookie, _) = call(&app, "/logout", Some(&pair)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(session_files(&dir), 0);

    let (_, _, body) = call(&app, "/", Some(&pair)).await;
    assert_eq!(body, "visits: 1\n", "a destroyed session came back");
    let _ = std::fs::remove_dir_all(&dir);
}
