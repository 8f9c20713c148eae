//! `distillguard replay`: the detectors over a JSON Lines file, in file order.
//!
//! Lines are read in batches; each batch is parsed and fingerprinted in parallel (rayon) while
//! the engine, on its own thread, processes the previous batch strictly in order. The output
//! is therefore the same, byte for byte, whatever the parallelism.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::alert::Alert;
use crate::config::ValidConfig;
use crate::engine::{Engine, Gauges, Outcome, Stats};
use crate::event::decode::MAX_PROMPT_BYTES;
use crate::event::{DecodeError, Decoder, Event};
use crate::fingerprint::Fingerprinter;

/// Lines per batch handed from the parse stage to the engine.
const BATCH: usize = 8192;
/// Longest line read; longer lines are skipped as `too_long` without being held in memory.
pub const MAX_LINE: usize = MAX_PROMPT_BYTES + 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing alerts: {0}")]
    Write(std::io::Error),
    #[error("building the prompt lexicon: {0}")]
    Lexicon(#[from] aho_corasick::BuildError),
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub lines: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub alerts: u64,
    pub engine: Stats,
    pub state: Gauges,
    pub seconds: f64,
}

/// Builds the decoder the configuration asks for.
pub fn decoder(cfg: &ValidConfig) -> Result<Decoder, aho_corasick::BuildError> {
    Ok(Decoder::new(Fingerprinter::new(
        &cfg.raw.fingerprint.reasoning_lexicon,
    )?))
}

enum Line {
    Event(Box<Event>),
    Rejected(&'static str),
    Blank,
}

/// Reads up to `BATCH` lines. Returns false at end of input.
fn read_batch(
    input: &mut dyn BufRead,
    lines: &mut Vec<Result<Vec<u8>, ()>>,
) -> std::io::Result<bool> {
    lines.clear();
    while lines.len() < BATCH {
        let mut buf = Vec::new();
        let n = (&mut *input)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        if buf.last() != Some(&b'\n') && n == MAX_LINE {
            // Too long: discard the rest of the line.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let m = (&mut *input).take(1 << 20).read_until(b'\n', &mut sink)?;
                if m == 0 || sink.last() == Some(&b'\n') {
                    break;
                }
            }
            lines.push(Err(()));
        } else {
            lines.push(Ok(buf));
        }
    }
    Ok(true)
}

fn parse(decoder: &Decoder, line: &Result<Vec<u8>, ()>) -> Line {
    match line {
        Err(()) => Line::Rejected(DecodeError::TooLong("line").reason()),
        Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Line::Blank,
        Ok(b) => match decoder.decode_json(b) {
            Ok(e) => Line::Event(Box::new(e)),
            Err(e) => Line::Rejected(e.reason()),
        },
    }
}

/// Replays `input` through a fresh engine, writing every alert as a JSON line to `output`.
pub fn replay(
    cfg: Arc<ValidConfig>,
    mut input: Box<dyn BufRead + Send>,
    output: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let decoder = decoder(&cfg)?;
    let mut engine = Engine::new(cfg);
    let mut summary = Summary::default();
    let (tx, rx) = crossbeam_channel::bounded::<std::io::Result<Vec<Line>>>(4);

    let reader = std::thread::spawn(move || {
        let mut raw = Vec::with_capacity(BATCH);
        loop {
            let more = match read_batch(&mut input, &mut raw) {
                Ok(m) => m,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let parsed: Vec<Line> = raw
                .par_iter()
                .with_min_len(256)
                .map(|l| parse(&decoder, l))
                .collect();
            if tx.send(Ok(parsed)).is_err() || !more {
                return;
            }
        }
    });

    let mut alerts: Vec<Alert> = Vec::new();
    let mut buf = Vec::with_capacity(1 << 16);
    for batch in rx {
        let batch = batch.map_err(ReplayError::Read)?;
        for line in batch {
            match line {
                Line::Blank => {}
                Line::Rejected(reason) => {
                    summary.lines += 1;
                    *summary.rejected.entry(reason).or_default() += 1;
                }
                Line::Event(ev) => {
                    summary.lines += 1;
                    let outcome: Outcome = engine.process(&ev, &mut alerts);
                    *summary.outcomes.entry(outcome.label()).or_default() += 1;
                    for a in alerts.drain(..) {
                        buf.clear();
                        serde_json::to_writer(&mut buf, &a)
                            .map_err(|e| ReplayError::Write(e.into()))?;
                        buf.push(b'\n');
                        output.write_all(&buf).map_err(ReplayError::Write)?;
                        summary.alerts += 1;
                    }
                }
            }
        }
    }
    let _ = reader.join();
    output.flush().map_err(ReplayError::Write)?;
    summary.engine = engine.stats().clone();
    summary.state = engine.gauges();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
