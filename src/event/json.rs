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

/// A short JSON string field: borrowed from the input line when it has no escapes (no copy
/// while decoding), owned otherwise and when built in code (the simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonStr<'a> {
    Borrowed(&'a str),
    Owned(CompactString),
}

impl JsonStr<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Owned(s) => s,
        }
    }

    pub fn to_compact(&self) -> CompactString {
        match self {
            Self::Borrowed(s) => CompactString::from(*s),
            Self::Owned(s) => s.clone(),
        }
    }
}

impl std::ops::Deref for JsonStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<CompactString> for JsonStr<'_> {
    fn from(s: CompactString) -> Self {
        Self::Owned(s)
    }
}

impl From<String> for JsonStr<'_> {
    fn from(s: String) -> Self {
        Self::Owned(CompactString::from(s))
    }
}

impl<'a> From<&'a str> for JsonStr<'a> {
    fn from(s: &'a str) -> Self {
        Self::Borrowed(s)
    }
}

impl Serialize for JsonStr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonStr<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(JsonStr::Borrowed(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr::Owned(CompactString::from(v)))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr::Owned(CompactString::from(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A request event as JSON (one object per line). Unknown fields are ignored.
///
/// Short fields are borrowed from the input line when they have no escapes, as is the prompt
/// (it is only fingerprinted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestEventJson<'a> {
    #[serde(borrow)]
    pub event_id: Option<JsonStr<'a>>,
    pub ts: Option<JsonTime>,
    #[serde(borrow)]
    pub account_id: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub org_id: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub api_key_id: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_created_at: Option<JsonTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub ip: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub country: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub device_fingerprint: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub payment_fingerprint: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub email_domain: Option<JsonStr<'a>>,
    /// Borrowed: long, and only length-checked (no detector reads it).
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub model: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(borrow)]
    pub endpoint: Option<JsonStr<'a>>,
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
    #[serde(borrow)]
    pub prompt_simhash: Option<JsonStr<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
}
