//! Fixed workload for profiling `Engine::process` (the bench's traffic): warm up with three
//! events per account, then time `MEASURE` pre-decoded events. This VM has no hardware
//! counters, so instruction counts come from callgrind:
//! `cargo bench --bench engine_perf --no-run`, then
//! `MEASURE=200000 valgrind --tool=callgrind --toggle-collect='engine_perf::measured' target/release/deps/engine_perf-*`.
//! Env: ACCOUNTS (default 100000), MEASURE (default 1000000), PER_EVENT=1 (`process` per
//! event instead of `process_all`, which prefetches ahead).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::sync::Arc;

use distillguard::config::Config;
use distillguard::engine::Engine;
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let accounts = env("ACCOUNTS", 100_000);
    eprintln!(
        "size_of Account={} Attribute={}",
        std::mem::size_of::<distillguard::state::account::Account>(),
        std::mem::size_of::<distillguard::state::attribute::Attribute>()
    );
    let measure = env("MEASURE", 1_000_000);
    let rate = 20_000;
    let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    let cfg = Arc::new(Config::default().validate().expect("defaults"));
    let mut engine = Engine::new(cfg);
    let mut out = Vec::new();
    let warm = accounts * 3;
    let chunk = 500_000;
    for start in (0..warm).step_by(chunk as usize) {
        for b in support::encoded(start, chunk.min(warm - start), accounts, rate) {
            if let Ok(e) = decoder.decode_protobuf(&b) {
                engine.process(&e, &mut out);
            }
        }
        out.clear();
    }
    let pool: Vec<Event> = support::encoded(warm, measure, accounts, rate)
        .iter()
        .filter_map(|b| decoder.decode_protobuf(b).ok())
        .collect();
    let start = std::time::Instant::now();
    let alerts = measured(&mut engine, &pool);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "accounts={accounts} events={measure} secs={secs:.3} events_per_sec={:.0} alerts={alerts} gauges={:?}",
        measure as f64 / secs,
        engine.gauges()
    );
}

/// The measured phase (a separate function so that callgrind can collect it alone).
#[inline(never)]
fn measured(engine: &mut Engine, pool: &[Event]) -> usize {
    let mut out = Vec::new();
    let mut alerts = 0;
    if env("PER_EVENT", 0) == 1 {
        // One `process` call per event, without prefetching ahead (for comparison).
        for e in pool {
            engine.process(e, &mut out);
            alerts += out.len();
            out.clear();
        }
        return alerts;
    }
    let _ = engine.process_all(pool, &mut out, |_, out| {
        alerts += out.len();
        out.clear();
        Ok::<(), std::convert::Infallible>(())
    });
    alerts
}
