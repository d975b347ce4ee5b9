//! zeo-app as real processes against a real `zeo-server`, on 127.0.0.1: replicas stay coherent,
//! the hot counter adds up exactly, and storage trouble is answered 503 with `Retry-After`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use zeo_testkit::{App, Http, Server, bounded, wait_for};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_zeo-app"))
}

/// Waits until `/readyz` answers 200.
async fn ready(http: &Http, app: &App) {
    let url = format!("{}/readyz", app.url);
    wait_for("zeo-app ready", Duration::from_secs(30), || async { (http.get(&url).await.status == 200).then_some(()) })
        .await;
}

/// POSTs one increment until it is answered 200, retrying the 503 that a conflict gets (after
/// its `Retry-After`), at most `CONFLICT_RETRIES` times. On a busy machine the app's own retry
/// budget can run out on the hot counter; that answer promises nothing was committed.
async fn incr_as_a_client_would(http: &Http, url: &str) {
    const CONFLICT_RETRIES: usize = 30;
    for _ in 0..=CONFLICT_RETRIES {
        let r = http.send("POST", url, None).await;
        if r.status == 200 {
            return;
        }
        let conflict = r.status == 503 && r.body.contains("too many concurrent changes");
        assert!(conflict, "{} {}", r.status, r.body);
        let wait: u64 = r.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("a 503 has Retry-After");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    panic!("{url}: still conflicting after {CONFLICT_RETRIES} retries");
}

/// A write through one replica is visible through the other two on their next request, for
/// pages (with history), keys and deletions; concurrent increments of the hot counter through
/// all three add up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_stay_coherent() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path()).await;
        let http = Http::new();
        let mut apps = Vec::new();
        for _ in 0..3 {
            apps.push(App::start(exe(), dir.path(), &server.addr, &[]).await);
        }
        for app in &apps {
            ready(&http, app).await;
        }
        let urls: Vec<String> = apps.iter().map(|a| a.url.clone()).collect();

        // Pages: create through 0, read through 1 and 2; edit through 1, read through 0 and 2.
        let r = http
            .json("PUT", &format!("{}/api/wiki/FrontPage", urls[0]), &json!({"body": "v1 <b>", "author": "ann"}))
            .await;
        assert_eq!((r.status, r.json()["revision"].as_i64()), (201, Some(1)), "{}", r.body);
        for url in &urls[1..] {
            let page = http.get(&format!("{url}/api/wiki/FrontPage")).await.json();
            assert_eq!((page["body"].as_str(), page["revision"].as_i64()), (Some("v1 <b>"), Some(1)));
        }
        let r = http
            .json(
                "PUT",
                &format!("{}/api/wiki/FrontPage", urls[1]),
                &json!({"body": "v2", "author": "bob", "base_revision": 1}),
            )
            .await;
        assert_eq!((r.status, r.json()["revision"].as_i64()), (200, Some(2)), "{}", r.body);
        for url in [&urls[0], &urls[2]] {
            let page = http.get(&format!("{url}/api/wiki/FrontPage")).await.json();
            assert_eq!((page["body"].as_str(), page["author"].as_str()), (Some("v2"), Some("bob")));
            let hist = http.get(&format!("{url}/api/wiki/FrontPage/history")).await.json();
            let revs: Vec<i64> = hist["revisions"]
                .as_array()
                .expect("revisions")
                .iter()
                .map(|r| r["revision"].as_i64().expect("n"))
                .collect();
            assert_eq!(revs, [1, 2]);
        }
        // An edit based on an old revision is refused, not lost.
        let r = http
            .json("PUT", &format!("{}/api/wiki/FrontPage", urls[2]), &json!({"body": "x", "base_revision": 1}))
            .await;
        assert_eq!(r.status, 409, "{}", r.body);
        // HTML for people: escaped body, listed in the index.
        let html = http.get(&format!("{}/wiki/FrontPage/history", urls[2])).await;
        assert_eq!(html.status, 200);
        assert!(
            html.body.contains("v1 &lt;b&gt;")
                && html.content_type.as_deref().is_some_and(|c| c.starts_with("text/html"))
        );
        assert!(http.get(&format!("{}/wiki", urls[0])).await.body.contains("href=\"/wiki/FrontPage\""));
        assert_eq!(http.get(&format!("{}/wiki/Missing", urls[0])).await.status, 404);

        // Keys: write through 2, read through 0 and 1; delete through 0, gone on 1 and 2.
        let doc = json!({"n": 1, "tags": ["a", "b"], "ok": true, "pi": 3.5, "none": null});
        assert_eq!(http.json("PUT", &format!("{}/api/kv/some%20key", urls[2]), &doc).await.status, 201);
        for url in &urls[..2] {
            assert_eq!(http.get(&format!("{url}/api/kv/some%20key")).await.json(), doc);
        }
        assert_eq!(http.send("DELETE", &format!("{}/api/kv/some%20key", urls[0]), None).await.status, 204);
        for url in &urls[1..] {
            assert_eq!(http.get(&format!("{url}/api/kv/some%20key")).await.status, 404);
        }

        // The hot counter: 3 replicas x 6 concurrent clients x 10 increments each. Each client
        // behaves as the app asks of one: a 503 for a conflict (the app's own retries ran out, so
        // nothing was committed) is tried again after its Retry-After. Any other answer fails,
        // and the total below must still be exact.
        let (clients, each) = (6, 10);
        let mut tasks = Vec::new();
        for url in &urls {
            for _ in 0..clients {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..each {
                        incr_as_a_client_would(&http, &format!("{url}/api/counters/hits/incr")).await;
                    }
                }));
            }
        }
        for t in tasks {
            t.await.expect("incrementer");
        }
        let total = (urls.len() * clients * each) as i64;
        for url in &urls {
            let r = http.get(&format!("{url}/api/counters/hits")).await.json();
            assert_eq!(r["value"].as_i64(), Some(total));
        }
        let r = http.json("POST", &format!("{}/api/counters/hits/incr?by=-5", urls[0]), &json!(null)).await;
        assert_eq!(r.json()["value"].as_i64(), Some(total - 5));

        // The client library's counters are exported, conflicts of the hot counter included.
        let metrics = http.get(&format!("{}/metrics", urls[0])).await.body;
        for name in [
            "zeo_app_client_commits_total",
            "zeo_app_client_conflicts_total",
            "zeo_app_client_retries_total",
            "zeo_app_client_cache_hits_total",
            "zeo_app_http_requests_total",
        ] {
            assert!(metrics.contains(name), "{name} missing from /metrics");
        }
        assert!(metrics.contains("route=\"/api/counters/{name}/incr\""));
    })
    .await;
}

/// Bad requests are answered 400/404/413, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_cleanly() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path()).await;
        let http = Http::new();
        let app = App::start(exe(), dir.path(), &server.addr, &["--max-body", "4096"]).await;
        ready(&http, &app).await;
        let url = &app.url;
        let r = http.json("PUT", &format!("{url}/api/wiki/bad%20name"), &json!({"body": "x"})).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"], "bad_request");
        let r = http.json("PUT", &format!("{url}/api/kv/big"), &json!("x".repeat(10_000))).await;
        assert_eq!(r.status, 413);
        assert_eq!(http.get(&format!("{url}/api/wiki/Nope")).await.status, 404);
        assert_eq!(http.get(&format!("{url}/api/counters/nope")).await.status, 404);
        assert_eq!(http.get(&format!("{url}/no/such/route")).await.status, 404);
        let r = http.send("PUT", &format!("{url}/api/kv/k"), Some(("application/json", "{not json".into()))).await;
        assert_eq!(r.status, 400);
    })
    .await;
}

/// With the storage gone, requests get 503 + `Retry-After` and `/readyz` says not ready while
/// `/livez` stays up; after the storage returns, the data is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_is_503_then_recovers() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start(dir.path()).await;
        let http = Http::new();
        // --ready-grace 0s: not ready as soon as the storage is gone (the grace has its own test).
        let app = App::start(
            exe(),
            dir.path(),
            &server.addr,
            &["--storage-timeout", "1s", "--request-timeout", "3s", "--ready-grace", "0s"],
        )
        .await;
        ready(&http, &app).await;
        let url = &app.url;
        assert_eq!(http.json("PUT", &format!("{url}/api/kv/k"), &json!(1)).await.status, 201);

        server.kill();
        let readyz = format!("{url}/readyz");
        wait_for("not ready", Duration::from_secs(20), || async {
            (http.get(&readyz).await.status == 503).then_some(())
        })
        .await;
        assert_eq!(http.get(&format!("{url}/livez")).await.status, 200);
        for r in
            [http.get(&format!("{url}/api/kv/k")).await, http.json("PUT", &format!("{url}/api/kv/k"), &json!(2)).await]
        {
            assert_eq!(r.status, 503, "{}", r.body);
            assert_eq!(r.retry_after.as_deref(), Some("1"));
            assert_eq!(r.json()["error"], "unavailable");
        }
        let page = http.get(&format!("{url}/wiki/Any")).await;
        assert_eq!((page.status, page.retry_after.as_deref()), (503, Some("1")));

        server.restart().await;
        ready(&http, &app).await;
        assert_eq!(http.get(&format!("{url}/api/kv/k")).await.json(), json!(1));
        assert_eq!(http.json("PUT", &format!("{url}/api/kv/k"), &json!(2)).await.status, 200);
    })
    .await;
}

/// `--ready-grace`: with the storage gone, a replica within its grace stays ready (200, saying
/// so) while its storage requests get 503 + `Retry-After: 1`; one past its grace is not ready;
/// both are ready again once the storage returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_grace_keeps_a_replica_ready_through_an_outage() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start(dir.path()).await;
        let http = Http::new();
        let flags = |grace| ["--storage-timeout", "1s", "--request-timeout", "3s", "--ready-grace", grace];
        let long = App::start(exe(), dir.path(), &server.addr, &flags("1h")).await;
        let short = App::start(exe(), dir.path(), &server.addr, &flags("2s")).await;
        ready(&http, &long).await;
        ready(&http, &short).await;

        server.kill();
        let long_readyz = format!("{}/readyz", long.url);
        let r = wait_for("the long-grace replica sees the outage", Duration::from_secs(30), || async {
            let r = http.get(&long_readyz).await;
            r.body.contains("within the grace").then_some(r)
        })
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let kv = http.get(&format!("{}/api/kv/k", long.url)).await;
        assert_eq!((kv.status, kv.retry_after.as_deref()), (503, Some("1")), "{}", kv.body);
        let short_readyz = format!("{}/readyz", short.url);
        let r = wait_for("the short-grace replica not ready", Duration::from_secs(30), || async {
            let r = http.get(&short_readyz).await;
            (r.status == 503).then_some(r)
        })
        .await;
        assert!(r.body.contains("not ready: not connected"), "{}", r.body);
        assert_eq!(http.get(&long_readyz).await.status, 200);

        server.restart().await;
        for app in [&long, &short] {
            let url = format!("{}/readyz", app.url);
            wait_for("ready again", Duration::from_secs(30), || async {
                (http.get(&url).await.body == "ready\n").then_some(())
            })
            .await;
        }
    })
    .await;
}
