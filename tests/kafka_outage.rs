//! The broker holding the alerts topic goes down for longer than the producer's message
//! timeout and comes back: the service recovers without a restart, every alert arrives, and
//! input offsets wait for them.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::*;
use distillguard::kafka::Service;
use rdkafka::mocking::{MockCluster, MockCoordinator};

const GROUP: &str = "g-outage";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_survive_a_broker_outage_longer_than_the_message_timeout() {
    // Two brokers: input and the group on broker 1, alerts and dead letters on broker 2.
    let cluster = MockCluster::new(2).expect("mock cluster");
    cluster.create_topic(INPUT, 2, 1).expect("input");
    cluster.create_topic(ALERTS, 1, 1).expect("alerts");
    cluster.create_topic(DLQ, 1, 1).expect("dlq");
    for p in 0..2 {
        cluster.partition_leader(INPUT, p, Some(1)).expect("leader");
    }
    cluster
        .partition_leader(ALERTS, 0, Some(2))
        .expect("leader");
    cluster.partition_leader(DLQ, 0, Some(2)).expect("leader");
    cluster
        .coordinator(MockCoordinator::Group(GROUP.into()), 1)
        .expect("coordinator");
    let brokers = cluster.bootstrap_servers();

    let (lines, _) = traffic("attacks", 4, 0.05, 0.5);
    let mut c = config(&brokers, GROUP);
    c.kafka
        .producer_properties
        .insert("message.timeout.ms".into(), "1500".into());
    let cfg = valid(c);
    let expected = replay_alerts(&lines, cfg.clone());
    assert!(!expected.is_empty());

    cluster.broker_down(2).expect("alerts broker down");
    produce(&brokers, INPUT, &lines);
    let svc = Service::start(cfg).await.expect("service starts");
    // Every event is processed while alerts cannot be delivered...
    let addr = svc.metrics_addr;
    let n = lines.len() as f64;
    let (processed, errors) = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        let processed = wait_for(Duration::from_secs(60), || {
            s = http_get(&addr, "/metrics").1;
            metric(&s, "distillguard_events_total", "result=\"ok\"") >= n
        });
        // ...and deliveries time out (1.5 s) and are retried.
        let errors = wait_for(Duration::from_secs(30), || {
            s = http_get(&addr, "/metrics").1;
            metric(
                &s,
                "distillguard_producer_errors_total",
                "destination=\"alerts\"",
            ) > 0.0
        });
        (processed, errors)
    })
    .await
    .expect("scrape");
    assert!(
        processed,
        "input keeps flowing while the alerts broker is down"
    );
    assert!(errors, "deliveries failed past the message timeout");
    let b = brokers.clone();
    let held = committed(&b, GROUP, 2);
    let ends = log_ends(&b, 2);
    assert_ne!(held, ends, "offsets wait for undelivered alerts");

    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(2).expect("alerts broker up");
    let b = brokers.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(120), || committed(&b, GROUP, 2) == ends)
    })
    .await
    .expect("wait");
    assert!(
        recovered,
        "all input committed after recovery, without a restart"
    );
    svc.shutdown().await.expect("clean shutdown");

    let b = brokers.clone();
    let got = tokio::task::spawn_blocking(move || {
        alerts_of(&read_topic(&b, ALERTS, usize::MAX, Duration::from_secs(3)))
    })
    .await
    .expect("read");
    let got: BTreeSet<String> = got.into_iter().map(|a| a.alert_id).collect();
    let want: BTreeSet<String> = expected.into_iter().map(|a| a.alert_id).collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(missing.is_empty(), "alerts lost in the outage: {missing:?}");
}
