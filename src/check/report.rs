//! The findings of `sluicegate check` and their two printed forms.
//!
//! The JSON form is a stable interface for CI tools (documented in
//! docs/gitops.md): fields are only ever added, and `version` changes if a
//! field changes meaning.

use std::fmt::Write as _;

use serde::Serialize;

use crate::source::manifest::DocIssue;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something will not be served as written; the check fails.
    Error,
    /// Served, perhaps not as meant; fails the check with `--strict`.
    Warning,
    /// For information: an object of a kind Sluicegate does not read.
    Note,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// The object a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FindingObject {
    pub kind: String,
    /// Empty for cluster-scoped objects and for documents that name none.
    pub namespace: String,
    pub name: String,
}

/// One problem, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(rename = "severity")]
    pub level: Level,
    /// The file as reported (`<stdin>` for standard input).
    pub file: String,
    /// 1-based number of the YAML document in the file; null when the file
    /// is not valid YAML.
    pub document: Option<usize>,
    pub object: Option<FindingObject>,
    /// Dotted path of the field at fault, e.g.
    /// `spec.routes[0].backends[1].servicePort`.
    pub field: Option<String>,
    /// A stable CamelCase word: the translator's reasons (`InvalidSpec`,
    /// `BackendNotFound`, `PluginConfigNotFound`, ...) or the reader's
    /// (`InvalidYAML`, `UnknownField`, `UnknownKind`, `Duplicate`).
    pub reason: String,
    pub message: String,
}

/// Everything a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Objects of Sluicegate's kinds read (valid ones, duplicates included).
    pub objects: usize,
    pub findings: Vec<Finding>,
}

/// The JSON form: counts, then the findings.
#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    files: usize,
    objects: usize,
    errors: usize,
    warnings: usize,
    notes: usize,
    findings: &'a [Finding],
}

impl Report {
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Adds a finding of the manifest reader.
    pub fn push_issue(&mut self, file: &str, level: Level, reason: &str, issue: DocIssue) {
        self.findings.push(Finding {
            level,
            file: file.to_owned(),
            document: issue.document,
            object: issue.object.map(|o| {
                let o = *o;
                FindingObject {
                    kind: o.kind,
                    namespace: o.namespace,
                    name: o.name,
                }
            }),
            field: issue.field,
            reason: reason.to_owned(),
            message: issue.message,
        });
    }

    /// Orders findings by file and document; findings of one document keep
    /// the order they were found in.
    pub fn sort(&mut self) {
        self.findings
            .sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    }

    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// Whether the check fails: on any error, or with `strict` on any
    /// warning.
    pub fn failed(&self, strict: bool) -> bool {
        self.findings
            .iter()
            .any(|f| f.level == Level::Error || strict && f.level == Level::Warning)
    }

    /// One line per finding, then a summary line:
    ///
    /// ```text
    /// error: shop/routes.yaml: document 2 (ApiRoute shop/web) field spec.routes[0].backends[0].weight: must be at most 1000000 (is 2000000) [InvalidSpec]
    /// note: shop/app.yaml: document 1 (Deployment shop/web): kind Deployment is not used by Sluicegate; skipped [UnknownKind]
    /// 2 files, 3 objects: 1 error, 0 warnings, 1 note
    /// ```
    pub fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = write!(out, "{}: ", f.level.as_str());
            let mut sep = "";
            if !f.file.is_empty() {
                out.push_str(&f.file);
                sep = ": ";
            }
            if let Some(d) = f.document {
                let _ = write!(out, "{sep}document {d}");
                sep = " ";
            }
            if let Some(o) = &f.object {
                out.push_str(sep);
                if o.namespace.is_empty() {
                    let _ = write!(out, "({} {})", o.kind, o.name);
                } else {
                    let _ = write!(out, "({} {}/{})", o.kind, o.namespace, o.name);
                }
                sep = " ";
            }
            if let Some(field) = &f.field {
                let _ = write!(out, "{sep}field {field}");
            }
            let _ = writeln!(out, ": {} [{}]", f.message, f.reason);
        }
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        let _ = writeln!(
            out,
            "{}, {}: {}, {}, {}",
            plural(self.files, "file"),
            plural(self.objects, "object"),
            plural(self.count(Level::Error), "error"),
            plural(self.count(Level::Warning), "warning"),
            plural(self.count(Level::Note), "note"),
        );
        out
    }

    /// The report as one JSON document (see docs/gitops.md).
    pub fn json(&self) -> String {
        let doc = JsonReport {
            version: 1,
            files: self.files,
            objects: self.objects,
            errors: self.count(Level::Error),
            warnings: self.count(Level::Warning),
            notes: self.count(Level::Note),
            findings: &self.findings,
        };
        // These types always serialize (strings, numbers, options).
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
}
