//! Choosing where one request goes: a backend by weight, then an endpoint
//! by the route's algorithm, its affinity cookie, and the endpoints the
//! request already tried; and whether a failed attempt may be retried.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, header};

use super::resilience::{HashOn, LoadBalancer};
use super::table::{Backend, Route};
use super::upstream::{EndpointState, PickInput, clock_ns, hash_bytes};

/// Retries are counted against requests over windows of this length.
const BUDGET_WINDOW_NS: u64 = 10_000_000_000;

/// What a request brings to the choice of its endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestKeys {
    /// Consistent-hash key; 0 for other algorithms.
    pub hash: u64,
    /// The endpoint the affinity cookie names.
    pub affinity: Option<u64>,
}

impl Route {
    /// The hash key and affinity cookie of a request. Costs nothing for
    /// routes that use neither.
    pub fn request_keys(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client_ip: IpAddr,
    ) -> RequestKeys {
        let hash = match &self.load_balancer {
            LoadBalancer::ConsistentHash { hash_on } => {
                let value = match hash_on {
                    HashOn::SourceIp => None,
                    HashOn::Header(name) => headers.get(name.as_str()).map(HeaderValue::as_bytes),
                    HashOn::Cookie(name) => cookie_value(headers, name).map(str::as_bytes),
                    HashOn::QueryParam(name) => query_value(query, name).map(str::as_bytes),
                };
                match value {
                    Some(v) => hash_bytes(v),
                    None => match client_ip {
                        IpAddr::V4(ip) => hash_bytes(&ip.octets()),
                        IpAddr::V6(ip) => hash_bytes(&ip.octets()),
                    },
                }
            }
            _ => 0,
        };
        let affinity = self.affinity.as_ref().and_then(|a| {
            let v = cookie_value(headers, &a.cookie)?;
            (v.len() == 16)
                .then(|| u64::from_str_radix(v, 16).ok())
                .flatten()
        });
        RequestKeys { hash, affinity }
    }

    /// Chooses a backend and an endpoint: the endpoint the affinity
    /// cookie names while it can take the request; otherwise a backend by
    /// weight (by the hash, for consistent hashing) and an endpoint by the
    /// route's algorithm. A backend without an available endpoint passes
    /// its turn to the next one that has some; only when none has any is
    /// health ignored.
    pub fn choose(
        &self,
        input: &PickInput<'_>,
        affinity: Option<u64>,
    ) -> Option<(&Backend, Arc<EndpointState>)> {
        if self.schedule.is_empty() {
            return None;
        }
        let weighted = || self.backends.iter().filter(|b| b.weight > 0);
        if let Some(id) = affinity {
            let pinned = weighted().find_map(|b| b.upstream.pinned(id, input).map(|e| (b, e)));
            if pinned.is_some() {
                return pinned;
            }
        }
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        let turn = match self.load_balancer {
            LoadBalancer::ConsistentHash { .. } => input.hash as usize,
            _ => turn,
        };
        let first = usize::from(self.schedule[turn % self.schedule.len()]);
        let n = self.backends.len();
        let order = || {
            (0..n)
                .map(move |k| &self.backends[(first + k) % n])
                .filter(|b| b.weight > 0)
        };
        let lb = &self.load_balancer;
        order()
            .find_map(|b| b.upstream.pick_strict(lb, input).map(|e| (b, e)))
            .or_else(|| order().find_map(|b| b.upstream.pick(lb, input).map(|e| (b, e))))
    }

    /// The `Set-Cookie` value that pins later requests to `endpoint`, for
    /// a request that did not come with a valid one.
    pub fn affinity_cookie(
        &self,
        endpoint: &EndpointState,
        had: Option<u64>,
    ) -> Option<HeaderValue> {
        let a = self.affinity.as_ref()?;
        if had == Some(endpoint.id()) {
            return None;
        }
        let mut v = format!(
            "{}={:016x}; Path={}; HttpOnly",
            a.cookie,
            endpoint.id(),
            a.path
        );
        if let Some(ttl) = a.ttl {
            v.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        HeaderValue::try_from(v).ok()
    }

    /// Whether another attempt fits the route's retry budget, and takes
    /// it if so.
    pub fn retry_allowed(&self, now: Instant) -> bool {
        let picks = self.cursor.load(Ordering::Relaxed) as u64;
        self.budget.acquire(
            picks,
            clock_ns(now),
            self.retries.budget_ratio,
            self.retries.budget_min_per_second,
        )
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

/// The raw value of query parameter `name`.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Retries spent against requests seen, over a window: within a window,
/// retries may reach `ratio` times the requests plus `min_per_second` for
/// each second, and no more, so that during an outage retries add at most
/// that share of load however many attempts a route allows.
///
/// The request count is the route's turn counter, which the request path
/// increments anyway: the budget costs nothing until a retry is asked for.
#[derive(Debug, Default)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started_ns: u64,
    /// Turns taken before the window started.
    picks_before: u64,
    retries: u64,
}

impl RetryBudget {
    fn acquire(&self, picks: u64, now_ns: u64, ratio: f64, min_per_second: u32) -> bool {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started_ns == 0 || now_ns.saturating_sub(w.started_ns) >= BUDGET_WINDOW_NS {
            *w = Window {
                started_ns: now_ns.max(1),
                picks_before: picks.saturating_sub(1),
                retries: 0,
            };
        }
        // Turns include the retries' own.
        let requests = picks.saturating_sub(w.picks_before + w.retries);
        let seconds = now_ns.saturating_sub(w.started_ns) / 1_000_000_000 + 1;
        let allowed = ratio * requests as f64 + (u64::from(min_per_second) * seconds) as f64;
        if (w.retries as f64) < allowed {
            w.retries += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn budget_allows_a_share_of_requests() {
        let b = RetryBudget::default();
        // Every request fails and asks for a retry; a granted retry takes
        // a turn of its own.
        let (mut picks, mut granted) = (0, 0);
        for _ in 0..1000 {
            picks += 1;
            if b.acquire(picks, 5 * S, 0.2, 10) {
                granted += 1;
                picks += 1;
            }
        }
        // 20% of the requests plus 10 for the second.
        assert!((205..=211).contains(&granted), "{granted}");
        // Nothing more in the same second without new requests.
        assert!(!b.acquire(picks, 5 * S, 0.2, 10));
        // The per-second minimum grows with time.
        assert!(b.acquire(picks, 6 * S, 0.2, 10));
    }

    #[test]
    fn budget_minimum_without_traffic() {
        let b = RetryBudget::default();
        let granted = (0..100).filter(|&i| b.acquire(i, S, 0.0, 3)).count();
        assert_eq!(granted, 3);
        // A new window starts afresh.
        assert!(b.acquire(100, 12 * S, 0.0, 3));
    }

    #[test]
    fn cookies_and_query_values() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; route=abc".parse().unwrap());
        h.append(header::COOKIE, "b=\"2\"".parse().unwrap());
        assert_eq!(cookie_value(&h, "route"), Some("abc"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
        assert_eq!(query_value(Some("x=1&user=u7"), "user"), Some("u7"));
        assert_eq!(query_value(Some("x"), "x"), Some(""));
        assert_eq!(query_value(None, "x"), None);
    }
}
