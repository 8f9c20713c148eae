//! The live allowlist and verdicts, through the real CLI against a running service: an entry
//! written with `distillguard allow` silences the next alert for its account within seconds
//! with no restart, `allow --list` reads it back, `allow --remove` brings the alerts back, a
//! verdict written with `distillguard verdict` is counted on /metrics (and, with
//! `verdicts.false_positive_allow_secs`, allowlists the alert's accounts), and malformed control
//! records go to the dead-letter topic while later entries still apply.

mod common;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use common::kafka::*;
use distillguard::alert::Alert;
use distillguard::kafka::Service;

const GROUP: &str = "g-control";
const LIVE: &str = "distillguard_allowlist_live_entries";
const MIN: i64 = 60_000;

/// `n` requests 5 s apart from `start`: fresh account, single-turn, reasoning-eliciting new
/// prompts with long answers. 150 of them make a bulk_extraction alert.
fn harvest(
    account: &str,
    start: i64,
    n: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<(String, Vec<u8>)> {
    const WORDS: &[&str] = &[
        "alpha", "beta", "gamma", "delta", "sigma", "omega", "river", "cloud", "engine", "vector",
        "matrix", "proof", "lemma", "graph", "prime", "field", "orbit", "tensor",
    ];
    (0..n)
        .map(|i| {
            let words: Vec<&str> = (0..8).map(|_| WORDS[rng.gen_range(0..WORDS.len())]).collect();
            let ev = serde_json::json!({
                "event_id": format!("{account}-{start}-{i}"),
                "ts": start + i as i64 * 5_000,
                "account_id": account,
                // Two days before the traffic (which is relative to the wall clock): a fresh
                // account whatever the date the test runs on.
                "account_created_at": distillguard::event::time::format_ms(start - 2 * 86_400_000),
                "ip": format!("10.{}.{}.{}", rng.gen_range(0..255), rng.gen_range(0..255), rng.gen_range(1..254)),
                "model": "m1",
                "input_tokens": 120,
                "output_tokens": 1800,
                "conversation_turns": 1,
                "prompt_text": format!("Explain step by step: {} {}", words.join(" "), rng.gen::<u32>()),
            });
            (account.to_string(), ev.to_string().into_bytes())
        })
        .collect()
}

/// Two streams merged by event time.
fn interleave(a: Vec<(String, Vec<u8>)>, b: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    a.into_iter().zip(b).flat_map(|(x, y)| [x, y]).collect()
}

fn cli(args: &[&str]) -> String {
    let out = common::bin()
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("distillguard runs");
    assert!(
        out.status.success(),
        "distillguard {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alerts(brokers: &str) -> Vec<Alert> {
    alerts_of(&read_topic(
        brokers,
        ALERTS,
        usize::MAX,
        Duration::from_millis(700),
    ))
}

fn names(alerts: &[Alert], account: &str) -> bool {
    alerts
        .iter()
        .any(|a| a.accounts.iter().any(|x| x == account))
}

/// Waits until every produced event was judged and nothing awaits delivery.
fn settle(ok_before: f64, produced: usize) -> bool {
    wait_for(Duration::from_secs(60), || {
        let s = scrape_now();
        metric(&s, "distillguard_events_total", "result=\"ok\"") - ok_before >= produced as f64
            && metric(&s, "distillguard_pending_deliveries", "") == 0.0
    })
}

#[test]
fn live_allowlist_silences_and_releases_without_restart_and_verdicts_are_counted() {
    let m = mock(1);
    let b = m.brokers.as_str();
    // Malformed control records already on the topic when the service starts.
    produce(
        b,
        CONTROL,
        &[
            ("account:acct-x".into(), b"not json".to_vec()),
            ("user:acct-x".into(), b"{}".to_vec()),
        ],
    );
    let mut c = config(b, GROUP);
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer_properties.insert(k.into(), v.into());
    }
    // The optional shortcut: a false_positive verdict allowlists the alert's accounts.
    c.verdicts.false_positive_allow_secs = 3600;
    let cfg = valid(c);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let base = distillguard::telemetry::now_ms() - 3 * 3_600_000;
    let phase1 = harvest("acct-1", base, 150, &mut rng);
    let phase2 = interleave(
        harvest("acct-2", base + 15 * MIN, 150, &mut rng),
        harvest("acct-3", base + 15 * MIN + 1_000, 150, &mut rng),
    );
    let phase3 = harvest("acct-2", base + 30 * MIN, 150, &mut rng);
    // The traffic alerts on every account when nothing is allowlisted.
    let all: Vec<_> = [&phase1, &phase2, &phase3]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let expected = replay_alerts(&all, cfg.clone());
    for a in ["acct-1", "acct-2", "acct-3"] {
        assert!(names(&expected, a), "replay alerts {a}: {expected:?}");
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // One service at a time: the metrics compared below are the process's.
    let _one = rt.block_on(exclusive());
    let ok0 = metric(&scrape_now(), "distillguard_events_total", "result=\"ok\"");
    let supp0 = metric(
        &scrape_now(),
        "distillguard_alerts_suppressed_total",
        "reason=\"allowlist\"",
    );
    let svc = rt.block_on(Service::start(cfg)).expect("service starts");
    assert!(
        wait_for(Duration::from_secs(60), || svc.is_ready()),
        "ready"
    );

    // Phase 1: an ordinary alert, for the verdict later.
    produce(b, INPUT, &phase1);
    assert!(
        wait_for(Duration::from_secs(60), || names(&alerts(b), "acct-1")),
        "acct-1 alerted"
    );
    let first = alerts(b)
        .into_iter()
        .find(|a| a.accounts == ["acct-1"])
        .expect("acct-1 alert");

    // Allowlist acct-2 while the service runs: in force within 5 s.
    let line = cli(&[
        "allow",
        "--brokers",
        b,
        "--account",
        "acct-2",
        "--reason",
        "vendor load test TS-9",
        "--expires",
        "7d",
        "--author",
        "tester",
    ]);
    let written = Instant::now();
    assert!(line.contains("\"subject\":\"acct-2\""), "{line}");
    assert!(
        wait_for(Duration::from_secs(5), || metric(&scrape_now(), LIVE, "")
            == 1.0),
        "entry in force within 5 s"
    );
    eprintln!("entry applied after {:?}", written.elapsed());
    let listed = cli(&["allow", "--brokers", b, "--list"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let entry: serde_json::Value = serde_json::from_str(listed.trim()).expect("JSON line");
    assert_eq!(entry["subject_kind"], "account");
    assert_eq!(entry["subject"], "acct-2");
    assert_eq!(entry["author"], "tester");

    // Phase 2: acct-2 and acct-3 harvest alike; only acct-3 is alerted.
    produce(b, INPUT, &phase2);
    assert!(
        wait_for(Duration::from_secs(60), || names(&alerts(b), "acct-3")),
        "acct-3 alerted"
    );
    assert!(settle(ok0, phase1.len() + phase2.len()), "phase 2 judged");
    assert!(!names(&alerts(b), "acct-2"), "acct-2 is allowlisted");
    let suppressed = metric(
        &scrape_now(),
        "distillguard_alerts_suppressed_total",
        "reason=\"allowlist\"",
    ) - supp0;
    assert!(suppressed > 0.0, "suppressions counted");

    // Remove it: acct-2's next harvest is alerted, still without a restart.
    cli(&["allow", "--brokers", b, "--remove", "--account", "acct-2"]);
    assert!(
        wait_for(Duration::from_secs(5), || metric(&scrape_now(), LIVE, "")
            == 0.0),
        "entry removed within 5 s"
    );
    assert_eq!(cli(&["allow", "--brokers", b, "--list"]).trim(), "");
    produce(b, INPUT, &phase3);
    assert!(
        wait_for(Duration::from_secs(60), || names(&alerts(b), "acct-2")),
        "acct-2 alerted again after the tombstone"
    );

    // A verdict on the first alert is counted by its kind and severity.
    let labels = format!(
        "kind=\"bulk_extraction\",severity=\"{}\",verdict=\"false_positive\"",
        first.severity
    );
    let v0 = metric(&scrape_now(), "distillguard_alert_verdicts_total", &labels);
    cli(&[
        "verdict",
        &first.alert_id,
        "false_positive",
        "--brokers",
        b,
        "--author",
        "ann",
    ]);
    assert!(
        wait_for(Duration::from_secs(30), || {
            metric(&scrape_now(), "distillguard_alert_verdicts_total", &labels) - v0 == 1.0
        }),
        "verdict counted: {}",
        scrape_now()
            .lines()
            .filter(|l| l.starts_with("distillguard_alert_verdicts_total") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_for(Duration::from_secs(5), || metric(&scrape_now(), LIVE, "")
            == 1.0),
        "the false positive's account allowlisted"
    );
    let listed = cli(&["allow", "--brokers", b, "--list"]);
    let entry: serde_json::Value = serde_json::from_str(listed.trim()).expect("one JSON line");
    assert_eq!(entry["subject"], "acct-1");
    assert_eq!(entry["author"], "verdict:ann");
    // A malformed verdict goes to the DLQ too.
    produce(
        b,
        VERDICTS,
        &[("x".into(), b"{\"alert_id\":\"x\"}".to_vec())],
    );

    // The malformed control records are dead-lettered with a reason; the topic kept flowing.
    let dlq = {
        let mut got = Vec::new();
        wait_for(Duration::from_secs(30), || {
            got = read_topic(b, DLQ, usize::MAX, Duration::from_millis(700));
            got.len() >= 3
        });
        got
    };
    let from = |topic: &str| -> Vec<&Record> {
        dlq.iter()
            .filter(|r| {
                r.headers
                    .get("distillguard.source.topic")
                    .map(String::as_str)
                    == Some(topic)
            })
            .collect()
    };
    let control = from(CONTROL);
    let reasons: Vec<&str> = control
        .iter()
        .map(|r| r.headers["distillguard.reason"].as_str())
        .collect();
    assert_eq!(reasons, ["not_json", "bad_key"], "{dlq:?}");
    assert_eq!(control[0].payload, b"not json");
    assert_eq!(control[0].headers["distillguard.source.offset"], "0");
    let verdicts = from(VERDICTS);
    assert_eq!(verdicts.len(), 1, "{dlq:?}");
    assert_eq!(verdicts[0].headers["distillguard.reason"], "missing_field");
    let s = scrape_now();
    assert_eq!(
        metric(
            &s,
            "distillguard_control_records_total",
            "topic=\"control\",result=\"malformed\""
        ),
        2.0
    );
    assert_eq!(
        metric(
            &s,
            "distillguard_control_records_total",
            "topic=\"control\",result=\"applied\""
        ),
        2.0,
        "acct-2 by hand, acct-1 by the verdict"
    );
    rt.block_on(svc.shutdown()).expect("clean shutdown");
}

/// A deployment that has not created the control and verdicts topics yet still starts at once
/// and judges events, on the static allowlist.
#[test]
fn service_runs_without_the_control_topics() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for t in [INPUT, ALERTS, DLQ] {
        cluster.create_topic(t, 1, 1).expect("topic");
    }
    let b = cluster.bootstrap_servers();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let events = harvest(
        "acct-9",
        distillguard::telemetry::now_ms() - 3_600_000,
        20,
        &mut rng,
    );
    produce(&b, INPUT, &events);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // One service at a time: the metrics compared below are the process's.
    let _one = rt.block_on(exclusive());
    let ok0 = metric(&scrape_now(), "distillguard_events_total", "result=\"ok\"");
    let t0 = Instant::now();
    let svc = rt
        .block_on(Service::start(valid(config(&b, "g-no-control"))))
        .expect("service starts");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "no wait for a missing control topic: {:?}",
        t0.elapsed()
    );
    assert!(settle(ok0, events.len()), "events judged");
    rt.block_on(svc.shutdown()).expect("clean shutdown");
}
