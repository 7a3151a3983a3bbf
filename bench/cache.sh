#!/usr/bin/env bash
# The proxy cache under load, in one run: Sluicegate's memory-hit path
# against the same route uncached and against nginx's proxy_cache hit path
# (same object, same backend), and the Redis-storage hit path against the
# uncached route. Then the memory bound with 100,000 entries of 1 KiB.
#
# Usage:
#   bench/cache.sh            hits, then the memory bound
#   bench/cache.sh hits       only the request rates
#   bench/cache.sh bound      only the memory bound
#
# Layout (2-core default), as bench/proxy.sh: the proxy under test runs
# alone on PROXY_CPU with one worker; wrk, the backend (an nginx answering
# a BODY_SIZE-byte body with `Cache-Control: max-age=3600`) and
# redis-server share LOAD_CPU. Each run reports the proxy's CPU time per
# request and how busy LOAD_CPU was: when LOAD_CPU is saturated and the
# proxy's core is not, the figure is the load generator's limit.
#
# Runs (each ROUNDS times, alternating; medians reported):
#   uncached      Sluicegate, the route without proxyCache
#   memory        Sluicegate, proxyCache storage: Memory (every request a hit)
#   nginx-cache   nginx, proxy_cache (every request a hit, from its file cache)
#   redis         Sluicegate, proxyCache storage: Redis (every request a hit)
#
# Memory bound: Sluicegate with --cache-memory-size BOUND (64Mi) gets
# 100,000 distinct URIs of BODY_SIZE bytes (a wrk script walks /api/item/N),
# then its RSS growth and the storage's own count are compared with the
# bound.
#
# Settings (environment):
#   PROXY_CPU=0 LOAD_CPU=1 CONNECTIONS=64 THREADS=1 DURATION=10s WARMUP=3s
#   ROUNDS=3 BODY_SIZE=1024 BOUND=64Mi ENTRIES=100000
#   SLUICEGATE_BIN (else scripts/build-release.sh), PORT_BASE=18180
#   KEEP_TMP=1 keeps the temporary directory

set -euo pipefail

MODE=${1:-all}
case $MODE in
all | hits | bound) ;;
-h | --help)
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
*)
    echo "usage: $0 [all|hits|bound]" >&2
    exit 2
    ;;
esac

PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
BODY_SIZE=${BODY_SIZE:-1024}
BOUND=${BOUND:-64Mi}
ENTRIES=${ENTRIES:-100000}
PORT_BASE=${PORT_BASE:-18180}
REQ_PATH=/api/object

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "error: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluicegate-cache-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "temporary files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

for tool in nginx wrk curl taskset redis-server; do
    command -v "$tool" >/dev/null || [[ $tool == nginx && -x /usr/sbin/nginx ]] ||
        die "$tool is needed (apt-get install -y nginx wrk curl util-linux redis-server)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HZ=$(getconf CLK_TCK)

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
TAKEN=()
choose() {
    local p=$PORT_BASE
    while ((p < 65535)); do
        if port_free "$p" && [[ " ${TAKEN[*]} " != *" $p "* ]]; then
            TAKEN+=("$p")
            printf -v "$1" '%s' "$p"
            return
        fi
        p=$((p + 1))
    done
    die "no free port from $PORT_BASE upwards"
}
choose BACKEND_PORT
choose NGINX_PORT
choose SG_PORT
choose SG_ADMIN_PORT
choose REDIS_PORT

if [[ -n ${SLUICEGATE_BIN:-} ]]; then
    SG=$SLUICEGATE_BIN
else
    log "building sluicegate (release, as the image: scripts/build-release.sh)"
    SG=$("$ROOT/scripts/build-release.sh") || die "cargo build failed"
fi
[[ -x $SG ]] || die "no sluicegate binary at $SG"

wait_http() { # url what pid
    local i
    for i in $(seq 1 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || die "$2 exited during startup (KEEP_TMP=1 keeps its log)"
        sleep 0.1
        : "$i"
    done
    die "$2 did not answer $1 within 10s"
}

to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : -1
        if (f < 0) { print "nan"; exit }; printf "%.0f", n * f }'
}
cpu_ticks() {
    local user=0 sys=0 pid stat rest f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a f <<<"$rest"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user,$sys"
}
core_busy() { # percent busy of CPU $1 between two /proc/stat samples in $2 $3
    awk -v a="$2" -v b="$3" 'BEGIN { split(a, x, ","); split(b, y, ",")
        printf "%.0f", (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0 }'
}
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6 "," t }' /proc/stat
}
duration_s() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); print (u == "m") ? n * 60 : n }'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
med() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$TMP/results" | median; }

BODY=$(head -c "$BODY_SIZE" /dev/zero | tr '\0' 'x')

start_backend() {
    mkdir -p "$TMP/backend"
    cat >"$TMP/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend/nginx.pid;
error_log $TMP/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $TMP/backend/body;
    proxy_temp_path $TMP/backend/proxy;
    fastcgi_temp_path $TMP/backend/fastcgi;
    uwsgi_temp_path $TMP/backend/uwsgi;
    scgi_temp_path $TMP/backend/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT backlog=4096;
        location / {
            add_header Cache-Control "max-age=3600";
            return 200 "$BODY";
        }
    }
}
EOF
    taskset -c "$LOAD_CPU" "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" \
        -e "$TMP/backend/error.log" >/dev/null 2>&1 &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_http "http://127.0.0.1:$BACKEND_PORT/" "backend nginx" "$BACKEND_PID"
}

# nginx with proxy_cache in front of the backend: the hit path reads the
# entry from its cache file (page cache), as nginx always does.
start_nginx_cache() {
    mkdir -p "$TMP/nginx/cache"
    # The worker reads and writes the cache files under $TMP: it runs as
    # this user (the directive is ignored when the master is not root).
    cat >"$TMP/nginx/nginx.conf" <<EOF
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    proxy_cache_path $TMP/nginx/cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=60m use_temp_path=off;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/error.log" >/dev/null 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx cache" "$NGINX_PID"
    NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
}

start_redis() {
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    local i
    for i in $(seq 1 100); do
        [[ $(printf 'PING\r\n' | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT; cat >&3; head -c 5 <&3" 2>/dev/null) == +PONG ]] && return 0
        sleep 0.1
        : "$i"
    done
    die "redis-server did not start"
}

# The backend Service and one route per host: uncached.local (no cache),
# memory.local (Memory), redis.local (Redis).
write_manifest() {
    cat >"$1" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: $BACKEND_PORT}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels: {kubernetes.io/service-name: bench}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
EOF
    local host storage
    for host in uncached memory redis; do
        case $host in
        uncached) storage="" ;;
        memory) storage="
    plugins: {proxyCache: {storage: Memory}}" ;;
        redis) storage="
    plugins: {proxyCache: {storage: Redis}}" ;;
        esac
        cat >>"$1" <<EOF
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: $host, namespace: default}
spec:
  hosts: [$host.local]
  routes:
  - name: api
    backends:
    - {serviceName: bench, servicePort: http}$storage
EOF
    done
}

start_sluicegate() { # CONFIG_DIR [extra flags...]
    local dir=$1
    shift
    taskset -c "$PROXY_CPU" "$SG" standalone --config "$dir" \
        --http-addr "127.0.0.1:$SG_PORT" --admin-addr "127.0.0.1:$SG_ADMIN_PORT" --https-addr off \
        --workers 1 --log-level warn "$@" >"$TMP/sluicegate.log" 2>&1 &
    SG_PID=$!
    PIDS+=("$SG_PID")
    wait_http "http://127.0.0.1:$SG_ADMIN_PORT/readyz" "sluicegate" "$SG_PID"
}

# run_wrk NAME URL HOST pid...: a warm-up, then the measured run; appends
# "name rps p50_us p99_us errors proxy_cpu% us/request load_cpu%".
run_wrk() {
    local name=$1 url=$2 host=$3 out=$TMP/wrk-$1.txt t0 t1 c0 c1
    shift 3
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -H "Host: $host" "$url" >/dev/null
    t0=$(cpu_ticks "$@")
    c0=$(core_ticks "$LOAD_CPU")
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $host" "$url" >"$out"
    c1=$(core_ticks "$LOAD_CPU")
    t1=$(cpu_ticks "$@")
    local rps p50 p99 errs reqs cpu per
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_us "$(awk '/Latency Distribution/ {d=1} d && $1 == "50%" {print $2; exit}' "$out")")
    p99=$(to_us "$(awk '/Latency Distribution/ {d=1} d && $1 == "99%" {print $2; exit}' "$out")")
    errs=$(awk '/Non-2xx or 3xx responses:/ {n = $NF} /Socket errors:/ {gsub(/,/, ""); s = $4 + $6 + $8 + $10}
        END {print n + s}' "$out")
    reqs=$(awk '/requests in/ {print $1; exit}' "$out")
    read -r cpu per < <(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s="$(duration_s "$DURATION")" -v n="$reqs" 'BEGIN {
        split(a, x, ","); split(b, y, ","); t = (y[1] - x[1] + y[2] - x[2]) / hz
        printf "%.0f %.1f\n", t / s * 100, t / n * 1e6 }')
    echo "$name $rps $p50 $p99 $errs $cpu $per $(core_busy "$LOAD_CPU" "$c0" "$c1")" >>"$TMP/results"
    log "$(printf '%-12s %9s req/s  p50 %6s us  p99 %6s us  errors %s  proxy CPU %s%% (%s us/request)  load CPU %s%%' \
        "$name" "$rps" "$p50" "$p99" "$errs" "$cpu" "$per" "$(core_busy "$LOAD_CPU" "$c0" "$c1")")"
}

expect_header() { # URL HOST HEADER PATTERN WHAT
    local got
    got=$(curl -fsS -D - -o /dev/null -H "Host: $2" "$1" | tr -d '\r' | awk -v h="$3" 'tolower($1) == tolower(h) ":" {$1 = ""; print substr($0, 2)}')
    [[ $got =~ $4 ]] || die "$5: $3 is '$got', expected /$4/"
}

hits() {
    : >"$TMP/results"
    start_backend
    start_redis
    start_nginx_cache
    mkdir -p "$TMP/sg"
    write_manifest "$TMP/sg/bench.yaml"
    start_sluicegate "$TMP/sg" --cache-redis-url "redis://127.0.0.1:$REDIS_PORT"
    local sg="http://127.0.0.1:$SG_PORT$REQ_PATH" ng="http://127.0.0.1:$NGINX_PORT$REQ_PATH" host
    # Fill every cache, then check that the next request is a hit.
    for host in memory.local redis.local; do
        curl -fsS -o /dev/null -H "Host: $host" "$sg"
        sleep 0.2
        expect_header "$sg" "$host" cache-status "hit" "sluicegate $host"
    done
    curl -fsS -o /dev/null "$ng"
    expect_header "$ng" bench.local x-cache-status "HIT" "nginx proxy_cache"
    expect_header "$sg" uncached.local cache-status "^$" "the uncached route"
    local r
    for r in $(seq 1 "$ROUNDS"); do
        log "round $r/$ROUNDS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        run_wrk uncached "$sg" uncached.local "$SG_PID"
        run_wrk memory "$sg" memory.local "$SG_PID"
        # shellcheck disable=SC2086 # one pid per word
        run_wrk nginx-cache "$ng" bench.local $NGINX_WORKERS
        run_wrk redis "$sg" redis.local "$SG_PID"
    done
    expect_header "$sg" memory.local cache-status "hit" "memory hits after the runs"
    echo
    echo "cache hit paths (median of $ROUNDS rounds; body $BODY_SIZE bytes; latencies in microseconds)"
    printf '%-12s %10s %8s %8s %7s %6s %10s %6s\n' run req/s p50_us p99_us errors cpu% us/req load%
    local name
    for name in uncached memory nginx-cache redis; do
        printf '%-12s %10.0f %8.0f %8.0f %7s %6s %10s %6s\n' "$name" "$(med "$name" 2)" "$(med "$name" 3)" \
            "$(med "$name" 4)" "$(awk -v n="$name" '$1 == n {s += $5} END {print s}' "$TMP/results")" \
            "$(med "$name" 6)" "$(med "$name" 7)" "$(med "$name" 8)"
    done
    awk -v u="$(med uncached 2)" -v m="$(med memory 2)" -v n="$(med nginx-cache 2)" -v r="$(med redis 2)" 'BEGIN {
        printf "memory hit / uncached: %.2f (target >= 1.5)\n", m / u
        printf "memory hit / nginx proxy_cache hit: %.2f (target >= 1.0)\n", m / n
        printf "redis hit / uncached: %.2f (target >= 0.8)\n", r / u }'
    echo "per-round results (name req/s p50_us p99_us errors proxy_cpu% proxy_us/request load_cpu%):"
    sed 's/^/  /' "$TMP/results"
    stop "$SG_PID"
    stop "$NGINX_PID"
    stop "$REDIS_PID"
    stop "$BACKEND_PID"
}

bound() {
    start_backend
    mkdir -p "$TMP/sg-bound"
    write_manifest "$TMP/sg-bound/bench.yaml"
    start_sluicegate "$TMP/sg-bound" --cache-memory-size "$BOUND"
    local sg="http://127.0.0.1:$SG_PORT" rss0 rss1 n
    # Warm the process on the uncached route, so that the growth is the
    # cache's, not the first buffers'.
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s -H "Host: uncached.local" "$sg$REQ_PATH" >/dev/null
    rss0=$(rss_kb "$SG_PID")
    cat >"$TMP/walk.lua" <<EOF
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/api/item/" .. ((n - 1) % $ENTRIES))
end
EOF
    log "filling the memory storage ($BOUND) with $ENTRIES distinct entries of $BODY_SIZE bytes"
    # One connection walks the URIs in order; two passes of the sequence at
    # least (the second finds what the bound kept).
    local secs=1
    while :; do
        taskset -c "$LOAD_CPU" wrk -t1 -c1 -d"${secs}s" -s "$TMP/walk.lua" -H "Host: memory.local" "$sg" >"$TMP/walk.txt"
        n=$(awk '/requests in/ {print $1; exit}' "$TMP/walk.txt")
        ((n >= 2 * ENTRIES)) && break
        secs=$((secs * 2))
        ((secs <= 256)) || die "could not send $((2 * ENTRIES)) requests"
    done
    sleep 1
    rss1=$(rss_kb "$SG_PID")
    local stats
    stats=$(curl -fsS "http://127.0.0.1:$SG_ADMIN_PORT/routes" | tr -d ' \n' |
        grep -o '"memory":{"bound":[0-9]*,"entries":[0-9]*,"bytes":[0-9]*}' | head -1)
    echo
    echo "memory bound: $n requests over $ENTRIES URIs of $BODY_SIZE bytes, bound $BOUND"
    echo "  storage's own count: $stats"
    echo "  RSS: $rss0 kB before, $rss1 kB after, growth $((rss1 - rss0)) kB"
    awk -v g="$((rss1 - rss0))" -v b="$stats" 'BEGIN {
        match(b, /"bound":[0-9]+/); bound = substr(b, RSTART + 8, RLENGTH - 8) / 1024
        printf "  RSS growth / bound: %.3f (target: within 10%% of the bound)\n", g / bound }'
    stop "$SG_PID"
    stop "$BACKEND_PID"
}

log "machine: $(lscpu | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc --all) CPUs, kernel $(uname -r)"
log "proxy on CPU $PROXY_CPU; wrk ($THREADS thread(s), $CONNECTIONS connections), backend and redis-server on CPU $LOAD_CPU"
log "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), redis $(redis-server --version | awk '{sub(/^v=/, "", $3); print $3}'), sluicegate $SG"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
case $MODE in
hits) hits ;;
bound) bound ;;
all)
    hits
    bound
    ;;
esac
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
