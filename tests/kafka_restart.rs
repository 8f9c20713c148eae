//! Kill the service (SIGKILL, the real binary) mid-stream and start it again: it rebuilds its
//! windows from the input, every alert `replay` gives for the whole stream still arrives
//! exactly once, and committed input is not processed live a second time.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use common::free_addr;
use common::kafka::*;

fn start(brokers: &str, addr: SocketAddr, log: &std::path::Path) -> Child {
    common::service(brokers, "g-restart", addr, log)
        .env("DISTILLGUARD__SERVICE__STATISTICS_INTERVAL_MS", "500")
        // One marker for both lives, as a restarted pod keeps its own.
        .env(
            "DISTILLGUARD__SERVICE__CRASH_MARKER",
            log.with_file_name("crash.marker"),
        )
        .spawn()
        .expect("service starts")
}

fn scrape(addr: &SocketAddr) -> String {
    // The service is killed and restarted under the scraper: a failed request is no sample.
    try_http_get(addr, "/metrics").map_or_else(|_| String::new(), |(_, body)| body)
}

#[test]
fn killed_and_restarted_service_loses_no_detection_and_skips_committed_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mock(4);
    let (lines, _) = traffic("attacks", 5, 0.1, 0.5);
    let expected = replay_alerts(&lines, valid(config(&m.brokers, "replay")));
    let half = lines.len() / 2;
    produce(&m.brokers, INPUT, &lines[..half]);

    // First life: process the first half, let its offsets be committed, then SIGKILL.
    let a1 = free_addr();
    let log1 = dir.path().join("run1.log");
    let mut run1 = start(&m.brokers, a1, &log1);
    let ends = log_ends(&m.brokers, 4);
    let committed_all = wait_for(Duration::from_secs(120), || {
        committed(&m.brokers, "g-restart", 4) == ends
    });
    let first_ok = metric(&scrape(&a1), "distillguard_events_total", "result=\"ok\"");
    run1.kill().expect("SIGKILL");
    run1.wait().expect("reaped");
    assert!(
        committed_all,
        "first half committed; log:\n{}",
        std::fs::read_to_string(&log1).unwrap_or_default()
    );
    assert_eq!(
        first_ok as usize, half,
        "first life processed the first half"
    );
    let committed_at_kill: i64 = committed(&m.brokers, "g-restart", 4).values().sum();

    // Second life: the rest of the stream arrives while it is down.
    produce(&m.brokers, INPUT, &lines[half..]);
    let a2 = free_addr();
    let log2 = dir.path().join("run2.log");
    let mut run2 = start(&m.brokers, a2, &log2);
    let total = lines.len() as f64;
    let live_target = total - committed_at_kill as f64;
    let done = wait_for(Duration::from_secs(120), || {
        metric(&scrape(&a2), "distillguard_events_total", "result=\"ok\"") >= live_target
    });
    let ends = log_ends(&m.brokers, 4);
    let committed_all = wait_for(Duration::from_secs(30), || {
        committed(&m.brokers, "g-restart", 4) == ends
    });
    let s2 = scrape(&a2);
    // SIGTERM: drain, commit, exit 0.
    let pid = run2.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let exited = wait_for(Duration::from_secs(15), || {
        run2.try_wait().ok().flatten().is_some()
    });
    let log = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(done && committed_all, "second life caught up; log:\n{log}");
    assert!(exited, "exits within the deadline");
    assert!(
        run2.wait().expect("status").success(),
        "exit 0 on SIGTERM; log:\n{log}"
    );

    assert_eq!(
        metric(&s2, "distillguard_events_total", "result=\"ok\""),
        live_target,
        "only uncommitted input is processed live after the restart"
    );
    assert_eq!(
        metric(&s2, "distillguard_catchup_events_total", ""),
        committed_at_kill as f64,
        "committed input is re-read once, to rebuild the windows; log:\n{log}"
    );

    let got = alerts_of(&read_topic(
        &m.brokers,
        ALERTS,
        usize::MAX,
        Duration::from_secs(3),
    ));
    let ids: Vec<&str> = got.iter().map(|a| a.alert_id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no alert sent twice");
    let want: BTreeSet<&str> = expected.iter().map(|a| a.alert_id.as_str()).collect();
    assert_eq!(
        unique, want,
        "exactly replay's alerts over the whole stream"
    );
}
