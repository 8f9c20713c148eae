//! Alerts and dead-letter records on their way out: sent with an idempotent producer, held
//! until their delivery report, retried until they succeed (never dropped), and tied to the
//! input offset that caused them so that offset is stored only afterwards.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use metrics::Counter;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
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
    /// The account stage's observation of an event, for the link stage.
    Observation,
}

impl Record {
    fn dest(self) -> Dest {
        match self {
            Record::Alert { .. } => Dest::Alerts,
            Record::DeadLetter => Dest::Dlq,
            Record::Observation => Dest::Observations,
        }
    }
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Alerts,
    Dlq,
    Observations,
}

impl Dest {
    pub const ALL: [Dest; 3] = [Dest::Alerts, Dest::Dlq, Dest::Observations];

    pub fn label(self) -> &'static str {
        match self {
            Dest::Alerts => "alerts",
            Dest::Dlq => "dlq",
            Dest::Observations => "observations",
        }
    }
}

/// What rides along with a message to its delivery report.
pub struct Tag {
    id: u64,
    dest: Dest,
    /// Kafka timestamp of the input record that caused it (ms).
    source_ts_ms: i64,
}

struct Report {
    id: u64,
    error: Option<KafkaError>,
}

/// Producer context: forwards delivery reports to the outbox and times alerts.
pub struct ProducerCtx {
    reports: Sender<Report>,
    errors: Counter,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.increment(1);
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
            Err((e, _)) => Some(e.clone()),
        };
        // The receiver lives as long as the outbox; a send error means shutdown.
        let _ = self.reports.send(Report { id: tag.id, error });
    }
}

/// A record waiting for its delivery report (kept for re-sending).
struct Pending {
    record: Record,
    partition: i32,
    offset: i64,
    track: bool,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    source_ts_ms: i64,
    attempts: u32,
    /// Waiting to be (re)sent from this instant.
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct State {
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
    producer: ThreadedProducer<ProducerCtx>,
    reports: Receiver<Report>,
    state: Mutex<State>,
    alerts_topic: String,
    dlq_topic: String,
    observations_topic: String,
    producer_errors: [Counter; 3],
    dlq_delivered: Counter,
}

impl Outbox {
    pub fn new(
        config: &ClientConfig,
        alerts_topic: &str,
        dlq_topic: &str,
        observations_topic: &str,
    ) -> Result<Arc<Self>, KafkaError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctx = ProducerCtx {
            reports: tx,
            errors: metrics::counter!(telemetry::KAFKA_ERRORS),
        };
        let producer: ThreadedProducer<ProducerCtx> = config.create_with_context(ctx)?;
        Ok(Arc::new(Self {
            producer,
            reports: rx,
            state: Mutex::new(State::default()),
            alerts_topic: alerts_topic.to_string(),
            dlq_topic: dlq_topic.to_string(),
            observations_topic: observations_topic.to_string(),
            producer_errors: Dest::ALL
                .map(|d| metrics::counter!(telemetry::PRODUCER_ERRORS, "destination" => d.label())),
            dlq_delivered: metrics::counter!(telemetry::DLQ_MESSAGES),
        }))
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
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        if out.track {
            st.tracker.hold(out.partition, out.offset);
        }
        let mut p = Pending {
            record: out.record,
            partition: out.partition,
            offset: out.offset,
            track: out.track,
            key: out.key,
            payload: out.payload,
            headers: out.headers,
            source_ts_ms: out.source_ts_ms,
            attempts: 0,
            retry_at: None,
        };
        if let Some(at) = self.produce(id, &mut p) {
            st.retries.insert((at, id));
        }
        st.pending.insert(id, p);
    }

    /// Hands the record to the producer; returns when to try again if its queue refused it.
    fn produce(&self, id: u64, p: &mut Pending) -> Option<Instant> {
        let dest = p.record.dest();
        let topic = match dest {
            Dest::Alerts => &self.alerts_topic,
            Dest::Dlq => &self.dlq_topic,
            Dest::Observations => &self.observations_topic,
        };
        let mut record = BaseRecord::with_opaque_to(
            topic,
            Box::new(Tag {
                id,
                dest,
                source_ts_ms: p.source_ts_ms,
            }),
        )
        .key(&p.key)
        .payload(&p.payload);
        if dest == Dest::Observations {
            // Observations of input partition p go to partition p: each partition of the
            // observations topic has one writer at a time, in its event-time order.
            record = record.partition(p.partition);
        }
        if let Some(h) = &p.headers {
            record = record.headers(h.clone());
        }
        p.attempts += 1;
        match self.producer.send(record) {
            Ok(()) => {
                p.retry_at = None;
                None
            }
            Err((e, _)) => {
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

    /// Applies delivery reports and re-sends what is due. Returns the number still pending.
    pub fn pump(&self) -> usize {
        let mut st = self.state();
        while let Ok(r) = self.reports.try_recv() {
            self.apply(&mut st, r);
        }
        let now = Instant::now();
        let State {
            pending, retries, ..
        } = &mut *st;
        while let Some(&(at, id)) = retries.first() {
            if at > now {
                break;
            }
            retries.pop_first();
            // Delivered meanwhile, or rescheduled: nothing to do for this entry.
            if let Some(p) = pending.get_mut(&id).filter(|p| p.retry_at == Some(at)) {
                if let Some(next) = self.produce(id, p) {
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

    /// Applies one delivery report: release the input offset, or schedule a retry.
    fn apply(&self, st: &mut State, r: Report) {
        let Some(mut p) = st.pending.remove(&r.id) else {
            return;
        };
        match r.error {
            None => {
                if p.track {
                    st.tracker.release(p.partition, p.offset);
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
                    Record::Observation => {}
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
