#!/usr/bin/env bash
# Operations checks for CI: bash deploy/check/ci.sh target/release/distillguard
#
# Starts `distillguard demo` (embedded broker, simulated traffic, the real service), waits until
# it has delivered alerts, saves a /metrics scrape, then checks the scrape, the alert rules and
# their unit tests, and deploy/ against the binary (validate.py); stops the demo with SIGTERM,
# which must exit 0. Then the same for `demo --topology staged` (account instances, link
# shards and a cluster instance in one process), whose scrape must show every stage; finally
# the dashboard and rules against both scrapes (drift.py).
# Installs what it needs: promtool (Debian's prometheus package) and a Python venv with PyYAML
# and kubernetes-validate (DISTILLGUARD_CHECK_VENV, default ~/.cache/distillguard-deploy-venv).
set -uo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 PATH/TO/distillguard" >&2
  exit 2
fi
bin=$(realpath "$1")
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then kill -KILL "$demo_pid"; fi
}
trap cleanup EXIT

echo "== deploy: tools"
if ! command -v promtool >/dev/null; then
  apt-get update -qq
  # The package may try to start a prometheus service: irrelevant here.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
venv=${DISTILLGUARD_CHECK_VENV:-$HOME/.cache/distillguard-deploy-venv}
if ! "$venv/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  python3 -m venv "$venv" || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check pyyaml==6.0.3 kubernetes-validate==1.37.0
fi
py="$venv/bin/python"
promtool --version 2>&1 | head -1

passed=0
failed=()
step() {  # step NAME COMMAND...: runs every step, reports all failures at the end
  local name=$1; shift
  echo "== deploy: $name"
  if "$@"; then passed=$((passed + 1)); else failed+=("$name"); echo "FAILED: $name"; fi
}
fetch() { "$py" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.stdout.write(r.read().decode())
except Exception:
    sys.exit(1)
EOF
}
status_of() { "$py" - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
EOF
}

echo "== deploy: distillguard demo"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" demo --metrics-addr "127.0.0.1:$port" >"$work/demo.out" 2>"$work/demo.err" &
demo_pid=$!
scrape="$work/scrape.txt"
got_alerts=false
for _ in $(seq 1 120); do
  if fetch "http://127.0.0.1:$port/metrics" >"$scrape" 2>/dev/null \
     && grep -q '^distillguard_alerts_total' "$scrape" \
     && grep -q '^distillguard_event_to_alert_seconds_bucket' "$scrape"; then
    got_alerts=true
    break
  fi
  kill -0 "$demo_pid" 2>/dev/null || break
  sleep 1
done
check_demo() {
  if ! $got_alerts; then
    echo "no alert reached /metrics within 120 s; demo stderr:"; tail -20 "$work/demo.err"
    return 1
  fi
  echo "scrape: $(grep -vc '^#' "$scrape") samples, saved at $scrape"
  grep -E '^distillguard_alerts_total' "$scrape" | grep -v ' 0$' | head -4
  local h r
  h=$(status_of "http://127.0.0.1:$port/healthz"); r=$(status_of "http://127.0.0.1:$port/readyz")
  echo "/healthz $h, /readyz $r"
  [ "$h" = 200 ] && [ "$r" = 200 ]
}
step "demo delivers alerts; /healthz and /readyz answer 200" check_demo

step "promtool check metrics (scrape)" sh -c "promtool check metrics < '$scrape'"
step "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
step "promtool check config" promtool check config deploy/prometheus/prometheus.yml
step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
step "validate: compose, k8s, Dockerfile, runbook, rule tests" \
  "$py" deploy/check/validate.py --binary "$bin" --mutants

stop_demo() {
  kill -0 "$demo_pid" 2>/dev/null || { echo "demo exited early"; wait "$demo_pid"; return 1; }
  kill -TERM "$demo_pid"
  # service.shutdown_deadline_secs is 10 s: give it 30 s, like the pod's grace period.
  for _ in $(seq 1 30); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$demo_pid" 2>/dev/null; then echo "demo still running 30 s after SIGTERM"; return 1; fi
  local rc=0
  wait "$demo_pid" || rc=$?
  demo_pid=
  echo "demo exited with $rc after SIGTERM"
  [ "$rc" = 0 ]
}
step "SIGTERM stops the demo with exit 0" stop_demo

# The staged topology: the stages' labels that the dashboard's Stages row, the link-stage
# alerts and KEDA's link trigger rely on.
echo "== deploy: distillguard demo --topology staged"
cleanup   # the first demo, if SIGTERM did not stop it
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" demo --topology staged --metrics-addr "127.0.0.1:$port" >"$work/staged.out" 2>"$work/staged.err" &
demo_pid=$!
staged="$work/scrape-staged.txt"
observations=$("$bin" config --print-default | sed -n 's/^observations_topic = "\(.*\)"/\1/p')
links=$("$bin" config --print-default | sed -n 's/^links_topic = "\(.*\)"/\1/p')
staged_seen=false
for _ in $(seq 1 120); do
  if fetch "http://127.0.0.1:$port/metrics" >"$staged" 2>/dev/null \
     && grep -q '^distillguard_build_info{.*role="account"' "$staged" \
     && grep -q '^distillguard_build_info{.*role="link"' "$staged" \
     && grep -q '^distillguard_build_info{.*role="cluster"' "$staged" \
     && grep -Eq "^distillguard_consumer_lag_messages\{topic=\"$observations-[0-9]+\"" "$staged" \
     && grep -q "^distillguard_consumer_lag_messages{topic=\"$links\"" "$staged" \
     && grep -q '^distillguard_producer_errors_total{destination="observations"' "$staged" \
     && grep -q '^distillguard_producer_errors_total{destination="links"' "$staged"; then
    staged_seen=true
    break
  fi
  kill -0 "$demo_pid" 2>/dev/null || break
  sleep 1
done
check_staged() {
  if ! $staged_seen; then
    echo "the staged demo's /metrics never showed build_info role=\"account\", \"link\" and \"cluster\","
    echo "lag on $observations-S and $links, and producer errors for destinations"
    echo "\"observations\" and \"links\"; stderr:"
    tail -20 "$work/staged.err"
    return 1
  fi
  grep '^distillguard_build_info' "$staged"
  local r
  r=$(status_of "http://127.0.0.1:$port/readyz")
  echo "/readyz $r"
  [ "$r" = 200 ]
}
step "staged demo: every stage exports its role, link shards read $observations-S, the cluster $links" check_staged
step "SIGTERM stops the staged demo with exit 0" stop_demo

step "drift: dashboard and rules vs the scrapes" \
  "$py" deploy/check/drift.py --scrape "$scrape" --scrape "$staged"

echo "deploy: ${passed} passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  printf '  failed: %s\n' "${failed[@]}"
  echo "demo output: $work/demo.out, $work/demo.err, $work/staged.out, $work/staged.err"
  exit 1
fi
rm -rf "$work"
