//! Scores alert files against simulator labels at the account level: which accounts were
//! named by any alert, how quickly attackers were named, and which benign look-alike families
//! drew false positives.

use crate::alert::Alert;
use crate::sim::Label;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

mod aggregate;
pub use aggregate::{aggregate, AggregateReport, FamilyAggregate, RunSummary};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
    #[error("line {line}: bad timestamp {value:?} in {field}")]
    Time {
        line: usize,
        field: &'static str,
        value: String,
    },
}

/// Reads labels as JSON lines; blank lines are skipped.
pub fn read_labels(r: impl std::io::BufRead) -> Result<Vec<Label>, EvalError> {
    let labels: Vec<Label> = read_lines(r)?;
    for (i, l) in labels.iter().enumerate() {
        if let Some(s) = &l.attack_start {
            if parse_ms(s).is_none() {
                return Err(EvalError::Time {
                    line: i + 1,
                    field: "attack_start",
                    value: s.clone(),
                });
            }
        }
    }
    Ok(labels)
}

/// Reads alerts as JSON lines, or as one JSON array if the input starts with `[`.
pub fn read_alerts(mut r: impl std::io::BufRead) -> Result<Vec<Alert>, EvalError> {
    let mut all = String::new();
    r.read_to_string(&mut all)?;
    let alerts: Vec<Alert> = if all.trim_start().starts_with('[') {
        serde_json::from_str(&all).map_err(|source| EvalError::Parse {
            line: source.line(),
            source,
        })?
    } else {
        read_lines(all.as_bytes())?
    };
    for (i, a) in alerts.iter().enumerate() {
        if parse_ms(&a.detected_at).is_none() {
            return Err(EvalError::Time {
                line: i + 1,
                field: "detected_at",
                value: a.detected_at.clone(),
            });
        }
    }
    Ok(alerts)
}

fn read_lines<T: serde::de::DeserializeOwned>(
    r: impl std::io::BufRead,
) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| EvalError::Parse {
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

fn parse_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FamilyReport {
    pub family: String,
    pub attack: bool,
    pub accounts: usize,
    pub flagged: usize,
    /// Attack families only.
    pub recall: Option<f64>,
    /// Benign families: flagged accounts (all of them are false positives).
    pub false_positives: usize,
    pub ttd_median_min: Option<f64>,
    pub ttd_p90_min: Option<f64>,
    /// Benign families: the flagged accounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub false_positive_accounts: Vec<String>,
    /// Attack families: minutes from attack start to first detection, one per detected
    /// account, sorted; kept for pooling over runs.
    #[serde(skip)]
    pub ttd_minutes: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionReport {
    pub action: String,
    /// Distinct accounts named by at least one alert with this action.
    pub flagged: usize,
    pub true_positives: usize,
    pub false_positives: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalReport {
    pub alerts: usize,
    pub labelled_accounts: usize,
    pub attack_accounts: usize,
    pub flagged: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    /// Flagged accounts absent from the labels (counted as false positives).
    pub unlabelled_flagged: usize,
    pub false_negatives: usize,
    /// `None` when nothing was flagged.
    pub precision: Option<f64>,
    /// `None` when there are no attack accounts.
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub ttd_median_min: Option<f64>,
    pub ttd_p90_min: Option<f64>,
    pub by_action: Vec<ActionReport>,
    /// Precision counting only accounts named by a `suspend` alert.
    pub suspend_precision: Option<f64>,
    pub by_kind: BTreeMap<String, usize>,
    pub families: Vec<FamilyReport>,
}

#[derive(Clone, Debug, Default)]
pub struct Requirements {
    pub min_precision: Option<f64>,
    pub min_recall: Option<f64>,
    /// Applied to every attack family present in the labels.
    pub min_family_recall: Option<f64>,
    /// Applied per attack family that has at least one detection (undetected families fail
    /// the recall requirements instead).
    pub max_median_ttd_minutes: Option<f64>,
    /// Benign families that must have no flagged account; a family absent from the labels
    /// passes, a name that is not a simulator family fails.
    pub zero_fp_families: Vec<String>,
    /// Per attack family: the largest median time to detect, in minutes (a family absent
    /// from the labels passes, a name that is not a simulator family fails).
    pub family_median_ttd: Vec<(String, f64)>,
    /// Per attack family: a recall bar that replaces `min_family_recall` for it (a family
    /// absent from the labels passes, a name that is not a simulator family fails).
    pub family_min_recall: Vec<(String, f64)>,
}

impl Requirements {
    /// The recall bar for one attack family: its own, else the one for every family.
    pub fn family_recall_bar(&self, family: &str) -> Option<f64> {
        self.family_min_recall
            .iter()
            .rev()
            .find(|(n, _)| n == family)
            .map(|(_, r)| *r)
            .or(self.min_family_recall)
    }

    /// Failures for names in per-family recall bars that are not simulator families.
    pub fn unknown_recall_families(&self) -> Vec<String> {
        let known = crate::sim::scenario_names();
        self.family_min_recall
            .iter()
            .filter(|(n, _)| !known.contains(&n.as_str()))
            .map(|(n, _)| format!("recall family {n:?} is not a simulator family"))
            .collect()
    }
}

/// Parses `FAMILY=RECALL`, the form of a per-family recall bar.
pub fn parse_family_share(s: &str) -> Result<(String, f64), String> {
    let (f, r) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FAMILY=RECALL, got {s:?}"))?;
    let r: f64 = r
        .trim()
        .parse()
        .map_err(|_| format!("bad recall in {s:?}"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("recall must be between 0 and 1 in {s:?}"));
    }
    Ok((f.trim().to_string(), r))
}

/// Parses `FAMILY=MINUTES`, the form of a per-family time-to-detect bar.
pub fn parse_family_minutes(s: &str) -> Result<(String, f64), String> {
    let (f, m) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FAMILY=MINUTES, got {s:?}"))?;
    let m: f64 = m
        .trim()
        .parse()
        .map_err(|_| format!("bad minutes in {s:?}"))?;
    if !(m.is_finite() && m >= 0.0) {
        return Err(format!("minutes must be finite and non-negative in {s:?}"));
    }
    Ok((f.trim().to_string(), m))
}

/// Median as the mean of the two middle values; p90 by nearest rank (ceil(0.9 n)).
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

fn p90(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

pub fn evaluate(alerts: &[Alert], labels: &[Label]) -> EvalReport {
    let by_id: BTreeMap<&str, &Label> = labels.iter().map(|l| (l.account_id.as_str(), l)).collect();
    let is_attack = |acct: &str| by_id.get(acct).is_some_and(|l| l.attack);

    // First detection per account, and the accounts named per action and kind.
    let mut first: BTreeMap<&str, Option<i64>> = BTreeMap::new();
    let mut per_action: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut per_kind: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in alerts {
        let det = parse_ms(&a.detected_at);
        for acct in &a.accounts {
            let e = first.entry(acct.as_str()).or_insert(det);
            if let Some(d) = det {
                *e = Some(e.map_or(d, |x| x.min(d)));
            }
            per_action
                .entry(a.recommended_action.as_str())
                .or_default()
                .insert(acct);
            per_kind.entry(a.kind.as_str()).or_default().insert(acct);
        }
    }
    for action in ["review", "throttle", "suspend"] {
        per_action.entry(action).or_default();
    }

    let flagged = first.len();
    let tp = first.keys().filter(|a| is_attack(a)).count();
    let unlabelled = first.keys().filter(|a| !by_id.contains_key(*a)).count();
    let attack_accounts = labels.iter().filter(|l| l.attack).count();

    let ttd = |l: &Label| -> Option<f64> {
        let start = parse_ms(l.attack_start.as_deref()?)?;
        let det = (*first.get(l.account_id.as_str())?)?;
        Some((det - start).max(0) as f64 / 60_000.0)
    };

    let mut fam: BTreeMap<(bool, &str), Vec<&Label>> = BTreeMap::new();
    for l in labels {
        fam.entry((l.attack, l.family.as_str()))
            .or_default()
            .push(l);
    }
    let mut all_ttd = Vec::new();
    let families = fam
        .iter()
        .map(|((attack, name), ls)| {
            let flagged_n = ls
                .iter()
                .filter(|l| first.contains_key(l.account_id.as_str()))
                .count();
            let mut t: Vec<f64> = if *attack {
                ls.iter().filter_map(|l| ttd(l)).collect()
            } else {
                Vec::new()
            };
            t.sort_by(f64::total_cmp);
            all_ttd.extend_from_slice(&t);
            FamilyReport {
                family: name.to_string(),
                attack: *attack,
                accounts: ls.len(),
                flagged: flagged_n,
                recall: if *attack {
                    ratio(flagged_n, ls.len())
                } else {
                    None
                },
                false_positives: if *attack { 0 } else { flagged_n },
                ttd_median_min: median(&t),
                ttd_p90_min: p90(&t),
                false_positive_accounts: if *attack {
                    Vec::new()
                } else {
                    ls.iter()
                        .filter(|l| first.contains_key(l.account_id.as_str()))
                        .map(|l| l.account_id.clone())
                        .collect()
                },
                ttd_minutes: t,
            }
        })
        .collect();
    all_ttd.sort_by(f64::total_cmp);

    let by_action: Vec<ActionReport> = per_action
        .iter()
        .map(|(action, accts)| {
            let tp = accts.iter().filter(|a| is_attack(a)).count();
            ActionReport {
                action: action.to_string(),
                flagged: accts.len(),
                true_positives: tp,
                false_positives: accts.len() - tp,
            }
        })
        .collect();
    let suspend_precision = by_action
        .iter()
        .find(|a| a.action == "suspend")
        .and_then(|a| ratio(a.true_positives, a.flagged));

    let precision = ratio(tp, flagged);
    let recall = ratio(tp, attack_accounts);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    EvalReport {
        alerts: alerts.len(),
        labelled_accounts: labels.len(),
        attack_accounts,
        flagged,
        true_positives: tp,
        false_positives: flagged - tp,
        unlabelled_flagged: unlabelled,
        false_negatives: attack_accounts
            - labels
                .iter()
                .filter(|l| l.attack && first.contains_key(l.account_id.as_str()))
                .count(),
        precision,
        recall,
        f1,
        ttd_median_min: median(&all_ttd),
        ttd_p90_min: p90(&all_ttd),
        by_action,
        suspend_precision,
        by_kind: per_kind
            .iter()
            .map(|(k, v)| (k.to_string(), v.len()))
            .collect(),
        families,
    }
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

impl EvalReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "alerts {}  labelled {}  attack {}  flagged {}  tp {}  fp {} (unlabelled {})  fn {}\n",
            self.alerts,
            self.labelled_accounts,
            self.attack_accounts,
            self.flagged,
            self.true_positives,
            self.false_positives,
            self.unlabelled_flagged,
            self.false_negatives
        ));
        s.push_str(&format!(
            "precision {}  recall {}  f1 {}  ttd median {} min  p90 {} min  suspend-precision {}\n",
            fmt_opt(self.precision, 3),
            fmt_opt(self.recall, 3),
            fmt_opt(self.f1, 3),
            fmt_opt(self.ttd_median_min, 1),
            fmt_opt(self.ttd_p90_min, 1),
            fmt_opt(self.suspend_precision, 3)
        ));
        let actions: Vec<String> = self
            .by_action
            .iter()
            .map(|a| {
                format!(
                    "{} {} (tp {} fp {})",
                    a.action, a.flagged, a.true_positives, a.false_positives
                )
            })
            .collect();
        s.push_str(&format!("actions: {}\n", actions.join(", ")));
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            s.push_str(&format!("kinds: {}\n", kinds.join(", ")));
        }
        s.push_str(&format!(
            "{:<18} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
            "family", "type", "accounts", "flagged", "recall", "ttd_med", "ttd_p90"
        ));
        for f in &self.families {
            let (kind, score) = if f.attack {
                ("attack", fmt_opt(f.recall, 3))
            } else {
                ("benign", format!("fp {}", f.false_positives))
            };
            s.push_str(&format!(
                "{:<18} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
                f.family,
                kind,
                f.accounts,
                f.flagged,
                score,
                fmt_opt(f.ttd_median_min, 1),
                fmt_opt(f.ttd_p90_min, 1)
            ));
        }
        s
    }

    pub fn check(&self, req: &Requirements) -> Vec<String> {
        let mut fails = Vec::new();
        if let (Some(min), Some(p)) = (req.min_precision, self.precision) {
            if p < min {
                fails.push(format!("precision {p:.3} < {min:.3}"));
            }
        }
        if let (Some(min), Some(r)) = (req.min_recall, self.recall) {
            if r < min {
                fails.push(format!("recall {r:.3} < {min:.3}"));
            }
        }
        for f in self.families.iter().filter(|f| f.attack) {
            if let (Some(min), Some(r)) = (req.family_recall_bar(&f.family), f.recall) {
                if r < min {
                    fails.push(format!("family {} recall {r:.3} < {min:.3}", f.family));
                }
            }
            if let (Some(max), Some(m)) = (req.max_median_ttd_minutes, f.ttd_median_min) {
                if m > max {
                    fails.push(format!(
                        "family {} median time to detect {m:.1} min > {max:.1} min",
                        f.family
                    ));
                }
            }
        }
        fails.extend(req.unknown_recall_families());
        let known = crate::sim::scenario_names();
        for (name, max) in &req.family_median_ttd {
            if !known.contains(&name.as_str()) {
                fails.push(format!("TTD family {name:?} is not a simulator family"));
                continue;
            }
            if let Some(m) = self
                .families
                .iter()
                .find(|f| &f.family == name && f.attack)
                .and_then(|f| f.ttd_median_min)
            {
                if m > *max {
                    fails.push(format!(
                        "family {name} median time to detect {m:.1} min > {max:.1} min"
                    ));
                }
            }
        }
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
                        "family {name} has {} false positives (required 0)",
                        f.flagged
                    ));
                }
            }
        }
        fails
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(id: &str, fam: &str, attack: bool, start: Option<&str>) -> Label {
        Label {
            account_id: id.into(),
            family: fam.into(),
            attack,
            attack_start: start.map(String::from),
        }
    }

    fn alert(accts: &[&str], action: &str, at: &str) -> Alert {
        Alert {
            alert_id: format!("a-{}", accts.join("-")),
            kind: if accts.len() > 1 {
                crate::alert::Kind::FakeAccountCluster
            } else {
                crate::alert::Kind::BulkExtraction
            },
            subject: accts[0].into(),
            accounts: accts.iter().map(|s| s.to_string()).collect(),
            severity: crate::alert::Severity::High,
            score: 0.9,
            recommended_action: action.parse().expect("an action"),
            detected_at: at.into(),
            window_start: at.into(),
            window_end: at.into(),
            evidence: serde_json::json!({}),
            detector_version: "t".into(),
        }
    }

    pub(super) fn fixture() -> (Vec<Alert>, Vec<Label>) {
        let labels = vec![
            label("a1", "hydra", true, Some("2026-11-02T00:00:00.000Z")),
            label("a2", "hydra", true, Some("2026-11-02T00:10:00.000Z")),
            label("a3", "hydra", true, Some("2026-11-02T00:00:00.000Z")),
            label(
                "a4",
                "single_harvester",
                true,
                Some("2026-11-02T01:00:00.000Z"),
            ),
            label("b1", "ordinary", false, None),
            label("b2", "ordinary", false, None),
            label("b3", "eval_run", false, None),
        ];
        let alerts = vec![
            // a1 first at 00:30, later again at 00:20 (earliest must win): ttd 20.
            alert(&["a1", "a2"], "suspend", "2026-11-02T00:30:00.000Z"),
            alert(&["a1"], "review", "2026-11-02T00:20:00Z"),
            // a2 detected before its attack start: floored at 0.
            alert(&["a2"], "throttle", "2026-11-02T00:05:00.000Z"),
            // a4 detected 60 min after start, in another offset notation.
            alert(&["a4"], "suspend", "2026-11-02T03:00:00.000+01:00"),
            alert(&["b3"], "suspend", "2026-11-02T02:00:00.000Z"),
            alert(&["zz"], "review", "2026-11-02T02:00:00.000Z"),
        ];
        (alerts, labels)
    }

    #[test]
    fn exact_numbers() {
        let (alerts, labels) = fixture();
        let r = evaluate(&alerts, &labels);
        assert_eq!(r.flagged, 5); // a1 a2 a4 b3 zz
        assert_eq!(r.true_positives, 3);
        assert_eq!(r.false_positives, 2);
        assert_eq!(r.unlabelled_flagged, 1);
        assert_eq!(r.false_negatives, 1);
        assert_eq!(r.precision, Some(0.6));
        assert_eq!(r.recall, Some(0.75));
        let f1 = r.f1.expect("f1");
        assert!((f1 - 2.0 * 0.6 * 0.75 / 1.35).abs() < 1e-12);
        // ttds: a1 20, a2 0, a4 60 -> median 20, p90 rank ceil(2.7)=3 -> 60.
        assert_eq!(r.ttd_median_min, Some(20.0));
        assert_eq!(r.ttd_p90_min, Some(60.0));
        let hydra = r
            .families
            .iter()
            .find(|f| f.family == "hydra")
            .expect("hydra");
        assert_eq!((hydra.accounts, hydra.flagged), (3, 2));
        assert_eq!(hydra.recall, Some(2.0 / 3.0));
        assert_eq!(hydra.ttd_median_min, Some(10.0));
        assert_eq!(hydra.ttd_p90_min, Some(20.0));
        let sh = r
            .families
            .iter()
            .find(|f| f.family == "single_harvester")
            .expect("sh");
        assert_eq!(sh.ttd_median_min, Some(60.0));
        let ev = r
            .families
            .iter()
            .find(|f| f.family == "eval_run")
            .expect("eval_run");
        assert_eq!((ev.flagged, ev.false_positives, ev.recall), (1, 1, None));
        let ord = r
            .families
            .iter()
            .find(|f| f.family == "ordinary")
            .expect("ordinary");
        assert_eq!(ord.false_positives, 0);
        let act = |n: &str| {
            r.by_action
                .iter()
                .find(|a| a.action == n)
                .cloned()
                .expect("action")
        };
        assert_eq!(
            (act("suspend").flagged, act("suspend").true_positives),
            (4, 3)
        );
        assert_eq!(
            (act("review").flagged, act("review").true_positives),
            (2, 1)
        );
        assert_eq!(
            (act("throttle").flagged, act("throttle").true_positives),
            (1, 1)
        );
        assert_eq!(r.suspend_precision, Some(0.75));
        assert_eq!(r.by_kind.get("fake_account_cluster"), Some(&2));
        assert_eq!(r.by_kind.get("bulk_extraction"), Some(&5));
        let text = r.to_text();
        assert!(text.contains("hydra") && text.contains("precision 0.600"));
    }

    #[test]
    fn check_requirements() {
        let (alerts, labels) = fixture();
        let r = evaluate(&alerts, &labels);
        let req = Requirements {
            min_precision: Some(0.5),
            min_recall: Some(0.7),
            min_family_recall: Some(0.9),
            max_median_ttd_minutes: Some(30.0),
            zero_fp_families: vec![
                "ordinary".into(),
                "eval_run".into(),
                "classroom".into(),
                "nope".into(),
            ],
            family_median_ttd: vec![("single_harvester".into(), 90.0), ("hydra".into(), 5.0)],
            family_min_recall: vec![],
        };
        let fails = r.check(&req);
        assert_eq!(fails.len(), 5, "{fails:?}");
        let own = Requirements {
            family_min_recall: vec![("hydra".into(), 0.0)],
            ..req.clone()
        };
        assert!(!r.check(&own).iter().any(|f| f.contains("hydra recall")));
        assert!(fails
            .iter()
            .any(|f| f.contains("hydra median time to detect 10.0")));
        assert!(fails.iter().any(|f| f.contains("hydra recall")));
        assert!(fails.iter().any(|f| f.contains("single_harvester median")));
        assert!(fails.iter().any(|f| f.contains("eval_run has 1")));
        assert!(fails.iter().any(|f| f.contains("\"nope\"")));
        let none = Requirements {
            min_precision: None,
            min_recall: None,
            min_family_recall: None,
            max_median_ttd_minutes: None,
            zero_fp_families: vec![],
            family_median_ttd: vec![],
            family_min_recall: vec![],
        };
        assert!(r.check(&none).is_empty());
    }

    #[test]
    fn empty_inputs() {
        let r = evaluate(&[], &[]);
        assert_eq!((r.precision, r.recall, r.f1), (None, None, None));
        assert_eq!(r.by_action.len(), 3);
        assert!(!r.to_text().is_empty());
    }

    #[test]
    fn readers() {
        let (alerts, labels) = fixture();
        let mut buf = Vec::new();
        for l in &labels {
            buf.extend(serde_json::to_vec(l).expect("ser"));
            buf.extend(b"\n\n");
        }
        assert_eq!(read_labels(&buf[..]).expect("labels"), labels);
        let mut ab = Vec::new();
        for a in &alerts {
            ab.extend(serde_json::to_vec(a).expect("ser"));
            ab.push(b'\n');
        }
        assert_eq!(read_alerts(&ab[..]).expect("alerts"), alerts);
        let arr = serde_json::to_vec(&alerts).expect("ser");
        assert_eq!(read_alerts(&arr[..]).expect("array"), alerts);
        assert!(matches!(
            read_alerts(&b"{\"x\":1}\n"[..]),
            Err(EvalError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            read_labels(&b"\n{bad\n"[..]),
            Err(EvalError::Parse { line: 2, .. })
        ));
        let mut bad = alerts[0].clone();
        bad.detected_at = "yesterday".into();
        let line = serde_json::to_vec(&bad).expect("ser");
        assert!(matches!(
            read_alerts(&line[..]),
            Err(EvalError::Time { .. })
        ));
    }
}
