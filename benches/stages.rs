//! Each stage of the staged topology on one core, with 100k active accounts: `account` is
//! an account engine judging decoded events and encoding each event's observation for the
//! observations topic; `link` is a link engine decoding observation records and taking them
//! in. Prints the observation bytes per event as a JSON line, alone and in the batch records
//! the account stage writes. (The Kafka hops are not
//! included: see `benches/kafka.rs` for the service.)

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distillguard::config::Config;
use distillguard::engine::{Engine, Role};
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use distillguard::kafka::observation;

const POOL: u64 = 200_000;
const ACCOUNTS: u64 = 100_000;
/// Event time runs at 20k events/s: every account stays active within the hour.
const RATE: u64 = 20_000;

/// Decoded events, generated in order a pool at a time.
struct Events<'d> {
    decoder: &'d Decoder,
    next: u64,
}

impl Events<'_> {
    fn pool(&mut self) -> Vec<Event> {
        let events = support::encoded(self.next, POOL, ACCOUNTS, RATE)
            .iter()
            .filter_map(|b| self.decoder.decode_protobuf(b).ok())
            .collect();
        self.next += POOL;
        events
    }
}

fn bench_stages(c: &mut Criterion) {
    let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    let cfg = Arc::new(Config::default().validate().expect("defaults"));
    let mut account = Engine::new(cfg.clone()).with_role(Role::Account);
    // Feeds the link engine: its own account engine, untimed.
    let mut feeder = Engine::new(cfg.clone()).with_role(Role::Account);
    let mut link = Engine::new(cfg).with_role(Role::Link);
    let mut out = Vec::new();
    let mut gen = Events {
        decoder: &decoder,
        next: 0,
    };
    let (mut bytes, mut records) = (0usize, 0usize);
    // As the account stage writes them: batch records of at most `observation::BATCH_BYTES`.
    let (mut batch, mut batched_bytes) = (observation::Batch::default(), 0usize);
    // Warm up: every account seen a few times by every engine.
    while gen.next < ACCOUNTS * 3 {
        for e in gen.pool() {
            account.process(&e, &mut out);
            let _ = account.take_observation();
            feeder.process(&e, &mut out);
            if let Some(obs) = feeder.take_observation() {
                let r = observation::encode(&e, &obs);
                bytes += r.len();
                records += 1;
                let w = observation::to_wire(&e, &obs);
                if batch.full_for(&w) {
                    batched_bytes += batch.take_record().len();
                }
                batch.push(w, 0, 0);
                let (ev, obs) = observation::decode(&r).expect("decodes");
                link.observe(&ev, &obs, &mut out);
            }
            out.clear();
        }
    }
    batched_bytes += batch.take_record().len();
    println!(
        "{{\"observation_bytes_per_event\":{:.1},\"batched_observation_bytes_per_event\":{:.1}}}",
        bytes as f64 / records.max(1) as f64,
        batched_bytes as f64 / records.max(1) as f64
    );

    let mut group = c.benchmark_group("stages/100k_accounts");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));

    let mut events: Vec<Event> = Vec::new();
    let mut pos = 0;
    group.bench_function("account", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if pos >= events.len() {
                    events = gen.pool();
                    pos = 0;
                }
                let n = left.min(events.len() - pos);
                let start = Instant::now();
                for e in &events[pos..pos + n] {
                    account.process(e, &mut out);
                    if let Some(obs) = account.take_observation() {
                        std::hint::black_box(observation::encode(e, &obs));
                    }
                    out.clear();
                }
                total += start.elapsed();
                pos += n;
                left -= n;
            }
            total
        })
    });

    let mut recs: Vec<Vec<u8>> = Vec::new();
    let mut rpos = 0;
    group.bench_function("link", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if rpos >= recs.len() {
                    recs.clear();
                    for e in gen.pool() {
                        feeder.process(&e, &mut out);
                        if let Some(obs) = feeder.take_observation() {
                            recs.push(observation::encode(&e, &obs));
                        }
                        out.clear();
                    }
                    rpos = 0;
                }
                let n = left.min(recs.len() - rpos);
                let start = Instant::now();
                for r in &recs[rpos..rpos + n] {
                    if let Ok((ev, obs)) = observation::decode(r) {
                        link.observe(&ev, &obs, &mut out);
                    }
                    out.clear();
                }
                total += start.elapsed();
                rpos += n;
                left -= n;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_stages);
criterion_main!(benches);
