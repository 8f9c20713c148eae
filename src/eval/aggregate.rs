//! Quality over many runs (seeds, scenarios): what one lucky seed hides. Per family, recall
//! at its worst and median run, time to detect pooled over every detected account of every
//! run, and every false positive of every benign family.

use super::{fmt_opt, median, p90, ratio, EvalReport, Requirements};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    pub name: String,
    pub attack_accounts: usize,
    pub flagged: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FamilyAggregate {
    pub family: String,
    pub attack: bool,
    /// Runs in which the family had at least one account.
    pub runs: usize,
    pub accounts: usize,
    pub flagged: usize,
    /// Attack families: recall of the worst run, the median run, and over all accounts.
    pub recall_min: Option<f64>,
    pub recall_median: Option<f64>,
    pub recall_pooled: Option<f64>,
    /// Attack families: time to detect pooled over every detected account of every run.
    pub ttd_median_min: Option<f64>,
    pub ttd_p90_min: Option<f64>,
    /// Attack families: the slowest run's median time to detect.
    pub ttd_worst_run_median_min: Option<f64>,
    /// Benign families: flagged accounts over all runs, and in how many runs any was.
    pub false_positives: usize,
    pub runs_with_false_positives: usize,
    /// Benign families: `run:account` of every false positive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub false_positive_accounts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AggregateReport {
    pub runs: Vec<RunSummary>,
    pub precision_min: Option<f64>,
    pub precision_median: Option<f64>,
    pub precision_pooled: Option<f64>,
    pub recall_min: Option<f64>,
    pub recall_median: Option<f64>,
    pub recall_pooled: Option<f64>,
    pub ttd_median_min: Option<f64>,
    pub ttd_p90_min: Option<f64>,
    pub families: Vec<FamilyAggregate>,
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Combines single-run reports, each named (e.g. `evasive-seed101`).
pub fn aggregate(runs: &[(String, EvalReport)]) -> AggregateReport {
    let summaries: Vec<RunSummary> = runs
        .iter()
        .map(|(name, r)| RunSummary {
            name: name.clone(),
            attack_accounts: r.attack_accounts,
            flagged: r.flagged,
            true_positives: r.true_positives,
            false_positives: r.false_positives,
            precision: r.precision,
            recall: r.recall,
        })
        .collect();
    let precisions = sorted(summaries.iter().filter_map(|s| s.precision).collect());
    let recalls = sorted(summaries.iter().filter_map(|s| s.recall).collect());
    let flagged: usize = summaries.iter().map(|s| s.flagged).sum();
    let tp: usize = summaries.iter().map(|s| s.true_positives).sum();
    let attack: usize = summaries.iter().map(|s| s.attack_accounts).sum();

    let mut fams: BTreeMap<(bool, String), Vec<(&str, &super::FamilyReport)>> = BTreeMap::new();
    for (name, r) in runs {
        for f in r.families.iter().filter(|f| f.accounts > 0) {
            fams.entry((f.attack, f.family.clone()))
                .or_default()
                .push((name.as_str(), f));
        }
    }
    let mut all_ttd = Vec::new();
    let families = fams
        .into_iter()
        .map(|((attack, family), per_run)| {
            let accounts = per_run.iter().map(|(_, f)| f.accounts).sum();
            let flagged = per_run.iter().map(|(_, f)| f.flagged).sum();
            let recalls = sorted(per_run.iter().filter_map(|(_, f)| f.recall).collect());
            let ttd = sorted(
                per_run
                    .iter()
                    .flat_map(|(_, f)| f.ttd_minutes.iter().copied())
                    .collect(),
            );
            all_ttd.extend_from_slice(&ttd);
            let worst = per_run
                .iter()
                .filter_map(|(_, f)| f.ttd_median_min)
                .max_by(f64::total_cmp);
            let fps: Vec<String> = per_run
                .iter()
                .flat_map(|(run, f)| {
                    f.false_positive_accounts
                        .iter()
                        .map(move |a| format!("{run}:{a}"))
                })
                .collect();
            FamilyAggregate {
                runs: per_run.len(),
                accounts,
                flagged,
                recall_min: recalls.first().copied(),
                recall_median: median(&recalls),
                recall_pooled: if attack {
                    ratio(flagged, accounts)
                } else {
                    None
                },
                ttd_median_min: median(&ttd),
                ttd_p90_min: p90(&ttd),
                ttd_worst_run_median_min: worst,
                false_positives: if attack { 0 } else { flagged },
                runs_with_false_positives: if attack {
                    0
                } else {
                    per_run.iter().filter(|(_, f)| f.flagged > 0).count()
                },
                false_positive_accounts: fps,
                family,
                attack,
            }
        })
        .collect();
    let all_ttd = sorted(all_ttd);
    AggregateReport {
        precision_min: precisions.first().copied(),
        precision_median: median(&precisions),
        precision_pooled: ratio(tp, flagged),
        recall_min: recalls.first().copied(),
        recall_median: median(&recalls),
        recall_pooled: ratio(tp, attack),
        ttd_median_min: median(&all_ttd),
        ttd_p90_min: p90(&all_ttd),
        runs: summaries,
        families,
    }
}

/// False-positive accounts listed per benign family in the text report.
const FP_LISTED: usize = 8;

impl AggregateReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "runs {}  precision min {} median {} pooled {}  recall min {} median {} pooled {}\n",
            self.runs.len(),
            fmt_opt(self.precision_min, 3),
            fmt_opt(self.precision_median, 3),
            fmt_opt(self.precision_pooled, 3),
            fmt_opt(self.recall_min, 3),
            fmt_opt(self.recall_median, 3),
            fmt_opt(self.recall_pooled, 3),
        ));
        s.push_str(&format!(
            "time to detect (pooled over runs) median {} min  p90 {} min\n",
            fmt_opt(self.ttd_median_min, 1),
            fmt_opt(self.ttd_p90_min, 1)
        ));
        s.push_str(&format!(
            "{:<18} {:>6} {:>4} {:>8} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9}\n",
            "family",
            "type",
            "runs",
            "accounts",
            "flagged",
            "recall_min",
            "recall_med",
            "ttd_med",
            "ttd_p90",
            "ttd_worst"
        ));
        for f in &self.families {
            if f.attack {
                s.push_str(&format!(
                    "{:<18} {:>6} {:>4} {:>8} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9}\n",
                    f.family,
                    "attack",
                    f.runs,
                    f.accounts,
                    f.flagged,
                    fmt_opt(f.recall_min, 3),
                    fmt_opt(f.recall_median, 3),
                    fmt_opt(f.ttd_median_min, 1),
                    fmt_opt(f.ttd_p90_min, 1),
                    fmt_opt(f.ttd_worst_run_median_min, 1),
                ));
            } else {
                let mut line = format!(
                    "{:<18} {:>6} {:>4} {:>8} {:>7}  fp {} in {} runs",
                    f.family,
                    "benign",
                    f.runs,
                    f.accounts,
                    f.flagged,
                    f.false_positives,
                    f.runs_with_false_positives
                );
                if !f.false_positive_accounts.is_empty() {
                    let shown: Vec<&str> = f
                        .false_positive_accounts
                        .iter()
                        .take(FP_LISTED)
                        .map(String::as_str)
                        .collect();
                    line.push_str(&format!(": {}", shown.join(" ")));
                    if f.false_positive_accounts.len() > FP_LISTED {
                        line.push_str(&format!(
                            " (+{})",
                            f.false_positive_accounts.len() - FP_LISTED
                        ));
                    }
                }
                s.push_str(&line);
                s.push('\n');
            }
        }
        s.push_str("per run:\n");
        for r in &self.runs {
            s.push_str(&format!(
                "  {:<24} precision {}  recall {}  tp {}  fp {}\n",
                r.name,
                fmt_opt(r.precision, 3),
                fmt_opt(r.recall, 3),
                r.true_positives,
                r.false_positives
            ));
        }
        s
    }

    /// Bars over all runs: precision and recall at their worst run, each attack family's
    /// recall at its worst run, median time to detect pooled per family, and no false positive
    /// in any run for the zero-FP families.
    pub fn check(&self, req: &Requirements) -> Vec<String> {
        let mut fails = Vec::new();
        if let (Some(min), Some(p)) = (req.min_precision, self.precision_min) {
            if p < min {
                fails.push(format!("min precision over runs {p:.3} < {min:.3}"));
            }
        }
        if let (Some(min), Some(r)) = (req.min_recall, self.recall_min) {
            if r < min {
                fails.push(format!("min recall over runs {r:.3} < {min:.3}"));
            }
        }
        let known = crate::sim::scenario_names();
        for f in self.families.iter().filter(|f| f.attack) {
            if let (Some(min), Some(r)) = (req.family_recall_bar(&f.family), f.recall_min) {
                if r < min {
                    fails.push(format!(
                        "family {} min recall over runs {r:.3} < {min:.3}",
                        f.family
                    ));
                }
            }
            let mut bars: Vec<f64> = req.max_median_ttd_minutes.into_iter().collect();
            bars.extend(
                req.family_median_ttd
                    .iter()
                    .filter(|(n, _)| *n == f.family)
                    .map(|(_, m)| *m),
            );
            if let Some(m) = f.ttd_median_min {
                for max in bars {
                    if m > max {
                        fails.push(format!(
                            "family {} pooled median time to detect {m:.1} min > {max:.1} min",
                            f.family
                        ));
                    }
                }
            }
        }
        for (name, _) in &req.family_median_ttd {
            if !known.contains(&name.as_str()) {
                fails.push(format!("TTD family {name:?} is not a simulator family"));
            }
        }
        fails.extend(req.unknown_recall_families());
        for name in &req.zero_fp_families {
            if !known.contains(&name.as_str()) {
                fails.push(format!("zero-FP family {name:?} is not a simulator family"));
                continue;
            }
            if let Some(f) = self
                .families
                .iter()
                .find(|f| &f.family == name && !f.attack)
            {
                if f.flagged > 0 {
                    fails.push(format!(
                        "family {name} has {} false positives in {} runs (required 0)",
                        f.flagged, f.runs_with_false_positives
                    ));
                }
            }
        }
        fails
    }
}

#[cfg(test)]
mod tests {
    use super::super::{evaluate, tests::fixture};
    use super::*;

    #[test]
    fn two_runs() {
        let (alerts, labels) = fixture();
        let one = evaluate(&alerts, &labels);
        // The second run catches nothing but a1, at 00:40 (ttd 40), and flags b1.
        let mut a2 = alerts.clone();
        a2.retain(|a| a.accounts == ["a1"]);
        a2[0].detected_at = "2026-11-02T00:40:00Z".into();
        let mut fp = a2[0].clone();
        fp.accounts = vec!["b1".into()];
        a2.push(fp);
        let two = evaluate(&a2, &labels);
        let agg = aggregate(&[("r1".into(), one), ("r2".into(), two)]);
        assert_eq!(agg.runs.len(), 2);
        assert_eq!(agg.precision_min, Some(0.5));
        assert_eq!(agg.precision_median, Some(0.55));
        // Pooled: tp 3 + 1 of flagged 5 + 2.
        assert_eq!(agg.precision_pooled, Some(4.0 / 7.0));
        assert_eq!(agg.recall_min, Some(0.25));
        assert_eq!(agg.recall_median, Some(0.5));
        let fam = |n: &str| {
            agg.families
                .iter()
                .find(|f| f.family == n)
                .cloned()
                .expect("family")
        };
        let h = fam("hydra");
        assert_eq!((h.runs, h.accounts, h.flagged), (2, 6, 3));
        assert_eq!(h.recall_min, Some(1.0 / 3.0));
        assert_eq!(h.recall_median, Some(0.5));
        assert_eq!(h.recall_pooled, Some(0.5));
        // TTDs pooled: run 1 {0, 20}, run 2 {40}: median 20, p90 40; worst run median 40.
        assert_eq!(h.ttd_median_min, Some(20.0));
        assert_eq!(h.ttd_p90_min, Some(40.0));
        assert_eq!(h.ttd_worst_run_median_min, Some(40.0));
        let sh = fam("single_harvester");
        assert_eq!((sh.recall_min, sh.recall_median), (Some(0.0), Some(0.5)));
        let ord = fam("ordinary");
        assert_eq!((ord.false_positives, ord.runs_with_false_positives), (1, 1));
        assert_eq!(ord.false_positive_accounts, vec!["r2:b1".to_string()]);
        assert_eq!(
            fam("eval_run").false_positive_accounts,
            vec!["r1:b3".to_string()]
        );
        let text = agg.to_text();
        assert!(text.contains("r2:b1") && text.contains("runs 2"), "{text}");

        let req = Requirements {
            min_precision: Some(0.55),
            min_recall: Some(0.2),
            min_family_recall: Some(0.3),
            max_median_ttd_minutes: None,
            zero_fp_families: vec!["ordinary".into(), "classroom".into()],
            family_median_ttd: vec![("hydra".into(), 15.0), ("nope".into(), 1.0)],
            family_min_recall: vec![],
        };
        let fails = agg.check(&req);
        assert_eq!(fails.len(), 5, "{fails:?}");
        assert!(fails.iter().any(|f| f.contains("min precision")));
        assert!(fails
            .iter()
            .any(|f| f.contains("single_harvester min recall")));
        assert!(fails.iter().any(|f| f.contains("hydra pooled median")));
        assert!(fails.iter().any(|f| f.contains("\"nope\"")));
        assert!(fails.iter().any(|f| f.contains("ordinary has 1")));
        // A family's own bar replaces the one for every family; an unknown name fails.
        let own = Requirements {
            family_min_recall: vec![("single_harvester".into(), 0.0), ("nada".into(), 0.5)],
            ..req
        };
        let fails = agg.check(&own);
        assert!(!fails
            .iter()
            .any(|f| f.contains("single_harvester min recall")));
        assert!(fails.iter().any(|f| f.contains("recall family \"nada\"")));
    }

    #[test]
    fn empty() {
        let agg = aggregate(&[]);
        assert_eq!(agg.precision_min, None);
        assert!(agg.check(&Requirements::default()).is_empty());
        assert!(agg.to_text().contains("runs 0"));
    }
}
