//! `fake_account_cluster`: many accounts operated together.
//!
//! A shared attribute value *links* the accounts holding it when its traffic looks operated
//! rather than organic: enough accounts, API-style (single-turn) extraction-like traffic, no
//! verified organisation behind it, and coordination that fits the kind of value (fresh
//! accounts sharing one card, a proxy IP or a custom client; accounts firing a template in
//! lockstep). A carrier NAT IP or a popular SDK fingerprint carries mostly organic traffic and
//! never links; a card shared by a handful of fresh extraction accounts does.
//!
//! Linked accounts are joined into clusters (union-find). A cluster keeps the id of its oldest
//! part as it grows and merges, so replacement accounts join the existing alert.

use compact_str::CompactString;
use nohash_hasher::{IntMap, IntSet};
use xxhash_rust::xxh3::xxh3_64;

use super::Signal;
use crate::config::ClusterConfig;
use crate::engine::attribute::{AttrKind, Attribute};

/// The evidence that makes one attribute value a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub kind: AttrKind,
    pub members: usize,
    pub purity: f64,
    pub single_turn: f64,
    pub reasoning: f64,
    pub output_ratio: f64,
    pub fresh: f64,
    pub org: f64,
    pub synchrony: f64,
    pub creation_spread_hours: Option<f64>,
    pub accounts_per_network: Option<f64>,
}

impl Link {
    pub fn to_json(&self, value: &str) -> serde_json::Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        serde_json::json!({
            "kind": self.kind.name(),
            "value": value,
            "accounts": self.members,
            "extraction_like_account_share": r(self.purity),
            "single_turn_share": r(self.single_turn),
            "reasoning_prompt_share": r(self.reasoning),
            "output_input_ratio": r(self.output_ratio),
            "fresh_account_share": r(self.fresh),
            "verified_org_share": r(self.org),
            "synchrony": r(self.synchrony),
            "creation_spread_hours": self.creation_spread_hours.map(r),
            "accounts_per_network": self.accounts_per_network.map(r),
        })
    }
}

fn min_members(kind: AttrKind, cfg: &ClusterConfig) -> u32 {
    match kind {
        AttrKind::Ip => cfg.min_members_ip,
        AttrKind::IpPrefix => cfg.min_members_ip_prefix,
        AttrKind::Device => cfg.min_members_device,
        AttrKind::Payment => cfg.min_members_payment,
        AttrKind::EmailDomain => cfg.min_members_email_domain,
        AttrKind::Template => cfg.min_members_template,
        AttrKind::Creation => cfg.min_members_creation,
        AttrKind::Asn => cfg.min_members_asn,
    }
}

/// What an attribute value shows now, strong or not.
pub fn evidence(attr: &Attribute, now_ms: i64, cfg: &ClusterConfig) -> Link {
    let horizon_ms = cfg.horizon_secs as f32 * 1000.0;
    let bin_ms = (cfg.sync_bin_secs * 1000) as i64;
    Link {
        kind: attr.kind,
        members: attr.members.len(),
        purity: attr.purity(),
        single_turn: attr.share(attr.single_turn),
        reasoning: attr.share(attr.reasoning),
        output_ratio: attr.output_ratio(),
        fresh: attr.share(attr.fresh),
        org: attr.share(attr.org),
        synchrony: attr.synchrony(now_ms, horizon_ms, bin_ms),
        creation_spread_hours: attr.creation_spread_hours(),
        accounts_per_network: attr.accounts_per_network(),
    }
}

/// Whether `attr` links its accounts now; the evidence if it does.
pub fn link(attr: &Attribute, now_ms: i64, cfg: &ClusterConfig) -> Option<Link> {
    let min = min_members(attr.kind, cfg) as usize;
    let members = attr.members.len();
    // Cheap rejections first: this runs for every value of every event.
    if members < min || attr.requests < min as f32 || attr.purity() < cfg.min_member_purity {
        return None;
    }
    // Material harvest through the value within the horizon (as many harvesting requests
    // as the value needs holders), judged on absolute harvest, so chat mixed in as cover
    // neither opens nor closes the link, and a swarm of slow accounts still counts.
    if attr.harvest < min as f32 {
        return None;
    }
    let l = evidence(attr, now_ms, cfg);
    if l.org > cfg.max_org_share {
        return None;
    }
    if matches!(attr.kind, AttrKind::Device | AttrKind::EmailDomain)
        && l.accounts_per_network.unwrap_or(0.0) < cfg.min_accounts_per_network
    {
        // Spread across as many networks as accounts: a popular client or mail provider.
        return None;
    }
    let lockstep = l.synchrony >= cfg.min_synchrony;
    let coordinated = match attr.kind {
        // One card paying for many API-extraction accounts is itself coordination.
        AttrKind::Payment => l.fresh >= cfg.min_fresh_share || members >= 2 * min || lockstep,
        // Templates are shared by unrelated people (starter kits, SDK examples, app
        // wrappers): only lockstep timing, or a crowd of fresh accounts that never converse,
        // makes them a link.
        AttrKind::Template => {
            lockstep || (l.fresh >= 0.8 && l.single_turn >= 0.95 && members >= 2 * min)
        }
        // A venue's network or a sign-up rush carries people talking to the model: a shared
        // network or creation minute links only traffic that is overwhelmingly single-turn.
        AttrKind::Ip | AttrKind::IpPrefix | AttrKind::Creation | AttrKind::Asn => {
            (l.fresh >= cfg.min_fresh_share || lockstep)
                && l.single_turn >= cfg.min_single_turn_share
        }
        _ => l.fresh >= cfg.min_fresh_share || lockstep,
    };
    coordinated.then_some(l)
}

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

    /// A new cluster founded by attribute `link_key` with value `value` of `kind`.
    pub fn create(
        &mut self,
        kind: AttrKind,
        value: &CompactString,
        link_key: u64,
        now_ms: i64,
    ) -> u32 {
        let h = xxh3_64(value.as_bytes()) ^ (kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.create_seeded(h, link_key, now_ms)
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
            72.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::attribute::Touch;

    const T0: i64 = 1_793_577_600_000;

    fn attr_with(kind: AttrKind, accounts: u64, t: Touch) -> Attribute {
        let mut a = Attribute::new(kind, "v".into(), T0);
        for i in 0..accounts {
            a.add_member(i, t.single_turn && t.reasoning && !t.org);
            for k in 0..5 {
                a.touch(T0 + (i * 5 + k) as i64 * 7_001, &t, 3_600_000.0, 5_000);
            }
        }
        a
    }

    #[test]
    fn card_shared_by_fresh_extraction_accounts_links() {
        let cfg = ClusterConfig::default();
        let t = Touch {
            single_turn: true,
            harvest: true,
            reasoning: true,
            fresh: true,
            new_account_bin: true,
            ..Default::default()
        };
        let a = attr_with(AttrKind::Payment, 5, t);
        assert!(link(&a, T0 + 200_000, &cfg).is_some());
        // The same card carrying no harvest (copies of one prompt) links nobody.
        let a = attr_with(
            AttrKind::Payment,
            5,
            Touch {
                harvest: false,
                ..t
            },
        );
        assert!(link(&a, T0 + 200_000, &cfg).is_none());
        let a = attr_with(AttrKind::Payment, 5, t);
        assert!(link(&a, T0 + 200_000, &cfg).is_some());
    }

    #[test]
    fn organic_or_org_traffic_does_not_link() {
        let cfg = ClusterConfig::default();
        let chat = Touch {
            single_turn: false,
            reasoning: true,
            fresh: true,
            new_account_bin: true,
            ..Default::default()
        };
        assert!(link(&attr_with(AttrKind::Ip, 50, chat), T0, &cfg).is_none());
        let org = Touch {
            single_turn: true,
            reasoning: true,
            fresh: true,
            org: true,
            new_account_bin: true,
            ..Default::default()
        };
        assert!(link(&attr_with(AttrKind::Payment, 50, org), T0, &cfg).is_none());
        let old = Touch {
            single_turn: true,
            reasoning: true,
            fresh: false,
            new_account_bin: true,
            ..Default::default()
        };
        assert!(link(&attr_with(AttrKind::Ip, 50, old), T0 + 1_000_000, &cfg).is_none());
        let few = Touch {
            single_turn: true,
            reasoning: true,
            fresh: true,
            new_account_bin: true,
            ..Default::default()
        };
        assert!(link(&attr_with(AttrKind::Device, 3, few), T0, &cfg).is_none());
    }

    #[test]
    fn union_keeps_the_older_id_and_all_members() {
        let mut c = Clusters::default();
        let a = c.create(AttrKind::Payment, &"p".into(), 1, T0);
        let b = c.create(AttrKind::Ip, &"i".into(), 2, T0 + 10);
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
