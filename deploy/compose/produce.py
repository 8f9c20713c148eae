#!/usr/bin/env python3
"""Feeds simulated request events (JSON Lines from `distillguard simulate`) to Kafka, as the
API gateway would, for the docker-compose stack.

    python3 produce.py --brokers kafka:9092 --topic llm-requests --input events.jsonl \
        [--speed 60] [--loop]

Event times are rebased so the first event is "now" and replayed at --speed event-time
seconds per wall-clock second. With --loop the file is replayed again and again, each pass
later in event time and with its own event ids, so passes are not dropped as late or
duplicate. Records are keyed by account_id (see deploy/OPERATIONS.md, "Scale-out").
Needs confluent-kafka (pip install confluent-kafka).
"""

import argparse
import json
import sys
import time
from datetime import datetime, timezone

from confluent_kafka import Producer


def to_ms(ts):
    """Contract `ts`: epoch milliseconds or RFC 3339 text."""
    if isinstance(ts, (int, float)):
        return int(ts)
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def to_rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--speed", type=float, default=60.0,
                    help="event-time seconds per wall-clock second")
    ap.add_argument("--loop", action="store_true", help="replay the file forever")
    args = ap.parse_args()

    with open(args.input, encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    if not events:
        sys.exit(f"{args.input}: no events")
    first = min(to_ms(e["ts"]) for e in events)
    span = max(to_ms(e["ts"]) for e in events) - first + 1000

    producer = Producer({
        "bootstrap.servers": args.brokers,
        "linger.ms": 20,
        "compression.type": "lz4",
        "enable.idempotence": True,
    })
    failed = []

    def on_delivery(err, _msg):
        if err:
            failed.append(err)

    wall_start = time.time()
    event_start = int(wall_start * 1000)
    sent = 0
    rounds = 0
    while True:
        base = event_start + rounds * span   # each pass continues where the last ended
        for e in events:
            offset_ms = to_ms(e["ts"]) - first
            due = wall_start + (rounds * span + offset_ms) / 1000 / args.speed
            delay = due - time.time()
            if delay > 0:
                producer.poll(min(delay, 0.5))
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            record = dict(e)
            record["ts"] = to_rfc3339(base + offset_ms)
            if rounds:
                record["event_id"] = f'{e["event_id"]}-r{rounds}'
            value = json.dumps(record, separators=(",", ":")).encode()
            while True:
                try:
                    producer.produce(args.topic, value=value,
                                     key=str(e["account_id"]).encode(), on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
            sent += 1
            if sent % 10000 == 0:
                producer.poll(0)
                print(f"produced {sent} events (pass {rounds + 1})", flush=True)
            if failed:
                sys.exit(f"delivery failed: {failed[0]}")
        rounds += 1
        if not args.loop:
            break
    producer.flush(30)
    print(f"produced {sent} events", flush=True)


if __name__ == "__main__":
    main()
