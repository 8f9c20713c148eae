//! Consumer callbacks: rebalances (position new partitions one window back, commit revoked
//! ones synchronously), statistics (consumer lag) and client errors.
//!
//! Callbacks run inside `BaseConsumer::poll` on the consumer thread; they record what changed
//! and the consumer loop rebuilds its state right after the poll returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::Counter;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::outbox::Outbox;
use super::seek::Reader;
use crate::config::ValidConfig;
use crate::telemetry::{self, now_ms};

pub use super::merge::Span;

/// Assignment changes since the consumer loop last looked.
#[derive(Debug, Default)]
pub struct Changes {
    pub assigned: BTreeMap<i32, Span>,
    pub revoked: Vec<i32>,
    /// Set on the first rebalance (even an empty assignment), for readiness.
    pub seen: bool,
}

pub struct ConsumerCtx {
    cfg: Arc<ValidConfig>,
    topic: String,
    rebuild_ms: i64,
    reset_latest: bool,
    drain_timeout: Duration,
    outbox: Arc<Outbox>,
    changes: Mutex<Changes>,
    changed: AtomicBool,
    errors: Counter,
    rebalance_assign: Counter,
    rebalance_revoke: Counter,
    commits_ok: Counter,
    commits_err: Counter,
    /// The pipeline is closing the consumer: it has drained and committed already.
    closing: AtomicBool,
}

const META_TIMEOUT: Duration = Duration::from_secs(10);

impl ConsumerCtx {
    pub fn new(cfg: Arc<ValidConfig>, drain_timeout: Duration, outbox: Arc<Outbox>) -> Self {
        let k = &cfg.raw.kafka;
        Self {
            topic: k.input_topic.clone(),
            rebuild_ms: (k.rebuild_secs * 1000) as i64,
            reset_latest: k.auto_offset_reset == crate::config::AutoOffsetReset::Latest,
            cfg: cfg.clone(),
            drain_timeout,
            outbox,
            changes: Mutex::new(Changes::default()),
            changed: AtomicBool::new(false),
            errors: metrics::counter!(telemetry::KAFKA_ERRORS),
            rebalance_assign: metrics::counter!(telemetry::REBALANCES, "kind" => "assign"),
            rebalance_revoke: metrics::counter!(telemetry::REBALANCES, "kind" => "revoke"),
            commits_ok: metrics::counter!(telemetry::COMMITS, "result" => "ok"),
            commits_err: metrics::counter!(telemetry::COMMITS, "result" => "error"),
            closing: AtomicBool::new(false),
        }
    }

    /// Takes the changes recorded since the last call, if any.
    pub fn take_changes(&self) -> Option<Changes> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        Some(std::mem::take(&mut *c))
    }

    pub fn has_changes(&self) -> bool {
        self.changed.load(Ordering::Acquire)
    }

    /// The pipeline drained and committed, and is closing the consumer: the revoke that the
    /// close causes only releases the partitions (a synchronous commit there would wait
    /// behind a JoinGroup request the coordinator may hold for the rebalance timeout).
    pub fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Commits `offsets` without waiting for the result (counted if it fails to be sent).
    pub fn commit_async(&self, consumer: &BaseConsumer<Self>, offsets: &TopicPartitionList) {
        if offsets.count() == 0 {
            return;
        }
        if let Err(e) = consumer.commit(offsets, CommitMode::Async) {
            self.commits_err.increment(1);
            tracing::warn!(error = %e, "asynchronous offset commit failed");
        }
    }

    /// Commits `offsets` synchronously, counting the result.
    pub fn commit_sync(&self, consumer: &BaseConsumer<Self>, offsets: &TopicPartitionList) {
        if offsets.count() == 0 {
            return;
        }
        match consumer.commit(offsets, CommitMode::Sync) {
            Ok(()) => self.commits_ok.increment(1),
            Err(e) => {
                self.commits_err.increment(1);
                tracing::warn!(error = %e, "synchronous offset commit failed");
            }
        }
    }

    /// Start and target offsets for newly assigned partitions: start one window back (by
    /// record timestamp), resume live at the committed offset.
    fn plan(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) -> BTreeMap<i32, Span> {
        let mut plan = BTreeMap::new();
        let committed = consumer
            .committed_offsets(tpl.clone(), META_TIMEOUT)
            .map_err(|e| tracing::warn!(error = %e, "could not read committed offsets"))
            .ok();
        let reader = Reader::new(&self.cfg)
            .map_err(|e| tracing::warn!(error = %e, "cannot create the rebuild reader"))
            .ok();
        let since = now_ms() - self.rebuild_ms;
        for el in tpl.elements() {
            let p = el.partition();
            let (low, high) = consumer
                .fetch_watermarks(el.topic(), p, META_TIMEOUT)
                .unwrap_or((0, 0));
            let target = match committed
                .as_ref()
                .and_then(|c| c.find_partition(el.topic(), p))
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= 0 => o,
                _ if self.reset_latest => high,
                _ => low,
            };
            let start = match &reader {
                Some(r) if self.rebuild_ms > 0 => r.offset_at(el.topic(), p, since, low, target),
                _ => target,
            };
            plan.insert(
                p,
                Span {
                    start,
                    target,
                    end: high.max(target),
                },
            );
        }
        plan
    }
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else {
            return;
        };
        for (id, part) in &topic.partitions {
            // Only partitions this instance owns ("desired"); -1 is the internal UA partition.
            if *id < 0 || !part.desired || part.consumer_lag < 0 {
                continue;
            }
            metrics::gauge!(telemetry::CONSUMER_LAG,
                "topic" => self.topic.clone(), "partition" => id.to_string())
            .set(part.consumer_lag as f64);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            return; // end of partition: expected, used for catch-up
        }
        self.errors.increment(1);
        tracing::warn!(%error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.rebalance_assign.increment(1);
                let plan = self.plan(consumer, tpl);
                for (&p, span) in &plan {
                    let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(span.start));
                }
                let res = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "partition assignment failed");
                }
                tracing::info!(partitions = ?plan, "partitions assigned");
                self.self_record(|c| {
                    c.assigned.extend(plan);
                });
            }
            _ => {
                let revoke = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS;
                if revoke {
                    self.rebalance_revoke.increment(1);
                } else {
                    self.errors.increment(1);
                    tracing::error!(?err, "rebalance error; releasing the assignment");
                }
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                // Deliver what these partitions' events caused, then commit where they stand.
                if !consumer.assignment_lost() && !self.closing.load(Ordering::Acquire) {
                    self.outbox
                        .drain(Some(&parts), Instant::now() + self.drain_timeout);
                    let mut offsets = TopicPartitionList::new();
                    self.outbox.with_tracker(|t| {
                        for &p in &parts {
                            if let Some(o) = t.storable(p) {
                                let _ =
                                    offsets.add_partition_offset(&self.topic, p, Offset::Offset(o));
                            }
                        }
                    });
                    self.commit_sync(consumer, &offsets);
                }
                self.outbox
                    .with_tracker(|t| parts.iter().for_each(|&p| t.remove(p)));
                let res = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = res {
                    tracing::error!(error = %e, "partition unassignment failed");
                }
                tracing::info!(partitions = ?parts, "partitions revoked");
                self.self_record(|c| {
                    for p in &parts {
                        c.assigned.remove(p);
                    }
                    c.revoked.extend(parts);
                });
            }
        }
    }
}

impl ConsumerCtx {
    fn self_record(&self, f: impl FnOnce(&mut Changes)) {
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        c.seen = true;
        f(&mut c);
        self.changed.store(true, Ordering::Release);
    }
}
