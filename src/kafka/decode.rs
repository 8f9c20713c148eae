//! Decoding and fingerprinting off the engine thread, as `replay` does.
//!
//! The consumer thread copies each batch of polled records into one buffer and hands it to a
//! few decode threads; decoded batches come back numbered and are taken strictly in the order
//! they were handed out, so records (and partition ends) reach the event-time merge in the
//! order the broker gave them: order per partition is kept, and the merge sees what it saw
//! when decoding was inline. Batches are buffers reused from batch to batch, not one
//! allocation per record.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rdkafka::message::{BorrowedMessage, Message};

use super::observation::{Payload, Progress};
use crate::detect::Emitted;
use crate::engine::Observation;
use crate::event::{DecodeError, Decoder, Event};

/// Decode threads at most (the engine thread takes about as long per record as a decoder).
const MAX_WORKERS: usize = 4;

/// One input record, decoded.
pub struct Item {
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp (ms), for event-to-alert latency.
    pub msg_ts: i64,
    /// Decode time when this record's processing time is sampled.
    pub sampled: Option<Duration>,
    pub decoded: Result<Event, DecodeError>,
    /// On the observations topic (the link stage): the account stage's observation of the
    /// event.
    pub observation: Option<Box<Observation>>,
    /// On the links topic (the cluster stage): what a link shard decided on an event. The
    /// item's event then stands for that event's time only (the records name the accounts).
    pub links: Option<Box<Linked>>,
    /// The last item of its record (a batch record of the observations topic gives one item
    /// per event, all at its offset): only then is the offset processed.
    pub last: bool,
    /// Original key and bytes, kept only for malformed records (the dead-letter copy).
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl Item {
    /// Merge key during catch-up: event time (malformed records go first, they carry none).
    pub fn order(&self) -> i64 {
        self.decoded.as_ref().map_or(i64::MIN, |e| e.ts_ms)
    }
}

/// A link shard's records on one event of account `account` (its index key).
#[derive(Debug)]
pub struct Linked {
    pub account: u64,
    pub emitted: Emitted,
}

/// What a batch holds, in poll order.
// Records travel unboxed: a batch is one allocation, not one per record (as in `replay`).
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Record(Item),
    /// The broker reported the partition's end here.
    Eof(i32),
    /// On the observations topic: an account instance's progress on this partition.
    Progress {
        partition: i32,
        offset: i64,
        progress: Progress,
    },
}

/// What a record holds: an input event, or an observations topic's record.
// Transient, one record at a time.
#[allow(clippy::large_enum_variant)]
enum Got {
    Event(Event),
    Observations(Payload),
    Links(super::links::Payload),
}

/// Which topic's records are decoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Request events (`distillguard.v1.RequestEvent` or JSON).
    Events,
    /// `distillguard.v1.Observation`: the link stage's input.
    Observations,
    /// `distillguard.v1.Links`: the cluster stage's input.
    Links,
}

/// How the record's bytes are decoded.
#[derive(Clone)]
pub struct Decode {
    decoder: Decoder,
    json: bool,
    input: Input,
}

impl Decode {
    pub fn new(decoder: Decoder, json: bool) -> Self {
        Self {
            decoder,
            json,
            input: Input::Events,
        }
    }

    /// Decodes the observations topic's records instead (the link stage's input).
    pub fn observations(mut self) -> Self {
        self.input = Input::Observations;
        self
    }

    /// Decodes the links topic's records instead (the cluster stage's input).
    pub fn links(mut self) -> Self {
        self.input = Input::Links;
        self
    }

    /// Decodes one record into `out`: one item, or one per event of a batch record of the
    /// observations topic. `poison`: dead-lettered unread; `sample`: decode time recorded.
    pub fn record_into(
        &self,
        rec: RecordRef<'_>,
        poison: bool,
        sample: bool,
        out: &mut Vec<Decoded>,
    ) {
        let t0 = sample.then(Instant::now);
        let decoded = if poison {
            Err(DecodeError::Poison)
        } else {
            // A decoder bug costs one record (dead-lettered), not the partition.
            std::panic::catch_unwind(AssertUnwindSafe(|| match self.input {
                Input::Observations => {
                    super::observation::decode_record(rec.payload).map(Got::Observations)
                }
                Input::Links => super::links::decode_record(rec.payload).map(Got::Links),
                Input::Events if self.json => self.decoder.decode_json(rec.payload).map(Got::Event),
                Input::Events => self.decoder.decode_protobuf(rec.payload).map(Got::Event),
            }))
            .unwrap_or_else(|p| Err(DecodeError::Internal(crate::replay::panic_message(&*p))))
        };
        let item = |decoded, observation, last, sampled| {
            Decoded::Record(Item {
                partition: rec.partition,
                offset: rec.offset,
                msg_ts: rec.msg_ts,
                sampled,
                decoded,
                observation,
                links: None,
                last,
                key: None,
                payload: None,
            })
        };
        let linked = |(account, ts_ms, emitted): (u64, i64, Emitted), last, sampled| {
            Decoded::Record(Item {
                partition: rec.partition,
                offset: rec.offset,
                msg_ts: rec.msg_ts,
                sampled,
                decoded: Ok(Event::new("", ts_ms, "")),
                observation: None,
                links: Some(Box::new(Linked { account, emitted })),
                last,
                key: None,
                payload: None,
            })
        };
        match decoded {
            Ok(Got::Event(ev)) => out.push(item(Ok(ev), None, true, t0.map(|t| t.elapsed()))),
            Ok(Got::Observations(Payload::Event(ev, obs))) => out.push(item(
                Ok(ev),
                Some(Box::new(obs)),
                true,
                t0.map(|t| t.elapsed()),
            )),
            Ok(Got::Observations(Payload::Batch(events))) => {
                let sampled = t0.map(|t| t.elapsed() / events.len().max(1) as u32);
                let n = events.len();
                for (i, (ev, obs)) in events.into_iter().enumerate() {
                    out.push(item(Ok(ev), Some(Box::new(obs)), i + 1 == n, sampled));
                }
            }
            Ok(Got::Observations(Payload::Progress(progress)))
            | Ok(Got::Links(super::links::Payload::Progress(progress))) => {
                out.push(Decoded::Progress {
                    partition: rec.partition,
                    offset: rec.offset,
                    progress,
                })
            }
            Ok(Got::Links(super::links::Payload::Event(a, ts, e))) => {
                out.push(linked((a, ts, e), true, t0.map(|t| t.elapsed())))
            }
            Ok(Got::Links(super::links::Payload::Batch(all))) => {
                let sampled = t0.map(|t| t.elapsed() / all.len().max(1) as u32);
                let n = all.len();
                for (i, l) in all.into_iter().enumerate() {
                    out.push(linked(l, i + 1 == n, sampled));
                }
            }
            Err(e) => out.push(Decoded::Record(Item {
                partition: rec.partition,
                offset: rec.offset,
                msg_ts: rec.msg_ts,
                sampled: t0.map(|t| t.elapsed()),
                decoded: Err(e),
                observation: None,
                links: None,
                last: true,
                // Kept for the dead-letter copy.
                key: rec.key.map(<[u8]>::to_vec),
                payload: Some(rec.payload.to_vec()),
            })),
        }
    }
}

/// A record's fields, borrowed from the consumer or from a batch.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    pub partition: i32,
    pub offset: i64,
    pub msg_ts: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    pub fn of(m: &'a BorrowedMessage<'_>) -> Self {
        Self {
            partition: m.partition(),
            offset: m.offset(),
            msg_ts: m.timestamp().to_millis().unwrap_or(0),
            key: m.key(),
            payload: m.payload().unwrap_or(&[]),
        }
    }
}

enum Entry {
    Record {
        partition: i32,
        offset: i64,
        msg_ts: i64,
        key: Option<Range<usize>>,
        payload: Range<usize>,
        poison: bool,
        sample: bool,
    },
    Eof(i32),
}

/// Polled records copied out of the consumer, waiting to be decoded.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Where the decoded batch goes (an emptied one, reused).
    out: Vec<Decoded>,
}

impl Batch {
    pub fn push(&mut self, rec: RecordRef<'_>, poison: bool, sample: bool) {
        let key = rec.key.map(|k| self.copy(k));
        let payload = self.copy(rec.payload);
        self.entries.push(Entry::Record {
            partition: rec.partition,
            offset: rec.offset,
            msg_ts: rec.msg_ts,
            key,
            payload,
            poison,
            sample,
        });
    }

    pub fn eof(&mut self, partition: i32) {
        self.entries.push(Entry::Eof(partition));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    fn copy(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }

    /// Decodes every entry into `self.out`, and empties the rest for reuse.
    fn decode(&mut self, d: &Decode) {
        self.out.clear();
        for e in &self.entries {
            match e {
                Entry::Eof(p) => self.out.push(Decoded::Eof(*p)),
                Entry::Record {
                    partition,
                    offset,
                    msg_ts,
                    key,
                    payload,
                    poison,
                    sample,
                } => {
                    let rec = RecordRef {
                        partition: *partition,
                        offset: *offset,
                        msg_ts: *msg_ts,
                        key: key.clone().map(|k| &self.bytes[k]),
                        payload: &self.bytes[payload.clone()],
                    };
                    d.record_into(rec, *poison, *sample, &mut self.out);
                }
            }
        }
        self.clear();
    }
}

/// The decode threads and the batches handed to them, put back in order.
pub struct Pool {
    tx: Option<Sender<(u64, Batch)>>,
    rx: Receiver<(u64, Batch)>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
    /// Number of the next batch handed out, and of the next one to be taken back.
    sent: u64,
    next: u64,
    /// Decoded batches that came back before their turn.
    waiting: BTreeMap<u64, Batch>,
    /// Emptied batches, for reuse.
    spare: Vec<Batch>,
}

/// The decode threads are gone (one panicked outside the decoder's own guard): the batches in
/// flight are lost, so the consumer must stop rather than commit past them.
#[derive(Debug)]
pub struct Lost;

impl Pool {
    /// One decode thread per core but one (the engine thread's), and at least two: a spare
    /// costs an idle thread, and batches then always come back through the reordering.
    pub fn workers() -> usize {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get().saturating_sub(1))
            .clamp(2, MAX_WORKERS)
    }

    pub fn new(decode: &Decode, workers: usize) -> std::io::Result<Self> {
        let (tx, work) = crossbeam_channel::bounded::<(u64, Batch)>(workers + 2);
        let (done, rx) = crossbeam_channel::unbounded::<(u64, Batch)>();
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let work = work.clone();
            let done = done.clone();
            let d = decode.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dg-decode-{i}"))
                    .spawn(move || {
                        for (seq, mut batch) in work {
                            batch.decode(&d);
                            if done.send((seq, batch)).is_err() {
                                return;
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Some(tx),
            rx,
            threads,
            workers,
            sent: 0,
            next: 0,
            waiting: BTreeMap::new(),
            spare: Vec::new(),
        })
    }

    pub fn workers_count(&self) -> usize {
        self.workers
    }

    /// An empty batch to fill.
    pub fn batch(&mut self) -> Batch {
        self.spare.pop().unwrap_or_default()
    }

    /// Hands `batch` to the first free decode thread (waits while all are busy and the queue is
    /// full).
    pub fn submit(&mut self, batch: Batch) -> Result<(), Lost> {
        let tx = self.tx.as_ref().ok_or(Lost)?;
        tx.send((self.sent, batch)).map_err(|_| Lost)?;
        self.sent += 1;
        Ok(())
    }

    /// Batches handed out and not yet taken back.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.next
    }

    /// The next batch in order, waiting for it if `wait`; `None` if none is in flight, or (not
    /// waiting) it is not decoded yet. Give it back with [`Pool::recycle`] once emptied.
    pub fn next(&mut self, wait: bool) -> Result<Option<Vec<Decoded>>, Lost> {
        loop {
            if self.next == self.sent {
                return Ok(None);
            }
            if let Some(mut b) = self.waiting.remove(&self.next) {
                self.next += 1;
                let out = std::mem::take(&mut b.out);
                self.spare.push(b);
                return Ok(Some(out));
            }
            let (seq, b) = if wait {
                self.rx.recv().map_err(|_| Lost)?
            } else {
                match self.rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return Ok(None),
                    Err(TryRecvError::Disconnected) => return Err(Lost),
                }
            };
            if seq >= self.next {
                self.waiting.insert(seq, b);
            } else {
                self.spare.push(b); // discarded
            }
        }
    }

    /// Gives back an emptied output vector for reuse.
    pub fn recycle(&mut self, mut out: Vec<Decoded>) {
        out.clear();
        if let Some(b) = self.spare.iter_mut().find(|b| b.out.capacity() == 0) {
            b.out = out;
        }
    }

    /// Forgets every batch in flight (a rebalance re-positioned the partitions: what they hold
    /// is stale); they are dropped as they come back.
    pub fn discard(&mut self) {
        for (_, b) in std::mem::take(&mut self.waiting) {
            self.spare.push(b);
        }
        self.next = self.sent;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprinter;

    fn decode() -> Decode {
        let f = Fingerprinter::new::<&str>(&[]).expect("fingerprinter");
        Decode::new(Decoder::new(f), true)
    }

    fn line(i: i64) -> String {
        format!(
            r#"{{"event_id":"e{i}","ts":{},"account_id":"a{}"}}"#,
            1_793_577_600_000 + i,
            i % 7
        )
    }

    fn offsets(out: &[Decoded]) -> Vec<(i32, i64, bool)> {
        out.iter()
            .map(|d| match d {
                Decoded::Record(it) => (it.partition, it.offset, it.decoded.is_ok()),
                Decoded::Eof(p) => (*p, -1, true),
                Decoded::Progress { .. } => panic!("not on the input topic"),
            })
            .collect()
    }

    fn fill(pool: &mut Pool, from: i64, n: i64) -> Vec<(i32, i64, bool)> {
        let mut b = pool.batch();
        let mut want = Vec::new();
        for o in from..from + n {
            let p = (o % 3) as i32;
            let text = if o % 11 == 0 {
                "not json".to_string()
            } else {
                line(o)
            };
            b.push(
                RecordRef {
                    partition: p,
                    offset: o,
                    msg_ts: 0,
                    key: Some(b"k"),
                    payload: text.as_bytes(),
                },
                false,
                o % 2 == 0,
            );
            want.push((p, o, o % 11 != 0));
        }
        b.eof(2);
        want.push((2, -1, true));
        pool.submit(b).expect("submit");
        want
    }

    #[test]
    fn batches_come_back_in_the_order_handed_out() {
        let mut pool = Pool::new(&decode(), 3).expect("pool");
        let mut want = Vec::new();
        for k in 0..20 {
            want.extend(fill(&mut pool, k * 50, 50));
        }
        let mut got = Vec::new();
        while let Some(out) = pool.next(true).expect("pool alive") {
            got.extend(offsets(&out));
            for d in &out {
                if let Decoded::Record(it) = d {
                    assert_eq!(it.sampled.is_some(), it.offset % 2 == 0);
                    assert_eq!(it.payload.is_some(), it.decoded.is_err());
                    assert_eq!(it.key.as_deref(), it.decoded.is_err().then_some(&b"k"[..]));
                }
            }
            pool.recycle(out);
        }
        assert_eq!(got, want);
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn discarded_batches_never_come_back() {
        let mut pool = Pool::new(&decode(), 2).expect("pool");
        for k in 0..5 {
            fill(&mut pool, k * 10, 10);
        }
        pool.discard();
        assert_eq!(pool.in_flight(), 0);
        let want = fill(&mut pool, 1000, 10);
        let out = pool.next(true).expect("alive").expect("one batch");
        assert_eq!(offsets(&out), want);
        assert!(pool.next(true).expect("alive").is_none());
    }
}
