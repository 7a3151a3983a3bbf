"""Rendering and checking the Sluicegate Helm chart.

Shared by scripts/render-manifests.py and scripts/check-chart.py. Helm runs
in-process through helm-python-sdk (Helm v4 as a library); YAML is parsed by
the same library (Go's sigs.k8s.io/yaml, as Kubernetes itself does), so no
helm binary and no other Python package is needed.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "sluicegate"
CRDS = REPO / "crds"
CLI_RS = REPO / "src" / "cli" / "mod.rs"
API_RS = REPO / "src" / "api" / "mod.rs"
CARGO_TOML = REPO / "Cargo.toml"

INSTALL_YAML = REPO / "manifests" / "install.yaml"
INSTALL_RELEASE = "sluicegate"
INSTALL_NAMESPACE = "sluicegate-system"

ALL_FEATURES_VALUES = CHART / "ci" / "all-features-values.yaml"
KIND_VALUES = CHART / "values-kind.yaml"
KIND_CLUSTER = REPO / "manifests" / "kind" / "cluster.yaml"
ALL_FEATURES_YAML = REPO / "tests" / "fixtures" / "chart" / "all-features.yaml"
ALL_FEATURES_NAMESPACE = "edge-system"

HELM_SDK = "helm-python-sdk==0.2.2"  # keep in step with .ci/run

# Helm v4's install order (pkg/release/v1/util/kind_sorter.go). Unknown kinds
# come last, sorted by kind; equal kinds keep their order.
INSTALL_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
]

# Environment variables and flags of `sluicegate controller` that src/cli/mod.rs
# does not define yet. Everything the chart passes must be either in
# src/cli/mod.rs or here; drop entries once the controller command has them.
CONTROLLER_ENV = {
    "POD_NAME",
    "POD_NAMESPACE",
    "SLUICEGATE_HTTPS_ADDR",
    "SLUICEGATE_WATCH_NAMESPACES",
    "SLUICEGATE_PUBLISH_SERVICE",
    "SLUICEGATE_PUBLISH_ADDRESSES",
    "SLUICEGATE_LEADER_ELECTION_NAMESPACE",
    "SLUICEGATE_LEADER_ELECTION_NAME",
}
CONTROLLER_FLAGS = {
    "--https-addr",
    "--watch-namespace",
    "--publish-service",
    "--publish-address",
    "--leader-election-namespace",
    "--leader-election-name",
    "--lease-duration",
    "--renew-deadline",
    "--retry-period",
    "--pod-name",
    "--pod-namespace",
}


def helm():
    """The helm_python module, or exit with how to install it."""
    try:
        import helm_python  # noqa: PLC0415
    except ImportError:
        sys.exit(f"error: the Python package helm_python is missing: pip install '{HELM_SDK}'")
    return helm_python


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@dataclass
class Doc:
    """One rendered Kubernetes object."""

    source: str  # template path, e.g. sluicegate/templates/service.yaml
    text: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace", ""))

    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name} ({self.source})"


@dataclass
class Rendered:
    values: dict[str, Any]  # as given
    values_merged: dict[str, Any]  # with the chart's defaults, as the templates saw them
    namespace: str
    docs: list[Doc] = field(default_factory=list)
    notes: str = ""

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.kind == kind]

    def one(self, kind: str) -> Doc:
        found = self.of_kind(kind)
        if len(found) != 1:
            raise CheckError(f"expected one {kind}, found {len(found)}")
        return found[0]


class CheckError(Exception):
    pass


_DOC_SEP = re.compile(r"^---[ \t]*$", re.MULTILINE)


def split_documents(text: str) -> list[str]:
    """YAML documents of a template's output, without empty ones."""
    docs = []
    for part in _DOC_SEP.split(text):
        stripped = "\n".join(
            line for line in part.splitlines() if line.strip() and not line.lstrip().startswith("#")
        )
        if stripped:
            docs.append(part.strip("\n") + "\n")
    return docs


def parse_yaml(text: str) -> Any:
    """One YAML document, parsed as Kubernetes parses manifests."""
    h = helm()
    # values_from_yaml is Helm's values reader: sigs.k8s.io/yaml, which
    # converts to JSON and refuses duplicate keys.
    return h.values_from_yaml(text)


def load_values(path: Path) -> dict[str, Any]:
    return parse_yaml(path.read_text())


def kind_rank(kind: str) -> tuple[int, str]:
    try:
        return (INSTALL_ORDER.index(kind), "")
    except ValueError:
        return (len(INSTALL_ORDER), kind)


def render(values: dict[str, Any] | None, *, namespace: str, release: str = INSTALL_RELEASE) -> Rendered:
    """Renders the chart as `helm template` would, objects in install order."""
    h = helm()
    with h.Chart.load(CHART) as chart:
        files = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
        merged = chart.merge_values(values or {})
    out = Rendered(values=values or {}, values_merged=merged, namespace=namespace)
    for path in sorted(files):
        text = files[path]
        if path.endswith("NOTES.txt"):
            out.notes = text
            continue
        for i, doc in enumerate(split_documents(text)):
            try:
                obj = parse_yaml(doc)
            except Exception as e:  # the SDK's error types vary by cause
                raise CheckError(f"{path}: document {i + 1} is not valid YAML: {e}") from e
            if not isinstance(obj, dict):
                raise CheckError(f"{path}: document {i + 1} is not a mapping")
            out.docs.append(Doc(source=path, text=doc, obj=obj))
    out.docs.sort(key=lambda d: kind_rank(d.kind))
    return out


def bundle(rendered: Rendered, header: str, *, namespace_object: bool) -> str:
    """The rendered objects as one multi-document YAML file."""
    parts = [header.rstrip("\n") + "\n"]
    if namespace_object:
        parts.append(
            "---\n"
            "apiVersion: v1\n"
            "kind: Namespace\n"
            "metadata:\n"
            f"  name: {rendered.namespace}\n"
            "  labels:\n"
            f"    kubernetes.io/metadata.name: {rendered.namespace}\n"
            "    pod-security.kubernetes.io/enforce: restricted\n"
        )
    for d in rendered.docs:
        parts.append(f"---\n# Source: {d.source}\n{d.text}")
    return "".join(parts)


INSTALL_HEADER = f"""\
# Sluicegate: everything it needs to run in a cluster, in namespace
# {INSTALL_NAMESPACE}: the ApiRoute and PluginConfig CRDs, RBAC, the
# IngressClass "sluicegate", the controller Deployment and its Services.
#
#   kubectl apply --server-side -f manifests/install.yaml
#
# Rendered from charts/sluicegate with its default values (release
# "{INSTALL_RELEASE}") by scripts/render-manifests.py; do not edit. To change
# a setting, install the chart with Helm instead.
"""

ALL_FEATURES_HEADER = f"""\
# Snapshot of charts/sluicegate rendered with ci/all-features-values.yaml
# (release "{INSTALL_RELEASE}", namespace {ALL_FEATURES_NAMESPACE}), written by
# scripts/render-manifests.py and checked by CI and tests/manifests.rs; do
# not edit.
"""


def generated_files() -> dict[Path, str]:
    """Every file render-manifests.py writes, with its content."""
    default = render(None, namespace=INSTALL_NAMESPACE)
    full = render(load_values(ALL_FEATURES_VALUES), namespace=ALL_FEATURES_NAMESPACE)
    return {
        INSTALL_YAML: bundle(default, INSTALL_HEADER, namespace_object=True),
        ALL_FEATURES_YAML: bundle(full, ALL_FEATURES_HEADER, namespace_object=False),
    }


# --- facts read from the Rust sources ---------------------------------------


def cli_env_and_flags() -> tuple[set[str], set[str]]:
    """Environment variables and long flags defined in src/cli/mod.rs."""
    text = CLI_RS.read_text()
    env = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', text))
    flags = set()
    for attr, name in re.findall(r"#\[arg\((.*?)\)\]\s*pub\s+(\w+)\s*:", text, re.DOTALL):
        if re.search(r"\blong\b", attr):
            flags.add("--" + name.replace("_", "-"))
    return env | CONTROLLER_ENV, flags | CONTROLLER_FLAGS


def controller_name() -> str:
    m = re.search(r'pub const CONTROLLER_NAME: &str = "([^"]+)"', API_RS.read_text())
    if not m:
        raise CheckError("CONTROLLER_NAME not found in src/api/mod.rs")
    return m.group(1)


def cargo_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', CARGO_TOML.read_text(), re.MULTILINE)
    if not m:
        raise CheckError("version not found in Cargo.toml")
    return m.group(1)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
