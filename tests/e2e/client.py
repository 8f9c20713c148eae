#!/usr/bin/env python3
"""The independent Kafka client of the end-to-end test (tests/e2e/run.sh).

It talks to the broker with confluent-kafka, not with anything from distillguard, and checks
the service only through what the contract promises: JSON events in, JSON alerts out keyed
by `subject`, malformed records on the dead-letter topic with their reason and source in
headers, and the counters on /metrics.

Subcommands:
  free-port                      print a free TCP port on 127.0.0.1
  wait-tcp HOST PORT SECS        wait until HOST:PORT accepts connections
  wait-http URL SECS             wait until URL answers 200
  get URL                        print URL's body; exit 1 unless it answers 200
  metric URL NAME [LABEL=VALUE]  print one sample's value from a Prometheus endpoint
  produce ...                    produce the events (paced by event time, or in a burst)
                                 and the malformed records
  collect ...                    wait until the service processed them; read back and check
                                 the dead letters and alerts; write the alerts
  e2e ...                        produce, then collect
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

# A few records the service must reject, each with the reason family it should give.
MALFORMED = [
    (b"e2e-bad-1", b"not json"),
    (b"e2e-bad-2", b'{"event_id":"x"}'),
    (b"e2e-bad-3", b'{"event_id":"e2e-bad-ts","ts":"yesterday-ish","account_id":"acct_e2e_bad"}'),
]

DLQ_HEADERS = (
    "distillguard.reason",
    "distillguard.source.topic",
    "distillguard.source.partition",
    "distillguard.source.offset",
)

ALERT_FIELDS = (
    "alert_id", "kind", "subject", "accounts", "severity", "score", "recommended_action",
    "detected_at", "window_start", "window_end", "evidence", "detector_version",
)


def log(msg):
    print(f"[client {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"FAIL: {msg}")
    sys.exit(1)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(host, port, secs):
    until = time.monotonic() + secs
    while time.monotonic() < until:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def http_get(url, timeout=5):
    """(status, body) or (None, error text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def wait_http(url, secs):
    until = time.monotonic() + secs
    last = None
    while time.monotonic() < until:
        status, body = http_get(url, timeout=2)
        if status == 200:
            return True
        last = (status, body.strip()[:200])
        time.sleep(0.5)
    log(f"{url} never answered 200 within {secs}s; last answer: {last}")
    return False


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def sample(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (None if there is none)."""
    want = set(labels.items())
    vals = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    return sum(vals) if vals else None


def scrape(url):
    status, body = http_get(url)
    if status != 200:
        return None
    return parse_metrics(body)


def cmd_metric(args):
    samples = scrape(args.url)
    if samples is None:
        fail(f"cannot scrape {args.url}")
    labels = dict(kv.split("=", 1) for kv in args.labels)
    v = sample(samples, args.name, **labels)
    print("" if v is None else (int(v) if v == int(v) else v))


def event_seconds(ts):
    """Event time in seconds: RFC 3339 string or epoch milliseconds."""
    if isinstance(ts, (int, float)):
        return ts / 1000.0
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def produce(args, Producer):
    """Every line of the events file in file order (key = account_id), then the malformed
    records. Returns (number of events, {key: (partition, offset)} of the malformed ones)."""
    conf = {
        "bootstrap.servers": args.brokers,
        "client.id": "distillguard-e2e-producer",
        # Batches of up to 50 ms (E2E_LINGER_MS overrides, for experiments).
        "linger.ms": float(os.environ.get("E2E_LINGER_MS", "50")),
        "batch.size": 1 << 20,
        # Idempotent: retries cannot reorder or duplicate records within a partition.
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 60000,
    }
    if args.one_record_batches:
        # Tansu 0.6.0 answers a fetch from an offset inside a record batch with the batches
        # after it only, and ListOffsets(latest) with the last batch's base offset + 1: a
        # consumer that pauses, seeks or asks for the log end mid-batch misses records. With
        # one record per batch every offset starts a batch.
        conf["batch.num.messages"] = 1
    p = Producer(conf)
    errors = []
    placed = {}

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        elif msg.key() in dict(MALFORMED):
            placed[msg.key()] = (msg.partition(), msg.offset())

    def send(key, value):
        while True:
            try:
                p.produce(args.input_topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)

    t0 = time.monotonic()
    n = 0
    first_ts = None
    newest = None
    with open(args.events, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                account = ev["account_id"]
                ts = event_seconds(ev["ts"]) if args.speedup > 0 else None
            except (ValueError, KeyError, TypeError) as e:
                fail(f"{args.events}:{lineno}: not an event with account_id and ts: {e}")
            if ts is not None:
                # Pace by event time, as a gateway would produce, `speedup` times faster.
                first_ts = ts if first_ts is None else first_ts
                newest = ts if newest is None else max(newest, ts)
                ahead = t0 + (newest - first_ts) / args.speedup - time.monotonic()
                if ahead > 0.005:
                    p.poll(ahead)
            send(account.encode(), line)
            n += 1
    for key, value in MALFORMED:
        send(key, value)
    left = p.flush(60)
    if left:
        fail(f"{left} records still undelivered after 60 s")
    if errors:
        fail(f"{len(errors)} records failed to deliver, e.g. {errors[:3]}")
    pace = f"paced at {args.speedup:g}x event time" if args.speedup > 0 else "unpaced (burst)"
    log(f"produced {n} events + {len(MALFORMED)} malformed records to {args.input_topic} "
        f"in {time.monotonic() - t0:.1f}s, {pace}")
    return n, placed


def check_dlq(dead, placed, input_topic):
    """Every malformed record arrives once on the DLQ, unchanged, with reason and source."""
    problems = []
    by_key = {}
    for m in dead:
        by_key.setdefault(m.key(), []).append(m)
    for key, value in MALFORMED:
        got = by_key.get(key, [])
        if len(got) != 1:
            problems.append(f"{key!r}: {len(got)} dead letters (want 1)")
            continue
        m = got[0]
        h = {}
        for k, v in m.headers() or []:
            h[k] = (v or b"").decode("utf-8", "replace")
        missing = [k for k in DLQ_HEADERS if not h.get(k)]
        if missing:
            problems.append(f"{key!r}: headers missing {missing} (has {sorted(h)})")
            continue
        part, off = placed[key]
        if m.value() != value:
            problems.append(f"{key!r}: payload changed: {m.value()!r}")
        if h["distillguard.source.topic"] != input_topic:
            problems.append(f"{key!r}: source.topic {h['distillguard.source.topic']!r}")
        if h["distillguard.source.partition"] != str(part):
            problems.append(f"{key!r}: source.partition {h['distillguard.source.partition']} "
                            f"(produced to {part})")
        if h["distillguard.source.offset"] != str(off):
            problems.append(f"{key!r}: source.offset {h['distillguard.source.offset']} "
                            f"(produced at {off})")
        log(f"dead letter {key.decode()}: reason={h['distillguard.reason']!r} "
            f"source={h['distillguard.source.topic']}/{h['distillguard.source.partition']}"
            f"@{h['distillguard.source.offset']} error={h.get('distillguard.error', '')[:100]!r}")
    extra = set(by_key) - set(dict(MALFORMED))
    if extra:
        problems.append(f"unexpected dead letters with keys {sorted(extra)[:5]}")
    return problems


def check_alert(m):
    """Problems with one alert message (JSON, contract fields, key == subject)."""
    try:
        a = json.loads(m.value())
    except ValueError as e:
        return None, [f"alert at {m.topic()}/{m.partition()}@{m.offset()} is not JSON: {e}"]
    if not isinstance(a, dict):
        return None, [f"alert at {m.partition()}@{m.offset()} is not an object"]
    problems = []
    missing = [f for f in ALERT_FIELDS if f not in a]
    if missing:
        problems.append(f"alert {a.get('alert_id')} lacks {missing}")
    key = (m.key() or b"").decode("utf-8", "replace")
    if key != a.get("subject"):
        problems.append(f"alert {a.get('alert_id')}: key {key!r} != subject {a.get('subject')!r}")
    if a.get("kind") not in ("bulk_extraction", "fake_account_cluster"):
        problems.append(f"alert {a.get('alert_id')}: kind {a.get('kind')!r}")
    score = a.get("score")
    if not isinstance(score, (int, float)) or not 0 <= score <= 1:
        problems.append(f"alert {a.get('alert_id')}: score {score!r}")
    if not a.get("accounts"):
        problems.append(f"alert {a.get('alert_id')}: no accounts")
    if b"prompt_text" in m.value():
        problems.append(f"alert {a.get('alert_id')} mentions prompt_text")
    return a, problems


def cmd_produce(args):
    """Produces, and records what the collect step needs to check in `--state`."""
    from confluent_kafka import Producer

    n_events, placed = produce(args, Producer)
    if len(placed) != len(MALFORMED):
        fail(f"delivery reports for malformed records: {placed}")
    state = {"events": n_events,
             "malformed": {k.decode(): list(v) for k, v in placed.items()}}
    if args.state:
        with open(args.state, "w") as f:
            json.dump(state, f)
    return state


def cmd_collect(args, state=None):
    """Reads alerts and dead letters until the service has processed everything and the
    alerts topic has been quiet for `--quiet` seconds; checks them; writes the alerts."""
    from confluent_kafka import Consumer, KafkaError

    if state is None:
        with open(args.state) as f:
            state = json.load(f)
    n_events = state["events"]
    placed = {k.encode(): tuple(v) for k, v in state["malformed"].items()}

    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"distillguard-e2e-reader-{int(time.time() * 1000)}",
        "client.id": "distillguard-e2e-reader",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([args.alerts_topic, args.dlq_topic])

    alerts_raw = []
    dead = []
    problems = []
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    last_alert = t0
    done_at = None
    next_scrape = 0.0
    counts = {}
    while True:
        now = time.monotonic()
        if now > deadline:
            log(f"timeout after {args.timeout}s; last metrics: {counts}")
            c.close()
            fail("the service did not process every record, or alerts kept coming")
        m = c.poll(0.5)
        if m is not None:
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    log(f"consumer error: {m.error()}")
            elif m.topic() == args.dlq_topic:
                dead.append(m)
            else:
                a, ps = check_alert(m)
                problems.extend(ps)
                if a is not None:
                    alerts_raw.append(m.value())
                last_alert = time.monotonic()
        if now >= next_scrape:
            next_scrape = now + 1.0
            samples = scrape(args.metrics_url)
            if samples is not None:
                counts = {
                    r: int(sample(samples, "distillguard_events_total", result=r) or 0)
                    for r in ("ok", "duplicate", "late", "out_of_range", "malformed")
                }
                counts["alerts_delivered"] = int(sample(samples, "distillguard_alerts_total") or 0)
                counts["dlq_delivered"] = int(sample(samples, "distillguard_dlq_messages_total") or 0)
                counts["pending"] = int(sample(samples, "distillguard_pending_deliveries") or 0)
                seen = sum(counts[r] for r in ("ok", "duplicate", "late", "out_of_range"))
                if done_at is None and seen >= n_events and counts["malformed"] >= len(MALFORMED):
                    done_at = time.monotonic()
                    log(f"service processed everything after {done_at - t0:.1f}s of reading: {counts}")
            if (done_at is not None and len(dead) >= len(MALFORMED)
                    and counts.get("pending", 1) == 0
                    and len(alerts_raw) >= counts.get("alerts_delivered", 0)
                    and now - max(done_at, last_alert) >= args.quiet):
                break
    c.close()

    log(f"read {len(alerts_raw)} alerts and {len(dead)} dead letters; "
        f"metrics {counts}")
    if counts.get("ok") != n_events:
        problems.append(f"events_total{{result=ok}} is {counts.get('ok')}, produced {n_events} "
                        f"(breakdown {counts})")
    if counts.get("malformed") != len(MALFORMED):
        problems.append(f"events_total{{result=malformed}} is {counts.get('malformed')}, "
                        f"want {len(MALFORMED)}")
    if counts.get("dlq_delivered") != len(MALFORMED):
        problems.append(f"dlq_messages_total is {counts.get('dlq_delivered')}, want {len(MALFORMED)}")
    # Consumers de-duplicate by alert_id, so one id must always mean the same alert: a
    # redelivered copy is fine, a different alert under an earlier id would be dropped.
    by_id = {}
    for raw in alerts_raw:
        a = json.loads(raw)
        by_id.setdefault(a.get("alert_id"), []).append(a)
    for i, same in by_id.items():
        if len(same) > 1:
            variants = {json.dumps(a, sort_keys=True) for a in same}
            if len(variants) > 1:
                problems.append(
                    f"alert_id {i} names {len(variants)} different alerts (subject {same[0]['subject']}, "
                    f"severities {[a['severity'] for a in same]}, detected_at {[a['detected_at'] for a in same]})")
            else:
                log(f"note: alert {i} was delivered {len(same)} times")
    if counts.get("alerts_delivered") != len(alerts_raw):
        problems.append(f"service says it delivered {counts.get('alerts_delivered')} alerts, "
                        f"the alerts topic has {len(alerts_raw)}")
    if not alerts_raw:
        problems.append("no alerts at all")
    problems.extend(check_dlq(dead, placed, args.input_topic))

    with open(args.alerts_out, "wb") as f:
        for raw in alerts_raw:
            f.write(raw.rstrip(b"\n") + b"\n")
    with open(args.stats_out, "w") as f:
        json.dump({"events": n_events, "alerts": len(alerts_raw), "dead_letters": len(dead),
                   "metrics": counts}, f)
    if problems:
        for p in problems[:30]:
            log(f"problem: {p}")
        fail(f"{len(problems)} problems")
    log(f"ok: {n_events} events in, {len(alerts_raw)} alerts and {len(dead)} dead letters out")


def cmd_read(args):
    """Reads every record on a topic from the beginning until none arrived for `--quiet`
    seconds; writes the values as lines."""
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"distillguard-e2e-reader-{int(time.time() * 1000)}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([args.topic])
    out = []
    t0 = last = time.monotonic()
    while time.monotonic() - last < args.quiet and time.monotonic() - t0 < args.timeout:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append(m.value())
        last = time.monotonic()
    c.close()
    with open(args.out, "wb") as f:
        for raw in out:
            f.write(raw.rstrip(b"\n") + b"\n")
    log(f"read {len(out)} records from {args.topic}")


def main():
    # Stop at once on SIGINT/SIGTERM (librdkafka calls would otherwise hold the signal back).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: os._exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port")
    s = sub.add_parser("wait-tcp")
    s.add_argument("host")
    s.add_argument("port", type=int)
    s.add_argument("secs", type=float)
    s = sub.add_parser("wait-http")
    s.add_argument("url")
    s.add_argument("secs", type=float)
    s = sub.add_parser("get")
    s.add_argument("url")
    s = sub.add_parser("metric")
    s.add_argument("url")
    s.add_argument("name")
    s.add_argument("labels", nargs="*", help="LABEL=VALUE")
    s = sub.add_parser("read")
    s.add_argument("--brokers", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--quiet", type=float, default=5.0)
    s.add_argument("--timeout", type=float, default=60.0)
    for name in ("produce", "collect", "e2e"):
        s = sub.add_parser(name)
        s.add_argument("--brokers", required=True)
        s.add_argument("--input-topic", default="llm-requests")
        s.add_argument("--state", help="produce writes, collect reads: events produced and "
                                       "where the malformed records went (JSON)")
        if name in ("produce", "e2e"):
            s.add_argument("--events", required=True, help="JSON Lines events to produce, in order")
            s.add_argument("--speedup", type=float, default=120.0,
                           help="produce in event-time order at this multiple of real time "
                                "(0: as fast as possible, a burst)")
            s.add_argument("--one-record-batches", action="store_true",
                           help="one record per batch (works around Tansu's mid-batch fetches)")
        if name in ("collect", "e2e"):
            s.add_argument("--alerts-topic", default="distillguard-alerts")
            s.add_argument("--dlq-topic", default="distillguard-dlq")
            s.add_argument("--metrics-url", required=True, help="the service's /metrics")
            s.add_argument("--alerts-out", required=True, help="where to write the alerts (JSON Lines)")
            s.add_argument("--stats-out", required=True, help="where to write counts (JSON)")
            s.add_argument("--quiet", type=float, default=10.0,
                           help="stop after this many seconds without a new alert once all is processed")
            s.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    if args.cmd == "collect" and not args.state:
        ap.error("collect needs --state (written by produce)")

    if args.cmd == "free-port":
        print(free_port())
    elif args.cmd == "wait-tcp":
        sys.exit(0 if wait_tcp(args.host, args.port, args.secs) else 1)
    elif args.cmd == "wait-http":
        sys.exit(0 if wait_http(args.url, args.secs) else 1)
    elif args.cmd == "get":
        status, body = http_get(args.url)
        sys.stdout.write(body)
        if status != 200:
            log(f"{args.url}: {status}")
            sys.exit(1)
    elif args.cmd == "metric":
        cmd_metric(args)
    elif args.cmd == "produce":
        cmd_produce(args)
    elif args.cmd == "collect":
        cmd_collect(args)
    elif args.cmd == "read":
        cmd_read(args)
    else:
        cmd_collect(args, cmd_produce(args))


if __name__ == "__main__":
    main()
