#!/usr/bin/env bash
# Proxy throughput and latency: Sluicegate against nginx, same backend,
# same core budget, same run.
#
# Usage:
#   bench/proxy.sh            compare nginx and Sluicegate, then idle RSS
#   bench/proxy.sh compare    the same
#   bench/proxy.sh churn      rewrite Sluicegate's manifest 10 times a second
#                             during a wrk run and count failed requests
#   bench/proxy.sh all        compare, then churn
#
# Layout (2-core default): the proxy under test runs alone on PROXY_CPU;
# wrk and the backend share LOAD_CPU. Each proxy gets one worker.
#
# The backend is a separate nginx instance answering `return 200 "ok"` from
# one worker: no file system access, no upstream, a two-byte body. It is
# the cheapest HTTP/1.1 keep-alive responder at hand, so the time measured
# is the proxy's. (Sluicegate's echo backend formats every request header
# into its body and runs only inside `sluicegate demo`.)
#
# Settings (environment):
#   PROXY_CPU=0 LOAD_CPU=1     cores for the proxy / for wrk and the backend
#   CONNECTIONS=64 THREADS=1   wrk connections and threads
#   DURATION=10s WARMUP=3s     measured run / discarded warm-up run
#   ROUNDS=3                   alternating nginx/Sluicegate rounds
#   BASELINE=1                 also measure wrk straight against the backend
#   CHURN_DURATION=10s CHURN_RATE=10 CHURN_STYLES="rename inplace"
#                              (style "none" is a run without rewrites)
#   BACKEND_PORT NGINX_PORT SG_PORT SG_ADMIN_PORT   fixed ports (default:
#                              free ports found from PORT_BASE=18080 upwards)
#   SLUICEGATE_BIN             use this binary instead of building one
#   CARGO_TARGET_DIR           where `cargo build --release` puts it
#   NGINX_FORWARDED=0          1: nginx also sets X-Forwarded-For/-Proto/-Host/
#                              -Port and X-Real-IP, as Sluicegate always does
#   SG_LOG_LEVEL               Sluicegate log filter (default warn; info in
#                              churn runs, which logs each published table)
#   KEEP_TMP=1                 keep the temporary directory (logs, configs)

set -euo pipefail

MODE=${1:-compare}
case $MODE in
compare | churn | all) ;;
-h | --help)
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
*)
    echo "usage: $0 [compare|churn|all]" >&2
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
BASELINE=${BASELINE:-1}
CHURN_DURATION=${CHURN_DURATION:-10s}
CHURN_RATE=${CHURN_RATE:-10}
CHURN_STYLES=${CHURN_STYLES:-rename inplace}
PORT_BASE=${PORT_BASE:-18080}
NGINX_FORWARDED=${NGINX_FORWARDED:-0}
HOST_HEADER=bench.local
REQ_PATH=/api/bench

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "error: $*" >&2
    exit 1
}
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- cleanup

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluicegate-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        echo "temporary files kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Removes a pid from the cleanup list after it was stopped explicitly.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

# ---------------------------------------------------------------- tools

need_apt=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]} from Debian"
    [[ $(id -u) == 0 ]] || die "need root to install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need_apt[@]}" >"$TMP/apt.log" 2>&1 ||
        { apt-get update >>"$TMP/apt.log" 2>&1 &&
            apt-get install -y --no-install-recommends "${need_apt[@]}" >>"$TMP/apt.log" 2>&1; } ||
        { cat "$TMP/apt.log" >&2; die "apt-get install ${need_apt[*]} failed"; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

ncpu=$(nproc --all)
for c in "$PROXY_CPU" "$LOAD_CPU"; do
    [[ $c =~ ^[0-9]+(,[0-9]+)*$ ]] || die "CPU list '$c' is not a comma-separated list of numbers"
done
for c in ${PROXY_CPU//,/ } ${LOAD_CPU//,/ }; do
    ((c < ncpu)) || die "CPU $c does not exist (this machine has $ncpu)"
done

# ---------------------------------------------------------------- ports

port_free() {
    ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

TAKEN=()
# choose VAR: keeps VAR if set (checking that it is free), else sets it to
# the first free port from PORT_BASE up that no other VAR took.
choose() {
    local var=$1 p
    if [[ -n ${!var:-} ]]; then
        port_free "${!var}" || die "$var=${!var} is already in use"
        TAKEN+=("${!var}")
        return
    fi
    p=$PORT_BASE
    while ((p < 65535)); do
        if port_free "$p" && [[ " ${TAKEN[*]} " != *" $p "* ]]; then
            TAKEN+=("$p")
            printf -v "$var" '%s' "$p"
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

# ---------------------------------------------------------------- build

if [[ -n ${SLUICEGATE_BIN:-} ]]; then
    [[ -x $SLUICEGATE_BIN ]] || die "SLUICEGATE_BIN=$SLUICEGATE_BIN is not executable"
    SG=$SLUICEGATE_BIN
else
    log "building sluicegate (release)"
    (cd "$ROOT" && cargo build --release --bin sluicegate --quiet) || die "cargo build failed"
    SG=${CARGO_TARGET_DIR:-$ROOT/target}/release/sluicegate
    [[ -x $SG ]] || die "built binary not found at $SG"
fi

# ---------------------------------------------------------------- helpers

wait_http() { # url what pid
    local i
    for i in $(seq 1 100); do
        if curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null; then
            return 0
        fi
        kill -0 "$3" 2>/dev/null || die "$2 exited during startup (see logs in $TMP; KEEP_TMP=1 keeps them)"
        sleep 0.1
        : "$i"
    done
    die "$2 did not answer $1 within 10s"
}

# Converts wrk's durations (12.3us, 1.20ms, 1.5s, 2m) to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 1 : (u == "ms") ? 1e3 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.0f", n * f
    }'
}

# CPU time used so far by the given pids, as "user,system" clock ticks.
cpu_ticks() {
    local user=0 sys=0 pid stat rest f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) } # fields after the command name
        read -r -a f <<<"$rest"
        # utime, stime are fields 14 and 15 overall: 12 and 13 after "pid (comm)".
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user,$sys"
}
HZ=$(getconf CLK_TCK)

duration_s() { # 10s | 1m | 500ms -> seconds (float)
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "" || u == "s") ? 1 : (u == "m") ? 60 : (u == "ms") ? 0.001 : (u == "h") ? 3600 : 1
        print n * f }'
}

# run_wrk NAME URL [pid...]: warm-up, measured run, summary line into
# $TMP/results: name rps p50us p99us non2xx sockerr cpu% and the CPU time
# the pids spent per request, user and system, in microseconds.
run_wrk() {
    local name=$1 url=$2
    shift 2
    local out=$TMP/wrk-$name.txt t0 t1
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
        -H "Host: $HOST_HEADER" "$url" >/dev/null
    t0=$(cpu_ticks "$@")
    taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "Host: $HOST_HEADER" "$url" >"$out"
    t1=$(cpu_ticks "$@")
    summarize "$name" "$out" "$t0" "$t1" "$DURATION" "$#"
}

# summarize NAME FILE TICKS0 TICKS1 DURATION NPIDS
summarize() {
    local name=$1 out=$2 rps p50 p99 non2xx sockerr cpu secs reqs usr sys
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(awk '/Latency Distribution/ {d=1} d && $1 == "50%" {print $2; exit}' "$out")
    p99=$(awk '/Latency Distribution/ {d=1} d && $1 == "99%" {print $2; exit}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")
    [[ -n $rps ]] || { cat "$out" >&2; die "could not read wrk output for $name"; }
    secs=$(duration_s "$5")
    reqs=$(awk '/requests in/ {print $1; exit}' "$out")
    if (($6 > 0)); then
        read -r cpu usr sys < <(awk -v a="$3" -v b="$4" -v hz="$HZ" -v s="$secs" -v n="$reqs" 'BEGIN {
            split(a, x, ","); split(b, y, ",")
            u = (y[1] - x[1]) / hz; k = (y[2] - x[2]) / hz
            printf "%.0f %.1f %.1f\n", (u + k) / s * 100, u / n * 1e6, k / n * 1e6 }')
    else
        cpu=- usr=- sys=-
    fi
    printf '%s %s %s %s %s %s %s %s %s\n' "$name" "$rps" "$(to_us "$p50")" "$(to_us "$p99")" \
        "${non2xx:-0}" "${sockerr:-0}" "$cpu" "$usr" "$sys" >>"$TMP/results"
    printf '   %-12s %10s req/s   p50 %8s   p99 %8s   non-2xx %s   socket errors %s   proxy CPU %s%% (user %s + sys %s us/request)\n' \
        "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "${sockerr:-0}" "$cpu" "$usr" "$sys" >&2
}

# ---------------------------------------------------------------- backend

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
        listen 127.0.0.2:$BACKEND_PORT backlog=4096;
        location / { return 200 "ok"; }
    }
}
EOF
    taskset -c "$LOAD_CPU" "$NGINX" -p "$TMP/backend" -c "$TMP/backend/nginx.conf" \
        -e "$TMP/backend/error.log" >"$TMP/backend/stdout.log" 2>&1 &
    BACKEND_PID=$!
    PIDS+=("$BACKEND_PID")
    wait_http "http://127.0.0.1:$BACKEND_PORT/" "backend nginx" "$BACKEND_PID"
}

start_nginx_proxy() {
    mkdir -p "$TMP/nginx"
    local forwarded=""
    if [[ $NGINX_FORWARDED == 1 ]]; then
        # shellcheck disable=SC2016 # nginx variables, not shell ones
        forwarded='
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;'
    fi
    cat >"$TMP/nginx/nginx.conf" <<EOF
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
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$forwarded
        }
    }
}
EOF
    taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/error.log" >"$TMP/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx proxy" "$NGINX_PID"
    NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
    [[ -n $NGINX_WORKERS ]] || die "nginx proxy has no worker process"
}

# write_manifest FILE VARIANT: Service + EndpointSlice for the backend and
# one ApiRoute. Variants differ in ways that recompile the route and
# change the endpoint set, all of which keep routing to a live backend.
write_manifest() {
    local file=$1 v=${2:-0} timeout endpoints extra=""
    timeout=$((30 + v % 7))s
    if ((v % 2)); then
        endpoints='["127.0.0.1"]'
    else
        endpoints='["127.0.0.1", "127.0.0.2"]'
    fi
    if ((v % 3 == 1)); then
        extra="
  - name: health
    match:
      paths: [{type: Exact, value: /healthz}]
    backends:
    - {serviceName: bench, servicePort: http}"
    fi
    cat >"$file" <<EOF
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
- addresses: $endpoints
  conditions: {ready: true}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: bench, namespace: default}
spec:
  hosts: [$HOST_HEADER]
  routes:
  - name: api
    match:
      paths: [{type: Prefix, value: /api}]
    backends:
    - {serviceName: bench, servicePort: http}
    timeouts: {request: $timeout}$extra
EOF
}

# start_sluicegate CONFIG_DIR WORKERS [LOG [LEVEL]]
start_sluicegate() {
    local dir=$1 workers=$2 logf=${3:-$TMP/sluicegate.log} level=${4:-${SG_LOG_LEVEL:-warn}}
    taskset -c "$PROXY_CPU" "$SG" standalone --config "$dir" \
        --http-addr "127.0.0.1:$SG_PORT" --admin-addr "127.0.0.1:$SG_ADMIN_PORT" \
        --workers "$workers" --log-level "$level" >"$logf" 2>&1 &
    SG_PID=$!
    PIDS+=("$SG_PID")
    wait_http "http://127.0.0.1:$SG_ADMIN_PORT/readyz" "sluicegate" "$SG_PID"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

table_updates() {
    curl -fsS "http://127.0.0.1:$SG_ADMIN_PORT/metrics" |
        awk '/^sluicegate_table_updates_total/ {print $2; exit}'
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# ---------------------------------------------------------------- modes

header() {
    log "machine: $(lscpu | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $ncpu CPUs, kernel $(uname -r)"
    log "proxy on CPU $PROXY_CPU; wrk ($THREADS thread(s), $CONNECTIONS connections) and backend on CPU $LOAD_CPU"
    log "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), sluicegate $SG"
    log "nginx proxy sets X-Forwarded-*: $([[ $NGINX_FORWARDED == 1 ]] && echo yes || echo no); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
}

compare() {
    : >"$TMP/results"
    start_backend
    start_nginx_proxy
    mkdir -p "$TMP/sg-config"
    write_manifest "$TMP/sg-config/bench.yaml" 0
    start_sluicegate "$TMP/sg-config" 1
    local sg_start_rss
    sg_start_rss=$(rss_kb "$SG_PID")
    curl -fsS -o /dev/null -H "Host: $HOST_HEADER" "http://127.0.0.1:$SG_PORT$REQ_PATH" ||
        die "sluicegate does not route $REQ_PATH to the backend (log: $TMP/sluicegate.log)"
    curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$REQ_PATH" ||
        die "nginx does not proxy $REQ_PATH to the backend"

    if [[ $BASELINE == 1 ]]; then
        log "baseline: wrk straight to the backend (everything on CPU $LOAD_CPU)"
        run_wrk direct "http://127.0.0.1:$BACKEND_PORT$REQ_PATH"
    fi
    local r
    for r in $(seq 1 "$ROUNDS"); do
        log "round $r/$ROUNDS"
        # shellcheck disable=SC2086 # one pid per word
        run_wrk nginx "http://127.0.0.1:$NGINX_PORT$REQ_PATH" $NGINX_WORKERS
        run_wrk sluicegate "http://127.0.0.1:$SG_PORT$REQ_PATH" "$SG_PID"
    done
    local sg_after_rss
    sg_after_rss=$(rss_kb "$SG_PID")

    echo
    echo "results (median of $ROUNDS rounds; latencies in microseconds)"
    printf '%-12s %10s %8s %8s %7s %7s %5s %13s %12s\n' proxy req/s p50_us p99_us non2xx sockerr cpu% user_us/req sys_us/req
    local name rps p50 p99 n2 se cpu usr sys
    for name in direct nginx sluicegate; do
        grep -q "^$name " "$TMP/results" || continue
        rps=$(awk -v n="$name" '$1 == n {print $2}' "$TMP/results" | median)
        p50=$(awk -v n="$name" '$1 == n {print $3}' "$TMP/results" | median)
        p99=$(awk -v n="$name" '$1 == n {print $4}' "$TMP/results" | median)
        n2=$(awk -v n="$name" '$1 == n {s += $5} END {print s}' "$TMP/results")
        se=$(awk -v n="$name" '$1 == n {s += $6} END {print s}' "$TMP/results")
        cpu=$(awk -v n="$name" '$1 == n {print $7}' "$TMP/results" | median)
        usr=$(awk -v n="$name" '$1 == n {print $8}' "$TMP/results" | median)
        sys=$(awk -v n="$name" '$1 == n {print $9}' "$TMP/results" | median)
        printf '%-12s %10.0f %8.0f %8.0f %7s %7s %5s %13s %12s\n' "$name" "$rps" "$p50" "$p99" "$n2" "$se" \
            "${cpu:--}" "${usr:--}" "${sys:--}"
        printf -v "med_${name}_rps" '%s' "$rps"
        printf -v "med_${name}_p50" '%s' "$p50"
        printf -v "med_${name}_p99" '%s' "$p99"
    done
    # shellcheck disable=SC2154 # set through printf -v above
    awk -v s="$med_sluicegate_rps" -v n="$med_nginx_rps" -v s50="$med_sluicegate_p50" \
        -v n50="$med_nginx_p50" -v s99="$med_sluicegate_p99" -v n99="$med_nginx_p99" 'BEGIN {
        printf "ratio sluicegate/nginx: throughput %.2f, p50 latency %.2f, p99 latency %.2f\n",
            s / n, s50 / n50, s99 / n99 }'
    echo "sluicegate RSS: ${sg_start_rss} kB after startup (bench config), ${sg_after_rss} kB after the runs"
    echo "per-round results (name req/s p50_us p99_us non2xx sockerr cpu% user_us/req sys_us/req):"
    sed 's/^/  /' "$TMP/results"

    stop "$SG_PID"
    stop "$NGINX_PID"
    idle_rss
    stop "$BACKEND_PID"
}

# Idle RSS with the demo configuration (examples/demo).
idle_rss() {
    local demo=$ROOT/examples/demo w
    [[ -d $demo ]] || { echo "idle RSS: $demo not found, skipped"; return; }
    for w in 1 "$ncpu"; do
        start_sluicegate "$demo" "$w" "$TMP/sluicegate-demo-$w.log"
        sleep 1
        echo "sluicegate idle RSS, demo config, --workers $w: $(rss_kb "$SG_PID") kB"
        stop "$SG_PID"
    done
}

# Rewrites FILE RATE times a second until killed, alternating variants.
# rename: write a temporary file and rename it over FILE (what editors and
# config management do; `*.tmp` is not a manifest name, so the watcher
# ignores the temporary); inplace: truncate and rewrite FILE itself.
churn_writer() {
    local file=$1 rate=$2 style=$3 v=0 period
    period=$(awk -v r="$rate" 'BEGIN {printf "%.3f", 1 / r}')
    while :; do
        v=$((v + 1))
        if [[ $style == rename ]]; then
            write_manifest "$file.tmp" "$v"
            mv -f "$file.tmp" "$file"
        else
            write_manifest "$file" "$v"
        fi
        sleep "$period"
    done
}

churn() {
    : >"$TMP/results"
    start_backend
    local dir=$TMP/churn-config style u0 u1 writer
    mkdir -p "$dir"
    local k=0 id
    for style in $CHURN_STYLES; do
        k=$((k + 1))
        id=churn$k-$style
        write_manifest "$dir/bench.yaml" 0
        # Info level logs each published table (a few per second).
        start_sluicegate "$dir" 1 "$TMP/sluicegate-$id.log" "${SG_LOG_LEVEL:-info}"
        taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
            -H "Host: $HOST_HEADER" "http://127.0.0.1:$SG_PORT$REQ_PATH" >/dev/null
        u0=$(table_updates)
        if [[ $style == none ]]; then
            sleep 1d & # no rewrites: the reference run
        else
            churn_writer "$dir/bench.yaml" "$CHURN_RATE" "$style" &
        fi
        writer=$!
        PIDS+=("$writer")
        taskset -p -c "$LOAD_CPU" "$writer" >/dev/null
        log "churn ($style): $([[ $style == none ]] && echo "no rewrites" || echo "$CHURN_RATE manifest rewrites/s") during a $CHURN_DURATION run"
        taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$CHURN_DURATION" --latency \
            -H "Host: $HOST_HEADER" "http://127.0.0.1:$SG_PORT$REQ_PATH" >"$TMP/wrk-$id.txt"
        stop "$writer"
        u1=$(table_updates)
        summarize "$id" "$TMP/wrk-$id.txt" 0,0 0,0 "$CHURN_DURATION" 0
        echo "churn run $k ($style): $(awk '/requests in/ {print $1}' "$TMP/wrk-$id.txt") requests," \
            "non-2xx $(awk -v n="$id" '$1 == n {print $5}' "$TMP/results")," \
            "socket errors $(awk -v n="$id" '$1 == n {print $6}' "$TMP/results")," \
            "$((${u1:-0} - ${u0:-0})) route tables published during the run" \
            "($(sed 's/\x1b\[[0-9;]*m//g' "$TMP/sluicegate-$id.log" | grep -c 'route table published.* routes=0 ') with no routes)," \
            "$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk-$id.txt") req/s"
        grep -E 'WARN|ERROR' "$TMP/sluicegate-$id.log" | sed 's/\x1b\[[0-9;]*m//g' |
            sort | uniq -c | sort -rn | head -5 | sed 's/^/  log: /' || true
        stop "$SG_PID"
        rm -f "$dir"/*
    done
    echo "churn totals by style (runs, requests failed with non-2xx, socket errors):"
    awk '{split($1, a, "-"); s = a[2]; r[s]++; n[s] += $5; e[s] += $6}
        END {for (s in r) printf "  %-8s runs %d  non-2xx %d  socket errors %d\n", s, r[s], n[s], e[s]}' "$TMP/results"
}

header
case $MODE in
compare) compare ;;
churn) churn ;;
all)
    compare
    churn
    ;;
esac
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
