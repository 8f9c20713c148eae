//! Decoding and validation of request events from JSON or protobuf bytes.

use compact_str::CompactString;
use std::net::IpAddr;

use super::json::{JsonStr, JsonTime, RequestEventJson};
use super::scan::{self, PromptAt};
use super::time::{in_range, parse_rfc3339_ms};
use super::wire::{RequestEventRef, Timestamp};
use super::Event;
use crate::fingerprint::{parse_simhash, Fingerprinter, PromptFingerprint};
use crate::proto;

/// Longest accepted id or short string field, in bytes.
pub const MAX_SHORT_FIELD: usize = 256;
/// Longest accepted `prompt_text`, in bytes.
pub const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Longest record (a JSON line or a protobuf message) decoded: the longest prompt and room for
/// every other field. `replay` reads no longer line; on Kafka a longer record is rejected
/// before any parsing.
pub const MAX_RECORD_BYTES: usize = MAX_PROMPT_BYTES + 64 * 1024;
/// Largest plausible token count for one request.
pub const MAX_TOKENS: i64 = 10_000_000;
/// Largest plausible number of conversation turns.
pub const MAX_TURNS: i64 = 100_000;
/// Deepest nesting of JSON arrays and objects accepted. Events are flat; only an unknown
/// field can nest, and sonic-rs recurses once per level, so a line of 100,000 brackets would
/// overflow a parser thread's stack. serde_json stops at the same depth.
pub const MAX_JSON_DEPTH: usize = 128;

thread_local! {
    /// Where escaped prompts are unescaped, reused from line to line.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Scratch capacity kept between lines (a rare huge prompt's buffer is let go).
const SCRATCH_KEEP: usize = 64 * 1024;

/// Why a record was rejected. [`DecodeError::reason`] is a bounded label for metrics and DLQ
/// headers; `Display` adds the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    #[error("not a valid protobuf RequestEvent: {0}")]
    InvalidProtobuf(String),
    #[error("required field `{0}` is missing or empty")]
    MissingField(&'static str),
    #[error("field `{0}` is not a valid timestamp")]
    BadTimestamp(&'static str),
    #[error("field `{0}` is longer than allowed")]
    TooLong(&'static str),
    #[error("field `{0}` is negative")]
    Negative(&'static str),
    #[error("field `{0}` has an absurd value")]
    Absurd(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    /// Decoding or processing the record panicked (a bug); the message is the panic's.
    #[error("internal error: {0}")]
    Internal(String),
    /// The service died on this record in an earlier run (see `kafka::guard`).
    #[error("the service died while processing this record before; skipped")]
    Poison,
}

impl DecodeError {
    /// Every value [`DecodeError::reason`] can take.
    pub const REASONS: &'static [&'static str] = &[
        "invalid_json",
        "invalid_protobuf",
        "missing_field",
        "bad_timestamp",
        "too_long",
        "negative_value",
        "absurd_value",
        "malformed_field",
        "too_deep",
        "internal_error",
        "poison_record",
    ];

    /// Bounded label, one of [`DecodeError::REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidProtobuf(_) => "invalid_protobuf",
            Self::MissingField(_) => "missing_field",
            Self::BadTimestamp(_) => "bad_timestamp",
            Self::TooLong(_) => "too_long",
            Self::Negative(_) => "negative_value",
            Self::Absurd(_) => "absurd_value",
            Self::Malformed(_) => "malformed_field",
            Self::TooDeep(_) => "too_deep",
            Self::Internal(_) => "internal_error",
            Self::Poison => "poison_record",
        }
    }
}

/// Environment variable naming a fault to inject while decoding, for tests of the service's
/// defences: `panic:TEXT` panics and `abort:TEXT` aborts the process on any record whose bytes
/// contain `TEXT`. Unset (the default), nothing is checked.
pub const DEBUG_FAULT_ENV: &str = "DISTILLGUARD_DEBUG_FAULT";

/// A fault injected on records containing a marker (see [`DEBUG_FAULT_ENV`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugFault {
    Panic(Vec<u8>),
    Abort(Vec<u8>),
}

impl DebugFault {
    /// The fault [`DEBUG_FAULT_ENV`] asks for, if any.
    pub fn from_env() -> Option<Self> {
        let v = std::env::var(DEBUG_FAULT_ENV).ok()?;
        match v.split_once(':') {
            Some(("panic", t)) if !t.is_empty() => Some(Self::Panic(t.as_bytes().to_vec())),
            Some(("abort", t)) if !t.is_empty() => Some(Self::Abort(t.as_bytes().to_vec())),
            _ => {
                tracing::warn!(value = %v, "{DEBUG_FAULT_ENV} is not panic:TEXT or abort:TEXT; ignored");
                None
            }
        }
    }

    fn fire(&self, bytes: &[u8]) {
        match self {
            Self::Panic(t) if memchr::memmem::find(bytes, t).is_some() => {
                panic!("{DEBUG_FAULT_ENV}: injected panic")
            }
            Self::Abort(t) if memchr::memmem::find(bytes, t).is_some() => {
                eprintln!("{DEBUG_FAULT_ENV}: injected abort");
                std::process::abort()
            }
            _ => {}
        }
    }
}

/// Decodes, validates and fingerprints events. Cheap to clone and share between threads.
#[derive(Debug, Clone)]
pub struct Decoder {
    fingerprinter: Fingerprinter,
    fault: Option<std::sync::Arc<DebugFault>>,
}

impl Decoder {
    pub fn new(fingerprinter: Fingerprinter) -> Self {
        Self {
            fingerprinter,
            fault: None,
        }
    }

    /// Injects `fault` (tests of the service's defences; see [`DEBUG_FAULT_ENV`]).
    pub fn with_debug_fault(mut self, fault: Option<DebugFault>) -> Self {
        self.fault = fault.map(std::sync::Arc::new);
        self
    }

    /// Decodes one JSON object (one line of a JSON Lines file). The prompt is borrowed from
    /// the input where it has no escapes: it is fingerprinted in place, never copied.
    pub fn decode_json(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if let Some(f) = &self.fault {
            f.fire(bytes);
        }
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::TooLong("record"));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            // The usual flat line: scanned in one pass, an escaped prompt unescaped into this
            // thread's buffer (see [`super::scan`]).
            if let Some(s) = scan::scan(bytes, scratch) {
                let prompt = s.prompt.map(|p| match p {
                    PromptAt::Line(l) => l,
                    PromptAt::Scratch => scratch.as_str(),
                });
                let out = self.validate_parts(s.raw, prompt);
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = String::new();
                }
                return out;
            }
            // Anything else: sonic-rs (SIMD JSON, about twice serde_json's speed) decides, once
            // the nesting is known to be shallow enough for its recursion.
            if scan::nesting_exceeds(bytes, MAX_JSON_DEPTH) {
                return Err(DecodeError::TooDeep(MAX_JSON_DEPTH));
            }
            let raw: RequestEventJson<'_> =
                sonic_rs::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
            self.from_json(raw)
        })
    }

    /// Validates an already parsed JSON event.
    pub fn from_json(&self, mut raw: RequestEventJson<'_>) -> Result<Event, DecodeError> {
        let prompt = raw.prompt_text.take();
        self.validate_parts(raw, prompt.as_deref())
    }

    fn validate_parts(
        &self,
        raw: RequestEventJson<'_>,
        prompt_text: Option<&str>,
    ) -> Result<Event, DecodeError> {
        let ts_ms = match raw.ts {
            Some(t) => json_time(&t, "ts")?,
            None => return Err(DecodeError::MissingField("ts")),
        };
        let account_created_ms = raw
            .account_created_at
            .as_ref()
            .map(|t| json_time(t, "account_created_at"))
            .transpose()?;
        let fields = Fields {
            event_id: raw.event_id,
            account_id: raw.account_id,
            org_id: raw.org_id,
            api_key_id: raw.api_key_id,
            ip: raw.ip,
            country: raw.country,
            device_fingerprint: raw.device_fingerprint,
            payment_fingerprint: raw.payment_fingerprint,
            email_domain: raw.email_domain,
            user_agent: raw.user_agent.as_deref().map(str::len),
            model: raw.model,
            endpoint: raw.endpoint,
            asn: raw.asn,
            input_tokens: raw.input_tokens,
            output_tokens: raw.output_tokens,
            conversation_turns: raw.conversation_turns,
            status: raw.status,
            prompt_simhash: raw.prompt_simhash,
        };
        self.build(fields, ts_ms, account_created_ms, prompt_text)
    }

    /// Decodes one protobuf `distillguard.v1.RequestEvent`. String fields are borrowed from
    /// `bytes` (see [`super::wire`]); the prompt is fingerprinted in place.
    pub fn decode_protobuf(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if let Some(f) = &self.fault {
            f.fire(bytes);
        }
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::TooLong("record"));
        }
        let raw = RequestEventRef::decode(bytes).map_err(|e| {
            if e.too_deep() {
                DecodeError::TooDeep(super::wire::MAX_GROUP_DEPTH)
            } else {
                DecodeError::InvalidProtobuf(e.to_string())
            }
        })?;
        let ts_ms = match &raw.ts {
            Some(t) => proto_time(t, "ts")?,
            None => return Err(DecodeError::MissingField("ts")),
        };
        let account_created_ms = raw
            .account_created_at
            .as_ref()
            .map(|t| proto_time(t, "account_created_at"))
            .transpose()?;
        fn s(v: Option<&str>) -> Option<JsonStr<'_>> {
            v.map(JsonStr::Borrowed)
        }
        let fields = Fields {
            event_id: Some(JsonStr::Borrowed(raw.event_id)),
            account_id: Some(JsonStr::Borrowed(raw.account_id)),
            org_id: s(raw.org_id),
            api_key_id: s(raw.api_key_id),
            ip: s(raw.ip),
            country: s(raw.country),
            device_fingerprint: s(raw.device_fingerprint),
            payment_fingerprint: s(raw.payment_fingerprint),
            email_domain: s(raw.email_domain),
            user_agent: raw.user_agent.map(str::len),
            model: s(raw.model),
            endpoint: s(raw.endpoint),
            asn: raw.asn.map(i64::from),
            input_tokens: raw
                .input_tokens
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            output_tokens: raw
                .output_tokens
                .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            conversation_turns: raw.conversation_turns.map(i64::from),
            status: raw.status.map(i64::from),
            prompt_simhash: s(raw.prompt_simhash),
        };
        self.build(fields, ts_ms, account_created_ms, raw.prompt_text)
    }

    fn build(
        &self,
        f: Fields,
        ts_ms: i64,
        account_created_ms: Option<i64>,
        prompt_text: Option<&str>,
    ) -> Result<Event, DecodeError> {
        let event_id = required(f.event_id, "event_id")?;
        let account_id = required(f.account_id, "account_id")?;
        let compact = |v: Option<JsonStr<'_>>| v.map(|s| s.to_compact());
        let org_id = compact(optional(f.org_id, "org_id")?);
        optional(f.api_key_id, "api_key_id")?;
        optional(f.country, "country")?;
        if f.user_agent.is_some_and(|n| n > MAX_SHORT_FIELD) {
            return Err(DecodeError::TooLong("user_agent"));
        }
        optional(f.endpoint, "endpoint")?;
        let device_fingerprint = compact(optional(f.device_fingerprint, "device_fingerprint")?);
        let payment_fingerprint = compact(optional(f.payment_fingerprint, "payment_fingerprint")?);
        let email_domain = compact(optional(f.email_domain, "email_domain")?);
        let model = compact(optional(f.model, "model")?);
        let ip = match optional(f.ip, "ip")? {
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| DecodeError::Malformed("ip"))?,
            ),
            None => None,
        };
        let asn = match f.asn {
            Some(v) => Some(u32::try_from(count(v, "asn", i64::from(u32::MAX))?).unwrap_or(0)),
            None => None,
        };
        let input_tokens = count(f.input_tokens.unwrap_or(0), "input_tokens", MAX_TOKENS)?;
        let output_tokens = count(f.output_tokens.unwrap_or(0), "output_tokens", MAX_TOKENS)?;
        let conversation_turns = count(
            f.conversation_turns.unwrap_or(1),
            "conversation_turns",
            MAX_TURNS,
        )?
        .max(1);
        let status = count(f.status.unwrap_or(200), "status", 999)?;
        let prompt = match prompt_text {
            Some(t) if t.len() > MAX_PROMPT_BYTES => {
                return Err(DecodeError::TooLong("prompt_text"))
            }
            Some(t) if !t.is_empty() => self.fingerprinter.fingerprint(t),
            _ => match optional(f.prompt_simhash, "prompt_simhash")? {
                Some(h) => Fingerprinter::from_simhash(
                    parse_simhash(&h).ok_or(DecodeError::Malformed("prompt_simhash"))?,
                ),
                None => PromptFingerprint::default(),
            },
        };
        Ok(Event {
            event_id,
            ts_ms,
            account_id,
            org_id,
            account_created_ms,
            ip,
            asn,
            device_fingerprint,
            payment_fingerprint,
            email_domain,
            model,
            input_tokens: u32::try_from(input_tokens).unwrap_or(u32::MAX),
            output_tokens: u32::try_from(output_tokens).unwrap_or(u32::MAX),
            conversation_turns: u32::try_from(conversation_turns).unwrap_or(u32::MAX),
            prompt,
            status: u16::try_from(status).unwrap_or(0),
        })
    }
}

/// The fields both wire forms share, before validation.
struct Fields<'a> {
    event_id: Option<JsonStr<'a>>,
    account_id: Option<JsonStr<'a>>,
    org_id: Option<JsonStr<'a>>,
    api_key_id: Option<JsonStr<'a>>,
    ip: Option<JsonStr<'a>>,
    country: Option<JsonStr<'a>>,
    device_fingerprint: Option<JsonStr<'a>>,
    payment_fingerprint: Option<JsonStr<'a>>,
    email_domain: Option<JsonStr<'a>>,
    /// Length only: nothing downstream reads it.
    user_agent: Option<usize>,
    model: Option<JsonStr<'a>>,
    endpoint: Option<JsonStr<'a>>,
    asn: Option<i64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    conversation_turns: Option<i64>,
    status: Option<i64>,
    prompt_simhash: Option<JsonStr<'a>>,
}

fn required(v: Option<JsonStr<'_>>, name: &'static str) -> Result<CompactString, DecodeError> {
    match optional(v, name)? {
        Some(s) => Ok(s.to_compact()),
        None => Err(DecodeError::MissingField(name)),
    }
}

/// Empty strings count as absent: protobuf cannot tell them apart.
fn optional<'a>(
    v: Option<JsonStr<'a>>,
    name: &'static str,
) -> Result<Option<JsonStr<'a>>, DecodeError> {
    match v {
        Some(s) if s.len() > MAX_SHORT_FIELD => Err(DecodeError::TooLong(name)),
        Some(s) if s.is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn count(v: i64, name: &'static str, max: i64) -> Result<i64, DecodeError> {
    if v < 0 {
        Err(DecodeError::Negative(name))
    } else if v > max {
        Err(DecodeError::Absurd(name))
    } else {
        Ok(v)
    }
}

fn json_time(t: &JsonTime, name: &'static str) -> Result<i64, DecodeError> {
    let ms = match t {
        JsonTime::Millis(ms) => *ms,
        JsonTime::Text(s) => parse_rfc3339_ms(s).ok_or(DecodeError::BadTimestamp(name))?,
    };
    if in_range(ms) {
        Ok(ms)
    } else {
        Err(DecodeError::BadTimestamp(name))
    }
}

fn proto_time(t: &Timestamp, name: &'static str) -> Result<i64, DecodeError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(DecodeError::BadTimestamp(name));
    }
    let ms = t
        .seconds
        .checked_mul(1000)
        .and_then(|s| s.checked_add(i64::from(t.nanos / 1_000_000)))
        .ok_or(DecodeError::BadTimestamp(name))?;
    if in_range(ms) {
        Ok(ms)
    } else {
        Err(DecodeError::BadTimestamp(name))
    }
}

/// Epoch milliseconds as a protobuf timestamp.
pub fn ms_to_proto(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// Converts a JSON event into its protobuf form (used by the simulator's Kafka feed and the
/// benches). Fails like decoding would on timestamps and negative counts.
pub fn json_to_proto(raw: &RequestEventJson<'_>) -> Result<proto::RequestEvent, DecodeError> {
    let ts = match &raw.ts {
        Some(t) => ms_to_proto(json_time(t, "ts")?),
        None => return Err(DecodeError::MissingField("ts")),
    };
    let created = raw
        .account_created_at
        .as_ref()
        .map(|t| json_time(t, "account_created_at").map(ms_to_proto))
        .transpose()?;
    let s = |v: &Option<JsonStr<'_>>| v.as_deref().map(str::to_string);
    let u = |v: Option<i64>, name| -> Result<Option<u64>, DecodeError> {
        v.map(|x| u64::try_from(x).map_err(|_| DecodeError::Negative(name)))
            .transpose()
    };
    let u32_of = |v: Option<i64>, name| -> Result<Option<u32>, DecodeError> {
        v.map(|x| u32::try_from(x).map_err(|_| DecodeError::Absurd(name)))
            .transpose()
    };
    Ok(proto::RequestEvent {
        event_id: raw.event_id.as_deref().unwrap_or_default().to_string(),
        ts: Some(ts),
        account_id: raw.account_id.as_deref().unwrap_or_default().to_string(),
        org_id: s(&raw.org_id),
        api_key_id: s(&raw.api_key_id),
        account_created_at: created,
        ip: s(&raw.ip),
        asn: u32_of(raw.asn, "asn")?,
        country: s(&raw.country),
        device_fingerprint: s(&raw.device_fingerprint),
        payment_fingerprint: s(&raw.payment_fingerprint),
        email_domain: s(&raw.email_domain),
        user_agent: raw.user_agent.as_deref().map(str::to_string),
        model: s(&raw.model),
        endpoint: s(&raw.endpoint),
        input_tokens: u(raw.input_tokens, "input_tokens")?,
        output_tokens: u(raw.output_tokens, "output_tokens")?,
        conversation_turns: u32_of(raw.conversation_turns, "conversation_turns")?,
        prompt_text: raw.prompt_text.as_deref().map(str::to_string),
        prompt_simhash: s(&raw.prompt_simhash),
        status: u32_of(raw.status, "status")?,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn every_reason_is_listed() {
        for e in [
            DecodeError::InvalidJson(String::new()),
            DecodeError::InvalidProtobuf(String::new()),
            DecodeError::MissingField("x"),
            DecodeError::BadTimestamp("x"),
            DecodeError::TooLong("x"),
            DecodeError::Negative("x"),
            DecodeError::Absurd("x"),
            DecodeError::Malformed("x"),
            DecodeError::TooDeep(1),
            DecodeError::Internal(String::new()),
            DecodeError::Poison,
        ] {
            assert!(DecodeError::REASONS.contains(&e.reason()), "{}", e.reason());
        }
    }

    use super::*;
    use crate::fingerprint::DEFAULT_REASONING_LEXICON;

    fn dec() -> Decoder {
        Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"))
    }

    #[test]
    fn decodes_a_full_json_event() {
        let line = br#"{"event_id":"e1","ts":"2026-11-02T00:00:01.000Z","account_id":"a1","org_id":"o1","ip":"10.1.2.3","asn":64500,"device_fingerprint":"t13d","input_tokens":10,"output_tokens":900,"conversation_turns":1,"prompt_text":"Think step by step: why is the sky blue?","unknown_field":true}"#;
        let e = dec().decode_json(line).expect("valid");
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.account_id, "a1");
        assert_eq!(e.ts_ms, 1_793_577_601_000);
        assert_eq!(e.output_tokens, 900);
        assert!(e.prompt.reasoning);
        assert_eq!(e.ip, Some("10.1.2.3".parse().expect("ip")));
    }

    #[test]
    fn epoch_millis_and_simhash() {
        let e = dec()
            .decode_json(br#"{"event_id":"e","ts":1793577601000,"account_id":"a","prompt_simhash":"00000000000000ff"}"#)
            .expect("valid");
        assert_eq!(e.ts_ms, 1_793_577_601_000);
        assert_eq!(e.prompt.simhash, 255);
    }

    #[test]
    fn rejects_with_reasons() {
        let d = dec();
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "invalid_json"),
            (br#"{"ts":"2026-11-02T00:00:01Z","account_id":"a"}"#, "missing_field"),
            (br#"{"event_id":"e","ts":"2026-11-02T00:00:01Z"}"#, "missing_field"),
            (br#"{"event_id":"e","account_id":"a"}"#, "missing_field"),
            (br#"{"event_id":"e","ts":"last tuesday","account_id":"a"}"#, "bad_timestamp"),
            (br#"{"event_id":"e","ts":99,"account_id":"a"}"#, "bad_timestamp"),
            (br#"{"event_id":"e","ts":1793577601000,"account_id":"a","output_tokens":-5}"#, "negative_value"),
            (br#"{"event_id":"e","ts":1793577601000,"account_id":"a","input_tokens":99999999999}"#, "absurd_value"),
            (br#"{"event_id":"e","ts":1793577601000,"account_id":"a","ip":"999.1.1.1"}"#, "malformed_field"),
            (br#"{"event_id":"e","ts":1793577601000,"account_id":"a","prompt_simhash":"zz"}"#, "malformed_field"),
        ];
        for (line, reason) in cases {
            let err = d.decode_json(line).expect_err("must be rejected");
            assert_eq!(err.reason(), *reason, "{}", String::from_utf8_lossy(line));
        }
        let long_id = format!(
            r#"{{"event_id":"{}","ts":1793577601000,"account_id":"a"}}"#,
            "x".repeat(300)
        );
        assert_eq!(
            d.decode_json(long_id.as_bytes())
                .expect_err("long")
                .reason(),
            "too_long"
        );
        let huge = format!(
            r#"{{"event_id":"e","ts":1793577601000,"account_id":"a","prompt_text":"{}"}}"#,
            "y".repeat(MAX_PROMPT_BYTES + 1)
        );
        assert_eq!(
            d.decode_json(huge.as_bytes()).expect_err("huge").reason(),
            "too_long"
        );
    }

    #[test]
    fn protobuf_round_trip_matches_json() {
        let d = dec();
        let line = br#"{"event_id":"e1","ts":"2026-11-02T00:00:01.250Z","account_id":"a1","account_created_at":"2026-10-01T00:00:00Z","ip":"2001:db8::1","input_tokens":10,"output_tokens":900,"prompt_text":"show your reasoning about tides"}"#;
        let raw: RequestEventJson = serde_json::from_slice(line).expect("json");
        let pb = json_to_proto(&raw).expect("converts").encode_to_vec();
        assert_eq!(
            d.decode_protobuf(&pb).expect("pb"),
            d.decode_json(line).expect("json")
        );
        assert_eq!(
            d.decode_protobuf(b"\xff\xff\xff")
                .expect_err("garbage")
                .reason(),
            "invalid_protobuf"
        );
        assert_eq!(
            d.decode_protobuf(&[]).expect_err("empty").reason(),
            "missing_field"
        );
    }
}
