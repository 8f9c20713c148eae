//! Memory per tracked account and per tracked attribute value (RSS), and RSS under an
//! id-rotation attack at the configured caps, for the single engine (`role = "all"`) and for
//! each stage of the staged topology. Run: `cargo bench --bench memory`.
//!
//! Method: every phase runs in a process of its own (memory freed by one phase and kept by
//! the allocator would blur the next), with the service's allocator (mimalloc). A phase reads
//! its resident set size (RSS), builds an engine, feeds it the bench's synthetic traffic in
//! small chunks (so that transient buffers stay small), and divides the growth of RSS by the
//! engine's gauges. What an earlier phase measured is subtracted where it is known: per
//! account first (attribute values stripped from the events, so that the engine holds
//! accounts only), then per value (the same traffic with its values, less the accounts), then
//! per holder. The de-duplication set and the prompt-copies sketch are kept small in those
//! phases, and on the account stage the template doorkeeper too (fixed costs set by config,
//! sized by traffic, not by accounts; the `all` engine's value phase counts its doorkeeper
//! with the values); the set and the doorkeeper are measured apart at their default caps.
//!
//! - **`all`** (phases 1-3): one engine, accounts and the attribute index in one process.
//! - **`account` stage**: an account engine per tracked account, on the traffic with its
//!   values (it keeps no attribute index, only the values' keys in the account record); its
//!   template doorkeeper (`engine.max_attribute_values` template keys seen in the last hour)
//!   is capped small here and counted with the fixed costs.
//! - **`link` stage**: a link engine fed by an account engine, as in `benches/stages.rs`
//!   (each event's observation encoded for the observations topic and decoded again); the
//!   account engine runs in a child process that writes the records to a pipe, so the link
//!   process holds the link engine alone and nothing needs subtracting for the account side.
//!   Per shadow account: values stripped. Per value: the traffic with its values, less the
//!   shadow accounts. Per (value, holder) entry: each account carries exactly three values
//!   (device fingerprint, payment fingerprint, autonomous system) drawn from 3,000, so about
//!   a thousand holders share each value and the holder sets dominate; less the shadow
//!   accounts and the values at the per-value figure. The cluster assembler's per-member
//!   entries are not isolated: the gauges show how many clusters the traffic formed.
//! - **`cluster` stage**: a cluster stage fed the links records of an account engine and three
//!   link shards (in a child process, as for the link stage): per account its records
//!   mentioned (the account's latest snapshot and the assembler's entry for it), with the
//!   links' snapshots counted in.
//! - **Fixed costs** at the default caps (`engine.max_dedup_ids`, and on the account stage
//!   the template doorkeeper at `engine.max_attribute_values`): 10k accounts and 8M events,
//!   enough to fill both, less the accounts. The prompt-copies sketch is bounded by
//!   `harvest.copies_sketch_max_mib` by construction and is kept at 1 MiB throughout.

/// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use distillguard::config::{Config, ValidConfig};
use distillguard::detect::{Emitted, Shard};
use distillguard::engine::cluster_stage::ClusterStage;
use distillguard::engine::{account_key, link_targets, Engine, Role};
use distillguard::event::{Decoder, Event};
use distillguard::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};
use distillguard::kafka::{links, observation};
use xxhash_rust::xxh3::xxh3_64;

/// What the events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    /// The bench's traffic as generated.
    All,
    /// No attribute values (see [`strip_attributes`]).
    None,
    /// Three values per account from a few thousand (see [`few_values`]).
    Few,
}

impl Values {
    fn name(self) -> &'static str {
        match self {
            Values::All => "all",
            Values::None => "none",
            Values::Few => "few",
        }
    }

    fn from_name(s: &str) -> Self {
        match s {
            "none" => Values::None,
            "few" => Values::Few,
            _ => Values::All,
        }
    }

    fn apply(self, e: &mut Event) {
        match self {
            Values::All => {}
            Values::None => strip_attributes(e),
            Values::Few => few_values(e),
        }
    }
}

/// Feeds events `[start, start + n)` over `accounts` accounts to `each`, decoded, in small
/// chunks: the encoded events are transient, and a large batch of them (kept by the allocator
/// after it is freed) would be counted as engine state.
fn for_events(
    decoder: &Decoder,
    start: u64,
    n: u64,
    accounts: u64,
    values: Values,
    mut each: impl FnMut(&Event),
) {
    let chunk = 10_000;
    let mut i = start;
    while i < start + n {
        let m = chunk.min(start + n - i);
        for b in support::encoded(i, m, accounts, 20_000) {
            if let Ok(mut e) = decoder.decode_protobuf(&b) {
                values.apply(&mut e);
                each(&e);
            }
        }
        i += m;
    }
}

fn feed(engine: &mut Engine, decoder: &Decoder, start: u64, n: u64, accounts: u64, strip: bool) {
    let values = if strip { Values::None } else { Values::All };
    feed_with(engine, decoder, start, n, accounts, values);
}

fn feed_with(
    engine: &mut Engine,
    decoder: &Decoder,
    start: u64,
    n: u64,
    accounts: u64,
    values: Values,
) {
    let mut out = Vec::new();
    for_events(decoder, start, n, accounts, values, |e| {
        engine.process(e, &mut out);
        // An account engine hands on an observation per event (none in the `all` role).
        let _ = engine.take_observation();
        out.clear();
    });
}

fn strip_attributes(e: &mut Event) {
    e.ip = None;
    e.device_fingerprint = None;
    e.payment_fingerprint = None;
    e.email_domain = None;
    // Autonomous systems and creation minutes are attribute values too: phase 2 counts them
    // per value.
    e.asn = None;
    e.account_created_ms = None;
    e.prompt.template = 0;
}

/// Values per account in the holders phase, and distinct values of each kind.
const FEW_KINDS: usize = 3;
const FEW: u64 = 1_000;

/// Exactly [`FEW_KINDS`] values per account, fixed by its id, each kind from [`FEW`] values:
/// every value has about `accounts / FEW` holders.
fn few_values(e: &mut Event) {
    let a = xxh3_64(e.account_id.as_bytes());
    strip_attributes(e);
    e.asn = Some((a % FEW) as u32);
    e.device_fingerprint = Some(compact_str::format_compact!("dev_{}", (a >> 20) % FEW));
    e.payment_fingerprint = Some(compact_str::format_compact!("pm_{}", (a >> 40) % FEW));
}

/// A validated configuration with the given caps; the de-duplication set (unless
/// `default_dedup`) and the prompt-copies sketch kept small.
fn config(max_accounts: usize, max_values: usize, default_dedup: bool) -> Arc<ValidConfig> {
    let mut c = Config::default();
    c.engine.max_accounts = max_accounts;
    c.engine.max_attribute_values = max_values;
    // Keep the de-duplication set and the prompt-copies sketch small so they do not blur
    // the per-account figure: both are fixed costs set by config (`engine.max_dedup_ids`,
    // `harvest.copies_sketch_max_mib`), sized by traffic, not by accounts.
    if !default_dedup {
        c.engine.max_dedup_ids = 100_000;
    }
    c.harvest.copies_sketch_max_mib = 1;
    Arc::new(c.validate().expect("valid"))
}

/// The feeder of the link phases: an account engine over events `[start, start + n)`,
/// writing each observation record (length-prefixed) to stdout.
fn feed_observations(decoder: &Decoder, spec: &str) {
    let f: Vec<&str> = spec.split(',').collect();
    let num = |i: usize| {
        f[i].parse::<u64>()
            .expect("MEM_FEED: start,n,accounts,values")
    };
    let (start, n, accounts, values) = (num(0), num(1), num(2), Values::from_name(f[3]));
    let mut engine = Engine::new(config(4_000_000, 8_000_000, false)).with_role(Role::Account);
    let mut w = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut out = Vec::new();
    for_events(decoder, start, n, accounts, values, |e| {
        engine.process(e, &mut out);
        out.clear();
        if let Some(obs) = engine.take_observation() {
            let r = observation::encode(e, &obs);
            w.write_all(&(r.len() as u32).to_le_bytes())
                .and_then(|()| w.write_all(&r))
                .expect("pipe to the link phase");
        }
    });
    w.flush().expect("pipe to the link phase");
}

/// The feeder of the cluster phase: an account engine and three link shards over events
/// `[start, start + n)`, writing each links record (length-prefixed) to stdout.
fn feed_links(decoder: &Decoder, spec: &str) {
    let f: Vec<&str> = spec.split(',').collect();
    let num = |i: usize| {
        f[i].parse::<u64>()
            .expect("MEM_FEED_LINKS: start,n,accounts")
    };
    let (start, n, accounts) = (num(0), num(1), num(2));
    let cfg = config(4_000_000, 8_000_000, false);
    let mut engine = Engine::new(cfg.clone()).with_role(Role::Account);
    let of = 3;
    let mut shards: Vec<Engine> = (0..of)
        .map(|index| Engine::new(cfg.clone()).with_shard(Shard { index, of }))
        .collect();
    let mut w = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let (mut out, mut emitted) = (Vec::new(), Emitted::default());
    for_events(decoder, start, n, accounts, Values::All, |e| {
        engine.process(e, &mut out);
        out.clear();
        let Some(obs) = engine.take_observation() else {
            return;
        };
        let targets = link_targets(&obs, of);
        for (i, shard) in shards.iter_mut().enumerate() {
            if targets & (1 << i) != 0 {
                shard.observe(e, &obs, &mut out);
                shard.take_emitted(&mut emitted);
            }
        }
        out.clear();
        if !emitted.records.is_empty() {
            let r = links::encode(account_key(&e.account_id), e.ts_ms, &emitted);
            w.write_all(&(r.len() as u32).to_le_bytes())
                .and_then(|()| w.write_all(&r))
                .expect("pipe to the cluster phase");
        }
        emitted.clear();
    });
    w.flush().expect("pipe to the cluster phase");
}

/// A link engine fed the observations of an account engine (in a child process) over events
/// `[start, start + n)`. Returns the engine, the growth of RSS while it was fed, and the
/// alerts it raised.
fn link_fed(
    cfg: Arc<ValidConfig>,
    start: u64,
    n: u64,
    accounts: u64,
    values: Values,
) -> (Engine, u64, usize) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env("MEM_PHASE", "feed")
        .env(
            "MEM_FEED",
            format!("{start},{n},{accounts},{}", values.name()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("feeder runs");
    let mut r = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
    let base = support::rss_bytes();
    let mut engine = Engine::new(cfg).with_role(Role::Link);
    let (mut len, mut buf, mut out, mut alerts) = ([0u8; 4], Vec::new(), Vec::new(), 0);
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("reading observations: {e}"),
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut buf).expect("a whole record");
        let (ev, obs) = observation::decode(&buf).expect("decodes");
        engine.observe(&ev, &obs, &mut out);
        alerts += out.len();
        out.clear();
    }
    assert!(
        child.wait().expect("feeder ends").success(),
        "feeder failed"
    );
    let grown = support::rss_bytes().saturating_sub(base);
    (engine, grown, alerts)
}

/// A figure an earlier phase printed as `NAME=value` (passed on as `MEM_NAME`).
fn earlier(name: &str) -> f64 {
    std::env::var(format!("MEM_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const MIB: f64 = 1048576.0;

fn main() {
    // Each phase runs in its own process so that memory freed by one (and kept by the
    // allocator) does not blur the next.
    let Ok(phase) = std::env::var("MEM_PHASE") else {
        let exe = std::env::current_exe().expect("own path");
        let mut figures: Vec<(String, String)> = Vec::new();
        for phase in [
            "1",
            "2",
            "3",
            "account",
            "account-fixed",
            "link-accounts",
            "link-values",
            "link-holders",
            "link-fixed",
            "cluster",
        ] {
            let out = Command::new(&exe)
                .env("MEM_PHASE", phase)
                .envs(figures.iter().map(|(k, v)| (format!("MEM_{k}"), v)))
                .output()
                .expect("phase runs");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            print!("{text}");
            assert!(
                out.status.success(),
                "phase {phase} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for l in text.lines() {
                if let Some((k, v)) = l.split_once('=') {
                    if !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                        figures.push((k.to_string(), v.trim().to_string()));
                    }
                }
            }
        }
        return;
    };
    let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
    let accounts = 1_000_000u64;
    let cfg = |max_accounts: usize, max_values: usize| config(max_accounts, max_values, false);

    if phase == "feed" {
        let spec = std::env::var("MEM_FEED").expect("MEM_FEED");
        feed_observations(&decoder, &spec);
        return;
    }
    if phase == "feed-links" {
        let spec = std::env::var("MEM_FEED_LINKS").expect("MEM_FEED_LINKS");
        feed_links(&decoder, &spec);
        return;
    }
    if phase == "cluster" {
        // 10. The cluster stage: per account its links records mentioned.
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .env("MEM_PHASE", "feed-links")
            .env("MEM_FEED_LINKS", format!("0,{},{accounts}", accounts * 3))
            .stdout(Stdio::piped())
            .spawn()
            .expect("feeder runs");
        let mut r = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
        let base = support::rss_bytes();
        let mut stage = ClusterStage::new(cfg(4_000_000, 8_000_000));
        let (mut len, mut buf, mut out) = ([0u8; 4], Vec::new(), Vec::new());
        let (mut records, mut alerts) = (0u64, 0usize);
        loop {
            match r.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("reading links records: {e}"),
            }
            buf.resize(u32::from_le_bytes(len) as usize, 0);
            r.read_exact(&mut buf).expect("a whole record");
            let (account, ts, mut emitted) = links::decode(&buf).expect("decodes");
            stage.take(account, ts, &mut emitted, &mut out);
            records += 1;
            alerts += out.len();
            out.clear();
        }
        assert!(
            child.wait().expect("feeder ends").success(),
            "feeder failed"
        );
        let grown = support::rss_bytes().saturating_sub(base);
        let (members, links) = stage.snapshots();
        println!(
            "cluster stage: {records} links records, {members} accounts and {links} links held, {} clusters, {alerts} alerts, RSS +{:.1} MiB, {:.0} B per account held (its links' snapshots counted in)",
            stage.clusters(),
            grown as f64 / MIB,
            grown as f64 / members.max(1) as f64
        );
        return;
    }
    if phase == "1" {
        // 1. Accounts alone (no attribute values).
        let base = support::rss_bytes();
        let mut engine = Engine::new(cfg(4_000_000, 8_000_000));
        feed(&mut engine, &decoder, 0, accounts * 3, accounts, true);
        let g = engine.gauges();
        let per_account = (support::rss_bytes() - base) as f64 / g.accounts as f64;
        println!(
            "accounts only: {} accounts, RSS +{:.1} MiB, {:.0} B per account (budget 1024)",
            g.accounts,
            (support::rss_bytes() - base) as f64 / MIB,
            per_account
        );
        println!(
            "  of which the account record: {} B (size_of::<Account>)",
            std::mem::size_of::<distillguard::state::account::Account>()
        );
        println!("PER_ACCOUNT={per_account:.0}");
        return;
    }
    let per_account = earlier("PER_ACCOUNT");
    if phase == "2" {
        // 2. Accounts with their attribute values.
        let base = support::rss_bytes();
        let mut engine = Engine::new(cfg(4_000_000, 8_000_000));
        feed(
            &mut engine,
            &decoder,
            10_000_000,
            accounts * 3,
            accounts,
            false,
        );
        let g = engine.gauges();
        let total = (support::rss_bytes().saturating_sub(base)) as f64;
        let for_values = total - per_account * g.accounts as f64;
        println!(
        "with attributes: {} accounts, {} attribute values, RSS +{:.1} MiB; {:.0} B per account + {:.0} B per value (budget 256)",
        g.accounts, g.attribute_values, total / MIB, per_account,
        for_values / g.attribute_values.max(1) as f64
    );
        println!(
            "  total per account incl. its share of values: {:.0} B",
            total / g.accounts as f64
        );
        return;
    }
    if phase == "3" {
        // 3. Id rotation at caps of 200k accounts / 400k values: RSS must stay flat.
        let mut engine = Engine::new(cfg(200_000, 400_000));
        let rotating = u64::MAX / 2; // every event a new account
        let mut samples = Vec::new();
        for step in 0..8u64 {
            feed(
                &mut engine,
                &decoder,
                50_000_000 + step * 500_000,
                500_000,
                rotating,
                false,
            );
            let g = engine.gauges();
            samples.push((step + 1) * 500_000);
            println!(
            "rotation: {:>8} events, {:>7} accounts, {:>7} values, evicted {:>8}, RSS {:.1} MiB",
            samples.last().copied().unwrap_or(0),
            g.accounts,
            g.attribute_values,
            engine.stats().accounts_evicted,
            support::rss_bytes() as f64 / MIB
        );
        }
        return;
    }
    if phase == "account" {
        // 4. The account stage, per tracked account, on the traffic with its values. The
        // template doorkeeper's cap (`engine.max_attribute_values`) is set to its minimum:
        // it is a fixed cost, measured in the next phase.
        let base = support::rss_bytes();
        let mut engine = Engine::new(cfg(4_000_000, 1_000)).with_role(Role::Account);
        feed_with(
            &mut engine,
            &decoder,
            20_000_000,
            accounts * 3,
            accounts,
            Values::All,
        );
        let g = engine.gauges();
        let total = support::rss_bytes().saturating_sub(base) as f64;
        let per = total / g.accounts as f64;
        println!(
            "account stage: {} accounts (values carried, {} indexed), RSS +{:.1} MiB, {:.0} B per account",
            g.accounts,
            g.attribute_values,
            total / MIB,
            per
        );
        println!("PER_ACCOUNT_STAGE={per:.0}");
        return;
    }
    if phase == "account-fixed" {
        // 5. The account stage's fixed costs at the default caps: the de-duplication set
        // (`engine.max_dedup_ids`) and the template doorkeeper (`engine.max_attribute_values`),
        // filled by 8M events over 10k accounts, less the accounts.
        let d = Config::default();
        let base = support::rss_bytes();
        let mut engine = Engine::new(config(
            d.engine.max_accounts,
            d.engine.max_attribute_values,
            true,
        ))
        .with_role(Role::Account);
        feed_with(
            &mut engine,
            &decoder,
            30_000_000,
            8_000_000,
            10_000,
            Values::All,
        );
        let g = engine.gauges();
        let total = support::rss_bytes().saturating_sub(base) as f64;
        let fixed = total - earlier("PER_ACCOUNT_STAGE") * g.accounts as f64;
        println!(
            "account stage fixed costs (dedup {} ids, doorkeeper {} template keys at most): {} accounts, RSS +{:.1} MiB, {:.1} MiB beyond the accounts",
            d.engine.max_dedup_ids,
            d.engine.max_attribute_values,
            g.accounts,
            total / MIB,
            fixed / MIB
        );
        println!("  dedup ids held: {}", g.dedup_ids);
        return;
    }
    if phase == "link-accounts" {
        // 6. The link stage, per shadow account (no attribute values).
        let (engine, grown, _) = link_fed(
            cfg(4_000_000, 8_000_000),
            40_000_000,
            accounts * 3,
            accounts,
            Values::None,
        );
        let g = engine.gauges();
        let per = grown as f64 / g.accounts as f64;
        println!(
            "link stage, shadow accounts only: {} accounts, RSS +{:.1} MiB, {:.0} B per shadow account",
            g.accounts,
            grown as f64 / MIB,
            per
        );
        println!("PER_SHADOW_ACCOUNT={per:.0}");
        return;
    }
    let per_shadow = earlier("PER_SHADOW_ACCOUNT");
    if phase == "link-values" {
        // 7. The link stage with the traffic's values: less the shadow accounts, per value.
        let (engine, grown, alerts) = link_fed(
            cfg(4_000_000, 8_000_000),
            50_000_000,
            accounts * 3,
            accounts,
            Values::All,
        );
        let g = engine.gauges();
        let total = grown as f64;
        let per_value = (total - per_shadow * g.accounts as f64) / g.attribute_values.max(1) as f64;
        println!(
            "link stage, with attributes: {} shadow accounts, {} attribute values, {} clusters ({} alerts), RSS +{:.1} MiB; {:.0} B per shadow account + {:.0} B per value",
            g.accounts,
            g.attribute_values,
            g.clusters,
            alerts,
            total / MIB,
            per_shadow,
            per_value
        );
        println!(
            "  total per shadow account incl. its share of values: {:.0} B",
            total / g.accounts as f64
        );
        println!("PER_LINK_VALUE={per_value:.0}");
        return;
    }
    if phase == "link-holders" {
        // 8. The link stage, three values per account from 3,000: per (value, holder) entry.
        let (engine, grown, alerts) = link_fed(
            cfg(4_000_000, 8_000_000),
            60_000_000,
            accounts * 3,
            accounts,
            Values::Few,
        );
        let g = engine.gauges();
        let holders = (g.accounts * FEW_KINDS) as f64;
        let rest = grown as f64
            - per_shadow * g.accounts as f64
            - earlier("PER_LINK_VALUE") * g.attribute_values as f64;
        println!(
            "link stage, {} values per account from {}: {} shadow accounts, {} values ({:.0} holders each), {} clusters ({} alerts), RSS +{:.1} MiB; {:.1} B per (value, holder) entry",
            FEW_KINDS,
            FEW_KINDS as u64 * FEW,
            g.accounts,
            g.attribute_values,
            holders / g.attribute_values.max(1) as f64,
            g.clusters,
            alerts,
            grown as f64 / MIB,
            rest / holders
        );
        return;
    }
    if phase == "link-fixed" {
        // 9. The link stage's fixed cost at the default caps: the de-duplication set
        // (`engine.max_dedup_ids`), filled by 8M events over 10k accounts, less the accounts.
        let d = Config::default();
        let (engine, grown, _) = link_fed(
            config(d.engine.max_accounts, d.engine.max_attribute_values, true),
            70_000_000,
            8_000_000,
            10_000,
            Values::None,
        );
        let g = engine.gauges();
        let fixed = grown as f64 - per_shadow * g.accounts as f64;
        println!(
            "link stage fixed costs (dedup {} ids at most): {} accounts, {} dedup ids held, RSS +{:.1} MiB, {:.1} MiB beyond the accounts",
            d.engine.max_dedup_ids,
            g.accounts,
            g.dedup_ids,
            grown as f64 / MIB,
            fixed / MIB
        );
    }
}
