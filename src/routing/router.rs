//! The host and path index that finds a request's route.
//!
//! Every (route, path) pair gets a global rank from the precedence rules
//! (see [`crate::translate`]); a lower rank wins. Pairs are indexed under
//! their hosts: exact hosts and wildcard suffixes in hash maps, then per
//! host an exact-path map, a trie of prefix path elements, and a list of
//! regular expressions. A lookup visits one hash entry per exact path, one
//! trie node per path element and the regexes of the host, stopping early
//! once no candidate can beat the best match so far. Nothing allocates.

use foldhash::{HashMap, HashMapExt};

use super::matcher::RequestView;
use super::spec::{HostMatch, PathSpec, Pattern, RouteSpec};
use super::table::Route;

/// A candidate: the route's index in the table and the pair's rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    rank: u32,
    route: u32,
}

/// Most keys a [`TextMap`] scans in order before it switches to hashing.
const SCAN_MAX: usize = 8;

/// Values by text key. Path elements and exact paths are few per node or
/// host: comparing a handful of short keys is cheaper than hashing one,
/// and a short list costs one allocation where a map costs one per node.
/// A map holds the keys beyond that, so a wide node stays cheap to search.
#[derive(Debug)]
enum TextMap<V> {
    Scan(Vec<(Box<str>, V)>),
    Hash(HashMap<Box<str>, V>),
}

impl<V> Default for TextMap<V> {
    fn default() -> Self {
        TextMap::Scan(Vec::new())
    }
}

impl<V> TextMap<V> {
    fn get(&self, key: &str) -> Option<&V> {
        match self {
            TextMap::Scan(items) => items.iter().find(|(k, _)| **k == *key).map(|(_, v)| v),
            TextMap::Hash(map) => map.get(key),
        }
    }

    /// The value for `key`, inserting `new()` first if there is none.
    fn get_or_insert_with(&mut self, key: &str, new: impl FnOnce() -> V) -> &mut V {
        if let TextMap::Scan(items) = self
            && items.len() >= SCAN_MAX
            && !items.iter().any(|(k, _)| **k == *key)
        {
            let mut map = HashMap::with_capacity(items.len() * 2);
            map.extend(items.drain(..));
            *self = TextMap::Hash(map);
        }
        match self {
            TextMap::Scan(items) => {
                let i = match items.iter().position(|(k, _)| **k == *key) {
                    Some(i) => i,
                    None => {
                        items.push((key.into(), new()));
                        items.len() - 1
                    }
                };
                &mut items[i].1
            }
            TextMap::Hash(map) => map.entry(key.into()).or_insert_with(new),
        }
    }
}

/// The entries of one path, in rank order. Most paths have one, which is
/// then kept without an allocation of its own.
#[derive(Debug, Default)]
enum Entries {
    #[default]
    None,
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        *self = match std::mem::take(self) {
            Entries::None => Entries::One(entry),
            Entries::One(first) => Entries::Many(vec![first, entry]),
            Entries::Many(mut all) => {
                all.push(entry);
                Entries::Many(all)
            }
        };
    }

    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::None => &[],
            Entries::One(entry) => std::slice::from_ref(entry),
            Entries::Many(all) => all,
        }
    }
}

#[derive(Debug, Default)]
struct TrieNode {
    children: TextMap<u32>,
    entries: Entries,
}

/// The routes of one host group. Pairs are inserted in rank order, so
/// every list of entries is sorted by rank.
#[derive(Debug, Default)]
struct HostIndex {
    exact: TextMap<Entries>,
    /// Node 0 is the root, holding prefix `/`.
    trie: Vec<TrieNode>,
    regex: Vec<(Pattern, Entry)>,
}

impl HostIndex {
    fn insert(&mut self, path: &PathSpec, entry: Entry) {
        match path {
            PathSpec::Exact(p) => self
                .exact
                .get_or_insert_with(p, Entries::default)
                .push(entry),
            PathSpec::Prefix(p) => {
                if self.trie.is_empty() {
                    self.trie.push(TrieNode::default());
                }
                let mut node = 0usize;
                for seg in segments(p) {
                    let len = self.trie.len() as u32;
                    let mut added = false;
                    let next = *self.trie[node].children.get_or_insert_with(seg, || {
                        added = true;
                        len
                    });
                    if added {
                        self.trie.push(TrieNode::default());
                    }
                    node = next as usize;
                }
                self.trie[node].entries.push(entry);
            }
            PathSpec::RegularExpression(p) => self.regex.push((p.clone(), entry)),
        }
    }

    /// The best-ranked entry whose route's other conditions hold, for a
    /// request in listener slot `slot`.
    fn best(
        &self,
        req: &RequestView<'_>,
        routes: &[std::sync::Arc<Route>],
        slot: Option<u32>,
    ) -> Option<Entry> {
        let mut best: Option<Entry> = None;
        let mut consider = |entries: &[Entry]| {
            for e in entries {
                if best.is_some_and(|b| b.rank <= e.rank) {
                    break;
                }
                if routes[e.route as usize].matches(req, slot) {
                    best = Some(*e);
                    break;
                }
            }
        };
        if let Some(v) = self.exact.get(req.path) {
            consider(v.as_slice());
        }
        if let Some(mut node) = self.trie.first() {
            consider(node.entries.as_slice());
            for seg in segments(req.path) {
                match node.children.get(seg) {
                    Some(&n) => node = &self.trie[n as usize],
                    None => break,
                }
                consider(node.entries.as_slice());
            }
        }
        for (pattern, e) in &self.regex {
            if best.is_some_and(|b| b.rank <= e.rank) {
                break;
            }
            if pattern.is_match(req.path) && routes[e.route as usize].matches(req, slot) {
                best = Some(*e);
            }
        }
        best
    }
}

impl HostIndex {
    /// Every entry whose path matches `path`, conditions aside, in rank
    /// order.
    fn matching(&self, path: &str) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        if let Some(v) = self.exact.get(path) {
            out.extend_from_slice(v.as_slice());
        }
        if let Some(mut node) = self.trie.first() {
            out.extend_from_slice(node.entries.as_slice());
            for seg in segments(path) {
                match node.children.get(seg) {
                    Some(&n) => node = &self.trie[n as usize],
                    None => break,
                }
                out.extend_from_slice(node.entries.as_slice());
            }
        }
        out.extend(
            self.regex
                .iter()
                .filter(|(p, _)| p.is_match(path))
                .map(|(_, e)| *e),
        );
        out.sort_unstable();
        out
    }
}

/// Which host group of the index a candidate was found in; groups are
/// tried in this order, and a route found in one beats any of the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostGroup {
    Exact(String),
    /// The part after `*.`.
    Wildcard(String),
    Any,
}

/// A (route, path) pair whose host and path match a request.
#[derive(Debug)]
pub(super) struct Found<'r> {
    pub group: HostGroup,
    pub rank: u32,
    pub route: usize,
    pub key: &'r RankKey,
    pub path: &'r PathSpec,
}

impl Router {
    /// Every pair whose host and path match `req`, whatever its other
    /// conditions: the host groups in the order [`Router::find`] tries
    /// them, each in rank order. A separate walk over the same index, so
    /// that `find` stays as it is.
    pub(super) fn candidates(&self, req: &RequestView<'_>) -> Vec<Found<'_>> {
        let mut groups: Vec<(HostGroup, &HostIndex)> = Vec::new();
        if let Some(&i) = self.exact_hosts.get(req.host) {
            groups.push((
                HostGroup::Exact(req.host.to_owned()),
                &self.hosts[i as usize],
            ));
        }
        if let Some((label, parent)) = req.host.split_once('.')
            && !label.is_empty()
            && let Some(&i) = self.wildcard_hosts.get(parent)
        {
            groups.push((
                HostGroup::Wildcard(parent.to_owned()),
                &self.hosts[i as usize],
            ));
        }
        // The Gateway API's wildcards, longest suffix first, as find() has them.
        if let Some((label, parent)) = req.host.split_once('.')
            && !label.is_empty()
            && !self.suffix_hosts.is_empty()
        {
            let mut rest = parent;
            loop {
                if let Some(&i) = self.suffix_hosts.get(rest) {
                    groups.push((
                        HostGroup::Wildcard(rest.to_owned()),
                        &self.hosts[i as usize],
                    ));
                }
                match rest.split_once('.') {
                    Some((label, next)) if !label.is_empty() => rest = next,
                    _ => break,
                }
            }
        }
        groups.push((HostGroup::Any, &self.any_host));
        let mut out = Vec::new();
        for (group, index) in groups {
            for e in index.matching(req.path) {
                let (key, path) = &self.ranked[e.rank as usize];
                out.push(Found {
                    group: group.clone(),
                    rank: e.rank,
                    route: e.route as usize,
                    key,
                    path,
                });
            }
        }
        out
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Host groups from most to least specific. Hosts map to positions in
/// `hosts`, which lets the build find or add a host with a borrowed name.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, u32>,
    wildcard_hosts: HashMap<Box<str>, u32>,
    /// Gateway API wildcards, which cover any number of labels.
    suffix_hosts: HashMap<Box<str>, u32>,
    hosts: Vec<HostIndex>,
    any_host: HostIndex,
    /// Each rank's sort key and path, for [`Router::candidates`]: the
    /// explanation of a decision reads them, matching never does.
    ranked: Vec<(RankKey, PathSpec)>,
}

impl Router {
    /// Builds the index for `specs`, whose compiled routes are `routes`
    /// (same order).
    pub(crate) fn build(specs: &[RouteSpec]) -> Router {
        Self::build_from(specs, 0..specs.len() as u32)
    }

    /// Builds the index for the routes of `specs` at positions `members`
    /// (ascending); entries keep the positions in `specs`, so that they
    /// index the table's compiled routes.
    pub(crate) fn build_from(
        specs: &[RouteSpec],
        members: impl ExactSizeIterator<Item = u32>,
    ) -> Router {
        let mut router = Router::default();
        // Specs are read in order here, and only paths in rank order
        // below: each route's host groups are found now, as positions in
        // `hosts` (`None` for the any-host group), and listed in `groups`
        // from `first_group[k]` on for the `k`-th member.
        let n = members.len();
        let mut groups: Vec<Option<u32>> = Vec::with_capacity(n);
        let mut first_group: Vec<u32> = Vec::with_capacity(n + 1);
        let mut pairs: Vec<(RankKey, u32, u32, &PathSpec)> = Vec::with_capacity(n);
        for (k, i) in members.enumerate() {
            let spec = &specs[i as usize];
            first_group.push(groups.len() as u32);
            if spec.hosts.is_empty() {
                groups.push(None);
            }
            for host in &spec.hosts {
                groups.push(Some(router.host_group(host)));
            }
            for (j, path) in spec.paths.iter().enumerate() {
                pairs.push((RankKey::new(spec, path, i as usize, j), k as u32, i, path));
            }
        }
        first_group.push(groups.len() as u32);
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        router.ranked.reserve_exact(pairs.len());
        for (rank, (key, member, route, path)) in pairs.into_iter().enumerate() {
            router.ranked.push((key, path.clone()));
            let entry = Entry {
                rank: rank as u32,
                route,
            };
            let k = member as usize;
            let (from, to) = (first_group[k] as usize, first_group[k + 1] as usize);
            for group in &groups[from..to] {
                let index = match group {
                    None => &mut router.any_host,
                    Some(i) => &mut router.hosts[*i as usize],
                };
                index.insert(path, entry);
            }
        }
        router
    }

    /// The position in `hosts` of the group for `host`, added if new.
    fn host_group(&mut self, host: &HostMatch) -> u32 {
        let (map, name) = match host {
            HostMatch::Exact(h) => (&mut self.exact_hosts, h),
            HostMatch::Wildcard(s) => (&mut self.wildcard_hosts, s),
            HostMatch::Suffix(s) => (&mut self.suffix_hosts, s),
        };
        if let Some(&i) = map.get(name.as_str()) {
            return i;
        }
        let i = self.hosts.len() as u32;
        map.insert(name.as_str().into(), i);
        self.hosts.push(HostIndex::default());
        i
    }

    /// Index of the route for `req` in `routes`, if any, for a request in
    /// Gateway listener slot `slot`.
    pub(crate) fn find(
        &self,
        req: &RequestView<'_>,
        routes: &[std::sync::Arc<Route>],
        slot: Option<u32>,
    ) -> Option<usize> {
        let host = |map: &HashMap<Box<str>, u32>, name: &str| {
            map.get(name).and_then(|&i| self.hosts.get(i as usize))
        };
        if let Some(index) = host(&self.exact_hosts, req.host)
            && let Some(e) = index.best(req, routes, slot)
        {
            return Some(e.route as usize);
        }
        // A wildcard stands for at least one label, and an empty string is
        // not a label: `.example.com` is not under `*.example.com`. The
        // Ingress kind stands for exactly one; the Gateway API kind for
        // any number, the longest suffix first.
        if let Some((label, parent)) = req.host.split_once('.')
            && !label.is_empty()
        {
            if let Some(index) = host(&self.wildcard_hosts, parent)
                && let Some(e) = index.best(req, routes, slot)
            {
                return Some(e.route as usize);
            }
            if !self.suffix_hosts.is_empty() {
                let mut rest = parent;
                loop {
                    if let Some(index) = host(&self.suffix_hosts, rest)
                        && let Some(e) = index.best(req, routes, slot)
                    {
                        return Some(e.route as usize);
                    }
                    match rest.split_once('.') {
                        Some((label, next)) if !label.is_empty() => rest = next,
                        _ => break,
                    }
                }
            }
        }
        self.any_host
            .best(req, routes, slot)
            .map(|e| e.route as usize)
    }
}

/// Sort key implementing the precedence rules; smaller sorts first. The
/// fields are in the order the rules apply, which is what
/// [`super::explain`] reports.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RankKey {
    pub fallback: bool,
    pub neg_priority: i64,
    /// 0 exact, 1 prefix, 2 regular expression.
    pub kind: u8,
    pub neg_segments: i64,
    pub neg_len: i64,
    pub neg_methods: i64,
    pub neg_headers: i64,
    pub neg_query: i64,
    pub neg_cookies: i64,
    /// Declaration order of the route, then of the path in the route.
    pub route: usize,
    pub path: usize,
}

impl RankKey {
    fn new(spec: &RouteSpec, path: &PathSpec, route: usize, path_index: usize) -> Self {
        let (kind, segs, len) = match path {
            PathSpec::Exact(p) => (0, segments(p).count(), p.len()),
            PathSpec::Prefix(p) => (1, segments(p).count(), p.trim_end_matches('/').len()),
            PathSpec::RegularExpression(p) => (2, 0, p.as_str().len()),
        };
        RankKey {
            fallback: spec.fallback,
            neg_priority: -i64::from(spec.priority),
            kind,
            neg_segments: -(segs as i64),
            neg_len: -(len as i64),
            neg_methods: -i64::from(!spec.methods.is_empty()),
            neg_headers: -(spec.headers.len() as i64),
            neg_query: -(spec.query.len() as i64),
            neg_cookies: -(spec.cookies.len() as i64),
            route,
            path: path_index,
        }
    }
}
