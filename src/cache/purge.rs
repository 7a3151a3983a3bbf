//! Purge by tag: responses name their tags (`Surrogate-Key`, space
//! separated, as Fastly reads it; `Cache-Tag`, comma separated, as
//! Cloudflare does), and the admin API purges every entry of a tag.
//!
//! A purge is a mark, not a search: the time of the purge is recorded per
//! tag, and an entry stored at or before the latest mark of one of its
//! tags is a miss (and removed) when it is next found. Marks live in this
//! process for the memory storage, and in Redis or Memcached for
//! entries there, so that a replica that missed the news still sees the
//! purge. The disk storage removes the files at once (its index knows
//! their tags), so purges survive a restart.
//!
//! Replicas hear of a purge through Redis pub/sub when the gateway has a
//! Redis storage: each applies the purge to its own memory and disk.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName};

use super::freshness::MAX_RETENTION;
use super::key::KeyId;

static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Tags kept per entry, and their longest length.
const MAX_TAGS: usize = 64;
pub const MAX_TAG_LEN: usize = 256;
/// Marks kept in this process before old ones are forgotten.
const MAX_MARKS: usize = 100_000;

/// The tags a response names.
pub fn tags(headers: &HeaderMap) -> Box<[Box<str>]> {
    let mut out: Vec<Box<str>> = Vec::new();
    let split = |name: &HeaderName, sep: fn(char) -> bool| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(move |v| v.split(sep))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_LEN)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let mut found = split(&SURROGATE_KEY, char::is_whitespace);
    found.extend(split(&CACHE_TAG, |c| c == ',' || c.is_whitespace()));
    for t in found {
        if out.len() == MAX_TAGS {
            break;
        }
        if !out.iter().any(|o| **o == *t) {
            out.push(t.into());
        }
    }
    out.into_boxed_slice()
}

/// Whether `tag` can be purged (what [`tags`] would keep).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && !tag.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control())
}

/// The latest purge of each tag in this process.
#[derive(Debug, Default)]
pub struct TagMarks {
    map: RwLock<HashMap<Box<str>, u64>>,
    /// Set once any mark exists: entries are not checked before.
    any: AtomicBool,
}

impl TagMarks {
    /// Records a purge of `tags` at `at` (Unix ms).
    pub fn mark(&self, tags: &[String], at: u64) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in tags {
            let m = map.entry(t.as_str().into()).or_insert(0);
            *m = (*m).max(at);
        }
        if map.len() > MAX_MARKS {
            // Entries older than the longest store lifetime are gone
            // anyway, and with them the need for their marks.
            let horizon = at.saturating_sub(MAX_RETENTION.as_millis() as u64);
            map.retain(|_, m| *m > horizon);
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether an entry with `tags` stored at `stored_at` was purged since.
    pub fn purged(&self, tags: &[Box<str>], stored_at: u64) -> bool {
        if tags.is_empty() || !self.any.load(Ordering::Acquire) {
            return false;
        }
        let map = self
            .map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tags.iter()
            .any(|t| map.get(t).is_some_and(|m| *m >= stored_at))
    }
}

/// A purge as published to other replicas: `sg1 ORIGIN AT t TAG...` for
/// tags, `sg1 ORIGIN AT k KEY...` for the keys a `PURGE` (or an unsafe
/// method) removed.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub origin: u64,
    pub at: u64,
    pub what: Purged,
}

/// What a purge removed.
#[derive(Debug, PartialEq, Eq)]
pub enum Purged {
    Tags(Vec<String>),
    Keys(Vec<KeyId>),
}

impl Message {
    pub fn encode(&self) -> String {
        let mut s = format!("sg1 {:016x} {}", self.origin, self.at);
        match &self.what {
            Purged::Tags(tags) => {
                s.push_str(" t");
                for t in tags {
                    s.push(' ');
                    s.push_str(t);
                }
            }
            Purged::Keys(keys) => {
                s.push_str(" k");
                for k in keys {
                    s.push(' ');
                    s.push_str(&k.hex());
                }
            }
        }
        s
    }

    pub fn decode(text: &str) -> Option<Message> {
        let mut parts = text.split(' ');
        if parts.next()? != "sg1" {
            return None;
        }
        let origin = u64::from_str_radix(parts.next()?, 16).ok()?;
        let at = parts.next()?.parse().ok()?;
        let what = match parts.next()? {
            "t" => {
                let tags: Vec<String> = parts.filter(|t| valid_tag(t)).map(str::to_owned).collect();
                (!tags.is_empty()).then_some(Purged::Tags(tags))?
            }
            "k" => {
                let keys: Vec<KeyId> = parts.filter_map(KeyId::from_hex).collect();
                (!keys.is_empty()).then_some(Purged::Keys(keys))?
            }
            _ => return None,
        };
        Some(Message { origin, at, what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_from_both_fields() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", "product-1  catalog".parse().unwrap());
        h.append("cache-tag", "catalog,home, promo".parse().unwrap());
        let found = tags(&h);
        let t: Vec<&str> = found.iter().map(|t| &**t).collect();
        assert_eq!(t, ["product-1", "catalog", "home", "promo"]);
        assert!(tags(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn marks_purge_what_was_stored_before_them() {
        let m = TagMarks::default();
        let t: Box<[Box<str>]> = vec!["a".into(), "b".into()].into_boxed_slice();
        assert!(!m.purged(&t, 100));
        m.mark(&["b".to_owned()], 200);
        assert!(m.purged(&t, 100));
        assert!(m.purged(&t, 200));
        assert!(!m.purged(&t, 201));
        assert!(!m.purged(&[], 100));
    }

    #[test]
    fn messages_round_trip() {
        let tags = Message {
            origin: 0xabc,
            at: 1_700_000_000_000,
            what: Purged::Tags(vec!["a".into(), "b-2".into()]),
        };
        assert_eq!(Message::decode(&tags.encode()), Some(tags));
        let keys = Message {
            origin: 1,
            at: 2,
            what: Purged::Keys(vec![KeyId([1; 16]), KeyId([0xfe; 16])]),
        };
        assert_eq!(Message::decode(&keys.encode()), Some(keys));
        assert_eq!(Message::decode("hello"), None);
        assert_eq!(Message::decode("sg1 zz 5 t a"), None);
        assert_eq!(Message::decode("sg1 1 5 t"), None);
        assert_eq!(Message::decode("sg1 1 5 k nothex"), None);
        assert_eq!(Message::decode("sg1 1 5 x a"), None);
    }
}
