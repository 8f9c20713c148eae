//! The Kafka service end to end, broker in process (librdkafka's mock cluster), both
//! detectors on, default (low-latency) configuration, protobuf events with `prompt_simhash`:
//!
//! 1. **throughput**: a backlog of 1M events on 64 partitions (100k accounts). First
//!    librdkafka alone reads it (a consumer with the service's settings that drops every
//!    message): the raw consume rate, the ceiling. Then the service consumes the same backlog
//!    from a standing start; sustained events/s over the last 70% (after the engine has seen
//!    every account and its memory is warm), over the whole run from the first event, and the
//!    ratio of the service's sustained rate to the raw one. Then the staged topology on the
//!    same backlog, one stage at a time (`DG_BENCH_STAGES=0` skips it): an `account` instance
//!    takes the input in, writing every observation, then a `link` instance takes the
//!    observations in; each one's rate and ratio to the raw consume rate. Then link shards
//!    (`DG_BENCH_SHARDS`, default 2; 1 skips it): an account instance writing to every shard
//!    that must see an observation, then each shard alone on its observations topic; each
//!    shard's observations (its share of the input events) and rate.
//! 2. **latency**: a producer paced at 100,000 events/s for 10 s, 10% of them from 300
//!    harvesting accounts that trip `bulk_extraction`; event-to-alert latency quantiles from
//!    the service's own histogram (input record's Kafka timestamp to the alert's delivery
//!    report), read from `/metrics`.
//!
//! `cargo bench --bench kafka` (env `DG_BENCH_EVENTS`, `DG_BENCH_RATE`, `DG_BENCH_SECS` to
//! change the sizes). Prints one JSON object per part.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use distillguard::config::{Config, StageRole};
use distillguard::kafka::Service;
use distillguard::proto;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INPUT: &str = "llm-requests";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, key: &str, bytes: &[u8]) {
    let mut rec = BaseRecord::to(INPUT).key(key).payload(bytes);
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((_, r)) => {
                rec = r;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

/// A harvesting account's request: fresh, single-turn, output-heavy.
fn harvester(i: u64, k: u64, rate: u64) -> proto::RequestEvent {
    let mut e = support::event(i, 100_000, rate);
    e.event_id = format!("hv-{i}");
    e.account_id = format!("harv_{k:05}");
    e.org_id = None;
    e.account_created_at = Some(prost_types::Timestamp {
        seconds: support::T0 / 1000 - 86_400,
        nanos: 0,
    });
    e.ip = Some(format!("198.51.{}.{}", k / 250, k % 250 + 1));
    e.device_fingerprint = Some(format!("t13d_h{k}"));
    e.payment_fingerprint = Some(format!("pm_h{k}"));
    e.input_tokens = Some(150);
    e.output_tokens = Some(1400);
    e.conversation_turns = Some(1);
    e
}

fn config(brokers: &str) -> Arc<distillguard::config::ValidConfig> {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.auto_offset_reset = distillguard::config::AutoOffsetReset::Earliest;
    c.service.metrics_addr = "127.0.0.1:0".into();
    c.service.statistics_interval_ms = 1000;
    Arc::new(c.validate().expect("valid"))
}

fn scrape(addr: &std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn events_ok(addr: &std::net::SocketAddr) -> f64 {
    value(&scrape(addr), "distillguard_events_total{result=\"ok\"}")
}

/// Upper bound of the bucket holding quantile `q` of a Prometheus histogram.
fn quantile(scrape: &str, name: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
    if total == 0.0 {
        return None;
    }
    let mut sorted = buckets;
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

/// librdkafka alone: the service's consumer settings, another group, every message read and
/// dropped. Returns (messages, rate over the last 70%, rate from the first message).
fn raw_consume(cfg: &distillguard::config::ValidConfig, n: u64) -> (u64, f64, f64) {
    let mut c = distillguard::kafka::consumer_config(cfg);
    c.set("group.id", "raw-consume")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("raw consumer");
    consumer.subscribe(&[INPUT]).expect("subscribe");
    let t0 = Instant::now();
    let (mut got, mut bytes) = (0u64, 0usize);
    let mut first = None;
    let mut warm = None;
    while got < n && t0.elapsed() < Duration::from_secs(300) {
        // Partition ends and errors are skipped.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            got += 1;
            if first.is_none() {
                first = Some(Instant::now());
            }
            if warm.is_none() && got as f64 >= 0.3 * n as f64 {
                warm = Some((Instant::now(), got));
            }
        }
    }
    let end = Instant::now();
    std::hint::black_box(bytes);
    let first = first.unwrap_or(t0);
    let (t_warm, n_warm) = warm.unwrap_or((first, 0));
    (
        got,
        (got - n_warm) as f64 / end.duration_since(t_warm).as_secs_f64(),
        got as f64 / end.duration_since(first).as_secs_f64(),
    )
}

async fn throughput() {
    let n = env_u64("DG_BENCH_EVENTS", 1_000_000);
    // The mock broker keeps 5 MB a partition: 64 keep 1M events of ~200 B.
    let partitions = 64;
    let cluster = MockCluster::new(1).expect("mock");
    cluster.create_topic(INPUT, partitions, 1).expect("topic");
    cluster
        .create_topic("distillguard-alerts", 1, 1)
        .expect("topic");
    cluster
        .create_topic("distillguard-dlq", 1, 1)
        .expect("topic");
    let brokers = cluster.bootstrap_servers();
    let p = producer(&brokers);
    for i in 0..n {
        let e = support::event(i, 100_000, 10_000);
        send(&p, &e.account_id, &e.encode_to_vec());
    }
    p.flush(Duration::from_secs(60)).expect("flush");

    let cfg = config(&brokers);
    let raw = tokio::task::spawn_blocking(move || raw_consume(&cfg, n))
        .await
        .expect("raw consume");

    let (all, svc) = timed(config(&brokers), n).await;
    svc.shutdown().await.expect("shutdown");
    println!(
        "{}",
        serde_json::json!({
            "part": "throughput",
            "events": all.events,
            "partitions": partitions,
            "accounts": 100_000,
            "seconds_from_first_event": all.secs,
            "raw_consume_messages": raw.0,
            "raw_consume_per_sec_sustained": raw.1,
            "raw_consume_per_sec_from_first_message": raw.2,
            "events_per_sec_sustained": all.sustained,
            "events_per_sec_from_first_event": all.from_first,
            "ratio_to_raw_sustained": all.sustained / raw.1,
            "startup_seconds": all.startup,
            "rss_growth_mib": all.rss_growth_mib,
        })
    );
    if env_u64("DG_BENCH_STAGES", 1) == 0 {
        return;
    }
    // The staged topology on the same backlog, one stage at a time: an account instance
    // takes the input in (and writes every observation), then a link instance takes the
    // observations in, the account instance idle beside it (reporting its progress, as a
    // live writer does: the link waits for a writer gone silent).
    cluster
        .create_topic("distillguard-observations", partitions, 1)
        .expect("topic");
    let staged = |role| {
        let mut c = config(&brokers).raw.clone();
        c.kafka.group_id = "distillguard-staged".into();
        c.kafka.role = role;
        Arc::new(c.validate().expect("valid"))
    };
    let (account, writer) = timed(staged(StageRole::Account), n).await;
    let (link, svc) = timed(staged(StageRole::Link), n).await;
    svc.shutdown().await.expect("shutdown");
    writer.shutdown().await.expect("shutdown");
    let row = |t: &Timed| {
        serde_json::json!({
            "events": t.events,
            "events_per_sec_sustained": t.sustained,
            "events_per_sec_from_first_event": t.from_first,
            "ratio_to_raw_sustained": t.sustained / raw.1,
            "startup_seconds": t.startup,
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "part": "throughput_stages",
            "raw_consume_per_sec_sustained": raw.1,
            "account": row(&account),
            "link": row(&link),
        })
    );
    let shards = env_u64("DG_BENCH_SHARDS", 2) as u32;
    if shards < 2 {
        return;
    }
    // Link shards on the same backlog (`DG_BENCH_SHARDS=1` skips it): an account instance
    // writes each observation to the shards that must see it, then each shard alone takes
    // its observations topic in, the account instance and the shards before it idle beside
    // it. A shard's count is the observations routed to it, known only once it stops.
    let sharded = |role, shard| {
        let mut c = config(&brokers).raw.clone();
        c.kafka.group_id = "distillguard-sharded".into();
        c.kafka.role = role;
        c.kafka.link_shards = shards;
        c.kafka.link_shard = shard;
        Arc::new(c.validate().expect("valid"))
    };
    for s in 0..shards {
        let topic = sharded(StageRole::Account, 0)
            .raw
            .kafka
            .observations_topic_of(s);
        cluster.create_topic(&topic, partitions, 1).expect("topic");
    }
    let links = sharded(StageRole::Account, 0).raw.kafka.links_topic.clone();
    cluster
        .create_topic(&links, shards as i32, 1)
        .expect("topic");
    let (account, writer) = timed(sharded(StageRole::Account, 0), n).await;
    let mut rows = Vec::new();
    let mut running = vec![writer];
    for s in 0..shards {
        let (t, svc) = timed_until(sharded(StageRole::Link, s), None).await;
        rows.push(serde_json::json!({
            "shard": s,
            "observations": t.events,
            "share_of_input_events": t.events / n as f64,
            "observations_per_sec_sustained": t.sustained,
            "observations_per_sec_from_first": t.from_first,
            "input_events_per_sec_from_first": n as f64 / t.secs,
            "startup_seconds": t.startup,
        }));
        running.push(svc);
    }
    for svc in running {
        svc.shutdown().await.expect("shutdown");
    }
    println!(
        "{}",
        serde_json::json!({
            "part": "throughput_link_shards",
            "link_shards": shards,
            "raw_consume_per_sec_sustained": raw.1,
            "account": row(&account),
            "shards": rows,
        })
    );
}

/// A service's run through a backlog.
struct Timed {
    events: f64,
    /// Seconds from its first event to its last.
    secs: f64,
    /// Events/s over the last 70%, and from the first event.
    sustained: f64,
    from_first: f64,
    /// From the start to its first event (joining the group, assignment).
    startup: f64,
    rss_growth_mib: f64,
}

/// Starts a service and times it through a backlog of `n` events (or observations); returns
/// the service still running.
async fn timed(cfg: Arc<distillguard::config::ValidConfig>, n: u64) -> (Timed, Service) {
    timed_until(cfg, Some(n)).await
}

/// Starts a service and times it through a backlog: `n` records, or, without `n`, until its
/// count has stood still for [`QUIET`] (the run ends at its last record). Returns the service
/// still running.
async fn timed_until(
    cfg: Arc<distillguard::config::ValidConfig>,
    n: Option<u64>,
) -> (Timed, Service) {
    let rss0 = support::rss_bytes();
    // The process's counters add up over the services it runs: count this one's from here.
    let before = value(
        &distillguard::telemetry::install().render(),
        "distillguard_events_total{result=\"ok\"}",
    );
    let t0 = Instant::now();
    let svc = Service::start(cfg).await.expect("service");
    let addr = svc.metrics_addr;
    // (when, records so far) at each change of the count.
    let samples = tokio::task::spawn_blocking(move || {
        let mut samples: Vec<(Instant, f64)> = Vec::new();
        loop {
            let done = events_ok(&addr) - before;
            let now = Instant::now();
            if done > samples.last().map_or(0.0, |s| s.1) {
                samples.push((now, done));
            }
            let finished = match (n, samples.last()) {
                (Some(n), _) => done >= n as f64,
                (None, Some(&(at, _))) => now.duration_since(at) >= QUIET,
                (None, None) => false,
            };
            if finished || t0.elapsed() > Duration::from_secs(300) {
                return samples;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("poll");
    let rss1 = support::rss_bytes();
    let (t_first, n_first) = samples.first().copied().unwrap_or((t0, 0.0));
    let last = samples.last().copied().unwrap_or((t0, 0.0));
    let (t_warm, n_warm) = samples
        .iter()
        .find(|s| s.1 >= 0.3 * last.1)
        .copied()
        .unwrap_or((t_first, n_first));
    let secs = last.0.duration_since(t_first).as_secs_f64();
    let warm_secs = last.0.duration_since(t_warm).as_secs_f64();
    let t = Timed {
        events: last.1,
        secs,
        sustained: (last.1 - n_warm) / warm_secs,
        from_first: (last.1 - n_first) / secs,
        startup: t_first.duration_since(t0).as_secs_f64(),
        rss_growth_mib: (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
    };
    (t, svc)
}

/// How long a stage's count stands still before its run through a backlog of unknown size
/// counts as done.
const QUIET: Duration = Duration::from_secs(3);

async fn latency() {
    let rate = env_u64("DG_BENCH_RATE", 100_000);
    let secs = env_u64("DG_BENCH_SECS", 10);
    let cluster = MockCluster::new(1).expect("mock");
    cluster.create_topic(INPUT, 8, 1).expect("topic");
    cluster
        .create_topic("distillguard-alerts", 1, 1)
        .expect("topic");
    cluster
        .create_topic("distillguard-dlq", 1, 1)
        .expect("topic");
    let brokers = cluster.bootstrap_servers();
    let svc = Service::start(config(&brokers)).await.expect("service");
    let addr = svc.metrics_addr;
    while !svc.is_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = brokers.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let p = producer(&b);
        let t0 = Instant::now();
        let total = rate * secs;
        let mut i = 0;
        // Paced in 1 ms slices.
        while i < total {
            let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
            if i >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            while i < due.min(total) {
                let e = if i % 10 == 0 {
                    harvester(i, (i / 10) % 300, rate)
                } else {
                    support::event(i, 100_000, rate)
                };
                send(&p, &e.account_id, &e.encode_to_vec());
                i += 1;
            }
        }
        let _ = p.flush(Duration::from_secs(30));
        (i, t0.elapsed().as_secs_f64())
    })
    .await
    .expect("producer");
    let wait = Instant::now();
    while events_ok(&addr) < sent.0 as f64 && wait.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = scrape(&addr);
    svc.shutdown().await.expect("shutdown");
    let h = "distillguard_event_to_alert_seconds";
    let alerts = value(&s, &format!("{h}_count"));
    println!(
        "{}",
        serde_json::json!({
            "part": "latency",
            "offered_events_per_sec": sent.0 as f64 / sent.1,
            "events": value(&s, "distillguard_events_total{result=\"ok\"}"),
            "alerts": alerts,
            "event_to_alert_mean_ms": 1000.0 * value(&s, &format!("{h}_sum")) / alerts.max(1.0),
            "event_to_alert_p50_ms_at_most": quantile(&s, h, 0.5).map(|v| v * 1000.0),
            "event_to_alert_p99_ms_at_most": quantile(&s, h, 0.99).map(|v| v * 1000.0),
            "processing_p99_us_at_most": quantile(&s, "distillguard_processing_seconds", 0.99).map(|v| v * 1e6),
        })
    );
}

fn main() {
    let part = std::env::args()
        .skip(1)
        .find(|a| a == "throughput" || a == "latency");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if part.as_deref() != Some("latency") {
        rt.block_on(throughput());
    }
    if part.as_deref() != Some("throughput") {
        rt.block_on(latency());
    }
}
