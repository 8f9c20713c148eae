//! Alerts read back from the alerts topic (the service does this after every rebalance): any
//! bytes as a protobuf or JSON alert decode or fail without a panic (a kind, severity or action
//! outside the contract fails), and what decodes survives a round trip (protobuf: a fixed point
//! after one normalisation; JSON: the same alert, floats within a rounding step).
#![no_main]

use distillguard::alert::Alert;
use distillguard::proto;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => close(x, y),
            _ => x == y,
        },
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    // A kind, severity or action outside the contract is rejected (no panic); what is
    // accepted must survive the round trip.
    if let Ok(Ok(once)) = proto::Alert::decode(data).map(Alert::from_proto) {
        let bytes = once.to_proto().encode_to_vec();
        let twice = Alert::from_proto(proto::Alert::decode(bytes.as_slice()).expect("re-decodes"))
            .expect("an encoded alert's closed sets parse");
        let bytes2 = twice.to_proto().encode_to_vec();
        let thrice = Alert::from_proto(proto::Alert::decode(bytes2.as_slice()).expect("again"))
            .expect("and again");
        assert!(
            twice.alert_id == thrice.alert_id
                && twice.accounts == thrice.accounts
                && twice.detected_at == thrice.detected_at
                && close(twice.score, thrice.score)
                && same_json(&twice.evidence, &thrice.evidence),
            "protobuf round trip is not a fixed point: {twice:?} vs {thrice:?}"
        );
    }
    if let Ok(a) = serde_json::from_slice::<Alert>(data) {
        let Ok(text) = serde_json::to_vec(&a) else {
            return;
        };
        let b: Alert = serde_json::from_slice(&text).expect("an encoded alert decodes");
        assert!(
            a.alert_id == b.alert_id
                && a.kind == b.kind
                && a.subject == b.subject
                && a.accounts == b.accounts
                && a.severity == b.severity
                && a.detected_at == b.detected_at
                && a.window_start == b.window_start
                && a.detector_version == b.detector_version
                && close(a.score, b.score)
                && same_json(&a.evidence, &b.evidence),
            "JSON round trip changed the alert: {a:?} vs {b:?}"
        );
    }
});
