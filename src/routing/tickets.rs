//! Session ticket keys: their schedule, and sealing and opening tickets.
//!
//! A ticket is the server's encrypted note of a session, which the client
//! brings back to resume it without a full handshake. Any replica holding
//! the key that sealed it can open it, so replicas that share keys resume
//! each other's sessions behind a load balancer.
//!
//! Keys rotate on a fixed schedule. Each key has a start time; the current
//! key is the newest that has started, and it seals new tickets; every key
//! held opens them. The schedule ([`plan`]) keeps three keys: the previous
//! one (until the tickets it sealed expire), the current one, and the next
//! one, published a whole period before it starts so that every replica
//! has it before any replica seals with it. Tickets live one period, so a
//! key exists for at most three periods: one ahead, one sealing, one
//! opening.
//!
//! A ticket is `key id (4) ‖ nonce (12) ‖ AES-256-GCM ciphertext and tag`;
//! the associated data binds the key id and a context (the client
//! authentication setting the session was made under), so a ticket never
//! resumes a session under another setting. Nonces are random: a key may
//! seal about 2^32 tickets before a repeated nonce becomes a concern,
//! which a period of 6 hours reaches only beyond 200,000 tickets a second.
//! rustls' own ticketer is not used because its keys cannot be shared or
//! scheduled.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

/// Prefix of the Secret data keys that hold ticket keys; the rest of the
/// name is the key's start time in Unix seconds.
pub const DATA_PREFIX: &str = "ticket-key-";

/// Length of a ticket key's secret.
pub const KEY_LEN: usize = 32;

const ID_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// A ticket key as stored: its secret and when it starts sealing.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKeyMaterial {
    /// Unix seconds.
    pub not_before: u64,
    pub secret: [u8; KEY_LEN],
}

impl fmt::Debug for TicketKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeyMaterial")
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}

impl TicketKeyMaterial {
    /// The Secret data key it is stored under.
    pub fn data_key(&self) -> String {
        format!("{DATA_PREFIX}{}", self.not_before)
    }

    /// A new key starting at `not_before`, from the system's random source.
    pub fn generate(not_before: u64) -> Option<TicketKeyMaterial> {
        let mut secret = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut secret).ok()?;
        Some(TicketKeyMaterial { not_before, secret })
    }
}

struct TicketKey {
    id: [u8; ID_LEN],
    not_before: u64,
    key: LessSafeKey,
}

/// Keys ready to seal and open tickets, oldest first.
pub struct TicketKeySet {
    keys: Vec<TicketKey>,
}

impl fmt::Debug for TicketKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.summary()).finish()
    }
}

/// `/routes` shows the keys' ids and start times.
impl Serialize for TicketKeySet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.summary().serialize(s)
    }
}

/// What `/routes` shows of a key: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketKeySummary {
    /// The id tickets carry, in hex.
    pub id: String,
    /// Unix seconds.
    pub not_before: u64,
}

/// The id tickets carry: the start of a digest of the secret, so every
/// replica derives the same one and no secret bit is shown.
fn key_id(secret: &[u8; KEY_LEN]) -> [u8; ID_LEN] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret);
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..ID_LEN]);
    id
}

impl TicketKeySet {
    /// Prepares `material` (any order). `None` when it is empty.
    pub fn new(material: &[TicketKeyMaterial]) -> Option<TicketKeySet> {
        let mut keys: Vec<TicketKey> = material
            .iter()
            .filter_map(|m| {
                let key = UnboundKey::new(&AES_256_GCM, &m.secret).ok()?;
                Some(TicketKey {
                    id: key_id(&m.secret),
                    not_before: m.not_before,
                    key: LessSafeKey::new(key),
                })
            })
            .collect();
        keys.sort_by_key(|k| k.not_before);
        (!keys.is_empty()).then_some(TicketKeySet { keys })
    }

    /// The key that seals at `now`: the newest that has started, or the
    /// oldest if none has (a clock behind the writer's).
    fn current(&self, now: u64) -> Option<&TicketKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.not_before <= now)
            .or_else(|| self.keys.first())
    }

    /// When the current key at `now` retires (its successor starts).
    pub fn next_change(&self, now: u64) -> Option<u64> {
        self.keys.iter().map(|k| k.not_before).find(|&t| t > now)
    }

    /// Seals `plain` with the key current at `now`, bound to `context`.
    pub fn seal(&self, now: u64, context: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.current(now)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let aad = aad(&key.id, context);
        let tag = key
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut out[ID_LEN + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Opens a ticket sealed by any key of the set under `context`.
    pub fn open(&self, context: &[u8], ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < ID_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (id, rest) = ticket.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).ok()?;
        // Ids are 32 bits of a digest: two keys of a set could share one,
        // so every key with the id is tried.
        self.keys.iter().filter(|k| k.id == id).find_map(|k| {
            let mut buf = sealed.to_vec();
            let aad = aad(&k.id, context);
            let plain = k
                .key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..]),
                    &mut buf,
                )
                .ok()?;
            let n = plain.len();
            buf.truncate(n);
            Some(buf)
        })
    }

    /// The keys, oldest first, without their secrets.
    pub fn summary(&self) -> Vec<TicketKeySummary> {
        self.keys
            .iter()
            .map(|k| TicketKeySummary {
                id: k.id.iter().map(|b| format!("{b:02x}")).collect(),
                not_before: k.not_before,
            })
            .collect()
    }
}

fn aad(id: &[u8; ID_LEN], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ID_LEN + context.len());
    aad.extend_from_slice(id);
    aad.extend_from_slice(context);
    aad
}

/// The keys a set should hold at `now` for rotation every `period`
/// seconds, given the keys it holds: `None` when they are right already.
///
/// - Without a key that has started, one starting now is made.
/// - With no key after the current one, the next is made to start one
///   period after the current one (or now, if that is past).
/// - A key is dropped once the tickets it sealed have expired: one period
///   (the tickets' lifetime) after its successor started.
///
/// `fresh` makes a key starting at the time given.
pub fn plan(
    held: &[TicketKeyMaterial],
    now: u64,
    period: u64,
    mut fresh: impl FnMut(u64) -> Option<TicketKeyMaterial>,
) -> Option<Vec<TicketKeyMaterial>> {
    let period = period.max(1);
    let mut keys: Vec<TicketKeyMaterial> = held.to_vec();
    keys.sort_by_key(|k| k.not_before);
    keys.dedup_by_key(|k| k.not_before);
    if !keys.iter().any(|k| k.not_before <= now) {
        keys.insert(0, fresh(now)?);
    }
    // A successor for the current key; if it starts at once (the writer
    // was away for more than a period), one for it too.
    let current = loop {
        let current = keys.iter().rposition(|k| k.not_before <= now)?;
        if current + 1 < keys.len() {
            break current;
        }
        let start = (keys[current].not_before + period).max(now);
        keys.push(fresh(start)?);
    };
    // Keys before the current one: each is needed until one period after
    // its successor started.
    let mut keep = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let needed = match keys.get(i + 1) {
            Some(next) if i < current => next.not_before + period > now,
            _ => true,
        };
        if needed {
            keep.push(k.clone());
        }
    }
    let mut before = held.to_vec();
    before.sort_by_key(|k| k.not_before);
    (keep != before).then_some(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(not_before: u64, fill: u8) -> TicketKeyMaterial {
        TicketKeyMaterial {
            not_before,
            secret: [fill; KEY_LEN],
        }
    }

    fn fresh(fill: u8) -> impl FnMut(u64) -> Option<TicketKeyMaterial> {
        move |t| Some(key(t, fill))
    }

    fn starts(keys: &[TicketKeyMaterial]) -> Vec<u64> {
        keys.iter().map(|k| k.not_before).collect()
    }

    #[test]
    fn the_schedule_keeps_previous_current_and_next() {
        let period = 100;
        // Empty: one key now, the next one period later.
        let keys = plan(&[], 1000, period, fresh(1)).unwrap();
        assert_eq!(starts(&keys), [1000, 1100]);
        // Nothing to do until the next key starts.
        assert_eq!(plan(&keys, 1050, period, fresh(2)), None);
        assert_eq!(plan(&keys, 1099, period, fresh(2)), None);
        // The next key starts: a new next one, the old one stays to open
        // its tickets.
        let keys = plan(&keys, 1100, period, fresh(2)).unwrap();
        assert_eq!(starts(&keys), [1000, 1100, 1200]);
        // Its tickets expire one period after it retired.
        assert_eq!(plan(&keys, 1199, period, fresh(3)), None);
        let keys = plan(&keys, 1200, period, fresh(3)).unwrap();
        assert_eq!(starts(&keys), [1100, 1200, 1300]);
        // After a long outage of the writer: a key from now and its
        // successor; the last one opens its tickets for a period more,
        // the stale ones go.
        let keys = plan(&keys, 5000, period, fresh(4)).unwrap();
        assert_eq!(starts(&keys), [1300, 5000, 5100]);
        assert_eq!(plan(&keys, 5000, period, fresh(5)), None);
    }

    #[test]
    fn keys_only_in_the_future_get_a_current_one() {
        // A writer whose clock runs ahead made them.
        let keys = plan(&[key(2000, 1)], 1000, 100, fresh(2)).unwrap();
        assert_eq!(starts(&keys), [1000, 2000]);
    }

    #[test]
    fn tickets_open_with_any_held_key_and_only_in_their_context() {
        let old = TicketKeySet::new(&[key(100, 1)]).unwrap();
        let both = TicketKeySet::new(&[key(200, 2), key(100, 1)]).unwrap();
        let ticket = old.seal(150, b"ctx", b"session").unwrap();
        assert_eq!(both.open(b"ctx", &ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(old.open(b"ctx", &ticket).as_deref(), Some(&b"session"[..]));
        // Another client authentication setting: refused.
        assert_eq!(both.open(b"other", &ticket), None);
        // The current key seals: the newest that has started.
        let new = both.seal(250, b"ctx", b"s2").unwrap();
        assert_eq!(old.open(b"ctx", &new), None);
        assert_eq!(both.open(b"ctx", &new).as_deref(), Some(&b"s2"[..]));
        assert_eq!(&new[..4], &key_id(&[2; KEY_LEN]));
        // Before either started, the oldest seals.
        assert_eq!(
            &both.seal(50, b"", b"x").unwrap()[..4],
            &key_id(&[1; KEY_LEN])
        );
        // Tampering, truncation, unknown keys.
        let mut bad = ticket.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(both.open(b"ctx", &bad), None);
        assert_eq!(both.open(b"ctx", &ticket[..20]), None);
        let other = TicketKeySet::new(&[key(100, 9)]).unwrap();
        assert_eq!(other.open(b"ctx", &ticket), None);
        assert_eq!(both.next_change(150), Some(200));
        assert_eq!(both.next_change(250), None);
        assert!(TicketKeySet::new(&[]).is_none());
        // Summaries never show the secret.
        let shown = format!("{both:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
