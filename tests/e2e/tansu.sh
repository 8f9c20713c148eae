#!/usr/bin/env bash
# Prints the path of a Tansu broker binary (a Kafka-protocol broker in one process, used by
# tests/e2e/run.sh), building it once and caching it:
#   1. $TANSU_BIN, if set and executable;
#   2. ~/.cache/distillguard/tansu/bin/tansu (or $TANSU_ROOT/bin/tansu), if present;
#   3. otherwise `cargo install` it there (a few minutes, once per machine).
# Build output goes to stderr; stdout is only the path.
set -euo pipefail

if [ -n "${TANSU_BIN:-}" ]; then
  if [ -x "$TANSU_BIN" ]; then
    echo "$TANSU_BIN"
    exit 0
  fi
  echo "tansu.sh: TANSU_BIN=$TANSU_BIN is not an executable; using the cache" >&2
fi

root=${TANSU_ROOT:-$HOME/.cache/distillguard/tansu}
version=${TANSU_VERSION:-0.6.0}
bin=$root/bin/tansu
if [ ! -x "$bin" ]; then
  echo "tansu.sh: building tansu $version into $root (once; cached for later runs)" >&2
  cargo install tansu --version "$version" --locked --features dynostore --root "$root" >&2
fi
echo "$bin"
