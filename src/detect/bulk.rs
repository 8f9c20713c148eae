//! `bulk_extraction`: one account systematically harvesting outputs.
//!
//! An account is judged on the absolute number of harvesting requests (see [`super`]) in its
//! trailing hour, or on its current run's projected hourly rate: chat mixed in as cover adds
//! nothing and hides nothing. Established accounts need more harvest and output tokens, or
//! corroboration (a move to a new device or network, by an account that rarely moves), than
//! fresh ones: one-off evaluation runs are normal for established customers, on newly released
//! models as much as on old ones. Without a move, an established account is judged only once
//! its harvesting episode outlasts an evaluation run, in hours or in harvested answers.

use super::{pct, Detector, Observed, Out, Signal, View};
use crate::alert::{Decision, Kind, Tier};
use crate::config::{BulkConfig, Config};
use crate::state::account::Account;
use crate::state::window::{Counts, BUCKET_MS};

/// Score subtracted for a verified organisation behind the account.
const ORG_WEIGHT: f64 = 0.2;
/// Score subtracted, at most, when little of the hour's traffic harvested (all of it when
/// none did, none from half up).
const OTHER_TRAFFIC_WEIGHT: f64 = 0.15;

/// The `bulk_extraction` detector: judges the event's account after every event and alerts
/// when its tier rises (or after `alerts.repeat_secs`). Its per-account state (last alert,
/// moves) lives in the account record.
pub struct Bulk {
    version: String,
}

impl Bulk {
    pub fn new(config_hash: u64) -> Self {
        Self {
            version: format!(
                "{}/{}+cfg.{:08x}",
                Kind::BulkExtraction,
                super::DETECTOR_VERSION,
                config_hash as u32
            ),
        }
    }
}

impl Detector for Bulk {
    fn observe(&mut self, view: &mut View<'_>, obs: &Observed<'_>, out: &mut Out) {
        let cfg = view.cfg;
        let now = view.now;
        let Some(mut acc) = view.accounts.get_mut(&obs.account) else {
            return;
        };
        if obs.moved {
            // A move corroborates a takeover only for an account that rarely moves.
            acc.infra_changes = acc.infra_changes.saturating_add(1);
            if acc.infra_changes <= cfg.bulk.max_credible_moves {
                acc.changed_infra_ms = now;
            } else {
                acc.changed_infra_ms = 0;
            }
        }
        if !cfg.bulk.enabled {
            return;
        }
        let Some(a) = assess(&mut acc, now, obs.harvest, cfg) else {
            return;
        };
        if a.score < cfg.bulk.alert_score {
            return;
        }
        let mut tier = Tier::from_score(a.score, a.crossed(), &cfg.alerts);
        let withheld = a.suspend_withheld && tier > Tier::High;
        if withheld {
            tier = Tier::High;
        }
        let rank = tier as u8 + 1;
        let repeat_due = cfg.alerts.repeat_secs > 0
            && acc.bulk_alert_ms != 0
            && now - acc.bulk_alert_ms >= (cfg.alerts.repeat_secs * 1000) as i64;
        if rank <= acc.bulk_alert_rank && !repeat_due {
            return;
        }
        if view.allow.allows(&acc.id, acc.org_id.as_deref(), now) {
            out.suppressed += 1;
            return;
        }
        acc.bulk_alert_rank = rank.max(acc.bulk_alert_rank);
        acc.bulk_alert_ms = now;
        let mut examples = acc.example_ids();
        examples.truncate(cfg.alerts.example_events);
        let mut evidence = serde_json::json!({
            "summary": a.summary(),
            "signals": a.signals.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
            "signals_crossed": a.crossed(),
            "account_age_days": a.age_days.map(|d| (d * 10.0).round() / 10.0),
            "org_id": acc.org_id.as_deref(),
            "example_event_ids": examples,
        });
        if withheld {
            evidence["suspend_withheld"] = serde_json::json!(
                "established account on its usual device and network: throttle at most \
                 (bulk.established_suspend_needs_corroboration)"
            );
        }
        out.decisions.push(Decision {
            kind: Kind::BulkExtraction,
            subject: acc.id.to_string(),
            accounts: vec![acc.id.to_string()],
            tier,
            score: a.score,
            detected_at_ms: now,
            window_start_ms: a.window_start_ms,
            window_end_ms: now,
            evidence,
            detector_version: self.version.clone(),
        });
    }
}

/// The outcome of judging one account.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub score: f64,
    pub signals: Vec<Signal>,
    /// What the one-line summary says (formatted only for an alert: see [`Assessment::summary`]).
    said: Said,
    pub window_start_ms: i64,
    pub requests: u32,
    pub harvest: u32,
    pub age_days: Option<f64>,
    /// `throttle` at most (`bulk.established_suspend_needs_corroboration`).
    pub suspend_withheld: bool,
}

/// The figures the summary line quotes.
#[derive(Debug, Clone)]
struct Said {
    single: f64,
    reasoning: f64,
    templated: f64,
    output_tokens: u64,
    ratio: f64,
}

impl Assessment {
    /// One line a person can read: age, volume, shares, output.
    pub fn summary(&self) -> String {
        let s = &self.said;
        let age = match self.age_days {
            Some(d) => format!("{d:.1}-day-old account"),
            None => "account of unknown age".to_string(),
        };
        format!(
            "{age} sent {} requests in the last hour, {} of them harvesting (new single-turn prompts eliciting reasoning or long answers; {} single-turn, {} reasoning-eliciting, {} on its templates), {:.0}k output tokens at {:.1}x its input",
            self.requests,
            self.harvest,
            pct(s.single),
            pct(s.reasoning),
            pct(s.templated),
            s.output_tokens as f64 / 1000.0,
            s.ratio
        )
    }

    pub fn crossed(&self) -> u32 {
        self.signals.iter().filter(|s| s.crossed).count() as u32
    }
}

/// The hourly harvest rate an account is judged on: its trailing hour, or, once the current
/// run of activity spans `projection_minutes` with `projection_min_harvest` harvesting
/// requests in it, that run's rate over an hour (a steady harvest is judged ten minutes in,
/// not an hour in). The run is measured from the start of its first 5-minute bucket, which
/// can only understate the rate.
pub fn harvest_rate(acc: &Account, hour_harvest: u32, now_ms: i64, cfg: &BulkConfig) -> u32 {
    let (run_start, run_harvest) = acc.hour.harvest_run();
    let minutes = (now_ms - run_start) as f64 / 60_000.0;
    if minutes < f64::from(cfg.projection_minutes) || run_harvest < cfg.projection_min_harvest {
        return hour_harvest;
    }
    let projected = (f64::from(run_harvest) * 60.0 / minutes.max(1.0)) as u32;
    hour_harvest.max(projected)
}

/// Judges an account at event time `now_ms`, after an event that harvested or not. `None`:
/// not a candidate at all.
pub fn assess(
    acc: &mut Account,
    now_ms: i64,
    harvested: bool,
    config: &Config,
) -> Option<Assessment> {
    let cfg = &config.bulk;
    let fresh_days = config.engine.fresh_account_days;
    let t = acc.hour.totals(now_ms);
    // The harvesting episode: since the trailing hour last reached `min_harvest_fresh`, and
    // as long as the harvest kept that pace (`episode_pace_minutes`): the answers still in
    // the window after a run ended, or the owner's own traffic after it, do not lengthen it.
    if t.harvest >= cfg.min_harvest_fresh {
        if acc.episode_ms == 0 {
            acc.episode_ms = now_ms;
            acc.episode_base = acc.harvest_ever.saturating_sub(t.harvest);
            acc.episode_paced_secs = 0;
        }
        let buckets = cfg
            .episode_pace_minutes
            .div_ceil((BUCKET_MS / 60_000) as u32) as usize;
        let pace = u64::from(cfg.min_harvest_fresh) * u64::from(cfg.episode_pace_minutes);
        if harvested && u64::from(acc.hour.recent_harvest(now_ms, buckets)) * 60 >= pace {
            acc.episode_paced_secs =
                ((now_ms - acc.episode_ms) / 1000).clamp(0, u32::MAX as i64) as u32;
        }
    } else {
        acc.episode_ms = 0;
    }
    let rotating = f64::from(acc.network_hops) >= cfg.rotation_min_networks_per_hour;
    let mut floor = cfg
        .min_harvest_fresh
        .min(cfg.min_harvest_established)
        .min(cfg.min_harvest_corroborated);
    if rotating {
        floor = floor.min(cfg.min_harvest_rotating);
    }
    // Cheap rejection first: this runs for every event.
    if t.harvest
        .saturating_mul(60 / cfg.projection_minutes.clamp(1, 60))
        < floor
    {
        return None;
    }
    let single = t.share(t.single_turn);
    let reasoning = t.reasoning_share();
    let templated = t.share(t.templated);
    let ratio = t.output_ratio();
    let age_days = acc.age_days(now_ms);
    let fresh = acc.is_fresh(now_ms, fresh_days);
    let new_model = t.share(t.new_model);
    let pivot = new_model >= cfg.min_new_model_share;
    let infra_change = acc.changed_infra_ms > 0
        && ((now_ms - acc.changed_infra_ms) as f64) < cfg.move_corroborates_hours * 3_600_000.0;
    let streak_minutes = acc.hour.active_streak() * (BUCKET_MS / 60_000) as u32;
    let sustained = streak_minutes >= cfg.sustained_minutes;
    let harvest = t.harvest;
    // Fresh and newly corroborated accounts are judged on a projected rate; an established
    // account on its actual hour (customers' evaluation runs are steady too).
    let projected = harvest_rate(acc, harvest, now_ms, cfg);
    // An established account on its usual device and network: a customer's evaluation run
    // harvests too, but ends within hours and a few thousand prompts. Its episode is measured
    // at a harvest, so the run's answers still in the window after it ended do not lengthen it.
    let episode = (acc.episode_ms > 0 && harvested).then(|| Episode {
        hours: f64::from(acc.episode_paced_secs) / 3600.0,
        harvest: acc.harvest_ever.saturating_sub(acc.episode_base),
    });
    let uncorroborated = !fresh && !infra_change && !rotating;
    let outlasts_evaluation = episode.is_some_and(|e| {
        e.hours >= cfg.established_min_episode_hours
            || e.harvest > cfg.established_min_episode_harvest
    });
    // An episode that outlasted any evaluation run is itself the volume: hours at
    // `min_harvest_fresh` an hour or more. Asking its trailing hour for an established
    // account's one-hour bar on top would let cover traffic, which thins the hour's harvest
    // but not the episode's length, hide it.
    let volume_ok = harvest >= cfg.high_volume_harvest
        || (t.output_tokens >= cfg.high_volume_output_tokens && harvest >= cfg.min_harvest_fresh)
        || (rotating && projected >= cfg.min_harvest_rotating)
        || if fresh {
            projected >= cfg.min_harvest_fresh
        } else {
            (harvest >= cfg.min_harvest_established
                && t.output_tokens >= cfg.min_output_tokens_established)
                || (infra_change && projected >= cfg.min_harvest_corroborated)
                || outlasts_evaluation
        };
    if !volume_ok || (uncorroborated && !outlasts_evaluation) {
        return None;
    }
    let f = Facts {
        t,
        harvest,
        projected,
        single,
        reasoning,
        templated,
        ratio,
        new_model,
        pivot,
        fresh,
        infra_change,
        rotating,
        network_hops: acc.network_hops,
        streak_minutes,
        sustained,
        cv: acc.gaps.cv(),
        active_hours: acc.day.active_hours(now_ms),
        age_days,
        moved_hours_ago: ((now_ms - acc.changed_infra_ms) as f64) / 3_600_000.0,
        episode: episode.filter(|_| uncorroborated),
    };
    // Without a move, the account's own traffic must show the script
    // (`bulk.established_needs_script_tell`): an app backend relays its users' volume.
    let scripted = f.cv.is_some_and(|c| c <= cfg.max_gap_cv) || f.ratio >= cfg.min_output_ratio;
    if f.episode.is_some() && cfg.established_needs_script_tell && !scripted {
        return None;
    }
    let signals = f.signals(cfg, fresh_days);
    let score = f.score(cfg, acc.org_id.is_some());
    Some(Assessment {
        score,
        signals,
        said: Said {
            single,
            reasoning,
            templated,
            output_tokens: t.output_tokens,
            ratio,
        },
        window_start_ms: acc.hour.start_ms().max(acc.first_seen_ms),
        requests: t.requests,
        harvest,
        age_days,
        suspend_withheld: cfg.established_suspend_needs_corroboration
            && !fresh
            && !infra_change
            && !rotating,
    })
}

/// What [`assess`] measured of an account's trailing hour, for its signals and score.
struct Facts {
    t: Counts,
    harvest: u32,
    projected: u32,
    single: f64,
    reasoning: f64,
    templated: f64,
    ratio: f64,
    new_model: f64,
    pivot: bool,
    fresh: bool,
    infra_change: bool,
    /// Behind a rotating proxy (`bulk.rotation_min_networks_per_hour`).
    rotating: bool,
    network_hops: f32,
    streak_minutes: u32,
    sustained: bool,
    cv: Option<f64>,
    active_hours: u32,
    age_days: Option<f64>,
    moved_hours_ago: f64,
    /// The harvesting episode, for an established account on its usual device and network.
    episode: Option<Episode>,
}

/// How long an account has been harvesting, and how much.
#[derive(Clone, Copy)]
struct Episode {
    hours: f64,
    harvest: u32,
}

impl Facts {
    /// Each measured value against the bar it is compared with.
    fn signals(&self, cfg: &BulkConfig, fresh_days: f64) -> Vec<Signal> {
        let t = &self.t;
        let vol_threshold = if self.rotating {
            cfg.min_harvest_rotating
        } else if self.fresh {
            cfg.min_harvest_fresh
        } else if self.infra_change {
            cfg.min_harvest_corroborated
        } else {
            cfg.min_harvest_established
        };
        let mut signals = vec![
            Signal::at_least(
                "harvest_requests_1h",
                f64::from(self.harvest),
                f64::from(vol_threshold),
            ),
            Signal::at_least(
                "projected_harvest_per_hour",
                f64::from(self.projected),
                f64::from(vol_threshold),
            ),
            Signal::at_least(
                "output_tokens_1h",
                t.output_tokens as f64,
                cfg.high_volume_output_tokens as f64,
            ),
            Signal::at_least("single_turn_share", self.single, cfg.min_single_turn_share),
            Signal::at_least(
                "reasoning_prompt_share",
                self.reasoning,
                cfg.min_reasoning_share,
            ),
            Signal::at_least("output_input_ratio", self.ratio, cfg.min_output_ratio),
            Signal::at_least("template_share", self.templated, cfg.min_template_share),
            Signal::at_least("novel_prompt_share", t.share(t.novel), 0.8),
            Signal::at_least("new_model_share", self.new_model, cfg.min_new_model_share),
            Signal::at_least(
                "active_minutes_streak",
                f64::from(self.streak_minutes),
                f64::from(cfg.sustained_minutes),
            ),
            Signal::at_least(
                "active_hours_24h",
                f64::from(self.active_hours),
                f64::from(cfg.min_active_hours),
            ),
        ];
        if !t.text_known() {
            signals.push(Signal::at_least(
                "prompt_text_share",
                t.share(t.with_text),
                0.5,
            ));
        }
        if let Some(cv) = self.cv {
            signals.push(Signal::at_most("inter_arrival_cv", cv, cfg.max_gap_cv));
        }
        if let Some(d) = self.age_days {
            signals.push(Signal::at_most("account_age_days", d, fresh_days));
        }
        if self.network_hops >= 1.0 {
            signals.push(Signal::at_least(
                "new_networks_per_hour",
                (f64::from(self.network_hops) * 10.0).round() / 10.0,
                cfg.rotation_min_networks_per_hour,
            ));
        }
        if self.infra_change {
            signals.push(Signal::at_least(
                "new_device_or_network_hours_ago",
                self.moved_hours_ago,
                0.0,
            ));
        }
        if let Some(e) = self.episode {
            signals.push(Signal::at_least(
                "harvest_episode_hours",
                (e.hours * 100.0).round() / 100.0,
                cfg.established_min_episode_hours,
            ));
            signals.push(Signal::at_least(
                "harvest_episode_requests",
                f64::from(e.harvest),
                f64::from(cfg.established_min_episode_harvest),
            ));
        }
        signals
    }

    /// Volume and output first, then a step for each kind of corroboration; less for a
    /// verified org and for traffic that is mostly not harvest.
    fn score(&self, cfg: &BulkConfig, has_org: bool) -> f64 {
        let t = &self.t;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut score = 0.5
            + 0.15
                * (f64::from(self.projected) / f64::from(cfg.high_volume_harvest.max(1))).min(1.0)
            + 0.10
                * (t.output_tokens as f64 / cfg.high_volume_output_tokens.max(1) as f64).min(1.0)
            + 0.05
                * flag(
                    self.reasoning >= cfg.min_reasoning_share
                        || self.single >= cfg.min_single_turn_share,
                )
            + 0.05 * flag(self.ratio >= cfg.min_output_ratio)
            + 0.05 * flag(self.templated >= cfg.min_template_share)
            + 0.05 * flag(self.cv.is_some_and(|c| c <= cfg.max_gap_cv))
            + 0.05 * flag(self.active_hours >= cfg.min_active_hours)
            + 0.05 * flag(self.pivot)
            + 0.05 * flag(self.fresh)
            + 0.05 * flag(self.infra_change || self.rotating || self.sustained);
        if has_org {
            score -= ORG_WEIGHT;
        }
        // Traffic that is mostly not harvest (an app backend's long-context requests, among
        // which some short questions get long answers) scores lower. A score term, not a
        // gate, and only below half: cover traffic lowers it only by hiding the harvest in
        // twice its volume.
        score -= OTHER_TRAFFIC_WEIGHT * ((0.5 - t.share(self.harvest)) * 2.0).clamp(0.0, 1.0);
        score.clamp(0.0, 1.0)
    }
}
