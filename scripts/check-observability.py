#!/usr/bin/env python3
"""Checks the monitoring kit the chart ships against the binary:

- charts/sluicegate/dashboards/sluicegate.json parses, takes its data source
  from a `datasource` variable (type datasource, Prometheus) on every panel,
  query, variable and annotation, and every panel has at least one query;
- every PromQL expression of the dashboard (panels, variables, annotations)
  and of the PrometheusRule the chart renders names at least one metric,
  and every `sluicegate_*` metric it names is one the binary exports: a
  `const NAME: &str = "sluicegate_..."` in src/ (histograms also as
  `_bucket`, `_sum` and `_count`, and only histograms so);
- a query that uses the `route` label of a histogram that has it only with
  `--metrics-detail full` (marked "full detail" in the metrics table of
  docs/observability.md) is in a panel whose description says it needs
  `--metrics-detail full`, and no alert uses such a label: alerts must work
  with the default detail.

    python3 scripts/check-observability.py [--src DIR]

Exit status 0 when everything holds; the closing line counts the checks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "charts" / "sluicegate" / "dashboards" / "sluicegate.json"
DOC = REPO / "docs" / "observability.md"
# A row of the metrics table: | `name` | type | labels | meaning |
DOC_ROW = re.compile(r"^\|\s*`(sluicegate_[a-z0-9_]+)`\s*\|[^|]*\|([^|]*)\|", re.M)
NEEDS_FULL = "--metrics-detail full"
ROUTE_LABEL = re.compile(r"\broute\b")

CONST = re.compile(r'const\s+([A-Z0-9_]+)\s*:\s*&str\s*=\s*"(sluicegate_[a-z0-9_]+)"')
HISTOGRAM_USE = re.compile(
    r"(?:(?:describe_histogram|histogram)!\(|Family::(?:seconds|bytes)\()\s*(?:[a-z_]+::)*([A-Z0-9_]+)\b"
)
METRIC = re.compile(r"\b(sluicegate_[a-z0-9_]+)\b")
# Words in PromQL that are not metric names: functions, keywords.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported(src: Path) -> tuple[set[str], set[str]]:
    """Metric names defined in src/, and those of them used as histograms."""
    names: dict[str, str] = {}
    text = ""
    for f in sorted(src.rglob("*.rs")):
        t = f.read_text()
        text += t
        for ident, name in CONST.findall(t):
            names[ident] = name
    histograms = {names[i] for i in HISTOGRAM_USE.findall(text) if i in names}
    return set(names.values()), histograms


def full_detail_only() -> set[str]:
    """Metrics whose route label exists only with --metrics-detail full."""
    return {m for m, labels in DOC_ROW.findall(DOC.read_text()) if "full detail" in labels}


def base_name(m: str) -> str:
    return next((m[: -len(s)] for s in HISTOGRAM_SUFFIXES if m.endswith(s)), m)


def needs_full(expr: str, full_only: set[str]) -> list[str]:
    """The full-detail-only metrics the expression reads by route."""
    if not ROUTE_LABEL.search(expr):
        return []
    return sorted({base_name(m) for m in metrics_in(expr)} & full_only)


def metrics_in(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def check_names(where: str, expr: str, known: set[str], histograms: set[str]) -> list[str]:
    errors = []
    found = metrics_in(expr)
    if not found:
        errors.append(f"{where}: names no sluicegate metric: {expr}")
    for m in sorted(found):
        if m in known:
            continue
        base = next((m[: -len(s)] for s in HISTOGRAM_SUFFIXES if m.endswith(s)), None)
        if base in histograms:
            continue
        if base in known:
            errors.append(f"{where}: {m}: {base} is not a histogram")
        else:
            errors.append(f"{where}: {m} is not a metric the binary exports")
    return errors


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


def uses_variable(ds: object) -> bool:
    return isinstance(ds, dict) and ds.get("uid") == "${datasource}" and ds.get("type") == "prometheus"


def dashboard_checks(report: Report, known: set[str], histograms: set[str]) -> None:
    try:
        d = json.loads(DASHBOARD.read_text())
    except (OSError, ValueError) as e:
        report.check("the dashboard JSON parses", [str(e)])
        return
    report.check("the dashboard JSON parses", [])
    variables = d.get("templating", {}).get("list", [])
    ds_vars = [v for v in variables if v.get("name") == "datasource"]
    report.check(
        "a datasource variable of Prometheus data sources",
        []
        if len(ds_vars) == 1 and ds_vars[0].get("type") == "datasource" and ds_vars[0].get("query") == "prometheus"
        else [f"templating has {ds_vars}"],
    )
    errors = []
    for v in variables:
        if v.get("type") == "query":
            if not uses_variable(v.get("datasource")):
                errors.append(f"variable {v['name']}: datasource is not ${{datasource}}")
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q)
            errors += check_names(f"variable {v['name']}", q, known, histograms)
    for a in d.get("annotations", {}).get("list", []):
        if "expr" in a:
            if not uses_variable(a.get("datasource")):
                errors.append(f"annotation {a['name']}: datasource is not ${{datasource}}")
            errors += check_names(f"annotation {a['name']}", a["expr"], known, histograms)
    report.check("variables and annotations use the datasource variable and exported metrics", errors)
    panels = [p for p in d.get("panels", []) if p.get("type") != "row"]
    ids = [p.get("id") for p in d.get("panels", [])]
    report.check("panel ids are unique", [] if len(ids) == len(set(ids)) else [f"ids {ids}"])
    ds_errors, name_errors, detail_errors = [], [], []
    full_only = full_detail_only()
    for p in panels:
        title = p.get("title", "?")
        if not uses_variable(p.get("datasource")):
            ds_errors.append(f"panel {title!r}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            ds_errors.append(f"panel {title!r}: no query")
        for t in targets:
            if not uses_variable(t.get("datasource")):
                ds_errors.append(f"panel {title!r} query {t.get('refId')}: datasource is not ${{datasource}}")
            name_errors += check_names(f"panel {title!r}", t.get("expr", ""), known, histograms)
            needs = needs_full(t.get("expr", ""), full_only)
            if needs and NEEDS_FULL not in p.get("description", ""):
                detail_errors.append(
                    f"panel {title!r}: reads {', '.join(needs)} by route, which needs {NEEDS_FULL}; "
                    "say so in the description"
                )
    report.check(f"{len(panels)} panels take their data source from the variable", ds_errors)
    report.check(f"{len(panels)} panels' PromQL names only exported metrics", name_errors)
    report.check(
        f"panels that read {', '.join(sorted(full_only))} by route say they need {NEEDS_FULL}",
        detail_errors if full_only else [f"no full-detail metrics found in {DOC}"],
    )
    covered = {m.removesuffix(s) for e in [t.get("expr", "") for p in panels for t in p.get("targets", [])] for m in metrics_in(e) for s in ("",) + HISTOGRAM_SUFFIXES if m.endswith(s)}
    report.check(f"the dashboard reads {len(covered & known)} of the {len(known)} exported metrics", [])


def rule_checks(report: Report, known: set[str], histograms: set[str]) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import sluicegate_chart as sc  # noqa: E402 (needs helm-python-sdk)

    values = {"metrics": {"prometheusRule": {"enabled": True}}}
    r = sc.render(values, namespace=sc.INSTALL_NAMESPACE)
    rules = [x for d in r.of_kind("PrometheusRule") for g in d.obj["spec"]["groups"] for x in g["rules"]]
    report.check("the chart renders a PrometheusRule with alerts", [] if rules else ["no rules"])
    errors = []
    for x in rules:
        errors += check_names(f"alert {x.get('alert')}", str(x.get("expr", "")), known, histograms)
    report.check(f"{len(rules)} alerts name only exported metrics", errors)
    full_only = full_detail_only()
    report.check(
        "alerts work with the default metrics detail",
        [
            f"alert {x.get('alert')}: reads {', '.join(needs_full(str(x.get('expr', '')), full_only))} by route"
            for x in rules
            if needs_full(str(x.get("expr", "")), full_only)
        ],
    )


def main() -> int:
    src = REPO / "src"
    args = sys.argv[1:]
    if "--src" in args:
        src = Path(args[args.index("--src") + 1])
    known, histograms = exported(src)
    report = Report()
    report.check(
        f"{len(known)} metric names in {src} ({len(histograms)} histograms)",
        [] if known else ["no metric constants found"],
    )
    dashboard_checks(report, known, histograms)
    rule_checks(report, known, histograms)
    print(f"\nobservability: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
