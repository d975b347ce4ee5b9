//! Property: with concurrent writers, every read a transaction makes returns exactly the
//! revision the model says was current at the transaction's snapshot: never newer, never older.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use zeo_client::{Client, ClientError, Oid, Tid, Z64};

use crate::common::{Server, bounded, client_options, data_dir};

const KEYS: usize = 6;
const WRITERS: u64 = 2;
const COMMITS_PER_WRITER: usize = 100;
const READERS: u64 = 3;

/// What a reader saw: `(who, snapshot, key index, data, serial)`.
type Observation = (String, Tid, usize, Bytes, Tid);

/// Committed writes by tid: `key index -> data`.
type Model = BTreeMap<Tid, Vec<(usize, Vec<u8>)>>;

/// The revision of `key` current at `snapshot`, by the model.
fn expected(model: &Model, key: usize, snapshot: Tid) -> Option<(&[u8], Tid)> {
    model
        .range(..=snapshot)
        .rev()
        .find_map(|(tid, writes)| writes.iter().find(|(k, _)| *k == key).map(|(_, data)| (data.as_slice(), *tid)))
}

async fn writer(
    client: Client,
    w: u64,
    oids: Arc<Vec<Oid>>,
    model: Arc<Mutex<Model>>,
    seen: Arc<Mutex<Vec<Observation>>>,
) {
    let mut rng = StdRng::seed_from_u64(w);
    let mut done = 0;
    let mut conflicts = 0;
    while done < COMMITS_PER_WRITER {
        let txn = client.begin();
        let mut keys: Vec<usize> = (0..KEYS).collect();
        keys.shuffle(&mut rng);
        keys.truncate(rng.random_range(1..=KEYS));
        let mut writes = Vec::new();
        for &k in &keys {
            let (data, serial) = txn.load(oids[k]).await.expect("writer load");
            seen.lock().unwrap().push((format!("writer {w}"), txn.snapshot().expect("connected"), k, data, serial));
            let value = format!("w{w}-c{done}-k{k}").into_bytes();
            txn.store(oids[k], serial, value.clone()).expect("store");
            writes.push((k, value));
        }
        match txn.commit().await {
            Ok(Some(tid)) => {
                let previous = model.lock().unwrap().insert(tid, writes);
                assert!(previous.is_none(), "two commits with one tid");
                done += 1;
            }
            Err(ClientError::Conflict { .. } | ClientError::ReadConflict { .. }) => conflicts += 1,
            other => panic!("writer {w}: unexpected commit result {other:?}"),
        }
    }
    let _ = conflicts;
}

async fn reader(
    client: Client,
    who: String,
    seed: u64,
    oids: Arc<Vec<Oid>>,
    mut stop: watch::Receiver<bool>,
    seen: Arc<Mutex<Vec<Observation>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !*stop.borrow_and_update() {
        let txn = client.begin();
        // Let the snapshot age a little, so that reads race with commits.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
        let mut keys: Vec<usize> = (0..KEYS).collect();
        keys.shuffle(&mut rng);
        for k in keys {
            let (data, serial) = txn.load(oids[k]).await.expect("reader load");
            seen.lock().unwrap().push((who.clone(), txn.snapshot().expect("connected"), k, data, serial));
            if rng.random_bool(0.3) {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reads_match_the_model_under_concurrent_writers() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let setup = Client::connect(client_options(&server.addr)).await.expect("connect");
        let mut oids = Vec::new();
        let txn = setup.begin();
        let mut initial = Vec::new();
        for k in 0..KEYS {
            let oid = setup.new_oid().await.expect("oid");
            let value = format!("init-k{k}").into_bytes();
            txn.store(oid, Z64, value.clone()).expect("store");
            initial.push((k, value));
            oids.push(oid);
        }
        let t0 = txn.commit().await.expect("commit").expect("tid");
        let oids = Arc::new(oids);
        let model = Arc::new(Mutex::new(Model::from([(t0, initial)])));
        let seen = Arc::new(Mutex::new(Vec::new()));

        let writers: Vec<Client> = {
            let mut v = Vec::new();
            for _ in 0..WRITERS {
                v.push(Client::connect(client_options(&server.addr)).await.expect("connect writer"));
            }
            v
        };
        // Readers share a client with a small cache (evictions, old revisions), plus one reader
        // on a writer's client (its own commits enter its cache without invalidations).
        let mut o = client_options(&server.addr);
        o.cache_bytes = 16 << 10;
        let shared = Client::connect(o).await.expect("connect reader");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut readers = Vec::new();
        for r in 0..READERS {
            readers.push(tokio::spawn(reader(
                shared.clone(),
                format!("reader {r}"),
                100 + r,
                oids.clone(),
                stop_rx.clone(),
                seen.clone(),
            )));
        }
        readers.push(tokio::spawn(reader(
            writers[0].clone(),
            "reader on writer 0".into(),
            200,
            oids.clone(),
            stop_rx.clone(),
            seen.clone(),
        )));
        let mut tasks = Vec::new();
        for (w, client) in writers.iter().enumerate() {
            tasks.push(tokio::spawn(writer(client.clone(), w as u64, oids.clone(), model.clone(), seen.clone())));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        stop_tx.send(true).expect("stop readers");
        for r in readers {
            r.await.expect("reader");
        }

        let model = model.lock().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(model.len(), 1 + (WRITERS as usize) * COMMITS_PER_WRITER);
        for (who, snapshot, k, data, serial) in seen.iter() {
            let (want, want_tid) = expected(&model, *k, *snapshot).expect("every key exists from t0");
            assert_eq!(
                (&data[..], serial),
                (want, &want_tid),
                "{who} read key {k} at snapshot {snapshot:02x?}: got {:?}, the model says {:?}",
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(want)
            );
        }
        let snapshots: HashSet<Tid> = seen.iter().map(|o| o.1).collect();
        assert!(seen.len() > 200, "only {} reads", seen.len());
        assert!(snapshots.len() > 10, "only {} distinct snapshots", snapshots.len());
        let m = shared.metrics();
        assert!(m.cache_hits > 0 && m.cache_misses > 0, "{m:?}");
        assert!(shared.cache_usage().1 <= 16 << 10);
    })
    .await;
}
