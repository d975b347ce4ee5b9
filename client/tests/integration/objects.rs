//! The object layer against real Python ZODB: both share one `zeo-server`, Python through
//! `ZEO.DB` (ClientStorage), running `client/tests/python/objects_interop.py`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use zeo_client::objects::{ObjRef, ObjValue, Object, ROOT_OID};
use zeo_client::{Client, Oid, Z64};

use crate::common::{Server, bounded, client_options, data_dir, python};

/// Runs the interop script in `mode` against `addr`; panics with its output if it fails.
async fn run_python(mode: &str, addr: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/objects_interop.py");
    let run = tokio::process::Command::new(python()).arg(script).arg(mode).arg(addr).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("python timed out").expect("run python");
    assert!(
        out.status.success(),
        "objects_interop.py {mode} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dict<const N: usize>(entries: [(&str, ObjValue); N]) -> BTreeMap<String, ObjValue> {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// What Python writes as `root['py']` (both scripts' modes), checked from Rust.
async fn check_python_mapping(client: &Client, oid: Oid) {
    let txn = client.begin();
    let (py, _) = txn.load_mapping(oid).await.expect("py mapping");
    assert_eq!(py["name"], ObjValue::from("python"));
    assert_eq!(py["d"], ObjValue::Dict(dict([("a", ObjValue::List(vec![ObjValue::None]))])));
    let items = py["items"].as_ref().expect("items is a reference");
    assert_eq!(items.class, ObjRef::list(items.oid).class);
    let (items, _) = txn.load_list(items.oid).await.expect("items list");
    assert_eq!(items, vec![ObjValue::Bytes(b"x".to_vec()), ObjValue::Float(1.25)]);
}

/// Rust creates the root of an empty database and writes a mapping and a list that refer to
/// each other; Python's ZODB opens the database, checks every value and type, and modifies both
/// objects and adds its own; Rust reads Python's changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_writes_python_reads_and_modifies() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let client = Client::connect(client_options(&server.addr)).await.expect("connect");
        client.ensure_root().await.expect("root");
        let created = client.last_tid();
        client.ensure_root().await.expect("root again");
        assert_eq!(client.last_tid(), created, "a second ensure_root writes nothing");

        let (map_oid, list_oid) = client
            .transact(|txn| async move {
                let (mut root, serial) = txn.load_mapping(ROOT_OID).await?;
                assert!(root.is_empty());
                let (m, l) = (txn.new_oid().await?, txn.new_oid().await?);
                let map = Object::Mapping(dict([
                    ("str", "h\u{e9}llo".into()),
                    ("bytes", ObjValue::Bytes(vec![0, 0xff])),
                    ("int", ObjValue::Int(-42)),
                    ("big", ObjValue::Int(1 << 62)),
                    ("float", ObjValue::Float(1.5)),
                    ("true", true.into()),
                    ("false", false.into()),
                    ("none", ObjValue::None),
                    ("list", ObjValue::List(vec![1.into(), "two".into(), ObjValue::List(vec![3.into()])])),
                    ("dict", ObjValue::Dict(dict([("k", ObjValue::Dict(dict([("nested", 1.into())])))]))),
                    ("tuple", ObjValue::Tuple(vec![1.into(), "x".into()])),
                    ("list_ref", ObjRef::list(l).into()),
                ]));
                let list = Object::List(vec!["first".into(), 2.into(), ObjRef::mapping(m).into()]);
                txn.store_object(m, Z64, &map)?;
                txn.store_object(l, Z64, &list)?;
                root.insert("rust_map".into(), map.reference(m).into());
                root.insert("rust_list".into(), list.reference(l).into());
                root.insert("count".into(), 3.into());
                txn.store_object(ROOT_OID, serial, &Object::Mapping(root))?;
                Ok((m, l))
            })
            .await
            .expect("write objects");

        run_python("check-rust", &server.addr).await;

        client.sync().await.expect("sync");
        let txn = client.begin();
        let (root, _) = txn.load_mapping(ROOT_OID).await.expect("root");
        let (map, _) = txn.load_mapping(map_oid).await.expect("map");
        assert_eq!(map["int"], ObjValue::Int(43));
        assert_eq!(map["str"], ObjValue::from("h\u{e9}llo"));
        let (list, _) = txn.load_list(list_oid).await.expect("list");
        assert_eq!(list.len(), 4);
        assert_eq!(list[3], ObjValue::from("from python"));
        let py = root["py"].as_ref().expect("py is a reference");
        assert_eq!(py, &ObjRef::mapping(py.oid));
        check_python_mapping(&client, py.oid).await;
    })
    .await;
}

/// Python's ZODB creates the root of an empty database and writes objects; Rust reads them,
/// and `ensure_root` leaves the database alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_writes_rust_reads() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        run_python("write-fresh", &server.addr).await;

        let client = Client::connect(client_options(&server.addr)).await.expect("connect");
        let before = client.last_tid();
        client.ensure_root().await.expect("root exists");
        assert_eq!(client.last_tid(), before);
        let (root, _) = client.begin().load_mapping(ROOT_OID).await.expect("root");
        assert_eq!(root.keys().collect::<Vec<_>>(), ["py"]);
        let py = root["py"].as_ref().expect("reference");
        check_python_mapping(&client, py.oid).await;
    })
    .await;
}
