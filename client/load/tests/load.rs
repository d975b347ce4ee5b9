//! zeo-load as a real process against a real `zeo-server` and `zeo-app`, on 127.0.0.1: its
//! reports, and its verify mode across a server killed and restarted mid-run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zeo_testkit::{App, Http, Server, bin, bounded, wait_for};

/// A zeo-load run in the background, its progress on stderr in a file.
struct Load {
    child: Child,
    json: PathBuf,
    log: PathBuf,
}

impl Load {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Load {
        let json = dir.join(format!("{name}.json"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_zeo-load"))
            .args(args)
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn zeo-load");
        Load { child, json, log }
    }

    /// The `acked` count of the latest progress line.
    fn acked(&self) -> u64 {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().find_map(|l| l.split("acked ").nth(1)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    }

    /// Waits for the process to exit; returns its exit code and JSON report.
    async fn finish(mut self) -> (i32, Value) {
        let code = wait_for("zeo-load to exit", Duration::from_secs(90), || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status.map(|s| s.code().unwrap_or(-1)) }
        })
        .await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let text = std::fs::read_to_string(&self.json).unwrap_or_else(|_| panic!("no report; stderr:\n{log}"));
        (code, serde_json::from_str(&text).expect("report is JSON"))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn app(dir: &Path, storage: &str) -> App {
    let app = App::start(&bin("zeo-app"), dir, storage, &["--storage-timeout", "2s"]).await;
    let (http, url) = (Http::new(), format!("{}/readyz", app.url));
    wait_for("zeo-app ready", Duration::from_secs(30), || async { (http.get(&url).await.status == 200).then_some(()) })
        .await;
    app
}

/// The fields failover tests rely on are there, with the expected types.
fn check_report_shape(r: &Value, mode: &str) {
    assert_eq!(r["schema"], 1);
    assert_eq!(r["mode"], mode);
    for field in ["acknowledged", "ops", "ok", "failed"] {
        assert!(r[field].is_u64(), "{field}: {r}");
    }
    for field in ["max_gap_ms", "elapsed_s", "throughput_ops_s"] {
        assert!(r[field].is_f64(), "{field}: {r}");
    }
    assert!(r["errors"].is_object());
    for q in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(r["writes"][q].is_f64(), "writes.{q}: {r}");
    }
}

/// Brief verified runs against the storage and the app, and a paced run: every acknowledged
/// write is read back, nothing fails, and the rate bounds the operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_runs_against_storage_and_app() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path()).await;
        let app = app(dir.path(), &server.addr).await;
        let common = ["--verify", "--duration", "2s", "--concurrency", "4", "--write-ratio", "0.5"];
        let storage = Load::start(dir.path(), "storage", &[&["--storage", server.addr.as_str()][..], &common].concat());
        let http = Load::start(dir.path(), "http", &[&["--target", app.url.as_str()][..], &common].concat());
        for (load, mode) in [(storage, "storage"), (http, "http")] {
            let (code, r) = load.finish().await;
            check_report_shape(&r, mode);
            assert_eq!(code, 0, "{r}");
            assert!(r["acknowledged"].as_u64() > Some(0), "{r}");
            assert_eq!(
                (r["lost"].as_u64(), r["unverified"].as_u64(), r["verified"].as_bool()),
                (Some(0), Some(0), Some(true))
            );
            assert_eq!(r["failed"], 0, "{r}");
            assert!(r["reads"]["count"].as_u64() > Some(0), "{r}");
        }

        // Paced, without verify, overwriting 10 keys: at most rate x duration operations.
        let paced = Load::start(
            dir.path(),
            "paced",
            &["--target", &app.url, "--duration", "1s", "--rate", "40", "--objects", "10"],
        );
        let (code, r) = paced.finish().await;
        assert_eq!(code, 0);
        assert!(r["ops"].as_u64().is_some_and(|n| n > 0 && n <= 40), "{r}");
        assert!(r["lost"].is_null() && r["verified"].is_null());
    })
    .await;
}

/// SIGKILL the server mid-run and restart it on the same port and data file: both a storage
/// run and an app run lose no acknowledged write, and each saw a gap between commits at least
/// as long as the server was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_run_loses_nothing() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start(dir.path()).await;
        let app = app(dir.path(), &server.addr).await;
        let common = [
            "--verify",
            "--duration",
            "8s",
            "--concurrency",
            "4",
            "--write-ratio",
            "0.7",
            "--timeout",
            "5s",
            "--progress-interval",
            "100ms",
        ];
        let loads = [
            Load::start(dir.path(), "storage", &[&["--storage", server.addr.as_str()][..], &common].concat()),
            Load::start(dir.path(), "http", &[&["--target", app.url.as_str()][..], &common].concat()),
        ];
        wait_for("writes acknowledged before the kill", Duration::from_secs(30), || {
            let ok = loads.iter().all(|l| l.acked() >= 20);
            async move { ok.then_some(()) }
        })
        .await;

        let killed = Instant::now();
        server.kill();
        server.restart().await;
        let down_ms = killed.elapsed().as_secs_f64() * 1000.0;
        let after: Vec<u64> = loads.iter().map(Load::acked).collect();
        wait_for("writes acknowledged after the restart", Duration::from_secs(30), || {
            let ok = loads.iter().zip(&after).all(|(l, a)| l.acked() > *a + 10);
            async move { ok.then_some(()) }
        })
        .await;

        for load in loads {
            let (code, r) = load.finish().await;
            assert_eq!((r["lost"].as_u64(), r["unverified"].as_u64()), (Some(0), Some(0)), "{r}");
            assert_eq!((code, r["verified"].as_bool()), (0, Some(true)), "{r}");
            let gap = r["max_gap_ms"].as_f64().expect("max_gap_ms");
            eprintln!(
                "{}: acknowledged {} gap {gap:.0}ms (server down {down_ms:.0}ms) errors {}",
                r["mode"], r["acknowledged"], r["errors"]
            );
            // The last commit before the kill was acknowledged no later than the kill (its
            // reply may still have been in flight: allow for that and for the test's polling).
            assert!(gap > 0.0 && gap + 50.0 >= down_ms, "gap {gap}ms, server down {down_ms:.0}ms: {r}");
        }
    })
    .await;
}
