//! zeo-app's counters against a real `zeo-server` (which resolves Length conflicts at vote):
//! concurrent increments never conflict, and counters of the old layout (the value inline in
//! the mapping) read as before and become Lengths at their next increment.

use std::path::Path;
use std::time::Duration;

use zeo_client::Client;
use zeo_client::objects::{ClassName, ObjValue, Object, ROOT_OID};
use zeo_testkit::{App, Http, Server, bounded, client_options, wait_for};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_zeo-app"))
}

async fn ready(http: &Http, app: &App) {
    let url = format!("{}/readyz", app.url);
    wait_for("zeo-app ready", Duration::from_secs(30), || async { (http.get(&url).await.status == 200).then_some(()) })
        .await;
}

/// The oid of the application's counters mapping.
async fn counters_oid(client: &Client) -> zeo_client::Oid {
    let txn = client.begin();
    let (root, _) = txn.load_mapping(ROOT_OID).await.expect("root");
    let app = root["zeo_app"].as_ref().expect("zeo_app ref").oid;
    let (app, _) = txn.load_mapping(app).await.expect("zeo_app");
    app["counters"].as_ref().expect("counters ref").oid
}

/// The value of one `zeo_app_client_*` counter in a `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_merge_on_the_server_without_conflicts() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path()).await;
        let http = Http::new();
        let app = App::start(exe(), dir.path(), &server.addr, &[]).await;
        ready(&http, &app).await;
        let incr = format!("{}/api/counters/hot/incr", app.url);
        // Creating the counter changes the mapping; every increment after it only the Length.
        assert_eq!(http.send("POST", &incr, None).await.json()["value"].as_i64(), Some(1));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (http, incr) = (http.clone(), incr.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let r = http.send("POST", &incr, None).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            }));
        }
        for t in tasks {
            t.await.expect("incrementer");
        }
        let r = http.get(&format!("{}/api/counters/hot", app.url)).await.json();
        assert_eq!(r["value"].as_i64(), Some(81));
        let metrics = http.get(&format!("{}/metrics", app.url)).await.body;
        assert_eq!(metric(&metrics, "zeo_app_client_conflicts_total"), 0, "a conflict reached the app");
        assert_eq!(metric(&metrics, "zeo_app_client_retries_total"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_of_the_old_layout_are_read_and_migrated() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path()).await;
        let http = Http::new();
        let app = App::start(exe(), dir.path(), &server.addr, &[]).await;
        ready(&http, &app).await;
        // Write a counter the way zeo-app did before Lengths: the int in the mapping.
        let client = Client::connect(client_options(&server.addr)).await.expect("client");
        let oid = counters_oid(&client).await;
        client
            .transact(|txn| async move {
                let (mut counters, serial) = txn.load_mapping(oid).await?;
                counters.insert("old".into(), ObjValue::Int(41));
                txn.store_object(oid, serial, &Object::Mapping(counters))
            })
            .await
            .expect("old layout written");

        let url = &app.url;
        assert_eq!(http.get(&format!("{url}/api/counters/old")).await.json()["value"].as_i64(), Some(41));
        assert_eq!(http.get(&format!("{url}/api/counters")).await.json()["counters"]["old"].as_i64(), Some(41));
        let r = http.send("POST", &format!("{url}/api/counters/old/incr?by=2"), None).await;
        assert_eq!(r.json()["value"].as_i64(), Some(43));
        assert_eq!(http.get(&format!("{url}/api/counters")).await.json()["counters"]["old"].as_i64(), Some(43));

        // Now a reference to a BTrees.Length.Length holding the value.
        let txn = client.begin();
        let (counters, _) = txn.load_mapping(oid).await.expect("counters");
        let length = counters["old"].as_ref().expect("a reference").oid;
        let (obj, _) = txn.load_object(length).await.expect("length");
        assert_eq!(obj, Object::Other { class: ClassName::new("BTrees.Length", "Length"), state: ObjValue::Int(43) });
        client.close();
    })
    .await;
}
