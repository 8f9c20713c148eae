//! The staged topology on librdkafka's mock cluster: `account` instances in one consumer
//! group on the input topic hand their observations to a `link` instance over the internal
//! observations topic, or to link shards whose link records a `cluster` instance assembles,
//! and together they flag what `replay` flags, clusters whole.

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
    staged("g-staged", false, PARTITIONS, 1).await;
}

/// Input on 12 partitions, 3 `account` instances, 3 link shards (each reading its own
/// observations topic) and 1 `cluster` instance reading the links topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_link_shard_and_cluster_instances_flag_what_replay_flags() {
    staged("g-shards", false, 12, 3).await;
}

/// The link instance runs from the start while the account instances, joining one by one and
/// rebuilding as partitions move, race through an hour of backlog minutes of event time apart:
/// their progress records hold the link's merge back to the slowest of them, so that it
/// takes every observation in event-time order, as when it starts after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_instance_running_through_the_account_stages_backlog_flags_the_same() {
    staged("g-concurrent", true, PARTITIONS, 1).await;
}

/// With `shards` above 1, one link instance per shard and a cluster instance, which start
/// first if `link_first`.
async fn staged(group: &str, link_first: bool, partitions: i32, shards: u32) {
    let _one = exclusive().await;
    let m = mock(partitions);
    let observations: Vec<String> = if shards > 1 {
        (0..shards).map(|s| format!("{OBSERVATIONS}-{s}")).collect()
    } else {
        vec![OBSERVATIONS.to_string()]
    };
    for topic in &observations {
        m.cluster
            .create_topic(topic, partitions, 1)
            .expect("observations topic");
    }
    m.cluster
        .create_topic(LINKS, shards as i32, 1)
        .expect("links topic");
    let (lines, labels) = traffic("all", 4, 0.15, 1.0);
    let base = config(&m.brokers, group);
    let expected = replay_alerts(&lines, valid(base.clone()));
    produce(&m.brokers, INPUT, &lines);

    let mut base = base;
    base.kafka.link_shards = shards;
    let mut account = base.clone();
    account.kafka.role = StageRole::Account;
    // The link side: one link instance, or a link instance per shard and a cluster instance.
    let mut links = Vec::new();
    for s in 0..shards {
        let mut link = base.clone();
        link.kafka.role = StageRole::Link;
        link.kafka.link_shard = s;
        links.push(link);
    }
    if shards > 1 {
        let mut cluster = base.clone();
        cluster.kafka.role = StageRole::Cluster;
        links.push(cluster);
    }
    let mut services = Vec::new();
    if link_first {
        for l in &links {
            services.push(
                Service::start(valid(l.clone()))
                    .await
                    .expect("link-side instance starts"),
            );
        }
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
        let ends = log_ends(&brokers, partitions);
        wait_for(Duration::from_secs(120), || {
            committed(&brokers, &g, partitions) == ends
        })
    })
    .await
    .expect("wait");
    if !link_first {
        for l in links {
            services.push(
                Service::start(valid(l))
                    .await
                    .expect("link-side instance starts"),
            );
        }
    }
    // Each link instance commits its observations once its link records are delivered, then
    // the cluster instance commits the links.
    let brokers = m.brokers.clone();
    let (g, topics) = (group.to_string(), observations.clone());
    let links_done = tokio::task::spawn_blocking(move || {
        let mut done = true;
        for (s, topic) in topics.iter().enumerate() {
            let g = if shards > 1 {
                format!("{g}-link-{s}")
            } else {
                format!("{g}-link")
            };
            let obs = log_ends_on(&brokers, topic, partitions);
            done &= wait_for(Duration::from_secs(120), || {
                reached(&committed_on(&brokers, &g, topic, partitions), &obs)
            });
        }
        if shards > 1 {
            let g = format!("{g}-cluster");
            let ends = log_ends_on(&brokers, LINKS, shards as i32);
            done &= wait_for(Duration::from_secs(120), || {
                reached(&committed_on(&brokers, &g, LINKS, shards as i32), &ends)
            });
        }
        done
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
    assert!(
        links_done,
        "the link stage took every observation in, and the cluster stage every link record"
    );
    let brokers = m.brokers.clone();
    let topics = observations.clone();
    let (observations, records) = tokio::task::spawn_blocking(move || {
        let mut n = (0, 0);
        for topic in &topics {
            let (e, r) = observed_events_on(&brokers, topic, partitions);
            n = (n.0 + e, n.1 + r);
        }
        n
    })
    .await
    .expect("reader");
    // Each event's observation goes to every shard that must see it: most go to all.
    assert!(
        observations >= lines.len(),
        "one observation per event at least ({observations} for {})",
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
