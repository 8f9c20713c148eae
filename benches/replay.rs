//! `replay` end to end on simulated JSON Lines with `prompt_text` (the simulator's mix of all
//! families), and the decode stage alone on one core.

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Cursor;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distillguard::config::Config;
use distillguard::replay;
use distillguard::sim::{self, SimOptions};

/// Bytes shared between iterations.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn bench_replay(c: &mut Criterion) {
    let opts = SimOptions {
        scale: 0.5,
        hours: 6.0,
        seed: 7,
        ..Default::default()
    };
    let simulation = sim::generate(&opts).expect("simulates");
    let mut events = Vec::new();
    let mut labels = Vec::new();
    sim::write_jsonl(&simulation, &mut events, &mut labels).expect("writes");
    let n = simulation.events.len() as u64;
    let prompts: Vec<String> = simulation
        .events
        .iter()
        .filter_map(|e| e.prompt_text.as_deref().map(str::to_string))
        .collect();
    drop(simulation);
    let cfg = Arc::new(Config::default().validate().expect("defaults"));
    let decoder = replay::decoder(&cfg).expect("lexicon");

    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    group.bench_function("decode_json_one_core", |b| {
        b.iter(|| {
            let mut ok = 0u64;
            for line in events.split(|&b| b == b'\n') {
                if !line.is_empty() && decoder.decode_json(line).is_ok() {
                    ok += 1;
                }
            }
            ok
        })
    });
    let fingerprinter = distillguard::fingerprint::Fingerprinter::new(
        distillguard::fingerprint::DEFAULT_REASONING_LEXICON,
    )
    .expect("lexicon");
    group.bench_function("fingerprint_one_core", |b| {
        b.iter(|| {
            prompts
                .iter()
                .map(|p| fingerprinter.fingerprint(p).simhash)
                .fold(0u64, |a, h| a ^ h)
        })
    });
    // The input is shared, not copied per iteration: a fresh 250 MB copy (and its page faults)
    // would be timed along with the replay. Reading from the cursor still copies every byte
    // into the replay's buffers, as reading a file from the page cache does.
    let shared = Shared(Arc::new(events));
    group.bench_function("end_to_end", |b| {
        b.iter(|| {
            let mut out = std::io::sink();
            replay::replay(
                Arc::clone(&cfg),
                Box::new(Cursor::new(shared.clone())),
                &mut out,
            )
            .expect("replays")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
