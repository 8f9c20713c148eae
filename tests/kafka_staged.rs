//! The staged topology on librdkafka's mock cluster: `account` instances in one consumer
//! group on the input topic hand their observations to a `link` instance over the internal
//! observations topic, and together they flag what `replay` flags, clusters whole.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::kafka::*;
use distillguard::alert::{Alert, Kind};
use distillguard::config::StageRole;
use distillguard::kafka::Service;

// The mock broker keeps about 5 MB per partition: the traffic is spread thin enough that
// nothing is truncated before the service reads it.
const PARTITIONS: i32 = 8;

/// Attack accounts named in cluster alerts, and the cluster subjects naming each account.
fn clusters(alerts: &[Alert]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_account: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in alerts.iter().filter(|a| a.kind == Kind::FakeAccountCluster) {
        for acc in &a.accounts {
            by_account
                .entry(acc.clone())
                .or_default()
                .insert(a.subject.clone());
        }
    }
    by_account
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_and_link_instances_flag_what_replay_flags_with_clusters_whole() {
    staged("g-staged", false).await;
}

/// The link instance runs from the start while the account instances, joining one by one and
/// rebuilding as partitions move, race through an hour of backlog minutes of event time apart:
/// their progress records hold the link's merge back to the slowest of them, so that it
/// takes every observation in event-time order, as when it starts after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_instance_running_through_the_account_stages_backlog_flags_the_same() {
    staged("g-concurrent", true).await;
}

async fn staged(group: &str, link_first: bool) {
    let _one = exclusive().await;
    let m = mock(PARTITIONS);
    m.cluster
        .create_topic(OBSERVATIONS, PARTITIONS, 1)
        .expect("observations topic");
    let (lines, labels) = traffic("all", 4, 0.15, 1.0);
    let base = config(&m.brokers, group);
    let expected = replay_alerts(&lines, valid(base.clone()));
    produce(&m.brokers, INPUT, &lines);

    let mut account = base.clone();
    account.kafka.role = StageRole::Account;
    let mut link = base.clone();
    link.kafka.role = StageRole::Link;
    let mut services = Vec::new();
    if link_first {
        services.push(
            Service::start(valid(link.clone()))
                .await
                .expect("link instance starts"),
        );
    }
    for _ in 0..3 {
        services.push(
            Service::start(valid(account.clone()))
                .await
                .expect("account instance starts"),
        );
    }
    // The account stage commits its input once the observations are delivered.
    let brokers = m.brokers.clone();
    let g = group.to_string();
    let accounts_done = tokio::task::spawn_blocking(move || {
        let ends = log_ends(&brokers, PARTITIONS);
        wait_for(Duration::from_secs(120), || {
            committed(&brokers, &g, PARTITIONS) == ends
        })
    })
    .await
    .expect("wait");
    if !link_first {
        services.push(
            Service::start(valid(link))
                .await
                .expect("link instance starts"),
        );
    }
    let brokers = m.brokers.clone();
    let g = format!("{group}-link");
    let links_done = tokio::task::spawn_blocking(move || {
        let obs = log_ends_on(&brokers, OBSERVATIONS, PARTITIONS);
        wait_for(Duration::from_secs(120), || {
            reached(&committed_on(&brokers, &g, OBSERVATIONS, PARTITIONS), &obs)
        })
    })
    .await
    .expect("wait");
    let got = all_alerts(&m.brokers).await;
    // All at once: one by one, each leaving hands its partitions to the others mid-drain.
    let stopping: Vec<_> = services
        .into_iter()
        .map(|s| tokio::spawn(s.shutdown()))
        .collect();
    for s in stopping {
        s.await.expect("joined").expect("clean shutdown");
    }
    assert!(accounts_done, "the account stage took everything in");
    assert!(links_done, "the link stage took every observation in");
    let brokers = m.brokers.clone();
    let (observations, records) =
        tokio::task::spawn_blocking(move || observed_events(&brokers, PARTITIONS))
            .await
            .expect("reader");
    assert!(
        observations >= lines.len(),
        "one observation per event ({observations} for {})",
        lines.len()
    );
    let want = distillguard::eval::evaluate(&expected, &labels);
    let have = distillguard::eval::evaluate(&got, &labels);
    let (r1, r) = (want.recall.expect("attacks"), have.recall.expect("attacks"));
    let (p1, p) = (
        want.precision.expect("flags"),
        have.precision.expect("flags"),
    );
    eprintln!(
        "replay: recall {r1:.3} precision {p1:.3}; staged: recall {r:.3} precision {p:.3}; \
         {observations} observations in {records} records for {} events",
        lines.len()
    );
    assert!(r >= r1 - 0.01, "recall {r1:.3} in replay, {r:.3} staged");
    assert!(
        p >= p1 - 0.005,
        "precision {p1:.3} in replay, {p:.3} staged"
    );
    let (whole, named) = (clusters(&expected), clusters(&got));
    assert!(!whole.is_empty(), "the traffic should hold clusters");
    assert!(
        named.len() as f64 >= 0.99 * whole.len() as f64,
        "{} accounts in cluster alerts, replay {}",
        named.len(),
        whole.len()
    );
    // A cluster that merges into an older one is alerted under the older subject from then
    // on, in one process too; the stages must not add subjects of their own.
    let subjects = |c: &BTreeMap<String, BTreeSet<String>>| {
        c.values().flatten().collect::<BTreeSet<_>>().len()
    };
    assert!(
        subjects(&named) <= subjects(&whole),
        "{} cluster subjects, replay {}",
        subjects(&named),
        subjects(&whole)
    );
    let several =
        |c: &BTreeMap<String, BTreeSet<String>>| c.values().filter(|s| s.len() > 1).count();
    assert!(
        several(&named) <= several(&whole),
        "{} accounts under several subjects, replay {}",
        several(&named),
        several(&whole)
    );
}
