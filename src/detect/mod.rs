//! The detectors. `bulk` judges one account's harvest; `cluster` links accounts through shared
//! values and assembles clusters; `cohort` links accounts that harvest in synchronised waves
//! (its links join the same clusters). They read engine state and return decisions with their
//! evidence; the engine decides when to call them and turns decisions into alerts. Every
//! number that decides a tier is a config key (`[harvest]`, `[bulk]`, `[cluster]`,
//! `[cohort]`, `[alerts]`) and part of the `detector_version` hash.

pub mod bulk;
pub mod cluster;
pub mod cohort;

use crate::alert::signal;

/// One signal of a decision: its value against the threshold it was compared with.
#[derive(Debug, Clone)]
pub struct Signal {
    pub name: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub crossed: bool,
}

impl Signal {
    pub fn at_least(name: &'static str, value: f64, threshold: f64) -> Self {
        Self {
            name,
            value,
            threshold,
            crossed: value >= threshold,
        }
    }

    pub fn at_most(name: &'static str, value: f64, threshold: f64) -> Self {
        Self {
            name,
            value,
            threshold,
            crossed: value <= threshold,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        signal(self.name, self.value, self.threshold, self.crossed)
    }
}

/// Percent, for summaries.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}
