//! Behaviour of the engine as a user would notice it, on hand-built traffic.

use super::*;
use crate::config::{AllowEntry, Config};
use crate::fingerprint::PromptFingerprint;

const T0: i64 = 1_793_577_600_000; // 2026-11-02T00:00:00Z
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn engine_with(cfg: Config) -> Engine {
    Engine::new(Arc::new(cfg.validate().expect("valid config")))
}

fn engine() -> Engine {
    engine_with(Config::default())
}

/// An engine on the default configuration as `edit` changes it.
fn engine_where(edit: impl FnOnce(&mut Config)) -> Engine {
    let mut cfg = Config::default();
    edit(&mut cfg);
    engine_with(cfg)
}

fn mix(x: u64) -> u64 {
    xxh3_64(&x.to_le_bytes())
}

/// A single-turn, reasoning-eliciting, templated request with a long answer.
fn extraction(id: u64, ts: i64, account: &str) -> Event {
    let mut e = Event::new(&format!("e{id}"), ts, account);
    e.account_created_ms = Some(ts - 2 * DAY);
    e.input_tokens = 200;
    e.output_tokens = 1500;
    e.prompt = PromptFingerprint {
        simhash: mix(id),
        template: 0xabc,
        template_tail: 0,
        reasoning: true,
        scaffold: 9,
        text: true,
    };
    e
}

/// A turn of a human chat session.
fn chat(id: u64, ts: i64, account: &str, turn: u32) -> Event {
    let mut e = Event::new(&format!("c{id}"), ts, account);
    e.account_created_ms = Some(ts - 400 * DAY);
    e.conversation_turns = turn;
    e.input_tokens = 300 * turn;
    e.output_tokens = 400;
    e.prompt = PromptFingerprint {
        simhash: mix(id + 1_000_000),
        template: mix(id) | 1,
        template_tail: 0,
        reasoning: id % 10 == 0,
        scaffold: 2,
        text: true,
    };
    e
}

/// The `fake_account_cluster` alerts among `alerts`.
fn cluster_alerts(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .collect()
}

/// The signal `name` of an alert's evidence, if it carries one.
fn signal<'a>(alert: &'a Alert, name: &str) -> Option<&'a serde_json::Value> {
    alert.evidence["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["name"] == name)
}

/// Asserts that `alert` was raised at most `minutes` after `start` (event time).
fn assert_within(alert: &Alert, start: i64, minutes: i64) {
    let detected = crate::event::time::parse_rfc3339_ms(&alert.detected_at).expect("ts");
    assert!(
        detected - start <= minutes * MIN,
        "took {} min",
        (detected - start) / MIN
    );
}

fn run(engine: &mut Engine, events: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        engine.process(e, &mut out);
    }
    out
}

/// Simulated traffic, decoded as the engine takes it, and its labels.
fn simulated(opts: crate::sim::SimOptions) -> (Vec<Event>, Vec<crate::sim::Label>) {
    crate::sim::decoded(&opts)
}

#[test]
fn harvester_is_caught_within_fifteen_minutes_with_evidence() {
    let mut eng = engine();
    let events: Vec<Event> = (0..900)
        .map(|i| extraction(i, T0 + i as i64 * 2_000, "acct_h"))
        .collect();
    let alerts = run(&mut eng, &events);
    let first = alerts
        .iter()
        .find(|a| a.kind == Kind::BulkExtraction)
        .expect("a bulk alert");
    assert_eq!(first.accounts, vec!["acct_h".to_string()]);
    assert_eq!(first.subject, "acct_h");
    assert_within(first, T0, 15);
    assert!(signal(first, "reasoning_prompt_share").is_some_and(|s| s["crossed"] == true));
    assert!(!first.evidence["example_event_ids"]
        .as_array()
        .expect("ids")
        .is_empty());
    // Repeats are suppressed: at most one alert per tier.
    assert!(
        alerts
            .iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .count()
            <= 3
    );
    let last = alerts.last().expect("alerts");
    assert_eq!(
        last.recommended_action,
        crate::alert::Action::Suspend,
        "sustained harvesting escalates"
    );
}

/// A fresh account harvesting 45 new reasoning prompts an hour, under `bulk.min_harvest_fresh`,
/// each request through a rotating residential proxy (an exit on another ISP every time) is
/// alerted within the hour, and the alert names the rotation; the same account on one home
/// network, or a backend spread over three clouds, is not.
#[test]
fn a_harvester_behind_a_rotating_proxy_is_judged_at_a_lower_volume() {
    let alerts_for = |networks: u32| {
        let mut eng = engine();
        let events: Vec<Event> = (0..45u32)
            .map(|i| {
                let mut e = extraction(u64::from(i), T0 + i64::from(i) * 80_000, "acct_r");
                let n = i % networks;
                e.ip = Some(
                    format!("{}.{}.7.9", 20 + n % 200, n / 200)
                        .parse()
                        .expect("ip"),
                );
                e.asn = Some(64_500 + n);
                e.prompt.template = 0;
                e
            })
            .collect();
        run(&mut eng, &events)
            .into_iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .collect::<Vec<_>>()
    };
    let rotating = alerts_for(u32::MAX);
    let first = rotating.first().expect("a rotating harvester is alerted");
    assert_within(first, T0, 60);
    let rotation = signal(first, "new_networks_per_hour");
    assert!(
        rotation.is_some_and(|s| s["crossed"] == true),
        "{rotation:?}"
    );
    assert!(alerts_for(1).is_empty(), "one home network");
    assert!(alerts_for(3).is_empty(), "three clouds in turn");
}

#[test]
fn heavy_human_chat_is_not_flagged() {
    let mut eng = engine();
    let mut events = Vec::new();
    for i in 0..1500u64 {
        events.push(chat(
            i,
            T0 + i as i64 * 2_000,
            "acct_chatty",
            (i % 12) as u32 + 1,
        ));
    }
    assert!(run(&mut eng, &events).is_empty());
}

#[test]
fn a_short_evaluation_run_by_an_established_account_is_not_flagged() {
    let mut eng = engine();
    let mut events: Vec<Event> = (0..50)
        .map(|i| chat(i, T0 + i as i64 * 60_000, "acct_eval", 2))
        .collect();
    for i in 0..250u64 {
        let mut e = extraction(10_000 + i, T0 + 60 * MIN + i as i64 * 3_000, "acct_eval");
        e.account_created_ms = Some(T0 - 500 * DAY);
        events.push(e);
    }
    assert!(run(&mut eng, &events).is_empty());
}

/// A benchmark run of a few hundred reasoning prompts with ordinary-length answers, on a
/// newly released model: what a customer does when a model comes out. Above the request bar
/// for established accounts, below the output-token bar.
#[test]
fn an_established_accounts_evaluation_of_a_new_model_is_not_flagged() {
    let mut eng = engine();
    let mut events: Vec<Event> = (0..40)
        .map(|i| {
            let mut e = chat(i, T0 + i as i64 * 60_000, "acct_eval", 2);
            e.model = Some("model-old".into());
            e
        })
        .collect();
    // The new model appears (another customer uses it first).
    let mut first = chat(5_000, T0 + 50 * MIN, "someone_else", 1);
    first.model = Some("model-new".into());
    events.push(first);
    for i in 0..500u64 {
        let mut e = extraction(10_000 + i, T0 + 60 * MIN + i as i64 * 4_000, "acct_eval");
        e.account_created_ms = Some(T0 - 500 * DAY);
        e.model = Some("model-new".into());
        e.input_tokens = 150;
        e.output_tokens = 700;
        e.prompt.template = mix(i) | 1;
        events.push(e);
    }
    let alerts = run(&mut eng, &events);
    assert!(
        alerts.is_empty(),
        "{:?}",
        alerts.first().map(|a| &a.evidence)
    );
}

/// A bought or taken-over account: a little human use, then harvesting from a new client at
/// a modest 0.3 requests/s. The new device stands in for the volume it has not reached yet.
#[test]
fn a_slowly_harvesting_taken_over_account_on_a_new_device_is_caught_within_fifteen_minutes() {
    let mut eng = engine();
    let mut events: Vec<Event> = (0..3)
        .map(|i| {
            let mut e = chat(i, T0 + i as i64 * 5 * MIN, "acct_old", 3);
            e.device_fingerprint = Some("laptop".into());
            e
        })
        .collect();
    // A slow harvest, one request every 6 s: caught at the corroborated bar (120 requests,
    // 12 minutes), not only at the bars for fresh (150) or established (300) accounts.
    let start = T0 + 40 * MIN;
    for i in 0..1200u64 {
        let mut e = extraction(20_000 + i, start + i as i64 * 6_000, "acct_old");
        e.account_created_ms = Some(T0 - 900 * DAY);
        e.device_fingerprint = Some("custom-client".into());
        events.push(e);
    }
    let alerts = run(&mut eng, &events);
    let first = alerts
        .iter()
        .find(|a| a.kind == Kind::BulkExtraction)
        .expect("a bulk alert");
    assert_within(first, start, 13);
    assert!(
        signal(first, "new_device_or_network_hours_ago").is_some(),
        "{:?}",
        first.evidence["signals"]
    );
}

/// A long-standing customer's evaluation run at a request every two seconds for three hours,
/// on its usual laptop, is not flagged: it ends. The same harvest going on is flagged once it
/// outlasts an evaluation run, and never recommended for suspension; after a move to a new
/// client it is judged at once and may be.
#[test]
fn an_established_accounts_harvest_on_its_own_device_is_judged_once_it_outlasts_an_evaluation() {
    let harvest = |moved: bool, n: u64| {
        let mut eng = engine();
        let mut events: Vec<Event> = (0..3)
            .map(|i| {
                let mut e = chat(i, T0 + i as i64 * 5 * MIN, "acct_customer", 3);
                e.device_fingerprint = Some("laptop".into());
                e
            })
            .collect();
        for i in 0..n {
            let mut e = extraction(
                30_000 + i,
                HARVEST_START + i as i64 * 2_000,
                "acct_customer",
            );
            e.account_created_ms = Some(T0 - 900 * DAY);
            e.device_fingerprint = Some(if moved { "custom-client" } else { "laptop" }.into());
            events.push(e);
        }
        run(&mut eng, &events)
            .into_iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .collect::<Vec<_>>()
    };
    const HARVEST_START: i64 = T0 + 40 * MIN;
    let evaluation = harvest(false, 5_400);
    assert!(
        evaluation.is_empty(),
        "{:?}",
        evaluation.first().map(|a| &a.evidence)
    );
    let stayed = harvest(false, 9_000);
    let first = stayed.first().expect("a harvest that goes on is flagged");
    let detected = crate::event::time::parse_rfc3339_ms(&first.detected_at).expect("ts");
    assert!(
        detected - HARVEST_START >= 3 * 60 * MIN,
        "judged after {} min, before it outlasted an evaluation run",
        (detected - HARVEST_START) / MIN
    );
    let signals = first.evidence["signals"].as_array().expect("signals");
    assert!(
        signals.iter().any(|s| s["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("harvest_episode_"))
            && s["crossed"] == true),
        "{signals:?}"
    );
    let top = stayed
        .iter()
        .map(|a| a.recommended_action)
        .collect::<Vec<_>>();
    assert!(!top.contains(&crate::alert::Action::Suspend), "{top:?}");
    assert!(top.contains(&crate::alert::Action::Throttle), "{top:?}");
    let moved = harvest(true, 5_400);
    let first_moved = moved.first().expect("a moved account is judged at once");
    assert_within(first_moved, HARVEST_START, 15);
    assert!(
        moved
            .iter()
            .any(|a| a.recommended_action == crate::alert::Action::Suspend),
        "after a move the same harvest may be suspended: {:?}",
        moved
            .iter()
            .map(|a| (&a.recommended_action, a.score))
            .collect::<Vec<_>>()
    );
}

/// An app backend relaying its users: a long-standing account on its own servers, thousands of
/// reasoning questions an hour through its product's prompt, paced like independent users, with
/// answers short for its long prompts. Its volume is its users', all day: not flagged. The same
/// traffic with long answers to short prompts (a harvest's shape) is flagged once it outlasts
/// an evaluation run.
#[test]
fn an_app_backend_relaying_its_users_is_not_flagged() {
    let backend = |input_tokens: u32, output_tokens: u32| {
        let mut eng = engine();
        let mut events = Vec::new();
        let mut t = T0;
        let mut i = 0u64;
        while t < T0 + 6 * 60 * MIN {
            let mut e = extraction(40_000 + i, t, "acct_app");
            e.account_created_ms = Some(T0 - 700 * DAY);
            e.device_fingerprint = Some("app-server".into());
            e.input_tokens = input_tokens;
            e.output_tokens = output_tokens;
            events.push(e);
            // Exponential gaps, a mean of 1.5 s: independent users.
            let u = ((mix(i + 7) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            t += (-u.ln() * 1_500.0) as i64 + 1;
            i += 1;
        }
        run(&mut eng, &events)
            .into_iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .collect::<Vec<_>>()
    };
    let relayed = backend(900, 350);
    assert!(
        relayed.is_empty(),
        "{:?}",
        relayed.first().map(|a| &a.evidence)
    );
    let harvested = backend(150, 1_500);
    assert!(
        !harvested.is_empty(),
        "long answers to short prompts are a harvest"
    );
}

#[test]
fn duplicates_and_late_events_are_counted_and_skipped() {
    let mut eng = engine();
    let mut out = Vec::new();
    let e = extraction(1, T0, "a");
    assert_eq!(eng.process(&e, &mut out), Outcome::Accepted);
    assert_eq!(eng.process(&e, &mut out), Outcome::Duplicate);
    let later = extraction(2, T0 + 60 * MIN, "a");
    assert_eq!(eng.process(&later, &mut out), Outcome::Accepted);
    let slightly_late = extraction(3, T0 + 58 * MIN, "a");
    assert_eq!(eng.process(&slightly_late, &mut out), Outcome::Accepted);
    let too_late = extraction(4, T0 + 10 * MIN, "a");
    assert_eq!(eng.process(&too_late, &mut out), Outcome::Late);
    let far_future = extraction(5, T0 + 400 * DAY, "a");
    assert_eq!(eng.process(&far_future, &mut out), Outcome::OutOfRange);
    let s = eng.stats();
    assert_eq!(
        (
            s.events_accepted,
            s.events_duplicate,
            s.events_late,
            s.events_out_of_range
        ),
        (3, 1, 1, 1)
    );
}

/// `n` fresh accounts sharing one card, each sending a request every `every` ms.
fn card_ring(
    n: usize,
    start: i64,
    minutes: i64,
    every: i64,
    prefix: &str,
    first_id: u64,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut id = first_id;
    let mut t = start;
    while t < start + minutes * MIN {
        for a in 0..n {
            let mut e = extraction(id, t + a as i64 * 37, &format!("{prefix}{a}"));
            e.payment_fingerprint = Some("card_shared".into());
            e.ip = Some(format!("198.51.100.{}", a % 200).parse().expect("ip"));
            e.output_tokens = 900;
            e.prompt.template = 0x5000 + (a as u64 % 3);
            id += 1;
            events.push(e);
        }
        t += every;
    }
    events
}

#[test]
fn accounts_sharing_a_card_form_one_cluster_that_grows() {
    let mut eng = engine();
    let mut events = card_ring(20, T0, 30, 45_000, "ring_", 0);
    // A replacement account appears later on the same card.
    events.extend(card_ring(
        1,
        T0 + 35 * MIN,
        10,
        45_000,
        "replacement_",
        1_000_000,
    ));
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    let clusters = cluster_alerts(&alerts);
    assert!(!clusters.is_empty(), "a cluster alert");
    let first = clusters[0];
    assert!(first.accounts.len() >= 5);
    assert_within(first, T0, 15);
    let last = clusters.last().expect("last");
    assert_eq!(last.subject, first.subject, "the cluster keeps its id");
    assert!(last.accounts.contains(&"replacement_0".to_string()));
    assert_eq!(last.accounts.len(), 21);
    let shared = last.evidence["shared_attributes"]
        .as_array()
        .expect("shared");
    assert!(shared
        .iter()
        .any(|s| s["kind"] == "payment_fingerprint" && s["value"] == "card_shared"));
}

#[test]
fn bought_aged_accounts_that_never_chatted_still_cluster() {
    let mut eng = engine();
    let mut events = card_ring(20, T0, 30, 45_000, "aged_", 0);
    for e in &mut events {
        e.account_created_ms = Some(e.ts_ms - 400 * DAY);
    }
    let alerts = run(&mut eng, &events);
    let c = alerts
        .iter()
        .rev()
        .find(|a| a.kind == Kind::FakeAccountCluster)
        .expect("a cluster");
    assert_eq!(c.accounts.len(), 20);
}

#[test]
fn a_company_on_one_card_with_a_verified_org_is_not_a_cluster() {
    let mut eng = engine();
    let mut events = card_ring(40, T0, 60, 30_000, "corp_", 0);
    for e in &mut events {
        e.org_id = Some("org_bigco".into());
        e.account_created_ms = Some(e.ts_ms - 300 * DAY);
        e.prompt.reasoning = false;
        e.input_tokens = 3000;
        e.output_tokens = 300;
    }
    assert!(run(&mut eng, &events).is_empty());
}

#[test]
fn a_carrier_nat_of_humans_is_not_a_cluster() {
    let mut eng = engine();
    let mut events = Vec::new();
    let mut id = 0;
    for a in 0..400u64 {
        let start = T0 + (mix(a) % 3_600_000) as i64;
        for turn in 1..=6u32 {
            let mut e = chat(
                id,
                start + i64::from(turn) * 45_000,
                &format!("nat_{a}"),
                turn,
            );
            e.ip = Some(format!("203.0.113.{}", a % 3).parse().expect("ip"));
            e.device_fingerprint = Some("popular_sdk".into());
            e.account_created_ms = Some(start - (mix(a + 7) % 40) as i64 * DAY);
            id += 1;
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    assert!(run(&mut eng, &events).is_empty());
}

/// A person whose one request so far happens to look like extraction, on the same IPv6 /64
/// as a swarm's proxy exit (an ISP that puts its subscribers in one /64), is not named with the
/// swarm: a network prefix alone names an account only after more than one request.
#[test]
fn one_request_on_a_swarms_network_prefix_names_nobody() {
    let mut eng = engine();
    let mut events = Vec::new();
    let mut person = extraction(1, T0 + MIN, "person");
    person.account_created_ms = Some(T0 - 5 * DAY);
    person.ip = Some("2001:db8::beef".parse().expect("ip"));
    person.prompt.template = 0x77;
    events.push(person);
    let mut id = 10;
    for minute in 2..40 {
        for a in 0..20 {
            let mut e = extraction(id, T0 + minute * MIN + a * 500, &format!("swarm_{a}"));
            e.ip = Some(format!("2001:db8::{}", 1 + a % 4).parse().expect("ip"));
            e.account_created_ms = Some(T0 - 60 * MIN);
            id += 1;
            events.push(e);
        }
    }
    assert_swarm_clustered_without(&run(&mut eng, &events), "person");
}

/// The swarm of a test is in a cluster alert, and `who` is in none.
fn assert_swarm_clustered_without(alerts: &[Alert], who: &str) {
    assert!(
        alerts.iter().any(|a| a.kind == Kind::FakeAccountCluster),
        "the swarm is clustered"
    );
    for a in alerts {
        assert!(
            !a.accounts.iter().any(|x| x == who),
            "{who} named in {}",
            a.alert_id
        );
    }
}

/// The swarm of a test is in a cluster alert; whether the account `person` is named too.
fn person_named_with_the_swarm(alerts: &[Alert]) -> bool {
    assert!(
        alerts.iter().any(|a| a.kind == Kind::FakeAccountCluster),
        "the swarm is clustered"
    );
    alerts
        .iter()
        .any(|a| a.accounts.iter().any(|x| x == "person"))
}

/// A person who signed up in the same minute as a swarm's burst of accounts, and sends a few
/// extraction-like questions of its own, is not named with the swarm through the creation
/// minute: it harvested a small fraction of what each swarm account did
/// (`cluster.min_member_harvest_share`). With that share at zero it would be.
#[test]
fn a_person_signed_up_in_a_swarms_minute_is_not_named_with_it() {
    let named = |share: f64| {
        let mut cfg = Config::default();
        cfg.cluster.min_member_harvest_share = share;
        let mut eng = engine_with(cfg);
        let created = T0 - 30 * MIN + 7_000;
        let mut events = Vec::new();
        let mut id = 0;
        for half_minute in 0..80 {
            for a in 0..20 {
                let ts = T0 + half_minute * 30_000 + a * 700;
                let mut e = extraction(id, ts, &format!("swarm_{a}"));
                e.ip = Some(
                    format!("203.0.{a}.{}", 1 + half_minute % 200)
                        .parse()
                        .expect("ip"),
                );
                e.account_created_ms = Some(created + a * 1_000);
                id += 1;
                events.push(e);
            }
            if [40, 56, 72].contains(&half_minute) {
                let mut e = extraction(id, T0 + half_minute * 30_000 + 15_000, "person");
                e.account_created_ms = Some(created + 30_000);
                e.ip = Some("192.0.2.77".parse().expect("ip"));
                e.prompt.template = 0x99;
                id += 1;
                events.push(e);
            }
        }
        person_named_with_the_swarm(&run(&mut eng, &events))
    };
    assert!(!named(0.1), "a bystander of the creation minute is named");
    assert!(named(0.0), "without the rule the test shows nothing");
}

/// A person who only ever sends one-off questions (no conversation: an old one looks like a
/// bought account that never chatted, a new one is fresh), on a popular browser fingerprint
/// that a swarm of fresh accounts also uses, is not named with the swarm.
/// A launch-day sign-up rush: unrelated people sign up eight a minute for an hour, each on its
/// own network, and each tries a few reasoning questions. Every minute of that hour holds eight
/// fresh extraction-like accounts, as a burst's would, but at the rate the hour's sign-ups
/// arrive that is no coincidence (`cluster.creation_minute_max_chance`), so no minute links
/// them. The same eight accounts created in one minute of a quiet hour are a burst.
#[test]
fn a_minute_of_a_sign_up_rush_is_no_burst() {
    let named = |rush: bool| {
        let mut eng = engine();
        let minutes: Vec<i64> = if rush { (0..60).collect() } else { vec![30] };
        let events = sign_up_burst(
            minutes.len() as i64 * 8,
            1_000,
            |k| format!("m{}_{}", minutes[k as usize / 8], k % 8),
            |k| T0 - 3 * 60 * MIN + minutes[k as usize / 8] * MIN + (k % 8) * 5_000,
        );
        clustered(&run(&mut eng, &events), "m30_") > 0
    };
    assert!(named(false), "a burst in a quiet hour is clustered");
    assert!(!named(true), "a minute of a sign-up rush is clustered");
}

/// Six rounds ten minutes apart, in which each of `n` accounts sends one harvesting request
/// (`spacing_ms` after the one before), each account on a network of its own and no template
/// shared: `name(k)` and `created(k)` are the id and creation time of the `k`-th account.
fn sign_up_burst(
    n: i64,
    spacing_ms: i64,
    name: impl Fn(i64) -> String,
    created: impl Fn(i64) -> i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut id = 0;
    for round in 0..6 {
        for k in 0..n {
            let mut e = extraction(id, T0 + round * 10 * MIN + k * spacing_ms, &name(k));
            e.account_created_ms = Some(created(k));
            e.ip = Some(
                format!("100.{}.{}.7", 64 + k / 250, k % 250)
                    .parse()
                    .expect("ip"),
            );
            e.prompt.template = 0;
            id += 1;
            events.push(e);
        }
    }
    events
}

/// Distinct accounts whose id starts with `prefix` named by cluster alerts.
fn clustered(alerts: &[Alert], prefix: &str) -> usize {
    alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .flat_map(|a| a.accounts.iter())
        .filter(|x| x.starts_with(prefix))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// A farm signed up by a script over ten minutes of a quiet hour, three or four accounts a
/// minute (under `cluster.min_members_creation` in any minute), each on a network of its own,
/// no template shared, each harvesting a few reasoning questions ten minutes apart. A
/// one-minute creation window never links them; a ten-minute one does
/// (`cluster.creation_bucket_secs`). The same farm spread over the whole hour is that hour's
/// sign-up rate, and no window of it is rare.
#[test]
fn a_farm_signed_up_over_minutes_links_through_a_wider_creation_window() {
    let named = |secs: u64, spread_mins: i64| {
        let mut eng = engine_where(|c| c.cluster.creation_bucket_secs = secs);
        let hour = T0 - 3 * 60 * MIN;
        let events = sign_up_burst(
            32,
            9_000,
            |k| format!("farm_{k}"),
            |k| hour + k * spread_mins * MIN / 32,
        );
        clustered(&run(&mut eng, &events), "farm_")
    };
    assert_eq!(
        named(60, 10),
        0,
        "a minute holds too few of the farm to link it"
    );
    assert_eq!(named(600, 10), 32, "a ten-minute window links the farm");
    assert_eq!(named(600, 60), 0, "an hour's steady sign-ups are no burst");
}

#[test]
fn a_one_off_asker_sharing_a_popular_fingerprint_with_a_swarm_is_not_named() {
    for age_days in [400, 3] {
        let mut eng = engine();
        let mut events = Vec::new();
        let mut id = 0;
        // The asker holds the fingerprint before the swarm arrives (three questions in its
        // first three minutes), so it is among the holders when the fingerprint turns into a
        // link.
        for minute in 0..40 {
            for a in 0..30 {
                if minute < 3 {
                    break;
                }
                let mut e = extraction(id, T0 + minute * MIN + a * 700, &format!("swarm_{a}"));
                e.ip = Some(format!("198.51.100.{}", a % 5).parse().expect("ip"));
                e.device_fingerprint = Some("popular_browser".into());
                e.account_created_ms = Some(T0 - 60 * MIN);
                id += 1;
                events.push(e);
            }
            if minute < 3 || minute % 6 == 0 {
                let mut e = extraction(id, T0 + minute * MIN + 30_000, "asker");
                e.account_created_ms = Some(T0 - age_days * DAY);
                e.ip = Some("192.0.2.77".parse().expect("ip"));
                e.device_fingerprint = Some("popular_browser".into());
                e.output_tokens = 600;
                e.prompt.template = 0x99;
                id += 1;
                events.push(e);
            }
        }
        assert_swarm_clustered_without(&run(&mut eng, &events), "asker");
    }
}

#[test]
fn lockstep_accounts_sharing_only_a_template_are_clustered() {
    let mut eng = engine();
    let mut events = Vec::new();
    let mut id = 0;
    for round in 0..12i64 {
        for a in 0..60u64 {
            if mix(a ^ (round as u64) << 8) % 10 < 3 {
                continue;
            }
            let mut e = extraction(
                id,
                T0 + round * 90_000 + (mix(id) % 3000) as i64,
                &format!("ls_{a}"),
            );
            e.account_created_ms = Some(T0 - (50 + a as i64) * DAY);
            e.ip = Some(
                format!("100.{}.{}.{}", a % 250, a / 250, 7)
                    .parse()
                    .expect("ip"),
            );
            e.prompt.template = 0x7777;
            id += 1;
            events.push(e);
        }
    }
    // Background: unrelated users on the same popular template-less traffic.
    for i in 0..2000u64 {
        events.push(chat(
            500_000 + i,
            T0 + (mix(i) % (18 * 60_000)) as i64,
            &format!("bg_{}", i % 300),
            1 + (i % 4) as u32,
        ));
    }
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    let c = alerts
        .iter()
        .rev()
        .find(|a| a.kind == Kind::FakeAccountCluster)
        .expect("lockstep cluster");
    assert!(c.accounts.len() >= 50, "{}", c.accounts.len());
    assert!(c.accounts.iter().all(|a| a.starts_with("ls_")));
}

#[test]
fn same_input_same_alerts() {
    let mut events = card_ring(12, T0, 40, 20_000, "r_", 0);
    events.extend((0..600).map(|i| extraction(900_000 + i, T0 + i as i64 * 3_000, "solo")));
    events.sort_by_key(|e| e.ts_ms);
    let a = run(&mut engine(), &events);
    let b = run(&mut engine(), &events);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn id_rotation_is_held_at_the_cap() {
    let mut cfg = Config::default();
    cfg.engine.max_accounts = 5_000;
    cfg.engine.max_attribute_values = 5_000;
    let mut eng = engine_with(cfg);
    let mut out = Vec::new();
    for i in 0..100_000u64 {
        let mut e = extraction(i, T0 + i as i64 * 10, &format!("rot_{i}"));
        e.ip = Some(std::net::IpAddr::from((i as u32).to_be_bytes()));
        eng.process(&e, &mut out);
    }
    let g = eng.gauges();
    assert!(g.accounts <= 5_000 + 6_000, "{g:?}");
    assert!(g.attribute_values <= 5_000 + 18_000, "{g:?}");
    assert!(eng.stats().accounts_evicted > 80_000, "{:?}", eng.stats());
    assert!(
        eng.expiry.len() <= 2 * g.accounts + 1024,
        "expiry queue {} for {} accounts",
        eng.expiry.len(),
        g.accounts
    );
}

#[test]
fn idle_accounts_expire() {
    let mut cfg = Config::default();
    cfg.engine.account_idle_secs = 3600;
    let mut eng = engine_with(cfg);
    let mut out = Vec::new();
    eng.process(&extraction(1, T0, "old"), &mut out);
    eng.process(&extraction(2, T0 + 2 * 3_600_000, "new"), &mut out);
    assert_eq!(eng.gauges().accounts, 1);
    assert_eq!(eng.stats().accounts_expired, 1);
}

#[test]
fn active_accounts_do_not_expire_and_idle_ones_do_on_time() {
    let mut cfg = Config::default();
    cfg.engine.account_idle_secs = 3600;
    let mut eng = engine_with(cfg);
    let mut out = Vec::new();
    eng.process(&extraction(0, T0, "idle"), &mut out);
    // "busy" is seen every ten minutes for five hours; "late" shows up half an hour in.
    for i in 0..30 {
        let t = T0 + i * 10 * MIN;
        eng.process(&extraction(1 + i as u64, t, "busy"), &mut out);
        if i == 3 {
            eng.process(&extraction(100, t, "late"), &mut out);
        }
        let stats = eng.stats();
        // "idle" goes at the first sweep more than an hour after it was seen, "late" likewise.
        let want = u64::from(t > T0 + 61 * MIN) + u64::from(t > T0 + 91 * MIN);
        assert_eq!(stats.accounts_expired, want, "at minute {}", i * 10);
    }
    assert_eq!(eng.gauges().accounts, 1);
}

#[test]
fn allowlisted_accounts_are_not_alerted_until_expiry() {
    let mut cfg = Config::default();
    cfg.allowlist.push(AllowEntry {
        account: Some("acct_h".into()),
        org: None,
        reason: "load test TS-1".into(),
        expires: "2026-11-02T00:30:00Z".into(),
    });
    let mut eng = engine_with(cfg);
    let events: Vec<Event> = (0..1800)
        .map(|i| extraction(i, T0 + i as i64 * 2_000, "acct_h"))
        .collect();
    let alerts = run(&mut eng, &events);
    assert!(eng.stats().alerts_suppressed_allowlist > 0);
    let first = alerts.first().expect("alerted after expiry");
    assert!(crate::event::time::parse_rfc3339_ms(&first.detected_at).expect("ts") >= T0 + 30 * MIN);
}

/// A live entry (from the control topic) silences alerts while present and unexpired, with no
/// new engine; a tombstone brings them back.
#[test]
fn live_allowlist_silences_until_removed() {
    use crate::control::{ControlOp, Entry, LiveAllowlist, Subject};
    let live = LiveAllowlist::default();
    let mut eng = engine().with_live_allowlist(live.clone());
    let entry = Entry {
        subject: Subject::Account("acct_l".into()),
        reason: "TS-2".into(),
        author: "ann".into(),
        created_ms: None,
        expires_ms: T0 + DAY,
    };
    live.apply(ControlOp::Upsert(entry));
    let events: Vec<Event> = (0..1800)
        .map(|i| extraction(i, T0 + i as i64 * 1_000, "acct_l"))
        .collect();
    assert!(run(&mut eng, &events[..900]).is_empty(), "allowlisted");
    assert!(eng.stats().alerts_suppressed_allowlist > 0);
    live.apply(ControlOp::Remove(Subject::Account("acct_l".into())));
    assert!(
        !run(&mut eng, &events[900..]).is_empty(),
        "alerted once removed"
    );
}

/// `process_all` (prefetching ahead) and `process` per event are the same engine: same
/// alerts, outcomes and counts on every simulated family, duplicates and late events included.
#[test]
fn process_all_matches_process_per_event() {
    let (simulated, _) = simulated(crate::sim::SimOptions {
        scale: 0.2,
        hours: 2.0,
        ..Default::default()
    });
    let mut events: Vec<Event> = Vec::new();
    for (i, e) in simulated.into_iter().enumerate() {
        // Replays and stragglers: every outcome shows up.
        if i % 97 == 0 {
            events.push(e.clone());
        }
        events.push(e);
    }
    let mut late = events[events.len() / 2].clone();
    late.event_id = "late".into();
    late.ts_ms -= 3_600_000;
    events.push(late);
    assert!(events.len() > 10_000, "{}", events.len());

    let mut each = engine();
    let mut want = Vec::new();
    let mut want_outcomes = Vec::new();
    for e in &events {
        want_outcomes.push(each.process(e, &mut want));
    }
    let mut all = engine();
    let mut got = Vec::new();
    let mut got_outcomes = Vec::new();
    let mut out = Vec::new();
    // In uneven chunks, as batches arrive.
    for chunk in events.chunks(1000 + 7) {
        all.process_all(chunk, &mut out, |o, out| {
            got_outcomes.push(o);
            got.append(out);
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("infallible");
    }
    assert!(!want.is_empty());
    assert!(want_outcomes.contains(&Outcome::Duplicate));
    assert!(want_outcomes.contains(&Outcome::Late));
    assert_eq!(got_outcomes, want_outcomes);
    assert_eq!(got, want);
    assert_eq!(all.stats(), each.stats());
}

/// A fresh account's single-turn request with its own reworded prompt: no template, no
/// reasoning phrase, a long answer.
fn paraphrased(id: u64, ts: i64, account: &str) -> Event {
    let mut e = extraction(id, ts, account);
    e.prompt.template = 0;
    e.prompt.reasoning = false;
    e.prompt.scaffold = 0;
    e.input_tokens = 120;
    e.output_tokens = 900;
    e
}

#[test]
fn a_docs_quickstart_crowd_sending_the_same_example_is_not_flagged() {
    let mut eng = engine();
    let mut events = Vec::new();
    for a in 0..320u64 {
        for k in 0..(1 + a % 6) {
            let mut e = extraction(
                a * 10 + k,
                T0 + (mix(a) % 3_600_000) as i64,
                &format!("qs_{a}"),
            );
            // The documentation's example: one prompt, the same for everyone.
            e.prompt.simhash = 0x5eed_0000_d0c5;
            e.ip = Some(format!("81.{}.{}.9", a % 200, a / 200).parse().expect("ip"));
            e.device_fingerprint = Some("python-sdk/1.2".into());
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    assert!(
        alerts.is_empty(),
        "{:?}",
        alerts.first().map(|a| a.one_line())
    );
}

#[test]
fn chat_mixed_in_as_cover_does_not_hide_a_harvest() {
    let mut eng = engine();
    let mut events = Vec::new();
    // 400 requests an hour from a fresh account, 40% of them multi-turn chat.
    for i in 0..800u64 {
        let ts = T0 + i as i64 * 9_000;
        let e = if mix(i) % 10 < 4 {
            let mut c = chat(i, ts, "cover", 3);
            c.account_created_ms = Some(T0 - DAY);
            c
        } else {
            paraphrased(i, ts, "cover")
        };
        events.push(e);
    }
    let alerts = run(&mut eng, &events);
    let first = alerts
        .iter()
        .find(|a| a.kind == Kind::BulkExtraction)
        .expect("a bulk alert despite the cover traffic");
    assert_within(first, T0, 20);
    assert!(first.evidence["summary"]
        .as_str()
        .expect("summary")
        .contains("harvesting"));
}

#[test]
fn a_steady_harvest_is_judged_on_its_rate_ten_minutes_in() {
    let mut eng = engine();
    // 0.2 requests/s: 100 harvests take 8.3 minutes, the projection needs 10.
    let events: Vec<Event> = (0..1200)
        .map(|i| paraphrased(i, T0 + i as i64 * 5_000, "steady"))
        .collect();
    let alerts = run(&mut eng, &events);
    let first = alerts
        .iter()
        .find(|a| a.kind == Kind::BulkExtraction)
        .expect("alert");
    assert_within(first, T0, 12);
}

#[test]
fn a_class_on_one_campus_ip_sharing_an_assignment_is_not_a_cluster() {
    let mut eng = engine();
    let mut events = Vec::new();
    let mut id = 0;
    for s in 0..60u64 {
        let acct = format!("student_{s}");
        let start = T0 + (mix(s) % (10 * MIN as u64)) as i64;
        // The assignment, word for word, asking for a step-by-step explanation...
        let mut e = extraction(id, start, &acct);
        e.prompt.simhash = 0xa551_9a3e;
        e.account_created_ms = Some(T0 - 3_600_000);
        e.ip = Some("128.32.10.5".parse().expect("ip"));
        events.push(e);
        id += 1;
        // ...then a conversation about it.
        for turn in 2..6u32 {
            let mut c = chat(id, start + i64::from(turn) * 90_000, &acct, turn);
            c.account_created_ms = Some(T0 - 3_600_000);
            c.ip = Some("128.32.10.5".parse().expect("ip"));
            events.push(c);
            id += 1;
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    assert!(
        alerts.is_empty(),
        "{:?}",
        alerts.first().map(|a| a.one_line())
    );
}

/// Background: 400 independent harvesting users at random times over three hours, each on its
/// own network, created over the past weeks.
fn independent_harvesters() -> Vec<Event> {
    (0..6000u64)
        .map(|i| {
            let a = i % 400;
            let mut e = paraphrased(
                900_000 + i,
                T0 + (mix(i) % (3 * 3_600_000)) as i64,
                &format!("bg_{a}"),
            );
            e.ip = Some(format!("90.{}.{}.3", a % 200, a / 200).parse().expect("ip"));
            e.account_created_ms = Some(T0 - (2 + a as i64 % 20) * DAY - a as i64 * 7_919);
            e
        })
        .collect()
}

/// Request `id` of campaign account `lock_{a}` at `ts`: reworded, on a residential IP of its
/// own each time, the account created over the past weeks, one by one.
fn campaign_member(id: u64, ts: i64, a: u64) -> Event {
    let mut e = paraphrased(id, ts, &format!("lock_{a}"));
    e.account_created_ms = Some(T0 - (3 + a as i64 % 20) * DAY - a as i64 * 3_600_000);
    e.ip = Some(
        format!("73.{}.{}.{}", (id * 7) % 250, (id * 13) % 250, id % 250)
            .parse()
            .expect("ip"),
    );
    e
}

#[test]
fn accounts_harvesting_in_waves_with_nothing_shared_are_clustered_with_their_waves() {
    let mut eng = engine();
    let mut events = independent_harvesters();
    let mut id = 0u64;
    // 40 accounts, each on its own residential IP, reworded prompts, firing within a few
    // seconds of each other every 6 minutes (70% of them each time).
    for wave in 0..30i64 {
        for a in 0..40u64 {
            if mix(a ^ (wave as u64) << 16) % 10 < 3 {
                continue;
            }
            let ts = T0 + 600_000 + wave * 360_000 + (mix(id) % 4_000) as i64;
            events.push(campaign_member(id, ts, a));
            id += 1;
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    let named: std::collections::BTreeSet<&String> = alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .flat_map(|a| a.accounts.iter())
        .collect();
    assert!(named.iter().all(|a| a.starts_with("lock_")), "{named:?}");
    let locked = named.len();
    assert!(locked >= 36, "only {locked} of 40 named");
    let c = alerts
        .iter()
        .rev()
        .find(|a| a.kind == Kind::FakeAccountCluster)
        .expect("cluster");
    let co = &c.evidence["co_activity"];
    assert!(co["members_in_step"].as_u64().expect("in step") >= 5);
    let w = &co["waves"][0];
    assert!(
        w["chance_p"].as_f64().expect("p") <= crate::config::CohortConfig::default().max_wave_p,
        "{w}"
    );
    assert!(
        w["harvesting_accounts"].as_u64().expect("n")
            > w["expected_by_baseline"].as_f64().expect("e") as u64
    );
}

/// 40 customers' jobs on established accounts, each on a server of its own, firing at every
/// quarter hour a second or so after the tick: eight new prompts each, eight seconds apart,
/// for three hours, among independent harvesters.
fn scheduled_jobs() -> Vec<Event> {
    let mut events = independent_harvesters();
    let mut id = 5_000_000u64;
    for run in 0..12i64 {
        for a in 0..40u64 {
            for k in 0..8i64 {
                let ts = T0 + run * 15 * MIN + 1_000 + a as i64 * 37 + k * 8_000;
                let mut e = paraphrased(id, ts, &format!("job_{a}"));
                e.account_created_ms = Some(T0 - (200 + a as i64) * DAY);
                e.ip = Some(format!("35.{a}.7.9").parse().expect("ip"));
                events.push(e);
                id += 1;
            }
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    events
}

fn named_jobs(alerts: &[Alert]) -> usize {
    alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .flat_map(|a| a.accounts.iter())
        .filter(|a| a.starts_with("job_"))
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn customers_jobs_firing_together_on_the_clock_are_not_a_cluster() {
    let alerts = run(&mut engine(), &scheduled_jobs());
    assert_eq!(named_jobs(&alerts), 0);
    // Were their runs not taken for a schedule, their timing would name them.
    let mut cfg = Config::default();
    cfg.cohort.schedule_min_runs = 1_000;
    let alerts = run(&mut engine_with(cfg), &scheduled_jobs());
    assert!(named_jobs(&alerts) >= 30, "{}", named_jobs(&alerts));
}

/// Ten single-account harvesters, each on its own network and device, two minutes apart.
fn ten_harvesters() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..900u64 {
        for h in 0..10u64 {
            let account = format!("acct_h{h}");
            let mut e = extraction(
                i * 10 + h,
                T0 + h as i64 * 2 * MIN + i as i64 * 2_000,
                &account,
            );
            e.ip = Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                10, h as u8, 0, 1,
            )));
            e.device_fingerprint = Some(format!("dev{h}").into());
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    events
}

#[test]
fn the_suspend_valve_holds_suspensions_to_the_cap_and_marks_the_rest() {
    let mut cfg = Config::default();
    cfg.cluster.enabled = false;
    cfg.alerts.max_suspend_per_hour = 0;
    cfg.alerts.max_suspend_per_hour_bulk = 0;
    cfg.alerts.max_suspend_per_hour_cluster = 0;
    let events = ten_harvesters();
    let uncapped = run(&mut engine_with(cfg.clone()), &events);
    let suspend = |alerts: &[Alert]| {
        alerts
            .iter()
            .filter(|a| a.recommended_action == crate::alert::Action::Suspend)
            .map(|a| a.subject.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        suspend(&uncapped).len(),
        10,
        "every harvester reaches suspend"
    );

    cfg.alerts.max_suspend_per_hour = 3;
    let mut eng = engine_with(cfg);
    let alerts = run(&mut eng, &events);
    assert_eq!(suspend(&alerts).len(), 3);
    let limited: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.evidence["rate_limited"] == true)
        .collect();
    assert_eq!(
        limited.len(),
        7,
        "one downgraded alert per withheld subject"
    );
    for a in &limited {
        assert_eq!(a.recommended_action, crate::alert::Action::Throttle);
        assert_eq!(a.severity, crate::alert::Severity::High);
        assert_eq!(a.evidence["rate_limit"]["cap"], 3);
        assert_eq!(a.evidence["rate_limit"]["suspended_subjects_in_hour"], 3);
    }
    assert_eq!(eng.stats().alerts_rate_limited_bulk, 7);
    // Everything else is what the uncapped engine said, under another detector version.
    assert_eq!(alerts.len(), uncapped.len());
}

/// A slow swarm (one reworded request an hour per fresh account) rotating every request over a
/// pool of datacenter /24s: little harvest passes through any one /24 within the horizon, but
/// every holder that takes one up carries its own harvest, and that is what a network's link
/// judges. Without that credit no /24 links and the swarm goes unflagged.
#[test]
fn a_slow_swarm_rotating_over_datacenter_networks_is_clustered() {
    let mut eng = engine();
    let accounts = 40u64;
    let mut events = Vec::new();
    let mut id = 1;
    for hour in 0..6i64 {
        for a in 0..accounts {
            let ts = T0 + hour * 60 * MIN + (a as i64) * 90_000;
            let mut e = paraphrased(id, ts, &format!("slow_{a}"));
            e.account_created_ms = Some(T0 - DAY + a as i64 * 7 * MIN);
            // Five requests a block an hour; every account on a new block each hour.
            let block = (a as i64 * 3 + hour) % 8;
            e.ip = Some(
                format!("45.77.{}.{}", 10 + block, 1 + mix(id + 7) % 250)
                    .parse()
                    .expect("ip"),
            );
            id += 1;
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.ts_ms);
    let alerts = run(&mut eng, &events);
    let named: std::collections::HashSet<&String> = alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .flat_map(|a| a.accounts.iter())
        .collect();
    assert!(
        named.len() >= accounts as usize / 2,
        "{} of {accounts} slow accounts named",
        named.len()
    );
    assert!(named.iter().all(|a| a.starts_with("slow_")));
}

/// A hackathon's teams behind the venue's network: fresh accounts start within minutes of each
/// other with the starter kit's reasoning prompts, and only a few minutes later begin to
/// converse about what they build. In those first minutes the venue looks like a pool of
/// single-turn accounts, and a weak link (the shared network) must not name anyone yet
/// (`cluster.weak_link_min_active_secs`). With that at zero the first minutes name them.
#[test]
fn a_hackathon_venue_in_its_first_minutes_is_not_a_cluster() {
    let venue = |cfg: Config| {
        let mut eng = engine_with(cfg);
        let mut events = Vec::new();
        let mut id = 0;
        for s in 0..24u64 {
            let acct = format!("hacker_{s}");
            let start = T0 + (mix(s) % (8 * MIN as u64)) as i64;
            let end = T0 + 3 * 60 * MIN;
            session(
                start,
                end,
                (40_000, 80_000),
                &mut id,
                &mut events,
                |k, t, id| {
                    // First the kit's prompts; after a few minutes every other request goes on
                    // with the conversation.
                    let mut e = if t - start > 3 * MIN && k % 2 == 1 {
                        chat(id, t, &acct, 2 + (k % 4) as u32)
                    } else {
                        extraction(id, t, &acct)
                    };
                    e.account_created_ms = Some(T0 - 30 * MIN);
                    e.ip = Some(format!("198.51.100.{}", 1 + s % 3).parse().expect("ip"));
                    e.prompt.template = 0x4ac;
                    e
                },
            );
        }
        events.sort_by_key(|e| e.ts_ms);
        run(&mut eng, &events)
    };
    no_cluster_but_without(
        venue,
        |c| c.cluster.weak_link_min_active_secs = 0,
        "without the wait the venue's first minutes name it",
    );
}

/// One account's requests from `start` until `end`, `gap.0` plus up to `gap.1` ms apart:
/// `make(k, t, id)` builds its k-th request (event id `id`, counted across sessions).
fn session(
    start: i64,
    end: i64,
    gap: (i64, i64),
    id: &mut u64,
    events: &mut Vec<Event>,
    mut make: impl FnMut(u64, i64, u64) -> Event,
) {
    let (mut t, mut k) = (start, 0u64);
    while t < end {
        events.push(make(k, t, *id));
        *id += 1;
        k += 1;
        t += gap.0 + (mix(*id) % gap.1 as u64) as i64;
    }
}

/// Asserts that `traffic` under the default config alerts no cluster, and that it does with
/// `tweak` applied (the rule under test switched off): the test can fail.
fn no_cluster_but_without(
    traffic: impl Fn(Config) -> Vec<Alert>,
    tweak: impl FnOnce(&mut Config),
    why: &str,
) {
    let alerts = traffic(Config::default());
    assert!(
        alerts.iter().all(|a| a.kind != Kind::FakeAccountCluster),
        "{:?}",
        alerts.first().map(|a| a.one_line())
    );
    let mut off = Config::default();
    tweak(&mut off);
    assert!(
        traffic(off)
            .iter()
            .any(|a| a.kind == Kind::FakeAccountCluster),
        "{why}"
    );
}

/// A hackathon on one venue network: a team of 16 who only send their starter kit's one-off
/// reasoning prompts on its template, about 40 an hour each, for two hours, among 30 people who
/// either converse with the model (`converse`) or send one-off everyday questions with short
/// answers. Fresh, single-turn, never chatted: the kit's template looks like a campaign's.
fn venue_with_a_kit_team(cfg: Config, converse: bool) -> Vec<Alert> {
    let mut eng = engine_with(cfg);
    let mut events = Vec::new();
    let mut id = 0u64;
    for s in 0..46u64 {
        let acct = format!("attendee_{s}");
        let team = s < 16;
        let start = T0 + (mix(s) % (20 * MIN as u64)) as i64;
        let end = T0 + 2 * 60 * MIN;
        session(
            start,
            end,
            (60_000, 60_000),
            &mut id,
            &mut events,
            |k, t, id| {
                let mut e = if team {
                    let mut e = extraction(id, t, &acct);
                    e.prompt.template = 0x4ad;
                    e
                } else if converse && k % 2 == 1 {
                    chat(id, t, &acct, 2 + (k % 4) as u32)
                } else {
                    let mut e = extraction(id, t, &acct);
                    e.prompt.template = 0x700 + s;
                    if !converse {
                        e.prompt.reasoning = false;
                        e.output_tokens = 150;
                    }
                    e
                };
                e.account_created_ms = Some(T0 - 60 * MIN);
                e.ip = Some("198.51.100.7".parse().expect("ip"));
                e
            },
        );
    }
    events.sort_by_key(|e| e.ts_ms);
    run(&mut eng, &events)
}

/// The venue's network is a crowd of people (`cluster.crowd_min_accounts` holders whose
/// traffic converses too much to link it), and a value shared by circumstance names no one
/// there. Without that rule the team is named.
#[test]
fn a_team_on_a_starter_kit_among_people_at_a_venue_is_not_a_cluster() {
    no_cluster_but_without(
        |cfg| venue_with_a_kit_team(cfg, true),
        |c| c.cluster.crowd_min_accounts = 1_000,
        "without the crowd rule the team is named",
    );
}

/// In a venue's first hour people may not have conversed yet: every request is a first turn.
/// Most of them are still not extraction-like (their questions harvest nothing), and that too
/// makes the network a crowd (`cluster.min_member_purity`).
#[test]
fn a_team_on_a_starter_kit_among_quiet_people_at_a_venue_is_not_a_cluster() {
    no_cluster_but_without(
        |cfg| venue_with_a_kit_team(cfg, false),
        |c| c.cluster.crowd_min_accounts = 1_000,
        "without the crowd rule the team is named",
    );
}

/// An established account harvesting on its own device behind cover: every other request a
/// chat turn, so its trailing hour holds half the harvest (150 an hour, answers of 800 tokens)
/// and never reaches an established account's one-hour bar. Once the episode has outlasted an
/// evaluation run (`bulk.established_min_episode_hours`), that is the volume: flagged. The same
/// traffic for three hours is not.
#[test]
fn an_established_harvest_hidden_in_cover_is_judged_once_it_outlasts_an_evaluation() {
    const START: i64 = T0 + 30 * MIN;
    let covered = |hours: i64| {
        let mut eng = engine();
        let mut events = Vec::new();
        let mut i = 0u64;
        let mut t = START;
        while t < START + hours * 60 * MIN {
            let mut e = if i % 2 == 0 {
                let mut e = extraction(50_000 + i, t, "acct_covered");
                e.output_tokens = 800;
                e
            } else {
                chat(50_000 + i, t, "acct_covered", 2 + (i % 3) as u32)
            };
            e.account_created_ms = Some(T0 - 400 * DAY);
            e.device_fingerprint = Some("laptop".into());
            events.push(e);
            // Twelve seconds apart, give or take two: a script.
            t += 10_000 + (mix(i) % 4_000) as i64;
            i += 1;
        }
        run(&mut eng, &events)
            .into_iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .collect::<Vec<_>>()
    };
    let short = covered(3);
    assert!(short.is_empty(), "{:?}", short.first().map(|a| &a.evidence));
    let long = covered(5);
    let first = long
        .first()
        .expect("a covered harvest that goes on is flagged");
    let detected = crate::event::time::parse_rfc3339_ms(&first.detected_at).expect("ts");
    assert!(
        (3 * 60 * MIN..=5 * 60 * MIN).contains(&(detected - START)),
        "judged {} min in",
        (detected - START) / MIN
    );
}

/// A customer's three-hour evaluation run (a request every two seconds) on its usual laptop,
/// then the owner's own questions, one a minute, for another hour. The run's answers keep the
/// trailing hour above `bulk.min_harvest_fresh` for most of that hour, but the harvest no
/// longer keeps pace (`bulk.episode_pace_minutes`): the episode ended with the run, which does
/// not outlast an evaluation run. Measured on the trailing hour alone, it would.
#[test]
fn the_owners_questions_after_an_evaluation_run_do_not_lengthen_it() {
    let evaluation = |cfg: Config| {
        let mut eng = engine_with(cfg);
        let start = T0 + 40 * MIN;
        let mut events: Vec<Event> = (0..3)
            .map(|i| chat(i, T0 + i as i64 * 5 * MIN, "acct_customer", 3))
            .collect();
        let run_end = start + 3 * 60 * MIN;
        let times = (start..run_end)
            .step_by(2_000)
            .chain((run_end..run_end + 60 * MIN).step_by(60_000));
        for (i, t) in times.enumerate() {
            let mut e = extraction(40_000 + i as u64, t, "acct_customer");
            e.account_created_ms = Some(T0 - 900 * DAY);
            events.push(e);
        }
        for e in &mut events {
            e.device_fingerprint = Some("laptop".into());
        }
        run(&mut eng, &events)
            .into_iter()
            .filter(|a| a.kind == Kind::BulkExtraction)
            .collect::<Vec<_>>()
    };
    let alerts = evaluation(Config::default());
    assert!(
        alerts.is_empty(),
        "{:?}",
        alerts.first().map(|a| &a.evidence)
    );
    let mut hourly = Config::default();
    hourly.bulk.episode_pace_minutes = 60;
    assert!(
        !evaluation(hourly).is_empty(),
        "measured on the trailing hour the episode outlasts an evaluation run"
    );
}

/// A swarm's burst of twenty accounts created in one minute of a busy hour: people sign up
/// three a minute all hour, so about three of any minute's holders signed up there by chance.
/// A person who signed up in the burst's minute and harvests as much as a swarm account, on a
/// network of their own, is not named through the minute alone
/// (`cluster.creation_minute_max_bystander_share`); the swarm is, through the networks it
/// shares. Without the rule the person is named with it.
#[test]
fn a_person_in_a_bursts_minute_of_a_busy_hour_is_not_named_through_it() {
    let named = |share: f64| {
        let mut eng = engine_where(|c| c.cluster.creation_minute_max_bystander_share = share);
        let hour = T0 - 3 * 60 * MIN;
        let mut events = Vec::new();
        let mut id = 0;
        for p in 0..180 {
            let mut e = chat(id, T0 + p * 1_000, &format!("signup_{p}"), 2);
            e.account_created_ms = Some(hour + p * 20_000);
            e.ip = Some(
                format!("100.64.{}.{}", p / 200, p % 200 + 1)
                    .parse()
                    .expect("ip"),
            );
            id += 1;
            events.push(e);
        }
        for round in 0..80 {
            for a in 0..21 {
                let who = if a == 20 {
                    "person".to_string()
                } else {
                    format!("swarm_{a}")
                };
                // The person keeps a pace of their own, out of the swarm's step.
                let ts = if a == 20 {
                    T0 + 4 * MIN + round * 37_000 + 11_000
                } else {
                    T0 + 4 * MIN + round * 30_000 + a * 700
                };
                let mut e = extraction(id, ts, &who);
                e.account_created_ms = Some(hour + 30 * MIN + a * 2_000);
                e.ip = Some(if a == 20 {
                    "192.0.2.77".parse().expect("ip")
                } else {
                    format!("203.0.113.{}", 1 + a % 4).parse().expect("ip")
                });
                if a == 20 {
                    e.prompt.template = 0x99;
                }
                id += 1;
                events.push(e);
            }
        }
        events.sort_by_key(|e| e.ts_ms);
        person_named_with_the_swarm(&run(&mut eng, &events))
    };
    let default = Config::default()
        .cluster
        .creation_minute_max_bystander_share;
    assert!(
        !named(default),
        "a bystander of a busy hour's burst minute is named"
    );
    assert!(named(1.0), "without the rule the test shows nothing");
}

/// An evaluation run on an old account that asked a few questions earlier, always on (a
/// request every three seconds on its own network), starts just as a campaign begins firing
/// in every other 15-second bin. It takes part in half the bins' waves, as many as the moment
/// has: not in step (`cohort.local_share_bins`), while the campaign, active in the waves
/// alone, is. Judged against the wave share of its whole span, quiet before the campaign, or
/// of a window longer than the campaign's first minutes, it would be named with it.
#[test]
fn an_evaluation_run_that_starts_as_a_campaign_fires_is_not_in_step_with_it() {
    let named = |local_bins: u32| {
        let mut eng = engine_where(|c| c.cohort.local_share_bins = local_bins);
        let mut events = independent_harvesters();
        let start = T0 + 90 * MIN;
        let mut id = 0u64;
        for round in 0..120i64 {
            for a in 0..40u64 {
                let ts = start + round * 30_000 + (mix(id) % 3_000) as i64;
                events.push(campaign_member(id, ts, a));
                id += 1;
            }
        }
        // Off the round minutes: a job on the clock is a schedule, not this test's case.
        let mut t = T0 + 5 * MIN + 23_000;
        let mut n = 0u64;
        while t < start + 60 * MIN {
            let mut e = paraphrased(500_000 + n, t, "acct_eval");
            e.account_created_ms = Some(T0 - 700 * DAY);
            e.ip = Some("198.51.100.20".parse().expect("ip"));
            events.push(e);
            // A few questions early on, then the run from just before the campaign.
            t += if t < T0 + 20 * MIN {
                4 * MIN
            } else if t < start - 2 * MIN {
                start - 2 * MIN - t
            } else {
                3_000
            };
            n += 1;
        }
        events.sort_by_key(|e| e.ts_ms);
        let alerts = run(&mut eng, &events);
        let clusters = cluster_alerts(&alerts);
        assert!(
            clusters
                .iter()
                .any(|a| a.accounts.iter().filter(|x| x.starts_with("lock_")).count() >= 30),
            "the campaign is clustered"
        );
        clusters
            .iter()
            .any(|a| a.accounts.iter().any(|x| x == "acct_eval"))
    };
    let default = Config::default().cohort.local_share_bins;
    assert!(
        !named(default),
        "an always-on evaluation run is named in step"
    );
    assert!(named(64), "with a long window the test shows nothing");
}

/// Attack accounts named by cluster alerts in `alerts`.
fn cluster_named(alerts: &[Alert], labels: &[crate::sim::Label]) -> usize {
    let attack: std::collections::BTreeSet<&str> = labels
        .iter()
        .filter(|l| l.attack)
        .map(|l| l.account_id.as_str())
        .collect();
    let named: std::collections::BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a.kind == Kind::FakeAccountCluster)
        .flat_map(|a| a.accounts.iter().map(|s| s.as_str()))
        .filter(|a| attack.contains(a))
        .collect();
    named.len()
}

/// Three hours of every family (seed 3, scale 0.3), and one engine's alerts on them: what the
/// staged topologies are compared with.
fn one_engine_on_mixed_traffic() -> (
    Vec<Event>,
    Vec<crate::sim::Label>,
    Arc<crate::config::ValidConfig>,
    Engine,
    Vec<Alert>,
) {
    let (events, labels) = simulated(crate::sim::SimOptions {
        seed: 3,
        scale: 0.3,
        hours: 3.0,
        ..Default::default()
    });
    let cfg = Arc::new(Config::default().validate().expect("valid config"));
    let mut one = Engine::new(cfg.clone());
    let mut want = Vec::new();
    for e in &events {
        one.process(e, &mut want);
    }
    (events, labels, cfg, one, want)
}

/// The staged topology in one process (`account` engines keyed by account, one `link`
/// engine fed their observations) is the same detector: with one account engine it is the
/// single engine byte for byte; with several it still sees clusters whole, where engines
/// that each see only their accounts' share of the traffic lose the members spread over the
/// others.
#[test]
fn staged_engines_detect_clusters_whole_at_any_account_instance_count() {
    let (events, labels, cfg, one, want) = one_engine_on_mixed_traffic();
    let mut staged = staged::Staged::new(cfg.clone(), 1);
    let mut got = Vec::new();
    for e in &events {
        staged.process(e, &mut got);
    }
    assert_eq!(got, want, "one account engine: the single engine's alerts");
    assert_eq!(staged.stats(), *one.stats());

    let n = 4;
    let mut staged = staged::Staged::new(cfg.clone(), n);
    let mut split: Vec<Engine> = (0..n).map(|_| Engine::new(cfg.clone())).collect();
    let (mut got, mut apart) = (Vec::new(), Vec::new());
    for e in &events {
        staged.process(e, &mut got);
        split[staged::partition(&e.account_id, n)].process(e, &mut apart);
    }
    let base = crate::eval::evaluate(&want, &labels);
    let four = crate::eval::evaluate(&got, &labels);
    let (r1, r4) = (base.recall.expect("attacks"), four.recall.expect("attacks"));
    let (p1, p4) = (
        base.precision.expect("flags"),
        four.precision.expect("flags"),
    );
    assert!((r4 - r1).abs() <= 0.01, "recall {r1:.3} -> {r4:.3}");
    assert!(p4 >= p1 - 0.005, "precision {p1:.3} -> {p4:.3}");
    let (whole, cut) = (cluster_named(&got, &labels), cluster_named(&apart, &labels));
    let single = cluster_named(&want, &labels);
    assert!(
        whole as f64 >= 0.99 * single as f64,
        "{whole} of {single} named"
    );
    assert!(
        (cut as f64) < 0.95 * single as f64,
        "the traffic should hold clusters a split loses ({cut} of {single})"
    );
}

/// Link shards keyed by linking value, with a cluster stage assembling their records, are the
/// same detector as one engine: on the same traffic they flag the same attack accounts
/// (recall within 1 point, precision within 0.5), every cluster alert explains its links
/// from the snapshots the records carried, each attribute value is indexed by one shard
/// only, and no shard holds more than a fair share of them.
#[test]
fn link_shards_and_a_cluster_stage_flag_what_one_engine_flags() {
    let (events, labels, cfg, one, want) = one_engine_on_mixed_traffic();
    let shards = 3;
    let mut staged = staged::Staged::sharded(cfg.clone(), 3, shards);
    let mut got = Vec::new();
    for e in &events {
        staged.process(e, &mut got);
    }
    let base = crate::eval::evaluate(&want, &labels);
    let sharded = crate::eval::evaluate(&got, &labels);
    let (r1, r3) = (
        base.recall.expect("attacks"),
        sharded.recall.expect("attacks"),
    );
    let (p1, p3) = (
        base.precision.expect("flags"),
        sharded.precision.expect("flags"),
    );
    assert!((r3 - r1).abs() <= 0.01, "recall {r1:.3} -> {r3:.3}");
    assert!(p3 >= p1 - 0.005, "precision {p1:.3} -> {p3:.3}");
    let (whole, single) = (cluster_named(&got, &labels), cluster_named(&want, &labels));
    assert!(
        whole as f64 >= 0.99 * single as f64,
        "{whole} of {single} named"
    );
    let clusters = cluster_alerts(&got);
    assert!(clusters.len() >= 5, "{} cluster alerts", clusters.len());
    for a in clusters {
        let ev = &a.evidence;
        let shared = ev["shared_attributes"].as_array().map_or(0, Vec::len);
        let waves = ev["co_activity"]["waves"].as_array().map_or(0, Vec::len);
        assert!(shared + waves > 0, "{} shows no link", a.subject);
        assert!(
            ev["output_tokens_1h"].as_u64().unwrap_or(0) > 0,
            "{}",
            a.subject
        );
    }
    // Values are split between the shards, not copied to each.
    let held: Vec<usize> = staged
        .links()
        .iter()
        .map(|e| e.gauges().attribute_values)
        .collect();
    let total: usize = held.iter().sum();
    let alone = one.gauges().attribute_values;
    assert!(
        total as f64 <= 1.05 * alone as f64,
        "the shards index {total} values, one engine {alone}"
    );
    for h in held {
        assert!(
            (h as f64) < 0.6 * total as f64,
            "a shard holds {h} of {total} values"
        );
    }
}

/// A campaign whose accounts alternate between two models, firing in waves: with link
/// shards, its co-activity evidence is whole on one shard, so the sharded topology names as
/// many of its accounts as one engine. (Split by model, each shard held half of every
/// account's waves, and 16 of these 63 accounts were named instead of 62.)
#[test]
fn link_shards_keep_the_co_activity_of_accounts_that_switch_models() {
    // Without prompt text, so that nothing but timing links the campaign's accounts.
    let (events, labels) = crate::sim::decoded_with(
        &crate::sim::SimOptions {
            seed: 4,
            scale: 0.15,
            hours: 1.0,
            ..Default::default()
        },
        true,
    );
    let lockstep: std::collections::BTreeSet<&str> = labels
        .iter()
        .filter(|l| l.family == "lockstep")
        .map(|l| l.account_id.as_str())
        .collect();
    let models: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| lockstep.contains(e.account_id.as_str()))
        .filter_map(|e| e.model.as_deref())
        .collect();
    assert!(models.len() >= 2, "the campaign uses {models:?}");
    let cfg = Arc::new(Config::default().validate().expect("valid config"));
    let named = |alerts: &[Alert]| {
        alerts
            .iter()
            .filter(|a| a.kind == Kind::FakeAccountCluster)
            .flat_map(|a| a.accounts.iter())
            .filter(|a| lockstep.contains(a.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let mut one = Engine::new(cfg.clone());
    let want = run(&mut one, &events);
    let mut staged = staged::Staged::sharded(cfg, 1, 3);
    let mut got = Vec::new();
    for e in &events {
        staged.process(e, &mut got);
    }
    let (n1, n3) = (named(&want), named(&got));
    assert!(
        n1 * 10 >= lockstep.len() * 9,
        "{n1} of {} in one engine",
        lockstep.len()
    );
    assert!(
        n3 + lockstep.len() / 100 >= n1,
        "{n3} named with shards, {n1} in one engine"
    );
}

/// Whether an account keeps to the clock (a customer's scheduled job, never linked) is judged
/// on all of its runs, which the account stage counts: a link shard that starts seeing the
/// account's observations late (it took up a value the shard owns) knows them too.
#[test]
fn a_link_shard_knows_an_accounts_runs_from_the_account_stage() {
    let cfg = Arc::new(Config::default().validate().expect("valid config"));
    let mut account = Engine::new(cfg.clone()).with_role(Role::Account);
    let mut out = Vec::new();
    let mut last = None;
    // Six runs, an hour apart, each starting on the round minute.
    for run in 0..6i64 {
        for k in 0..5i64 {
            let id = (run * 5 + k) as u64;
            let e = extraction(id, T0 + run * 3_600_000 + k * 10_000, "acct_job");
            account.process(&e, &mut out);
            last = account.take_observation().map(|o| (e, o));
        }
    }
    let (e, obs) = last.expect("an observation");
    assert_eq!(obs.runs.runs, 6, "{:?}", obs.runs);
    assert_eq!(obs.runs.clock_runs, 6, "{:?}", obs.runs);
    let mut shard = Engine::new(cfg).with_shard(Shard { index: 0, of: 3 });
    shard.observe(&e, &obs, &mut out);
    let acc = shard
        .accounts
        .get(&account_key("acct_job"))
        .expect("a shadow record");
    assert_eq!(acc.presence.runs(), obs.runs);
}

/// An address is routed to the shard of its /24 or /64 (which judges how the block's holders
/// crowd onto one address), a creation minute to the shard of its hour (whose sign-ups are
/// the minute's baseline); other values by their own key.
#[test]
fn values_route_with_their_block_and_their_hour() {
    let ip = |s: &str| Value::Ip(s.parse().expect("address"));
    let carried = |kind, value: Value| Carried {
        kind,
        key: 7,
        value,
        added: true,
        evicted: None,
    };
    // A block's own route is its index key, which the account stage computed.
    let prefix = |s: &str| ip_keys(&s.parse().expect("address")).1;
    for of in [2, 3, 12] {
        for (a, b) in [
            ("10.1.2.3", "10.1.2.200"),
            ("2001:db8::1", "2001:db8::ffff"),
        ] {
            let (ra, rb) = (
                route(&carried(AttrKind::Ip, ip(a)), None),
                route(&carried(AttrKind::Ip, ip(b)), None),
            );
            assert_eq!(Shard::owner(ra, of), Shard::owner(rb, of), "{a} and {b}");
            assert_eq!(ra, prefix(a), "{a} goes with its block");
        }
    }
    let minute = |created: i64| {
        route(
            &carried(AttrKind::Creation, Value::Minute(created / 60_000)),
            Some(created),
        )
    };
    let hour = T0 - T0.rem_euclid(3_600_000);
    assert_eq!(minute(hour + 60_000), minute(hour + 3_540_000));
    let other = carried(AttrKind::Payment, Value::Text(AttrKind::Payment));
    assert_eq!(route(&other, None), 7);
    // Over many blocks, every shard owns some.
    let mut owned = [0u32; 3];
    for b in 0..300u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 | (b << 8) | 1);
        owned[Shard::owner(route(&carried(AttrKind::Ip, Value::Ip(a.into())), None), 3)] += 1;
    }
    assert!(owned.iter().all(|&n| n > 60), "{owned:?}");
}

/// Every cluster alert shows what links it: a shared value or co-activity waves. A campaign
/// firing in waves for hours outlives its first waves (forgotten after
/// `cohort.baseline_secs`), and its later updates must still show the waves that linked its
/// newest members.
#[test]
fn every_update_of_a_long_lived_cluster_explains_its_links() {
    let (events, _) = simulated(crate::sim::SimOptions {
        scenario: "timing_lockstep".to_string(),
        seed: 3,
        scale: 0.5,
        hours: 6.0,
        ..Default::default()
    });
    let mut e = engine();
    let alerts = run(&mut e, &events);
    let clusters = cluster_alerts(&alerts);
    assert!(clusters.len() >= 10, "{} cluster alerts", clusters.len());
    let last = clusters.last().expect("a cluster alert");
    let hours = (crate::event::time::parse_rfc3339_ms(&last.detected_at).expect("time")
        - crate::event::time::parse_rfc3339_ms(&clusters[0].detected_at).expect("time"))
        as f64
        / 3_600_000.0;
    assert!(hours >= 2.0, "the alerts span {hours:.1} h");
    for a in clusters {
        let ev = &a.evidence;
        let shared = ev["shared_attributes"].as_array().map_or(0, Vec::len);
        let waves = ev["co_activity"]["waves"].as_array().map_or(0, Vec::len);
        assert!(
            shared + waves > 0,
            "{} at {} ({} accounts, {} linking values) shows no link",
            a.subject,
            a.detected_at,
            ev["cluster_size"],
            ev["linking_values"]
        );
    }
}
