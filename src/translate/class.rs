//! Which Ingresses and ApiRoutes belong to this controller.
//!
//! An object is ours when it names one of our classes: an IngressClass whose
//! `spec.controller` is `sluicegate.io/ingress-controller`, or the configured
//! class name when no IngressClass of that name exists (standalone manifests
//! often omit the IngressClass). Ingresses may instead use the legacy
//! `kubernetes.io/ingress.class` annotation. An Ingress that names no class
//! is ours when one of our IngressClasses carries the default-class
//! annotation, or when the controller is told to claim such Ingresses.
//! ApiRoutes without `ingressClassName` are always ours.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::Ingress;

use super::TranslateOptions;
use super::state::ClusterState;
use crate::api::CONTROLLER_NAME;

/// Annotation marking an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Annotation used before `spec.ingressClassName` existed.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Decides class membership for one translation.
pub struct ClassFilter {
    ours: BTreeSet<String>,
    claim_unclassed: bool,
}

impl ClassFilter {
    pub fn new(state: &ClusterState, opts: &TranslateOptions) -> Self {
        let mut ours = BTreeSet::new();
        let mut default_ours = false;
        let mut configured_exists = false;
        for (key, class) in &state.ingress_classes {
            if key.name == opts.ingress_class {
                configured_exists = true;
            }
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller == Some(CONTROLLER_NAME) {
                ours.insert(key.name.clone());
                let is_default = class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true");
                default_ours |= is_default;
            }
        }
        if !configured_exists {
            ours.insert(opts.ingress_class.clone());
        }
        ClassFilter {
            ours,
            claim_unclassed: default_ours || opts.watch_ingress_without_class,
        }
    }

    pub fn ingress_is_ours(&self, ingress: &Ingress) -> bool {
        if let Some(class) = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return self.ours.contains(class);
        }
        let legacy = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        match legacy {
            Some(class) => self.ours.contains(class),
            None => self.claim_unclassed,
        }
    }

    pub fn class_is_ours(&self, class: Option<&str>) -> bool {
        class.is_none_or(|c| self.ours.contains(c))
    }
}
