//! `ipRestriction`: allow or deny clients by address.
//!
//! Rules are addresses or CIDR ranges of either family, parsed once at
//! build. An IPv4 client reaching a dual-stack listener shows up as an
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`); addresses and rules are
//! both reduced to their canonical family, so that IPv4 rules apply to
//! such clients and a mapped rule applies to plain IPv4 ones.
//!
//! The client is the connection's peer, unless `trustedProxies` is set and
//! the peer is one of them: then `X-Forwarded-For` is read from the right,
//! past the trusted hops. Anything left of the first untrusted address was
//! written by the client and cannot be believed.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};

use crate::api::IpRestriction;
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx};

static X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// An address range: the network's bits and how many of them count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address. Host bits
    /// below the prefix are ignored (`10.0.0.1/8` is `10.0.0.0/8`), as in
    /// most firewall syntaxes.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                // `parse` accepts a leading `+`, which no CIDR notation has.
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "{text:?}: the prefix length must be a number from 0 to {max}"
                    ));
                }
            },
        };
        Ok(Cidr::new(addr, prefix))
    }

    fn new(addr: IpAddr, prefix: u8) -> Cidr {
        // A mapped IPv6 range covering only mapped addresses is an IPv4
        // range, and is compared with canonical (IPv4) clients as one.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        Cidr {
            network: mask(addr, prefix),
            prefix,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with the bits past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & bits).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & bits).into())
        }
    }
}

/// A list of ranges, any of which matches.
#[derive(Debug, Clone, Default)]
struct Ranges(Vec<Cidr>);

impl Ranges {
    fn parse(entries: &[String], field: &str) -> Result<Ranges, ConfigError> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| Cidr::parse(e).map_err(|m| ConfigError::new(format!("{field}[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()
            .map(Ranges)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:80`, `[::1]:80`) as some proxies write it.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The client behind `peer`: the right-most `X-Forwarded-For` address that
/// is not a trusted proxy, read across every instance of the header. A
/// malformed entry ends the walk at the last trusted hop: what lies left
/// of it is unreadable, and guessing would let a client choose its
/// address. Every hop trusted: the left-most one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer;
    if !is_trusted(client) {
        return client;
    }
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|&b| b == b',') {
            let Some(hop) = parse_hop(entry) else {
                return client;
            };
            client = hop;
            if !is_trusted(hop) {
                return client;
            }
        }
    }
    client
}

/// `ipRestriction`: see the module documentation.
#[derive(Debug)]
pub struct IpRestrictionPlugin {
    config: IpRestriction,
    allow: Ranges,
    deny: Ranges,
    trusted: Vec<Cidr>,
    status: StatusCode,
    body: Bytes,
}

impl IpRestrictionPlugin {
    pub fn build(c: &IpRestriction, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "ipRestriction";
        let allow = Ranges::parse(&c.allow, &format!("{field}.allow"))?;
        let deny = Ranges::parse(&c.deny, &format!("{field}.deny"))?;
        let trusted = Ranges::parse(&c.trusted_proxies, &format!("{field}.trustedProxies"))?.0;
        if allow.is_empty() && deny.is_empty() {
            return Err(ConfigError::new(
                field,
                "set allow or deny (without either, every client passes)",
            ));
        }
        let status = rejected_status(c.rejected_code, &format!("{field}.rejectedCode"))?;
        let body = c.rejected_message.clone().map_or_else(
            || Bytes::from_static(b"403 Forbidden: address not allowed\n"),
            Bytes::from,
        );
        Ok(Arc::new(IpRestrictionPlugin {
            config: c.clone(),
            allow,
            deny,
            trusted,
            status,
            body,
        }))
    }

    /// Whether `ip` may pass: deny first, then a non-empty allow list.
    fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

/// The status refused requests get: `code`, 403 by default.
pub(super) fn rejected_status(code: Option<u16>, field: &str) -> Result<StatusCode, ConfigError> {
    let code = code.unwrap_or(403);
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| {
            ConfigError::new(field, format!("{code} is not a status between 200 and 599"))
        })
}

/// A plain-text answer.
pub(super) fn plain(status: StatusCode, body: Bytes) -> Rejection {
    Rejection::plain(status, body)
}

impl Plugin for IpRestrictionPlugin {
    fn name(&self) -> &'static str {
        "ipRestriction"
    }

    fn priority(&self) -> i32 {
        3000
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        // An unreadable peer address cannot be matched against anything:
        // refused, so that a rule is never skipped by accident.
        let peer = std::str::from_utf8(ctx.client_ip)
            .ok()
            .and_then(|t| t.parse::<IpAddr>().ok());
        let allowed = peer.is_some_and(|peer| {
            let client = if self.trusted.is_empty() {
                peer
            } else {
                client_address(peer, ctx.headers, &self.trusted)
            };
            self.permits(client)
        });
        if allowed {
            Outcome::Continue
        } else {
            Outcome::Reject(plain(self.status, self.body.clone()))
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges() {
        assert_eq!(cidr("10.1.2.3"), Cidr::new(ip("10.1.2.3"), 32));
        assert_eq!(cidr("10.1.2.3/8"), Cidr::new(ip("10.0.0.0"), 8));
        assert_eq!(cidr(" 2001:db8::1/32 "), Cidr::new(ip("2001:db8::"), 32));
        assert_eq!(cidr("::/0").prefix, 0);
        assert_eq!(cidr("0.0.0.0/0").prefix, 0);
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/8/8",
            "[::1]",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_ipv4_and_ipv6_ranges() {
        let net = cidr("192.168.0.0/16");
        assert!(net.contains(ip("192.168.255.1")));
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(!net.contains(ip("::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        let v6 = cidr("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(cidr("::/0").contains(ip("fe80::1")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(!cidr("::1").contains(ip("::2")));
        assert!(cidr("10.0.0.1/31").contains(ip("10.0.0.0")));
        assert!(!cidr("10.0.0.1/31").contains(ip("10.0.0.2")));
    }

    #[test]
    fn mapped_addresses_meet_ipv4_rules_both_ways() {
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("::ffff:11.0.0.1")));
        // A mapped rule is an IPv4 rule.
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
        assert!(cidr("::ffff:10.0.0.1").contains(ip("10.0.0.1")));
        // A range wider than the mapped block stays IPv6.
        assert!(!cidr("::ffff:0:0/95").contains(ip("10.0.0.1")));
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops() {
        let trusted = [cidr("10.0.0.0/8"), cidr("fd00::/8")];
        let peer = ip("10.0.0.1");
        let walk = |values: &[&str]| client_address(peer, &xff(values), &trusted);
        assert_eq!(walk(&["1.1.1.1, 2.2.2.2, 10.0.0.2"]), ip("2.2.2.2"));
        // Instances are one list, in order.
        assert_eq!(
            walk(&["9.9.9.9, 1.1.1.1", "10.0.0.3", "10.0.0.2"]),
            ip("1.1.1.1")
        );
        assert_eq!(walk(&["1.1.1.1,fd00::1"]), ip("1.1.1.1"));
        assert_eq!(walk(&["2001:db8::7"]), ip("2001:db8::7"));
        // Ports and brackets, as some proxies write them.
        assert_eq!(walk(&["1.1.1.1:4711, [fd00::2]:80"]), ip("1.1.1.1"));
        assert_eq!(walk(&["[2001:db8::1]"]), ip("2001:db8::1"));
        // All trusted: the left-most. None at all: the peer.
        assert_eq!(walk(&["10.0.0.9, 10.0.0.8"]), ip("10.0.0.9"));
        assert_eq!(walk(&[]), peer);
        // Malformed entries end the walk at the last trusted hop.
        assert_eq!(walk(&["1.1.1.1, garbage, 10.0.0.7"]), ip("10.0.0.7"));
        assert_eq!(walk(&["1.1.1.1, unknown"]), peer);
        assert_eq!(walk(&["1.1.1.1,"]), peer);
        assert_eq!(walk(&["1.1.1.1, 300.1.1.1"]), peer);
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let trusted = [cidr("10.0.0.0/8")];
        let h = xff(&["1.1.1.1"]);
        assert_eq!(client_address(ip("2.2.2.2"), &h, &trusted), ip("2.2.2.2"));
        // A mapped peer is trusted by an IPv4 rule.
        assert_eq!(
            client_address(ip("::ffff:10.1.1.1"), &h, &trusted),
            ip("1.1.1.1")
        );
    }

    #[test]
    fn non_utf8_forwarded_for_is_malformed() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"1.1.1.1, \xff").unwrap(),
        );
        let peer = ip("10.0.0.1");
        assert_eq!(client_address(peer, &h, &[cidr("10.0.0.0/8")]), peer);
    }

    fn plugin(c: IpRestriction) -> Result<Arc<dyn Plugin>, ConfigError> {
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let env = BuildEnv {
            namespace: "default",
            redis: None,
            secret: &|_, _| None,
            consumers: &consumers,
        };
        IpRestrictionPlugin::build(&c, &env)
    }

    #[test]
    fn invalid_entries_name_their_index() {
        let e = plugin(IpRestriction {
            allow: vec!["10.0.0.0/8".into(), "::1".into(), "10.0.0.0/40".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "ipRestriction.allow[2]");
        let e = plugin(IpRestriction {
            deny: vec!["1.1.1.1".into()],
            trusted_proxies: vec!["nope".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "ipRestriction.trustedProxies[0]");
        let e = plugin(IpRestriction {
            deny: vec!["1.1.1.1".into()],
            rejected_code: Some(99),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "ipRestriction.rejectedCode");
        assert!(plugin(IpRestriction::default()).is_err());
    }

    #[test]
    fn deny_wins_over_allow() {
        let allow = Ranges(vec![cidr("10.0.0.0/8")]);
        let deny = Ranges(vec![cidr("10.1.0.0/16")]);
        let p = IpRestrictionPlugin {
            config: IpRestriction::default(),
            allow,
            deny,
            trusted: Vec::new(),
            status: StatusCode::FORBIDDEN,
            body: Bytes::new(),
        };
        assert!(p.permits(ip("10.2.0.1")));
        assert!(!p.permits(ip("10.1.0.1")));
        assert!(!p.permits(ip("11.0.0.1")));
        assert!(p.permits(ip("::ffff:10.2.0.1")));
    }
}
