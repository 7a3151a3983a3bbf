//! The object store: current objects, the change history that watches and
//! consistent paginated lists are served from, and the open watches.
//!
//! It models etcd behind the API server's watch cache:
//!
//! - one global resourceVersion counter, bumped by every write of any kind;
//! - a write that changes nothing is not a write (no new resourceVersion,
//!   no event), as the real server's no-op detection does;
//! - history since the last compaction is kept in full, so a watch from any
//!   resourceVersion since then replays exactly the missed events, and a
//!   list at an older resourceVersion (`Exact`, or a `continue` token) sees
//!   that snapshot; anything older is 410 Gone.
//!
//! Everything here is synchronous and runs under the one store mutex: a
//! write appends to the history and queues its event on every matching
//! watch in the same critical section, so a watch registered under the
//! lock sees every change exactly once, in order.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::resources::{RESOURCES, ResId, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
/// Ordering by this key is the real server's list order.
pub(super) type Key = (String, String);

/// The key of a (validated) object.
pub(super) fn key_of(obj: &Value) -> Key {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept in the history.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    res: ResId,
    key: Key,
    kind: ChangeKind,
    /// The object after the change; for a deletion, its final state (with
    /// the deletion's resourceVersion), as in a real DELETED event.
    object: Value,
    /// The object before the change, to tell selector watches whether an
    /// object entered or left their selection.
    prev: Option<Value>,
}

/// What a watch (or list) is restricted to.
#[derive(Debug, Clone)]
pub(super) struct Selection {
    pub res: ResId,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selection {
    fn matches(&self, obj: &Value) -> bool {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

/// Where a new watch starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum WatchFrom {
    /// `resourceVersion` unset or `"0"`: synthetic ADDED events for the
    /// current objects, then live events.
    Current,
    /// `sendInitialEvents=true`: like `Current`, then a BOOKMARK annotated
    /// `k8s.io/initial-events-end`.
    InitialEvents,
    /// Every event after this resourceVersion.
    After(u64),
}

struct Watch {
    sel: Selection,
    bookmarks: bool,
    /// The resourceVersion the watch started from; bookmarks never go
    /// below it.
    start_rv: u64,
    tx: mpsc::UnboundedSender<Bytes>,
}

/// List parameters after parsing (selectors are already validated).
#[derive(Debug, Default)]
pub(super) struct ListParams<'a> {
    pub limit: Option<usize>,
    pub continue_token: Option<&'a str>,
    pub resource_version: Option<&'a str>,
    pub version_match: Option<&'a str>,
}

pub(super) struct Store {
    /// The last resourceVersion handed out.
    rv: u64,
    /// The resourceVersion of the last write (`rv` can be ahead of it after
    /// a compaction).
    last_write_rv: u64,
    /// resourceVersions below this are forgotten (410 Gone).
    compacted_rv: u64,
    /// Current objects, per resource.
    objects: Vec<BTreeMap<Key, Value>>,
    /// The objects as they were at `compacted_rv`; with `history` this
    /// rebuilds any snapshot since then.
    base: Vec<BTreeMap<Key, Value>>,
    /// Every change after `compacted_rv`, in resourceVersion order.
    history: Vec<Change>,
    watches: Vec<Watch>,
    next_uid: u64,
    /// Outage simulation (`ApiServer::set_down`).
    pub down: bool,
    /// API groups not served, as if their CRDs were not installed
    /// (`ApiServer::hide_group`).
    pub hidden_groups: Vec<String>,
}

impl Store {
    pub fn new() -> Store {
        Store {
            rv: 0,
            last_write_rv: 0,
            compacted_rv: 0,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            base: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: Vec::new(),
            watches: Vec::new(),
            next_uid: 0,
            down: false,
            hidden_groups: Vec::new(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, res: ResId, key: &Key) -> Option<&Value> {
        self.objects[res].get(key)
    }

    pub fn objects(&self, res: ResId) -> impl Iterator<Item = &Value> {
        self.objects[res].values()
    }

    /// A name for `metadata.generateName`: the prefix plus five characters
    /// from the real server's alphabet.
    pub fn generate_name(&mut self, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.next_uid += 1;
        let mut x = self
            .next_uid
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        let suffix: String = (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
                x /= ALPHABET.len() as u64;
                c
            })
            .collect();
        format!("{prefix}{suffix}")
    }

    /// Stores a new object (already validated, with name and namespace set)
    /// and assigns what the server owns: uid, creationTimestamp,
    /// generation 1 and a resourceVersion.
    pub fn create(&mut self, res: ResId, mut obj: Value) -> Result<Value, ApiError> {
        let key = key_of(&obj);
        if self.objects[res].contains_key(&key) {
            return Err(ApiError::already_exists(&RESOURCES[res], &key.1));
        }
        self.next_uid += 1;
        self.rv += 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "uid".into(),
                json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid)),
            );
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.insert("generation".into(), json!(1));
            meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        self.objects[res].insert(key.clone(), obj.clone());
        self.record(res, key, ChangeKind::Added, obj.clone(), None);
        Ok(obj)
    }

    /// Replaces an existing object with `new`, built by [`prepare_update`]
    /// (so it still carries the old resourceVersion). An identical object
    /// is a no-op: the stored object comes back unchanged and no event is
    /// sent.
    pub fn update(&mut self, res: ResId, mut new: Value) -> Value {
        let key = key_of(&new);
        let Some(old) = self.objects[res].get(&key) else {
            // The caller looked the object up under the same lock.
            return new;
        };
        if *old == new {
            return old.clone();
        }
        let prev = old.clone();
        self.rv += 1;
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        self.objects[res].insert(key.clone(), new.clone());
        self.record(res, key, ChangeKind::Modified, new.clone(), Some(prev));
        new
    }

    /// Deletes an object; its DELETED event carries the final state with a
    /// new resourceVersion.
    pub fn remove(&mut self, res: ResId, key: &Key) -> Option<Value> {
        let prev = self.objects[res].remove(key)?;
        self.rv += 1;
        let mut last = prev.clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        }
        self.record(
            res,
            key.clone(),
            ChangeKind::Deleted,
            last.clone(),
            Some(prev),
        );
        Some(last)
    }

    fn record(
        &mut self,
        res: ResId,
        key: Key,
        kind: ChangeKind,
        object: Value,
        prev: Option<Value>,
    ) {
        self.last_write_rv = self.rv;
        let change = Change {
            rv: self.rv,
            res,
            key,
            kind,
            object,
            prev,
        };
        // Dropped receivers (ended or disconnected watches) go here.
        self.watches.retain(|w| match event_line(&w.sel, &change) {
            Some(line) => w.tx.send(line).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }

    /// Forgets the history. The counter moves past every resourceVersion
    /// handed out so far (etcd's revision also moves with writes to other
    /// kinds, so a gap is normal), which makes every earlier
    /// resourceVersion too old: a client resuming from one gets 410 and
    /// must relist. Open watches are not touched (see `close_watches`).
    pub fn compact(&mut self) {
        self.rv += 1;
        self.compacted_rv = self.rv;
        self.base = self.objects.clone();
        self.history.clear();
    }

    /// Ends every open watch; queued events are still delivered first.
    pub fn close_watches(&mut self) {
        self.watches.clear();
    }

    /// Sends a BOOKMARK to every watch that asked for them. It carries the
    /// last write's resourceVersion (never less than where the watch
    /// started): every event up to it is already queued on the watch, so
    /// resuming from it loses nothing. The compaction bump is not a write,
    /// so a bookmark never lets a watcher skip the 410 that `compact`
    /// promises.
    pub fn bookmark_all(&mut self) {
        let last_write = self.last_write_rv;
        self.watches.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let rv = last_write.max(w.start_rv);
            w.tx.send(bookmark_line(&RESOURCES[w.sel.res], rv, false))
                .is_ok()
        });
    }

    /// The objects of `res` as of `rv`.
    fn state_at(&self, res: ResId, rv: u64) -> Result<Cow<'_, BTreeMap<Key, Value>>, ApiError> {
        if rv < self.compacted_rv {
            return Err(too_old(rv, self.compacted_rv));
        }
        if rv >= self.last_write_rv {
            return Ok(Cow::Borrowed(&self.objects[res]));
        }
        let mut state = self.base[res].clone();
        for change in self.history.iter().take_while(|c| c.rv <= rv) {
            if change.res != res {
                continue;
            }
            if change.kind == ChangeKind::Deleted {
                state.remove(&change.key);
            } else {
                state.insert(change.key.clone(), change.object.clone());
            }
        }
        Ok(Cow::Owned(state))
    }

    /// A LIST response, following the real server's resourceVersion
    /// semantics:
    ///
    /// - unset: the most recent state;
    /// - `"0"` or `NotOlderThan`: any state not older than the given
    ///   version; here always the current one;
    /// - `Exact`: that snapshot, 410 if compacted away;
    /// - newer than the current version: 504 "Too large resource version";
    /// - `continue`: the snapshot of the first page (encoded in the token),
    ///   so pages are consistent; 410 once compacted away.
    pub fn list(&self, sel: &Selection, p: &ListParams) -> Result<Value, ApiError> {
        let version_match = match p.version_match {
            None => None,
            Some(m @ ("Exact" | "NotOlderThan")) => Some(m),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
        };
        if version_match.is_some() && p.resource_version.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        let (snapshot_rv, after) = if let Some(token) = p.continue_token {
            if version_match.is_some() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if p.resource_version.is_some_and(|rv| rv != "0") {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rv, key) = decode_continue(token)?;
            if rv < self.compacted_rv {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some(key))
        } else {
            match (p.resource_version, version_match) {
                // (`None` with a match was rejected above.)
                (None, _) | (Some("0"), None | Some("NotOlderThan")) => (self.rv, None),
                (Some("0"), Some(_)) => {
                    return Err(ApiError::bad_request(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
                (Some(rv), m) => {
                    let rv = parse_rv(rv)?;
                    if rv > self.rv {
                        return Err(ApiError::too_large_resource_version(rv, self.rv));
                    }
                    if m == Some("Exact") {
                        (rv, None)
                    } else {
                        (self.rv, None)
                    }
                }
            }
        };

        let state = self.state_at(sel.res, snapshot_rv)?;
        let mut items = Vec::new();
        let mut last_key: Option<&Key> = None;
        let mut remaining = 0usize;
        let candidates = state
            .iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
            .filter(|(_, o)| sel.matches(o));
        for (key, obj) in candidates {
            if p.limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
            } else {
                items.push(obj.clone());
                last_key = Some(key);
            }
        }
        let res = &RESOURCES[sel.res];
        let mut metadata = json!({"resourceVersion": snapshot_rv.to_string()});
        if remaining > 0
            && let Some(key) = last_key
        {
            metadata["continue"] = json!(encode_continue(snapshot_rv, key));
            metadata["remainingItemCount"] = json!(remaining);
        }
        Ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Opens a watch. Its first lines (replayed history or the current
    /// objects, or a 410 ERROR) are queued before this returns, under the
    /// same lock as every write, so nothing is missed or doubled.
    pub fn watch(
        &mut self,
        sel: Selection,
        from: WatchFrom,
        bookmarks: bool,
    ) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let res = &RESOURCES[sel.res];
        let start_rv = match from {
            WatchFrom::After(rv) if rv < self.compacted_rv => {
                // The real server answers 200 and sends one ERROR event;
                // kube-runtime's watcher then relists.
                let status = too_old(rv, self.compacted_rv).to_status();
                let _ = tx.send(line(json!({"type": "ERROR", "object": status})));
                return rx;
            }
            WatchFrom::After(rv) => {
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some(l) = event_line(&sel, change) {
                        let _ = tx.send(l);
                    }
                }
                rv
            }
            WatchFrom::Current | WatchFrom::InitialEvents => {
                for obj in self.objects[sel.res].values().filter(|o| sel.matches(o)) {
                    let _ = tx.send(line(json!({"type": "ADDED", "object": obj})));
                }
                if matches!(from, WatchFrom::InitialEvents) {
                    let _ = tx.send(bookmark_line(res, self.rv, true));
                }
                self.rv
            }
        };
        self.watches.push(Watch {
            sel,
            bookmarks,
            start_rv,
            tx,
        });
        rx
    }
}

fn too_old(rv: u64, compacted: u64) -> ApiError {
    ApiError::expired(format!("too old resource version: {rv} ({compacted})"))
}

pub(super) fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: \"{rv}\": must be an unsigned integer"
        ))
    })
}

fn line(event: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The watch line `change` produces for `sel`, if any. Like the real watch
/// cache, an object entering the selection is ADDED and one leaving it is
/// DELETED.
fn event_line(sel: &Selection, change: &Change) -> Option<Bytes> {
    if change.res != sel.res {
        return None;
    }
    let now = sel.matches(&change.object);
    let before = change.prev.as_ref().is_some_and(|p| sel.matches(p));
    let kind = match change.kind {
        ChangeKind::Added => now.then_some("ADDED"),
        ChangeKind::Deleted => before.then_some("DELETED"),
        ChangeKind::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, true) => Some("ADDED"),
            (false, false) => None,
        },
    }?;
    Some(line(json!({"type": kind, "object": change.object})))
}

fn bookmark_line(res: &ResourceType, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(json!({
        "type": "BOOKMARK",
        "object": {
            "kind": res.kind,
            "apiVersion": res.api_version(),
            "metadata": metadata,
        },
    }))
}

/// Continue tokens are opaque to clients; this one is the hex of
/// `[snapshot rv, namespace, name]` of the last item returned.
fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!([rv, key.0, key.1]).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let (rv, ns, name): (u64, String, String) =
        serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    Ok((rv, (ns, name)))
}

/// The fields that count for `metadata.generation`: everything but
/// metadata and status (and the type, which cannot change).
fn spec_part(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(field.to_string(), v.clone());
            }
            None => {
                map.remove(field);
            }
        }
    }
}

/// The object an update of `old` stores, given the `candidate` the client
/// sent (PUT body, patched object, or apply result):
///
/// - on `/status`, only `status` (and `managedFields`) come from the
///   candidate;
/// - on the main resource of a kind with a status subresource, `status` is
///   kept from `old`;
/// - server-owned metadata (uid, creationTimestamp, resourceVersion,
///   generation, name, namespace) is kept; omitted `managedFields` are kept;
/// - generation goes up by one when anything outside metadata and status
///   changed.
pub(super) fn prepare_update(
    res: &ResourceType,
    old: &Value,
    candidate: Value,
    status_sub: bool,
) -> Value {
    let mut out = if status_sub {
        let mut out = old.clone();
        set_or_remove(&mut out, "status", candidate.get("status"));
        if let Some(mf) = candidate.pointer("/metadata/managedFields")
            && let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert("managedFields".into(), mf.clone());
        }
        out
    } else {
        let mut out = match candidate {
            Value::Object(_) => candidate,
            _ => json!({}),
        };
        if res.status {
            set_or_remove(&mut out, "status", old.get("status"));
        }
        if !out.get("metadata").is_some_and(Value::is_object) {
            out["metadata"] = json!({});
        }
        let old_meta = old.get("metadata");
        if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "resourceVersion",
                "generation",
                "deletionTimestamp",
            ] {
                match old_meta.and_then(|m| m.get(field)) {
                    Some(v) => meta.insert(field.to_string(), v.clone()),
                    None => meta.remove(field),
                };
            }
            if !meta.contains_key("managedFields")
                && let Some(mf) = old_meta.and_then(|m| m.get("managedFields"))
            {
                meta.insert("managedFields".into(), mf.clone());
            }
        }
        out
    };
    out["apiVersion"] = json!(res.api_version());
    out["kind"] = json!(res.kind);
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if spec_part(&out) != spec_part(old) {
        out["metadata"]["generation"] = json!(generation + 1);
    }
    out
}

/// The real server's check for most object names: a lowercase RFC 1123
/// subdomain.
pub(super) fn validate_name(res: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res,
            name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of \
                 lower case alphanumeric characters, '-' or '.', and must start and end with an \
                 alphanumeric character"
            ),
        ))
    }
}

/// The current time as a `metav1.Time` (RFC 3339, seconds, UTC).
pub(super) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
