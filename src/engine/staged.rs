//! The staged topology in one process: `account` engines keyed by account, each handing its
//! observations to one `link` engine (see [`Role`]), or to link shards keyed by linking value
//! whose link records a cluster stage assembles ([`ClusterStage`]). The Kafka roles run the
//! same engines in separate processes with the observations on an internal topic; here they
//! are handed over in input order, which makes the split measurable on its own: what the
//! stage boundaries change, apart from delivery.

use std::sync::Arc;

use super::cluster_stage::ClusterStage;
use super::{account_key, link_targets, Engine, Gauges, Outcome, Role, Stats};
use crate::alert::Alert;
use crate::config::ValidConfig;
use crate::detect::{Emitted, Shard};
use crate::event::Event;

/// `account` engines (an event goes to the one its account hashes to) feeding the link side.
pub struct Staged {
    accounts: Vec<Engine>,
    links: Links,
}

/// The link side: one `link` engine that also assembles clusters, or link shards and a
/// cluster stage.
enum Links {
    One(Box<Engine>),
    Sharded {
        shards: Vec<Engine>,
        cluster: Box<ClusterStage>,
        emitted: Emitted,
    },
}

/// The account-stage instance an account's events go to, of `n`.
pub fn partition(account_id: &str, n: usize) -> usize {
    (account_key(account_id) % n.max(1) as u64) as usize
}

impl Staged {
    /// `account_instances` (at least one) account engines and a link engine on `cfg`.
    pub fn new(cfg: Arc<ValidConfig>, account_instances: usize) -> Self {
        Self::sharded(cfg, account_instances, 0)
    }

    /// `account_instances` account engines feeding `link_shards` link shards (at most 64)
    /// and a cluster stage; with `link_shards` 0, one link engine as [`Staged::new`].
    pub fn sharded(cfg: Arc<ValidConfig>, account_instances: usize, link_shards: usize) -> Self {
        let accounts = (0..account_instances.max(1))
            .map(|_| Engine::new(cfg.clone()).with_role(Role::Account))
            .collect();
        let links = if link_shards == 0 {
            Links::One(Box::new(Engine::new(cfg).with_role(Role::Link)))
        } else {
            let of = link_shards.min(64);
            Links::Sharded {
                shards: (0..of)
                    .map(|index| Engine::new(cfg.clone()).with_shard(Shard { index, of }))
                    .collect(),
                cluster: Box::new(ClusterStage::new(cfg)),
                emitted: Emitted::default(),
            }
        };
        Self { accounts, links }
    }

    /// Processes one event: its account's engine judges it, and the link engine takes the
    /// observation of it if the account engine accepted it. Alerts of both go to `out`,
    /// the account stage's first. The outcome is the account stage's.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Alert>) -> Outcome {
        let n = self.accounts.len();
        let engine = &mut self.accounts[partition(&ev.account_id, n)];
        let outcome = engine.process(ev, out);
        if let Some(obs) = engine.take_observation() {
            match &mut self.links {
                Links::One(link) => _ = link.observe(ev, &obs, out),
                Links::Sharded {
                    shards,
                    cluster,
                    emitted,
                } => {
                    let targets = link_targets(&obs, shards.len());
                    for (i, shard) in shards.iter_mut().enumerate() {
                        if targets & (1 << i) != 0 {
                            shard.observe(ev, &obs, out);
                            shard.take_emitted(emitted);
                        }
                    }
                    if !emitted.records.is_empty() {
                        cluster.take(account_key(&ev.account_id), ev.ts_ms, emitted, out);
                    }
                    emitted.clear();
                }
            }
        }
        outcome
    }

    /// [`Staged::process`] on each of `events`, calling `each` after every event with its
    /// outcome and the alerts it caused (as [`Engine::process_all`]).
    pub fn process_all<'e, E>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
        out: &mut Vec<Alert>,
        mut each: impl FnMut(Outcome, &mut Vec<Alert>) -> Result<(), E>,
    ) -> Result<(), E> {
        for ev in events {
            let outcome = self.process(ev, out);
            each(outcome, out)?;
        }
        Ok(())
    }

    /// Counters: events and accounts as the account stage counted them, attribute values
    /// as the link stage did, alerts of both.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for e in &self.accounts {
            let a = e.stats();
            s.events_accepted += a.events_accepted;
            s.events_duplicate += a.events_duplicate;
            s.events_late += a.events_late;
            s.events_out_of_range += a.events_out_of_range;
            s.accounts_created += a.accounts_created;
            s.accounts_expired += a.accounts_expired;
            s.accounts_evicted += a.accounts_evicted;
            s.alerts_bulk += a.alerts_bulk;
            s.alerts_suppressed_allowlist += a.alerts_suppressed_allowlist;
            s.alerts_rate_limited_bulk += a.alerts_rate_limited_bulk;
        }
        let mut add_link = |l: &Stats| {
            s.attributes_created += l.attributes_created;
            s.attributes_expired += l.attributes_expired;
            s.attributes_evicted += l.attributes_evicted;
            s.alerts_cluster += l.alerts_cluster;
            s.alerts_suppressed_allowlist += l.alerts_suppressed_allowlist;
            s.alerts_rate_limited_cluster += l.alerts_rate_limited_cluster;
        };
        match &self.links {
            Links::One(link) => add_link(link.stats()),
            Links::Sharded {
                shards, cluster, ..
            } => {
                for shard in shards {
                    add_link(shard.stats());
                }
                add_link(cluster.stats());
            }
        }
        s
    }

    /// State sizes: accounts and de-duplication ids held by the account stage, values and
    /// clusters by the link stage.
    pub fn gauges(&self) -> Gauges {
        let mut g = match &self.links {
            Links::One(link) => link.gauges(),
            Links::Sharded {
                shards, cluster, ..
            } => {
                let mut g = Gauges::default();
                for shard in shards {
                    g.attribute_values += shard.gauges().attribute_values;
                }
                g.clusters = cluster.clusters();
                g
            }
        };
        g.accounts = self.accounts.iter().map(|e| e.gauges().accounts).sum();
        g.dedup_ids = self.accounts.iter().map(|e| e.gauges().dedup_ids).sum();
        g
    }

    /// The link engines: the one link engine, or the link shards (their shadow accounts, for
    /// tests and gauges).
    pub fn links(&self) -> &[Engine] {
        match &self.links {
            Links::One(link) => std::slice::from_ref(&**link),
            Links::Sharded { shards, .. } => shards,
        }
    }
}
