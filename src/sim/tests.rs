use super::*;
use std::collections::{BTreeMap, BTreeSet};

fn small(scenario: &str, seed: u64) -> SimOptions {
    SimOptions {
        scenario: scenario.to_string(),
        seed,
        scale: 0.05,
        hours: 1.5,
        ..SimOptions::default()
    }
}

fn bytes(sim: &Simulation) -> (Vec<u8>, Vec<u8>) {
    let (mut e, mut l) = (Vec::new(), Vec::new());
    write_jsonl(sim, &mut e, &mut l).expect("write to memory");
    (e, l)
}

fn ts_ms(t: &Option<JsonTime>) -> i64 {
    match t {
        Some(JsonTime::Text(s)) => parse(s),
        other => panic!("expected text time, got {other:?}"),
    }
}

fn parse(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .expect("rfc3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[test]
fn timestamp_format() {
    assert_eq!(
        fmt_ts(DEFAULT_START_MS).as_str(),
        "2026-11-02T00:00:00.000Z"
    );
    assert_eq!(fmt_ts(0).as_str(), "1970-01-01T00:00:00.000Z");
    assert_eq!(fmt_ts(951_782_400_123).as_str(), "2000-02-29T00:00:00.123Z");
    assert_eq!(fmt_ts(-1).as_str(), "1969-12-31T23:59:59.999Z");
    for ms in [1_793_577_600_000i64, 1_700_000_000_001, 1_234_567_890_999] {
        assert_eq!(parse(&fmt_ts(ms)), ms);
    }
}

#[test]
fn deterministic_and_seed_sensitive() {
    let a = bytes(&generate(&small("all", 7)).expect("gen"));
    let b = bytes(&generate(&small("all", 7)).expect("gen"));
    assert!(a == b, "same seed must give identical bytes");
    let c = bytes(&generate(&small("all", 8)).expect("gen"));
    assert!(a.0 != c.0 && a.1 != c.1);
}

#[test]
fn bad_options() {
    let mut o = small("nope", 1);
    match generate(&o) {
        Err(SimError::UnknownScenario(_, valid)) => assert!(valid.contains("hydra")),
        other => panic!("expected unknown scenario, got {:?}", other.err()),
    }
    o.scenario = "all".into();
    o.scale = 0.0;
    assert!(matches!(generate(&o), Err(SimError::BadScale(_))));
    o.scale = 1.0;
    o.hours = f64::NAN;
    assert!(matches!(generate(&o), Err(SimError::BadHours(_))));
}

#[test]
fn every_family_generates_events() {
    for name in BENIGN_FAMILIES.iter().chain(ATTACK_FAMILIES) {
        let sim = generate(&small(name, 3)).expect("gen");
        let n = sim.labels.iter().filter(|l| l.family == *name).count();
        assert!(n > 0, "{name} produced no accounts");
        let fams: BTreeSet<&str> = sim.labels.iter().map(|l| l.family.as_str()).collect();
        assert!(
            fams.iter().all(|f| *f == *name || *f == "ordinary"),
            "{name}: {fams:?}"
        );
    }
    let names = scenario_names();
    assert!(names.contains(&"all") && names.contains(&"benign") && names.contains(&"attacks"));
}

#[test]
fn labels_events_consistency() {
    let sim = generate(&small("all", 11)).expect("gen");
    assert!(!sim.events.is_empty());
    let start = DEFAULT_START_MS;
    let end = start + (1.5 * HOUR as f64) as i64;
    let labels: BTreeMap<&str, &Label> = sim
        .labels
        .iter()
        .map(|l| (l.account_id.as_str(), l))
        .collect();
    let sorted: Vec<&str> = sim.labels.iter().map(|l| l.account_id.as_str()).collect();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "labels sorted and unique"
    );

    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    let mut prev = (i64::MIN, String::new());
    for e in &sim.events {
        let acct = e.account_id.as_deref().expect("account");
        let ts = ts_ms(&e.ts);
        assert!((start..end).contains(&ts));
        let id = e.event_id.as_deref().expect("id").to_string();
        assert!(
            ts > prev.0 || (ts == prev.0 && id > prev.1),
            "sorted by ts then id"
        );
        prev = (ts, id.clone());
        assert!(ids.insert(id), "unique event ids");
        assert!(labels.contains_key(acct), "label for {acct}");
        seen.insert(acct);
        first.entry(acct).or_insert(ts);
        assert!(ts_ms(&e.account_created_at) <= ts, "created before use");
        let p = e.prompt_text.as_deref().expect("prompt");
        assert!(p.split_whitespace().count() >= 1);
        assert!(matches!(e.status, Some(200 | 429 | 500)));
        assert_eq!(e.endpoint.as_deref(), Some("/v1/messages"));
    }
    assert_eq!(
        seen.len(),
        sim.labels.len(),
        "labels cover exactly the accounts in events"
    );

    let fams: BTreeSet<&str> = sim.labels.iter().map(|l| l.family.as_str()).collect();
    for f in BENIGN_FAMILIES.iter().chain(ATTACK_FAMILIES) {
        assert!(fams.contains(f), "family {f} missing from 'all'");
    }
    for l in &sim.labels {
        assert_eq!(l.attack, ATTACK_FAMILIES.contains(&l.family.as_str()));
        assert_eq!(l.attack, l.attack_start.is_some());
        if let Some(s) = &l.attack_start {
            // Attack start is the first attack request: never before the first event.
            assert!(parse(s) >= first[l.account_id.as_str()]);
        }
    }
    // attack_start must be at or before the first *attack-looking* event: check directly that
    // some event of the account has exactly that timestamp.
    let mut at: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for e in &sim.events {
        at.entry(e.account_id.as_deref().expect("a"))
            .or_default()
            .insert(ts_ms(&e.ts));
    }
    for l in sim.labels.iter().filter(|l| l.attack) {
        let s = parse(l.attack_start.as_deref().expect("start"));
        assert!(at[l.account_id.as_str()].contains(&s));
    }
}

#[test]
fn identifiers_do_not_leak_family() {
    let sim = generate(&small("all", 5)).expect("gen");
    let names: Vec<&str> = BENIGN_FAMILIES
        .iter()
        .chain(ATTACK_FAMILIES)
        .copied()
        .collect();
    let leaks = |s: &str| names.iter().any(|n| s.contains(n));
    for e in &sim.events {
        for s in [
            e.account_id.as_deref(),
            e.org_id.as_deref(),
            e.device_fingerprint.as_deref(),
            e.payment_fingerprint.as_deref(),
            e.ip.as_deref(),
            e.user_agent.as_deref(),
            e.email_domain.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(!leaks(s), "identifier {s} names a family");
        }
        let id = e.account_id.as_deref().expect("id");
        assert!(id.starts_with("acct_") && id.len() == 15);
    }
}

#[test]
fn newest_model_only_after_release() {
    let sim = generate(&small("all", 2)).expect("gen");
    let m3: Vec<i64> = sim
        .events
        .iter()
        .filter(|e| e.model.as_deref() == Some("frontier-3"))
        .map(|e| ts_ms(&e.ts))
        .collect();
    let first_ts = ts_ms(&sim.events[0].ts);
    if let Some(min) = m3.iter().min() {
        assert!(*min > first_ts);
    }
}

#[test]
fn attack_prompts_elicit_reasoning() {
    let sim = generate(&small("attacks", 4)).expect("gen");
    let attack: BTreeSet<&str> = sim
        .labels
        .iter()
        .filter(|l| l.attack)
        .map(|l| l.account_id.as_str())
        .collect();
    let phrases = [
        "step by step",
        "reasoning",
        "show all your work",
        "chain of thought",
        "chain-of-thought",
        "reason carefully",
        "walk through each step",
        "intermediate step",
    ];
    let has = |p: &str| {
        let p = p.to_lowercase();
        phrases.iter().any(|x| p.contains(x))
    };
    let (mut n_att, mut r_att, mut n_ben, mut r_ben) = (0usize, 0usize, 0usize, 0usize);
    for e in &sim.events {
        let p = e.prompt_text.as_deref().expect("p");
        if e.conversation_turns == Some(1) && attack.contains(e.account_id.as_deref().expect("a")) {
            n_att += 1;
            r_att += usize::from(has(p));
        } else if !attack.contains(e.account_id.as_deref().expect("a")) {
            n_ben += 1;
            r_ben += usize::from(has(p));
        }
    }
    assert!(n_att > 100 && r_att * 100 / n_att >= 70, "{r_att}/{n_att}");
    assert!(n_ben > 100 && r_ben * 100 / n_ben <= 15, "{r_ben}/{n_ben}");
}
