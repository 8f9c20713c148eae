//! `distillguard replay` as a user runs it: real files, real binary.

mod common;

use common::{ok, path, run, s, simulate, summary};

#[test]
fn replay_is_deterministic_and_catches_attacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, labels) = simulate(dir.path(), 5, 0.2, 2.0);
    let a = path(dir.path(), "a.jsonl");
    let b = path(dir.path(), "b.jsonl");
    ok(&["replay", "--input", s(&events), "--output", s(&a)]);
    ok(&["replay", "--input", s(&events), "--output", s(&b)]);
    let first = std::fs::read(&a).expect("alerts");
    assert!(!first.is_empty(), "simulated attacks raise alerts");
    assert_eq!(
        first,
        std::fs::read(&b).expect("alerts"),
        "byte-identical replays"
    );

    // Every line is a contract alert.
    for line in String::from_utf8(first).expect("utf-8").lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        for key in [
            "alert_id",
            "kind",
            "subject",
            "accounts",
            "severity",
            "score",
            "recommended_action",
            "detected_at",
            "window_start",
            "window_end",
            "evidence",
            "detector_version",
        ] {
            assert!(v.get(key).is_some(), "alert lacks {key}: {line}");
        }
        assert!(["bulk_extraction", "fake_account_cluster"]
            .contains(&v["kind"].as_str().expect("kind")));
    }

    // Scoring as a user would, with bars a small run can hold (the quality bars proper live
    // in benches/quality.sh and CI, over many seeds).
    let out = ok(&[
        "eval",
        "--alerts",
        s(&a),
        "--labels",
        s(&labels),
        "--min-precision",
        "0.95",
        "--min-recall",
        "0.8",
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("precision"), "{report}");
    let out = ok(&["eval", "--alerts", s(&a), "--labels", s(&labels), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert!(
        v["true_positives"].as_u64().expect("tp") > 0,
        "attackers named"
    );
}

#[test]
fn detects_without_prompt_text_from_upstream_simhashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = path(dir.path(), "events.jsonl");
    let labels = path(dir.path(), "labels.jsonl");
    ok(&[
        "simulate",
        "--seed",
        "9",
        "--scale",
        "0.2",
        "--hours",
        "2",
        "--prompts",
        "simhash",
        "--output",
        s(&events),
        "--labels",
        s(&labels),
    ]);
    let text = std::fs::read_to_string(&events).expect("events");
    assert!(!text.contains("prompt_text") && text.contains("prompt_simhash"));
    let alerts = path(dir.path(), "alerts.jsonl");
    ok(&["replay", "--input", s(&events), "--output", s(&alerts)]);
    // Without prompt text reasoning is unknown and templates are coarse: recall is lower.
    let out = ok(&[
        "eval",
        "--alerts",
        s(&alerts),
        "--labels",
        s(&labels),
        "--json",
        "--min-precision",
        "0.95",
        "--min-recall",
        "0.4",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert!(
        v["true_positives"].as_u64().expect("tp") > 0,
        "attackers named"
    );
}

#[test]
fn prompt_text_is_never_emitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = path(dir.path(), "in.jsonl");
    let mut lines = String::new();
    for i in 0..400 {
        lines.push_str(&format!(
            r#"{{"event_id":"e{i}","ts":{},"account_id":"acct_secret","account_created_at":"2026-11-01T00:00:00Z","input_tokens":100,"output_tokens":2000,"prompt_text":"ZEBRA-CANARY-{i} solve this and think step by step"}}"#,
            1_793_577_600_000i64 + i * 2_000
        ));
        lines.push('\n');
    }
    std::fs::write(&input, lines).expect("write");
    let out = path(dir.path(), "out.jsonl");
    let res = ok(&["replay", "--input", s(&input), "--output", s(&out)]);
    let alerts = std::fs::read_to_string(&out).expect("alerts");
    assert!(alerts.contains("bulk_extraction"), "a harvester is flagged");
    assert!(
        !alerts.contains("ZEBRA-CANARY"),
        "prompt text leaked into alerts"
    );
    assert!(
        !String::from_utf8_lossy(&res.stderr).contains("ZEBRA-CANARY"),
        "prompt text leaked into logs"
    );
}

#[test]
fn bad_input_is_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = path(dir.path(), "bad.jsonl");
    let good = r#"{"event_id":"ok1","ts":"2026-11-02T00:00:00Z","account_id":"a"}"#;
    let mut data = Vec::new();
    for l in [
        good,
        "{not json",
        r#"{"ts":"2026-11-02T00:00:00Z","account_id":"a"}"#,
        r#"{"event_id":"x","ts":"yesterday","account_id":"a"}"#,
        r#"{"event_id":"y","ts":1793577600000,"account_id":"a","output_tokens":-3}"#,
        r#"{"event_id":"z","ts":1793577600000,"account_id":"a","input_tokens":1e300}"#,
        "",
        r#"{"event_id":"ok1","ts":"2026-11-02T00:00:00Z","account_id":"a"}"#,
    ] {
        data.extend_from_slice(l.as_bytes());
        data.push(b'\n');
    }
    // A 10 MB prompt, then binary garbage, then a last line without a newline.
    data.extend_from_slice(
        br#"{"event_id":"big","ts":1793577600000,"account_id":"a","prompt_text":""#,
    );
    data.extend(std::iter::repeat_n(b'x', 10 << 20));
    data.extend_from_slice(b"\"}\n");
    data.extend_from_slice(&[0xff, 0x00, 0xfe, b'\n']);
    data.extend_from_slice(br#"{"event_id":"ok2","ts":"2026-11-02T00:00:01Z","account_id":"b"}"#);
    std::fs::write(&input, data).expect("write");

    let out = path(dir.path(), "out.jsonl");
    let res = ok(&["replay", "--input", s(&input), "--output", s(&out)]);
    let sum = summary(&res);
    assert_eq!(sum["outcomes"]["ok"], 2, "{sum}");
    assert_eq!(sum["outcomes"]["duplicate"], 1, "{sum}");
    let rejected = &sum["rejected"];
    assert_eq!(rejected["invalid_json"], 3, "{sum}"); // garbage, broken, 1e300 is not an integer
    assert_eq!(rejected["missing_field"], 1, "{sum}");
    assert_eq!(rejected["bad_timestamp"], 1, "{sum}");
    assert_eq!(rejected["negative_value"], 1, "{sum}");
    assert_eq!(rejected["too_long"], 1, "{sum}");
}

#[test]
fn stdin_and_stdout_work() {
    use std::io::Write;
    let mut child = common::bin()
        .args(["replay", "--input", "-", "--output", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..300 {
        writeln!(
            stdin,
            r#"{{"event_id":"e{i}","ts":{},"account_id":"acct_x","input_tokens":50,"output_tokens":1500,"conversation_turns":1,"prompt_text":"Explain step by step: problem {i}"}}"#,
            1_793_577_600_000i64 + i * 1_000
        )
        .expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.lines().any(|l| l.contains("\"subject\":\"acct_x\"")),
        "{text}"
    );
}

#[test]
fn invalid_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = path(dir.path(), "bad.toml");
    std::fs::write(&cfg, "[cluster]\nmin_member_purity = 7\n").expect("write");
    let res = run(&[
        "replay",
        "--input",
        "-",
        "--output",
        "-",
        "--config",
        s(&cfg),
    ]);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("cluster.min_member_purity"), "{err}");

    std::fs::write(&cfg, "[bulk]\nunknown_key = 1\n").expect("write");
    let res = run(&["config", "--check", s(&cfg)]);
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("unknown_key"));

    let res = ok(&["config", "--print-default"]);
    let default = path(dir.path(), "default.toml");
    std::fs::write(&default, &res.stdout).expect("write");
    ok(&["config", "--check", s(&default)]);
}
