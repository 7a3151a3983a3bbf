//! Upstreams: the endpoint sets behind Service ports.
//!
//! An `Upstream` outlives route tables. Tables hold `Arc<Upstream>`s taken
//! from the [`UpstreamRegistry`], which keeps one per key across rebuilds,
//! so balancing state carries over and an endpoint change is one atomic
//! store into the upstream's endpoint set: no route is recompiled for it.
//!
//! Endpoints come from two places: Service upstreams get theirs from the
//! table specification (EndpointSlices, at translation) and from
//! [`UpstreamRegistry::update_endpoints`] between tables; upstreams named by
//! DNS get theirs only from `update_endpoints`, called by the resolver, so
//! a table rebuild keeps what was last resolved.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::spec::{UpstreamKey, UpstreamSpec};

/// The endpoints of one upstream at one moment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    addrs: Box<[SocketAddr]>,
}

impl EndpointSet {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        EndpointSet {
            addrs: addrs.into_boxed_slice(),
        }
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// A Service port's endpoints plus the state that balances over them.
#[derive(Debug)]
pub struct Upstream {
    key: UpstreamKey,
    endpoints: ArcSwap<EndpointSet>,
    cursor: AtomicUsize,
}

impl Upstream {
    pub fn new(key: UpstreamKey, endpoints: Vec<SocketAddr>) -> Self {
        Upstream {
            key,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(endpoints)),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn key(&self) -> &UpstreamKey {
        &self.key
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// Whether any endpoint can take a request now.
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.load().addrs.is_empty()
    }

    /// Replaces the endpoint set; returns whether it changed.
    pub fn set_endpoints(&self, addrs: &[SocketAddr]) -> bool {
        if *self.endpoints.load().addrs == *addrs {
            return false;
        }
        self.endpoints
            .store(Arc::new(EndpointSet::new(addrs.to_vec())));
        true
    }

    /// Round-robin choice of an endpoint, or `None` when there is none.
    pub fn pick(&self) -> Option<SocketAddr> {
        let set = self.endpoints.load();
        let n = set.addrs.len();
        if n == 0 {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        Some(set.addrs[i])
    }
}

/// The live upstreams, one per key, shared by successive tables.
#[derive(Debug, Default)]
pub struct UpstreamRegistry {
    map: Mutex<foldhash::HashMap<UpstreamKey, Arc<Upstream>>>,
}

impl UpstreamRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the registry hold exactly the upstreams of `specs` with their
    /// endpoints, reusing existing upstreams by key. Upstreams that are no
    /// longer referenced are dropped from the registry (tables still serving
    /// in-flight requests keep their own references).
    pub fn sync(
        &self,
        specs: &BTreeMap<UpstreamKey, UpstreamSpec>,
    ) -> HashMap<UpstreamKey, Arc<Upstream>> {
        let mut out = HashMap::with_capacity(specs.len());
        self.sync_each(specs, |key, up| {
            out.insert(key.clone(), up.clone());
        });
        out
    }

    /// Like [`Self::sync`], but hands each key and its upstream to `each`
    /// instead of returning a copy of the whole registry.
    pub(crate) fn sync_each<'s>(
        &self,
        specs: &'s BTreeMap<UpstreamKey, UpstreamSpec>,
        mut each: impl FnMut(&'s UpstreamKey, &Arc<Upstream>),
    ) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let held = map.len();
        map.reserve(specs.len().saturating_sub(held));
        for (key, spec) in specs {
            match map.get(key) {
                Some(up) => {
                    // A DNS upstream's endpoints are the resolver's, which
                    // translation does not know.
                    if spec.dns.is_none() {
                        up.set_endpoints(&spec.endpoints);
                    }
                    each(key, up);
                }
                None => {
                    let up = Arc::new(Upstream::new(key.clone(), spec.endpoints.clone()));
                    each(key, &up);
                    map.insert(key.clone(), up);
                }
            }
        }
        // Every key of `specs` is in the map now, so the map holds others
        // exactly when it is larger. Most reloads remove no upstream and
        // skip the search.
        if map.len() > specs.len() {
            map.retain(|k, _| specs.contains_key(k));
        }
    }

    /// Updates one upstream's endpoints without touching any route; returns
    /// false when no table references the key.
    pub fn update_endpoints(&self, key: &UpstreamKey, addrs: &[SocketAddr]) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(up) => {
                up.set_endpoints(addrs);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, key: &UpstreamKey) -> Option<Arc<Upstream>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn round_robin_cycles_endpoints() {
        let up = Upstream::new(
            UpstreamKey::new("ns", "svc", 80),
            vec![addr(1), addr(2), addr(3)],
        );
        let picks: Vec<_> = (0..6).map(|_| up.pick().unwrap().port()).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn empty_upstream_picks_nothing() {
        let up = Upstream::new(UpstreamKey::new("ns", "svc", 80), vec![]);
        assert_eq!(up.pick(), None);
        assert!(!up.has_endpoints());
    }

    #[test]
    fn registry_keeps_upstreams_across_syncs() {
        let reg = UpstreamRegistry::new();
        let key = UpstreamKey::new("ns", "svc", 80);
        let mut specs = BTreeMap::new();
        specs.insert(key.clone(), UpstreamSpec::with_endpoints(vec![addr(1)]));
        let first = reg.sync(&specs)[&key].clone();
        specs.insert(key.clone(), UpstreamSpec::with_endpoints(vec![addr(2)]));
        let second = reg.sync(&specs)[&key].clone();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.endpoints().addrs(), [addr(2)]);

        assert!(reg.update_endpoints(&key, &[addr(3)]));
        assert_eq!(second.pick(), Some(addr(3)));

        specs.clear();
        reg.sync(&specs);
        assert!(reg.get(&key).is_none());
        assert!(!reg.update_endpoints(&key, &[addr(3)]));
    }

    #[test]
    fn table_rebuilds_keep_resolved_addresses_of_dns_upstreams() {
        let reg = UpstreamRegistry::new();
        let key = UpstreamKey::external("ns", "ext", 80, "api.example.com");
        let spec = UpstreamSpec {
            endpoints: Vec::new(),
            dns: Some(super::super::DnsTarget {
                name: "api.example.com".into(),
                port: 80,
            }),
        };
        let specs = BTreeMap::from([(key.clone(), spec)]);
        let up = reg.sync(&specs)[&key].clone();
        assert!(!up.has_endpoints());
        assert!(reg.update_endpoints(&key, &[addr(7)]));
        let again = reg.sync(&specs)[&key].clone();
        assert!(Arc::ptr_eq(&up, &again));
        assert_eq!(again.endpoints().addrs(), [addr(7)]);
    }
}
