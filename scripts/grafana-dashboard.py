#!/usr/bin/env python3
"""Writes charts/sluicegate/dashboards/sluicegate.json, the Grafana dashboard
the chart ships (grafanaDashboard.enabled), from the panel list below.

    python3 scripts/grafana-dashboard.py          # write the file
    python3 scripts/grafana-dashboard.py --check  # fail if it is not current

Every query filters on the `job` and `route` variables and reads the data
source from the `datasource` variable, so the dashboard works with any
Prometheus; scripts/check-observability.py checks that every metric it
names is one the binary exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "charts" / "sluicegate" / "dashboards" / "sluicegate.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'job=~"$job"'
ROUTE = 'job=~"$job", route=~"$route"'
RATE = "[$__rate_interval]"
# Series that carry a route label only with --metrics-detail full: the
# empty-label matcher keeps the default (basic) detail's all-routes series
# out of per-route panels.
PER_ROUTE = f'{ROUTE}, route!=""'
NEEDS_FULL = (
    "Needs --metrics-detail full (with the default, basic, this histogram has no route label "
    "and the panel stays empty)."
)


def q(expr: str, legend: str = "", instant: bool = False) -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t["instant"] = True
        t["range"] = False
        t["format"] = "table"
    return t


def timeseries(title: str, desc: str, unit: str, *targets: dict, stack: bool = False) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10 if stack else 0,
                    "stacking": {"mode": "normal" if stack else "none"},
                    "showPoints": "never",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": list(targets),
    }


def stat(title: str, desc: str, unit: str, target: dict, thresholds: list | None = None) -> dict:
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"},
        "targets": [target],
    }


def table(title: str, desc: str, unit: str, *targets: dict, thresholds: list | None = None) -> dict:
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "table",
        "title": title,
        "description": desc,
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"showHeader": True},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
        "targets": list(targets),
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}




def quantile(qv: float, metric: str, by: str = "", sel: str = ROUTE) -> str:
    extra = f", {by}" if by else ""
    return f"histogram_quantile({qv}, sum by (le{extra}) (rate({metric}_bucket{{{sel}}}{RATE})))"


RED_BELOW_14_DAYS = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 14},
    {"color": "green", "value": 30},
]

# (panel, width, height); a row starts a new line.
LAYOUT: list[tuple[dict, int, int]] = [
    (row("Traffic"), 24, 1),
    (
        stat(
            "Requests per second",
            "All requests answered, over the selected jobs and routes.",
            "reqps",
            q(f"sum(rate(sluicegate_requests_total{{{ROUTE}}}{RATE}))"),
        ),
        6,
        4,
    ),
    (
        stat(
            "5xx ratio",
            "Share of responses with a 5xx status.",
            "percentunit",
            q(
                f'sum(rate(sluicegate_requests_total{{{ROUTE}, status="5xx"}}{RATE})) / '
                f"sum(rate(sluicegate_requests_total{{{ROUTE}}}{RATE}))"
            ),
            [{"color": "green", "value": None}, {"color": "orange", "value": 0.01}, {"color": "red", "value": 0.05}],
        ),
        6,
        4,
    ),
    (
        stat(
            "p99 latency",
            "99th percentile of the time from request head to response head.",
            "s",
            q(quantile(0.99, "sluicegate_request_duration_seconds")),
        ),
        6,
        4,
    ),
    (
        stat(
            "Active connections",
            "Client connections open, all listeners.",
            "short",
            q(f"sum(sluicegate_connections_active{{{JOB}}})"),
        ),
        6,
        4,
    ),
    (
        timeseries(
            "Requests by route",
            "Requests answered per second, by route.",
            "reqps",
            q(f"sum by (route) (rate(sluicegate_requests_total{{{ROUTE}}}{RATE}))", "{{route}}"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Responses by status class",
            "Responses per second by status class; 4xx include plugin answers such as 401 and 429.",
            "reqps",
            q(f"sum by (status) (rate(sluicegate_requests_total{{{ROUTE}}}{RATE}))", "{{status}}"),
            stack=True,
        ),
        12,
        8,
    ),
    (row("Errors and latency"), 24, 1),
    (
        timeseries(
            "5xx ratio by route",
            "Share of each route's responses with a 5xx status.",
            "percentunit",
            q(
                f'sum by (route) (rate(sluicegate_requests_total{{{ROUTE}, status="5xx"}}{RATE})) / '
                f"sum by (route) (rate(sluicegate_requests_total{{{ROUTE}}}{RATE}))",
                "{{route}}",
            ),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Latency percentiles",
            "Time from request head to response head, all selected routes.",
            "s",
            q(quantile(0.5, "sluicegate_request_duration_seconds"), "p50"),
            q(quantile(0.9, "sluicegate_request_duration_seconds"), "p90"),
            q(quantile(0.99, "sluicegate_request_duration_seconds"), "p99"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "p99 latency by route",
            "99th percentile of the request time, by route.",
            "s",
            q(quantile(0.99, "sluicegate_request_duration_seconds", "route"), "{{route}}"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Upstream p99",
            "99th percentile of the time from sending an attempt to its response head, over all routes "
            "(the route filter does not apply: per route below).",
            "s",
            q(quantile(0.99, "sluicegate_upstream_duration_seconds", sel=JOB), "p99"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Body size p90",
            "90th percentile of request and response body sizes, over all routes "
            "(the route filter does not apply).",
            "bytes",
            q(quantile(0.9, "sluicegate_response_size_bytes", sel=JOB), "response"),
            q(quantile(0.9, "sluicegate_request_size_bytes", sel=JOB), "request"),
        ),
        12,
        7,
    ),
    (
        timeseries(
            "Upstream p99 by route",
            f"99th percentile of the upstream time by route. {NEEDS_FULL}",
            "s",
            q(quantile(0.99, "sluicegate_upstream_duration_seconds", "route", sel=PER_ROUTE), "{{route}}"),
        ),
        12,
        7,
    ),
    (row("Upstreams"), 24, 1),
    (
        timeseries(
            "Healthy endpoints by upstream",
            "Endpoints taking traffic (not ejected, not failing active checks).",
            "short",
            q(
                f'sum by (upstream) (sluicegate_upstream_endpoints{{{JOB}, state="available"}})',
                "{{upstream}} healthy",
            ),
            q(f"sum by (upstream) (sluicegate_upstream_endpoints{{{JOB}}})", "{{upstream}} total"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "In flight by upstream",
            "Requests in flight on the endpoints of each upstream.",
            "short",
            q(f"sum by (upstream) (sluicegate_upstream_in_flight{{{JOB}}})", "{{upstream}}"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Upstream attempts by status",
            "Attempts on endpoints per second by status class (error: no response), retries and ejections. "
            "Attempts are over all routes (the route filter does not apply; --metrics-detail full adds "
            "a route label).",
            "ops",
            q(f"sum by (status) (rate(sluicegate_upstream_attempts_total{{{JOB}}}{RATE}))", "{{status}}"),
            q(f"sum(rate(sluicegate_upstream_retries_total{{{ROUTE}}}{RATE}))", "retries"),
            q(f"sum(rate(sluicegate_upstream_ejections_total{{{JOB}}}{RATE}))", "ejections"),
        ),
        24,
        8,
    ),
    (row("Plugins"), 24, 1),
    (
        timeseries(
            "Plugin p99 time",
            "99th percentile of each plugin's time on a request (waits for the services it calls included), "
            "over all routes (the route filter does not apply: per route below).",
            "s",
            q(quantile(0.99, "sluicegate_plugin_duration_seconds", "plugin", sel=JOB), "{{plugin}}"),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Plugin mean time",
            "Mean time of each plugin per request, over all routes (the route filter does not apply).",
            "s",
            q(
                f"sum by (plugin) (rate(sluicegate_plugin_duration_seconds_sum{{{JOB}}}{RATE})) / "
                f"sum by (plugin) (rate(sluicegate_plugin_duration_seconds_count{{{JOB}}}{RATE}))",
                "{{plugin}}",
            ),
        ),
        12,
        8,
    ),
    (
        timeseries(
            "Plugin p99 time by route",
            f"99th percentile of each plugin's time by route. {NEEDS_FULL}",
            "s",
            q(
                quantile(0.99, "sluicegate_plugin_duration_seconds", "route, plugin", sel=PER_ROUTE),
                "{{route}} {{plugin}}",
            ),
        ),
        24,
        8,
    ),
    (
        timeseries(
            "Plugin decisions",
            "What plugins decided per second: continue, or answered with a status class.",
            "ops",
            q(
                f"sum by (plugin, decision, status) (rate(sluicegate_plugin_decisions_total{{{ROUTE}}}{RATE}))",
                "{{plugin}} {{decision}} {{status}}",
            ),
            stack=True,
        ),
        24,
        8,
    ),
    (row("Configuration"), 24, 1),
    (
        stat(
            "Table generation",
            "Generation of the live route table.",
            "none",
            q(f"max(sluicegate_table_generation{{{JOB}}})"),
        ),
        4,
        4,
    ),
    (
        stat(
            "Routes",
            "Routes in the live table.",
            "short",
            q(f"max(sluicegate_table_routes{{{JOB}}})"),
        ),
        4,
        4,
    ),
    (
        stat(
            "Since last reload",
            "Time since the latest table was published.",
            "s",
            q(f"time() - max(sluicegate_config_last_reload_timestamp_seconds{{{JOB}}})"),
        ),
        4,
        4,
    ),
    (
        stat(
            "Reload failures (1h)",
            "Configuration sources that could not be loaded in the last hour; the last good version keeps serving.",
            "short",
            q(f"sum(increase(sluicegate_config_reload_failures_total{{{JOB}}}[1h]))"),
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        4,
        4,
    ),
    (
        stat(
            "Rejected objects",
            "Configuration diagnostics of severity error: objects or rules that were not installed.",
            "short",
            q(f'max(sluicegate_config_diagnostics{{{JOB}, severity="error"}})'),
            [{"color": "green", "value": None}, {"color": "red", "value": 1}],
        ),
        4,
        4,
    ),
    (
        table(
            "Build",
            "Version and commit of each replica.",
            "none",
            q(f"sluicegate_build_info{{{JOB}}}", instant=True),
        ),
        4,
        4,
    ),
    (
        timeseries(
            "Objects with diagnostics",
            "Objects whose configuration has findings, by kind and reason.",
            "short",
            q(
                f"sum by (kind, reason) (sluicegate_config_objects_with_diagnostics{{{JOB}}})",
                "{{kind}} {{reason}}",
            ),
        ),
        12,
        7,
    ),
    (
        timeseries(
            "Table updates",
            "Route tables published per second, and endpoint sets updated in place.",
            "ops",
            q(f"sum(rate(sluicegate_table_updates_total{{{JOB}}}{RATE}))", "tables"),
            q(f"sum(rate(sluicegate_endpoint_updates_total{{{JOB}}}{RATE}))", "endpoint sets"),
        ),
        12,
        7,
    ),
    (row("Controller"), 24, 1),
    (
        stat(
            "Leader",
            "Replicas holding the leader Lease (should be 1 in Kubernetes mode).",
            "short",
            q(f"sum(sluicegate_leader{{{JOB}}})"),
            [{"color": "red", "value": None}, {"color": "green", "value": 1}, {"color": "red", "value": 2}],
        ),
        4,
        7,
    ),
    (
        timeseries(
            "Watch health",
            "1 while every watcher of a kind has listed and is not failing.",
            "short",
            q(f"min by (kind) (sluicegate_watch_healthy{{{JOB}}})", "{{kind}}"),
        ),
        10,
        7,
    ),
    (
        timeseries(
            "Watch errors and event age",
            "Failed watch requests per second, and seconds since each kind last delivered an event.",
            "short",
            q(f"sum by (kind) (rate(sluicegate_watch_errors_total{{{JOB}}}{RATE}))", "{{kind}} errors/s"),
            q(f"max by (kind) (sluicegate_watch_last_event_age_seconds{{{JOB}}})", "{{kind}} age (s)"),
        ),
        10,
        7,
    ),
    (
        timeseries(
            "Status writes",
            "Status writes to the API server per second, by kind and result.",
            "ops",
            q(f"sum by (kind, result) (rate(sluicegate_status_writes_total{{{JOB}}}{RATE}))", "{{kind}} {{result}}"),
            q(f"sum(rate(sluicegate_leader_election_errors_total{{{JOB}}}{RATE}))", "leader election errors"),
        ),
        12,
        7,
    ),
    (
        timeseries(
            "Connections by listener",
            "Client connections open, by listener and protocol.",
            "short",
            q(f"sum by (listener, protocol) (sluicegate_connections_active{{{JOB}}})", "{{listener}} {{protocol}}"),
        ),
        12,
        7,
    ),
    (row("Certificates"), 24, 1),
    (
        table(
            "Days until certificates expire",
            "Per Secret; red under 14 days.",
            "d",
            q(
                f"(min by (secret) (sluicegate_certificate_expiry_timestamp_seconds{{{JOB}}}) - time()) / 86400",
                instant=True,
            ),
            thresholds=RED_BELOW_14_DAYS,
        ),
        12,
        8,
    ),
    (
        timeseries(
            "TLS handshakes",
            "Handshakes per second by result.",
            "ops",
            q(f"sum by (result) (rate(sluicegate_tls_handshakes_total{{{JOB}}}{RATE}))", "{{result}}"),
        ),
        12,
        8,
    ),
]


def variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    }


def dashboard() -> dict:
    panels = []
    x = y = 0
    line = 0
    for pid, (panel, w, h) in enumerate(LAYOUT, start=1):
        if panel["type"] == "row" or x + w > 24:
            x, y = 0, y + line
            line = 0
        panel = {"id": pid, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel}
        if panel["type"] != "row":
            panel["datasource"] = DS
            for i, t in enumerate(panel["targets"]):
                t["refId"] = chr(ord("A") + i)
        panels.append(panel)
        x += w
        line = max(line, h)
        if panel["type"] == "row":
            x, y, line = 0, y + h, 0
    return {
        "title": "Sluicegate",
        "uid": "sluicegate",
        "description": "Traffic, errors, latency, upstreams, plugin cost, configuration, controller and certificates of Sluicegate.",
        "tags": ["sluicegate", "ingress", "api-gateway"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "blue",
                    "name": "Configuration reloads",
                    "expr": f"changes(sluicegate_table_generation{{{JOB}}}[2m]) > 0",
                    "step": "60s",
                    "titleFormat": "table published",
                },
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                variable("job", "Job", "label_values(sluicegate_requests_total, job)"),
                variable("route", "Route", 'label_values(sluicegate_requests_total{job=~"$job"}, route)'),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not current: run python3 scripts/grafana-dashboard.py")
            return 1
        print(f"{OUT.name} is current")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
