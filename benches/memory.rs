//! Memory per tracked account and per tracked attribute value (RSS), and RSS under an
//! id-rotation attack at the configured caps. Run: `cargo bench --bench memory`.

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::sync::Arc;

use distillguard::config::Config;
use distillguard::engine::Engine;
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};

fn feed(engine: &mut Engine, decoder: &Decoder, start: u64, n: u64, accounts: u64, strip: bool) {
    let mut out = Vec::new();
    // Small chunks: the encoded events are transient, and a large batch of them (kept by the
    // allocator after it is freed) would be counted as engine state.
    let chunk = 10_000;
    let mut i = start;
    while i < start + n {
        let m = chunk.min(start + n - i);
        for b in support::encoded(i, m, accounts, 20_000) {
            if let Ok(mut e) = decoder.decode_protobuf(&b) {
                if strip {
                    strip_attributes(&mut e);
                }
                engine.process(&e, &mut out);
                out.clear();
            }
        }
        i += m;
    }
}

fn strip_attributes(e: &mut Event) {
    e.ip = None;
    e.device_fingerprint = None;
    e.payment_fingerprint = None;
    e.email_domain = None;
    // Autonomous systems and creation minutes are attribute values too: phase 2 counts them
    // per value.
    e.asn = None;
    e.account_created_ms = None;
    e.prompt.template = 0;
}

fn main() {
    // Each phase runs in its own process so that memory freed by one (and kept by the
    // allocator) does not blur the next.
    let Ok(phase) = std::env::var("MEM_PHASE") else {
        let exe = std::env::current_exe().expect("own path");
        let mut per_account = String::from("0");
        for phase in ["1", "2", "3"] {
            let out = std::process::Command::new(&exe)
                .env("MEM_PHASE", phase)
                .env("MEM_PER_ACCOUNT", &per_account)
                .output()
                .expect("phase runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            print!("{text}");
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix("PER_ACCOUNT=")) {
                per_account = v.trim().to_string();
            }
        }
        return;
    };
    let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    let accounts = 1_000_000u64;
    let cfg = |max_accounts: usize, max_values: usize| {
        let mut c = Config::default();
        c.engine.max_accounts = max_accounts;
        c.engine.max_attribute_values = max_values;
        // Keep the de-duplication set and the prompt-copies sketch small so they do not blur
        // the per-account figure: both are fixed costs set by config (`engine.max_dedup_ids`,
        // `harvest.copies_sketch_max_mib`), sized by traffic, not by accounts.
        c.engine.max_dedup_ids = 100_000;
        c.harvest.copies_sketch_max_mib = 1;
        Arc::new(c.validate().expect("valid"))
    };

    if phase == "1" {
        // 1. Accounts alone (no attribute values).
        let base = support::rss_bytes();
        let mut engine = Engine::new(cfg(4_000_000, 8_000_000));
        feed(&mut engine, &decoder, 0, accounts * 3, accounts, true);
        let g = engine.gauges();
        let per_account = (support::rss_bytes() - base) as f64 / g.accounts as f64;
        println!(
            "accounts only: {} accounts, RSS +{:.1} MiB, {:.0} B per account (budget 1024)",
            g.accounts,
            (support::rss_bytes() - base) as f64 / 1048576.0,
            per_account
        );
        println!(
            "  of which the account record: {} B (size_of::<Account>)",
            std::mem::size_of::<distillguard::state::account::Account>()
        );
        println!("PER_ACCOUNT={per_account:.0}");
        return;
    }
    let per_account: f64 = std::env::var("MEM_PER_ACCOUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if phase == "2" {
        // 2. Accounts with their attribute values.
        let base = support::rss_bytes();
        let mut engine = Engine::new(cfg(4_000_000, 8_000_000));
        feed(
            &mut engine,
            &decoder,
            10_000_000,
            accounts * 3,
            accounts,
            false,
        );
        let g = engine.gauges();
        let total = (support::rss_bytes().saturating_sub(base)) as f64;
        let for_values = total - per_account * g.accounts as f64;
        println!(
        "with attributes: {} accounts, {} attribute values, RSS +{:.1} MiB; {:.0} B per account + {:.0} B per value (budget 256)",
        g.accounts, g.attribute_values, total / 1048576.0, per_account,
        for_values / g.attribute_values.max(1) as f64
    );
        println!(
            "  total per account incl. its share of values: {:.0} B",
            total / g.accounts as f64
        );
        return;
    }

    // 3. Id rotation at caps of 200k accounts / 400k values: RSS must stay flat.
    let mut engine = Engine::new(cfg(200_000, 400_000));
    let rotating = u64::MAX / 2; // every event a new account
    let mut samples = Vec::new();
    for step in 0..8u64 {
        feed(
            &mut engine,
            &decoder,
            50_000_000 + step * 500_000,
            500_000,
            rotating,
            false,
        );
        let g = engine.gauges();
        samples.push((step + 1) * 500_000);
        println!(
            "rotation: {:>8} events, {:>7} accounts, {:>7} values, evicted {:>8}, RSS {:.1} MiB",
            samples.last().copied().unwrap_or(0),
            g.accounts,
            g.attribute_values,
            engine.stats().accounts_evicted,
            support::rss_bytes() as f64 / 1048576.0
        );
    }
}
