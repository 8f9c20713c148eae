//! Shared helpers for the integration tests: run the real binary on real files.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_distillguard"))
}

/// A free local address, for a service's metrics endpoint.
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `distillguard run` against `brokers` in consumer group `group`: JSON in and out, from the
/// earliest offset, metrics on `addr`, logging at info into `log`, with a crash-loop marker of
/// its own beside the log (processes of one group on one host must not share one). Callers
/// add their arguments and environment, then spawn it.
pub fn service(brokers: &str, group: &str, addr: SocketAddr, log: &Path) -> Command {
    let mut c = bin();
    c.args([
        "run",
        "--brokers",
        brokers,
        "--group-id",
        group,
        "--input-format",
        "json",
        "--alerts-format",
        "json",
        "--metrics-addr",
        &addr.to_string(),
    ])
    .env("DISTILLGUARD__KAFKA__AUTO_OFFSET_RESET", "earliest")
    .env(
        "DISTILLGUARD__SERVICE__CRASH_MARKER",
        log.with_extension("marker"),
    )
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).expect("log file"));
    c
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("distillguard runs")
}

pub fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "distillguard {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A small labelled simulation: (events, labels).
pub fn simulate(dir: &Path, seed: u64, scale: f64, hours: f64) -> (PathBuf, PathBuf) {
    let events = path(dir, &format!("events-{seed}.jsonl"));
    let labels = path(dir, &format!("labels-{seed}.jsonl"));
    ok(&[
        "simulate",
        "--seed",
        &seed.to_string(),
        "--scale",
        &scale.to_string(),
        "--hours",
        &hours.to_string(),
        "--output",
        s(&events),
        "--labels",
        s(&labels),
    ]);
    (events, labels)
}

/// The replay summary printed on stderr (last line, JSON).
pub fn summary(out: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("summary line");
    serde_json::from_str(line).expect("summary is JSON")
}
pub mod kafka;
