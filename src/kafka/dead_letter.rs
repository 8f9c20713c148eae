//! Dead letters: a record the service cannot use goes to the dead-letter topic with its
//! original key and bytes and headers saying why and where it came from. One scheme for input
//! events and control records:
//!
//! - `distillguard.reason`: a bounded label (`invalid_json`, `too_deep`, `bad_key`, ...);
//! - `distillguard.error`: the error in words;
//! - `distillguard.source.topic`, `.partition`, `.offset`: where the record was read;
//! - `distillguard.truncated_from`: the original length, when the copy had to be cut to what
//!   the producer may send (otherwise it would be retried for ever and hold its partition).

use rdkafka::message::{Header, OwnedHeaders};

use crate::config::ValidConfig;

/// Where a dead-lettered record was read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Largest dead-letter payload sent whole: the producer's `message.max.bytes` (librdkafka's
/// default unless the config sets it) less room for the key, headers and framing.
pub fn cap(cfg: &ValidConfig) -> usize {
    let k = &cfg.raw.kafka;
    k.producer_properties
        .get("message.max.bytes")
        .or_else(|| k.properties.get("message.max.bytes"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000)
        .saturating_sub(16 * 1024)
}

/// Cuts `payload` to `cap` bytes and returns the headers of its dead-letter copy.
pub fn prepare(
    reason: &str,
    error: &str,
    source: Source<'_>,
    payload: &mut Vec<u8>,
    cap: usize,
) -> OwnedHeaders {
    let original_len = payload.len();
    payload.truncate(cap);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "distillguard.reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "distillguard.error",
            value: Some(error),
        })
        .insert(Header {
            key: "distillguard.source.topic",
            value: Some(source.topic),
        })
        .insert(Header {
            key: "distillguard.source.partition",
            value: Some(&source.partition.to_string()),
        })
        .insert(Header {
            key: "distillguard.source.offset",
            value: Some(&source.offset.to_string()),
        });
    if original_len > payload.len() {
        headers.insert(Header {
            key: "distillguard.truncated_from",
            value: Some(&original_len.to_string()),
        })
    } else {
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn get<'a>(h: &'a OwnedHeaders, key: &str) -> Option<&'a [u8]> {
        h.iter().find(|x| x.key == key).and_then(|x| x.value)
    }

    #[test]
    fn headers_say_why_and_where_and_a_cut_copy_says_how_long_it_was() {
        let src = Source {
            topic: "in",
            partition: 3,
            offset: 42,
        };
        let mut whole = b"{bad".to_vec();
        let h = prepare("invalid_json", "expected value", src, &mut whole, 100);
        assert_eq!(whole, b"{bad");
        assert_eq!(get(&h, "distillguard.reason"), Some(&b"invalid_json"[..]));
        assert_eq!(get(&h, "distillguard.error"), Some(&b"expected value"[..]));
        assert_eq!(get(&h, "distillguard.source.topic"), Some(&b"in"[..]));
        assert_eq!(get(&h, "distillguard.source.partition"), Some(&b"3"[..]));
        assert_eq!(get(&h, "distillguard.source.offset"), Some(&b"42"[..]));
        assert_eq!(get(&h, "distillguard.truncated_from"), None);
        let mut long = vec![b'x'; 1000];
        let h = prepare("too_long", "too long", src, &mut long, 100);
        assert_eq!(long.len(), 100);
        assert_eq!(get(&h, "distillguard.truncated_from"), Some(&b"1000"[..]));
    }
}
