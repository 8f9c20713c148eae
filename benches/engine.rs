//! Engine throughput on one core: protobuf events carrying `prompt_simhash`, with 100k and 1M
//! active accounts. `process` is the engine alone on decoded events, through `process_all`
//! (which prefetches the state of the next events, as `replay` runs it); `process_each` calls
//! `process` per event, without prefetching; `decode+process` adds protobuf decoding and
//! validation, 1024 messages at a time.

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distillguard::config::Config;
use distillguard::engine::Engine;
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};

const POOL: u64 = 1_000_000;

fn bench_engine(c: &mut Criterion) {
    let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    for accounts in [100_000u64, 1_000_000] {
        // Event time runs at 20k events/s: every account stays active within the hour.
        let rate = 20_000;
        let cfg = Arc::new(Config::default().validate().expect("defaults"));
        let mut engine = Engine::new(cfg);
        let mut out = Vec::new();
        // Warm up: every account seen a few times.
        let warm = accounts * 3;
        for chunk in (0..warm).step_by(POOL as usize) {
            for b in support::encoded(chunk, POOL.min(warm - chunk), accounts, rate) {
                if let Ok(e) = decoder.decode_protobuf(&b) {
                    engine.process(&e, &mut out);
                }
            }
            out.clear();
        }
        let mut next = warm;
        let mut group = c.benchmark_group(format!("engine/{}k_accounts", accounts / 1000));
        group.throughput(Throughput::Elements(1));
        // Long samples (hundreds of thousands of events each) so that periodic sweeps and
        // cache refills after a pool is regenerated average out.
        group.sample_size(10);
        group.measurement_time(std::time::Duration::from_secs(15));

        let mut pool: Vec<Event> = Vec::new();
        let mut pos = 0usize;
        group.bench_function("process", |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if pos >= pool.len() {
                        pool = support::encoded(next, POOL, accounts, rate)
                            .iter()
                            .filter_map(|b| decoder.decode_protobuf(b).ok())
                            .collect();
                        next += POOL;
                        pos = 0;
                    }
                    let n = (left as usize).min(pool.len() - pos);
                    let start = std::time::Instant::now();
                    let _ = engine.process_all(&pool[pos..pos + n], &mut out, |_, out| {
                        out.clear();
                        Ok::<(), Infallible>(())
                    });
                    total += start.elapsed();
                    pos += n;
                    left -= n as u64;
                }
                total
            })
        });
        group.bench_function("process_each", |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if pos >= pool.len() {
                        pool = support::encoded(next, POOL, accounts, rate)
                            .iter()
                            .filter_map(|b| decoder.decode_protobuf(b).ok())
                            .collect();
                        next += POOL;
                        pos = 0;
                    }
                    let n = (left as usize).min(pool.len() - pos);
                    let start = std::time::Instant::now();
                    for e in &pool[pos..pos + n] {
                        engine.process(e, &mut out);
                        out.clear();
                    }
                    total += start.elapsed();
                    pos += n;
                    left -= n as u64;
                }
                total
            })
        });

        let mut bytes: Vec<Vec<u8>> = Vec::new();
        let mut bpos = 0usize;
        let mut decoded: Vec<Event> = Vec::with_capacity(1024);
        group.bench_function("decode+process", |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if bpos >= bytes.len() {
                        bytes = support::encoded(next, POOL, accounts, rate);
                        next += POOL;
                        bpos = 0;
                    }
                    let n = (left as usize).min(bytes.len() - bpos);
                    let start = std::time::Instant::now();
                    for chunk in bytes[bpos..bpos + n].chunks(1024) {
                        decoded.clear();
                        decoded
                            .extend(chunk.iter().filter_map(|m| decoder.decode_protobuf(m).ok()));
                        let _ = engine.process_all(&decoded, &mut out, |_, out| {
                            out.clear();
                            Ok::<(), Infallible>(())
                        });
                    }
                    total += start.elapsed();
                    bpos += n;
                    left -= n as u64;
                }
                total
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
