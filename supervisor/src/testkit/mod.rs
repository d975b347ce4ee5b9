//! Test helpers: a real etcd on loopback, fakes of the Kubernetes API and of zeo-server's admin API.

pub mod admin_fake;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "kubernetes")]
pub mod kube_fake;
pub mod stall_store;

/// A port that was free a moment ago on 127.0.0.1 (for programs that want a port number).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
