//! Records that break the service itself. A panic costs one record (dead-lettered as
//! internal_error); an uncatchable fault (here an abort injected with the test-only
//! `DISTILLGUARD_DEBUG_FAULT`) kills the process, but not in a loop: the crash-loop guard
//! names the record after the second death and the third run dead-letters it as
//! poison_record and goes on.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use common::free_addr;
use common::kafka::*;

const MARK: &str = "POISON-RECORD-MARKER";

fn start(
    brokers: &str,
    group: &str,
    fault: &str,
    marker: &std::path::Path,
    log: &std::path::Path,
    addr: SocketAddr,
    config: &std::path::Path,
) -> Child {
    common::service(brokers, group, addr, log)
        .args(["--config", config.to_str().expect("utf-8 path")])
        .env("DISTILLGUARD__SERVICE__CRASH_MARKER", marker)
        .env("DISTILLGUARD_DEBUG_FAULT", fault)
        .spawn()
        .expect("service starts")
}

/// 2,000 valid events, the marked one, 2,000 more.
fn records() -> Vec<(String, Vec<u8>)> {
    (0..4_001)
        .map(|i| {
            let extra = if i == 2_000 {
                format!(r#","note":"{MARK}""#)
            } else {
                String::new()
            };
            let line = format!(
                r#"{{"event_id":"e{i}","ts":{},"account_id":"acct-{}"{extra}}}"#,
                1_793_577_601_000i64 + i64::from(i) * 100,
                i % 50
            );
            (format!("acct-{}", i % 50), line.into_bytes())
        })
        .collect()
}

fn sigterm(child: &mut Child) -> bool {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_for(Duration::from_secs(15), || {
        child.try_wait().ok().flatten().is_some()
    }) && child.wait().is_ok_and(|s| s.success())
}

/// Runs the service until it has committed everything (then SIGTERM) or died, restarting it
/// after each death. Returns the number of deaths and the last life's metrics.
fn run_until_done(
    brokers: &str,
    group: &str,
    fault: &str,
    dir: &std::path::Path,
) -> (usize, String, String) {
    let marker = dir.join("marker");
    // A dead member holds its partitions until its session expires; the next life waits for
    // that, so keep it short (the librdkafka default is 45 s per death).
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n",
    )
    .expect("config file");
    let ends = log_ends(brokers, 1);
    let mut deaths = 0;
    for life in 0..5 {
        let addr = free_addr();
        let log = dir.join(format!("{group}-{life}.log"));
        let mut child = start(brokers, group, fault, &marker, &log, addr, &config);
        let mut last = String::new();
        let done = wait_for(Duration::from_secs(120), || {
            // The service may die mid-request (that is the point of the fault).
            if let Ok((_, s)) = try_http_get(&addr, "/metrics") {
                last = s;
            }
            child.try_wait().ok().flatten().is_some() || committed(brokers, group, 1) == ends
        });
        assert!(done, "life {life} neither died nor finished");
        if let Some(status) = child.try_wait().ok().flatten() {
            assert!(!status.success(), "life {life} exited on its own");
            deaths += 1;
            continue;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(sigterm(&mut child), "clean exit on SIGTERM:\n{text}");
        return (
            deaths,
            last,
            std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }
    panic!("still dying after {deaths} restarts: a crash loop");
}

fn dead_letters(brokers: &str) -> Vec<Record> {
    read_topic(brokers, DLQ, usize::MAX, Duration::from_secs(3))
}

#[test]
fn a_record_that_aborts_the_process_is_dead_lettered_after_two_deaths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mock(1);
    let recs = records();
    produce(&m.brokers, INPUT, &recs);
    let (deaths, metrics, log) = run_until_done(
        &m.brokers,
        "g-poison-abort",
        &format!("abort:{MARK}"),
        dir.path(),
    );
    assert_eq!(
        deaths, 2,
        "the first death is unattributed, the second names the record"
    );
    assert_eq!(
        metric(&metrics, "distillguard_poison_records_skipped_total", ""),
        1.0,
        "log:\n{log}"
    );
    assert!(
        log.contains("poison record dead-lettered unread"),
        "log:\n{log}"
    );
    let dlq = dead_letters(&m.brokers);
    assert_eq!(
        dlq.len(),
        1,
        "only the poison record is dead-lettered: {dlq:?}"
    );
    let r = &dlq[0];
    assert_eq!(r.headers["distillguard.reason"], "poison_record");
    assert_eq!(r.headers["distillguard.source.offset"], "2000");
    assert_eq!(r.payload, recs[2_000].1, "its original bytes");
    assert_eq!(
        committed(&m.brokers, "g-poison-abort", 1),
        log_ends(&m.brokers, 1)
    );
}

#[test]
fn a_record_that_panics_is_dead_lettered_and_the_partition_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mock(1);
    let recs = records();
    produce(&m.brokers, INPUT, &recs);
    let (deaths, metrics, log) = run_until_done(
        &m.brokers,
        "g-poison-panic",
        &format!("panic:{MARK}"),
        dir.path(),
    );
    assert_eq!(deaths, 0, "a panic is caught; log:\n{log}");
    let dlq = dead_letters(&m.brokers);
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let r = &dlq[0];
    assert_eq!(r.headers["distillguard.reason"], "internal_error");
    assert!(
        r.headers["distillguard.error"].contains("injected panic"),
        "the panic message: {:?}",
        r.headers
    );
    assert_eq!(r.payload, recs[2_000].1);
    assert_eq!(
        metric(
            &metrics,
            "distillguard_malformed_events_total",
            "reason=\"internal_error\""
        ),
        1.0
    );
}
