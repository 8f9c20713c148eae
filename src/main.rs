//! Command line: parse, load config, start. Everything else lives in the library.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use distillguard::config::{Config, Format, StageRole};

/// Events are parsed on worker threads and freed on the engine thread; mimalloc handles that
/// cross-thread pattern far better than the system allocator. The `system-alloc` feature
/// leaves the system allocator in place, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use distillguard::{eval, replay, sim};

#[derive(Parser)]
#[command(
    name = "distillguard",
    version,
    about = "Catch model distillation in an LLM API request log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the detectors over a JSON Lines file of request events and write every alert.
    Replay {
        /// Events, JSON Lines (`-` for stdin).
        #[arg(long, default_value = "-")]
        input: String,
        /// Alerts, JSON Lines (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: String,
        /// TOML configuration (defaults when absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run the staged topology in this process: this many `account` engines keyed by
        /// account, handing their observations to one `link` engine (0: one engine does
        /// both). For measuring what the stage split changes.
        #[arg(long, default_value_t = 0)]
        account_stages: usize,
        /// With the staged topology: this many link shards, each owning the linking values
        /// that hash to it (one of them the co-activity state), feeding one cluster stage (0: one `link` engine that
        /// also assembles clusters). At most 64.
        #[arg(long, default_value_t = 0)]
        link_shards: usize,
    },
    /// Write labelled simulated traffic: events JSON Lines plus a labels file.
    Simulate {
        /// A family name, `all`, `classic` (the first suite), `evasive`, `benign` or `attacks`.
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Multiplies the number of accounts in every family.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Hours of traffic.
        #[arg(long, default_value_t = 6.0)]
        hours: f64,
        /// Events, JSON Lines (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: String,
        /// Labels, JSON Lines: one line per account.
        #[arg(long, default_value = "labels.jsonl")]
        labels: PathBuf,
        /// `text`: events carry `prompt_text`; `simhash`: only `prompt_simhash`, as from a
        /// gateway that fingerprints upstream.
        #[arg(long, default_value = "text", value_parser = ["text", "simhash"])]
        prompts: String,
    },
    /// Score an alerts file against simulator labels; with several `--alerts`/`--labels` pairs
    /// or `--aggregate DIR`, score every run and report over all of them (worst run, median
    /// run, time to detect pooled over runs) and apply the bars to that.
    Eval(EvalArgs),
    /// The Kafka service: consume request events, detect, produce alerts.
    Run {
        /// TOML configuration (defaults when absent); DISTILLGUARD__SECTION__KEY environment
        /// variables override it, and these flags override both.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        kafka: KafkaFlags,
        /// Serves /metrics, /healthz and /readyz.
        #[arg(long)]
        metrics_addr: Option<String>,
    },
    /// Everything on an embedded broker with simulated traffic: alerts print as they fire.
    Demo {
        /// TOML configuration for the detectors (defaults when absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serves /metrics, /healthz and /readyz.
        #[arg(long, default_value = "127.0.0.1:9477")]
        metrics_addr: String,
        /// Simulator scenario: `all`, `attacks`, or a family name.
        #[arg(long, default_value = "all")]
        scenario: String,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Multiplies the number of accounts in every family.
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Hours of simulated traffic.
        #[arg(long, default_value_t = 2.0)]
        hours: f64,
        /// Event-time seconds per wall-clock second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// `single`: one service doing everything; `staged`: two `account` instances and one
        /// `link` instance over the internal observations topic (see `kafka.role`).
        #[arg(long, value_enum, default_value = "single")]
        topology: distillguard::demo::Topology,
    },
    /// Write or list live allowlist entries on the control topic (applied by every running
    /// instance within seconds, no restart).
    Allow(AllowArgs),
    /// Record an analyst's verdict on an alert (counted by the service in
    /// distillguard_alert_verdicts_total).
    Verdict(VerdictArgs),
    /// Configuration helpers.
    Config {
        /// Print the documented default configuration file.
        #[arg(long)]
        print_default: bool,
        /// Validate a configuration file.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Alerts, JSON Lines (repeatable, paired in order with `--labels`).
    #[arg(long)]
    alerts: Vec<PathBuf>,
    /// Labels, JSON Lines (repeatable).
    #[arg(long)]
    labels: Vec<PathBuf>,
    /// A directory of runs: every `DIR/RUN/alerts.jsonl` with its `DIR/RUN/labels.jsonl`.
    #[arg(long, conflicts_with_all = ["alerts", "labels"])]
    aggregate: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit non-zero if precision is below this.
    #[arg(long)]
    min_precision: Option<f64>,
    /// Exit non-zero if recall is below this.
    #[arg(long)]
    min_recall: Option<f64>,
    /// Exit non-zero if any attack family's recall is below this.
    #[arg(long)]
    min_family_recall: Option<f64>,
    /// Exit non-zero if any attack family's median time to detect exceeds this.
    #[arg(long)]
    max_median_ttd_minutes: Option<f64>,
    /// Benign families that must have no flagged account (repeatable).
    #[arg(long = "zero-fp-family")]
    zero_fp_families: Vec<String>,
    /// `FAMILY=MINUTES`: exit non-zero if that family's median time to detect exceeds it
    /// (repeatable).
    #[arg(long = "max-family-median-ttd", value_parser = eval::parse_family_minutes)]
    family_median_ttd: Vec<(String, f64)>,
    /// `FAMILY=RECALL`: that family's recall bar, in place of --min-family-recall (repeatable).
    #[arg(long = "family-min-recall", value_parser = eval::parse_family_share)]
    family_min_recall: Vec<(String, f64)>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("who").args(["account", "org"])))]
struct AllowArgs {
    /// The account to allowlist (or remove with --remove).
    #[arg(long)]
    account: Option<String>,
    /// The verified organisation to allowlist (or remove with --remove).
    #[arg(long)]
    org: Option<String>,
    /// Why: a ticket, a review. Required for a new entry.
    #[arg(long, required_unless_present_any = ["remove", "list"])]
    reason: Option<String>,
    /// Until when: RFC 3339 (2027-01-31T00:00:00Z) or a duration from now (90m, 12h, 7d, 2w).
    #[arg(long, required_unless_present_any = ["remove", "list"])]
    expires: Option<String>,
    /// Who decided (default: $USER).
    #[arg(long)]
    author: Option<String>,
    /// Remove the entry (a tombstone on the control topic).
    #[arg(long, conflicts_with_all = ["reason", "expires", "list"])]
    remove: bool,
    /// Print the entries in force, one JSON object a line (reads the topic to its end).
    #[arg(long, conflicts_with_all = ["account", "org", "reason", "expires"])]
    list: bool,
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaFlags,
}

#[derive(clap::Args)]
struct VerdictArgs {
    alert_id: String,
    #[arg(value_parser = ["confirmed", "false_positive", "unsure"])]
    verdict: String,
    /// Who judged (default: $USER).
    #[arg(long)]
    author: Option<String>,
    /// Free text; never logged in full, never a metric label.
    #[arg(long)]
    note: Option<String>,
    /// The alert's kind, if known (the service otherwise uses the alerts it remembers).
    #[arg(long, value_parser = ["bulk_extraction", "fake_account_cluster"])]
    kind: Option<String>,
    /// The alert's severity, if known.
    #[arg(long, value_parser = ["low", "medium", "high", "critical"])]
    severity: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaFlags,
}

/// The contract's flags for `run`; each overrides the file and the environment.
#[derive(clap::Args)]
struct KafkaFlags {
    #[arg(long)]
    brokers: Option<String>,
    #[arg(long)]
    group_id: Option<String>,
    #[arg(long)]
    input_topic: Option<String>,
    #[arg(long)]
    alerts_topic: Option<String>,
    #[arg(long)]
    dlq_topic: Option<String>,
    #[arg(long, value_enum)]
    input_format: Option<Format>,
    #[arg(long, value_enum)]
    alerts_format: Option<Format>,
    #[arg(long)]
    control_topic: Option<String>,
    #[arg(long)]
    verdicts_topic: Option<String>,
    /// The stage to run: `all` (default), `account`, `link` or `cluster` (see `kafka.role`).
    #[arg(long, value_enum)]
    role: Option<StageRole>,
    #[arg(long)]
    observations_topic: Option<String>,
    /// Link instances sharing the link decisions (see `kafka.link_shards`).
    #[arg(long)]
    link_shards: Option<u32>,
    /// This link instance's shard, from 0 (see `kafka.link_shard`).
    #[arg(long)]
    link_shard: Option<u32>,
    #[arg(long)]
    links_topic: Option<String>,
}

impl KafkaFlags {
    fn apply(self, c: &mut Config) {
        let k = &mut c.kafka;
        fn set<T>(dst: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *dst = v;
            }
        }
        set(&mut k.brokers, self.brokers);
        set(&mut k.group_id, self.group_id);
        set(&mut k.input_topic, self.input_topic);
        set(&mut k.alerts_topic, self.alerts_topic);
        set(&mut k.dlq_topic, self.dlq_topic);
        set(&mut k.input_format, self.input_format);
        set(&mut k.alerts_format, self.alerts_format);
        set(&mut k.control_topic, self.control_topic);
        set(&mut k.verdicts_topic, self.verdicts_topic);
        set(&mut k.role, self.role);
        set(&mut k.observations_topic, self.observations_topic);
        set(&mut k.link_shards, self.link_shards);
        set(&mut k.link_shard, self.link_shard);
        set(&mut k.links_topic, self.links_topic);
    }
}

type EvalRun = (
    String,
    Vec<distillguard::alert::Alert>,
    Vec<distillguard::sim::Label>,
);

/// The runs `eval` scores: the `--alerts`/`--labels` pairs in order, or every run directory
/// under `--aggregate` (sorted by name).
fn eval_runs(
    alerts: Vec<PathBuf>,
    labels: Vec<PathBuf>,
    dir: Option<&Path>,
) -> Result<Vec<EvalRun>> {
    let open = |p: &Path| -> Result<BufReader<File>> {
        Ok(BufReader::new(
            File::open(p).with_context(|| format!("opening {}", p.display()))?,
        ))
    };
    let pairs: Vec<(String, PathBuf, PathBuf)> = match dir {
        Some(dir) => {
            let mut v = Vec::new();
            for entry in
                std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let p = entry?.path();
                let (a, l) = (p.join("alerts.jsonl"), p.join("labels.jsonl"));
                if a.is_file() && l.is_file() {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    v.push((name, a, l));
                }
            }
            v.sort();
            if v.is_empty() {
                bail!(
                    "no run in {}: expected RUN/alerts.jsonl with RUN/labels.jsonl",
                    dir.display()
                );
            }
            v
        }
        None => {
            if alerts.is_empty() || alerts.len() != labels.len() {
                bail!(
                    "give --alerts and --labels in pairs ({} alerts, {} labels), or --aggregate DIR",
                    alerts.len(),
                    labels.len()
                );
            }
            alerts
                .into_iter()
                .zip(labels)
                .map(|(a, l)| (a.display().to_string(), a, l))
                .collect()
        }
    };
    pairs
        .into_iter()
        .map(|(name, a, l)| {
            let alerts = eval::read_alerts(open(&a)?)?;
            let labels = eval::read_labels(open(&l)?)?;
            Ok((name, alerts, labels))
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dg-io")
        .enable_all()
        .build()?)
}

/// Replay's input, unbuffered: replay reads it in megabyte batches itself (a `BufReader`
/// would only add a copy).
fn open_in(path: &str) -> Result<Box<dyn Read + Send>> {
    Ok(if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {path}"))?)
    })
}

fn open_out(path: &str) -> Result<Box<dyn Write>> {
    Ok(if path == "-" {
        Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        Box::new(BufWriter::with_capacity(
            1 << 20,
            File::create(path).with_context(|| format!("creating {path}"))?,
        ))
    })
}

fn load_config(path: Option<&Path>) -> Result<Arc<distillguard::config::ValidConfig>> {
    Ok(Arc::new(Config::load(path)?.validate()?))
}

/// Who is writing a control record, when `--author` is not given.
fn default_author() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `eval`: scores alerts against labels, one run or many, and applies the bars.
fn eval_cmd(args: EvalArgs) -> Result<()> {
    let EvalArgs {
        alerts,
        labels,
        aggregate,
        json,
        min_precision,
        min_recall,
        min_family_recall,
        max_median_ttd_minutes,
        zero_fp_families,
        family_median_ttd,
        family_min_recall,
    } = args;
    let req = eval::Requirements {
        min_precision,
        min_recall,
        min_family_recall,
        max_median_ttd_minutes,
        zero_fp_families,
        family_median_ttd,
        family_min_recall,
    };
    let runs = eval_runs(alerts, labels, aggregate.as_deref())?;
    let failed = if let [(_, alerts, labels)] = &runs[..] {
        let report = eval::evaluate(alerts, labels);
        print_report(&report, json, |r| r.to_text())?;
        report.check(&req)
    } else {
        let reports: Vec<(String, eval::EvalReport)> = runs
            .iter()
            .map(|(name, a, l)| (name.clone(), eval::evaluate(a, l)))
            .collect();
        let report = eval::aggregate(&reports);
        print_report(&report, json, |r| r.to_text())?;
        report.check(&req)
    };
    if !failed.is_empty() {
        bail!("requirements not met:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// The configuration with the environment's overrides and the Kafka flags applied.
fn kafka_config(
    path: Option<&Path>,
    kafka: KafkaFlags,
) -> Result<distillguard::config::ValidConfig> {
    let mut c = Config::load(path)?;
    kafka.apply(&mut c);
    Ok(c.validate()?)
}

/// Prints a report as JSON or as text.
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    text: impl FnOnce(&R) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// `allow`: writes, removes or lists live allowlist entries on the control topic.
fn allow_cmd(args: AllowArgs) -> Result<()> {
    let AllowArgs {
        account,
        org,
        reason,
        expires,
        author,
        remove,
        list,
        config,
        kafka,
    } = args;
    use distillguard::control::{Entry, Subject};
    use distillguard::kafka::control as ctl;
    let cfg = kafka_config(config.as_deref(), kafka)?;
    let topic = cfg.raw.kafka.control_topic.clone();
    if list {
        let (entries, malformed) = ctl::read_allowlist(&cfg)?;
        let mut out = std::io::stdout().lock();
        for e in &entries {
            writeln!(out, "{}", serde_json::to_string(&e.to_record())?)?;
        }
        if malformed > 0 {
            eprintln!("{malformed} malformed record(s) on {topic} skipped (they are on the dead-letter topic)");
        }
        return Ok(());
    }
    let subject = match (account, org) {
        (Some(a), None) => Subject::Account(a),
        (None, Some(o)) => Subject::Org(o),
        _ => bail!("say --account ID or --org ID (or --list)"),
    };
    let key = subject.key();
    if remove {
        ctl::write(&cfg, &topic, &[(key.clone(), None)])?;
        eprintln!("removed {key} from {topic}");
        return Ok(());
    }
    let now = distillguard::telemetry::now_ms();
    let expires_ms =
        distillguard::control::parse_expiry(expires.as_deref().unwrap_or_default(), now)
            .map_err(|e| anyhow::anyhow!("--expires {e}"))?;
    let reason = reason.unwrap_or_default();
    if reason.trim().is_empty() {
        bail!("--reason must say why (a ticket, a review)");
    }
    let entry = Entry {
        subject,
        reason,
        author: author.unwrap_or_else(default_author),
        created_ms: Some(now),
        expires_ms,
    };
    let record = serde_json::to_string(&entry.to_record())?;
    ctl::write(&cfg, &topic, &[(key, Some(record.clone().into_bytes()))])?;
    println!("{record}");
    Ok(())
}

/// `verdict`: writes an analyst's verdict to the verdicts topic.
fn verdict_cmd(args: VerdictArgs) -> Result<()> {
    let VerdictArgs {
        alert_id,
        verdict,
        author,
        note,
        kind,
        severity,
        config,
        kafka,
    } = args;
    use distillguard::control::{Judgement, Verdict};
    let cfg = kafka_config(config.as_deref(), kafka)?;
    let v = Verdict {
        alert_id: alert_id.clone(),
        verdict: Judgement::parse(&verdict)
            .ok_or_else(|| anyhow::anyhow!("verdict `{verdict}`"))?,
        author: author.unwrap_or_else(default_author),
        judged_at: distillguard::event::time::format_ms(distillguard::telemetry::now_ms()),
        note,
        kind,
        severity,
    };
    let record = serde_json::to_string(&v)?;
    let topic = cfg.raw.kafka.verdicts_topic.clone();
    distillguard::kafka::control::write(
        &cfg,
        &topic,
        &[(alert_id, Some(record.clone().into_bytes()))],
    )?;
    println!("{record}");
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Replay {
            input,
            output,
            config,
            account_stages,
            link_shards,
        } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = open_out(&output)?;
            let summary = replay::replay_staged(
                cfg,
                account_stages,
                link_shards,
                open_in(&input)?,
                &mut out,
            )?;
            eprintln!("{}", serde_json::to_string(&summary)?);
        }
        Command::Simulate {
            scenario,
            seed,
            scale,
            hours,
            output,
            labels,
            prompts,
        } => {
            let opts = sim::SimOptions {
                scenario,
                seed,
                scale,
                hours,
                ..Default::default()
            };
            let mut simulation = sim::generate(&opts)?;
            if prompts == "simhash" {
                let f = distillguard::fingerprint::Fingerprinter::new(
                    distillguard::fingerprint::DEFAULT_REASONING_LEXICON,
                )?;
                sim::strip_prompts(&mut simulation, &f);
            }
            let mut out = open_out(&output)?;
            let mut lab = BufWriter::new(
                File::create(&labels).with_context(|| format!("creating {}", labels.display()))?,
            );
            sim::write_jsonl(&simulation, &mut out, &mut lab)?;
            out.flush()?;
            lab.flush()?;
            tracing::info!(
                events = simulation.events.len(),
                accounts = simulation.labels.len(),
                labels = %labels.display(),
                "simulated"
            );
        }
        Command::Eval(args) => eval_cmd(args)?,
        Command::Run {
            config,
            kafka,
            metrics_addr,
        } => {
            let mut c = Config::load(config.as_deref())?;
            kafka.apply(&mut c);
            if let Some(a) = metrics_addr {
                c.service.metrics_addr = a;
            }
            let cfg = Arc::new(c.validate()?);
            let rt = runtime()?;
            let result = rt.block_on(distillguard::kafka::run(cfg, distillguard::kafka::signal()));
            // The shutdown kept to its deadline: do not wait for Kafka clients still closing
            // on blocking threads (a consumer leaving a rebalancing group can take minutes).
            rt.shutdown_background();
            match result {
                Ok(()) => {
                    tracing::info!("stopped cleanly");
                    std::process::exit(0);
                }
                Err(e) => {
                    tracing::error!(error = %e, "distillguard stopped");
                    std::process::exit(1);
                }
            }
        }
        Command::Demo {
            config,
            metrics_addr,
            scenario,
            seed,
            scale,
            hours,
            speed,
            duration,
            topology,
        } => {
            let mut c = Config::load(config.as_deref())?;
            c.service.metrics_addr = metrics_addr;
            let opts = distillguard::demo::DemoOptions {
                scenario,
                seed,
                scale,
                hours,
                speed,
                duration_secs: duration,
                topology,
                ..Default::default()
            };
            runtime()?.block_on(distillguard::demo::run(
                opts,
                c,
                distillguard::kafka::signal(),
            ))?;
            std::process::exit(0);
        }
        Command::Allow(args) => allow_cmd(args)?,
        Command::Verdict(args) => verdict_cmd(args)?,
        Command::Config {
            print_default,
            check,
        } => {
            if let Some(path) = check {
                load_config(Some(&path))?;
                println!("{}: valid", path.display());
            } else if print_default {
                print!("{}", Config::default_toml());
            } else {
                bail!("say --print-default or --check FILE");
            }
        }
    }
    Ok(())
}
