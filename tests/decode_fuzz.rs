//! Arbitrary bytes never crash either decoder, and what they accept is valid.

use distillguard::event::Decoder;
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use proptest::prelude::*;

fn decoder() -> Decoder {
    Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn json_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decoder().decode_json(&bytes);
    }

    #[test]
    fn protobuf_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decoder().decode_protobuf(&bytes);
    }

    #[test]
    fn json_objects_with_odd_values_are_accepted_or_rejected_with_a_reason(
        id in ".{0,300}",
        ts in prop_oneof![any::<i64>().prop_map(|v| v.to_string()), ".{0,40}".prop_map(|s| format!("{s:?}"))],
        tokens in any::<i64>(),
        turns in any::<i64>(),
        ip in ".{0,50}",
        prompt in ".{0,2000}",
    ) {
        let line = serde_json::json!({
            "event_id": id, "account_id": "a", "ip": ip, "input_tokens": tokens,
            "conversation_turns": turns, "prompt_text": prompt,
        });
        let mut text = line.to_string();
        text.insert_str(1, &format!("\"ts\":{ts},"));
        match decoder().decode_json(text.as_bytes()) {
            Ok(e) => {
                prop_assert!(!e.event_id.is_empty() && e.event_id.len() <= 256);
                prop_assert!(e.ts_ms >= distillguard::event::time::MIN_TS_MS);
            }
            Err(err) => prop_assert!(!err.reason().is_empty()),
        }
    }
}
