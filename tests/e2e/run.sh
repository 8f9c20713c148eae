#!/usr/bin/env bash
# End-to-end test of `distillguard run` against a real Kafka-protocol broker (Tansu, one
# process, in-memory storage) and an independent client (confluent-kafka, tests/e2e/client.py).
#
#   bash tests/e2e/run.sh target/release/distillguard
#
# simulate labelled traffic -> produce it to Kafka (plus malformed records) -> the service
# -> alerts and dead letters read back and checked -> eval against the labels, next to
# `replay` on the same file -> /metrics through promtool -> SIGTERM, clean exit.
# Exits non-zero on any failure. Caches a Python venv in ~/.cache/distillguard/e2e-venv
# (override: DISTILLGUARD_E2E_VENV) and the Tansu binary (see tansu.sh). E2E_KEEP=1 keeps the
# work directory (events, labels, alerts, logs, metrics) for a look afterwards.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 PATH/TO/distillguard" >&2
  exit 2
fi
BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
START=$(date +%s)

# Knobs (defaults keep the run to a couple of minutes on 2 cores).
SEED=${E2E_SEED:-31}
SCALE=${E2E_SCALE:-0.25}
HOURS=${E2E_HOURS:-2}
# Events are produced in event-time order at this multiple of real time (2 h in 60 s), as a
# gateway would write them. 0 produces them all at once, a backlog: the service then reads
# partitions in large uneven chunks, and records of one partition that trail another's by more
# than engine.late_allowance_secs of event time are counted `late` and skipped.
SPEEDUP=${E2E_SPEEDUP:-120}
MIN_PRECISION=${E2E_MIN_PRECISION:-0.99}
MIN_RECALL=${E2E_MIN_RECALL:-0.80}
# The Kafka run may differ from replay (partitions interleave differently from file order),
# but not by more than this much recall.
MAX_RECALL_GAP=${E2E_MAX_RECALL_GAP:-0.02}
INPUT_TOPIC=llm-requests
ALERTS_TOPIC=distillguard-alerts
DLQ_TOPIC=distillguard-dlq
VENV=${DISTILLGUARD_E2E_VENV:-$HOME/.cache/distillguard/e2e-venv}

say() { echo "[e2e $(date +%H:%M:%S)] $*"; }
die() { say "FAIL: $*"; exit 1; }

WORK=$(mktemp -d -t distillguard-e2e.XXXXXX)
TANSU_PID=
SVC_PID=
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    if [ -s "$WORK/service.log" ]; then
      say "service log (last 60 lines):"
      tail -n 60 "$WORK/service.log"
    fi
    if [ -s "$WORK/tansu.log" ]; then
      say "broker log (last 30 lines):"
      tail -n 30 "$WORK/tansu.log"
    fi
  fi
  for pid in $SVC_PID $TANSU_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  if [ -n "${E2E_KEEP:-}" ]; then
    say "kept the work directory: $WORK"
  else
    rm -rf "$WORK"
  fi
  [ "$rc" -ne 0 ] && say "end-to-end test FAILED (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ -x "$BIN" ] || die "$BIN is not an executable"
"$BIN" run --help >/dev/null 2>&1 || die "$BIN has no \`run\` command"

# --- the independent client: Python with confluent-kafka -----------------------------------
PY=$VENV/bin/python
if ! "$PY" -c 'import confluent_kafka' 2>/dev/null; then
  say "creating the client venv in $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    say "python3 -m venv failed; installing python3-venv"
    rm -rf "$VENV"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check confluent-kafka
fi
say "client: $("$PY" -c 'import confluent_kafka as c; print("confluent-kafka", c.version()[0], "librdkafka", c.libversion()[0])')"
CLIENT=("$PY" "$HERE/client.py")

# --- broker -----------------------------------------------------------------------------------
TANSU=$(bash "$HERE/tansu.sh")
PORT=$("${CLIENT[@]}" free-port)
BROKERS=127.0.0.1:$PORT
say "starting $("$TANSU" --version) on $BROKERS"
"$TANSU" broker \
  --listener-url "tcp://$BROKERS" \
  --advertised-listener-url "tcp://$BROKERS" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU_PID=$!
"${CLIENT[@]}" wait-tcp 127.0.0.1 "$PORT" 30 || die "the broker does not accept connections on $BROKERS"
for spec in "$INPUT_TOPIC 3" "$ALERTS_TOPIC 3" "$DLQ_TOPIC 1"; do
  set -- $spec
  "$TANSU" topic create --broker "tcp://$BROKERS" --partitions "$2" "$1" >/dev/null \
    || die "cannot create topic $1"
done
"$TANSU" topic list --broker "tcp://$BROKERS" >"$WORK/topics.json"
for t in "$INPUT_TOPIC" "$ALERTS_TOPIC" "$DLQ_TOPIC"; do
  grep -q "\"name\":\"$t\"" "$WORK/topics.json" || die "topic $t missing after creation"
done
say "topics: $INPUT_TOPIC (3 partitions), $ALERTS_TOPIC (3), $DLQ_TOPIC (1)"

# --- labelled traffic, and what replay makes of it ------------------------------------------
EVENTS=$WORK/events.jsonl
LABELS=$WORK/labels.jsonl
"$BIN" simulate --scenario all --seed "$SEED" --scale "$SCALE" --hours "$HOURS" \
  --output "$EVENTS" --labels "$LABELS" 2>"$WORK/simulate.log" \
  || { cat "$WORK/simulate.log"; die "simulate failed"; }
N_EVENTS=$(grep -c . "$EVENTS")
say "simulated $N_EVENTS events, $(grep -c . "$LABELS") labelled accounts (seed $SEED, scale $SCALE, ${HOURS}h)"
"$BIN" replay --input "$EVENTS" --output "$WORK/replay-alerts.jsonl" 2>"$WORK/replay.log" \
  || { cat "$WORK/replay.log"; die "replay failed"; }
"$BIN" eval --alerts "$WORK/replay-alerts.jsonl" --labels "$LABELS" --json >"$WORK/replay-eval.json" \
  || die "eval of the replay alerts failed"
json() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])' "$@"; }
REPLAY_ALERTS=$(grep -c . "$WORK/replay-alerts.jsonl" || true)
REPLAY_PRECISION=$(json "$WORK/replay-eval.json" precision)
REPLAY_RECALL=$(json "$WORK/replay-eval.json" recall)
say "replay: $REPLAY_ALERTS alerts, precision $REPLAY_PRECISION, recall $REPLAY_RECALL"

# --- the service ------------------------------------------------------------------------------
MPORT=$("${CLIENT[@]}" free-port)
METRICS=http://127.0.0.1:$MPORT
say "starting the service (metrics on $METRICS)"
DISTILLGUARD__KAFKA__AUTO_OFFSET_RESET=earliest RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 \
  "$BIN" run --brokers "$BROKERS" --group-id e2e \
  --input-topic "$INPUT_TOPIC" --alerts-topic "$ALERTS_TOPIC" --dlq-topic "$DLQ_TOPIC" \
  --input-format json --alerts-format json \
  --metrics-addr "127.0.0.1:$MPORT" >"$WORK/service.log" 2>&1 &
SVC_PID=$!
t_ready=$(date +%s)
"${CLIENT[@]}" wait-http "$METRICS/readyz" 60 || die "the service was not ready within 60 s"
kill -0 "$SVC_PID" 2>/dev/null || die "the service exited"
say "service ready after $(( $(date +%s) - t_ready ))s"
"${CLIENT[@]}" get "$METRICS/healthz" >/dev/null || die "/healthz is not 200 on a ready service"

# --- traffic through Kafka ------------------------------------------------------------------
ALERTS=$WORK/alerts.jsonl
"${CLIENT[@]}" e2e --brokers "$BROKERS" --events "$EVENTS" \
  --input-topic "$INPUT_TOPIC" --alerts-topic "$ALERTS_TOPIC" --dlq-topic "$DLQ_TOPIC" \
  --metrics-url "$METRICS/metrics" --alerts-out "$ALERTS" --stats-out "$WORK/client.json" \
  --speedup "$SPEEDUP" --quiet 10 --timeout 180 || die "the Kafka round trip failed"
kill -0 "$SVC_PID" 2>/dev/null || die "the service exited during the run"
N_ALERTS=$(grep -c . "$ALERTS" || true)

# --- detection quality of what came out of Kafka ---------------------------------------------
say "eval of the alerts read from Kafka:"
EVAL_ARGS=(--alerts "$ALERTS" --labels "$LABELS")
"$BIN" eval "${EVAL_ARGS[@]}" --min-precision "$MIN_PRECISION" --min-recall "$MIN_RECALL" \
  --zero-fp-family cgnat --zero-fp-family classroom --zero-fp-family enterprise \
  || die "eval requirements missed (precision >= $MIN_PRECISION, recall >= $MIN_RECALL, no FP in cgnat/classroom/enterprise)"
"$BIN" eval "${EVAL_ARGS[@]}" --json >"$WORK/kafka-eval.json"
PRECISION=$(json "$WORK/kafka-eval.json" precision)
RECALL=$(json "$WORK/kafka-eval.json" recall)
say "kafka: $N_ALERTS alerts, precision $PRECISION, recall $RECALL; replay: $REPLAY_ALERTS alerts, precision $REPLAY_PRECISION, recall $REPLAY_RECALL"
"$PY" - "$WORK/alerts.jsonl" "$WORK/replay-alerts.jsonl" <<'PY'
import json, sys
ids = [set(json.loads(l)["alert_id"] for l in open(p) if l.strip()) for p in sys.argv[1:]]
print(f"[e2e] alert ids: {len(ids[0] & ids[1])} shared with replay, "
      f"{len(ids[0] - ids[1])} only from Kafka, {len(ids[1] - ids[0])} only from replay")
PY
"$PY" -c 'import sys; k, r, gap = map(float, sys.argv[1:]); sys.exit(0 if k >= r - gap - 1e-9 else 1)' \
  "$RECALL" "$REPLAY_RECALL" "$MAX_RECALL_GAP" \
  || die "Kafka recall $RECALL is more than $MAX_RECALL_GAP below replay's $REPLAY_RECALL"

# --- metrics exposition -----------------------------------------------------------------------
"${CLIENT[@]}" get "$METRICS/metrics" >"$WORK/metrics.txt" || die "cannot scrape $METRICS/metrics"
for name in distillguard_events_total distillguard_alerts_total distillguard_dlq_messages_total \
  distillguard_ready distillguard_build_info; do
  grep -q "^$name" "$WORK/metrics.txt" || die "/metrics lacks $name"
done
if ! command -v promtool >/dev/null; then
  say "promtool missing; installing Debian's prometheus package"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }; } \
    || say "could not install prometheus (promtool)"
fi
if command -v promtool >/dev/null; then
  promtool check metrics <"$WORK/metrics.txt" || die "promtool check metrics found problems"
  say "promtool check metrics: ok ($(grep -vc '^#' "$WORK/metrics.txt") samples)"
else
  say "promtool unavailable: metrics lint skipped"
fi

# --- graceful shutdown ------------------------------------------------------------------------
say "SIGTERM to the service"
kill -TERM "$SVC_PID"
t_term=$(date +%s%N)
for _ in $(seq 150); do kill -0 "$SVC_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SVC_PID" 2>/dev/null; then
  die "the service still runs 15 s after SIGTERM"
fi
set +e
wait "$SVC_PID"
SVC_RC=$?
set -e
SVC_PID=
say "service exited $SVC_RC after $(( ($(date +%s%N) - t_term) / 1000000 )) ms"
[ "$SVC_RC" -eq 0 ] || die "the service exited $SVC_RC after SIGTERM (want 0)"
if grep -Eq ' (ERROR|WARN) ' "$WORK/service.log"; then
  say "warnings/errors in the service log:"
  grep -E ' (ERROR|WARN) ' "$WORK/service.log" | head -n 20
fi

SECS=$(( $(date +%s) - START ))
printf 'e2e passed: events %s, alerts %s, precision %.3f, recall %.3f (replay %.3f), seconds %s\n' \
  "$N_EVENTS" "$N_ALERTS" "$PRECISION" "$RECALL" "$REPLAY_RECALL" "$SECS"
