//! Synthetic traffic for the benches: many accounts, realistic attribute sharing, protobuf
//! events carrying `prompt_simhash` (the form a gateway that fingerprints upstream sends).

#![allow(dead_code)]

use distillguard::proto;
use prost::Message;
use xxhash_rust::xxh3::xxh3_64;

pub const T0: i64 = 1_793_577_600_000;

fn mix(x: u64) -> u64 {
    xxh3_64(&x.to_le_bytes())
}

/// The `i`-th event of a stream over `accounts` accounts, `rate` events per second of event
/// time.
pub fn event(i: u64, accounts: u64, rate: u64) -> proto::RequestEvent {
    let a = mix(i) % accounts;
    let h = mix(a);
    let ts = T0 + (i * 1000 / rate) as i64;
    let ip = (h % (accounts / 4 + 1)) as u32 | 0x0a00_0000;
    let shared_template = mix(i) % 4 == 0;
    let simhash = if shared_template {
        (h % 64) << 40 | (mix(i) & 0xff_ffff_ffff)
    } else {
        mix(i * 31)
    };
    proto::RequestEvent {
        event_id: format!("ev-{i}"),
        ts: Some(prost_types::Timestamp {
            seconds: ts / 1000,
            nanos: ((ts % 1000) * 1_000_000) as i32,
        }),
        account_id: format!("acct_{a:010}"),
        org_id: (h % 20 == 0).then(|| format!("org_{}", h % 997)),
        api_key_id: None,
        account_created_at: Some(prost_types::Timestamp {
            seconds: (T0 / 1000) - (h % (3 * 365 * 86_400)) as i64,
            nanos: 0,
        }),
        ip: Some(std::net::Ipv4Addr::from(ip).to_string()),
        asn: Some((h % 5000) as u32),
        country: Some("US".into()),
        device_fingerprint: Some(if h % 10 < 7 {
            format!("t13d_sdk_{}", h % 8)
        } else {
            format!("t13d_{:x}", h % 100_000)
        }),
        payment_fingerprint: (h % 2 == 0).then(|| format!("pm_{:x}", h >> 8)),
        email_domain: Some(if h % 3 == 0 {
            format!("corp{}.example", h % 5000)
        } else {
            "gmail.com".into()
        }),
        user_agent: Some("sdk/1.2".into()),
        model: Some(if mix(i) % 5 == 0 {
            "frontier-1".into()
        } else {
            "frontier-2".into()
        }),
        endpoint: Some("/v1/messages".into()),
        input_tokens: Some(mix(i + 1) % 2000),
        output_tokens: Some(mix(i + 2) % 1500),
        conversation_turns: Some(1 + (mix(i + 3) % 4) as u32),
        prompt_text: None,
        prompt_simhash: Some(format!("{simhash:016x}")),
        status: Some(200),
    }
}

/// Encoded protobuf events `[start, start + n)`.
pub fn encoded(start: u64, n: u64, accounts: u64, rate: u64) -> Vec<Vec<u8>> {
    (start..start + n)
        .map(|i| event(i, accounts, rate).encode_to_vec())
        .collect()
}

/// Resident set size of this process, bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}
