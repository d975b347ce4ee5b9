//! Failover benchmark (run by bench/failover.sh): a real local pair (tests/pair), a client writing
//! through the service address, and N failovers per scenario: SIGKILL of the primary's server, and
//! planned switchover (`zeo-supervisor switchover`). For each failover, the client-observed write
//! gap is the time between the last acknowledged write before it and the first one after it.
//!
//! usage: failover_bench [--runs N] [--scenarios sigkill,switchover] [--out FILE.md] [--json FILE]

#[path = "../tests/pair/mod.rs"]
mod pair;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pair::{Ports, free_port, primary, role, server_pid, start};
use zeo_client::{Client, ClientOptions};

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The longest pause between consecutive acknowledged writes from `at` until `until` (ms): the
/// outage the client saw (writes already in flight at `at` may still be acknowledged just after).
fn gap(acks: &[pair::Ack], at: Instant, until: Instant) -> Option<f64> {
    let first = acks.iter().rposition(|a| a.0 <= at)?;
    let window: Vec<Instant> = acks[first..].iter().map(|a| a.0).take_while(|t| *t <= until).collect();
    window.windows(2).map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3).reduce(f64::max)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let runs: usize = get("--runs").and_then(|v| v.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "failover-bench-token-0123456789").unwrap();
    let ports = || Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(), ports());
    let service = format!("127.0.0.1:{}", free_port());
    let members =
        vec![start(dir.path(), "a", &pa, "b", &pb, &service), start(dir.path(), "b", &pb, "a", &pa, &service)];
    let t = Instant::now();
    while primary(&members).is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "no primary");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut o = ClientOptions::new([service.as_str()]);
    o.call_timeout = Duration::from_secs(5);
    o.commit_resolve_timeout = Duration::from_secs(5);
    o.reconnect_min = Duration::from_millis(20);
    o.reconnect_max = Duration::from_millis(200);
    let client = Client::connect(o).await.unwrap();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = pair::spawn_writer(client.clone(), writing.clone());
    let mut events: Vec<(&str, Instant)> = Vec::new();
    let scenarios: Vec<String> =
        get("--scenarios").unwrap_or_else(|| "sigkill,switchover".into()).split(',').map(String::from).collect();
    for scenario in scenarios.iter().map(String::as_str) {
        for run in 0..runs {
            // Past --stable-for and --min-failover-interval (tests/pair), with a standby in sync.
            tokio::time::sleep(Duration::from_millis(2200)).await;
            let victim = primary(&members).expect("a primary");
            let name = victim.name;
            let at = Instant::now();
            if scenario == "sigkill" {
                let pid = server_pid(&victim.data).expect("server pid");
                std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
            } else {
                let status = std::process::Command::new(pair::supervisor_bin())
                    .args(["switchover", "--url", &victim.supervisor_url, "--token-file"])
                    .arg(dir.path().join("token"))
                    .status()
                    .unwrap();
                assert!(status.success(), "switchover command failed");
            }
            let t = Instant::now();
            while primary(&members).is_none_or(|m| m.name == name) {
                assert!(t.elapsed() < Duration::from_secs(60), "{scenario} {run}: no new primary");
                std::thread::sleep(Duration::from_millis(20));
            }
            while members
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| role(&m.admin))
                .is_none_or(|(r, _)| r != "standby")
            {
                assert!(t.elapsed() < Duration::from_secs(90), "{scenario} {run}: old primary did not rejoin");
                std::thread::sleep(Duration::from_millis(50));
            }
            events.push((scenario, at));
            eprintln!("{scenario} {run}: {name} -> new primary in {:?}", t.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let acks = writer.await.unwrap();
    let mut lost = 0;
    for (_, oid, data) in &acks {
        match client.load(*oid).await {
            Ok((got, _)) if got[..] == data[..] => {}
            _ => lost += 1,
        }
    }
    let mut table = String::from(
        "| scenario | failovers | client write gap p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---|---|---|\n",
    );
    let mut per_scenario = serde_json::Map::new();
    for scenario in scenarios.iter().map(String::as_str) {
        let end = Instant::now();
        let mut gaps: Vec<f64> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 == scenario)
            .filter_map(|(i, e)| gap(&acks, e.1, events.get(i + 1).map_or(end, |n| n.1)))
            .inspect(|g| eprintln!("{scenario}: gap {g:.0} ms"))
            .collect();
        per_scenario.insert(scenario.to_string(), serde_json::json!(gaps));
        gaps.sort_by(f64::total_cmp);
        let label = if scenario == "sigkill" { "SIGKILL of the primary's server" } else { "planned switchover" };
        table += &format!(
            "| {label} | {} | {:.0} | {:.0} | {:.0} |\n",
            gaps.len(),
            pct(&gaps, 0.5),
            pct(&gaps, 0.99),
            gaps.last().copied().unwrap_or(f64::NAN)
        );
    }
    let text = format!(
        "{table}\nAcknowledged writes: {}, lost: {lost} (sync replication, every acknowledged write read back at the end).\n",
        acks.len()
    );
    println!("{text}");
    if let Some(out) = get("--out") {
        std::fs::write(out, &text).unwrap();
    }
    if let Some(out) = get("--json") {
        let doc = serde_json::json!({"gaps_ms": per_scenario, "acknowledged": acks.len(), "lost": lost});
        std::fs::write(out, doc.to_string()).unwrap();
    }
}
