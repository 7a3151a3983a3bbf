//! Snapshot tests of `translate` from YAML fixtures.
//!
//! Every `tests/fixtures/translate/NAME.yaml` is parsed as a standalone
//! manifest, translated, and the resulting table and diagnostics, written
//! as YAML, are compared with `NAME.snap.yaml` next to it. Run with
//! `BLESS=1` to write the snapshots instead; then read the diff before
//! committing, because a blessed snapshot is only as right as its review.
//!
//! A fixture may choose translation options on its first line:
//!
//! ```yaml
//! # options: watch_ingress_without_class=true ingress_class=internal
//! ```
//!
//! `own_http_port` and `own_https_port` (a port or `off`) set the ports
//! of the proxy's own listeners, which Gateway listeners may share.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use sluicegate::source::manifest::state_from_str;
use sluicegate::translate::{TranslateOptions, translate};

const FIXTURE_DIR: &str = "tests/fixtures/translate";
const SNAPSHOT_SUFFIX: &str = ".snap.yaml";
const OPTIONS_PREFIX: &str = "# options:";
/// Lines of unchanged text shown around each change in a diff.
const DIFF_CONTEXT: usize = 3;

#[test]
fn translate_snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_DIR);
    let bless = std::env::var("BLESS").is_ok_and(|v| v == "1");
    let (fixtures, snapshots) = list_fixtures(&dir);
    assert!(!fixtures.is_empty(), "no fixtures in {}", dir.display());

    let mut failures = Vec::new();
    for fixture in &fixtures {
        let name = fixture_name(fixture);
        if let Err(why) = check(fixture, bless) {
            failures.push(format!("fixture {name}: {why}"));
        }
    }
    // A snapshot whose fixture was renamed or deleted would otherwise sit
    // there unchecked and mislead readers about what is covered.
    for snap in &snapshots {
        let stem = file_name(snap).trim_end_matches(SNAPSHOT_SUFFIX).to_owned();
        if !fixtures.iter().any(|f| fixture_name(f) == stem) {
            failures.push(format!(
                "snapshot {} has no fixture {stem}.yaml; delete it",
                file_name(snap)
            ));
        }
    }

    if !failures.is_empty() {
        panic!(
            "{} problem(s) with {} translate fixtures (BLESS=1 writes new snapshots):\n\n{}",
            failures.len(),
            fixtures.len(),
            failures.join("\n\n")
        );
    }
}

/// Fixtures and snapshots in `dir`, each sorted by name.
fn list_fixtures(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut fixtures = Vec::new();
    let mut snapshots = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = file_name(&path);
        if name.ends_with(SNAPSHOT_SUFFIX) {
            snapshots.push(path);
        } else if name.ends_with(".yaml") {
            fixtures.push(path);
        }
    }
    fixtures.sort();
    snapshots.sort();
    (fixtures, snapshots)
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap()
}

fn fixture_name(path: &Path) -> &str {
    file_name(path).trim_end_matches(".yaml")
}

/// Translates one fixture and compares (or, blessing, writes) its snapshot.
fn check(fixture: &Path, bless: bool) -> Result<(), String> {
    let text = fs::read_to_string(fixture).map_err(|e| format!("cannot read: {e}"))?;
    let opts = options(&text)?;
    let state = state_from_str(&text).map_err(|e| format!("invalid manifest: {e}"))?;
    let translation = translate(&state, &opts);
    let body = serde_saphyr::to_string(&translation)
        .map_err(|e| format!("cannot serialize the translation: {e}"))?;
    let actual = format!(
        "# Translation of {}.yaml; regenerate with BLESS=1 and review the diff.\n{body}",
        fixture_name(fixture)
    );

    let snap_path = fixture.with_file_name(format!("{}{SNAPSHOT_SUFFIX}", fixture_name(fixture)));
    if bless {
        return fs::write(&snap_path, &actual)
            .map_err(|e| format!("cannot write {}: {e}", snap_path.display()));
    }
    let expected = match fs::read_to_string(&snap_path) {
        Ok(s) => s.replace("\r\n", "\n"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "snapshot {} is missing; run with BLESS=1 to create it, then review it",
                file_name(&snap_path)
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", snap_path.display())),
    };
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "output differs from {} (- snapshot, + actual):\n{}",
            file_name(&snap_path),
            line_diff(&expected, &actual)
        ))
    }
}

/// Reads the `# options:` line, which must be the fixture's first line so
/// that a reader sees at once that the fixture does not use the defaults.
fn options(text: &str) -> Result<TranslateOptions, String> {
    let mut opts = TranslateOptions::default();
    let Some(rest) = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(OPTIONS_PREFIX))
    else {
        if text.lines().skip(1).any(|l| l.starts_with(OPTIONS_PREFIX)) {
            return Err(format!("{OPTIONS_PREFIX} must be the first line"));
        }
        return Ok(opts);
    };
    for setting in rest.split_whitespace() {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("option {setting:?} is not key=value"))?;
        match key {
            "ingress_class" if !value.is_empty() => opts.ingress_class = value.to_owned(),
            "watch_ingress_without_class" => {
                opts.watch_ingress_without_class = value
                    .parse()
                    .map_err(|_| format!("option {key} takes true or false, not {value:?}"))?;
            }
            "own_http_port" => {
                opts.own_ports.http = value
                    .parse()
                    .map_err(|_| format!("option {key} takes a port, not {value:?}"))?;
            }
            "own_https_port" => {
                opts.own_ports.https = match value {
                    "off" => None,
                    v => Some(
                        v.parse()
                            .map_err(|_| format!("option {key} takes a port or off, not {v:?}"))?,
                    ),
                };
            }
            _ => return Err(format!("unknown or empty option {setting:?}")),
        }
    }
    Ok(opts)
}

/// One line of a diff.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// A line diff of `old` and `new` in unified style, with a few lines of
/// context around each change and line numbers of both sides per hunk.
fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = diff_ops(&a, &b);

    // Mark the lines to print: every change and its context.
    let mut show = vec![false; ops.len()];
    for (i, (op, _)) in ops.iter().enumerate() {
        if *op != Op::Same {
            let lo = i.saturating_sub(DIFF_CONTEXT);
            let hi = (i + DIFF_CONTEXT + 1).min(ops.len());
            show[lo..hi].iter_mut().for_each(|s| *s = true);
        }
    }

    let mut out = String::new();
    let (mut line_a, mut line_b) = (1, 1);
    let mut in_hunk = false;
    for (i, (op, text)) in ops.iter().enumerate() {
        if show[i] {
            if !in_hunk {
                let _ = writeln!(out, "@@ snapshot line {line_a}, actual line {line_b} @@");
                in_hunk = true;
            }
            let sign = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            let _ = writeln!(out, "{sign} {text}");
        } else {
            in_hunk = false;
        }
        match op {
            Op::Same => {
                line_a += 1;
                line_b += 1;
            }
            Op::Removed => line_a += 1,
            Op::Added => line_b += 1,
        }
    }
    if out.is_empty() {
        // The texts differ only in a final newline.
        out.push_str("(the texts differ only in line endings at the end)\n");
    }
    out
}

/// Edit script from the longest common subsequence of lines. Snapshots
/// are a few hundred lines, so the quadratic table is cheap.
fn diff_ops<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::with_capacity(n.max(m));
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((Op::Same, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals first, as readers of unified diffs expect.
            ops.push((Op::Removed, a[i]));
            i += 1;
        } else {
            ops.push((Op::Added, b[j]));
            j += 1;
        }
    }
    ops
}

#[test]
fn diff_shows_changes_with_context() {
    let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
    let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n";
    let diff = line_diff(old, new);
    assert_eq!(
        diff,
        "@@ snapshot line 2, actual line 2 @@\n  b\n  c\n  d\n- e\n+ E\n  f\n  g\n  h\n  i\n+ j\n"
    );
}

#[test]
fn options_line_is_parsed_strictly() {
    let opts =
        options("# options: watch_ingress_without_class=true ingress_class=internal\n").unwrap();
    assert!(opts.watch_ingress_without_class);
    assert_eq!(opts.ingress_class, "internal");
    assert_eq!(options("kind: List\n").unwrap().ingress_class, "sluicegate");
    assert!(options("# options: ingress_clas=x\n").is_err());
    assert!(options("# options: watch_ingress_without_class=yes\n").is_err());
    assert!(options("---\n# options: ingress_class=x\n").is_err());
}
