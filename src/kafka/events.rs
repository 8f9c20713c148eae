//! The consumer loop's internal events, after Vector's `internal_events`: one small type per
//! thing that happens, owning its metric and its label values. Call sites name a variant,
//! never a label string, and every labelled series is registered at zero from the types' own
//! lists, so dashboards and alert rules see a new variant before it first occurs.
//!
//! Counters are resolved once ([`Recorder::new`]): the per-record path pays an atomic add,
//! not a registry lookup.

use metrics::Counter;

use crate::alert::Kind;
use crate::engine::Outcome;
use crate::event::DecodeError;
use crate::telemetry as t;

/// What became of an input record: `distillguard_events_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Ok,
    Duplicate,
    Late,
    OutOfRange,
    Malformed,
}

impl Judged {
    pub const ALL: [Judged; 5] = [
        Judged::Ok,
        Judged::Duplicate,
        Judged::Late,
        Judged::OutOfRange,
        Judged::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Judged::Ok => "ok",
            Judged::Duplicate => "duplicate",
            Judged::Late => "late",
            Judged::OutOfRange => "out_of_range",
            Judged::Malformed => "malformed",
        }
    }
}

impl From<Outcome> for Judged {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Accepted => Judged::Ok,
            Outcome::Duplicate => Judged::Duplicate,
            Outcome::Late => Judged::Late,
            Outcome::OutOfRange => Judged::OutOfRange,
        }
    }
}

/// An alert decided but not sent: `distillguard_alerts_suppressed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// Sent before a restart or rebalance (its record is re-read to rebuild state).
    Catchup,
    /// The account or its org is allowlisted (static or live).
    Allowlist,
}

impl Suppressed {
    pub const ALL: [Suppressed; 2] = [Suppressed::Catchup, Suppressed::Allowlist];

    pub fn label(self) -> &'static str {
        match self {
            Suppressed::Catchup => "catchup",
            Suppressed::Allowlist => "allowlist",
        }
    }
}

/// Engine state let go: `distillguard_evictions_total{state}` at the caps,
/// `distillguard_expirations_total{state}` when idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Accounts,
    AttributeValues,
}

impl State {
    pub const ALL: [State; 2] = [State::Accounts, State::AttributeValues];

    pub fn label(self) -> &'static str {
        match self {
            State::Accounts => "accounts",
            State::AttributeValues => "attribute_values",
        }
    }
}

/// The loop's labelled counters, resolved once.
pub struct Recorder {
    judged: [Counter; 5],
    suppressed: [Counter; 2],
    rate_limited: Vec<Counter>,
    evicted: [Counter; 2],
    expired: [Counter; 2],
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            judged: Judged::ALL.map(|j| metrics::counter!(t::EVENTS, "result" => j.label())),
            suppressed: Suppressed::ALL
                .map(|s| metrics::counter!(t::ALERTS_SUPPRESSED, "reason" => s.label())),
            rate_limited: Kind::ALL
                .iter()
                .map(|k| metrics::counter!(t::ALERTS_RATE_LIMITED, "kind" => k.as_str()))
                .collect(),
            evicted: State::ALL.map(|s| metrics::counter!(t::EVICTIONS, "state" => s.label())),
            expired: State::ALL.map(|s| metrics::counter!(t::EXPIRATIONS, "state" => s.label())),
        }
    }

    /// Registers every series these events can touch, at zero.
    pub fn register() {
        for j in Judged::ALL {
            metrics::counter!(t::EVENTS, "result" => j.label()).increment(0);
        }
        for s in Suppressed::ALL {
            metrics::counter!(t::ALERTS_SUPPRESSED, "reason" => s.label()).increment(0);
        }
        for k in Kind::ALL {
            metrics::counter!(t::ALERTS_RATE_LIMITED, "kind" => k.as_str()).increment(0);
        }
        for s in State::ALL {
            metrics::counter!(t::EVICTIONS, "state" => s.label()).increment(0);
            metrics::counter!(t::EXPIRATIONS, "state" => s.label()).increment(0);
        }
        for r in DecodeError::REASONS {
            metrics::counter!(t::MALFORMED, "reason" => *r).increment(0);
        }
    }

    pub fn judged(&self, j: Judged) {
        self.judged_n(j, 1);
    }

    pub fn judged_n(&self, j: Judged, n: u64) {
        self.judged[j as usize].increment(n);
    }

    /// A malformed record: counted as judged `malformed` and by its reason.
    pub fn malformed(&self, e: &DecodeError) {
        self.judged(Judged::Malformed);
        metrics::counter!(t::MALFORMED, "reason" => e.reason()).increment(1);
    }

    pub fn suppressed(&self, s: Suppressed, n: u64) {
        self.suppressed[s as usize].increment(n);
    }

    pub fn rate_limited(&self, kind: Kind, n: u64) {
        if let Some(i) = Kind::ALL.iter().position(|&k| k == kind) {
            self.rate_limited[i].increment(n);
        }
    }

    pub fn evicted(&self, s: State, n: u64) {
        self.evicted[s as usize].increment(n);
    }

    pub fn expired(&self, s: State, n: u64) {
        self.expired[s as usize].increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arrays are indexed by discriminant: the lists must be in declaration order.
    #[test]
    fn lists_are_in_declaration_order_and_labels_distinct() {
        for (i, j) in Judged::ALL.iter().enumerate() {
            assert_eq!(*j as usize, i);
        }
        for (i, s) in Suppressed::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        let mut labels: Vec<&str> = Judged::ALL.iter().map(|j| j.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Judged::ALL.len());
    }
}
