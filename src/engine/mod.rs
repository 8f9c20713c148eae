//! The engine: synchronous, deterministic, event time only, no I/O.
//!
//! [`Engine::process`] takes one decoded event and appends the alerts it caused. Given the same
//! events in the same order and the same configuration it returns the same alerts; `replay`,
//! the Kafka service, the benches and the tests all drive it.
//!
//! State is keyed by 64-bit hashes: accounts in a DashMap of boxed per-account windows,
//! attribute values in a flat open-addressing table ([`flat::FlatMap`], one cache line per
//! lookup, which matters at millions of values and several lookups per event). The engine is
//! single-writer and owned by one thread (the Kafka pipeline reads its gauges, and builds a
//! new engine on every rebalance, re-reading a window of input to rebuild its state). Memory
//! is bounded: idle accounts and values expire with the window, and hard caps evict the least
//! recently active, counted in [`Stats`].
//!
//! Every alert passes the suspension safety valve ([`valve::Valve`]) on its way out, on the
//! same event-time clock.

pub mod account;
pub mod attribute;
pub mod copies;
pub mod dedup;
pub mod flat;
mod prefetch;
pub mod window;

use compact_str::CompactString;
use dashmap::DashMap;
use nohash_hasher::{BuildNoHashHasher, IntMap};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

use crate::alert::{valve, Alert, Decision, Kind, Tier};
use crate::config::ValidConfig;
use crate::control::LiveAllowlist;
use crate::detect::{bulk, cluster, cohort};
use crate::event::Event;
use account::{
    Account, JoinGround, SLOT_ASN, SLOT_DEVICE, SLOT_EMAIL, SLOT_IP, SLOT_PAYMENT, SLOT_PREFIX,
    SLOT_TEMPLATE,
};
use attribute::{AttrKind, Attribute, Touch};
use dedup::Dedup;
use flat::FlatMap;
use window::Sample;

/// Version of the detection logic; with the config hash it forms `detector_version`.
pub const DETECTOR_VERSION: &str = env!("CARGO_PKG_VERSION");

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
struct Profile {
    was: bool,
    is: bool,
    /// The values the account holds: its slots, and its creation minute last.
    slots: [u64; account::SLOTS + 1],
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
            .map_or(0, |c| creation_key(c.div_euclid(60_000)));
        Profile { was, is, slots }
    }
}

/// A cluster due for evaluation: whether an alert now would be an update of a grown cluster
/// or a repeat of an unchanged one (if neither, only an escalation is alerted).
struct ClusterDue {
    update: bool,
    repeat: bool,
}

/// What the engine gathered over a cluster's members.
struct Gathered {
    stats: cluster::MemberStats,
    names: Vec<String>,
    examples: Vec<String>,
    /// Members left out because they are allowlisted.
    suppressed: u64,
}

/// What the bulk detector made of an account after an event.
enum BulkVerdict {
    Nothing,
    /// It would alert, but the account or its org is allowlisted.
    Suppressed,
    Alert(Box<Decision>),
}

/// A value that links accounts after an event: (key, kind, cluster it already links into).
type Link = (u64, AttrKind, u32);

/// An attribute value carried by the current event.
struct Carried {
    kind: AttrKind,
    key: u64,
    value: Value,
    added: bool,
    evicted: Option<u64>,
}

/// The readable form of a value, rendered only when the index first stores it (no copy or
/// formatting on the hot path). Text values stay in the event: `Text` names the field.
#[derive(Clone, Copy)]
enum Value {
    Ip(std::net::IpAddr),
    Prefix(std::net::IpAddr),
    Text(AttrKind),
    Template(u64),
    Minute(i64),
    Asn(u32),
}

impl Value {
    fn render(&self, ev: &Event) -> CompactString {
        match self {
            Value::Ip(ip) => compact_str::format_compact!("{ip}"),
            Value::Prefix(ip) => CompactString::from(attribute::prefix(ip)),
            Value::Text(kind) => {
                let field = match kind {
                    AttrKind::Device => &ev.device_fingerprint,
                    AttrKind::Payment => &ev.payment_fingerprint,
                    _ => &ev.email_domain,
                };
                field.clone().unwrap_or_default()
            }
            Value::Template(t) => compact_str::format_compact!("tpl-{t:016x}"),
            Value::Asn(a) => compact_str::format_compact!("AS{a}"),
            Value::Minute(m) => CompactString::from(crate::event::time::format_ms(m * 60_000)),
        }
    }
}

/// Kinds of value that many honest people share by circumstance: a venue's network, a NAT,
/// the minute of a sign-up rush.
fn weak_link(kind: AttrKind) -> bool {
    matches!(
        kind,
        AttrKind::Ip | AttrKind::IpPrefix | AttrKind::Creation | AttrKind::Asn
    )
}

/// Kinds of value so widely shared (a popular client, a cloud provider) that alone they name
/// no one: they merge clusters and add to a second linking value.
fn client_or_provider(kind: AttrKind) -> bool {
    matches!(kind, AttrKind::Device | AttrKind::Asn)
}

/// Index key of a creation minute.
fn creation_key(minute: i64) -> u64 {
    attribute::key(AttrKind::Creation, &minute.to_le_bytes())
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

const SWEEP_EVERY_MS: i64 = 60_000;

/// A move to a new device or network corroborates a takeover only for an account that rarely
/// moves: past this many moves it is multi-homed (an app backend on many servers).
const MAX_CREDIBLE_MOVES: u8 = 2;

/// Tag of a cluster link that is a co-activity wave rather than an attribute value.
const WAVE_LINK: u64 = 0xc0ac_0000_0000_0000;

fn wave_link(wave: u32) -> u64 {
    WAVE_LINK | u64::from(wave)
}

fn as_wave(link: u64) -> Option<u32> {
    (link & 0xffff_ffff_0000_0000 == WAVE_LINK).then_some(link as u32)
}

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

/// An attribute value in the index. A value held by one account only is a bare (value,
/// account) pair: aggregates start when a second account shows up. Most IPs, cards and
/// devices stay solo. Both live in one flat table (key and value in the same slot) so that a
/// value costs one lookup, usually one cache line.
enum Held {
    Solo(u64),
    Shared(Box<Attribute>),
}

impl Default for Held {
    /// The filler of an empty slot in the index.
    fn default() -> Self {
        Held::Solo(0)
    }
}

impl Held {
    fn shared(&self) -> Option<&Attribute> {
        match self {
            Held::Shared(g) => Some(g),
            Held::Solo(_) => None,
        }
    }

    fn shared_mut(&mut self) -> Option<&mut Attribute> {
        match self {
            Held::Shared(g) => Some(g),
            Held::Solo(_) => None,
        }
    }
}

/// What decides whether and how an alert is raised: read-only after construction, kept apart
/// from the state so that it can be consulted while an account is borrowed.
struct Policy {
    allow_accounts: HashMap<String, i64>,
    allow_orgs: HashMap<String, i64>,
    /// The live allowlist from the control topic (the service only; `replay` keeps to the
    /// static list and stays deterministic).
    live: Option<LiveAllowlist>,
    bulk_version: String,
    cluster_version: String,
}

pub struct Engine {
    cfg: Arc<ValidConfig>,
    /// Accounts by key (an xxh3 hash of the id).
    accounts: Accounts,
    /// When each account may next be idle long enough to expire: (due time, key), earliest
    /// first. An account's entry is at or before its true due time (`last_seen_ms` plus the
    /// idle time), so a sweep looks only at the accounts that may be due instead of all of
    /// them; entries of accounts seen since are pushed again at their new due time.
    expiry: BinaryHeap<Reverse<(i64, u64)>>,
    /// Attribute values by key: held by one account so far, or shared (aggregated).
    values: FlatMap<Held>,
    /// Entries of `values` that are [`Held::Shared`].
    shared_values: usize,
    /// Per-event buffers, kept to avoid an allocation per event.
    carried_buf: Vec<Carried>,
    links_buf: Vec<Link>,
    clusters: cluster::Clusters,
    dedup: Dedup,
    /// Template keys seen in the last hour (doorkeeper for the template index).
    templates_seen: Dedup,
    models: IntMap<u64, i64>,
    /// Co-activity waves (behavioural links).
    cohort: cohort::Cohort,
    credited_buf: Vec<u64>,
    /// How many accounts sent each prompt lately: copies harvest nothing new.
    copies: copies::PromptCopies,
    /// Attribute kinds tracked for linking, indexed by `AttrKind as usize`.
    kinds: [bool; 8],
    policy: Policy,
    /// Caps on `suspend` per sliding hour of event time.
    valve: valve::Valve,
    watermark: i64,
    next_sweep_ms: i64,
    /// Creation counts at which the caps are next checked (between sweeps).
    cap_check_accounts: u64,
    cap_check_attributes: u64,
    stats: Stats,
}

fn account_key(id: &str) -> u64 {
    xxh3_64(id.as_bytes()).max(1)
}

impl Engine {
    pub fn new(cfg: Arc<ValidConfig>) -> Self {
        let e = &cfg.raw.engine;
        let mut allow_accounts = HashMap::new();
        let mut allow_orgs = HashMap::new();
        for a in &cfg.allowlist {
            if let Some(acc) = &a.account {
                allow_accounts.insert(acc.clone(), a.expires_ms);
            }
            if let Some(org) = &a.org {
                allow_orgs.insert(org.clone(), a.expires_ms);
            }
        }
        let mut kinds = [false; 8];
        for k in &cfg.raw.cluster.link_kinds {
            if let Some(kind) = AttrKind::from_name(k) {
                kinds[kind as usize] = true;
            }
        }
        Self {
            kinds,
            dedup: Dedup::new((e.dedup_window_secs * 1000) as i64, e.max_dedup_ids),
            templates_seen: Dedup::new(3_600_000, e.max_attribute_values),
            accounts: Accounts::default(),
            expiry: BinaryHeap::new(),
            values: FlatMap::default(),
            shared_values: 0,
            carried_buf: Vec::with_capacity(8),
            links_buf: Vec::new(),
            clusters: cluster::Clusters::default(),
            models: IntMap::default(),
            cohort: cohort::Cohort::new(cfg.raw.cohort.clone()),
            credited_buf: Vec::new(),
            copies: copies::PromptCopies::new(
                (cfg.raw.harvest.copies_window_secs * 1000) as i64,
                (cfg.raw.harvest.copies_sketch_max_mib as usize) << 20,
            ),
            policy: Policy {
                allow_accounts,
                allow_orgs,
                live: None,
                bulk_version: format!(
                    "{}/{DETECTOR_VERSION}+cfg.{:08x}",
                    Kind::BulkExtraction,
                    cfg.hash as u32
                ),
                cluster_version: format!(
                    "{}/{DETECTOR_VERSION}+cfg.{:08x}",
                    Kind::FakeAccountCluster,
                    cfg.hash as u32
                ),
            },
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
        self.policy.live = Some(live);
        self
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            accounts: self.accounts.len(),
            attribute_values: self.values.len(),
            clusters: self.clusters.len(),
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
            self.values.prefetch(v);
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
            if let Some(Held::Shared(g)) = self.values.get(v) {
                prefetch::all::<Attribute>(g);
            }
        }
    }

    /// Processes one event, appending the alerts it caused to `out`.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Alert>) -> Outcome {
        self.process_keyed(ev, &Keys::of(ev), out)
    }

    fn process_keyed(&mut self, ev: &Event, keys: &Keys, out: &mut Vec<Alert>) -> Outcome {
        let now = match self.advance_clock(ev, keys) {
            Ok(now) => now,
            Err(skipped) => return skipped,
        };
        let akey = keys.account;
        let mut carried = std::mem::take(&mut self.carried_buf);
        carried.clear();
        let (touch, profile) = self.update_account(ev, keys, now, &mut carried);
        let mut links = std::mem::take(&mut self.links_buf);
        links.clear();
        let in_burst =
            self.update_attributes(ev, now, akey, &carried, &touch, &profile, &mut links);
        self.carried_buf = carried;
        let (ground, own_cluster) = self.revisit_account(akey, in_burst, now, out);
        let mut touched_clusters: Vec<u32> = Vec::new();
        if self.cfg.raw.cluster.enabled {
            let eligible = self.may_join(akey, ground, &links);
            self.link_clusters(
                akey,
                &links,
                eligible,
                own_cluster,
                now,
                &mut touched_clusters,
            );
        }
        self.links_buf = links;
        if self.cfg.raw.cohort.enabled && self.cfg.raw.cluster.enabled && touch.harvest {
            self.observe_cohort(ev, akey, now, &mut touched_clusters);
        }
        for root in touched_clusters {
            self.check_cluster(root, now, out);
        }
        Outcome::Accepted
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

    /// One more look at the account after the event: burst participation, the
    /// bulk_extraction verdict (its alert through the valve into `out`), and its ground for
    /// joining clusters and the cluster it is in.
    fn revisit_account(
        &mut self,
        akey: u64,
        in_burst: bool,
        now: i64,
        out: &mut Vec<Alert>,
    ) -> (JoinGround, u32) {
        let Some(mut acc) = self.accounts.get_mut(&akey) else {
            return (JoinGround::No, 0);
        };
        if in_burst {
            acc.sync_hits = acc.sync_hits.saturating_add(1);
        }
        if self.cfg.raw.bulk.enabled {
            match self.policy.judge_bulk(&self.cfg.raw, &mut acc, now) {
                BulkVerdict::Alert(mut d) => {
                    self.stats.alerts_bulk += 1;
                    if self.valve.apply(&mut d) {
                        self.stats.alerts_rate_limited_bulk += 1;
                    }
                    out.push(d.into_alert());
                }
                BulkVerdict::Suppressed => self.stats.alerts_suppressed_allowlist += 1,
                BulkVerdict::Nothing => {}
            }
        }
        (
            acc.join_ground(
                now,
                self.cfg.raw.engine.fresh_account_days,
                self.cfg.raw.cluster.min_member_harvest,
            ),
            acc.cluster,
        )
    }

    /// Whether the values that link accounts after this event may name this account.
    fn may_join(&self, akey: u64, ground: JoinGround, links: &[Link]) -> bool {
        // An old account that merely never chatted is named by infrastructure only: a person
        // who only ever sends one-off questions ("... Please explain step by step.") can match
        // a campaign's template.
        // A person's chat history keeps weak links (network, creation minute) from naming it.
        let chatty = self
            .accounts
            .get(&akey)
            .is_some_and(|a| a.chat_share() > self.cfg.raw.cluster.max_member_chat_share);
        let counts = |l: &&Link| !(chatty && weak_link(l.1));
        let counted = links.iter().filter(counts).count();
        let infra = links
            .iter()
            .filter(counts)
            .filter(|l| l.1 != AttrKind::Template)
            .count();
        let payment = links.iter().any(|l| l.1 == AttrKind::Payment);
        // A popular client fingerprint or a provider alone never names anyone; any other value
        // names an account that carries evidence of its own (see `join_ground`).
        let not_client = links
            .iter()
            .filter(counts)
            .any(|l| !client_or_provider(l.1));
        match ground {
            JoinGround::No => false,
            JoinGround::FreshOrInStep => counted >= 2 || not_client,
            JoinGround::NeverChatted => infra >= 2 || payment,
        }
    }

    /// Applies the links to clusters; appends the clusters they touched, and the account's own
    /// (an account already in a cluster keeps it fresh), to `touched`.
    fn link_clusters(
        &mut self,
        akey: u64,
        links: &[Link],
        eligible: bool,
        own_cluster: u32,
        now: i64,
        touched: &mut Vec<u32>,
    ) {
        for &(key, kind, existing) in links {
            if let Some(root) = self.apply_link(key, kind, existing, akey, eligible, now) {
                if !touched.contains(&root) {
                    touched.push(root);
                }
            }
        }
        let root = self.clusters.find(own_cluster);
        if root != 0 && !touched.contains(&root) {
            touched.push(root);
        }
    }

    /// Counts a harvesting request in its co-activity bin; links the accounts a wave puts in
    /// step. Appends the clusters that changed to `touched`.
    fn observe_cohort(&mut self, ev: &Event, akey: u64, now: i64, touched: &mut Vec<u32>) {
        let model = ev.model.as_ref().map_or(0, |m| xxh3_64(m.as_bytes()));
        let mut credited = std::mem::take(&mut self.credited_buf);
        credited.clear();
        let wave = match self.accounts.get_mut(&akey) {
            Some(mut acc) => {
                self.cohort
                    .observe(model, ev.ts_ms, akey, &mut acc.presence, &mut credited)
            }
            None => 0,
        };
        for &other in &credited {
            if let Some(mut acc) = self.accounts.get_mut(&other) {
                cohort::Cohort::credit(&mut acc.presence, wave);
            }
        }
        credited.push(akey);
        for &k in &credited {
            if let Some(root) = self.cohort_join(k, now) {
                if !touched.contains(&root) {
                    touched.push(root);
                }
            }
        }
        self.credited_buf = credited;
    }

    /// Joins an in-step account to the cluster of the waves it took part in (creating it).
    fn cohort_join(&mut self, akey: u64, now: i64) -> Option<u32> {
        let cfg = &self.cfg.raw;
        let waves = {
            let mut acc = self.accounts.get_mut(&akey)?;
            let (_, in_step) = self.cohort.step(&acc.presence);
            if !in_step || !acc.extraction_like || acc.harvest_ever < cfg.cluster.min_member_harvest
            {
                return None;
            }
            acc.sync_hits = acc.sync_hits.saturating_add(1);
            acc.presence.waves
        };
        let mut root = 0;
        for &w in waves.iter().filter(|&&w| w != 0) {
            if let Some(c) = self.cohort.wave(w).map(|w| w.cluster) {
                let r = self.clusters.find(c);
                if r != 0 {
                    root = if root == 0 {
                        r
                    } else {
                        self.clusters.union(root, r)
                    };
                }
            }
        }
        if root == 0 {
            let first = waves.iter().copied().find(|&w| w != 0)?;
            root =
                self.clusters
                    .create_seeded(u64::from(first) ^ 0xc0ac_7171, wave_link(first), now);
        }
        for &w in waves.iter().filter(|&&w| w != 0) {
            if let Some(wave) = self.cohort.wave_mut(w) {
                wave.cluster = root;
                self.clusters.add_link(root, wave_link(w));
            }
        }
        self.join(root, akey);
        Some(self.clusters.find(root))
    }

    /// Updates the account's windows and attribute slots. Returns the values the event
    /// carries, what it contributes to them, and whether the account may join clusters.
    fn update_account(
        &mut self,
        ev: &Event,
        keys: &Keys,
        now: i64,
        carried: &mut Vec<Carried>,
    ) -> (Touch, Profile) {
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
        if ev.ts_ms > acc.last_seen_ms {
            let gap = (ev.ts_ms - acc.last_seen_ms) as f32 / 1000.0;
            acc.gaps.add(gap);
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
            &mut self.templates_seen,
            created_before,
            now,
            carried,
        );
        if infra_changed && has_history {
            acc.infra_changes = acc.infra_changes.saturating_add(1);
            if acc.infra_changes <= MAX_CREDIBLE_MOVES {
                acc.changed_infra_ms = now;
            } else {
                acc.changed_infra_ms = 0;
            }
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
        };
        (touch, profile)
    }

    /// Feeds the event to the values it carries. Appends the values that link accounts now to
    /// `links`; returns whether the event took part in a synchronised burst.
    #[allow(clippy::too_many_arguments)]
    fn update_attributes(
        &mut self,
        ev: &Event,
        now: i64,
        akey: u64,
        carried: &[Carried],
        touch: &Touch,
        profile: &Profile,
        links: &mut Vec<Link>,
    ) -> bool {
        let ts_ms = ev.ts_ms;
        let c = &self.cfg.raw.cluster;
        let horizon_ms = c.horizon_secs as f32 * 1000.0;
        let bin_ms = (c.sync_bin_secs * 1000) as i64;
        let mut in_burst = false;
        if profile.was != profile.is {
            // Values held before this event (and still held) see the flip.
            for &k in profile.slots.iter().filter(|&&k| k != 0) {
                if carried.iter().any(|c| c.key == k && c.added) {
                    continue;
                }
                if let Some(g) = self.values.get_mut(k).and_then(Held::shared_mut) {
                    g.member_flipped(profile.is);
                }
            }
        }
        for item in carried {
            if let Some(old) = item.evicted {
                release_value(&mut self.values, old, akey, profile.was);
            }
            // A solo value stays a bare pair until a second account shows up.
            let mut created = false;
            let (held, inserted) = self
                .values
                .get_or_insert_with(item.key, || Held::Solo(akey));
            if inserted {
                continue;
            }
            let g = match held {
                Held::Solo(a) if *a == akey => continue,
                Held::Solo(a) => {
                    let other = *a;
                    let flag = self
                        .accounts
                        .get(&other)
                        .is_some_and(|acc| acc.extraction_like);
                    let mut g = Box::new(Attribute::new(item.kind, item.value.render(ev), ts_ms));
                    g.add_member(other, flag);
                    *held = Held::Shared(g);
                    created = true;
                    self.shared_values += 1;
                    self.stats.attributes_created += 1;
                    match held {
                        Held::Shared(g) => &mut **g,
                        Held::Solo(_) => unreachable!("just made shared"),
                    }
                }
                Held::Shared(g) => &mut **g,
            };
            if item.added || created {
                g.add_member(akey, profile.is);
            }
            in_burst |=
                g.touch(ts_ms, touch, horizon_ms, bin_ms) && item.kind == AttrKind::Template;
            if c.enabled && cluster::link(g, now, c).is_some() {
                links.push((item.key, item.kind, g.cluster));
            }
        }
        in_burst
    }

    /// Joins the accounts linked by attribute `key` into a cluster. Returns the cluster root.
    #[allow(clippy::too_many_arguments)]
    fn apply_link(
        &mut self,
        key: u64,
        kind: AttrKind,
        existing: u32,
        akey: u64,
        eligible: bool,
        now: i64,
    ) -> Option<u32> {
        let root = self.clusters.find(existing);
        if root != 0 {
            // An established link: only the current account may be new.
            if eligible {
                self.join(root, akey);
            }
            return Some(self.clusters.find(root));
        }
        // A new link: every eligible holder of the value joins, merging their clusters.
        let (members, value) = match self.attribute(key) {
            Some(g) => (g.members.sorted(), g.value.clone()),
            None => return None,
        };
        let mut joining = Vec::with_capacity(members.len());
        let mut prior = Vec::new();
        for m in members {
            if let Some(acc) = self.accounts.get(&m) {
                // A client fingerprint (a browser's TLS fingerprint) or an autonomous system
                // (a cloud provider) can be everyday and still look pure while a swarm
                // dominates it: on its own it names no one new. It merges clusters its
                // holders are already in; others need a second value (see `process_keyed`).
                let enough = !client_or_provider(kind) || acc.cluster != 0;
                // A shared network or creation minute is the weakest link (a venue, a NAT, a
                // sign-up rush): it does not name an account with a person's chat history.
                let enough = enough
                    && !(weak_link(kind)
                        && acc.chat_share() > self.cfg.raw.cluster.max_member_chat_share);
                let ground = acc.join_ground(
                    now,
                    self.cfg.raw.engine.fresh_account_days,
                    self.cfg.raw.cluster.min_member_harvest,
                );
                let may = match ground {
                    JoinGround::No => false,
                    JoinGround::FreshOrInStep => true,
                    // One shared value names such an account only if it is a card (see
                    // `process_keyed`).
                    JoinGround::NeverChatted => kind == AttrKind::Payment,
                };
                if enough && may {
                    joining.push(m);
                    if acc.cluster != 0 {
                        prior.push(acc.cluster);
                    }
                }
            }
        }
        if joining.is_empty() {
            return None;
        }
        let mut root = self.clusters.create(kind, &value, key, now);
        for p in prior {
            root = self.clusters.union(root, p);
        }
        self.clusters.add_link(root, key);
        if let Some(g) = self.attribute_mut(key) {
            g.cluster = root;
        }
        for m in joining {
            self.join(root, m);
        }
        Some(self.clusters.find(root))
    }

    fn join(&mut self, root: u32, akey: u64) {
        let Some(mut acc) = self.accounts.get_mut(&akey) else {
            return;
        };
        let current = self.clusters.find(acc.cluster);
        if current == root {
            return;
        }
        let root = if current != 0 {
            self.clusters.union(current, root)
        } else {
            root
        };
        acc.cluster = root;
        self.clusters.add_member(root, akey);
    }

    /// Re-evaluates a cluster the event touched, when due, and alerts (through the valve)
    /// when it is large, harvesting and scored high enough.
    fn check_cluster(&mut self, root: u32, now: i64, out: &mut Vec<Alert>) {
        let Some(due) = self.cluster_due(root, now) else {
            return;
        };
        let Some(c) = self.clusters.get(root) else {
            return;
        };
        let mut members: Vec<u64> = c.members.iter().copied().collect();
        members.sort_unstable();
        let link_keys = c.links.clone();
        let name = c.name.clone();
        let last_rank = c.last_alert_rank;

        let mut g = self.gather_members(&members, now);
        let (links, shared, waves) = self.gather_links(&link_keys, now, &mut g.stats);
        let cfg = &self.cfg.raw;
        let (score, signals) = cluster::score(&g.stats, &links, &cfg.cluster);
        let crossed = signals.iter().filter(|s| s.crossed).count() as u32;
        if let Some(c) = self.clusters.get_mut(root) {
            c.last_eval_ms = now;
            c.last_eval_size = c.members.len();
        }
        self.stats.alerts_suppressed_allowlist += g.suppressed;
        let stats = &g.stats;
        if stats.accounts < cfg.cluster.min_cluster_size as usize
            || score < cfg.cluster.alert_score
            || stats.harvest < u64::from(cfg.cluster.min_cluster_harvest)
        {
            return;
        }
        let tier = Tier::from_score(score, crossed, &cfg.alerts);
        let rank = tier as u8 + 1;
        if !(due.update || due.repeat || rank > last_rank) {
            return;
        }
        g.names.sort_unstable();
        let link_count = self.clusters.get(root).map_or(0, |c| c.link_count);
        let evidence = cluster_evidence(&g, &links, &signals, shared, waves, link_count);
        let accounts = stats.accounts;
        let mut d = Decision {
            kind: Kind::FakeAccountCluster,
            subject: name,
            accounts: g.names,
            tier,
            score,
            detected_at_ms: now,
            window_start_ms: g
                .stats
                .first_seen_ms
                .max(now - (cfg.engine.account_idle_secs * 1000) as i64),
            window_end_ms: now,
            evidence,
            detector_version: self.policy.cluster_version.clone(),
        };
        if let Some(c) = self.clusters.get_mut(root) {
            c.dirty = false;
            c.last_alert_ms = now;
            c.last_alert_rank = c.last_alert_rank.max(rank);
            c.last_alert_size = accounts;
        }
        self.stats.alerts_cluster += 1;
        if self.valve.apply(&mut d) {
            self.stats.alerts_rate_limited_cluster += 1;
        }
        out.push(d.into_alert());
    }

    /// Whether a cluster is due for evaluation now, and if so whether an alert would be an
    /// update or a repeat (otherwise only an escalation is alerted).
    fn cluster_due(&self, root: u32, now: i64) -> Option<ClusterDue> {
        let cfg = &self.cfg.raw;
        let update_ms = (cfg.alerts.cluster_update_secs * 1000) as i64;
        let c = self.clusters.get(root)?;
        if c.members.len() < cfg.cluster.min_cluster_size as usize {
            return None;
        }
        let grown = c.members.len() >= c.last_eval_size + c.last_eval_size.div_ceil(4);
        let eval_due =
            c.last_eval_ms == i64::MIN || (c.dirty && (grown || now - c.last_eval_ms >= 30_000));
        let repeat = cfg.alerts.repeat_secs > 0
            && c.last_alert_ms != i64::MIN
            && now - c.last_alert_ms >= (cfg.alerts.repeat_secs * 1000) as i64;
        if !eval_due && !repeat {
            return None;
        }
        let alerted_before = c.last_alert_ms != i64::MIN;
        let update = !alerted_before || (c.dirty && now - c.last_alert_ms >= update_ms);
        // Otherwise still check for an escalation, but not more than every 30 s. (A cluster
        // that merged into one never evaluated has an alert time but no evaluation time.)
        if !update && !repeat && c.last_eval_ms != i64::MIN && now - c.last_eval_ms < 30_000 {
            return None;
        }
        Some(ClusterDue { update, repeat })
    }

    /// Statistics over a cluster's members that are not allowlisted (bounded by the alert
    /// rate, not per event), their names and a few example events.
    fn gather_members(&mut self, members: &[u64], now: i64) -> Gathered {
        let cfg = &self.cfg.raw;
        let mut g = Gathered {
            stats: cluster::MemberStats {
                first_seen_ms: now,
                ..Default::default()
            },
            names: Vec::with_capacity(members.len()),
            examples: Vec::new(),
            suppressed: 0,
        };
        let stats = &mut g.stats;
        for m in members {
            let Some(mut acc) = self.accounts.get_mut(m) else {
                continue;
            };
            if self.policy.allowlisted(&acc.id, acc.org_id.as_deref(), now) {
                g.suppressed += 1;
                continue;
            }
            let t = acc.hour.totals(now);
            stats.accounts += 1;
            if let Some(d) = acc.age_days(now) {
                stats.with_known_age += 1;
                if d < cfg.engine.fresh_account_days {
                    stats.fresh += 1;
                }
            }
            let (step, in_step) = self.cohort.step(&acc.presence);
            if in_step {
                stats.in_step += 1;
                stats.in_step_max_p = stats.in_step_max_p.max(step.p_value);
            }
            stats.requests += u64::from(t.requests);
            stats.single_turn += u64::from(t.single_turn);
            stats.reasoning += u64::from(t.reasoning);
            stats.output_tokens += t.output_tokens;
            stats.harvest += u64::from(acc.harvest_ever);
            stats.input_tokens += t.input_tokens;
            stats.first_seen_ms = stats.first_seen_ms.min(acc.first_seen_ms);
            if g.examples.len() < cfg.alerts.example_events {
                if let Some(e) = acc.example_ids().pop() {
                    g.examples.push(e);
                }
            }
            g.names.push(acc.id.to_string());
        }
        g
    }

    /// The evidence of a cluster's links: shared attribute values (scored and readable) and
    /// co-activity waves (readable; counted into `stats`).
    fn gather_links(
        &self,
        link_keys: &[u64],
        now: i64,
        stats: &mut cluster::MemberStats,
    ) -> (
        Vec<cluster::Link>,
        Vec<serde_json::Value>,
        Vec<serde_json::Value>,
    ) {
        let cfg = &self.cfg.raw;
        let mut links = Vec::new();
        let mut shared = Vec::new();
        let mut waves = Vec::new();
        for k in link_keys {
            if let Some(w) = as_wave(*k) {
                if let Some(wave) = self.cohort.wave(w) {
                    stats.waves += 1;
                    waves.push(serde_json::json!({
                        "bin_start": crate::event::time::format_ms(wave.start_ms),
                        "bin_secs": cfg.cohort.bin_secs,
                        "harvesting_accounts": wave.accounts,
                        "expected_by_baseline": (wave.expected * 100.0).round() / 100.0,
                        "chance_p": wave.p_value,
                    }));
                }
                continue;
            }
            if let Some(g) = self.attribute(*k) {
                let link = cluster::evidence(g, now, &cfg.cluster);
                shared.push(link.to_json(&g.value));
                links.push(link);
            }
        }
        (links, shared, waves)
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
        let attr_idle = now - 600_000;
        let mut gone = 0;
        self.values.retain(|_, h| match h {
            Held::Shared(g) => {
                let keep = !(g.members.is_empty() && g.last_ms < attr_idle);
                gone += usize::from(!keep);
                keep
            }
            Held::Solo(_) => true,
        });
        self.shared_values -= gone;
        debug_assert_eq!(self.shared_values, self.count_shared());
        self.stats.attributes_expired += gone as u64;
        self.enforce_caps();
        self.clusters.compact();
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
        if self.shared_values > e.max_attribute_values {
            let target = e.max_attribute_values - e.max_attribute_values / 10;
            let cutoff = nth_oldest(
                self.values
                    .values()
                    .filter_map(Held::shared)
                    .map(|g| g.last_ms),
                self.shared_values - target,
            );
            let before = self.shared_values;
            self.values.retain(|_, h| match h {
                Held::Shared(g) => g.last_ms > cutoff,
                Held::Solo(_) => true,
            });
            self.shared_values = self.count_shared();
            self.stats.attributes_evicted += (before - self.shared_values) as u64;
        }
        let slack_a = (e.max_accounts / 10) as u64;
        let room_a = e.max_accounts.saturating_sub(self.accounts.len()) as u64;
        self.cap_check_accounts = self.stats.accounts_created + room_a.max(slack_a / 10).max(1);
        let slack_v = (e.max_attribute_values / 10) as u64;
        let room_v = e.max_attribute_values.saturating_sub(self.shared_values) as u64;
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
            .0
            .iter()
            .map(|e| Reverse((e.value().last_seen_ms + idle, *e.key())))
            .collect();
        self.expiry = BinaryHeap::from(entries);
    }

    fn remove_account(&mut self, key: u64) {
        let Some(acc) = self.accounts.remove(&key) else {
            return;
        };
        for slot in acc.slots {
            if slot != 0 {
                release_value(&mut self.values, slot, key, acc.extraction_like);
            }
        }
        if let Some(created) = acc.created_ms {
            let k = creation_key(created.div_euclid(60_000));
            release_value(&mut self.values, k, key, acc.extraction_like);
        }
        if acc.cluster != 0 {
            self.clusters.remove_member(acc.cluster, key);
        }
    }

    fn attribute(&self, key: u64) -> Option<&Attribute> {
        self.values.get(key).and_then(Held::shared)
    }

    fn attribute_mut(&mut self, key: u64) -> Option<&mut Attribute> {
        self.values.get_mut(key).and_then(Held::shared_mut)
    }

    fn count_shared(&self) -> usize {
        self.values
            .values()
            .filter(|h| matches!(h, Held::Shared(_)))
            .count()
    }
}

impl Policy {
    fn allowlisted(&self, account: &str, org: Option<&str>, now: i64) -> bool {
        self.allow_accounts
            .get(account)
            .is_some_and(|&exp| now < exp)
            || org.is_some_and(|o| self.allow_orgs.get(o).is_some_and(|&exp| now < exp))
            || self
                .live
                .as_ref()
                .is_some_and(|l| l.allows(account, org, now))
    }

    fn judge_bulk(&self, cfg: &crate::config::Config, acc: &mut Account, now: i64) -> BulkVerdict {
        let Some(a) = bulk::assess(acc, now, cfg) else {
            return BulkVerdict::Nothing;
        };
        if a.score < cfg.bulk.alert_score {
            return BulkVerdict::Nothing;
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
            return BulkVerdict::Nothing;
        }
        if self.allowlisted(&acc.id, acc.org_id.as_deref(), now) {
            return BulkVerdict::Suppressed;
        }
        acc.bulk_alert_rank = rank.max(acc.bulk_alert_rank);
        acc.bulk_alert_ms = now;
        let mut examples = acc.example_ids();
        examples.truncate(cfg.alerts.example_events);
        let evidence = serde_json::json!({
            "summary": a.summary(),
            "signals": a.signals.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
            "signals_crossed": a.crossed(),
            "account_age_days": a.age_days.map(|d| (d * 10.0).round() / 10.0),
            "org_id": acc.org_id.as_deref(),
            "example_event_ids": examples,
        });
        let mut evidence = evidence;
        if withheld {
            evidence["suspend_withheld"] = serde_json::json!(
                "established account on its usual device and network: throttle at most \
                 (bulk.established_suspend_needs_corroboration)"
            );
        }
        BulkVerdict::Alert(Box::new(Decision {
            kind: Kind::BulkExtraction,
            subject: acc.id.to_string(),
            accounts: vec![acc.id.to_string()],
            tier,
            score: a.score,
            detected_at_ms: now,
            window_start_ms: a.window_start_ms,
            window_end_ms: now,
            evidence,
            detector_version: self.bulk_version.clone(),
        }))
    }
}

/// A cluster alert's evidence: a readable summary, the scored signals, the shared values
/// and co-activity waves that link it, and example events.
fn cluster_evidence(
    g: &Gathered,
    links: &[cluster::Link],
    signals: &[crate::detect::Signal],
    shared: Vec<serde_json::Value>,
    waves: Vec<serde_json::Value>,
    link_count: u32,
) -> serde_json::Value {
    let stats = &g.stats;
    let crossed = signals.iter().filter(|s| s.crossed).count() as u32;
    let share = |x: u64| {
        if stats.requests == 0 {
            0.0
        } else {
            x as f64 / stats.requests as f64
        }
    };
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = links.iter().map(|l| l.kind.name()).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let mut how = Vec::with_capacity(2);
    if !kinds.is_empty() {
        how.push(format!("shared {}", kinds.join(", ")));
    }
    if !waves.is_empty() {
        how.push(format!(
            "harvesting in step ({} in step, {} co-activity waves)",
            stats.in_step,
            waves.len()
        ));
    }
    let summary = format!(
        "{} accounts linked by {} ({} linking values); {} single-turn, {} reasoning-eliciting, {:.0}k output tokens in the last hour",
        stats.accounts,
        how.join(" and "),
        link_count,
        crate::detect::pct(share(stats.single_turn)),
        crate::detect::pct(share(stats.reasoning)),
        stats.output_tokens as f64 / 1000.0,
    );
    serde_json::json!({
        "summary": summary,
        "cluster_size": stats.accounts,
        "signals": signals.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "signals_crossed": crossed,
        "shared_attributes": shared,
        "co_activity": if waves.is_empty() { serde_json::Value::Null } else { serde_json::json!({
            "waves": waves,
            "members_in_step": stats.in_step,
            "largest_member_chance_p": stats.in_step_max_p,
        }) },
        "linking_values": link_count,
        "output_tokens_1h": stats.output_tokens,
        "example_event_ids": &g.examples,
    })
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
    if sample.single_turn && (ev.prompt.reasoning || sample.templated) {
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
        let minute = created.div_euclid(60_000);
        let key = creation_key(minute);
        let evicted = created_before
            .filter(|&c| c != created)
            .map(|c| creation_key(c.div_euclid(60_000)))
            .filter(|&k| k != key);
        carried.push(Carried {
            kind: AttrKind::Creation,
            key,
            value: Value::Minute(minute),
            added: created_before.is_none_or(|c| c.div_euclid(60_000) != minute),
            evicted,
        });
    }
    carried.retain(|c| kinds[c.kind as usize]);
    infra_changed
}

/// Accounts by key (an xxh3 hash of the account id, used as is: no rehash), in a DashMap of
/// boxes so that an account never moves. The engine is the only writer; methods that hand out
/// a writable account take `&mut self`, so the borrow checker rules out holding two shard
/// guards at once (no deadlock by construction).
#[derive(Default)]
struct Accounts(DashMap<u64, Box<Account>, BuildNoHashHasher<u64>>);

impl Accounts {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn get(&self, key: &u64) -> Option<dashmap::mapref::one::Ref<'_, u64, Box<Account>>> {
        self.0.get(key)
    }

    fn get_mut(
        &mut self,
        key: &u64,
    ) -> Option<dashmap::mapref::one::RefMut<'_, u64, Box<Account>>> {
        self.0.get_mut(key)
    }

    /// The account of `key`, made by `make` if absent; the flag is true if it was made.
    fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce() -> Account,
    ) -> (dashmap::mapref::one::RefMut<'_, u64, Box<Account>>, bool) {
        let mut created = false;
        let acc = self.0.entry(key).or_insert_with(|| {
            created = true;
            Box::new(make())
        });
        (acc, created)
    }

    fn remove(&mut self, key: &u64) -> Option<Box<Account>> {
        self.0.remove(key).map(|(_, a)| a)
    }

    /// Keys of the accounts `keep` selects (a snapshot: the map is not borrowed afterwards).
    fn keys_where(&self, keep: impl Fn(&Account) -> bool) -> Vec<u64> {
        self.0
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| *e.key())
            .collect()
    }

    fn last_seen(&self) -> Vec<i64> {
        self.0.iter().map(|e| e.value().last_seen_ms).collect()
    }
}

/// Account `akey` no longer holds value `key`.
fn release_value(values: &mut FlatMap<Held>, key: u64, akey: u64, extraction_like: bool) {
    values.remove_if(key, |held| match held {
        Held::Shared(g) => {
            g.remove_member(akey, extraction_like);
            true
        }
        Held::Solo(a) => *a != akey,
    });
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
