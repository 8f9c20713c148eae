//! Hostile input, through both paths: every case goes through `replay` (the real binary, one
//! line on stdin) and through the Kafka service (librdkafka's mock cluster), and both give the
//! same verdict: the same rejection reason, or accepted. The partition keeps flowing (a valid
//! record after the cases is processed and everything is committed), and memory stays bounded.
//!
//! Protobuf cases go through the service with protobuf input and must get the decoder's own
//! verdict (`replay` reads JSON only). The 1 GiB line goes through `replay` only, streamed on
//! stdin; no broker takes a message that size, so on Kafka the case is a record just over the
//! longest one decoded (`MAX_RECORD_BYTES`, rejected unparsed as too_long).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::kafka::*;
use distillguard::event::decode::MAX_RECORD_BYTES;
use distillguard::event::Decoder;
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use distillguard::kafka::Service;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const OK: &str = "ok";

fn event(id: &str, extra: &str) -> Vec<u8> {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{{"event_id":"{id}","ts":1793577601000,"account_id":"a-{id}"{sep}{extra}}}"#)
        .into_bytes()
}

fn nest(open: &str, inner: &str, close: &str, depth: usize) -> String {
    let mut s = String::with_capacity((open.len() + close.len()) * depth + inner.len());
    for _ in 0..depth {
        s.push_str(open);
    }
    s.push_str(inner);
    for _ in 0..depth {
        s.push_str(close);
    }
    s
}

/// (name, bytes) of every JSON case. None contains a newline (replay reads lines).
fn json_cases() -> Vec<(String, Vec<u8>)> {
    let mut c: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, b: Vec<u8>| c.push((name.to_string(), b));
    add("valid", event("valid", ""));
    for d in [1_000, 10_000, 100_000, 1_000_000] {
        add(&format!("arrays_{d}"), nest("[", "", "]", d).into_bytes());
        add(
            &format!("field_arrays_{d}"),
            event(
                &format!("fa{d}"),
                &format!(r#""x":{}"#, nest("[", "", "]", d)),
            ),
        );
    }
    for d in [1_000, 10_000, 50_000, 100_000] {
        add(
            &format!("objects_{d}"),
            nest(r#"{"a":"#, "1", "}", d).into_bytes(),
        );
    }
    add(
        "field_objects_10000",
        event(
            "fo",
            &format!(r#""x":{}"#, nest(r#"{"a":"#, "1", "}", 10_000)),
        ),
    );
    add(
        "brackets_in_a_string",
        event("bs", &format!(r#""x":"{}""#, "[{".repeat(100_000))),
    );
    let digits = "9".repeat(400);
    add(
        "digits_400_ts",
        format!(r#"{{"event_id":"d","ts":{digits},"account_id":"a"}}"#).into_bytes(),
    );
    add(
        "digits_400_tokens",
        event("dt", &format!(r#""input_tokens":{digits}"#)),
    );
    add(
        "digits_400_unknown",
        event("du", &format!(r#""x":-{digits}.{digits}e-{digits}"#)),
    );
    for (name, num) in [
        ("exp", "1e5"),
        ("exp_big", "1E+400"),
        ("neg_zero", "-0"),
        ("neg_zero_float", "-0.0"),
        ("nan", "NaN"),
        ("infinity", "Infinity"),
    ] {
        add(
            &format!("tokens_{name}"),
            event(&format!("n{name}"), &format!(r#""output_tokens":{num}"#)),
        );
        add(
            &format!("unknown_{name}"),
            event(&format!("u{name}"), &format!(r#""x":{num}"#)),
        );
    }
    add(
        "key_1mb",
        event("k1", &format!(r#""{}":1"#, "k".repeat(1 << 20))),
    );
    add(
        "duplicate_unknown_keys_100000",
        event("dk", &vec![r#""x":1"#; 100_000].join(",")),
    );
    add(
        "duplicate_known_keys_100000",
        format!(
            r#"{{{}"event_id":"dd","account_id":"a"}}"#,
            r#""ts":1,"#.repeat(100_000)
        )
        .into_bytes(),
    );
    for (name, bad) in [
        ("continuation", &b"\x80"[..]),
        ("overlong", b"\xc0\x80"),
        ("overlong3", b"\xe0\x80\xaf"),
        ("surrogate", b"\xed\xa0\x80"),
        ("above_max", b"\xf4\x90\x80\x80"),
        ("truncated2", b"\xc3"),
        ("truncated3", b"\xe2\x82"),
        ("truncated4", b"\xf0\x9f\x98"),
        ("fe", b"\xfe"),
        ("ff", b"\xff"),
    ] {
        let mut v =
            br#"{"event_id":"e","ts":1793577601000,"account_id":"a","prompt_text":"x"#.to_vec();
        v.extend_from_slice(bad);
        v.extend_from_slice(br#"y"}"#);
        add(&format!("utf8_{name}_in_prompt"), v);
        let mut k = br#"{"event_id":"e","ts":1793577601000,"account_id":"a",""#.to_vec();
        k.extend_from_slice(bad);
        k.extend_from_slice(br#"":1}"#);
        add(&format!("utf8_{name}_in_key"), k);
    }
    for (name, esc) in [
        ("lone_high", r"\ud800"),
        ("lone_low", r"\udc00"),
        ("high_high", r"\ud800\ud800"),
        ("nul", r"\u0000"),
        ("truncated_u", r"\u12"),
        ("bad_escape", r"\q"),
    ] {
        add(
            &format!("escape_{name}_in_prompt"),
            event(&format!("p{name}"), &format!(r#""prompt_text":"a{esc}""#)),
        );
        add(
            &format!("escape_{name}_in_id"),
            format!(r#"{{"event_id":"i{esc}","ts":1793577601000,"account_id":"a"}}"#).into_bytes(),
        );
    }
    add("truncated_escape_at_end", br#"{"event_id":"e\"#.to_vec());
    let mut nul = event("nul", r#""prompt_text":"a"#);
    nul.truncate(nul.len() - 2);
    nul.extend_from_slice(b"\x00b\"}");
    add("nul_byte_in_string", nul);
    let mut nul2 = event("nul2", "");
    nul2.insert(nul2.len() - 1, 0);
    add("nul_byte_outside", nul2);
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend(event("bom", ""));
    add("bom", bom);
    let mut crlf = event("crlf", "");
    crlf.push(b'\r');
    add("crlf", crlf);
    add(
        "long_prompt_ok",
        event("lp", &format!(r#""prompt_text":"{}""#, "y".repeat(1 << 19))),
    );
    let over = MAX_RECORD_BYTES + 1024;
    add(
        "record_over_the_limit",
        event("over", &format!(r#""prompt_text":"{}""#, "y".repeat(over))),
    );
    for (name, b) in &c {
        assert!(!b.contains(&b'\n'), "{name} holds a newline");
    }
    c
}

fn proto_cases() -> Vec<(String, Vec<u8>)> {
    use prost::Message;
    let good = distillguard::proto::RequestEvent {
        event_id: "pb".into(),
        ts: Some(prost_types::Timestamp {
            seconds: 1_793_577_601,
            nanos: 0,
        }),
        account_id: "a".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let with = |extra: &[u8]| {
        let mut v = good.clone();
        v.extend_from_slice(extra);
        v
    };
    let groups = |n: usize| {
        let mut b = Vec::new();
        for _ in 0..n {
            b.extend([0x9b, 0x06]);
        }
        for _ in 0..n {
            b.extend([0x9c, 0x06]);
        }
        b
    };
    let mut c = vec![
        ("pb_valid".to_string(), good.clone()),
        // event_id with a length of 2^31
        (
            "pb_length_2_31".into(),
            vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x08, b'a', b'b'],
        ),
        // an unknown length-delimited field of 2^31 bytes
        (
            "pb_unknown_length_2_31".into(),
            with(&[0x92, 0x06, 0x80, 0x80, 0x80, 0x80, 0x08, 1, 2, 3]),
        ),
        (
            "pb_unknown_fields".into(),
            with(&[0x98, 0x06, 5, 0x92, 0x06, 2, b'x', b'y']),
        ),
        ("pb_unterminated_group".into(), with(&[0x9b, 0x06])),
        (
            "pb_varint_overflow".into(),
            with(&[
                0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ]),
        ),
        ("pb_json_bytes".into(), event("pj", "")),
    ];
    for n in [100, 101, 1_000, 100_000, 1_000_000] {
        c.push((format!("pb_groups_{n}"), with(&groups(n))));
    }
    c
}

/// Replay's verdict on one line (streamed on stdin) and its peak RSS in KiB.
fn replay_verdict(line: &mut dyn FnMut(&mut dyn Write)) -> (String, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("alerts.jsonl");
    let mut child = common::bin()
        .args(["replay", "--input", "-", "--output", common::s(&out)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replay starts");
    let pid = child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            // VmHWM until the process is gone: its peak resident set.
            while let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kb) = s
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                {
                    peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        line(&mut stdin);
        stdin.write_all(b"\n").expect("newline");
        stdin.flush().expect("flush");
    }
    let output = child.wait_with_output().expect("replay ends");
    let _ = watcher.join();
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = common::summary(&output);
    let rejected = summary["rejected"].as_object().expect("rejected map");
    assert_eq!(summary["lines"], 1, "one line: {summary}");
    let verdict = match rejected.keys().next() {
        Some(reason) => reason.clone(),
        None => OK.to_string(),
    };
    (verdict, peak.load(std::sync::atomic::Ordering::Relaxed))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn big_producer(brokers: &str) -> ThreadedProducer<rdkafka::producer::DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.max.bytes", "8000000")
        .create()
        .expect("producer")
}

/// Runs `cases` (then one valid record per partition) through the service and returns each
/// case's verdict: the DLQ reason, or ok.
async fn service_verdicts(
    cases: &[(String, Vec<u8>)],
    input_format: &str,
    group: &str,
) -> BTreeMap<String, String> {
    const PARTS: i32 = 16;
    // The mock broker keeps about 5 MB per partition: spread the dead letters (several of
    // them 1 MB) over many.
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(INPUT, PARTS, 1).expect("input topic");
    cluster.create_topic(ALERTS, 1, 1).expect("alerts topic");
    cluster.create_topic(DLQ, 32, 1).expect("dlq topic");
    let m = Mock {
        brokers: cluster.bootstrap_servers(),
        cluster,
    };
    let p = big_producer(&m.brokers);
    let mut tail = Vec::new();
    for part in 0..PARTS {
        let id = format!("tail-{part}");
        let bytes = if input_format == "json" {
            event(&id, "")
        } else {
            use prost::Message;
            distillguard::proto::RequestEvent {
                event_id: id.clone(),
                ts: Some(prost_types::Timestamp {
                    seconds: 1_793_577_602,
                    nanos: 0,
                }),
                account_id: "tail".into(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        tail.push((part, id, bytes));
    }
    let records = cases
        .iter()
        .enumerate()
        .map(|(i, (name, b))| (i as i32 % PARTS, name.clone(), b.clone()))
        .chain(tail);
    for (part, key, payload) in records {
        let mut rec = BaseRecord::to(INPUT)
            .partition(part)
            .key(key.as_bytes())
            .payload(&payload);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => panic!("{key}: cannot produce: {e}"),
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(&m.brokers, group);
    c.kafka.input_format = if input_format == "json" {
        distillguard::config::Format::Json
    } else {
        distillguard::config::Format::Protobuf
    };
    c.service.crash_marker = dir.path().join("marker").display().to_string();
    let before = scrape_now();
    let svc = Service::start(valid(c)).await.expect("service starts");
    let brokers = m.brokers.clone();
    let group = group.to_string();
    let flowing = tokio::task::spawn_blocking(move || {
        let ends = log_ends(&brokers, PARTS);
        let ok = wait_for(Duration::from_secs(120), || {
            committed(&brokers, &group, PARTS) == ends
        });
        if !ok {
            eprintln!(
                "ends {ends:?}\ncommitted {:?}",
                committed(&brokers, &group, PARTS)
            );
        }
        ok
    })
    .await
    .expect("wait");
    let after = scrape_now();
    svc.shutdown().await.expect("clean shutdown");
    assert!(
        flowing,
        "every partition flows past the hostile records and commits"
    );
    let ok = metric(&after, "distillguard_events_total", "result=\"ok\"")
        - metric(&before, "distillguard_events_total", "result=\"ok\"");
    assert!(
        ok >= f64::from(PARTS),
        "the valid records after the cases are processed"
    );

    let brokers = m.brokers.clone();
    let dlq = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, DLQ, usize::MAX, Duration::from_secs(3))
    })
    .await
    .expect("reader");
    let mut verdicts: BTreeMap<String, String> = cases
        .iter()
        .map(|(name, _)| (name.clone(), OK.to_string()))
        .collect();
    for r in dlq {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let reason = r
            .headers
            .get("distillguard.reason")
            .cloned()
            .unwrap_or_default();
        for h in [
            "distillguard.error",
            "distillguard.source.topic",
            "distillguard.source.partition",
            "distillguard.source.offset",
        ] {
            assert!(r.headers.contains_key(h), "{key}: DLQ header {h} missing");
        }
        let original = cases
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, b)| b.as_slice())
            .unwrap_or_default();
        match r.headers.get("distillguard.truncated_from") {
            // Larger than the producer sends: the head of it, and its length.
            Some(len) => {
                assert_eq!(len, &original.len().to_string(), "{key}");
                assert!(original.starts_with(&r.payload) && r.payload.len() < original.len());
            }
            None => assert_eq!(
                r.payload, original,
                "{key}: the DLQ keeps the original bytes"
            ),
        }
        verdicts.insert(key, reason);
    }
    verdicts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_json_gets_the_same_verdict_from_replay_and_the_service() {
    let _one = exclusive().await;
    let cases = json_cases();
    let mut by_replay = BTreeMap::new();
    for (name, bytes) in &cases {
        let (verdict, _) = replay_verdict(&mut |w| w.write_all(bytes).expect("write"));
        by_replay.insert(name.clone(), verdict);
    }
    let rss_before = rss_kib();
    let by_service = service_verdicts(&cases, "json", "g-hostile-json").await;
    let rss_growth_mib = rss_before.abs_diff(rss_kib()) / 1024;

    let mismatches: Vec<String> = cases
        .iter()
        .map(|(n, _)| n)
        .filter(|n| by_replay.get(*n) != by_service.get(*n))
        .map(|n| {
            format!(
                "{n}: replay {:?}, service {:?}",
                by_replay[n], by_service[n]
            )
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "verdicts differ:\n{}",
        mismatches.join("\n")
    );

    for (case, want) in [
        ("valid", OK),
        ("arrays_1000", "too_deep"),
        ("arrays_10000", "too_deep"),
        ("arrays_100000", "too_deep"),
        ("field_arrays_100000", "too_deep"),
        ("objects_50000", "too_deep"),
        ("arrays_1000000", "too_long"),
        ("brackets_in_a_string", OK),
        ("key_1mb", OK),
        ("duplicate_unknown_keys_100000", OK),
        ("duplicate_known_keys_100000", "invalid_json"),
        ("escape_lone_high_in_prompt", "invalid_json"),
        ("crlf", OK),
        ("long_prompt_ok", OK),
        ("record_over_the_limit", "too_long"),
    ] {
        assert_eq!(by_replay[case], want, "{case}");
    }
    eprintln!("verdicts: {by_replay:?}");
    assert!(
        rss_growth_mib < 256,
        "the service's resident set grew {rss_growth_mib} MiB over the hostile cases"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_protobuf_gets_the_decoders_verdict_from_the_service() {
    let _one = exclusive().await;
    let cases = proto_cases();
    let d = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    let by_service = service_verdicts(&cases, "protobuf", "g-hostile-pb").await;
    for (name, bytes) in &cases {
        let want = match d.decode_protobuf(bytes) {
            Ok(_) => OK,
            Err(e) => e.reason(),
        };
        assert_eq!(by_service[name], want, "{name}");
    }
    assert_eq!(by_service["pb_valid"], OK);
    assert_eq!(by_service["pb_length_2_31"], "invalid_protobuf");
    assert_eq!(by_service["pb_groups_100000"], "too_deep");
}

/// A 1 GiB line, generated on the fly and streamed to `replay` on stdin: rejected as too long
/// without being held in memory.
#[test]
fn a_one_gib_line_is_rejected_by_replay_in_bounded_memory() {
    let t0 = Instant::now();
    let (verdict, peak_kib) = replay_verdict(&mut |w| {
        w.write_all(br#"{"event_id":"big","ts":1793577601000,"account_id":"a","prompt_text":""#)
            .expect("write");
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..1024 {
            w.write_all(&chunk).expect("write");
        }
        w.write_all(br#""}"#).expect("write");
    });
    assert_eq!(verdict, "too_long");
    eprintln!(
        "1 GiB line: {verdict} in {:.1} s, replay peak RSS {} MiB",
        t0.elapsed().as_secs_f64(),
        peak_kib / 1024
    );
    assert!(
        peak_kib < 200 * 1024,
        "replay peaked at {} MiB on a 1 GiB line",
        peak_kib / 1024
    );
}
