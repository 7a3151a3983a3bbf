#!/usr/bin/env bash
# Builds the release binary the way the image does: fat LTO and, when
# pgo/sluicegate.profdata is there, profile-guided optimisation with it
# (bench/pgo.sh records the profile). Prints the binary's path.
#
#   SG=$(scripts/build-release.sh)
#
# The profile-guided build has its own target directory
# (target/pgo-release/<host triple>/release/): RUSTFLAGS are part of every artifact's
# fingerprint, and sharing target/ with plain builds would rebuild
# everything each time one follows the other. PGO=0 builds without the
# profile, into target/.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=$ROOT/pgo/sluicegate.profdata

cd "$ROOT"
if [[ ${PGO:-1} != 0 && -f $PROFILE ]]; then
    # An explicit target keeps RUSTFLAGS off build scripts and proc
    # macros, as when the profile was recorded (bench/pgo.sh).
    triple=$(rustc -vV | awk '/^host:/ {print $2}')
    base=${CARGO_TARGET_DIR:-$ROOT/target}/pgo-release
    RUSTFLAGS="-Cprofile-use=$PROFILE" cargo build --release --locked --quiet \
        --bin sluicegate --target "$triple" --target-dir "$base" >&2
    dir=$base/$triple
else
    dir=${CARGO_TARGET_DIR:-$ROOT/target}
    cargo build --release --locked --quiet --bin sluicegate >&2
fi
echo "$dir/release/sluicegate"
