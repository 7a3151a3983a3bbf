#!/usr/bin/env bash
# What nginx's own access log costs it, on this machine: the yardstick for
# `bench/proxy.sh observe`'s access log figure.
#
# Two nginx proxies in front of the same backend, each with one worker on
# PROXY_CPU: one without an access log, one writing the line Sluicegate's
# default JSON access log writes (the same fields and about the same 350
# bytes; the request id a constant, since the observe route generates its
# id in both configurations) to a file in /dev/shm, buffered as
# `buffer=128k` (Sluicegate's writer also writes 128 KB blocks). wrk and
# the backend share LOAD_CPU. Rounds alternate in a random order; the log
# is emptied after each round. Prints the median of the per-round ratios
# logged / plain, for requests/s.
#
# Usage: bench/nginx_access_log.sh
# Settings (environment): ROUNDS=16 DURATION=3s WARMUP=1s CONNECTIONS=64
#   PROXY_CPU=0 LOAD_CPU=1 BASE_PORT=18610 (three ports from it)
#   KEEP=1 keeps the configurations and the log directory
set -euo pipefail

ROUNDS=${ROUNDS:-16}
DURATION=${DURATION:-3s}
WARMUP=${WARMUP:-1s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18610}
BACKEND_PORT=$BASE_PORT
PLAIN_PORT=$((BASE_PORT + 1))
LOGGED_PORT=$((BASE_PORT + 2))

for tool in nginx wrk taskset curl shuf seq; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

TMP= LOG=
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$TMP" "$LOG"
    else
        echo "kept: $TMP $LOG" >&2
    fi
}
trap cleanup EXIT
TMP=$(mktemp -d)
LOG=$(mktemp -d /dev/shm/nginx-access-log.XXXXXX)

# conf DIR PORT HTTP LOCATION: an nginx configuration with one worker;
# HTTP is added to the http block (its access_log directive, if any: an
# `access_log off` on the same level would cancel the others).
conf() {
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
$3
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { $4 }
    }
}
EOF
}

proxy_http='
    upstream backend {
        server 127.0.0.1:'"$BACKEND_PORT"';
        keepalive 64;
        keepalive_requests 1000000;
    }'
proxy_location='proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
# shellcheck disable=SC2016 # nginx variables, not shell ones
line='{"time":"$time_iso8601","client":"$remote_addr","method":"$request_method","host":"$host","path":"$uri","protocol":"$server_protocol","status":$status,"request_bytes":$request_length,"response_bytes":$body_bytes_sent,"route":"apiroute/default/bench/api","upstream":"$upstream_addr","attempts":1,"duration_ms":$request_time,"upstream_ms":$upstream_response_time,"request_id":"3c0fdbe3860e9e3afc94b15c1a3d08ac"}'

conf "$TMP/backend" "$BACKEND_PORT" "    access_log off;" 'return 200 "ok";'
conf "$TMP/plain" "$PLAIN_PORT" "$proxy_http
    access_log off;" "$proxy_location"
conf "$TMP/logged" "$LOGGED_PORT" "$proxy_http
    log_format line escape=json '$line';
    access_log $LOG/access.log line buffer=128k;" "$proxy_location"

start() { # CPU DIR
    taskset -c "$1" nginx -p "$2" -c "$2/nginx.conf" -e "$2/error.log" >/dev/null 2>&1 &
    PIDS+=($!)
}
start "$LOAD_CPU" "$TMP/backend"
start "$PROXY_CPU" "$TMP/plain"
start "$PROXY_CPU" "$TMP/logged"
sleep 1
for port in "$PLAIN_PORT" "$LOGGED_PORT"; do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/api/bench" || { echo "nginx on $port does not answer" >&2; exit 1; }
done
lines=0

load() { # PORT DURATION
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$2" -H 'Host: bench.local' \
        "http://127.0.0.1:$1/api/bench" | awk '/Requests\/sec/ { print $2 }'
}

: >"$TMP/results"
for r in $(seq 1 "$ROUNDS"); do
    for name in $(shuf -e plain logged); do
        port=$PLAIN_PORT
        [[ $name == logged ]] && port=$LOGGED_PORT
        load "$port" "$WARMUP" >/dev/null
        rps=$(load "$port" "$DURATION")
        [[ -n $rps ]] || { echo "wrk measured nothing against nginx ($name)" >&2; exit 1; }
        echo "round $r $name $rps req/s" >&2
        echo "$r $name $rps" >>"$TMP/results"
    done
    lines=$((lines + $(wc -l <"$LOG/access.log")))
    : >"$LOG/access.log"
done
echo "access log lines in the file: $lines (nginx writes its buffer when 128 KB fill it, so a round's last lines are counted with the next round's, and the last round's are not counted)"

awk '{ rps[$1, $2] = $3 } END {
        for (r = 1; (r, "plain") in rps; r++) print rps[r, "logged"] / rps[r, "plain"]
    }' "$TMP/results" | sort -n | awk '{ a[NR] = $1 } END {
        m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "nginx with its access log / without, requests/s: median of %d per-round ratios %.3f (range %.3f-%.3f)\n", NR, m, a[1], a[NR]
    }'
awk '{ s[$2] += $3; n[$2]++ } END { printf "mean requests/s: plain %.0f, logged %.0f\n", s["plain"] / n["plain"], s["logged"] / n["logged"] }' "$TMP/results"
