//! Metrics and health: every metric the service exports is declared here, with help text,
//! base units and explicit histogram buckets, and served on `/metrics` next to `/healthz` and
//! `/readyz`.
//!
//! No label ever takes an account id or any other unbounded value: labels are results,
//! reasons, kinds, severities, topics and partition numbers.

pub mod server;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use server::serve;

/// Events read, by `result`: ok, duplicate, late, out_of_range, malformed.
pub const EVENTS: &str = "distillguard_events_total";
/// Malformed records, by decode `reason`.
pub const MALFORMED: &str = "distillguard_malformed_events_total";
/// Alerts delivered to the alerts topic, by `kind` and `severity`.
pub const ALERTS: &str = "distillguard_alerts_total";
/// Alerts the engine decided but the service did not send, by `reason`: catchup (already
/// emitted before a restart or rebalance), allowlist.
pub const ALERTS_SUPPRESSED: &str = "distillguard_alerts_suppressed_total";
/// `suspend` alerts the safety valve downgraded to `throttle` (`alerts.max_suspend_per_hour*`),
/// by `kind`.
pub const ALERTS_RATE_LIMITED: &str = "distillguard_alerts_rate_limited_total";
/// Score of each delivered alert, by `kind`.
pub const ALERT_SCORE: &str = "distillguard_alert_score";
/// Decode plus engine time per event (sampled 1 in 32).
pub const PROCESSING: &str = "distillguard_processing_seconds";
/// From the input record's Kafka timestamp to the delivery report of the alert it caused.
pub const EVENT_TO_ALERT: &str = "distillguard_event_to_alert_seconds";
/// Consumer lag per owned partition, from librdkafka statistics, by `topic` and `partition`.
pub const CONSUMER_LAG: &str = "distillguard_consumer_lag_messages";
/// Partitions of the input topic this instance owns.
pub const ASSIGNED_PARTITIONS: &str = "distillguard_assigned_partitions";
/// Rebalance callbacks, by `kind`: assign, revoke.
pub const REBALANCES: &str = "distillguard_rebalances_total";
/// Failed deliveries (each is retried), by `destination`: alerts, dlq, observations, control.
pub const PRODUCER_ERRORS: &str = "distillguard_producer_errors_total";
/// Producers replaced after a fatal error; the records pending on one are re-sent.
pub const PRODUCER_RESTARTS: &str = "distillguard_producer_restarts_total";
/// Poison records dead-lettered unread: an earlier run died on them (see `kafka::guard`).
pub const POISON_SKIPPED: &str = "distillguard_poison_records_skipped_total";
/// Records written to the dead-letter topic (delivered).
pub const DLQ_MESSAGES: &str = "distillguard_dlq_messages_total";
/// Alerts and DLQ records waiting for a delivery report.
pub const PENDING_DELIVERIES: &str = "distillguard_pending_deliveries";
/// Offset commits, by `result`: ok, error.
pub const COMMITS: &str = "distillguard_offset_commits_total";
/// Errors reported by the Kafka clients (connection loss, broker down, ...).
pub const KAFKA_ERRORS: &str = "distillguard_kafka_errors_total";
/// Tracked accounts in the engine.
pub const TRACKED_ACCOUNTS: &str = "distillguard_tracked_accounts";
/// Tracked attribute values (IPs, prefixes, fingerprints, templates).
pub const TRACKED_ATTRIBUTE_VALUES: &str = "distillguard_tracked_attribute_values";
/// Clusters being tracked.
pub const TRACKED_CLUSTERS: &str = "distillguard_tracked_clusters";
/// State evicted at the hard caps, by `state`: accounts, attribute_values.
pub const EVICTIONS: &str = "distillguard_evictions_total";
/// State that expired after idling out of the window, by `state`.
pub const EXPIRATIONS: &str = "distillguard_expirations_total";
/// Records re-read to rebuild window state after a start or rebalance.
pub const CATCHUP_EVENTS: &str = "distillguard_catchup_events_total";
/// Records still to re-read before live processing resumes.
pub const CATCHUP_REMAINING: &str = "distillguard_catchup_remaining_messages";
/// Wall-clock seconds the last rebuild took.
pub const CATCHUP_DURATION: &str = "distillguard_catchup_duration_seconds";
/// 1 when the instance owns partitions and has caught up on all of them.
pub const READY: &str = "distillguard_ready";
/// The staged topology's link shard count (`kafka.link_shards`), as every account, link and
/// cluster instance sees it (0 with role `all`, which has no link stage): what the link-stage
/// alert compares the ready link instances with.
pub const LINK_SHARDS: &str = "distillguard_link_shards";
/// Newest event time processed, seconds since the epoch.
pub const WATERMARK: &str = "distillguard_event_time_watermark_seconds";
/// Live allowlist entries in force (from the control topic, by wall clock).
pub const ALLOWLIST_LIVE_ENTRIES: &str = "distillguard_allowlist_live_entries";
/// Records read from the control and verdicts topics, by `topic` (control, verdicts) and
/// `result` (applied, removed, malformed).
pub const CONTROL_RECORDS: &str = "distillguard_control_records_total";
/// Analysts' verdicts on alerts, by the alert's `kind` and `severity` (or unknown) and `verdict`.
pub const ALERT_VERDICTS: &str = "distillguard_alert_verdicts_total";
/// Constant 1, labelled with `version`, `detector_version` and the stage `role` (a link
/// instance's also with `link_shard` and `link_shards`).
pub const BUILD_INFO: &str = "distillguard_build_info";

const PROCESSING_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2,
];
const EVENT_TO_ALERT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const SCORE_BUCKETS: &[f64] = &[0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];
const CATCHUP_BUCKETS: &[f64] = &[0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Every metric name the service exports (besides the `process_*` family), for tests and the
/// deploy drift check.
pub const ALL: &[&str] = &[
    EVENTS,
    MALFORMED,
    ALERTS,
    ALERTS_SUPPRESSED,
    ALERTS_RATE_LIMITED,
    ALERT_SCORE,
    PROCESSING,
    EVENT_TO_ALERT,
    CONSUMER_LAG,
    ASSIGNED_PARTITIONS,
    REBALANCES,
    PRODUCER_ERRORS,
    PRODUCER_RESTARTS,
    DLQ_MESSAGES,
    POISON_SKIPPED,
    PENDING_DELIVERIES,
    COMMITS,
    KAFKA_ERRORS,
    TRACKED_ACCOUNTS,
    TRACKED_ATTRIBUTE_VALUES,
    TRACKED_CLUSTERS,
    EVICTIONS,
    EXPIRATIONS,
    CATCHUP_EVENTS,
    CATCHUP_REMAINING,
    CATCHUP_DURATION,
    READY,
    LINK_SHARDS,
    WATERMARK,
    ALLOWLIST_LIVE_ENTRIES,
    CONTROL_RECORDS,
    ALERT_VERDICTS,
    BUILD_INFO,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once (later calls return the same handle) and
/// describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Gauges not set for a minute disappear: the lag of a partition this instance no
            // longer owns must not linger. Every other gauge is refreshed each second.
            let builder = PrometheusBuilder::new().idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(std::time::Duration::from_secs(60)),
            );
            let builder = [
                (PROCESSING, PROCESSING_BUCKETS),
                (EVENT_TO_ALERT, EVENT_TO_ALERT_BUCKETS),
                (ALERT_SCORE, SCORE_BUCKETS),
                (CATCHUP_DURATION, CATCHUP_BUCKETS),
            ]
            .into_iter()
            .fold(builder, |b, (name, buckets)| {
                b.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
                    .expect("bucket lists are non-empty constants")
            });
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (e.g. by an embedding program): keep ours
                // local so /metrics still renders.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

/// Sets `distillguard_build_info` (1) labelled with the version, the detector version and the
/// stage role this instance runs (`kafka.role`), so dashboards can group instances by stage.
pub fn build_info(role: &'static str) {
    metrics::gauge!(BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "detector_version" => crate::engine::DETECTOR_VERSION,
        "role" => role)
    .set(1.0);
}

/// [`build_info`] for the stage `k` configures (a link instance's with its shard).
pub fn stage_info(k: &crate::config::KafkaConfig) {
    let shards = if k.role == crate::config::StageRole::All {
        0
    } else {
        k.link_shards
    };
    metrics::gauge!(LINK_SHARDS).set(f64::from(shards));
    if k.role == crate::config::StageRole::Link {
        build_info_link(k.link_shard, k.link_shards);
    } else {
        build_info(k.role.as_str());
    }
}

/// [`build_info`] of a `link` instance, with its shard and the shard count
/// (`kafka.link_shard`, `kafka.link_shards`): two instances of one shard split it.
pub fn build_info_link(shard: u32, shards: u32) {
    metrics::gauge!(BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "detector_version" => crate::engine::DETECTOR_VERSION,
        "role" => "link",
        "link_shard" => shard.to_string(),
        "link_shards" => shards.to_string())
    .set(1.0);
}

fn describe() {
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Input records read, by result: ok, duplicate, late, out_of_range, malformed."
    );
    describe_counter!(
        MALFORMED,
        Unit::Count,
        "Malformed input records (sent to the dead-letter topic), by decode reason."
    );
    describe_counter!(
        ALERTS,
        Unit::Count,
        "Alerts delivered to the alerts topic, by kind and severity."
    );
    describe_counter!(ALERTS_SUPPRESSED, Unit::Count, "Alerts decided but not sent, by reason: catchup (already emitted before a restart or rebalance), allowlist.");
    describe_counter!(ALERTS_RATE_LIMITED, Unit::Count, "Alerts recommending suspend that the safety valve (alerts.max_suspend_per_hour*) sent as throttle instead, by kind.");
    describe_histogram!(
        ALERT_SCORE,
        Unit::Count,
        "Score in [0, 1] of each delivered alert, by kind."
    );
    describe_histogram!(
        PROCESSING,
        Unit::Seconds,
        "Decode and engine time per input record, in seconds (sampled 1 in 32)."
    );
    describe_histogram!(EVENT_TO_ALERT, Unit::Seconds, "Seconds from the Kafka timestamp of the record that caused an alert to the alert's delivery report.");
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Consumer lag in messages per owned input partition, from librdkafka statistics."
    );
    describe_gauge!(
        ASSIGNED_PARTITIONS,
        Unit::Count,
        "Input partitions this instance owns."
    );
    describe_counter!(
        REBALANCES,
        Unit::Count,
        "Consumer group rebalance callbacks, by kind: assign, revoke."
    );
    describe_counter!(
        PRODUCER_ERRORS,
        Unit::Count,
        "Failed deliveries, each retried until it succeeds, by destination: alerts, dlq, observations, control."
    );
    describe_counter!(
        PRODUCER_RESTARTS,
        Unit::Count,
        "Producers replaced after a fatal error (an idempotent producer fenced or with a sequence gap); every record pending on one is re-sent on the new one."
    );
    describe_counter!(
        DLQ_MESSAGES,
        Unit::Count,
        "Records delivered to the dead-letter topic."
    );
    describe_counter!(
        POISON_SKIPPED,
        Unit::Count,
        "Input records dead-lettered unread (reason poison_record) because an earlier run of the service died while handling them."
    );
    describe_gauge!(
        PENDING_DELIVERIES,
        Unit::Count,
        "Alerts and dead-letter records waiting for a delivery report."
    );
    describe_counter!(
        COMMITS,
        Unit::Count,
        "Synchronous offset commits (revoke, shutdown), by result: ok, error."
    );
    describe_counter!(
        KAFKA_ERRORS,
        Unit::Count,
        "Errors reported by the Kafka clients (broker down, connection lost, ...)."
    );
    describe_gauge!(
        TRACKED_ACCOUNTS,
        Unit::Count,
        "Accounts held in the engine's windows."
    );
    describe_gauge!(TRACKED_ATTRIBUTE_VALUES, Unit::Count, "Shared attribute values (IPs, prefixes, fingerprints, templates) held in the engine's index.");
    describe_gauge!(
        TRACKED_CLUSTERS,
        Unit::Count,
        "Account clusters being tracked."
    );
    describe_counter!(
        EVICTIONS,
        Unit::Count,
        "State evicted at the configured hard caps, by state: accounts, attribute_values."
    );
    describe_counter!(
        EXPIRATIONS,
        Unit::Count,
        "State expired after idling out of the window, by state: accounts, attribute_values."
    );
    describe_counter!(
        CATCHUP_EVENTS,
        Unit::Count,
        "Records re-read to rebuild window state after a start or a rebalance."
    );
    describe_gauge!(
        CATCHUP_REMAINING,
        Unit::Count,
        "Records still to re-read before live processing resumes."
    );
    describe_histogram!(
        CATCHUP_DURATION,
        Unit::Seconds,
        "Wall-clock seconds each rebuild of window state took."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 when the instance owns partitions and has caught up on all of them, else 0."
    );
    describe_gauge!(
        LINK_SHARDS,
        Unit::Count,
        "Link shards of the staged topology (kafka.link_shards); 0 with kafka.role all, which has no link stage."
    );
    describe_gauge!(
        WATERMARK,
        Unit::Seconds,
        "Newest event time processed, in seconds since the Unix epoch."
    );
    describe_gauge!(
        ALLOWLIST_LIVE_ENTRIES,
        Unit::Count,
        "Live allowlist entries (control topic) in force now; the static [[allowlist]] is not counted."
    );
    describe_counter!(
        CONTROL_RECORDS,
        Unit::Count,
        "Records read from the control and verdicts topics, by topic and result: applied, removed (tombstone), malformed (sent to the dead-letter topic)."
    );
    describe_counter!(
        ALERT_VERDICTS,
        Unit::Count,
        "Analysts' verdicts on alerts, by the alert's kind and severity (unknown when not remembered) and verdict: confirmed, false_positive, unsure."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Constant 1, labelled with the build version, detector version and stage role (kafka.role); a link instance's also with its link_shard and link_shards."
    );
}

/// Liveness and readiness, shared between the consumer thread and the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Wall-clock ms of the consumer loop's last turn.
    heartbeat_ms: AtomicI64,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn beat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Live while the consumer loop has turned within `stall_ms`.
    pub fn is_live(&self, stall_ms: i64) -> bool {
        now_ms() - self.heartbeat_ms.load(Ordering::Relaxed) <= stall_ms
    }
}

/// Wall-clock milliseconds since the epoch (service loop only; the engine uses event time).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
