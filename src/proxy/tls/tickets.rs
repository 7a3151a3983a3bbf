//! Session tickets: sealed with the keys the replicas share, else with
//! keys of this process.
//!
//! The shared keys come with the live table (the Secret named by
//! `--tls-ticket-keys-secret`), so a replica seals and opens with whatever
//! keys it got last, and a rotation reaches the handshakes with the next
//! table. Without them, the process keeps keys of its own on the same
//! schedule ([`crate::routing::plan_ticket_keys`]): every worker shares
//! them, restarts lose them.
//!
//! Each server configuration (one per client authentication setting) has
//! its own context in the tickets' associated data, so a session made
//! under one setting never resumes under another, which could skip a
//! client certificate check.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::ProducesTickets;

use crate::routing::{RouteTable, TicketKeyMaterial, TicketKeySet, plan_ticket_keys};

/// TLS 1.3 does not let tickets live longer (RFC 8446 §4.6.1).
const MAX_LIFETIME: u64 = 7 * 24 * 3600;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where tickets' keys come from, for every configuration and worker.
pub struct TicketKeys {
    table: Arc<ArcSwap<RouteTable>>,
    /// Rotation period, seconds; also the tickets' lifetime.
    period: u64,
    own: ArcSwap<TicketKeySet>,
    own_material: Mutex<Vec<TicketKeyMaterial>>,
    /// When the own keys are looked at next, Unix seconds.
    own_check: AtomicU64,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// `None` when the system's random source fails.
    pub fn new(table: Arc<ArcSwap<RouteTable>>, rotation: Duration) -> Option<Arc<TicketKeys>> {
        let period = rotation.as_secs().clamp(1, MAX_LIFETIME);
        let now = unix_now();
        let material = plan_ticket_keys(&[], now, period, TicketKeyMaterial::generate)?;
        let set = TicketKeySet::new(&material)?;
        Some(Arc::new(TicketKeys {
            table,
            period,
            own: ArcSwap::from_pointee(set),
            own_material: Mutex::new(material),
            own_check: AtomicU64::new(now + check_interval(period)),
        }))
    }

    /// Tickets for one server configuration; `context` tells the
    /// configurations apart.
    pub fn for_config(self: &Arc<Self>, context: &[u8]) -> Arc<dyn ProducesTickets> {
        Arc::new(Tickets {
            keys: self.clone(),
            context: context.into(),
        })
    }

    /// This process's keys, rotated when due.
    fn own(&self, now: u64) -> Arc<TicketKeySet> {
        if now >= self.own_check.load(Ordering::Relaxed) {
            let mut material = self
                .own_material
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Whoever got the lock first did the work.
            if now >= self.own_check.load(Ordering::Relaxed) {
                if let Some(next) =
                    plan_ticket_keys(&material, now, self.period, TicketKeyMaterial::generate)
                    && let Some(set) = TicketKeySet::new(&next)
                {
                    *material = next;
                    self.own.store(Arc::new(set));
                }
                self.own_check
                    .store(now + check_interval(self.period), Ordering::Relaxed);
            }
        }
        self.own.load_full()
    }
}

/// How often the own keys are checked against the schedule: well within
/// a period, and never more than once a second.
fn check_interval(period: u64) -> u64 {
    (period / 4).clamp(1, 60)
}

/// The tickets of one server configuration.
struct Tickets {
    keys: Arc<TicketKeys>,
    context: Box<[u8]>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // ok: MAX_LIFETIME bounds the period, and fits.
        u32::try_from(self.keys.period).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let now = unix_now();
        let table = self.keys.table.load();
        match table.ticket_keys() {
            Some(shared) => shared.seal(now, &self.context, plain),
            None => self.keys.own(now).seal(now, &self.context, plain),
        }
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let table = self.keys.table.load();
        // A ticket sealed before the shared keys arrived (or after they
        // went) opens with the process's own.
        table
            .ticket_keys()
            .and_then(|shared| shared.open(&self.context, ticket))
            .or_else(|| self.keys.own(unix_now()).open(&self.context, ticket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::TableSpec;

    fn table(keys: Option<&[TicketKeyMaterial]>) -> Arc<ArcSwap<RouteTable>> {
        let spec = TableSpec {
            ticket_keys: keys.and_then(TicketKeySet::new).map(Arc::new),
            ..TableSpec::default()
        };
        let registry = crate::routing::UpstreamRegistry::new();
        Arc::new(ArcSwap::from_pointee(RouteTable::build(&spec, &registry)))
    }

    fn key(not_before: u64, fill: u8) -> TicketKeyMaterial {
        TicketKeyMaterial {
            not_before,
            secret: [fill; 32],
        }
    }

    #[test]
    fn shared_keys_cross_processes_and_contexts_stay_apart() {
        let shared = [key(1, 7)];
        let a = TicketKeys::new(table(Some(&shared)), Duration::from_secs(3600)).unwrap();
        let b = TicketKeys::new(table(Some(&shared)), Duration::from_secs(3600)).unwrap();
        let alone = TicketKeys::new(table(None), Duration::from_secs(3600)).unwrap();
        let (pa, pb, pl) = (a.for_config(b""), b.for_config(b""), alone.for_config(b""));
        let ticket = pa.encrypt(b"session").unwrap();
        assert_eq!(pb.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(pl.decrypt(&ticket), None, "another process's own keys");
        let mtls = b.for_config(&42u64.to_be_bytes());
        assert_eq!(mtls.decrypt(&ticket), None, "another client auth setting");
        assert_eq!(pa.lifetime(), 3600);

        // Without shared keys, a process opens what it sealed itself, with
        // any of its configurations' own context only.
        let own = pl.encrypt(b"mine").unwrap();
        assert_eq!(pl.decrypt(&own).as_deref(), Some(&b"mine"[..]));
        assert_eq!(
            alone.for_config(b"").decrypt(&own).as_deref(),
            Some(&b"mine"[..])
        );
        assert_eq!(pa.decrypt(&own), None);
    }

    #[test]
    fn own_keys_rotate_on_schedule() {
        let keys = TicketKeys::new(table(None), Duration::from_secs(100)).unwrap();
        let start = unix_now();
        let first = keys.own(start);
        assert_eq!(first.summary().len(), 2, "current and next");
        // A period later the next key seals, the first still opens.
        let later = start + 100;
        let ticket = first.seal(start, b"", b"t").unwrap();
        let rotated = keys.own(later + check_interval(100));
        assert_eq!(rotated.summary().len(), 3);
        assert_eq!(rotated.open(b"", &ticket).as_deref(), Some(&b"t"[..]));
        // Two periods on, the first is gone.
        let gone = keys.own(start + 250);
        assert!(gone.open(b"", &ticket).is_none());
    }
}
