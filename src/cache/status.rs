//! The `Cache-Status` response field (RFC 9211): how the cache handled a
//! request, as one list member named `sluicegate`, appended after any
//! member a cache closer to the origin added.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Why a request went to the upstream (RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing stored for the key.
    Miss,
    /// Something stored for the key, but not for this request's values
    /// of the fields the response varies on.
    VaryMiss,
    /// The entry was stale.
    Stale,
    /// The entry was fresh, but the request's directives asked for the
    /// upstream.
    Request,
    /// The route does not cache this request (method, `bypass`).
    Bypass,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Miss => "miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
        }
    }
}

/// One `Cache-Status` member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    pub hit: bool,
    pub fwd: Option<Fwd>,
    /// The upstream's status, when it answered a forwarded request.
    pub fwd_status: Option<u16>,
    /// Seconds of freshness left (negative: stale by that much).
    pub ttl: Option<i64>,
    pub stored: bool,
    /// The request waited for another request's response.
    pub collapsed: bool,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn hit(ttl: Duration) -> CacheStatus {
        CacheStatus {
            hit: true,
            ttl: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            ..CacheStatus::default()
        }
    }

    /// A hit on a stale entry, stale by `by`.
    pub fn stale_hit(by: Duration, detail: &'static str) -> CacheStatus {
        CacheStatus {
            hit: true,
            ttl: Some(-i64::try_from(by.as_secs()).unwrap_or(i64::MAX)),
            detail: Some(detail),
            ..CacheStatus::default()
        }
    }

    pub fn forwarded(fwd: Fwd) -> CacheStatus {
        CacheStatus {
            fwd: Some(fwd),
            ..CacheStatus::default()
        }
    }

    /// The member's text.
    pub fn value(&self) -> HeaderValue {
        let mut s = String::from("sluicegate");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={}", f.as_str());
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        // Only ASCII letters, digits and `;=- ` are written.
        HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("sluicegate"))
    }

    /// Appends the member to `headers`.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        headers.append(CACHE_STATUS.clone(), self.value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_read_as_rfc_9211_lists() {
        assert_eq!(
            CacheStatus::hit(Duration::from_secs(30)).value(),
            "sluicegate; hit; ttl=30"
        );
        let miss = CacheStatus {
            stored: true,
            ..CacheStatus::forwarded(Fwd::Miss)
        };
        assert_eq!(miss.value(), "sluicegate; fwd=miss; stored");
        let revalidated = CacheStatus {
            fwd_status: Some(304),
            ..CacheStatus::forwarded(Fwd::Stale)
        };
        assert_eq!(revalidated.value(), "sluicegate; fwd=stale; fwd-status=304");
        assert_eq!(
            CacheStatus::stale_hit(Duration::from_secs(4), "stale-while-revalidate").value(),
            "sluicegate; hit; ttl=-4; detail=stale-while-revalidate"
        );
        let collapsed = CacheStatus {
            collapsed: true,
            ..CacheStatus::forwarded(Fwd::Miss)
        };
        assert_eq!(collapsed.value(), "sluicegate; fwd=miss; collapsed");
        let mut h = HeaderMap::new();
        h.insert("cache-status", "OriginCache; hit".parse().unwrap());
        CacheStatus::forwarded(Fwd::Bypass).add_to(&mut h);
        let all: Vec<_> = h.get_all("cache-status").iter().collect();
        assert_eq!(all, ["OriginCache; hit", "sluicegate; fwd=bypass"]);
    }
}
