//! The family generators. Every parameter is drawn per seed from a wide range so that a
//! detector tuned on one seed cannot memorise a constant; ranges follow the design brief.

use super::infra::{self, Device, NetKind};
use super::prompts::{self, BatchTemplate, OrgTemplate, Scaffold};
use super::rng::{
    chance, exp_gap, int, log_normal, log_unif, pick, sample_indices, unif, usize_in, SimRng,
};
use super::{count, groups, Ctx, DAY, HOUR, M1, M2, M2_LITE, M3, MIN, SEC};
use compact_str::CompactString;
use rand::Rng;

mod evasive;

/// A group's size: log-uniform in `lo..hi` so small groups are as likely as large ones per
/// decade, shrunk by `sf` (from [`groups`]) and never below `floor`.
fn group_size(rng: &mut SimRng, lo: f64, hi: f64, sf: f64, floor: usize) -> usize {
    ((log_unif(rng, lo, hi) * sf).round() as usize).max(floor)
}

pub(crate) fn run(fam: &str, c: &mut Ctx) {
    match fam {
        "ordinary" => ordinary(c),
        "household" => household(c),
        "cgnat" => cgnat(c),
        "enterprise" => enterprise(c),
        "classroom" => classroom(c),
        "batch" => batch(c),
        "eval_run" => eval_run(c),
        "agentic" => agentic(c),
        "signup_wave" => signup_wave(c),
        "single_harvester" => single_harvester(c),
        "hydra" => hydra(c),
        "low_rate_swarm" => low_rate_swarm(c),
        "lockstep" => lockstep(c),
        "aged_takeover" => aged_takeover(c),
        "quickstart_crowd" => evasive::quickstart_crowd(c),
        "hackathon" => evasive::hackathon(c),
        "app_backend" => evasive::app_backend(c),
        "scheduled_jobs" => evasive::scheduled_jobs(c),
        "cover_harvester" => evasive::cover_harvester(c),
        "paraphrase_swarm" => evasive::paraphrase_swarm(c),
        "rotating_hydra" => evasive::rotating_hydra(c),
        "timing_lockstep" => evasive::timing_lockstep(c),
        "dc_proxy_pool" => evasive::dc_proxy_pool(c),
        "slow_takeover" => evasive::slow_takeover(c),
        _ => {}
    }
}

// ---------------------------------------------------------------- shared building blocks

enum Pay {
    Auto,
    Own,
    Nothing,
    Shared(CompactString),
}

struct Persona {
    acct: u32,
    nets: Vec<u32>,
    dev: u32,
    api: bool,
}

struct PersonaSpec {
    age_days: (f64, f64),
    api_share: f64,
    nets: Option<Vec<u32>>,
    email: Option<CompactString>,
    pay: Pay,
    created: Option<i64>,
}

impl Default for PersonaSpec {
    fn default() -> Self {
        PersonaSpec {
            age_days: (1.0, 2500.0),
            api_share: 0.2,
            nets: None,
            email: None,
            pay: Pay::Auto,
            created: None,
        }
    }
}

fn persona(c: &mut Ctx, spec: PersonaSpec) -> Persona {
    let api = chance(&mut c.rng, spec.api_share);
    let created = spec.created.unwrap_or_else(|| {
        let age = log_unif(
            &mut c.rng,
            spec.age_days.0.max(0.01),
            spec.age_days.1.max(0.02),
        );
        c.start() - (age * DAY as f64) as i64
    });
    let payment = match spec.pay {
        Pay::Auto => {
            let p = if api { 0.85 } else { 0.5 };
            chance(&mut c.rng, p).then(|| infra::payment_fp(&mut c.rng))
        }
        Pay::Own => Some(infra::payment_fp(&mut c.rng)),
        Pay::Nothing => None,
        Pay::Shared(s) => Some(s),
    };
    let email = spec
        .email
        .unwrap_or_else(|| infra::person_email(&mut c.rng));
    let acct = c.add_account(created, None, payment, email);
    let nets = match spec.nets {
        Some(n) => n,
        None => {
            let kind = if chance(&mut c.rng, 0.75) {
                NetKind::Residential
            } else {
                NetKind::Mobile
            };
            let mut v = vec![new_net(c, kind)];
            if chance(&mut c.rng, 0.3) {
                let other = if kind == NetKind::Mobile {
                    NetKind::Residential
                } else {
                    NetKind::Mobile
                };
                v.push(new_net(c, other));
            }
            v
        }
    };
    let d = if api {
        infra::api_device(&mut c.rng)
    } else {
        infra::browser_device(&mut c.rng)
    };
    let dev = c.add_dev(d);
    Persona {
        acct,
        nets,
        dev,
        api,
    }
}

fn new_net(c: &mut Ctx, kind: NetKind) -> u32 {
    let n = infra::random_net(&mut c.rng, kind);
    c.add_net(n)
}

fn new_dev(c: &mut Ctx, d: Device) -> u32 {
    c.add_dev(d)
}

fn pick_net(rng: &mut SimRng, nets: &[u32]) -> u32 {
    nets[rng.gen_range(0..nets.len())]
}

/// Human think time between turns, 20 s to 5 min, log-normal.
fn think_ms(rng: &mut SimRng) -> i64 {
    (log_normal(rng, 55.0, 0.7).clamp(20.0, 300.0) * SEC as f64) as i64
}

/// Generation latency for an answer of `out` tokens.
fn latency_ms(rng: &mut SimRng, out: i64) -> i64 {
    (out as f64 / unif(rng, 35.0, 110.0) * SEC as f64) as i64 + int(rng, 300, 1500)
}

struct Chat<'p> {
    acct: u32,
    nets: &'p [u32],
    dev: u32,
    out_median: f64,
}

/// One multi-turn chat session; `prompt(rng, turn)` writes the user message for each turn.
fn chat_session(
    c: &mut Ctx,
    ch: &Chat,
    start: i64,
    turns: u32,
    prompt: &mut dyn FnMut(&mut SimRng, u32) -> String,
) -> i64 {
    let mut t = start;
    let mut context: i64 = c.int(0, 400);
    let model = c.human_model(start);
    let net = pick_net(&mut c.rng, ch.nets);
    for turn in 1..=turns {
        let text = prompt(&mut c.rng, turn);
        let tok = c.tokens(&text);
        let out = log_normal(&mut c.rng, ch.out_median, 0.8).clamp(8.0, 3500.0) as i64;
        let status = c.status(0.004);
        context += tok;
        c.emit(
            t, ch.acct, net, ch.dev, model, false, turn, context, out, status, text,
        );
        context += out;
        t += latency_ms(&mut c.rng, out) + think_ms(&mut c.rng);
    }
    t
}

fn chat_turns(rng: &mut SimRng, mean_extra: f64) -> u32 {
    1 + (exp_gap(rng, mean_extra).floor() as u32).min(25)
}

fn generic_prompt(rng: &mut SimRng, turn: u32) -> String {
    if turn == 1 || chance(rng, 0.15) {
        prompts::benign_prompt(rng)
    } else {
        prompts::followup(rng)
    }
}

/// Ordinary human activity in `[from, to)`: chat sessions for most, modest single-turn API
/// use for developer accounts.
fn human_activity(c: &mut Ctx, p: &Persona, from: i64, to: i64, sessions: (usize, usize)) {
    if to <= from {
        return;
    }
    let hours = (to - from) as f64 / HOUR as f64;
    let sess_scale = (hours / 6.0).max(0.17);
    if p.api {
        let periods = (usize_in(&mut c.rng, 1, 4) as f64 * sess_scale)
            .round()
            .max(1.0) as usize;
        let rate_per_min = log_unif(&mut c.rng, 0.15, 3.0);
        let multi = chance(&mut c.rng, 0.2);
        let model = if chance(&mut c.rng, 0.2) { M1 } else { M2 };
        for _ in 0..periods {
            let ps = c.int(from, to);
            let dur = (unif(&mut c.rng, 5.0, 90.0) * MIN as f64) as i64;
            let mut t = ps;
            let mut turn = 1u32;
            while t < ps + dur {
                let text = if turn > 1 {
                    prompts::followup(&mut c.rng)
                } else {
                    prompts::benign_prompt(&mut c.rng)
                };
                let tok = c.tokens(&text) + c.int(0, 600);
                let out = log_normal(&mut c.rng, 260.0, 0.9).clamp(5.0, 4000.0) as i64;
                let st = c.status(0.01);
                let net = pick_net(&mut c.rng, &p.nets);
                c.emit(
                    t, p.acct, net, p.dev, model, false, turn, tok, out, st, text,
                );
                turn = if multi && turn < 5 && chance(&mut c.rng, 0.6) {
                    turn + 1
                } else {
                    1
                };
                t += (exp_gap(&mut c.rng, 60.0 / rate_per_min) * SEC as f64) as i64 + 200;
            }
        }
    }
    if !p.api || chance(&mut c.rng, 0.3) {
        let n = (usize_in(&mut c.rng, sessions.0, sessions.1) as f64 * sess_scale)
            .round()
            .max(1.0) as usize;
        let ch = Chat {
            acct: p.acct,
            nets: &p.nets,
            dev: p.dev,
            out_median: log_unif(&mut c.rng, 150.0, 600.0),
        };
        for _ in 0..n {
            let st = c.int(from, to);
            let turns = chat_turns(&mut c.rng, 3.0);
            chat_session(c, &ch, st, turns, &mut generic_prompt);
        }
    }
}

/// An extraction campaign: fixed scaffolds, broad payloads.
struct Campaign {
    scaffolds: Vec<Scaffold>,
    reasoning_p: f64,
    out_median: f64,
    /// Share of requests reworded so that no wrapper repeats (evasion knob).
    paraphrase_p: f64,
}

impl Campaign {
    fn new(rng: &mut SimRng, n_lo: usize, n_hi: usize) -> Campaign {
        let n = usize_in(rng, n_lo, n_hi);
        Campaign {
            scaffolds: (0..n).map(|_| Scaffold::random(rng)).collect(),
            reasoning_p: unif(rng, 0.8, 1.0),
            out_median: unif(rng, 800.0, 2400.0),
            paraphrase_p: 0.0,
        }
    }

    /// A campaign that rewords a share of its requests.
    fn reworded(rng: &mut SimRng, n_lo: usize, n_hi: usize, paraphrase_p: f64) -> Campaign {
        let mut c = Campaign::new(rng, n_lo, n_hi);
        c.paraphrase_p = paraphrase_p;
        c
    }

    fn text(&self, rng: &mut SimRng) -> String {
        if self.paraphrase_p > 0.0 && chance(rng, self.paraphrase_p) {
            return super::paraphrase::reasoning_prompt(rng);
        }
        let s = &self.scaffolds[rng.gen_range(0..self.scaffolds.len())];
        let reasoning = chance(rng, self.reasoning_p);
        s.render(rng, reasoning)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(&self, c: &mut Ctx, ts: i64, acct: u32, net: u32, dev: u32, model: u8, p429: f64) {
        let text = self.text(&mut c.rng);
        let tok = c.tokens(&text) + c.int(0, 30);
        let out = log_normal(&mut c.rng, self.out_median, 0.45).clamp(500.0, 4000.0) as i64;
        let st = c.status(p429);
        c.emit(ts, acct, net, dev, model, true, 1, tok, out, st, text);
    }
}

/// Machine-paced request times: roughly regular gaps with jitter and occasional restarts.
fn machine_times(rng: &mut SimRng, from: i64, to: i64, rate_per_s: f64, jitter: f64) -> Vec<i64> {
    let mut v = Vec::new();
    let base = 1000.0 / rate_per_s;
    let mut t = from as f64;
    while (t as i64) < to {
        v.push(t as i64);
        t += base * unif(rng, 1.0 - jitter, 1.0 + jitter);
        if chance(rng, 1.0 / 3000.0) {
            t += unif(rng, 30.0, 600.0) * 1000.0;
        }
    }
    v
}

/// Attackers move to the newest model once it exists, some immediately.
fn attack_model(c: &mut Ctx, ts: i64, pivots: bool, base: u8) -> u8 {
    if pivots && ts >= c.w.m3_release {
        M3
    } else {
        base
    }
}

/// Time of day as a working-hours weight for an organisation's local clock.
fn business_weight(ts: i64, tz_min: i64) -> f64 {
    let local = ts + tz_min * MIN;
    let h = local.rem_euclid(DAY) / HOUR;
    let dow = (local.div_euclid(DAY) + 4).rem_euclid(7); // 0 = Sunday
    if (1..=5).contains(&dow) && (9..18).contains(&h) {
        1.0
    } else {
        0.06
    }
}

fn business_time(c: &mut Ctx, tz_min: i64) -> i64 {
    let mut t = c.int(c.start(), c.end() - 1);
    for _ in 0..40 {
        if chance(&mut c.rng, business_weight(t, tz_min)) {
            return t;
        }
        t = c.int(c.start(), c.end() - 1);
    }
    t
}

// ---------------------------------------------------------------- benign families

fn ordinary(c: &mut Ctx) {
    let n = count(&mut c.rng, 1700.0, 2300.0, c.scale);
    for _ in 0..n {
        let p = persona(c, PersonaSpec::default());
        let (from, to) = (c.start(), c.end());
        human_activity(c, &p, from, to, (1, 5));
    }
}

fn household(c: &mut Ctx) {
    let n = count(&mut c.rng, 35.0, 65.0, c.scale);
    for _ in 0..n {
        let home = new_net(c, NetKind::Residential);
        let members = usize_in(&mut c.rng, 2, 5);
        let shared = chance(&mut c.rng, 0.35).then(|| infra::payment_fp(&mut c.rng));
        let fam_domain = chance(&mut c.rng, 0.15).then(|| infra::company_domain(&mut c.rng));
        for _ in 0..members {
            let mut nets = vec![home];
            if chance(&mut c.rng, 0.3) {
                nets.push(new_net(c, NetKind::Mobile));
            }
            let pay = match &shared {
                Some(s) if chance(&mut c.rng, 0.8) => Pay::Shared(s.clone()),
                _ => Pay::Auto,
            };
            let spec = PersonaSpec {
                api_share: 0.1,
                nets: Some(nets),
                email: fam_domain.clone().filter(|_| chance(&mut c.rng, 0.7)),
                pay,
                ..PersonaSpec::default()
            };
            let p = persona(c, spec);
            let (from, to) = (c.start(), c.end());
            human_activity(c, &p, from, to, (1, 5));
        }
    }
}

fn cgnat(c: &mut Ctx) {
    let (pools, _) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..pools {
        let campus = chance(&mut c.rng, 0.4);
        let n_ips = usize_in(&mut c.rng, 2, 8);
        let mut nets = Vec::new();
        if campus {
            let country = pick(&mut c.rng, &["US", "GB", "DE", "CA", "AU"]);
            let block = infra::org_block(&mut c.rng, country);
            for _ in 0..n_ips {
                let n = infra::in_block(&mut c.rng, &block);
                nets.push(c.add_net(n));
            }
        } else {
            let isp = infra::pick_isp(&mut c.rng, NetKind::Mobile);
            let block = infra::block24(&mut c.rng, isp);
            for _ in 0..n_ips {
                let n = infra::in_block(&mut c.rng, &block);
                nets.push(c.add_net(n));
            }
        }
        let uni = campus.then(|| infra::university_domain(&mut c.rng));
        let members =
            ((log_unif(&mut c.rng, 30.0, 600.0) * c.scale / pools as f64).round() as usize).max(3);
        for _ in 0..members {
            let email = uni.clone().filter(|_| chance(&mut c.rng, 0.5));
            let spec = PersonaSpec {
                nets: Some(nets.clone()),
                email,
                ..PersonaSpec::default()
            };
            let p = persona(c, spec);
            let (from, to) = (c.start(), c.end());
            human_activity(c, &p, from, to, (1, 4));
        }
    }
}

fn enterprise(c: &mut Ctx) {
    let (orgs, sf) = groups(&mut c.rng, 2.0, 5.0, c.scale);
    for _ in 0..orgs {
        let tz_min = pick(&mut c.rng, &[-480i64, -300, 0, 60, 330, 480, 540, 600]);
        let company = pick(&mut c.rng, super::words::COMPANY_WORDS);
        let domain = infra::company_domain(&mut c.rng);
        let org = infra::org_id(&mut c.rng);
        let card = infra::payment_fp(&mut c.rng);
        let egress_kind = if chance(&mut c.rng, 0.5) {
            NetKind::Hosting
        } else {
            NetKind::Residential
        };
        let n_egress = usize_in(&mut c.rng, 1, 2);
        let egress: Vec<u32> = (0..n_egress).map(|_| new_net(c, egress_kind)).collect();
        let proxy_fp = infra::random_ja4(&mut c.rng);
        let templates: Vec<OrgTemplate> = (0..usize_in(&mut c.rng, 2, 5))
            .map(|_| OrgTemplate::random(&mut c.rng, company))
            .collect();
        let org_age = unif(&mut c.rng, 30.0, 900.0);
        let members = group_size(&mut c.rng, 5.0, 300.0, sf, 3);
        let org_cov = unif(&mut c.rng, 0.93, 1.0);
        for _ in 0..members {
            let age = unif(&mut c.rng, 30.0_f64.min(org_age), org_age);
            let created = c.start() - (age * DAY as f64) as i64;
            let org_id = chance(&mut c.rng, org_cov).then(|| org.clone());
            let acct = c.add_account(created, org_id, Some(card.clone()), domain.clone());
            let base = if chance(&mut c.rng, 0.6) {
                infra::browser_device(&mut c.rng)
            } else {
                infra::sdk_device(&mut c.rng)
            };
            let dev = new_dev(
                c,
                Device {
                    fp: proxy_fp.clone(),
                    ua: base.ua,
                },
            );
            if chance(&mut c.rng, 0.3) {
                // A service integration: templated single-turn calls in working hours.
                let tpl = templates[c.rng.gen_range(0..templates.len())].clone();
                let rate_h = log_unif(&mut c.rng, 5.0, 60.0);
                let mut t = c.start() + (exp_gap(&mut c.rng, 3600.0 / rate_h) * SEC as f64) as i64;
                while t < c.end() {
                    if chance(&mut c.rng, business_weight(t, tz_min)) {
                        let text = tpl.render(&mut c.rng);
                        let tok = c.tokens(&text) + c.int(100, 900);
                        let out = log_normal(&mut c.rng, 220.0, 0.6).clamp(20.0, 1500.0) as i64;
                        let st = c.status(0.005);
                        let net = pick_net(&mut c.rng, &egress);
                        c.emit(t, acct, net, dev, M2, false, 1, tok, out, st, text);
                    }
                    t += (exp_gap(&mut c.rng, 3600.0 / rate_h) * SEC as f64) as i64;
                }
            } else {
                let n = usize_in(&mut c.rng, 1, 6);
                let ch = Chat {
                    acct,
                    nets: &egress,
                    dev,
                    out_median: log_unif(&mut c.rng, 150.0, 500.0),
                };
                for _ in 0..n {
                    let st = business_time(c, tz_min);
                    let turns = chat_turns(&mut c.rng, 2.5);
                    let tpl = templates[c.rng.gen_range(0..templates.len())].clone();
                    let templated = chance(&mut c.rng, 0.6);
                    chat_session(c, &ch, st, turns, &mut |rng, turn| {
                        if turn == 1 && templated {
                            tpl.render(rng)
                        } else {
                            generic_prompt(rng, turn)
                        }
                    });
                }
            }
        }
    }
}

fn classroom(c: &mut Ctx) {
    let (classes, sf) = groups(&mut c.rng, 1.0, 3.0, c.scale);
    for _ in 0..classes {
        let span = c.span();
        let class_start = c.start() + c.int(span / 8, (span - 75 * MIN).max(span / 8 + 1));
        let class_len = c.int(45 * MIN, 90 * MIN);
        let created_span = c.int(HOUR, 2 * HOUR);
        let created_end = class_start - c.int(0, HOUR);
        let domain = infra::university_domain(&mut c.rng);
        let country = pick(&mut c.rng, &["US", "GB", "CA", "AU", "DE"]);
        let block = infra::org_block(&mut c.rng, country);
        let ips: Vec<u32> = (0..usize_in(&mut c.rng, 1, 3))
            .map(|_| {
                let n = infra::in_block(&mut c.rng, &block);
                c.add_net(n)
            })
            .collect();
        let n_problems = usize_in(&mut c.rng, 3, 6);
        let problems = prompts::assignment(&mut c.rng, n_problems);
        // Everyone starts from the same handout, pasted verbatim by most of the class.
        let handout = prompts::handout(&mut c.rng, &problems[0]);
        let copy_p = unif(&mut c.rng, 0.6, 1.0);
        let n = group_size(&mut c.rng, 5.0, 200.0, sf, 4);
        for _ in 0..n {
            let created = created_end - c.int(0, created_span);
            let pay = if chance(&mut c.rng, 0.15) {
                Some(infra::payment_fp(&mut c.rng))
            } else {
                None
            };
            let acct = c.add_account(created, None, pay, domain.clone());
            let d = if chance(&mut c.rng, 0.85) {
                infra::browser_device(&mut c.rng)
            } else {
                infra::sdk_device(&mut c.rng)
            };
            let dev = new_dev(c, d);
            let ip = vec![pick_net(&mut c.rng, &ips)];
            let target = usize_in(&mut c.rng, 5, 40);
            let ch = Chat {
                acct,
                nets: &ip,
                dev,
                out_median: unif(&mut c.rng, 250.0, 700.0),
            };
            let mut t = class_start + c.int(0, 10 * MIN);
            let mut sent = 0;
            let mut pi = 0;
            let copies = chance(&mut c.rng, copy_p);
            while sent < target && t < class_start + class_len {
                let turns = (usize_in(&mut c.rng, 1, 8).min(target - sent)) as u32;
                let prob = problems[pi % problems.len()].clone();
                let first = (pi == 0 && copies).then(|| handout.clone());
                t = chat_session(c, &ch, t, turns, &mut |rng, turn| {
                    if turn == 1 {
                        first
                            .clone()
                            .unwrap_or_else(|| prompts::student_prompt(rng, &prob))
                    } else {
                        prompts::student_followup(rng)
                    }
                });
                sent += turns as usize;
                pi += 1;
                t += think_ms(&mut c.rng);
            }
        }
    }
}

fn batch(c: &mut Ctx) {
    let n = count(&mut c.rng, 3.0, 10.0, c.scale);
    for _ in 0..n {
        let created = c.start() - (unif(&mut c.rng, 200.0, 2000.0) * DAY as f64) as i64;
        let org = chance(&mut c.rng, 0.5).then(|| infra::org_id(&mut c.rng));
        let pay = Some(infra::payment_fp(&mut c.rng));
        let email = infra::company_domain(&mut c.rng);
        let acct = c.add_account(created, org, pay, email);
        let nets: Vec<u32> = (0..usize_in(&mut c.rng, 1, 2))
            .map(|_| new_net(c, NetKind::Hosting))
            .collect();
        let d = infra::api_device(&mut c.rng);
        let dev = new_dev(c, d);
        let tpl = BatchTemplate::random(&mut c.rng);
        let system = c.int(150, 1500);
        // Skewed toward the low end of 0.2-5 req/s: a few very large customers, many modest ones.
        let u: f64 = c.rng.gen();
        let rate = 0.2 * 25f64.powf(u * u);
        let model = pick(&mut c.rng, &[M2, M2_LITE, M1, M2]);
        let mut t = c.start() + c.int(0, 2 * MIN);
        while t < c.end() {
            let text = tpl.render(&mut c.rng);
            let tok = c.tokens(&text) + system;
            let out = log_normal(&mut c.rng, 60.0, 0.6).clamp(3.0, 400.0) as i64;
            let st = c.status(0.015);
            let net = pick_net(&mut c.rng, &nets);
            c.emit(t, acct, net, dev, model, false, 1, tok, out, st, text);
            t += (exp_gap(&mut c.rng, 1000.0 / rate)) as i64 + 1;
        }
    }
}

fn eval_run(c: &mut Ctx) {
    let n = count(&mut c.rng, 3.0, 10.0, c.scale);
    for _ in 0..n {
        let spec = PersonaSpec {
            age_days: (60.0, 1500.0),
            api_share: 1.0,
            pay: Pay::Own,
            ..PersonaSpec::default()
        };
        let mut p = persona(c, spec);
        if chance(&mut c.rng, 0.5) {
            p.nets = vec![new_net(c, NetKind::Hosting)];
        }
        let (from, to) = (c.start(), c.end());
        human_activity(c, &p, from, to, (1, 2));
        // A benchmark harness: 0.1-0.5 requests/s for 1-3 hours, spread over a few workers.
        let rate = unif(&mut c.rng, 0.1, 0.5);
        let dur = c.int(HOUR, 3 * HOUR);
        let conc = usize_in(&mut c.rng, 1, 8);
        let run_start = c.int(c.start(), (c.end() - dur).max(c.start() + 1));
        let total = (rate * dur as f64 / SEC as f64).round() as usize;
        let per_worker = total.div_ceil(conc);
        let mean_gap = dur as f64 / per_worker.max(1) as f64;
        let model = if chance(&mut c.rng, 0.5) {
            M2
        } else {
            attack_model(c, run_start, true, M2)
        };
        let out_med = unif(&mut c.rng, 300.0, 900.0);
        let mut left = total;
        for _ in 0..conc {
            let mut t = run_start + c.int(0, 3 * SEC);
            for _ in 0..per_worker.min(left) {
                let text = prompts::benchmark_question(&mut c.rng);
                let tok = c.tokens(&text);
                let out = log_normal(&mut c.rng, out_med, 0.5).clamp(30.0, 2500.0) as i64;
                let st = c.status(0.02);
                c.emit(
                    t, p.acct, p.nets[0], p.dev, model, false, 1, tok, out, st, text,
                );
                t += (log_normal(&mut c.rng, mean_gap, 0.35)) as i64;
            }
            left = left.saturating_sub(per_worker);
        }
    }
}

fn agentic(c: &mut Ctx) {
    let n = count(&mut c.rng, 5.0, 20.0, c.scale);
    for _ in 0..n {
        let spec = PersonaSpec {
            age_days: (10.0, 1500.0),
            api_share: 0.0,
            pay: Pay::Own,
            ..PersonaSpec::default()
        };
        let p = persona(c, spec);
        let (from, to) = (c.start(), c.end());
        human_activity(c, &p, from, to, (0, 2));
        let d = infra::sdk_device(&mut c.rng);
        let dev = new_dev(c, d);
        let bursts = usize_in(&mut c.rng, 1, 3);
        let model = if chance(&mut c.rng, 0.5) { M2 } else { M3 };
        for _ in 0..bursts {
            let dur = c.int(10 * MIN, 40 * MIN);
            let reqs = usize_in(&mut c.rng, 50, 400);
            let mean_gap = dur as f64 / reqs as f64;
            let mut t = c.int(c.start(), c.end() - 1);
            let mut turn = 1u32;
            let mut max_turn = usize_in(&mut c.rng, 10, 80) as u32;
            let mut ctx_tok = c.int(3000, 20_000);
            let per_turn = c.int(500, 3000);
            for _ in 0..reqs {
                let text = prompts::agent_message(&mut c.rng, i64::from(turn));
                let tok = c.tokens(&text);
                ctx_tok = (ctx_tok + tok + per_turn).min(190_000);
                let out = log_normal(&mut c.rng, 450.0, 0.7).clamp(20.0, 3000.0) as i64;
                let st = c.status(0.01);
                let m = if model == M3 {
                    attack_model(c, t, true, M2)
                } else {
                    model
                };
                c.emit(
                    t, p.acct, p.nets[0], dev, m, false, turn, ctx_tok, out, st, text,
                );
                t += (log_normal(&mut c.rng, mean_gap, 0.6)) as i64 + 500;
                turn += 1;
                if turn > max_turn {
                    turn = 1;
                    max_turn = usize_in(&mut c.rng, 10, 80) as u32;
                    ctx_tok = c.int(3000, 20_000);
                }
            }
        }
    }
}

fn signup_wave(c: &mut Ctx) {
    let n = count(&mut c.rng, 50.0, 600.0, c.scale);
    let span = c.span();
    let wave = c.start() + c.int(-HOUR, span / 2);
    let wave_len = c.int(HOUR, 4 * HOUR);
    for _ in 0..n {
        let created = (wave + c.int(0, wave_len)).max(c.start() - 30 * MIN);
        let email = if chance(&mut c.rng, 0.85) {
            infra::consumer_email(&mut c.rng)
        } else {
            infra::person_email(&mut c.rng)
        };
        let pay = if chance(&mut c.rng, 0.2) {
            Pay::Own
        } else {
            Pay::Nothing
        };
        let spec = PersonaSpec {
            api_share: 0.1,
            email: Some(email),
            pay,
            created: Some(created),
            ..PersonaSpec::default()
        };
        let p = persona(c, spec);
        let target = usize_in(&mut c.rng, 1, 15);
        let ch = Chat {
            acct: p.acct,
            nets: &p.nets,
            dev: p.dev,
            out_median: unif(&mut c.rng, 200.0, 600.0),
        };
        let mut t = created.max(c.start()) + (log_normal(&mut c.rng, 8.0, 1.0) * MIN as f64) as i64;
        let mut sent = 0;
        while sent < target {
            let turns = (usize_in(&mut c.rng, 1, 6).min(target - sent)) as u32;
            t = chat_session(c, &ch, t, turns, &mut generic_prompt);
            sent += turns as usize;
            t += (log_normal(&mut c.rng, 20.0, 1.0) * MIN as f64) as i64;
        }
    }
}

// ---------------------------------------------------------------- attack families

fn single_harvester(c: &mut Ctx) {
    let n = count(&mut c.rng, 2.0, 8.0, c.scale);
    for _ in 0..n {
        let created = c.start() - (unif(&mut c.rng, 0.05, 60.0) * DAY as f64) as i64;
        let email = infra::person_email(&mut c.rng);
        let card = infra::payment_fp(&mut c.rng);
        let acct = c.add_account(created, None, Some(card), email);
        let kind = if chance(&mut c.rng, 0.6) {
            NetKind::Hosting
        } else {
            NetKind::Residential
        };
        let net = new_net(c, kind);
        let d = if chance(&mut c.rng, 0.6) {
            infra::custom_device(&mut c.rng)
        } else {
            infra::sdk_device(&mut c.rng)
        };
        let dev = new_dev(c, d);
        let camp = Campaign::new(&mut c.rng, 1, 3);
        let span = c.span();
        let from = if chance(&mut c.rng, 0.5) {
            c.start() + c.int(0, 5 * MIN)
        } else {
            c.start() + c.int(span / 20, span * 3 / 5)
        };
        let to = if chance(&mut c.rng, 0.6) {
            c.end()
        } else {
            from + c.int(2 * HOUR, 6 * HOUR)
        };
        if chance(&mut c.rng, 0.5) {
            // A few hand-typed probes before the harvest starts.
            let ch = Chat {
                acct,
                nets: &[net],
                dev,
                out_median: 300.0,
            };
            let st = c.int(c.start(), from.max(c.start() + 1));
            let turns = usize_in(&mut c.rng, 1, 6) as u32;
            chat_session(c, &ch, st, turns, &mut generic_prompt);
        }
        let rate = log_unif(&mut c.rng, 0.3, 5.0);
        let jitter = unif(&mut c.rng, 0.05, 0.4);
        let pivots = chance(&mut c.rng, 0.5);
        let p429 = 0.01 + rate * 0.01;
        for t in machine_times(&mut c.rng, from, to, rate, jitter) {
            let m = attack_model(c, t, pivots, M2);
            camp.emit(c, t, acct, net, dev, m, p429);
        }
    }
}

fn hydra(c: &mut Ctx) {
    let (clusters, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..clusters {
        let cards: Vec<CompactString> = (0..usize_in(&mut c.rng, 3, 30))
            .map(|_| infra::payment_fp(&mut c.rng))
            .collect();
        let n_ips = usize_in(&mut c.rng, 10, 200);
        let n_blocks = usize_in(&mut c.rng, 1, 6);
        let kind = if chance(&mut c.rng, 0.5) {
            NetKind::Hosting
        } else {
            NetKind::Residential
        };
        let blocks: Vec<_> = (0..n_blocks)
            .map(|_| {
                let isp = infra::pick_isp(&mut c.rng, kind);
                infra::block24(&mut c.rng, isp)
            })
            .collect();
        let pool: Vec<u32> = (0..n_ips)
            .map(|_| {
                let b = &blocks[c.rng.gen_range(0..blocks.len())];
                let n = infra::in_block(&mut c.rng, b);
                c.add_net(n)
            })
            .collect();
        let base_dev = infra::custom_device(&mut c.rng);
        let camp = Campaign::new(&mut c.rng, 1, 4);
        let total = (log_unif(&mut c.rng, 20.0, 1000.0) * sf).round().max(4.0);
        let span = c.span();
        let astart = if chance(&mut c.rng, 0.4) {
            c.start()
        } else {
            c.start() + c.int(0, span * 2 / 5)
        };
        let life_lo = unif(&mut c.rng, 30.0, 100.0);
        let life_hi = unif(&mut c.rng, life_lo + 10.0, 180.0);
        let dur_min = (c.end() - astart) as f64 / MIN as f64;
        let slots =
            ((total / (1.0 + dur_min / ((life_lo + life_hi) / 2.0))).round() as usize).max(2);
        let mut base_rate = log_unif(&mut c.rng, 30.0, 300.0);
        let mut slots = slots;
        // At the far corner of the ranges one cluster alone would emit about a million
        // events; cap its volume (slower accounts first, then fewer of them) so the default
        // run stays a few hundred thousand events.
        let budget = 150_000.0 * sf;
        let dur_h = dur_min / 60.0;
        if slots as f64 * base_rate * dur_h > budget {
            base_rate = (budget / (slots as f64 * dur_h)).max(30.0);
            slots = ((budget / (base_rate * dur_h)) as usize).clamp(2, slots);
        }
        let pivots = chance(&mut c.rng, 0.5);
        let batch_times: Vec<i64> = (0..((total / 30.0).ceil() as usize).max(1))
            .map(|_| c.start() - c.int(HOUR, 96 * HOUR))
            .collect();
        let dev = new_dev(c, base_dev);
        for _ in 0..slots {
            let mut t = astart + c.int(0, 10 * MIN);
            while t < c.end() {
                let created = if chance(&mut c.rng, 0.5) {
                    pick(&mut c.rng, &batch_times) + c.int(0, 15 * MIN)
                } else {
                    t - c.int(5 * SEC, 10 * MIN)
                };
                let email = if chance(&mut c.rng, 0.8) {
                    infra::consumer_email(&mut c.rng)
                } else {
                    infra::company_domain(&mut c.rng)
                };
                let card = cards[c.rng.gen_range(0..cards.len())].clone();
                let acct = c.add_account(created, None, Some(card), email);
                let life = (unif(&mut c.rng, life_lo, life_hi) * MIN as f64) as i64;
                let rate_s = base_rate * unif(&mut c.rng, 0.6, 1.4) / 3600.0;
                let stop = (t + life).min(c.end());
                for ts in machine_times(&mut c.rng, t, stop, rate_s, 0.6) {
                    let net = pick_net(&mut c.rng, &pool);
                    let m = attack_model(c, ts, pivots, M2);
                    camp.emit(c, ts, acct, net, dev, m, 0.01);
                }
                t += life + c.int(0, 90 * SEC);
            }
        }
    }
}

fn low_rate_swarm(c: &mut Ctx) {
    let (swarms, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..swarms {
        let n = group_size(&mut c.rng, 20.0, 600.0, sf, 4);
        let swarm_rate = log_unif(&mut c.rng, 0.6, 6.0);
        let burst_len = c.int(HOUR, 3 * HOUR);
        let burst_end = c.start() + c.int(0, 20 * MIN);
        let n_ips = usize_in(&mut c.rng, 10, 80);
        let pool: Vec<u32> = (0..n_ips)
            .map(|_| new_net(c, NetKind::Residential))
            .collect();
        let camp = Campaign::new(&mut c.rng, 1, 3);
        let pivots = chance(&mut c.rng, 0.3);
        let card_p = unif(&mut c.rng, 0.0, 0.5);
        for _ in 0..n {
            let created = burst_end - c.int(0, burst_len);
            let pay = chance(&mut c.rng, card_p).then(|| infra::payment_fp(&mut c.rng));
            let email = infra::consumer_email(&mut c.rng);
            let acct = c.add_account(created, None, pay, email);
            let d = infra::sdk_device(&mut c.rng);
            let dev = new_dev(c, d);
            let rate_h = swarm_rate * unif(&mut c.rng, 0.7, 1.3);
            let mut t =
                created.max(c.start()) + (exp_gap(&mut c.rng, 3600.0 / rate_h) * SEC as f64) as i64;
            while t < c.end() {
                let net = pick_net(&mut c.rng, &pool);
                let m = attack_model(c, t, pivots, M2);
                camp.emit(c, t, acct, net, dev, m, 0.005);
                t += (exp_gap(&mut c.rng, 3600.0 / rate_h) * SEC as f64) as i64;
            }
        }
    }
}

fn lockstep(c: &mut Ctx) {
    let (campaigns, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..campaigns {
        let n = group_size(&mut c.rng, 10.0, 500.0, sf, 4);
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let spec = PersonaSpec {
                age_days: (1.0, 200.0),
                api_share: 0.0,
                email: Some(infra::consumer_email(&mut c.rng)),
                pay: if chance(&mut c.rng, 0.5) {
                    Pay::Own
                } else {
                    Pay::Nothing
                },
                ..PersonaSpec::default()
            };
            let mut p = persona(c, spec);
            p.nets.truncate(1);
            let d = infra::sdk_device(&mut c.rng);
            p.dev = new_dev(c, d);
            members.push(p);
        }
        let camp = Campaign::new(&mut c.rng, 1, 3);
        let mut period = log_unif(&mut c.rng, 30.0, 300.0);
        let frac = unif(&mut c.rng, 0.3, 1.0);
        // Keep one campaign from dominating the whole stream at the extreme corner of ranges.
        let rounds = c.span() as f64 / 1000.0 / period;
        if rounds * frac * n as f64 > 100_000.0 {
            period = (c.span() as f64 / 1000.0 * frac * n as f64 / 100_000.0).min(300.0);
        }
        let jitter = unif(&mut c.rng, 1.0, 5.0);
        let spread = unif(&mut c.rng, 0.5, 4.0);
        let span = c.span();
        let cstart = if chance(&mut c.rng, 0.5) {
            c.start()
        } else {
            c.start() + c.int(0, span * 3 / 10)
        };
        let pivots = chance(&mut c.rng, 0.4);
        for p in &members {
            if chance(&mut c.rng, 0.3) {
                let (from, to) = (c.start(), c.end());
                let p2 = Persona {
                    acct: p.acct,
                    nets: p.nets.clone(),
                    dev: p.dev,
                    api: false,
                };
                human_activity(c, &p2, from, to, (1, 2));
            }
        }
        let mut t = cstart as f64;
        while (t as i64) < c.end() {
            let round_frac = (frac + unif(&mut c.rng, -0.1, 0.1)).clamp(0.05, 1.0);
            let k = ((n as f64) * round_frac).round() as usize;
            for i in sample_indices(&mut c.rng, n, k) {
                let ts = t as i64 + (unif(&mut c.rng, 0.0, spread) * 1000.0) as i64;
                let p = &members[i];
                let m = attack_model(c, ts, pivots, M2);
                camp.emit(c, ts, p.acct, p.nets[0], p.dev, m, 0.005);
            }
            t += (period + unif(&mut c.rng, -jitter, jitter)) * 1000.0;
        }
    }
}

fn aged_takeover(c: &mut Ctx) {
    let n = count(&mut c.rng, 3.0, 15.0, c.scale);
    for _ in 0..n {
        let spec = PersonaSpec {
            age_days: (180.0, 2000.0),
            api_share: 0.0,
            pay: Pay::Own,
            ..PersonaSpec::default()
        };
        let p = persona(c, spec);
        let span = c.span();
        let switch = c.start() + c.int(span * 3 / 20, span * 3 / 4);
        let (from, _) = (c.start(), c.end());
        human_activity(c, &p, from, switch, (2, 5));
        let to = if chance(&mut c.rng, 0.6) {
            c.end()
        } else {
            switch + c.int(HOUR, 4 * HOUR)
        };
        let net = if chance(&mut c.rng, 0.5) {
            new_net(c, NetKind::Hosting)
        } else {
            p.nets[0]
        };
        let dev = if chance(&mut c.rng, 0.5) {
            let d = if chance(&mut c.rng, 0.5) {
                infra::custom_device(&mut c.rng)
            } else {
                infra::sdk_device(&mut c.rng)
            };
            new_dev(c, d)
        } else {
            p.dev
        };
        let camp = Campaign::new(&mut c.rng, 1, 3);
        let rate = log_unif(&mut c.rng, 0.2, 2.0);
        let prefers_new = chance(&mut c.rng, 0.75);
        let base = if chance(&mut c.rng, 0.3) { M1 } else { M2 };
        let jitter = unif(&mut c.rng, 0.1, 0.5);
        for t in machine_times(&mut c.rng, switch, to, rate, jitter) {
            let m = attack_model(c, t, prefers_new, base);
            camp.emit(c, t, p.acct, net, dev, m, 0.01 + rate * 0.01);
        }
    }
}
