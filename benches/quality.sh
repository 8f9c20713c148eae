#!/usr/bin/env bash
# Detection quality over several seeds and scales: simulate -> replay -> eval.
# Usage: benches/quality.sh [SEEDS] [SCALES]   e.g. benches/quality.sh "1 2 3" "0.5 1 2"
# PROMPTS=simhash runs on events that carry only prompt_simhash (no prompt text).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"1 2 3"}
scales=${2:-"0.5 1"}
cargo build --release -q
bin=target/release/distillguard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for scale in $scales; do
  for seed in $seeds; do
    "$bin" simulate --scenario all --seed "$seed" --scale "$scale" --prompts "${PROMPTS:-text}" \
      --output "$work/events.jsonl" --labels "$work/labels.jsonl" 2>/dev/null
    "$bin" replay --input "$work/events.jsonl" --output "$work/alerts.jsonl" 2>"$work/replay.log"
    echo "### seed $seed scale $scale ($(wc -l <"$work/events.jsonl") events, replay $(grep -o '"seconds":[0-9.]*' "$work/replay.log" | cut -d: -f2) s)"
    "$bin" eval --alerts "$work/alerts.jsonl" --labels "$work/labels.jsonl" || true
  done
done
