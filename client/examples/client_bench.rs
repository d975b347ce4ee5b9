//! Client benchmark, Rust side (run by bench/client.sh beside bench/client_py.py against the same
//! zeo-server): cold loads, cache-hit loads and tiny commits, one client, sequential calls.
//!
//! usage: client_bench ADDR OIDS_FILE [--quick]   (prints one JSON document)
//! OIDS_FILE: hex oids, one per line, written by client_py.py's setup.

use std::time::Instant;

use zeo_client::{Client, ClientOptions};

fn oid(hex: &str) -> [u8; 8] {
    let n = u64::from_str_radix(hex.trim(), 16).expect("hex oid");
    n.to_be_bytes()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = &args[1];
    let oids: Vec<[u8; 8]> = std::fs::read_to_string(&args[2]).unwrap().lines().map(oid).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let client = Client::connect(ClientOptions::new([addr.as_str()])).await.unwrap();

    // Cold: every object once, nothing cached.
    let t = Instant::now();
    for o in &oids {
        client.load(*o).await.unwrap();
    }
    let cold = oids.len() as f64 / t.elapsed().as_secs_f64();

    // Hits: the same objects again, now cached.
    let rounds = if quick { 20 } else { 200 };
    let t = Instant::now();
    for _ in 0..rounds {
        for o in &oids {
            client.load(*o).await.unwrap();
        }
    }
    let hit_ns = t.elapsed().as_nanos() as f64 / (rounds * oids.len()) as f64;

    // Tiny commits: one object rewritten, one transaction each.
    let n = if quick { 300 } else { 2000 };
    let target = oids[0];
    let (_, mut serial) = client.load(target).await.unwrap();
    let t = Instant::now();
    for i in 0..n {
        let txn = client.begin();
        txn.store(target, serial, format!("rust {i:>96}").into_bytes()).unwrap();
        serial = txn.commit().await.unwrap().unwrap();
    }
    let commits = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"cold_loads_per_s": cold, "cache_hit_ns": hit_ns, "commits_per_s": commits, "objects": oids.len()})
    );
}
