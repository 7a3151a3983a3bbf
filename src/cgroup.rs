//! The CPU budget of this process: its cgroup's CPU quota and the CPUs it
//! may run on, for the default number of proxy workers.
//!
//! A pod limited to 1 CPU on a 64-core node must not start 64 workers,
//! each with its own event loop and upstream connection pools: they would
//! share one CPU's worth of time, be throttled by the kernel in bursts,
//! and hold 64 times the idle connections. The standard library's
//! `available_parallelism` reads the quota too, but rounds it down (1.5
//! CPUs give 1 worker, leaving half the budget unused) and says nothing
//! about where its number came from; this module rounds up, is tested on
//! fixture files for cgroup v1 and v2, and reports the quota it found.
//! No maintained crate does exactly this without a heavier dependency.
//!
//! Where the files are:
//!
//! - `/proc/self/cgroup` names this process's cgroup (`0::/path` for v2,
//!   `N:cpu,cpuacct:/path` for v1);
//! - `/proc/self/mountinfo` says where that hierarchy is mounted and which
//!   part of it the mount shows (inside a container, usually only its own
//!   cgroup);
//! - the limit is `cpu.max` (`QUOTA PERIOD` or `max PERIOD`) for v2, and
//!   `cpu.cfs_quota_us` / `cpu.cfs_period_us` (`-1` for none) for v1, in
//!   the cgroup's directory or any visible ancestor (a pod-level limit sits
//!   on the pod's cgroup): the smallest applies;
//! - `/proc/self/status`'s `Cpus_allowed_list` gives the CPUs this process
//!   may use (its affinity), the upper bound.

use std::fs;
use std::path::{Path, PathBuf};

/// A CPU quota: `quota` microseconds of CPU time per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl Quota {
    /// The quota in CPUs, rounded up.
    pub fn cpus_ceil(self) -> u64 {
        self.quota_us.div_ceil(self.period_us.max(1))
    }

    /// The quota in CPUs.
    pub fn cpus(self) -> f64 {
        self.quota_us as f64 / self.period_us.max(1) as f64
    }

    fn smaller(self, other: Quota) -> Quota {
        // Compare quota/period without floats: a/b < c/d  <=>  a*d < c*b.
        let a = u128::from(self.quota_us) * u128::from(other.period_us);
        let b = u128::from(other.quota_us) * u128::from(self.period_us);
        if a <= b { self } else { other }
    }
}

/// What this process may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuBudget {
    /// The cgroup CPU quota, when one is set.
    pub quota: Option<Quota>,
    /// CPUs this process may run on (its affinity).
    pub cpus: Option<usize>,
}

impl CpuBudget {
    /// Reads the budget of this process.
    pub fn detect() -> CpuBudget {
        CpuBudget::detect_in(Path::new("/"))
    }

    /// Reads the budget from the files under `root` instead of `/` (for
    /// tests on fixtures).
    pub fn detect_in(root: &Path) -> CpuBudget {
        CpuBudget {
            quota: quota(root),
            cpus: fs::read_to_string(root.join("proc/self/status"))
                .ok()
                .and_then(|s| allowed_cpus(&s)),
        }
    }

    /// Workers for this budget: the quota rounded up, at least 1, at most
    /// the CPUs this process may use; the CPU count without a quota.
    /// `fallback` is the CPU count when `/proc` could not be read.
    pub fn workers(self, fallback: usize) -> usize {
        let cpus = self.cpus.unwrap_or(fallback).max(1);
        match self.quota {
            Some(q) => usize::try_from(q.cpus_ceil())
                .unwrap_or(usize::MAX)
                .clamp(1, cpus),
            None => cpus,
        }
    }
}

/// The number of CPUs in a `Cpus_allowed_list` line of
/// `/proc/self/status` (`0-3,8,10-11`).
fn allowed_cpus(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut n = 0usize;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// One line of `/proc/self/mountinfo`, the fields used here.
struct Mount<'a> {
    root: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
    super_options: &'a str,
}

fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        Some(Mount {
            root: fields.get(3)?,
            mount_point: fields.get(4)?,
            fs_type: right.next()?,
            super_options: right.nth(1).unwrap_or(""),
        })
    })
}

/// The directory of cgroup `path` under `mount`, and the mount point
/// (the highest directory worth reading).
fn cgroup_dir(root: &Path, mount: &Mount<'_>, path: &str) -> (PathBuf, PathBuf) {
    let top = root.join(mount.mount_point.trim_start_matches('/'));
    // The mount shows the hierarchy from `mount.root` down; a cgroup
    // outside it (another cgroup namespace) is read at the mount point.
    let relative = if mount.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.root)
            .filter(|r| r.is_empty() || r.starts_with('/'))
    };
    let dir = match relative {
        Some(r) => top.join(r.trim_start_matches('/')),
        None => top.clone(),
    };
    if dir.is_dir() {
        (dir, top.clone())
    } else {
        (top.clone(), top)
    }
}

/// The smallest quota found in `dir` or its ancestors up to `top`.
fn smallest_up(dir: &Path, top: &Path, read: impl Fn(&Path) -> Option<Quota>) -> Option<Quota> {
    let mut found: Option<Quota> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if let Some(q) = read(d) {
            found = Some(found.map_or(q, |f| f.smaller(q)));
        }
        if d == top {
            break;
        }
        at = d.parent().filter(|p| p.starts_with(top));
    }
    found
}

/// `cpu.max` of cgroup v2: `QUOTA PERIOD`, or `max PERIOD` for none.
fn parse_cpu_max(text: &str) -> Option<Quota> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if quota == "max" {
        return None;
    }
    let quota_us: u64 = quota.parse().ok()?;
    (quota_us > 0 && period > 0).then_some(Quota {
        quota_us,
        period_us: period,
    })
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` of cgroup v1; a negative
/// quota means none.
fn parse_cfs(quota: &str, period: &str) -> Option<Quota> {
    let quota_us: i64 = quota.trim().parse().ok()?;
    let period_us: u64 = period.trim().parse().ok()?;
    (quota_us > 0 && period_us > 0).then_some(Quota {
        quota_us: quota_us.unsigned_abs(),
        period_us,
    })
}

fn quota(root: &Path) -> Option<Quota> {
    let cgroups = fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
    // cgroup v2 (the unified hierarchy) first; hosts in hybrid mode keep
    // the CPU controller on v1.
    if let Some(path) = cgroups.lines().find_map(|l| l.strip_prefix("0::"))
        && let Some(mount) = mounts(&mountinfo).find(|m| m.fs_type == "cgroup2")
    {
        let (dir, top) = cgroup_dir(root, &mount, path);
        let found = smallest_up(&dir, &top, |d| {
            fs::read_to_string(d.join("cpu.max"))
                .ok()
                .and_then(|t| parse_cpu_max(&t))
        });
        if found.is_some() {
            return found;
        }
    }
    let path = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })?;
    let mount = mounts(&mountinfo)
        .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == "cpu"))?;
    let (dir, top) = cgroup_dir(root, &mount, path);
    smallest_up(&dir, &top, |d| {
        let q = fs::read_to_string(d.join("cpu.cfs_quota_us")).ok()?;
        let p = fs::read_to_string(d.join("cpu.cfs_period_us")).ok()?;
        parse_cfs(&q, &p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> CpuBudget {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name);
        assert!(dir.is_dir(), "missing fixture {}", dir.display());
        CpuBudget::detect_in(&dir)
    }

    fn q(quota_us: u64, period_us: u64) -> Option<Quota> {
        Some(Quota {
            quota_us,
            period_us,
        })
    }

    #[test]
    fn v2_quota_in_a_cgroup_namespace_rounds_up() {
        let b = fixture("v2-limited");
        assert_eq!(b.quota, q(150_000, 100_000));
        assert_eq!(b.cpus, Some(64));
        assert_eq!(b.workers(64), 2);
    }

    #[test]
    fn v2_without_quota_uses_the_allowed_cpus() {
        let b = fixture("v2-unlimited");
        assert_eq!(b.quota, None);
        assert_eq!(b.cpus, Some(4));
        assert_eq!(b.workers(16), 4);
    }

    #[test]
    fn v2_pod_level_limit_above_the_container_applies() {
        // The container's own cpu.max is "max"; its pod's slice has 0.5.
        let b = fixture("v2-nested");
        assert_eq!(b.quota, q(50_000, 100_000));
        assert_eq!(b.workers(8), 1);
    }

    #[test]
    fn v1_quota_is_capped_by_the_cpu_count() {
        let b = fixture("v1-limited");
        assert_eq!(b.quota, q(250_000, 100_000));
        assert_eq!(b.cpus, Some(2));
        assert_eq!(b.workers(2), 2);
    }

    #[test]
    fn v1_negative_quota_means_none() {
        let b = fixture("v1-unlimited");
        assert_eq!(b.quota, None);
        assert_eq!(b.cpus, Some(4), "0-2,4 is four CPUs");
        assert_eq!(b.workers(1), 4);
    }

    #[test]
    fn nothing_readable_falls_back() {
        let b = fixture("none");
        assert_eq!(
            b,
            CpuBudget {
                quota: None,
                cpus: None
            }
        );
        assert_eq!(b.workers(3), 3);
        assert_eq!(b.workers(0), 1);
    }

    #[test]
    fn parsers_refuse_garbage() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), q(200_000, 100_000));
        assert_eq!(parse_cpu_max("50000"), q(50_000, 100_000));
        assert_eq!(parse_cpu_max("x 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cfs("-1", "100000"), None);
        assert_eq!(parse_cfs("100000\n", "0"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t0-3,8,10-11\n"), Some(7));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t3-1\n"), None);
        assert_eq!(allowed_cpus("Name:\tx\n"), None);
        assert_eq!(
            Quota {
                quota_us: 100_000,
                period_us: 100_000
            }
            .cpus_ceil(),
            1
        );
        assert_eq!(
            Quota {
                quota_us: 100_001,
                period_us: 100_000
            }
            .cpus_ceil(),
            2
        );
        assert_eq!(
            Quota {
                quota_us: 1,
                period_us: 100_000
            }
            .cpus_ceil(),
            1
        );
    }

    #[test]
    fn this_machine_gives_at_least_one_worker() {
        let b = CpuBudget::detect();
        assert!(b.workers(1) >= 1);
    }
}
