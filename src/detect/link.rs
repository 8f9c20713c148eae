//! The attribute-link detector: a shared attribute value *links* the accounts holding it when
//! its traffic looks operated rather than organic: enough accounts, API-style (single-turn)
//! extraction-like traffic, no verified organisation behind it, and coordination that fits the
//! kind of value (fresh accounts sharing one card, a proxy IP or a custom client; accounts
//! firing a template in lockstep). A carrier NAT IP or a popular SDK fingerprint carries mostly
//! organic traffic and never links; a card shared by a handful of fresh extraction accounts
//! does. Its state is the attribute index's aggregates (shared state); it decides which
//! accounts each linking value names and hands that to the cluster assembler as a
//! [`LinkRecord`].

use nohash_hasher::IntMap;
use xxhash_rust::xxh3::xxh3_64;

use super::{cohort, facts, Explained, LinkDetector, LinkKind, LinkRecord, Observed, View};
use crate::config::ClusterConfig;
use crate::state::account::{Account, Facts};
use crate::state::attribute::{AttrKind, Attribute};
use crate::state::Accounts;

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
    if members < min || attr.purity() < cfg.min_member_purity {
        return None;
    }
    // Material harvest within the horizon (as many harvesting requests as the value needs
    // holders), judged on absolute harvest, so chat mixed in as cover neither opens nor
    // closes the link: either through the value, or carried by the holders that took it up
    // (a slow swarm rotating over many networks leaves little on any one of them).
    if attr.harvest.max(attr.joined_harvest) < min as f32 {
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
            lockstep
                || (l.fresh >= cfg.template_crowd_fresh_share
                    && l.single_turn >= cfg.template_crowd_single_turn_share
                    && members >= 2 * min)
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

/// Public-id seed of a cluster founded by a value.
fn seed(kind: AttrKind, value: &str) -> u64 {
    xxh3_64(value.as_bytes()) ^ (kind as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Most terms summed for a creation minute's Poisson tail.
const MAX_TAIL_TERMS: u32 = 256;

/// Hour key of an account creation time.
fn creation_hour(created_ms: i64) -> i64 {
    created_ms.div_euclid(3_600_000)
}

/// The attribute-link detector. Its state beyond the index is the sign-up baseline, and on
/// each value whether it has named its holders yet (`Attribute::founded`) and whether it was
/// last reported a crowd (`Attribute::crowd`).
#[derive(Default)]
pub struct ValueLinks {
    /// Tracked accounts by creation hour: this stream's own sign-up rate around a creation
    /// minute, against which a minute's holders are judged. Bounded by the tracked accounts.
    sign_ups: IntMap<i64, u32>,
}

impl ValueLinks {
    /// An account left the shared state.
    pub fn forget(&mut self, acc: &Account) {
        if let Some(c) = acc.created_ms {
            let h = creation_hour(c);
            if let Some(n) = self.sign_ups.get_mut(&h) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.sign_ups.remove(&h);
                }
            }
        }
    }

    /// Whether as many holders as `g` has, created in one window (a minute unless
    /// `cluster.creation_bucket_secs` says otherwise), are improbable given the tracked
    /// accounts created in the rest of that hour. In a sign-up rush (a hackathon's
    /// morning, a launch, a swarm's steady sign-ups) many unrelated accounts share every
    /// minute, and a minute shared by chance names bystanders; a burst in a quiet hour is rare.
    ///
    /// Returns whether the minute links and whether it may name an account alone: a minute can
    /// be rare as a whole and still hold people who signed up in it by chance, as many as the
    /// hour's background rate; if they could be more than
    /// `cluster.creation_minute_max_bystander_share` of its holders, it only merges clusters
    /// and adds to a second value.
    fn rare_minute(&self, g: &Attribute, cfg: &ClusterConfig) -> (bool, bool) {
        let Some(h) = g.creation_mean_hours() else {
            return (true, true);
        };
        let k = g.members.len() as u32;
        let hour = self.sign_ups.get(&(h.floor() as i64)).copied().unwrap_or(0);
        // The rest of the hour's windows (`cluster.creation_bucket_secs`), at the rate the
        // tracked accounts were created in them.
        let others = cfg.creation_buckets_per_hour().saturating_sub(1).max(1);
        let background = f64::from(hour.saturating_sub(k)) / f64::from(others);
        // The tail at a capped count is no smaller, so the cap keeps the cost per event flat
        // at the price of calling a huge minute in a huge hour common.
        let rare = cohort::poisson_tail(k.min(MAX_TAIL_TERMS), background)
            <= cfg.creation_minute_max_chance;
        let alone = background <= cfg.creation_minute_max_bystander_share * f64::from(k.max(1));
        (rare, alone)
    }

    /// The harvest an account must have sent itself to be named through `g`. A shared network,
    /// ASN or creation minute is shared by circumstance: a person who signed up in a burst's
    /// minute, or sits on its network, harvests a small fraction of what the operated accounts
    /// holding it do on average (`cluster.min_member_harvest_share`).
    fn bystander_floor(c: &ClusterConfig, g: &Attribute) -> f32 {
        if weak_link(g.kind) {
            let per_holder = g.harvest / g.members.len().max(1) as f32;
            per_holder * c.min_member_harvest_share as f32
        } else {
            0.0
        }
    }

    /// The holders of a value that a new link names, in key order: those that carry evidence
    /// of their own, harvested enough not to be bystanders, and, for a link by circumstance,
    /// have no person's chat history and were active long enough to show it (see
    /// [`unproven`]). Which of them join, the assembler decides (see
    /// [`super::cluster::Assembler`]).
    fn named_holders(
        accounts: &Accounts,
        c: &ClusterConfig,
        now: i64,
        g: &Attribute,
        circumstantial: bool,
    ) -> Vec<(u64, Facts)> {
        let floor = Self::bystander_floor(c, g);
        let mut named = Vec::new();
        for m in g.members.sorted() {
            if let Some(acc) = facts(accounts, m) {
                if acc.may_be_named(c.min_member_harvest)
                    && acc.harvest_ever as f32 >= floor
                    && !(circumstantial && unproven(c, now, &acc))
                {
                    named.push((m, acc));
                }
            }
        }
        named
    }
}

/// Whether a weak link (a shared network or creation minute) may not name `acc` on what the
/// account itself shows: a person's chat history, or too short an activity for its lack of one
/// to say anything (`cluster.weak_link_min_active_secs`). (Whether it sits on a network among
/// people the assembler knows from [`LinkKind::Crowd`] records.)
pub fn unproven(c: &ClusterConfig, now: i64, acc: &Facts) -> bool {
    acc.chat_share() > c.max_member_chat_share
        || now - acc.first_seen_ms < (c.weak_link_min_active_secs * 1000) as i64
}

/// Whether a network's holders are a crowd of people: `cluster.crowd_min_accounts` holders
/// whose traffic would not link it, because it converses too much
/// (`cluster.min_single_turn_share`) or too few holders are extraction-like
/// (`cluster.min_member_purity`). In a venue's first hour nobody converses much yet, but many of
/// its people are not extraction-like. (A hydra's busy proxy, full of replacement accounts that
/// have not harvested yet, can pass for one: its accounts are then named through cards,
/// devices, lockstep templates or waves, not the network.)
pub fn crowd(g: &Attribute, c: &ClusterConfig) -> bool {
    g.members.len() >= c.crowd_min_accounts as usize
        && (g.share(g.single_turn) < c.min_single_turn_share || g.purity() < c.min_member_purity)
}

impl LinkDetector for ValueLinks {
    fn observe(&mut self, view: &mut View<'_>, obs: &Observed<'_>, links: &mut Vec<LinkRecord>) {
        let c = &view.cfg.cluster;
        if !c.enabled {
            return;
        }
        let akey = obs.account;
        let now = view.now;
        // What the account shows of its own: evidence enough to be named at all, and its
        // harvest (against each value's bystander floor).
        let own = view.facts(akey);
        if let Some(acc) = &own {
            if let (1, Some(created)) = (acc.requests_ever, acc.created_ms) {
                *self.sign_ups.entry(creation_hour(created)).or_insert(0) += 1;
            }
        }
        let scheduled = || {
            view.accounts
                .get(&akey)
                .is_some_and(|a| super::cohort::on_schedule(view.cfg, &a, now))
        };
        if obs.in_burst && !scheduled() {
            links.push(LinkRecord::new(LinkKind::Sync, obs.event, akey, now));
        }
        // Records that the assembler must know before this event's links: networks whose
        // holders became, or stopped being, a crowd of people go before them.
        let mut facts_end = links.len();
        for &(key, kind) in obs.values {
            let Some(g) = view.values.get_mut(key).and_then(|h| h.shared_mut()) else {
                continue;
            };
            if kind == AttrKind::Ip {
                let is = crowd(g, c);
                if is != g.crowd {
                    g.crowd = is;
                    let mut r = LinkRecord::new(LinkKind::Crowd, obs.event, akey, now);
                    r.keys.push(key);
                    r.crowd = is;
                    links.insert(facts_end, r);
                    facts_end += 1;
                }
            }
            let Some(l) = link(g, now, c) else {
                continue;
            };
            let (links_now, alone) = match kind {
                AttrKind::Creation => self.rare_minute(g, c),
                // A block whose holders crowd onto one of its addresses: that address links on
                // its own, and the prefix would add only its neighbours.
                AttrKind::IpPrefix => {
                    (true, g.address_concentration() < c.prefix_max_address_share)
                }
                _ => (true, !client_or_provider(kind)),
            };
            if !links_now {
                continue;
            }
            let circumstantial =
                weak_link(kind) || (kind == AttrKind::Template && l.synchrony < c.min_synchrony);
            // A new link names every holder that may be named, a founded one only the
            // current account (other holders join as they act).
            let all_holders = !g.founded;
            let accounts = if all_holders {
                Self::named_holders(view.accounts, c, now, g, circumstantial)
            } else if let Some(acc) = own.filter(|a| {
                a.may_be_named(c.min_member_harvest)
                    && a.harvest_ever as f32 >= Self::bystander_floor(c, g)
            }) {
                vec![(akey, acc)]
            } else {
                Vec::new()
            };
            let mut r = LinkRecord::new(LinkKind::Value(kind), obs.event, akey, now);
            r.account_facts = own;
            r.keys.push(key);
            r.all_holders = all_holders;
            r.founder = key;
            r.seed = seed(kind, &g.value);
            // A client fingerprint (a browser's TLS fingerprint) or an autonomous system (a
            // cloud provider) can be everyday and still look pure while a swarm dominates it:
            // on its own it names no one new. It merges clusters its holders are already in;
            // others need a second value. So does a creation minute that may hold people who
            // signed up in it by chance, and a /24 or /64 whose holders crowd onto one address
            // (`cluster.prefix_max_address_share`).
            r.merge_only = !alone;
            r.circumstantial = circumstantial;
            let founds = all_holders && !accounts.is_empty();
            r.accounts = accounts;
            links.push(r);
            if founds {
                g.founded = true;
            }
        }
    }

    fn explain(&self, view: &View<'_>, key: u64) -> Option<Explained> {
        let g = view.values.get(key).and_then(|h| h.shared())?;
        Some(Explained::Value {
            link: evidence(g, view.now, &view.cfg.cluster),
            value: g.value.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::attribute::Touch;

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
}
