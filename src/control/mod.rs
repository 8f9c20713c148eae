//! Control records from people: live allowlist entries and verdicts on alerts (contract
//! "Control records"). Parsing, the shared live allowlist the engine consults, and the bounded
//! memory of recent alerts that labels verdicts. No I/O: the Kafka side is `kafka::control`.
//!
//! An allowlist entry lives on a compacted topic keyed by its subject (`account:ID` or
//! `org:ID`); a tombstone removes it. Like the static `[[allowlist]]`, an entry is compared
//! with the event time of the decision: it silences alerts decided before its `expires_at`.
//! `created_at` is a record of when it was written, not a lower bound, so that an entry also
//! silences the backlog of a lagging consumer (the analyst meant the account, not a time).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::event::time::{format_ms, parse_rfc3339_ms};

/// Longest id (account, org, alert) accepted, as for events.
const MAX_ID: usize = 256;
/// Longest free text (reason, author, note) accepted.
const MAX_TEXT: usize = 4096;

/// Why a control record or verdict was rejected: a bounded set, the dead-letter `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("key `{0}` is not `account:ID` or `org:ID`")]
    BadKey(String),
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}`: {1}")]
    BadField(&'static str, String),
    #[error("field `{0}` is not RFC 3339: `{1}`")]
    BadTime(&'static str, String),
    #[error("the key names `{key}` but the value names `{value}`")]
    KeyMismatch { key: String, value: String },
}

impl ControlError {
    /// Bounded label for the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            ControlError::BadKey(_) => "bad_key",
            ControlError::NotJson(_) => "not_json",
            ControlError::Missing(_) => "missing_field",
            ControlError::BadField(..) => "bad_field",
            ControlError::BadTime(..) => "bad_time",
            ControlError::KeyMismatch { .. } => "key_mismatch",
        }
    }
}

/// What an allowlist entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Account(String),
    Org(String),
}

impl Subject {
    /// Parses a record key, `account:ID` or `org:ID`.
    pub fn from_key(key: &str) -> Result<Subject, ControlError> {
        let bad = || ControlError::BadKey(truncate(key, 80));
        let (kind, id) = key.split_once(':').ok_or_else(bad)?;
        if id.is_empty() || id.len() > MAX_ID {
            return Err(bad());
        }
        match kind {
            "account" => Ok(Subject::Account(id.to_string())),
            "org" => Ok(Subject::Org(id.to_string())),
            _ => Err(bad()),
        }
    }

    pub fn key(&self) -> String {
        format!("{}:{}", self.kind(), self.id())
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Account(_) => "account",
            Subject::Org(_) => "org",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Subject::Account(id) | Subject::Org(id) => id,
        }
    }
}

/// An allowlist entry as written on the control topic (contract field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRecord {
    pub subject_kind: String,
    pub subject: String,
    pub reason: String,
    pub author: String,
    pub created_at: String,
    pub expires_at: String,
}

/// The value as read: the contract's fields, and the short forms (`account`/`org`, `created`,
/// `expires`) that tools may write.
#[derive(Deserialize)]
struct RawAllow {
    subject_kind: Option<String>,
    subject: Option<String>,
    account: Option<String>,
    org: Option<String>,
    reason: Option<String>,
    author: Option<String>,
    #[serde(alias = "created")]
    created_at: Option<String>,
    #[serde(alias = "expires")]
    expires_at: Option<String>,
}

/// One entry in force (or expired, until compaction or a tombstone removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub subject: Subject,
    pub reason: String,
    pub author: String,
    pub created_ms: Option<i64>,
    pub expires_ms: i64,
}

impl Entry {
    /// The record to write for this entry.
    pub fn to_record(&self) -> AllowRecord {
        AllowRecord {
            subject_kind: self.subject.kind().to_string(),
            subject: self.subject.id().to_string(),
            reason: self.reason.clone(),
            author: self.author.clone(),
            created_at: self.created_ms.map(format_ms).unwrap_or_default(),
            expires_at: format_ms(self.expires_ms),
        }
    }
}

/// What one control record does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOp {
    Upsert(Entry),
    Remove(Subject),
}

/// Parses one record of the control topic: a key and a value, or a tombstone (no value).
pub fn parse_control(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<ControlOp, ControlError> {
    let key = key
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let subject = Subject::from_key(&key)?;
    let Some(value) = value else {
        return Ok(ControlOp::Remove(subject));
    };
    let raw: RawAllow = if looks_like_json(value) {
        serde_json::from_slice(value)
            .map_err(|e| ControlError::NotJson(truncate(&e.to_string(), 200)))?
    } else {
        let p = crate::proto::Control::decode(value)
            .map_err(|_| ControlError::NotJson("neither a JSON object nor protobuf".into()))?;
        RawAllow {
            subject_kind: Some(p.subject_kind).filter(|s| !s.is_empty()),
            subject: Some(p.subject).filter(|s| !s.is_empty()),
            account: None,
            org: None,
            reason: Some(p.reason),
            author: Some(p.author),
            created_at: p.created_at.map(proto_time),
            expires_at: p.expires_at.map(proto_time),
        }
    };
    let named = match (
        raw.subject_kind.as_deref(),
        raw.subject,
        raw.account,
        raw.org,
    ) {
        (Some("account"), Some(id), None, None) | (None, None, Some(id), None) => {
            Subject::Account(id)
        }
        (Some("org"), Some(id), None, None) | (None, None, None, Some(id)) => Subject::Org(id),
        (Some(k), Some(_), None, None) => {
            return Err(ControlError::BadField(
                "subject_kind",
                format!("`{}`: use account or org", truncate(k, 40)),
            ))
        }
        (None, None, None, None) => return Err(ControlError::Missing("subject")),
        _ => {
            return Err(ControlError::BadField(
                "subject",
                "give subject_kind and subject (or one of account, org)".into(),
            ))
        }
    };
    if named != subject {
        return Err(ControlError::KeyMismatch {
            key: subject.key(),
            value: truncate(&named.key(), 80),
        });
    }
    let reason = text("reason", raw.reason)?;
    let author = text("author", raw.author)?;
    let expires = raw.expires_at.ok_or(ControlError::Missing("expires_at"))?;
    let expires_ms = parse_rfc3339_ms(&expires)
        .ok_or_else(|| ControlError::BadTime("expires_at", truncate(&expires, 60)))?;
    let created_ms = match raw.created_at.filter(|c| !c.is_empty()) {
        Some(c) => Some(
            parse_rfc3339_ms(&c)
                .ok_or_else(|| ControlError::BadTime("created_at", truncate(&c, 60)))?,
        ),
        None => None,
    };
    Ok(ControlOp::Upsert(Entry {
        subject,
        reason,
        author,
        created_ms,
        expires_ms,
    }))
}

/// JSON starts with `{` (after spaces); protobuf never does for these messages (`{` would be
/// field 15 with wire type 3). A newline is protobuf's field 1, so it does not count as space.
fn looks_like_json(value: &[u8]) -> bool {
    value
        .iter()
        .find(|&&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .is_none_or(|&b| b == b'{')
}

fn proto_time(t: prost_types::Timestamp) -> String {
    // Saturating: the bytes come from anyone who can write to the topic.
    format_ms(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000),
    )
}

fn text(field: &'static str, v: Option<String>) -> Result<String, ControlError> {
    let v = v.ok_or(ControlError::Missing(field))?;
    if v.trim().is_empty() {
        return Err(ControlError::BadField(field, "must not be empty".into()));
    }
    if v.len() > MAX_TEXT {
        return Err(ControlError::BadField(field, "too long".into()));
    }
    Ok(v)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// When an entry expires, from the command line: RFC 3339, or a duration from `now_ms` such as
/// `90m`, `12h`, `7d`, `2w`. It must lie in the future.
pub fn parse_expiry(when: &str, now_ms: i64) -> Result<i64, String> {
    let when = when.trim();
    let ms = match parse_rfc3339_ms(when) {
        Some(ms) => ms,
        None => {
            let split = when
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| format!("`{when}`: give a unit, e.g. 7d"))?;
            let (n, unit) = when.split_at(split);
            let n: i64 = n.parse().map_err(|_| {
                format!("`{when}` is neither RFC 3339 nor a duration like 7d or 12h")
            })?;
            let unit_ms = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                _ => {
                    return Err(format!(
                        "`{when}` is neither RFC 3339 nor a duration like 7d or 12h"
                    ))
                }
            };
            n.checked_mul(unit_ms)
                .and_then(|d| now_ms.checked_add(d))
                .ok_or_else(|| format!("`{when}` is too far away"))?
        }
    };
    if ms <= now_ms {
        return Err(format!("`{when}` is not in the future"));
    }
    Ok(ms)
}

/// The live allowlist, shared between the control follower (writer) and every engine the
/// pipeline builds (readers). Cheap to clone; the check costs an atomic load while empty.
#[derive(Debug, Clone, Default)]
pub struct LiveAllowlist {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    len: AtomicUsize,
    entries: RwLock<HashMap<Subject, Entry>>,
}

impl LiveAllowlist {
    pub fn apply(&self, op: ControlOp) {
        let mut map = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match op {
            ControlOp::Upsert(e) => {
                map.insert(e.subject.clone(), e);
            }
            ControlOp::Remove(s) => {
                map.remove(&s);
            }
        }
        self.inner.len.store(map.len(), Ordering::Release);
    }

    /// Whether an entry for the account or its org is in force at `now_ms` (event time).
    pub fn allows(&self, account: &str, org: Option<&str>, now_ms: i64) -> bool {
        if self.inner.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let map = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        // Lookups by a borrowed key would need a second map per kind; an allocation per check
        // is fine here: the check runs only when an alert would be emitted.
        let hit = |s: Subject| map.get(&s).is_some_and(|e| now_ms < e.expires_ms);
        hit(Subject::Account(account.to_string()))
            || org.is_some_and(|o| hit(Subject::Org(o.to_string())))
    }

    /// Entries in force at `now_ms`, by key.
    pub fn in_force(&self, now_ms: i64) -> Vec<Entry> {
        let map = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Entry> = map
            .values()
            .filter(|e| now_ms < e.expires_ms)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.subject.cmp(&b.subject));
        v
    }

    pub fn count_in_force(&self, now_ms: i64) -> usize {
        let map = self.inner.entries.read().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|e| now_ms < e.expires_ms).count()
    }
}

/// An analyst's judgement of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    Confirmed,
    FalsePositive,
    Unsure,
}

impl Judgement {
    pub const ALL: [Judgement; 3] = [
        Judgement::Confirmed,
        Judgement::FalsePositive,
        Judgement::Unsure,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Judgement::Confirmed => "confirmed",
            Judgement::FalsePositive => "false_positive",
            Judgement::Unsure => "unsure",
        }
    }

    pub fn parse(s: &str) -> Option<Judgement> {
        Judgement::ALL.into_iter().find(|j| j.label() == s)
    }
}

/// Alert kinds and severities a verdict may name: metric labels, so a closed set.
pub const KINDS: [&str; 2] = ["bulk_extraction", "fake_account_cluster"];
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];
pub const UNKNOWN: &str = "unknown";

fn closed(set: &[&'static str], v: &str) -> Option<&'static str> {
    set.iter().copied().find(|s| *s == v)
}

/// A verdict record (contract "Verdict"), plus the optional `kind` and `severity` of the
/// alert, which `distillguard verdict` fills in when it knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub alert_id: String,
    pub verdict: Judgement,
    pub author: String,
    #[serde(alias = "time")]
    pub judged_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// A verdict checked: its closed-set labels resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedVerdict {
    pub verdict: Verdict,
    pub kind: Option<&'static str>,
    pub severity: Option<&'static str>,
}

/// Parses one record of the verdicts topic.
pub fn parse_verdict(value: Option<&[u8]>) -> Result<ParsedVerdict, ControlError> {
    let value = value.ok_or(ControlError::NotJson("empty value".into()))?;
    if !looks_like_json(value) {
        let p = crate::proto::Verdict::decode(value)
            .map_err(|_| ControlError::NotJson("neither a JSON object nor protobuf".into()))?;
        let verdict = Judgement::parse(&p.verdict).ok_or_else(|| {
            ControlError::BadField("verdict", "use confirmed, false_positive or unsure".into())
        })?;
        let json = Verdict {
            alert_id: p.alert_id,
            verdict,
            author: p.author,
            judged_at: p.judged_at.map(proto_time).unwrap_or_default(),
            note: p.note,
            kind: p.kind,
            severity: p.severity,
        };
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        return parse_verdict(Some(&bytes));
    }
    let v: Verdict = serde_json::from_slice(value).map_err(|e| {
        let msg = e.to_string();
        match msg.strip_prefix("missing field `") {
            Some(rest) => match rest.split('`').next() {
                Some("alert_id") => ControlError::Missing("alert_id"),
                Some("verdict") => ControlError::Missing("verdict"),
                Some("author") => ControlError::Missing("author"),
                _ => ControlError::Missing("judged_at"),
            },
            None if msg.contains("unknown variant") => {
                ControlError::BadField("verdict", "use confirmed, false_positive or unsure".into())
            }
            None => ControlError::NotJson(truncate(&msg, 200)),
        }
    })?;
    if v.alert_id.is_empty() || v.alert_id.len() > MAX_ID {
        return Err(ControlError::BadField(
            "alert_id",
            "empty or too long".into(),
        ));
    }
    text("author", Some(v.author.clone()))?;
    if parse_rfc3339_ms(&v.judged_at).is_none() {
        return Err(ControlError::BadTime(
            "judged_at",
            truncate(&v.judged_at, 60),
        ));
    }
    if v.note.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(ControlError::BadField("note", "too long".into()));
    }
    let kind = match v.kind.as_deref() {
        None => None,
        Some(k) => Some(closed(&KINDS, k).ok_or_else(|| {
            ControlError::BadField("kind", format!("`{}` is no alert kind", truncate(k, 40)))
        })?),
    };
    let severity = match v.severity.as_deref() {
        None => None,
        Some(s) => Some(closed(&SEVERITIES, s).ok_or_else(|| {
            ControlError::BadField("severity", format!("`{}` is no severity", truncate(s, 40)))
        })?),
    };
    Ok(ParsedVerdict {
        verdict: v,
        kind,
        severity,
    })
}

/// What is remembered of an emitted alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub kind: &'static str,
    pub severity: &'static str,
    pub accounts: Vec<String>,
}

/// The most recent alerts by id, at most `capacity` (oldest forgotten first), each with at
/// most `max_accounts` of its accounts: a cluster alert can name thousands, and only the ones
/// a verdict may act on are worth their memory.
#[derive(Debug, Clone)]
pub struct RecentAlerts {
    inner: Arc<Mutex<Recent>>,
}

#[derive(Debug)]
struct Recent {
    capacity: usize,
    max_accounts: usize,
    by_id: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

impl RecentAlerts {
    pub fn new(capacity: usize, max_accounts: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recent {
                capacity: capacity.max(1),
                max_accounts,
                by_id: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    pub fn remember(&self, alert: &crate::alert::Alert) {
        let (Some(kind), Some(severity)) = (
            closed(&KINDS, alert.kind.as_str()),
            closed(&SEVERITIES, alert.severity.as_str()),
        ) else {
            return;
        };
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rem = Remembered {
            kind,
            severity,
            accounts: alert.accounts[..alert.accounts.len().min(r.max_accounts)].to_vec(),
        };
        // An update of an alert (same id, redelivered) keeps its place.
        if r.by_id.insert(alert.alert_id.clone(), rem).is_none() {
            r.order.push_back(alert.alert_id.clone());
            while r.order.len() > r.capacity {
                if let Some(old) = r.order.pop_front() {
                    r.by_id.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, alert_id: &str) -> Option<Remembered> {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.by_id.get(alert_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_793_577_600_000; // 2026-11-02T00:00:00Z

    fn upsert(key: &str, value: &str) -> Result<ControlOp, ControlError> {
        parse_control(Some(key.as_bytes()), Some(value.as_bytes()))
    }

    #[test]
    fn contract_record_parses_and_round_trips() {
        let v = r#"{"subject_kind":"account","subject":"a1","reason":"T-1","author":"ann","created_at":"2026-11-01T00:00:00Z","expires_at":"2026-11-03T00:00:00Z"}"#;
        let ControlOp::Upsert(e) = upsert("account:a1", v).expect("parses") else {
            panic!("an upsert");
        };
        assert_eq!(e.subject, Subject::Account("a1".into()));
        assert_eq!(e.expires_ms, NOW + 86_400_000);
        let again = serde_json::to_vec(&e.to_record()).expect("json");
        assert_eq!(
            parse_control(Some(b"account:a1"), Some(&again)),
            Ok(ControlOp::Upsert(e))
        );
    }

    #[test]
    fn protobuf_records_parse() {
        use prost::Message as _;
        let ts = |ms: i64| prost_types::Timestamp {
            seconds: ms / 1000,
            nanos: 0,
        };
        let c = crate::proto::Control {
            subject_kind: "org".into(),
            subject: "o1".into(),
            reason: "r".into(),
            author: "a".into(),
            created_at: Some(ts(NOW)),
            expires_at: Some(ts(NOW + 60_000)),
        };
        let op = parse_control(Some(b"org:o1"), Some(&c.encode_to_vec())).expect("parses");
        assert!(matches!(op, ControlOp::Upsert(e) if e.expires_ms == NOW + 60_000));
        let v = crate::proto::Verdict {
            alert_id: "x1".into(),
            verdict: "confirmed".into(),
            author: "a".into(),
            judged_at: Some(ts(NOW)),
            ..Default::default()
        };
        let p = parse_verdict(Some(&v.encode_to_vec())).expect("parses");
        assert_eq!(p.verdict.verdict, Judgement::Confirmed);
        let bad = crate::proto::Verdict {
            verdict: "maybe".into(),
            ..v
        };
        assert_eq!(
            parse_verdict(Some(&bad.encode_to_vec())).map_err(|e| e.reason()),
            Err("bad_field")
        );
    }

    #[test]
    fn short_forms_parse() {
        let v = r#"{"org":"o1","reason":"r","author":"a","expires":"2026-11-03T00:00:00Z","created":"2026-11-01T00:00:00Z"}"#;
        assert!(
            matches!(upsert("org:o1", v), Ok(ControlOp::Upsert(e)) if e.subject == Subject::Org("o1".into()))
        );
    }

    #[test]
    fn tombstone_removes() {
        assert_eq!(
            parse_control(Some(b"org:o1"), None),
            Ok(ControlOp::Remove(Subject::Org("o1".into())))
        );
        let live = LiveAllowlist::default();
        live.apply(ControlOp::Upsert(Entry {
            subject: Subject::Org("o1".into()),
            reason: "r".into(),
            author: "a".into(),
            created_ms: None,
            expires_ms: NOW + 1000,
        }));
        assert!(live.allows("anyone", Some("o1"), NOW));
        live.apply(parse_control(Some(b"org:o1"), None).expect("tombstone"));
        assert!(!live.allows("anyone", Some("o1"), NOW));
    }

    #[test]
    fn malformed_records_name_a_reason() {
        let reason = |k: &str, v: Option<&str>| {
            parse_control(Some(k.as_bytes()), v.map(str::as_bytes))
                .expect_err("malformed")
                .reason()
        };
        assert_eq!(reason("user:x", None), "bad_key");
        assert_eq!(reason("account:", None), "bad_key");
        assert_eq!(reason("account:a", Some("not json")), "not_json");
        assert_eq!(
            reason(
                "account:a",
                Some(r#"{"account":"a","author":"x","expires_at":"2027-01-01T00:00:00Z"}"#)
            ),
            "missing_field"
        );
        assert_eq!(
            reason(
                "account:a",
                Some(r#"{"account":"a","reason":"r","author":"x","expires_at":"soon"}"#)
            ),
            "bad_time"
        );
        assert_eq!(
            reason(
                "account:a",
                Some(
                    r#"{"account":"b","reason":"r","author":"x","expires_at":"2027-01-01T00:00:00Z"}"#
                )
            ),
            "key_mismatch"
        );
        assert_eq!(
            reason(
                "account:a",
                Some(
                    r#"{"subject_kind":"user","subject":"a","reason":"r","author":"x","expires_at":"2027-01-01T00:00:00Z"}"#
                )
            ),
            "bad_field"
        );
        assert!(parse_control(None, None).is_err(), "no key");
    }

    #[test]
    fn entries_expire_by_themselves() {
        let live = LiveAllowlist::default();
        assert!(!live.allows("a1", None, NOW), "empty");
        live.apply(ControlOp::Upsert(Entry {
            subject: Subject::Account("a1".into()),
            reason: "r".into(),
            author: "a".into(),
            created_ms: Some(NOW),
            expires_ms: NOW + 60_000,
        }));
        assert!(live.allows("a1", None, NOW));
        assert!(live.allows("a1", Some("other-org"), NOW + 59_999));
        assert!(!live.allows("a1", None, NOW + 60_000), "expired");
        assert!(!live.allows("a2", None, NOW));
        assert_eq!(live.count_in_force(NOW), 1);
        assert_eq!(live.count_in_force(NOW + 60_000), 0);
        assert!(live.in_force(NOW + 60_000).is_empty());
    }

    #[test]
    fn expiry_parses_durations_and_rfc3339() {
        assert_eq!(parse_expiry("7d", NOW), Ok(NOW + 7 * 86_400_000));
        assert_eq!(parse_expiry("12h", NOW), Ok(NOW + 12 * 3_600_000));
        assert_eq!(parse_expiry("90m", NOW), Ok(NOW + 90 * 60_000));
        assert_eq!(parse_expiry("2w", NOW), Ok(NOW + 14 * 86_400_000));
        assert_eq!(
            parse_expiry("2026-11-03T00:00:00Z", NOW),
            Ok(NOW + 86_400_000)
        );
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "soon",
            "-1d",
            "2026-11-01T00:00:00Z",
            "0h",
        ] {
            assert!(parse_expiry(bad, NOW).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn verdicts_parse_and_reject_with_reasons() {
        let ok = parse_verdict(Some(
            br#"{"alert_id":"x1","verdict":"false_positive","author":"ann","judged_at":"2026-11-02T00:00:00Z","severity":"critical"}"#,
        ))
        .expect("parses");
        assert_eq!(ok.verdict.verdict, Judgement::FalsePositive);
        assert_eq!(ok.severity, Some("critical"));
        assert_eq!(ok.kind, None);
        let time_alias = parse_verdict(Some(
            br#"{"alert_id":"x1","verdict":"unsure","author":"ann","time":"2026-11-02T00:00:00Z"}"#,
        ));
        assert!(time_alias.is_ok(), "{time_alias:?}");
        let reason = |v: &str| parse_verdict(Some(v.as_bytes())).expect_err("bad").reason();
        assert_eq!(reason("{"), "not_json");
        assert_eq!(
            reason(r#"{"verdict":"unsure","author":"a","judged_at":"2026-11-02T00:00:00Z"}"#),
            "missing_field"
        );
        assert_eq!(
            reason(
                r#"{"alert_id":"x","verdict":"maybe","author":"a","judged_at":"2026-11-02T00:00:00Z"}"#
            ),
            "bad_field"
        );
        assert_eq!(
            reason(r#"{"alert_id":"x","verdict":"unsure","author":"a","judged_at":"now"}"#),
            "bad_time"
        );
        assert_eq!(
            reason(
                r#"{"alert_id":"x","verdict":"unsure","author":"a","judged_at":"2026-11-02T00:00:00Z","kind":"spam"}"#
            ),
            "bad_field"
        );
        assert!(parse_verdict(None).is_err());
    }

    #[test]
    fn recent_alerts_are_bounded() {
        let recent = RecentAlerts::new(2, 1);
        let alert = |id: &str| crate::alert::Alert {
            alert_id: id.into(),
            kind: crate::alert::Kind::BulkExtraction,
            subject: "a".into(),
            accounts: vec!["a".into(), "b".into()],
            severity: crate::alert::Severity::High,
            score: 0.8,
            recommended_action: crate::alert::Action::Throttle,
            detected_at: String::new(),
            window_start: String::new(),
            window_end: String::new(),
            evidence: serde_json::Value::Null,
            detector_version: String::new(),
        };
        for id in ["1", "2", "2", "3"] {
            recent.remember(&alert(id));
        }
        assert_eq!(recent.len(), 2);
        assert!(recent.get("1").is_none(), "oldest forgotten");
        assert_eq!(recent.get("3").map(|r| r.severity), Some("high"));
        assert_eq!(
            recent.get("3").map(|r| r.accounts),
            Some(vec!["a".to_string()]),
            "only the accounts a verdict may act on"
        );
    }
}
