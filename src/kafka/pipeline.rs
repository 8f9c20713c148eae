//! The consumer loop: poll, decode, run the engine, hand alerts and dead letters to the
//! outbox, store offsets once their deliveries succeeded, rebuild state after rebalances.
//!
//! The loop runs on one dedicated thread because the engine is synchronous and owns its state.
//! Decoding and fingerprinting, about half of a record's cost, run on decode threads
//! ([`super::decode`]): each turn's polled records go out as one batch while the engine takes
//! the previous batches, which come back in poll order, into the event-time merge. A record
//! the crash-loop guard must watch ([`super::guard`]) is decoded here instead, with no batch in
//! flight, so that a death is blamed on the right record.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::context::{Changes, ConsumerCtx};
use super::dead_letter;
use super::decode::{Batch, Decode, Decoded, Item, Lost, Pool, RecordRef};
use super::events::{Judged, Recorder, State, Suppressed};
use super::guard::Guard;
use super::merge::{Intent, Merge, Span, Taken};
use super::outbox::{Outbox, Outgoing, Record};
use super::seek::Reader;
use super::ServiceError;
use crate::alert::{Alert, Kind, Severity};
use crate::config::{Format, StageRole, ValidConfig};
use crate::control::LiveAllowlist;
use crate::detect::Emitted;
use crate::engine::cluster_stage::ClusterStage;
use crate::engine::{account_key, link_targets, Engine, Observation, Prepared, Stats};
use crate::event::{DecodeError, Event};
use crate::telemetry::{self, Health};

/// Messages taken per turn of the loop before outbox and offsets are serviced.
const BATCH: usize = 2048;
/// One event in this many has its processing time recorded.
const SAMPLE_EVERY: u64 = 32;

struct Counters {
    /// Labelled per-record events (see [`super::events`]).
    ev: Recorder,
    catchup_events: Counter,
    kafka_errors: Counter,
    processing: Histogram,
    catchup_duration: Histogram,
    tracked_accounts: Gauge,
    tracked_values: Gauge,
    tracked_clusters: Gauge,
    assigned: Gauge,
    catchup_remaining: Gauge,
    watermark: Gauge,
}

impl Counters {
    fn new() -> Self {
        use telemetry as t;
        Self {
            ev: Recorder::new(),
            catchup_events: metrics::counter!(t::CATCHUP_EVENTS),
            kafka_errors: metrics::counter!(t::KAFKA_ERRORS),
            processing: metrics::histogram!(t::PROCESSING),
            catchup_duration: metrics::histogram!(t::CATCHUP_DURATION),
            tracked_accounts: metrics::gauge!(t::TRACKED_ACCOUNTS),
            tracked_values: metrics::gauge!(t::TRACKED_ATTRIBUTE_VALUES),
            tracked_clusters: metrics::gauge!(t::TRACKED_CLUSTERS),
            assigned: metrics::gauge!(t::ASSIGNED_PARTITIONS),
            catchup_remaining: metrics::gauge!(t::CATCHUP_REMAINING),
            watermark: metrics::gauge!(t::WATERMARK),
        }
    }

    /// Makes every labelled series visible from the start (at zero), so dashboards and rules
    /// see them before the first occurrence.
    fn touch() {
        use telemetry as t;
        Recorder::register();
        for k in Kind::ALL {
            for s in Severity::ALL {
                metrics::counter!(t::ALERTS, "kind" => k.as_str(), "severity" => s.as_str())
                    .increment(0);
            }
        }
        for d in super::outbox::Dest::ALL {
            metrics::counter!(t::PRODUCER_ERRORS, "destination" => d.label()).increment(0);
        }
        for k in ["assign", "revoke"] {
            metrics::counter!(t::REBALANCES, "kind" => k).increment(0);
        }
        for r in ["ok", "error"] {
            metrics::counter!(t::COMMITS, "result" => r).increment(0);
        }
        metrics::counter!(t::DLQ_MESSAGES).increment(0);
        metrics::counter!(t::POISON_SKIPPED).increment(0);
        metrics::counter!(t::KAFKA_ERRORS).increment(0);
        metrics::counter!(t::CATCHUP_EVENTS).increment(0);
        metrics::gauge!(t::PENDING_DELIVERIES).set(0.0);
        metrics::gauge!(t::CATCHUP_REMAINING).set(0.0);
        metrics::gauge!(t::READY).set(0.0);
    }
}

pub struct Pipeline {
    cfg: Arc<ValidConfig>,
    consumer: Arc<BaseConsumer<ConsumerCtx>>,
    outbox: Arc<Outbox>,
    decode: Decode,
    /// Decode threads, and the batch of this turn's records not yet handed to them.
    pool: Pool,
    pending: Batch,
    engine: Engine,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    topic: String,
    json_out: bool,
    /// Records of all owned partitions, merged by event time (see [`super::merge`]).
    merge: Merge<Item>,
    /// Reused buffers for what the merge lets through and asks for.
    taken: Vec<Taken<Item>>,
    intents: Vec<Intent>,
    /// Offsets processed in this turn, and how they were judged, handed to the offset tracker
    /// and the counters once per turn: one lock of the outbox and a few atomic adds instead of
    /// one of each per record.
    processed: Vec<(i32, i64)>,
    judged: [u64; Judged::ALL.len()],
    /// Wall clock at the start of this turn of the loop (one clock read per batch).
    turn: Instant,
    owned: BTreeSet<i32>,
    /// Partitions paused for back-pressure (too many deliveries outstanding).
    backpressured: bool,
    seen_assignment: bool,
    alerts: Vec<Alert>,
    /// (kind, account) pairs already alerted within the rebuild span, read back from the
    /// alerts topic: a re-read record's alert is sent again only if it names someone new.
    emitted: HashSet<(Kind, String)>,
    c: Counters,
    /// Engine counters already exported (the engine is replaced on every rebuild).
    exported: Stats,
    tick: u64,
    /// Crash-loop guard: leases and careful touches in the marker file, poison records.
    guard: Guard,
    /// Entries from the control topic, consulted by every engine built here.
    live: LiveAllowlist,
    /// The decode threads are gone.
    lost: bool,
    /// Account stage: observations gathered this turn, by link shard and observations
    /// partition.
    batches: BTreeMap<(u16, i32), super::observation::Batch>,
    /// Link shards (`kafka.link_shards` above 1): the partition of the links topic this
    /// shard writes, what its engine decided on the event in hand, and what it decided this
    /// turn, for the cluster stage.
    links_partition: Option<i32>,
    decided: Emitted,
    links: super::links::Batch,
    /// The cluster stage (`kafka.role` cluster): it takes the links topic's records instead of
    /// the engine, which stays empty.
    cluster: Option<Box<ClusterStage>>,
    /// The last links record it took (partition, offset, Kafka timestamp) and whether live:
    /// what the alerts of an event taken in at the end of a turn are attributed to.
    last_part: Option<((i32, i64, i64), bool)>,
}

impl Pipeline {
    pub fn new(
        cfg: Arc<ValidConfig>,
        consumer: BaseConsumer<ConsumerCtx>,
        outbox: Arc<Outbox>,
        health: Arc<Health>,
        stop: Arc<AtomicBool>,
        live: LiveAllowlist,
    ) -> Result<Self, ServiceError> {
        let decoder =
            crate::replay::decoder(&cfg).map_err(|e| ServiceError::Config(e.to_string()))?;
        Counters::touch();
        let k = &cfg.raw.kafka;
        let mut decode = Decode::new(decoder, k.input_format == Format::Json);
        match k.role {
            StageRole::Link => decode = decode.observations(),
            StageRole::Cluster => decode = decode.links(),
            _ => {}
        }
        let links_partition =
            (k.role == StageRole::Link && k.sharded()).then_some(k.link_shard as i32);
        let mut pool = Pool::new(&decode, Pool::workers()).map_err(ServiceError::Thread)?;
        Ok(Self {
            topic: k.input_topic.clone(),
            json_out: k.alerts_format == Format::Json,
            engine: new_engine(&cfg, &live),
            cluster: new_cluster(&cfg, &live),
            last_part: None,
            live,
            pending: pool.batch(),
            pool,
            decode,
            consumer: Arc::new(consumer),
            outbox,
            health,
            stop,
            merge: new_merge(&cfg),
            taken: Vec::new(),
            intents: Vec::new(),
            processed: Vec::with_capacity(BATCH),
            judged: [0; Judged::ALL.len()],
            turn: Instant::now(),
            owned: BTreeSet::new(),
            backpressured: false,
            seen_assignment: false,
            alerts: Vec::new(),
            emitted: HashSet::new(),
            c: Counters::new(),
            exported: Stats::default(),
            tick: 0,
            guard: Guard::open(&cfg),
            lost: false,
            batches: BTreeMap::new(),
            links_partition,
            decided: Emitted::default(),
            links: super::links::Batch::default(),
            cfg,
        })
    }

    /// Runs until the stop flag is set, then drains and commits within `deadline`.
    pub fn run(mut self, deadline: Duration) -> Result<(), ServiceError> {
        self.consumer
            .subscribe(&[self.topic.as_str()])
            .map_err(ServiceError::Kafka)?;
        let mut last_store = Instant::now();
        let mut last_gauges = Instant::now() - Duration::from_secs(10);
        let mut last_progress = Instant::now();
        let mut last_error_log = Instant::now() - Duration::from_secs(60);
        // Records borrow the consumer; poll through a handle of our own so `self` stays free.
        let consumer = self.consumer.clone();
        while !self.stop.load(Ordering::Relaxed) {
            self.turn = Instant::now();
            self.health.beat();
            if let Some(ch) = self.consumer.context().take_changes() {
                self.rebuild(ch);
            }
            let mut n = 0;
            while n < BATCH {
                let timeout = if n == 0 {
                    Duration::from_millis(5)
                } else {
                    Duration::ZERO
                };
                match consumer.poll(timeout) {
                    None => break,
                    Some(Ok(m)) => {
                        n += 1;
                        if self.consumer.context().has_changes() {
                            // A rebalance ran inside this poll: rebuild first; the record
                            // in hand is re-read if its partition is re-positioned.
                            if let Some(ch) = self.consumer.context().take_changes() {
                                let reread = self.rebuild(ch);
                                if reread.contains(&m.partition()) {
                                    continue;
                                }
                            }
                        }
                        self.on_message(&m).map_err(|_| ServiceError::DecodeLost)?;
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => self.pending.eof(p),
                    Some(Err(e)) => {
                        self.c.kafka_errors.increment(1);
                        if last_error_log.elapsed() > Duration::from_secs(10) {
                            tracing::warn!(error = %e, "consumer poll error");
                            last_error_log = Instant::now();
                        }
                        break;
                    }
                }
            }
            // Decoding this turn's batch overlaps the engine's work on the earlier ones; a
            // quiet turn waits for them all, so that nothing sits decoded but unprocessed.
            self.lost |= self.collect(n == 0).is_err();
            self.drain();
            if self.lost {
                // Batches in flight are gone: stop before anything past them is stored.
                return Err(ServiceError::DecodeLost);
            }
            let pending = self.outbox.pump();
            self.backpressure(pending);
            if last_store.elapsed() >= Duration::from_millis(100) {
                self.store_offsets();
                last_store = Instant::now();
            }
            if self.writes_progress()
                && last_progress.elapsed() >= super::observation::PROGRESS_EVERY
            {
                self.send_progress();
                last_progress = Instant::now();
            }
            if last_gauges.elapsed() >= Duration::from_secs(1) {
                self.export_gauges();
                last_gauges = Instant::now();
            }
        }
        let (delivered, close_until) = self.shutdown(deadline);
        self.guard.clean();
        // Closing (the revoke, the final commit, leaving the group) happens as the consumer is
        // dropped, and waits without bound while the coordinator holds a JoinGroup request:
        // the last reference is dropped on a thread of its own, and waited for until the
        // deadline only.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let last = consumer;
        let closer = std::thread::Builder::new()
            .name("dg-close".into())
            .spawn(move || {
                while Arc::strong_count(&last) > 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(last);
                let _ = tx.send(());
            });
        let t0 = self.turn;
        drop(self);
        let closed = closer.is_ok()
            && rx
                .recv_timeout(close_until.saturating_duration_since(Instant::now()))
                .is_ok();
        if closed {
            tracing::info!(clean = delivered, "consumer stopped");
        } else {
            tracing::warn!(
                clean = delivered,
                waited_secs = t0.elapsed().as_secs_f64(),
                "the consumer did not leave the group before the deadline (the group is \
                 rebalancing); input past the last commit will be re-read by its next owner"
            );
        }
        if delivered {
            Ok(())
        } else {
            Err(ServiceError::DrainTimeout(deadline))
        }
    }

    /// Stops within `deadline`: delivers what is in flight (for at most half of it), stores
    /// the offsets it reached and commits them. Leaving the group follows when the consumer is
    /// dropped; a member that leaves while the group rebalances waits behind its own
    /// JoinGroup request, which the coordinator may hold for the rebalance timeout, so the
    /// caller waits for that only until the returned instant (the next owner then re-reads
    /// from the last commit: at-least-once, with the same alert ids). Returns whether
    /// everything in flight was delivered.
    fn shutdown(&mut self, deadline: Duration) -> (bool, Instant) {
        let t0 = Instant::now();
        let drain_until = t0 + deadline / 2;
        let close_until = t0 + deadline.saturating_sub(Duration::from_millis(500));
        self.turn = t0;
        self.health.set_ready(false);
        tracing::info!(pending = self.outbox.pending(), "draining in-flight alerts");
        let clean = self.outbox.drain(None, drain_until);
        self.store_offsets();
        let owned: Vec<i32> = self.owned.iter().copied().collect();
        let mut offsets = TopicPartitionList::new();
        self.outbox.with_tracker(|t| {
            for p in owned {
                if let Some(o) = t.storable(p) {
                    let _ = offsets.add_partition_offset(&self.topic, p, Offset::Offset(o));
                }
            }
        });
        let ctx = self.consumer.context();
        // The revoke that closing causes must not drain and commit again, synchronously.
        ctx.closing();
        ctx.commit_async(&self.consumer, &offsets);
        self.export_gauges();
        (clean, close_until)
    }

    /// Hands the pending batch to the decode threads and takes back, in order, the decoded
    /// batches: all of them if `all`, else those ready, waiting while more batches than decode
    /// threads are in flight.
    fn collect(&mut self, all: bool) -> Result<(), Lost> {
        if !self.pending.is_empty() {
            let next = self.pool.batch();
            self.pool
                .submit(std::mem::replace(&mut self.pending, next))?;
        }
        let lag = if all {
            0
        } else {
            self.pool.workers_count() as u64
        };
        while self.pool.in_flight() > lag {
            match self.pool.next(true)? {
                Some(out) => self.take_decoded(out),
                None => break,
            }
        }
        while let Some(out) = self.pool.next(false)? {
            self.take_decoded(out);
        }
        Ok(())
    }

    fn take_decoded(&mut self, mut out: Vec<Decoded>) {
        for d in out.drain(..) {
            self.take_one(d);
        }
        self.pool.recycle(out);
    }

    fn take_one(&mut self, d: Decoded) {
        match d {
            Decoded::Record(item) => self.push(item),
            Decoded::Eof(p) => self.merge.eof(p),
            Decoded::Progress {
                partition,
                offset,
                progress,
            } => {
                let now = self.turn;
                let (ts, behind) = (progress.ts_ms, progress.behind);
                if let Some(o) = self.merge.progress(partition, offset, ts, behind, now) {
                    self.processed.push((partition, o));
                }
            }
        }
    }

    fn push(&mut self, item: Item) {
        let (p, offset, order, last) = (item.partition, item.offset, item.order(), item.last);
        if let Some(intent) = self.merge.push(p, offset, order, item, last, self.turn) {
            self.apply(intent);
        }
    }

    fn on_message(&mut self, m: &BorrowedMessage<'_>) -> Result<(), Lost> {
        let (p, offset) = (m.partition(), m.offset());
        if !self.merge.wants(p, offset) {
            return Ok(()); // not ours, or fetched before a seek
        }
        let sample = self.tick % SAMPLE_EVERY == 0;
        self.tick += 1;
        if self.guard.is_careful(p, offset) {
            // Everything polled before it goes into the merge first (order per partition);
            // then it is decoded here, alone.
            self.collect(true)?;
            let poison = self.guard.touch(p, offset);
            let mut out = Vec::with_capacity(1);
            self.decode
                .record_into(RecordRef::of(m), poison, sample, &mut out);
            for d in out {
                self.take_one(d);
            }
        } else {
            let poison = self.guard.touch(p, offset);
            self.pending.push(RecordRef::of(m), poison, sample);
        }
        Ok(())
    }

    fn apply(&self, intent: Intent) {
        match intent {
            Intent::Pause(p) => self.set_paused(&[p], true),
            Intent::Resume(p) => self.set_paused(&[p], false),
        }
    }

    /// Feeds the records the merge lets through to the engine, in event-time order.
    fn drain(&mut self) {
        let mut taken = std::mem::take(&mut self.taken);
        let mut intents = std::mem::take(&mut self.intents);
        self.merge
            .drain(Instant::now(), self.backpressured, &mut taken, &mut intents);
        for intent in intents.drain(..) {
            self.apply(intent);
        }
        // Each event's keys once, so that the engine's hash-table slots and entries for the
        // next few are prefetched while it works on this one (as `Engine::process_all`).
        let prepared: Vec<Option<Prepared>> = taken
            .iter()
            .map(|t| t.item.decoded.as_ref().ok().map(Prepared::of))
            .collect();
        let ahead = Engine::PREFETCH_AHEAD;
        for p in prepared.iter().take(ahead - 1).flatten() {
            self.engine.prefetch_ahead(p);
        }
        for (i, t) in taken.drain(..).enumerate() {
            debug_assert_eq!((t.partition, t.offset), (t.item.partition, t.item.offset));
            if let Some(Some(p)) = prepared.get(i + ahead - 1) {
                self.engine.prefetch_ahead(p);
            }
            if let Some(Some(p)) = prepared.get(i + 1) {
                self.engine.prefetch_next(p);
            }
            if !t.live {
                self.c.catchup_events.increment(1);
            }
            let (p, through) = (t.partition, t.through);
            let covers = t.live && through > t.offset;
            self.handle(t.item, t.live, prepared[i].as_ref());
            if covers {
                // Progress records that followed it on its partition.
                self.processed.push((p, through));
            }
        }
        self.flush_cluster();
        self.flush_processed();
        self.taken = taken;
        self.intents = intents;
        if let Some(started) = self.merge.finish_catchup() {
            self.finish_catchup(started);
        }
    }

    /// Hands this turn's processed offsets to the tracker and its verdicts to the counters.
    fn flush_processed(&mut self) {
        // Their first offsets are held before any offset of theirs is marked processed.
        self.send_observations();
        if !self.processed.is_empty() {
            let done = &mut self.processed;
            self.outbox.with_tracker(|t| {
                for (partition, offset) in done.drain(..) {
                    t.processed(partition, offset);
                }
            });
        }
        for (j, n) in Judged::ALL.into_iter().zip(&mut self.judged) {
            if *n > 0 {
                self.c.ev.judged_n(j, std::mem::take(n));
            }
        }
    }

    fn finish_catchup(&mut self, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        self.emitted = HashSet::new();
        self.c.catchup_duration.record(secs);
        self.c.catchup_remaining.set(0.0);
        self.health.set_ready(self.seen_assignment);
        tracing::info!(
            seconds = secs,
            partitions = ?self.owned,
            accounts = self.engine.gauges().accounts,
            "window state rebuilt; processing live"
        );
    }

    fn export_catchup(&self) {
        self.c.catchup_remaining.set(self.merge.remaining() as f64);
    }

    /// Runs one record through the engine. `live`: alerts and dead letters are sent and the
    /// offset tracked; otherwise (re-read for a rebuild) they were sent before and are not.
    fn handle(&mut self, mut item: Item, live: bool, prepared: Option<&Prepared>) {
        let t0 = item.sampled.map(|d| (Instant::now(), d));
        let mut linked = item.links.take();
        match &item.decoded {
            Ok(ev) => {
                let before = self.stats();
                let allow_before = before.alerts_suppressed_allowlist;
                let limited_before = [
                    before.alerts_rate_limited_bulk,
                    before.alerts_rate_limited_cluster,
                ];
                if self.guard.is_careful(item.partition, item.offset) {
                    // Nothing is decoded while it is processed.
                    self.lost |= self.collect(true).is_err();
                }
                self.guard.touch(item.partition, item.offset);
                let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                    match (&item.observation, prepared) {
                        _ if linked.is_some() => {
                            if let (Some(c), Some(mut l)) = (&mut self.cluster, linked.take()) {
                                c.take_part(l.account, ev.ts_ms, &mut l.emitted, &mut self.alerts);
                            }
                            crate::engine::Outcome::Accepted
                        }
                        (Some(obs), _) => self.engine.observe(ev, obs, &mut self.alerts),
                        (None, Some(p)) => self.engine.process_prepared(ev, p, &mut self.alerts),
                        (None, None) => self.engine.process(ev, &mut self.alerts),
                    }
                })) {
                    Ok(o) => o,
                    Err(p) => {
                        // A bug in the engine: this record is dead-lettered and the partition
                        // moves on (the engine's state for its account may be partial), its
                        // observation too, if it got that far.
                        self.alerts.clear();
                        let _ = self.engine.take_observation();
                        self.engine.take_emitted(&mut self.decided);
                        self.decided.clear();
                        if live {
                            self.dead_letter_refetched(&item, &p);
                        }
                        return;
                    }
                };
                if live {
                    self.judged[Judged::from(outcome) as usize] += 1;
                    let s = self.stats();
                    let allowed = s.alerts_suppressed_allowlist - allow_before;
                    if allowed > 0 {
                        self.c.ev.suppressed(Suppressed::Allowlist, allowed);
                    }
                    let limited = [
                        (Kind::BulkExtraction, s.alerts_rate_limited_bulk),
                        (Kind::FakeAccountCluster, s.alerts_rate_limited_cluster),
                    ];
                    for ((kind, now), was) in limited.into_iter().zip(limited_before) {
                        if now > was {
                            self.c.ev.rate_limited(kind, now - was);
                        }
                    }
                }
                // The account stage hands its observation on, a link shard what it decided
                // (sent before: when re-read).
                if let Some(obs) = self.engine.take_observation() {
                    if live {
                        self.add_observation(ev, &obs, &item);
                    }
                }
                if self.links_partition.is_some() {
                    self.engine.take_emitted(&mut self.decided);
                    if live && !self.decided.records.is_empty() {
                        self.add_links(ev, &item);
                    }
                    self.decided.clear();
                }
                let at = (item.partition, item.offset, item.msg_ts);
                self.send_alerts(at, live);
                if self.cluster.is_some() {
                    self.last_part = Some((at, live));
                }
            }
            Err(e) if live => {
                if *e == DecodeError::Poison {
                    self.guard.skipped(item.partition, item.offset);
                }
                let key = item.key.clone().unwrap_or_default();
                let payload = item.payload.clone().unwrap_or_default();
                self.dead_letter(&item, e, key, payload);
            }
            Err(_) => {}
        }
        if live && item.last {
            self.processed.push((item.partition, item.offset));
        }
        if let Some((t, decode)) = t0 {
            self.c
                .processing
                .record((t.elapsed() + decode).as_secs_f64());
        }
    }

    /// Sends `item`'s original bytes to the dead-letter topic with `e`'s reason, and holds its
    /// offset until delivered.
    fn dead_letter(&self, item: &Item, e: &DecodeError, key: Vec<u8>, mut payload: Vec<u8>) {
        self.c.ev.malformed(e);
        let source = dead_letter::Source {
            topic: &self.topic,
            partition: item.partition,
            offset: item.offset,
        };
        let cap = dead_letter::cap(&self.cfg).saturating_sub(key.len());
        let headers = dead_letter::prepare(e.reason(), &e.to_string(), source, &mut payload, cap);
        self.outbox.send(Outgoing {
            record: Record::DeadLetter,
            partition: item.partition,
            offset: item.offset,
            track: true,
            key,
            payload,
            headers: Some(headers),
            source_ts_ms: item.msg_ts,
        });
    }

    /// A record whose processing panicked: its bytes (not kept for a valid record) are read
    /// back from the input topic for the dead-letter copy, and the offset is marked processed.
    fn dead_letter_refetched(&mut self, item: &Item, panic: &(dyn std::any::Any + Send)) {
        let e = DecodeError::Internal(crate::replay::panic_message(panic));
        let (key, payload) = Reader::new(&self.cfg)
            .ok()
            .and_then(|r| r.record_at(&self.topic, item.partition, item.offset))
            .map(|(k, v)| (k.unwrap_or_default(), v))
            .unwrap_or_default();
        self.dead_letter(item, &e, key, payload);
        self.outbox
            .with_tracker(|t| t.processed(item.partition, item.offset));
    }

    /// Adds the account stage's observation of `ev` to its partition's batch for the link
    /// stage (sent when full, and at the end of the turn: [`Pipeline::send_observations`]).
    fn add_observation(&mut self, ev: &Event, obs: &Observation, item: &Item) {
        let w = super::observation::to_wire(ev, obs);
        let p = item.partition;
        let shards = self.cfg.raw.kafka.link_shards as usize;
        // With link shards, to each that must see it (`engine::link_targets`).
        let targets = if shards > 1 {
            link_targets(obs, shards)
        } else {
            1
        };
        for s in 0..shards as u16 {
            if targets & (1 << s) == 0 {
                continue;
            }
            let key = (s, p);
            if self.batches.get(&key).is_some_and(|b| b.full_for(&w)) {
                self.send_batch(key);
            }
            self.batches
                .entry(key)
                .or_default()
                .push(w.clone(), item.offset, item.msg_ts);
        }
    }

    /// Adds what this link shard decided on `ev` to the turn's batch for the cluster stage.
    fn add_links(&mut self, ev: &Event, item: &Item) {
        let w = super::links::to_wire(account_key(&ev.account_id), ev.ts_ms, &self.decided);
        if self.links.full_for(&w) {
            self.send_links();
        }
        self.links.push(w, item.partition, item.offset, item.msg_ts);
    }

    /// Sends the turn's link records as one record to this shard's partition of the links
    /// topic, holding the first input offset of each observations partition they came from.
    fn send_links(&mut self) {
        let Some(to) = self.links_partition.filter(|_| !self.links.is_empty()) else {
            return;
        };
        let mut firsts = std::mem::take(&mut self.links.firsts);
        let source_ts_ms = self.links.first_msg_ts;
        let payload = self.links.take_record();
        let (partition, offset) = firsts.remove(0);
        self.outbox.send_holding(
            Outgoing {
                record: Record::Links { partition: to },
                partition,
                offset,
                track: true,
                key: Vec::new(),
                payload,
                headers: None,
                source_ts_ms,
            },
            firsts,
        );
    }

    /// Sends every partition's batch of observations, each as one record to the observations
    /// partition of its input partition, holding the input offset of its first event until
    /// delivered. Before the offsets of a turn are marked processed.
    fn send_observations(&mut self) {
        let keys: Vec<(u16, i32)> = self
            .batches
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            self.send_batch(k);
        }
        self.send_links();
    }

    fn send_batch(&mut self, (shard, p): (u16, i32)) {
        let Some(b) = self.batches.get_mut(&(shard, p)).filter(|b| !b.is_empty()) else {
            return;
        };
        let (offset, source_ts_ms) = (b.first_offset, b.first_msg_ts);
        let payload = b.take_record();
        self.outbox.send(Outgoing {
            record: Record::Observation { shard },
            partition: p,
            offset,
            track: true,
            key: Vec::new(),
            payload,
            headers: None,
            source_ts_ms,
        });
    }

    /// The account stage's progress to every observations partition it writes to: the
    /// newest event time its engine has taken, and whether its input has more on the way
    /// (the link stage holds a partition at its progress while it is behind). After every
    /// observation already sent, on the same producer: never ahead of them.
    fn send_progress(&self) {
        // What it takes from now on is no older than the oldest its merge may still let
        // through (a partition of its input behind the others), nor than its watermark.
        let watermark = self.engine.watermark().unwrap_or(i64::MIN);
        let safe = self.merge.safe_ts(Instant::now()).unwrap_or(i64::MAX);
        let progress = super::observation::Progress {
            ts_ms: watermark.min(safe),
            behind: !self.merge.settled() || !self.pending.is_empty() || self.pool.in_flight() > 0,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let progress_to = |record, partition, payload| Outgoing {
            record,
            partition,
            offset: -1,
            track: false,
            key: Vec::new(),
            payload,
            headers: None,
            source_ts_ms: now_ms,
        };
        if let Some(to) = self.links_partition {
            // A link shard's, to its partition of the links topic.
            let payload = super::links::encode_progress(progress);
            self.outbox
                .send(progress_to(Record::Links { partition: to }, to, payload));
            return;
        }
        let payload = super::observation::encode_progress(progress);
        for shard in 0..self.cfg.raw.kafka.link_shards as u16 {
            for &p in &self.owned {
                self.outbox.send(progress_to(
                    Record::Observation { shard },
                    p,
                    payload.clone(),
                ));
            }
        }
    }

    /// Whether this instance writes progress records: an account instance to the
    /// observations topic, a link shard to the links topic.
    fn writes_progress(&self) -> bool {
        self.cfg.raw.kafka.role == StageRole::Account || self.links_partition.is_some()
    }

    /// The counters of what judges here: the cluster stage's, or the engine's.
    fn stats(&self) -> &Stats {
        match &self.cluster {
            Some(c) => c.stats(),
            None => self.engine.stats(),
        }
    }

    /// Sends the alerts the record at `at` (partition, offset, Kafka timestamp) caused. Re-read
    /// for a rebuild (not `live`), an alert was already sent before the restart or rebalance
    /// unless it names an account not yet alerted for its kind.
    fn send_alerts(&mut self, at: (i32, i64, i64), live: bool) {
        let alerts = std::mem::take(&mut self.alerts);
        for alert in &alerts {
            let resend = live || {
                let mut new = false;
                for a in &alert.accounts {
                    new |= self.emitted.insert((alert.kind, a.clone()));
                }
                new
            };
            if !resend {
                self.c.ev.suppressed(Suppressed::Catchup, 1);
                continue;
            }
            self.send_alert(alert, at, live);
        }
        self.alerts = alerts;
        self.alerts.clear();
    }

    /// The cluster stage: takes in the event whose parts it was gathering (the last record
    /// of a turn), its alerts attributed to the last record taken.
    fn flush_cluster(&mut self) {
        let Some(c) = &mut self.cluster else { return };
        c.flush(&mut self.alerts);
        if let Some((at, live)) = self.last_part.take() {
            self.send_alerts(at, live);
        }
        self.alerts.clear();
    }

    fn send_alert(&self, alert: &Alert, (partition, offset, msg_ts): (i32, i64, i64), track: bool) {
        let payload = if self.json_out {
            serde_json::to_vec(alert).unwrap_or_default()
        } else {
            alert.to_proto().encode_to_vec()
        };
        self.outbox.send(Outgoing {
            record: Record::Alert {
                kind: alert.kind,
                severity: alert.severity,
                score: alert.score,
            },
            partition,
            offset,
            track,
            key: alert.subject.clone().into_bytes(),
            payload,
            headers: None,
            source_ts_ms: msg_ts,
        });
    }

    /// After any assignment change: a fresh engine, every owned partition re-read from one
    /// window back. Returns the partitions re-positioned by a seek (records already fetched
    /// for them are stale).
    fn rebuild(&mut self, ch: Changes) -> BTreeSet<i32> {
        self.seen_assignment |= ch.seen;
        // Records polled or in flight were fetched before the partitions are re-positioned.
        self.pending.clear();
        self.pool.discard();
        let assignment: BTreeSet<i32> = match self.consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .filter(|e| e.topic() == self.topic)
                .map(|e| e.partition())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the assignment");
                BTreeSet::new()
            }
        };
        let previous = std::mem::replace(&mut self.owned, assignment.clone());
        self.c.assigned.set(assignment.len() as f64);
        self.health.set_ready(false);
        self.engine = new_engine(&self.cfg, &self.live);
        self.cluster = new_cluster(&self.cfg, &self.live);
        self.last_part = None;
        self.decided.clear();
        self.links = super::links::Batch::default();
        self.exported = Stats::default();
        let rebuild_ms = (self.cfg.raw.kafka.rebuild_secs * 1000) as i64;
        // What was already alerted in the span: our own in-flight alerts first, then the topic.
        self.outbox
            .drain(None, Instant::now() + Duration::from_secs(5));
        let reader = if rebuild_ms > 0 {
            Reader::new(&self.cfg)
                .map_err(|e| tracing::warn!(error = %e, "cannot create the rebuild reader"))
                .ok()
        } else {
            None
        };
        self.emitted = match &reader {
            Some(r) => r.alerted_since(
                &self.cfg.raw.kafka.alerts_topic,
                self.json_out,
                telemetry::now_ms() - rebuild_ms,
            ),
            None => HashSet::new(),
        };
        let mut spans = Vec::with_capacity(assignment.len());
        let mut seeked = BTreeSet::new();
        for &p in &assignment {
            let span = match ch.assigned.get(&p) {
                Some(span) if !previous.contains(&p) => {
                    self.outbox.with_tracker(|t| t.start(p, span.target));
                    *span
                }
                _ => {
                    // Owned before: re-read from one window back up to where we are.
                    let target = self
                        .outbox
                        .with_tracker(|t| t.next(p))
                        .or_else(|| ch.assigned.get(&p).map(|s| s.target))
                        .unwrap_or(0);
                    self.outbox.with_tracker(|t| t.start(p, target));
                    let start = self.offset_for_time(
                        reader.as_ref(),
                        p,
                        telemetry::now_ms() - rebuild_ms,
                        target,
                    );
                    let end = self
                        .consumer
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                        .map_or(target, |(_, high)| high.max(target));
                    match self.consumer.seek(
                        &self.topic,
                        p,
                        Offset::Offset(start),
                        Duration::from_secs(5),
                    ) {
                        Ok(()) => {
                            seeked.insert(p);
                        }
                        Err(e) => tracing::warn!(partition = p, error = %e, "seek failed"),
                    }
                    Span { start, target, end }
                }
            };
            spans.push((p, span));
        }
        let all: Vec<i32> = assignment.iter().copied().collect();
        self.set_paused(&all, false);
        self.backpressured = false;
        tracing::info!(
            owned = ?all,
            revoked = ?ch.revoked,
            rebuild_secs = self.cfg.raw.kafka.rebuild_secs,
            "rebuilding window state"
        );
        tracing::info!(
            alerted = self.emitted.len(),
            "accounts already alerted in the span"
        );
        self.merge = new_merge(&self.cfg);
        self.merge.assign(spans, Instant::now());
        if self.writes_progress() {
            // Before any observation of the new assignment: the link stage holds these
            // partitions from here until this instance reports that it has caught up (and the
            // cluster stage a link shard's partition).
            self.send_progress();
        }
        self.export_catchup();
        self.drain();
        seeked
    }

    fn offset_for_time(&self, reader: Option<&Reader>, p: i32, ts_ms: i64, target: i64) -> i64 {
        let Some(r) = reader else { return target };
        let low = r.watermarks(&self.topic, p).map_or(0, |(low, _)| low);
        r.offset_at(&self.topic, p, ts_ms, low, target)
    }

    fn set_paused(&self, parts: &[i32], pause: bool) {
        if parts.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in parts {
            tpl.add_partition(&self.topic, p);
        }
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, pause, "pause/resume failed");
        }
    }

    /// Pauses consumption while too many deliveries are outstanding (a slow or absent
    /// broker), so memory stays bounded; resumes at half.
    fn backpressure(&mut self, pending: usize) {
        let max = self.cfg.raw.service.max_pending_deliveries;
        if !self.backpressured && pending >= max {
            self.backpressured = true;
            tracing::warn!(
                pending,
                "too many deliveries outstanding; pausing consumption"
            );
            let all: Vec<i32> = self.owned.iter().copied().collect();
            self.set_paused(&all, true);
        } else if self.backpressured && pending <= max / 2 {
            self.backpressured = false;
            tracing::info!(pending, "deliveries caught up; resuming consumption");
            self.set_paused(&self.merge.unpaused(), false);
        }
    }

    fn store_offsets(&self) {
        let moved = self.outbox.with_tracker(|t| t.to_store());
        if moved.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in moved {
            if self.owned.contains(&p) {
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "offset store failed");
            }
        }
    }

    fn export_gauges(&mut self) {
        self.c.assigned.set(self.owned.len() as f64);
        let g = self.engine.gauges();
        self.c.tracked_values.set(g.attribute_values as f64);
        match &self.cluster {
            Some(c) => {
                self.c.tracked_accounts.set(c.snapshots().0 as f64);
                self.c.tracked_clusters.set(c.clusters() as f64);
                if let Some(w) = c.watermark() {
                    self.c.watermark.set(w as f64 / 1000.0);
                }
            }
            None => {
                self.c.tracked_accounts.set(g.accounts as f64);
                self.c.tracked_clusters.set(g.clusters as f64);
                if let Some(w) = self.engine.watermark() {
                    self.c.watermark.set(w as f64 / 1000.0);
                }
            }
        }
        let s = self.stats().clone();
        let d = |now: u64, before: u64| now.saturating_sub(before);
        let e = &self.exported;
        let ev = &self.c.ev;
        ev.evicted(State::Accounts, d(s.accounts_evicted, e.accounts_evicted));
        ev.evicted(
            State::AttributeValues,
            d(s.attributes_evicted, e.attributes_evicted),
        );
        ev.expired(State::Accounts, d(s.accounts_expired, e.accounts_expired));
        ev.expired(
            State::AttributeValues,
            d(s.attributes_expired, e.attributes_expired),
        );
        self.exported = s;
        telemetry::stage_info(&self.cfg.raw.kafka);
        metrics::gauge!(telemetry::READY).set(if self.health.is_ready() { 1.0 } else { 0.0 });
        self.export_catchup();
    }
}

/// A fresh engine for this instance's role, consulting the live allowlist. A `link` engine
/// takes observations in as late as `kafka.link_late_allowance_secs`: account instances can
/// run apart in event time (one rebuilding while the others run live).
fn new_engine(cfg: &Arc<ValidConfig>, live: &LiveAllowlist) -> Engine {
    let cfg = if cfg.raw.kafka.role == StageRole::Link {
        let mut c = (**cfg).clone();
        c.raw.engine.late_allowance_secs = c
            .raw
            .engine
            .late_allowance_secs
            .max(c.raw.kafka.link_late_allowance_secs);
        Arc::new(c)
    } else {
        cfg.clone()
    };
    let k = &cfg.raw.kafka;
    let engine = if k.role == StageRole::Link && k.sharded() {
        Engine::new(cfg.clone()).with_shard(crate::detect::Shard {
            index: k.link_shard as usize,
            of: k.link_shards as usize,
        })
    } else {
        Engine::new(cfg.clone()).with_role(k.role.engine())
    };
    engine.with_live_allowlist(live.clone())
}

/// The cluster stage, for a `cluster` instance, consulting the live allowlist.
fn new_cluster(cfg: &Arc<ValidConfig>, live: &LiveAllowlist) -> Option<Box<ClusterStage>> {
    (cfg.raw.kafka.role == StageRole::Cluster)
        .then(|| Box::new(ClusterStage::new(cfg.clone()).with_live_allowlist(live.clone())))
}

/// An empty merge: a silent partition holds the others back at most
/// `kafka.idle_partition_ms`, and by at most half the late allowance; on the observations
/// and links topics, a partition holds them at its writer's progress while that moves
/// (strictly in event-time order), and one whose writer is gone for at most
/// `kafka.link_writer_wait_secs`.
fn new_merge(cfg: &ValidConfig) -> Merge<Item> {
    let k = &cfg.raw.kafka;
    let merge = Merge::new(
        Duration::from_millis(k.idle_partition_ms),
        (cfg.raw.engine.late_allowance_secs * 1000 / 2) as i64,
    );
    if matches!(k.role, StageRole::Link | StageRole::Cluster) {
        // Each partition's writer, an account instance or a link shard, reports its progress:
        // its records are taken in event-time order with the others', as one process takes
        // them.
        merge
            .with_writers(Duration::from_secs(k.link_writer_wait_secs))
            .strict()
    } else {
        merge
    }
}
