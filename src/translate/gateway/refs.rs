//! References across namespaces (ReferenceGrants) and the namespace
//! labels listeners select routes by.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::translate::{ClusterState, ObjectKey};

/// The label every namespace carries with its own name (set by the API
/// server since Kubernetes 1.22; assumed for namespaces not read).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One side of a reference: group, kind and namespace.
#[derive(Clone, Copy, Debug)]
pub(super) struct RefEnd<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// Whether a ReferenceGrant in the target's namespace lets `from` refer to
/// the object `to_name` of `to`'s group and kind.
pub(super) fn granted(
    state: &ClusterState,
    from: RefEnd<'_>,
    to: RefEnd<'_>,
    to_name: &str,
) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    state
        .reference_grants
        .range(ObjectKey::new(to.namespace, "")..)
        .take_while(|(k, _)| k.namespace == to.namespace)
        .any(|(_, grant)| {
            let spec = &grant.spec;
            spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            }) && spec.to.iter().any(|t| {
                t.group == to.group
                    && t.kind == to.kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
        })
}

/// A parsed label selector.
#[derive(Clone, Debug)]
pub(super) struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<(String, Op, Vec<String>)>,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Reads a selector; the error names what is wrong with it.
    pub fn parse(s: &LabelSelector) -> Result<Selector, String> {
        let mut expressions = Vec::new();
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ));
                }
            };
            let values = e.values.clone().unwrap_or_default();
            match op {
                Op::In | Op::NotIn if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: {} needs values",
                        e.operator
                    ));
                }
                Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: {} takes no values",
                        e.operator
                    ));
                }
                _ => {}
            }
            expressions.push((e.key.clone(), op, values));
        }
        Ok(Selector {
            labels: s.match_labels.clone().unwrap_or_default(),
            expressions,
        })
    }

    /// Whether `labels` are selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(k, op, values)| {
                let v = labels.get(k);
                match op {
                    Op::In => v.is_some_and(|v| values.contains(v)),
                    Op::NotIn => v.is_none_or(|v| !values.contains(v)),
                    Op::Exists => v.is_some(),
                    Op::DoesNotExist => v.is_none(),
                }
            })
    }
}

/// The labels of namespace `name`: its object's, when read, and always
/// its name label.
pub(super) fn namespace_labels(state: &ClusterState, name: &str) -> BTreeMap<String, String> {
    let mut labels = state
        .namespaces
        .get(&ObjectKey::new("", name))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    labels.insert(NAME_LABEL.to_owned(), name.to_owned());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let s = Selector::parse(&LabelSelector {
            match_labels: Some(labels(&[("team", "a")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "In".into(),
                    values: Some(vec!["prod".into(), "staging".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        })
        .unwrap();
        assert!(s.matches(&labels(&[("team", "a"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("env", "prod"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(Selector::parse(&bad).unwrap_err().contains("Near"));
    }
}
