//! Command line: parse, load config, start. Everything else lives in the library.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use distillguard::config::Config;

/// Events are parsed on worker threads and freed on the engine thread; mimalloc handles that
/// cross-thread pattern far better than the system allocator.
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
    },
    /// Write labelled simulated traffic: events JSON Lines plus a labels file.
    Simulate {
        /// A family name, `all`, `benign` or `attacks`.
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
    /// Score an alerts file against simulator labels.
    Eval {
        #[arg(long)]
        alerts: PathBuf,
        #[arg(long)]
        labels: PathBuf,
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
    },
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

fn open_in(path: &str) -> Result<Box<dyn BufRead + Send>> {
    Ok(if path == "-" {
        Box::new(BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        Box::new(BufReader::with_capacity(
            1 << 20,
            File::open(path).with_context(|| format!("opening {path}"))?,
        ))
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
        } => {
            let cfg = load_config(config.as_deref())?;
            let mut out = open_out(&output)?;
            let summary = replay::replay(cfg, open_in(&input)?, &mut out)?;
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
        Command::Eval {
            alerts,
            labels,
            json,
            min_precision,
            min_recall,
            min_family_recall,
            max_median_ttd_minutes,
            zero_fp_families,
        } => {
            let open = |p: &Path| -> Result<BufReader<File>> {
                Ok(BufReader::new(
                    File::open(p).with_context(|| format!("opening {}", p.display()))?,
                ))
            };
            let alerts = eval::read_alerts(open(&alerts)?)?;
            let labels = eval::read_labels(open(&labels)?)?;
            let report = eval::evaluate(&alerts, &labels);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            let failed = report.check(&eval::Requirements {
                min_precision,
                min_recall,
                min_family_recall,
                max_median_ttd_minutes,
                zero_fp_families,
            });
            if !failed.is_empty() {
                bail!("requirements not met:\n  {}", failed.join("\n  "));
            }
        }
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
