//! Each stage of the staged topology on one core, with 100k active accounts: `account` is
//! an account engine judging decoded events and encoding each event's observation for the
//! observations topic; `link` is a link engine decoding observation records and taking them
//! in; `link_shard` is one of three link shards decoding the observations routed to it and
//! taking them in; `cluster` is the cluster stage decoding the shards' link records and
//! assembling clusters from them. Prints the bytes per input event on the internal topics, and
//! what share of the input reaches a shard and the cluster stage, as JSON lines. (The Kafka
//! hops are not included: see `benches/kafka.rs` for the service.)

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distillguard::config::Config;
use distillguard::detect::{Emitted, Shard};
use distillguard::engine::cluster_stage::ClusterStage;
use distillguard::engine::{account_key, link_targets, Engine, Role};
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use distillguard::kafka::{links, observation};

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
    bench_sharded(&mut gen, cfg_again(), c);
}

fn cfg_again() -> Arc<distillguard::config::ValidConfig> {
    Arc::new(Config::default().validate().expect("defaults"))
}

/// Three link shards and a cluster stage fed by an account engine (untimed): what one shard
/// takes (the observations routed to it), and what the cluster stage takes (the shards'
/// records of an event, one links record).
struct Sharded {
    feeder: Engine,
    shards: Vec<Engine>,
    cluster: ClusterStage,
    emitted: Emitted,
    out: Vec<distillguard::alert::Alert>,
    /// Input events, observations routed to shard 0, observations to any shard, and their
    /// bytes; links records and their bytes.
    events: u64,
    to_first: u64,
    routed: u64,
    obs_bytes: u64,
    records: u64,
    link_bytes: u64,
    fanout: [u64; FANOUT.len()],
    /// Observations per shard, at each shard count of [`FANOUT`].
    per_shard: [[u64; 24]; FANOUT.len()],
}

const SHARDS: usize = 3;
/// Shard counts whose fan-out (shards an event's observation goes to) is printed.
const FANOUT: [usize; 4] = [3, 6, 12, 24];

impl Sharded {
    /// Feeds `e` through the account engine and every shard but `timed_shard` (whose
    /// observation record is appended to `first`), and the cluster stage unless `links` is
    /// given (the links record is appended to it instead).
    fn feed(
        &mut self,
        e: &Event,
        timed_shard: Option<&mut Vec<Vec<u8>>>,
        links: Option<&mut Vec<Vec<u8>>>,
    ) {
        self.feeder.process(e, &mut self.out);
        self.events += 1;
        let Some(obs) = self.feeder.take_observation() else {
            return;
        };
        let targets = link_targets(&obs, SHARDS);
        for (k, n) in FANOUT.iter().enumerate() {
            let t = link_targets(&obs, *n);
            self.fanout[k] += u64::from(t.count_ones());
            for (i, c) in self.per_shard[k].iter_mut().enumerate().take(*n) {
                *c += (t >> i) & 1;
            }
        }
        let record = observation::encode(e, &obs);
        let mut timed_shard = timed_shard;
        for (i, shard) in self.shards.iter_mut().enumerate() {
            if targets & (1 << i) == 0 {
                continue;
            }
            self.routed += 1;
            self.obs_bytes += record.len() as u64;
            if i == 0 {
                self.to_first += 1;
                if let Some(first) = timed_shard.as_deref_mut() {
                    first.push(record.clone());
                    continue;
                }
            }
            let (ev, o) = observation::decode(&record).expect("decodes");
            shard.observe(&ev, &o, &mut self.out);
            shard.take_emitted(&mut self.emitted);
        }
        if !self.emitted.records.is_empty() {
            let key = account_key(&e.account_id);
            let bytes = links::encode(key, e.ts_ms, &self.emitted);
            self.records += 1;
            self.link_bytes += bytes.len() as u64;
            match links {
                Some(l) => l.push(bytes),
                None => self
                    .cluster
                    .take(key, e.ts_ms, &mut self.emitted, &mut self.out),
            }
        }
        self.emitted.clear();
        self.out.clear();
    }
}

fn bench_sharded(
    gen: &mut Events<'_>,
    cfg: Arc<distillguard::config::ValidConfig>,
    c: &mut Criterion,
) {
    let mut s = Sharded {
        feeder: Engine::new(cfg.clone()).with_role(Role::Account),
        shards: (0..SHARDS)
            .map(|index| Engine::new(cfg.clone()).with_shard(Shard { index, of: SHARDS }))
            .collect(),
        cluster: ClusterStage::new(cfg),
        emitted: Emitted::default(),
        out: Vec::new(),
        events: 0,
        to_first: 0,
        routed: 0,
        obs_bytes: 0,
        records: 0,
        link_bytes: 0,
        fanout: [0; FANOUT.len()],
        per_shard: [[0; 24]; FANOUT.len()],
    };
    // Warm up: every account seen a few times by every engine (the events go on from where
    // the other stages' left off).
    let until = gen.next + ACCOUNTS * 3;
    while gen.next < until {
        for e in gen.pool() {
            s.feed(&e, None, None);
        }
    }
    let n = s.events.max(1) as f64;
    println!(
        "{{\"shards\":{SHARDS},\"observations_per_event\":{:.2},\"share_to_one_shard\":{:.3},\"observation_bytes_per_event\":{:.1},\"link_records_per_event\":{:.3},\"link_bytes_per_event\":{:.1}}}",
        s.routed as f64 / n,
        s.to_first as f64 / n,
        s.obs_bytes as f64 / n,
        s.records as f64 / n,
        s.link_bytes as f64 / n,
    );
    for (k, shards) in FANOUT.iter().enumerate() {
        // The busiest shard: the co-activity owner takes every harvesting request.
        let busiest = s.per_shard[k].iter().max().copied().unwrap_or(0);
        println!(
            "{{\"shards\":{shards},\"share_to_one_shard\":{:.3},\"share_to_the_busiest\":{:.3}}}",
            s.fanout[k] as f64 / n / *shards as f64,
            busiest as f64 / n
        );
    }

    let mut group = c.benchmark_group("stages/100k_accounts");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    let mut recs: Vec<Vec<u8>> = Vec::new();
    let mut rpos = 0;
    group.bench_function("link_shard", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if rpos >= recs.len() {
                    recs.clear();
                    for e in gen.pool() {
                        s.feed(&e, Some(&mut recs), None);
                    }
                    rpos = 0;
                }
                let n = left.min(recs.len() - rpos);
                let start = Instant::now();
                let shard = &mut s.shards[0];
                for r in &recs[rpos..rpos + n] {
                    if let Ok((ev, obs)) = observation::decode(r) {
                        shard.observe(&ev, &obs, &mut s.out);
                        shard.take_emitted(&mut s.emitted);
                    }
                    // Its records go on to the cluster stage, untimed.
                    s.emitted.clear();
                    s.out.clear();
                }
                total += start.elapsed();
                rpos += n;
                left -= n;
            }
            total
        })
    });
    // Generated before criterion's warm-up, which is timed by the wall clock, generation
    // included (as in `benches/engine.rs`).
    let fill = |s: &mut Sharded, gen: &mut Events<'_>, lrecs: &mut Vec<Vec<u8>>| {
        lrecs.clear();
        while lrecs.len() < 4 * POOL as usize / 10 {
            for e in gen.pool() {
                s.feed(&e, None, Some(lrecs));
            }
        }
    };
    let mut lrecs: Vec<Vec<u8>> = Vec::new();
    fill(&mut s, gen, &mut lrecs);
    let mut lpos = 0;
    group.bench_function("cluster", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if lpos >= lrecs.len() {
                    fill(&mut s, gen, &mut lrecs);
                    lpos = 0;
                }
                let n = left.min(lrecs.len() - lpos);
                let start = Instant::now();
                for r in &lrecs[lpos..lpos + n] {
                    if let Ok((account, ts, mut emitted)) = links::decode(r) {
                        s.cluster.take(account, ts, &mut emitted, &mut s.out);
                    }
                    s.out.clear();
                }
                total += start.elapsed();
                lpos += n;
                left -= n;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_stages);
criterion_main!(benches);
