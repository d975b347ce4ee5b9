//! Layering, defaults and the rules, on settings parsed from a command line as the binary parses it.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::*;
use crate::lease::LeaseBackend;
use crate::mover::AddressBackend;

/// The settings as the binary's command line flattens them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

fn parse(args: &[&str]) -> Settings {
    Cli::try_parse_from(std::iter::once("zeo-supervisor").chain(args.iter().copied())).unwrap().settings
}

const MINIMAL: [&str; 8] = [
    "--identity",
    "a",
    "--replication-addr",
    "a:9000",
    "--server-admin",
    "http://127.0.0.1:8101",
    "--server-zeo",
    "127.0.0.1:8100",
];

fn config(extra: &[&str]) -> Result<Config, ConfigError> {
    let args: Vec<&str> = MINIMAL.iter().chain(extra).copied().collect();
    Config::from_settings(parse(&args))
}

#[test]
fn settings_are_consistent_flags() {
    Cli::command().debug_assert();
}

#[test]
fn flags_override_the_yaml_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, "identity: a\nreplication_addr: a:9000\ntick: 300ms\nfailure_threshold: 5\n").unwrap();
    let settings =
        parse(&["--config", path.to_str().unwrap(), "--failure-threshold", "2", "--", "zeo-server", "--listen", "x"]);
    let s = settings.layered().unwrap();
    assert_eq!(
        (s.identity.as_deref(), s.tick, s.failure_threshold),
        (Some("a"), Some(Duration::from_millis(300)), Some(2))
    );
    assert_eq!(s.exec.unwrap(), ["zeo-server", "--listen", "x"]);
    std::fs::write(&path, "identiy: a\n").unwrap();
    let settings = parse(&["--config", path.to_str().unwrap()]);
    assert!(settings.layered().is_err(), "unknown keys are refused");
}

#[test]
fn backends_are_named_alike_in_flags_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, "lease_backend: file\nlease_file: /run/lease.json\naddress: vip\n").unwrap();
    let c = config(&["--config", path.to_str().unwrap(), "--vip", "198.51.100.10/24", "--vip-interface", "v0"]);
    let c = c.unwrap();
    assert_eq!((c.lease.backend, c.address.backend), (LeaseBackend::File, AddressBackend::Vip));
    let c = config(&["--lease-backend", "static", "--address", "none"]).unwrap();
    assert_eq!((c.lease.backend, c.address.backend), (LeaseBackend::Static, AddressBackend::None));
    assert!(Cli::try_parse_from(["zeo-supervisor", "--lease-backend", "zookeeper"]).is_err());
    std::fs::write(&path, "address: carrier-pigeon\n").unwrap();
    assert!(matches!(config(&["--config", path.to_str().unwrap()]), Err(ConfigError::Yaml { .. })));
}

#[test]
fn defaults_and_peers_without_ourselves() {
    let c =
        config(&["--peer", "a=http://a:8101=a:9000,b=http://b:8101=b:9000", "--peer-targets", "pod-a,pod-b"]).unwrap();
    let b = PeerSettings { identity: "b".into(), admin_url: "http://b:8101".into(), replication_addr: "b:9000".into() };
    assert_eq!(c.peers, [b]);
    assert_eq!((c.tick, c.probe_timeout), (Duration::from_millis(200), Duration::from_millis(500)));
    assert_eq!((c.listen.as_str(), c.storage.as_str()), ("127.0.0.1:8190", "1"));
    assert_eq!((c.lease.name.as_str(), c.lease.timeout), ("zeo-primary", c.decide.retry_period));
    assert_eq!(c.decide.peer_fresh, Duration::from_secs(3), "renew deadline 4 s, half the lease 3 s");
    let c = config(&["--own-target", "pod-a", "--peer-targets", "pod-a,pod-b"]).unwrap();
    assert_eq!(c.address.peer_targets, ["pod-b"]);
    assert!(matches!(config(&["--peer", "b=http://b:8101"]), Err(ConfigError::Peer(_))));
}

#[test]
fn every_rule_is_checked_before_anything_starts() {
    let missing = Config::from_settings(parse(&["--identity", "a"])).unwrap_err();
    assert!(matches!(missing, ConfigError::Missing("replication-addr")), "{missing}");
    assert!(matches!(config(&["--tick", "5s"]), Err(ConfigError::Tick(_))));
    assert!(matches!(config(&["--renew-deadline", "6s"]), Err(ConfigError::Timing(_))));
    let both = config(&["--kill-command", "true", "--kill-container", "zeo-a"]);
    assert!(matches!(both, Err(ConfigError::TwoKillers)));
    assert!(matches!(config(&["--lease-backend", "file"]), Err(ConfigError::Lease(_))));
    let err = config(&["--address", "local"]).unwrap_err();
    assert!(err.to_string().contains("--service-address"), "{err}");
}

#[test]
fn admin_port_bounds_from_flags_and_the_file() {
    let c = config(&[]).unwrap();
    assert!(c.allow.is_open(), "everyone by default");
    assert_eq!((c.max_connections, c.head_timeout), (64, Duration::from_secs(5)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, "allow: [10.0.0.0/8]\nmax_connections: 7\nhead_timeout: 2s\n").unwrap();
    let c = config(&["--config", path.to_str().unwrap(), "--allow", "192.0.2.1,198.51.100.0/24"]).unwrap();
    let nets: Vec<String> = c.allow.nets().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["192.0.2.1/32", "198.51.100.0/24"], "the flag list replaces the file's");
    assert_eq!((c.max_connections, c.head_timeout), (7, Duration::from_secs(2)));
    assert!(matches!(config(&["--allow", "10.0.0.0/33"]), Err(ConfigError::Allow(_))));
    assert!(matches!(config(&["--max-connections", "0"]), Err(ConfigError::MaxConnections)));
    assert!(matches!(config(&["--head-timeout", "1h"]), Err(ConfigError::HeadTimeout(_))));
}
