//! A fast path for the usual shape of a JSON event line: one flat object whose values are
//! strings, integers and nulls.
//!
//! sonic-rs with serde's derived visitor spends about twice as long on a line as fingerprinting
//! its prompt does, mostly matching field names and copying escaped prompts into fresh
//! `String`s. This scanner reads the same lines in one pass and unescapes a prompt into a
//! buffer the caller reuses. It accepts a strict subset of JSON and *declines* (returns `None`)
//! on anything else: floats, exponents, nested values, escapes in keys, duplicate fields, a
//! value of an unexpected type, invalid UTF-8, control characters, trailing bytes. Declined
//! lines go to sonic-rs, which decides them, so the outcome of decoding never depends on the
//! path taken. A property test holds the scanner to sonic-rs: whenever it accepts a line, it
//! produces exactly the [`RequestEventJson`] sonic-rs does.

use std::borrow::Cow;

use compact_str::CompactString;

use super::json::{JsonStr, JsonTime, RequestEventJson};

/// Where a scanned line's prompt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptAt<'a> {
    /// Borrowed from the line (it had no escapes).
    Line(&'a str),
    /// Unescaped into the caller's scratch buffer.
    Scratch,
}

/// A line the scanner accepted: every field but the prompt, which is in `prompt`.
#[derive(Debug)]
pub struct Scanned<'a> {
    pub raw: RequestEventJson<'a>,
    pub prompt: Option<PromptAt<'a>>,
}

// Eight bytes at a time (SWAR): each byte of a u64 is a lane.
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Lanes equal to zero, as lane high bits. Exact up to the first flagged lane (a borrow can
/// flag lanes above a true one), which is all the callers use.
#[inline]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Lanes that end or interrupt a string's plain run: `"`, `\` or a control byte (< 0x20).
#[inline]
fn special_lanes(x: u64) -> u64 {
    zero_lanes(x ^ (LO * u64::from(b'"')))
        | zero_lanes(x ^ (LO * u64::from(b'\\')))
        | (x.wrapping_sub(LO * 0x20) & !x & HI)
}

/// A known field: its bit in the seen-set and the type it takes.
#[derive(Clone, Copy)]
enum Field {
    EventId,
    Ts,
    AccountId,
    OrgId,
    ApiKeyId,
    AccountCreatedAt,
    Ip,
    Asn,
    Country,
    DeviceFingerprint,
    PaymentFingerprint,
    EmailDomain,
    UserAgent,
    Model,
    Endpoint,
    InputTokens,
    OutputTokens,
    ConversationTurns,
    PromptText,
    PromptSimhash,
    Status,
}

impl Field {
    /// The field a key names, `None` for a key the contract does not define (ignored).
    fn of(key: &[u8]) -> Option<Self> {
        Some(match key {
            b"event_id" => Self::EventId,
            b"ts" => Self::Ts,
            b"account_id" => Self::AccountId,
            b"org_id" => Self::OrgId,
            b"api_key_id" => Self::ApiKeyId,
            b"account_created_at" => Self::AccountCreatedAt,
            b"ip" => Self::Ip,
            b"asn" => Self::Asn,
            b"country" => Self::Country,
            b"device_fingerprint" => Self::DeviceFingerprint,
            b"payment_fingerprint" => Self::PaymentFingerprint,
            b"email_domain" => Self::EmailDomain,
            b"user_agent" => Self::UserAgent,
            b"model" => Self::Model,
            b"endpoint" => Self::Endpoint,
            b"input_tokens" => Self::InputTokens,
            b"output_tokens" => Self::OutputTokens,
            b"conversation_turns" => Self::ConversationTurns,
            b"prompt_text" => Self::PromptText,
            b"prompt_simhash" => Self::PromptSimhash,
            b"status" => Self::Status,
            _ => return None,
        })
    }
}

/// A scanned string: borrowed when it has no escapes, else the raw text between the quotes.
enum Str<'a> {
    Plain(&'a str),
    Escaped(&'a str),
}

/// A scanned value.
enum Value<'a> {
    Str(Str<'a>),
    Int(i64),
    Null,
    /// `true` or `false`: only an unknown field may have one.
    Bool,
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// Index of the next `"`, `\` or control byte at or after `from`; `None` at the end.
    #[inline]
    fn next_special(&self, mut from: usize) -> Option<usize> {
        let b = self.b;
        while from + 8 <= b.len() {
            let x = u64::from_le_bytes(b[from..from + 8].try_into().ok()?);
            let m = special_lanes(x);
            if m != 0 {
                return Some(from + (m.trailing_zeros() / 8) as usize);
            }
            from += 8;
        }
        (from..b.len()).find(|&k| matches!(b[k], b'"' | b'\\' | 0..=0x1f))
    }

    /// A string, the opening quote already consumed. Escapes are checked, not decoded.
    fn string(&mut self) -> Option<Str<'a>> {
        let start = self.i;
        let mut escaped = false;
        let mut at = start;
        loop {
            let k = self.next_special(at)?;
            match self.b[k] {
                b'"' => {
                    self.i = k + 1;
                    // Both ends sit on ASCII quotes, so on character boundaries.
                    let s = self.text.get(start..k)?;
                    return Some(if escaped {
                        Str::Escaped(s)
                    } else {
                        Str::Plain(s)
                    });
                }
                b'\\' => {
                    escaped = true;
                    at = k + 2;
                    match self.b.get(k + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(k + 2..k + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            at = k + 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// An integer `-?(0|[1-9][0-9]*)` of at most 18 digits (so it cannot overflow), not
    /// followed by a fraction or exponent (the caller then finds no `,` or `}`).
    fn integer(&mut self) -> Option<i64> {
        let neg = self.eat(b'-').is_some();
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.i - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        match digits {
            [] => None,
            // A leading zero, and negative zero (serde may see it as a float or an int).
            [b'0', _, ..] => None,
            [b'0'] if neg => None,
            _ => Some(if neg { -v } else { v }),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(Value::Str)
            }
            b'-' | b'0'..=b'9' => self.integer().map(Value::Int),
            b'n' => self.literal(b"null").map(|()| Value::Null),
            b't' => self.literal(b"true").map(|()| Value::Bool),
            b'f' => self.literal(b"false").map(|()| Value::Bool),
            // Objects and arrays (only an unknown field could hold one) go to sonic-rs.
            _ => None,
        }
    }
}

/// Decodes a string's escapes into `out` (cleared first). `None` for a lone surrogate.
fn unescape(raw: &str, out: &mut String) -> Option<()> {
    out.clear();
    let b = raw.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\\', &b[i..]) {
        let k = i + off;
        out.push_str(raw.get(run..k)?);
        let (c, len) = match *b.get(k + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            _ => {
                let hi = hex4(b.get(k + 2..k + 6)?)?;
                match hi {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low one.
                        if b.get(k + 6..k + 8)? != b"\\u" {
                            return None;
                        }
                        let lo = hex4(b.get(k + 8..k + 12)?)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        (char::from_u32(c)?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(hi)?, 6),
                }
            }
        };
        out.push(c);
        i = k + len;
        run = i;
    }
    out.push_str(raw.get(run..)?);
    Some(())
}

fn hex4(h: &[u8]) -> Option<u32> {
    if !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// A short string field as serde would hand it over: borrowed, or owned when it had escapes.
fn short<'a>(s: Str<'a>, buf: &mut String) -> Option<JsonStr<'a>> {
    Some(match s {
        Str::Plain(p) => JsonStr::Borrowed(p),
        Str::Escaped(e) => {
            unescape(e, buf)?;
            JsonStr::Owned(CompactString::from(buf.as_str()))
        }
    })
}

fn long<'a>(s: Str<'a>, buf: &mut String) -> Option<Cow<'a, str>> {
    Some(match s {
        Str::Plain(p) => Cow::Borrowed(p),
        Str::Escaped(e) => {
            unescape(e, buf)?;
            Cow::Owned(buf.clone())
        }
    })
}

/// Scans one line. `None`: not the usual shape, let sonic-rs decide it. A prompt with escapes
/// is unescaped into `scratch`.
pub fn scan<'a>(line: &'a [u8], scratch: &mut String) -> Option<Scanned<'a>> {
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut s = Scanner {
        text,
        b: line,
        i: 0,
    };
    let mut raw = RequestEventJson::default();
    let mut prompt = None;
    let mut seen = 0u32;
    let mut buf = String::new();
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        loop {
            s.eat(b'"')?;
            let key = match s.string()? {
                Str::Plain(k) => k,
                Str::Escaped(_) => return None,
            };
            s.ws();
            s.eat(b':')?;
            s.ws();
            let value = s.value()?;
            if let Some(field) = Field::of(key.as_bytes()) {
                let bit = 1u32 << field as u32;
                if seen & bit != 0 {
                    // serde rejects a duplicate field; sonic-rs says how.
                    return None;
                }
                seen |= bit;
                set(&mut raw, &mut prompt, field, value, scratch, &mut buf)?;
            } else if let Value::Str(Str::Escaped(e)) = value {
                // Unknown fields are ignored, but their escapes must still be valid.
                unescape(e, &mut buf)?;
            }
            s.ws();
            if s.eat(b',').is_some() {
                s.ws();
                continue;
            }
            s.eat(b'}')?;
            break;
        }
    }
    s.ws();
    if s.i != line.len() {
        return None;
    }
    Some(Scanned { raw, prompt })
}

/// Whether `line` nests arrays and objects deeper than `max` levels, brackets inside strings
/// not counted. One pass without recursion or allocation, whatever the input: it only has to
/// hold a recursive parser off deep lines, not validate them.
pub fn nesting_exceeds(line: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr3(b'"', b'[', b'{', &line[i..]) {
        let k = i + off;
        // Closers between the last opener and this one.
        let closed = line[i..k]
            .iter()
            .filter(|&&c| c == b']' || c == b'}')
            .count();
        depth = depth.saturating_sub(closed);
        if line[k] == b'"' {
            // Skip the string: to the next quote not escaped.
            let mut j = k + 1;
            loop {
                match memchr::memchr2(b'"', b'\\', &line[j..]) {
                    Some(o) if line[j + o] == b'\\' => j += o + 2,
                    Some(o) => {
                        j += o + 1;
                        break;
                    }
                    None => return false,
                }
                if j >= line.len() {
                    return false;
                }
            }
            i = j;
        } else {
            depth += 1;
            if depth > max {
                return true;
            }
            i = k + 1;
        }
    }
    false
}

/// Stores a known field's value, or declines a value of the wrong type.
fn set<'a>(
    raw: &mut RequestEventJson<'a>,
    prompt: &mut Option<PromptAt<'a>>,
    field: Field,
    value: Value<'a>,
    scratch: &mut String,
    buf: &mut String,
) -> Option<()> {
    match field {
        Field::EventId => raw.event_id = str_value(value, buf)?,
        Field::AccountId => raw.account_id = str_value(value, buf)?,
        Field::OrgId => raw.org_id = str_value(value, buf)?,
        Field::ApiKeyId => raw.api_key_id = str_value(value, buf)?,
        Field::Ip => raw.ip = str_value(value, buf)?,
        Field::Country => raw.country = str_value(value, buf)?,
        Field::DeviceFingerprint => raw.device_fingerprint = str_value(value, buf)?,
        Field::PaymentFingerprint => raw.payment_fingerprint = str_value(value, buf)?,
        Field::EmailDomain => raw.email_domain = str_value(value, buf)?,
        Field::Model => raw.model = str_value(value, buf)?,
        Field::Endpoint => raw.endpoint = str_value(value, buf)?,
        Field::PromptSimhash => raw.prompt_simhash = str_value(value, buf)?,
        Field::Ts => raw.ts = time_value(value, buf)?,
        Field::AccountCreatedAt => raw.account_created_at = time_value(value, buf)?,
        Field::Asn => raw.asn = int_value(value)?,
        Field::InputTokens => raw.input_tokens = int_value(value)?,
        Field::OutputTokens => raw.output_tokens = int_value(value)?,
        Field::ConversationTurns => raw.conversation_turns = int_value(value)?,
        Field::Status => raw.status = int_value(value)?,
        Field::UserAgent => {
            raw.user_agent = match value {
                Value::Str(s) => Some(long(s, buf)?),
                Value::Null => None,
                _ => return None,
            };
        }
        Field::PromptText => {
            *prompt = match value {
                Value::Str(Str::Plain(p)) => Some(PromptAt::Line(p)),
                Value::Str(Str::Escaped(e)) => {
                    unescape(e, scratch)?;
                    Some(PromptAt::Scratch)
                }
                Value::Null => None,
                _ => return None,
            };
        }
    }
    Some(())
}

/// A string field's value (`Some(None)` for null); `None`: the wrong type.
fn str_value<'a>(value: Value<'a>, buf: &mut String) -> Option<Option<JsonStr<'a>>> {
    match value {
        Value::Str(s) => Some(Some(short(s, buf)?)),
        Value::Null => Some(None),
        _ => None,
    }
}

fn int_value(value: Value<'_>) -> Option<Option<i64>> {
    match value {
        Value::Int(v) => Some(Some(v)),
        Value::Null => Some(None),
        _ => None,
    }
}

/// `ts` and `account_created_at`: an RFC 3339 string or epoch milliseconds.
fn time_value(value: Value<'_>, buf: &mut String) -> Option<Option<JsonTime>> {
    match value {
        Value::Int(v) => Some(Some(JsonTime::Millis(v))),
        Value::Str(s) => Some(Some(JsonTime::Text(short(s, buf)?.to_compact()))),
        Value::Null => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What sonic-rs makes of a line, with the prompt as a plain string.
    fn by_sonic(line: &[u8]) -> Option<(RequestEventJson<'_>, Option<String>)> {
        let mut raw: RequestEventJson<'_> = sonic_rs::from_slice(line).ok()?;
        let prompt = raw.prompt_text.take().map(|p| p.into_owned());
        Some((raw, prompt))
    }

    fn by_scanner<'a>(
        line: &'a [u8],
        scratch: &mut String,
    ) -> Option<(RequestEventJson<'a>, Option<String>)> {
        let s = scan(line, scratch)?;
        let prompt = s.prompt.map(|p| match p {
            PromptAt::Line(l) => l.to_string(),
            PromptAt::Scratch => scratch.clone(),
        });
        Some((s.raw, prompt))
    }

    /// The scanner accepts only what sonic-rs accepts, with the same result.
    fn agrees(line: &[u8]) -> Result<bool, TestCaseError> {
        let mut scratch = String::new();
        let Some(fast) = by_scanner(line, &mut scratch) else {
            return Ok(false);
        };
        let slow = by_sonic(line);
        prop_assert!(
            slow.is_some(),
            "scanner accepted what sonic-rs rejects: {:?}",
            String::from_utf8_lossy(line)
        );
        prop_assert_eq!(Some(fast), slow, "{:?}", String::from_utf8_lossy(line));
        Ok(true)
    }

    #[test]
    fn accepts_the_usual_lines() {
        let lines: &[&[u8]] = &[
            br#"{"event_id":"e-1","ts":"2026-11-02T00:00:03.451Z","account_id":"acct_1","asn":7922,"input_tokens":165,"prompt_text":"what's up\nLet's think step by step.","status":200}"#,
            br#" { "event_id" : "e" , "ts" : 1793577601000 , "account_id" : "a" , "org_id" : null , "extra" : [1, 2] } "#,
            br#"{"event_id":"e","ts":1793577601000,"account_id":"a","prompt_text":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \t"}"#,
            br#"{"event_id":"e","ts":-5,"account_id":"a","x":true,"y":false,"z":"\n"}"#,
            br#"{}"#,
        ];
        let mut accepted = 0;
        for line in lines {
            if agrees(line).expect("agrees") {
                accepted += 1;
            }
        }
        // The one with a nested unknown value goes to sonic-rs.
        assert_eq!(accepted, 4);
    }

    #[test]
    fn measures_nesting_outside_strings() {
        assert!(!nesting_exceeds(br#"{"a":[[1]]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[[[1]]]}"#, 3));
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[\"{{{{"}"#, 1));
        assert!(!nesting_exceeds(br#"{"a":[1],"b":[2],"c":{"d":[3]}}"#, 3));
        assert!(!nesting_exceeds(b"\"\\", 1));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(nesting_exceeds(deep.as_bytes(), 128));
        let wide = "[]".repeat(100_000);
        assert!(!nesting_exceeds(wide.as_bytes(), 1));
    }

    #[test]
    fn declines_what_it_does_not_know() {
        let mut scratch = String::new();
        for line in [
            &br#"{"ts":1.5}"#[..],
            br#"{"ts":1e3}"#,
            br#"{"ts":01}"#,
            br#"{"ts":-0}"#,
            br#"{"ts":1234567890123456789}"#,
            br#"{"ts":99999999999999999999}"#,
            br#"{"ts":-99999999999999999999}"#,
            br#"{"a\u0062":1}"#,
            br#"{"ts":1,"ts":2}"#,
            br#"{"ts":true}"#,
            br#"{"event_id":5}"#,
            br#"{"event_id":"a"} x"#,
            br#"{"event_id":"a",}"#,
            br#"{"event_id":"\ud800"}"#,
            br#"{"event_id":"\x"}"#,
            b"{\"event_id\":\"a\tb\"}",
            b"{\"event_id\":\"\xff\"}",
            br#"{"event_id":"a""#,
            br#"[1]"#,
        ] {
            assert!(
                scan(line, &mut scratch).is_none(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn simulated_lines_all_take_the_fast_path() {
        let opts = crate::sim::SimOptions {
            scale: 0.05,
            hours: 1.0,
            seed: 3,
            ..Default::default()
        };
        let sim = crate::sim::generate(&opts).expect("simulates");
        let mut events = Vec::new();
        let mut labels = Vec::new();
        crate::sim::write_jsonl(&sim, &mut events, &mut labels).expect("writes");
        let mut n = 0;
        for line in events.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(agrees(line).expect("agrees"), "declined a simulated line");
            n += 1;
        }
        assert!(n > 1000, "{n} lines");
    }

    /// JSON-ish text: real field names, values of every type, escapes, odd whitespace.
    fn fragment() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("event_id"),
            Just("ts"),
            Just("account_id"),
            Just("org_id"),
            Just("account_created_at"),
            Just("ip"),
            Just("asn"),
            Just("user_agent"),
            Just("input_tokens"),
            Just("prompt_text"),
            Just("prompt_simhash"),
            Just("status"),
            Just("other"),
        ];
        let value = prop_oneof![
            "\"[a-z0-9 .:-]{0,12}\"",
            "\"([a-zA-Z ]|\\\\[nt\"\\\\/bfr]|\\\\u00[0-9a-f]{2}|\\\\ud83d\\\\ude00|\\\\ud800|é|\t){0,10}\"",
            "-?[0-9]{1,20}",
            "-?[0-9]{1,3}(\\.[0-9]+)?([eE][+-]?[0-9])?",
            Just("null".to_string()),
            Just("true".to_string()),
            Just("[1,{\"a\":2}]".to_string()),
            "\"2026-11-0[1-3]T0[0-9]:00:00(\\.[0-9]{3})?Z\"",
        ];
        let ws = "[ \t\r\n]{0,2}";
        (key, value, ws).prop_map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}{w}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn agrees_with_sonic_on_objects(fields in proptest::collection::vec(fragment(), 0..8), tail in "[ ,}x]{0,2}") {
            let line = format!("{{{}}}{tail}", fields.join(","));
            agrees(line.as_bytes())?;
        }

        #[test]
        fn agrees_with_sonic_on_mangled_objects(
            fields in proptest::collection::vec(fragment(), 1..6),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut line = format!("{{{}}}", fields.join(",")).into_bytes();
            let k = at.index(line.len());
            line[k] = byte;
            let n = cut.index(line.len() + 1);
            agrees(&line)?;
            agrees(&line[..n])?;
        }

        #[test]
        fn agrees_with_sonic_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            agrees(&b)?;
        }
    }
}
