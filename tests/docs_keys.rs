//! The docs name config keys instead of copying their values, so that numbers cannot drift.
//! This holds them to it the other way round: every `section.key` the docs name (in
//! backticks: the README, `deploy/`, `benches/`, `tests/` and the `//!`/`///` docs under
//! `src/`) must exist in `distillguard config --print-default`. A renamed or removed key fails
//! here until the docs follow.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every dotted key path of the default configuration, tables included (`kafka`,
/// `kafka.properties`, `bulk.min_harvest_fresh`, ...).
fn default_keys() -> BTreeSet<String> {
    let out = common::ok(&["config", "--print-default"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let table: toml::Table = toml::from_str(&text).expect("the default config parses");
    let mut keys = BTreeSet::new();
    fn walk(prefix: &str, t: &toml::Table, keys: &mut BTreeSet<String>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if let toml::Value::Table(inner) = v {
                walk(&path, inner, keys);
            }
            keys.insert(path);
        }
    }
    walk("", &table, &mut keys);
    keys
}

fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        root.join("README.md"),
        root.join("benches/README.md"),
        root.join("tests/README.md"),
    ];
    let mut stack = vec![root.join("deploy"), root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("md") | Some("rs")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Backticked spans of the prose: all of a Markdown file, the doc comments of a Rust file.
fn spans(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("readable doc");
    let rust = path.extension().is_some_and(|e| e == "rs");
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = if rust {
            match line.trim_start().strip_prefix("//!") {
                Some(rest) => rest,
                None => match line.trim_start().strip_prefix("///") {
                    Some(rest) => rest,
                    None => continue,
                },
            }
        } else {
            line
        };
        let mut parts = line.split('`');
        parts.next();
        while let Some(inside) = parts.next() {
            out.push((n + 1, inside.to_string()));
            parts.next();
        }
    }
    out
}

/// `section.key` with a known section, not a file name (`alerts.yml`).
fn named_key(span: &str, sections: &BTreeSet<&str>) -> Option<String> {
    let (section, rest) = span.split_once('.')?;
    if !sections.contains(section) || rest.is_empty() {
        return None;
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*';
    if !rest.split('.').all(|p| !p.is_empty() && p.chars().all(ok)) {
        return None;
    }
    const FILES: &[&str] = &[
        "yml", "yaml", "rs", "md", "json", "toml", "py", "sh", "proto",
    ];
    if FILES.contains(&rest) {
        return None;
    }
    Some(span.to_string())
}

/// A key, or a pattern with `*` standing for any run of characters within one key.
fn matches(pattern: &str, key: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part) && !rest[..rest.len() - part.len()].contains('.');
        }
        match rest.find(part) {
            Some(at) if !rest[..at].contains('.') => rest = &rest[at + part.len()..],
            _ => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn every_config_key_the_docs_name_exists() {
    let keys = default_keys();
    let sections: BTreeSet<&str> = keys
        .iter()
        .filter(|k| !k.contains('.'))
        .map(|k| k.as_str())
        .collect();
    assert!(
        sections.contains("bulk") && sections.contains("kafka"),
        "{sections:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut named = 0;
    let mut missing = Vec::new();
    for file in doc_files(root) {
        for (line, span) in spans(&file) {
            let Some(key) = named_key(&span, &sections) else {
                continue;
            };
            named += 1;
            if !keys.iter().any(|k| matches(&key, k)) {
                let shown = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                missing.push(format!("{shown}:{line}: `{key}`"));
            }
        }
    }
    assert!(
        named >= 40,
        "the docs should name config keys (found {named}); is the scan broken?"
    );
    assert!(
        missing.is_empty(),
        "config keys named in the docs but absent from `config --print-default`:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_pattern_matcher_is_strict() {
    assert!(matches("cluster.min_members_*", "cluster.min_members_ip"));
    assert!(matches("alerts.*_score", "alerts.suspend_score"));
    assert!(matches("bulk.min_harvest_fresh", "bulk.min_harvest_fresh"));
    assert!(!matches(
        "bulk.min_harvest_fresh",
        "bulk.min_harvest_fresher"
    ));
    assert!(!matches(
        "bulk.min_requests_fresh",
        "bulk.min_harvest_fresh"
    ));
    assert!(!matches("alerts.*_score", "alerts.x.y_score"));
    let sections: BTreeSet<&str> = ["alerts", "kafka"].into();
    assert_eq!(named_key("alerts.yml", &sections), None);
    assert_eq!(named_key("sim.rs", &sections), None);
    assert_eq!(
        named_key("kafka.rebuild_secs", &sections).as_deref(),
        Some("kafka.rebuild_secs")
    );
}
