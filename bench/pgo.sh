#!/usr/bin/env bash
# Profile-guided optimisation: records how the proxy's code runs under
# the load scripts of this directory and writes the profile that release
# builds compile with (pgo/sluicegate.profdata).
#
# Usage:
#   bench/pgo.sh              build the instrumented binary, train, merge
#   bench/pgo.sh train BIN    train with an instrumented binary built before
#
# 1. Build: `cargo build --release` for the host target with
#    `-Cprofile-generate`, in target/pgo-generate. The explicit --target
#    keeps build scripts and proc macros uninstrumented.
# 2. Train: each stage runs the instrumented binary the way the benchmarks
#    do, for a few seconds per configuration: plain HTTP/1.1 against nginx
#    (`proxy.sh compare`), a plugin route with the access log and tracing
#    (`proxy.sh observe`), HTTPS with keep-alive, full and resumed
#    handshakes over ECDSA and RSA (`proxy.sh tls`), the plugin routes of
#    `plugins.sh` (local and Redis limits, keyAuth), the cache's hit paths
#    (`cache.sh hits`), and HTTP/2 over h2c and TLS (h2load, here). Every
#    process writes its own raw profile when it exits.
# 3. Merge: llvm-profdata merges the raw profiles. Its LLVM must read the
#    raw format of rustc's LLVM; LLVM_PROFDATA names one, else the first
#    of rustup's llvm-tools and Debian's llvm-22 … llvm-19 that is present
#    (llvm-19 is installed from Debian when none is).
#
# The merge keeps the functions that never ran (20 MB, about 4 MB in git):
# knowing them cold is half the gain. A sparse profile (2 MB) leaves them
# out, and they are then compiled as without one: that measured 0.93x the
# requests/s of the full profile, and 7 MB more resident code at startup.
#
# Release builds use it: the Dockerfile (both architectures: the profile
# is of the code, and functions that differ between them are compiled as
# without it) and scripts/build-release.sh, which the load scripts here
# build with. A profile older than the code still applies to every
# function that did not change; functions that did are compiled as
# without it. Re-run this script after changes to the request path, and
# before a release.
#
# Settings (environment): STAGES="compare observe tls plugins cache h2",
# STAGE_DURATION=4s (whole seconds: h2load takes a number of seconds), PGO_PROFILE (default pgo/sluicegate.profdata),
# LLVM_PROFDATA.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGES=${STAGES:-compare observe tls plugins cache h2}
STAGE_DURATION=${STAGE_DURATION:-4s}
[[ $STAGE_DURATION =~ ^[0-9]+s$ ]] || { echo "error: STAGE_DURATION must be whole seconds, e.g. 4s" >&2; exit 2; }
PGO_PROFILE=${PGO_PROFILE:-$ROOT/pgo/sluicegate.profdata}
TRIPLE=$(rustc -vV | awk '/^host:/ {print $2}')
DATA=$(mktemp -d "${TMPDIR:-/tmp}/sluicegate-pgo.XXXXXX")
trap 'rm -rf "$DATA"' EXIT

log() { echo "== $*" >&2; }
die() {
    echo "error: $*" >&2
    exit 1
}

find_profdata() {
    local c sysroot
    if [[ -n ${LLVM_PROFDATA:-} ]]; then
        echo "$LLVM_PROFDATA"
        return
    fi
    sysroot=$(rustc --print sysroot)
    for c in "$sysroot"/lib/rustlib/*/bin/llvm-profdata /usr/lib/llvm-{22,21,20,19}/bin/llvm-profdata; do
        [[ -x $c ]] && {
            echo "$c"
            return
        }
    done
    log "installing llvm-19 from Debian (for llvm-profdata)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends llvm-19 >&2 ||
        die "no llvm-profdata: set LLVM_PROFDATA"
    echo /usr/lib/llvm-19/bin/llvm-profdata
}

if [[ ${1:-} == train ]]; then
    GEN=${2:?usage: $0 train BIN}
else
    log "building the instrumented binary (target/pgo-generate)"
    # A fixed path, so that the build is reused; LLVM_PROFILE_FILE below
    # sends the raw profiles to this run's directory.
    (cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$ROOT/target/pgo-generate/raw" cargo build --release --locked \
        --bin sluicegate --target "$TRIPLE" --target-dir "$ROOT/target/pgo-generate")
    GEN=$ROOT/target/pgo-generate/$TRIPLE/release/sluicegate
fi
[[ -x $GEN ]] || die "no instrumented binary at $GEN"
# Every process, wherever its binary was told to write at build time.
export LLVM_PROFILE_FILE="$DATA/sluicegate-%p-%m.profraw"

h2_stage() {
    command -v h2load >/dev/null || {
        log "installing nghttp2-client from Debian (h2load)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nghttp2-client >&2
    }
    local dir port=18490 pids=()
    dir=$(mktemp -d)
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server { listen 127.0.0.1:$port; location / { return 200 "ok"; } }
}
EOF
    cat >"$dir/bench.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: $port}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: http, port: $port}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {name: bench, namespace: default}
spec:
  hosts: [127.0.0.1]
  routes:
  - name: api
    match:
      paths: [{type: Prefix, value: /api}]
    backends:
    - {serviceName: bench, servicePort: http}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >/dev/null 2>&1 &
    pids+=($!)
    "$GEN" standalone --config "$dir" --http-addr "127.0.0.1:$((port + 1))" \
        --admin-addr "127.0.0.1:$((port + 2))" --https-addr "127.0.0.1:$((port + 3))" \
        --workers 1 --log-level warn >"$dir/sluicegate.log" 2>&1 &
    pids+=($!)
    local _
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$((port + 2))/readyz" 2>/dev/null && break
        sleep 0.1
    done
    h2load -c 16 -m 8 -D "${STAGE_DURATION%s}" "http://127.0.0.1:$((port + 1))/api/bench" | grep -E '^requests:' >&2
    h2load -c 16 -m 8 -D "${STAGE_DURATION%s}" "https://127.0.0.1:$((port + 3))/api/bench" | grep -E '^requests:' >&2
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
}

short=(DURATION="$STAGE_DURATION" WARMUP=1s ROUNDS=1 BASELINE=0 SLUICEGATE_BIN="$GEN")
for stage in $STAGES; do
    log "training: $stage"
    case $stage in
    compare | observe) env "${short[@]}" "$ROOT/bench/proxy.sh" "$stage" >/dev/null ;;
    tls) env "${short[@]}" TLS_TESTS="keepalive:ecdsa full:ecdsa resumed:ecdsa keepalive:rsa full:rsa" \
        "$ROOT/bench/proxy.sh" tls >/dev/null ;;
    plugins) env "${short[@]}" "$ROOT/bench/plugins.sh" >/dev/null ;;
    cache) env "${short[@]}" "$ROOT/bench/cache.sh" hits >/dev/null ;;
    h2) h2_stage ;;
    *) die "unknown stage '$stage'" ;;
    esac
done

shopt -s nullglob
raw=("$DATA"/*.profraw)
((${#raw[@]})) || die "no raw profile was written (was $GEN built with -Cprofile-generate?)"
PROFDATA=$(find_profdata)
mkdir -p "$(dirname "$PGO_PROFILE")"
"$PROFDATA" merge -o "$PGO_PROFILE" "${raw[@]}"
log "wrote $PGO_PROFILE from ${#raw[@]} raw profiles ($(du -h "$PGO_PROFILE" | cut -f1))"
