//! The control follower: every instance reads the control topic (the live allowlist) from the
//! beginning and follows it, tails the alerts topic to remember recent alerts, and counts the
//! verdicts topic in a consumer group of its own (each verdict counted by one instance). It runs
//! on its own thread, apart from the consumer loop: an entry applies within a poll, with no
//! restart and no rebuild of window state.
//!
//! Also the client side of `distillguard allow` and `distillguard verdict`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use super::ServiceError;
use crate::alert::Alert;
use crate::config::ValidConfig;
use crate::control::{
    parse_control, parse_verdict, ControlError, ControlOp, Entry, Judgement, LiveAllowlist,
    RecentAlerts, Subject, KINDS, SEVERITIES, UNKNOWN,
};
use crate::telemetry::{self, now_ms};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Accounts of one alert a false_positive verdict may allowlist (a runaway cluster alert is
/// not silenced wholesale by one verdict).
const MAX_VERDICT_ACCOUNTS: usize = 100;
/// Largest dead-letter copy of a control record (they are small; a huge one is cut).
const DLQ_CAP: usize = 512 * 1024;

/// Counts deliveries: dead letters on success, failures of anything.
pub struct CtlProducerCtx {
    failures: AtomicUsize,
}

impl ClientContext for CtlProducerCtx {}

impl ProducerContext for CtlProducerCtx {
    /// The destination label: `dlq` or `control`.
    type DeliveryOpaque = Box<&'static str>;

    fn delivery(&self, result: &DeliveryResult<'_>, dest: Self::DeliveryOpaque) {
        match result {
            Ok(_) if *dest == "dlq" => metrics::counter!(telemetry::DLQ_MESSAGES).increment(1),
            Ok(_) => {}
            Err((e, _)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(telemetry::PRODUCER_ERRORS, "destination" => *dest).increment(1);
                tracing::warn!(error = %e, destination = *dest, "control-side delivery failed");
            }
        }
    }
}

type CtlProducer = ThreadedProducer<CtlProducerCtx>;

fn producer(cfg: &ValidConfig) -> Result<CtlProducer, KafkaError> {
    super::producer_config(cfg).create_with_context(CtlProducerCtx {
        failures: AtomicUsize::new(0),
    })
}

/// A group-less reader (assigned partitions, never commits).
fn reader(cfg: &ValidConfig, suffix: &str) -> Result<BaseConsumer, KafkaError> {
    let mut c: ClientConfig = super::consumer_config(cfg);
    c.set("group.id", format!("{}-{suffix}", cfg.raw.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "0");
    c.create()
}

/// Partitions of `topic` with their (low, high) watermarks; empty when the topic is missing.
fn partitions(c: &BaseConsumer, topic: &str) -> Vec<(i32, i64, i64)> {
    let Ok(md) = c.fetch_metadata(Some(topic), TIMEOUT) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            if let Ok((low, high)) = c.fetch_watermarks(topic, p.id(), TIMEOUT) {
                out.push((p.id(), low, high));
            }
        }
    }
    out
}

/// The running follower.
pub struct Follower {
    stop: Arc<AtomicBool>,
    caught_up: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Follower {
    /// Starts the follower thread. It applies control records to `live` from the beginning of
    /// the topic; [`Follower::caught_up`] turns true once it has read to the end seen at start.
    pub fn start(cfg: Arc<ValidConfig>, live: LiveAllowlist) -> Result<Follower, ServiceError> {
        touch();
        let mut state = State::new(cfg, live)?;
        let stop = Arc::new(AtomicBool::new(false));
        let caught_up = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            let caught_up = caught_up.clone();
            std::thread::Builder::new()
                .name("dg-control".into())
                .spawn(move || state.run(&stop, &caught_up))
                .map_err(ServiceError::Thread)?
        };
        Ok(Follower {
            stop,
            caught_up,
            handle: Some(handle),
        })
    }

    /// A follower that was never started (what a stopped service keeps).
    pub fn stopped() -> Follower {
        Follower {
            stop: Arc::new(AtomicBool::new(true)),
            caught_up: Arc::new(AtomicBool::new(true)),
            handle: None,
        }
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Stops the thread and waits for it (it stops within a poll).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every labelled series at zero from the start, for dashboards and rules.
fn touch() {
    use telemetry as t;
    metrics::gauge!(t::ALLOWLIST_LIVE_ENTRIES).set(0.0);
    for r in ["applied", "removed", "malformed"] {
        metrics::counter!(t::CONTROL_RECORDS, "topic" => "control", "result" => r).increment(0);
    }
    for r in ["applied", "malformed"] {
        metrics::counter!(t::CONTROL_RECORDS, "topic" => "verdicts", "result" => r).increment(0);
    }
    for k in KINDS {
        for s in SEVERITIES {
            for v in Judgement::ALL {
                metrics::counter!(t::ALERT_VERDICTS, "kind" => k, "severity" => s, "verdict" => v.label())
                    .increment(0);
            }
        }
    }
    metrics::counter!(t::PRODUCER_ERRORS, "destination" => "control").increment(0);
}

struct State {
    cfg: Arc<ValidConfig>,
    live: LiveAllowlist,
    recent: RecentAlerts,
    /// Control partitions (from the beginning) and alerts partitions (from the end).
    tail: Arc<BaseConsumer>,
    verdicts: BaseConsumer,
    producer: CtlProducer,
    /// Control partitions still to read up to the end seen at start: partition -> high.
    pending: BTreeMap<i32, i64>,
    assigned: bool,
    last_assign: Option<Instant>,
    warned_missing: bool,
    json_alerts: bool,
}

impl State {
    fn new(cfg: Arc<ValidConfig>, live: LiveAllowlist) -> Result<State, ServiceError> {
        let k = &cfg.raw.kafka;
        let mut vc = super::consumer_config(&cfg);
        // One verdicts group per deployment: the link and cluster stages have consumer groups
        // of their own, but their instances count verdicts with the account stage's, each
        // verdict once.
        let group = super::deployment_group(k);
        vc.set("group.id", format!("{group}-verdicts"))
            // A verdict is counted once: a new group starts at the oldest verdict retained.
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.offset.store", "true")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "0");
        let verdicts: BaseConsumer = vc.create()?;
        verdicts.subscribe(&[k.verdicts_topic.as_str()])?;
        Ok(State {
            tail: Arc::new(reader(&cfg, "control")?),
            verdicts,
            producer: producer(&cfg)?,
            // Accounts are kept only where a false_positive verdict may allowlist them.
            recent: RecentAlerts::new(
                cfg.raw.verdicts.remember_alerts,
                if cfg.raw.verdicts.false_positive_allow_secs > 0 {
                    MAX_VERDICT_ACCOUNTS
                } else {
                    0
                },
            ),
            live,
            pending: BTreeMap::new(),
            assigned: false,
            last_assign: None,
            warned_missing: false,
            json_alerts: k.alerts_format == crate::config::Format::Json,
            cfg,
        })
    }

    fn run(&mut self, stop: &AtomicBool, caught_up: &AtomicBool) {
        let mut last_gauge = Instant::now() - Duration::from_secs(10);
        while !stop.load(Ordering::Relaxed) {
            if !self.assigned
                && self
                    .last_assign
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.assign();
            }
            let tail = self.tail.clone();
            for _ in 0..512 {
                match tail.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => self.on_tail(&m),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "control consumer error");
                        break;
                    }
                    None => break,
                }
            }
            if self.last_assign.is_some()
                && self.pending.is_empty()
                && !caught_up.load(Ordering::Relaxed)
            {
                caught_up.store(true, Ordering::Release);
                tracing::info!(
                    topic = %self.cfg.raw.kafka.control_topic,
                    entries = self.live.count_in_force(now_ms()),
                    "live allowlist read; following it"
                );
            }
            for _ in 0..512 {
                match self.verdicts.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => self.on_verdict(&m),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "verdicts consumer error");
                        break;
                    }
                    None => break,
                }
            }
            if last_gauge.elapsed() >= Duration::from_secs(1) {
                metrics::gauge!(telemetry::ALLOWLIST_LIVE_ENTRIES)
                    .set(self.live.count_in_force(now_ms()) as f64);
                last_gauge = Instant::now();
            }
        }
        let _ = self.producer.flush(Duration::from_secs(2));
    }

    /// Assigns the control topic from the beginning and the alerts topic from its end. A
    /// missing control topic is retried every 10 s; meanwhile only the static list applies.
    fn assign(&mut self) {
        self.last_assign = Some(Instant::now());
        let k = &self.cfg.raw.kafka;
        let control = partitions(&self.tail, &k.control_topic);
        let mut tpl = TopicPartitionList::new();
        for &(p, low, high) in &control {
            let _ = tpl.add_partition_offset(&k.control_topic, p, Offset::Beginning);
            if high > low {
                self.pending.insert(p, high);
            }
        }
        for (p, _, _) in partitions(&self.tail, &k.alerts_topic) {
            let _ = tpl.add_partition_offset(&k.alerts_topic, p, Offset::End);
        }
        if control.is_empty() && !self.warned_missing {
            self.warned_missing = true;
            tracing::warn!(
                topic = %k.control_topic,
                "the control topic is missing: only the static allowlist applies; retrying every 10 s"
            );
        }
        match self.tail.assign(&tpl) {
            Ok(()) => self.assigned = !control.is_empty(),
            Err(e) => {
                self.pending.clear();
                tracing::warn!(error = %e, "cannot assign the control topic");
            }
        }
    }

    fn on_tail(&mut self, m: &BorrowedMessage<'_>) {
        let k = &self.cfg.raw.kafka;
        if m.topic() == k.alerts_topic {
            let Some(bytes) = m.payload() else { return };
            if let Some(a) = Alert::decode(bytes, self.json_alerts) {
                self.recent.remember(&a);
            }
            return;
        }
        if let Some(&high) = self.pending.get(&m.partition()) {
            if m.offset() + 1 >= high {
                self.pending.remove(&m.partition());
            }
        }
        match parse_control(m.key(), m.payload()) {
            Ok(op) => {
                let result = match &op {
                    ControlOp::Upsert(e) => {
                        tracing::info!(
                            subject = %e.subject.key(),
                            author = %e.author,
                            expires_ms = e.expires_ms,
                            "live allowlist entry"
                        );
                        "applied"
                    }
                    ControlOp::Remove(s) => {
                        tracing::info!(subject = %s.key(), "live allowlist entry removed");
                        "removed"
                    }
                };
                self.live.apply(op);
                metrics::counter!(telemetry::CONTROL_RECORDS, "topic" => "control", "result" => result)
                    .increment(1);
                metrics::gauge!(telemetry::ALLOWLIST_LIVE_ENTRIES)
                    .set(self.live.count_in_force(now_ms()) as f64);
            }
            Err(e) => {
                metrics::counter!(telemetry::CONTROL_RECORDS, "topic" => "control", "result" => "malformed")
                    .increment(1);
                self.dead_letter(m, &e);
            }
        }
    }

    fn on_verdict(&self, m: &BorrowedMessage<'_>) {
        let v = match parse_verdict(m.payload()) {
            Ok(v) => v,
            Err(e) => {
                metrics::counter!(telemetry::CONTROL_RECORDS, "topic" => "verdicts", "result" => "malformed")
                    .increment(1);
                self.dead_letter(m, &e);
                return;
            }
        };
        let remembered = self.recent.get(&v.verdict.alert_id);
        let kind = v
            .kind
            .or(remembered.as_ref().map(|r| r.kind))
            .unwrap_or(UNKNOWN);
        let severity = v
            .severity
            .or(remembered.as_ref().map(|r| r.severity))
            .unwrap_or(UNKNOWN);
        let judgement = v.verdict.verdict;
        metrics::counter!(telemetry::ALERT_VERDICTS,
            "kind" => kind, "severity" => severity, "verdict" => judgement.label())
        .increment(1);
        metrics::counter!(telemetry::CONTROL_RECORDS, "topic" => "verdicts", "result" => "applied")
            .increment(1);
        tracing::info!(
            alert_id = %v.verdict.alert_id,
            verdict = judgement.label(),
            author = %v.verdict.author,
            kind,
            severity,
            "verdict"
        );
        let secs = self.cfg.raw.verdicts.false_positive_allow_secs;
        if judgement != Judgement::FalsePositive || secs == 0 {
            return;
        }
        let Some(r) = remembered else {
            tracing::warn!(
                alert_id = %v.verdict.alert_id,
                "false_positive verdict on an alert not remembered: nothing allowlisted"
            );
            return;
        };
        let now = now_ms();
        for account in r.accounts.iter().take(MAX_VERDICT_ACCOUNTS) {
            let entry = Entry {
                subject: Subject::Account(account.clone()),
                reason: format!("false_positive verdict on alert {}", v.verdict.alert_id),
                author: format!("verdict:{}", v.verdict.author),
                created_ms: Some(now),
                expires_ms: now + (secs as i64).saturating_mul(1000),
            };
            let value = serde_json::to_vec(&entry.to_record()).unwrap_or_default();
            send(
                &self.producer,
                &self.cfg.raw.kafka.control_topic,
                entry.subject.key().as_bytes(),
                Some(&value),
                None,
                "control",
            );
        }
    }

    /// The record's bytes to the dead-letter topic, with the same headers as a bad event.
    fn dead_letter(&self, m: &BorrowedMessage<'_>, e: &ControlError) {
        tracing::warn!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            reason = e.reason(),
            error = %e,
            "malformed control record dead-lettered"
        );
        let mut payload = m.payload().unwrap_or_default().to_vec();
        let source = super::dead_letter::Source {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let headers =
            super::dead_letter::prepare(e.reason(), &e.to_string(), source, &mut payload, DLQ_CAP);
        send(
            &self.producer,
            &self.cfg.raw.kafka.dlq_topic,
            m.key().unwrap_or_default(),
            Some(&payload),
            Some(headers),
            "dlq",
        );
    }
}

/// Queues one record (retrying while the local queue is full, for at most 10 s).
fn send(
    p: &CtlProducer,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
    dest: &'static str,
) {
    let mut rec = BaseRecord::with_opaque_to(topic, Box::new(dest)).key(key);
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    let until = Instant::now() + TIMEOUT;
    loop {
        match p.send(rec) {
            Ok(()) => return,
            Err((e, r)) => {
                if Instant::now() >= until {
                    metrics::counter!(telemetry::PRODUCER_ERRORS, "destination" => dest)
                        .increment(1);
                    tracing::warn!(error = %e, topic, "cannot queue a control-side record");
                    return;
                }
                rec = r;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

// ------------------------------------------------------------------------------ the CLI side

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic `{0}` does not exist (create it compacted: cleanup.policy=compact)")]
    NoTopic(String),
    #[error("{0} record(s) were not delivered to `{1}` within 30 s")]
    Undelivered(usize, String),
    #[error("`{topic}` was not read to its end within {secs} s")]
    Timeout { topic: String, secs: u64 },
}

/// Writes records (key, value or tombstone) and waits for every delivery.
pub fn write(
    cfg: &ValidConfig,
    topic: &str,
    records: &[(String, Option<Vec<u8>>)],
) -> Result<(), ClientError> {
    let p = producer(cfg)?;
    for (key, value) in records {
        send(&p, topic, key.as_bytes(), value.as_deref(), None, "control");
    }
    if p.flush(Duration::from_secs(30)).is_err() {
        return Err(ClientError::Undelivered(
            p.in_flight_count().max(1) as usize,
            topic.to_string(),
        ));
    }
    let failed = p.context().failures.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ClientError::Undelivered(failed, topic.to_string()));
    }
    Ok(())
}

/// Reads the control topic to its end and returns the entries in force now, by subject, and
/// the number of malformed records skipped.
pub fn read_allowlist(cfg: &ValidConfig) -> Result<(Vec<Entry>, usize), ClientError> {
    let topic = &cfg.raw.kafka.control_topic;
    let c = reader(cfg, "allow-list")?;
    let parts = partitions(&c, topic);
    if parts.is_empty() {
        return Err(ClientError::NoTopic(topic.clone()));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &(p, low, high) in &parts {
        if high > low {
            let _ = tpl.add_partition_offset(topic, p, Offset::Beginning);
            ends.insert(p, high);
        }
    }
    let live = LiveAllowlist::default();
    let mut malformed = 0;
    if !ends.is_empty() {
        c.assign(&tpl)?;
    }
    let secs = 60;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout {
                topic: topic.clone(),
                secs,
            });
        }
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        if ends
            .get(&m.partition())
            .is_some_and(|&h| m.offset() + 1 >= h)
        {
            ends.remove(&m.partition());
        }
        match parse_control(m.key(), m.payload()) {
            Ok(op) => live.apply(op),
            Err(_) => malformed += 1,
        }
    }
    Ok((live.in_force(now_ms()), malformed))
}
