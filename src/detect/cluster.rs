//! `fake_account_cluster`: the cluster assembler. It consumes the link detectors'
//! [`LinkRecord`]s and joins the accounts they name into clusters (union-find). A cluster keeps
//! the id of its oldest part as it grows and merges, so replacement accounts join the existing
//! alert. It owns the clusters, their cadence (evaluation, updates, repeats) and their evidence,
//! which it reads from a [`Source`]: in one process the accounts and the link detectors' own
//! state, in a cluster stage of its own the snapshots that came with the link records.

use nohash_hasher::{IntMap, IntSet};
use xxhash_rust::xxh3::xxh3_64;

use super::link::{self, Link};
use super::{
    pct, Explained, LinkDetector, LinkKind, LinkRecord, MemberSnapshot, Out, Signal, View,
};
use crate::alert::{Decision, Kind, Tier};
use crate::config::ClusterConfig;
use crate::state::account::{Facts, JoinGround};
use crate::state::attribute::{AttrKind, Networks};

/// One cluster (a union-find root).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Stable, public id.
    pub name: String,
    pub founded_ms: i64,
    pub members: IntSet<u64>,
    /// Keys of links (attribute values, co-activity waves) that joined accounts into this
    /// cluster, for its evidence: the first `FOUNDING_LINKS`, then the most recent others.
    /// A cluster outlives its first links (a rotating proxy's addresses are released, waves
    /// are forgotten after `cohort.baseline_secs`), and a link no longer held explains
    /// nothing: the recent ones keep a long-lived cluster's alerts explained.
    pub links: Vec<u64>,
    /// Where the next recent link goes among the slots after the founding ones.
    next_recent: u8,
    /// Distinct links ever, estimated (a HyperLogLog of their keys): thousands for a hydra
    /// behind a rotating proxy.
    distinct_links: Networks,
    /// Membership changed since the last alert.
    pub dirty: bool,
    pub last_eval_ms: i64,
    pub last_eval_size: usize,
    pub last_alert_ms: i64,
    pub last_alert_rank: u8,
    pub last_alert_size: usize,
}

const MAX_LINKS_KEPT: usize = 16;
/// Of those, the cluster's first links, kept for good (see [`Cluster::links`]).
const FOUNDING_LINKS: usize = 8;

impl Cluster {
    /// Distinct links that joined accounts into the cluster: exact while all are kept,
    /// estimated beyond.
    pub fn link_count(&self) -> u32 {
        if self.links.len() < MAX_LINKS_KEPT {
            return self.links.len() as u32;
        }
        (self.distinct_links.estimate().round() as u32).max(MAX_LINKS_KEPT as u32)
    }

    /// Keeps `key` among the links shown as evidence, and counts it if it is not among them.
    fn keep_link(&mut self, key: u64) {
        if self.links.contains(&key) {
            return;
        }
        self.distinct_links.add(xxh3_64(&key.to_le_bytes()));
        if self.links.len() < MAX_LINKS_KEPT {
            self.links.push(key);
        } else {
            let recent = MAX_LINKS_KEPT - FOUNDING_LINKS;
            let slot = FOUNDING_LINKS + usize::from(self.next_recent) % recent;
            self.links[slot] = key;
            self.next_recent = ((usize::from(self.next_recent) + 1) % recent) as u8;
        }
    }
}

/// All clusters, with union-find over their ids.
#[derive(Debug, Default)]
pub struct Clusters {
    parent: IntMap<u32, u32>,
    roots: IntMap<u32, Cluster>,
    next_id: u32,
}

impl Clusters {
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The root of `id`, compressing the path. 0 for none or a dissolved cluster.
    pub fn find(&mut self, id: u32) -> u32 {
        if id == 0 {
            return 0;
        }
        let mut root = id;
        while let Some(&p) = self.parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        if !self.parent.contains_key(&root) {
            return 0;
        }
        let mut cur = id;
        while cur != root {
            let next = self.parent.get(&cur).copied().unwrap_or(root);
            self.parent.insert(cur, root);
            cur = next;
        }
        root
    }

    pub fn get(&self, root: u32) -> Option<&Cluster> {
        self.roots.get(&root)
    }

    pub fn get_mut(&mut self, root: u32) -> Option<&mut Cluster> {
        self.roots.get_mut(&root)
    }

    /// A new cluster founded by link `link_key`, its public id derived from `seed`.
    pub fn create_seeded(&mut self, seed: u64, link_key: u64, now_ms: i64) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        let h = seed ^ now_ms as u64;
        self.parent.insert(id, id);
        self.roots.insert(
            id,
            Cluster {
                name: format!("cluster-{:016x}", xxh3_64(&h.to_le_bytes())),
                founded_ms: now_ms,
                members: IntSet::default(),
                links: Vec::new(),
                next_recent: 0,
                distinct_links: Networks::default(),
                dirty: true,
                last_eval_ms: i64::MIN,
                last_eval_size: 0,
                last_alert_ms: i64::MIN,
                last_alert_rank: 0,
                last_alert_size: 0,
            },
        );
        if let Some(c) = self.roots.get_mut(&id) {
            c.keep_link(link_key);
        }
        id
    }

    /// Merges the clusters of `a` and `b`; the older one's id survives. Returns the root.
    pub fn union(&mut self, a: u32, b: u32) -> u32 {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == 0 || ra == rb {
            return if ra == 0 { rb } else { ra };
        }
        if rb == 0 {
            return ra;
        }
        let older_first = {
            let (ca, cb) = (&self.roots[&ra], &self.roots[&rb]);
            (ca.founded_ms, ra) <= (cb.founded_ms, rb)
        };
        let (keep, gone) = if older_first { (ra, rb) } else { (rb, ra) };
        let Some(mut g) = self.roots.remove(&gone) else {
            return keep;
        };
        self.parent.insert(gone, keep);
        if let Some(k) = self.roots.get_mut(&keep) {
            // Move the smaller member set into the larger.
            if g.members.len() > k.members.len() {
                std::mem::swap(&mut g.members, &mut k.members);
            }
            k.members.extend(g.members.drain());
            for l in g.links {
                k.keep_link(l);
            }
            k.distinct_links.merge(&g.distinct_links);
            k.dirty = true;
            k.last_alert_ms = k.last_alert_ms.max(g.last_alert_ms);
            k.last_alert_rank = k.last_alert_rank.max(g.last_alert_rank);
        }
        keep
    }

    /// Records another linking attribute of a cluster.
    pub fn add_link(&mut self, root: u32, link_key: u64) {
        if let Some(c) = self.roots.get_mut(&root) {
            c.keep_link(link_key);
        }
    }

    /// Adds an account; true if it was new to the cluster.
    pub fn add_member(&mut self, root: u32, account: u64) -> bool {
        match self.roots.get_mut(&root) {
            Some(c) => {
                let new = c.members.insert(account);
                c.dirty |= new;
                new
            }
            None => false,
        }
    }

    /// Removes an account (it expired or was evicted). Empty clusters dissolve.
    pub fn remove_member(&mut self, id: u32, account: u64) {
        let root = self.find(id);
        let empty = match self.roots.get_mut(&root) {
            Some(c) => {
                if c.members.remove(&account) {
                    c.dirty = true;
                }
                c.members.is_empty()
            }
            None => false,
        };
        if empty {
            self.roots.remove(&root);
        }
    }

    /// Drops union-find entries that no longer lead to a live cluster.
    pub fn compact(&mut self) {
        let ids: Vec<u32> = self.parent.keys().copied().collect();
        let mut dead = Vec::new();
        for id in ids {
            let r = self.find(id);
            if r == 0 || !self.roots.contains_key(&r) {
                dead.push(id);
            }
        }
        for id in dead {
            self.parent.remove(&id);
        }
    }
}

/// Aggregates over a cluster's members, gathered by the engine.
#[derive(Debug, Clone, Default)]
pub struct MemberStats {
    pub accounts: usize,
    pub with_known_age: usize,
    pub fresh: usize,
    pub requests: u64,
    pub single_turn: u64,
    pub reasoning: u64,
    pub output_tokens: u64,
    pub input_tokens: u64,
    /// Harvesting requests the members sent while tracked.
    pub harvest: u64,
    /// Co-activity waves among the cluster's links, members in step, and the largest
    /// chance probability among those members.
    pub waves: usize,
    pub in_step: usize,
    pub in_step_max_p: f64,
    pub first_seen_ms: i64,
}

/// Scores a cluster from its members and links.
pub fn score(m: &MemberStats, links: &[Link], cfg: &ClusterConfig) -> (f64, Vec<Signal>) {
    let share = |x: u64| {
        if m.requests == 0 {
            0.0
        } else {
            x as f64 / m.requests as f64
        }
    };
    let single = share(m.single_turn);
    let reasoning = share(m.reasoning);
    let fresh = if m.with_known_age == 0 {
        0.0
    } else {
        m.fresh as f64 / m.with_known_age as f64
    };
    let mut kinds: Vec<AttrKind> = links
        .iter()
        .map(|l| match l.kind {
            AttrKind::IpPrefix => AttrKind::Ip,
            k => k,
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    // Accounts in step through co-activity waves are lockstep by construction.
    let co_activity = m.waves > 0 && m.in_step > 0;
    let n_kinds = kinds.len() + usize::from(co_activity);
    let mut max_sync = links.iter().map(|l| l.synchrony).fold(1.0, f64::max);
    if co_activity {
        max_sync = max_sync.max(2.0 * cfg.min_synchrony);
    }
    let tight_creation = links
        .iter()
        .filter_map(|l| l.creation_spread_hours)
        .fold(f64::INFINITY, f64::min);

    let mut signals = vec![
        Signal::at_least(
            "cluster_size",
            m.accounts as f64,
            f64::from(cfg.min_cluster_size),
        ),
        Signal::at_least("single_turn_share", single, cfg.min_single_turn_share),
        Signal::at_least("reasoning_prompt_share", reasoning, cfg.min_reasoning_share),
        Signal::at_least("fresh_account_share", fresh, cfg.min_fresh_share),
        Signal::at_least("synchrony", max_sync, cfg.min_synchrony),
        Signal::at_least("distinct_link_kinds", n_kinds as f64, 2.0),
    ];
    if co_activity {
        signals.push(Signal::at_least(
            "members_in_step",
            m.in_step as f64,
            f64::from(cfg.min_cluster_size),
        ));
    }
    if tight_creation.is_finite() {
        signals.push(Signal::at_most(
            "creation_spread_hours",
            tight_creation,
            cfg.max_creation_spread_hours,
        ));
    }
    if kinds.contains(&AttrKind::Payment) {
        signals.push(Signal::at_least("shared_payment_instruments", 1.0, 1.0));
    }
    let score = 0.45
        + 0.15 * (m.accounts as f64 / 20.0).min(1.0)
        + 0.10 * reasoning
        + 0.10 * fresh
        + 0.10 * (n_kinds as f64 / 3.0).min(1.0)
        + 0.10 * (max_sync / (2.0 * cfg.min_synchrony)).min(1.0)
        - 0.15 * (1.0 - single).max(0.0);
    (score.clamp(0.0, 1.0), signals)
}

/// A cluster alert's evidence as it is gathered: member statistics, and each link detector's
/// account of its links (value links scored and readable, co-activity waves readable).
#[derive(Debug, Default)]
pub struct Evidence {
    pub stats: MemberStats,
    pub links: Vec<Link>,
    pub shared: Vec<serde_json::Value>,
    pub waves: Vec<serde_json::Value>,
}

/// A cluster due for evaluation: whether an alert now would be an update of a grown cluster
/// or a repeat of an unchanged one (if neither, only an escalation is alerted).
struct ClusterDue {
    update: bool,
    repeat: bool,
}

/// A link of the account's current event, as the assembler remembers it until the account's
/// next event: what the account's eligibility is judged on (see [`Assembler::may_join`]).
#[derive(Debug, Clone, Copy)]
struct GroupLink {
    key: u64,
    kind: AttrKind,
    seed: u64,
    names_alone: bool,
    circumstantial: bool,
    /// The record named the account (it joins this link's cluster once eligible).
    named: bool,
}

/// What the assembler knows of an account that link records mentioned.
#[derive(Debug, Clone, Copy, Default)]
struct Member {
    /// Cluster (0: none).
    cluster: u32,
    /// Times it was caught in step: a synchronised burst on a template, or co-activity waves.
    sync_hits: u16,
}

/// The value links of an account's current event, and whether they made it eligible.
#[derive(Debug, Clone, Default)]
struct Group {
    /// The account's current event (the hash of its id), and its time.
    event: u64,
    at_ms: i64,
    links: smallvec::SmallVec<[GroupLink; 4]>,
    eligible: bool,
    /// The account's ground and whether it is unproven for links by circumstance, judged at
    /// its first link of the event (until it is caught in step).
    judged: Option<(JoinGround, bool)>,
}

/// Whether the value links of an account's event may name it, on its `ground`. An old account
/// that merely never chatted is named by infrastructure only: a person who only ever sends
/// one-off questions ("... Please explain step by step.") can match a campaign's template. If
/// it is `unproven` (see [`Assembler::judge`]), links by circumstance do not count.
fn may_join(ground: JoinGround, unproven: bool, group: &[GroupLink]) -> bool {
    let counts = |l: &&GroupLink| !(unproven && l.circumstantial);
    let counted = group.iter().filter(counts).count();
    let infra = group
        .iter()
        .filter(counts)
        .filter(|l| l.kind != AttrKind::Template)
        .count();
    let payment = group.iter().any(|l| l.kind == AttrKind::Payment);
    // A popular client fingerprint or a provider alone never names anyone; any other value
    // names an account that carries evidence of its own (see `join_ground`).
    let alone = group.iter().filter(counts).any(|l| l.names_alone);
    match ground {
        JoinGround::No => false,
        JoinGround::FreshOrInStep => counted >= 2 || alone,
        JoinGround::NeverChatted => infra >= 2 || payment,
    }
}

/// The cluster a linking value or wave feeds, and when a record last mentioned it.
#[derive(Debug, Clone, Copy)]
struct Fed {
    cluster: u32,
    seen_ms: i64,
}

impl Fed {
    fn new(cluster: u32, seen_ms: i64) -> Self {
        Self { cluster, seen_ms }
    }
}

/// How long (event time) an account's group of links is kept after its event: records of one
/// event reach the assembler together in one process, and within seconds from link stages.
const GROUP_KEEP_MS: i64 = 60_000;

/// The cluster assembler: the cluster stage. It sees only link records and decides which
/// named accounts join, from what it learnt of each account through them: whether it was
/// caught in step (`Sync` and `Wave` records), whether its network is a crowd of people
/// (`Crowd` records), and which values link it on its current event. Which cluster each
/// account, value and co-activity wave feeds is kept here.
pub struct Assembler {
    clusters: Clusters,
    /// Accounts that link records mentioned.
    members: IntMap<u64, Member>,
    /// The current event's value links of accounts, dropped after `GROUP_KEEP_MS`, or at the
    /// end of the event when its records all arrive in one call (`whole_events`: the link
    /// detectors run in the same process).
    groups: IntMap<u64, Group>,
    whole_events: bool,
    /// Cluster of each linking value and co-activity wave link, forgotten once no record has
    /// mentioned it for `engine.account_idle_secs` (its holders are gone or it stopped
    /// linking), so that a cluster that lives on does not hold every value it ever had.
    links: IntMap<u64, Fed>,
    link_idle_ms: i64,
    /// Networks that are crowds of people.
    crowds: IntSet<u64>,
    touched: Vec<u32>,
    version: String,
}

impl Assembler {
    pub fn new(cfg: &crate::config::Config, config_hash: u64) -> Self {
        Self {
            link_idle_ms: (cfg.engine.account_idle_secs * 1000) as i64,
            clusters: Clusters::default(),
            members: IntMap::default(),
            groups: IntMap::default(),
            whole_events: true,
            links: IntMap::default(),
            crowds: IntSet::default(),
            touched: Vec::new(),
            version: format!(
                "{}/{}+cfg.{:08x}",
                Kind::FakeAccountCluster,
                super::DETECTOR_VERSION,
                config_hash as u32
            ),
        }
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Applies the event's link records, then re-evaluates the clusters they touched (and the
    /// account's own: an account already in a cluster keeps it fresh), alerting when due.
    pub fn assemble(
        &mut self,
        clock: Clock<'_>,
        account: u64,
        records: &[LinkRecord],
        src: &mut dyn Source,
        out: &mut Out,
    ) {
        if !clock.cfg.cluster.enabled {
            return;
        }
        let own = self.members.get(&account).map_or(0, |m| m.cluster);
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        let mut own_done = false;
        for r in records {
            let root = match r.kind {
                LinkKind::Value(kind) => self.apply_value(clock, r, kind, &mut touched),
                LinkKind::Wave => {
                    if !own_done {
                        self.touch_own(own, &mut touched);
                        own_done = true;
                    }
                    self.apply_waves(r)
                }
                LinkKind::Sync => {
                    self.caught_in_step(r.account);
                    None
                }
                LinkKind::Crowd => {
                    for &k in &r.keys {
                        if r.crowd {
                            self.crowds.insert(k);
                        } else {
                            self.crowds.remove(&k);
                        }
                    }
                    None
                }
            };
            if let Some(root) = root {
                if !touched.contains(&root) {
                    touched.push(root);
                }
            }
        }
        if !own_done {
            self.touch_own(own, &mut touched);
        }
        for &root in &touched {
            self.check_cluster(clock, root, src, out);
        }
        self.touched = touched;
        if self.whole_events {
            // Every record of the event came in this call: its group is complete.
            self.groups.remove(&account);
        }
    }

    fn touch_own(&mut self, own: u32, touched: &mut Vec<u32>) {
        let root = self.clusters.find(own);
        if root != 0 && !touched.contains(&root) {
            touched.push(root);
        }
    }

    fn caught_in_step(&mut self, akey: u64) {
        let m = self.members.entry(akey).or_default();
        m.sync_hits = m.sync_hits.saturating_add(1);
        if let Some(g) = self.groups.get_mut(&akey) {
            g.judged = None;
        }
    }

    fn cluster_of(&self, akey: u64) -> u32 {
        self.members.get(&akey).map_or(0, |m| m.cluster)
    }

    /// The live cluster a linking value or wave feeds (0: none).
    fn link_root(&mut self, key: u64) -> u32 {
        match self.links.get(&key) {
            Some(f) => self.clusters.find(f.cluster),
            None => 0,
        }
    }

    /// Applies a value link. A new link (naming every holder) founds a cluster of the holders
    /// that may join on their own ground; a founded one joins the event's account once the
    /// links of its event make it eligible (see [`Assembler::may_join`]). Returns the root.
    fn apply_value(
        &mut self,
        clock: Clock<'_>,
        r: &LinkRecord,
        kind: AttrKind,
        touched: &mut Vec<u32>,
    ) -> Option<u32> {
        if let Some(f) = self.links.get_mut(&r.founder) {
            f.seen_ms = f.seen_ms.max(r.at_ms);
        }
        if r.all_holders {
            // Every linking value of the account's event counts for its eligibility.
            self.add_to_group(clock, r, kind, false, touched);
            let joining: Vec<u64> = r
                .accounts
                .iter()
                .filter(|(m, f)| self.may_join_alone(clock, *m, f, r, kind))
                .map(|&(m, _)| m)
                .collect();
            return self.found(r, &joining);
        }
        let named = r.accounts.iter().any(|&(a, _)| a == r.account);
        self.add_to_group(clock, r, kind, named, touched)
    }

    /// Adds a link of the account's current event to its group and joins the account to the
    /// clusters of the group's links that named it, once the group makes it eligible.
    fn add_to_group(
        &mut self,
        clock: Clock<'_>,
        r: &LinkRecord,
        kind: AttrKind,
        named: bool,
        touched: &mut Vec<u32>,
    ) -> Option<u32> {
        let akey = r.account;
        let link = GroupLink {
            key: r.founder,
            kind,
            seed: r.seed,
            names_alone: !r.merge_only,
            circumstantial: r.circumstantial,
            named,
        };
        let judged = match self.groups.get(&akey) {
            Some(g) if g.event == r.event && g.judged.is_some() => g.judged,
            _ => r.account_facts.map(|f| self.judge(clock, akey, &f)),
        };
        let g = self.groups.entry(akey).or_default();
        if g.event != r.event {
            g.event = r.event;
            g.at_ms = r.at_ms;
            g.links.clear();
            g.eligible = false;
        }
        g.judged = judged;
        g.links.push(link);
        let was = g.eligible;
        g.eligible = judged.is_some_and(|(ground, chatty)| may_join(ground, chatty, &g.links));
        if !g.eligible {
            return None;
        }
        // Newly eligible: the earlier links of the event that named it too.
        let joins: smallvec::SmallVec<[GroupLink; 4]> = if was {
            smallvec::smallvec![link]
        } else {
            g.links.clone()
        };
        let mut last = None;
        for l in joins.into_iter().filter(|l| l.named) {
            let root = self.join_link(akey, &l);
            if let Some(root) = root {
                if !touched.contains(&root) {
                    touched.push(root);
                }
                last = Some(root);
            }
        }
        last
    }

    /// Joins an eligible account to the cluster a value link feeds, founding it if there is
    /// none (a value that alone names no one only merges: the account must be in a cluster).
    fn join_link(&mut self, akey: u64, l: &GroupLink) -> Option<u32> {
        let root = self.link_root(l.key);
        if root != 0 {
            self.join(root, akey);
            return Some(self.clusters.find(root));
        }
        if !l.names_alone && self.cluster_of(akey) == 0 {
            return None;
        }
        let mut r = LinkRecord::new(LinkKind::Value(l.kind), 0, akey, 0);
        r.founder = l.key;
        r.seed = l.seed;
        self.found_at(&r, &[akey], self.groups.get(&akey).map_or(0, |g| g.at_ms))
    }

    /// Founds (or feeds) the cluster of a new value link with `joining`. Returns the root.
    fn found(&mut self, r: &LinkRecord, joining: &[u64]) -> Option<u32> {
        self.found_at(r, joining, r.at_ms)
    }

    fn found_at(&mut self, r: &LinkRecord, joining: &[u64], at_ms: i64) -> Option<u32> {
        if joining.is_empty() {
            return None;
        }
        let key = r.founder;
        let existing = self.link_root(key);
        if existing != 0 {
            for &a in joining {
                self.join(existing, a);
            }
            return Some(self.clusters.find(existing));
        }
        let mut root = self.clusters.create_seeded(r.seed, key, at_ms);
        for &m in joining {
            let prior = self.cluster_of(m);
            if prior != 0 {
                root = self.clusters.union(root, prior);
            }
        }
        self.clusters.add_link(root, key);
        self.links.insert(key, Fed::new(root, at_ms));
        for &m in joining {
            self.join(root, m);
        }
        Some(self.clusters.find(root))
    }

    /// Whether a new link may name holder `m` on its own ground: fresh or caught in step, or,
    /// through a card, an API-only account that never chatted; not, through a link by
    /// circumstance, on a network that is a crowd of people; and, through a value that alone
    /// names no one, only if it is in a cluster already.
    fn may_join_alone(
        &self,
        clock: Clock<'_>,
        m: u64,
        acc: &Facts,
        r: &LinkRecord,
        kind: AttrKind,
    ) -> bool {
        if r.merge_only && self.cluster_of(m) == 0 {
            return false;
        }
        if r.circumstantial && self.among_people(acc) {
            return false;
        }
        match self.ground(clock, m, acc) {
            JoinGround::No => false,
            JoinGround::FreshOrInStep => true,
            // One shared value names such an account only if it is a card.
            JoinGround::NeverChatted => kind == AttrKind::Payment,
        }
    }

    fn ground(&self, clock: Clock<'_>, akey: u64, acc: &Facts) -> JoinGround {
        let c = &clock.cfg.cluster;
        let in_step = self.members.get(&akey).is_some_and(|m| m.sync_hits > 0);
        acc.join_ground(
            in_step,
            clock.now,
            clock.cfg.engine.fresh_account_days,
            c.min_member_harvest,
        )
    }

    /// Whether `acc` is on a network that is a crowd of people (see [`link::crowd`]).
    fn among_people(&self, acc: &Facts) -> bool {
        acc.ips.iter().any(|k| *k != 0 && self.crowds.contains(k))
    }

    /// The account's ground for joining, and whether links by circumstance (network, creation
    /// minute) may not name it: a person's chat history, too short a history to show none, or
    /// a network among people.
    fn judge(&self, clock: Clock<'_>, akey: u64, acc: &Facts) -> (JoinGround, bool) {
        let ground = self.ground(clock, akey, acc);
        let chatty = link::unproven(&clock.cfg.cluster, clock.now, acc) || self.among_people(acc);
        (ground, chatty)
    }

    /// Joins an in-step account to the cluster of the waves it took part in (creating it).
    fn apply_waves(&mut self, r: &LinkRecord) -> Option<u32> {
        for &(a, _) in &r.accounts {
            self.caught_in_step(a);
        }
        let mut root = 0;
        for k in &r.keys {
            if let Some(c) = self.links.get(k).map(|f| f.cluster) {
                let found = self.clusters.find(c);
                if found != 0 {
                    root = if root == 0 {
                        found
                    } else {
                        self.clusters.union(root, found)
                    };
                }
            }
        }
        if root == 0 {
            if r.founder == 0 {
                return None;
            }
            root = self.clusters.create_seeded(r.seed, r.founder, r.at_ms);
        }
        for &k in &r.keys {
            self.links.insert(k, Fed::new(root, r.at_ms));
            self.clusters.add_link(root, k);
        }
        for &(a, _) in &r.accounts {
            self.join(root, a);
        }
        Some(self.clusters.find(root))
    }

    fn join(&mut self, root: u32, akey: u64) {
        let m = self.members.entry(akey).or_default();
        let current = self.clusters.find(m.cluster);
        if current == root {
            return;
        }
        let root = if current != 0 {
            self.clusters.union(current, root)
        } else {
            root
        };
        if let Some(m) = self.members.get_mut(&akey) {
            m.cluster = root;
        }
        self.clusters.add_member(root, akey);
    }

    /// An account left the shared state.
    pub fn forget(&mut self, key: u64) {
        self.groups.remove(&key);
        if let Some(m) = self.members.remove(&key) {
            if m.cluster != 0 {
                self.clusters.remove_member(m.cluster, key);
            }
        }
    }

    /// Drops the wave links and union-find entries of dissolved clusters.
    pub fn sweep(&mut self, now: i64) {
        self.groups.retain(|_, g| g.at_ms >= now - GROUP_KEEP_MS);
        let clusters = &mut self.clusters;
        let idle = now - self.link_idle_ms;
        self.links
            .retain(|_, f| f.seen_ms >= idle && clusters.find(f.cluster) != 0);
        self.clusters.compact();
    }

    /// Re-evaluates a cluster the event touched, when due, and alerts when it is large,
    /// harvesting and scored high enough.
    fn check_cluster(&mut self, clock: Clock<'_>, root: u32, src: &mut dyn Source, out: &mut Out) {
        let now = clock.now;
        let Some(due) = self.due(clock, root) else {
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

        let mut ev = Evidence {
            stats: MemberStats {
                first_seen_ms: now,
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = clock.cfg;
        let (mut names, examples, suppressed) = gather_members(clock, src, &members, &mut ev);
        for k in &link_keys {
            if let Some(x) = src.explain(*k) {
                x.add_to(cfg, &mut ev);
            }
        }
        let (score, signals) = score(&ev.stats, &ev.links, &cfg.cluster);
        let crossed = signals.iter().filter(|s| s.crossed).count() as u32;
        if let Some(c) = self.clusters.get_mut(root) {
            c.last_eval_ms = now;
            c.last_eval_size = c.members.len();
        }
        out.suppressed += suppressed;
        let stats = &ev.stats;
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
        names.sort_unstable();
        let link_count = self.clusters.get(root).map_or(0, Cluster::link_count);
        let accounts = stats.accounts;
        let window_start_ms = stats
            .first_seen_ms
            .max(now - (cfg.engine.account_idle_secs * 1000) as i64);
        let evidence = cluster_evidence(ev, &examples, &signals, link_count);
        let d = Decision {
            kind: Kind::FakeAccountCluster,
            subject: name,
            accounts: names,
            tier,
            score,
            detected_at_ms: now,
            window_start_ms,
            window_end_ms: now,
            evidence,
            detector_version: self.version.clone(),
        };
        if let Some(c) = self.clusters.get_mut(root) {
            c.dirty = false;
            c.last_alert_ms = now;
            c.last_alert_rank = c.last_alert_rank.max(rank);
            c.last_alert_size = accounts;
        }
        out.decisions.push(d);
    }

    /// Whether a cluster is due for evaluation now, and if so whether an alert would be an
    /// update or a repeat (otherwise only an escalation is alerted).
    fn due(&self, clock: Clock<'_>, root: u32) -> Option<ClusterDue> {
        let cfg = clock.cfg;
        let now = clock.now;
        let update_ms = (cfg.alerts.cluster_update_secs * 1000) as i64;
        let recheck_ms = (cfg.cluster.recheck_secs * 1000) as i64;
        let c = self.clusters.get(root)?;
        if c.members.len() < cfg.cluster.min_cluster_size as usize {
            return None;
        }
        let grown = c.members.len() >= c.last_eval_size + c.last_eval_size.div_ceil(4);
        let eval_due = c.last_eval_ms == i64::MIN
            || (c.dirty && (grown || now - c.last_eval_ms >= recheck_ms));
        let repeat = cfg.alerts.repeat_secs > 0
            && c.last_alert_ms != i64::MIN
            && now - c.last_alert_ms >= (cfg.alerts.repeat_secs * 1000) as i64;
        if !eval_due && !repeat {
            return None;
        }
        let alerted_before = c.last_alert_ms != i64::MIN;
        let update = !alerted_before || (c.dirty && now - c.last_alert_ms >= update_ms);
        // Otherwise still check for an escalation, but not more than every
        // `cluster.recheck_secs`. (A cluster that merged into one never evaluated has an
        // alert time but no evaluation time.)
        if !update && !repeat && c.last_eval_ms != i64::MIN && now - c.last_eval_ms < recheck_ms {
            return None;
        }
        Some(ClusterDue { update, repeat })
    }
}

/// Statistics over a cluster's members that are not allowlisted (bounded by the alert rate,
/// not per event): into `ev.stats`; returns their names, a few example events, and how many
/// were left out for the allowlist.
fn gather_members(
    clock: Clock<'_>,
    src: &mut dyn Source,
    members: &[u64],
    ev: &mut Evidence,
) -> (Vec<String>, Vec<String>, u64) {
    let cfg = clock.cfg;
    let now = clock.now;
    let mut names = Vec::with_capacity(members.len());
    let mut examples = Vec::new();
    let mut suppressed = 0;
    for m in members {
        let s = match src.member(*m, now) {
            None => continue,
            Some(Seen::Allowlisted) => {
                suppressed += 1;
                continue;
            }
            Some(Seen::Member(s)) => s,
        };
        let t = &s.hour;
        let stats = &mut ev.stats;
        stats.accounts += 1;
        if let Some(c) = s.created_ms {
            stats.with_known_age += 1;
            if ((now - c).max(0) as f64) / 86_400_000.0 < cfg.engine.fresh_account_days {
                stats.fresh += 1;
            }
        }
        if let Some((true, p)) = s.step {
            stats.in_step += 1;
            stats.in_step_max_p = stats.in_step_max_p.max(p);
        }
        stats.requests += u64::from(t.requests);
        stats.single_turn += u64::from(t.single_turn);
        stats.reasoning += u64::from(t.reasoning);
        stats.output_tokens += t.output_tokens;
        stats.harvest += u64::from(s.harvest_ever);
        stats.input_tokens += t.input_tokens;
        stats.first_seen_ms = stats.first_seen_ms.min(s.first_seen_ms);
        if examples.len() < cfg.alerts.example_events {
            if let Some(e) = s.example {
                examples.push(e);
            }
        }
        names.push(s.id.to_string());
    }
    (names, examples, suppressed)
}

/// The event time and configuration the assembler decides at.
#[derive(Clone, Copy)]
pub struct Clock<'a> {
    pub cfg: &'a crate::config::Config,
    pub now: i64,
}

/// A cluster member, as a [`Source`] finds it.
pub enum Seen {
    /// The allowlist covers it: left out of the alert.
    Allowlisted,
    Member(MemberSnapshot),
}

/// Where a cluster's evaluation reads its members and what its links show.
pub trait Source {
    /// Member `key` at `now`; `None` if it is not known.
    fn member(&mut self, key: u64, now: i64) -> Option<Seen>;
    /// What link `key` shows; `None` if it is not known.
    fn explain(&self, key: u64) -> Option<Explained>;
}

/// In one process: the accounts and the link detectors' own state, at the evaluation.
pub struct Local<'v, 'a> {
    pub view: &'v mut View<'a>,
    pub detectors: &'v [&'v dyn LinkDetector],
}

impl Source for Local<'_, '_> {
    fn member(&mut self, key: u64, now: i64) -> Option<Seen> {
        let mut acc = self.view.accounts.get_mut(&key)?;
        if self.view.allow.allows(&acc.id, acc.org_id.as_deref(), now) {
            return Some(Seen::Allowlisted);
        }
        Some(Seen::Member(MemberSnapshot::of(
            &mut acc,
            now,
            self.detectors,
        )))
    }

    fn explain(&self, key: u64) -> Option<Explained> {
        self.detectors
            .iter()
            .find_map(|d| d.explain(self.view, key))
    }
}

/// A cluster alert's evidence: a readable summary, the scored signals, the shared values
/// and co-activity waves that link it, and example events.
fn cluster_evidence(
    ev: Evidence,
    examples: &[String],
    signals: &[Signal],
    link_count: u32,
) -> serde_json::Value {
    let stats = &ev.stats;
    let crossed = signals.iter().filter(|s| s.crossed).count() as u32;
    let share = |x: u64| {
        if stats.requests == 0 {
            0.0
        } else {
            x as f64 / stats.requests as f64
        }
    };
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = ev.links.iter().map(|l| l.kind.name()).collect();
        k.sort_unstable();
        k.dedup();
        k
    };
    let mut how = Vec::with_capacity(2);
    if !kinds.is_empty() {
        how.push(format!("shared {}", kinds.join(", ")));
    }
    if !ev.waves.is_empty() {
        how.push(format!(
            "harvesting in step ({} in step, {} co-activity waves)",
            stats.in_step,
            ev.waves.len()
        ));
    }
    let summary = format!(
        "{} accounts linked by {} ({} linking values); {} single-turn, {} reasoning-eliciting, {:.0}k output tokens in the last hour",
        stats.accounts,
        how.join(" and "),
        link_count,
        pct(share(stats.single_turn)),
        pct(share(stats.reasoning)),
        stats.output_tokens as f64 / 1000.0,
    );
    serde_json::json!({
        "summary": summary,
        "cluster_size": stats.accounts,
        "signals": signals.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "signals_crossed": crossed,
        "shared_attributes": ev.shared,
        "co_activity": if ev.waves.is_empty() { serde_json::Value::Null } else { serde_json::json!({
            "waves": ev.waves,
            "members_in_step": stats.in_step,
            "largest_member_chance_p": stats.in_step_max_p,
        }) },
        "linking_values": link_count,
        "output_tokens_1h": stats.output_tokens,
        "example_event_ids": examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_793_577_600_000;

    /// Fresh extraction-like accounts with harvest enough to be named, keyed 1..=n.
    fn named_accounts(n: u64, cfg: &crate::config::Config) -> crate::state::Accounts {
        let mut accounts = crate::state::Accounts::default();
        for k in 1..=n {
            let (mut a, _) = accounts.get_or_insert_with(k, || {
                crate::state::account::Account::new(format!("acct-{k}").into(), T0 - 3_600_000)
            });
            a.created_ms = Some(T0 - 3_600_000);
            a.extraction_like = true;
            a.harvest_ever = cfg.cluster.min_member_harvest;
            a.requests_ever = cfg.cluster.min_member_harvest;
        }
        accounts
    }

    fn value_record(kind: AttrKind, key: u64, account: u64, named: &[u64]) -> LinkRecord {
        let mut r = LinkRecord::new(LinkKind::Value(kind), account, account, T0);
        r.keys.push(key);
        r.founder = key;
        r.seed = key;
        // Facts filled in from the accounts by `after`.
        r.accounts = named.iter().map(|&a| (a, Facts::default())).collect();
        r.merge_only = matches!(kind, AttrKind::Device | AttrKind::Asn);
        r
    }

    /// Runs `f` with an assembler and a view at `T0` of accounts 1..=n that may be named.
    fn with_assembler<R>(
        cfg: &crate::config::Config,
        n: u64,
        f: impl FnOnce(&mut Assembler, &mut View<'_>) -> R,
    ) -> R {
        let mut accounts = named_accounts(n, cfg);
        let mut values = crate::state::Values::default();
        let allow = crate::state::Allowlist::default();
        let mut view = View {
            cfg,
            accounts: &mut accounts,
            values: &mut values,
            allow: &allow,
            now: T0,
        };
        let mut asm = Assembler::new(cfg, 0);
        f(&mut asm, &mut view)
    }

    /// Applies a value record at the view's time, with the facts of the accounts it names.
    fn apply(asm: &mut Assembler, view: &View<'_>, r: &LinkRecord) {
        let LinkKind::Value(kind) = r.kind else {
            unreachable!("value records")
        };
        let mut r = r.clone();
        r.at_ms = view.now;
        r.account_facts = view.facts(r.account);
        for (a, f) in &mut r.accounts {
            *f = view.facts(*a).expect("tracked");
        }
        let clock = Clock {
            cfg: view.cfg,
            now: view.now,
        };
        asm.apply_value(clock, &r, kind, &mut Vec::new());
    }

    /// The cluster of each of accounts 1..=4 after a card founds a cluster of 1-3, their
    /// provider (autonomous system 200) links into it, and account 4's event brings `records`.
    fn after(records: &[LinkRecord]) -> Vec<u32> {
        let cfg = crate::config::Config::default();
        with_assembler(&cfg, 4, |asm, view| {
            for (kind, key) in [(AttrKind::Payment, 100), (AttrKind::Asn, 200)] {
                let mut r = value_record(kind, key, 1, &[1, 2, 3]);
                r.all_holders = true;
                apply(asm, view, &r);
            }
            view.now = T0 + 1_000;
            for r in records {
                apply(asm, view, r);
            }
            (1..=4)
                .map(|a| asm.clusters.find(asm.cluster_of(a)))
                .collect()
        })
    }

    #[test]
    fn an_account_joins_once_its_events_links_together_make_it_eligible_in_any_order() {
        // The provider names account 4; a template links on the same event but names no one
        // (say account 4 harvested too little to be named through it).
        let asn = value_record(AttrKind::Asn, 200, 4, &[4]);
        let template = value_record(AttrKind::Template, 300, 4, &[]);
        // A provider alone names no one.
        let alone = after(std::slice::from_ref(&asn));
        assert_ne!(alone[0], 0);
        assert_eq!(alone[1..3], [alone[0]; 2]);
        assert_eq!(alone[3], 0, "{alone:?}");
        // With the template's link, in whichever order the two records arrive (from two link
        // stages), the account joins the provider's cluster.
        for order in [
            [asn.clone(), template.clone()],
            [template.clone(), asn.clone()],
        ] {
            let c = after(&order);
            assert_ne!(c[0], 0);
            assert_eq!(c, vec![c[0]; 4], "{order:?}");
        }
        // Links of two events of the account, even in the same millisecond, are not pooled.
        let next = LinkRecord {
            event: 5,
            ..template
        };
        let apart = after(&[asn, next]);
        assert_eq!(apart[3], 0, "{apart:?}");
    }

    #[test]
    fn a_living_cluster_forgets_the_values_no_record_mentions_any_more() {
        let mut cfg = crate::config::Config::default();
        cfg.engine.account_idle_secs = 3_600;
        with_assembler(&cfg, 3, |asm, view| {
            // A card, then a network, link the same three accounts.
            for (kind, key) in [(AttrKind::Payment, 100), (AttrKind::Ip, 300)] {
                let mut r = value_record(kind, key, 1, &[1, 2, 3]);
                r.all_holders = true;
                apply(asm, view, &r);
            }
            assert!(asm.links.contains_key(&100) && asm.links.contains_key(&300));
            // Two hours on, only the network still links (its records keep mentioning it).
            view.now = T0 + 7_200_000;
            apply(asm, view, &value_record(AttrKind::Ip, 300, 1, &[]));
            asm.sweep(view.now);
            assert!(!asm.links.contains_key(&100), "the card is forgotten");
            assert!(asm.links.contains_key(&300), "the network is not");
            assert_ne!(asm.cluster_of(1), 0, "the cluster lives on");
        });
    }

    #[test]
    fn union_keeps_the_older_id_and_all_members() {
        let mut c = Clusters::default();
        let a = c.create_seeded(1, 1, T0);
        let b = c.create_seeded(2, 2, T0 + 10);
        for m in 0..10 {
            c.add_member(a, m);
        }
        for m in 5..30 {
            c.add_member(b, m);
        }
        let name_a = c.get(a).expect("a").name.clone();
        let r = c.union(b, a);
        assert_eq!(r, a);
        assert_eq!(c.find(b), a);
        let root = c.get(r).expect("root");
        assert_eq!(root.name, name_a);
        assert_eq!(root.members.len(), 30);
        assert_eq!(c.len(), 1);
        for m in 0..30 {
            c.remove_member(b, m);
        }
        assert!(c.is_empty());
        c.compact();
        assert_eq!(c.find(a), 0);
    }

    #[test]
    fn a_long_lived_cluster_keeps_its_first_and_its_latest_links_as_evidence() {
        // A hydra behind a rotating proxy: 2,000 addresses link it over its life, each
        // released soon after; only the latest are still held when it next alerts.
        let mut c = Clusters::default();
        let a = c.create_seeded(1, 1, T0);
        for k in 2..=2_000u64 {
            c.add_link(a, k);
            c.add_link(a, k - 1);
        }
        let root = c.get(a).expect("root");
        assert_eq!(root.links.len(), MAX_LINKS_KEPT);
        for k in 1..=FOUNDING_LINKS as u64 {
            assert!(root.links.contains(&k), "founding link {k}");
        }
        let recent = (MAX_LINKS_KEPT - FOUNDING_LINKS) as u64;
        for k in 2_001 - recent..=2_000 {
            assert!(root.links.contains(&k), "recent link {k}: {:?}", root.links);
        }
        // Distinct links, not every record that repeated one.
        let n = f64::from(root.link_count());
        assert!(
            (1_500.0..2_700.0).contains(&n),
            "{n} distinct links of 2,000"
        );
        let b = c.create_seeded(2, 5_000, T0 + 10);
        assert_eq!(c.get(b).expect("b").link_count(), 1);
        for k in 5_001..5_010u64 {
            c.add_link(b, k);
        }
        assert_eq!(c.get(b).expect("b").link_count(), 10);
    }
}
