#!/usr/bin/env bash
# Builds the cargo-fuzz targets under fuzz/ and runs each for a time budget.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to 20 (what CI runs); TARGET defaults to every target.
# The committed seeds in fuzz/corpus/TARGET are read, never written: new
# inputs go to fuzz/target/corpus/TARGET, which later runs start from. A
# failing input is saved under fuzz/artifacts/TARGET and fails the script.
# Needs the nightly toolchain; installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-20}
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# -a: debug assertions (overflow checks included) in the fuzzed code.
# FUZZ_FLAGS replaces it: CI uses `--dev --sanitizer none`, an
# unoptimized build without AddressSanitizer that compiles in a fraction of
# the time (the code under test is safe Rust; the sanitizer guards the
# few unsafe dependencies, which the long local runs keep covering).
read -r -a flags <<<"${FUZZ_FLAGS:--a}"
cargo +nightly fuzz build "${flags[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

for t in "${targets[@]}"; do
  case "$t" in
    request_head | response_head | chunked) dict=(-dict=dicts/http.dict) ;;
    manifest) dict=(-dict=dicts/manifest.dict) ;;
    *) dict=() ;;
  esac
  work="target/corpus/$t"
  mkdir -p "$work"
  printf -- '--> %s, %s s\n' "$t" "$seconds"
  log="target/$t.log"
  # -timeout: one input taking 10 s is a failure (a hang on input).
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done
