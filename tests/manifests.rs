//! The shipped manifests, checked against the real types:
//!
//! - `manifests/install.yaml` and the chart snapshot
//!   `tests/fixtures/chart/all-features.yaml` (both written by
//!   `scripts/render-manifests.py`): every object deserializes into its
//!   k8s-openapi type without a single field the type does not know, and
//!   the CRDs are exactly what `src/api` generates;
//! - `manifests/examples/`: every object is accepted by the same strict
//!   parser as standalone mode, and the examples are self-contained:
//!   `sluicegate check` finds nothing in them but notes on the Namespaces
//!   and Deployments it skips, and translating them together yields no
//!   diagnostic and installs every route.

use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluicegate::check;
use sluicegate::source::manifest;
use sluicegate::translate::{TranslateOptions, translate};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Deserializes `doc` as `T`; the error lists every field `T` does not
/// know, or the first one of the wrong type.
fn strict<T: DeserializeOwned>(doc: &Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(doc.clone(), &mut record);
    let value = serde_path_to_error::deserialize(de)
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))?;
    // apiVersion and kind are consumed by the type's own checks.
    unknown.retain(|p| p != "apiVersion" && p != "kind");
    if unknown.is_empty() {
        Ok(value)
    } else {
        Err(format!("unknown fields: {}", unknown.join(", ")))
    }
}

/// `spec.template.spec.containers[0].name`, without serde's markers for
/// options and newtypes.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Checks one rendered object; returns its `kind/name` for the caller's
/// inventory.
fn check_rendered(doc: &Value) -> Result<String, String> {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
    let (api, kind) = (s("apiVersion"), s("kind"));
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} without metadata.name"))?;
    let checked = match (api, kind) {
        ("v1", "Namespace") => strict::<Namespace>(doc).map(drop),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc).map(drop),
        ("v1", "Service") => strict::<Service>(doc).map(drop),
        ("apps/v1", "Deployment") => strict::<Deployment>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(doc).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(doc).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(doc).map(drop),
        ("networking.k8s.io/v1", "IngressClass") => strict::<IngressClass>(doc).map(drop),
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(doc).map(drop),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            strict::<HorizontalPodAutoscaler>(doc).map(drop)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(doc).and_then(|crd| same_as_generated(&crd))
        }
        // Not a Kubernetes type; scripts/check-chart.py checks its shape.
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Ok(()),
        _ => Err(format!("unexpected {api} {kind}")),
    };
    checked
        .map(|()| format!("{kind}/{name}"))
        .map_err(|e| format!("{kind} {name}: {e}"))
}

fn same_as_generated(crd: &CustomResourceDefinition) -> Result<(), String> {
    let name = crd.metadata.name.as_deref().unwrap_or_default();
    let generated = sluicegate::api::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| format!("src/api defines no CRD {name}"))?;
    if generated.spec != crd.spec {
        return Err(
            "spec differs from src/api; run `cargo run --bin crdgen` and \
                    scripts/render-manifests.py"
                .into(),
        );
    }
    Ok(())
}

fn check_bundle(path: &str) -> Vec<String> {
    let mut inventory = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in documents(&repo(path)).iter().enumerate() {
        match check_rendered(doc) {
            Ok(obj) => inventory.push(obj),
            Err(e) => errors.push(format!("{path} document {}: {e}", i + 1)),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    inventory
}

#[test]
fn install_yaml_is_well_formed() {
    let objects = check_bundle("manifests/install.yaml");
    for expected in [
        "Namespace/sluicegate-system",
        "CustomResourceDefinition/apiroutes.sluicegate.io",
        "CustomResourceDefinition/pluginconfigs.sluicegate.io",
        "ServiceAccount/sluicegate",
        "ClusterRole/sluicegate",
        "ClusterRoleBinding/sluicegate",
        "Role/sluicegate-leader-election",
        "RoleBinding/sluicegate-leader-election",
        "Service/sluicegate",
        "Deployment/sluicegate",
        "IngressClass/sluicegate",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "install.yaml lacks {expected}; it has {objects:?}"
        );
    }
    // Namespace first, CRDs before anything that could use them.
    assert_eq!(objects[0], "Namespace/sluicegate-system");
}

#[test]
fn install_yaml_has_every_crd() {
    let objects = check_bundle("manifests/install.yaml");
    for crd in sluicegate::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let want = format!("CustomResourceDefinition/{name}");
        assert!(objects.contains(&want), "install.yaml lacks {want}");
    }
}

#[test]
fn chart_snapshot_with_every_option_is_well_formed() {
    let objects = check_bundle("tests/fixtures/chart/all-features.yaml");
    for kind in [
        "HorizontalPodAutoscaler/",
        "PodDisruptionBudget/",
        "ServiceMonitor/",
        "Role/",
    ] {
        assert!(
            objects.iter().any(|o| o.starts_with(kind)),
            "the snapshot lacks a {kind}"
        );
    }
}

#[test]
fn examples_are_valid_and_translate_cleanly() {
    let dir = repo("manifests/examples");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("manifests/examples")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "expected the examples, found {files:?}");

    // Each file on its own through standalone mode's parser: valid, and
    // nothing but the Namespaces and Deployments skipped.
    for path in &files {
        let text = fs::read_to_string(path).expect("example");
        let parsed = manifest::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!parsed.objects.is_empty(), "{}: no object", path.display());
        assert!(
            parsed.warnings.is_empty(),
            "{}: {}",
            path.display(),
            parsed
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        for skipped in &parsed.skipped {
            let kind = skipped.object.as_ref().map(|o| o.kind.as_str());
            assert!(
                matches!(kind, Some("Namespace" | "Deployment")),
                "{}: {skipped}",
                path.display()
            );
        }
    }

    // All of them together, as `sluicegate check manifests/examples` reads
    // them: they are self-contained, so the translator finds nothing at
    // all, not even a missing Service.
    let inputs = check::read_inputs(&[dir], &mut std::io::empty()).expect("read examples");
    let report = check::check(&inputs, &TranslateOptions::default());
    let findings: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.level != check::Level::Note)
        .map(|f| format!("{} {:?} {:?}: {}", f.file, f.object, f.field, f.message))
        .collect();
    assert!(findings.is_empty(), "{}", findings.join("\n"));
    assert!(report.objects >= 15, "{} objects", report.objects);

    let all: String = files
        .iter()
        .map(|p| format!("---\n{}\n", fs::read_to_string(p).expect("example")))
        .collect();
    let state = manifest::state_from_str(&all).expect("examples together");
    let translation = translate(&state, &TranslateOptions::default());
    assert!(
        translation.diagnostics.is_empty(),
        "{:?}",
        translation.diagnostics
    );
    // Every route of every example is served, and every backend Service
    // an example names is among them.
    assert_eq!(
        translation.table.routes.len(),
        state
            .api_routes
            .values()
            .map(|r| r.spec.routes.len())
            .sum::<usize>()
            + state
                .ingresses
                .values()
                .flat_map(|i| i.spec.iter().flat_map(|s| s.rules.iter().flatten()))
                .map(|r| r.http.as_ref().map_or(0, |h| h.paths.len()))
                .sum::<usize>()
    );
}
