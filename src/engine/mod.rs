//! The engine: synchronous, deterministic, event time only, no I/O.
//!
//! [`Engine::process`] takes one decoded event and appends the alerts it caused. Given the same
//! events in the same order and the same configuration it returns the same alerts; `replay`,
//! the Kafka service, the benches and the tests all drive it.
//!
//! State is keyed by 64-bit hashes: accounts in a DashMap of boxed per-account windows,
//! attribute values in a flat open-addressing table ([`crate::state::flat::FlatMap`], one cache line per
//! lookup, which matters at millions of values and several lookups per event). The engine is
//! single-writer and owned by one thread (the Kafka pipeline reads its gauges, and builds a
//! new engine on every rebalance, re-reading a window of input to rebuild its state). Memory
//! is bounded: idle accounts and values expire with the window, and hard caps evict the least
//! recently active, counted in [`Stats`].
//!
//! An engine runs all of the detection, or one stage of it ([`Role`]): `account` engines keyed
//! by account hand an [`Observation`] of each event to a `link` engine, which keeps shadow
//! account records from them ([`staged::Staged`] runs that split in one process). A link
//! engine can be one of several link shards ([`Engine::with_shard`]): it then indexes only
//! the values it owns, and its link records go to a [`cluster_stage::ClusterStage`].
//!
//! Every alert passes the suspension safety valve ([`valve::Valve`]) on its way out, on the
//! same event-time clock.

use compact_str::CompactString;
use nohash_hasher::IntMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

use crate::alert::{valve, Alert, Kind};
use crate::config::ValidConfig;
use crate::control::LiveAllowlist;
use crate::detect::{facts, Detectors, Emitted, Observed, Out, Shard, View};
use crate::event::Event;
use crate::state::account::Facts;
use crate::state::account::{
    self, Account, SLOT_ASN, SLOT_DEVICE, SLOT_EMAIL, SLOT_IP, SLOT_PAYMENT, SLOT_PREFIX,
    SLOT_TEMPLATE,
};
use crate::state::attribute::{self, AttrKind, Attribute, Touch};
use crate::state::dedup::Dedup;
use crate::state::window::Sample;
use crate::state::{copies, creation_key, prefetch, Accounts, Allowlist, Held};

pub use crate::detect::DETECTOR_VERSION;

pub mod cluster_stage;
mod index;
pub mod staged;
use index::Index;
pub use index::{Carried, Value};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// Older than the late allowance behind the newest event time: skipped.
    Late,
    /// Implausibly far ahead of the newest event time: skipped.
    OutOfRange,
}

impl Outcome {
    /// Bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "ok",
            Outcome::Duplicate => "duplicate",
            Outcome::Late => "late",
            Outcome::OutOfRange => "out_of_range",
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub events_late: u64,
    pub events_out_of_range: u64,
    pub accounts_created: u64,
    pub accounts_expired: u64,
    pub accounts_evicted: u64,
    pub attributes_created: u64,
    pub attributes_expired: u64,
    pub attributes_evicted: u64,
    pub alerts_bulk: u64,
    pub alerts_cluster: u64,
    pub alerts_suppressed_allowlist: u64,
    /// `suspend` alerts downgraded to `throttle` by the safety valve, by kind.
    pub alerts_rate_limited_bulk: u64,
    pub alerts_rate_limited_cluster: u64,
}

/// Sizes of the state right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Gauges {
    pub accounts: usize,
    pub attribute_values: usize,
    pub clusters: usize,
    pub dedup_ids: usize,
}

/// The account's extraction-like profile before and after this event, and the values it holds.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub was: bool,
    pub is: bool,
    /// The values the account holds: its slots, and its creation minute last.
    pub slots: [u64; account::SLOTS + 1],
}

/// Which part of the detection an engine runs: all of it in one process, or one stage of the
/// staged topology. An `Account` engine keeps the accounts' own windows, judges
/// `bulk_extraction` and hands on an [`Observation`] of every event it accepts; a `Link`
/// engine takes those observations (with the event's identifying fields) into shadow account
/// records and runs the link detectors and the cluster assembler on them. `All` is both in
/// one engine, on one account record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    All,
    Account,
    Link,
}

/// What the account stage made of one accepted event: the account's facts, its profile and
/// what the request contributes, and the attribute values it carries. With the event's
/// identifying fields, it is all that the link side reads of the account.
#[derive(Debug, Clone)]
pub struct Observation {
    pub facts: Facts,
    pub sample: Sample,
    pub touch: Touch,
    pub profile: Profile,
    pub carried: Vec<Carried>,
    /// The account moved to a new device or network after some history.
    pub moved: bool,
    /// Its runs of harvesting before this request, which the account stage counts over all
    /// of its requests: a link shard that sees only some of them judges whether it keeps to
    /// the clock (a customer's scheduled job) on these.
    pub runs: account::Runs,
}

impl Profile {
    /// Re-judges whether the account's trailing hour is extraction-like.
    fn update(acc: &mut Account, cfg: &crate::config::Config, now: i64) -> Profile {
        let was = acc.extraction_like;
        let is = acc.profile(
            now,
            cfg.harvest.min_profile_share,
            cfg.cluster.max_member_chat_share,
        );
        acc.extraction_like = is;
        let mut slots = [0; account::SLOTS + 1];
        slots[..account::SLOTS].copy_from_slice(&acc.slots);
        slots[account::SLOTS] = acc
            .created_ms
            .map_or(0, |c| creation_key(cfg.cluster.creation_bucket(c)));
        Profile { was, is, slots }
    }
}

/// Index keys of an address and of its /24 or /64, from its bytes.
fn ip_keys(ip: &std::net::IpAddr) -> (u64, u64) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                attribute::key(AttrKind::Ip, &o),
                attribute::key(AttrKind::IpPrefix, &[o[0], o[1], o[2], 24]),
            )
        }
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut p = [0u8; 9];
            p[..8].copy_from_slice(&o[..8]);
            p[8] = 64;
            (
                attribute::key(AttrKind::Ip, &o),
                attribute::key(AttrKind::IpPrefix, &p),
            )
        }
    }
}

/// The route of a carried value: which link shard indexes it (see [`Shard::owner`]). An address
/// goes with its /24 or /64, which judges how the block's holders crowd onto one address; a
/// creation minute with its hour (`created_ms`), whose sign-ups are the minute's baseline.
pub fn route(c: &Carried, created_ms: Option<i64>) -> u64 {
    match c.value {
        Value::Ip(ip) => ip_keys(&ip).1,
        Value::Minute(_) => creation_hour_route(created_ms),
        _ => c.key,
    }
}

fn creation_hour_route(created_ms: Option<i64>) -> u64 {
    let hour = created_ms.map_or(0, |c| c.div_euclid(3_600_000));
    xxh3_64(&hour.to_le_bytes()) ^ 0xc4ea_7e00
}

/// The link shards of `of` that must see an observation: the owners of the values it carries
/// and of those it holds or released (which they index or must release), and, for a
/// harvesting request, of the co-activity state. As a bit set (`of` at most 64).
pub fn link_targets(obs: &Observation, of: usize) -> u64 {
    let of = of.clamp(1, 64);
    let mut set = 0u64;
    let mut add = |route: u64| set |= 1 << Shard::owner(route, of);
    let created = obs.facts.created_ms;
    for c in &obs.carried {
        add(route(c, created));
        if let Some(old) = c.evicted {
            // An address is released by its block's owner, which holds the block among the
            // account's slots or sees it released alongside.
            if !matches!(c.kind, AttrKind::Ip | AttrKind::Creation) {
                add(old);
            }
        }
    }
    for (i, &k) in obs.profile.slots.iter().enumerate() {
        if k == 0 || i == SLOT_IP || i == SLOT_IP + 1 {
            continue;
        }
        if i == account::SLOTS {
            add(creation_hour_route(created));
        } else {
            add(k);
        }
    }
    if obs.sample.harvest {
        add(crate::detect::COACTIVITY_ROUTE);
    }
    set
}

const SWEEP_EVERY_MS: i64 = 60_000;

/// How many events ahead [`Engine::process_all`] prefetches hash-table slots.
const AHEAD: usize = 3;

/// The hashes an event is looked up by, computed once: for prefetching ahead and then for
/// processing. 0: the event carries no such value.
#[derive(Debug, Clone, Copy)]
struct Keys {
    /// Of the `event_id` (duplicates).
    id: u64,
    account: u64,
    ip: u64,
    prefix: u64,
    device: u64,
    payment: u64,
    email: u64,
    asn: u64,
    /// Of the opening and closing template skeletons.
    templates: [u64; 2],
}

/// An event's lookup keys, computed once by a caller that feeds the engine one event at a time
/// and prefetches ahead ([`Engine::prefetch_ahead`], [`Engine::process_prepared`]).
#[derive(Debug, Clone, Copy)]
pub struct Prepared(Keys);

impl Prepared {
    pub fn of(ev: &Event) -> Self {
        Self(Keys::of(ev))
    }
}

impl Keys {
    fn of(ev: &Event) -> Self {
        let (ip, prefix) = ev.ip.as_ref().map_or((0, 0), ip_keys);
        let text = |kind, v: &Option<CompactString>| {
            v.as_ref().map_or(0, |v| attribute::key(kind, v.as_bytes()))
        };
        let template = |t: u64| {
            if t == 0 {
                0
            } else {
                attribute::key(AttrKind::Template, &t.to_le_bytes())
            }
        };
        Self {
            id: xxh3_64(ev.event_id.as_bytes()),
            account: account_key(&ev.account_id),
            ip,
            prefix,
            device: text(AttrKind::Device, &ev.device_fingerprint),
            payment: text(AttrKind::Payment, &ev.payment_fingerprint),
            email: text(AttrKind::EmailDomain, &ev.email_domain),
            asn: ev
                .asn
                .map_or(0, |a| attribute::key(AttrKind::Asn, &a.to_le_bytes())),
            templates: [
                template(ev.prompt.template),
                template(ev.prompt.template_tail),
            ],
        }
    }

    /// Keys of the attribute values other than templates (which are indexed only once seen
    /// twice), 0 for absent ones.
    fn values(&self) -> [u64; 6] {
        [
            self.ip,
            self.prefix,
            self.device,
            self.payment,
            self.email,
            self.asn,
        ]
    }
}

pub struct Engine {
    cfg: Arc<ValidConfig>,
    role: Role,
    /// In the `Link` role, as one of several link shards: the values and models it owns. Its
    /// link records then go to `emitted`, for a cluster stage, instead of an assembler here.
    shard: Option<Shard>,
    emitted: Emitted,
    /// In the `Account` role, the observation of the last accepted event.
    observation: Option<Observation>,
    /// Accounts by key (an xxh3 hash of the id).
    accounts: Accounts,
    /// When each account may next be idle long enough to expire: (due time, key), earliest
    /// first. An account's entry is at or before its true due time (`last_seen_ms` plus the
    /// idle time), so a sweep looks only at the accounts that may be due instead of all of
    /// them; entries of accounts seen since are pushed again at their new due time.
    expiry: BinaryHeap<Reverse<(i64, u64)>>,
    /// The attribute index: values by key, held by one account so far or shared.
    index: Index,
    /// Per-event buffers, kept to avoid an allocation per event.
    carried_buf: Vec<Carried>,
    touched_buf: Vec<(u64, AttrKind)>,
    dedup: Dedup,
    /// Template keys seen in the last hour (doorkeeper for the template index).
    templates_seen: Dedup,
    models: IntMap<u64, i64>,
    /// How many accounts sent each prompt lately: copies harvest nothing new.
    copies: copies::PromptCopies,
    /// Attribute kinds tracked for linking, indexed by `AttrKind as usize`.
    kinds: [bool; 8],
    allow: Allowlist,
    /// The detectors, and what they decided on the current event.
    detectors: Detectors,
    decided: Out,
    /// Caps on `suspend` per sliding hour of event time.
    valve: valve::Valve,
    watermark: i64,
    next_sweep_ms: i64,
    /// Creation counts at which the caps are next checked (between sweeps).
    cap_check_accounts: u64,
    cap_check_attributes: u64,
    stats: Stats,
}

/// The index key of an account id.
pub fn account_key(id: &str) -> u64 {
    xxh3_64(id.as_bytes()).max(1)
}

impl Engine {
    pub fn new(cfg: Arc<ValidConfig>) -> Self {
        let e = &cfg.raw.engine;
        let allow = Allowlist::from_config(&cfg);
        let mut kinds = [false; 8];
        for k in &cfg.raw.cluster.link_kinds {
            if let Some(kind) = AttrKind::from_name(k) {
                kinds[kind as usize] = true;
            }
        }
        Self {
            role: Role::All,
            shard: None,
            emitted: Emitted::default(),
            observation: None,
            kinds,
            dedup: Dedup::new((e.dedup_window_secs * 1000) as i64, e.max_dedup_ids),
            templates_seen: Dedup::new(3_600_000, e.max_attribute_values),
            accounts: Accounts::default(),
            expiry: BinaryHeap::new(),
            index: Index::default(),
            carried_buf: Vec::with_capacity(8),
            touched_buf: Vec::with_capacity(8),
            models: IntMap::default(),
            copies: copies::PromptCopies::new(
                (cfg.raw.harvest.copies_window_secs * 1000) as i64,
                (cfg.raw.harvest.copies_sketch_max_mib as usize) << 20,
            ),
            allow,
            detectors: Detectors::new(&cfg.raw, cfg.hash),
            decided: Out::default(),
            valve: valve::Valve::new(&cfg.raw.alerts),
            watermark: i64::MIN,
            next_sweep_ms: i64::MIN,
            cap_check_accounts: 0,
            cap_check_attributes: 0,
            stats: Stats::default(),
            cfg,
        }
    }

    /// Also consults `live` (entries from the control topic) before emitting an alert. Its
    /// alerts then depend on what the control topic held when they were decided.
    pub fn with_live_allowlist(mut self, live: LiveAllowlist) -> Self {
        self.allow.live = Some(live);
        self
    }

    /// Runs only `role`'s part of the detection (see [`Role`]).
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// A `Link` engine as link shard `shard`: it indexes only the values it owns (see
    /// [`route`]) and runs the co-activity detector only on the models it owns; its link
    /// records, with snapshots of what they mention, go to [`Engine::take_emitted`].
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.role = Role::Link;
        self.shard = Some(shard);
        self
    }

    /// In a link shard: what it decided since the last call, appended to `into` (which the
    /// cluster stage takes in, see [`cluster_stage::ClusterStage`]).
    pub fn take_emitted(&mut self, into: &mut Emitted) {
        into.records.append(&mut self.emitted.records);
        into.members.append(&mut self.emitted.members);
        into.explained.append(&mut self.emitted.explained);
    }

    /// In the `Account` role: the observation of the event last accepted, to hand to the
    /// link stage (see [`Engine::observe`]).
    pub fn take_observation(&mut self) -> Option<Observation> {
        self.observation.take()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            accounts: self.accounts.len(),
            attribute_values: self.index.values.len(),
            clusters: self.detectors.clusters(),
            dedup_ids: self.dedup.len(),
        }
    }

    /// The newest event time seen (epoch ms), if any.
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark != i64::MIN).then_some(self.watermark)
    }

    /// Processes `events` in order, exactly as [`Engine::process`] on each would, calling
    /// `each` after every event with its outcome and the alerts it caused (in `out`; `each`
    /// takes them). While one event is processed, the state of the next few is prefetched,
    /// so that their cache misses overlap with work instead of stalling it one by one.
    pub fn process_all<'e, E>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
        out: &mut Vec<Alert>,
        mut each: impl FnMut(Outcome, &mut Vec<Alert>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut events = events.into_iter();
        let mut ahead: std::collections::VecDeque<(&Event, Keys)> =
            std::collections::VecDeque::with_capacity(AHEAD);
        loop {
            // Stage 1, `AHEAD` events ahead: the hash-table slots the event will probe.
            while ahead.len() < AHEAD {
                let Some(ev) = events.next() else { break };
                let keys = Keys::of(ev);
                self.prefetch_slots(&keys);
                ahead.push_back((ev, keys));
            }
            let Some((ev, keys)) = ahead.pop_front() else {
                return Ok(());
            };
            // Stage 2, the next event: its account and the shared values behind the slots.
            if let Some((_, next)) = ahead.front() {
                self.prefetch_entries(next);
            }
            let outcome = self.process_keyed(ev, &keys, out);
            each(outcome, out)?;
        }
    }

    fn prefetch_slots(&self, k: &Keys) {
        self.dedup.prefetch(k.id);
        for v in k.values().into_iter().filter(|&v| v != 0) {
            self.index.values.prefetch(v);
        }
        for t in k.templates {
            if t != 0 {
                self.templates_seen.prefetch(t);
            }
        }
    }

    fn prefetch_entries(&self, k: &Keys) {
        if let Some(acc) = self.accounts.get(&k.account) {
            prefetch::all::<Account>(&acc);
        }
        for v in k.values().into_iter().filter(|&v| v != 0) {
            if let Some(Held::Shared(g)) = self.index.values.get(v) {
                prefetch::all::<Attribute>(g);
            }
        }
    }

    /// Processes one event, appending the alerts it caused to `out`.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Alert>) -> Outcome {
        self.process_keyed(ev, &Keys::of(ev), out)
    }

    /// How many events ahead of the one being processed a caller feeding events one at a
    /// time should [`Engine::prefetch_ahead`] (what [`Engine::process_all`] does itself).
    pub const PREFETCH_AHEAD: usize = AHEAD;

    /// Prefetches the hash-table slots a prepared event will probe: call it
    /// [`Engine::PREFETCH_AHEAD`] events before processing it.
    pub fn prefetch_ahead(&self, p: &Prepared) {
        self.prefetch_slots(&p.0);
    }

    /// Prefetches the account and shared values behind those slots: call it for the next
    /// event, just before processing the current one.
    pub fn prefetch_next(&self, p: &Prepared) {
        self.prefetch_entries(&p.0);
    }

    /// [`Engine::process`] on an event whose keys were computed by [`Prepared::of`] (for
    /// prefetching): the same outcome and alerts.
    pub fn process_prepared(&mut self, ev: &Event, p: &Prepared, out: &mut Vec<Alert>) -> Outcome {
        self.process_keyed(ev, &p.0, out)
    }

    fn process_keyed(&mut self, ev: &Event, keys: &Keys, out: &mut Vec<Alert>) -> Outcome {
        debug_assert!(self.role != Role::Link, "a link engine takes observations");
        let now = match self.advance_clock(ev, keys) {
            Ok(now) => now,
            Err(skipped) => return skipped,
        };
        let akey = keys.account;
        let mut carried = std::mem::take(&mut self.carried_buf);
        carried.clear();
        let (sample, touch, profile, moved) = self.update_account(ev, keys, now, &mut carried);
        let obs = Observed {
            ev,
            event: keys.id,
            account: akey,
            harvest: sample.harvest,
            moved,
            values: &[],
            in_burst: false,
        };
        let mut view = View {
            cfg: &self.cfg.raw,
            accounts: &mut self.accounts,
            values: &mut self.index.values,
            allow: &self.allow,
            now,
        };
        self.detectors
            .observe_account(&mut view, &obs, &mut self.decided);
        if self.role == Role::Account {
            let facts = facts(&self.accounts, akey).unwrap_or_default();
            let runs = self.count_run(ev, akey, &sample);
            self.observation = Some(Observation {
                facts,
                sample,
                touch,
                profile,
                carried: carried.clone(),
                moved,
                runs,
            });
        } else {
            self.link_side(
                ev, keys.id, akey, now, &carried, &touch, &profile, &sample, moved,
            );
        }
        self.carried_buf = carried;
        self.emit(out);
        Outcome::Accepted
    }

    /// In the `Account` role: counts a harvesting request toward the account's runs, as the
    /// co-activity detector does where it runs (see [`crate::detect::cohort`]). Returns the
    /// runs before it.
    fn count_run(&mut self, ev: &Event, akey: u64, sample: &Sample) -> account::Runs {
        let cfg = &self.cfg.raw;
        let Some(mut acc) = self.accounts.get_mut(&akey) else {
            return account::Runs::default();
        };
        let before = acc.presence.runs();
        if cfg.cohort.enabled && cfg.cluster.enabled && sample.harvest {
            let bin = ev.ts_ms.div_euclid((cfg.cohort.bin_secs * 1000) as i64);
            acc.presence.note_run(bin, &cfg.cohort);
        }
        before
    }

    /// In the `Link` role: takes in the account stage's observation of `ev` (its identifying
    /// fields: ids, time, model and the attribute values' text) and appends the alerts it
    /// caused to `out`. The account's shadow record takes the observation's facts, windows
    /// and slots, and the link detectors and the cluster assembler run on it as in one
    /// process.
    pub fn observe(&mut self, ev: &Event, obs: &Observation, out: &mut Vec<Alert>) -> Outcome {
        debug_assert!(
            self.role == Role::Link,
            "only a link engine takes observations"
        );
        let keys = Keys::of(ev);
        let now = match self.advance_clock(ev, &keys) {
            Ok(now) => now,
            Err(skipped) => return skipped,
        };
        let profile = self.shadow(ev, &keys, obs);
        let o = obs;
        let mut carried = std::mem::take(&mut self.carried_buf);
        carried.clear();
        match self.shard {
            None => carried.extend_from_slice(&o.carried),
            Some(shard) => {
                for c in &o.carried {
                    if shard.owns(route(c, o.facts.created_ms)) {
                        carried.push(*c);
                    } else if let Some(old) = c.evicted {
                        // Released where it was indexed (a no-op elsewhere).
                        self.index.release(old, keys.account, profile.was);
                    }
                }
            }
        }
        self.link_side(
            ev,
            keys.id,
            keys.account,
            now,
            &carried,
            &o.touch,
            &profile,
            &o.sample,
            o.moved,
        );
        self.carried_buf = carried;
        self.emit(out);
        Outcome::Accepted
    }

    /// Brings the shadow record of the observed account to what the account stage holds:
    /// its facts and hour, and the values it holds, moved as the account stage moved them.
    /// Returns the profile with the slots as the shadow holds them.
    fn shadow(&mut self, ev: &Event, keys: &Keys, obs: &Observation) -> Profile {
        let bin_ms = (self.cfg.raw.cluster.sync_bin_secs * 1000) as i64;
        let (mut acc, created) = self.accounts.get_or_insert_with(keys.account, || {
            Account::new(ev.account_id.clone(), ev.ts_ms)
        });
        if created {
            self.stats.accounts_created += 1;
            let idle = (self.cfg.raw.engine.account_idle_secs * 1000) as i64;
            self.expiry
                .push(Reverse((acc.last_seen_ms + idle, keys.account)));
        }
        if ev.org_id.is_some() {
            acc.org_id.clone_from(&ev.org_id);
        }
        acc.last_seen_ms = acc.last_seen_ms.max(ev.ts_ms);
        record_request(&mut acc, ev, &obs.sample, bin_ms);
        let f = &obs.facts;
        acc.extraction_like = f.extraction_like;
        acc.harvest_ever = f.harvest_ever;
        acc.requests_ever = f.requests_ever;
        acc.multi_turn_ever = f.multi_turn_ever;
        acc.first_seen_ms = f.first_seen_ms;
        acc.created_ms = f.created_ms;
        acc.presence.set_runs(obs.runs);
        for c in &obs.carried {
            match c.kind {
                AttrKind::Ip => _ = acc.set_pair(SLOT_IP, c.key),
                AttrKind::IpPrefix => _ = acc.set_pair(SLOT_PREFIX, c.key),
                AttrKind::Template => _ = acc.set_pair(SLOT_TEMPLATE, c.key),
                AttrKind::Asn => _ = acc.set_slot(SLOT_ASN, c.key),
                AttrKind::Device => _ = acc.set_slot(SLOT_DEVICE, c.key),
                AttrKind::Payment => _ = acc.set_slot(SLOT_PAYMENT, c.key),
                AttrKind::EmailDomain => _ = acc.set_slot(SLOT_EMAIL, c.key),
                AttrKind::Creation => {}
            }
        }
        let mut slots = [0; account::SLOTS + 1];
        slots[..account::SLOTS].copy_from_slice(&acc.slots);
        slots[account::SLOTS] = acc
            .created_ms
            .map_or(0, |c| creation_key(self.cfg.raw.cluster.creation_bucket(c)));
        Profile {
            was: obs.profile.was,
            is: obs.profile.is,
            slots,
        }
    }

    /// The link side of an accepted event: the attribute index takes it in, then the link
    /// detectors and the cluster assembler see it.
    #[allow(clippy::too_many_arguments)]
    fn link_side(
        &mut self,
        ev: &Event,
        event: u64,
        akey: u64,
        now: i64,
        carried: &[Carried],
        touch: &Touch,
        profile: &Profile,
        sample: &Sample,
        moved: bool,
    ) {
        let mut touched = std::mem::take(&mut self.touched_buf);
        touched.clear();
        let accounts = &self.accounts;
        let in_burst = self.index.take_in(
            ev,
            akey,
            carried,
            touch,
            profile,
            &self.cfg.raw.cluster,
            |other| facts(accounts, other),
            &mut touched,
        );
        self.stats.attributes_created += self.index.take_created();
        let obs = Observed {
            ev,
            event,
            account: akey,
            harvest: sample.harvest,
            moved,
            values: &touched,
            in_burst,
        };
        let mut view = View {
            cfg: &self.cfg.raw,
            accounts: &mut self.accounts,
            values: &mut self.index.values,
            allow: &self.allow,
            now,
        };
        match self.shard {
            None => self
                .detectors
                .observe_links(&mut view, &obs, &mut self.decided),
            Some(shard) => self
                .detectors
                .shard_links(shard, &mut view, &obs, &mut self.emitted),
        }
        self.touched_buf = touched;
    }

    /// Passes the detectors' decisions through the safety valve into `out`, in order.
    fn emit(&mut self, out: &mut Vec<Alert>) {
        self.stats.alerts_suppressed_allowlist += std::mem::take(&mut self.decided.suppressed);
        for mut d in self.decided.decisions.drain(..) {
            let limited = self.valve.apply(&mut d);
            match d.kind {
                Kind::BulkExtraction => {
                    self.stats.alerts_bulk += 1;
                    self.stats.alerts_rate_limited_bulk += u64::from(limited);
                }
                Kind::FakeAccountCluster => {
                    self.stats.alerts_cluster += 1;
                    self.stats.alerts_rate_limited_cluster += u64::from(limited);
                }
            }
            out.push(d.into_alert());
        }
    }

    /// Admits an event to the clock: skips it if it is too late, too far ahead or a
    /// duplicate; otherwise moves the watermark and runs the sweeps that are due. Returns the
    /// engine's event time.
    fn advance_clock(&mut self, ev: &Event, keys: &Keys) -> Result<i64, Outcome> {
        let e = &self.cfg.raw.engine;
        if self.watermark != i64::MIN {
            if ev.ts_ms > self.watermark + (e.max_forward_jump_secs * 1000) as i64 {
                self.stats.events_out_of_range += 1;
                return Err(Outcome::OutOfRange);
            }
            if ev.ts_ms < self.watermark - (e.late_allowance_secs * 1000) as i64 {
                self.stats.events_late += 1;
                return Err(Outcome::Late);
            }
        }
        let now = self.watermark.max(ev.ts_ms);
        if self.dedup.seen(keys.id, now) {
            self.stats.events_duplicate += 1;
            return Err(Outcome::Duplicate);
        }
        self.watermark = now;
        self.stats.events_accepted += 1;
        if now >= self.next_sweep_ms {
            self.sweep(now);
            self.next_sweep_ms = now + SWEEP_EVERY_MS;
        } else if self.stats.accounts_created > self.cap_check_accounts
            || self.stats.attributes_created > self.cap_check_attributes
        {
            self.enforce_caps();
        }
        Ok(now)
    }

    /// Updates the account's windows and attribute slots. Returns the values the event
    /// carries, what it contributes to them, and whether the account may join clusters.
    fn update_account(
        &mut self,
        ev: &Event,
        keys: &Keys,
        now: i64,
        carried: &mut Vec<Carried>,
    ) -> (Sample, Touch, Profile, bool) {
        let cfg = &self.cfg.raw;
        let model_first_seen = ev
            .model
            .as_ref()
            .map(|m| *self.models.entry(xxh3_64(m.as_bytes())).or_insert(ev.ts_ms));
        let (mut acc, created) = self.accounts.get_or_insert_with(keys.account, || {
            Account::new(ev.account_id.clone(), ev.ts_ms)
        });
        if created {
            self.stats.accounts_created += 1;
            let idle = (cfg.engine.account_idle_secs * 1000) as i64;
            self.expiry
                .push(Reverse((acc.last_seen_ms + idle, keys.account)));
        }
        if ev.org_id.is_some() {
            acc.org_id.clone_from(&ev.org_id);
        }
        let created_before = acc.created_ms;
        if ev.account_created_ms.is_some() {
            acc.created_ms = ev.account_created_ms;
        }
        let mut gap_secs = 0.0;
        if ev.ts_ms > acc.last_seen_ms {
            gap_secs = (ev.ts_ms - acc.last_seen_ms) as f32 / 1000.0;
            acc.gaps.add(gap_secs);
            acc.last_seen_ms = ev.ts_ms;
        }
        let sample = harvest_sample(&mut acc, ev, cfg, &mut self.copies, model_first_seen, now);
        let (new_account_bin, new_account_coarse_bin) = record_request(
            &mut acc,
            ev,
            &sample,
            (cfg.cluster.sync_bin_secs * 1000) as i64,
        );
        let fresh = acc.is_fresh(now, cfg.engine.fresh_account_days);

        // A new device or network means something once the account has been seen before,
        // from elsewhere, at least an hour earlier.
        let has_history = acc.requests_ever > 1;
        let infra_changed = carry_values(
            &mut acc,
            ev,
            keys,
            &self.kinds,
            &cfg.cluster,
            &mut self.templates_seen,
            created_before,
            now,
            carried,
        );
        if ev.ip.is_some() || ev.asn.is_some() {
            // The prefix stands in only where the ASN is missing.
            let new_prefix = ev.asn.is_none()
                && carried
                    .iter()
                    .any(|c| c.kind == AttrKind::IpPrefix && c.added);
            acc.note_network(ev.asn, new_prefix, gap_secs);
        }
        let profile = Profile::update(&mut acc, cfg, now);
        let touch = Touch {
            single_turn: sample.single_turn,
            harvest: sample.harvest,
            reasoning: ev.prompt.reasoning,
            fresh,
            org: acc.org_id.is_some(),
            new_account_bin,
            new_account_coarse_bin,
            input_tokens: ev.input_tokens,
            output_tokens: ev.output_tokens,
            created_hours: acc.created_ms.map(|c| c as f64 / 3_600_000.0),
            network: carried
                .iter()
                .find(|c| c.kind == AttrKind::IpPrefix)
                .map_or(0, |c| c.key),
            harvest_ever: acc.harvest_ever,
        };
        (sample, touch, profile, infra_changed && has_history)
    }

    /// Expires idle state and enforces the caps.
    fn sweep(&mut self, now: i64) {
        let cfg = Arc::clone(&self.cfg);
        let e = &cfg.raw.engine;
        let idle = (e.account_idle_secs * 1000) as i64;
        // Idle longer than `idle`: last seen before `now - idle`.
        let mut expired = Vec::new();
        while let Some(&Reverse((due, key))) = self.expiry.peek() {
            if due >= now {
                break;
            }
            self.expiry.pop();
            if let Some(acc) = self.accounts.get(&key) {
                let due = acc.last_seen_ms + idle;
                if due < now {
                    expired.push(key);
                } else {
                    self.expiry.push(Reverse((due, key)));
                }
            }
        }
        expired.sort_unstable();
        expired.dedup();
        self.stats.accounts_expired += expired.len() as u64;
        for k in expired {
            self.remove_account(k);
        }
        self.stats.attributes_expired += self.index.expire(now) as u64;
        self.enforce_caps();
        self.detectors.sweep(now);
    }

    /// Evicts the least recently active accounts and values past the caps, down to 90% of
    /// each cap, so the O(n) scan is paid once per 10% of the cap in new entries.
    fn enforce_caps(&mut self) {
        let cfg = Arc::clone(&self.cfg);
        let e = &cfg.raw.engine;
        self.compact_expiry((e.account_idle_secs * 1000) as i64);
        if self.accounts.len() > e.max_accounts {
            let target = e.max_accounts - e.max_accounts / 10;
            let cutoff = nth_oldest(
                self.accounts.last_seen().into_iter(),
                self.accounts.len() - target,
            );
            let mut victims = self.accounts.keys_where(|a| a.last_seen_ms <= cutoff);
            victims.sort_unstable();
            self.stats.accounts_evicted += victims.len() as u64;
            for k in victims {
                self.remove_account(k);
            }
        }
        self.stats.attributes_evicted += self.index.evict(e.max_attribute_values) as u64;
        let slack_a = (e.max_accounts / 10) as u64;
        let room_a = e.max_accounts.saturating_sub(self.accounts.len()) as u64;
        self.cap_check_accounts = self.stats.accounts_created + room_a.max(slack_a / 10).max(1);
        let slack_v = (e.max_attribute_values / 10) as u64;
        let room_v = e.max_attribute_values.saturating_sub(self.index.shared()) as u64;
        self.cap_check_attributes = self.stats.attributes_created + room_v.max(slack_v / 10).max(1);
    }

    /// Rebuilds the expiry queue, one entry per account, once evicted and forgotten accounts'
    /// entries make up half of it (so it stays within twice the accounts held, whatever the
    /// churn; the O(n) rebuild is paid once per n entries).
    fn compact_expiry(&mut self, idle: i64) {
        if self.expiry.len() <= 2 * self.accounts.len() + 1024 {
            return;
        }
        let entries: Vec<Reverse<(i64, u64)>> = self
            .accounts
            .seen_keys()
            .into_iter()
            .map(|(seen, key)| Reverse((seen + idle, key)))
            .collect();
        self.expiry = BinaryHeap::from(entries);
    }

    fn remove_account(&mut self, key: u64) {
        let Some(acc) = self.accounts.remove(&key) else {
            return;
        };
        for slot in acc.slots {
            if slot != 0 {
                self.index.release(slot, key, acc.extraction_like);
            }
        }
        if let Some(created) = acc.created_ms {
            let k = creation_key(self.cfg.raw.cluster.creation_bucket(created));
            self.index.release(k, key, acc.extraction_like);
        }
        self.detectors.forget(key, &acc);
    }
}

/// What a request contributes to its account's windows. It harvests when it is extractive
/// (single-turn, eliciting reasoning or a long answer), new for the account, and not a prompt
/// that many accounts sent lately (see [`copies::PromptCopies`]).
fn harvest_sample(
    acc: &mut Account,
    ev: &Event,
    cfg: &crate::config::Config,
    copies: &mut copies::PromptCopies,
    model_first_seen: Option<i64>,
    now: i64,
) -> Sample {
    let single_turn = ev.conversation_turns <= 1;
    let templated =
        ev.prompt.template != 0 && ev.prompt.scaffold >= 4 && acc.templates.add(ev.prompt.template);
    let (novel, unrepeated) = acc.novel_prompt(ev.prompt.simhash);
    let h = &cfg.harvest;
    let ratio = if ev.prompt.text {
        h.min_output_ratio
    } else {
        cfg.fingerprint.output_ratio_without_text
    };
    let output_heavy = ev.output_tokens >= h.min_output_tokens
        && f64::from(ev.output_tokens) >= ratio * f64::from(ev.input_tokens.max(1));
    let extractive = single_turn && (ev.prompt.reasoning || output_heavy);
    // Counted once per account and prompt: the sketch approximates distinct senders.
    let senders = if unrepeated && extractive {
        copies.add(ev.prompt.simhash, now)
    } else {
        0
    };
    let harvest = extractive && unrepeated && senders <= h.max_prompt_copies;
    if harvest {
        acc.harvest_ever = acc.harvest_ever.saturating_add(1);
    }
    let new_model = model_first_seen.is_some_and(|first| {
        first > acc.first_seen_ms && (now - first) as f64 <= cfg.bulk.new_model_hours * 3_600_000.0
    });
    Sample {
        single_turn,
        reasoning: ev.prompt.reasoning,
        templated,
        novel,
        harvest,
        new_model,
        with_text: ev.prompt.text,
        input_tokens: ev.input_tokens,
        output_tokens: ev.output_tokens,
    }
}

/// Counts a request in its account's windows and remembers it as an example if it may be
/// one. Returns whether it opens a new synchrony bin, and a new coarse bin, for the account.
fn record_request(acc: &mut Account, ev: &Event, sample: &Sample, bin_ms: i64) -> (bool, bool) {
    acc.hour.add(ev.ts_ms, sample);
    acc.day.add(ev.ts_ms);
    acc.requests_ever = acc.requests_ever.saturating_add(1);
    if !sample.single_turn {
        acc.multi_turn_ever = acc.multi_turn_ever.saturating_add(1);
    }
    if sample.single_turn && (sample.reasoning || sample.templated) {
        acc.remember_example(&ev.event_id);
    }
    let bin = ev.ts_ms.div_euclid(bin_ms);
    let new_bin = bin != acc.last_bin;
    acc.last_bin = bin;
    let coarse_bin = bin.div_euclid(attribute::COARSE);
    let new_coarse_bin = coarse_bin != acc.last_coarse_bin;
    acc.last_coarse_bin = coarse_bin;
    (new_bin, new_coarse_bin)
}

/// Moves the account's attribute slots to the values the event carries and lists them in
/// `carried`, with what was added and evicted (only kinds tracked for linking). Templates
/// count from their second sighting within the hour (`templates_seen`). Returns whether the
/// account moved to a new network or device.
#[allow(clippy::too_many_arguments)]
fn carry_values(
    acc: &mut Account,
    ev: &Event,
    keys: &Keys,
    kinds: &[bool; 8],
    cluster: &crate::config::ClusterConfig,
    templates_seen: &mut Dedup,
    created_before: Option<i64>,
    now: i64,
    carried: &mut Vec<Carried>,
) -> bool {
    let mut infra_changed = false;
    if let Some(ip) = &ev.ip {
        let (ip_key, prefix_key) = (keys.ip, keys.prefix);
        let (added, evicted) = acc.set_pair(SLOT_IP, ip_key);
        carried.push(Carried {
            kind: AttrKind::Ip,
            key: ip_key,
            value: Value::Ip(*ip),
            added,
            evicted,
        });
        let (added, evicted) = acc.set_pair(SLOT_PREFIX, prefix_key);
        infra_changed |= added && evicted.is_some();
        carried.push(Carried {
            kind: AttrKind::IpPrefix,
            key: prefix_key,
            value: Value::Prefix(*ip),
            added,
            evicted,
        });
    }
    if let Some(asn) = ev.asn {
        let key = keys.asn;
        let added = acc.slots[SLOT_ASN] != key;
        let evicted = acc.set_slot(SLOT_ASN, key);
        carried.push(Carried {
            kind: AttrKind::Asn,
            key,
            value: Value::Asn(asn),
            added,
            evicted,
        });
    }
    for (kind, slot, key) in [
        (AttrKind::Device, SLOT_DEVICE, keys.device),
        (AttrKind::Payment, SLOT_PAYMENT, keys.payment),
        (AttrKind::EmailDomain, SLOT_EMAIL, keys.email),
    ] {
        if key != 0 {
            let added = acc.slots[slot] != key;
            let evicted = acc.set_slot(slot, key);
            if kind == AttrKind::Device {
                infra_changed |= evicted.is_some();
            }
            carried.push(Carried {
                kind,
                key,
                value: Value::Text(kind),
                added,
                evicted,
            });
        }
    }
    // Most prompts are one-offs: a template is indexed only from its second sighting
    // within the hour, so unique prompts cost a hash-set entry, not an index entry. The
    // opening and the closing skeleton are both indexed (tagged apart by the fingerprint).
    if kinds[AttrKind::Template as usize] {
        for (t, key) in [ev.prompt.template, ev.prompt.template_tail]
            .into_iter()
            .zip(keys.templates)
        {
            if t == 0 {
                continue;
            }
            if !templates_seen.seen(key, now) {
                continue;
            }
            let (added, evicted) = acc.set_pair(SLOT_TEMPLATE, key);
            carried.push(Carried {
                kind: AttrKind::Template,
                key,
                value: Value::Template(t),
                added,
                evicted,
            });
        }
    }
    if let Some(created) = acc.created_ms {
        let minute = cluster.creation_bucket(created);
        let key = creation_key(minute);
        let evicted = created_before
            .filter(|&c| c != created)
            .map(|c| creation_key(cluster.creation_bucket(c)))
            .filter(|&k| k != key);
        carried.push(Carried {
            kind: AttrKind::Creation,
            key,
            value: Value::Minute(minute),
            added: created_before.is_none_or(|c| cluster.creation_bucket(c) != minute),
            evicted,
        });
    }
    carried.retain(|c| kinds[c.kind as usize]);
    infra_changed
}

/// The `n`-th smallest value (1-based) of `values`.
fn nth_oldest(values: impl Iterator<Item = i64>, n: usize) -> i64 {
    let mut v: Vec<i64> = values.collect();
    if v.is_empty() || n == 0 {
        return i64::MIN;
    }
    let idx = (n - 1).min(v.len() - 1);
    let (_, nth, _) = v.select_nth_unstable(idx);
    *nth
}

#[cfg(test)]
mod tests;
