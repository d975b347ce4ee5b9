//! The allow-list: the networks a listener accepts connections from.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks a listener accepts peers from. Empty means open (ZEO's behaviour, and the default of
/// every zeo-rs listener unless the operator configures one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    pub fn new(nets: Vec<IpNet>) -> AllowList {
        AllowList { nets }
    }

    /// No network configured: every peer is allowed.
    pub fn is_open(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `addr` may connect. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, from a
    /// dual-stack listener) is also checked as the IPv4 address it carries, so an IPv4 list works
    /// on a dual-stack socket.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let listed = |ip: IpAddr| self.nets.iter().any(|net| net.contains(&ip));
        self.is_open() || listed(addr) || mapped.is_some_and(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(nets: &[&str]) -> AllowList {
        AllowList::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn empty_list_is_open() {
        let open = AllowList::default();
        assert!(open.is_open());
        assert!(open.allows("203.0.113.9".parse().unwrap()));
        assert!(open.allows("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn only_listed_networks_are_allowed() {
        let allow = list(&["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]);
        assert!(allow.allows("127.0.0.1".parse().unwrap()));
        assert!(!allow.allows("127.0.0.2".parse().unwrap()));
        assert!(allow.allows("10.200.3.4".parse().unwrap()));
        assert!(!allow.allows("11.0.0.1".parse().unwrap()));
        assert!(allow.allows("2001:db8:1::5".parse().unwrap()));
        assert!(!allow.allows("2001:db9::5".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        let allow = list(&["10.0.0.0/8"]);
        assert!(allow.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!allow.allows("::ffff:192.0.2.1".parse().unwrap()));
    }
}
