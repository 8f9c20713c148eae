//! `distillguard replay`: the detectors over a JSON Lines file, in file order.
//!
//! Lines are read in batches; batches are parsed and fingerprinted on one thread per core
//! while the engine, on the calling thread, takes the parsed batches back strictly in file
//! order. The output is therefore the same, byte for byte, whatever the parallelism.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use crate::alert::Alert;
use crate::config::ValidConfig;
use crate::engine::staged::Staged;
use crate::engine::{Engine, Gauges, Outcome, Stats};
use crate::event::decode::{DebugFault, MAX_RECORD_BYTES};
use crate::event::{DecodeError, Decoder, Event};
use crate::fingerprint::Fingerprinter;

/// Parser threads at most (the engine takes about a third of the CPU a parser does per line).
const MAX_PARSERS: usize = 8;

/// Longest line read; longer lines are skipped as `too_long` without being held in memory.
pub const MAX_LINE: usize = MAX_RECORD_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading input: {0}")]
    Read(std::io::Error),
    #[error("writing alerts: {0}")]
    Write(std::io::Error),
    #[error("building the prompt lexicon: {0}")]
    Lexicon(#[from] crate::fingerprint::LexiconError),
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

/// Builds the decoder the configuration asks for (with the fault [`DEBUG_FAULT_ENV`] names,
/// if it is set: tests of the defences against poison records).
///
/// [`DEBUG_FAULT_ENV`]: crate::event::decode::DEBUG_FAULT_ENV
pub fn decoder(cfg: &ValidConfig) -> Result<Decoder, crate::fingerprint::LexiconError> {
    Ok(
        Decoder::new(Fingerprinter::new(&cfg.raw.fingerprint.reasoning_lexicon)?)
            .with_debug_fault(DebugFault::from_env()),
    )
}

/// The message a caught panic carried.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

// Events travel unboxed: a batch is one allocation, not one per event.
#[allow(clippy::large_enum_variant)]
enum Line {
    Event(Event),
    Rejected(&'static str),
    Blank,
}

/// Splits input into batches of whole lines without a copy or an allocation per line.
struct LineReader<R> {
    input: R,
    buf: Vec<u8>,
    /// Batch buffers the parsers are done with, for reuse: a fresh 4 MiB buffer per batch
    /// would be zeroed and page-faulted in again each time.
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    eof: bool,
}

/// One batch: a buffer of whole lines and where each starts and ends (`None`: over-long).
struct Batch {
    bytes: Vec<u8>,
    lines: Vec<Option<(usize, usize)>>,
}

impl<R: Read> LineReader<R> {
    /// Batch size: small enough that filling and draining the pipeline at the start and end
    /// costs little, large enough that per-batch overhead does not show.
    const CHUNK: usize = 1 << 20;
    /// A buffer holds a chunk after the partial line carried over from the last one, so
    /// that it never grows (a grown buffer is a fresh allocation, zeroed by the kernel).
    const CAPACITY: usize = 2 * Self::CHUNK;

    fn new(input: R, spare: crossbeam_channel::Receiver<Vec<u8>>) -> Self {
        Self {
            input,
            buf: Vec::with_capacity(Self::CAPACITY),
            spare,
            skipping: false,
            eof: false,
        }
    }

    /// The next batch of lines, or `None` at the end of input.
    fn next_batch(&mut self) -> std::io::Result<Option<Batch>> {
        loop {
            if self.eof && self.buf.is_empty() {
                return Ok(None);
            }
            if !self.eof
                && (self.buf.len() < Self::CHUNK || memchr::memchr(b'\n', &self.buf).is_none())
            {
                // Read into the spare capacity (no zeroing first) until the chunk is full or
                // the input ends.
                let start = self.buf.len();
                let want = (Self::CHUNK.max(start + (1 << 20)) - start) as u64;
                let n = (&mut self.input).take(want).read_to_end(&mut self.buf)?;
                if (n as u64) < want {
                    self.eof = true;
                }
            }
            // Take everything up to the last newline (all of it at the end of input).
            let cut = match memchr::memrchr(b'\n', &self.buf) {
                Some(i) => i + 1,
                None if self.eof => self.buf.len(),
                None => {
                    if self.buf.len() > MAX_LINE {
                        // No newline in sight: an over-long line; drop what we have.
                        self.buf.clear();
                        if !self.skipping {
                            self.skipping = true;
                            return Ok(Some(Batch {
                                bytes: Vec::new(),
                                lines: vec![None],
                            }));
                        }
                    }
                    continue;
                }
            };
            // The partial line after the cut starts the next buffer.
            let mut next = self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(Self::CAPACITY));
            next.clear();
            next.extend_from_slice(&self.buf[cut..]);
            self.buf.truncate(cut);
            let bytes = std::mem::replace(&mut self.buf, next);
            let mut lines = Vec::with_capacity(bytes.len() / 256 + 1);
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &bytes) {
                self.push_line(&mut lines, start, end);
                start = end + 1;
            }
            if start < bytes.len() {
                self.push_line(&mut lines, start, bytes.len());
            }
            return Ok(Some(Batch { bytes, lines }));
        }
    }

    fn push_line(&mut self, lines: &mut Vec<Option<(usize, usize)>>, start: usize, end: usize) {
        if self.skipping {
            // The tail of a line already reported as over-long.
            self.skipping = false;
            return;
        }
        if end - start > MAX_LINE {
            lines.push(None);
        } else {
            lines.push(Some((start, end)));
        }
    }
}

fn parse(decoder: &Decoder, bytes: &[u8], line: Option<(usize, usize)>) -> Line {
    match line {
        None => Line::Rejected(DecodeError::TooLong("line").reason()),
        Some((s, e)) => {
            let b = &bytes[s..e];
            if b.iter().all(|c| c.is_ascii_whitespace()) {
                Line::Blank
            } else {
                // A decoder bug costs one line, not the replay.
                let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| decoder.decode_json(b)))
                    .unwrap_or_else(|p| Err(DecodeError::Internal(panic_message(&*p))));
                match decoded {
                    Ok(ev) => Line::Event(ev),
                    Err(err) => Line::Rejected(err.reason()),
                }
            }
        }
    }
}

/// What judges the events in order: one engine, or the staged topology in one process.
trait Judge {
    fn process_all<'e, E>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
        out: &mut Vec<Alert>,
        each: impl FnMut(Outcome, &mut Vec<Alert>) -> Result<(), E>,
    ) -> Result<(), E>;
    fn stats(&self) -> Stats;
    fn gauges(&self) -> Gauges;
}

impl Judge for Engine {
    fn process_all<'e, E>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
        out: &mut Vec<Alert>,
        each: impl FnMut(Outcome, &mut Vec<Alert>) -> Result<(), E>,
    ) -> Result<(), E> {
        Engine::process_all(self, events, out, each)
    }
    fn stats(&self) -> Stats {
        Engine::stats(self).clone()
    }
    fn gauges(&self) -> Gauges {
        Engine::gauges(self)
    }
}

impl Judge for Staged {
    fn process_all<'e, E>(
        &mut self,
        events: impl IntoIterator<Item = &'e Event>,
        out: &mut Vec<Alert>,
        each: impl FnMut(Outcome, &mut Vec<Alert>) -> Result<(), E>,
    ) -> Result<(), E> {
        Staged::process_all(self, events, out, each)
    }
    fn stats(&self) -> Stats {
        Staged::stats(self)
    }
    fn gauges(&self) -> Gauges {
        Staged::gauges(self)
    }
}

/// Replays `input` through a fresh engine, writing every alert as a JSON line to `output`.
pub fn replay(
    cfg: Arc<ValidConfig>,
    input: Box<dyn Read + Send>,
    output: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    replay_staged(cfg, 0, 0, input, output)
}

/// [`replay`] through the staged topology in one process when `account_instances` is at
/// least one: that many `account` engines keyed by account feeding one `link` engine, or,
/// with `link_shards` at least one, that many link shards keyed by linking value and a
/// cluster stage (see [`Staged`]); 0: one engine.
pub fn replay_staged(
    cfg: Arc<ValidConfig>,
    account_instances: usize,
    link_shards: usize,
    input: Box<dyn Read + Send>,
    output: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    if account_instances == 0 && link_shards == 0 {
        let engine = Engine::new(cfg.clone());
        replay_with(cfg, engine, input, output)
    } else {
        let staged = Staged::sharded(cfg.clone(), account_instances, link_shards);
        replay_with(cfg, staged, input, output)
    }
}

fn replay_with(
    cfg: Arc<ValidConfig>,
    engine: impl Judge,
    input: Box<dyn Read + Send>,
    output: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let decoder = decoder(&cfg)?;
    // One parser per core; more than a few cannot outrun the one engine thread.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(MAX_PARSERS));
    // Batches numbered in file order go to the first free parser; the engine (this thread)
    // takes the parsed batches back in that order. No batch waits for another to be parsed,
    // and idle threads block on a channel rather than spin. On an error the threads are left
    // to stop by themselves as the channels close (the reader may be blocked on stdin).
    let (batch_tx, batch_rx) = crossbeam_channel::bounded::<(u64, std::io::Result<Batch>)>(2);
    let (parsed_tx, parsed_rx) =
        crossbeam_channel::bounded::<(u64, std::io::Result<Vec<Line>>)>(workers + 2);
    // Parsed batches' buffers go back to the reader, and the engine's emptied line vectors
    // to the parsers (dropped when they have enough): fresh multi-megabyte allocations would
    // be page-faulted and zeroed by the kernel, batch after batch.
    let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Vec<u8>>(workers + 2);
    let (spare_lines_tx, spare_lines_rx) = crossbeam_channel::bounded::<Vec<Line>>(workers + 4);
    let mut threads = Vec::with_capacity(workers + 1);
    threads.push(
        std::thread::Builder::new()
            .name("dg-reader".into())
            .spawn(move || {
                let mut lines = LineReader::new(input, spare_rx);
                for seq in 0u64.. {
                    let next = match lines.next_batch() {
                        Ok(Some(b)) => Ok(b),
                        Ok(None) => return,
                        Err(e) => Err(e),
                    };
                    let failed = next.is_err();
                    if batch_tx.send((seq, next)).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(ReplayError::Read)?,
    );
    for i in 0..workers {
        let batches = batch_rx.clone();
        let parsed = parsed_tx.clone();
        let decoder = decoder.clone();
        let spare = spare_tx.clone();
        let spare_lines = spare_lines_rx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("dg-parse-{i}"))
                .spawn(move || {
                    for (seq, batch) in batches {
                        let out = batch.map(|b| {
                            let mut lines = spare_lines.try_recv().unwrap_or_default();
                            lines.clear();
                            lines.extend(b.lines.iter().map(|&l| parse(&decoder, &b.bytes, l)));
                            let _ = spare.try_send(b.bytes);
                            lines
                        });
                        if parsed.send((seq, out)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(ReplayError::Read)?,
        );
    }
    drop(batch_rx);
    drop(parsed_tx);
    drop(spare_tx);
    drop(spare_lines_rx);
    let summary = run_engine(engine, parsed_rx, spare_lines_tx, output, started)?;
    for t in threads {
        if t.join().is_err() {
            // Its batches never arrived: the alerts written stop short of the input's end.
            return Err(ReplayError::Read(std::io::Error::other(
                "a reader or parser thread panicked",
            )));
        }
    }
    Ok(summary)
}

/// The engine side of [`replay`]: parsed batches, put back in file order, through the engine.
fn run_engine(
    mut engine: impl Judge,
    parsed: crossbeam_channel::Receiver<(u64, std::io::Result<Vec<Line>>)>,
    spare_lines: crossbeam_channel::Sender<Vec<Line>>,
    output: &mut dyn Write,
    started: Instant,
) -> Result<Summary, ReplayError> {
    let mut summary = Summary::default();
    let mut waiting: BTreeMap<u64, std::io::Result<Vec<Line>>> = BTreeMap::new();
    let mut next = 0u64;
    let in_order = std::iter::from_fn(|| loop {
        if let Some(b) = waiting.remove(&next) {
            next += 1;
            return Some(b);
        }
        let (seq, b) = parsed.recv().ok()?;
        waiting.insert(seq, b);
    });
    let mut alerts: Vec<Alert> = Vec::new();
    let mut buf = Vec::with_capacity(1 << 16);
    // Per-outcome counts in a flat array (the map is filled once, at the end).
    let outcomes = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Late,
        Outcome::OutOfRange,
    ];
    let mut counts = [0u64; 4];
    for batch in in_order {
        let batch = batch.map_err(ReplayError::Read)?;
        for line in &batch {
            match line {
                Line::Blank => {}
                Line::Rejected(reason) => {
                    summary.lines += 1;
                    *summary.rejected.entry(reason).or_default() += 1;
                }
                Line::Event(_) => summary.lines += 1,
            }
        }
        let events = batch.iter().filter_map(|line| match line {
            Line::Event(ev) => Some(ev),
            _ => None,
        });
        engine.process_all(events, &mut alerts, |outcome, alerts| {
            counts[outcome as usize] += 1;
            for a in alerts.drain(..) {
                buf.clear();
                serde_json::to_writer(&mut buf, &a).map_err(|e| ReplayError::Write(e.into()))?;
                buf.push(b'\n');
                output.write_all(&buf).map_err(ReplayError::Write)?;
                summary.alerts += 1;
            }
            Ok::<(), ReplayError>(())
        })?;
        let mut batch = batch;
        batch.clear();
        let _ = spare_lines.try_send(batch);
    }
    for o in outcomes {
        let n = counts[o as usize];
        if n > 0 {
            summary.outcomes.insert(o.label(), n);
        }
    }
    output.flush().map_err(ReplayError::Write)?;
    summary.engine = engine.stats();
    summary.state = engine.gauges();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
