//! Configuration: one TOML file, every key documented with its default.
//!
//! `Config` is what the file says (unknown keys are an error); [`Config::validate`] checks it
//! once at start-up and names the key and the fix when something is wrong.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

use crate::event::time::parse_rfc3339_ms;
use crate::fingerprint::DEFAULT_REASONING_LEXICON;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}` is invalid: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// `v` is a share: between 0 and 1.
fn share(key: &str, v: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, format!("{v} must be between 0 and 1")))
    }
}

/// `v` is a finite positive number.
fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(invalid(key, format!("{v} must be a positive number")))
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub engine: EngineConfig,
    pub fingerprint: FingerprintConfig,
    pub harvest: HarvestConfig,
    pub bulk: BulkConfig,
    pub cluster: ClusterConfig,
    pub cohort: CohortConfig,
    pub alerts: AlertConfig,
    /// Accounts and orgs never named in alerts, each with a reason and an expiry.
    pub allowlist: Vec<AllowEntry>,
    pub kafka: KafkaConfig,
    pub service: ServiceConfig,
    pub verdicts: VerdictsConfig,
}

/// Analysts' verdicts on alerts (the `kafka.verdicts_topic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictsConfig {
    /// Alerts remembered by id (read back from the alerts topic) to label verdicts by kind
    /// and severity: a few hundred bytes each, plus up to 100 of its account ids while
    /// `false_positive_allow_secs` is on (a false positive allowlists at most those).
    pub remember_alerts: usize,
    /// A false_positive verdict allowlists the alert's accounts for this long (seconds) through
    /// the control topic; 0: off.
    pub false_positive_allow_secs: u64,
}

impl Default for VerdictsConfig {
    fn default() -> Self {
        Self {
            remember_alerts: 100_000,
            false_positive_allow_secs: 0,
        }
    }
}

/// How records are encoded on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The contract's protobuf messages (`distillguard.v1.*`).
    Protobuf,
    /// The contract's JSON form.
    Json,
}

/// Which stage of the detection a service instance runs (see `kafka.role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StageRole {
    /// All of it: both detectors on the input topic.
    #[default]
    All,
    /// `bulk_extraction` on the input topic, and an observation of every event to
    /// `kafka.observations_topic`.
    Account,
    /// Link decisions on `kafka.observations_topic`: with one link instance
    /// (`kafka.link_shards` 1) it also assembles clusters and alerts `fake_account_cluster`;
    /// as link shard `kafka.link_shard` of several, it writes its link records to
    /// `kafka.links_topic`.
    Link,
    /// `fake_account_cluster` from the link shards' records on `kafka.links_topic`.
    Cluster,
}

impl StageRole {
    pub fn engine(self) -> crate::engine::Role {
        match self {
            StageRole::All => crate::engine::Role::All,
            StageRole::Account => crate::engine::Role::Account,
            // The cluster stage runs no engine of its own (`engine::cluster_stage`).
            StageRole::Link | StageRole::Cluster => crate::engine::Role::Link,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageRole::All => "all",
            StageRole::Account => "account",
            StageRole::Link => "link",
            StageRole::Cluster => "cluster",
        }
    }
}

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoOffsetReset {
    Earliest,
    Latest,
}

impl AutoOffsetReset {
    /// librdkafka's value for `auto.offset.reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoOffsetReset::Earliest => "earliest",
            AutoOffsetReset::Latest => "latest",
        }
    }
}

/// The Kafka service (`distillguard run`): topics, formats and client properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// Consumer group; instances in one group share the input partitions.
    pub group_id: String,
    pub input_topic: String,
    pub alerts_topic: String,
    /// Malformed input records go here, with headers giving the reason and the source.
    pub dlq_topic: String,
    /// `protobuf` (distillguard.v1.RequestEvent) or `json`.
    pub input_format: Format,
    /// `protobuf` (distillguard.v1.Alert) or `json`.
    pub alerts_format: Format,
    /// Where a group with no committed offset starts: `latest` or `earliest`.
    pub auto_offset_reset: AutoOffsetReset,
    /// On start and on every rebalance, window state is rebuilt by re-reading this much of
    /// the input (seconds, by record timestamp) before live processing resumes.
    pub rebuild_secs: u64,
    /// Records of all owned partitions are merged by event time; a partition that has gone
    /// silent holds the others back at most this long (ms).
    pub idle_partition_ms: u64,
    /// The live allowlist: compacted, keyed by `account:ID` or `org:ID`, read from the
    /// beginning by every instance.
    pub control_topic: String,
    /// Analysts' verdicts on alerts.
    pub verdicts_topic: String,
    /// The stage this instance runs: `all` (the whole detection in one consumer group),
    /// `account` (keyed by account: bulk_extraction, and an observation of every event to
    /// `observations_topic`) or `link` (reads `observations_topic` in group `GROUP-link`:
    /// clusters whole however many account instances run).
    pub role: StageRole,
    /// Internal topic from the account stage to the link stage (protobuf
    /// `distillguard.v1.Observation`, keyed by account id).
    pub observations_topic: String,
    /// How far behind the newest observation (event time, seconds) the link stage still
    /// takes one in, instead of `engine.late_allowance_secs`: every account instance writes
    /// every partition of the observations topic at its own pace, so a partition is out of
    /// order by as much as the account instances are apart, minutes while one rebuilds.
    pub link_late_allowance_secs: u64,
    /// How long the link stage waits for a partition of the observations topic whose writer
    /// (an account instance) has gone silent, or has not been heard from since the link took
    /// the partition, before it moves on without it (seconds). Its next writer, after the
    /// account stage's rebalance and rebuild, resumes where it stopped: waiting delays cluster
    /// alerts by the gap; moving on takes that writer's observations in late. Cover the
    /// account stage's session timeout and a rebuild.
    pub link_writer_wait_secs: u64,
    /// How many link instances share the link decisions, each owning the attribute values
    /// and co-activity bins whose linking value hashes to it (`engine::link_targets`). 1: one
    /// link instance reads `observations_topic` and assembles clusters itself. More (at most
    /// 64): the account stage writes an observation to `observations_topic-S` for each shard
    /// S that must see it; shard S reads that topic in group `GROUP-link-S` and writes its
    /// link records to `links_topic`, whose `cluster` instance alerts. Every account and link
    /// instance must agree on it.
    pub link_shards: u32,
    /// Which link shard this `link` instance is, from 0 to `link_shards` - 1 (one instance
    /// per shard, e.g. a StatefulSet's ordinal).
    pub link_shard: u32,
    /// Internal topic from the link shards to the cluster stage (protobuf
    /// `distillguard.v1.Links`): shard S writes partition S, so it needs `link_shards`
    /// partitions.
    pub links_topic: String,
    /// librdkafka properties for both clients (TLS, SASL, ...), passed through as given.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the alert and dead-letter producer only.
    pub producer_properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The observations topic link shard `shard` reads: `observations_topic` itself with one
    /// link instance, `observations_topic-S` with several.
    pub fn observations_topic_of(&self, shard: u32) -> String {
        if self.link_shards <= 1 {
            self.observations_topic.clone()
        } else {
            format!("{}-{shard}", self.observations_topic)
        }
    }

    /// Whether the link stage is split into shards with a cluster stage after them.
    pub fn sharded(&self) -> bool {
        self.link_shards > 1
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "distillguard".into(),
            input_topic: "llm-requests".into(),
            alerts_topic: "distillguard-alerts".into(),
            dlq_topic: "distillguard-dlq".into(),
            input_format: Format::Protobuf,
            alerts_format: Format::Protobuf,
            auto_offset_reset: AutoOffsetReset::Latest,
            rebuild_secs: 3600,
            idle_partition_ms: 2000,
            control_topic: "distillguard-control".into(),
            verdicts_topic: "distillguard-verdicts".into(),
            role: StageRole::All,
            observations_topic: "distillguard-observations".into(),
            link_late_allowance_secs: 3600,
            link_writer_wait_secs: 120,
            link_shards: 1,
            link_shard: 0,
            links_topic: "distillguard-links".into(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

/// The service process: HTTP endpoints, shutdown, back-pressure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Address serving `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: String,
    /// On SIGTERM/SIGINT, in-flight alerts are drained and offsets committed within this.
    pub shutdown_deadline_secs: u64,
    /// librdkafka statistics interval, the source of the consumer-lag gauges (ms).
    pub statistics_interval_ms: u64,
    /// Consumption pauses while this many alerts and dead-letter records await delivery.
    pub max_pending_deliveries: usize,
    /// File the crash-loop guard keeps (see `kafka::guard`); empty: `distillguard-GROUP.marker`
    /// in the temporary directory.
    pub crash_marker: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            metrics_addr: "0.0.0.0:9477".into(),
            shutdown_deadline_secs: 10,
            statistics_interval_ms: 5000,
            max_pending_deliveries: 100_000,
            crash_marker: String::new(),
        }
    }
}

/// librdkafka properties the service sets itself: its delivery guarantees depend on them.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "partition.assignment.strategy",
    "enable.partition.eof",
];

/// State, windows and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far behind the newest event time an event may arrive and still count (seconds).
    pub late_allowance_secs: u64,
    /// An event this far ahead of the newest event time is rejected as out of range (seconds).
    pub max_forward_jump_secs: u64,
    /// Duplicate `event_id`s are dropped within at least this span (seconds).
    pub dedup_window_secs: u64,
    /// Most event ids remembered for de-duplication (two generations of half this size).
    pub max_dedup_ids: usize,
    /// An account idle this long is forgotten (seconds). Also the longest horizon.
    pub account_idle_secs: u64,
    /// Hard cap on tracked accounts; past it the least recently active are evicted.
    pub max_accounts: usize,
    /// Hard cap on attribute values (IPs, fingerprints, templates, ...) shared by two or
    /// more accounts. A value held by one account is a bare pair, bounded by
    /// `max_accounts` times the account's attribute slots.
    pub max_attribute_values: usize,
    /// Accounts younger than this count as fresh (days).
    pub fresh_account_days: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            late_allowance_secs: 300,
            max_forward_jump_secs: 86_400,
            dedup_window_secs: 600,
            max_dedup_ids: 4_000_000,
            account_idle_secs: 86_400,
            max_accounts: 2_000_000,
            max_attribute_values: 4_000_000,
            fresh_account_days: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FingerprintConfig {
    /// Phrases (case-insensitive) that mark a prompt as eliciting step-by-step reasoning.
    pub reasoning_lexicon: Vec<String>,
    /// When prompts arrive without text (only `prompt_simhash`), reasoning elicitation is
    /// unknown: an output/input token ratio of at least this stands in for it.
    pub output_ratio_without_text: f64,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            reasoning_lexicon: DEFAULT_REASONING_LEXICON
                .iter()
                .map(|s| s.to_string())
                .collect(),
            output_ratio_without_text: 3.0,
        }
    }
}

/// What counts as harvesting: a request whose answer is new and worth training on. Both
/// detectors count harvest, not requests, so that copies of one prompt (a documentation
/// example, a class's assignment) and chat mixed in as cover neither make nor hide a harvest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestConfig {
    /// A single-turn request without a reasoning phrase still harvests when its answer is at
    /// least this many times its prompt (distillation wants long answers to short prompts)...
    pub min_output_ratio: f64,
    /// ...and at least this many output tokens long.
    pub min_output_tokens: u32,
    /// A prompt sent by more than this many accounts within one to two
    /// `copies_window_secs` harvests nothing new: everyone has its answer.
    pub max_prompt_copies: u32,
    /// Generation length of the prompt-copies sketch (seconds).
    pub copies_window_secs: u64,
    /// Most memory the prompt-copies sketch may use (MiB). It sizes itself from the stream
    /// at 8 bytes per copy-checked request an hour (both generations), so this cap serves
    /// about 8M such requests an hour per 64 MiB; beyond it, new prompts start to be taken
    /// for copies (and harvest nothing): raise it with the traffic.
    pub copies_sketch_max_mib: u64,
    /// An account's trailing hour is extraction-like when at least one request harvested and
    /// harvest is at least this share of its requests. Cover traffic that pushes the share
    /// below it costs the attacker several times the harvest it hides.
    pub min_profile_share: f64,
}

impl Default for HarvestConfig {
    fn default() -> Self {
        Self {
            min_output_ratio: 2.0,
            min_output_tokens: 300,
            max_prompt_copies: 3,
            copies_window_secs: 3600,
            copies_sketch_max_mib: 64,
            min_profile_share: 0.3,
        }
    }
}

/// `bulk_extraction`: one account systematically harvesting outputs. Signals are computed over
/// the trailing hour of the account's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    pub enabled: bool,
    /// Harvesting requests an hour (actual or projected) that a fresh account must reach to
    /// be judged: more new reasoning prompts than a person writes by hand.
    pub min_harvest_fresh: u32,
    /// Harvesting requests in the trailing hour before an established account is judged (one-off
    /// evaluation runs of a few hundred prompts are normal for established customers), unless
    /// its harvesting episode has outlasted an evaluation run (`established_min_episode_hours`):
    /// then the episode is the volume, however much cover thins its hour...
    pub min_harvest_established: u32,
    /// ...with at least this many output tokens in that hour (an evaluation run's answers
    /// rarely add up to this; a harvest of reasoning traces soon does).
    pub min_output_tokens_established: u64,
    /// Harvesting requests an hour (actual or projected) from an established account that
    /// appeared from a new device or network since it was last seen.
    pub min_harvest_corroborated: u32,
    /// An account that arrives from at least this many networks new to it an hour (an
    /// autonomous system not among the last four it came from) is behind a rotating
    /// proxy: a person moves between a handful of networks a day, Tor changes its exit every
    /// ten minutes (six an hour), and a backend on several clouds stays on their few
    /// autonomous systems...
    pub rotation_min_networks_per_hour: f64,
    /// ...and is judged at this many harvesting requests an hour (actual or projected), fresh
    /// or established (a rotating proxy is a move on every request): new reasoning prompts
    /// each from another ISP, a pace that nobody types and no backend relays.
    pub min_harvest_rotating: u32,
    /// Harvesting requests in the last hour that are decisive whatever the account.
    pub high_volume_harvest: u32,
    /// An established account on its usual device and network is recommended `throttle` at
    /// most, never `suspend`, whatever its volume: a customer's evaluation run (hours at up to
    /// a request every two seconds) looks exactly like a takeover that kept the owner's
    /// device, and suspending a long-standing customer needs a human. The alert still fires,
    /// names this, and rises to `suspend` once the account moves.
    pub established_suspend_needs_corroboration: bool,
    /// Output tokens in the last hour counted as high volume.
    pub high_volume_output_tokens: u64,
    /// A run of activity this many minutes long is judged on its rate projected to an hour...
    pub projection_minutes: u32,
    /// ...once it holds at least this many harvesting requests.
    pub projection_min_harvest: u32,
    /// Score signal (never a gate: cover traffic controls it): share of single-turn requests.
    pub min_single_turn_share: f64,
    /// Score signal: share of reasoning-eliciting prompts.
    pub min_reasoning_share: f64,
    /// Score signal: share of requests on the account's dominant prompt template.
    pub min_template_share: f64,
    /// Score signal: output tokens per input token.
    pub min_output_ratio: f64,
    /// Coefficient of variation of inter-arrival gaps below which timing is machine-like.
    pub max_gap_cv: f64,
    /// Distinct clock hours active in the last 24 h for round-the-clock activity.
    pub min_active_hours: u32,
    /// Share of the last hour's requests on a model first seen recently, by an account that
    /// was active before that model appeared.
    pub min_new_model_share: f64,
    /// A model counts as newly released for this long after it is first seen (hours).
    pub new_model_hours: f64,
    /// Score at or above which an alert is emitted.
    pub alert_score: f64,
    /// Minutes of continuously active 5-minute buckets that count as a sustained run (a
    /// scoring signal, not a trigger: one-off evaluation runs are sustained too).
    pub sustained_minutes: u32,
    /// A move to a new device or network corroborates a takeover only for an account that
    /// rarely moves: past this many moves it is multi-homed (an app backend on many servers).
    pub max_credible_moves: u8,
    /// How long a move corroborates (hours): a takeover starts harvesting soon after it.
    pub move_corroborates_hours: f64,
    /// An established account on its usual device and network is judged only once its
    /// harvesting episode (its trailing hour at `min_harvest_fresh` or more, throughout, up to
    /// its last harvest at pace: `episode_pace_minutes`) has lasted this many hours... A
    /// customer's evaluation run is a harvest by every measure but one: it ends, after the
    /// benchmark's few thousand prompts, within hours (1-3 h).
    pub established_min_episode_hours: f64,
    /// ...or has harvested more than this many requests in the episode: more answers than a
    /// benchmark run collects (a request every two seconds for three hours is 5,400). A
    /// harvester at scale crosses it within the hour.
    pub established_min_episode_harvest: u32,
    /// An episode lasts as long as its harvest keeps pace: `min_harvest_fresh` an hour over
    /// the last this many minutes (whole 5-minute buckets, the current one included). The
    /// answers still in the trailing hour after an evaluation run ended, or the owner's own
    /// requests after it, keep the hour full for up to an hour but not the pace. Pauses do not
    /// shorten a harvester's episode: it ends only when the trailing hour falls below
    /// `min_harvest_fresh`, and its length runs to the last harvest that kept pace.
    pub episode_pace_minutes: u32,
    /// An established account on its usual device and network is alerted only if its traffic
    /// shows a script: machine pacing (inter-arrival CV at most `max_gap_cv`) or long answers
    /// to short prompts (at least `min_output_ratio`). Without either, its volume is its own
    /// users' (an app backend relaying them); a takeover keeping the owner's device still has
    /// to pace and word its harvest like one.
    pub established_needs_script_tell: bool,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_harvest_fresh: 100,
            min_harvest_established: 300,
            min_output_tokens_established: 400_000,
            min_harvest_corroborated: 120,
            rotation_min_networks_per_hour: 10.0,
            min_harvest_rotating: 30,
            high_volume_harvest: 1200,
            established_suspend_needs_corroboration: true,
            high_volume_output_tokens: 1_500_000,
            projection_minutes: 10,
            projection_min_harvest: 25,
            min_single_turn_share: 0.85,
            min_reasoning_share: 0.5,
            min_template_share: 0.6,
            min_output_ratio: 2.0,
            max_gap_cv: 0.6,
            min_active_hours: 18,
            min_new_model_share: 0.8,
            new_model_hours: 14.0 * 24.0,
            alert_score: 0.6,
            sustained_minutes: 45,
            max_credible_moves: 2,
            move_corroborates_hours: 2.0,
            established_min_episode_hours: 3.25,
            established_min_episode_harvest: 6000,
            episode_pace_minutes: 15,
            established_needs_script_tell: true,
        }
    }
}

/// `fake_account_cluster`: accounts linked through shared attribute values whose users behave
/// alike (API-style, extraction-like), connected into clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub enabled: bool,
    /// Attribute kinds that can link accounts: `ip`, `ip_prefix`, `device_fingerprint`,
    /// `payment_fingerprint`, `email_domain`, `prompt_template`, `creation_minute` (accounts
    /// created in the same minute: scripts create accounts in bursts), `asn` (a hosting
    /// provider's proxy pool spread over many /24s). `email_domain` is off by
    /// default: webmail domains are shared by everyone, and early in a stream a burst of
    /// attack sign-ups can make one look homogeneous.
    pub link_kinds: Vec<String>,
    /// Fewest accounts sharing a payment fingerprint for it to link them.
    pub min_members_payment: u32,
    /// Fewest accounts sharing a device fingerprint.
    pub min_members_device: u32,
    /// Fewest accounts sharing an IP address.
    pub min_members_ip: u32,
    /// Fewest accounts sharing an IPv4 /24 or IPv6 /64.
    pub min_members_ip_prefix: u32,
    /// Fewest accounts sharing an e-mail domain.
    pub min_members_email_domain: u32,
    /// Fewest accounts sharing a prompt template.
    pub min_members_template: u32,
    /// Fewest accounts created in the same creation window (`creation_bucket_secs`).
    pub min_members_creation: u32,
    /// Width of the creation window that links accounts created together (seconds; a whole
    /// number of minutes dividing the hour, at most a quarter of an hour). A script signing up a farm
    /// spreads its sign-ups over minutes to stay under a per-minute count: the window must
    /// hold a burst's minutes, and leave the rest of its hour as the background it is judged
    /// against (`creation_minute_max_chance`).
    pub creation_bucket_secs: u64,
    /// Fewest accounts on one autonomous system (its other holders, a provider's customers
    /// and subscribers, keep the share of extraction-like holders low unless one operator
    /// dominates it).
    pub min_members_asn: u32,
    /// Share of the accounts holding the value whose own trailing hour is extraction-like
    /// (single-turn share, reasoning share or output ratio as below, no verified org). A
    /// popular value (carrier NAT, SDK fingerprint, webmail domain) is mostly organic and
    /// never reaches it, however much attack traffic passes through it.
    pub min_member_purity: f64,
    /// A device fingerprint or e-mail domain links only if its accounts are concentrated on
    /// few networks (accounts per distinct /24 or /64): a custom client behind a proxy pool.
    pub min_accounts_per_network: f64,
    /// Share of a shared network's or creation minute's traffic that is single-turn before it
    /// links (people at a venue converse; an operated pool does not, and chat across a whole
    /// pool costs its operator). Elsewhere a score signal only.
    pub min_single_turn_share: f64,
    /// Score signal: share of the cluster's traffic that elicits reasoning.
    pub min_reasoning_share: f64,
    /// Most traffic from verified-org accounts a shared value may carry and still link.
    pub max_org_share: f64,
    /// Share of the shared value's traffic from fresh accounts that counts as coordinated.
    pub min_fresh_share: f64,
    /// Synchrony (expected / observed busy time bins) that counts as lockstep.
    pub min_synchrony: f64,
    /// Width of the time bins for synchrony (seconds).
    pub sync_bin_secs: u64,
    /// Fewest accounts in a cluster before it is alerted.
    pub min_cluster_size: u32,
    /// Harvesting requests an account must have sent itself before any link names it: one
    /// request on a campus network or a popular fingerprint is no evidence.
    pub min_member_harvest: u32,
    /// A shared network, ASN or creation minute (shared by circumstance) names an account only if
    /// it harvested at least this share of what the value's holders harvested each on average
    /// within the horizon: a person who signed up in a burst's minute, or sits on its network,
    /// harvests a fraction of what the operated accounts do.
    pub min_member_harvest_share: f64,
    /// Harvesting requests a cluster's members must have sent between them before it is
    /// alerted: the harvest must be material.
    pub min_cluster_harvest: u32,
    /// An account more than this share of whose requests continued a conversation (a
    /// person talking to the model) counts as a person, not as extraction-like, for shared
    /// values; and with such a chat history it is not named through values shared by
    /// circumstance alone: a shared IP, /24 or creation minute (a venue, a NAT, a sign-up
    /// rush), or a template without lockstep timing (a starter kit). Cards, client
    /// fingerprints, lockstep templates and co-activity still name it.
    pub max_member_chat_share: f64,
    /// Nor does such a value name an account until its own activity spans this many seconds:
    /// in a person's first minutes at a venue (setting up, trying the starter kit) there has
    /// been no time to converse, so the absence of chat is no evidence yet.
    pub weak_link_min_active_secs: u64,
    /// Nor does such a value name an account on a network that is a crowd of people: an IP
    /// held by at least this many accounts whose traffic would not link it, because it
    /// converses too much (`cluster.min_single_turn_share`) or too few of its holders are
    /// extraction-like (`cluster.min_member_purity`): a venue, a campus, a carrier NAT. Its
    /// non-conversing holders (a team that only sends its starter kit's one-off prompts) are
    /// people among people.
    pub crowd_min_accounts: u32,
    /// A creation minute links only if that many holders created in one minute would arise by
    /// chance (Poisson, at the rate the tracked accounts were created in the rest of that hour)
    /// with at most this probability: in a sign-up rush every minute is shared by unrelated
    /// people, and an operator can stay under `min_members_creation` a minute anyway.
    pub creation_minute_max_chance: f64,
    /// A window (`creation_bucket_secs`) can be rare as a whole and still hold people who signed up in it by chance:
    /// as many as the hour's background rate a window. A creation window names an account on
    /// its own only if those could be at most this share of its holders; otherwise it merges
    /// clusters and adds to a second value (a network, a card, a template), since nothing in
    /// the window tells the bystanders from the burst.
    pub creation_minute_max_bystander_share: f64,
    /// A /24 or /64 links a pool spread over a block's addresses (a datacenter range, a proxy
    /// provider's subnet). If at least this share of its holders hold one of its addresses, it
    /// is that address's crowd (a residential proxy exit, a swarm behind one NAT) plus the
    /// people on the neighbouring addresses of the same ISP block: the address links on its
    /// own, and the prefix names no one alone; it merges clusters and adds to a second value.
    /// At 0.75 or more the address holds at least `min_members_ip` of the prefix's
    /// `min_members_ip_prefix` holders; nine in ten keeps it to a block that is one address
    /// and a few neighbours. 1: off.
    pub prefix_max_address_share: f64,
    /// Score at or above which a cluster is alerted.
    pub alert_score: f64,
    /// Time constant of the decayed per-value aggregates (seconds).
    pub horizon_secs: u64,
    /// A prompt template shared without lockstep timing links only a crowd of fresh accounts
    /// that never converse: at least this share of its traffic from fresh accounts (starter
    /// kits and SDK examples are shared by established users)...
    pub template_crowd_fresh_share: f64,
    /// ...and at least this share single-turn (people building on a template converse).
    pub template_crowd_single_turn_share: f64,
    /// Score signal: creation times of a value's accounts spread over at most this many hours
    /// (accounts made in one batch).
    pub max_creation_spread_hours: f64,
    /// A changed cluster is re-evaluated at most this often (seconds) unless it grew by a
    /// quarter: evaluation walks every member, so its cost is paid per interval, not per event.
    pub recheck_secs: u64,
}

impl ClusterConfig {
    /// The creation window of an account created at `created_ms`: the minute it starts at
    /// (minutes since the epoch), so that a window renders as a time.
    pub fn creation_bucket(&self, created_ms: i64) -> i64 {
        let w = (self.creation_bucket_secs / 60).max(1) as i64;
        created_ms.div_euclid(60_000).div_euclid(w) * w
    }

    /// Creation windows in an hour.
    pub fn creation_buckets_per_hour(&self) -> u32 {
        (3600 / self.creation_bucket_secs.max(60)) as u32
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            link_kinds: [
                "ip",
                "ip_prefix",
                "device_fingerprint",
                "payment_fingerprint",
                "prompt_template",
                "creation_minute",
                "asn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            min_members_payment: 3,
            min_members_device: 8,
            min_members_ip: 6,
            min_members_ip_prefix: 8,
            min_members_email_domain: 10,
            min_members_template: 8,
            min_members_creation: 6,
            creation_bucket_secs: 60,
            min_members_asn: 12,
            min_member_purity: 0.8,
            min_accounts_per_network: 2.0,
            min_single_turn_share: 0.85,
            min_reasoning_share: 0.5,
            max_org_share: 0.2,
            min_fresh_share: 0.6,
            min_synchrony: 3.0,
            sync_bin_secs: 5,
            min_cluster_size: 5,
            min_member_harvest: 2,
            min_member_harvest_share: 0.1,
            min_cluster_harvest: 40,
            max_member_chat_share: 0.2,
            weak_link_min_active_secs: 300,
            crowd_min_accounts: 12,
            creation_minute_max_chance: 1e-3,
            creation_minute_max_bystander_share: 0.05,
            prefix_max_address_share: 0.9,
            alert_score: 0.6,
            horizon_secs: 3600,
            template_crowd_fresh_share: 0.8,
            template_crowd_single_turn_share: 0.95,
            max_creation_spread_hours: 72.0,
            recheck_secs: 30,
        }
    }
}

/// Behavioural links: accounts harvesting in synchronised waves with nothing else in common
/// (see `src/detect/cohort.rs`). Linked accounts join `fake_account_cluster` clusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CohortConfig {
    pub enabled: bool,
    /// Width of the co-activity time bins (seconds): a campaign's wave fires within it.
    pub bin_secs: u64,
    /// How long waves are remembered, for the share of bins that are waves and for linking
    /// (seconds).
    pub baseline_secs: u64,
    /// A bin is a wave when its count of harvesting accounts is this improbable (Poisson
    /// tail) under the baseline... A screen, not the verdict: the account-level test
    /// (`max_account_p`, against the share of bins that turned out waves) carries the
    /// significance. A strict screen only sees a wave standing several standard deviations
    /// above the bin's background, and the background grows with the deployment's traffic
    /// while a campaign does not: a few dozen accounts firing together over fifty others
    /// harvesting in the same 15 s never made one. A loose screen makes more bins waves, and
    /// the learned wave share raises the account-level bar with them.
    pub max_wave_p: f64,
    /// ...and at least this many accounts took part.
    pub min_wave_accounts: u32,
    /// An account is in step after at least this many waves...
    pub min_waves: u32,
    /// ...when that many waves among its active bins is this improbable by chance.
    pub max_account_p: f64,
    /// Bins a model must have been observed for before any of its bins is called a wave: a
    /// baseline needs data.
    pub warmup_bins: u64,
    /// The chance that an active bin of an independent account is a wave is also taken from
    /// the moment it was active: the share of waves among the model's last this many bins (at
    /// most 64), averaged over the account's active bins. An account that is always on (an
    /// evaluation run) and starts while a campaign fires densely takes part in as many waves
    /// as the moment has, however quiet the rest of its span was.
    pub local_share_bins: u32,
    /// A harvesting account *returns* in a bin when it harvested nothing for this many
    /// seconds before; a bin is also a wave when the accounts returning in it are
    /// improbably many against the recent bins' returns (and at least
    /// `min_wave_accounts`). A campaign that keeps each account to a few requests an hour
    /// returns with every round, while the scripts harvesting steadily beside it (a request
    /// a minute or so) never return, nor make its rounds' counts unremarkable. Longer than
    /// the gaps of a steady script at a low pace; shorter than the rounds of a campaign
    /// that sends each account a few requests an hour.
    pub return_quiet_secs: u64,
    /// A run of harvesting starts with a request after this many seconds without one...
    pub schedule_quiet_secs: u64,
    /// ...and an established account whose runs keep to the wall clock (at least this many
    /// of them started in the first bin after a round minute: one, so that a job is taken for
    /// one from its first run on the round minute until a run off the clock says otherwise,
    /// while the rounds of a campaign drift across the minute...
    pub schedule_min_runs: u32,
    /// ...and at least this share of all its runs) is on a schedule: customers' crontabs fire
    /// together at the round minutes, so co-activity is no evidence against it. A run that
    /// starts at a random moment does so one time in 60 / `bin_secs` (a quarter).
    pub schedule_min_share: f64,
}

impl Default for CohortConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bin_secs: 15,
            baseline_secs: 3600,
            max_wave_p: 0.01,
            min_wave_accounts: 8,
            min_waves: 3,
            max_account_p: 1e-4,
            warmup_bins: 20,
            local_share_bins: 16,
            return_quiet_secs: 600,
            schedule_quiet_secs: 60,
            schedule_min_runs: 1,
            schedule_min_share: 0.75,
        }
    }
}

/// Severity tiers, actions and repeat suppression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Score for `throttle` (and severity `high`).
    pub throttle_score: f64,
    /// Score for `suspend` (and severity `critical`); suspend also needs corroborating
    /// evidence: at least `suspend_min_signals` independent signals.
    pub suspend_score: f64,
    pub suspend_min_signals: u32,
    /// A cluster alert is updated at most this often while it grows (seconds).
    pub cluster_update_secs: u64,
    /// An unchanged alert is repeated after this long, to refresh dashboards (seconds; 0: never).
    pub repeat_secs: u64,
    /// Example event ids carried in evidence.
    pub example_events: usize,
    /// Safety valve on automatic suspension: downstream systems suspend every account a
    /// `suspend` alert names, so a detector bug or a bad configuration could suspend
    /// thousands of customers. Past this many subjects recommended `suspend` in any sliding
    /// hour of event time (both kinds together), further `suspend` alerts are still emitted
    /// but as `throttle` (severity `high`), with `rate_limited: true`, the cap and the count
    /// in their evidence. A subject re-alerted within the hour of its grant keeps it (no
    /// second slot); a withheld subject is asked again at its next alert (a cluster's update,
    /// a repeat after `repeat_secs`). Each instance counts its own partitions' alerts. The
    /// default is several times the busiest hour measured on simulated attacks at scale 1,
    /// and small enough that a runaway is caught after dozens of suspensions, not thousands.
    /// 0: no cap.
    pub max_suspend_per_hour: u32,
    /// The same cap for `bulk_extraction` alone (0: none). One subject is one account.
    pub max_suspend_per_hour_bulk: u32,
    /// The same cap for `fake_account_cluster` alone (0: none). One subject is one cluster,
    /// however many accounts it names, so this is lower than the bulk cap.
    pub max_suspend_per_hour_cluster: u32,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            throttle_score: 0.75,
            suspend_score: 0.9,
            suspend_min_signals: 4,
            cluster_update_secs: 120,
            repeat_secs: 6 * 3600,
            example_events: 3,
            max_suspend_per_hour: 50,
            max_suspend_per_hour_bulk: 40,
            max_suspend_per_hour_cluster: 10,
        }
    }
}

/// One allowlist entry: exactly one of `account` or `org`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub org: Option<String>,
    /// Why this entry exists (who asked, ticket).
    pub reason: String,
    /// RFC 3339; the entry stops applying at this event time.
    pub expires: String,
}

/// Validated allowlist entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    pub account: Option<String>,
    pub org: Option<String>,
    pub reason: String,
    pub expires_ms: i64,
}

/// A configuration that passed validation, with derived values.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub raw: Config,
    pub allowlist: Vec<Allow>,
    /// Short hash of the configuration, part of `detector_version`.
    pub hash: u64,
}

impl Config {
    /// Reads a TOML file (no file: the defaults), then applies `DISTILLGUARD__SECTION__KEY`
    /// environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with the environment given (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, name) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (String::new(), "<defaults>".to_string()),
        };
        let parse_err = |source| ConfigError::Parse {
            path: name.clone(),
            source: Box::new(source),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        apply_env(&mut table, env)?;
        Config::deserialize(toml::Value::Table(table)).map_err(parse_err)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<string>".into(),
            source: Box::new(e),
        })
    }

    /// Checks every key once; the error names the key and what would fix it.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        self.check_detection()?;
        let allowlist = self.check_allowlist()?;
        self.check_kafka()?;
        self.check_service()?;
        // The detector version covers what decides alerts, not where they are sent.
        let detection = (
            &self.engine,
            &self.fingerprint,
            &self.harvest,
            &self.bulk,
            &self.cluster,
            &self.cohort,
            &self.alerts,
            &self.allowlist,
        );
        let hash = xxh3_64(
            serde_json::to_string(&detection)
                .unwrap_or_default()
                .as_bytes(),
        );
        Ok(ValidConfig {
            raw: self,
            allowlist,
            hash,
        })
    }

    /// Engine, fingerprint, harvest, cohort, bulk, cluster and alert settings.
    fn check_detection(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        positive("engine.dedup_window_secs", e.dedup_window_secs as f64)?;
        positive("engine.account_idle_secs", e.account_idle_secs as f64)?;
        positive("engine.fresh_account_days", e.fresh_account_days)?;
        if e.account_idle_secs < 3600 {
            return Err(invalid(
                "engine.account_idle_secs",
                "must be at least 3600: the detectors look at the trailing hour",
            ));
        }
        if e.max_accounts < 1000 {
            return Err(invalid("engine.max_accounts", "must be at least 1000"));
        }
        if e.max_attribute_values < 1000 {
            return Err(invalid(
                "engine.max_attribute_values",
                "must be at least 1000",
            ));
        }
        if e.max_dedup_ids < 1000 {
            return Err(invalid("engine.max_dedup_ids", "must be at least 1000"));
        }
        if self
            .fingerprint
            .reasoning_lexicon
            .iter()
            .any(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "fingerprint.reasoning_lexicon",
                "contains an empty phrase; remove it",
            ));
        }
        positive(
            "fingerprint.output_ratio_without_text",
            self.fingerprint.output_ratio_without_text,
        )?;
        let h = &self.harvest;
        positive("harvest.min_output_ratio", h.min_output_ratio)?;
        positive("harvest.copies_window_secs", h.copies_window_secs as f64)?;
        if !(1..=65_536).contains(&h.copies_sketch_max_mib) {
            return Err(invalid(
                "harvest.copies_sketch_max_mib",
                format!("{} must be between 1 and 65536", h.copies_sketch_max_mib),
            ));
        }
        share("harvest.min_profile_share", h.min_profile_share)?;
        if h.max_prompt_copies < 1 {
            return Err(invalid("harvest.max_prompt_copies", "must be at least 1"));
        }
        let co = &self.cohort;
        positive("cohort.bin_secs", co.bin_secs as f64)?;
        positive("cohort.return_quiet_secs", co.return_quiet_secs as f64)?;
        share("cohort.max_wave_p", co.max_wave_p)?;
        share("cohort.max_account_p", co.max_account_p)?;
        if co.warmup_bins < 1 || co.warmup_bins > (co.baseline_secs / co.bin_secs.max(1)) {
            return Err(invalid(
                "cohort.warmup_bins",
                "must be at least 1 and at most the bins in cohort.baseline_secs",
            ));
        }
        if !(1..=64).contains(&co.local_share_bins) {
            return Err(invalid(
                "cohort.local_share_bins",
                "must be between 1 and 64",
            ));
        }
        share("cohort.schedule_min_share", co.schedule_min_share)?;
        if co.baseline_secs < 60 * co.bin_secs {
            return Err(invalid(
                "cohort.baseline_secs",
                "must be at least 60 bins (60 x cohort.bin_secs)",
            ));
        }
        if co.min_wave_accounts < 2 || co.min_waves < 1 {
            return Err(invalid(
                "cohort.min_wave_accounts",
                "a wave needs at least 2 accounts and an account at least 1 wave (cohort.min_waves)",
            ));
        }
        let b = &self.bulk;
        share("bulk.min_single_turn_share", b.min_single_turn_share)?;
        share("bulk.min_reasoning_share", b.min_reasoning_share)?;
        share("bulk.min_template_share", b.min_template_share)?;
        share("bulk.min_new_model_share", b.min_new_model_share)?;
        share("bulk.alert_score", b.alert_score)?;
        positive("bulk.min_output_ratio", b.min_output_ratio)?;
        positive("bulk.max_gap_cv", b.max_gap_cv)?;
        positive("bulk.new_model_hours", b.new_model_hours)?;
        positive("bulk.move_corroborates_hours", b.move_corroborates_hours)?;
        positive(
            "bulk.rotation_min_networks_per_hour",
            b.rotation_min_networks_per_hour,
        )?;
        positive(
            "bulk.min_harvest_rotating",
            f64::from(b.min_harvest_rotating),
        )?;
        if !(0.0..=24.0).contains(&b.established_min_episode_hours) {
            return Err(invalid(
                "bulk.established_min_episode_hours",
                "must be between 0 and 24",
            ));
        }
        if !(1..=60).contains(&b.episode_pace_minutes) {
            return Err(invalid(
                "bulk.episode_pace_minutes",
                "must be between 1 and 60 (the window)",
            ));
        }
        if b.min_harvest_corroborated > b.min_harvest_established {
            return Err(invalid(
                "bulk.min_harvest_corroborated",
                "must be at most bulk.min_harvest_established",
            ));
        }
        if !(1..=60).contains(&b.projection_minutes) {
            return Err(invalid(
                "bulk.projection_minutes",
                "must be between 1 and 60 (the window)",
            ));
        }
        if b.min_active_hours > 24 {
            return Err(invalid("bulk.min_active_hours", "must be at most 24"));
        }
        if b.sustained_minutes > 60 {
            return Err(invalid(
                "bulk.sustained_minutes",
                "must be at most 60 (the window)",
            ));
        }
        let c = &self.cluster;
        share("cluster.min_single_turn_share", c.min_single_turn_share)?;
        share("cluster.min_member_purity", c.min_member_purity)?;
        share(
            "cluster.min_member_harvest_share",
            c.min_member_harvest_share,
        )?;
        share("cluster.max_member_chat_share", c.max_member_chat_share)?;
        share("cluster.min_reasoning_share", c.min_reasoning_share)?;
        share("cluster.max_org_share", c.max_org_share)?;
        share("cluster.min_fresh_share", c.min_fresh_share)?;
        share(
            "cluster.creation_minute_max_chance",
            c.creation_minute_max_chance,
        )?;
        share(
            "cluster.creation_minute_max_bystander_share",
            c.creation_minute_max_bystander_share,
        )?;
        share(
            "cluster.prefix_max_address_share",
            c.prefix_max_address_share,
        )?;
        share("cluster.alert_score", c.alert_score)?;
        share(
            "cluster.template_crowd_fresh_share",
            c.template_crowd_fresh_share,
        )?;
        share(
            "cluster.template_crowd_single_turn_share",
            c.template_crowd_single_turn_share,
        )?;
        positive(
            "cluster.max_creation_spread_hours",
            c.max_creation_spread_hours,
        )?;
        positive("cluster.recheck_secs", c.recheck_secs as f64)?;
        if c.creation_bucket_secs == 0
            || c.creation_bucket_secs % 60 != 0
            || 3600 % c.creation_bucket_secs != 0
            || c.creation_bucket_secs > 900
        {
            return Err(invalid(
                "cluster.creation_bucket_secs",
                format!(
                    "{} must be a whole number of minutes dividing the hour, at most 900",
                    c.creation_bucket_secs
                ),
            ));
        }
        positive("cluster.min_synchrony", c.min_synchrony)?;
        positive(
            "cluster.min_accounts_per_network",
            c.min_accounts_per_network,
        )?;
        positive("cluster.sync_bin_secs", c.sync_bin_secs as f64)?;
        positive("cluster.horizon_secs", c.horizon_secs as f64)?;
        for (key, v) in [
            ("cluster.min_members_payment", c.min_members_payment),
            ("cluster.min_members_device", c.min_members_device),
            ("cluster.min_members_ip", c.min_members_ip),
            ("cluster.min_members_ip_prefix", c.min_members_ip_prefix),
            (
                "cluster.min_members_email_domain",
                c.min_members_email_domain,
            ),
            ("cluster.min_members_template", c.min_members_template),
            ("cluster.min_members_creation", c.min_members_creation),
            ("cluster.min_members_asn", c.min_members_asn),
            ("cluster.min_cluster_size", c.min_cluster_size),
            ("cluster.crowd_min_accounts", c.crowd_min_accounts),
        ] {
            if v < 2 {
                return Err(invalid(key, format!("{v} must be at least 2")));
            }
        }
        for k in &c.link_kinds {
            if crate::state::attribute::AttrKind::from_name(k).is_none() {
                return Err(invalid(
                    "cluster.link_kinds",
                    format!("unknown kind `{k}`; use ip, ip_prefix, device_fingerprint, payment_fingerprint, email_domain or prompt_template"),
                ));
            }
        }
        let a = &self.alerts;
        share("alerts.throttle_score", a.throttle_score)?;
        share("alerts.suspend_score", a.suspend_score)?;
        if a.suspend_score < a.throttle_score {
            return Err(invalid(
                "alerts.suspend_score",
                "must be at least alerts.throttle_score",
            ));
        }
        if a.example_events > 20 {
            return Err(invalid("alerts.example_events", "must be at most 20"));
        }
        for (key, cap) in [
            (
                "alerts.max_suspend_per_hour_bulk",
                a.max_suspend_per_hour_bulk,
            ),
            (
                "alerts.max_suspend_per_hour_cluster",
                a.max_suspend_per_hour_cluster,
            ),
        ] {
            if a.max_suspend_per_hour != 0 && cap > a.max_suspend_per_hour {
                return Err(invalid(
                    key,
                    format!(
                        "{cap} is above alerts.max_suspend_per_hour ({}) and would never apply; lower it or raise the total",
                        a.max_suspend_per_hour
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The static allowlist, with its expiries parsed.
    fn check_allowlist(&self) -> Result<Vec<Allow>, ConfigError> {
        let mut allowlist = Vec::with_capacity(self.allowlist.len());
        for (i, entry) in self.allowlist.iter().enumerate() {
            let key = format!("allowlist[{i}]");
            if entry.account.is_some() == entry.org.is_some() {
                return Err(invalid(&key, "set exactly one of `account` or `org`"));
            }
            if entry.reason.trim().is_empty() {
                return Err(invalid(
                    &format!("{key}.reason"),
                    "say why the entry exists",
                ));
            }
            let expires_ms = parse_rfc3339_ms(&entry.expires).ok_or_else(|| {
                invalid(
                    &format!("{key}.expires"),
                    format!(
                        "`{}` is not RFC 3339, e.g. 2027-01-31T00:00:00Z",
                        entry.expires
                    ),
                )
            })?;
            allowlist.push(Allow {
                account: entry.account.clone(),
                org: entry.org.clone(),
                reason: entry.reason.clone(),
                expires_ms,
            });
        }
        Ok(allowlist)
    }

    /// Topics, formats and librdkafka properties.
    fn check_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        for (key, v) in [
            ("kafka.brokers", &k.brokers),
            ("kafka.group_id", &k.group_id),
            ("kafka.input_topic", &k.input_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.control_topic", &k.control_topic),
            ("kafka.verdicts_topic", &k.verdicts_topic),
            ("kafka.observations_topic", &k.observations_topic),
            ("kafka.links_topic", &k.links_topic),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        if k.dlq_topic == k.input_topic || k.alerts_topic == k.input_topic {
            return Err(invalid(
                "kafka.dlq_topic",
                "the alerts and dead-letter topics must differ from kafka.input_topic",
            ));
        }
        let topics = [
            &k.input_topic,
            &k.alerts_topic,
            &k.dlq_topic,
            &k.control_topic,
            &k.verdicts_topic,
            &k.observations_topic,
            &k.links_topic,
        ];
        if (1..topics.len()).any(|i| topics[..i].contains(&topics[i])) {
            return Err(invalid(
                "kafka.control_topic",
                "the input, alerts, dead-letter, control, verdicts, observations and links \
                 topics must all differ",
            ));
        }
        if k.link_shards == 0 || k.link_shards > 64 {
            return Err(invalid("kafka.link_shards", "must be between 1 and 64"));
        }
        if k.link_shard >= k.link_shards {
            return Err(invalid(
                "kafka.link_shard",
                "must be below kafka.link_shards (shards count from 0)",
            ));
        }
        if k.role == StageRole::Cluster && k.link_shards == 1 {
            return Err(invalid(
                "kafka.role",
                "a cluster instance reads the link shards' records: with kafka.link_shards 1 \
                 the one link instance assembles clusters itself",
            ));
        }
        if self.verdicts.remember_alerts == 0 || self.verdicts.remember_alerts > 10_000_000 {
            return Err(invalid(
                "verdicts.remember_alerts",
                "must be between 1 and 10000000",
            ));
        }
        if k.idle_partition_ms > 60_000 {
            return Err(invalid(
                "kafka.idle_partition_ms",
                "must be at most 60000: a silent partition delays alerts by up to this much",
            ));
        }
        if k.rebuild_secs > self.engine.account_idle_secs {
            return Err(invalid(
                "kafka.rebuild_secs",
                "must be at most engine.account_idle_secs (state older than that is forgotten anyway)",
            ));
        }
        for (table, props) in [
            ("kafka.properties", &k.properties),
            ("kafka.consumer_properties", &k.consumer_properties),
            ("kafka.producer_properties", &k.producer_properties),
        ] {
            for name in props.keys() {
                if RESERVED_KAFKA_PROPERTIES.contains(&name.as_str()) {
                    return Err(invalid(
                        &format!("{table}.\"{name}\""),
                        "is set by distillguard (its delivery guarantees depend on it); use the [kafka] keys instead",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The service process.
    fn check_service(&self) -> Result<(), ConfigError> {
        let sv = &self.service;
        if sv.metrics_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "service.metrics_addr",
                format!("`{}` is not an address like 0.0.0.0:9477", sv.metrics_addr),
            ));
        }
        if sv.shutdown_deadline_secs == 0 || sv.shutdown_deadline_secs > 25 {
            return Err(invalid(
                "service.shutdown_deadline_secs",
                "must be between 1 and 25 (Kubernetes kills a pod 30 s after SIGTERM by default)",
            ));
        }
        if !(100..=20_000).contains(&sv.statistics_interval_ms) {
            return Err(invalid(
                "service.statistics_interval_ms",
                "must be between 100 and 20000 (lag gauges not refreshed for a minute disappear)",
            ));
        }
        if sv.max_pending_deliveries < 100 {
            return Err(invalid(
                "service.max_pending_deliveries",
                "must be at least 100",
            ));
        }
        Ok(())
    }

    /// The documented default configuration file (`deploy/distillguard.toml`).
    pub fn default_toml() -> &'static str {
        DEFAULT_TOML
    }
}

/// Prefix of environment overrides: `DISTILLGUARD__KAFKA__BROKERS=host:9092` sets
/// `kafka.brokers`.
pub const ENV_PREFIX: &str = "DISTILLGUARD__";

/// Applies environment overrides to the parsed file. A value is read as a TOML value
/// (`10`, `true`, `["a", "b"]`) and otherwise taken as a string. In the passthrough tables
/// (`kafka.properties`, ...) the key's `_` stand for `.`: `DISTILLGUARD__KAFKA__PROPERTIES__SECURITY_PROTOCOL`
/// sets `security.protocol`.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| invalid("<defaults>", format!("cannot render the defaults: {e}")))?;
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let unknown = || {
            invalid(
                &var,
                format!(
                    "names no configuration key (`{}`); see `distillguard config --print-default`",
                    path.join(".")
                ),
            )
        };
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.clone())),
            Err(_) => toml::Value::String(raw.clone()),
        };
        match path.as_slice() {
            [section, table_name, prop]
                if section == "kafka" && table_name.ends_with("properties") =>
            {
                if !defaults
                    .get("kafka")
                    .and_then(|k| k.get(table_name.as_str()))
                    .is_some_and(|t| t.is_table())
                {
                    return Err(unknown());
                }
                let kafka = table
                    .entry("kafka")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let props = kafka
                    .as_table_mut()
                    .ok_or_else(unknown)?
                    .entry(table_name.as_str())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                props
                    .as_table_mut()
                    .ok_or_else(unknown)?
                    .insert(prop.replace('_', "."), toml::Value::String(raw.clone()));
            }
            [section, key] => {
                if defaults
                    .get(section.as_str())
                    .and_then(|s| s.get(key.as_str()))
                    .is_none()
                {
                    return Err(unknown());
                }
                table
                    .entry(section.as_str())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(unknown)?
                    .insert(key.clone(), value);
            }
            _ => return Err(unknown()),
        }
    }
    Ok(())
}

/// Kept equal to `Config::default()` by a test.
const DEFAULT_TOML: &str = include_str!("../deploy/distillguard.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let text = Config::default_toml();
        let parsed = Config::from_toml(text).expect("default file parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("defaults validate");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[bulk]\nmin_requets_fresh = 3\n").expect_err("typo");
        assert!(err.to_string().contains("min_requets_fresh"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let c = Config::from_toml("[cluster]\nmax_org_share = 1.5\n").expect("parses");
        let err = c.validate().expect_err("out of range");
        assert!(err.to_string().contains("cluster.max_org_share"), "{err}");
        for secs in [0, 90, 420, 1800] {
            let c = Config::from_toml(&format!("[cluster]\ncreation_bucket_secs = {secs}\n"))
                .expect("parses");
            let err = c
                .validate()
                .expect_err("not a window that divides the hour");
            assert!(
                err.to_string().contains("cluster.creation_bucket_secs"),
                "{err}"
            );
        }
        for secs in [60, 300, 600, 900] {
            let c = Config::from_toml(&format!("[cluster]\ncreation_bucket_secs = {secs}\n"))
                .expect("parses");
            c.validate().expect("a window that divides the hour");
        }
        let c = Config::from_toml(
            "[[allowlist]]\naccount = \"a\"\nreason = \"x\"\nexpires = \"soon\"\n",
        )
        .expect("parses");
        let err = c.validate().expect_err("bad expiry");
        assert!(err.to_string().contains("allowlist[0].expires"), "{err}");
    }

    #[test]
    fn config_hash_changes_with_config() {
        let a = Config::default().validate().expect("valid").hash;
        let mut c = Config::default();
        c.bulk.alert_score = 0.7;
        assert_ne!(a, c.validate().expect("valid").hash);
        let mut c = Config::default();
        c.alerts.max_suspend_per_hour_cluster = 7;
        assert_ne!(
            a,
            c.validate().expect("valid").hash,
            "the valve decides alerts too"
        );
    }

    #[test]
    fn closed_sets_and_suspend_caps_are_checked_by_key() {
        let err = Config::from_toml("[kafka]\ninput_format = \"xml\"\n").expect_err("format");
        assert!(err.to_string().contains("input_format"), "{err}");
        let err = Config::load_with_env(
            None,
            env(&[("DISTILLGUARD__KAFKA__AUTO_OFFSET_RESET", "soon")]),
        )
        .expect_err("reset");
        assert!(err.to_string().contains("kafka.auto_offset_reset"), "{err}");
        let c = Config::from_toml("[kafka]\nalerts_format = \"json\"\n").expect("parses");
        assert_eq!(c.kafka.alerts_format, Format::Json);
        let err = Config::from_toml("[alerts]\nmax_suspend_per_hour = -1\n").expect_err("u32");
        assert!(
            err.to_string().contains("max_suspend_per_hour = -1"),
            "{err}"
        );
        let c = Config::from_toml(
            "[alerts]\nmax_suspend_per_hour = 5\nmax_suspend_per_hour_bulk = 10\n",
        )
        .expect("parses");
        let err = c.validate().expect_err("never applies");
        assert!(
            err.to_string().contains("alerts.max_suspend_per_hour_bulk"),
            "{err}"
        );
        let c = Config::from_toml(
            "[alerts]\nmax_suspend_per_hour = 0\nmax_suspend_per_hour_bulk = 10\n",
        )
        .expect("parses");
        c.validate().expect("a kind cap under no total cap");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"g\"\n",
        )
        .expect("write");
        let c = Config::load_with_env(
            Some(&path),
            env(&[
                ("DISTILLGUARD__KAFKA__BROKERS", "env:9092"),
                ("DISTILLGUARD__SERVICE__SHUTDOWN_DEADLINE_SECS", "5"),
                (
                    "DISTILLGUARD__KAFKA__PROPERTIES__SECURITY_PROTOCOL",
                    "SASL_SSL",
                ),
                ("OTHER", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.kafka.brokers, "env:9092");
        assert_eq!(c.kafka.group_id, "g");
        assert_eq!(c.service.shutdown_deadline_secs, 5);
        assert_eq!(
            c.kafka
                .properties
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );
        c.validate().expect("valid");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let err = Config::load_with_env(None, env(&[("DISTILLGUARD__KAFKA__BROKRES", "x")]))
            .expect_err("typo");
        assert!(
            err.to_string().contains("DISTILLGUARD__KAFKA__BROKRES"),
            "{err}"
        );
        let err = Config::load_with_env(
            None,
            env(&[("DISTILLGUARD__SERVICE__SHUTDOWN_DEADLINE_SECS", "soon")]),
        )
        .expect_err("not a number");
        assert!(err.to_string().contains("shutdown_deadline_secs"), "{err}");
    }

    #[test]
    fn reserved_kafka_properties_are_rejected() {
        let c = Config::from_toml(
            "[kafka.consumer_properties]\n\"enable.auto.offset.store\" = \"true\"\n",
        )
        .expect("parses");
        let err = c.validate().expect_err("reserved");
        assert!(
            err.to_string().contains("enable.auto.offset.store"),
            "{err}"
        );
    }

    #[test]
    fn detector_version_ignores_transport_settings() {
        let a = Config::default().validate().expect("valid").hash;
        let mut c = Config::default();
        c.kafka.brokers = "elsewhere:9092".into();
        assert_eq!(a, c.validate().expect("valid").hash);
    }
}
