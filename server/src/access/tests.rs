//! Policy unit tests: the address allow-list and the identity map. The TLS handshake that produces
//! the identities is tested in `tls`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn identity(cn: Option<&str>, dns: &[&str]) -> PeerIdentity {
    PeerIdentity { common_name: cn.map(str::to_owned), dns_names: dns.iter().map(|d| (*d).to_owned()).collect() }
}

#[test]
fn address_allow_list() {
    assert_eq!(AccessPolicy::default().check_addr(ip("203.0.113.9")), Ok(()), "empty list = everyone");
    let nets = ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"].iter().map(|n| n.parse().unwrap()).collect();
    let p = AccessPolicy::new(nets, BTreeMap::new());
    for ok in ["10.1.2.3", "192.168.1.7", "fd00::1", "::ffff:10.9.9.9"] {
        assert_eq!(p.check_addr(ip(ok)), Ok(()), "{ok}");
    }
    for refused in ["11.0.0.1", "192.168.1.8", "::1", "::ffff:11.0.0.1"] {
        let r = p.check_addr(ip(refused)).unwrap_err();
        assert_eq!(r, Refusal::AddressNotAllowed(ip(refused)));
        assert_eq!(r.reason(), zeo_listen::Reason::Address);
    }
    assert_eq!(
        p.check_addr(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8))).unwrap_err().to_string(),
        "address 8.8.8.8 is not in the allow list"
    );
    let v6_only = AccessPolicy::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()], BTreeMap::new());
    assert_eq!(v6_only.check_addr(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())), Ok(()));
    assert!(v6_only.check_addr(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_err());
}

#[test]
fn access_modes_from_identities() {
    let open = AccessPolicy::default();
    assert_eq!(open.mode_for(None), Ok(AccessMode::ReadWrite), "plain connection, no map: like ZEO");
    assert_eq!(open.mode_for(Some(&identity(Some("x"), &[]))), Ok(AccessMode::ReadWrite));

    let map =
        [("app1", AccessMode::ReadWrite), ("reports.example", AccessMode::ReadOnly), ("both", AccessMode::ReadWrite)]
            .into_iter()
            .map(|(n, r)| (n.to_owned(), r))
            .collect();
    let p = AccessPolicy::new(Vec::new(), map);
    assert_eq!(p.mode_for(Some(&identity(Some("app1"), &[]))), Ok(AccessMode::ReadWrite));
    assert_eq!(p.mode_for(Some(&identity(None, &["Reports.Example"]))), Ok(AccessMode::ReadOnly), "DNS ignores case");
    assert!(p.mode_for(Some(&identity(Some("APP1"), &[]))).is_err(), "CN is exact");
    assert_eq!(
        p.mode_for(Some(&identity(Some("both"), &["reports.example"]))),
        Ok(AccessMode::ReadOnly),
        "the most restrictive match wins"
    );
    let stranger = identity(Some("mallory"), &["m.example"]);
    let r = p.mode_for(Some(&stranger)).unwrap_err();
    assert_eq!(r.to_string(), "client certificate CN=mallory DNS=m.example matches no configured identity");
    assert_eq!(r.reason(), zeo_listen::Reason::Identity);
    assert_eq!(p.mode_for(None), Err(Refusal::NoIdentity));
}
