//! The host and path index that finds a request's route.
//!
//! Every (route, path) pair gets a global rank from the precedence rules
//! (see [`crate::translate`]); a lower rank wins. Pairs are indexed under
//! their hosts: exact hosts and wildcard suffixes in hash maps, then per
//! host an exact-path map, a trie of prefix path elements, and a list of
//! regular expressions. A lookup visits one hash entry per exact path, one
//! trie node per path element and the regexes of the host, stopping early
//! once no candidate can beat the best match so far. Nothing allocates.

use std::collections::HashMap;

use super::matcher::RequestView;
use super::spec::{HostMatch, PathSpec, Pattern, RouteSpec};
use super::table::Route;

/// A candidate: the route's index in the table and the pair's rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    rank: u32,
    route: u32,
}

#[derive(Debug, Default)]
struct TrieNode {
    children: HashMap<Box<str>, u32>,
    entries: Vec<Entry>,
}

/// The routes of one host group.
#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<Box<str>, Vec<Entry>>,
    /// Node 0 is the root, holding prefix `/`.
    trie: Vec<TrieNode>,
    regex: Vec<(Pattern, Entry)>,
}

impl HostIndex {
    fn insert(&mut self, path: &PathSpec, entry: Entry) {
        match path {
            PathSpec::Exact(p) => self.exact.entry(p.as_str().into()).or_default().push(entry),
            PathSpec::Prefix(p) => {
                if self.trie.is_empty() {
                    self.trie.push(TrieNode::default());
                }
                let mut node = 0usize;
                for seg in segments(p) {
                    let next = match self.trie[node].children.get(seg) {
                        Some(&n) => n as usize,
                        None => {
                            let n = self.trie.len();
                            self.trie.push(TrieNode::default());
                            self.trie[node].children.insert(seg.into(), n as u32);
                            n
                        }
                    };
                    node = next;
                }
                self.trie[node].entries.push(entry);
            }
            PathSpec::RegularExpression(p) => self.regex.push((p.clone(), entry)),
        }
    }

    fn finish(&mut self) {
        self.exact.values_mut().for_each(|v| v.sort_unstable());
        self.trie.iter_mut().for_each(|n| n.entries.sort_unstable());
        self.regex.sort_unstable_by_key(|(_, e)| *e);
    }

    /// The best-ranked entry whose route's other conditions hold.
    fn best(&self, req: &RequestView<'_>, routes: &[std::sync::Arc<Route>]) -> Option<Entry> {
        let mut best: Option<Entry> = None;
        let mut consider = |entries: &[Entry]| {
            for e in entries {
                if best.is_some_and(|b| b.rank <= e.rank) {
                    break;
                }
                if routes[e.route as usize].conditions_match(req) {
                    best = Some(*e);
                    break;
                }
            }
        };
        if let Some(v) = self.exact.get(req.path) {
            consider(v);
        }
        if !self.trie.is_empty() {
            let mut node = &self.trie[0];
            consider(&node.entries);
            for seg in segments(req.path) {
                match node.children.get(seg) {
                    Some(&n) => node = &self.trie[n as usize],
                    None => break,
                }
                consider(&node.entries);
            }
        }
        for (pattern, e) in &self.regex {
            if best.is_some_and(|b| b.rank <= e.rank) {
                break;
            }
            if pattern.is_match(req.path) && routes[e.route as usize].conditions_match(req) {
                best = Some(*e);
            }
        }
        best
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Host groups from most to least specific.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, HostIndex>,
    wildcard_hosts: HashMap<Box<str>, HostIndex>,
    any_host: HostIndex,
}

impl Router {
    /// Builds the index for `specs`, whose compiled routes are `routes`
    /// (same order).
    pub(crate) fn build(specs: &[RouteSpec]) -> Router {
        let mut pairs: Vec<(RankKey, u32, &PathSpec)> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            for (j, path) in spec.paths.iter().enumerate() {
                pairs.push((RankKey::new(spec, path, i, j), i as u32, path));
            }
        }
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        let mut router = Router::default();
        for (rank, (_, route, path)) in pairs.into_iter().enumerate() {
            let entry = Entry {
                rank: rank as u32,
                route,
            };
            let spec = &specs[route as usize];
            if spec.hosts.is_empty() {
                router.any_host.insert(path, entry);
            }
            for host in &spec.hosts {
                let index = match host {
                    HostMatch::Exact(h) => router.exact_hosts.entry(h.as_str().into()).or_default(),
                    HostMatch::Wildcard(s) => {
                        router.wildcard_hosts.entry(s.as_str().into()).or_default()
                    }
                };
                index.insert(path, entry);
            }
        }
        router.any_host.finish();
        router.exact_hosts.values_mut().for_each(HostIndex::finish);
        router
            .wildcard_hosts
            .values_mut()
            .for_each(HostIndex::finish);
        router
    }

    /// Index of the route for `req` in `routes`, if any.
    pub(crate) fn find(
        &self,
        req: &RequestView<'_>,
        routes: &[std::sync::Arc<Route>],
    ) -> Option<usize> {
        if let Some(index) = self.exact_hosts.get(req.host)
            && let Some(e) = index.best(req, routes)
        {
            return Some(e.route as usize);
        }
        // A wildcard stands for exactly one label, and an empty string is
        // not a label: `.example.com` is not under `*.example.com`.
        if let Some((label, parent)) = req.host.split_once('.')
            && !label.is_empty()
            && let Some(index) = self.wildcard_hosts.get(parent)
            && let Some(e) = index.best(req, routes)
        {
            return Some(e.route as usize);
        }
        self.any_host.best(req, routes).map(|e| e.route as usize)
    }
}

/// Sort key implementing the precedence rules; smaller sorts first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    fallback: bool,
    neg_priority: i64,
    kind: u8,
    neg_segments: i64,
    neg_len: i64,
    neg_methods: i64,
    neg_headers: i64,
    neg_query: i64,
    route: usize,
    path: usize,
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
            route,
            path: path_index,
        }
    }
}
