//! `Gate`: what a listener checks at accept, before it reads a byte or starts TLS.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::allow::AllowList;
use crate::refusals::{Reason, RefusalMetrics, Refusals};

/// A listener's allow-list and connection cap, and where its refusals are counted and logged.
/// Share it (`Arc`) between the accept loop and the connection tasks.
#[derive(Debug)]
pub struct Gate {
    allow: AllowList,
    /// One permit per open connection; over the cap a connection is closed at once.
    slots: Arc<Semaphore>,
    max_connections: usize,
    refusals: Refusals,
}

/// A connection's slot under the cap: hold it for the connection's whole life.
#[derive(Debug)]
pub struct Admission {
    _slot: OwnedSemaphorePermit,
}

impl Gate {
    /// `listener` names it in the metric and the log (`zeo`, `admin`, `replication`, `http`).
    pub fn new(listener: &'static str, allow: AllowList, max_connections: usize, metrics: &RefusalMetrics) -> Gate {
        Gate {
            allow,
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            refusals: Refusals::new(listener, metrics.clone()),
        }
    }

    pub fn listener(&self) -> &'static str {
        self.refusals.listener()
    }

    pub fn metrics(&self) -> &RefusalMetrics {
        self.refusals.metrics()
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections holding a slot now.
    pub fn open_connections(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Checks a just-accepted peer: the allow-list first (a refused address never takes a slot),
    /// then the cap. A refusal is counted and logged (rate-limited); the caller then drops the
    /// stream, which closes it without reading anything.
    ///
    /// # Errors
    /// `Reason::Address` or `Reason::Capacity`.
    pub fn admit(&self, peer: SocketAddr) -> Result<Admission, Reason> {
        if !self.allow.allows(peer.ip()) {
            self.refuse(peer, Reason::Address, &"address not in the allow list");
            return Err(Reason::Address);
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(Admission { _slot: slot }),
            Err(_) => {
                let why = format!("{} connections open, the maximum", self.max_connections);
                self.refuse(peer, Reason::Capacity, &why);
                Err(Reason::Capacity)
            }
        }
    }

    /// Reports a refusal decided after accept (TLS, deadline, frame cap, budget, identity): counted
    /// always, logged at most once per reason per second.
    pub fn refuse(&self, peer: SocketAddr, reason: Reason, detail: &dyn Display) {
        self.refusals.record(peer, reason, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_allow_list_is_checked_before_the_cap() {
        let metrics = RefusalMetrics::default();
        let allow = AllowList::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let gate = Gate::new("admin", allow, 1, &metrics);
        let held = gate.admit(addr("127.0.0.1:1000")).expect("allowed, under the cap");
        assert_eq!(gate.admit(addr("127.0.0.2:1000")).unwrap_err(), Reason::Address);
        assert_eq!(gate.admit(addr("127.0.0.1:1001")).unwrap_err(), Reason::Capacity);
        assert_eq!(metrics.count("admin", Reason::Address), 1);
        assert_eq!(metrics.count("admin", Reason::Capacity), 1);
        drop(held);
        assert!(gate.admit(addr("127.0.0.1:1002")).is_ok(), "a closed connection frees its slot");
    }

    #[test]
    fn a_slot_is_held_for_the_admissions_life() {
        let gate = Gate::new("zeo", AllowList::default(), 3, &RefusalMetrics::default());
        let a: Vec<_> = (0..3).map(|i| gate.admit(addr(&format!("192.0.2.1:{i}"))).unwrap()).collect();
        assert_eq!(gate.open_connections(), 3);
        assert!(gate.admit(addr("192.0.2.1:9")).is_err());
        drop(a);
        assert_eq!(gate.open_connections(), 0);
    }

    #[test]
    fn later_refusals_are_counted_under_their_reason() {
        let metrics = RefusalMetrics::default();
        let gate = Gate::new("zeo", AllowList::default(), 1, &metrics);
        gate.refuse(addr("127.0.0.1:1"), Reason::AuthTimeout, &"no register");
        gate.refuse(addr("127.0.0.1:2"), Reason::AuthTimeout, &"no register");
        assert_eq!(metrics.count("zeo", Reason::AuthTimeout), 2);
        assert_eq!(metrics.count("replication", Reason::AuthTimeout), 0, "listeners are counted apart");
    }
}
