//! Alerts: the contract's output record, its deterministic id, tiers and encodings.
//!
//! Kind, severity and action are closed sets: enums in memory, the contract's strings on the
//! wire (JSON by serde, protobuf by [`Alert::to_proto`]), parsed once where an alert is read.

pub mod valve;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::AlertConfig;
use crate::event::decode::ms_to_proto;
use crate::event::time::{format_ms, parse_rfc3339_ms};
use crate::proto;

/// A string read from outside that names no member of a closed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} `{value}`")]
pub struct UnknownValue {
    pub field: &'static str,
    pub value: String,
}

/// A closed set of contract strings: the enum, its wire form and its parser.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident, $field:literal { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The contract's string (also the metric label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        field: $field,
                        value: s.chars().take(64).collect(),
                    }),
                }
            }
        }
    };
}

wire_enum! {
    /// What an alert is about.
    Kind, "kind" {
        /// One account harvesting outputs.
        BulkExtraction = "bulk_extraction",
        /// Many accounts operated together.
        FakeAccountCluster = "fake_account_cluster",
    }
}

wire_enum! {
    /// How bad: the contract's four levels (`low` is never emitted today).
    Severity, "severity" {
        Low = "low",
        Medium = "medium",
        High = "high",
        Critical = "critical",
    }
}

wire_enum! {
    /// What downstream systems should do to the accounts named.
    Action, "recommended_action" {
        Review = "review",
        Throttle = "throttle",
        Suspend = "suspend",
    }
}

/// One decision about one account or one cluster of accounts (contract "Alert").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub alert_id: String,
    pub kind: Kind,
    pub subject: String,
    pub accounts: Vec<String>,
    pub severity: Severity,
    pub score: f64,
    pub recommended_action: Action,
    pub detected_at: String,
    pub window_start: String,
    pub window_end: String,
    pub evidence: serde_json::Value,
    pub detector_version: String,
}

/// Severity and action, ordered by escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Medium,
    High,
    Critical,
}

impl Tier {
    /// Tier from a score and the number of independent signals behind it. `suspend` needs
    /// both a high score and corroboration; anything less is throttled or sent for review.
    pub fn from_score(score: f64, signals: u32, cfg: &AlertConfig) -> Tier {
        if score >= cfg.suspend_score && signals >= cfg.suspend_min_signals {
            Tier::Critical
        } else if score >= cfg.throttle_score {
            Tier::High
        } else {
            Tier::Medium
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Tier::Medium => Severity::Medium,
            Tier::High => Severity::High,
            Tier::Critical => Severity::Critical,
        }
    }

    pub fn action(self) -> Action {
        match self {
            Tier::Medium => Action::Review,
            Tier::High => Action::Throttle,
            Tier::Critical => Action::Suspend,
        }
    }
}

/// Everything a detector decided, before it becomes an [`Alert`].
#[derive(Debug, Clone)]
pub struct Decision {
    pub kind: Kind,
    pub subject: String,
    pub accounts: Vec<String>,
    pub tier: Tier,
    pub score: f64,
    pub detected_at_ms: i64,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub evidence: serde_json::Value,
    pub detector_version: String,
}

impl Decision {
    /// The alert, with an id that depends only on what was decided (kind, subject, event time,
    /// detector version, severity, score, accounts): the same input and
    /// configuration give the same id, so consumers can de-duplicate redeliveries.
    pub fn into_alert(self) -> Alert {
        let score = (self.score.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
        let mut key = String::with_capacity(64 + self.accounts.len() * 16);
        key.push_str(self.kind.as_str());
        key.push('\0');
        key.push_str(&self.subject);
        key.push('\0');
        key.push_str(&self.detected_at_ms.to_string());
        key.push('\0');
        key.push_str(&self.detector_version);
        // Two decisions at the same event time (e.g. an escalation while the newest event
        // time stands still) must not share an id: a consumer de-duplicating by id would drop
        // the second.
        key.push('\0');
        key.push_str(self.tier.severity().as_str());
        key.push('\0');
        key.push_str(&format!("{score:.3}"));
        for a in &self.accounts {
            key.push('\0');
            key.push_str(a);
        }
        Alert {
            alert_id: format!("{:032x}", xxh3_128(key.as_bytes())),
            kind: self.kind,
            subject: self.subject,
            accounts: self.accounts,
            severity: self.tier.severity(),
            score,
            recommended_action: self.tier.action(),
            detected_at: format_ms(self.detected_at_ms),
            window_start: format_ms(self.window_start_ms),
            window_end: format_ms(self.window_end_ms),
            evidence: self.evidence,
            detector_version: self.detector_version,
        }
    }
}

impl Alert {
    /// The protobuf form (`distillguard.v1.Alert`).
    pub fn to_proto(&self) -> proto::Alert {
        let ts = |s: &str| parse_rfc3339_ms(s).map(ms_to_proto);
        proto::Alert {
            alert_id: self.alert_id.clone(),
            kind: self.kind.as_str().to_string(),
            subject: self.subject.clone(),
            accounts: self.accounts.clone(),
            severity: self.severity.as_str().to_string(),
            score: self.score,
            recommended_action: self.recommended_action.as_str().to_string(),
            detected_at: ts(&self.detected_at),
            window_start: ts(&self.window_start),
            window_end: ts(&self.window_end),
            evidence: match json_to_value(&self.evidence).kind {
                Some(prost_types::value::Kind::StructValue(s)) => Some(s),
                _ => None,
            },
            detector_version: self.detector_version.clone(),
        }
    }

    /// An alert read from the alerts topic in either encoding; `None` if it is not one.
    pub fn decode(bytes: &[u8], json: bool) -> Option<Alert> {
        if json {
            serde_json::from_slice::<Alert>(bytes).ok()
        } else {
            use prost::Message as _;
            proto::Alert::decode(bytes)
                .ok()
                .and_then(|p| Alert::from_proto(p).ok())
        }
    }

    /// From the protobuf form (for consumers of the alerts topic: the service after a
    /// rebalance, tests, the demo). A kind, severity or action outside the contract is an
    /// error, like an unknown string in the JSON form.
    pub fn from_proto(p: proto::Alert) -> Result<Alert, UnknownValue> {
        let ts = |t: Option<prost_types::Timestamp>| {
            // Saturating: the bytes may come from anyone who can write to the topic.
            t.map(|t| {
                format_ms(
                    t.seconds
                        .saturating_mul(1000)
                        .saturating_add(i64::from(t.nanos) / 1_000_000),
                )
            })
            .unwrap_or_default()
        };
        Ok(Alert {
            alert_id: p.alert_id,
            kind: p.kind.parse()?,
            subject: p.subject,
            accounts: p.accounts,
            severity: p.severity.parse()?,
            score: p.score,
            recommended_action: p.recommended_action.parse()?,
            detected_at: ts(p.detected_at),
            window_start: ts(p.window_start),
            window_end: ts(p.window_end),
            evidence: p.evidence.map_or(serde_json::Value::Null, |s| {
                value_to_json(&prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(s)),
                })
            }),
            detector_version: p.detector_version,
        })
    }

    /// One short line for people watching a terminal.
    pub fn one_line(&self) -> String {
        let summary = self
            .evidence
            .get("summary")
            .and_then(|s| s.as_str())
            .unwrap_or("");
        format!(
            "{} {:<20} {:<8} {:<8} score={:.2} accounts={:<5} subject={} | {}",
            self.detected_at,
            self.kind,
            self.severity,
            self.recommended_action,
            self.score,
            self.accounts.len(),
            self.subject,
            summary
        )
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
    }
}

/// A readable signal: its value against the threshold it was compared with.
pub fn signal(name: &str, value: f64, threshold: f64, crossed: bool) -> serde_json::Value {
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    serde_json::json!({
        "name": name,
        "value": round(value),
        "threshold": round(threshold),
        "crossed": crossed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Decision {
        Decision {
            kind: Kind::BulkExtraction,
            subject: "acct_1".into(),
            accounts: vec!["acct_1".into()],
            tier: Tier::High,
            score: 0.81234,
            detected_at_ms: 1_793_577_600_000,
            window_start_ms: 1_793_574_000_000,
            window_end_ms: 1_793_577_600_000,
            evidence: serde_json::json!({"summary": "x", "signals": [signal("requests_1h", 900.0, 150.0, true)]}),
            detector_version: "bulk_extraction/0.1.0+cfg.1".into(),
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = decision().into_alert();
        let b = decision().into_alert();
        assert_eq!(a.alert_id, b.alert_id);
        let mut d = decision();
        d.detected_at_ms += 1;
        assert_ne!(a.alert_id, d.into_alert().alert_id);
        assert_eq!(a.score, 0.812);
        assert_eq!(a.recommended_action, Action::Throttle);
        assert_eq!(a.detected_at, "2026-11-02T00:00:00.000Z");
    }

    #[test]
    fn suspend_needs_corroboration() {
        let cfg = AlertConfig::default();
        assert_eq!(Tier::from_score(0.95, 1, &cfg), Tier::High);
        assert_eq!(Tier::from_score(0.95, 5, &cfg), Tier::Critical);
        assert_eq!(Tier::from_score(0.65, 5, &cfg), Tier::Medium);
    }

    #[test]
    fn proto_form_keeps_fields() {
        let a = decision().into_alert();
        let p = a.to_proto();
        assert_eq!(p.alert_id, a.alert_id);
        assert_eq!(p.detected_at.expect("ts").seconds, 1_793_577_600);
        assert!(p.evidence.expect("struct").fields.contains_key("signals"));
    }

    #[test]
    fn closed_sets_keep_the_contract_strings_on_both_wires() {
        let a = decision().into_alert();
        let json: serde_json::Value = serde_json::to_value(&a).expect("json");
        assert_eq!(json["kind"], "bulk_extraction");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["recommended_action"], "throttle");
        let p = a.to_proto();
        assert_eq!(
            (
                p.kind.as_str(),
                p.severity.as_str(),
                p.recommended_action.as_str()
            ),
            ("bulk_extraction", "high", "throttle")
        );
        assert_eq!(Alert::from_proto(p).expect("decodes"), a);
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(*k));
        }
    }

    #[test]
    fn a_kind_outside_the_contract_is_rejected_not_guessed() {
        let mut p = decision().into_alert().to_proto();
        p.kind = "third_kind".into();
        let err = Alert::from_proto(p).expect_err("unknown kind");
        assert_eq!(err.field, "kind");
        let mut json = serde_json::to_value(decision().into_alert()).expect("json");
        json["recommended_action"] = "ban".into();
        assert!(serde_json::from_value::<Alert>(json).is_err());
    }
}
