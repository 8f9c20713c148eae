use super::*;
use rng::SimRng;
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

fn family_events<'a>(
    sim: &'a Simulation,
    family: &str,
) -> BTreeMap<&'a str, Vec<&'a RequestEventJson<'static>>> {
    let members: BTreeSet<&str> = sim
        .labels
        .iter()
        .filter(|l| l.family == family)
        .map(|l| l.account_id.as_str())
        .collect();
    let mut by: BTreeMap<&str, Vec<&RequestEventJson<'static>>> = BTreeMap::new();
    for e in &sim.events {
        let a = e.account_id.as_deref().expect("account");
        if members.contains(a) {
            by.entry(a).or_default().push(e);
        }
    }
    by
}

fn opts(scenario: &str, seed: u64, scale: f64, hours: f64) -> SimOptions {
    SimOptions {
        scenario: scenario.to_string(),
        seed,
        scale,
        hours,
        ..SimOptions::default()
    }
}

#[test]
fn scenarios_partition_the_families() {
    for f in CLASSIC_FAMILIES.iter().chain(EVASIVE_FAMILIES) {
        assert!(
            BENIGN_FAMILIES.contains(f) || ATTACK_FAMILIES.contains(f),
            "{f}"
        );
    }
    for f in ATTACK_FAMILIES {
        assert!(
            CLASSIC_FAMILIES.contains(f) != EVASIVE_FAMILIES.contains(f),
            "{f} is in exactly one suite"
        );
    }
    for f in [
        "quickstart_crowd",
        "hackathon",
        "app_backend",
        "classroom",
        "eval_run",
        "cgnat",
        "enterprise",
    ] {
        assert!(EVASIVE_FAMILIES.contains(&f), "{f}");
    }
    let sim = generate(&small("evasive", 4)).expect("gen");
    let fams: BTreeSet<&str> = sim.labels.iter().map(|l| l.family.as_str()).collect();
    assert!(
        fams.iter().all(|f| EVASIVE_FAMILIES.contains(f)),
        "{fams:?}"
    );
    let a = bytes(&sim);
    assert!(
        a == bytes(&generate(&small("evasive", 4)).expect("gen")),
        "deterministic"
    );
}

/// Docs copies are byte-identical across unrelated accounts on unrelated networks.
#[test]
fn quickstart_prompts_are_exact_copies() {
    for seed in [1, 2] {
        let sim = generate(&opts("quickstart_crowd", seed, 0.3, 6.0)).expect("gen");
        let by = family_events(&sim, "quickstart_crowd");
        assert!(by.len() >= 25, "{}", by.len());
        let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut nets = BTreeSet::new();
        for (a, evs) in &by {
            // Every account's first request is a docs example.
            let p = evs[0].prompt_text.as_deref().expect("p");
            users.entry(p).or_default().insert(a);
            nets.insert(evs[0].ip.as_deref().expect("ip"));
            assert!(
                evs.iter()
                    .filter(|e| e.prompt_text.as_deref() == Some(p))
                    .count()
                    >= 1
            );
        }
        assert!(users.len() <= 6, "{} distinct first prompts", users.len());
        let top = users.values().map(BTreeSet::len).max().expect("some");
        assert!(
            top * 10 >= by.len(),
            "a docs prompt is shared by many accounts"
        );
        assert!(nets.len() * 10 >= by.len() * 9, "scattered networks");
        assert!(users.keys().any(|p| p.contains("step by step")));
    }
}

/// Reworded prompts share no template skeleton: no instruction-word opening or closing (the
/// fingerprint's `template` and `template_tail`) recurs in more than a small share of them,
/// whereas a campaign scaffold repeats its own in every request.
#[test]
fn paraphrases_defeat_template_skeletons() {
    use crate::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
    let f = Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon");
    let mut rng = SimRng::seed_from_u64(9);
    let n = 2000;
    let mut heads: BTreeMap<u64, usize> = BTreeMap::new();
    let mut tails: BTreeMap<u64, usize> = BTreeMap::new();
    let mut texts = BTreeSet::new();
    let mut reasoning = 0;
    for _ in 0..n {
        let p = paraphrase::reasoning_prompt(&mut rng);
        let fp = f.fingerprint(&p);
        if fp.template != 0 {
            *heads.entry(fp.template).or_default() += 1;
        }
        if fp.template_tail != 0 {
            *tails.entry(fp.template_tail).or_default() += 1;
        }
        reasoning += usize::from(fp.reasoning);
        texts.insert(p);
    }
    assert_eq!(texts.len(), n, "no two reworded prompts are identical");
    let top_head = heads.values().max().copied().unwrap_or(0);
    let top_tail = tails.values().max().copied().unwrap_or(0);
    assert!(top_head * 100 <= n, "a head skeleton recurs {top_head}/{n}");
    assert!(top_tail * 100 <= n, "a tail skeleton recurs {top_tail}/{n}");
    // Some rewordings still say "step by step"; many avoid every stock phrase.
    assert!(
        reasoning > n / 20 && reasoning < n * 9 / 10,
        "{reasoning}/{n}"
    );

    // A campaign scaffold, by contrast, keeps one end of its skeleton in most requests.
    let mut kept = 0;
    for _ in 0..10 {
        let s = prompts::Scaffold::random(&mut rng);
        let mut heads: BTreeMap<u64, usize> = BTreeMap::new();
        let mut tails: BTreeMap<u64, usize> = BTreeMap::new();
        for _ in 0..50 {
            let fp = f.fingerprint(&s.render(&mut rng, true));
            *heads.entry(fp.template).or_default() += usize::from(fp.template != 0);
            *tails.entry(fp.template_tail).or_default() += usize::from(fp.template_tail != 0);
        }
        let top = heads
            .values()
            .chain(tails.values())
            .max()
            .copied()
            .unwrap_or(0);
        kept += usize::from(top >= 25);
    }
    assert!(kept >= 7, "{kept} of 10 scaffolds keep a skeleton");
}

/// Behind a rotating proxy every request comes from a new address; every account has its own
/// prepaid card and a popular (shared) device fingerprint.
#[test]
fn rotating_hydra_rotates() {
    let sim = generate(&opts("rotating_hydra", 3, 0.3, 3.0)).expect("gen");
    let by = family_events(&sim, "rotating_hydra");
    assert!(by.len() >= 4);
    let mut ips = BTreeSet::new();
    let mut n = 0usize;
    let mut cards = BTreeSet::new();
    let mut devices: BTreeMap<&str, usize> = BTreeMap::new();
    let mut asns = BTreeSet::new();
    for evs in by.values() {
        let card = evs[0].payment_fingerprint.as_deref().expect("card");
        assert!(cards.insert(card), "a card per account");
        *devices
            .entry(evs[0].device_fingerprint.as_deref().expect("fp"))
            .or_default() += 1;
        for e in evs {
            n += 1;
            ips.insert(e.ip.as_deref().expect("ip"));
            asns.insert(e.asn.expect("asn"));
        }
    }
    assert!(n > 200, "{n}");
    assert!(
        ips.len() * 100 >= n * 99,
        "{} addresses for {n} requests",
        ips.len()
    );
    assert!(asns.len() >= 10, "{} ASNs", asns.len());
    assert!(
        devices.len() <= 12 && devices.len() < by.len(),
        "spoofed popular fingerprints"
    );
}

/// Waves: most requests of a timing-lockstep campaign have another member's request within a
/// few seconds, while members share no network.
#[test]
fn timing_lockstep_fires_in_waves() {
    let sim = generate(&opts("timing_lockstep", 5, 0.2, 2.0)).expect("gen");
    let by = family_events(&sim, "timing_lockstep");
    let mut times: Vec<(i64, &str)> = Vec::new();
    let mut nets: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, evs) in &by {
        for e in evs {
            times.push((ts_ms(&e.ts), a));
            *nets.entry(e.ip.as_deref().expect("ip")).or_default() += 0;
        }
    }
    times.sort();
    let close = times
        .iter()
        .enumerate()
        .filter(|(i, (t, a))| {
            let near = |j: usize| {
                let (u, b) = times[j];
                (u - t).abs() <= 6 * SEC && b != *a
            };
            (*i > 0 && near(i - 1)) || (i + 1 < times.len() && near(i + 1))
        })
        .count();
    assert!(times.len() > 50, "{}", times.len());
    assert!(close * 10 >= times.len() * 9, "{close}/{}", times.len());
    assert!(nets.len() * 10 >= by.len() * 9, "scattered networks");
}

/// Scheduled jobs of unrelated accounts start together on the round minutes, run after run.
#[test]
fn scheduled_jobs_start_together_on_the_clock() {
    let sim = generate(&opts("scheduled_jobs", 3, 1.0, 3.0)).expect("gen");
    let by = family_events(&sim, "scheduled_jobs");
    assert!(by.len() >= 20, "{} accounts", by.len());
    let mut on_the_quarter = 0;
    let mut runs = 0;
    for evs in by.values() {
        let mut times: Vec<i64> = evs.iter().map(|e| ts_ms(&e.ts)).collect();
        times.sort_unstable();
        // A run starts after a quiet spell, within seconds of a minute's start.
        let starts: Vec<i64> = times
            .iter()
            .enumerate()
            .filter(|&(i, &t)| i == 0 || t - times[i - 1] > 5 * MIN)
            .map(|(_, &t)| t)
            .collect();
        for t in &starts {
            assert!(t.rem_euclid(60 * SEC) < 5 * SEC, "{t}");
        }
        runs += starts.len();
        on_the_quarter += starts
            .iter()
            .filter(|t| t.div_euclid(60 * SEC).rem_euclid(15) == 0)
            .count();
        let nets: BTreeSet<&str> = evs.iter().map(|e| e.ip.as_deref().expect("ip")).collect();
        assert_eq!(nets.len(), 1, "one server");
    }
    assert!(runs >= by.len() * 3, "{runs} runs");
    assert!(
        on_the_quarter * 2 >= runs,
        "{on_the_quarter} of {runs} on the quarter hour"
    );
}

/// Slow takeovers stay on the owner's device and network at 0.1-0.2 requests/s.
#[test]
fn slow_takeover_keeps_owner_device() {
    let sim = generate(&opts("slow_takeover", 6, 0.5, 6.0)).expect("gen");
    let by = family_events(&sim, "slow_takeover");
    assert!(!by.is_empty());
    let starts: BTreeMap<&str, i64> = sim
        .labels
        .iter()
        .filter_map(|l| Some((l.account_id.as_str(), parse(l.attack_start.as_deref()?))))
        .collect();
    for (a, evs) in &by {
        let devs: BTreeSet<&str> = evs
            .iter()
            .filter_map(|e| e.device_fingerprint.as_deref())
            .collect();
        assert_eq!(devs.len(), 1, "{a}: one device");
        let ips: BTreeSet<&str> = evs.iter().filter_map(|e| e.ip.as_deref()).collect();
        assert!(ips.len() <= 2, "{a}: the owner's networks");
        let s = starts[a];
        let after: Vec<i64> = evs
            .iter()
            .map(|e| ts_ms(&e.ts))
            .filter(|t| *t >= s)
            .collect();
        let span = (after[after.len() - 1] - s) as f64 / 1000.0;
        if span > 1800.0 {
            let rate = after.len() as f64 / span;
            assert!((0.08..0.3).contains(&rate), "{a}: {rate} req/s");
        }
    }
}

/// Group sizes are drawn per seed over wide ranges: classes of 5-200 students, quickstart
/// crowds of 100-500 accounts, and the sizes differ between seeds.
#[test]
fn sizes_drawn_per_seed() {
    let mut class_sizes = BTreeSet::new();
    let mut crowd_sizes = BTreeSet::new();
    for seed in 1..=6 {
        let sim = generate(&opts("classroom", seed, 1.0, 0.5)).expect("gen");
        let n = sim
            .labels
            .iter()
            .filter(|l| l.family == "classroom")
            .count();
        assert!((4..=600).contains(&n), "classroom {n}");
        class_sizes.insert(n);
        let sim = generate(&opts("quickstart_crowd", seed, 1.0, 0.25)).expect("gen");
        let n = sim
            .labels
            .iter()
            .filter(|l| l.family == "quickstart_crowd")
            .count();
        assert!((100..=500).contains(&n), "quickstart {n}");
        crowd_sizes.insert(n);
    }
    assert!(class_sizes.len() >= 5 && crowd_sizes.len() >= 5);
}

/// Every student of a class starts from the same handout, most pasting it verbatim.
#[test]
fn classroom_shares_the_handout() {
    let sim = generate(&opts("classroom", 2, 0.5, 6.0)).expect("gen");
    let by = family_events(&sim, "classroom");
    let mut firsts: BTreeMap<&str, usize> = BTreeMap::new();
    for evs in by.values() {
        *firsts
            .entry(evs[0].prompt_text.as_deref().expect("p"))
            .or_default() += 1;
    }
    let top = firsts.values().max().copied().expect("some");
    assert!(top >= 3 && top * 3 >= by.len() / 3, "{top} of {}", by.len());
    let most = firsts.iter().max_by_key(|(_, n)| **n).expect("top").0;
    assert!(most.to_lowercase().contains("step"), "{most}");
}

/// Evaluation runs: 0.1-0.5 requests/s for 1-3 hours.
#[test]
fn eval_run_rate_and_length() {
    let sim = generate(&opts("eval_run", 8, 0.05, 6.0)).expect("gen");
    let by = family_events(&sim, "eval_run");
    for (a, evs) in &by {
        let bench: Vec<i64> = evs
            .iter()
            .filter(|e| {
                e.prompt_text.as_deref().is_some_and(|p| {
                    p.contains("Let's think step by step") || p.contains("Think step by step, then")
                })
            })
            .map(|e| ts_ms(&e.ts))
            .collect();
        let n = bench.len() as f64;
        assert!(
            (0.1 * 3600.0 * 0.8..=0.5 * 3.0 * 3600.0 * 1.2).contains(&n),
            "{a}: {n}"
        );
    }
}
