//! The suspension safety valve: at most so many subjects recommended `suspend` in any sliding
//! hour of event time, overall and per kind (`alerts.max_suspend_per_hour*`).
//!
//! Downstream systems suspend every account a `suspend` alert names, so a detector bug or a bad
//! configuration could otherwise suspend thousands of customers before anyone looks. Past a
//! cap the alert is still emitted, downgraded to `throttle` and marked in its evidence
//! ([`Decision::rate_limit`]): people see what the detector wanted without the automation
//! acting on it.
//!
//! Sans-io and driven by event time only (the engine's clock), so `replay` stays
//! deterministic and the service, which re-reads the last `kafka.rebuild_secs` after a
//! rebalance, rebuilds the same hour of grants.

use std::collections::{HashMap, VecDeque};

use super::{Decision, Kind, Tier};
use crate::config::AlertConfig;

const HOUR_MS: i64 = 3_600_000;

/// Which cap withheld a `suspend`, and how full it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The config key of the cap.
    pub key: &'static str,
    pub cap: u32,
    /// Subjects granted `suspend` under that cap in the hour up to the decision.
    pub in_hour: u32,
}

/// Grants of `suspend`, one per subject per sliding hour.
#[derive(Debug, Default)]
pub struct Valve {
    total_cap: u32,
    kind_caps: [u32; 2],
    /// Grants in the last hour, oldest first: (event time, kind, subject).
    grants: VecDeque<(i64, Kind, String)>,
    /// Subjects holding a grant, with its time: a re-alert within the hour reuses it.
    holders: HashMap<(Kind, String), i64>,
    counts: [u32; 2],
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::BulkExtraction => 0,
        Kind::FakeAccountCluster => 1,
    }
}

fn kind_key(kind: Kind) -> &'static str {
    match kind {
        Kind::BulkExtraction => "alerts.max_suspend_per_hour_bulk",
        Kind::FakeAccountCluster => "alerts.max_suspend_per_hour_cluster",
    }
}

impl Valve {
    pub fn new(cfg: &AlertConfig) -> Self {
        Self {
            total_cap: cfg.max_suspend_per_hour,
            kind_caps: [
                cfg.max_suspend_per_hour_bulk,
                cfg.max_suspend_per_hour_cluster,
            ],
            ..Self::default()
        }
    }

    /// Whether `subject` may be recommended `suspend` at event time `now`; a grant is taken
    /// if so. A subject granted within the last hour is granted again without a new slot.
    pub fn admit(&mut self, kind: Kind, subject: &str, now: i64) -> Result<(), Limited> {
        if self.total_cap == 0 && self.kind_caps == [0, 0] {
            return Ok(());
        }
        self.expire(now);
        let holder = (kind, subject.to_string());
        if self.holders.contains_key(&holder) {
            return Ok(());
        }
        let k = slot(kind);
        let total: u32 = self.counts.iter().sum();
        if self.kind_caps[k] != 0 && self.counts[k] >= self.kind_caps[k] {
            return Err(Limited {
                key: kind_key(kind),
                cap: self.kind_caps[k],
                in_hour: self.counts[k],
            });
        }
        if self.total_cap != 0 && total >= self.total_cap {
            return Err(Limited {
                key: "alerts.max_suspend_per_hour",
                cap: self.total_cap,
                in_hour: total,
            });
        }
        self.counts[k] += 1;
        self.grants.push_back((now, kind, subject.to_string()));
        self.holders.insert(holder, now);
        Ok(())
    }

    /// Drops grants an hour old or older.
    fn expire(&mut self, now: i64) {
        while let Some((at, _, _)) = self.grants.front() {
            if *at > now - HOUR_MS {
                break;
            }
            let Some((at, kind, subject)) = self.grants.pop_front() else {
                break;
            };
            self.counts[slot(kind)] -= 1;
            let holder = (kind, subject);
            if self.holders.get(&holder) == Some(&at) {
                self.holders.remove(&holder);
            }
        }
    }

    /// Passes a decision through the valve: a `suspend` past a cap becomes `throttle`, marked
    /// in its evidence. Returns whether it was downgraded.
    pub fn apply(&mut self, d: &mut Decision) -> bool {
        if d.tier != Tier::Critical {
            return false;
        }
        match self.admit(d.kind, &d.subject, d.detected_at_ms) {
            Ok(()) => false,
            Err(limited) => {
                d.rate_limit(&limited);
                true
            }
        }
    }
}

impl Decision {
    /// Downgrades a `suspend` decision to `throttle` (severity `high`) and says why in the
    /// evidence: `rate_limited`, the cap's key and size, and the grants in the hour.
    pub fn rate_limit(&mut self, limited: &Limited) {
        self.tier = Tier::High;
        if let Some(ev) = self.evidence.as_object_mut() {
            if let Some(serde_json::Value::String(summary)) = ev.get_mut("summary") {
                summary.push_str(&format!(
                    "; suspend withheld: {} of {} subjects suspended in the last hour ({})",
                    limited.in_hour, limited.cap, limited.key
                ));
            }
            ev.insert("rate_limited".into(), true.into());
            ev.insert(
                "rate_limit".into(),
                serde_json::json!({
                    "detector_action": "suspend",
                    "cap_key": limited.key,
                    "cap": limited.cap,
                    "suspended_subjects_in_hour": limited.in_hour,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Action, Severity};

    const T0: i64 = 1_793_577_600_000;
    const MIN: i64 = 60_000;

    fn caps(total: u32, bulk: u32, cluster: u32) -> Valve {
        Valve::new(&AlertConfig {
            max_suspend_per_hour: total,
            max_suspend_per_hour_bulk: bulk,
            max_suspend_per_hour_cluster: cluster,
            ..AlertConfig::default()
        })
    }

    fn suspend(kind: Kind, subject: &str, at: i64) -> Decision {
        Decision {
            kind,
            subject: subject.into(),
            accounts: vec![subject.into()],
            tier: Tier::Critical,
            score: 0.95,
            detected_at_ms: at,
            window_start_ms: at - HOUR_MS,
            window_end_ms: at,
            evidence: serde_json::json!({"summary": "harvesting"}),
            detector_version: "v".into(),
        }
    }

    #[test]
    fn past_the_cap_suspend_becomes_a_marked_throttle() {
        let mut v = caps(3, 0, 0);
        let alerts: Vec<_> = (0..10)
            .map(|i| {
                let mut d = suspend(Kind::BulkExtraction, &format!("a{i}"), T0 + i * MIN);
                v.apply(&mut d);
                d.into_alert()
            })
            .collect();
        let suspended = alerts
            .iter()
            .filter(|a| a.recommended_action == Action::Suspend)
            .count();
        assert_eq!(suspended, 3);
        let limited: Vec<_> = alerts
            .iter()
            .filter(|a| a.evidence["rate_limited"] == true)
            .collect();
        assert_eq!(limited.len(), 7);
        for a in limited {
            assert_eq!(a.recommended_action, Action::Throttle);
            assert_eq!(a.severity, Severity::High);
            assert_eq!(a.evidence["rate_limit"]["cap"], 3);
            assert_eq!(a.evidence["rate_limit"]["suspended_subjects_in_hour"], 3);
            assert_eq!(
                a.evidence["rate_limit"]["cap_key"],
                "alerts.max_suspend_per_hour"
            );
        }
    }

    #[test]
    fn a_re_alert_within_the_hour_reuses_its_slot_and_slots_free_after_an_hour() {
        let mut v = caps(2, 0, 0);
        assert!(v.admit(Kind::BulkExtraction, "a", T0).is_ok());
        assert!(v.admit(Kind::BulkExtraction, "a", T0 + 10 * MIN).is_ok());
        assert!(v.admit(Kind::BulkExtraction, "b", T0 + 20 * MIN).is_ok());
        assert!(v.admit(Kind::BulkExtraction, "c", T0 + 30 * MIN).is_err());
        // `a`'s grant (at T0) leaves the sliding hour; `b`'s has not.
        assert!(v.admit(Kind::BulkExtraction, "c", T0 + 60 * MIN).is_ok());
        assert!(v.admit(Kind::BulkExtraction, "d", T0 + 61 * MIN).is_err());
        // The same subject under another kind is another subject.
        assert!(v
            .admit(Kind::FakeAccountCluster, "b", T0 + 62 * MIN)
            .is_err());
    }

    #[test]
    fn per_kind_caps_bind_before_the_total() {
        let mut v = caps(10, 1, 0);
        assert!(v.admit(Kind::BulkExtraction, "a", T0).is_ok());
        let err = v
            .admit(Kind::BulkExtraction, "b", T0)
            .expect_err("bulk cap");
        assert_eq!(err.key, "alerts.max_suspend_per_hour_bulk");
        assert!(v.admit(Kind::FakeAccountCluster, "c", T0).is_ok());
    }

    #[test]
    fn zero_means_no_cap_and_lower_tiers_pass_untouched() {
        let mut v = caps(0, 0, 0);
        for i in 0..1000 {
            assert!(v.admit(Kind::BulkExtraction, &format!("a{i}"), T0).is_ok());
        }
        let mut v = caps(1, 0, 0);
        let mut d = suspend(Kind::BulkExtraction, "x", T0);
        d.tier = Tier::High;
        for _ in 0..3 {
            assert!(!v.apply(&mut d.clone()));
        }
    }
}
