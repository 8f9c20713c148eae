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
use std::time::{Duration, Instant};

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
        let next = warm;
        let mut group = c.benchmark_group(format!("engine/{}k_accounts", accounts / 1000));
        group.throughput(Throughput::Elements(1));
        // Long samples (hundreds of thousands of events each) so that periodic sweeps and
        // cache refills after a pool is regenerated average out.
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(15));

        let mut pool = Pool {
            decoder: &decoder,
            accounts,
            rate,
            next,
            events: Vec::new(),
            pos: 0,
        };
        // Generate the first pool before criterion's warm-up: the warm-up is timed by the
        // wall clock, generation included, and a million events take longer to generate than
        // the three seconds it lasts. Without this, one call carrying the generation ends the
        // warm-up, criterion takes each event for seconds and times samples of one event
        // each, cold (about 4 us an event instead of 1).
        pool.fill();
        group.bench_function("process", |b| {
            b.iter_custom(|iters| {
                timed(iters, &mut pool, |events| {
                    let _ = engine.process_all(events, &mut out, |_, out| {
                        out.clear();
                        Ok::<(), Infallible>(())
                    });
                })
            })
        });
        group.bench_function("process_each", |b| {
            b.iter_custom(|iters| {
                timed(iters, &mut pool, |events| {
                    for e in events {
                        engine.process(e, &mut out);
                        out.clear();
                    }
                })
            })
        });
        let mut next = pool.next;

        // Generated ahead for the same reason as the first pool.
        let mut bytes: Vec<Vec<u8>> = support::encoded(next, POOL, accounts, rate);
        next += POOL;
        let mut bpos = 0usize;
        let mut decoded: Vec<Event> = Vec::with_capacity(1024);
        group.bench_function("decode+process", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if bpos >= bytes.len() {
                        bytes = support::encoded(next, POOL, accounts, rate);
                        next += POOL;
                        bpos = 0;
                    }
                    let n = (left as usize).min(bytes.len() - bpos);
                    let start = Instant::now();
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

/// Decoded events, generated a million at a time as the benches consume them.
struct Pool<'d> {
    decoder: &'d Decoder,
    accounts: u64,
    rate: u64,
    /// Index of the next event to generate.
    next: u64,
    events: Vec<Event>,
    pos: usize,
}

impl Pool<'_> {
    /// Generates the next million events once these are used up.
    fn fill(&mut self) {
        if self.pos >= self.events.len() {
            self.events = support::encoded(self.next, POOL, self.accounts, self.rate)
                .iter()
                .filter_map(|b| self.decoder.decode_protobuf(b).ok())
                .collect();
            self.next += POOL;
            self.pos = 0;
        }
    }

    /// The next events, at most `n` (at least one).
    fn take(&mut self, n: u64) -> &[Event] {
        self.fill();
        let k = (n as usize).min(self.events.len() - self.pos);
        self.pos += k;
        &self.events[self.pos - k..self.pos]
    }
}

/// Time `run` takes over `iters` events of `pool`, generation excluded.
fn timed(iters: u64, pool: &mut Pool<'_>, mut run: impl FnMut(&[Event])) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let events = pool.take(left);
        let n = events.len() as u64;
        let start = Instant::now();
        run(events);
        total += start.elapsed();
        left -= n;
    }
    total
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
