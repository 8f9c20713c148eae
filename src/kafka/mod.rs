//! The Kafka service (`distillguard run`): an rdkafka consumer group on the input topic, the
//! engine, alerts and dead letters out through an idempotent producer, at-least-once offsets,
//! window state rebuilt on every assignment change, and `/metrics`, `/healthz`, `/readyz`.
//!
//! # Guarantees
//!
//! - An input offset is stored only after every alert (and dead-letter copy) its record caused
//!   has a successful delivery report (`enable.auto.offset.store=false`); stored offsets are
//!   committed in the background, and synchronously on revoke and at shutdown.
//! - Failed deliveries are retried until they succeed; consumption pauses while too many are
//!   outstanding. Nothing is dropped silently.
//! - Alert ids are deterministic, so a redelivery after a crash repeats the same ids.
//! - On start and on every rebalance the engine is rebuilt from the owned partitions' last
//!   `kafka.rebuild_secs`, merged by event time, without re-sending alerts for records before
//!   the committed offsets.
//! - The live allowlist (`kafka.control_topic`) is read to its end before the first event is
//!   judged (at most 10 s), then followed on its own thread ([`control`]).
//!
//! # Parts, by job
//!
//! - `pipeline`: the consumer loop: poll, decode, engine, alerts and dead letters to the
//!   outbox, offsets, rebuilds, back-pressure.
//! - `merge`: the event-time merge of the owned partitions, sans-io (records and `now` in,
//!   records and pause/resume intents out), with its unit tests.
//! - `context`: rebalance callbacks; `offsets`: which offsets may be stored; `outbox`: the
//!   alert and dead-letter producer and its delivery tracking; `seek`: window starts and the
//!   alerts-topic read-back; `dead_letter`: the dead-letter header scheme; `events`: the
//!   loop's metrics, one type per event; `guard`: the crash-loop guard; [`control`]: the
//!   control and verdicts topics.

mod context;
pub mod control;
mod dead_letter;
mod decode;
mod events;
mod guard;
pub mod links;
mod merge;
pub mod observation;
mod offsets;
mod outbox;
mod pipeline;
mod seek;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use tokio::sync::oneshot;

pub use offsets::Tracker;

use crate::config::{StageRole, ValidConfig};
use crate::control::LiveAllowlist;
use crate::telemetry::{self, Health};
use context::ConsumerCtx;
use outbox::Outbox;
use pipeline::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the consumer thread: {0}")]
    Thread(std::io::Error),
    #[error("the consumer thread stopped unexpectedly")]
    ThreadLost,
    #[error(
        "the decode threads stopped unexpectedly; uncommitted input will be re-read on restart"
    )]
    DecodeLost,
    #[error("shutdown did not finish within {0:?}; uncommitted input will be re-read on restart")]
    DrainTimeout(Duration),
}

/// librdkafka settings for the consumer: the service's defaults, then the passthrough
/// tables, then the properties its guarantees depend on (which the config cannot override).
pub fn consumer_config(cfg: &ValidConfig) -> ClientConfig {
    let k = &cfg.raw.kafka;
    let mut c = ClientConfig::new();
    c.set("client.id", "distillguard")
        // Low latency: the defaults wait up to 500 ms for data and back off 1 s when the
        // local queue is full.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", k.auto_offset_reset.as_str())
        .set(
            "statistics.interval.ms",
            cfg.raw.service.statistics_interval_ms.to_string(),
        );
    for (key, v) in k.properties.iter().chain(&k.consumer_properties) {
        c.set(key, v);
    }
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "true");
    c
}

/// librdkafka settings for the alert and dead-letter producer.
pub fn producer_config(cfg: &ValidConfig) -> ClientConfig {
    let k = &cfg.raw.kafka;
    let mut c = ClientConfig::new();
    c.set("client.id", "distillguard")
        .set("linger.ms", "2")
        // Surface a failed delivery after 30 s (and retry it ourselves) rather than 5 min.
        .set("message.timeout.ms", "30000");
    for (key, v) in k.properties.iter().chain(&k.producer_properties) {
        c.set(key, v);
    }
    c.set("bootstrap.servers", &k.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    c
}

/// The configuration the service works with in its role: a `link` instance consumes the
/// observations topic (protobuf) in a consumer group of its own, `GROUP-link` (its engine
/// takes observations in as late as `kafka.link_late_allowance_secs`, see `pipeline`; its
/// merge keeps the slack of `engine.late_allowance_secs`); link shard S consumes
/// `OBSERVATIONS-S` in `GROUP-link-S`; a `cluster` instance consumes the links topic in
/// `GROUP-cluster`.
pub fn for_role(cfg: Arc<ValidConfig>) -> Arc<ValidConfig> {
    let role = cfg.raw.kafka.role;
    if !matches!(role, StageRole::Link | StageRole::Cluster) {
        return cfg;
    }
    let mut c = (*cfg).clone();
    let k = &mut c.raw.kafka;
    k.input_format = crate::config::Format::Protobuf;
    if role == StageRole::Cluster {
        k.input_topic = k.links_topic.clone();
        k.group_id = format!("{}-cluster", k.group_id);
    } else if k.sharded() {
        k.input_topic = k.observations_topic_of(k.link_shard);
        k.group_id = format!("{}-link-{}", k.group_id, k.link_shard);
    } else {
        k.input_topic = k.observations_topic.clone();
        k.group_id = format!("{}-link", k.group_id);
    }
    Arc::new(c)
}

/// The deployment's consumer group as configured, before [`for_role`] gave a stage its own.
pub fn deployment_group(k: &crate::config::KafkaConfig) -> &str {
    let g = k.group_id.as_str();
    match k.role {
        StageRole::Link if k.sharded() => g
            .strip_suffix(&format!("-link-{}", k.link_shard))
            .unwrap_or(g),
        StageRole::Link => g.strip_suffix("-link").unwrap_or(g),
        StageRole::Cluster => g.strip_suffix("-cluster").unwrap_or(g),
        _ => g,
    }
}

/// An account instance writes the observations of input partition p to partition p of the
/// observations topic (of each link shard's): it needs at least as many partitions as the
/// input. A link shard writes partition S of the links topic.
fn check_internal_partitions(
    consumer: &BaseConsumer<ConsumerCtx>,
    k: &crate::config::KafkaConfig,
) -> Result<(), ServiceError> {
    let partitions = |topic: &str| {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .filter(|&n| n > 0);
        if n.is_none() {
            tracing::warn!(topic, "cannot read the topic's partitions");
        }
        n
    };
    match k.role {
        StageRole::Account => {
            let Some(input) = partitions(&k.input_topic) else {
                return Ok(());
            };
            for s in 0..k.link_shards {
                let topic = k.observations_topic_of(s);
                match partitions(&topic) {
                    Some(obs) if obs < input => {
                        return Err(ServiceError::Config(format!(
                            "observations topic {topic} has {obs} partitions, fewer than the \
                             {input} of kafka.input_topic {}: observations of input partition \
                             p go to partition p",
                            k.input_topic
                        )))
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        StageRole::Link if k.sharded() => match partitions(&k.links_topic) {
            Some(n) if n < k.link_shards as usize => Err(ServiceError::Config(format!(
                "kafka.links_topic {} has {n} partitions, fewer than the {} link shards: \
                 shard S writes partition S",
                k.links_topic, k.link_shards
            ))),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A running service: the consumer thread and the HTTP endpoints.
pub struct Service {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (resolved, if port 0 was asked).
    pub metrics_addr: SocketAddr,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    done: oneshot::Receiver<Result<(), ServiceError>>,
    server_stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    deadline: Duration,
    control: control::Follower,
}

impl Service {
    /// Connects, subscribes and starts consuming. Returns once the HTTP endpoints are bound.
    pub async fn start(cfg: Arc<ValidConfig>) -> Result<Service, ServiceError> {
        telemetry::install();
        telemetry::stage_info(&cfg.raw.kafka);
        let health = Arc::new(Health::default());
        health.beat();
        let addr: SocketAddr = cfg
            .raw
            .service
            .metrics_addr
            .parse()
            .map_err(|e| ServiceError::Config(format!("service.metrics_addr: {e}")))?;
        let (server_stop, server_stop_rx) = oneshot::channel::<()>();
        let (metrics_addr, server) = telemetry::serve(addr, health.clone(), async move {
            let _ = server_stop_rx.await;
        })
        .await
        .map_err(|source| ServiceError::Metrics {
            addr: addr.to_string(),
            source,
        })?;
        let cfg = for_role(cfg);
        let k = &cfg.raw.kafka;
        let deadline = Duration::from_secs(cfg.raw.service.shutdown_deadline_secs);
        let outbox = Outbox::new(
            &producer_config(&cfg),
            &k.alerts_topic,
            &k.dlq_topic,
            (0..k.link_shards)
                .map(|s| k.observations_topic_of(s))
                .collect(),
            &k.links_topic,
        )?;
        let ctx = ConsumerCtx::new(cfg.clone(), deadline / 2, outbox.clone());
        let consumer: BaseConsumer<ConsumerCtx> = consumer_config(&cfg).create_with_context(ctx)?;
        check_internal_partitions(&consumer, k)?;
        // The live allowlist is read to its end (at most 10 s) before the first event is judged.
        let live = LiveAllowlist::default();
        let control = control::Follower::start(cfg.clone(), live.clone())?;
        let waited = std::time::Instant::now();
        while !control.caught_up() && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !control.caught_up() {
            tracing::warn!(
                topic = %k.control_topic,
                "the live allowlist is not read to its end after 10 s; starting anyway"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = Pipeline::new(
            cfg.clone(),
            consumer,
            outbox,
            health.clone(),
            stop.clone(),
            live,
        )?;
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("dg-consumer".into())
            .spawn(move || {
                // A second of the deadline is kept for the service's own shutdown after it.
                let r = pipeline.run(deadline.saturating_sub(Duration::from_secs(1)));
                let _ = done_tx.send(r);
            })
            .map_err(ServiceError::Thread)?;
        tracing::info!(
            brokers = %k.brokers,
            role = k.role.as_str(),
            group = %k.group_id,
            input = %k.input_topic,
            alerts = %k.alerts_topic,
            dlq = %k.dlq_topic,
            control = %k.control_topic,
            verdicts = %k.verdicts_topic,
            metrics = %metrics_addr,
            "distillguard running"
        );
        Ok(Service {
            metrics_addr,
            health,
            stop,
            done,
            server_stop: Some(server_stop),
            server,
            deadline,
            control,
        })
    }

    /// Assigned partitions caught up (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        self.health.is_ready()
    }

    /// Resolves if the consumer thread ends on its own (a fatal error).
    pub async fn failed(&mut self) -> ServiceError {
        match (&mut self.done).await {
            Ok(Err(e)) => e,
            _ => ServiceError::ThreadLost,
        }
    }

    /// Stops consuming, drains in-flight alerts, commits and leaves the group, all within the
    /// configured deadline (the consumer thread keeps a second of it for what follows); the
    /// control follower stops meanwhile. Then stops the HTTP endpoints.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        let until = tokio::time::Instant::now() + self.deadline;
        self.stop.store(true, Ordering::Relaxed);
        let mut control = std::mem::replace(&mut self.control, control::Follower::stopped());
        let control = tokio::task::spawn_blocking(move || control.stop());
        let r = match tokio::time::timeout_at(until, &mut self.done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ServiceError::ThreadLost),
            Err(_) => Err(ServiceError::DrainTimeout(self.deadline)),
        };
        let soon = tokio::time::Instant::now() + Duration::from_millis(200);
        if tokio::time::timeout_at(until.max(soon), control)
            .await
            .is_err()
        {
            tracing::warn!("the control follower did not stop before the deadline");
        }
        if let Some(tx) = self.server_stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.server).await;
        r
    }
}

/// Runs the service until `shutdown` resolves (SIGTERM/SIGINT in `main`), then drains and
/// commits under the deadline.
pub async fn run(
    cfg: Arc<ValidConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let mut svc = Service::start(cfg).await?;
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutdown requested");
        }
        e = svc.failed() => return Err(e),
    }
    svc.shutdown().await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
