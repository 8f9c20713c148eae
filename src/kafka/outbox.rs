//! Alerts and dead-letter records on their way out: sent with an idempotent producer, held
//! until their delivery report, retried until they succeed (never dropped), and tied to the
//! input offset that caused them so that offset is stored only afterwards.
//!
//! An idempotent producer that hits a fatal error (its epoch fenced, a sequence gap it cannot
//! close) refuses every record from then on. The outbox then replaces it with a new producer
//! (a new producer id) and re-sends every record still pending on it, in the order they were
//! first sent; the engine's state and the input offsets held for them are untouched. Reports
//! of the old producer still arriving count only if they say delivered.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use metrics::Counter;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;

use super::offsets::Tracker;
use crate::alert::{Kind, Severity};
use crate::telemetry::{self, now_ms};

/// What a record is: it decides the topic and what its delivery is counted by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Record {
    /// An alert; delivered alerts are counted by kind and severity, their scores recorded.
    Alert {
        kind: Kind,
        severity: Severity,
        score: f64,
    },
    /// A rejected input record's original bytes, for the dead-letter topic.
    DeadLetter,
    /// The account stage's observations, for link shard `shard` (0 with one link instance):
    /// to the partition of the input partition they came from.
    Observation { shard: u16 },
    /// A link shard's link records, for the cluster stage: to partition `partition`, the
    /// shard's own.
    Links { partition: i32 },
}

impl Record {
    fn dest(self) -> Dest {
        match self {
            Record::Alert { .. } => Dest::Alerts,
            Record::DeadLetter => Dest::Dlq,
            Record::Observation { .. } => Dest::Observations,
            Record::Links { .. } => Dest::Links,
        }
    }
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Alerts,
    Dlq,
    Observations,
    Links,
}

impl Dest {
    pub const ALL: [Dest; 4] = [Dest::Alerts, Dest::Dlq, Dest::Observations, Dest::Links];

    pub fn label(self) -> &'static str {
        match self {
            Dest::Alerts => "alerts",
            Dest::Dlq => "dlq",
            Dest::Observations => "observations",
            Dest::Links => "links",
        }
    }
}

/// What rides along with a message to its delivery report.
pub struct Tag {
    id: u64,
    /// The producer it was handed to (see [`Outbox`]: a producer replaced after a fatal error).
    generation: u32,
    dest: Dest,
    /// Kafka timestamp of the input record that caused it (ms).
    source_ts_ms: i64,
}

struct Report {
    id: u64,
    generation: u32,
    error: Option<KafkaError>,
}

/// Producer context: forwards delivery reports to the outbox, times alerts, and raises the
/// outbox's flag when the producer reports a fatal error.
pub struct ProducerCtx {
    reports: Sender<Report>,
    errors: Counter,
    fatal: Arc<AtomicBool>,
}

/// Whether `e` is librdkafka's fatal error: the producer accepts nothing any more.
fn is_fatal(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.increment(1);
        if is_fatal(&error) {
            self.fatal.store(true, Ordering::Release);
        }
        tracing::warn!(%error, reason, "alert producer error");
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Tag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Self::DeliveryOpaque) {
        let error = match result {
            Ok(_) => {
                if tag.dest == Dest::Alerts && tag.source_ts_ms > 0 {
                    let secs = (now_ms() - tag.source_ts_ms).max(0) as f64 / 1000.0;
                    metrics::histogram!(telemetry::EVENT_TO_ALERT).record(secs);
                }
                None
            }
            Err((e, _)) => {
                if is_fatal(e) {
                    self.fatal.store(true, Ordering::Release);
                }
                Some(e.clone())
            }
        };
        // The receiver lives as long as the outbox; a send error means shutdown.
        let _ = self.reports.send(Report {
            id: tag.id,
            generation: tag.generation,
            error,
        });
    }
}

/// A record waiting for its delivery report (kept for re-sending).
struct Pending {
    record: Record,
    partition: i32,
    offset: i64,
    track: bool,
    /// More input offsets held until it is delivered (of other partitions, see
    /// [`Outbox::send_holding`]).
    also: Vec<(i32, i64)>,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    source_ts_ms: i64,
    attempts: u32,
    /// The producer it was last handed to.
    generation: u32,
    /// Waiting to be (re)sent from this instant.
    retry_at: Option<Instant>,
}

struct State {
    /// The producer in use, and how many were replaced before it.
    producer: ThreadedProducer<ProducerCtx>,
    generation: u32,
    /// Set by that producer's callbacks on a fatal error (each producer has its own, so a
    /// replaced one failing what it still held raises nothing).
    fatal: Arc<AtomicBool>,
    pending: HashMap<u64, Pending>,
    /// Pending records waiting to be re-sent, by when: a turn looks at these only, not at
    /// every record in flight (an account instance has one per event in flight).
    retries: BTreeSet<(Instant, u64)>,
    tracker: Tracker,
    next_id: u64,
}

/// An alert or dead-letter record to send.
pub struct Outgoing {
    pub record: Record,
    pub partition: i32,
    pub offset: i64,
    /// Hold the input offset until delivered (not for alerts re-sent during a rebuild,
    /// whose offsets are already committed).
    pub track: bool,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    pub source_ts_ms: i64,
}

pub struct Outbox {
    /// What a replacement producer is made from.
    config: ClientConfig,
    reports_tx: Sender<Report>,
    reports: Receiver<Report>,
    state: Mutex<State>,
    alerts_topic: String,
    dlq_topic: String,
    /// One per link shard.
    observations_topics: Vec<String>,
    links_topic: String,
    producer_errors: [Counter; 4],
    producer_restarts: Counter,
    dlq_delivered: Counter,
}

impl Outbox {
    pub fn new(
        config: &ClientConfig,
        alerts_topic: &str,
        dlq_topic: &str,
        observations_topics: Vec<String>,
        links_topic: &str,
    ) -> Result<Arc<Self>, KafkaError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (producer, fatal) = Self::producer(config, &tx)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            reports_tx: tx,
            reports: rx,
            state: Mutex::new(State {
                producer,
                generation: 0,
                fatal,
                pending: HashMap::new(),
                retries: BTreeSet::new(),
                tracker: Tracker::default(),
                next_id: 0,
            }),
            alerts_topic: alerts_topic.to_string(),
            dlq_topic: dlq_topic.to_string(),
            observations_topics,
            links_topic: links_topic.to_string(),
            producer_errors: Dest::ALL
                .map(|d| metrics::counter!(telemetry::PRODUCER_ERRORS, "destination" => d.label())),
            producer_restarts: metrics::counter!(telemetry::PRODUCER_RESTARTS),
            dlq_delivered: metrics::counter!(telemetry::DLQ_MESSAGES),
        }))
    }

    /// A producer on `config` reporting to `reports`, and its fatal-error flag.
    fn producer(
        config: &ClientConfig,
        reports: &Sender<Report>,
    ) -> Result<(ThreadedProducer<ProducerCtx>, Arc<AtomicBool>), KafkaError> {
        let fatal = Arc::new(AtomicBool::new(false));
        let ctx = ProducerCtx {
            reports: reports.clone(),
            errors: metrics::counter!(telemetry::KAFKA_ERRORS),
            fatal: fatal.clone(),
        };
        Ok((config.create_with_context(ctx)?, fatal))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent-enough counters; keep
        // going rather than cascade.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the offset tracker.
    pub fn with_tracker<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        f(&mut self.state().tracker)
    }

    /// Queues a record; its input offset is held until it is delivered.
    pub fn send(&self, out: Outgoing) {
        self.send_holding(out, Vec::new());
    }

    /// Queues a record caused by input records of several partitions: `also` (partition and
    /// offset) are held with its own input offset until it is delivered.
    pub fn send_holding(&self, out: Outgoing, also: Vec<(i32, i64)>) {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        if out.track {
            st.tracker.hold(out.partition, out.offset);
            for &(p, o) in &also {
                st.tracker.hold(p, o);
            }
        }
        let mut p = Pending {
            record: out.record,
            partition: out.partition,
            offset: out.offset,
            track: out.track,
            also,
            key: out.key,
            payload: out.payload,
            headers: out.headers,
            source_ts_ms: out.source_ts_ms,
            attempts: 0,
            generation: st.generation,
            retry_at: None,
        };
        if let Some(at) = self.produce(&st.producer, &st.fatal, st.generation, id, &mut p) {
            st.retries.insert((at, id));
        }
        st.pending.insert(id, p);
    }

    /// Hands the record to `producer`; returns when to try again if its queue refused it.
    fn produce(
        &self,
        producer: &ThreadedProducer<ProducerCtx>,
        fatal: &AtomicBool,
        generation: u32,
        id: u64,
        p: &mut Pending,
    ) -> Option<Instant> {
        let dest = p.record.dest();
        let topic = match p.record {
            Record::Alert { .. } => &self.alerts_topic,
            Record::DeadLetter => &self.dlq_topic,
            Record::Observation { shard } => &self.observations_topics[shard as usize],
            Record::Links { .. } => &self.links_topic,
        };
        let mut record = BaseRecord::with_opaque_to(
            topic,
            Box::new(Tag {
                id,
                generation,
                dest,
                source_ts_ms: p.source_ts_ms,
            }),
        )
        .key(&p.key)
        .payload(&p.payload);
        match p.record {
            // Observations of input partition p go to partition p: each partition of the
            // observations topic has one writer at a time, in its event-time order.
            Record::Observation { .. } => record = record.partition(p.partition),
            // A link shard's records go to its own partition: one writer too.
            Record::Links { partition } => record = record.partition(partition),
            _ => {}
        }
        if let Some(h) = &p.headers {
            record = record.headers(h.clone());
        }
        p.attempts += 1;
        p.generation = generation;
        match producer.send(record) {
            Ok(()) => {
                p.retry_at = None;
                None
            }
            Err((e, _)) => {
                if is_fatal(&e) {
                    fatal.store(true, Ordering::Release);
                }
                // Queue full: try again shortly. Anything else is counted too.
                if !matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                ) {
                    self.producer_errors[dest as usize].increment(1);
                    tracing::warn!(error = %e, "could not queue a record; retrying");
                }
                let at = Instant::now() + Duration::from_millis(50);
                p.retry_at = Some(at);
                Some(at)
            }
        }
    }

    /// Applies delivery reports and re-sends what is due, on a new producer if the one in use
    /// failed fatally. Returns the number still pending.
    pub fn pump(&self) -> usize {
        if self.state().fatal.load(Ordering::Acquire) {
            self.replace_producer();
        }
        let mut st = self.state();
        while let Ok(r) = self.reports.try_recv() {
            self.apply(&mut st, r);
        }
        let now = Instant::now();
        let State {
            producer,
            fatal,
            generation,
            pending,
            retries,
            ..
        } = &mut *st;
        while let Some(&(at, id)) = retries.first() {
            if at > now {
                break;
            }
            retries.pop_first();
            // Delivered meanwhile, or rescheduled: nothing to do for this entry.
            if let Some(p) = pending.get_mut(&id).filter(|p| p.retry_at == Some(at)) {
                if let Some(next) = self.produce(producer, fatal, *generation, id, p) {
                    retries.insert((next, id));
                }
            }
        }
        let n = st.pending.len();
        metrics::gauge!(telemetry::PENDING_DELIVERIES).set(n as f64);
        n
    }

    /// Waits until nothing is pending on `partitions` (all when `None`) or `deadline` passes.
    /// Returns whether everything was delivered.
    pub fn drain(&self, partitions: Option<&[i32]>, deadline: Instant) -> bool {
        loop {
            self.pump();
            let left = {
                let st = self.state();
                match partitions {
                    None => st.pending.len(),
                    Some(ps) => ps.iter().map(|&p| st.tracker.pending_on(p)).sum(),
                }
            };
            if left == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    pending = left,
                    "deliveries still outstanding at the deadline"
                );
                return false;
            }
            // Reports arrive on the producer's own thread; wait for the next one briefly.
            if let Ok(r) = self.reports.recv_timeout(Duration::from_millis(20)) {
                let mut st = self.state();
                self.apply(&mut st, r);
            }
        }
    }

    /// Replaces a producer that failed fatally, and re-sends every pending record on the new
    /// one in the order they were first sent. If no new producer can be made, the flag stays
    /// up and the next turn tries again.
    fn replace_producer(&self) {
        let (fresh, fatal) = match Self::producer(&self.config, &self.reports_tx) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not create a producer to replace the failed one");
                return;
            }
        };
        let old = {
            let mut st = self.state();
            let reason = st.producer.client().fatal_error();
            st.fatal = fatal;
            let old = std::mem::replace(&mut st.producer, fresh);
            st.generation = st.generation.wrapping_add(1);
            let State {
                producer,
                fatal,
                generation,
                pending,
                retries,
                ..
            } = &mut *st;
            retries.clear();
            let mut ids: Vec<u64> = pending.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids {
                if let Some(p) = pending.get_mut(id) {
                    if let Some(at) = self.produce(producer, fatal, *generation, *id, p) {
                        retries.insert((at, *id));
                    }
                }
            }
            self.producer_restarts.increment(1);
            tracing::error!(
                fatal = ?reason,
                resent = ids.len(),
                generation = st.generation,
                "the producer failed fatally; replaced it and re-sent every pending record"
            );
            old
        };
        // Dropping purges what the old producer still held; its reports are stale.
        drop(old);
    }

    /// Applies one delivery report: release the input offset, or schedule a retry. A report
    /// from a replaced producer counts only if it says delivered (the record was re-sent on
    /// the new one, whose report then finds nothing pending).
    fn apply(&self, st: &mut State, r: Report) {
        let stale = st
            .pending
            .get(&r.id)
            .is_some_and(|p| p.generation != r.generation);
        if stale && r.error.is_some() {
            return;
        }
        let Some(mut p) = st.pending.remove(&r.id) else {
            return;
        };
        match r.error {
            None => {
                if p.track {
                    st.tracker.release(p.partition, p.offset);
                    for &(q, o) in &p.also {
                        st.tracker.release(q, o);
                    }
                }
                match p.record {
                    Record::Alert {
                        kind,
                        severity,
                        score,
                    } => {
                        metrics::counter!(telemetry::ALERTS,
                            "kind" => kind.as_str(), "severity" => severity.as_str())
                        .increment(1);
                        metrics::histogram!(telemetry::ALERT_SCORE, "kind" => kind.as_str())
                            .record(score);
                    }
                    Record::DeadLetter => self.dlq_delivered.increment(1),
                    Record::Observation { .. } | Record::Links { .. } => {}
                }
            }
            Some(e) => {
                let dest = p.record.dest();
                self.producer_errors[dest as usize].increment(1);
                let backoff = Duration::from_millis((200u64 << p.attempts.min(5)).min(5000));
                tracing::warn!(
                    error = %e,
                    destination = dest.label(),
                    attempts = p.attempts,
                    "delivery failed; will retry"
                );
                let at = Instant::now() + backoff;
                p.retry_at = Some(at);
                st.retries.insert((at, r.id));
                st.pending.insert(r.id, p);
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.state().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::ffi::CString;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{Message, Offset, TopicPartitionList};

    use super::*;

    fn alert(i: u64) -> Outgoing {
        Outgoing {
            record: Record::Alert {
                kind: Kind::BulkExtraction,
                severity: Severity::Medium,
                score: 0.5,
            },
            partition: 0,
            offset: i as i64,
            track: true,
            key: format!("k{i}").into_bytes(),
            payload: format!("alert {i}").into_bytes(),
            headers: None,
            source_ts_ms: 0,
        }
    }

    /// Raises a fabricated fatal error in the outbox's producer, as librdkafka's tests do
    /// (there is no practical way to cause a real one).
    #[allow(unsafe_code)]
    fn fail_fatally(outbox: &Outbox) {
        let st = outbox.state();
        let reason = CString::new("test: sequence gap").expect("no NUL");
        // SAFETY: the producer is alive while the lock is held; the call only sets its
        // fatal error and fails what it holds.
        let r = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                st.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(
            r,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
    }

    #[test]
    fn a_producer_that_fails_fatally_is_replaced_and_every_pending_record_delivered() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("alerts", 1, 1).expect("topic");
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("enable.idempotence", "true")
            .set("linger.ms", "50");
        let outbox = Outbox::new(&cfg, "alerts", "dlq", vec!["observations".into()], "links")
            .expect("outbox");
        outbox.with_tracker(|t| t.start(0, 0));
        // Half the records are queued when the producer fails; the rest come after.
        for i in 0..200 {
            outbox.send(alert(i));
        }
        fail_fatally(&outbox);
        for i in 200..400 {
            outbox.send(alert(i));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while outbox.pump() > 0 {
            assert!(
                Instant::now() < deadline,
                "records still pending after 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(outbox.state().generation, 1, "replaced exactly once");
        // Every input offset was released: the tracker may store past all of them.
        outbox.with_tracker(|t| {
            t.processed(0, 399);
            assert_eq!(t.pending_on(0), 0);
            assert_eq!(t.storable(0), Some(400));
        });

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "check")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("alerts", 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut keys = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while keys.len() < 400 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                keys.insert(m.key().unwrap_or_default().to_vec());
            }
        }
        assert_eq!(keys.len(), 400, "every record reached the topic");
    }
}
