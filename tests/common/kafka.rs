//! Helpers for tests against librdkafka's in-process mock cluster: topics, a plain producer,
//! a reader that sees everything on a topic, committed offsets, simulated traffic and the
//! alerts `replay` gives for it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use distillguard::alert::Alert;
use distillguard::config::{AutoOffsetReset, Config, Format, ValidConfig};
use distillguard::sim::{self, Label, SimOptions};

pub const INPUT: &str = "llm-requests";
pub const ALERTS: &str = "distillguard-alerts";
pub const DLQ: &str = "distillguard-dlq";
pub const CONTROL: &str = "distillguard-control";
pub const VERDICTS: &str = "distillguard-verdicts";
pub const OBSERVATIONS: &str = "distillguard-observations";
pub const LINKS: &str = "distillguard-links";

pub struct Mock {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub brokers: String,
}

/// Serialises the tests of one binary that run a service: the Prometheus recorder is global to
/// the process, so two services running at once would count each other's events.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

/// The process's metrics as `/metrics` would serve them now (a baseline for deltas: counters
/// accumulate over every service a test binary has run).
pub fn scrape_now() -> String {
    distillguard::telemetry::install().render()
}

/// A one-broker mock cluster with the service's topics.
pub fn mock(input_partitions: i32) -> Mock {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(INPUT, input_partitions, 1)
        .expect("input topic");
    cluster.create_topic(ALERTS, 1, 1).expect("alerts topic");
    cluster.create_topic(DLQ, 1, 1).expect("dlq topic");
    cluster.create_topic(CONTROL, 1, 1).expect("control topic");
    cluster
        .create_topic(VERDICTS, 1, 1)
        .expect("verdicts topic");
    let brokers = cluster.bootstrap_servers();
    Mock { cluster, brokers }
}

/// Service configuration for tests: JSON in and out, start from the beginning, ephemeral
/// metrics port, short deadlines.
pub fn config(brokers: &str, group: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = group.to_string();
    c.kafka.input_format = Format::Json;
    c.kafka.alerts_format = Format::Json;
    c.kafka.auto_offset_reset = AutoOffsetReset::Earliest;
    c.service.metrics_addr = "127.0.0.1:0".into();
    c.service.shutdown_deadline_secs = 10;
    c.service.statistics_interval_ms = 500;
    // A marker of this test process's own: one that a killed earlier run left under the
    // default path would have the guard dead-letter a valid record as poison.
    c.service.crash_marker = std::env::temp_dir()
        .join(format!(
            "distillguard-test-{}-{group}.marker",
            std::process::id()
        ))
        .to_string_lossy()
        .into_owned();
    c
}

pub fn valid(c: Config) -> Arc<ValidConfig> {
    Arc::new(c.validate().expect("valid config"))
}

/// Labelled traffic as JSON lines (account id, bytes) in event-time order. Prompts travel as
/// `prompt_simhash` only: the mock broker keeps just 5 MB per partition.
pub fn traffic(
    scenario: &str,
    seed: u64,
    scale: f64,
    hours: f64,
) -> (Vec<(String, Vec<u8>)>, Vec<Label>) {
    let mut simulation = sim::generate(&SimOptions {
        scenario: scenario.into(),
        seed,
        scale,
        hours,
        ..Default::default()
    })
    .expect("simulate");
    let f = distillguard::fingerprint::Fingerprinter::new(
        distillguard::fingerprint::DEFAULT_REASONING_LEXICON,
    )
    .expect("lexicon");
    sim::strip_prompts(&mut simulation, &f);
    let mut events = Vec::new();
    let mut labels = Vec::new();
    sim::write_jsonl(&simulation, &mut events, &mut labels).expect("render");
    let lines = events
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("json line");
            let acct = v["account_id"].as_str().expect("account").to_string();
            (acct, l.to_vec())
        })
        .collect();
    (lines, simulation.labels)
}

/// The alerts `replay` writes for these lines, with the same detection configuration.
pub fn replay_alerts(lines: &[(String, Vec<u8>)], cfg: Arc<ValidConfig>) -> Vec<Alert> {
    replay_alerts_staged(lines, cfg, 0, 0)
}

/// The alerts `replay --account-stages A --link-shards L` writes for these lines: the staged
/// topology in one process (0 and 0: one engine).
pub fn replay_alerts_staged(
    lines: &[(String, Vec<u8>)],
    cfg: Arc<ValidConfig>,
    account_stages: usize,
    link_shards: usize,
) -> Vec<Alert> {
    let mut input = Vec::new();
    for (_, l) in lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let mut out = Vec::new();
    distillguard::replay::replay_staged(
        cfg,
        account_stages,
        link_shards,
        Box::new(std::io::Cursor::new(input)),
        &mut out,
    )
    .expect("replay");
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("alert json"))
        .collect()
}

pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `(key, payload)` records in order and waits for them.
pub fn produce(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let p = producer(brokers);
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(k.as_bytes()).payload(v);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// A record read back: key, payload, headers.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads every record on `topic` (all partitions, from the beginning) until none arrives for
/// `idle`, or `want` records were read.
pub fn read_topic(brokers: &str, topic: &str, want: usize, idle: Duration) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < idle && out.len() < want {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            last = Instant::now();
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let hd = h.get(i);
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// The records of `topic` from offset `from[p]` up to (not including) `to[p]` of every
/// partition `p` in `to` (from 0 where `from` has none); for a topic that keeps growing.
pub fn read_range(
    brokers: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    to: &BTreeMap<i32, i64>,
) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-range-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for (&p, &end) in to {
        let start = from.get(&p).copied().unwrap_or(0).max(0);
        if start < end {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .expect("partition");
            open.insert(p, end);
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return out;
    }
    c.assign(&tpl).expect("assign");
    let t0 = Instant::now();
    while !open.is_empty() && t0.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
            let Some(&end) = open.get(&m.partition()) else {
                continue;
            };
            if m.offset() < end {
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: BTreeMap::new(),
                });
            }
            if m.offset() + 1 >= end {
                open.remove(&m.partition());
            }
        }
    }
    assert!(open.is_empty(), "read {topic} up to {to:?} within 60 s");
    out
}

/// Events in observations `records` (a batch record counts each of its events, a progress
/// record none).
pub fn events_in(records: &[Record]) -> usize {
    use distillguard::kafka::observation::{decode_record, Payload};
    records
        .iter()
        .map(
            |r| match decode_record(&r.payload).expect("an observations record") {
                Payload::Event(..) => 1,
                Payload::Batch(b) => b.len(),
                Payload::Progress(_) => 0,
            },
        )
        .sum()
}

/// Distinct events observed in `records` of an observations topic (a redelivered input
/// record is observed twice, and the link stage drops the copy as a duplicate).
pub fn distinct_events_in(records: &[Record]) -> usize {
    use distillguard::kafka::observation::{decode_record, Payload};
    let mut ids = std::collections::HashSet::new();
    for r in records {
        match decode_record(&r.payload).expect("an observations record") {
            Payload::Event(ev, _) => {
                ids.insert(ev.event_id.to_string());
            }
            Payload::Batch(b) => ids.extend(b.into_iter().map(|(ev, _)| ev.event_id.to_string())),
            Payload::Progress(_) => {}
        }
    }
    ids.len()
}

/// Link shards' decisions on events in `records` of the links topic (a batch record counts
/// each; progress records none).
pub fn linked_in(records: &[Record]) -> usize {
    use distillguard::kafka::links::{decode_record, Payload};
    records
        .iter()
        .map(
            |r| match decode_record(&r.payload).expect("a links record") {
                Payload::Event(..) => 1,
                Payload::Batch(b) => b.len(),
                Payload::Progress(_) => 0,
            },
        )
        .sum()
}

/// Events observed on the observations topic up to its current ends (a batch record counts
/// each of its events, a progress record none), and the records read.
pub fn observed_events(brokers: &str, partitions: i32) -> (usize, usize) {
    observed_events_on(brokers, OBSERVATIONS, partitions)
}

/// Events observed on `topic` (one link shard's observations topic), and its records.
pub fn observed_events_on(brokers: &str, topic: &str, partitions: i32) -> (usize, usize) {
    let ends = log_ends_on(brokers, topic, partitions);
    let records = read_range(brokers, topic, &BTreeMap::new(), &ends);
    (events_in(&records), records.len())
}

/// Every alert on the alerts topic, read until none arrives for 3 s.
pub async fn all_alerts(brokers: &str) -> Vec<Alert> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        alerts_of(&read_topic(
            &brokers,
            ALERTS,
            usize::MAX,
            Duration::from_secs(3),
        ))
    })
    .await
    .expect("reader")
}

pub fn alerts_of(records: &[Record]) -> Vec<Alert> {
    records
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("alert json on the topic"))
        .collect()
}

/// The group's committed offsets on the input topic, by partition (-1: none).
pub fn committed(brokers: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    committed_on(brokers, group, INPUT, partitions)
}

/// The group's committed offsets on `topic`, by partition (-1: none).
pub fn committed_on(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
        })
        .collect()
}

/// Whether every partition of `want` has reached its offset in `have` (a topic still being
/// written to, such as the observations topic with its progress records, moves on past it).
pub fn reached(have: &BTreeMap<i32, i64>, want: &BTreeMap<i32, i64>) -> bool {
    want.iter()
        .all(|(p, &o)| have.get(p).is_some_and(|&h| h >= o))
}

/// High watermarks of the input topic, by partition.
pub fn log_ends(brokers: &str, partitions: i32) -> BTreeMap<i32, i64> {
    log_ends_on(brokers, INPUT, partitions)
}

/// High watermarks of `topic`, by partition.
pub fn log_ends_on(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// One sample from a Prometheus text scrape: the sum of every series of `name` whose labels
/// contain `labels` (e.g. `result="ok"`).
pub fn metric(scrape: &str, name: &str, labels: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET over plain HTTP/1.1 (status, body); the service must be up.
pub fn http_get(addr: &std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).expect("GET")
}

/// GET over plain HTTP/1.1, for a service that may die or be killed mid-request.
pub fn try_http_get(addr: &std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}
