//! The typed plugin block shared by routes and PluginConfigs.
//!
//! Every plugin is a named, typed field so that the API server's schema
//! validation rejects a misspelt plugin or option at `kubectl apply`, rather
//! than the gateway discovering it at runtime.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Plugin settings. Each field enables one plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {}
