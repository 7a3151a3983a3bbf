#!/usr/bin/env bash
# `sluicegate check` on 10,000 ApiRoutes, timed as a whole process.
#
# The input is the router benchmark's (benches/router.rs): 10,000 ApiRoutes,
# each with one route, its Service and an EndpointSlice of three endpoints
# (30,000 objects), ten routes per host, in 34 files of 300 ApiRoutes; plus
# one Deployment per file, which check skips with a note, as it would in a
# GitOps repository. Target: under 3 s.
#
#   bench/check.sh                 # builds the release binary if needed
#   ROUTES=2000 RUNS=5 bench/check.sh
#   SLUICEGATE=path/to/sluicegate bench/check.sh
#
# Uses hyperfine when it is installed (apt-get install hyperfine), else
# bash's `time` over RUNS runs.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTES=${ROUTES:-10000}
RUNS=${RUNS:-10}
BIN=${SLUICEGATE:-}
if [[ -z "$BIN" ]]; then
  BIN=$(scripts/build-release.sh)
fi

DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

python3 - "$DIR" "$ROUTES" <<'EOF'
import sys
from pathlib import Path

out, n = Path(sys.argv[1]), int(sys.argv[2])
PER_HOST, PER_FILE = 10, 300
SLOTS = [
    ("paths: [{type: Prefix, value: /api/v1/users}]", 0),
    ("paths: [{type: Prefix, value: /api/v1/orders}]", 0),
    ("paths: [{type: Prefix, value: /api/v2/orders}]", 0),
    ("paths: [{type: Prefix, value: /api/v2/carts}]", 0),
    ("paths: [{type: Prefix, value: /api/v2/payments}]", 0),
    ("paths: [{type: Exact, value: /healthz}]", 0),
    ("paths: [{type: Prefix, value: /static/assets}]", 0),
    ("paths: [{type: Prefix, value: /auth/oauth/token}]", 0),
    ("paths: [{type: Prefix, value: /api/v1/inventory}]\n        methods: [GET, POST]", 0),
    ('paths: [{type: Prefix, value: /api/v2/orders}]\n        headers: [{name: x-canary, type: Exact, value: "1"}]', 10),
]
for start in range(0, n, PER_FILE):
    docs = [
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{start:05}, namespace: team-00}}\n"
        "spec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n"
        "    spec: {containers: [{name: x, image: x:1}]}\n"
    ]
    for i in range(start, min(start + PER_FILE, n)):
        h = i // PER_HOST
        m, priority = SLOTS[i % PER_HOST]
        ns, host = f"team-{h % 50:02}", f"app-{h:05}.team-{h % 50:02}.example.com"
        a, b = (i >> 8) & 0xFF, i & 0xFF
        docs.append(f"""apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: r-{i:05}, namespace: {ns}}}
spec:
  hosts: [{host}]
  routes:
  - name: main
    priority: {priority}
    match:
        {m}
    backends:
    - {{serviceName: svc-{i:05}, servicePort: http}}
""")
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i:05}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
""")
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i:05}-x7k2p
  namespace: {ns}
  labels: {{kubernetes.io/service-name: svc-{i:05}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- {{addresses: [10.{a}.{b}.1], conditions: {{ready: true}}}}
- {{addresses: [10.{a}.{b}.2], conditions: {{ready: true}}}}
- {{addresses: [10.{a}.{b}.3], conditions: {{ready: true}}}}
""")
    (out / f"routes-{start // PER_FILE:03}.yaml").write_text("---\n".join(docs))
EOF

echo "input: $ROUTES ApiRoutes in $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1)"
# One run first: the check must pass (notes only), or the timing is moot.
"$BIN" check "$DIR" | tail -1

if command -v hyperfine >/dev/null; then
  hyperfine --warmup 1 --runs "$RUNS" --output null "$BIN check $DIR"
else
  for _ in $(seq "$RUNS"); do
    /usr/bin/env time -f "%e s wall, %U s user, %M KB max RSS" "$BIN" check "$DIR" >/dev/null
  done
fi
