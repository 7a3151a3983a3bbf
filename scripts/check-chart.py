#!/usr/bin/env python3
"""Checks charts/sluicegate without a cluster or a helm binary:

- `helm lint --strict` with the default values, values-kind.yaml and every
  ci/*-values.yaml;
- values.schema.json accepts the defaults and rejects misspelt keys and
  wrong types, at validation and at render time;
- the chart renders with the defaults, with values-kind.yaml (which must
  match manifests/kind/cluster.yaml) and with several sets of non-default
  values; every document is a Kubernetes object (apiVersion, kind,
  metadata.name) with valid names and labels, and the kinds the chart uses
  have the expected structure (unknown fields are errors);
- the objects fit together: selectors select the pods, named ports exist,
  bindings name rendered roles and the ServiceAccount, the HPA and PDB
  target the Deployment, the ServiceMonitor selects the metrics Service;
- RBAC is least-privilege: reads are list/watch, writes only on status
  subresources, Events and the Lease; nothing cluster-wide beyond that;
- the CRD templates match crds/, the IngressClass names the controller of
  src/api, every environment variable and flag passed to the binary is one
  it knows, and appVersion is the crate's version;
- settings the templates refuse (an HPA on CPU without a CPU request, a PDB
  with both minAvailable and maxUnavailable) fail to render.

Exit status 0 when everything holds; the closing line counts the checks.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import sluicegate_chart as sc

# --- a small structural schema language --------------------------------------


class Any_:
    """Any value of the given Python types (no look inside)."""

    def __init__(self, *types: type) -> None:
        self.types = types or (object,)


class Map:
    """A mapping with arbitrary keys whose values match `value`."""

    def __init__(self, value: Any) -> None:
        self.value = value


class List:
    def __init__(self, item: Any) -> None:
        self.item = item


class Enum:
    def __init__(self, *values: Any) -> None:
        self.values = values


STR, INT, BOOL = Any_(str), Any_(int), Any_(bool)
OBJ = Any_(dict)
INT_OR_STR = Any_(int, str)
STRMAP = Map(STR)

META = {
    "name": STR,
    "namespace": STR,
    "labels": STRMAP,
    "annotations": STRMAP,
}
LABEL_SELECTOR = {"matchLabels": STRMAP, "matchExpressions": List(OBJ)}
PROBE = {
    "httpGet": {"path": STR, "port": INT_OR_STR, "scheme": STR, "host": STR, "httpHeaders": List(OBJ)},
    "tcpSocket": OBJ,
    "grpc": OBJ,
    "exec": OBJ,
    "initialDelaySeconds": INT,
    "periodSeconds": INT,
    "timeoutSeconds": INT,
    "successThreshold": INT,
    "failureThreshold": INT,
    "terminationGracePeriodSeconds": INT,
}
CONTAINER = {
    "name": STR,
    "image": STR,
    "imagePullPolicy": Enum("Always", "IfNotPresent", "Never"),
    "command": List(STR),
    "args": List(STR),
    "env": List(
        {
            "name": STR,
            "value": STR,
            "valueFrom": {
                "fieldRef": {"fieldPath": STR, "apiVersion": STR},
                "secretKeyRef": OBJ,
                "configMapKeyRef": OBJ,
                "resourceFieldRef": OBJ,
            },
        }
    ),
    "envFrom": List(OBJ),
    "ports": List(
        {"name": STR, "containerPort": INT, "protocol": Enum("TCP", "UDP", "SCTP"), "hostPort": INT}
    ),
    "startupProbe": PROBE,
    "livenessProbe": PROBE,
    "readinessProbe": PROBE,
    "lifecycle": {"preStop": OBJ, "postStart": OBJ},
    "resources": {"requests": Map(INT_OR_STR), "limits": Map(INT_OR_STR), "claims": List(OBJ)},
    "securityContext": {
        "runAsNonRoot": BOOL,
        "runAsUser": INT,
        "runAsGroup": INT,
        "readOnlyRootFilesystem": BOOL,
        "allowPrivilegeEscalation": BOOL,
        "privileged": BOOL,
        "capabilities": {"add": List(STR), "drop": List(STR)},
        "seccompProfile": {"type": STR, "localhostProfile": STR},
        "appArmorProfile": OBJ,
        "seLinuxOptions": OBJ,
        "windowsOptions": OBJ,
        "procMount": STR,
    },
    "volumeMounts": List(
        {
            "name": STR,
            "mountPath": STR,
            "readOnly": BOOL,
            "subPath": STR,
            "subPathExpr": STR,
            "mountPropagation": STR,
            "recursiveReadOnly": STR,
        }
    ),
}
POD_SPEC = {
    "serviceAccountName": STR,
    "automountServiceAccountToken": BOOL,
    "terminationGracePeriodSeconds": INT,
    "priorityClassName": STR,
    "imagePullSecrets": List({"name": STR}),
    "securityContext": {
        "runAsNonRoot": BOOL,
        "runAsUser": INT,
        "runAsGroup": INT,
        "fsGroup": INT,
        "fsGroupChangePolicy": STR,
        "supplementalGroups": List(INT),
        "seccompProfile": {"type": STR, "localhostProfile": STR},
        "appArmorProfile": OBJ,
        "seLinuxOptions": OBJ,
        "sysctls": List(OBJ),
        "windowsOptions": OBJ,
    },
    "containers": List(CONTAINER),
    "volumes": List(OBJ),
    "nodeSelector": STRMAP,
    "affinity": {"nodeAffinity": OBJ, "podAffinity": OBJ, "podAntiAffinity": OBJ},
    "tolerations": List(
        {
            "key": STR,
            "operator": Enum("Exists", "Equal"),
            "value": STR,
            "effect": Enum("NoSchedule", "PreferNoSchedule", "NoExecute"),
            "tolerationSeconds": INT,
        }
    ),
    "topologySpreadConstraints": List(
        {
            "maxSkew": INT,
            "topologyKey": STR,
            "whenUnsatisfiable": Enum("DoNotSchedule", "ScheduleAnyway"),
            "labelSelector": LABEL_SELECTOR,
            "minDomains": INT,
            "matchLabelKeys": List(STR),
            "nodeAffinityPolicy": STR,
            "nodeTaintsPolicy": STR,
        }
    ),
}
RULE = {"apiGroups": List(STR), "resources": List(STR), "verbs": List(STR), "resourceNames": List(STR)}
SUBJECT = {"kind": Enum("ServiceAccount", "User", "Group"), "name": STR, "namespace": STR, "apiGroup": STR}
ROLE_REF = {"apiGroup": Enum("rbac.authorization.k8s.io"), "kind": Enum("Role", "ClusterRole"), "name": STR}

KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("v1", "Namespace"): {"metadata": META, "spec": OBJ},
    ("v1", "ServiceAccount"): {
        "metadata": META,
        "automountServiceAccountToken": BOOL,
        "imagePullSecrets": List({"name": STR}),
    },
    ("v1", "Service"): {
        "metadata": META,
        "spec": {
            "type": Enum("ClusterIP", "NodePort", "LoadBalancer"),
            "externalTrafficPolicy": Enum("Cluster", "Local"),
            "loadBalancerClass": STR,
            "loadBalancerSourceRanges": List(STR),
            "selector": STRMAP,
            "ports": List(
                {
                    "name": STR,
                    "port": INT,
                    "targetPort": INT_OR_STR,
                    "protocol": Enum("TCP", "UDP", "SCTP"),
                    "nodePort": INT,
                    "appProtocol": STR,
                }
            ),
        },
    },
    ("apps/v1", "Deployment"): {
        "metadata": META,
        "spec": {
            "replicas": INT,
            "revisionHistoryLimit": INT,
            "selector": LABEL_SELECTOR,
            "strategy": {
                "type": Enum("RollingUpdate", "Recreate"),
                "rollingUpdate": {"maxSurge": INT_OR_STR, "maxUnavailable": INT_OR_STR},
            },
            "minReadySeconds": INT,
            "template": {"metadata": {"labels": STRMAP, "annotations": STRMAP}, "spec": POD_SPEC},
        },
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {"metadata": META, "rules": List(RULE)},
    ("rbac.authorization.k8s.io/v1", "Role"): {"metadata": META, "rules": List(RULE)},
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): {
        "metadata": META,
        "roleRef": ROLE_REF,
        "subjects": List(SUBJECT),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): {
        "metadata": META,
        "roleRef": ROLE_REF,
        "subjects": List(SUBJECT),
    },
    ("networking.k8s.io/v1", "IngressClass"): {
        "metadata": META,
        "spec": {"controller": STR, "parameters": OBJ},
    },
    ("policy/v1", "PodDisruptionBudget"): {
        "metadata": META,
        "spec": {
            "minAvailable": INT_OR_STR,
            "maxUnavailable": INT_OR_STR,
            "selector": LABEL_SELECTOR,
            "unhealthyPodEvictionPolicy": STR,
        },
    },
    ("autoscaling/v2", "HorizontalPodAutoscaler"): {
        "metadata": META,
        "spec": {
            "scaleTargetRef": {"apiVersion": STR, "kind": STR, "name": STR},
            "minReplicas": INT,
            "maxReplicas": INT,
            "metrics": List(
                {
                    "type": Enum("Resource", "Pods", "Object", "External", "ContainerResource"),
                    "resource": {
                        "name": STR,
                        "target": {
                            "type": Enum("Utilization", "AverageValue", "Value"),
                            "averageUtilization": INT,
                            "averageValue": INT_OR_STR,
                            "value": INT_OR_STR,
                        },
                    },
                }
            ),
            "behavior": {"scaleUp": OBJ, "scaleDown": OBJ},
        },
    },
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): {
        "metadata": META,
        "spec": {
            "group": STR,
            "names": {
                "kind": STR,
                "plural": STR,
                "singular": STR,
                "shortNames": List(STR),
                "categories": List(STR),
                "listKind": STR,
            },
            "scope": Enum("Namespaced", "Cluster"),
            "versions": List(
                {
                    "name": STR,
                    "served": BOOL,
                    "storage": BOOL,
                    "schema": {"openAPIV3Schema": OBJ},
                    "subresources": {"status": OBJ, "scale": OBJ},
                    "additionalPrinterColumns": List(
                        {
                            "name": STR,
                            "type": STR,
                            "jsonPath": STR,
                            "description": STR,
                            "format": STR,
                            "priority": INT,
                        }
                    ),
                    "deprecated": BOOL,
                    "deprecationWarning": STR,
                    "selectableFields": List(OBJ),
                }
            ),
            "conversion": OBJ,
            "preserveUnknownFields": BOOL,
        },
    },
    # The Gateway API's, when gatewayAPI.gatewayClass.create is set.
    ("gateway.networking.k8s.io/v1", "GatewayClass"): {
        "metadata": META,
        "spec": {"controllerName": STR, "description": STR},
    },
    ("v1", "ConfigMap"): {"metadata": META, "data": STRMAP, "binaryData": STRMAP, "immutable": BOOL},
    # Not Kubernetes kinds; the Prometheus Operator's.
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "metadata": META,
        "spec": {
            "namespaceSelector": {"matchNames": List(STR), "any": BOOL},
            "selector": LABEL_SELECTOR,
            "podMetricsEndpoints": List(
                {
                    "port": STR,
                    "path": STR,
                    "interval": STR,
                    "scrapeTimeout": STR,
                    "relabelings": List(OBJ),
                    "metricRelabelings": List(OBJ),
                    "honorLabels": BOOL,
                    "scheme": STR,
                }
            ),
            "jobLabel": STR,
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "metadata": META,
        "spec": {
            "groups": List(
                {
                    "name": STR,
                    "interval": STR,
                    "rules": List(
                        {
                            "alert": STR,
                            "record": STR,
                            "expr": INT_OR_STR,
                            "for": STR,
                            "keep_firing_for": STR,
                            "labels": STRMAP,
                            "annotations": STRMAP,
                        }
                    ),
                }
            )
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "metadata": META,
        "spec": {
            "namespaceSelector": {"matchNames": List(STR), "any": BOOL},
            "selector": LABEL_SELECTOR,
            "endpoints": List(
                {
                    "port": STR,
                    "path": STR,
                    "interval": STR,
                    "scrapeTimeout": STR,
                    "relabelings": List(OBJ),
                    "metricRelabelings": List(OBJ),
                    "honorLabels": BOOL,
                    "scheme": STR,
                }
            ),
            "jobLabel": STR,
        },
    },
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "IngressClass",
    "CustomResourceDefinition",
    "GatewayClass",
}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def shape(value: Any, spec: Any, path: str, errors: list[str]) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for k, v in value.items():
            if k not in spec:
                errors.append(f"{path}.{k}: unknown field")
            else:
                shape(v, spec[k], f"{path}.{k}", errors)
    elif isinstance(spec, Map):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for k, v in value.items():
            shape(v, spec.value, f"{path}.{k}", errors)
    elif isinstance(spec, List):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            shape(v, spec.item, f"{path}[{i}]", errors)
    elif isinstance(spec, Enum):
        if value not in spec.values:
            errors.append(f"{path}: {value!r} is not one of {', '.join(map(str, spec.values))}")
    elif isinstance(spec, Any_):
        # bool is an int in Python; an integer field must not take a bool.
        if isinstance(value, bool) and bool not in spec.types and object not in spec.types:
            errors.append(f"{path}: expected {'/'.join(t.__name__ for t in spec.types)}, got bool")
        elif not isinstance(value, spec.types):
            errors.append(
                f"{path}: expected {'/'.join(t.__name__ for t in spec.types)}, got {type(value).__name__}"
            )
    else:
        raise TypeError(f"bad spec at {path}")


def check_label_map(m: dict[str, str], path: str, errors: list[str]) -> None:
    for k, v in (m or {}).items():
        prefix, _, name = k.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
            errors.append(f"{path}: key {k!r} has an invalid prefix")
        if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
            errors.append(f"{path}: key {k!r} is not a qualified name")
        if path.endswith("labels") and (not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v)):
            errors.append(f"{path}: value {v!r} of {k} is not a valid label value")


def check_object(doc: sc.Doc) -> list[str]:
    """Is it a Kubernetes object of a kind we know, with valid metadata?"""
    errors: list[str] = []
    o = doc.obj
    api, kind, meta = o.get("apiVersion"), o.get("kind"), o.get("metadata")
    if not isinstance(api, str) or not api:
        errors.append("apiVersion is missing")
    if not isinstance(kind, str) or not kind:
        errors.append("kind is missing")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        errors.append("metadata.name is missing")
    if errors:
        return errors
    name = meta["name"]
    # Services and Namespaces need DNS labels; the rest DNS subdomains.
    if kind in ("Service", "Namespace"):
        if len(name) > 63 or not DNS_LABEL.match(name):
            errors.append(f"metadata.name {name!r} is not a DNS label")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS subdomain")
    if kind in CLUSTER_SCOPED:
        if "namespace" in meta:
            errors.append("a cluster-scoped object has metadata.namespace")
    elif not meta.get("namespace"):
        errors.append("metadata.namespace is missing (kubectl apply would use the current namespace)")
    elif not DNS_LABEL.match(meta["namespace"]):
        errors.append(f"metadata.namespace {meta['namespace']!r} is not a DNS label")
    spec = KINDS.get((api, kind))
    if spec is None:
        errors.append(f"{api} {kind} is not a kind the chart is known to render")
    else:
        body = {k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
        shape(body, spec, kind, errors)
    check_label_map(meta.get("labels") or {}, "metadata.labels", errors)
    check_label_map(meta.get("annotations") or {}, "metadata.annotations", errors)
    for k in (
        "helm.sh/chart",
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
    ):
        if kind != "Namespace" and k not in (meta.get("labels") or {}):
            errors.append(f"metadata.labels lacks {k}")
    return errors


# --- how the objects fit together -------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def duration_seconds(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise sc.CheckError(f"bad duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def check_relations(r: sc.Rendered) -> list[str]:
    errors: list[str] = []
    v = r.values_merged
    deps = r.of_kind("Deployment")
    if len(deps) != 1:
        return [f"expected one Deployment, found {len(deps)}"]
    dep = deps[0].obj
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    if not selects(dep["spec"]["selector"].get("matchLabels", {}), pod_labels):
        errors.append("Deployment selector does not select its own pods")
    containers = pod["spec"]["containers"]
    if len(containers) != 1:
        errors.append("expected one container")
    c = containers[0]
    port_names = [p.get("name") for p in c.get("ports", [])]
    if len(set(port_names)) != len(port_names) or any(not n or len(n) > 15 for n in port_names):
        errors.append(f"container port names must be unique and at most 15 characters: {port_names}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = (c.get(probe) or {}).get("httpGet", {}).get("port")
        if isinstance(port, str) and port not in port_names:
            errors.append(f"{probe} uses port {port!r}, which the container does not name")
    env = {e["name"]: e for e in c.get("env", [])}
    if len(env) != len(c.get("env", [])):
        errors.append("duplicate environment variables")
    for n in env:
        if not ENV_NAME.match(n):
            errors.append(f"environment variable name {n!r} is invalid")
    known_env, known_flags = sc.cli_env_and_flags()
    for n in env:
        if (n.startswith("SLUICEGATE_") or n.startswith("POD_")) and n not in known_env:
            errors.append(f"environment variable {n} is not read by sluicegate (src/cli/mod.rs)")
    args = c.get("args", [])
    if not args or args[0] != "controller":
        errors.append(f"the container must run `controller`, not {args[:1]}")
    user_args = set(v.get("extraArgs") or [])
    for a in args[1:]:
        flag = a.split("=", 1)[0]
        if a not in user_args and flag not in known_flags:
            errors.append(f"argument {a!r} is not a flag of sluicegate controller")
    for n, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        got = env.get(n, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if got != path:
            errors.append(f"{n} must come from the downward API ({path})")
    # Kubernetes must wait longer than the binary's own shutdown grace.
    grace = duration_seconds(env.get("SLUICEGATE_SHUTDOWN_GRACE", {}).get("value") or "25s")
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    if pod["spec"].get("terminationGracePeriodSeconds", 30) <= grace + pre_stop:
        errors.append("terminationGracePeriodSeconds must exceed the shutdown grace plus the preStop sleep")
    sa_name = pod["spec"].get("serviceAccountName", "default")
    namespace = deps[0].namespace

    # Services select the pods and target named container ports.
    for svc in r.of_kind("Service"):
        spec = svc.obj["spec"]
        if not selects(spec.get("selector", {}), pod_labels):
            errors.append(f"{svc.ref()}: selector does not select the controller pods")
        names = [p.get("name") for p in spec.get("ports", [])]
        if not names or len(set(names)) != len(names):
            errors.append(f"{svc.ref()}: ports need unique names")
        for p in spec.get("ports", []):
            t = p.get("targetPort")
            if isinstance(t, str) and t not in port_names:
                errors.append(f"{svc.ref()}: targetPort {t!r} is not a container port")
            if "nodePort" in p and spec.get("type") not in ("NodePort", "LoadBalancer"):
                errors.append(f"{svc.ref()}: nodePort on a {spec.get('type')} Service")
        if "externalTrafficPolicy" in spec and spec.get("type") not in ("NodePort", "LoadBalancer"):
            errors.append(f"{svc.ref()}: externalTrafficPolicy on a {spec.get('type')} Service")
    publish = env.get("SLUICEGATE_PUBLISH_SERVICE", {}).get("value")
    rendered_services = {f"{s.namespace}/{s.name}" for s in r.of_kind("Service")}
    if publish and not v["publishService"].get("pathOverride") and publish not in rendered_services:
        errors.append(f"SLUICEGATE_PUBLISH_SERVICE={publish} names no rendered Service")

    # Bindings refer to rendered roles and to the pods' ServiceAccount.
    roles = {(d.namespace, d.name) for d in r.of_kind("Role")}
    cluster_roles = {d.name for d in r.of_kind("ClusterRole")}
    for b in r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding"):
        ref = b.obj["roleRef"]
        if ref["kind"] == "Role" and (b.namespace, ref["name"]) not in roles:
            errors.append(f"{b.ref()}: binds Role {ref['name']}, which is not rendered in {b.namespace}")
        if ref["kind"] == "ClusterRole" and ref["name"] not in cluster_roles:
            errors.append(f"{b.ref()}: binds ClusterRole {ref['name']}, which is not rendered")
        for s in b.obj.get("subjects", []):
            if (s.get("kind"), s.get("name"), s.get("namespace")) != ("ServiceAccount", sa_name, namespace):
                errors.append(f"{b.ref()}: subject {s} is not the controller's ServiceAccount")
    if v["serviceAccount"]["create"]:
        sas = {(d.namespace, d.name) for d in r.of_kind("ServiceAccount")}
        if (namespace, sa_name) not in sas:
            errors.append(f"ServiceAccount {namespace}/{sa_name} used by the pods is not rendered")

    for pdb in r.of_kind("PodDisruptionBudget"):
        if not selects(pdb.obj["spec"]["selector"].get("matchLabels", {}), pod_labels):
            errors.append(f"{pdb.ref()}: does not select the controller pods")
        if ("minAvailable" in pdb.obj["spec"]) == ("maxUnavailable" in pdb.obj["spec"]):
            errors.append(f"{pdb.ref()}: needs exactly one of minAvailable and maxUnavailable")
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        t = hpa.obj["spec"]["scaleTargetRef"]
        if (t["apiVersion"], t["kind"], t["name"]) != ("apps/v1", "Deployment", deps[0].name):
            errors.append(f"{hpa.ref()}: does not target the Deployment")
        if "replicas" in dep["spec"]:
            errors.append("with an HPA the Deployment must not set replicas (every upgrade would reset them)")
        if hpa.obj["spec"]["minReplicas"] > hpa.obj["spec"]["maxReplicas"]:
            errors.append(f"{hpa.ref()}: minReplicas above maxReplicas")
    for sm in r.of_kind("ServiceMonitor"):
        sel = sm.obj["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in r.of_kind("Service") if selects(sel, s.obj["metadata"].get("labels", {}))]
        if len(matched) != 1:
            errors.append(f"{sm.ref()}: selects {len(matched)} Services, expected the metrics Service only")
        else:
            ports = {p["name"] for p in matched[0].obj["spec"]["ports"]}
            for ep in sm.obj["spec"]["endpoints"]:
                if ep["port"] not in ports:
                    errors.append(
                        f"{sm.ref()}: endpoint port {ep['port']!r} is not a port of {matched[0].ref()}"
                    )
        if sm.obj["spec"]["namespaceSelector"]["matchNames"] != [namespace]:
            errors.append(f"{sm.ref()}: namespaceSelector must name the release namespace")
    for pm in r.of_kind("PodMonitor"):
        sel = pm.obj["spec"]["selector"].get("matchLabels", {})
        if not selects(sel, pod_labels):
            errors.append(f"{pm.ref()}: does not select the pods")
        for ep in pm.obj["spec"]["podMetricsEndpoints"]:
            if ep["port"] not in port_names:
                errors.append(f"{pm.ref()}: port {ep['port']!r} is not a container port")
        if pm.obj["spec"]["namespaceSelector"]["matchNames"] != [namespace]:
            errors.append(f"{pm.ref()}: namespaceSelector must name the release namespace")
    for cm in r.of_kind("ConfigMap"):
        if cm.name.endswith("-dashboard"):
            try:
                dash = json.loads(cm.obj["data"]["sluicegate.json"])
                if dash.get("uid") != "sluicegate":
                    errors.append(f"{cm.ref()}: the dashboard's uid is not sluicegate")
            except (KeyError, ValueError) as e:
                errors.append(f"{cm.ref()}: sluicegate.json is not the dashboard JSON: {e}")
    token = env.get("SLUICEGATE_ADMIN_TOKEN")
    if token is not None:
        ref = token.get("valueFrom", {}).get("secretKeyRef", {})
        if "value" in token or ref.get("name") != v["adminToken"]["secret"]["name"]:
            errors.append("SLUICEGATE_ADMIN_TOKEN must come from the adminToken Secret, never a literal")
    for ic in r.of_kind("IngressClass"):
        if ic.obj["spec"]["controller"] != sc.controller_name():
            errors.append(f"{ic.ref()}: controller is not {sc.controller_name()} (src/api/mod.rs)")
        if env.get("SLUICEGATE_INGRESS_CLASS", {}).get("value") != ic.name:
            errors.append(f"{ic.ref()}: the controller serves another class")
    return errors


# Writes are allowed only here: (apiGroup, resource) -> verbs.
WRITABLE = {
    ("networking.k8s.io", "ingresses/status"): {"patch", "update"},
    ("sluicegate.io", "apiroutes/status"): {"patch", "update"},
    ("sluicegate.io", "pluginconfigs/status"): {"patch", "update"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "events"): {"create", "patch"},
    ("coordination.k8s.io", "leases"): {"create", "get", "update"},
    ("gateway.networking.k8s.io", "gatewayclasses/status"): {"patch", "update"},
    ("gateway.networking.k8s.io", "gateways/status"): {"patch", "update"},
    ("gateway.networking.k8s.io", "httproutes/status"): {"patch", "update"},
    ("gateway.networking.k8s.io", "grpcroutes/status"): {"patch", "update"},
    # The session ticket key Secret (tls.sharedTicketKeys).
    ("", "secrets"): {"create", "get", "update"},
}
# The Gateway API's kinds: watched (and their status written) only with
# gatewayAPI.enabled.
GATEWAY_API = {
    ("gateway.networking.k8s.io", "gatewayclasses"),
    ("gateway.networking.k8s.io", "gateways"),
    ("gateway.networking.k8s.io", "httproutes"),
    ("gateway.networking.k8s.io", "grpcroutes"),
    ("gateway.networking.k8s.io", "referencegrants"),
    ("", "namespaces"),
}
# Cluster-scoped kinds, which only a ClusterRole can grant.
CLUSTER_RESOURCES = {"ingressclasses", "gatewayclasses", "gatewayclasses/status", "namespaces"}
READABLE = {
    ("", "services"),
    ("", "secrets"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
    ("sluicegate.io", "apiroutes"),
    ("sluicegate.io", "pluginconfigs"),
} | GATEWAY_API


def check_rbac(r: sc.Rendered) -> list[str]:
    errors: list[str] = []
    lease_ns = r.values_merged["leaderElection"]["namespace"] or r.namespace
    granted: dict[tuple[str, str], set[str]] = {}
    for role in r.of_kind("ClusterRole") + r.of_kind("Role"):
        for rule in role.obj.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    errors.append(f"{role.ref()}: wildcard in {field}")
            for g in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    verbs = set(rule.get("verbs", []))
                    granted.setdefault((g, res), set()).update(verbs)
                    writes = verbs - {"get", "list", "watch"}
                    if writes and not writes <= WRITABLE.get((g, res), set()):
                        errors.append(f"{role.ref()}: may {sorted(writes)} {g or 'core'}/{res}")
                    gateway_api_on = r.values_merged["gatewayAPI"]["enabled"]
                    if not gateway_api_on and (
                        (g, res) in GATEWAY_API or (g, res.removesuffix("/status")) in GATEWAY_API
                    ):
                        errors.append(f"{role.ref()}: grants {g or 'core'}/{res} with gatewayAPI disabled")
                    reads = verbs & {"get", "list", "watch"}
                    if (g, res) == ("", "secrets") and writes:
                        if role.kind != "Role" or role.namespace != r.namespace:
                            errors.append(f"{role.ref()}: writes Secrets outside the release namespace")
                        if verbs & {"get", "update"} and not rule.get("resourceNames"):
                            errors.append(f"{role.ref()}: get/update on every Secret")
                        continue
                    if (g, res) == ("coordination.k8s.io", "leases"):
                        if role.kind != "Role" or role.namespace != lease_ns:
                            errors.append(
                                f"{role.ref()}: Lease access outside the lease namespace {lease_ns}"
                            )
                        if verbs & {"get", "update"} and not rule.get("resourceNames"):
                            errors.append(f"{role.ref()}: get/update on every Lease")
                    elif reads and (g, res) not in READABLE:
                        errors.append(f"{role.ref()}: reads {g or 'core'}/{res}, which is not watched")
                    elif "get" in reads and not rule.get("resourceNames"):
                        # Watchers need list/watch only; a bare get on
                        # Secrets would hand out every key in the cluster.
                        errors.append(f"{role.ref()}: unnamed get on {g or 'core'}/{res}")
    needed = {
        ("", "services"),
        ("", "secrets"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("sluicegate.io", "apiroutes"),
        ("sluicegate.io", "pluginconfigs"),
    }
    if r.values_merged["rbac"]["create"]:
        for g_res in sorted(needed):
            if not {"list", "watch"} <= granted.get(g_res, set()):
                errors.append(f"no list/watch on {g_res[0] or 'core'}/{g_res[1]}")
        if r.values_merged["gatewayAPI"]["enabled"]:
            for g_res in sorted(GATEWAY_API):
                if not {"list", "watch"} <= granted.get(g_res, set()):
                    errors.append(f"no list/watch on {g_res[0] or 'core'}/{g_res[1]}")
        for g_res in WRITABLE:
            if g_res[0] == "gateway.networking.k8s.io" and not r.values_merged["gatewayAPI"]["enabled"]:
                continue
            if g_res[1] not in ("leases", "secrets") and not {"patch"} <= granted.get(g_res, set()):
                errors.append(f"no patch on {g_res[0] or 'core'}/{g_res[1]}")
        if not {"create", "get", "update"} <= granted.get(("coordination.k8s.io", "leases"), set()):
            errors.append("no get/create/update on the Lease")
        cluster = r.of_kind("ClusterRole")
        ns_list = r.values_merged["watchNamespaces"]
        if ns_list:
            for d in cluster:
                for rule in d.obj["rules"]:
                    if not set(rule["resources"]) <= CLUSTER_RESOURCES:
                        errors.append(
                            f"{d.ref()}: grants {rule['resources']} cluster-wide "
                            "although watchNamespaces is set"
                        )
            for ns in ns_list:
                if not any(
                    d.namespace == ns and d.name == r.one("Deployment").name for d in r.of_kind("Role")
                ):
                    errors.append(f"no Role in watched namespace {ns}")
    return errors


def check_crds(r: sc.Rendered) -> list[str]:
    errors = []
    v = r.values_merged
    # The Gateway API's CRDs are checked by gateway_api_crds_expectations.
    rendered = {
        d.name: d for d in r.of_kind("CustomResourceDefinition") if not d.name.endswith(".gateway.networking.k8s.io")
    }
    expected = {}
    for path in sorted(sc.CRDS.glob("*.yaml")):
        obj = sc.parse_yaml(path.read_text())
        expected[obj["metadata"]["name"]] = obj
    if not v["crds"]["install"]:
        return [f"crds.install=false renders {sorted(rendered)}"] if rendered else []
    if set(rendered) != set(expected):
        return [f"CRDs rendered {sorted(rendered)} but crds/ has {sorted(expected)}"]
    for name, doc in rendered.items():
        got = copy.deepcopy(doc.obj)
        meta = got["metadata"]
        annotations = meta.pop("annotations", None) or {}
        want = (
            {"helm.sh/resource-policy": "keep", "argocd.argoproj.io/sync-options": "Prune=false,Delete=false"}
            if v["crds"]["keep"]
            else {}
        )
        if annotations != want:
            errors.append(f"{doc.ref()}: annotations {annotations} with crds.keep={v['crds']['keep']}")
        meta.pop("labels", None)
        if sc.dumps(got) != sc.dumps(expected[name]):
            errors.append(f"{doc.ref()}: differs from crds/; run `cargo run --bin crdgen`")
    return errors


# --- scenarios ----------------------------------------------------------------

Scenario = tuple[str, dict[str, Any], Callable[[sc.Rendered], list[str]]]


def expect(cond: bool, message: str) -> list[str]:
    return [] if cond else [message]


def env_of(r: sc.Rendered) -> dict[str, str]:
    c = r.one("Deployment").obj["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def workers_source(r: sc.Rendered) -> str | None:
    """Where SLUICEGATE_WORKERS comes from: a literal, `limits.cpu` or
    `requests.cpu` (Downward API, divisor 1), or None when unset."""
    c = r.one("Deployment").obj["spec"]["template"]["spec"]["containers"][0]
    for e in c.get("env", []):
        if e["name"] == "SLUICEGATE_WORKERS":
            if "value" in e:
                return "value:" + e["value"]
            ref = e.get("valueFrom", {}).get("resourceFieldRef", {})
            if ref.get("divisor") == "1" and ref.get("containerName") == c["name"]:
                return ref.get("resource")
            return "bad reference"
    return None


def defaults_expectations(r: sc.Rendered) -> list[str]:
    dep = r.one("Deployment").obj
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sec = c["securityContext"]
    env = env_of(r)
    errs: list[str] = []
    errs += expect(dep["spec"].get("replicas") == 2, "replicaCount defaults to 2")
    errs += expect(
        c["image"] == f"ghcr.io/sluicegate/sluicegate:{sc.cargo_version()}", f"image is {c['image']}"
    )
    errs += expect(
        pod["securityContext"].get("runAsNonRoot") is True
        and pod["securityContext"].get("runAsUser") == 65532,
        "pod runs as 65532, non-root",
    )
    errs += expect(sec.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    errs += expect(sec.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    errs += expect(sec.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    errs += expect(sec.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    errs += expect(pod["terminationGracePeriodSeconds"] == 30, "terminationGracePeriodSeconds 30")
    errs += expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
    errs += expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
    errs += expect("startupProbe" in c, "a startup probe")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    errs += expect(ports == {"http": 8080, "https": 8443, "admin": 9180}, f"container ports {ports}")
    errs += expect("SLUICEGATE_HTTP3" not in env, "HTTP/3 off by default")
    svc = next(s for s in r.of_kind("Service") if s.name == r.one("Deployment").name).obj["spec"]
    errs += expect(svc["type"] == "LoadBalancer", "Service type LoadBalancer")
    errs += expect(
        {p["name"]: p["port"] for p in svc["ports"]} == {"http": 80, "https": 443}, "Service ports 80/443"
    )
    errs += expect(
        env.get("SLUICEGATE_PUBLISH_SERVICE") == f"{r.namespace}/{r.one('Deployment').name}",
        "publishes the chart's own Service",
    )
    errs += expect(env.get("SLUICEGATE_INGRESS_CLASS") == "sluicegate", "serves class sluicegate")
    errs += expect("SLUICEGATE_WATCH_NAMESPACES" not in env, "watches every namespace")
    ic = r.one("IngressClass")
    errs += expect(
        "ingressclass.kubernetes.io/is-default-class" not in (ic.obj["metadata"].get("annotations") or {}),
        "the IngressClass is not the default",
    )
    errs += expect(len(r.of_kind("CustomResourceDefinition")) == 2, "both CRDs")
    errs += expect(
        r.one("PodDisruptionBudget").obj["spec"]
        == {"minAvailable": 1, "selector": r.one("PodDisruptionBudget").obj["spec"]["selector"]},
        "PDB minAvailable 1",
    )
    errs += expect(
        not r.of_kind("HorizontalPodAutoscaler") and not r.of_kind("ServiceMonitor"),
        "no HPA and no ServiceMonitor by default",
    )
    errs += expect(
        not r.of_kind("PodMonitor") and not r.of_kind("PrometheusRule") and not r.of_kind("ConfigMap"),
        "no PodMonitor, PrometheusRule or dashboard by default",
    )
    errs += expect("SLUICEGATE_ADMIN_TOKEN" not in env, "no admin token by default")
    errs += expect(
        len(r.of_kind("ClusterRole")) == 1 and len(r.of_kind("Role")) == 2,
        "one ClusterRole, two Roles (Lease, ticket key Secret)",
    )
    errs += expect(
        env.get("SLUICEGATE_TLS_TICKET_KEYS_SECRET")
        == f"{r.namespace}/{r.one('Deployment').name}-tls-ticket-keys",
        "replicas share session ticket keys through a Secret in the release namespace",
    )
    errs += expect(workers_source(r) == "requests.cpu", "workers from the CPU request (no CPU limit)")
    return errs


def all_features_expectations(r: sc.Rendered) -> list[str]:
    env = env_of(r)
    v = r.values_merged
    dep = r.one("Deployment").obj
    c = dep["spec"]["template"]["spec"]["containers"][0]
    errs: list[str] = []
    errs += expect(not r.of_kind("CustomResourceDefinition"), "crds.install=false renders no CRD")
    errs += expect(len(r.of_kind("ServiceMonitor")) == 1, "a ServiceMonitor")
    rules = r.of_kind("PrometheusRule")
    errs += expect(len(rules) == 1 and rules[0].namespace == "monitoring", "a PrometheusRule in monitoring")
    if rules:
        alerts = [x.get("alert") for g in rules[0].obj["spec"]["groups"] for x in g["rules"]]
        errs += expect(
            alerts
            == [
                "SluicegateHighErrorRatio",
                "SluicegateHighLatency",
                "SluicegateConfigReloadFailing",
                "SluicegateRejectedObjects",
                "SluicegateCertificateExpiresSoon",
                "SluicegateNoLeader",
                "SluicegateWatchUnhealthy",
                "SluicegateDown",
            ],
            f"the alerts, then the additional rule: {alerts}",
        )
        exprs = " ".join(str(x["expr"]) for g in rules[0].obj["spec"]["groups"] for x in g["rules"])
        errs += expect("> 0.02" in exprs and "> 0.5" in exprs and "< 21 * 86400" in exprs, "thresholds from values")
        errs += expect(f'namespace="{r.namespace}"' in exprs, "series selected by the release namespace")
        errs += expect("{{" not in exprs, "no template left in the expressions")
    dash = [d for d in r.of_kind("ConfigMap") if d.name == "edge-dashboard"]
    errs += expect(
        len(dash) == 1
        and dash[0].namespace == "monitoring"
        and dash[0].obj["metadata"]["labels"].get("grafana_dashboard") == "1"
        and dash[0].obj["metadata"].get("annotations", {}).get("grafana_folder") == "Ingress",
        "the dashboard ConfigMap, labelled for Grafana's sidecar",
    )
    errs += expect(
        any(e["name"] == "SLUICEGATE_ADMIN_TOKEN" for e in c["env"]), "the admin token from its Secret"
    )
    errs += expect(len(r.of_kind("HorizontalPodAutoscaler")) == 1, "an HPA")
    errs += expect(len(r.of_kind("PodDisruptionBudget")) == 1, "a PDB")
    errs += expect(
        env.get("SLUICEGATE_WATCH_NAMESPACES") == ",".join(dict.fromkeys(v["watchNamespaces"])),
        "watch namespaces passed once each",
    )
    errs += expect(all(a in c["args"] for a in v["extraArgs"]), "extra args passed")
    errs += expect(workers_source(r) == "value:4", "an explicit workers value wins")
    errs += expect(c["image"].endswith("@" + v["image"]["digest"]), "the digest wins over the tag")
    errs += expect(env.get("SLUICEGATE_HTTP_ADDR") == "[::]:8080", "IPv6 bind address bracketed")
    ic = r.one("IngressClass").obj
    errs += expect(
        ic["metadata"]["annotations"].get("ingressclass.kubernetes.io/is-default-class") == "true",
        "default IngressClass annotation",
    )
    for ns in dict.fromkeys(v["watchNamespaces"]):
        errs += expect(any(d.namespace == ns for d in r.of_kind("RoleBinding")), f"RoleBinding in {ns}")
    errs += expect(
        any(d.name.endswith("-publish-service") for d in r.of_kind("Role")),
        "a Role to read the published Service outside the watched namespaces",
    )
    return errs


def minimal_expectations(r: sc.Rendered) -> list[str]:
    kinds = sorted(d.kind for d in r.docs)
    errs = expect(
        kinds == ["CustomResourceDefinition", "CustomResourceDefinition", "Deployment"],
        f"only the CRDs and the Deployment, got {kinds}",
    )
    env = env_of(r)
    errs += expect("SLUICEGATE_PUBLISH_SERVICE" not in env, "no Service to publish")
    errs += expect(
        env.get("SLUICEGATE_PUBLISH_ADDRESSES") == "203.0.113.10,edge.example.com", "publish addresses"
    )
    spec = r.one("Deployment").obj["spec"]["template"]["spec"]
    errs += expect(spec["serviceAccountName"] == "existing-sa", "an existing ServiceAccount")
    errs += expect("topologySpreadConstraints" not in spec, "no spread constraints")
    errs += expect("startupProbe" not in spec["containers"][0], "startupProbe: null removes the probe")
    errs += expect(workers_source(r) is None, "no CPU request or limit: the binary's cgroup quota decides")
    for crd in r.of_kind("CustomResourceDefinition"):
        errs += expect("annotations" not in crd.obj["metadata"], "crds.keep=false drops the keep annotation")
    return errs


def clusterip_expectations(r: sc.Rendered) -> list[str]:
    svc = next(s for s in r.of_kind("Service") if s.name == r.one("Deployment").name).obj["spec"]
    errs = expect(
        svc["type"] == "ClusterIP" and "externalTrafficPolicy" not in svc, "ClusterIP without a policy"
    )
    errs += expect([p["name"] for p in svc["ports"]] == ["http"], "https port disabled")
    errs += expect(not r.of_kind("PodDisruptionBudget"), "no PDB with a single replica")
    errs += expect(env_of(r).get("SLUICEGATE_PUBLISH_SERVICE") == "ingress/front", "publish service override")
    errs += expect(env_of(r).get("SLUICEGATE_LEADER_ELECTION_NAMESPACE") == "kube-system", "lease namespace")
    errs += expect(workers_source(r) == "limits.cpu", "workers from the CPU limit when there is one")
    role = [d for d in r.of_kind("Role") if d.name.endswith("-leader-election")]
    errs += expect(len(role) == 1 and role[0].namespace == "kube-system", "lease Role in the lease namespace")
    return errs


def gateway_api_off_expectations(r: sc.Rendered) -> list[str]:
    errs = expect(env_of(r).get("SLUICEGATE_GATEWAY_API") == "false", "the binary is told not to watch it")
    errs += expect(not r.of_kind("GatewayClass"), "no GatewayClass")
    return errs


def gateway_api_expectations(r: sc.Rendered) -> list[str]:
    errs = expect("SLUICEGATE_GATEWAY_API" not in env_of(r), "on by default in the binary")
    gc = r.one("GatewayClass").obj
    errs += expect(gc["metadata"]["name"] == "edge", "GatewayClass named by the values")
    errs += expect(gc["spec"]["controllerName"] == "sluicegate.io/gateway-controller", "our controller name")
    c = r.one("Deployment").obj["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    errs += expect(ports.get("alt-http") == 8081 and ports.get("grpc") == 9090, f"listener ports {ports}")
    svc = next(s for s in r.of_kind("Service") if s.name == r.one("Deployment").name).obj["spec"]
    by_name = {p["name"]: p for p in svc["ports"]}
    errs += expect(
        by_name.get("alt-http", {}).get("port") == 8081 and by_name["alt-http"].get("targetPort") == "alt-http",
        f"Service port for a listener {by_name}",
    )
    errs += expect(by_name.get("grpc", {}).get("nodePort") == 30090, "a fixed node port")
    return errs


def http3_expectations(r: sc.Rendered) -> list[str]:
    """HTTP/3: the binary is told, and the HTTPS port is open over UDP on
    the container and the Service, with the fixed node port of its TCP twin."""
    errs = expect(env_of(r).get("SLUICEGATE_HTTP3") == "true", "--http3 passed")
    c = r.one("Deployment").obj["spec"]["template"]["spec"]["containers"][0]
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in c["ports"]}
    errs += expect(
        {("https", 8443, "TCP"), ("http3", 8443, "UDP")} <= ports, f"HTTPS over TCP and UDP, got {ports}"
    )
    svc = next(s for s in r.of_kind("Service") if s.name == r.one("Deployment").name).obj["spec"]
    by_name = {p["name"]: p for p in svc["ports"]}
    h3 = by_name.get("http3", {})
    errs += expect(
        (h3.get("port"), h3.get("targetPort"), h3.get("protocol"), h3.get("nodePort")) == (443, "http3", "UDP", 30443),
        f"Service port http3 443/UDP, got {h3}",
    )
    errs += expect(by_name.get("https", {}).get("protocol") == "TCP", "https stays TCP")
    return errs


GATEWAY_API_CRDS = sc.CHART / "gateway-api" / "standard-install.yaml"


def gateway_api_crds_expectations(r: sc.Rendered) -> list[str]:
    """The chart's Gateway API CRDs are the fetched file's, unchanged but
    for the annotations that keep them on uninstall."""
    errs: list[str] = []
    want = {}
    for doc in sc.split_documents(GATEWAY_API_CRDS.read_text()):
        obj = sc.parse_yaml(doc)
        if obj and obj.get("kind") == "CustomResourceDefinition":
            want[obj["metadata"]["name"]] = obj
    got = {d.name: d for d in r.of_kind("CustomResourceDefinition") if d.name in want}
    errs += expect(set(got) == set(want), f"Gateway API CRDs rendered {sorted(got)}, file has {sorted(want)}")
    for name, doc in got.items():
        obj = copy.deepcopy(doc.obj)
        ann = obj["metadata"].get("annotations") or {}
        errs += expect(ann.pop("helm.sh/resource-policy", None) == "keep", f"{name}: kept on uninstall")
        ann.pop("argocd.argoproj.io/sync-options", None)
        labels = obj["metadata"].pop("labels", None) or {}
        upstream = copy.deepcopy(want[name])
        upstream_labels = upstream["metadata"].pop("labels", None) or {}
        errs += expect(
            upstream_labels.items() <= labels.items(), f"{name}: lost its labels {upstream_labels}"
        )
        errs += expect(sc.dumps(obj) == sc.dumps(upstream), f"{name}: differs from {sc.rel(GATEWAY_API_CRDS)}")
    return errs


def podmonitor_expectations(r: sc.Rendered) -> list[str]:
    pm = r.of_kind("PodMonitor")
    errs = expect(len(pm) == 1 and not r.of_kind("ServiceMonitor"), "one PodMonitor, no ServiceMonitor")
    errs += expect(not any(s.name.endswith("-metrics") for s in r.of_kind("Service")), "no metrics Service")
    if pm:
        ep = pm[0].obj["spec"]["podMetricsEndpoints"][0]
        errs += expect(ep["port"] == "admin" and ep["interval"] == "10s", f"scrapes the admin port: {ep}")
    return errs


def cache_expectations(r: sc.Rendered) -> list[str]:
    env = env_of(r)
    spec = r.one("Deployment").obj["spec"]["template"]["spec"]
    c = spec["containers"][0]
    errs = expect(env.get("SLUICEGATE_CACHE_MEMORY_SIZE") == "1Gi", "cache memory size")
    errs += expect(env.get("SLUICEGATE_CACHE_DISK_DIR") == "/var/cache/sluicegate", "disk cache directory")
    errs += expect(env.get("SLUICEGATE_CACHE_DISK_SIZE") == "5Gi", "disk cache size")
    errs += expect(env.get("SLUICEGATE_CACHE_REDIS_URL") == "redis://cache:6379", "cache Redis")
    errs += expect(env.get("SLUICEGATE_CACHE_MEMCACHED_SERVERS") == "mc-0:11211,mc-1:11211", "memcached servers")
    password = [e for e in c["env"] if e["name"] == "SLUICEGATE_CACHE_REDIS_PASSWORD"]
    errs += expect(
        len(password) == 1 and password[0]["valueFrom"]["secretKeyRef"]["name"] == "cache-redis",
        "cache Redis password from its Secret",
    )
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    errs += expect(mounts.get("cache") == "/var/cache/sluicegate", "disk cache volume mounted")
    errs += expect(
        volumes.get("cache", {}).get("emptyDir", {}).get("sizeLimit") == "6Gi", "disk cache emptyDir with its limit"
    )
    return errs


def kind_expectations(r: sc.Rendered) -> list[str]:
    """values-kind.yaml: the local image, never pulled; a NodePort Service on
    the node ports that manifests/kind/cluster.yaml maps to the host."""
    dep = r.one("Deployment").obj
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = env_of(r)
    svc = next(s for s in r.of_kind("Service") if s.name == r.one("Deployment").name).obj["spec"]
    node_ports = {p["name"]: p.get("nodePort") for p in svc["ports"]}
    cluster = sc.parse_yaml(sc.KIND_CLUSTER.read_text())
    mapped = {
        m["containerPort"]: m["hostPort"]
        for n in cluster.get("nodes", [])
        for m in n.get("extraPortMappings", [])
    }
    errs: list[str] = []
    errs += expect(c["image"] == "sluicegate:dev", f"the locally built image, got {c['image']}")
    errs += expect(c.get("imagePullPolicy") == "Never", "kind-loaded images are never pulled")
    errs += expect(dep["spec"].get("replicas") == 1, "one replica on one node")
    errs += expect(not r.of_kind("PodDisruptionBudget"), "no PDB for a single replica")
    errs += expect(svc["type"] == "NodePort", "NodePort: kind has no load balancer")
    errs += expect(
        node_ports == {"http": 30080, "https": 30443}, f"fixed node ports, got {node_ports}"
    )
    errs += expect(
        all(port in mapped for port in node_ports.values()),
        f"manifests/kind/cluster.yaml maps the node ports {sorted(node_ports.values())}, maps {mapped}",
    )
    errs += expect(
        env.get("SLUICEGATE_PUBLISH_ADDRESSES") == "127.0.0.1" and "SLUICEGATE_PUBLISH_SERVICE" not in env,
        "Ingresses show 127.0.0.1",
    )
    return errs


def scenarios() -> list[Scenario]:
    all_features = sc.load_values(sc.ALL_FEATURES_VALUES)
    # The Gateway API's CRDs are in the chart only after
    # scripts/fetch-gateway-api-crds.sh; without them installCRDs must fail.
    gateway_api_crds: list[Scenario] = (
        [("gatewayAPI.installCRDs", {"gatewayAPI": {"installCRDs": True}}, gateway_api_crds_expectations)]
        if GATEWAY_API_CRDS.exists()
        else []
    )
    return gateway_api_crds + [
        ("defaults", {}, defaults_expectations),
        ("ci/all-features-values.yaml", all_features, all_features_expectations),
        ("values-kind.yaml", sc.load_values(sc.KIND_VALUES), kind_expectations),
        (
            "minimal: no RBAC, ServiceAccount, Service, metrics, IngressClass; crds.keep=false; no resources",
            {
                "rbac": {"create": False},
                "serviceAccount": {"create": False, "name": "existing-sa"},
                "service": {"enabled": False},
                "metrics": {"enabled": False},
                "ingressClass": {"create": False},
                "podDisruptionBudget": {"enabled": False},
                "publishAddresses": ["203.0.113.10", "edge.example.com"],
                "crds": {"keep": False},
                "topologySpreadConstraints": [],
                "startupProbe": None,
                "resources": {"requests": None, "limits": None},
            },
            minimal_expectations,
        ),
        ("gatewayAPI disabled", {"gatewayAPI": {"enabled": False}}, gateway_api_off_expectations),
        (
            "http3 enabled, fixed HTTPS node port",
            {"http3": {"enabled": True}, "service": {"ports": {"https": {"nodePort": 30443}}}},
            http3_expectations,
        ),
        (
            "gatewayAPI with a GatewayClass and listener ports",
            {
                "gatewayAPI": {
                    "gatewayClass": {"create": True, "name": "edge"},
                    "listenerPorts": [
                        {"name": "alt-http", "port": 8081},
                        {"name": "grpc", "port": 9090, "nodePort": 30090},
                    ],
                }
            },
            gateway_api_expectations,
        ),
        (
            "PodMonitor instead of the ServiceMonitor, no metrics Service",
            {
                "metrics": {
                    "enabled": False,
                    "podMonitor": {"enabled": True, "interval": "10s", "labels": {"release": "prom"}},
                }
            },
            podmonitor_expectations,
        ),
        (
            "ClusterIP, one replica, publish override, lease elsewhere",
            {
                "replicaCount": 1,
                "service": {"type": "ClusterIP", "ports": {"https": {"enabled": False}}},
                "publishService": {"pathOverride": "ingress/front"},
                "leaderElection": {"namespace": "kube-system"},
                "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1500m"}},
                "autoscaling": {
                    "enabled": True,
                    "minReplicas": 1,
                    "maxReplicas": 3,
                    "targetCPUUtilizationPercentage": None,
                    "targetMemoryUtilizationPercentage": 75,
                },
            },
            clusterip_expectations,
        ),
        (
            "proxy cache: memory, disk volume, Redis with a password, Memcached",
            {
                "cache": {
                    "memorySize": "1Gi",
                    "disk": {"enabled": True, "size": "5Gi", "sizeLimit": "6Gi"},
                    "redis": {"url": "redis://cache:6379", "passwordSecret": {"name": "cache-redis"}},
                    "memcached": {"servers": ["mc-0:11211", "mc-1:11211"]},
                },
            },
            cache_expectations,
        ),
    ]


SCHEMA_REJECTS: list[tuple[str, dict[str, Any]]] = [
    ("misspelt top-level key", {"replicaCont": 3}),
    ("misspelt nested key", {"image": {"tga": "1.0"}}),
    ("misspelt deep key", {"metrics": {"serviceMonitor": {"enable": True}}}),
    ("misspelt alert setting", {"metrics": {"prometheusRule": {"errorRate": 0.1}}}),
    ("error ratio above 1", {"metrics": {"prometheusRule": {"errorRatio": 5}}}),
    ("misspelt admin token key", {"adminToken": {"secretName": "x"}}),
    ("misspelt port key", {"service": {"ports": {"http": {"prot": 80}}}}),
    ("unknown service port", {"service": {"ports": {"grpc": {"port": 9000}}}}),
    ("wrong type", {"replicaCount": "two"}),
    ("bad enum", {"logFormat": "xml"}),
    ("bad duration", {"gateway": {"shutdownGrace": "25"}}),
    ("bad namespace name", {"watchNamespaces": ["Shop"]}),
    ("port out of range", {"containerPorts": {"http": 70000}}),
    ("bad cache size", {"cache": {"memorySize": "256MB"}}),
    ("bad memcached server", {"cache": {"memcached": {"servers": ["mc-0"]}}}),
]

RENDER_FAILS: list[tuple[str, dict[str, Any], str]] = [

    (
        "both a ServiceMonitor and a PodMonitor",
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
        "not both",
    ),
    (
        "shared ticket keys in a namespace that is not watched",
        {"watchNamespaces": ["shop"]},
        "tls.sharedTicketKeys",
    ),
    (
        "HPA on CPU without a CPU request",
        {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}},
        "resources.requests.cpu",
    ),
    (
        "PDB with minAvailable and maxUnavailable",
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "not both",
    ),
    (
        "HPA with maxReplicas below minReplicas",
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
        "maxReplicas",
    ),
]


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, what: str, errors: list[str]) -> None:
        if errors:
            self.failed += 1
            print(f"FAIL {what}")
            for e in errors:
                print(f"     {e}")
        else:
            self.passed += 1
            print(f"ok   {what}")


def main() -> int:
    h = sc.helm()
    report = Report()

    # Lint, as `helm lint --strict` (warnings fail too).
    value_files = [("defaults", None), (sc.rel(sc.KIND_VALUES), sc.load_values(sc.KIND_VALUES))] + [
        (sc.rel(p), sc.load_values(p)) for p in sorted((sc.CHART / "ci").glob("*-values.yaml"))
    ]
    for label, values in value_files:
        result = h.lint(sc.CHART, values, strict=True, namespace=sc.INSTALL_NAMESPACE, kube_version="v1.29.0")
        msgs = [
            f"[{m['severity']}] {m['path']}: {m['error']}"
            for m in result.get("messages", [])
            if m["severity"] >= 2
        ]
        report.check(f"helm lint --strict ({label})", msgs + list(result.get("errors") or []))

    with h.Chart.load(sc.CHART) as chart:
        meta = chart.metadata
        report.check(
            "Chart.yaml: apiVersion v2, appVersion is the crate's version",
            expect(meta.get("apiVersion") == "v2", "apiVersion v2")
            + expect(
                meta.get("appVersion") == sc.cargo_version(),
                f"appVersion {meta.get('appVersion')} != Cargo.toml {sc.cargo_version()}",
            ),
        )
        try:
            chart.validate_schema({})
            report.check("values.schema.json accepts the defaults", [])
        except h.HelmError as e:
            report.check("values.schema.json accepts the defaults", [str(e)])
        for label, bad in SCHEMA_REJECTS:
            errors = []
            try:
                chart.validate_schema(bad)
                errors.append(f"accepted {bad}")
            except h.HelmValuesError:
                pass
            try:
                chart.render(bad, name=sc.INSTALL_RELEASE, namespace=sc.INSTALL_NAMESPACE)
                errors.append(f"rendered with {bad}")
            except h.HelmValuesError:
                pass
            report.check(f"values.schema.json rejects a {label}", errors)

    for label, values, expectations in scenarios():
        try:
            r = sc.render(values, namespace=sc.INSTALL_NAMESPACE)
        except (sc.CheckError, h.HelmError) as e:
            report.check(f"render: {label}", [str(e)])
            continue
        errors = []
        seen = set()
        for d in r.docs:
            key = (d.obj.get("apiVersion"), d.kind, d.namespace, d.name)
            if key in seen:
                errors.append(f"{d.ref()}: rendered twice")
            seen.add(key)
            errors += [f"{d.ref()}: {e}" for e in check_object(d)]
        report.check(f"render {label}: {len(r.docs)} well-formed objects", errors)
        report.check(f"render {label}: objects fit together", check_relations(r))
        report.check(f"render {label}: least-privilege RBAC", check_rbac(r))
        report.check(f"render {label}: CRDs match crds/", check_crds(r))
        report.check(f"render {label}: expected settings", expectations(r))
        report.check(f"render {label}: NOTES.txt", expect("kubectl" in r.notes, "NOTES.txt rendered"))

    render_fails = list(RENDER_FAILS)
    if not GATEWAY_API_CRDS.exists():
        render_fails.append(
            (
                "Gateway API CRDs asked for from a chart packaged without them",
                {"gatewayAPI": {"installCRDs": True}},
                "scripts/fetch-gateway-api-crds.sh",
            )
        )
    for label, values, needle in render_fails:
        try:
            sc.render(values, namespace=sc.INSTALL_NAMESPACE)
            report.check(f"refuses {label}", ["rendered"])
        except h.HelmError as e:
            report.check(f"refuses {label}", expect(needle in str(e), f"unexpected error: {e}"))

    print(f"\nchart: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
