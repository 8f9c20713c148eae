//! `distillguard demo`: the real service against an embedded broker (librdkafka's mock
//! cluster), fed simulated traffic in accelerated real time, with every alert printed as it
//! arrives on the alerts topic. Zero setup: nothing to install or start.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::alert::Alert;
use crate::config::{Config, StageRole};
use crate::event::decode::json_to_proto;
use crate::kafka::{Service, ServiceError};
use crate::proto;
use crate::sim::{self, Label, SimOptions};
use crate::telemetry::now_ms;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulator scenario (`all` mixes benign families with every attack family).
    pub scenario: String,
    pub seed: u64,
    pub scale: f64,
    /// Hours of simulated traffic.
    pub hours: f64,
    /// Event-time seconds per wall-clock second.
    pub speed: f64,
    /// Input topic partitions on the embedded broker.
    pub partitions: i32,
    /// Stop by itself after this long (seconds), else at Ctrl-C.
    pub duration_secs: Option<f64>,
    pub topology: Topology,
}

/// How the demo runs the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One service doing the whole detection (`kafka.role = "all"`).
    #[default]
    Single,
    /// [`ACCOUNT_INSTANCES`] `account` instances, [`LINK_SHARDS`] `link` instances (one per
    /// link shard, each reading its observations topic) and one `cluster` instance reading
    /// the links topic.
    Staged,
}

/// Account instances of the staged demo.
pub const ACCOUNT_INSTANCES: usize = 2;
/// Link shards of the staged demo.
pub const LINK_SHARDS: u32 = 2;

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            scenario: "all".into(),
            seed: 7,
            scale: 0.1,
            hours: 2.0,
            speed: 60.0,
            partitions: 3,
            duration_secs: None,
            topology: Topology::Single,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("embedded broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Sim(#[from] sim::SimError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("encoding an event: {0}")]
    Encode(String),
}

/// What the demo saw, for its closing summary.
#[derive(Debug, Default, Clone)]
pub struct DemoReport {
    pub events_sent: u64,
    pub alerts: BTreeMap<String, u64>,
    pub attack_accounts: usize,
    pub attack_flagged: usize,
    pub benign_accounts: usize,
    pub benign_flagged: usize,
}

/// Runs the demo until `shutdown` resolves (or the optional duration passes). `config` is the
/// user's configuration; the demo points it at the embedded broker.
pub async fn run(
    opts: DemoOptions,
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<DemoReport, DemoError> {
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let k = &mut config.kafka;
    k.brokers = brokers.clone();
    k.input_format = crate::config::Format::Protobuf;
    k.alerts_format = crate::config::Format::Protobuf;
    k.auto_offset_reset = crate::config::AutoOffsetReset::Earliest;
    cluster.create_topic(&k.input_topic, opts.partitions, 1)?;
    cluster.create_topic(&k.alerts_topic, 1, 1)?;
    cluster.create_topic(&k.dlq_topic, 1, 1)?;
    cluster.create_topic(&k.control_topic, 1, 1)?;
    cluster.create_topic(&k.verdicts_topic, 1, 1)?;
    if opts.topology == Topology::Staged {
        k.link_shards = LINK_SHARDS;
    }
    for s in 0..k.link_shards {
        cluster.create_topic(&k.observations_topic_of(s), opts.partitions, 1)?;
    }
    cluster.create_topic(&k.links_topic, k.link_shards as i32, 1)?;
    let cfg = Arc::new(config.clone().validate()?);

    tracing::info!(
        scenario = %opts.scenario,
        scale = opts.scale,
        hours = opts.hours,
        "simulating traffic"
    );
    let simulation = sim::generate(&SimOptions {
        scenario: opts.scenario.clone(),
        seed: opts.seed,
        scale: opts.scale,
        hours: opts.hours,
        ..Default::default()
    })?;
    let mut events = Vec::with_capacity(simulation.events.len());
    for raw in &simulation.events {
        events.push(json_to_proto(raw).map_err(|e| DemoError::Encode(e.to_string()))?);
    }
    let labels = simulation.labels;

    let services = start(&opts, &config).await?;
    println!(
        "distillguard demo: embedded broker {brokers}; {} simulated events ({} accounts, {} attack) over {} h of event time at {}x; {}; metrics on http://{}/metrics",
        events.len(),
        labels.len(),
        labels.iter().filter(|l| l.attack).count(),
        opts.hours,
        opts.speed,
        match opts.topology {
            Topology::Single => "one service".to_string(),
            Topology::Staged => format!(
                "staged: {ACCOUNT_INSTANCES} account instances, {LINK_SHARDS} link shards, \
                 one cluster instance"
            ),
        },
        services[0].metrics_addr
    );
    println!(
        "alerts as they arrive on `{}` (Ctrl-C to stop):",
        cfg.raw.kafka.alerts_topic
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let feeder = {
        let stop = stop.clone();
        let sent = sent.clone();
        let brokers = brokers.clone();
        let topic = cfg.raw.kafka.input_topic.clone();
        let speed = opts.speed;
        std::thread::Builder::new()
            .name("dg-demo-feed".into())
            .spawn(move || feed(&brokers, &topic, events, speed, &stop, &sent))
            .map_err(|e| DemoError::Encode(e.to_string()))?
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let viewer = {
        let stop = stop.clone();
        let seen = seen.clone();
        let brokers = brokers.clone();
        let topic = cfg.raw.kafka.alerts_topic.clone();
        std::thread::Builder::new()
            .name("dg-demo-view".into())
            .spawn(move || view(&brokers, &topic, &stop, &seen))
            .map_err(|e| DemoError::Encode(e.to_string()))?
    };

    let until = async {
        match opts.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = until => {}
    }
    println!("stopping: draining alerts and committing offsets...");
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || feeder.join()).await;
    // All at once: one by one, each leaving would hand its partitions to the others.
    let stopping: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(s.shutdown()))
        .collect();
    let mut stopped = Ok(());
    for s in stopping {
        let r = s.await.unwrap_or(Err(ServiceError::ThreadLost));
        if stopped.is_ok() {
            stopped = r;
        }
    }
    // Let the viewer read the last alerts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tokio::task::spawn_blocking(move || viewer.join()).await;
    drop(cluster);
    stopped?;

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let report = summarize(&labels, &seen, sent.load(Ordering::Relaxed));
    println!(
        "sent {} events; alerts: {:?}; attack accounts flagged {}/{}; benign accounts flagged {}/{}",
        report.events_sent,
        report.alerts,
        report.attack_flagged,
        report.attack_accounts,
        report.benign_flagged,
        report.benign_accounts
    );
    Ok(report)
}

/// The demo's services: one, or the staged topology's instances (the first serves the
/// configured metrics address, the others an ephemeral port: one process, one registry).
async fn start(opts: &DemoOptions, config: &Config) -> Result<Vec<Service>, DemoError> {
    let roles: Vec<(StageRole, u32)> = match opts.topology {
        Topology::Single => vec![(StageRole::All, 0)],
        Topology::Staged => std::iter::repeat_n((StageRole::Account, 0), ACCOUNT_INSTANCES)
            .chain((0..LINK_SHARDS).map(|s| (StageRole::Link, s)))
            .chain([(StageRole::Cluster, 0)])
            .collect(),
    };
    let mut services = Vec::with_capacity(roles.len());
    for (i, (role, shard)) in roles.into_iter().enumerate() {
        let mut c = config.clone();
        c.kafka.role = role;
        c.kafka.link_shard = shard;
        if i > 0 {
            c.service.metrics_addr = "127.0.0.1:0".into();
        }
        services.push(Service::start(Arc::new(c.validate()?)).await?);
    }
    Ok(services)
}

#[derive(Debug, Default, Clone)]
struct Seen {
    alerts: BTreeMap<String, u64>,
    accounts: HashSet<String>,
}

fn summarize(labels: &[Label], seen: &Seen, sent: u64) -> DemoReport {
    // Only accounts that appeared in the traffic sent so far count.
    let mut r = DemoReport {
        events_sent: sent,
        alerts: seen.alerts.clone(),
        ..Default::default()
    };
    for l in labels {
        let flagged = seen.accounts.contains(&l.account_id);
        if l.attack {
            r.attack_accounts += 1;
            r.attack_flagged += usize::from(flagged);
        } else {
            r.benign_accounts += 1;
            r.benign_flagged += usize::from(flagged);
        }
    }
    r
}

/// Produces the events at `speed` times real time, event times shifted to start now.
fn feed(
    brokers: &str,
    topic: &str,
    mut events: Vec<proto::RequestEvent>,
    speed: f64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "demo feeder cannot start");
            return;
        }
    };
    let ms = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
    };
    let Some(first) = events.first().map(|e| ms(&e.ts)) else {
        return;
    };
    let wall0 = Instant::now();
    let shift = now_ms() - first;
    for ev in &mut events {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = ms(&ev.ts);
        let due = Duration::from_secs_f64(((t - first) as f64 / 1000.0 / speed).max(0.0));
        let elapsed = wall0.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_millis(200)));
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        ev.ts = Some(crate::event::decode::ms_to_proto(t + shift));
        if let Some(c) = ev.account_created_at.as_ref().map(|c| ms(&Some(*c))) {
            ev.account_created_at = Some(crate::event::decode::ms_to_proto(c + shift));
        }
        let bytes = ev.encode_to_vec();
        let mut record = BaseRecord::to(topic).key(&ev.account_id).payload(&bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let _ = producer.flush(Duration::from_secs(5));
    if !stop.load(Ordering::Relaxed) {
        println!("(simulated traffic finished; still serving metrics; Ctrl-C to stop)");
    }
}

/// Prints every alert on the alerts topic as a short line.
fn view(brokers: &str, topic: &str, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "distillguard-demo-viewer")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "demo viewer cannot start");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        tracing::error!(error = %e, "demo viewer cannot subscribe");
        return;
    }
    let mut quiet_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            // Keep reading until the topic has been quiet for a moment.
            let q = quiet_since.get_or_insert_with(Instant::now);
            if q.elapsed() > Duration::from_millis(1500) {
                break;
            }
        }
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet_since = None;
        let Some(Ok(p)) = m.payload().map(proto::Alert::decode) else {
            continue;
        };
        let Ok(alert) = Alert::from_proto(p) else {
            continue;
        };
        println!("{}", alert.one_line());
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        *s.alerts.entry(alert.kind.to_string()).or_insert(0) += 1;
        s.accounts.extend(alert.accounts.iter().cloned());
    }
}
