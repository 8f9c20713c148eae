#!/usr/bin/env bash
# Soak under hostile load: the release binary (`distillguard run`) on a real broker (Tansu,
# tests/e2e/tansu.sh) for SECS seconds of simulated traffic paced by event time, with 1% hostile
# records mixed in (deep nesting, 400-digit numbers, invalid UTF-8, lone surrogates, NUL, a
# 2^31 protobuf length read as JSON, NaN). Reports, as JSON on the last line:
#   rss_mib        the service's resident set every 10 s (should be flat), beside
#                  tracked_accounts_values_clusters (the state gauges at the same moments)
#                  and broker_lag_pending_deliveries_late (the service's consumer lag per
#                  partition, deliveries in flight and events dropped as late so far)
#   hostile, dlq   hostile records produced and records the service dead-lettered (equal)
#   recall, replay_recall   eval of the service's alerts and of `replay` on the clean records
#                            (equal within half a point)
#   restarts       times the service died and was restarted (zero)
#   rss_growth, accounts_growth   growth of RSS and of tracked accounts over the last third
#                  of the run (RSS may not grow more than 0.15 beyond the accounts)
#
#   bash benches/soak.sh [SECS]        # default 600; SOAK_SCALE (1.0) sets the traffic volume
#
# Simulated hours are replayed in SECS seconds (36x real time by default), so the event-time
# merge waits up to 10 s (kafka.idle_partition_ms) for a partition whose next fetch is late:
# at that speed the default wait would be minutes of event time and reorder records that
# `replay` sees in order. "lag" samples, every 10 s, records handed to the producer client
# and not yet processed by the service (the client's own queue included).
#
# Needs the e2e client venv (confluent-kafka; tests/e2e/run.sh creates it) and builds the
# release binary if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-${SOAK_SECS:-600}}
SCALE=${SOAK_SCALE:-1.0}
HOURS=${SOAK_HOURS:-6}
SEED=${SOAK_SEED:-31}
# State turns over within the run (an hour of event time is 100 s at the default pace), so
# that RSS can level off; replay and the service use the same setting.
export DISTILLGUARD__ENGINE__ACCOUNT_IDLE_SECS=${DISTILLGUARD__ENGINE__ACCOUNT_IDLE_SECS:-3600}
BIN=${BIN:-target/release/distillguard}
[ -x "$BIN" ] || cargo build --release
VENV=${DISTILLGUARD_E2E_VENV:-$HOME/.cache/distillguard/e2e-venv}
PY=$VENV/bin/python
[ -x "$PY" ] || { echo "soak: no client venv at $VENV; run tests/e2e/run.sh once" >&2; exit 1; }
CLIENT=("$PY" tests/e2e/client.py)
WORK=$(mktemp -d)
pids=()
cleanup() {
  [ -f "$WORK/service.pid" ] && kill "$(cat "$WORK/service.pid")" 2>/dev/null && sleep 2
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${SOAK_KEEP:-}" ] && echo "soak: kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "soak: $*" >&2; }

TANSU=$(bash tests/e2e/tansu.sh)
PORT=$("${CLIENT[@]}" free-port)
BROKERS=127.0.0.1:$PORT
"$TANSU" broker --listener-url "tcp://$BROKERS" --advertised-listener-url "tcp://$BROKERS" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
pids+=($!)
"${CLIENT[@]}" wait-tcp 127.0.0.1 "$PORT" 30
for spec in "in 3" "alerts 3" "dlq 3"; do
  set -- $spec
  "$TANSU" topic create --broker "tcp://$BROKERS" --partitions "$2" "$1" >/dev/null
done

"$BIN" simulate --scenario all --seed "$SEED" --scale "$SCALE" --hours "$HOURS" \
  --output "$WORK/clean.jsonl" --labels "$WORK/labels.jsonl" 2>/dev/null
"$BIN" replay --input "$WORK/clean.jsonl" --output "$WORK/replay-alerts.jsonl" 2>/dev/null
"$BIN" eval --alerts "$WORK/replay-alerts.jsonl" --labels "$WORK/labels.jsonl" --json \
  >"$WORK/replay-eval.json"
N=$(grep -c . "$WORK/clean.jsonl")
say "$N clean events over ${HOURS}h, produced in ${SECS}s ($((N / SECS)) events/s) + 1% hostile"

# The service, restarted if it dies (counted).
MPORT=$("${CLIENT[@]}" free-port)
(
  restarts=0
  while :; do
    DISTILLGUARD__KAFKA__AUTO_OFFSET_RESET=earliest DISTILLGUARD__KAFKA__IDLE_PARTITION_MS=10000 \
      DISTILLGUARD__SERVICE__CRASH_MARKER="$WORK/marker" RUST_LOG=warn \
      "$BIN" run --brokers "$BROKERS" --group-id soak --input-topic in --alerts-topic alerts \
      --dlq-topic dlq --input-format json --alerts-format json \
      --metrics-addr "127.0.0.1:$MPORT" >>"$WORK/service.log" 2>&1 &
    echo $! >"$WORK/service.pid"
    wait $! && break
    restarts=$((restarts + 1))
    echo "$restarts" >"$WORK/restarts"
  done
) &
pids+=($!)
"${CLIENT[@]}" wait-http "http://127.0.0.1:$MPORT/readyz" 60

# Producer and sampler in one Python process.
"$PY" - "$BROKERS" "$WORK" "$SECS" "$MPORT" <<'PY'
import json, os, sys, time, urllib.request
from confluent_kafka import Producer, Consumer
brokers, work, secs, mport = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
hostile = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"event_id":"h","ts":' + b"9" * 400 + b',"account_id":"h"}',
    b'{"event_id":"h","ts":1793577601000,"account_id":"h","prompt_text":"\xed\xa0\x80"}',
    b'{"event_id":"\\ud800","ts":1793577601000,"account_id":"h"}',
    b'{"event_id":"h\x00","ts":1793577601000,"account_id":"h"}',
    b'\x0a\x80\x80\x80\x80\x08ab',
    b'{"event_id":"h","ts":NaN,"account_id":"h"}',
]
path = os.path.join(work, "clean.jsonl")
n_lines = sum(1 for l in open(path, "rb") if l.strip())
lines = (l.rstrip(b"\n") for l in open(path, "rb") if l.strip())
p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "message.max.bytes": 4_000_000,
              "enable.idempotence": True, "acks": "all"})
def scrape():
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    except Exception:
        return {}
    out = {}
    for l in text.splitlines():
        if l.startswith("distillguard_events_total") or l.startswith("distillguard_dlq_messages_total"):
            name = l.split("{")[0].split(" ")[0]
            out[name] = out.get(name, 0.0) + float(l.rsplit(" ", 1)[1])
            if 'result="' in l:
                r = l.split('result="')[1].split('"')[0]
                out[r] = out.get(r, 0.0) + float(l.rsplit(" ", 1)[1])
        elif l.startswith(("distillguard_tracked_accounts ", "distillguard_tracked_attribute_values ",
                           "distillguard_tracked_clusters ", "distillguard_pending_deliveries ")):
            out[l.split(" ")[0]] = float(l.rsplit(" ", 1)[1])
        elif l.startswith("distillguard_consumer_lag_messages{"):
            part = l.split('partition="')[1].split('"')[0]
            out.setdefault("broker_lag", {})[part] = int(float(l.rsplit(" ", 1)[1]))
    return out
def rss():
    try:
        pid = open(os.path.join(work, "service.pid")).read().strip()
        for l in open(f"/proc/{pid}/status"):
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) // 1024
    except Exception:
        return None
samples, lag, tracked, kafka, n_hostile, t0, next_sample = [], [], [], [], 0, time.monotonic(), 0.0
def send(key, value):
    while True:
        try:
            p.produce("in", key=key, value=value)
            break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
for i, line in enumerate(lines):
    due = t0 + secs * i / n_lines
    while time.monotonic() < due:
        p.poll(min(0.005, max(0.0, due - time.monotonic())))
    acct = json.loads(line)["account_id"].encode()
    send(acct, line)
    if i % 99 == 98:
        send(b"hostile", hostile[n_hostile % len(hostile)])
        n_hostile += 1
    if time.monotonic() - t0 >= next_sample:
        m = scrape()
        lag.append((round(time.monotonic() - t0), i + n_hostile + 1 - int(m.get("distillguard_events_total", 0))))
        samples.append((round(time.monotonic() - t0), rss()))
        tracked.append((round(time.monotonic() - t0), int(m.get("distillguard_tracked_accounts", 0)),
                        int(m.get("distillguard_tracked_attribute_values", 0)),
                        int(m.get("distillguard_tracked_clusters", 0))))
        kafka.append((round(time.monotonic() - t0), m.get("broker_lag", {}),
                      int(m.get("distillguard_pending_deliveries", 0)), int(m.get("late", 0))))
        next_sample += 10
p.flush(60)
produce_secs = time.monotonic() - t0
total = n_lines + n_hostile
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    m = scrape()
    if m.get("distillguard_events_total", 0) >= total and m.get("distillguard_dlq_messages_total", 0) >= n_hostile:
        break
    time.sleep(0.2)
drain_secs = time.monotonic() - t0 - produce_secs
samples.append((round(time.monotonic() - t0), rss()))
m = scrape()
c = Consumer({"bootstrap.servers": brokers, "group.id": f"soak-reader-{time.time()}",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe(["alerts"])
alerts, quiet = [], time.monotonic()
while time.monotonic() - quiet < 10:
    msg = c.poll(0.5)
    if msg is not None and not msg.error():
        alerts.append(msg.value())
        quiet = time.monotonic()
c.close()
with open(os.path.join(work, "alerts.jsonl"), "wb") as f:
    for a in alerts:
        f.write(a + b"\n")
json.dump({"rss_mib": samples, "lag": lag, "tracked_accounts_values_clusters": tracked,
           "broker_lag_pending_deliveries_late": kafka, "hostile": n_hostile, "events": total,
           "produce_secs": round(produce_secs, 1), "drain_secs": round(drain_secs, 1),
           "events_per_sec": round(total / produce_secs),
           "processed": m.get("distillguard_events_total"),
           "dlq": m.get("distillguard_dlq_messages_total"),
           "late": m.get("late"), "duplicate": m.get("duplicate")},
          open(os.path.join(work, "soak.json"), "w"))
PY
"$BIN" eval --alerts "$WORK/alerts.jsonl" --labels "$WORK/labels.jsonl" --json >"$WORK/eval.json"
"$PY" - "$WORK" <<'PY'
import json, os, sys
w = sys.argv[1]
s = json.load(open(os.path.join(w, "soak.json")))
r = os.path.join(w, "restarts")
s["restarts"] = int(open(r).read()) if os.path.exists(r) else 0
s["recall"] = json.load(open(os.path.join(w, "eval.json")))["recall"]
s["replay_recall"] = json.load(open(os.path.join(w, "replay-eval.json")))["recall"]
# Flat: over the last third of the production, RSS grows no faster than the state it holds.
rss = [(t, m) for t, m in s["rss_mib"] if m and t <= s["produce_secs"]]
acc = [(t, a) for t, a, _, _ in s["tracked_accounts_values_clusters"] if a]
cut = s["produce_secs"] * 2 / 3
def growth(xs):
    before = [v for t, v in xs if t <= cut]
    return (xs[-1][1] - before[-1]) / before[-1] if before and xs else 0.0
s["rss_growth"], s["accounts_growth"] = round(growth(rss), 3), round(growth(acc), 3)
print(json.dumps(s))
# Records of simultaneous or nearly simultaneous event time can reach the engine in another
# order through three partitions than through one file (at 36x real time a partition's
# half-second fetch gap is 18 s of event time): recall must match replay's within half a point.
ok = (s["dlq"] == s["hostile"] and s["restarts"] == 0
      and abs(s["recall"] - s["replay_recall"]) <= 0.005
      and s["rss_growth"] <= s["accounts_growth"] + 0.15)
sys.exit(0 if ok else 1)
PY
