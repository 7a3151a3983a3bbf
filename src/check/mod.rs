//! `sluicegate check`: validates manifests offline, for CI before Argo CD or
//! Flux applies them.
//!
//! It reads files the way standalone mode does ([`crate::source::manifest`]:
//! the same YAML parser, the same Rust types, the same CRD schema bounds)
//! and compiles every object together with the controller's own
//! [`crate::translate::translate`], so what it reports is what the
//! controller would report in `status` and Events, plus what the API server
//! would refuse at apply. Unlike standalone mode it reads every document of
//! a file even after an invalid one, and names the file and document of
//! every finding, translator findings included.
//!
//! Objects of kinds Sluicegate does not read (the Deployments and
//! ConfigMaps of a GitOps repository) are skipped with a note. Errors fail
//! the check; warnings (a Service that is not among the manifests, a
//! duplicate object) fail it only with `--strict`.

mod report;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

pub use report::{Finding, FindingObject, Level, Report};

use crate::source::manifest::{self, DocIssue, Object, Strictness};
use crate::translate::{ClusterState, Kind, ObjectKey, Severity, TranslateOptions, translate};

/// Flags of `sluicegate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest files, or directories searched for *.yaml / *.yml (hidden
    /// entries skipped); `-` reads multi-document YAML from standard input.
    #[arg(required = true, value_name = "DIR|FILE|-")]
    pub paths: Vec<PathBuf>,
    /// How findings are printed: `text` (one line each) or `json` (one
    /// document; its shape is in docs/gitops.md).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// IngressClass name the controller serves.
    #[arg(long, env = "SLUICEGATE_INGRESS_CLASS", default_value = "sluicegate")]
    pub ingress_class: String,
    /// The controller also serves Ingresses that name no class.
    #[arg(long, env = "SLUICEGATE_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,
    /// PluginConfig (NAMESPACE/NAME) whose plugins the controller runs on
    /// every route.
    #[arg(long, env = "SLUICEGATE_GLOBAL_PLUGIN_CONFIG", value_parser = parse_namespaced)]
    pub global_plugin_config: Option<(String, String)>,
}

/// Output formats of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

fn parse_namespaced(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("expected NAMESPACE/NAME, got {text:?}")),
    }
}

impl CheckArgs {
    /// The translation settings these flags describe.
    pub fn translate_options(&self) -> TranslateOptions {
        TranslateOptions {
            ingress_class: self.ingress_class.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            global_plugins: self
                .global_plugin_config
                .as_ref()
                .map(|(ns, name)| ObjectKey::new(ns.clone(), name.clone())),
            ..TranslateOptions::default()
        }
    }
}

/// One manifest text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Input {
    /// The path as given, or relative to the directory it was found in
    /// (`<stdin>` for standard input).
    pub name: String,
    pub text: String,
}

/// Why the inputs could not be read; `check` then exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no *.yaml or *.yml file in it")]
    Empty(String),
}

/// Reads `paths`: files as they are, directories as standalone mode lists
/// them, `-` from `stdin`.
pub fn read_inputs(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<Input>, InputError> {
    let read_err = |path: &Path, source| InputError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| read_err(path, e))?;
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
        if !meta.is_dir() {
            let text = std::fs::read_to_string(path).map_err(|e| read_err(path, e))?;
            inputs.push(Input {
                name: path.display().to_string(),
                text,
            });
            continue;
        }
        let files =
            crate::source::standalone::manifest_files(path).map_err(|e| read_err(path, e))?;
        if files.is_empty() {
            return Err(InputError::Empty(path.display().to_string()));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| read_err(&file, e))?;
            inputs.push(Input {
                name: file.display().to_string(),
                text,
            });
        }
    }
    Ok(inputs)
}

/// Where an object was read.
#[derive(Clone, Copy)]
struct Origin {
    file: usize,
    document: usize,
}

/// Parses and translates `inputs` together; every finding names its file.
pub fn check(inputs: &[Input], opts: &TranslateOptions) -> Report {
    let mut report = Report {
        files: inputs.len(),
        ..Report::default()
    };
    let parsed = parse_all(inputs);
    let mut state = ClusterState::default();
    let mut origins: foldhash::HashMap<(Kind, ObjectKey), Origin> = Default::default();
    for (file, docs) in parsed.into_iter().enumerate() {
        let name = &inputs[file].name;
        for e in docs.errors {
            report.push_issue(name, Level::Error, parse_reason(&e), e);
        }
        for w in docs.warnings {
            report.push_issue(name, Level::Warning, "UnknownField", w);
        }
        for n in docs.skipped {
            report.push_issue(name, Level::Note, "UnknownKind", n);
        }
        for (document, object) in docs.objects {
            report.objects += 1;
            let id = (object.kind(), object.key());
            if let Some(first) = origins.get(&id) {
                let message = format!(
                    "also defined in {} document {}, which is used here instead",
                    inputs[first.file].name, first.document
                );
                report.push(Finding {
                    level: Level::Warning,
                    file: name.clone(),
                    document: Some(document),
                    object: Some(FindingObject::of(&object)),
                    field: None,
                    reason: "Duplicate".into(),
                    message,
                });
                continue;
            }
            origins.insert(id, Origin { file, document });
            object.insert_into(&mut state);
        }
    }

    let translation = translate(&state, opts);
    for d in translation.diagnostics {
        let key = ObjectKey::new(d.object.namespace.clone(), d.object.name.clone());
        let origin = origins.get(&(d.object.kind, key));
        report.push(Finding {
            level: match d.severity {
                Severity::Error => Level::Error,
                Severity::Warning => Level::Warning,
            },
            file: origin.map_or_else(String::new, |o| inputs[o.file].name.clone()),
            document: origin.map(|o| o.document),
            object: Some(FindingObject {
                kind: d.object.kind.as_str().to_owned(),
                namespace: d.object.namespace.clone(),
                name: d.object.name.clone(),
            }),
            field: (!d.field.is_empty()).then_some(d.field),
            reason: format!("{:?}", d.reason),
            message: d.message,
        });
    }
    report.sort();
    report
}

/// Parses every input, several at a time: parsing is most of a check's
/// time, and files are independent.
fn parse_all(inputs: &[Input]) -> Vec<manifest::Documents> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(inputs.len())
        .max(1);
    if threads == 1 {
        return inputs
            .iter()
            .map(|i| manifest::parse_documents(&i.text, Strictness::ApiServer))
            .collect();
    }
    let chunk = inputs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|i| manifest::parse_documents(&i.text, Strictness::ApiServer))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(docs) => docs,
                // A panic in the parser is a bug; let it surface as one.
                Err(payload) => std::panic::resume_unwind(payload),
            })
            .collect()
    })
}

/// A file that is not YAML, or a document that is not a mapping, is
/// `InvalidYAML`; anything about an object's content is `InvalidSpec`.
fn parse_reason(issue: &DocIssue) -> &'static str {
    if issue.document.is_none() || (issue.object.is_none() && issue.field.is_none()) {
        "InvalidYAML"
    } else {
        "InvalidSpec"
    }
}

impl FindingObject {
    fn of(object: &Object) -> Self {
        let key = object.key();
        FindingObject {
            kind: object.kind().as_str().to_owned(),
            namespace: key.namespace,
            name: key.name,
        }
    }
}

/// `sluicegate check`: prints the report and returns the exit status: 0
/// when clean, 1 on errors (or warnings with `--strict`), 2 when the
/// inputs cannot be read.
pub fn main(args: &CheckArgs) -> ExitCode {
    let inputs = match read_inputs(&args.paths, &mut std::io::stdin().lock()) {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("sluicegate check: {e}");
            return ExitCode::from(2);
        }
    };
    let report = check(&inputs, &args.translate_options());
    let text = match args.output {
        OutputFormat::Text => report.text(),
        OutputFormat::Json => report.json(),
    };
    print!("{text}");
    if report.failed(args.strict) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests;
