//! `fake_account_cluster`: the cluster assembler. It consumes the link detectors'
//! [`LinkRecord`]s and joins the accounts they name into clusters (union-find). A cluster keeps
//! the id of its oldest part as it grows and merges, so replacement accounts join the existing
//! alert. It owns the clusters, their cadence (evaluation, updates, repeats) and their evidence,
//! for which it asks each link detector to explain its links and members.

use nohash_hasher::{IntMap, IntSet};
use xxhash_rust::xxh3::xxh3_64;

use super::link::Link;
use super::{pct, LinkDetector, LinkKind, LinkRecord, Observed, Out, Signal, View};
use crate::alert::{Decision, Kind, Tier};
use crate::config::ClusterConfig;
use crate::state::account::Account;
use crate::state::attribute::AttrKind;

/// One cluster (a union-find root).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Stable, public id.
    pub name: String,
    pub founded_ms: i64,
    pub members: IntSet<u64>,
    /// Attribute keys that linked accounts into this cluster (first ones, for evidence).
    pub links: Vec<u64>,
    pub link_count: u32,
    /// Membership changed since the last alert.
    pub dirty: bool,
    pub last_eval_ms: i64,
    pub last_eval_size: usize,
    pub last_alert_ms: i64,
    pub last_alert_rank: u8,
    pub last_alert_size: usize,
}

const MAX_LINKS_KEPT: usize = 16;

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
                links: vec![link_key],
                link_count: 1,
                dirty: true,
                last_eval_ms: i64::MIN,
                last_eval_size: 0,
                last_alert_ms: i64::MIN,
                last_alert_rank: 0,
                last_alert_size: 0,
            },
        );
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
                if k.links.len() < MAX_LINKS_KEPT && !k.links.contains(&l) {
                    k.links.push(l);
                }
            }
            k.link_count = k.link_count.saturating_add(g.link_count);
            k.dirty = true;
            k.last_alert_ms = k.last_alert_ms.max(g.last_alert_ms);
            k.last_alert_rank = k.last_alert_rank.max(g.last_alert_rank);
        }
        keep
    }

    /// Records another linking attribute of a cluster.
    pub fn add_link(&mut self, root: u32, link_key: u64) {
        if let Some(c) = self.roots.get_mut(&root) {
            if !c.links.contains(&link_key) {
                c.link_count = c.link_count.saturating_add(1);
                if c.links.len() < MAX_LINKS_KEPT {
                    c.links.push(link_key);
                }
            }
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

/// The cluster assembler. Which cluster each account is in is kept in the account record
/// (`Account::cluster`), which cluster a value feeds on the value (`Attribute::cluster`); which
/// cluster a co-activity wave feeds is kept here.
pub struct Assembler {
    clusters: Clusters,
    /// Cluster of each co-activity wave link.
    waves: IntMap<u64, u32>,
    touched: Vec<u32>,
    version: String,
}

impl Assembler {
    pub fn new(config_hash: u64) -> Self {
        Self {
            clusters: Clusters::default(),
            waves: IntMap::default(),
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
        view: &mut View<'_>,
        obs: &Observed<'_>,
        records: &[LinkRecord],
        explain: &[&dyn LinkDetector],
        out: &mut Out,
    ) {
        if !view.cfg.cluster.enabled {
            return;
        }
        let own = view.accounts.get(&obs.account).map_or(0, |a| a.cluster);
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        let mut own_done = false;
        for r in records {
            let root = match r.kind {
                LinkKind::Value(_) => self.apply_value(view, r),
                LinkKind::Wave => {
                    if !own_done {
                        self.touch_own(own, &mut touched);
                        own_done = true;
                    }
                    self.apply_waves(view, r)
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
            self.check_cluster(view, root, explain, out);
        }
        self.touched = touched;
    }

    fn touch_own(&mut self, own: u32, touched: &mut Vec<u32>) {
        let root = self.clusters.find(own);
        if root != 0 && !touched.contains(&root) {
            touched.push(root);
        }
    }

    /// Joins the accounts a shared value names. Returns the cluster root.
    fn apply_value(&mut self, view: &mut View<'_>, r: &LinkRecord) -> Option<u32> {
        let key = r.founder;
        let root = self.clusters.find(r.cluster);
        if root != 0 {
            // An established link: only the current account may be new.
            for &a in &r.accounts {
                self.join(view, root, a);
            }
            return Some(self.clusters.find(root));
        }
        // A new link: every named holder joins, merging their clusters.
        let mut joining = Vec::with_capacity(r.accounts.len());
        let mut prior = Vec::new();
        for &m in &r.accounts {
            if let Some(acc) = view.accounts.get(&m) {
                if r.merge_only && acc.cluster == 0 {
                    continue;
                }
                joining.push(m);
                if acc.cluster != 0 {
                    prior.push(acc.cluster);
                }
            }
        }
        if joining.is_empty() {
            return None;
        }
        let mut root = self.clusters.create_seeded(r.seed, key, r.at_ms);
        for p in prior {
            root = self.clusters.union(root, p);
        }
        self.clusters.add_link(root, key);
        if let Some(g) = view.values.get_mut(key).and_then(|h| h.shared_mut()) {
            g.cluster = root;
        }
        for m in joining {
            self.join(view, root, m);
        }
        Some(self.clusters.find(root))
    }

    /// Joins an in-step account to the cluster of the waves it took part in (creating it).
    fn apply_waves(&mut self, view: &mut View<'_>, r: &LinkRecord) -> Option<u32> {
        let mut root = 0;
        for k in &r.keys {
            if let Some(&c) = self.waves.get(k) {
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
            self.waves.insert(k, root);
            self.clusters.add_link(root, k);
        }
        for &a in &r.accounts {
            self.join(view, root, a);
        }
        Some(self.clusters.find(root))
    }

    fn join(&mut self, view: &mut View<'_>, root: u32, akey: u64) {
        let Some(mut acc) = view.accounts.get_mut(&akey) else {
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

    /// An account left the shared state.
    pub fn forget(&mut self, key: u64, acc: &Account) {
        if acc.cluster != 0 {
            self.clusters.remove_member(acc.cluster, key);
        }
    }

    /// Drops the wave links and union-find entries of dissolved clusters.
    pub fn sweep(&mut self) {
        let clusters = &mut self.clusters;
        self.waves.retain(|_, c| clusters.find(*c) != 0);
        self.clusters.compact();
    }

    /// Re-evaluates a cluster the event touched, when due, and alerts when it is large,
    /// harvesting and scored high enough.
    fn check_cluster(
        &mut self,
        view: &mut View<'_>,
        root: u32,
        explain: &[&dyn LinkDetector],
        out: &mut Out,
    ) {
        let now = view.now;
        let Some(due) = self.due(view, root) else {
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
        let (mut names, examples, suppressed) = gather_members(view, &members, explain, &mut ev);
        for k in &link_keys {
            for d in explain {
                if d.explain_link(view, *k, &mut ev) {
                    break;
                }
            }
        }
        let cfg = view.cfg;
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
        let link_count = self.clusters.get(root).map_or(0, |c| c.link_count);
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
    fn due(&self, view: &View<'_>, root: u32) -> Option<ClusterDue> {
        let cfg = view.cfg;
        let now = view.now;
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
    view: &mut View<'_>,
    members: &[u64],
    explain: &[&dyn LinkDetector],
    ev: &mut Evidence,
) -> (Vec<String>, Vec<String>, u64) {
    let cfg = view.cfg;
    let now = view.now;
    let mut names = Vec::with_capacity(members.len());
    let mut examples = Vec::new();
    let mut suppressed = 0;
    for m in members {
        let Some(mut acc) = view.accounts.get_mut(m) else {
            continue;
        };
        if view.allow.allows(&acc.id, acc.org_id.as_deref(), now) {
            suppressed += 1;
            continue;
        }
        let t = acc.hour.totals(now);
        let stats = &mut ev.stats;
        stats.accounts += 1;
        if let Some(d) = acc.age_days(now) {
            stats.with_known_age += 1;
            if d < cfg.engine.fresh_account_days {
                stats.fresh += 1;
            }
        }
        for d in explain {
            d.explain_member(&acc, ev);
        }
        let stats = &mut ev.stats;
        stats.requests += u64::from(t.requests);
        stats.single_turn += u64::from(t.single_turn);
        stats.reasoning += u64::from(t.reasoning);
        stats.output_tokens += t.output_tokens;
        stats.harvest += u64::from(acc.harvest_ever);
        stats.input_tokens += t.input_tokens;
        stats.first_seen_ms = stats.first_seen_ms.min(acc.first_seen_ms);
        if examples.len() < cfg.alerts.example_events {
            if let Some(e) = acc.example_ids().pop() {
                examples.push(e);
            }
        }
        names.push(acc.id.to_string());
    }
    (names, examples, suppressed)
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
}
