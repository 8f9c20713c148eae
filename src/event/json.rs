//! The JSON form of the request event, exactly as the contract names its fields.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// `ts` and `account_created_at` may be an RFC 3339 string or epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum JsonTime {
    Millis(i64),
    Text(CompactString),
}

/// Hand-written rather than `#[serde(untagged)]`: untagged enums buffer the value and build
/// an error message for every variant that does not match, which dominated parsing time.
impl<'de> Deserialize<'de> for JsonTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = JsonTime;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 string or epoch milliseconds")
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<JsonTime, E> {
                Ok(JsonTime::Millis(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<JsonTime, E> {
                i64::try_from(v)
                    .map(JsonTime::Millis)
                    .map_err(|_| E::custom("timestamp out of range"))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JsonTime, E> {
                Ok(JsonTime::Text(CompactString::from(v)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A request event as JSON (one object per line). Unknown fields are ignored.
///
/// Short fields are `CompactString`s (inline up to 24 bytes, no allocation); the prompt is
/// borrowed from the input line when it has no escapes, since it is only fingerprinted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestEventJson<'a> {
    pub event_id: Option<CompactString>,
    pub ts: Option<JsonTime>,
    pub account_id: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_created_at: Option<JsonTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fingerprint: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_fingerprint: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_domain: Option<CompactString>,
    /// Borrowed: long, and only length-checked (no detector reads it).
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_turns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub prompt_text: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_simhash: Option<CompactString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
}
