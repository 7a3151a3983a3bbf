//! Patches: JSON merge patch (RFC 7386) and a simplified server-side apply.
//!
//! Server-side apply is modelled at the granularity of object fields: a
//! manager owns the leaf paths it applied (lists and scalars are leaves,
//! maps are recursed into), recorded in `managedFields[].fieldsV1`. That is
//! enough for the behaviour controllers depend on:
//!
//! - applying sets the fields in the patch and leaves other managers'
//!   fields alone;
//! - a field this manager applied before but omits now is removed, unless
//!   another manager also owns it;
//! - a field owned by another manager with a different value is a 409
//!   conflict unless `force=true`, which transfers ownership;
//! - a repeated identical apply changes nothing (same `managedFields.time`),
//!   so the store's no-op detection keeps the resourceVersion.
//!
//! Not modelled: list-map merging by key (`x-kubernetes-list-type: map`
//! lists are replaced atomically), ownership recorded for Update operations
//! (PUT and merge patch), and schema-aware defaulting.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::ApiError;

/// RFC 7386: objects merge recursively, `null` deletes, anything else
/// replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

type FieldPath = Vec<String>;

/// The leaf paths of `v`: non-empty maps are recursed into, everything
/// else (scalars, lists, empty maps) is a leaf.
fn leaf_paths(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ if !prefix.is_empty() => {
            out.insert(prefix.clone());
        }
        _ => {}
    }
}

/// `{"f:spec": {"f:replicas": {}}}`, the shape of `fieldsV1`.
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let mut cur = &mut root;
        for part in path {
            let Value::Object(map) = cur else { break };
            cur = map
                .entry(format!("f:{part}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

/// The leaf paths recorded in a `fieldsV1` value. Keys other than `f:…`
/// (`.`, `k:…`, `v:…`, written by real servers for list items) make their
/// parent a leaf, which matches how lists are treated here.
fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&str, &Value)> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, c)| k.strip_prefix("f:").map(|k| (k, c)))
                    .collect()
            })
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k.to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Removes the leaf at `path`, then any map it leaves empty below the
/// top-level field (an emptied `spec.selector` goes, `spec` stays).
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
        if map.is_empty() && parents.len() >= 2 {
            remove_path(v, parents);
        }
    }
}

/// The part of an apply patch that a manager sets: for `/status` only
/// `status`; for the main resource everything but identity, `status` (when
/// it is a subresource) and server-owned metadata.
fn scope_patch(patch: &Value, status_sub: bool, res: &ResourceType) -> Value {
    let mut scoped = Map::new();
    let Some(obj) = patch.as_object() else {
        return Value::Object(scoped);
    };
    for (k, v) in obj {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if status_sub || !res.status => {
                scoped.insert(k.clone(), v.clone());
            }
            _ if status_sub => {}
            "status" => {}
            "metadata" => {
                let mut meta = Map::new();
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = v.get(field) {
                        meta.insert(field.to_string(), x.clone());
                    }
                }
                if !meta.is_empty() {
                    scoped.insert(k.clone(), Value::Object(meta));
                }
            }
            _ => {
                scoped.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(scoped)
}

/// One apply request.
pub(super) struct Apply<'a> {
    pub res: &'a ResourceType,
    pub name: &'a str,
    pub manager: &'a str,
    pub force: bool,
    /// Applied to the `/status` subresource.
    pub status_sub: bool,
    /// RFC 3339 timestamp for a changed `managedFields` entry.
    pub now: &'a str,
}

impl Apply<'_> {
    fn is_mine(&self, entry: &Value) -> bool {
        let sub = entry
            .get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("");
        entry.get("manager").and_then(Value::as_str) == Some(self.manager)
            && entry.get("operation").and_then(Value::as_str) == Some("Apply")
            && sub == if self.status_sub { "status" } else { "" }
    }

    /// Applies `patch` to `old` (or to a new object) and returns the result
    /// with updated `managedFields`; the caller restores identity fields
    /// and decides whether anything changed.
    pub fn run(&self, old: Option<&Value>, patch: &Value) -> Result<Value, ApiError> {
        let empty = json!({});
        let base = old.unwrap_or(&empty);
        let scoped = scope_patch(patch, self.status_sub, self.res);
        let mut applied = BTreeSet::new();
        leaf_paths(&scoped, &mut Vec::new(), &mut applied);

        // Entries come from whatever clients wrote; malformed ones are
        // dropped rather than trusted.
        let entries: Vec<Value> = base
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|e| e.is_object()).cloned().collect())
            .unwrap_or_default();
        let mine = entries.iter().position(|e| self.is_mine(e));
        let previously = mine
            .and_then(|i| entries[i].get("fieldsV1"))
            .map(from_fields_v1)
            .unwrap_or_default();
        let others: Vec<(usize, BTreeSet<FieldPath>)> = entries
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != mine)
            .map(|(i, e)| (i, e.get("fieldsV1").map(from_fields_v1).unwrap_or_default()))
            .collect();

        // Fields another manager owns with a different value.
        let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
        for path in &applied {
            if get_path(base, path) == get_path(&scoped, path) {
                continue;
            }
            for (i, owned) in &others {
                if owned.contains(path) {
                    conflicts.push((*i, path.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !self.force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(i, p)| {
                    let who = entries[*i]
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    format!("conflict with \"{who}\": .{}", p.join("."))
                })
                .collect();
            let n = list.len();
            return Err(ApiError::conflict_message(
                self.res,
                self.name,
                format!(
                    "Apply failed with {n} conflict{}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join(", ")
                ),
            ));
        }

        let mut result = base.clone();
        for path in previously.difference(&applied) {
            if !others.iter().any(|(_, owned)| owned.contains(path)) {
                remove_path(&mut result, path);
            }
        }
        merge_patch(&mut result, &scoped);

        // Ownership: forced conflicts move to this manager; equal values
        // are shared, as in real server-side apply.
        let mut new_entries = Vec::new();
        for (i, owned) in &others {
            let taken: BTreeSet<FieldPath> = conflicts
                .iter()
                .filter(|(j, _)| j == i)
                .map(|(_, p)| p.clone())
                .collect();
            let mut entry = entries[*i].clone();
            if !taken.is_empty() {
                let left: BTreeSet<FieldPath> = owned.difference(&taken).cloned().collect();
                if left.is_empty() {
                    continue;
                }
                entry["fieldsV1"] = to_fields_v1(&left);
            }
            new_entries.push(entry);
        }
        let my_index = new_entries.len();
        if !applied.is_empty() {
            let mut entry = json!({
                "manager": self.manager,
                "operation": "Apply",
                "apiVersion": self.res.api_version(),
                "time": mine
                    .and_then(|i| entries[i].get("time").cloned())
                    .unwrap_or_else(|| json!(self.now)),
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&applied),
            });
            if self.status_sub {
                entry["subresource"] = json!("status");
            }
            new_entries.push(entry);
        }
        set_managed_fields(&mut result, new_entries.clone());
        // The entry's time moves only when the object really changes, so a
        // repeated identical apply stays a no-op.
        if old.is_some_and(|old| *old != result) && !applied.is_empty() {
            new_entries[my_index]["time"] = json!(self.now);
            set_managed_fields(&mut result, new_entries);
        }
        Ok(result)
    }
}

fn set_managed_fields(obj: &mut Value, entries: Vec<Value>) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}
