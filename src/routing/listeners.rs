//! Which Gateway listener slot a request belongs to.
//!
//! Gateway listeners on one port are told apart by hostname: a request
//! belongs to the slot with the most specific hostname covering its host
//! (an exact name, then the longest wildcard, then the slot without a
//! hostname), and only routes attached to that slot may serve it. This is
//! the Gateway API's listener isolation: a catch-all listener never serves
//! a host that a more specific listener on the same port claims, even for
//! a path only the catch-all's routes have.

use foldhash::{HashMap, HashMapExt};

use super::spec::{HostMatch, ListenerSlot};

/// The slots of one port.
#[derive(Debug, Default)]
struct PortSlots {
    exact: HashMap<Box<str>, u32>,
    /// Wildcard suffixes, longest first, so that the first that covers a
    /// host is the most specific.
    suffixes: Vec<(HostMatch, u32)>,
    any: Option<u32>,
}

/// Slots by port.
#[derive(Debug, Default)]
pub(crate) struct SlotIndex {
    ports: Vec<(u16, PortSlots)>,
}

impl SlotIndex {
    pub(crate) fn build(slots: &[ListenerSlot]) -> SlotIndex {
        let mut index = SlotIndex::default();
        for (i, slot) in slots.iter().enumerate() {
            let id = i as u32;
            let port = match index.ports.iter().position(|(p, _)| *p == slot.port) {
                Some(at) => &mut index.ports[at].1,
                None => {
                    index.ports.push((slot.port, PortSlots::default()));
                    let last = index.ports.len() - 1;
                    &mut index.ports[last].1
                }
            };
            // Translation merges listeners with the same port and
            // hostname into one slot; should two arrive anyway, the first
            // keeps the hostname.
            match &slot.hostname {
                None => {
                    port.any.get_or_insert(id);
                }
                Some(HostMatch::Exact(h)) => {
                    port.exact.entry(h.as_str().into()).or_insert(id);
                }
                Some(h) => {
                    if !port.suffixes.iter().any(|(s, _)| s == h) {
                        port.suffixes.push((h.clone(), id));
                    }
                }
            }
        }
        for (_, port) in &mut index.ports {
            port.suffixes.sort_by_key(|(h, _)| {
                let len = match h {
                    HostMatch::Exact(s) | HostMatch::Wildcard(s) | HostMatch::Suffix(s) => s.len(),
                };
                std::cmp::Reverse(len)
            });
            if port.exact.capacity() > 2 * port.exact.len() {
                let mut exact = HashMap::with_capacity(port.exact.len());
                exact.extend(port.exact.drain());
                port.exact = exact;
            }
        }
        index
    }

    /// The slot of a request for `host` (lower case, without port) on
    /// `port`; `None` when no listener there covers the host.
    pub(crate) fn resolve(&self, port: u16, host: &str) -> Option<u32> {
        let (_, slots) = self.ports.iter().find(|(p, _)| *p == port)?;
        if !slots.exact.is_empty()
            && let Some(&id) = slots.exact.get(host)
        {
            return Some(id);
        }
        slots
            .suffixes
            .iter()
            .find(|(h, _)| h.covers(host))
            .map(|(_, id)| *id)
            .or(slots.any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(port: u16, hostname: Option<HostMatch>) -> ListenerSlot {
        ListenerSlot {
            port,
            hostname,
            tls: false,
            shared: false,
            sources: Vec::new(),
        }
    }

    #[test]
    fn most_specific_hostname_wins() {
        let index = SlotIndex::build(&[
            slot(80, None),
            slot(80, Some(HostMatch::Suffix("example.com".into()))),
            slot(80, Some(HostMatch::Suffix("foo.example.com".into()))),
            slot(80, Some(HostMatch::Exact("abc.foo.example.com".into()))),
            slot(81, Some(HostMatch::Exact("abc.foo.example.com".into()))),
        ]);
        assert_eq!(index.resolve(80, "abc.foo.example.com"), Some(3));
        assert_eq!(index.resolve(80, "x.foo.example.com"), Some(2));
        assert_eq!(index.resolve(80, "a.b.foo.example.com"), Some(2));
        assert_eq!(index.resolve(80, "bar.example.com"), Some(1));
        // A wildcard needs a label in front.
        assert_eq!(index.resolve(80, "example.com"), Some(0));
        assert_eq!(index.resolve(80, "foo.example.com"), Some(1));
        assert_eq!(index.resolve(80, "other.org"), Some(0));
        assert_eq!(index.resolve(81, "other.org"), None);
        assert_eq!(index.resolve(81, "abc.foo.example.com"), Some(4));
        assert_eq!(index.resolve(82, "abc.foo.example.com"), None);
    }
}
