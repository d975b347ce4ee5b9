use std::collections::HashMap;

use super::*;

/// Loads a config from flags (without the program name) and an env given as pairs.
fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let argv = std::iter::once("zeo-server").chain(args.iter().copied());
    Config::from_sources(argv, &|k| env.get(k).cloned())
}

fn err(args: &[&str], env: &[(&str, &str)]) -> String {
    load(args, env).expect_err("config should be refused").to_string()
}

fn yaml(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("zeo.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn defaults_with_just_a_path() {
    let c = load(&["--path", "/d/Data.fs"], &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8100");
    assert_eq!(
        c.storages,
        [StorageConfig { name: "1".into(), path: "/d/Data.fs".into(), blob_dir: None, read_only: false }]
    );
    assert!(!c.read_only && !c.msgpack);
    assert_eq!(c.invalidation_queue_size, 100);
    assert_eq!(c.transaction_timeout, None);
    assert_eq!((c.max_connections, c.max_frame_bytes, c.output_buffer_bytes), (1000, 64 << 20, 16 << 20));
    assert_eq!((c.admin.clone(), c.tls.clone(), c.ready_file.clone()), (None, None, None));
    assert!(c.allow.is_empty() && c.identities.is_empty());
    assert_eq!(c.log_format, LogFormat::Plain);
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn flags_beat_env_beat_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let file = yaml(
        &dir,
        "path: /y/Data.fs\nlisten: 10.0.0.1:1\nmax-connections: 7\ntransaction-timeout: 30\nlog-format: json\n",
    );
    let env = [(ENV_CONFIG, file.as_str()), (ENV_LISTEN, "10.0.0.2:2"), (ENV_MAX_CONNECTIONS, "8")];
    let c = load(&["--listen", "10.0.0.3:3"], &env).unwrap();
    assert_eq!(c.listen.to_string(), "10.0.0.3:3", "flag wins");
    assert_eq!(c.max_connections, 8, "env beats yaml");
    assert_eq!(c.transaction_timeout, Some(Duration::from_secs(30)), "yaml beats default");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.storages[0].path, PathBuf::from("/y/Data.fs"));
    assert_eq!(c.config_file.as_deref(), Some(Path::new(&file)));
    // --config beats ZEO_CONFIG.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, "path: /o/Data.fs\n").unwrap();
    let c = load(&["--config", other.to_str().unwrap()], &[(ENV_CONFIG, &file)]).unwrap();
    assert_eq!(c.storages[0].path, PathBuf::from("/o/Data.fs"));
}

#[test]
fn full_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let ca = ca.to_str().unwrap();
    let file = yaml(
        &dir,
        &format!(
            "listen: '[::]:8100'\npath: /d/Data.fs\nblob-dir: /d/blobs\nstorages:\n  - name: archive\n    path: /d/a.fs\n    \
             blob-dir: /d/ablobs\n    read-only: true\n  - {{name: scratch, path: /d/s.fs}}\nread-only: false\nmsgpack: true\n\
             invalidation-queue-size: 5000\ntransaction-timeout: 1m 30s\nmax-connections: 50\nmax-frame-bytes: 2MiB\n\
             output-buffer-bytes: 1048576\nadmin: 127.0.0.1:0\ntls-cert: {ca}\ntls-key: {ca}\ntls-client-ca: {ca}\n\
             allow: [10.0.0.0/8, 192.168.1.7]\nidentities: {{app1: rw, reporting: read-only}}\nlog-format: plain\n\
             shutdown-grace: 2.5\nready-file: /run/zeo.json\n"
        ),
    );
    let c = load(&["--config", &file], &[]).unwrap();
    assert_eq!(c.listen, HostPort { host: "::".into(), port: 8100 });
    let names: Vec<_> = c.storages.iter().map(|s| (s.name.as_str(), s.blob_dir.is_some(), s.read_only)).collect();
    assert_eq!(names, [("1", true, false), ("archive", true, true), ("scratch", false, false)]);
    assert!(c.msgpack);
    assert_eq!(c.invalidation_queue_size, 5000);
    assert_eq!(c.transaction_timeout, Some(Duration::from_secs(90)));
    assert_eq!((c.max_connections, c.max_frame_bytes, c.output_buffer_bytes), (50, 2 << 20, 1 << 20));
    assert_eq!(c.admin.as_ref().map(ToString::to_string).as_deref(), Some("127.0.0.1:0"));
    assert_eq!(c.tls.as_ref().map(|t| t.client_ca.clone()), Some(PathBuf::from(ca)));
    assert_eq!(c.allow.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "192.168.1.7/32"]);
    assert_eq!(c.identities.get("reporting"), Some(&AccessMode::ReadOnly));
    assert_eq!(c.identities.get("app1"), Some(&AccessMode::ReadWrite));
    assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
    assert_eq!(c.ready_file, Some(PathBuf::from("/run/zeo.json")));
}

#[test]
fn yaml_errors_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = yaml(&dir, "path: /d/Data.fs\nmax-conections: 5\n");
    let e = err(&["--config", &file], &[]);
    assert!(e.contains("zeo.yaml") && e.contains("unknown field `max-conections`"), "{e}");
    let file = yaml(&dir, "storages: [{name: a, path: /a.fs, blobdir: /x}]\n");
    assert!(err(&["--config", &file], &[]).contains("unknown field `blobdir`"));
    let file = yaml(&dir, "path: /d/Data.fs\ntransaction-timeout: soon\n");
    assert!(err(&["--config", &file], &[]).contains("not a duration"));
    let missing = dir.path().join("missing.yaml");
    assert!(err(&["--config", missing.to_str().unwrap()], &[]).contains("cannot read config file"));
    let file = yaml(&dir, "");
    assert!(err(&["--config", &file], &[]).contains("no storage configured"), "empty file = empty layer");
}

#[test]
fn storages_from_flags_and_env() {
    let c = load(
        &[
            "--path",
            "/d/1.fs",
            "--storage",
            "a=/d/a.fs",
            "--storage",
            "b=/d/b.fs",
            "--storage-blob-dir",
            "a=/d/ablobs",
            "--read-only-storage",
            "b",
        ],
        &[(ENV_STORAGES, "x=/d/x.fs")],
    )
    .unwrap();
    let got: Vec<_> = c.storages.iter().map(|s| (s.name.as_str(), s.blob_dir.clone(), s.read_only)).collect();
    assert_eq!(got, [("1", None, false), ("a", Some(PathBuf::from("/d/ablobs")), false), ("b", None, true)]);

    let c = load(&[], &[(ENV_STORAGES, "x=/d/x.fs, y=/d/y.fs"), (ENV_READ_ONLY, "true")]).unwrap();
    assert_eq!(c.storages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["x", "y"]);
    assert!(c.read_only && c.storages.iter().all(|s| s.read_only), "--read-only covers every storage");

    assert!(err(&["--path", "/a", "--storage-blob-dir", "nope=/b"], &[]).contains("names storage \"nope\""));
    assert!(err(&["--path", "/a", "--read-only-storage", "nope"], &[]).contains("--read-only-storage names storage"));
    assert!(err(&["--blob-dir", "/b", "--storage", "a=/a"], &[]).contains("--blob-dir needs --path"));
}

#[test]
fn storage_rules() {
    assert!(err(&[], &[]).contains("no storage configured"));
    assert!(err(&["--path", "/a", "--storage", "1=/b"], &[]).contains("configured twice"));
    assert!(err(&["--storage", "a=/x", "--storage", "b=/x"], &[]).contains("used by two storages"));
    assert!(err(&["--storage", "a b=/x"], &[]).contains("must be letters"));
    assert!(err(&["--storage", "nofile"], &[]).contains("NAME=PATH"), "clap reports the bad value");
}

#[test]
fn limits_and_durations() {
    let p = ["--path", "/a"];
    let with = |extra: &[&str]| err(&[&p[..], extra].concat(), &[]);
    assert!(with(&["--max-frame-bytes", "1000"]).contains("at least 1024"));
    assert!(with(&["--output-buffer-bytes", "10"]).contains("--output-buffer-bytes must be at least"));
    assert!(with(&["--invalidation-queue-size", "0"]).contains("at least 1"));
    assert!(with(&["--max-connections", "0"]).contains("--max-connections must be at least 1"));
    assert!(with(&["--transaction-timeout", "0"]).contains("use \"off\""));
    assert!(with(&["--transaction-timeout", "2d"]).contains("at most 24h"));
    assert!(with(&["--shutdown-grace", "2h"]).contains("at most 1h"));
    assert!(with(&["--listen", "127.0.0.1:9000", "--admin", "127.0.0.1:9000"]).contains("both"));
    let c = load(&[&p[..], &["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]].concat(), &[]).unwrap();
    assert_eq!(c.admin.map(|a| a.port), Some(0), "two port-0 listeners do not clash");
    // "off" in a higher layer switches off what a lower one set.
    let env = [(ENV_TRANSACTION_TIMEOUT, "30s"), (ENV_ADMIN, "127.0.0.1:9001")];
    let c = load(&[&p[..], &["--transaction-timeout", "off", "--admin", "off"]].concat(), &env).unwrap();
    assert_eq!((c.transaction_timeout, c.admin), (None, None));
    let c = load(&p, &[(ENV_MAX_FRAME_BYTES, "1MiB"), (ENV_SHUTDOWN_GRACE, "0")]).unwrap();
    assert_eq!((c.max_frame_bytes, c.shutdown_grace), (1 << 20, Duration::ZERO));
}

#[test]
fn env_errors_name_the_variable() {
    let e = err(&["--path", "/a"], &[(ENV_MAX_CONNECTIONS, "lots")]);
    assert!(e.starts_with("ZEO_MAX_CONNECTIONS=\"lots\""), "{e}");
    assert!(err(&["--path", "/a"], &[(ENV_READ_ONLY, "maybe")]).contains("ZEO_READ_ONLY"));
    assert!(err(&["--path", "/a"], &[(ENV_ALLOW, "10.0.0.0/8,bogus")]).contains("\"bogus\" is not a CIDR"));
    // Empty variables count as unset.
    assert_eq!(load(&["--path", "/a"], &[(ENV_LISTEN, "")]).unwrap().listen.to_string(), DEFAULT_LISTEN);
}

#[test]
fn access_settings() {
    let c = load(&["--path", "/a", "--allow", "10.0.0.0/8", "--allow", "::1"], &[(ENV_ALLOW, "1.2.3.4")]).unwrap();
    assert_eq!(c.allow.len(), 2, "the flag list replaces the env list");
    let c = load(&["--path", "/a"], &[(ENV_ALLOW, "1.2.3.4, 10.0.0.0/8")]).unwrap();
    assert_eq!(c.allow.len(), 2);
    assert!(err(&["--path", "/a", "--identity", "alice=rw"], &[]).contains("--identity needs TLS"));
    assert!(err(&["--path", "/a", "--identity", "alice=admin"], &[]).contains("not rw or ro"));
}

#[test]
fn tls_all_or_none_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.pem");
    std::fs::write(&f, "x").unwrap();
    let f = f.to_str().unwrap();
    let p = ["--path", "/a"];
    let with = |extra: &[&str]| load(&[&p[..], extra].concat(), &[]);
    assert_eq!(with(&["--tls-cert", f]).unwrap_err().to_string(), "--tls-key is required with --tls-cert");
    assert_eq!(with(&["--tls-key", f]).unwrap_err().to_string(), "--tls-cert is required with --tls-key");
    let e = with(&["--tls-cert", f, "--tls-key", f]).unwrap_err().to_string();
    assert!(e.starts_with("--tls-client-ca is required with --tls-cert (a ZEO TLS server always requires"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = with(&["--tls-cert", f, "--tls-key", missing.to_str().unwrap(), "--tls-client-ca", f]).unwrap_err();
    assert!(matches!(e, ConfigError::Unreadable { setting: "--tls-key", .. }), "{e}");
    let dir_path = dir.path().to_str().unwrap();
    let c = with(&["--tls-cert", f, "--tls-key", f, "--tls-client-ca", dir_path, "--identity", "alice=ro"]).unwrap();
    assert_eq!(c.tls.unwrap().client_ca, PathBuf::from(dir_path), "a CA directory is accepted");
    assert_eq!(c.identities.get("alice"), Some(&AccessMode::ReadOnly));
    let env = [(ENV_TLS_CERT, f), (ENV_TLS_KEY, f), (ENV_TLS_CLIENT_CA, f), (ENV_IDENTITIES, "a=rw,b=ro")];
    assert_eq!(load(&p, &env).unwrap().identities.len(), 2);
}

#[test]
fn help_and_version_exit_zero_and_bad_flags_exit_64() {
    let help = load(&["--help"], &[]).unwrap_err();
    assert_eq!(help.exit_code(), 0);
    let text = help.to_string();
    assert!(text.contains("--storage-blob-dir") && text.contains("ZEO_IDENTITIES"), "{text}");
    assert_eq!(load(&["--version"], &[]).unwrap_err().exit_code(), 0);
    assert_eq!(load(&["--bogus"], &[]).unwrap_err().exit_code(), 64);
    assert_eq!(load(&[], &[]).unwrap_err().exit_code(), 64);
}

#[test]
fn summary_lists_the_effective_settings() {
    let c = load(
        &["--path", "/d/1.fs", "--blob-dir", "/d/b", "--storage", "a=/d/a.fs", "--read-only-storage", "a"],
        &[(ENV_ALLOW, "10.0.0.0/8"), (ENV_TRANSACTION_TIMEOUT, "30s"), (ENV_MSGPACK, "1")],
    )
    .unwrap();
    let s = c.redacted_summary();
    for part in [
        "listen=127.0.0.1:8100",
        "storages=[1=/d/1.fs blobs=/d/b, a=/d/a.fs ro]",
        "protocol=M5",
        "admin=off",
        "tls=off",
        "allow=10.0.0.0/8",
        "transaction-timeout=30s",
        "shutdown-grace=10s",
    ] {
        assert!(s.contains(part), "{part:?} missing from {s}");
    }
}

#[test]
fn replication_settings_from_every_layer_and_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let file = yaml(
        &dir,
        &format!(
            "path: /y/Data.fs\nreplication-listen: 127.0.0.1:8102\nstandby-of: primary.example:8102\n\
             sync-standbys: 1\nsync-timeout: 5s\nadmin: 127.0.0.1:8110\nadmin-token-file: {}\nwait-for-supervisor: true\n\
             replication-insecure: true\n",
            token.display()
        ),
    );
    let c = load(&["--config", &file], &[]).unwrap();
    assert_eq!(c.replication_listen.as_ref().map(ToString::to_string).as_deref(), Some("127.0.0.1:8102"));
    assert_eq!(c.standby_of.as_deref(), Some("primary.example:8102"));
    assert_eq!((c.sync_standbys, c.sync_timeout), (1, Some(Duration::from_secs(5))));
    assert!(c.wait_for_supervisor);
    assert!(c.require_write_lease, "waiting for a supervisor means writing only within its grants");
    assert_eq!(c.admin_token_file.as_deref(), Some(token.as_path()));
    let tok = token.to_str().unwrap();
    assert!(
        err(&["--path", "/d", "--wait-for-supervisor", "--admin-token-file", tok], &[])
            .contains("--wait-for-supervisor (it implies --require-write-lease) needs --admin HOST:PORT")
    );
    // Environment over YAML, flags over both.
    let env = [(ENV_CONFIG, file.as_str()), (ENV_SYNC_STANDBYS, "2"), (ENV_STANDBY_NAME, "b")];
    let c = load(&["--standby-of", "other:9"], &env).unwrap();
    assert_eq!((c.sync_standbys, c.standby_name.as_str(), c.standby_of.as_deref()), (2, "b", Some("other:9")));
    // Defaults: async, strict, no token, named after the host.
    let c = load(&["--path", "/d/Data.fs"], &[]).unwrap();
    assert_eq!((c.sync_standbys, c.sync_timeout, c.admin_token_file.clone()), (0, None, None));
    assert!(!c.standby_name.is_empty());
    // Rules.
    assert!(err(&["--path", "/d", "--sync-timeout", "5s"], &[]).contains("--sync-timeout needs --sync-standbys"));
    assert!(err(&["--path", "/d", "--standby-of", "host:0"], &[]).contains("port"));
    std::fs::write(&token, "short").unwrap();
    assert!(err(&["--path", "/d", "--admin-token-file", token.to_str().unwrap()], &[]).contains("at least 16"));
    assert!(err(&["--path", "/d", "--admin-token-file", "/nonexistent/token"], &[]).contains("--admin-token-file"));
    assert!(
        err(&["--path", "/d", "--listen", "127.0.0.1:9", "--replication-listen", "127.0.0.1:9"], &[])
            .contains("--replication-listen")
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn replication_link_tls_from_every_layer_and_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let f = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "pem").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (f("a.pem"), f("a-key.pem"), f("ca.pem"));
    let tls = ["--replication-tls-cert", &cert, "--replication-tls-key", &key, "--replication-tls-ca", &ca];
    let base = [&["--path", "/d", "--replication-listen", "127.0.0.1:0"][..], &tls[..]].concat();
    let with = |extra: &[&'static str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    // Flags: all four together; peers comma-separated, trimmed.
    let c = load(&strs(&with(&["--replication-peers", "a, b"])), &[]).unwrap();
    let t = c.replication_tls.clone().unwrap();
    assert_eq!(
        (t.cert.to_str(), t.ca.to_str(), t.peers),
        (Some(cert.as_str()), Some(ca.as_str()), vec!["a".into(), "b".into()])
    );
    assert!(!c.replication_insecure);
    assert!(c.redacted_summary().contains("replication-link=tls("), "{}", c.redacted_summary());
    // Environment, and YAML (a list of peers).
    let env = [
        (ENV_REPLICATION_TLS_CERT, cert.as_str()),
        (ENV_REPLICATION_TLS_KEY, key.as_str()),
        (ENV_REPLICATION_TLS_CA, ca.as_str()),
        (ENV_REPLICATION_PEERS, "sup-a,b"),
    ];
    let c = load(&["--path", "/d", "--standby-of", "p:1"], &env).unwrap();
    assert_eq!(c.replication_tls.unwrap().peers, ["sup-a", "b"]);
    let file = yaml(
        &dir,
        &format!(
            "path: /y\nreplication-listen: 127.0.0.1:0\nreplication-tls-cert: {cert}\nreplication-tls-key: {key}\n\
             replication-tls-ca: {ca}\nreplication-peers: [a, b]\n"
        ),
    );
    assert_eq!(load(&["--config", &file], &[]).unwrap().replication_tls.unwrap().peers, ["a", "b"]);
    // A replicating server without TLS refuses to start unless told the link is a lab's.
    for args in [&["--path", "/d", "--replication-listen", "127.0.0.1:0"][..], &["--path", "/d", "--standby-of", "p:1"]]
    {
        let e = load(args, &[]).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        let e = e.to_string();
        assert!(e.contains("--replication-tls-cert") && e.contains("--replication-insecure"), "{e}");
        let insecure = [args, &["--replication-insecure"]].concat();
        assert!(load(&insecure, &[]).unwrap().replication_insecure);
        assert!(load(args, &[(ENV_REPLICATION_INSECURE, "true")]).unwrap().replication_insecure);
    }
    // Not replicating: nothing needed.
    assert!(load(&["--path", "/d"], &[]).unwrap().replication_tls.is_none());
    // Half a configuration names the missing setting.
    assert!(err(&strs(&with(&[])), &[]).contains("--replication-peers is required with --replication-tls-cert"));
    let no_ca = [
        "--path",
        "/d",
        "--replication-listen",
        "127.0.0.1:0",
        "--replication-tls-cert",
        &cert,
        "--replication-peers",
        "a",
    ];
    assert!(err(&no_ca, &[]).contains("--replication-tls-key is required"));
    // Unreadable files name the flag and the path; TLS and insecure together are a contradiction.
    let missing = [
        "--path",
        "/d",
        "--replication-listen",
        "127.0.0.1:0",
        "--replication-tls-cert",
        "/nonexistent/c.pem",
        "--replication-tls-key",
        &key,
        "--replication-tls-ca",
        &ca,
        "--replication-peers",
        "a",
    ];
    let e = err(&missing, &[]);
    assert!(e.contains("--replication-tls-cert") && e.contains("/nonexistent/c.pem"), "{e}");
    assert!(err(&strs(&with(&["--replication-peers", "a", "--replication-insecure"])), &[]).contains("contradicts"));
}

#[test]
fn write_lease_settings_from_every_layer_and_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let file = yaml(
        &dir,
        &format!(
            "path: /y/Data.fs\nadmin: 127.0.0.1:8110\nadmin-token-file: {}\nrequire-write-lease: true\nmax-write-grant: 12s\n",
            token.display()
        ),
    );
    let c = load(&["--config", &file], &[]).unwrap();
    assert!(c.require_write_lease);
    assert_eq!(c.max_write_grant, Duration::from_secs(12));
    let env = [(ENV_CONFIG, file.as_str()), (ENV_MAX_WRITE_GRANT, "20s")];
    assert_eq!(load(&[], &env).unwrap().max_write_grant, Duration::from_secs(20));
    assert_eq!(load(&["--max-write-grant", "3s"], &env).unwrap().max_write_grant, Duration::from_secs(3));
    // Defaults: no lease (a lone server, a pair without supervisors), 30 s cap.
    let c = load(&["--path", "/d/Data.fs"], &[]).unwrap();
    assert!(!c.require_write_lease);
    assert_eq!(c.max_write_grant, DEFAULT_MAX_WRITE_GRANT);
    let tok = token.to_str().unwrap();
    let c = load(
        &["--path", "/d", "--admin", "127.0.0.1:0", "--admin-token-file", tok],
        &[(ENV_REQUIRE_WRITE_LEASE, "true")],
    )
    .unwrap();
    assert!(c.require_write_lease, "from the environment");
    // Rules: grants need the admin API; the cap is bounded.
    assert!(
        err(&["--path", "/d", "--require-write-lease"], &[]).contains("--require-write-lease needs --admin-token-file")
    );
    assert!(
        err(&["--path", "/d", "--require-write-lease", "--admin-token-file", tok], &[])
            .contains("--require-write-lease needs --admin")
    );
    assert!(err(&["--path", "/d", "--max-write-grant", "0s"], &[]).contains("--max-write-grant"));
    assert!(err(&["--path", "/d", "--max-write-grant", "11m"], &[]).contains("--max-write-grant"));
    assert!(err(&["--path", "/d"], &[(ENV_REQUIRE_WRITE_LEASE, "maybe")]).contains(ENV_REQUIRE_WRITE_LEASE));
}

#[test]
fn listener_bounds_from_every_layer_and_their_rules() {
    let p = ["--path", "/a"];
    let c = load(&p, &[]).unwrap();
    assert_eq!(c.register_timeout, DEFAULT_REGISTER_TIMEOUT);
    assert_eq!((c.preauth_frame_bytes, c.preauth_input_bytes), (64 << 10, 32 << 20));
    assert_eq!((c.admin_allow.clone(), c.admin_max_connections), (None, 128));
    assert_eq!(c.admin_head_timeout, Duration::from_secs(5));
    // The pre-auth defaults follow a small full frame cap and a big pre-auth cap.
    let c = load(&[&p[..], &["--max-frame-bytes", "4KiB"]].concat(), &[]).unwrap();
    assert_eq!(c.preauth_frame_bytes, 4 << 10);
    let c = load(&[&p[..], &["--preauth-frame-bytes", "48MiB"]].concat(), &[]).unwrap();
    assert_eq!(c.preauth_input_bytes, 48 << 20);

    let dir = tempfile::tempdir().unwrap();
    let file = yaml(&dir, "path: /y\nregister-timeout: 3s\npreauth-frame-bytes: 8KiB\nadmin-allow: [10.1.0.0/16]\n");
    let env = [
        (ENV_CONFIG, file.as_str()),
        (ENV_PREAUTH_INPUT_BYTES, "1MiB"),
        (ENV_ADMIN_MAX_CONNECTIONS, "9"),
        (ENV_ADMIN_HEAD_TIMEOUT, "2s"),
        (ENV_REGISTER_TIMEOUT, "4s"),
    ];
    let c = load(&["--register-timeout", "1s", "--admin-allow", "127.0.0.1"], &env).unwrap();
    assert_eq!(c.register_timeout, Duration::from_secs(1), "flag beats env beats yaml");
    assert_eq!((c.preauth_frame_bytes, c.preauth_input_bytes), (8 << 10, 1 << 20));
    assert_eq!(c.admin_allow.unwrap().iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1/32"]);
    assert_eq!((c.admin_max_connections, c.admin_head_timeout), (9, Duration::from_secs(2)));
    let c = load(&[], &[(ENV_CONFIG, file.as_str())]).unwrap();
    assert_eq!(c.admin_allow.unwrap().len(), 1, "yaml list");

    // The replication port's allow-list: any address by default; flag over env over YAML.
    assert!(load(&["--path", "/a"], &[]).unwrap().replication_allow.is_empty());
    let file = yaml(&dir, "path: /y\nreplication-allow: [10.2.0.0/16]\n");
    let nets = |c: Config| c.replication_allow.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(nets(load(&[], &[(ENV_CONFIG, file.as_str())]).unwrap()), ["10.2.0.0/16"]);
    let env = [(ENV_CONFIG, file.as_str()), (ENV_REPLICATION_ALLOW, "10.3.0.0/16,10.4.0.1")];
    assert_eq!(nets(load(&[], &env).unwrap()), ["10.3.0.0/16", "10.4.0.1/32"]);
    assert_eq!(nets(load(&["--replication-allow", "10.5.0.0/16"], &env).unwrap()), ["10.5.0.0/16"]);
    assert!(err(&["--path", "/a", "--replication-allow", "nope"], &[]).contains("--replication-allow"));

    let with = |extra: &[&str]| err(&[&p[..], extra].concat(), &[]);
    assert!(with(&["--register-timeout", "0"]).contains("--register-timeout must be positive"));
    assert!(with(&["--register-timeout", "1h"]).contains("at most 10m"));
    assert!(with(&["--admin-head-timeout", "0"]).contains("--admin-head-timeout must be positive"));
    assert!(with(&["--preauth-frame-bytes", "100"]).contains("--preauth-frame-bytes must be at least 1KiB"));
    let over = with(&["--max-frame-bytes", "1MiB", "--preauth-frame-bytes", "2MiB"]);
    assert!(over.contains("at most --max-frame-bytes"), "{over}");
    let small = with(&["--preauth-frame-bytes", "64KiB", "--preauth-input-bytes", "32KiB"]);
    assert!(small.contains("--preauth-input-bytes must be at least --preauth-frame-bytes"), "{small}");
    assert!(with(&["--admin-max-connections", "0"]).contains("--admin-max-connections must be at least 1"));
    assert!(with(&["--admin-allow", "bogus"]).contains("bogus"));
    let e = err(&p, &[(ENV_REGISTER_TIMEOUT, "soon")]);
    assert!(e.starts_with("ZEO_REGISTER_TIMEOUT=\"soon\""), "{e}");
}

#[test]
fn client_conflict_resolution_from_flag_env_or_yaml() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        !load(&["--path", "/d/Data.fs"], &[]).unwrap().client_conflict_resolution,
        "the server resolves by default"
    );
    assert!(load(&["--path", "/d/Data.fs", "--client-conflict-resolution"], &[]).unwrap().client_conflict_resolution);
    let env = [(ENV_CLIENT_CONFLICT_RESOLUTION, "true")];
    assert!(load(&["--path", "/d/Data.fs"], &env).unwrap().client_conflict_resolution);
    let file = yaml(&dir, "path: /y/Data.fs\nclient-conflict-resolution: true\n");
    assert!(load(&["--config", &file], &[]).unwrap().client_conflict_resolution);
    assert!(
        err(&["--path", "/d/Data.fs"], &[(ENV_CLIENT_CONFLICT_RESOLUTION, "maybe")])
            .contains("ZEO_CLIENT_CONFLICT_RESOLUTION")
    );
}
