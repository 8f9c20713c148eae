//! A second instance joins the consumer group and leaves again (cooperative rebalances):
//! no input is lost, and every account `replay` flags is still alerted.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::kafka::*;
use distillguard::kafka::Service;

const GROUP: &str = "g-rebalance";
const PARTS: i32 = 4;

async fn all_committed(brokers: &str) -> bool {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let ends = log_ends(&brokers, PARTS);
        wait_for(Duration::from_secs(120), || {
            committed(&brokers, GROUP, PARTS) == ends
        })
    })
    .await
    .expect("wait")
}

async fn until(what: impl Fn() -> bool) -> bool {
    for _ in 0..1200 {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_join_and_leave_without_losing_input_or_detections() {
    let m = mock(PARTS);
    let (lines, _) = traffic("attacks", 9, 0.1, 0.5);
    let mut c = config(&m.brokers, GROUP);
    // The mock coordinator waits a session timeout for members to rejoin; keep it short.
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer_properties.insert(k.into(), v.into());
    }
    let cfg = valid(c);
    let expected = replay_alerts(&lines, cfg.clone());
    let third = lines.len() / 3;

    produce(&m.brokers, INPUT, &lines[..third]);
    let a = Service::start(cfg.clone()).await.expect("a starts");
    assert!(until(|| a.is_ready()).await, "a ready");
    assert!(
        all_committed(&m.brokers).await,
        "first third committed by a"
    );

    let b = Service::start(cfg.clone()).await.expect("b starts");
    assert!(
        until(|| b.is_ready()).await,
        "b joins and is assigned partitions"
    );
    produce(&m.brokers, INPUT, &lines[third..2 * third]);
    assert!(until(|| a.is_ready() && b.is_ready()).await, "both ready");
    assert!(
        all_committed(&m.brokers).await,
        "second third committed by a and b"
    );

    b.shutdown().await.expect("b leaves cleanly");
    produce(&m.brokers, INPUT, &lines[2 * third..]);
    assert!(
        all_committed(&m.brokers).await,
        "last third committed by a alone"
    );
    assert!(until(|| a.is_ready()).await, "a ready again");
    a.shutdown().await.expect("a stops cleanly");

    let got = all_alerts(&m.brokers).await;
    let flagged: BTreeSet<&str> = got
        .iter()
        .flat_map(|a| a.accounts.iter().map(String::as_str))
        .collect();
    let want: BTreeSet<&str> = expected
        .iter()
        .flat_map(|a| a.accounts.iter().map(String::as_str))
        .collect();
    let missed: Vec<&&str> = want.difference(&flagged).collect();
    assert!(
        missed.is_empty(),
        "accounts replay flags but the group did not: {missed:?}"
    );
    let extra: Vec<&&str> = flagged.difference(&want).collect();
    assert!(
        extra.is_empty(),
        "accounts flagged only under rebalancing: {extra:?}"
    );
}
