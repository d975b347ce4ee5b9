//! A real `etcd` on free loopback ports in a temp dir, killed on drop.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::free_port;

pub struct EtcdProcess {
    child: Child,
    client_port: u16,
    _dir: tempfile::TempDir,
}

impl EtcdProcess {
    /// Starts etcd and waits for its "ready to serve" log line. The tests that call this are
    /// `#[ignore]`d ("needs etcd: ..."), so a plain `cargo test` counts them as
    /// ignored; one that runs them anyway (`--include-ignored`, as scripts/test does) without an
    /// etcd binary fails here, naming the package: never a silent pass.
    pub async fn start() -> EtcdProcess {
        let bin = which("etcd").unwrap_or_else(|()| panic!("no `etcd` binary on PATH (apt-get install etcd-server)"));
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut child = Command::new(bin)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("e1={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ready to serve client requests") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "etcd did not become ready");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        EtcdProcess { child, client_port, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).ok_or(())
}
