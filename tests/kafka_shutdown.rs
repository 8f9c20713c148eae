//! SIGTERM while the group rebalances (the real binary, two instances on the mock cluster):
//! the instance told to stop drains, commits and exits 0 within
//! `service.shutdown_deadline_secs`, whatever point of the rebalance the signal lands on; alone
//! in its group, it commits every offset it processed before it leaves.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use common::free_addr;
use common::kafka::*;

fn start(brokers: &str, group: &str, addr: SocketAddr, log: &std::path::Path) -> Child {
    common::service(brokers, group, addr, log)
        // No periodic commit: what is committed at the end is the shutdown's.
        .env(
            "DISTILLGUARD__KAFKA__CONSUMER_PROPERTIES__AUTO_COMMIT_INTERVAL_MS",
            "600000",
        )
        .env("DISTILLGUARD__SERVICE__SHUTDOWN_DEADLINE_SECS", "10")
        .spawn()
        .expect("service starts")
}

fn term(c: &Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .expect("kill -TERM");
}

fn ready(addr: &SocketAddr) -> bool {
    try_http_get(addr, "/readyz").is_ok_and(|(s, _)| s == 200)
}

#[test]
fn sigterm_during_a_rebalance_exits_cleanly_within_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = mock(8);
    let (lines, _) = traffic("attacks", 3, 0.1, 0.5);
    produce(&m.brokers, INPUT, &lines);
    let ends = log_ends(&m.brokers, 8);

    // Alone in its group: SIGTERM commits where it stands and leaves.
    let addr = free_addr();
    let log = dir.path().join("alone.log");
    let mut alone = start(&m.brokers, "g-shutdown-alone", addr, &log);
    let processed = wait_for(Duration::from_secs(60), || {
        try_http_get(&addr, "/metrics").is_ok_and(|(_, body)| {
            metric(&body, "distillguard_events_total", "") >= lines.len() as f64
        })
    });
    term(&alone);
    let status = alone.wait().expect("reaped");
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(processed && status.success(), "exit 0; log:\n{log}");
    assert!(
        !log.contains(" ERROR "),
        "a clean stop logs no error; log:\n{log}"
    );
    assert_eq!(
        committed(&m.brokers, "g-shutdown-alone", 8),
        ends,
        "the shutdown committed every processed offset; log:\n{log}"
    );

    // The signal lands at several points of the second member's join.
    for (round, delay_ms) in [0u64, 200, 600, 1500, 3000, 4500].into_iter().enumerate() {
        let group = format!("g-shutdown-{round}");
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let a_log = dir.path().join(format!("a{round}.log"));
        let b_log = dir.path().join(format!("b{round}.log"));
        let mut a = start(&m.brokers, &group, a_addr, &a_log);
        assert!(
            wait_for(Duration::from_secs(60), || ready(&a_addr)),
            "first member ready"
        );
        let mut b = start(&m.brokers, &group, b_addr, &b_log);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let t0 = Instant::now();
        term(&a);
        let exited = wait_for(Duration::from_secs(20), || {
            a.try_wait().ok().flatten().is_some()
        });
        let took = t0.elapsed();
        let log = std::fs::read_to_string(&a_log).unwrap_or_default();
        if !exited {
            let _ = a.kill();
        }
        let status = a.wait().expect("reaped");
        term(&b);
        if !wait_for(Duration::from_secs(20), || {
            b.try_wait().ok().flatten().is_some()
        }) {
            let _ = b.kill();
        }
        let _ = b.wait();
        eprintln!(
            "round {round}: signal {delay_ms} ms into the join, exit {status} after {took:?}"
        );
        assert!(
            exited && took <= Duration::from_secs(11),
            "round {round}: exits within the deadline (took {took:?}); log:\n{log}"
        );
        assert!(
            status.success(),
            "round {round}: exit 0 on SIGTERM; log:\n{log}"
        );
        assert!(
            !log.contains(" ERROR "),
            "round {round}: a clean stop logs no error; log:\n{log}"
        );
    }
}
