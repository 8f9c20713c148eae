//! `distillguard.v1.RequestEvent` decoded from protobuf bytes without a copy: string fields
//! are borrowed from the message.
//!
//! prost's generated `RequestEvent::decode` allocates a `String` for each of up to 15 string
//! fields (the prompt among them, read only to be fingerprinted), which cost more than the
//! engine's whole per-event work. This walks the same wire format with prost's own primitives
//! (`decode_key`, `decode_varint`, `skip_field`) and keeps prost's semantics: the last value
//! of a repeated scalar wins, a repeated message merges, unknown fields are skipped, wrong wire
//! types and invalid UTF-8 are errors. A property test holds it to prost's decoder.

use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// Why bytes are not a `RequestEvent`, naming the field where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    field: Option<&'static str>,
    what: String,
    too_deep: bool,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(f, "RequestEvent.{field}: {}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for WireError {}

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        Self::new(e.to_string())
    }
}

impl WireError {
    #[cold]
    fn new(what: impl Into<String>) -> Self {
        Self {
            field: None,
            what: what.into(),
            too_deep: false,
        }
    }

    /// Unknown groups nested deeper than [`MAX_GROUP_DEPTH`].
    pub fn too_deep(&self) -> bool {
        self.too_deep
    }
}

/// Deepest nesting of unknown groups skipped: prost's recursion limit, so that what this
/// module accepts stays exactly what prost accepts.
pub const MAX_GROUP_DEPTH: usize = 100;

/// Skips an unknown field without recursion: groups nest by a stack of their tags, every other
/// wire type goes through prost. `base` is how deep in messages the field is (0 at the top),
/// so the limit is prost's: a field inside `MAX_GROUP_DEPTH - base` groups is too deep.
fn skip(wire: WireType, tag: u32, buf: &mut &[u8], base: usize) -> Result<(), DecodeError> {
    match wire {
        WireType::StartGroup => {}
        WireType::EndGroup => return Err(DecodeError::new("unexpected end group tag")),
        _ => return Ok(skip_field(wire, tag, buf, DecodeContext::default())?),
    }
    let limit = MAX_GROUP_DEPTH.saturating_sub(base);
    let mut open = vec![tag];
    while let Some(&top) = open.last() {
        let (t, w) = decode_key(buf)?;
        if w == WireType::EndGroup {
            if t != top {
                return Err(DecodeError::new("unexpected end group tag"));
            }
            open.pop();
            continue;
        }
        if open.len() >= limit {
            let mut e = DecodeError::new("recursion limit reached");
            e.too_deep = true;
            return Err(e);
        }
        match w {
            WireType::StartGroup => open.push(t),
            _ => skip_field(w, t, buf, DecodeContext::default())?,
        }
    }
    Ok(())
}

type DecodeError = WireError;

/// `google.protobuf.Timestamp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

/// The fields of a `RequestEvent`, strings borrowed from the message bytes. Same field types
/// as prost's generated struct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEventRef<'a> {
    pub event_id: &'a str,
    pub ts: Option<Timestamp>,
    pub account_id: &'a str,
    pub org_id: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub account_created_at: Option<Timestamp>,
    pub ip: Option<&'a str>,
    pub asn: Option<u32>,
    pub country: Option<&'a str>,
    pub device_fingerprint: Option<&'a str>,
    pub payment_fingerprint: Option<&'a str>,
    pub email_domain: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub model: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub conversation_turns: Option<u32>,
    pub prompt_text: Option<&'a str>,
    pub prompt_simhash: Option<&'a str>,
    pub status: Option<u32>,
}

impl<'a> RequestEventRef<'a> {
    /// Decodes a whole message (as `prost::Message::decode` does).
    pub fn decode(mut buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut ev = Self::default();
        while !buf.is_empty() {
            let (tag, wire) = decode_key(&mut buf)?;
            ev.field(tag, wire, &mut buf)
                .map_err(|e| with_field(e, tag))?;
        }
        Ok(ev)
    }

    fn field(&mut self, tag: u32, wire: WireType, buf: &mut &'a [u8]) -> Result<(), DecodeError> {
        let s = |buf: &mut &'a [u8]| string(wire, buf);
        match tag {
            1 => self.event_id = s(buf)?,
            2 => timestamp(self.ts.get_or_insert_with(Timestamp::default), wire, buf)?,
            3 => self.account_id = s(buf)?,
            4 => self.org_id = Some(s(buf)?),
            5 => self.api_key_id = Some(s(buf)?),
            6 => timestamp(
                self.account_created_at
                    .get_or_insert_with(Timestamp::default),
                wire,
                buf,
            )?,
            7 => self.ip = Some(s(buf)?),
            8 => self.asn = Some(varint(wire, buf)? as u32),
            9 => self.country = Some(s(buf)?),
            10 => self.device_fingerprint = Some(s(buf)?),
            11 => self.payment_fingerprint = Some(s(buf)?),
            12 => self.email_domain = Some(s(buf)?),
            13 => self.user_agent = Some(s(buf)?),
            14 => self.model = Some(s(buf)?),
            15 => self.endpoint = Some(s(buf)?),
            16 => self.input_tokens = Some(varint(wire, buf)?),
            17 => self.output_tokens = Some(varint(wire, buf)?),
            18 => self.conversation_turns = Some(varint(wire, buf)? as u32),
            19 => self.prompt_text = Some(s(buf)?),
            20 => self.prompt_simhash = Some(s(buf)?),
            21 => self.status = Some(varint(wire, buf)? as u32),
            _ => skip(wire, tag, buf, 0)?,
        }
        Ok(())
    }
}

/// Names the field in the error.
fn with_field(mut e: DecodeError, tag: u32) -> DecodeError {
    let name = match tag {
        1 => "event_id",
        2 => "ts",
        3 => "account_id",
        4 => "org_id",
        5 => "api_key_id",
        6 => "account_created_at",
        7 => "ip",
        8 => "asn",
        9 => "country",
        10 => "device_fingerprint",
        11 => "payment_fingerprint",
        12 => "email_domain",
        13 => "user_agent",
        14 => "model",
        15 => "endpoint",
        16 => "input_tokens",
        17 => "output_tokens",
        18 => "conversation_turns",
        19 => "prompt_text",
        20 => "prompt_simhash",
        21 => "status",
        _ => return e,
    };
    e.field = e.field.or(Some(name));
    e
}

fn check(expected: WireType, actual: WireType) -> Result<(), DecodeError> {
    if expected == actual {
        Ok(())
    } else {
        Err(DecodeError::new(format!(
            "invalid wire type {actual:?} (expected {expected:?})"
        )))
    }
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    check(WireType::Varint, wire)?;
    Ok(decode_varint(buf)?)
}

/// A length-delimited field's bytes, taken off the front of `buf`.
fn delimited<'a>(wire: WireType, buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    check(WireType::LengthDelimited, wire)?;
    let len = decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| DecodeError::new("buffer underflow"))?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn string<'a>(wire: WireType, buf: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(delimited(wire, buf)?)
        .map_err(|_| DecodeError::new("invalid string value: data is not UTF-8 encoded"))
}

/// Merges a `google.protobuf.Timestamp` into `t` (a repeated message field merges).
fn timestamp(t: &mut Timestamp, wire: WireType, buf: &mut &[u8]) -> Result<(), DecodeError> {
    let mut msg = delimited(wire, buf)?;
    while msg.has_remaining() {
        let (tag, wire) = decode_key(&mut msg)?;
        match tag {
            1 => t.seconds = varint(wire, &mut msg)? as i64,
            2 => t.nanos = varint(wire, &mut msg)? as i32,
            _ => skip(wire, tag, &mut msg, 1)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use proptest::prelude::*;
    use prost::Message;

    fn ts(t: Option<Timestamp>) -> Option<prost_types::Timestamp> {
        t.map(|t| prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        })
    }

    /// prost's decoded message, as this module would give it.
    fn same(r: &RequestEventRef<'_>, p: &proto::RequestEvent) -> bool {
        let o = |v: Option<&str>| v.map(str::to_string);
        let mine = proto::RequestEvent {
            event_id: r.event_id.to_string(),
            ts: ts(r.ts),
            account_id: r.account_id.to_string(),
            org_id: o(r.org_id),
            api_key_id: o(r.api_key_id),
            account_created_at: ts(r.account_created_at),
            ip: o(r.ip),
            asn: r.asn,
            country: o(r.country),
            device_fingerprint: o(r.device_fingerprint),
            payment_fingerprint: o(r.payment_fingerprint),
            email_domain: o(r.email_domain),
            user_agent: o(r.user_agent),
            model: o(r.model),
            endpoint: o(r.endpoint),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            conversation_turns: r.conversation_turns,
            prompt_text: o(r.prompt_text),
            prompt_simhash: o(r.prompt_simhash),
            status: r.status,
        };
        mine == *p
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,40}")
    }

    fn stamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
        proptest::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        )
    }

    prop_compose! {
        fn event()(
            ids in (".{0,30}", ".{0,30}"),
            ts in stamp(),
            created in stamp(),
            a in (text(), text(), text(), text(), text(), text()),
            b in (text(), text(), text(), text(), text(), text()),
            n in (proptest::option::of(any::<u32>()), proptest::option::of(any::<u64>()),
                  proptest::option::of(any::<u64>()), proptest::option::of(any::<u32>()),
                  proptest::option::of(any::<u32>())),
        ) -> proto::RequestEvent {
            proto::RequestEvent {
                event_id: ids.0,
                ts,
                account_id: ids.1,
                org_id: a.0,
                api_key_id: a.1,
                account_created_at: created,
                ip: a.2,
                asn: n.0,
                country: a.3,
                device_fingerprint: a.4,
                payment_fingerprint: a.5,
                email_domain: b.0,
                user_agent: b.1,
                model: b.2,
                endpoint: b.3,
                input_tokens: n.1,
                output_tokens: n.2,
                conversation_turns: n.3,
                prompt_text: b.4,
                prompt_simhash: b.5,
                status: n.4,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_prost_on_encoded_events(ev in event()) {
            let bytes = ev.encode_to_vec();
            let mine = RequestEventRef::decode(&bytes).expect("decodes");
            prop_assert!(same(&mine, &ev), "{mine:?} vs {ev:?}");
        }

        /// Concatenated messages merge (last scalar wins, timestamps merge), and arbitrary
        /// bytes are accepted or rejected exactly as prost does.
        #[test]
        fn agrees_with_prost_on_any_bytes(
            a in event(),
            b in event(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = a.encode_to_vec();
            bytes.extend(b.encode_to_vec());
            let merged = proto::RequestEvent::decode(bytes.as_slice()).expect("prost decodes");
            let mine = RequestEventRef::decode(&bytes).expect("decodes");
            prop_assert!(same(&mine, &merged));
            for input in [noise.clone(), {
                let mut t = bytes[..cut.index(bytes.len() + 1)].to_vec();
                t.extend(&noise);
                t
            }] {
                let theirs = proto::RequestEvent::decode(input.as_slice());
                let mine = RequestEventRef::decode(&input);
                match (&mine, &theirs) {
                    (Ok(m), Ok(p)) => prop_assert!(same(m, p)),
                    (Err(_), Err(_)) => {}
                    _ => prop_assert!(false, "{input:?}: {mine:?} vs {theirs:?}"),
                }
            }
        }
    }

    #[test]
    fn nested_unknown_groups_are_skipped_up_to_prosts_limit() {
        // field 99 as a start group (wire type 3) and its end (wire type 4), n deep.
        let groups = |n: usize| {
            let mut b = Vec::new();
            for _ in 0..n {
                b.extend([0x9b, 0x06]);
            }
            for _ in 0..n {
                b.extend([0x9c, 0x06]);
            }
            b
        };
        for n in [1, 50, 99, 100, 101, 100_000] {
            let bytes = groups(n);
            let mine = RequestEventRef::decode(&bytes);
            let theirs = proto::RequestEvent::decode(bytes.as_slice());
            assert_eq!(
                mine.is_ok(),
                theirs.is_ok(),
                "depth {n}: {mine:?} vs {theirs:?}"
            );
            if let Err(e) = mine {
                assert!(e.too_deep(), "depth {n}: {e}");
            }
        }
        // Inside the timestamp message, one level less.
        for n in [98, 99, 100] {
            let inner = groups(n);
            let mut bytes = vec![0x12];
            prost::encoding::encode_varint(inner.len() as u64, &mut bytes);
            bytes.extend(&inner);
            let mine = RequestEventRef::decode(&bytes);
            let theirs = proto::RequestEvent::decode(bytes.as_slice());
            assert_eq!(
                mine.is_ok(),
                theirs.is_ok(),
                "ts depth {n}: {mine:?} vs {theirs:?}"
            );
        }
        // An unterminated group and a mismatched end are errors, not too deep.
        for bytes in [vec![0x9b, 0x06], vec![0x9b, 0x06, 0xa4, 0x06]] {
            let e = RequestEventRef::decode(&bytes).expect_err("malformed group");
            assert!(!e.too_deep());
            assert!(proto::RequestEvent::decode(bytes.as_slice()).is_err());
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_wrong_wire_types_rejected() {
        let ev = proto::RequestEvent {
            event_id: "e".into(),
            account_id: "a".into(),
            ..Default::default()
        };
        let mut bytes = ev.encode_to_vec();
        // field 99, varint 5; field 98, length-delimited "xy"
        bytes.extend([0x98, 0x06, 5, 0x92, 0x06, 2, b'x', b'y']);
        let r = RequestEventRef::decode(&bytes).expect("unknown fields skipped");
        assert_eq!((r.event_id, r.account_id), ("e", "a"));
        // event_id (field 1) as a varint
        assert!(RequestEventRef::decode(&[0x08, 1]).is_err());
        assert!(proto::RequestEvent::decode(&[0x08u8, 1][..]).is_err());
        // invalid UTF-8 in a string
        assert!(RequestEventRef::decode(&[0x0a, 1, 0xff]).is_err());
    }
}
