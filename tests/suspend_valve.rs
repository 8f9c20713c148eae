//! The suspension safety valve (`alerts.max_suspend_per_hour`): past the cap, alerts that
//! would recommend `suspend` still reach the alerts topic, as `throttle` and marked, and are
//! counted; `replay` with the valve engaged stays byte-for-byte deterministic.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::*;
use distillguard::alert::{Action, Alert, Severity};
use distillguard::config::Config;
use distillguard::kafka::Service;

const T0: i64 = 1_793_577_600_000; // 2026-11-02T00:00:00Z
const HARVESTERS: u64 = 10;
const REQUESTS: u64 = 600;

const WORDS: &[&str] = &[
    "matrix",
    "river",
    "prime",
    "engine",
    "orbit",
    "ledger",
    "protein",
    "voltage",
    "sonnet",
    "glacier",
    "compiler",
    "tariff",
    "enzyme",
    "lattice",
    "harbor",
    "quantum",
    "census",
    "mortgage",
    "pendulum",
    "vaccine",
    "syntax",
    "meridian",
    "catalyst",
    "theorem",
    "monsoon",
    "bridge",
    "vector",
    "parable",
    "alloy",
    "frontier",
    "sediment",
    "algorithm",
    "cathedral",
    "inflation",
    "neuron",
    "trellis",
    "comet",
    "dialect",
    "reservoir",
    "axiom",
];

/// JSON lines of ten single-account harvesters, each on its own network and device, each
/// sending new reasoning prompts every 2 s from its own start, two minutes after the last.
fn ten_harvesters() -> Vec<(String, Vec<u8>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut lines = Vec::new();
    for i in 0..REQUESTS {
        for h in 0..HARVESTERS {
            let ts = T0 + h as i64 * 120_000 + i as i64 * 2_000;
            let topic: Vec<&str> = (0..12)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let account = format!("acct_h{h}");
            let event = serde_json::json!({
                "event_id": format!("h{h}-{i}"),
                "ts": ts,
                "account_id": account,
                "account_created_at": "2026-10-31T00:00:00Z",
                "ip": format!("10.{h}.0.1"),
                "device_fingerprint": format!("dev-{h}"),
                "model": "m1",
                "input_tokens": 200,
                "output_tokens": 1500,
                "conversation_turns": 1,
                "prompt_text": format!(
                    "Problem {}: relate {}. Explain your reasoning step by step.",
                    next() % 1_000_000,
                    topic.join(" ")
                ),
            });
            lines.push((
                account,
                serde_json::to_vec(&event).expect("an event renders"),
            ));
        }
    }
    lines.sort_by_key(|(_, l)| {
        let v: serde_json::Value = serde_json::from_slice(l).expect("json");
        v["ts"].as_i64().expect("ts")
    });
    lines
}

/// The detectors that matter here: bulk extraction alone (clusters would link the harvesters
/// by their shared prompt template and add alerts of their own).
fn valve_config(brokers: &str, cap: u32) -> Config {
    let mut c = config(brokers, "g-valve");
    c.cluster.enabled = false;
    c.cohort.enabled = false;
    c.alerts.max_suspend_per_hour = cap;
    c.alerts.max_suspend_per_hour_bulk = 0;
    c.alerts.max_suspend_per_hour_cluster = 0;
    c
}

fn suspended(alerts: &[Alert]) -> BTreeSet<String> {
    alerts
        .iter()
        .filter(|a| a.recommended_action == Action::Suspend)
        .map(|a| a.subject.clone())
        .collect()
}

fn rate_limited(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.evidence["rate_limited"] == true)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_suspend_alerts_arrive_as_marked_throttles() {
    let _one = exclusive().await;
    let m = mock(2);
    let lines = ten_harvesters();
    let uncapped = replay_alerts(&lines, valid(valve_config(&m.brokers, 0)));
    assert_eq!(
        suspended(&uncapped).len(),
        HARVESTERS as usize,
        "without a cap every harvester is recommended suspend"
    );
    let cfg = valid(valve_config(&m.brokers, 3));
    let expected = replay_alerts(&lines, cfg.clone());
    produce(&m.brokers, INPUT, &lines);

    let before = scrape_now();
    let svc = Service::start(cfg).await.expect("service starts");
    let brokers = m.brokers.clone();
    let want = expected.len();
    let got = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, ALERTS, want, Duration::from_secs(60))
    })
    .await
    .expect("reader");
    let after = scrape_now();
    svc.shutdown().await.expect("clean shutdown");

    let got = alerts_of(&got);
    assert_eq!(got.len(), expected.len(), "every alert arrives: {got:#?}");
    let held: BTreeSet<String> = suspended(&got);
    assert_eq!(held.len(), 3, "three subjects suspended: {held:?}");
    let limited = rate_limited(&got);
    assert_eq!(limited.len(), 7, "seven downgraded: {limited:#?}");
    for a in &limited {
        assert_eq!(a.recommended_action, Action::Throttle);
        assert_eq!(a.severity, Severity::High);
        assert!(
            !held.contains(&a.subject),
            "a withheld subject is not suspended"
        );
        assert_eq!(a.evidence["rate_limit"]["cap"], 3);
        assert_eq!(a.evidence["rate_limit"]["suspended_subjects_in_hour"], 3);
        assert_eq!(
            a.evidence["rate_limit"]["cap_key"],
            "alerts.max_suspend_per_hour"
        );
    }
    assert_eq!(
        held,
        suspended(&expected),
        "the service's valve is replay's"
    );
    let limited_subjects =
        |v: &[&Alert]| -> BTreeSet<String> { v.iter().map(|a| a.subject.clone()).collect() };
    assert_eq!(
        limited_subjects(&limited),
        limited_subjects(&rate_limited(&expected))
    );
    let series = "kind=\"bulk_extraction\"";
    let counted = metric(&after, "distillguard_alerts_rate_limited_total", series)
        - metric(&before, "distillguard_alerts_rate_limited_total", series);
    assert_eq!(counted, 7.0, "counted by kind");
}

#[test]
fn replay_with_the_valve_engaged_is_byte_for_byte_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let mut input = Vec::new();
    for (_, l) in ten_harvesters() {
        input.extend_from_slice(&l);
        input.push(b'\n');
    }
    std::fs::write(&events, input).expect("write events");
    let cfg = dir.path().join("valve.toml");
    std::fs::write(
        &cfg,
        "[cluster]\nenabled = false\n[alerts]\nmax_suspend_per_hour = 3\n\
         max_suspend_per_hour_bulk = 0\nmax_suspend_per_hour_cluster = 0\n",
    )
    .expect("write config");
    let run = |name: &str| {
        let out = dir.path().join(name);
        common::ok(&[
            "replay",
            "--input",
            common::s(&events),
            "--output",
            common::s(&out),
            "--config",
            common::s(&cfg),
        ]);
        std::fs::read(out).expect("alerts written")
    };
    let first = run("a.jsonl");
    let second = run("b.jsonl");
    assert!(first == second, "two replays differ");
    let alerts: Vec<Alert> = first
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("alert json"))
        .collect();
    assert_eq!(suspended(&alerts).len(), 3);
    assert_eq!(rate_limited(&alerts).len(), 7);
}
