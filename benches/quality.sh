#!/usr/bin/env bash
# Detection quality over many seeds: simulate -> replay -> eval, then one aggregate report per
# scenario (recall per family at its worst and median seed, time to detect pooled over seeds,
# every false positive of every benign family).
#
# Usage: benches/quality.sh [SEEDS] [SCENARIOS] [SCALE] [-- EVAL GATES...]
#   benches/quality.sh                      # held-out report: seeds 101-120, all + evasive
#   benches/quality.sh "$(seq -s' ' 1 20)"  # the tuning seeds
#   benches/quality.sh "101 102" evasive 1 -- --min-recall 0.8 --zero-fp-family hackathon
# Seeds 1-20 are for tuning, 21-22 are CI's, 101-120 are the held-out report (benches/README.md).
# PROMPTS=simhash runs on events that carry only prompt_simhash. KEEP=DIR keeps the runs
# (DIR/SCENARIO/seedN/{events,labels,alerts}.jsonl; events are deleted unless KEEP_EVENTS=1).
# REPLAY_ARGS="--account-stages 3 --link-shards 3" runs each replay through the staged topology
# in one process (to compare it with one engine).
# Gates after `--` apply to each scenario's aggregate; the script exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"$(seq -s' ' 101 120)"}
scenarios=${2:-"all evasive"}
scale=${3:-1}
gates=()
if [ $# -gt 3 ]; then
  shift 3
  [ "${1:-}" = "--" ] && shift
  gates=("$@")
fi
# BIN=PATH runs a binary built elsewhere (to compare two builds side by side) instead of building.
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release -q
  bin=target/release/distillguard
fi
if [ -n "${KEEP:-}" ]; then
  work=$KEEP
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
status=0
for scenario in $scenarios; do
  for seed in $seeds; do
    run="$work/$scenario/seed$seed"
    mkdir -p "$run"
    "$bin" simulate --scenario "$scenario" --seed "$seed" --scale "$scale" \
      --prompts "${PROMPTS:-text}" --output "$run/events.jsonl" --labels "$run/labels.jsonl" 2>/dev/null
    # shellcheck disable=SC2086 # REPLAY_ARGS is a list of flags
    "$bin" replay --input "$run/events.jsonl" --output "$run/alerts.jsonl" ${REPLAY_ARGS:-} 2>"$run/replay.log"
    echo "# $scenario seed $seed: $(wc -l <"$run/events.jsonl") events, replay $(grep -o '"seconds":[0-9.]*' "$run/replay.log" | cut -d: -f2) s" >&2
    [ "${KEEP_EVENTS:-0}" = 1 ] || rm -f "$run/events.jsonl"
  done
  echo "### scenario $scenario, scale $scale, seeds $seeds"
  "$bin" eval --aggregate "$work/$scenario" "${gates[@]}" || status=1
done
exit $status
