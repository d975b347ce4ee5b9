//! The service address as a virtual IP: `ip addr replace` on an interface, then unsolicited
//! (gratuitous) ARP with iputils `arping -U` so neighbours update their caches at once.
//! Releasing deletes the address. Needs CAP_NET_ADMIN (and CAP_NET_RAW for arping).

use async_trait::async_trait;
use tokio::process::Command;

use super::{AddressMover, MoveError};

/// Gratuitous ARPs per claim (IPaddr2 sends 5; keepalived 5 per burst).
const ARP_COUNT: u32 = 3;

pub struct VipMover {
    /// Address with prefix length, e.g. `198.51.100.10/24`.
    cidr: String,
    interface: String,
    /// Prepended to every command (tests: `ip netns exec NS`).
    prefix: Vec<String>,
}

impl VipMover {
    pub fn new(cidr: String, interface: String) -> VipMover {
        VipMover { cidr, interface, prefix: Vec::new() }
    }

    /// Runs the commands through `prefix` (e.g. `["ip", "netns", "exec", "ns1"]`).
    pub fn with_prefix(mut self, prefix: Vec<String>) -> VipMover {
        self.prefix = prefix;
        self
    }

    fn ip(&self) -> &str {
        self.cidr.split('/').next().unwrap_or(&self.cidr)
    }

    async fn run(&self, args: &[&str]) -> Result<(), MoveError> {
        let argv: Vec<&str> = self.prefix.iter().map(String::as_str).chain(args.iter().copied()).collect();
        let command = argv.join(" ");
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .await
            .map_err(|e| MoveError::Command { command: command.clone(), stderr: e.to_string() })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MoveError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
        }
    }
}

#[async_trait]
impl AddressMover for VipMover {
    async fn claim(&self) -> Result<(), MoveError> {
        self.run(&["ip", "addr", "replace", &self.cidr, "dev", &self.interface]).await?;
        // The ARP burst takes ARP_COUNT - 1 seconds; the address is already ours, so it runs
        // in the background instead of delaying the rest of the failover.
        let argv: Vec<String> = self
            .prefix
            .iter()
            .cloned()
            .chain(["arping", "-U", "-c", &ARP_COUNT.to_string(), "-I", &self.interface, self.ip()].map(String::from))
            .collect();
        let vip = self.cidr.clone();
        tokio::spawn(async move {
            // -U: unsolicited ARP (sender = target = the VIP), the form every neighbour accepts.
            match Command::new(&argv[0]).args(&argv[1..]).output().await {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    tracing::warn!(%vip, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "gratuitous ARP failed")
                }
                // Without arping the address still moves; neighbours learn it when their entry expires.
                Err(e) => tracing::warn!(%vip, error = %e, "arping not runnable: no gratuitous ARP sent"),
            }
        });
        Ok(())
    }

    async fn release(&self) -> Result<(), MoveError> {
        match self.run(&["ip", "addr", "del", &self.cidr, "dev", &self.interface]).await {
            // The address was not there: released all the same.
            Err(MoveError::Command { stderr, .. })
                if stderr.contains("Address not found") || stderr.contains("Cannot assign requested address") =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command as StdCommand;

    use super::*;

    /// Two namespaces joined by a veth pair; removed on drop.
    struct Netns {
        a: String,
        b: String,
    }

    fn sh(args: &[&str]) -> std::process::Output {
        StdCommand::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]))
    }

    impl Netns {
        /// Panics when namespaces cannot be made: the test using this is `#[ignore]`d for that
        /// reason, so reaching here without root or iproute2 is a broken setup, not a skip.
        fn create() -> Netns {
            let tag = std::process::id();
            let n = Netns { a: format!("zsv-a-{tag}"), b: format!("zsv-b-{tag}") };
            let steps: [&[&str]; 7] = [
                &["ip", "netns", "add", &n.a],
                &["ip", "netns", "add", &n.b],
                &["ip", "-n", &n.a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &n.b],
                &["ip", "-n", &n.a, "link", "set", "v0", "up"],
                &["ip", "-n", &n.b, "link", "set", "v1", "up"],
                &["ip", "-n", &n.b, "addr", "add", "198.51.100.2/24", "dev", "v1"],
                // Let b learn neighbours from unsolicited ARP, so the test can see it arrive.
                &["ip", "netns", "exec", &n.b, "sysctl", "-qw", "net.ipv4.conf.v1.arp_accept=1"],
            ];
            for step in steps {
                let out = sh(step);
                assert!(
                    out.status.success(),
                    "{step:?} (network namespaces need root and iproute2): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            n
        }

        fn addrs_a(&self) -> String {
            String::from_utf8(sh(&["ip", "-n", &self.a, "-4", "addr", "show", "dev", "v0"]).stdout).unwrap()
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            sh(&["ip", "netns", "del", &self.a]);
            sh(&["ip", "netns", "del", &self.b]);
        }
    }

    #[tokio::test]
    #[ignore = "needs root, iproute2 and arping (apt-get install iproute2 iputils-arping); run with scripts/test or cargo test -- --include-ignored"]
    async fn claim_adds_the_vip_and_announces_it_release_removes_it() {
        // The mover runs arping by name; without it the announcement is not checked at all.
        let on_path = |name: &str| {
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        };
        assert!(on_path("arping"), "no `arping` on PATH (apt-get install iputils-arping)");
        let ns = Netns::create();
        let mover = VipMover::new("198.51.100.10/24".into(), "v0".into()).with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.a.clone(),
        ]);
        mover.claim().await.unwrap();
        mover.claim().await.unwrap();
        assert!(ns.addrs_a().contains("198.51.100.10/24"), "{}", ns.addrs_a());
        let mac = String::from_utf8(sh(&["ip", "-n", &ns.a, "link", "show", "v0"]).stdout).unwrap();
        let mac = mac.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().to_string();
        // Wait for the announcement to arrive at the neighbour (it is sent in the background).
        let arrived = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let neigh =
                    String::from_utf8(sh(&["ip", "-n", &ns.b, "neigh", "show", "198.51.100.10"]).stdout).unwrap();
                if neigh.contains(&mac) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "the gratuitous ARP for 198.51.100.10 ({mac}) never reached the neighbour");
        mover.release().await.unwrap();
        mover.release().await.unwrap();
        assert!(!ns.addrs_a().contains("198.51.100.10"));
    }
}
