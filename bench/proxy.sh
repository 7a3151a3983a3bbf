#!/usr/bin/env bash
# Proxy throughput and latency: Sluicegate against nginx, same backend,
# same core budget, same run.
#
# Usage:
#   bench/proxy.sh            compare nginx and Sluicegate, then idle RSS
#   bench/proxy.sh compare    the same
#   bench/proxy.sh churn      rewrite Sluicegate's manifest 10 times a second
#                             during a wrk run and count failed requests
#   bench/proxy.sh tls        HTTPS: requests/s over keep-alive connections,
#                             and TLS handshakes/s with a new connection per
#                             request (full and resumed handshakes), nginx
#                             and Sluicegate serving the same certificates
#                             TLS tests may include "flood": a paced
#                             keep-alive HTTPS stream (FLOOD_STREAM
#                             connections, one request per FLOOD_PACE_MS
#                             each) whose latency is measured while another
#                             wrk floods the same proxy with full handshakes
#   bench/proxy.sh observe    the cost of observability: one route with a
#                             plugin, served by four Sluicegates in
#                             alternating rounds: without access log and
#                             tracing; with the access log (JSON, to a
#                             file); with tracing at 1% to a local
#                             OTLP/HTTP receiver; with both. Metrics and
#                             per-plugin timing are always on. Best with
#                             ROUNDS=15 DURATION=3s WARMUP=1s: the median
#                             of per-round ratios is printed, for
#                             requests/s and for CPU per request. Each
#                             round starts four fresh processes
#                             (RESTART=0: the same four throughout).
#   bench/proxy.sh all        compare, then churn, then tls
#
# Layout (2-core default): the proxy under test runs alone on PROXY_CPU;
# wrk and the backend share LOAD_CPU. Each proxy gets one worker. Every
# run reports the proxy's CPU time per request, how busy LOAD_CPU was and
# wrk's share of it: when LOAD_CPU is saturated and the proxy's core is not,
# the figure is the load generator's limit, not the proxy's.
#
# TLS mode: one ECDSA P-256 and one RSA 2048 self-signed certificate for
# bench.local and 127.0.0.1 are generated with openssl. nginx gets them with
# `ssl_certificate`, Sluicegate as a kubernetes.io/tls Secret named by
# --default-certificate. wrk sends the SNI 127.0.0.1 (its URL's host) and
# `Host: bench.local`. wrk keeps each connection's TLS session and resumes it
# when it reconnects, so `Connection: close` alone measures resumed
# handshakes; for full ones a small LD_PRELOAD library compiled here
# (bench/proxy.sh writes it to the temporary directory) drops the session
# before each connect. The same library counts, on wrk's side, the
# handshakes that completed and how many of them resumed a session.
# Needs openssl and a C compiler (installed from Debian if missing).
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
#   RESTART=1                  fresh proxy processes each round (compare,
#                              observe, tls); 0 keeps the first ones
#   ACCESS_LOG_SINK=file       observe: the access log goes to a file in
#                              memory (/dev/shm), or with "stdout" to a pipe
#                              read by a process on LOAD_CPU, the way a
#                              container's output goes to its runtime
#   BASELINE=1                 also measure wrk straight against the backend
#   TLS_TESTS="keepalive:ecdsa full:ecdsa resumed:ecdsa full:rsa flood:ecdsa flood:rsa"
#                              TLS runs, TEST:CERT; TEST is keepalive
#                              (CONNECTIONS keep-alive connections), full or
#                              resumed (a new connection and handshake per
#                              request), or flood (see above); CERT is ecdsa
#                              (P-256) or rsa (2048)
#   FLOOD_STREAM=4 FLOOD_PACE_MS=10
#                              the flood test's measured keep-alive stream
#                              (the flood itself uses CONNECTIONS, at nice
#                              10 so that the stream's wrk is not queued
#                              behind it on the load core)
#   CHURN_DURATION=10s CHURN_RATE=10 CHURN_STYLES="rename inplace"
#                              (style "none" is a run without rewrites)
#   BACKEND_PORT NGINX_PORT SG_PORT SG_ADMIN_PORT NGINX_TLS_PORT SG_TLS_PORT
#                              fixed ports (default: free ports found from
#                              PORT_BASE=18080 upwards)
#   SLUICEGATE_BIN             use this binary instead of building one
#   SLUICEGATE_BASE_BIN        compare mode: also measure this second
#                              binary (named "baseline") in every round,
#                              so that two builds are compared in one run;
#                              the medians of per-round ratios are printed
#   CARGO_TARGET_DIR           where scripts/build-release.sh builds it
#   NGINX_FORWARDED=0          1: nginx also sets X-Forwarded-For/-Proto/-Host/
#                              -Port and X-Real-IP, as Sluicegate always does
#   SG_LOG_LEVEL               Sluicegate log filter (default warn; info in
#                              churn runs, which logs each published table)
#   KEEP_TMP=1                 keep the temporary directory (logs, configs)

set -euo pipefail

MODE=${1:-compare}
case $MODE in
compare | churn | tls | observe | all) ;;
-h | --help)
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
*)
    echo "usage: $0 [compare|churn|tls|observe|all]" >&2
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
ACCESS_LOG_SINK=${ACCESS_LOG_SINK:-file}
case $ACCESS_LOG_SINK in
file | stdout) ;;
*)
    echo "ACCESS_LOG_SINK must be file or stdout" >&2
    exit 2
    ;;
esac
BASELINE=${BASELINE:-1}
CHURN_DURATION=${CHURN_DURATION:-10s}
CHURN_RATE=${CHURN_RATE:-10}
CHURN_STYLES=${CHURN_STYLES:-rename inplace}
TLS_TESTS=${TLS_TESTS:-keepalive:ecdsa full:ecdsa resumed:ecdsa full:rsa flood:ecdsa flood:rsa}
FLOOD_STREAM=${FLOOD_STREAM:-4}
FLOOD_PACE_MS=${FLOOD_PACE_MS:-10}
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
    if [[ -n ${LOGS:-} ]]; then rm -rf "$LOGS"; fi
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
if [[ $MODE == tls || $MODE == all ]]; then
    command -v openssl >/dev/null || need_apt+=(openssl)
    command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
fi
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
choose NGINX_TLS_PORT
choose SG_TLS_PORT
if [[ -n ${SLUICEGATE_BASE_BIN:-} ]]; then
    [[ -x $SLUICEGATE_BASE_BIN ]] || die "SLUICEGATE_BASE_BIN=$SLUICEGATE_BASE_BIN is not executable"
    choose BASE_PORT
    choose BASE_ADMIN_PORT
    choose BASE_TLS_PORT
fi

# ---------------------------------------------------------------- build

if [[ -n ${SLUICEGATE_BIN:-} ]]; then
    [[ -x $SLUICEGATE_BIN ]] || die "SLUICEGATE_BIN=$SLUICEGATE_BIN is not executable"
    SG=$SLUICEGATE_BIN
else
    log "building sluicegate (release, as the image: scripts/build-release.sh)"
    SG=$("$ROOT/scripts/build-release.sh") || die "cargo build failed"
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

# Clock ticks of the CPUs in a comma-separated list so far, from
# /proc/stat, as "busy,total,steal": idle and iowait are not busy; steal
# (time the hypervisor gave to other guests) is.
core_ticks() {
    awk -v list="$1" 'BEGIN { n = split(list, c, ","); for (i = 1; i <= n; i++) want["cpu" c[i]] = 1 }
        $1 in want { t = 0; for (i = 2; i <= 9; i++) t += $i; busy += t - $5 - $6; total += t; steal += $9 }
        END { print busy "," total "," steal }' /proc/stat
}

# CPU seconds (user + system) in the output of the `times` builtin: the
# children the script has waited for so far. (`times` must run in the
# script's own shell, not in a $(...) subshell, which has no children.)
children_secs() {
    awk 'NR == 2 { split($1, u, /[ms]/); split($2, k, /[ms]/); print u[1] * 60 + u[2] + k[1] * 60 + k[2] }' "$1"
}

# Extra wrk options and environment for run_wrk (the TLS mode sets them).
WRK_OPTS=()
WRK_ENV=()

# run_wrk NAME URL [pid...]: warm-up, measured run, summary line into
# $TMP/results: name rps p50us p99us non2xx sockerr cpu% and the CPU time
# the pids spent per request, user and system, in microseconds; then how
# busy LOAD_CPU was and wrk's own share of it, the TLS handshakes wrk
# completed, full and resumed ("-" without the TLS library); then, in
# percent of one core, the busy time of PROXY_CPU and LOAD_CPU that neither
# the pids, wrk, the backend nor the hypervisor took (other processes, and
# interrupts that came while a core was idle), and the time the hypervisor
# gave to other guests (steal). More than a few percent of either means
# the measurement was disturbed.
run_wrk() {
    local name=$1 url=$2
    shift 2
    local out=$TMP/wrk-$name.txt t0 t1 c0 c1 a0 a1 b0 b1 load wrkcpu other steal
    taskset -c "$LOAD_CPU" env "${WRK_ENV[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
        -H "Host: $HOST_HEADER" "${WRK_OPTS[@]}" "$url" >/dev/null
    rm -f "$TMP/handshakes-$name.txt"
    t0=$(cpu_ticks "$@")
    # shellcheck disable=SC2086 # one pid per word
    b0=$(cpu_ticks "$BACKEND_PID" $BACKEND_WORKERS)
    c0=$(core_ticks "$LOAD_CPU")
    a0=$(core_ticks "$PROXY_CPU,$LOAD_CPU")
    times >"$TMP/times.0"
    taskset -c "$LOAD_CPU" env "${WRK_ENV[@]}" TLS_HANDSHAKE_LOG="$TMP/handshakes-$name.txt" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -H "Host: $HOST_HEADER" "${WRK_OPTS[@]}" "$url" >"$out"
    times >"$TMP/times.1"
    a1=$(core_ticks "$PROXY_CPU,$LOAD_CPU")
    c1=$(core_ticks "$LOAD_CPU")
    t1=$(cpu_ticks "$@")
    # shellcheck disable=SC2086 # one pid per word
    b1=$(cpu_ticks "$BACKEND_PID" $BACKEND_WORKERS)
    load=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, ","); split(b, y, ",")
        printf "%.0f", (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0 }')
    wrkcpu=$(awk -v a="$(children_secs "$TMP/times.0")" -v b="$(children_secs "$TMP/times.1")" \
        -v s="$(duration_s "$DURATION")" 'BEGIN { printf "%.0f", (b - a) / s * 100 }')
    other=$(awk -v a="$a0" -v b="$a1" -v p0="$t0,$b0" -v p1="$t1,$b1" -v w="$wrkcpu" -v hz="$HZ" \
        -v s="$(duration_s "$DURATION")" 'BEGIN { split(a, x, ","); split(b, y, ",")
        split(p0, p, ","); split(p1, q, ",")
        mine = q[1] + q[2] + q[3] + q[4] - p[1] - p[2] - p[3] - p[4]
        o = (y[1] - x[1] - (y[3] - x[3]) - mine) / hz / s * 100 - w; printf "%.0f", (o > 0) ? o : 0 }')
    steal=$(awk -v a="$a0" -v b="$a1" -v hz="$HZ" -v s="$(duration_s "$DURATION")" 'BEGIN {
        split(a, x, ","); split(b, y, ","); printf "%.0f", (y[3] - x[3]) / hz / s * 100 }')
    summarize "$name" "$out" "$t0" "$t1" "$DURATION" "$#" "$load" "$wrkcpu" "$TMP/handshakes-$name.txt" \
        "$other" "$steal"
}

# run_flood NAME URL [pid...]: full handshakes on CONNECTIONS connections
# (wrk at nice 10, LD_PRELOAD library without resumption) from a second
# before until after a paced keep-alive stream of FLOOD_STREAM connections,
# whose latency is what is measured. One line into $TMP/flood-results:
# name stream_rps p50us p99us maxus errors flood_hs_per_s proxy_cpu%
# proxy_cpu_us_per_handshake other% steal%.
run_flood() {
    local name=$1 url=$2
    shift 2
    local secs flood_pid t0 t1 a0 a1 out=$TMP/wrk-$name.txt fout=$TMP/wrk-$name-flood.txt
    secs=$(duration_s "$DURATION")
    printf 'function delay()\n  return %s\nend\n' "$FLOOD_PACE_MS" >"$TMP/paced.lua"
    rm -f "$TMP/handshakes-$name.txt"
    taskset -c "$LOAD_CPU" nice -n 10 env "${WRK_ENV[@]}" TLS_NO_RESUME=1 \
        TLS_HANDSHAKE_LOG="$TMP/handshakes-$name.txt" \
        wrk -t1 -c"$CONNECTIONS" -d"$(awk -v s="$secs" 'BEGIN { printf "%d", s + 2 }')s" \
        -H "Host: $HOST_HEADER" -H "Connection: close" "$url" >"$fout" &
    flood_pid=$!
    sleep 1
    t0=$(cpu_ticks "$@")
    a0=$(core_ticks "$PROXY_CPU,$LOAD_CPU")
    taskset -c "$LOAD_CPU" env "${WRK_ENV[@]}" wrk -t1 -c"$FLOOD_STREAM" -d"$DURATION" --latency \
        -s "$TMP/paced.lua" -H "Host: $HOST_HEADER" "$url" >"$out"
    a1=$(core_ticks "$PROXY_CPU,$LOAD_CPU")
    t1=$(cpu_ticks "$@")
    wait "$flood_pid" || true
    awk -v a="$t0" -v b="$t1" -v c0="$a0" -v c1="$a1" -v hz="$HZ" -v s="$secs" -v n="$name" \
        -v fout="$fout" -v out="$out" 'BEGIN {
        while ((getline l < out) > 0) {
            split(l, f, " ")
            if (l ~ /^Requests\/sec:/) rps = f[2]
            if (l ~ /Latency Distribution/) dist = 1
            if (dist && f[1] == "50%") p50 = f[2]
            if (dist && f[1] == "99%") p99 = f[2]
            if (l ~ /^ +Latency/ && !dist) max = f[4]
            if (l ~ /Socket errors:/) { gsub(/,/, "", l); split(l, e, " "); errs += e[4] + e[6] + e[8] + e[10] }
            if (l ~ /Non-2xx/) errs += f[5]
        }
        while ((getline l < fout) > 0) { split(l, f, " "); if (l ~ /^Requests\/sec:/) hs = f[2] }
        split(a, x, ","); split(b, y, ","); split(c0, p, ","); split(c1, q, ",")
        cpu = (y[1] + y[2] - x[1] - x[2]) / hz
        printf "%s %s %s %s %s %d %s %.0f %.0f %.0f\n", n, rps, us(p50), us(p99), us(max), errs, hs,
            cpu / s * 100, (hs > 0) ? cpu / (hs * s) * 1e6 : 0, (q[3] - p[3]) / hz / s * 100 }
        function us(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            return (u == "us") ? n : (u == "ms") ? n * 1e3 : (u == "s") ? n * 1e6 : -1 }' \
        >>"$TMP/flood-results"
    tail -n 1 "$TMP/flood-results" | awk '{ printf "   %-12s stream %s req/s p50 %s us p99 %s us max %s us errors %s; flood %s handshakes/s; proxy CPU %s%% (%s us/handshake) steal %s%%\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' >&2
}

# summarize NAME FILE TICKS0 TICKS1 DURATION NPIDS [LOAD% WRK% HANDSHAKES_FILE OTHER% STEAL%]
summarize() {
    local name=$1 out=$2 rps p50 p99 non2xx sockerr cpu secs reqs usr sys
    local load=${7:--} wrkcpu=${8:--} hsfile=${9:-} other=${10:--} steal=${11:--}
    local full=- resumed=- proto=- extra=""
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
    if [[ -n $hsfile && -s $hsfile ]]; then
        read -r full resumed proto <"$hsfile"
        extra="   handshakes: $full full, $resumed resumed ($proto)"
    fi
    printf '%s %s %s %s %s %s %s %s %s %s %s %s %s %s %s\n' "$name" "$rps" "$(to_us "$p50")" "$(to_us "$p99")" \
        "${non2xx:-0}" "${sockerr:-0}" "$cpu" "$usr" "$sys" "$load" "$wrkcpu" "$full" "$resumed" "$other" \
        "$steal" >>"$TMP/results"
    printf '   %-12s %10s req/s   p50 %8s   p99 %8s   non-2xx %s   socket errors %s   proxy CPU %s%% (user %s + sys %s us/request)   load CPU %s%% busy (wrk %s%%)   other %s%% steal %s%%%s\n' \
        "$name" "$rps" "$p50" "$p99" "${non2xx:-0}" "${sockerr:-0}" "$cpu" "$usr" "$sys" "$load" "$wrkcpu" "$other" \
        "$steal" "$extra" >&2
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
    BACKEND_WORKERS=$(pgrep -P "$BACKEND_PID" | tr '\n' ' ')
}

# start_nginx_proxy [CERT]: with CERT (ecdsa or rsa), also an HTTPS
# listener on NGINX_TLS_PORT with $TMP/tls/CERT.crt, set up like
# Sluicegate's: TLS 1.2 and 1.3, ECDHE with AES-GCM or ChaCha20-Poly1305,
# X25519/P-256/P-384, session tickets and a 4096-session cache, ALPN h2 and
# http/1.1.
start_nginx_proxy() {
    mkdir -p "$TMP/nginx"
    local forwarded="" tls=""
    if [[ -n ${1:-} ]]; then
        tls="
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2 backlog=4096;
        ssl_certificate $TMP/tls/$1.crt;
        ssl_certificate_key $TMP/tls/$1.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_session_cache builtin:4096;
        ssl_session_tickets on;"
    fi
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
        listen 127.0.0.1:$NGINX_PORT backlog=4096;$tls
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

# Extra Sluicegate options (the TLS mode names its default certificate).
SG_OPTS=()

# start_sluicegate CONFIG_DIR WORKERS [LOG [LEVEL]]. The HTTPS listener is
# on SG_TLS_PORT in every mode (with a self-signed certificate unless a
# Secret is named), rather than on the default 0.0.0.0:8443.
start_sluicegate() {
    local dir=$1 workers=$2 logf=${3:-$TMP/sluicegate.log} level=${4:-${SG_LOG_LEVEL:-warn}}
    # SG_STDOUT_PIPE=1: standard output goes to a reader on LOAD_CPU that
    # drops it, as a container's goes to its runtime; errors to LOG.
    if [[ ${SG_STDOUT_PIPE:-0} == 1 ]]; then
        taskset -c "$PROXY_CPU" "$SG" standalone --config "$dir" \
            --http-addr "127.0.0.1:$SG_PORT" --admin-addr "127.0.0.1:$SG_ADMIN_PORT" \
            --https-addr "127.0.0.1:$SG_TLS_PORT" "${SG_OPTS[@]}" \
            --workers "$workers" --log-level "$level" \
            > >(taskset -c "$LOAD_CPU" cat >/dev/null) 2>"$logf" &
    else
        taskset -c "$PROXY_CPU" "$SG" standalone --config "$dir" \
            --http-addr "127.0.0.1:$SG_PORT" --admin-addr "127.0.0.1:$SG_ADMIN_PORT" \
            --https-addr "127.0.0.1:$SG_TLS_PORT" "${SG_OPTS[@]}" \
            --workers "$workers" --log-level "$level" >"$logf" 2>&1 &
    fi
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

# med NAME COLUMN: median of a column of $TMP/results over NAME's rounds,
# "-" when the column holds no number.
med() {
    local m
    m=$(awk -v n="$1" -v c="$2" '$1 == n && $c != "-" {print $c}' "$TMP/results" | median)
    echo "${m:--}"
}

# fmed NAME COLUMN: the same over $TMP/flood-results.
fmed() {
    local m
    m=$(awk -v n="$1" -v c="$2" '$1 == n && $c != "-" {print $c}' "$TMP/flood-results" | median)
    echo "${m:--}"
}

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
    local base_pid=""
    start_baseline() {
        [[ -n ${SLUICEGATE_BASE_BIN:-} ]] || return 0
        # The same options and configuration, another binary and ports.
        taskset -c "$PROXY_CPU" "$SLUICEGATE_BASE_BIN" standalone --config "$TMP/sg-config" \
            --http-addr "127.0.0.1:$BASE_PORT" --admin-addr "127.0.0.1:$BASE_ADMIN_PORT" \
            --https-addr "127.0.0.1:$BASE_TLS_PORT" "${SG_OPTS[@]}" \
            --workers 1 --log-level "${SG_LOG_LEVEL:-warn}" >"$TMP/baseline.log" 2>&1 &
        base_pid=$!
        PIDS+=("$base_pid")
        wait_http "http://127.0.0.1:$BASE_ADMIN_PORT/readyz" "baseline sluicegate" "$base_pid"
    }
    start_baseline
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
        # Fresh processes each round (RESTART=0: the same ones throughout):
        # a process's speed depends on where its code and data landed, and
        # one process kept for a whole run biases every round alike (see
        # the observe mode).
        if ((r > 1)) && [[ ${RESTART:-1} == 1 ]]; then
            stop "$NGINX_PID"
            start_nginx_proxy
            stop "$SG_PID"
            start_sluicegate "$TMP/sg-config" 1
            if [[ -n $base_pid ]]; then
                stop "$base_pid"
                start_baseline
            fi
        fi
        # shellcheck disable=SC2086 # one pid per word
        run_wrk nginx "http://127.0.0.1:$NGINX_PORT$REQ_PATH" $NGINX_WORKERS
        run_wrk sluicegate "http://127.0.0.1:$SG_PORT$REQ_PATH" "$SG_PID"
        if [[ -n $base_pid ]]; then
            run_wrk baseline "http://127.0.0.1:$BASE_PORT$REQ_PATH" "$base_pid"
        fi
    done
    local sg_after_rss
    sg_after_rss=$(rss_kb "$SG_PID")

    echo
    echo "results (median of $ROUNDS rounds; latencies in microseconds)"
    printf '%-12s %10s %8s %8s %7s %7s %5s %13s %12s %6s %5s %7s %7s\n' proxy req/s p50_us p99_us non2xx sockerr \
        cpu% user_us/req sys_us/req load% wrk% other% steal%
    local name rps p50 p99 n2 se
    for name in direct nginx sluicegate baseline; do
        grep -q "^$name " "$TMP/results" || continue
        rps=$(med "$name" 2) p50=$(med "$name" 3) p99=$(med "$name" 4)
        n2=$(awk -v n="$name" '$1 == n {s += $5} END {print s}' "$TMP/results")
        se=$(awk -v n="$name" '$1 == n {s += $6} END {print s}' "$TMP/results")
        printf '%-12s %10.0f %8.0f %8.0f %7s %7s %5s %13s %12s %6s %5s %7s %7s\n' "$name" "$rps" "$p50" "$p99" \
            "$n2" "$se" "$(med "$name" 7)" "$(med "$name" 8)" "$(med "$name" 9)" "$(med "$name" 10)" \
            "$(med "$name" 11)" "$(med "$name" 14)" "$(med "$name" 15)"
        printf -v "med_${name}_rps" '%s' "$rps"
        printf -v "med_${name}_p50" '%s' "$p50"
        printf -v "med_${name}_p99" '%s' "$p99"
    done
    # shellcheck disable=SC2154 # set through printf -v above
    awk -v s="$med_sluicegate_rps" -v n="$med_nginx_rps" -v s50="$med_sluicegate_p50" \
        -v n50="$med_nginx_p50" -v s99="$med_sluicegate_p99" -v n99="$med_nginx_p99" 'BEGIN {
        printf "ratio sluicegate/nginx: throughput %.2f, p50 latency %.2f, p99 latency %.2f\n",
            s / n, s50 / n50, s99 / n99 }'
    # Ratios within a round cancel most of the machine's drift between
    # rounds; their medians are the figures to compare.
    local pair a b rr cr
    for pair in sluicegate:nginx baseline:nginx sluicegate:baseline; do
        a=${pair%%:*} b=${pair##*:}
        grep -q "^$a " "$TMP/results" && grep -q "^$b " "$TMP/results" || continue
        rr=$(awk -v a="$a" -v b="$b" '$1 == a {x[++i] = $2} $1 == b {y[++j] = $2}
            END {for (k = 1; k <= i && k <= j; k++) print x[k] / y[k]}' "$TMP/results" | median)
        cr=$(awk -v a="$a" -v b="$b" '$1 == a {x[++i] = $8 + $9} $1 == b {y[++j] = $8 + $9}
            END {for (k = 1; k <= i && k <= j; k++) if (y[k] > 0) print x[k] / y[k]}' "$TMP/results" | median)
        printf 'median of per-round ratios %s/%s: throughput %.3f, CPU per request %.3f\n' "$a" "$b" "$rr" "$cr"
    done
    echo "sluicegate RSS: ${sg_start_rss} kB after startup (bench config), ${sg_after_rss} kB after the last round"
    echo "per-round results (name req/s p50_us p99_us non2xx sockerr cpu% user_us/req sys_us/req load_cpu% wrk_cpu%" \
        "tls_full tls_resumed other_cpu% steal%):"
    sed 's/^/  /' "$TMP/results"

    stop "$SG_PID"
    if [[ -n $base_pid ]]; then stop "$base_pid"; fi
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

# ---------------------------------------------------------------- TLS

# make_cert KIND: a self-signed certificate for bench.local and 127.0.0.1,
# ECDSA P-256 or RSA 2048, in $TMP/tls/KIND.crt and KIND.key (PKCS#8).
make_cert() {
    local kind=$1
    local -a key
    case $kind in
    ecdsa) key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    rsa) key=(-newkey rsa:2048) ;;
    *) die "unknown certificate '$kind' (ecdsa or rsa)" ;;
    esac
    mkdir -p "$TMP/tls"
    openssl req -x509 "${key[@]}" -nodes -days 7 -subj "/CN=$HOST_HEADER" \
        -addext "subjectAltName=DNS:$HOST_HEADER,IP:127.0.0.1" \
        -keyout "$TMP/tls/$kind.key" -out "$TMP/tls/$kind.crt" >"$TMP/tls/openssl-$kind.log" 2>&1 ||
        { cat "$TMP/tls/openssl-$kind.log" >&2; die "openssl could not make the $kind certificate"; }
}

# write_secret FILE KIND: the certificate as the kubernetes.io/tls Secret
# default/bench-tls.
write_secret() {
    {
        printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: bench-tls, namespace: default}\n'
        printf 'type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n'
        sed 's/^/    /' "$TMP/tls/$2.crt"
        printf '  tls.key: |\n'
        sed 's/^/    /' "$TMP/tls/$2.key"
    } >"$1"
}

# The library wrk loads in TLS runs (LD_PRELOAD). It counts the handshakes
# that complete (SSL_connect returning 1), full or resumed, and writes
# "full resumed protocol/cipher/group" to $TLS_HANDSHAKE_LOG when wrk exits.
# With TLS_NO_RESUME set it drops the session that wrk keeps from the
# previous connection (SSL_clear keeps it, so wrk resumes by default)
# before each new handshake. wrk calls SSL_set_fd again on every retry of a
# non-blocking handshake, so the session is dropped only before the
# handshake has started.
build_tls_client() {
    TLS_CLIENT=$TMP/tls/wrk-tls.so
    mkdir -p "$TMP/tls"
    cat >"$TMP/tls/wrk-tls.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
typedef struct ssl_cipher_st SSL_CIPHER;
int SSL_set_session(SSL *, SSL_SESSION *);
int SSL_in_before(const SSL *);
int SSL_session_reused(const SSL *);
const char *SSL_get_version(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
long SSL_ctrl(SSL *, int, long, void *);
const char *OBJ_nid2sn(int);
#define CTRL_GET_NEGOTIATED_GROUP 134 /* SSL_get_negotiated_group, OpenSSL 3 */

static unsigned long full, resumed;
static int described;
static char description[160];

int SSL_set_fd(SSL *ssl, int fd) {
    static int (*real)(SSL *, int);
    if (!real)
        real = (int (*)(SSL *, int))dlsym(RTLD_NEXT, "SSL_set_fd");
    if (getenv("TLS_NO_RESUME") && SSL_in_before(ssl))
        SSL_set_session(ssl, NULL);
    return real(ssl, fd);
}

int SSL_connect(SSL *ssl) {
    static int (*real)(SSL *);
    if (!real)
        real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    int r = real(ssl);
    if (r == 1) {
        __atomic_fetch_add(SSL_session_reused(ssl) ? &resumed : &full, 1, __ATOMIC_RELAXED);
        if (!__atomic_exchange_n(&described, 1, __ATOMIC_ACQ_REL)) {
            const char *group = OBJ_nid2sn((int)SSL_ctrl(ssl, CTRL_GET_NEGOTIATED_GROUP, 0, NULL));
            snprintf(description, sizeof description, "%s/%s/%s", SSL_get_version(ssl),
                     SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)), group ? group : "?");
        }
    }
    return r;
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("TLS_HANDSHAKE_LOG");
    FILE *f;
    if (path && (f = fopen(path, "w"))) {
        fprintf(f, "%lu %lu %s\n", full, resumed, description[0] ? description : "-");
        fclose(f);
    }
}
EOF
    cc -O2 -shared -fPIC -o "$TLS_CLIENT" "$TMP/tls/wrk-tls.c" -ldl 2>"$TMP/tls/cc.log" ||
        { cat "$TMP/tls/cc.log" >&2; die "could not compile the TLS library for wrk"; }
}

# tls_check PORT CERT WHAT: an HTTPS request through a proxy, verified
# against the certificate (so both proxies serve the same one).
tls_check() {
    curl -fsS -o /dev/null --cacert "$TMP/tls/$2.crt" -H "Host: $HOST_HEADER" \
        "https://127.0.0.1:$1$REQ_PATH" ||
        die "$3 does not serve $REQ_PATH over HTTPS with the $2 certificate (logs in $TMP; KEEP_TMP=1 keeps them)"
}

tls() {
    : >"$TMP/results"
    : >"$TMP/flood-results"
    local t kind test r name
    local -a kinds=() tests=()
    for t in $TLS_TESTS; do
        [[ $t =~ ^(keepalive|full|resumed|flood):(ecdsa|rsa)$ ]] ||
            die "TLS_TESTS: '$t' is not TEST:CERT (TEST keepalive, full, resumed or flood; CERT ecdsa or rsa)"
        tests+=("$t")
        [[ " ${kinds[*]} " == *" ${t#*:} "* ]] || kinds+=("${t#*:}")
    done
    build_tls_client
    log "TLS: $(openssl version); wrk uses $(ldd "$(command -v wrk)" | awk '/libssl/ {print $1; exit}')"
    start_backend
    for kind in "${kinds[@]}"; do
        make_cert "$kind"
        start_nginx_proxy "$kind"
        mkdir -p "$TMP/tls-$kind"
        write_manifest "$TMP/tls-$kind/bench.yaml" 0
        write_secret "$TMP/tls-$kind/secret.yaml" "$kind"
        SG_OPTS=(--default-certificate default/bench-tls)
        start_sluicegate "$TMP/tls-$kind" 1 "$TMP/sluicegate-tls-$kind.log"
        SG_OPTS=()
        tls_check "$NGINX_TLS_PORT" "$kind" "nginx"
        tls_check "$SG_TLS_PORT" "$kind" "sluicegate"
        for r in $(seq 1 "$ROUNDS"); do
            # Fresh processes each round, as in compare: one process kept
            # for a whole run puts the luck of where it landed in memory
            # into every round (two Sluicegates of the same build measured
            # 20-22 and 22-26 us per request here).
            if ((r > 1)) && [[ ${RESTART:-1} == 1 ]]; then
                stop "$NGINX_PID"
                start_nginx_proxy "$kind"
                stop "$SG_PID"
                SG_OPTS=(--default-certificate default/bench-tls)
                start_sluicegate "$TMP/tls-$kind" 1 "$TMP/sluicegate-tls-$kind.log"
                SG_OPTS=()
            fi
            for t in "${tests[@]}"; do
                [[ ${t#*:} == "$kind" ]] || continue
                test=${t%%:*}
                WRK_ENV=(LD_PRELOAD="$TLS_CLIENT")
                WRK_OPTS=()
                case $test in
                full)
                    WRK_ENV+=(TLS_NO_RESUME=1)
                    WRK_OPTS=(-H "Connection: close")
                    ;;
                resumed) WRK_OPTS=(-H "Connection: close") ;;
                esac
                log "round $r/$ROUNDS: $test, $kind certificate"
                if [[ $test == flood ]]; then
                    # shellcheck disable=SC2086 # one pid per word
                    run_flood "$test.$kind.nginx" "https://127.0.0.1:$NGINX_TLS_PORT$REQ_PATH" $NGINX_WORKERS
                    run_flood "$test.$kind.sluicegate" "https://127.0.0.1:$SG_TLS_PORT$REQ_PATH" "$SG_PID"
                    continue
                fi
                # shellcheck disable=SC2086 # one pid per word
                run_wrk "$test.$kind.nginx" "https://127.0.0.1:$NGINX_TLS_PORT$REQ_PATH" $NGINX_WORKERS
                run_wrk "$test.$kind.sluicegate" "https://127.0.0.1:$SG_TLS_PORT$REQ_PATH" "$SG_PID"
            done
        done
        WRK_ENV=() WRK_OPTS=()
        stop "$SG_PID"
        stop "$NGINX_PID"
    done
    stop "$BACKEND_PID"

    echo
    echo "TLS results (median of $ROUNDS rounds; latencies in microseconds). keepalive: $CONNECTIONS"
    echo "connections kept open; full / resumed: a new connection, TLS handshake and request each time"
    echo "(Connection: close), so req/s is handshakes/s. resumed%: handshakes that resumed a session, as"
    echo "wrk's OpenSSL saw them. per_core: requests per second of proxy CPU time, 1e6 / (user + sys)."
    echo "bound: proxy when the proxy's core is at least 90% busy, load when the load core is at least 95%"
    echo "busy and the proxy's is not (the figure is then wrk's and the backend's, not the proxy's)."
    echo "other% / steal%: CPU time of both cores that other processes / other guests of the hypervisor"
    echo "took during the run, in % of one core; more than a few percent: the round was disturbed."
    printf '%-26s %9s %8s %8s %6s %7s %5s %6s %6s %8s %6s %5s %6s %6s %5s\n' run req/s p50_us p99_us errors \
        resumed% cpu% usr_us sys_us per_core load% wrk% other% steal% bound
    local run f rps p50 p99 errs res cpu usr sys core load wrkcpu bound
    for t in "${tests[@]}"; do
        [[ ${t%%:*} == flood ]] && continue
        for name in nginx sluicegate; do
            run=${t%%:*}.${t#*:}.$name
            grep -q "^$run " "$TMP/results" || continue
            rps=$(med "$run" 2) p50=$(med "$run" 3) p99=$(med "$run" 4) cpu=$(med "$run" 7) usr=$(med "$run" 8)
            sys=$(med "$run" 9) load=$(med "$run" 10) wrkcpu=$(med "$run" 11)
            errs=$(awk -v n="$run" '$1 == n {s += $5 + $6} END {print s}' "$TMP/results")
            res=$(awk -v n="$run" '$1 == n && $12 + $13 > 0 {f += $12; k += $13}
                END {if (f + k) printf "%.1f", k / (f + k) * 100; else print "-"}' "$TMP/results")
            core=$(awk -v u="$usr" -v k="$sys" 'BEGIN {print (u + k > 0) ? sprintf("%.0f", 1e6 / (u + k)) : "-"}')
            bound=$(awk -v c="$cpu" -v l="$load" 'BEGIN {print (c >= 90) ? "proxy" : (l >= 95) ? "load" : "-"}')
            printf '%-26s %9.0f %8.0f %8.0f %6s %7s %5s %6s %6s %8s %6s %5s %6s %6s %5s\n' "$run" "$rps" "$p50" \
                "$p99" "$errs" "$res" "$cpu" "$usr" "$sys" "$core" "$load" "$wrkcpu" "$(med "$run" 14)" \
                "$(med "$run" 15)" "$bound"
        done
        awk -v n="$(med "${t%%:*}.${t#*:}.nginx" 2)" -v s="$(med "${t%%:*}.${t#*:}.sluicegate" 2)" \
            -v nc="$(awk -v n="${t%%:*}.${t#*:}.nginx" '$1 == n {print $8 + $9}' "$TMP/results" | median)" \
            -v sc="$(awk -v n="${t%%:*}.${t#*:}.sluicegate" '$1 == n {print $8 + $9}' "$TMP/results" | median)" \
            -v t="${t%%:*}.${t#*:}" 'BEGIN {
            printf "%-26s sluicegate/nginx: req/s %.2f, proxy CPU per request %.2f\n", t, s / n, sc / nc }'
    done
    if [[ -s $TMP/flood-results ]]; then
        echo
        echo "Handshake flood (median of $ROUNDS rounds): a keep-alive stream of $FLOOD_STREAM connections, one"
        echo "request per ${FLOOD_PACE_MS} ms each, while $CONNECTIONS other connections do full handshakes"
        echo "without pause. Latencies of the stream in microseconds; hs/s and CPU per handshake of the flood."
        printf '%-26s %9s %8s %8s %8s %6s %9s %5s %10s %6s\n' run stream/s p50_us p99_us max_us errors flood_hs/s cpu% us/handshake steal%
        local fr
        for t in "${tests[@]}"; do
            [[ ${t%%:*} == flood ]] || continue
            for name in nginx sluicegate; do
                fr=${t%%:*}.${t#*:}.$name
                grep -q "^$fr " "$TMP/flood-results" || continue
                printf '%-26s %9.0f %8.0f %8.0f %8.0f %6s %9.0f %5s %10s %6s\n' "$fr" \
                    "$(fmed "$fr" 2)" "$(fmed "$fr" 3)" "$(fmed "$fr" 4)" "$(fmed "$fr" 5)" \
                    "$(awk -v n="$fr" '$1 == n {s += $6} END {print s}' "$TMP/flood-results")" \
                    "$(fmed "$fr" 7)" "$(fmed "$fr" 8)" "$(fmed "$fr" 9)" "$(fmed "$fr" 10)"
            done
            awk -v n="$(fmed "${t%%:*}.${t#*:}.nginx" 4)" -v s="$(fmed "${t%%:*}.${t#*:}.sluicegate" 4)" \
                -v nc="$(fmed "${t%%:*}.${t#*:}.nginx" 9)" -v sc="$(fmed "${t%%:*}.${t#*:}.sluicegate" 9)" \
                -v t="${t%%:*}.${t#*:}" 'BEGIN {
                printf "%-26s sluicegate/nginx: stream p99 %.2f, CPU per handshake %.2f\n", t, s / n, sc / nc }'
        done
        echo "per-round flood results (name stream_rps p50_us p99_us max_us errors flood_hs/s cpu% us/handshake steal%):"
        sed 's/^/  /' "$TMP/flood-results"
        echo
    fi
    echo "handshakes seen by wrk, per run (full resumed protocol/cipher/group):"
    for f in "$TMP"/handshakes-*.txt; do
        [[ -e $f ]] || continue
        name=${f##*/handshakes-}
        printf '  %-26s %s\n' "${name%.txt}" "$(cat "$f")"
    done
    echo "per-round results (name req/s p50_us p99_us non2xx sockerr cpu% user_us/req sys_us/req load_cpu% wrk_cpu%" \
        "tls_full tls_resumed other_cpu% steal%):"
    sed 's/^/  /' "$TMP/results"
}

# A route with a plugin (requestId: cheap, and it touches headers both
# ways), for the observe mode.
write_plugin_manifest() {
    write_manifest "$1" 0
    printf '    plugins:\n      requestId: {}\n' >>"$1"
}

# A local OTLP/HTTP receiver that accepts and drops everything.
start_otlp_sink() {
    choose OTLP_PORT
    taskset -c "$LOAD_CPU" python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$OTLP_PORT" &
    OTLP_PID=$!
    PIDS+=("$OTLP_PID")
    sleep 0.5
}

observe() {
    : >"$TMP/results"
    # Access logs go to memory when it can: a disk file's writeback (about
    # 1 GB per configuration and run) lands on whichever core is free and
    # on the next configuration's round, not on the one that logged. Each
    # log is emptied after its round, so memory stays bounded.
    LOGS=$(mktemp -d /dev/shm/sluicegate-bench-logs.XXXXXX 2>/dev/null || mktemp -d "$TMP/logs.XXXXXX")
    local lines=0
    start_backend
    start_otlp_sink
    mkdir -p "$TMP/sg-config"
    write_plugin_manifest "$TMP/sg-config/bench.yaml"
    local -A pid port admin tls
    local name n=0
    # shellcheck disable=SC2034 # read by name through `choose`
    for name in plain logged traced both; do
        n=$((n + 1))
        # The first instance keeps the ports chosen at start.
        if ((n > 1)); then
            unset SG_PORT SG_ADMIN_PORT SG_TLS_PORT
            choose SG_PORT
            choose SG_ADMIN_PORT
            choose SG_TLS_PORT
        fi
        port[$name]=$SG_PORT admin[$name]=$SG_ADMIN_PORT tls[$name]=$SG_TLS_PORT
    done
    # Each round runs four fresh processes (RESTART=0: the same four for
    # every round). A process's speed depends on where its code and data
    # landed (address randomisation, page placement): four identical
    # binaries, each kept for a whole run, measured 0.92-1.07x one another
    # on this benchmark. Fresh processes each round turn that into noise
    # that the median of the rounds cancels.
    observe_start() {
        for name in plain logged traced both; do
            SG_PORT=${port[$name]} SG_ADMIN_PORT=${admin[$name]} SG_TLS_PORT=${tls[$name]}
            local sink_logged="$LOGS/access.log" sink_both="$LOGS/access-both.log"
            if [[ $ACCESS_LOG_SINK == stdout ]]; then
                sink_logged=stdout sink_both=stdout
            fi
            SG_STDOUT_PIPE=0
            case $name in
            plain) SG_OPTS=() ;;
            logged) SG_OPTS=(--access-log "$sink_logged") ;;
            traced) SG_OPTS=(--otlp-endpoint "http://127.0.0.1:$OTLP_PORT/v1/traces"
                --otlp-protocol http/protobuf --trace-sample-ratio 0.01) ;;
            both) SG_OPTS=(--access-log "$sink_both"
                --otlp-endpoint "http://127.0.0.1:$OTLP_PORT/v1/traces" --otlp-protocol http/protobuf
                --trace-sample-ratio 0.01) ;;
            esac
            if [[ $ACCESS_LOG_SINK == stdout && ($name == logged || $name == both) ]]; then
                SG_STDOUT_PIPE=1
            fi
            start_sluicegate "$TMP/sg-config" 1 "$TMP/sluicegate-$name.log"
            SG_STDOUT_PIPE=0
            pid[$name]=$SG_PID
            curl -fsS -o /dev/null -H "Host: $HOST_HEADER" "http://127.0.0.1:${port[$name]}$REQ_PATH" ||
                die "sluicegate ($name) does not route $REQ_PATH (log: $TMP/sluicegate-$name.log)"
        done
        SG_OPTS=()
    }
    observe_start
    local r
    for r in $(seq 1 "$ROUNDS"); do
        log "round $r/$ROUNDS"
        if ((r > 1)) && [[ ${RESTART:-1} == 1 ]]; then
            for name in plain logged traced both; do stop "${pid[$name]}"; done
            observe_start
        fi
        # A new random order each round, so that no configuration is
        # always the one that runs first (after the logs are emptied), last,
        # or after the same other one.
        for name in $(shuf -e plain logged traced both); do
            run_wrk "$name" "http://127.0.0.1:${port[$name]}$REQ_PATH" "${pid[$name]}"
        done
        if [[ $ACCESS_LOG_SINK == file ]]; then
            lines=$((lines + $(wc -l <"$LOGS/access.log")))
        fi
        : >"$LOGS/access.log"
        : >"$LOGS/access-both.log"
    done
    echo
    echo "results (median of $ROUNDS rounds)"
    printf '%-8s %10s %8s %8s %13s %12s\n' config req/s p50_us p99_us user_us/req sys_us/req
    for name in plain logged traced both; do
        printf '%-8s %10.0f %8.0f %8.0f %13s %12s\n' "$name" "$(med "$name" 2)" "$(med "$name" 3)" \
            "$(med "$name" 4)" "$(med "$name" 8)" "$(med "$name" 9)"
    done
    # The machine's speed drifts between rounds more than the access log
    # costs; each round runs the four back to back, so the ratio within a
    # round is steadier than the ratio of medians. Use many short rounds
    # (ROUNDS=15 DURATION=3s) for this one. Requests/s is the target's
    # measure; CPU per request (user + system) is the proxy's own cost even
    # in rounds where the load core, not the proxy's, was the limit.
    local ratios
    ratios=$(awk '{ rps[$1] = $2; cpu[$1] = $8 + $9; n++ }
        n % 4 == 0 { p = rps["plain"]; pc = cpu["plain"]
            print rps["logged"] / p, rps["traced"] / p, rps["both"] / p,
                cpu["logged"] / pc, cpu["traced"] / pc, cpu["both"] / pc }' "$TMP/results")
    local col
    col() { cut -d' ' -f"$1" <<<"$ratios" | median; }
    printf 'median of per-round ratios to plain, requests/s: access log %.3f, tracing at 1%% %.3f, both %.3f\n' \
        "$(col 1)" "$(col 2)" "$(col 3)"
    printf 'median of per-round ratios to plain, CPU per request: access log %.3f, tracing at 1%% %.3f, both %.3f\n' \
        "$(col 4)" "$(col 5)" "$(col 6)"
    if [[ $ACCESS_LOG_SINK == file ]]; then
        echo "access log lines written (access log configuration): $lines"
    else
        echo "access log to standard output, read by a process on CPU $LOAD_CPU"
    fi
    echo "per-round results (name req/s p50_us p99_us non2xx sockerr cpu% user_us/req sys_us/req load_cpu% wrk_cpu%" \
        "tls_full tls_resumed other_cpu% steal%):"
    sed 's/^/  /' "$TMP/results"
    for name in plain logged traced both; do stop "${pid[$name]}"; done
    stop "$BACKEND_PID"
}

header
case $MODE in
compare) compare ;;
churn) churn ;;
tls) tls ;;
observe) observe ;;
all)
    compare
    churn
    tls
    ;;
esac
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
