//! Standalone mode's source: a directory of manifests, watched by polling.
//!
//! Polling file metadata (size, modification time, inode) is used rather
//! than inotify because it also sees the symlink swaps with which
//! Kubernetes updates mounted ConfigMaps, and because it needs no watch
//! limits; at a few hundred files a scan costs microseconds.
//!
//! Each file is all-or-nothing: when a file stops parsing, the objects of
//! its last good version keep serving and the error is reported, while
//! other files' changes still apply.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tracing::{info, warn};

use super::manifest::{self, DocIssue, Object};
use crate::translate::{ClusterState, Severity};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

#[derive(Debug)]
struct FileEntry {
    fingerprint: Fingerprint,
    /// Objects of the last version that parsed.
    good: Option<Vec<Object>>,
    error: Option<DocIssue>,
    warnings: Vec<DocIssue>,
}

/// How long a file must stay unmodified before it is read.
pub const QUIET: Duration = Duration::from_millis(50);

/// What one scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Some file was added, changed or removed, and the state differs.
    pub changed: bool,
    /// Some file is still being written; scan again soon.
    pub pending: bool,
}

/// A problem found while reading the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceIssue {
    /// Path relative to the directory.
    pub file: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for SourceIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// The manifests of one directory (and its non-hidden subdirectories).
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
    /// Changed files waiting to be seen unchanged for [`QUIET`], with the
    /// fingerprint and the time (by this process's clock) it was first seen.
    settling: BTreeMap<PathBuf, (Fingerprint, Instant)>,
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            files: BTreeMap::new(),
            settling: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads new and changed files.
    ///
    /// A changed file is read only once two scans at least [`QUIET`] apart
    /// (by this process's clock, not the file's timestamps, which can lag)
    /// have seen the same fingerprint: a file being rewritten in place can
    /// be valid YAML while only half written (even empty), and applying
    /// that would drop routes. A file that changes while being read is
    /// retried. An unreadable directory is an error and leaves the state
    /// untouched.
    pub fn scan(&mut self) -> io::Result<Scan> {
        let mut found = Vec::new();
        list_manifests(&self.dir, &mut found)?;
        let present: BTreeSet<&PathBuf> = found.iter().map(|(p, _)| p).collect();
        let before = self.files.len();
        self.files.retain(|p, _| present.contains(p));
        let mut scan = Scan {
            changed: self.files.len() != before,
            pending: false,
        };
        self.settling.retain(|p, _| present.contains(p));
        let now = Instant::now();
        for (path, fingerprint) in found {
            if self
                .files
                .get(&path)
                .is_some_and(|e| e.fingerprint == fingerprint)
            {
                continue;
            }
            let settled = match self.settling.get(&path) {
                Some((seen, since)) if *seen == fingerprint => now.duration_since(*since) >= QUIET,
                _ => {
                    self.settling.insert(path.clone(), (fingerprint, now));
                    false
                }
            };
            if !settled {
                scan.pending = true;
                continue;
            }
            self.settling.remove(&path);
            let read = std::fs::read_to_string(&path);
            if fingerprint_of(&path) != Some(fingerprint) {
                scan.pending = true;
                continue;
            }
            scan.changed = true;
            let previous = self.files.remove(&path);
            let entry = match read {
                Err(e) => FileEntry {
                    fingerprint,
                    good: previous.and_then(|p| p.good),
                    error: Some(DocIssue {
                        document: None,
                        object: None,
                        field: None,
                        message: format!("cannot read: {e}"),
                    }),
                    warnings: Vec::new(),
                },
                Ok(text) => match manifest::parse(&text) {
                    // Objects of other kinds are worth a warning here: a
                    // gateway's directory should not hold them.
                    Ok(parsed) => FileEntry {
                        fingerprint,
                        good: Some(parsed.objects),
                        error: None,
                        warnings: parsed.skipped.into_iter().chain(parsed.warnings).collect(),
                    },
                    Err(issue) => FileEntry {
                        fingerprint,
                        good: previous.and_then(|p| p.good),
                        error: Some(issue),
                        warnings: Vec::new(),
                    },
                },
            };
            self.files.insert(path, entry);
        }
        Ok(scan)
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// The objects of every file's last good version, and the issues found.
    pub fn state(&self) -> (ClusterState, Vec<SourceIssue>) {
        let mut state = ClusterState::default();
        let mut issues = Vec::new();
        let mut owners: BTreeMap<(crate::translate::Kind, crate::translate::ObjectKey), String> =
            BTreeMap::new();
        for (path, entry) in &self.files {
            let file = self.rel(path);
            if let Some(e) = &entry.error {
                let kept = if entry.good.is_some() {
                    "; its last good version keeps serving"
                } else {
                    "; none of its objects are loaded"
                };
                issues.push(SourceIssue {
                    file: file.clone(),
                    severity: Severity::Error,
                    message: format!("{e}{kept}"),
                });
            }
            for w in &entry.warnings {
                issues.push(SourceIssue {
                    file: file.clone(),
                    severity: Severity::Warning,
                    message: w.to_string(),
                });
            }
            for obj in entry.good.iter().flatten() {
                let id = (obj.kind(), obj.key());
                if let Some(first) = owners.get(&id) {
                    issues.push(SourceIssue {
                        file: file.clone(),
                        severity: Severity::Warning,
                        message: format!(
                            "{} {}/{} is also defined in {first}, which is used instead",
                            id.0, id.1.namespace, id.1.name
                        ),
                    });
                    continue;
                }
                owners.insert(id, file.clone());
                obj.clone().insert_into(&mut state);
            }
        }
        (state, issues)
    }
}

fn fingerprint(meta: &std::fs::Metadata) -> Fingerprint {
    Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    }
}

fn fingerprint_of(path: &Path) -> Option<Fingerprint> {
    std::fs::metadata(path).ok().map(|m| fingerprint(&m))
}

/// The manifest files under `dir` as standalone mode reads them: `*.yaml`
/// and `*.yml`, recursively, in name order, without hidden files and
/// directories (a ConfigMap volume's `..data`), following symlinks.
pub fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    list_manifests(dir, &mut found)?;
    Ok(found.into_iter().map(|(p, _)| p).collect())
}

fn list_manifests(dir: &Path, out: &mut Vec<(PathBuf, Fingerprint)>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follow symlinks, as ConfigMap volumes are made of them.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list_manifests(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push((path, fingerprint(&meta)));
        }
    }
    Ok(())
}

/// Scans `source` every `interval` (sooner while a file is still being
/// written) and calls `apply` with the new state whenever a file changed.
/// Runs until the task is dropped.
pub async fn watch<F>(mut source: DirSource, interval: Duration, mut apply: F)
where
    F: FnMut(ClusterState, Vec<SourceIssue>),
{
    let mut dir_error = false;
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        wait = interval;
        match source.scan() {
            Ok(scan) => {
                if scan.changed {
                    info!(dir = %source.dir().display(), "manifests changed; applying");
                    let (state, issues) = source.state();
                    apply(state, issues);
                }
                if scan.pending {
                    // Twice per quiet period, so that a file that settles
                    // between two rewrites is caught inside its quiet window.
                    wait = (QUIET / 2).min(interval);
                }
                dir_error = false;
            }
            Err(e) => {
                if !dir_error {
                    warn!(dir = %source.dir().display(), error = %e, "cannot read the config directory; keeping the last good config");
                }
                dir_error = true;
            }
        }
    }
}
