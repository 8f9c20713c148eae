//! Evasive attacks and the honest crowds they hide among. Each attack is what an operator
//! with money, proxies and scripts does cheaply (cover traffic, rewording, rotating exits,
//! spoofed fingerprints, synchronised waves); each benign family is a real crowd that shares
//! one of those traits (identical docs prompts, one venue network, high volume, a shared
//! template). Every knob is drawn per seed.

use super::*;
use crate::sim::paraphrase;

// ---------------------------------------------------------------- benign look-alikes

/// Hundreds of unrelated fresh accounts running the documentation's quickstart: each sends a
/// handful of exact copies of the docs' example prompts (several ask for step-by-step
/// reasoning) from its own network, then mostly goes quiet.
pub(super) fn quickstart_crowd(c: &mut Ctx) {
    let n = ((log_unif(&mut c.rng, 100.0, 500.0) * c.scale).round() as usize).max(3);
    let docs = paraphrase::docs_examples(&mut c.rng);
    let model = if chance(&mut c.rng, 0.5) { M2 } else { M1 };
    let out_med = unif(&mut c.rng, 150.0, 600.0);
    for _ in 0..n {
        let first = c.int(c.start(), c.end() - 1);
        let created = if chance(&mut c.rng, 0.75) {
            first - c.int(MIN, 30 * MIN)
        } else {
            c.start() - (log_unif(&mut c.rng, 0.1, 30.0) * DAY as f64) as i64
        };
        let email = if chance(&mut c.rng, 0.8) {
            infra::consumer_email(&mut c.rng)
        } else {
            infra::person_email(&mut c.rng)
        };
        let pay = chance(&mut c.rng, 0.15).then(|| infra::payment_fp(&mut c.rng));
        let acct = c.add_account(created, None, pay, email);
        // Laptops at home, phones, and the odd cloud dev box.
        let kind = match c.rng.gen_range(0..100) {
            0..=69 => NetKind::Residential,
            70..=84 => NetKind::Mobile,
            _ => NetKind::Hosting,
        };
        let net = new_net(c, kind);
        let d = if chance(&mut c.rng, 0.9) {
            infra::sdk_device(&mut c.rng)
        } else {
            infra::custom_device(&mut c.rng)
        };
        let dev = new_dev(c, d);
        let copies = usize_in(&mut c.rng, 1, 6);
        let mut ex = c.rng.gen_range(0..docs.len());
        let mut t = first;
        for _ in 0..copies {
            let text = docs[ex].clone();
            let tok = c.tokens(&text) + 8;
            let out = log_normal(&mut c.rng, out_med, 0.5).clamp(10.0, 1500.0) as i64;
            let st = c.status(0.01);
            c.emit(t, acct, net, dev, model, false, 1, tok, out, st, text);
            // Re-running the script, sometimes after trying the next example.
            t += (log_normal(&mut c.rng, 40.0, 1.0).clamp(3.0, 1800.0) * SEC as f64) as i64;
            if chance(&mut c.rng, 0.3) {
                ex = c.rng.gen_range(0..docs.len());
            }
        }
        if chance(&mut c.rng, 0.25) {
            // Some go on to try their own prompts.
            let p = Persona {
                acct,
                nets: vec![net],
                dev,
                api: true,
            };
            human_activity(c, &p, t, (t + 2 * HOUR).min(c.end()), (0, 1));
        }
    }
}

/// Starter-kit wrapper a hackathon sponsor hands out; teams fill in their app's question.
fn starter_kit(rng: &mut SimRng) -> (String, bool) {
    let app = pick(rng, super::super::words::COMPANY_WORDS);
    let reasoning = chance(rng, 0.4);
    let tail = if reasoning {
        " Think step by step and explain your reasoning before the final answer."
    } else {
        " Answer in a friendly tone, in at most three short paragraphs."
    };
    let head = pick(
        rng,
        &[
            "You are the assistant inside the {app} app. Use the context to answer the user's question.",
            "System: you are {app}-bot, a helpful assistant built at the hackathon.",
            "You are an AI tutor for the {app} project. Help the user with their question.",
            "### {app} starter kit\nRole: helpful assistant.\nTask: answer the user's question.",
        ],
    );
    (
        format!("{}{}\n\nUser question: ", head.replace("{app}", app), tail),
        reasoning,
    )
}

/// Hackathons and workshops: accounts created the same morning behind one venue network,
/// teams building on the sponsor's starter kit at tens of requests an hour, partly multi-turn,
/// with the debugging loops that resend one test prompt.
pub(super) fn hackathon(c: &mut Ctx) {
    let (venues, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..venues {
        let span = c.span();
        let kickoff = c.start() + c.int(0, span / 4);
        let country = pick(
            &mut c.rng,
            &["US", "GB", "DE", "IN", "FR", "CA", "JP", "BR"],
        );
        let block = if chance(&mut c.rng, 0.5) {
            infra::org_block(&mut c.rng, country)
        } else {
            let isp = infra::pick_isp(&mut c.rng, NetKind::Residential);
            infra::block24(&mut c.rng, isp)
        };
        let ips: Vec<u32> = (0..usize_in(&mut c.rng, 1, 4))
            .map(|_| {
                let n = infra::in_block(&mut c.rng, &block);
                c.add_net(n)
            })
            .collect();
        let (kit, _) = starter_kit(&mut c.rng);
        let n = group_size(&mut c.rng, 5.0, 300.0, sf, 4);
        let multi_p = unif(&mut c.rng, 0.2, 0.6);
        let base_rate = log_unif(&mut c.rng, 10.0, 60.0);
        let mut left = n;
        while left > 0 {
            let team = usize_in(&mut c.rng, 2, 5).min(left);
            left -= team;
            let (d, topic) = crate::sim::prompts::random_topic(&mut c.rng);
            let kit_share = unif(&mut c.rng, 0.5, 1.0);
            let test_prompt = format!("{kit}What is {topic} and why does it matter?");
            for _ in 0..team {
                let created = kickoff + c.int(-2 * HOUR, HOUR);
                let email = match c.rng.gen_range(0..10) {
                    0..=5 => infra::consumer_email(&mut c.rng),
                    6..=8 => infra::university_domain(&mut c.rng),
                    _ => infra::company_domain(&mut c.rng),
                };
                let pay = chance(&mut c.rng, 0.2).then(|| infra::payment_fp(&mut c.rng));
                let acct = c.add_account(created, None, pay, email);
                let dv = if chance(&mut c.rng, 0.85) {
                    infra::sdk_device(&mut c.rng)
                } else {
                    infra::browser_device(&mut c.rng)
                };
                let dev = new_dev(c, dv);
                let rate_h = base_rate * unif(&mut c.rng, 0.5, 1.5);
                let mut t = created.max(kickoff) + c.int(2 * MIN, 45 * MIN);
                let mut turn = 1u32;
                let model = c.human_model(t);
                while t < c.end() {
                    let net = pick_net(&mut c.rng, &ips);
                    let loop_n = if chance(&mut c.rng, 0.08) {
                        usize_in(&mut c.rng, 3, 10)
                    } else {
                        1
                    };
                    for _ in 0..loop_n {
                        let text = if loop_n > 1 {
                            test_prompt.clone()
                        } else if turn > 1 {
                            prompts::followup(&mut c.rng)
                        } else if chance(&mut c.rng, kit_share) {
                            let q = prompts::problem_in(&mut c.rng, d, topic);
                            format!("{kit}{q}")
                        } else {
                            prompts::benign_prompt(&mut c.rng)
                        };
                        let tok = c.tokens(&text) + c.int(0, 300);
                        let out = log_normal(&mut c.rng, 350.0, 0.7).clamp(10.0, 3000.0) as i64;
                        let st = c.status(0.01);
                        c.emit(t, acct, net, dev, model, false, turn, tok, out, st, text);
                        t += c.int(2 * SEC, 20 * SEC);
                    }
                    turn = if chance(&mut c.rng, multi_p) && turn < 8 {
                        turn + 1
                    } else {
                        1
                    };
                    t += (exp_gap(&mut c.rng, 3600.0 / rate_h) * SEC as f64) as i64;
                    if chance(&mut c.rng, 0.02) {
                        // Lunch, talks, demos.
                        t += c.int(20 * MIN, 70 * MIN);
                    }
                }
            }
        }
    }
}

/// The wrapper an application puts around its own users' messages.
fn app_wrapper(rng: &mut SimRng) -> (String, u8) {
    let company = pick(rng, super::super::words::COMPANY_WORDS);
    let kind = rng.gen_range(0..5u8);
    let w = match kind {
        0 => format!("You are {company}'s support assistant. Answer the customer's message politely and accurately.\n\nCustomer: "),
        1 => format!("You are a homework helper in the {company} learning app. Explain step by step, show your reasoning, then give the final answer.\n\nStudent question: "),
        2 => format!("[{company} writer] Improve the user's text as requested.\n\n"),
        3 => format!("You are {company} Code Assistant. Help with the following programming question.\n\n"),
        _ => String::new(),
    };
    (w, kind)
}

/// High-volume application backends: established accounts relaying their own users' requests,
/// thousands an hour, diverse content inside the app's fixed wrapper, some multi-turn, with or
/// without a verified organisation.
pub(super) fn app_backend(c: &mut Ctx) {
    let n = count(&mut c.rng, 2.0, 8.0, c.scale);
    for _ in 0..n {
        let created = c.start() - (log_unif(&mut c.rng, 100.0, 2000.0) * DAY as f64) as i64;
        let org = chance(&mut c.rng, 0.5).then(|| infra::org_id(&mut c.rng));
        let email = infra::company_domain(&mut c.rng);
        let card = infra::payment_fp(&mut c.rng);
        let acct = c.add_account(created, org, Some(card), email);
        let isp = infra::pick_isp(&mut c.rng, NetKind::Hosting);
        let nets: Vec<u32> = (0..usize_in(&mut c.rng, 1, 4))
            .map(|_| {
                let n = infra::net_in(&mut c.rng, isp, 0.0);
                c.add_net(n)
            })
            .collect();
        let d = if chance(&mut c.rng, 0.5) {
            infra::sdk_device(&mut c.rng)
        } else {
            infra::custom_device(&mut c.rng)
        };
        let dev = new_dev(c, d);
        let (wrapper, kind) = app_wrapper(&mut c.rng);
        let rate_h = log_unif(&mut c.rng, 800.0, 5000.0);
        let multi_p = unif(&mut c.rng, 0.1, 0.5);
        let model = pick(&mut c.rng, &[M2, M2, M1, M2_LITE]);
        let phase = unif(&mut c.rng, 0.0, std::f64::consts::TAU);
        let mut t = c.start() + c.int(0, MIN);
        while t < c.end() {
            let turn = if chance(&mut c.rng, multi_p) {
                usize_in(&mut c.rng, 2, 10) as u32
            } else {
                1
            };
            let user = if turn > 1 {
                prompts::followup(&mut c.rng)
            } else {
                match kind {
                    1 => {
                        let (d, tp) = prompts::random_topic(&mut c.rng);
                        prompts::problem_in(&mut c.rng, d, tp)
                    }
                    _ => prompts::benign_prompt(&mut c.rng),
                }
            };
            let text = format!("{wrapper}{user}");
            let tok = c.tokens(&text) + c.int(0, 400) + i64::from(turn - 1) * c.int(100, 400);
            let out = log_normal(&mut c.rng, 300.0, 0.8).clamp(5.0, 3000.0) as i64;
            let st = c.status(0.015);
            let net = pick_net(&mut c.rng, &nets);
            c.emit(t, acct, net, dev, model, false, turn, tok, out, st, text);
            // Users come and go with the time of day.
            let hour = (t - c.start()) as f64 / HOUR as f64;
            let r = rate_h * (1.0 + 0.4 * (hour / 24.0 * std::f64::consts::TAU + phase).sin());
            t += (exp_gap(&mut c.rng, 3_600_000.0 / r)) as i64 + 1;
        }
    }
}

/// Customers' scheduled jobs: unrelated established accounts whose crontabs fire at the same
/// wall-clock moments (most on the round minute of the hour or quarter hour), each run sending
/// a batch of new reasoning prompts (a report, a digest, an analysis of each new record) at
/// machine pace from a few workers, then nothing until the next run. Run after run they arrive
/// together, in the same 15 seconds, with nothing else in common.
pub(super) fn scheduled_jobs(c: &mut Ctx) {
    let n = ((log_unif(&mut c.rng, 20.0, 200.0) * c.scale).round() as usize).max(3);
    // Most jobs are hourly; the popular minutes are the round ones.
    let periods = [(15 * MIN, 0.2), (30 * MIN, 0.2), (HOUR, 0.6)];
    for _ in 0..n {
        let created = c.start() - (log_unif(&mut c.rng, 30.0, 2000.0) * DAY as f64) as i64;
        let org = chance(&mut c.rng, 0.5).then(|| infra::org_id(&mut c.rng));
        let email = infra::company_domain(&mut c.rng);
        let card = infra::payment_fp(&mut c.rng);
        let acct = c.add_account(created, org, Some(card), email);
        let net = new_net(c, NetKind::Hosting);
        let d = if chance(&mut c.rng, 0.5) {
            infra::api_device(&mut c.rng)
        } else {
            infra::sdk_device(&mut c.rng)
        };
        let dev = new_dev(c, d);
        let period = crate::sim::rng::pick_w(&mut c.rng, &periods);
        let offset = if chance(&mut c.rng, 0.7) {
            0
        } else {
            c.int(1, period / MIN - 1) * MIN
        };
        // The job's process starts a moment after the tick, the same moment every run.
        let delay = c.int(0, 4 * SEC);
        let per_run = usize_in(&mut c.rng, 3, 40);
        let workers = usize_in(&mut c.rng, 1, 4);
        let company = pick(&mut c.rng, super::super::words::COMPANY_WORDS);
        let header = pick(
            &mut c.rng,
            &[
                "Analyze the following item for the daily report",
                "Review this record and assess the risk",
                "Summarize the finding below for the weekly digest",
                "Evaluate the case below",
            ],
        );
        let reasoning_p = unif(&mut c.rng, 0.3, 1.0);
        let model = pick(&mut c.rng, &[M2, M2, M1, M2_LITE]);
        let out_med = unif(&mut c.rng, 300.0, 1200.0);
        let mut run = (c.start() - offset).div_euclid(period) * period + offset;
        if run < c.start() {
            run += period;
        }
        while run < c.end() {
            let mut left = per_run;
            for w in 0..workers {
                let mut t = run + delay + w as i64 * c.int(0, 300);
                for _ in 0..per_run.div_ceil(workers).min(left) {
                    let (dom, topic) = prompts::random_topic(&mut c.rng);
                    let problem = prompts::problem_in(&mut c.rng, dom, topic);
                    let tail = if chance(&mut c.rng, reasoning_p) {
                        "Explain your reasoning step by step before the conclusion."
                    } else {
                        "Give the conclusion in two sentences."
                    };
                    let text = format!("[{company}] {header}.\n\n{problem}\n\n{tail}");
                    let tok = c.tokens(&text);
                    let out = log_normal(&mut c.rng, out_med, 0.5).clamp(30.0, 3000.0) as i64;
                    let st = c.status(0.01);
                    c.emit(t, acct, net, dev, model, false, 1, tok, out, st, text);
                    t += latency_ms(&mut c.rng, out) + c.int(50, 500);
                    left -= 1;
                }
            }
            run += period;
        }
    }
}

// ---------------------------------------------------------------- evasive attacks

/// A harvester that hides behind cover: 10-40% of its requests are scripted multi-turn chats
/// and plain prompts, the rest reasoning harvest (reworded or not, per seed).
pub(super) fn cover_harvester(c: &mut Ctx) {
    let n = count(&mut c.rng, 2.0, 8.0, c.scale);
    for _ in 0..n {
        let created = c.start() - (log_unif(&mut c.rng, 1.0, 300.0) * DAY as f64) as i64;
        let email = infra::person_email(&mut c.rng);
        let card = infra::payment_fp(&mut c.rng);
        let acct = c.add_account(created, None, Some(card), email);
        let kind = if chance(&mut c.rng, 0.6) {
            NetKind::Residential
        } else {
            NetKind::Hosting
        };
        let net = new_net(c, kind);
        let d = if chance(&mut c.rng, 0.6) {
            infra::spoofed_device(&mut c.rng)
        } else {
            infra::custom_device(&mut c.rng)
        };
        let dev = new_dev(c, d);
        let reword = if chance(&mut c.rng, 0.5) {
            unif(&mut c.rng, 0.5, 1.0)
        } else {
            0.0
        };
        let camp = Campaign::reworded(&mut c.rng, 1, 3, reword);
        let cover = unif(&mut c.rng, 0.1, 0.4);
        let chat_share = unif(&mut c.rng, 0.3, 0.7);
        let rate = log_unif(&mut c.rng, 150.0, 1500.0) / 3600.0;
        let span = c.span();
        let from = if chance(&mut c.rng, 0.5) {
            c.start() + c.int(0, 5 * MIN)
        } else {
            c.start() + c.int(span / 20, span / 2)
        };
        let to = if chance(&mut c.rng, 0.6) {
            c.end()
        } else {
            from + c.int(2 * HOUR, 6 * HOUR)
        };
        let pivots = chance(&mut c.rng, 0.5);
        let mut conv_left = 0u32;
        let mut turn = 0u32;
        let jitter = unif(&mut c.rng, 0.2, 0.8);
        for t in machine_times(&mut c.rng, from, to, rate, jitter) {
            let m = attack_model(c, t, pivots, M2);
            if conv_left > 0 {
                // A scripted chat in progress: the next turn.
                turn += 1;
                conv_left -= 1;
                let text = prompts::followup(&mut c.rng);
                let tok = c.tokens(&text) + i64::from(turn) * c.int(150, 500);
                let out = log_normal(&mut c.rng, 300.0, 0.7).clamp(10.0, 2000.0) as i64;
                let st = c.status(0.01);
                c.emit(t, acct, net, dev, m, true, turn, tok, out, st, text);
                continue;
            }
            if chance(&mut c.rng, cover) {
                if chance(&mut c.rng, chat_share) {
                    conv_left = usize_in(&mut c.rng, 1, 6) as u32;
                    turn = 1;
                }
                let text = prompts::benign_prompt(&mut c.rng);
                let tok = c.tokens(&text);
                let out = log_normal(&mut c.rng, 300.0, 0.7).clamp(10.0, 2000.0) as i64;
                let st = c.status(0.01);
                c.emit(t, acct, net, dev, m, true, 1, tok, out, st, text);
            } else {
                camp.emit(c, t, acct, net, dev, m, 0.01 + rate * 0.01);
            }
        }
    }
}

/// Accounts created in bursts before a campaign, the bursts some hours apart.
fn burst_created(c: &mut Ctx, bursts: &[i64]) -> i64 {
    pick(&mut c.rng, bursts) + c.int(0, 10 * MIN)
}

fn burst_times(c: &mut Ctx, n_accounts: usize, before: i64) -> Vec<i64> {
    let k = n_accounts.div_ceil(usize_in(&mut c.rng, 5, 30)).max(1);
    (0..k)
        .map(|_| before - c.int(10 * MIN, 72 * HOUR))
        .collect()
}

/// Many fresh accounts at 0.5-5 requests an hour each through a few dozen datacenter /24s of
/// several hosting providers; every prompt reworded.
pub(super) fn paraphrase_swarm(c: &mut Ctx) {
    let (swarms, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..swarms {
        let n = group_size(&mut c.rng, 30.0, 500.0, sf, 4);
        let blocks: Vec<_> = (0..usize_in(&mut c.rng, 5, 60))
            .map(|_| {
                let isp = infra::pick_isp(&mut c.rng, NetKind::Hosting);
                infra::block24(&mut c.rng, isp)
            })
            .collect();
        let camp = Campaign::reworded(&mut c.rng, 1, 1, 1.0);
        let rate = log_unif(&mut c.rng, 0.5, 5.0);
        let card_p = unif(&mut c.rng, 0.0, 0.6);
        let sticky = chance(&mut c.rng, 0.5);
        let cstart = c.start() + c.int(0, c.span() / 4);
        let bursts = burst_times(c, n, cstart);
        let pivots = chance(&mut c.rng, 0.4);
        for _ in 0..n {
            let created = burst_created(c, &bursts);
            let pay = chance(&mut c.rng, card_p).then(|| infra::prepaid_card(&mut c.rng));
            let email = infra::consumer_email(&mut c.rng);
            let acct = c.add_account(created, None, pay, email);
            let d = infra::spoofed_device(&mut c.rng);
            let dev = new_dev(c, d);
            let home = {
                let b = &blocks[c.rng.gen_range(0..blocks.len())];
                let nn = infra::in_block(&mut c.rng, b);
                c.add_net(nn)
            };
            let rate_h = rate * unif(&mut c.rng, 0.6, 1.4);
            let mut t =
                cstart.max(created) + (exp_gap(&mut c.rng, 3600.0 / rate_h) * 1000.0) as i64;
            while t < c.end() {
                let net = if sticky {
                    home
                } else {
                    let b = &blocks[c.rng.gen_range(0..blocks.len())];
                    let nn = infra::in_block(&mut c.rng, b);
                    c.add_net(nn)
                };
                let m = attack_model(c, t, pivots, M2);
                camp.emit(c, t, acct, net, dev, m, 0.005);
                t += (exp_gap(&mut c.rng, 3600.0 / rate_h) * 1000.0) as i64;
            }
        }
    }
}

/// A hydra behind a rotating residential proxy: every request from a new exit IP, each account
/// with its own spoofed popular fingerprint and its own prepaid card, accounts created in
/// bursts and discarded after a short life.
pub(super) fn rotating_hydra(c: &mut Ctx) {
    let (clusters, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..clusters {
        let total = group_size(&mut c.rng, 20.0, 500.0, sf, 4) as f64;
        let reword = if chance(&mut c.rng, 0.5) {
            unif(&mut c.rng, 0.3, 1.0)
        } else {
            0.0
        };
        let camp = Campaign::reworded(&mut c.rng, 1, 4, reword);
        let span = c.span();
        let astart = if chance(&mut c.rng, 0.4) {
            c.start()
        } else {
            c.start() + c.int(0, span * 2 / 5)
        };
        let life_lo = unif(&mut c.rng, 20.0, 90.0);
        let life_hi = unif(&mut c.rng, life_lo + 10.0, 180.0);
        let dur_min = (c.end() - astart) as f64 / MIN as f64;
        let mut slots =
            ((total / (1.0 + dur_min / ((life_lo + life_hi) / 2.0))).round() as usize).max(2);
        let mut base_rate = log_unif(&mut c.rng, 30.0, 300.0);
        let budget = 100_000.0 * sf;
        let dur_h = dur_min / 60.0;
        if slots as f64 * base_rate * dur_h > budget {
            base_rate = (budget / (slots as f64 * dur_h)).max(30.0);
            slots = ((budget / (base_rate * dur_h)) as usize).clamp(2, slots);
        }
        let bursts = burst_times(c, total as usize, astart);
        let pivots = chance(&mut c.rng, 0.5);
        for _ in 0..slots {
            let mut t = astart + c.int(0, 10 * MIN);
            while t < c.end() {
                let created = if chance(&mut c.rng, 0.7) {
                    burst_created(c, &bursts).min(t)
                } else {
                    t - c.int(5 * SEC, 10 * MIN)
                };
                let email = infra::consumer_email(&mut c.rng);
                let card = infra::prepaid_card(&mut c.rng);
                let acct = c.add_account(created, None, Some(card), email);
                let d = infra::spoofed_device(&mut c.rng);
                let dev = new_dev(c, d);
                let life = (unif(&mut c.rng, life_lo, life_hi) * MIN as f64) as i64;
                let rate_s = base_rate * unif(&mut c.rng, 0.6, 1.4) / 3600.0;
                let stop = (t + life).min(c.end());
                for ts in machine_times(&mut c.rng, t, stop, rate_s, 0.7) {
                    let exit = infra::proxy_exit(&mut c.rng);
                    let net = c.add_net(exit);
                    let m = attack_model(c, ts, pivots, M2);
                    camp.emit(c, ts, acct, net, dev, m, 0.01);
                }
                t += life + c.int(0, 90 * SEC);
            }
        }
    }
}

/// Accounts on scattered residential networks that share nothing but timing: they fire in
/// waves, each member within a few seconds of the campaign's chosen instant, with reworded
/// prompts.
pub(super) fn timing_lockstep(c: &mut Ctx) {
    let (campaigns, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..campaigns {
        let n = group_size(&mut c.rng, 20.0, 500.0, sf, 4);
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let created = c.start() - (log_unif(&mut c.rng, 0.5, 200.0) * DAY as f64) as i64;
            let pay = chance(&mut c.rng, 0.5).then(|| infra::prepaid_card(&mut c.rng));
            let email = infra::consumer_email(&mut c.rng);
            let acct = c.add_account(created, None, pay, email);
            let k = if chance(&mut c.rng, 0.7) {
                NetKind::Residential
            } else {
                NetKind::Mobile
            };
            let net = new_net(c, k);
            let d = infra::spoofed_device(&mut c.rng);
            let dev = new_dev(c, d);
            members.push((acct, net, dev));
        }
        let camp = Campaign::reworded(&mut c.rng, 1, 1, 1.0);
        let mut period = log_unif(&mut c.rng, 60.0, 900.0);
        let frac = unif(&mut c.rng, 0.2, 0.9);
        let rounds = c.span() as f64 / 1000.0 / period;
        if rounds * frac * n as f64 > 80_000.0 {
            period = c.span() as f64 / 1000.0 * frac * n as f64 / 80_000.0;
        }
        // Regular waves with jitter, or waves at random instants.
        let regular = chance(&mut c.rng, 0.5);
        let jitter = unif(&mut c.rng, 1.0, 30.0);
        let spread = unif(&mut c.rng, 0.5, 5.0);
        let span = c.span();
        let cstart = c.start() + c.int(0, span * 3 / 10);
        let pivots = chance(&mut c.rng, 0.4);
        let mut t = cstart as f64;
        while (t as i64) < c.end() {
            let k = ((n as f64) * (frac + unif(&mut c.rng, -0.1, 0.1)).clamp(0.05, 1.0)).round();
            for i in sample_indices(&mut c.rng, n, k as usize) {
                let ts = t as i64 + (unif(&mut c.rng, 0.0, spread) * 1000.0) as i64;
                let (acct, net, dev) = members[i];
                let m = attack_model(c, ts, pivots, M2);
                camp.emit(c, ts, acct, net, dev, m, 0.005);
            }
            t += if regular {
                (period + unif(&mut c.rng, -jitter, jitter)) * 1000.0
            } else {
                exp_gap(&mut c.rng, period) * 1000.0 + 1000.0
            };
        }
    }
}

/// Accounts spread over a pool of datacenter /24s across hosting providers, each request from
/// any address of the pool.
pub(super) fn dc_proxy_pool(c: &mut Ctx) {
    let (pools, sf) = groups(&mut c.rng, 1.0, 2.0, c.scale);
    for _ in 0..pools {
        let n = group_size(&mut c.rng, 10.0, 300.0, sf, 4);
        let blocks: Vec<_> = (0..usize_in(&mut c.rng, 3, 40))
            .map(|_| {
                let isp = infra::pick_isp(&mut c.rng, NetKind::Hosting);
                infra::block24(&mut c.rng, isp)
            })
            .collect();
        let pool: Vec<u32> = (0..usize_in(&mut c.rng, blocks.len() * 3, blocks.len() * 40))
            .map(|_| {
                let b = &blocks[c.rng.gen_range(0..blocks.len())];
                let nn = infra::in_block(&mut c.rng, b);
                c.add_net(nn)
            })
            .collect();
        let reword = unif(&mut c.rng, 0.0, 1.0);
        let camp = Campaign::reworded(&mut c.rng, 1, 3, reword);
        let rate = log_unif(&mut c.rng, 5.0, 50.0);
        let spoof = chance(&mut c.rng, 0.5);
        let span = c.span();
        let cstart = c.start() + c.int(0, span / 3);
        let bursts = burst_times(c, n, cstart);
        let pivots = chance(&mut c.rng, 0.5);
        for _ in 0..n {
            let created = if chance(&mut c.rng, 0.5) {
                burst_created(c, &bursts)
            } else {
                c.start() - (log_unif(&mut c.rng, 1.0, 200.0) * DAY as f64) as i64
            };
            let pay = chance(&mut c.rng, 0.6).then(|| infra::prepaid_card(&mut c.rng));
            let email = infra::consumer_email(&mut c.rng);
            let acct = c.add_account(created, None, pay, email);
            let d = if spoof {
                infra::spoofed_device(&mut c.rng)
            } else {
                infra::custom_device(&mut c.rng)
            };
            let dev = new_dev(c, d);
            let rate_h = rate * unif(&mut c.rng, 0.6, 1.4);
            let mut t =
                cstart.max(created) + (exp_gap(&mut c.rng, 3600.0 / rate_h) * 1000.0) as i64;
            while t < c.end() {
                let net = pick_net(&mut c.rng, &pool);
                let m = attack_model(c, t, pivots, M2);
                camp.emit(c, t, acct, net, dev, m, 0.01);
                t += (exp_gap(&mut c.rng, 3600.0 / rate_h) * 1000.0) as i64;
            }
        }
    }
}

/// Takeovers that keep the owner's device and network (a hijacked session on the owner's own
/// machine, or a stolen key used through it) at 0.1-0.2 requests/s, while the owner keeps using
/// the account.
pub(super) fn slow_takeover(c: &mut Ctx) {
    let n = count(&mut c.rng, 3.0, 12.0, c.scale);
    for _ in 0..n {
        let spec = PersonaSpec {
            age_days: (180.0, 2000.0),
            api_share: 0.3,
            pay: Pay::Own,
            ..PersonaSpec::default()
        };
        let p = persona(c, spec);
        let span = c.span();
        let switch = c.start() + c.int(span / 10, span * 3 / 4);
        let (from, to) = (c.start(), c.end());
        human_activity(c, &p, from, to, (2, 5));
        let stop = if chance(&mut c.rng, 0.7) {
            c.end()
        } else {
            switch + c.int(HOUR, 4 * HOUR)
        };
        let reword = if chance(&mut c.rng, 0.6) {
            unif(&mut c.rng, 0.3, 1.0)
        } else {
            0.0
        };
        let camp = Campaign::reworded(&mut c.rng, 1, 3, reword);
        let rate = unif(&mut c.rng, 0.1, 0.2);
        let prefers_new = chance(&mut c.rng, 0.6);
        let jitter = unif(&mut c.rng, 0.3, 0.9);
        let net = p.nets[0];
        for t in machine_times(&mut c.rng, switch, stop, rate, jitter) {
            let m = attack_model(c, t, prefers_new, M2);
            camp.emit(c, t, p.acct, net, p.dev, m, 0.01);
        }
    }
}
