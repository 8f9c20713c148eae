//! The cluster stage: assembles clusters from the link shards' records alone (see
//! [`crate::detect::Shard`]). The shards own the attribute values and co-activity bins and
//! decide every link; a record carries snapshots of the accounts it mentions and of the links
//! it names, so that this stage explains and scores a cluster without the shards' state.

use std::sync::Arc;

use nohash_hasher::IntMap;

use super::{Stats, SWEEP_EVERY_MS};
use crate::alert::{valve, Alert, Kind};
use crate::config::ValidConfig;
use crate::control::LiveAllowlist;
use crate::detect::cluster::{Assembler, Clock, Seen, Source};
use crate::detect::{Emitted, Explained, LinkKind, MemberSnapshot, Out};
use crate::state::attribute::AttrKind;
use crate::state::Allowlist;

/// The latest snapshot of each account and link the records mentioned, with the allowlist:
/// what a cluster's evaluation reads here.
#[derive(Default)]
struct Snapshots {
    members: IntMap<u64, MemberSnapshot>,
    links: IntMap<u64, (Explained, i64)>,
    allow: Allowlist,
}

impl Snapshots {
    fn take(&mut self, e: &mut Emitted, at_ms: i64) {
        for (k, mut s) in e.members.drain(..) {
            if let Some(old) = self.members.get(&k) {
                if old.at_ms > s.at_ms {
                    continue;
                }
                // Co-activity is known only on the shard that owns it.
                s.step = s.step.or(old.step);
            }
            self.members.insert(k, s);
        }
        for (k, x) in e.explained.drain(..) {
            self.links.insert(k, (x, at_ms));
        }
    }
}

impl Source for Snapshots {
    fn member(&mut self, key: u64, now: i64) -> Option<Seen> {
        let s = self.members.get(&key)?;
        if self.allow.allows(&s.id, s.org.as_deref(), now) {
            return Some(Seen::Allowlisted);
        }
        let mut s = s.clone();
        if now - s.at_ms >= 3_600_000 {
            // Its trailing hour has passed since.
            s.hour = Default::default();
        }
        Some(Seen::Member(s))
    }

    fn explain(&self, key: u64) -> Option<Explained> {
        self.links.get(&key).map(|(x, _)| x.clone())
    }
}

/// Where a value of `kind` comes among the values an event carries (see
/// `engine::carry_values`).
fn carried_order(kind: AttrKind) -> u8 {
    match kind {
        AttrKind::Ip => 0,
        AttrKind::IpPrefix => 1,
        AttrKind::Asn => 2,
        AttrKind::Device => 3,
        AttrKind::Payment => 4,
        AttrKind::EmailDomain => 5,
        AttrKind::Template => 6,
        AttrKind::Creation => 7,
    }
}

/// The cluster stage's engine: link records in, `fake_account_cluster` alerts out, through its
/// own safety valve. Event time is the records'.
pub struct ClusterStage {
    cfg: Arc<ValidConfig>,
    assembler: Assembler,
    snapshots: Snapshots,
    decided: Out,
    valve: valve::Valve,
    watermark: i64,
    next_sweep_ms: i64,
    stats: Stats,
    /// The event time whose events [`ClusterStage::take_part`] is gathering, and their
    /// accounts with the records gathered for each (`spare`: emptied ones, for reuse), and
    /// where each account's are in `parts` (so a whole-second-stamped log at a high rate
    /// costs one lookup per part, not a scan of the second's accounts).
    pending: Option<i64>,
    parts: Vec<(u64, Emitted)>,
    part_of: IntMap<u64, usize>,
    spare: Vec<Emitted>,
}

impl ClusterStage {
    pub fn new(cfg: Arc<ValidConfig>) -> Self {
        let allow = Allowlist::from_config(&cfg);
        Self {
            assembler: Assembler::new(&cfg.raw, cfg.hash),
            snapshots: Snapshots {
                allow,
                ..Default::default()
            },
            decided: Out::default(),
            valve: valve::Valve::new(&cfg.raw.alerts),
            watermark: i64::MIN,
            next_sweep_ms: i64::MIN,
            stats: Stats::default(),
            pending: None,
            parts: Vec::new(),
            part_of: IntMap::default(),
            spare: Vec::new(),
            cfg,
        }
    }

    /// Also consults `live` (the control topic's entries) before alerting.
    pub fn with_live_allowlist(mut self, live: LiveAllowlist) -> Self {
        self.snapshots.allow.live = Some(live);
        self
    }

    /// Takes in the records the link shards emitted on one event of account `account` at
    /// `at_ms` (all of them, from every shard), and appends the alerts they caused to `out`.
    pub fn take(&mut self, account: u64, at_ms: i64, emitted: &mut Emitted, out: &mut Vec<Alert>) {
        let now = self.watermark.max(at_ms);
        self.watermark = now;
        if now >= self.next_sweep_ms {
            self.sweep(now);
            self.next_sweep_ms = now + SWEEP_EVERY_MS;
        }
        self.snapshots.take(emitted, now);
        // In the order one engine decides them: facts first (an account caught in step, a
        // crowd), then value links in the order the event carries its values, then waves.
        // Which holders a value that only merges may name depends on the clusters the
        // event's other links put them in first.
        emitted.records.sort_by_key(|r| match r.kind {
            LinkKind::Sync | LinkKind::Crowd => 0,
            LinkKind::Value(kind) => 1 + carried_order(kind),
            LinkKind::Wave => 10,
        });
        let clock = Clock {
            cfg: &self.cfg.raw,
            now,
        };
        self.assembler.assemble(
            clock,
            account,
            &emitted.records,
            &mut self.snapshots,
            &mut self.decided,
        );
        emitted.records.clear();
        self.stats.alerts_suppressed_allowlist += std::mem::take(&mut self.decided.suppressed);
        for mut d in self.decided.decisions.drain(..) {
            let limited = self.valve.apply(&mut d);
            if d.kind == Kind::FakeAccountCluster {
                self.stats.alerts_cluster += 1;
                self.stats.alerts_rate_limited_cluster += u64::from(limited);
            }
            out.push(d.into_alert());
        }
    }

    /// Takes in one shard's records on an event, as they arrive one shard at a time on the
    /// links topic, in event-time order: the records of every part of one event (its account
    /// and time) are taken in together, as [`ClusterStage::take`] takes all shards' at once.
    /// The events of one time are taken when a part of a later time arrives, or at
    /// [`ClusterStage::flush`], in the order of their accounts' keys: parts of events of
    /// the same millisecond may arrive interleaved, shard by shard. Alerts go to `out` then.
    pub fn take_part(
        &mut self,
        account: u64,
        at_ms: i64,
        emitted: &mut Emitted,
        out: &mut Vec<Alert>,
    ) {
        if self.pending != Some(at_ms) {
            self.flush(out);
            self.pending = Some(at_ms);
        }
        let next = self.parts.len();
        let i = *self.part_of.entry(account).or_insert(next);
        if i == next {
            let e = self.spare.pop().unwrap_or_default();
            self.parts.push((account, e));
        }
        let part = &mut self.parts[i].1;
        part.records.append(&mut emitted.records);
        part.members.append(&mut emitted.members);
        part.explained.append(&mut emitted.explained);
    }

    /// Takes in the events [`ClusterStage::take_part`] was gathering, if any.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let Some(at_ms) = self.pending.take() else {
            return;
        };
        self.part_of.clear();
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_unstable_by_key(|(a, _)| *a);
        for (account, mut part) in parts.drain(..) {
            self.take(account, at_ms, &mut part, out);
            part.clear();
            self.spare.push(part);
        }
        self.parts = parts;
    }

    /// Forgets the accounts and links no record mentioned for `engine.account_idle_secs`
    /// (their accounts went idle, as the shards' shadows do).
    fn sweep(&mut self, now: i64) {
        let idle = now - (self.cfg.raw.engine.account_idle_secs * 1000) as i64;
        let assembler = &mut self.assembler;
        self.snapshots.members.retain(|k, s| {
            let keep = s.at_ms >= idle;
            if !keep {
                assembler.forget(*k);
            }
            keep
        });
        self.snapshots.links.retain(|_, (_, at)| *at >= idle);
        self.assembler.sweep(now);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The newest event time taken in.
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark != i64::MIN).then_some(self.watermark)
    }

    /// Clusters held.
    pub fn clusters(&self) -> usize {
        self.assembler.len()
    }

    /// Accounts and links whose snapshots it holds.
    pub fn snapshots(&self) -> (usize, usize) {
        (self.snapshots.members.len(), self.snapshots.links.len())
    }
}
