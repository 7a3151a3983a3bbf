//! Addresses of upstreams named by DNS: ExternalName Services and ApiRoute
//! backends with a `host`.
//!
//! Translation leaves these upstreams without endpoints and names the host
//! and port in their [`UpstreamSpec::dns`]. The resolver here follows the
//! published tables: for every name they use it looks up the A and AAAA
//! records, hands the addresses (with each upstream's port) to
//! [`UpstreamRegistry::update_endpoints`], and looks the name up again when
//! the records' TTL runs out, clamped to [`DnsSettings::min_ttl`] ..
//! [`DnsSettings::max_ttl`]. No route is recompiled for a new address.
//!
//! A failed lookup, or an answer without addresses, keeps the last good
//! addresses: a flapping or unreachable DNS server does not take an
//! upstream down. The name is tried again after a backoff that doubles
//! from `min_ttl` up to [`DnsSettings::max_backoff`]. Each change is logged
//! once: a new set of addresses, the first failure, the recovery; retries
//! are not. Names that no table uses any more stop being resolved.
//!
//! Lookups go through the gateway's one resolver, [`crate::http::dns`],
//! which the gateway's own calls (forwardAuth, JWKS) use too; it tells the
//! records' TTL, which the system resolver does not.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use crate::http::dns::DnsSettings;
use crate::http::dns::Resolver;
use crate::metrics as m;
use crate::routing::{DnsTarget, UpstreamKey, UpstreamRegistry, UpstreamSpec};

/// The upstreams named by DNS in one table, in key order.
pub type Targets = Arc<[(UpstreamKey, DnsTarget)]>;

/// The upstreams of `upstreams` that are named by DNS.
pub fn targets(upstreams: &BTreeMap<UpstreamKey, UpstreamSpec>) -> Targets {
    upstreams
        .iter()
        .filter_map(|(k, spec)| Some((k.clone(), spec.dns.clone()?)))
        .collect()
}

/// The running resolver; stops when dropped.
#[derive(Debug)]
pub struct DnsResolver {
    task: JoinHandle<()>,
}

impl Drop for DnsResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsResolver {
    /// Starts resolving the names of `targets`, whose latest value is the
    /// current table's, into `registry`, with a resolver of its own. Must
    /// run inside a Tokio runtime.
    pub fn start(
        settings: DnsSettings,
        registry: Arc<UpstreamRegistry>,
        targets: watch::Receiver<Targets>,
    ) -> DnsResolver {
        let resolver = Resolver::start(&settings);
        Self::start_with(resolver, settings, registry, targets)
    }

    /// Like [`DnsResolver::start`], asking `resolver` (the gateway's,
    /// shared with its other lookups).
    pub fn start_with(
        resolver: Resolver,
        settings: DnsSettings,
        registry: Arc<UpstreamRegistry>,
        targets: watch::Receiver<Targets>,
    ) -> DnsResolver {
        let task = tokio::spawn(Names::new(settings, registry).run(resolver, targets));
        DnsResolver { task }
    }
}

/// What is known about one name.
struct Name {
    /// The upstreams it fills, each with its port.
    upstreams: Vec<(UpstreamKey, u16)>,
    /// The last good answer, sorted; `None` before the first.
    addrs: Option<Vec<IpAddr>>,
    /// When to look it up next (while no lookup is running).
    due: Instant,
    /// The lookup running now.
    running: Option<AbortHandle>,
    /// Failed lookups since the last good one.
    failures: u32,
    /// Tells this entry's lookups from those of an earlier entry for the
    /// same name, removed and added again while a lookup ran.
    generation: u64,
}

type LookupResult = Result<(Vec<IpAddr>, Duration), String>;

struct Names {
    settings: DnsSettings,
    registry: Arc<UpstreamRegistry>,
    names: HashMap<Arc<str>, Name>,
    generation: u64,
}

impl Names {
    fn new(settings: DnsSettings, registry: Arc<UpstreamRegistry>) -> Self {
        Names {
            settings,
            registry,
            names: HashMap::default(),
            generation: 0,
        }
    }

    async fn run(mut self, resolver: Resolver, mut targets: watch::Receiver<Targets>) {
        let mut lookups: JoinSet<(Arc<str>, u64, LookupResult)> = JoinSet::new();
        let current = targets.borrow_and_update().clone();
        self.follow(&current);
        loop {
            let now = Instant::now();
            for (name, entry) in &mut self.names {
                if entry.running.is_none() && entry.due <= now {
                    let (resolver, name, generation) =
                        (resolver.clone(), name.clone(), entry.generation);
                    entry.running = Some(lookups.spawn(async move {
                        let result = lookup(&resolver, &name).await;
                        (name, generation, result)
                    }));
                }
            }
            let next = self
                .names
                .values()
                .filter(|n| n.running.is_none())
                .map(|n| n.due)
                .min();
            tokio::select! {
                changed = targets.changed() => {
                    // The publisher is gone: nothing will use the answers.
                    if changed.is_err() {
                        return;
                    }
                    let current = targets.borrow_and_update().clone();
                    self.follow(&current);
                }
                Some(done) = lookups.join_next(), if !lookups.is_empty() => match done {
                    Ok((name, generation, result)) => self.answered(&name, generation, result),
                    // A cancelled lookup was for a name no longer used.
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => self.lookup_died(e),
                },
                () = sleep_until(next) => {}
            }
        }
    }

    /// Makes the names resolved those of `targets`.
    fn follow(&mut self, targets: &[(UpstreamKey, DnsTarget)]) {
        let mut wanted: HashMap<Arc<str>, Vec<(UpstreamKey, u16)>> = HashMap::default();
        for (key, target) in targets {
            wanted
                .entry(target.name.clone())
                .or_default()
                .push((key.clone(), target.port));
        }
        self.names.retain(|name, entry| {
            let keep = wanted.contains_key(name);
            if !keep {
                if let Some(running) = &entry.running {
                    running.abort();
                }
                info!(name = %name, "DNS name no longer used; stopped resolving it");
            }
            keep
        });
        let now = Instant::now();
        for (name, upstreams) in wanted {
            match self.names.get_mut(&name) {
                Some(entry) => {
                    entry.upstreams = upstreams;
                    // Upstreams new to this table get the known addresses
                    // now; the others already have them.
                    if let Some(addrs) = &entry.addrs {
                        push(&self.registry, &entry.upstreams, addrs);
                    }
                }
                None => {
                    self.generation += 1;
                    self.names.insert(
                        name,
                        Name {
                            upstreams,
                            addrs: None,
                            due: now,
                            running: None,
                            failures: 0,
                            generation: self.generation,
                        },
                    );
                }
            }
        }
    }

    /// A lookup task that ended without an answer counts as a failure of
    /// its name.
    fn lookup_died(&mut self, e: tokio::task::JoinError) {
        let id = e.id();
        let found = self
            .names
            .iter()
            .find(|(_, n)| n.running.as_ref().is_some_and(|r| r.id() == id))
            .map(|(name, n)| (name.clone(), n.generation));
        if let Some((name, generation)) = found {
            self.answered(&name, generation, Err(format!("lookup failed: {e}")));
        }
    }

    /// Takes the answer of a lookup of `name`.
    fn answered(&mut self, name: &str, generation: u64, result: LookupResult) {
        let Some(entry) = self
            .names
            .get_mut(name)
            .filter(|e| e.generation == generation)
        else {
            return;
        };
        entry.running = None;
        let now = Instant::now();
        let s = &self.settings;
        match result {
            Ok((addrs, ttl)) if !addrs.is_empty() => {
                metrics::counter!(m::DNS_LOOKUPS, "result" => "ok").increment(1);
                let wait = ttl.clamp(s.min_ttl, s.max_ttl.max(s.min_ttl));
                entry.due = now + wait;
                let recovered = entry.failures > 0;
                entry.failures = 0;
                if entry.addrs.as_ref() != Some(&addrs) {
                    info!(
                        name,
                        addresses = ?addrs,
                        ttl_s = ttl.as_secs(),
                        "DNS name resolved to new addresses"
                    );
                    let changed = push(&self.registry, &entry.upstreams, &addrs);
                    metrics::counter!(m::ENDPOINT_UPDATES).increment(changed);
                    entry.addrs = Some(addrs);
                } else if recovered {
                    info!(name, "DNS name resolves again; addresses unchanged");
                } else {
                    debug!(name, ttl_s = ttl.as_secs(), "DNS name resolved; unchanged");
                }
            }
            failed => {
                metrics::counter!(m::DNS_LOOKUPS, "result" => "error").increment(1);
                let error = match failed {
                    Err(e) => e,
                    Ok(_) => "no A or AAAA records".to_owned(),
                };
                entry.failures = entry.failures.saturating_add(1);
                let backoff = backoff(s, entry.failures);
                entry.due = now + backoff;
                if entry.failures == 1 {
                    match &entry.addrs {
                        Some(kept) => warn!(
                            name,
                            error,
                            kept = ?kept,
                            "cannot resolve DNS name; keeping its last addresses and retrying"
                        ),
                        None => warn!(
                            name,
                            error,
                            "cannot resolve DNS name; its upstreams have no endpoints until it resolves; retrying"
                        ),
                    }
                } else {
                    debug!(
                        name,
                        error,
                        failures = entry.failures,
                        retry_in_ms = backoff.as_millis(),
                        "DNS lookup failed again"
                    );
                }
            }
        }
    }
}

/// The wait before retry number `failures` (from 1).
fn backoff(s: &DnsSettings, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    s.min_ttl
        .saturating_mul(1 << doublings)
        .min(s.max_backoff.max(s.min_ttl))
}

/// Sets the endpoints of `upstreams` to `addrs` on each one's port.
/// Returns how many upstreams the registry held.
fn push(registry: &UpstreamRegistry, upstreams: &[(UpstreamKey, u16)], addrs: &[IpAddr]) -> u64 {
    let mut held = 0;
    for (key, port) in upstreams {
        let endpoints: Vec<SocketAddr> =
            addrs.iter().map(|ip| SocketAddr::new(*ip, *port)).collect();
        if registry.update_endpoints(key, &endpoints) {
            held += 1;
        }
    }
    held
}

/// The addresses of `name`, sorted and without duplicates, and how long
/// they are valid.
async fn lookup(resolver: &Resolver, name: &str) -> LookupResult {
    match resolver.lookup(name).await {
        Ok(answer) => Ok((answer.addrs, answer.ttl)),
        // Counted and logged as an answer without addresses.
        Err(crate::http::dns::LookupError::NoAddresses) => Ok((Vec::new(), Duration::ZERO)),
        Err(e) => Err(e.to_string()),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = DnsSettings::default();
        let waits: Vec<u64> = (1..=7).map(|n| backoff(&s, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(&s, u32::MAX), s.max_backoff);
    }

    #[test]
    fn targets_are_the_dns_upstreams() {
        let dns = DnsTarget {
            name: "api.example.com".into(),
            port: 443,
        };
        let upstreams = BTreeMap::from([
            (
                UpstreamKey::new("ns", "svc", 80),
                UpstreamSpec::ready(vec![SocketAddr::from(([10, 0, 0, 1], 8080))]),
            ),
            (
                UpstreamKey::external("ns", "ext", 443, "api.example.com"),
                UpstreamSpec {
                    dns: Some(dns.clone()),
                    ..UpstreamSpec::default()
                },
            ),
        ]);
        let t = targets(&upstreams);
        assert_eq!(
            &*t,
            [(
                UpstreamKey::external("ns", "ext", 443, "api.example.com"),
                dns
            )]
        );
    }
}
