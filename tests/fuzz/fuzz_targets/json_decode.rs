//! Any bytes through the JSON event decoder: an event or a reason, never a panic, a stack
//! overflow or a runaway allocation; what it accepts is within the contract's bounds.
#![no_main]

use std::sync::OnceLock;

use distillguard::event::decode::{MAX_JSON_DEPTH, MAX_SHORT_FIELD};
use distillguard::event::scan::nesting_exceeds;
use distillguard::event::time::{MAX_TS_MS, MIN_TS_MS};
use distillguard::event::Decoder;
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use libfuzzer_sys::fuzz_target;

fn decoder() -> &'static Decoder {
    static D: OnceLock<Decoder> = OnceLock::new();
    D.get_or_init(|| {
        Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"))
    })
}

fuzz_target!(|data: &[u8]| {
    match decoder().decode_json(data) {
        Ok(e) => {
            assert!(!e.event_id.is_empty() && e.event_id.len() <= MAX_SHORT_FIELD);
            assert!(!e.account_id.is_empty() && e.account_id.len() <= MAX_SHORT_FIELD);
            assert!((MIN_TS_MS..MAX_TS_MS).contains(&e.ts_ms));
            assert!(!nesting_exceeds(data, MAX_JSON_DEPTH));
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            if e.reason() == "too_deep" {
                assert!(nesting_exceeds(data, MAX_JSON_DEPTH));
            }
        }
    }
});
