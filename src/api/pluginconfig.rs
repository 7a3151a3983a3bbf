//! The `PluginConfig` custom resource: a named, reusable set of plugins.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::plugins::Plugins;

/// A reusable set of plugin settings that routes reference by name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluicegate.io",
    version = "v1alpha1",
    kind = "PluginConfig",
    namespaced,
    status = "PluginConfigStatus",
    // `pc` is PriorityClass's.
    shortname = "sgpc",
    category = "sluicegate",
    doc = "PluginConfig is a named set of plugin settings shared by routes.",
    printcolumn = r#"{"name":"Accepted","type":"string","description":"The plugin settings are valid.","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Accepted; routes that reference it can use it.","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfigSpec {
    /// The plugins and their settings.
    #[serde(default)]
    pub plugins: Plugins,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginConfigStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `Ready`, each with the generation it describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
}
