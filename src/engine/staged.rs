//! The staged topology in one process: `account` engines keyed by account, each handing its
//! observations to one `link` engine (see [`Role`]). The Kafka roles run the same engines in
//! separate processes with the observations on an internal topic; here they are handed over
//! in input order, which makes the split measurable on its own: what the stage boundary
//! changes, apart from delivery.

use std::sync::Arc;

use super::{account_key, Engine, Gauges, Outcome, Role, Stats};
use crate::alert::Alert;
use crate::config::ValidConfig;
use crate::event::Event;

/// `account` engines (an event goes to the one its account hashes to) feeding one `link`
/// engine.
pub struct Staged {
    accounts: Vec<Engine>,
    link: Engine,
}

/// The account-stage instance an account's events go to, of `n`.
pub fn partition(account_id: &str, n: usize) -> usize {
    (account_key(account_id) % n.max(1) as u64) as usize
}

impl Staged {
    /// `account_instances` (at least one) account engines and a link engine on `cfg`.
    pub fn new(cfg: Arc<ValidConfig>, account_instances: usize) -> Self {
        Self {
            accounts: (0..account_instances.max(1))
                .map(|_| Engine::new(cfg.clone()).with_role(Role::Account))
                .collect(),
            link: Engine::new(cfg).with_role(Role::Link),
        }
    }

    /// Processes one event: its account's engine judges it, and the link engine takes the
    /// observation of it if the account engine accepted it. Alerts of both go to `out`,
    /// the account stage's first. The outcome is the account stage's.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Alert>) -> Outcome {
        let n = self.accounts.len();
        let engine = &mut self.accounts[partition(&ev.account_id, n)];
        let outcome = engine.process(ev, out);
        if let Some(obs) = engine.take_observation() {
            self.link.observe(ev, &obs, out);
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
        let l = self.link.stats();
        s.attributes_created = l.attributes_created;
        s.attributes_expired = l.attributes_expired;
        s.attributes_evicted = l.attributes_evicted;
        s.alerts_cluster = l.alerts_cluster;
        s.alerts_suppressed_allowlist += l.alerts_suppressed_allowlist;
        s.alerts_rate_limited_cluster = l.alerts_rate_limited_cluster;
        s
    }

    /// State sizes: accounts and de-duplication ids held by the account stage, values and
    /// clusters by the link stage.
    pub fn gauges(&self) -> Gauges {
        let mut g = self.link.gauges();
        g.accounts = self.accounts.iter().map(|e| e.gauges().accounts).sum();
        g.dedup_ids = self.accounts.iter().map(|e| e.gauges().dedup_ids).sum();
        g
    }

    /// The link engine (its shadow accounts, for tests and gauges).
    pub fn link(&self) -> &Engine {
        &self.link
    }
}
