//! Request events: the engine's input record, decoded from the contract's JSON or protobuf.
//!
//! Decoding validates everything that came from outside and fingerprints the prompt, so the
//! engine only ever sees a well-formed [`Event`] without prompt text.

pub mod decode;
pub mod json;
pub mod scan;
pub mod time;
pub mod wire;

use compact_str::CompactString;
use std::net::IpAddr;

use crate::fingerprint::PromptFingerprint;

pub use decode::{DecodeError, Decoder};

/// A validated request event, as the engine consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: CompactString,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
    pub account_id: CompactString,
    pub org_id: Option<CompactString>,
    pub account_created_ms: Option<i64>,
    pub ip: Option<IpAddr>,
    pub asn: Option<u32>,
    pub device_fingerprint: Option<CompactString>,
    pub payment_fingerprint: Option<CompactString>,
    pub email_domain: Option<CompactString>,
    pub model: Option<CompactString>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub conversation_turns: u32,
    pub prompt: PromptFingerprint,
    pub status: u16,
}

impl Event {
    /// A minimal event, for tests and benches.
    pub fn new(event_id: &str, ts_ms: i64, account_id: &str) -> Self {
        Self {
            event_id: event_id.into(),
            ts_ms,
            account_id: account_id.into(),
            org_id: None,
            account_created_ms: None,
            ip: None,
            asn: None,
            device_fingerprint: None,
            payment_fingerprint: None,
            email_domain: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            conversation_turns: 1,
            prompt: PromptFingerprint::default(),
            status: 200,
        }
    }
}
