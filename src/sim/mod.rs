//! Labelled traffic simulator: benign look-alike families and distillation attack families
//! in one stream, so detectors can be scored on precision as well as recall.
//!
//! Everything is derived from one seed through per-family ChaCha streams keyed by the family
//! name, so adding a family or changing the scenario does not perturb the others.

mod families;
mod infra;
mod paraphrase;
mod prompts;
mod rng;
mod words;

use crate::event::json::{JsonStr, JsonTime, RequestEventJson};
use compact_str::CompactString;
use infra::{Device, Net};
use rand::SeedableRng;
use rng::SimRng;
use serde::{Deserialize, Serialize};

/// Benign families, in generation order.
pub const BENIGN_FAMILIES: &[&str] = &[
    "ordinary",
    "household",
    "cgnat",
    "enterprise",
    "classroom",
    "batch",
    "eval_run",
    "agentic",
    "signup_wave",
    "quickstart_crowd",
    "hackathon",
    "app_backend",
    "scheduled_jobs",
];

/// Attack families, in generation order.
pub const ATTACK_FAMILIES: &[&str] = &[
    "single_harvester",
    "hydra",
    "low_rate_swarm",
    "lockstep",
    "aged_takeover",
    "cover_harvester",
    "paraphrase_swarm",
    "rotating_hydra",
    "timing_lockstep",
    "dc_proxy_pool",
    "slow_takeover",
];

/// The first suite's families: the attacks without evasion, and the benign crowds they were
/// scored against.
pub const CLASSIC_FAMILIES: &[&str] = &[
    "ordinary",
    "household",
    "cgnat",
    "enterprise",
    "classroom",
    "batch",
    "eval_run",
    "agentic",
    "signup_wave",
    "single_harvester",
    "hydra",
    "low_rate_swarm",
    "lockstep",
    "aged_takeover",
];

/// The evasive suite: attacks that reword, rotate, spoof and hide behind cover, among every
/// benign crowd that looks like one of them.
pub const EVASIVE_FAMILIES: &[&str] = &[
    "ordinary",
    "household",
    "cgnat",
    "enterprise",
    "classroom",
    "batch",
    "eval_run",
    "agentic",
    "signup_wave",
    "quickstart_crowd",
    "hackathon",
    "app_backend",
    "scheduled_jobs",
    "cover_harvester",
    "paraphrase_swarm",
    "rotating_hydra",
    "timing_lockstep",
    "dc_proxy_pool",
    "slow_takeover",
];

/// 2026-11-02T00:00:00Z, a Monday, so business-hours families have a working day.
const DEFAULT_START_MS: i64 = 1_793_577_600_000;

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub scenario: String,
    pub seed: u64,
    pub scale: f64,
    pub hours: f64,
    pub start_ms: i64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            scenario: "all".to_string(),
            seed: 1,
            scale: 1.0,
            hours: 6.0,
            start_ms: DEFAULT_START_MS,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Label {
    pub account_id: String,
    pub family: String,
    pub attack: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack_start: Option<String>,
}

pub struct Simulation {
    pub events: Vec<RequestEventJson<'static>>,
    pub labels: Vec<Label>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown scenario {0:?}; valid: {1}")]
    UnknownScenario(String, String),
    #[error("scale must be finite and in (0, 20], got {0}")]
    BadScale(f64),
    #[error("hours must be finite and in (0, 168], got {0}")]
    BadHours(f64),
}

pub fn scenario_names() -> Vec<&'static str> {
    let mut v = vec!["all", "classic", "evasive", "benign", "attacks"];
    v.extend_from_slice(BENIGN_FAMILIES);
    v.extend_from_slice(ATTACK_FAMILIES);
    v
}

/// The models on offer. Index 2 ("frontier-3") is released partway through each run.
pub(crate) const MODELS: &[&str] = &["frontier-1", "frontier-2", "frontier-3", "frontier-2-lite"];
pub(crate) const M1: u8 = 0;
pub(crate) const M2: u8 = 1;
pub(crate) const M3: u8 = 2;
pub(crate) const M2_LITE: u8 = 3;

pub(crate) struct Account {
    pub id: CompactString,
    pub created_ms: i64,
    pub org: Option<CompactString>,
    pub payment: Option<CompactString>,
    pub email: CompactString,
    pub family: &'static str,
    pub attack: bool,
}

/// Internal event; identity attributes live in the account/net/device tables to keep the
/// hundreds of thousands of events small until they are rendered.
pub(crate) struct Ev {
    pub ts: i64,
    pub acct: u32,
    pub net: u32,
    pub dev: u32,
    pub model: u8,
    pub attack: bool,
    pub status: u16,
    pub turns: u32,
    pub input: i64,
    pub output: i64,
    pub prompt: String,
}

pub(crate) struct World {
    pub accounts: Vec<Account>,
    pub nets: Vec<Net>,
    pub devices: Vec<Device>,
    pub events: Vec<Ev>,
    pub start: i64,
    pub end: i64,
    /// Release time of the newest model.
    pub m3_release: i64,
}

/// Per-family generation context: the family's own RNG plus the shared tables.
pub(crate) struct Ctx<'a> {
    pub rng: SimRng,
    pub w: &'a mut World,
    pub scale: f64,
    pub family: &'static str,
    pub attack: bool,
}

pub(crate) const SEC: i64 = 1000;
pub(crate) const MIN: i64 = 60 * SEC;
pub(crate) const HOUR: i64 = 60 * MIN;
pub(crate) const DAY: i64 = 24 * HOUR;

impl Ctx<'_> {
    pub fn start(&self) -> i64 {
        self.w.start
    }
    pub fn end(&self) -> i64 {
        self.w.end
    }
    pub fn span(&self) -> i64 {
        self.w.end - self.w.start
    }

    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        rng::int(&mut self.rng, lo, hi)
    }

    pub fn add_net(&mut self, n: Net) -> u32 {
        self.w.nets.push(n);
        (self.w.nets.len() - 1) as u32
    }

    pub fn add_dev(&mut self, d: Device) -> u32 {
        self.w.devices.push(d);
        (self.w.devices.len() - 1) as u32
    }

    pub fn add_account(
        &mut self,
        created_ms: i64,
        org: Option<CompactString>,
        payment: Option<CompactString>,
        email: CompactString,
    ) -> u32 {
        let id = infra::account_id(&mut self.rng);
        self.w.accounts.push(Account {
            id,
            created_ms,
            org,
            payment,
            email,
            family: self.family,
            attack: self.attack,
        });
        (self.w.accounts.len() - 1) as u32
    }

    /// Records an event if it falls in the run and after the account existed; callers can
    /// therefore schedule freely without clipping every stream themselves.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        ts: i64,
        acct: u32,
        net: u32,
        dev: u32,
        model: u8,
        attack: bool,
        turns: u32,
        input: i64,
        output: i64,
        status: u16,
        prompt: String,
    ) {
        if ts < self.w.start || ts >= self.w.end || ts < self.w.accounts[acct as usize].created_ms {
            return;
        }
        let output = if status == 200 { output.max(1) } else { 0 };
        self.w.events.push(Ev {
            ts,
            acct,
            net,
            dev,
            model,
            attack,
            status,
            turns,
            input: input.max(1),
            output,
            prompt,
        });
    }

    /// Status codes: rate limiting grows with request rate; server errors are rare.
    pub fn status(&mut self, p429: f64) -> u16 {
        let r: f64 = rand::Rng::gen(&mut self.rng);
        if r < p429 {
            429
        } else if r < p429 + 0.003 {
            500
        } else {
            200
        }
    }

    /// Model choice for ordinary use: adoption of the newest model ramps up after release.
    pub fn human_model(&mut self, ts: i64) -> u8 {
        let r: f64 = rand::Rng::gen(&mut self.rng);
        if ts >= self.w.m3_release {
            let ramp = ((ts - self.w.m3_release) as f64 / (2 * HOUR) as f64).min(1.0);
            if r < 0.35 * ramp {
                return M3;
            }
        }
        if r > 0.86 {
            M1
        } else {
            M2
        }
    }

    pub fn tokens(&mut self, prompt: &str) -> i64 {
        let w = prompts::word_count(prompt) as f64;
        (w * rng::unif(&mut self.rng, 1.25, 1.45)).round() as i64 + 4
    }
}

/// Stochastic rounding keeps expected counts proportional to `scale` even when small.
pub(crate) fn sround(rng: &mut SimRng, x: f64) -> usize {
    let f = x.floor();
    let extra = if rng::chance(rng, x - f) { 1 } else { 0 };
    (f as usize) + extra
}

/// Number of groups (orgs, clusters, campaigns) for a `lo..hi` per-unit-scale range, and the
/// factor to shrink each group by once the count is already at its floor of one.
pub(crate) fn groups(rng: &mut SimRng, lo: f64, hi: f64, scale: f64) -> (usize, f64) {
    let x = rng::unif(rng, lo, hi + 1.0) * scale;
    if x >= 1.0 {
        (x.floor() as usize, 1.0)
    } else {
        (1, x)
    }
}

/// Count of individually sampled accounts/units for a `lo..hi` range scaled by `scale`.
pub(crate) fn count(rng: &mut SimRng, lo: f64, hi: f64, scale: f64) -> usize {
    let x = rng::unif(rng, lo, hi) * scale;
    sround(rng, x).max(1)
}

fn families_for(scenario: &str) -> Option<Vec<&'static str>> {
    let mut v: Vec<&'static str> = match scenario {
        "all" => BENIGN_FAMILIES
            .iter()
            .chain(ATTACK_FAMILIES)
            .copied()
            .collect(),
        "classic" => CLASSIC_FAMILIES.to_vec(),
        "evasive" => EVASIVE_FAMILIES.to_vec(),
        "benign" => BENIGN_FAMILIES.to_vec(),
        "attacks" => ATTACK_FAMILIES.to_vec(),
        other => {
            let f = BENIGN_FAMILIES
                .iter()
                .chain(ATTACK_FAMILIES)
                .find(|f| **f == other)?;
            vec![*f]
        }
    };
    // Every scenario carries the ordinary background that detectors are tuned against.
    if !v.contains(&"ordinary") {
        v.insert(0, "ordinary");
    }
    Some(v)
}

/// The simulation's events decoded as the service decodes them (default fingerprinting), with
/// its labels: for tests.
#[cfg(test)]
pub fn decoded(opts: &SimOptions) -> (Vec<crate::event::Event>, Vec<Label>) {
    decoded_with(opts, false)
}

/// [`decoded`], with only `prompt_simhash` if `simhash_only` (as from a gateway that
/// fingerprints upstream: no text, so templates are approximated by SimHash bits).
#[cfg(test)]
pub fn decoded_with(
    opts: &SimOptions,
    simhash_only: bool,
) -> (Vec<crate::event::Event>, Vec<Label>) {
    use crate::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
    let mut sim = generate(opts).expect("simulation");
    let f = Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon");
    if simhash_only {
        strip_prompts(&mut sim, &f);
    }
    let decoder = crate::event::Decoder::new(f);
    let events = sim
        .events
        .into_iter()
        .map(|raw| decoder.from_json(raw).expect("simulated events are valid"))
        .collect();
    (events, sim.labels)
}

pub fn generate(opts: &SimOptions) -> Result<Simulation, SimError> {
    if !(opts.scale.is_finite() && opts.scale > 0.0 && opts.scale <= 20.0) {
        return Err(SimError::BadScale(opts.scale));
    }
    if !(opts.hours.is_finite() && opts.hours > 0.0 && opts.hours <= 168.0) {
        return Err(SimError::BadHours(opts.hours));
    }
    let fams = families_for(&opts.scenario).ok_or_else(|| {
        SimError::UnknownScenario(opts.scenario.clone(), scenario_names().join(", "))
    })?;

    let start = opts.start_ms;
    let end = start + (opts.hours * HOUR as f64).round().max(1.0) as i64;
    let mut world_rng = SimRng::seed_from_u64(rng::mix(opts.seed ^ rng::fnv("world")));
    let m3_release = start + ((end - start) as f64 * rng::unif(&mut world_rng, 0.25, 0.6)) as i64;
    let mut w = World {
        accounts: Vec::new(),
        nets: Vec::new(),
        devices: Vec::new(),
        events: Vec::new(),
        start,
        end,
        m3_release,
    };
    for fam in &fams {
        let sub = rng::mix(rng::mix(opts.seed) ^ rng::fnv(fam));
        let mut ctx = Ctx {
            rng: SimRng::seed_from_u64(sub),
            w: &mut w,
            scale: opts.scale,
            family: fam,
            attack: ATTACK_FAMILIES.contains(fam),
        };
        families::run(fam, &mut ctx);
    }
    Ok(render(w, opts.seed))
}

fn render(mut w: World, seed: u64) -> Simulation {
    // Ids are random; make them unique deterministically in the (astronomically unlikely)
    // case of a collision rather than silently merging two accounts.
    let mut order: Vec<usize> = (0..w.accounts.len()).collect();
    order.sort_by(|a, b| w.accounts[*a].id.cmp(&w.accounts[*b].id));
    for pair in 1..order.len() {
        if w.accounts[order[pair]].id == w.accounts[order[pair - 1]].id {
            let fixed = compact_str::format_compact!("{}{}", w.accounts[order[pair]].id, pair);
            w.accounts[order[pair]].id = fixed;
        }
    }

    // Stable sort: ties keep family order then generation order, both deterministic.
    w.events.sort_by_key(|e| e.ts);

    let mut first_seen: Vec<Option<i64>> = vec![None; w.accounts.len()];
    let mut first_attack: Vec<Option<i64>> = vec![None; w.accounts.len()];
    let mut created_fmt: Vec<Option<CompactString>> = vec![None; w.accounts.len()];
    let mut events = Vec::with_capacity(w.events.len());
    for (i, e) in w.events.drain(..).enumerate() {
        let a = e.acct as usize;
        let acct = &w.accounts[a];
        if first_seen[a].is_none() {
            first_seen[a] = Some(e.ts);
        }
        if e.attack && first_attack[a].is_none() {
            first_attack[a] = Some(e.ts);
        }
        let created = created_fmt[a]
            .get_or_insert_with(|| fmt_ts(acct.created_ms))
            .clone();
        let net = &w.nets[e.net as usize];
        let dev = &w.devices[e.dev as usize];
        events.push(RequestEventJson {
            event_id: Some(compact_str::format_compact!("e-{seed}-{:09}", i + 1).into()),
            ts: Some(JsonTime::Text(fmt_ts(e.ts))),
            account_id: Some(acct.id.clone().into()),
            org_id: acct.org.clone().map(Into::into),
            api_key_id: None,
            account_created_at: Some(JsonTime::Text(created)),
            ip: Some(net.ip.clone().into()),
            asn: Some(net.asn),
            country: Some(net.country.clone().into()),
            device_fingerprint: Some(dev.fp.clone().into()),
            payment_fingerprint: acct.payment.clone().map(Into::into),
            email_domain: Some(acct.email.clone().into()),
            user_agent: Some(dev.ua.to_string().into()),
            model: Some(JsonStr::Borrowed(MODELS[e.model as usize])),
            endpoint: Some(JsonStr::Borrowed("/v1/messages")),
            input_tokens: Some(e.input),
            output_tokens: Some(e.output),
            conversation_turns: Some(i64::from(e.turns)),
            prompt_text: Some(e.prompt.into()),
            prompt_simhash: None,
            status: Some(i64::from(e.status)),
        });
    }

    let mut labels: Vec<Label> = w
        .accounts
        .iter()
        .enumerate()
        .filter(|(i, _)| first_seen[*i].is_some())
        .map(|(i, a)| Label {
            account_id: a.id.to_string(),
            family: a.family.to_string(),
            attack: a.attack,
            attack_start: if a.attack {
                first_attack[i]
                    .or(first_seen[i])
                    .map(|t| fmt_ts(t).to_string())
            } else {
                None
            },
        })
        .collect();
    labels.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    Simulation { events, labels }
}

pub fn write_jsonl(
    sim: &Simulation,
    events: &mut dyn std::io::Write,
    labels: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut ev = std::io::BufWriter::with_capacity(1 << 20, events);
    for e in &sim.events {
        serde_json::to_writer(&mut ev, e)?;
        ev.write_all(b"\n")?;
    }
    ev.flush()?;
    let mut lb = std::io::BufWriter::new(labels);
    for l in &sim.labels {
        serde_json::to_writer(&mut lb, l)?;
        lb.write_all(b"\n")?;
    }
    lb.flush()
}

use std::io::Write as _;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-02T00:00:00.000Z`. Hand-rolled because it
/// runs twice per event and must never fail.
pub(crate) fn fmt_ts(ms: i64) -> CompactString {
    let days = ms.div_euclid(DAY);
    let rem = ms.rem_euclid(DAY);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    compact_str::format_compact!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        rem / HOUR,
        (rem % HOUR) / MIN,
        (rem % MIN) / SEC,
        rem % SEC
    )
}

#[cfg(test)]
mod tests;

/// Replaces every prompt text by its 64-bit SimHash (`prompt_simhash`), as a gateway that
/// fingerprints upstream would send: for testing the detectors without prompt text.
pub fn strip_prompts(sim: &mut Simulation, fingerprinter: &crate::fingerprint::Fingerprinter) {
    for e in &mut sim.events {
        if let Some(text) = e.prompt_text.take() {
            let h = fingerprinter.fingerprint(&text).simhash;
            e.prompt_simhash = Some(compact_str::format_compact!("{h:016x}").into());
        }
    }
}
