//! The zeo.conf parser and its mapping: every construct, every refusal with its line.

use std::path::{Path, PathBuf};

use super::parse::{self, Section};
use super::*;
use crate::config::{Config, LogLevel};

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Section, String> {
    parse::parse_text(Path::new("/etc/zeo.conf"), text, &no_env).map_err(|e| format!("{}: {}", e.loc, e.message))
}

/// The error text of a file that must not parse.
fn syntax_error(text: &str) -> String {
    parse(text).expect_err("the text must be refused")
}

/// Maps text (through the parser) as `/etc/zeo.conf`.
fn mapped(text: &str) -> Result<ZeoConf, String> {
    let root = parse(text)?;
    map(&root, Path::new("/etc/zeo.conf")).map_err(|e| e.to_string())
}

fn refused(text: &str) -> String {
    mapped(text).expect_err("the file must be refused")
}

const ZEO: &str = "<zeo>\n  address 8100\n</zeo>\n";

#[test]
fn sections_keys_comments_and_case() {
    let root = parse(
        "# a comment\n\n<ZEO>\n  Address 127.0.0.1:8100 # not a comment\n  read-only   off\n</zeo>\n<filestorage Main/>\n",
    )
    .unwrap();
    let zeo = &root.sections[0];
    assert_eq!((zeo.kind.as_str(), zeo.name.as_deref()), ("zeo", None));
    assert_eq!(zeo.keys[0].name, "address");
    assert_eq!(zeo.keys[0].value, "127.0.0.1:8100 # not a comment");
    assert_eq!(zeo.keys[0].loc.line, 4);
    assert_eq!(zeo.keys[1].value, "off");
    let empty = &root.sections[1];
    assert_eq!((empty.kind.as_str(), empty.name.as_deref()), ("filestorage", Some("main")));
    assert!(empty.keys.is_empty());
}

#[test]
fn defines_and_substitution_follow_zconfig() {
    let env = |name: &str| (name == "ZEO_PORT").then(|| "8111".to_owned());
    let text = "%define INSTANCE /app\n%define data ${instance}/var\n<zeo>\n  address :$(ZEO_PORT)\n  \
                pid-filename $DATA/zeo.pid\n  x a$$b\n</zeo>\n%define INSTANCE /app\n";
    let root = parse::parse_text(Path::new("/etc/zeo.conf"), text, &env).unwrap();
    let keys = &root.sections[0].keys;
    assert_eq!(keys[0].value, ":8111");
    assert_eq!(keys[1].value, "/app/var/zeo.pid");
    assert_eq!(keys[2].value, "a$b");
}

#[test]
fn substitution_errors_name_the_line() {
    assert_eq!(
        syntax_error("<zeo>\n address $PORT\n</zeo>"),
        "/etc/zeo.conf:2: $PORT is not defined (define it with %define PORT VALUE before this line)"
    );
    assert_eq!(syntax_error("\n%define A $(NOPE)"), "/etc/zeo.conf:2: $(NOPE): environment variable NOPE is not set");
    assert!(syntax_error("<zeo>\n x a$\n</zeo>").starts_with("/etc/zeo.conf:2: illegal lone '$'"));
    assert!(syntax_error("<zeo>\n x a$-\n</zeo>").starts_with("/etc/zeo.conf:2: '$' not followed by"));
    assert!(syntax_error("<zeo>\n x ${A\n</zeo>").starts_with("/etc/zeo.conf:2: '${A' not followed by '}'"));
    assert!(syntax_error("<zeo>\n x $(\n</zeo>").starts_with("/etc/zeo.conf:2: '$(' not followed by a name"));
    assert_eq!(syntax_error("%define A 1\n%define a 2"), "/etc/zeo.conf:2: cannot redefine \"a\"");
    assert_eq!(syntax_error("%define 1x 2"), "/etc/zeo.conf:1: not a legal substitution name: \"1x\"");
    assert_eq!(syntax_error("%define"), "/etc/zeo.conf:1: missing argument to %define");
}

#[test]
fn directives_and_structure_errors_name_the_line() {
    assert!(
        syntax_error("\n%import tempstorage").starts_with("/etc/zeo.conf:2: %import tempstorage: zeo-server cannot")
    );
    assert_eq!(syntax_error("%frobnicate x"), "/etc/zeo.conf:1: unknown directive: %frobnicate");
    assert_eq!(syntax_error("<zeo\n"), "/etc/zeo.conf:1: malformed section start");
    assert_eq!(syntax_error("<a b c>"), "/etc/zeo.conf:1: malformed section header <a b c>");
    assert_eq!(syntax_error("</zeo>"), "/etc/zeo.conf:1: unexpected section end");
    assert_eq!(syntax_error("<zeo>\n</zeo"), "/etc/zeo.conf:2: malformed section end");
    assert_eq!(syntax_error("<zeo>\n</eventlog>"), "/etc/zeo.conf:2: unbalanced section end: </eventlog> closes <zeo>");
    assert_eq!(syntax_error("<zeo>\n a 1\n"), "/etc/zeo.conf:2: unclosed section <zeo> (opened on line 1)");
    assert_eq!(syntax_error("(x) 1"), "/etc/zeo.conf:1: malformed configuration data");
    assert!(syntax_error("%include http://example.invalid/zeo.conf").contains("files only, not URLs"));
}

#[test]
fn include_is_relative_to_the_including_file_and_shares_defines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("parts")).unwrap();
    std::fs::write(dir.path().join("parts/storage.conf"), "<filestorage 1>\n  path $DATA/Data.fs\n</filestorage>\n")
        .unwrap();
    std::fs::write(dir.path().join("loop.conf"), "%include loop.conf\n").unwrap();
    let main = dir.path().join("zeo.conf");
    std::fs::write(&main, format!("%define DATA /srv\n{ZEO}%include parts/storage.conf\n")).unwrap();
    let z = load(&main, &no_env).unwrap();
    assert_eq!(z.layer.path, Some(PathBuf::from("/srv/Data.fs")));

    let missing = dir.path().join("missing.conf");
    std::fs::write(&missing, "\n%include nowhere.conf\n").unwrap();
    let e = load(&missing, &no_env).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:2: cannot read {}", missing.display(), dir.path().join("nowhere.conf").display())),
        "{e}"
    );
    let e = load(&dir.path().join("loop.conf"), &no_env).unwrap_err().to_string();
    assert!(e.contains("nested more than 16 deep"), "{e}");
}

#[test]
fn plone_recipe_shape_maps_onto_the_settings() {
    let z = mapped(
        "%define INSTANCE /srv/plone/parts/zeoserver\n\n<zeo>\n  address 8100\n  read-only false\n  \
         invalidation-queue-size 100\n  pid-filename /srv/plone/var/zeoserver.pid\n  \n  \n</zeo>\n\n\
         <blobstorage 1>\n  blob-dir /srv/plone/var/blobstorage\n  <filestorage 1>\n    \
         path /srv/plone/var/filestorage/Data.fs\n  </filestorage>\n</blobstorage>\n\n<eventlog>\n  level info\n  \
         <logfile>\n      path /srv/plone/var/log/zeoserver.log\n      format %(asctime)s %(message)s\n    \
         </logfile>\n</eventlog>\n\n<runner>\n  program $INSTANCE/bin/runzeo\n  daemon true\n  exit-codes 0, 2\n\
         </runner>\n",
    )
    .unwrap();
    let l = &z.layer;
    assert_eq!(l.listen, Some(HostPort { host: "0.0.0.0".into(), port: 8100 }));
    assert_eq!(l.read_only, Some(false));
    assert_eq!(l.invalidation_queue_size, Some(100));
    assert_eq!(l.pid_file, Some(PathBuf::from("/srv/plone/var/zeoserver.pid")));
    assert_eq!(l.path, Some(PathBuf::from("/srv/plone/var/filestorage/Data.fs")));
    assert_eq!(l.blob_dir, Some(PathBuf::from("/srv/plone/var/blobstorage")));
    assert_eq!(l.log_file, Some(PathBuf::from("/srv/plone/var/log/zeoserver.log")));
    assert_eq!(l.log_level, Some(LogLevel::Info));
    assert_eq!(z.notes.len(), 2, "{:?}", z.notes);
    assert!(z.notes[0].starts_with("/etc/zeo.conf:23: format ignored"), "{:?}", z.notes);
    assert!(z.notes[1].starts_with("/etc/zeo.conf:27: <runner> ignored"), "{:?}", z.notes);
}

#[test]
fn zeo_keys_ssl_and_named_storages() {
    let z = mapped(
        "<zeo>\n address [::1]:9000\n transaction-timeout 30\n client-conflict-resolution on\n msgpack yes\n \
         <ssl>\n  certificate /tls/server.pem\n  authenticate /tls/clients\n </ssl>\n</zeo>\n\
         <filestorage Archive>\n path /d/archive.fs\n read-only true\n blob-dir\n create false\n pack-gc true\n \
         pack-keep-old true\n</filestorage>\n<filestorage 1>\n path /d/Data.fs\n read-only true\n</filestorage>\n",
    )
    .unwrap();
    let l = &z.layer;
    assert_eq!(l.listen, Some(HostPort { host: "::1".into(), port: 9000 }));
    assert_eq!(l.transaction_timeout, Some(Toggle(Some(Seconds(Duration::from_secs(30))))));
    assert_eq!((l.client_conflict_resolution, l.msgpack), (Some(true), Some(true)));
    assert_eq!(l.tls_cert, Some(PathBuf::from("/tls/server.pem")));
    assert_eq!(l.tls_key, Some(PathBuf::from("/tls/server.pem")), "no key: the certificate file holds it");
    assert_eq!(l.tls_client_ca, Some(PathBuf::from("/tls/clients")));
    let others = l.storages.as_ref().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!((others[0].name.as_str(), others[0].read_only, &others[0].blob_dir), ("archive", true, &None));
    assert_eq!(l.read_only_storages, Some(vec!["1".to_owned()]));
}

#[test]
fn values_follow_zconfig_datatypes() {
    assert_eq!(byte_size("10MB"), Ok(10 << 20));
    assert_eq!(byte_size("300kb"), Ok(300 << 10));
    assert_eq!(byte_size("2GB"), Ok(2 << 30));
    assert_eq!(byte_size("4096"), Ok(4096));
    assert!(byte_size("10 TB").is_err());
    assert_eq!(address(":8100"), Ok(HostPort { host: "0.0.0.0".into(), port: 8100 }));
    assert_eq!(address("localhost:8100"), Ok(HostPort { host: "localhost".into(), port: 8100 }));
    assert!(address("/var/zeo.sock").unwrap_err().contains("Unix socket path"));
    assert_eq!(
        refused(&ZEO.replace("8100", "8100\n read-only maybe")),
        "/etc/zeo.conf:3: read-only \"maybe\": not a boolean (true/false, yes/no, on/off)"
    );
    assert_eq!(
        refused(&ZEO.replace("8100", "8100\n invalidation-queue-size 0")),
        "/etc/zeo.conf:3: invalidation-queue-size must be at least 1"
    );
    assert!(
        refused(&ZEO.replace("8100", "8100\n transaction-timeout 0"))
            .starts_with("/etc/zeo.conf:3: transaction-timeout must be")
    );
    assert!(
        refused(&ZEO.replace("8100", "8100\n transaction-timeout 90000"))
            .starts_with("/etc/zeo.conf:3: transaction-timeout must be")
    );
    assert_eq!(
        refused(&ZEO.replace("8100", "8100\n invalidation-queue-size -1")),
        "/etc/zeo.conf:3: invalidation-queue-size \"-1\": not a non-negative integer"
    );
}

#[test]
fn eventlog_levels_take_the_stricter() {
    let z = mapped(&format!(
        "{ZEO}<eventlog>\n level debug\n <logfile>\n  path STDERR\n  level WARN\n </logfile>\n</eventlog>\n"
    ))
    .unwrap();
    assert_eq!((z.layer.log_level, z.layer.log_file.as_ref()), (Some(LogLevel::Warn), None));
    let z = mapped(&format!("{ZEO}<eventlog>\n level blather\n <logfile>\n  path STDOUT\n </logfile>\n</eventlog>\n"))
        .unwrap();
    assert_eq!(z.layer.log_level, Some(LogLevel::Debug));
    assert!(z.notes[0].contains("logging to stderr"), "{:?}", z.notes);
    assert_eq!(
        refused(&format!("{ZEO}<eventlog>\n level loud\n</eventlog>\n")),
        "/etc/zeo.conf:5: level \"loud\": not a log level (critical, error, warn, info, debug, trace, all)"
    );
}

/// One test per class of refusal: each names the file, the line and the key.
#[test]
fn unsupported_settings_are_refused_with_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "<zeo>\n address 8100\n invalidation-age 3600\n</zeo>",
            "/etc/zeo.conf:3: invalidation-age (in <zeo>) is not supported: zeo-server answers reconnecting clients",
        ),
        ("<zeo>\n address /var/zeo.sock\n</zeo>", "/etc/zeo.conf:2: address: \"/var/zeo.sock\" is a Unix socket path"),
        (
            "<zeo>\n address 8100\n monitor-address 8101\n</zeo>",
            "/etc/zeo.conf:3: monitor-address (in <zeo>) is not supported",
        ),
        (
            "<zeo>\n address 8100\n frobnicate 1\n</zeo>",
            "/etc/zeo.conf:3: unknown or unsupported key frobnicate in <zeo>",
        ),
        (
            "<zeo>\n address 8100\n address 8101\n</zeo>",
            "/etc/zeo.conf:3: address is set twice in <zeo> (first on line 2)",
        ),
        ("<zeo>\n read-only true\n</zeo>", "/etc/zeo.conf:1: <zeo> needs address"),
        ("<filestorage 1>\n path /d/Data.fs\n</filestorage>", "/etc/zeo.conf: no <zeo> section"),
        (
            "<zeo>\n address 8100\n <ssl>\n  certificate /c.pem\n  authenticate /ca.pem\n  password-function m.f\n </ssl>\n</zeo>",
            "/etc/zeo.conf:6: password-function (in <ssl>) is not supported",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /d/Data.fs\n quota 10MB\n</filestorage>",
            "/etc/zeo.conf:6: quota (in <filestorage>) is not supported: zeo-server has no storage quota",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /d/Data.fs\n quota lots\n</filestorage>",
            "/etc/zeo.conf:6: quota: \"lots\" is not a byte size",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /d/Data.fs\n create true\n</filestorage>",
            "/etc/zeo.conf:6: create true (truncate the storage at every start) is not supported",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /d/Data.fs\n pack-gc false\n</filestorage>",
            "/etc/zeo.conf:6: pack-gc false is not supported",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /d/Data.fs\n pack-keep-old off\n</filestorage>",
            "/etc/zeo.conf:6: pack-keep-old false is not supported",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage>\n path /d/Data.fs\n</filestorage>",
            "/etc/zeo.conf:4: <filestorage> needs a name",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n blob-dir /b\n</filestorage>",
            "/etc/zeo.conf:4: <filestorage> needs path",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path /a.fs\n</filestorage>\n<filestorage 1>\n path /b.fs\n</filestorage>",
            "/etc/zeo.conf:7: storage \"1\" is configured twice",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<mappingstorage 1>\n</mappingstorage>",
            "/etc/zeo.conf:4: <mappingstorage> is not supported: zeo-server serves FileStorage",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<blobstorage 1>\n blob-dir /b\n</blobstorage>",
            "/etc/zeo.conf:4: <blobstorage> needs a <filestorage> section inside",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<blobstorage 1>\n blob-dir /b\n <filestorage 1>\n  path /a.fs\n  blob-dir /c\n </filestorage>\n</blobstorage>",
            "/etc/zeo.conf:6: both <blobstorage> and the <filestorage> inside it name a blob-dir",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<eventlog>\n <logfile>\n  path /l.log\n  max-size 10MB\n </logfile>\n</eventlog>",
            "/etc/zeo.conf:7: max-size (in <logfile>) is not supported: zeo-server does not rotate its log",
        ),
        (
            "<zeo>\n address 8100\n</zeo>\n<eventlog>\n <syslog>\n </syslog>\n</eventlog>",
            "/etc/zeo.conf:5: <syslog> is not supported",
        ),
        ("address 8100\n", "/etc/zeo.conf:1: address is outside any section"),
        (
            "<zeo>\n address 8100\n</zeo>\n<filestorage 1>\n path ~/Data.fs\n</filestorage>",
            "/etc/zeo.conf:5: path ~/Data.fs: zeo-server does not expand ~",
        ),
        ("<zeo>\n address 8100\n</zeo>\n<zodb>\n</zodb>", "/etc/zeo.conf:4: unknown or unsupported section <zodb>"),
    ];
    for (text, expected) in cases {
        let e = refused(text);
        assert!(e.starts_with(expected), "for\n{text}\ngot: {e}\nexpected: {expected}");
    }
}

fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
    let argv = std::iter::once("zeo-server").chain(args.iter().copied());
    let lookup = |var: &str| env.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_owned());
    Config::from_sources(argv, &lookup).map_err(|e| e.to_string())
}

#[test]
fn flags_and_environment_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let file = dir.path().join("zeo.conf");
    std::fs::write(
        &file,
        format!(
            "<zeo>\n address 127.0.0.1:8100\n invalidation-queue-size 7\n pid-filename {d}/zeo.pid\n</zeo>\n\
             <filestorage 1>\n path {d}/Data.fs\n blob-dir {d}/blobs\n</filestorage>\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c = config(&["-C", f], &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8100");
    assert_eq!(c.invalidation_queue_size, 7);
    assert_eq!(c.pid_file, Some(dir.path().join("zeo.pid")));
    assert_eq!(c.storages[0].blob_dir, Some(dir.path().join("blobs")));
    assert_eq!(c.zeo_conf.as_deref(), Some(file.as_path()));

    let c =
        config(&["--listen", "127.0.0.1:9100"], &[("ZEO_ZEO_CONF", f), ("ZEO_INVALIDATION_QUEUE_SIZE", "9")]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(c.invalidation_queue_size, 9);

    let yaml = dir.path().join("zeo.yaml");
    std::fs::write(&yaml, "listen: 127.0.0.1:1\n").unwrap();
    let e = config(&["--zeo-conf", f, "--config", yaml.to_str().unwrap()], &[]).unwrap_err();
    assert!(e.contains("exclude each other"), "{e}");
}

#[test]
fn pid_and_log_files_need_an_existing_directory() {
    let e = config(&["--path", "/tmp/x.fs", "--pid-file", "/nonexistent-dir/zeo.pid"], &[]).unwrap_err();
    assert_eq!(e, "--pid-file /nonexistent-dir/zeo.pid: directory /nonexistent-dir does not exist");
    let e = config(&["--path", "/tmp/x.fs"], &[("ZEO_LOG_FILE", "/nonexistent-dir/zeo.log")]).unwrap_err();
    assert_eq!(e, "--log-file /nonexistent-dir/zeo.log: directory /nonexistent-dir does not exist");
    let c = config(&["--path", "/tmp/x.fs", "--log-level", "debug"], &[]).unwrap();
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(config(&["--path", "/tmp/x.fs", "--log-level", "loud"], &[]).is_err());
}
