#!/usr/bin/env bash
# Cost of plugins on the proxy path: one Sluicegate (one worker) serving
# three routes to the same backend, measured in the same run, alternating:
#   none   no plugins
#   local  limitCount with local counters (a limit never reached)
#   redis  limitCount with counters in Redis (a limit never reached)
#   keyauth  keyAuth, then limitCount keyed by the consumer (local)
#
# Usage: bench/plugins.sh
#
# Settings (environment): PROXY_CPU=0 LOAD_CPU=1 CONNECTIONS=64 THREADS=1
# DURATION=10s WARMUP=3s ROUNDS=3 ROUTES="none local redis keyauth"
# SLUICEGATE_BIN (else scripts/build-release.sh), PORT_BASE=19080.
# The backend (nginx `return 200 "ok"`), redis-server and wrk share
# LOAD_CPU; the proxy runs alone on PROXY_CPU.

set -euo pipefail

PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
ROUTES=${ROUTES:-none local redis keyauth}
PORT_BASE=${PORT_BASE:-19080}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

for tool in nginx wrk redis-server taskset curl; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is required (apt-get install -y nginx wrk redis-server util-linux curl)" >&2
        exit 1
    }
done
NGINX=$(command -v nginx)

if [[ -n ${SLUICEGATE_BIN:-} ]]; then
    SG=$SLUICEGATE_BIN
else
    SG=$("$ROOT/scripts/build-release.sh")
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluicegate-plugins.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

BACKEND_PORT=$PORT_BASE
REDIS_PORT=$((PORT_BASE + 1))
SG_PORT=$((PORT_BASE + 2))
SG_ADMIN_PORT=$((PORT_BASE + 3))
SG_TLS_PORT=$((PORT_BASE + 4))

wait_http() {
    for _ in $(seq 1 200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "error: $2 did not start" >&2
    exit 1
}

mkdir -p "$TMP/backend" "$TMP/config"
cat >"$TMP/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/backend/body;
    proxy_temp_path $TMP/backend/proxy;
    fastcgi_temp_path $TMP/backend/fastcgi;
    uwsgi_temp_path $TMP/backend/uwsgi;
    scgi_temp_path $TMP/backend/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        location / { return 200 "ok"; }
    }
}
EOF
taskset -c "$LOAD_CPU" "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND_PORT/" backend

taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done

route() { # NAME PLUGINS
    cat <<EOF
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: $1, namespace: bench}
spec:
  hosts: [$1.bench]
  routes:
  - name: all
    backends: [{serviceName: backend, servicePort: 80}]
    plugins: $2
EOF
}
{
    cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: v1
kind: Secret
metadata: {name: bench-consumer, namespace: bench, labels: {sluicegate.io/consumer: bench}}
stringData: {key: bench-key}
EOF
    route none "{}"
    route local "{limitCount: {count: 1000000000000, timeWindow: 1h}}"
    route redis "{limitCount: {count: 1000000000000, timeWindow: 1h, policy: Redis, redis: {url: \"redis://127.0.0.1:$REDIS_PORT\"}}}"
    route keyauth "{keyAuth: {}, limitCount: {count: 1000000000000, timeWindow: 1h, key: {type: Consumer}}}"
} >"$TMP/config/bench.yaml"

taskset -c "$PROXY_CPU" "$SG" standalone --config "$TMP/config" \
    --http-addr "127.0.0.1:$SG_PORT" --admin-addr "127.0.0.1:$SG_ADMIN_PORT" \
    --https-addr "127.0.0.1:$SG_TLS_PORT" --workers 1 --log-level warn >"$TMP/sg.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SG_ADMIN_PORT/readyz" sluicegate

run() { # ROUTE DURATION -> requests/s
    local extra=()
    [[ $1 == keyauth ]] && extra=(-H "apikey: bench-key")
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" -H "Host: $1.bench" \
        "${extra[@]}" "http://127.0.0.1:$SG_PORT/" 2>&1 |
        awk '/Non-2xx/ {bad = $NF} /^Requests\/sec/ {rps = $2} END {if (bad) print "errors:" bad; else print rps}'
}

echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}')"
echo "sluicegate: $SG ($("$SG" --version 2>/dev/null || echo unknown))"
declare -A RESULTS
for route in $ROUTES; do run "$route" "$WARMUP" >/dev/null; done
for round in $(seq 1 "$ROUNDS"); do
    for route in $ROUTES; do
        rps=$(run "$route" "$DURATION")
        echo "round $round $route: $rps req/s"
        RESULTS[$route]+="$rps "
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
base=$(echo "${RESULTS[none]:-}" | median)
echo
printf '%-8s %12s %8s\n' route "req/s(med)" "vs none"
for route in $ROUTES; do
    m=$(echo "${RESULTS[$route]}" | median)
    printf '%-8s %12.0f %7.1f%%\n' "$route" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN {print (b > 0) ? 100 * a / b : 0}')"
done
