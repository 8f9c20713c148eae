//! Any bytes through the protobuf event decoder: an event or a reason, never a panic; the
//! borrowing wire reader accepts exactly what prost's generated decoder accepts.
#![no_main]

use std::sync::OnceLock;

use distillguard::event::decode::MAX_SHORT_FIELD;
use distillguard::event::wire::RequestEventRef;
use distillguard::event::Decoder;
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use distillguard::proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn decoder() -> &'static Decoder {
    static D: OnceLock<Decoder> = OnceLock::new();
    D.get_or_init(|| {
        Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mine = RequestEventRef::decode(data);
    let theirs = proto::RequestEvent::decode(data);
    assert_eq!(
        mine.is_ok(),
        theirs.is_ok(),
        "wire reader and prost disagree: {mine:?} vs {theirs:?}"
    );
    match decoder().decode_protobuf(data) {
        Ok(e) => {
            assert!(!e.event_id.is_empty() && e.event_id.len() <= MAX_SHORT_FIELD);
            assert!(!e.account_id.is_empty() && e.account_id.len() <= MAX_SHORT_FIELD);
        }
        Err(e) => assert!(!e.reason().is_empty()),
    }
});
