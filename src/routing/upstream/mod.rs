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

mod balance;
mod endpoint;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;

pub use balance::{Ring, hash_bytes};
pub use endpoint::{EndpointState, InFlight, clock_ns};

use super::resilience::{HealthSpec, LoadBalancer, PassiveHealth};
use super::spec::{UpstreamKey, UpstreamSpec};

/// The endpoints of one upstream at one moment.
#[derive(Debug, Default)]
pub struct EndpointSet {
    ready: Box<[Arc<EndpointState>]>,
    terminating: Box<[Arc<EndpointState>]>,
    /// Built on first use by a consistent-hash route.
    ring: OnceLock<Ring>,
    /// (affinity id, index into the active list), sorted; built on first
    /// use by a route with affinity.
    ids: OnceLock<Box<[(u64, u32)]>>,
}

impl EndpointSet {
    /// A set of `ready` and `terminating` addresses, reusing the states of
    /// `old` by address so that health, load and latency carry over.
    fn new(ready: &[SocketAddr], terminating: &[SocketAddr], old: Option<&EndpointSet>) -> Self {
        let find = |addr: &SocketAddr| {
            old.and_then(|o| {
                o.ready
                    .iter()
                    .chain(o.terminating.iter())
                    .find(|e| e.addr() == *addr)
                    .cloned()
            })
            .unwrap_or_else(|| Arc::new(EndpointState::new(*addr)))
        };
        EndpointSet {
            ready: ready.iter().map(find).collect(),
            terminating: terminating.iter().map(find).collect(),
            ring: OnceLock::new(),
            ids: OnceLock::new(),
        }
    }

    /// The ready endpoints' addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ready.iter().map(|e| e.addr()).collect()
    }

    pub fn ready(&self) -> &[Arc<EndpointState>] {
        &self.ready
    }

    pub fn terminating(&self) -> &[Arc<EndpointState>] {
        &self.terminating
    }

    /// The endpoints that take new requests: the ready ones, or while
    /// there are none, the terminating ones that still serve.
    pub fn active(&self) -> &[Arc<EndpointState>] {
        if self.ready.is_empty() {
            &self.terminating
        } else {
            &self.ready
        }
    }

    fn same_addrs(&self, ready: &[SocketAddr], terminating: &[SocketAddr]) -> bool {
        let eq = |a: &[Arc<EndpointState>], b: &[SocketAddr]| {
            a.len() == b.len() && a.iter().zip(b).all(|(e, addr)| e.addr() == *addr)
        };
        eq(&self.ready, ready) && eq(&self.terminating, terminating)
    }

    /// The index in [`Self::active`] of the endpoint with affinity `id`.
    fn by_id(&self, id: u64) -> Option<usize> {
        let ids = self.ids.get_or_init(|| {
            let mut v: Vec<(u64, u32)> = self
                .active()
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((e.id(), u32::try_from(i).ok()?)))
                .collect();
            v.sort_unstable();
            v.into_boxed_slice()
        });
        let i = ids.binary_search_by_key(&id, |&(k, _)| k).ok()?;
        Some(ids[i].1 as usize)
    }
}

/// What an endpoint choice depends on besides the algorithm.
#[derive(Clone, Copy, Debug)]
pub struct PickInput<'a> {
    pub now: Instant,
    /// The request's consistent-hash key.
    pub hash: u64,
    /// Endpoints already tried by this request.
    pub exclude: &'a [SocketAddr],
}

/// A Service port's endpoints plus the state that balances over them.
#[derive(Debug)]
pub struct Upstream {
    key: UpstreamKey,
    endpoints: ArcSwap<EndpointSet>,
    health: ArcSwap<HealthSpec>,
    cursor: AtomicUsize,
}

impl Upstream {
    pub fn new(key: UpstreamKey, endpoints: Vec<SocketAddr>) -> Self {
        Self::from_spec(key, &UpstreamSpec::ready(endpoints))
    }

    fn from_spec(key: UpstreamKey, spec: &UpstreamSpec) -> Self {
        Upstream {
            key,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(
                &spec.endpoints,
                &spec.terminating,
                None,
            )),
            health: ArcSwap::from_pointee(spec.health.clone()),
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

    /// The health settings.
    pub fn health(&self) -> Arc<HealthSpec> {
        self.health.load_full()
    }

    /// The passive health settings, read on every request's outcome:
    /// copied out without touching the settings' reference count.
    pub fn passive(&self) -> PassiveHealth {
        self.health.load().passive
    }

    /// Whether any endpoint can take a request now.
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.load().active().is_empty()
    }

    /// Replaces the endpoint set; returns whether it changed. Endpoints
    /// that left are marked removed, so that idle connections to them are
    /// closed instead of kept.
    pub fn set_all(&self, ready: &[SocketAddr], terminating: &[SocketAddr]) -> bool {
        let old = self.endpoints.load_full();
        if old.same_addrs(ready, terminating) {
            return false;
        }
        let new = EndpointSet::new(ready, terminating, Some(&old));
        for e in old.ready.iter().chain(old.terminating.iter()) {
            let kept = new
                .ready
                .iter()
                .chain(new.terminating.iter())
                .any(|n| Arc::ptr_eq(n, e));
            if !kept {
                e.mark_removed();
            }
        }
        self.endpoints.store(Arc::new(new));
        true
    }

    fn set_health(&self, health: &HealthSpec) {
        if **self.health.load() != *health {
            self.health.store(Arc::new(health.clone()));
        }
    }

    /// Marks every endpoint removed: the upstream is no longer used.
    fn retire(&self) {
        let set = self.endpoints.load();
        for e in set.ready.iter().chain(set.terminating.iter()) {
            e.mark_removed();
        }
    }

    /// Round-robin choice of an endpoint, or `None` when there is none.
    #[cfg(test)]
    fn pick_addr(&self) -> Option<SocketAddr> {
        let input = PickInput {
            now: Instant::now(),
            hash: 0,
            exclude: &[],
        };
        self.pick(&LoadBalancer::RoundRobin, &input)
            .map(|e| e.addr())
    }

    /// The endpoint an affinity cookie names, if it is one of this
    /// upstream's and can take the request.
    pub fn pinned(&self, id: u64, input: &PickInput<'_>) -> Option<Arc<EndpointState>> {
        let set = self.endpoints.load();
        let e = &set.active()[set.by_id(id)?];
        (e.is_available(clock_ns(input.now)) && !input.exclude.contains(&e.addr()))
            .then(|| e.clone())
    }

    /// Chooses an endpoint with `lb` among those available and not tried
    /// yet. When every endpoint left is ejected or down, health is
    /// ignored: serving from endpoints that may be unhealthy beats
    /// certainly serving nothing.
    pub fn pick(&self, lb: &LoadBalancer, input: &PickInput<'_>) -> Option<Arc<EndpointState>> {
        self.pick_strict(lb, input)
            .or_else(|| self.choose(lb, input, |_| true))
    }

    /// Like [`Self::pick`], without ever ignoring health.
    pub fn pick_strict(
        &self,
        lb: &LoadBalancer,
        input: &PickInput<'_>,
    ) -> Option<Arc<EndpointState>> {
        let now = clock_ns(input.now);
        self.choose(lb, input, |e| e.is_available(now))
    }

    fn choose(
        &self,
        lb: &LoadBalancer,
        input: &PickInput<'_>,
        healthy: impl Fn(&EndpointState) -> bool,
    ) -> Option<Arc<EndpointState>> {
        let set = self.endpoints.load();
        let active = set.active();
        if active.is_empty() {
            return None;
        }
        let ok = |e: &EndpointState| healthy(e) && !input.exclude.contains(&e.addr());
        let ring = || Some(set.ring.get_or_init(|| Ring::build(active)));
        let i = balance::choose(lb, active, ring, &self.cursor, input.hash, ok)?;
        Some(active[i].clone())
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
                        up.set_all(&spec.endpoints, &spec.terminating);
                    }
                    up.set_health(&spec.health);
                    each(key, up);
                }
                None => {
                    let up = Arc::new(Upstream::from_spec(key.clone(), spec));
                    each(key, &up);
                    map.insert(key.clone(), up);
                }
            }
        }
        // Every key of `specs` is in the map now, so the map holds others
        // exactly when it is larger. Most reloads remove no upstream and
        // skip the search.
        if map.len() > specs.len() {
            map.retain(|k, up| {
                let keep = specs.contains_key(k);
                if !keep {
                    up.retire();
                }
                keep
            });
        }
    }

    /// Updates one upstream's endpoints without touching any route; returns
    /// false when no table references the key.
    pub fn update_endpoints(&self, key: &UpstreamKey, addrs: &[SocketAddr]) -> bool {
        self.update_all(key, addrs, &[])
    }

    /// Like [`Self::update_endpoints`], with terminating endpoints too.
    pub fn update_all(
        &self,
        key: &UpstreamKey,
        ready: &[SocketAddr],
        terminating: &[SocketAddr],
    ) -> bool {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(up) => {
                up.set_all(ready, terminating);
                true
            }
            None => false,
        }
    }

    /// Every live upstream, for health checks and display.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
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
        let picks: Vec<_> = (0..6).map(|_| up.pick_addr().unwrap().port()).collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn empty_upstream_picks_nothing() {
        let up = Upstream::new(UpstreamKey::new("ns", "svc", 80), vec![]);
        assert_eq!(up.pick_addr(), None);
        assert!(!up.has_endpoints());
    }

    #[test]
    fn registry_keeps_upstreams_across_syncs() {
        let reg = UpstreamRegistry::new();
        let key = UpstreamKey::new("ns", "svc", 80);
        let mut specs = BTreeMap::new();
        specs.insert(key.clone(), UpstreamSpec::ready(vec![addr(1)]));
        let first = reg.sync(&specs)[&key].clone();
        specs.insert(key.clone(), UpstreamSpec::ready(vec![addr(2)]));
        let second = reg.sync(&specs)[&key].clone();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.endpoints().addrs(), [addr(2)]);
        let kept = first.endpoints().ready()[0].clone();

        assert!(reg.update_endpoints(&key, &[addr(3)]));
        assert_eq!(second.pick_addr(), Some(addr(3)));
        assert!(kept.is_removed(), "a replaced endpoint is marked removed");

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
            dns: Some(super::super::DnsTarget {
                name: "api.example.com".into(),
                port: 80,
            }),
            ..UpstreamSpec::default()
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
