//! The detectors. Each owns its rules, its evidence, its alert cadence and its state; the engine
//! keeps only the shared state ([`crate::state`]: accounts, the attribute index, the clock,
//! de-duplication, the prompt-copies sketch, expiry and caps) and hands every accepted event to
//! [`Detectors::observe_account`] and [`Detectors::observe_links`]. `detect` imports `state`, never `engine`.
//!
//! # Architecture
//!
//! ```text
//! engine ─► Detectors::observe_account(View, Observed, Out)
//!             └─ bulk::Bulk            (Detector)      ─► Decision
//!        ─► Detectors::observe_links(View, Observed, Out)
//!             ├─ link::ValueLinks      (LinkDetector)  ─► LinkRecord ─┐
//!             ├─ cohort::CohortLinks   (LinkDetector)  ─► LinkRecord ─┤
//!             └─ cluster::Assembler  ◄──────────────────────────────┘ ─► Decision
//! ```
//! - A [`Detector`] judges the event's account and pushes [`crate::alert::Decision`]s into
//!   [`Out`]; the engine passes them through the safety valve in order.
//! - A [`LinkDetector`] decides from its own values' state and what the accounts it names
//!   carry which accounts a link names, and emits a [`LinkRecord`]: plain data (link keys, kind,
//!   flags, accounts, event time), so that link decisions can travel between stages. It also
//!   explains its links and members when a cluster is alerted.
//! - The cluster assembler ([`cluster::Assembler`]) reads nothing but link records to decide
//!   which named accounts join: whether an account was caught in step, whether its network is
//!   a crowd of people and which values link it on its current event all reach it as records.
//!   It applies them with union-find, keeps stable cluster ids and the cluster each account,
//!   value and wave feeds, gathers member evidence and decides when a cluster alerts.
//! - Per-account detector fields (bulk's last alert and moves, cohort's [`cohort::Presence`])
//!   live in the account record so that an event touches one record; only the owning detector
//!   writes them.
//! - A new detector is one module and one line in [`Detectors`].
//! - The account side and the link side can run in separate engines (see
//!   [`crate::engine::Role`]): the link side then sees shadow account records kept from the
//!   account stage's observations.
//!
//! Every number that decides a tier is a config key (`[harvest]`, `[bulk]`, `[cluster]`,
//! `[cohort]`, `[alerts]`, each documented with its reason in
//! `distillguard config --print-default`) and part of the `detector_version` hash. Score
//! weights are named consts beside their rule. These docs name the keys, never their values,
//! so they cannot drift from the config.
//!
//! # How it decides
//!
//! ## State
//!
//! Per account: twelve 5-minute buckets (the trailing hour: requests, single-turn,
//! reasoning-eliciting, templated, novel prompts, requests on a new model, input and output tokens)
//! with running totals, 24 hourly counts (round-the-clock activity), inter-arrival regularity, its
//! top templates, and the attribute values it holds. Per attribute value: its holders, and decayed
//! aggregates of the traffic through it (single-turn, reasoning, fresh-account and verified-org
//! shares, tokens, synchrony, creation-time spread, distinct networks). A value held by one account
//! is only a (value, account) pair until a second account shows up; a prompt template is indexed
//! from its second sighting. Everything is event time; per-event cost is O(1) whatever the window
//! length or cluster size.
//!
//! ## Prompt fingerprints
//!
//! One pass over the first 64 words computes a 64-bit SimHash (word bigrams), a *template skeleton*
//! (instruction words kept in order, runs of content words, numbers and function words collapsed to
//! one slot, so "Explain step by step how {topic} works" has one skeleton for every topic) and
//! whether a configurable phrase lexicon ("step by step", "show your reasoning", ...) occurs; the
//! last 256 bytes of a longer prompt give the closing skeleton and are searched for the lexicon
//! too. Words are found 64 bytes and hashed 8 bytes at a time. With only `prompt_simhash`, its top
//! bits stand in for the template.
//!
//! ## Harvest, not requests (`[harvest]`)
//!
//! Both detectors count *harvesting* requests: single-turn, extraction-worthy (a reasoning phrase,
//! or an answer at least `harvest.min_output_ratio` times the prompt and
//! `harvest.min_output_tokens` long), new to the account (no near-duplicate among its recent
//! prompts) and rare in the population: a fixed-size count-min sketch counts how many accounts sent
//! each prompt lately, and a prompt sent by more than `harvest.max_prompt_copies` (the
//! documentation's example, a class's shared assignment) harvests nothing new. Chat mixed in as
//! cover neither makes nor hides a harvest: volumes are absolute, and shares only add to scores. An
//! account's trailing hour is *extraction-like* when it harvested, harvest is at least
//! `harvest.min_profile_share` of it, and no more than `cluster.max_member_chat_share` of it
//! continued a conversation.
//!
//! ## bulk_extraction (`[bulk]`)
//!
//! An account is judged on its harvesting requests in the trailing hour, or, once its current run
//! of activity spans `bulk.projection_minutes` with `bulk.projection_min_harvest` harvests, on that
//! run's rate projected to an hour. A fresh account needs `bulk.min_harvest_fresh` an hour; an
//! established one `bulk.min_harvest_established` actual harvests with
//! `bulk.min_output_tokens_established` output tokens (customers' evaluation runs are normal), or
//! `bulk.min_harvest_corroborated` if it moved to a new device or network within
//! `bulk.move_corroborates_hours` (an account that moved more than `bulk.max_credible_moves`
//! times, an app on many servers, is not corroborated by a move); anyone
//! `bulk.high_volume_harvest`. An established account that did not move is judged only once its
//! harvesting episode outlasts a customer's evaluation run: `bulk.established_min_episode_hours`
//! of harvest, or more than `bulk.established_min_episode_harvest` harvests in it (such an episode
//! is volume enough, whatever cover does to its trailing hour). The episode runs to its last
//! harvest that kept pace (`bulk.episode_pace_minutes`), so the answers still in the trailing
//! hour after a run ended, and the owner's own requests after it, do not lengthen it. Its
//! traffic must also show a script (`bulk.established_needs_script_tell`): machine pacing or long answers to
//! short prompts, which an app backend relaying its users shows neither of. The score adds volume,
//! output tokens, reasoning, template and single-turn shares, machine-like timing, round-the-clock
//! activity, a model pivot and account age, and subtracts a verified org.
//!
//! ## fake_account_cluster (`[cluster]`, `[cohort]`)
//!
//! Accounts are linked three ways:
//! - *Shared values*: an IP, /24 or /64, client fingerprint, card, prompt template, creation minute
//!   or autonomous system links its holders when enough of them (`cluster.min_members_*`) are
//!   extraction-like (`cluster.min_member_purity`), material harvest passes through it or came
//!   with the holders that took it up (a slow swarm rotating over many networks leaves little on
//!   any one), no verified org stands behind it, and the coordination fits the kind: fresh accounts or many accounts on
//!   one card; fresh accounts behind one network, client or creation minute whose traffic is
//!   overwhelmingly single-turn (`cluster.min_single_turn_share`: people at a venue converse);
//!   lockstep timing on a template, or a crowd of fresh single-turn accounts on one
//!   (`cluster.template_crowd_fresh_share`, `cluster.template_crowd_single_turn_share`).
//! - *Co-activity waves* ([`cohort`], after SynchroTrap and CopyCatch): per model, bins of
//!   `cohort.bin_secs` count the accounts harvesting in them against a baseline learned from the
//!   recent bins (after `cohort.warmup_bins`); an improbably busy bin is a wave, as is one
//!   with improbably many accounts arriving (not in the bin before: steady scripts do not
//!   arrive, so they do not hide a small campaign), and an account is in step when chance cannot
//!   explain how many of its active bins were waves, in separate episodes. This links campaigns
//!   that share no IP, card, device or wording. An established account whose runs of harvest
//!   start on the round minutes (`cohort.schedule_min_runs`, `cohort.schedule_min_share`) is a
//!   customer's scheduled job: crontabs fire together, so neither waves nor a template's burst
//!   put it in step.
//! - Union-find joins linked accounts into clusters; a cluster keeps the id of its oldest part, so
//!   a hydra's replacement accounts join the existing alert.
//!
//! An account is *named* only with evidence of its own: at least `cluster.min_member_harvest`
//! harvests, an extraction-like hour, and fresh, in step, or never chatted. A popular client
//! fingerprint or an autonomous system alone names no one (they merge clusters and add to a second
//! value), nor does a /24 or /64 whose holders crowd onto one of its addresses
//! (`cluster.prefix_max_address_share`: a residential exit links on its own address, and the rest
//! of its block are its neighbours), nor does a creation minute in which the hour's background sign-ups could be more than
//! `cluster.creation_minute_max_bystander_share` of its holders, nor does a value shared by circumstance (a network, a creation minute, a template
//! without lockstep timing: a venue, a sign-up rush, a starter kit) name an account with a chat
//! history, or one active for less than `cluster.weak_link_min_active_secs` (no time to converse
//! yet), or one on a network that is a crowd of people (`cluster.crowd_min_accounts` holders
//! whose traffic converses, or few of whom are extraction-like: its quiet holders are people
//! among people), or, for a
//! network or minute, one that harvested less than `cluster.min_member_harvest_share` of what the value's holders
//! harvested each on average (a person who signed up in a burst's minute, a bystander on a
//! swarm's network). A cluster is alerted with at least `cluster.min_cluster_size` named accounts and
//! `cluster.min_cluster_harvest` harvests between them; its score weighs size, reasoning and fresh
//! shares, distinct link kinds and synchrony, minus multi-turn use.
//!
//! ## Tiers (`[alerts]`)
//!
//! `review` (medium) from the detector's `bulk.alert_score` or `cluster.alert_score`, `throttle`
//! (high) from `alerts.throttle_score`, `suspend` (critical) from `alerts.suspend_score` with at
//! least `alerts.suspend_min_signals` crossed signals. An account's alert repeats only when its
//! tier rises (or after `alerts.repeat_secs`); a cluster is re-evaluated at most every
//! `cluster.recheck_secs` unless it grew, its alert is updated at most every
//! `alerts.cluster_update_secs` while it grows and always repeats every account still implicated.
//! Alert ids are deterministic.

pub mod bulk;
pub mod cluster;
pub mod cohort;
pub mod link;

use crate::alert::{signal, Decision};
use crate::config::Config;
use crate::event::Event;
use crate::state::account::{Account, Facts};
use crate::state::attribute::AttrKind;
use crate::state::{Accounts, Allowlist, Values};

/// Version of the detection logic; with the config hash it forms `detector_version`.
pub const DETECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The shared state as the detectors see it, at one event time.
pub struct View<'a> {
    pub cfg: &'a Config,
    pub accounts: &'a mut Accounts,
    /// The attribute index.
    pub values: &'a mut Values,
    pub allow: &'a Allowlist,
    pub now: i64,
}

impl View<'_> {
    /// What the link and cluster stages know of an account.
    pub fn facts(&self, key: u64) -> Option<Facts> {
        facts(self.accounts, key)
    }
}

/// What the link and cluster stages know of an account in `accounts`.
pub fn facts(accounts: &Accounts, key: u64) -> Option<Facts> {
    accounts.get(&key).map(|a| a.facts())
}

/// One accepted event, after the shared state took it in.
pub struct Observed<'a> {
    pub ev: &'a Event,
    /// Hash of its `event_id`.
    pub event: u64,
    /// Key of its account (present in [`View::accounts`]).
    pub account: u64,
    /// It harvested (see `[harvest]`).
    pub harvest: bool,
    /// The account moved to a new device or network after some history.
    pub moved: bool,
    /// The shared attribute values it touched, in the order it carries them.
    pub values: &'a [(u64, AttrKind)],
    /// It fired a template in a synchronised burst.
    pub in_burst: bool,
}

/// What the detectors decided: alerts in the order they were decided (the engine passes them
/// through the safety valve in that order), and alerts withheld for the allowlist.
#[derive(Default)]
pub struct Out {
    pub decisions: Vec<Decision>,
    pub suppressed: u64,
}

/// A detector that judges accounts on their own traffic and alerts.
pub trait Detector {
    /// Sees one accepted event.
    fn observe(&mut self, view: &mut View<'_>, obs: &Observed<'_>, out: &mut Out);
}

/// What a link record says: a shared attribute value or co-activity waves link accounts, an
/// account fired in a synchronised burst, or a network turned out to be (or stopped being) a
/// crowd of people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Value(AttrKind),
    Wave,
    /// The event's account fired a template in a synchronised burst: it is in step.
    Sync,
    /// The network `keys[0]` is a crowd of people (`crowd`) or no longer one: accounts on it
    /// are people among people (see `cluster.crowd_min_accounts`).
    Crowd,
}

/// A link decision: plain data (keys, kinds, flags, accounts, event time), the unit the
/// cluster assembler consumes from the link detectors. A link detector decides from the
/// linking value's own state and what the accounts it names carry; which of them join a
/// cluster, given everything else known about each account (its other links, whether it is in
/// step, whether its network is a crowd), the assembler decides. So a link detector needs no
/// state but its own values', and the assembler none but the records'.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub kind: LinkKind,
    /// The linking values or waves as link keys: one value's index key, or the waves (see
    /// [`cohort::wave_link`]) still remembered; the network of a `Crowd` record.
    pub keys: smallvec::SmallVec<[u64; 3]>,
    /// The event the record comes from (the hash of its id: records of one event are judged
    /// together).
    pub event: u64,
    /// The account whose event the record comes from, and what it shows of its own (what the
    /// assembler judges whether the event's links may name it on).
    pub account: u64,
    pub account_facts: Option<Facts>,
    /// A new link naming every holder that may be named (else it names at most `account`).
    pub all_holders: bool,
    /// Link key and public-id seed of a cluster this link founds.
    pub founder: u64,
    pub seed: u64,
    /// Accounts the link names, in the order they join, with what each shows of its own.
    pub accounts: Vec<(u64, Facts)>,
    /// Names only accounts already in a cluster (a value that alone names no one: it merges).
    pub merge_only: bool,
    /// Shared by circumstance (a network, an autonomous system, a creation minute, a template
    /// without lockstep timing): it names no account with a person's chat history, too short
    /// a history, or on a network that is a crowd of people.
    pub circumstantial: bool,
    /// For `Crowd`: whether the network is a crowd now.
    pub crowd: bool,
    pub at_ms: i64,
}

impl LinkRecord {
    /// A record of `kind` from `account`'s event `event` at `at_ms`, naming no one.
    pub fn new(kind: LinkKind, event: u64, account: u64, at_ms: i64) -> Self {
        Self {
            kind,
            event,
            keys: smallvec::SmallVec::new(),
            account,
            account_facts: None,
            all_holders: false,
            founder: 0,
            seed: 0,
            accounts: Vec::new(),
            merge_only: false,
            circumstantial: false,
            crowd: false,
            at_ms,
        }
    }
}

/// A detector that links accounts; the cluster assembler consumes its records and asks it to
/// explain its links and members in a cluster alert.
pub trait LinkDetector {
    /// Sees one accepted event; appends the links it decides to `links`.
    fn observe(&mut self, view: &mut View<'_>, obs: &Observed<'_>, links: &mut Vec<LinkRecord>);
    /// Whether a cluster member is in step, and how likely that is by chance; `None` if the
    /// detector knows nothing of it.
    fn step(&self, _acc: &Account) -> Option<(bool, f64)> {
        None
    }
    /// What link `key` shows now; `None` if it is not this detector's or no longer held.
    fn explain(&self, view: &View<'_>, key: u64) -> Option<Explained>;
}

/// What one link of a cluster shows, as its alert explains it: plain data, so that it can
/// travel with the link records to a cluster stage of its own.
#[derive(Debug, Clone)]
pub enum Explained {
    /// A shared attribute value: its readable form and the evidence that makes it a link.
    Value {
        link: link::Link,
        value: compact_str::CompactString,
    },
    /// A co-activity wave.
    Wave(cohort::Wave),
}

impl Explained {
    /// Adds the link to a cluster's evidence.
    pub fn add_to(&self, cfg: &Config, ev: &mut cluster::Evidence) {
        match self {
            Explained::Value { link, value } => {
                ev.shared.push(link.to_json(value));
                ev.links.push(link.clone());
            }
            Explained::Wave(wave) => {
                ev.stats.waves += 1;
                ev.waves.push(serde_json::json!({
                    "bin_start": crate::event::time::format_ms(wave.start_ms),
                    "bin_secs": cfg.cohort.bin_secs,
                    "harvesting_accounts": wave.accounts,
                    "counted": wave.counted.as_str(),
                    "expected_by_baseline": (wave.expected * 100.0).round() / 100.0,
                    "chance_p": wave.p_value(),
                }));
            }
        }
    }
}

/// What a cluster's evaluation reads of one member: plain data, taken from the account's
/// record (in one process at the evaluation, in a link stage when it sends a link record).
#[derive(Debug, Clone)]
pub struct MemberSnapshot {
    pub id: compact_str::CompactString,
    pub org: Option<compact_str::CompactString>,
    pub created_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub harvest_ever: u32,
    /// The trailing hour's counts when it was taken.
    pub hour: crate::state::window::Counts,
    /// Its latest example event.
    pub example: Option<String>,
    /// In step with co-activity waves, and the chance of that (`None`: not known where it
    /// was taken).
    pub step: Option<(bool, f64)>,
    /// When it was taken (event time).
    pub at_ms: i64,
}

impl MemberSnapshot {
    /// The account's snapshot at `now`, with what the link detectors know of its co-activity.
    pub fn of(acc: &mut Account, now: i64, detectors: &[&dyn LinkDetector]) -> Self {
        let step = detectors.iter().find_map(|d| d.step(acc));
        Self {
            hour: acc.hour.totals(now),
            id: acc.id.clone(),
            org: acc.org_id.clone(),
            created_ms: acc.created_ms,
            first_seen_ms: acc.first_seen_ms,
            harvest_ever: acc.harvest_ever,
            example: acc.example_ids().pop(),
            step,
            at_ms: now,
        }
    }
}

/// One of the link stage's `of` instances: it owns the attribute values whose route (see
/// [`Shard::owner`]) falls to `index`, and the co-activity state if [`COACTIVITY_ROUTE`]
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub of: usize,
}

impl Shard {
    /// The instance of `of` that owns route `route` (a value's or model's hash).
    pub fn owner(route: u64, of: usize) -> usize {
        ((route.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % of.max(1) as u64) as usize
    }

    pub fn owns(&self, route: u64) -> bool {
        Self::owner(route, self.of) == self.index
    }

    /// A shard-local id (a co-activity wave's link key, a cluster seed) made distinct across
    /// the shards.
    pub fn tag(&self, local: u64) -> u64 {
        local ^ ((self.index as u64 + 1) << 48)
    }
}

/// The route of the co-activity detector's state: one link shard keeps all of it. The bins
/// are per model, but an account's evidence (its active bins, the waves it was in) adds up
/// over every model it uses: split by model, an operator alternating its accounts between
/// two models would leave each shard half of every account's evidence.
pub const COACTIVITY_ROUTE: u64 = 0;

/// What a link shard decided on its events, for the cluster stage: the link records, and
/// snapshots of the accounts they mention and of the links they carry, by key, as the
/// shard's state showed them then.
#[derive(Debug, Default, Clone)]
pub struct Emitted {
    pub records: Vec<LinkRecord>,
    pub members: Vec<(u64, MemberSnapshot)>,
    pub explained: Vec<(u64, Explained)>,
}

impl Emitted {
    pub fn clear(&mut self) {
        self.records.clear();
        self.members.clear();
        self.explained.clear();
    }
}

/// Every detector, in the order it sees an event. A new detector is a module and a line here.
pub struct Detectors {
    bulk: bulk::Bulk,
    values: link::ValueLinks,
    cohort: cohort::CohortLinks,
    clusters: cluster::Assembler,
    links: Vec<LinkRecord>,
}

impl Detectors {
    pub fn new(cfg: &Config, config_hash: u64) -> Self {
        Self {
            bulk: bulk::Bulk::new(config_hash),
            values: link::ValueLinks::default(),
            cohort: cohort::CohortLinks::new(cfg.cohort.clone()),
            clusters: cluster::Assembler::new(cfg, config_hash),
            links: Vec::new(),
        }
    }

    /// Hands one accepted event to the detectors that judge accounts on their own traffic
    /// (the account stage's).
    pub fn observe_account(&mut self, view: &mut View<'_>, obs: &Observed<'_>, out: &mut Out) {
        self.bulk.observe(view, obs, out);
    }

    /// Hands one accepted event, after the attribute index took it in, to the link detectors
    /// and the cluster assembler (the link stage's).
    pub fn observe_links(&mut self, view: &mut View<'_>, obs: &Observed<'_>, out: &mut Out) {
        let mut links = std::mem::take(&mut self.links);
        links.clear();
        self.values.observe(view, obs, &mut links);
        self.cohort.observe(view, obs, &mut links);
        let explain: [&dyn LinkDetector; 2] = [&self.values, &self.cohort];
        let clock = cluster::Clock {
            cfg: view.cfg,
            now: view.now,
        };
        let mut src = cluster::Local {
            view,
            detectors: &explain,
        };
        self.clusters
            .assemble(clock, obs.account, &links, &mut src, out);
        self.links = links;
    }

    /// In link shard `shard` (see [`Shard`]): hands one accepted event to the link
    /// detectors and appends what they decided to `emitted`, for the cluster stage. The
    /// co-activity detector runs on the event only on the shard that owns it.
    pub fn shard_links(
        &mut self,
        shard: Shard,
        view: &mut View<'_>,
        obs: &Observed<'_>,
        emitted: &mut Emitted,
    ) {
        let start = emitted.records.len();
        self.values.observe(view, obs, &mut emitted.records);
        let owns_cohort = shard.owns(COACTIVITY_ROUTE);
        if owns_cohort {
            self.cohort.observe(view, obs, &mut emitted.records);
        } else {
            self.cohort.note_run(view, obs);
        }
        if start == emitted.records.len() {
            return;
        }
        let values: [&dyn LinkDetector; 1] = [&self.values];
        let cohort: [&dyn LinkDetector; 1] = [&self.cohort];
        let now = view.now;
        for r in &mut emitted.records[start..] {
            let mut snap = |key: u64| {
                if emitted.members.iter().any(|(k, _)| *k == key) {
                    return;
                }
                if let Some(mut acc) = view.accounts.get_mut(&key) {
                    let step: &[&dyn LinkDetector] = if owns_cohort { &cohort } else { &[] };
                    let s = MemberSnapshot::of(&mut acc, now, step);
                    emitted.members.push((key, s));
                }
            };
            snap(r.account);
            for &(a, _) in &r.accounts {
                snap(a);
            }
            match r.kind {
                LinkKind::Value(_) => {
                    for &k in &r.keys {
                        if let Some(x) = values[0].explain(view, k) {
                            emitted.explained.push((k, x));
                        }
                    }
                }
                LinkKind::Wave => {
                    // Wave ids are the shard's own: the cluster stage tells the shards'
                    // waves apart by the shard's tag in their keys and cluster seeds.
                    for k in r.keys.iter_mut() {
                        if let Some(x) = cohort[0].explain(view, *k) {
                            emitted.explained.push((shard.tag(*k), x));
                        }
                        *k = shard.tag(*k);
                    }
                    if r.founder != 0 {
                        r.founder = shard.tag(r.founder);
                    }
                    r.seed = shard.tag(r.seed);
                }
                LinkKind::Sync | LinkKind::Crowd => {}
            }
        }
    }

    /// An account left the shared state (expired or evicted).
    pub fn forget(&mut self, key: u64, acc: &Account) {
        self.values.forget(acc);
        self.clusters.forget(key);
    }

    /// Periodic upkeep, after the engine's sweep.
    pub fn sweep(&mut self, now: i64) {
        self.clusters.sweep(now);
    }

    /// Clusters held.
    pub fn clusters(&self) -> usize {
        self.clusters.len()
    }
}

/// One signal of a decision: its value against the threshold it was compared with.
#[derive(Debug, Clone)]
pub struct Signal {
    pub name: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub crossed: bool,
}

impl Signal {
    pub fn at_least(name: &'static str, value: f64, threshold: f64) -> Self {
        Self {
            name,
            value,
            threshold,
            crossed: value >= threshold,
        }
    }

    pub fn at_most(name: &'static str, value: f64, threshold: f64) -> Self {
        Self {
            name,
            value,
            threshold,
            crossed: value <= threshold,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        signal(self.name, self.value, self.threshold, self.crossed)
    }
}

/// Percent, for summaries.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}
