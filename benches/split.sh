#!/usr/bin/env bash
# What N instances keyed by account detect, against one: the simulated stream is split by a
# hash of `account_id` into N parts (as Kafka's partitioner would put accounts on N
# instances), each part is replayed by its own engine, and the pooled alerts are scored
# against the labels beside one engine's alerts on the whole stream, and beside the staged
# topology run in one process (`replay --account-stages N`: N account engines keyed by
# account handing their observations to one link engine).
#
# Usage: benches/split.sh [SEEDS] [SCENARIO] [N...]
#   benches/split.sh "101 117" all "3 12"
# BIN=PATH uses a binary built elsewhere instead of building. Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"101 117"}
scenario=${2:-all}
counts=${3:-"3 12"}
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release -q
  bin=target/release/distillguard
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for seed in $seeds; do
  run="$work/seed$seed"
  mkdir -p "$run"
  "$bin" simulate --scenario "$scenario" --seed "$seed" --scale 1 \
    --output "$run/events.jsonl" --labels "$run/labels.jsonl" 2>/dev/null
  "$bin" replay --input "$run/events.jsonl" --output "$run/one.jsonl" 2>/dev/null
  echo "### $scenario seed $seed, one instance"
  "$bin" eval --alerts "$run/one.jsonl" --labels "$run/labels.jsonl" | sed -n 1,4p
  for n in $counts; do
    python3 - "$run/events.jsonl" "$n" "$run/part" <<'EOF'
import hashlib, json, sys
src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
parts = [open(f"{out}{i}.jsonl", "w") for i in range(n)]
for line in open(src):
    account = json.loads(line)["account_id"]
    parts[int(hashlib.md5(account.encode()).hexdigest()[:8], 16) % n].write(line)
EOF
    : >"$run/pooled.jsonl"
    for ((i = 0; i < n; i++)); do
      "$bin" replay --input "$run/part$i.jsonl" --output "$run/alerts$i.jsonl" 2>/dev/null
      cat "$run/alerts$i.jsonl" >>"$run/pooled.jsonl"
    done
    echo "### $scenario seed $seed, $n instances keyed by account"
    "$bin" eval --alerts "$run/pooled.jsonl" --labels "$run/labels.jsonl" | sed -n 1,4p
    "$bin" replay --account-stages "$n" --input "$run/events.jsonl" \
      --output "$run/staged.jsonl" 2>/dev/null
    echo "### $scenario seed $seed, staged: $n account engines, one link engine"
    "$bin" eval --alerts "$run/staged.jsonl" --labels "$run/labels.jsonl" | sed -n 1,4p
  done
done
