//! The event-time merge of the owned partitions, without I/O: it is given records and the
//! current time, and answers with the records the engine may take now, in event-time order,
//! and with pause/resume intents for the consumer.
//!
//! Partitions are fetched in chunks, and a chunk can span minutes of event time; taken chunk by
//! chunk, one partition would push the engine's newest event time so far ahead that the next
//! partition's records count as late. So a record is taken only if no partition with nothing
//! buffered could still deliver an older one:
//! - not past the newest event time of a partition still catching up (reading the backlog it
//!   had when assigned), unless it has been silent for [`CATCHUP_WAIT`];
//! - not more than `slack_ms` (half the late allowance) past the newest event time of a partition
//!   with more on its way (the broker has not reported it at its end since its last record),
//!   unless it has been silent for `idle_wait` (`kafka.idle_partition_ms`);
//! - not more than `slack_ms` past where the merge had reached when a partition at its end ran
//!   empty (its next record is produced after that; until [`END_GRACE`] after its last record
//!   it still counts as having more on its way), unless it has been silent for `idle_wait`.
//!
//! On the observations topic (the link stage, [`Merge::with_writers`]), each partition's
//! writer, an account instance, also reports its progress every fraction of a second (the
//! oldest event time it may still take, at most the newest it has taken: see
//! [`Merge::safe_ts`]; and whether its input still has records on their way).
//! Nothing passes the progress of a partition whose writer reports that it is behind, however
//! quiet the partition is: an account instance reading a backlog or rebuilding writes older
//! observations than the others, and the merge waits for them rather than taking them late.
//! A writer silent for `idle_wait`, or not heard from since the assignment, is gone (its
//! instance died or the account stage is rebalancing): the partition is held at its progress
//! until a writer reports again, for at most the writer wait. With [`Merge::strict`] (the link
//! and cluster stages), a writer that has caught up still holds the others at its progress
//! while that moves forward, so that records leave in event-time order across partitions, as
//! one process would take them; once its progress has stood still for `idle_wait`, or without
//! `strict`, it holds nothing, and the rules above apply.
//!
//! A partition whose buffer reaches [`HIGH`] records is paused, and resumed at [`LOW`] (unless
//! the whole consumer is held back for delivery back-pressure).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// A partition is paused when this many of its records wait in the merge; resumed below LOW.
pub const HIGH: usize = 20_000;
pub const LOW: usize = 5_000;
/// How long the merge waits for a silent partition that is still catching up.
pub const CATCHUP_WAIT: Duration = Duration::from_secs(5);
/// How long after its last record a partition the broker reports at its end is still bounded
/// by its own newest record: a producer sends each partition's batch when it is full or has
/// lingered, so one partition's older records can reach the broker after another's newer ones.
pub const END_GRACE: Duration = Duration::from_secs(1);

/// What the consumer should do for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Pause(i32),
    Resume(i32),
}

/// How a partition is caught up after an assignment: re-read from `start`; records before
/// `target` (the committed offset) only rebuild state, their alerts were sent before; up to
/// `end` (the log end when assigned) the partition is catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub target: i64,
    pub end: i64,
}

/// A record the merge lets through.
#[derive(Debug)]
pub struct Taken<T> {
    pub partition: i32,
    pub offset: i64,
    /// At or past the partition's target: alerts and dead letters are sent, offsets tracked.
    pub live: bool,
    /// The last offset this record accounts for: its own, or that of the progress records
    /// that followed it (they carry no event, and count as processed with it).
    pub through: i64,
    pub item: T,
}

struct Entry<T> {
    offset: i64,
    through: i64,
    /// Event time (ms); records without one (malformed) go first.
    order: i64,
    item: T,
}

struct Part<T> {
    target: i64,
    end: i64,
    done: bool,
    /// The broker reported the partition at its end and nothing has arrived since.
    at_end: bool,
    paused: bool,
    /// Newest event time received from this partition.
    last_ts: i64,
    /// When its last record arrived.
    last_arrival: Option<Instant>,
    /// While its buffer is empty: the event time the merge had reached and when that was
    /// noted. Cleared when a record arrives or the whole merge runs empty.
    anchor: Option<(i64, Instant)>,
    buf: VecDeque<Entry<T>>,
    /// Next offset expected from the broker (older ones are stale after a seek).
    position: i64,
    /// The last record buffered has more items to come (at its offset).
    open: bool,
    /// The writer's last progress report: whether it is behind, and when it was heard.
    upstream: Option<(bool, Instant)>,
    /// The writer's last reported progress (no record it writes later is older), and when it
    /// last moved forward.
    progress_ts: i64,
    advanced: Option<Instant>,
}

/// The merge state of one assignment.
pub struct Merge<T> {
    parts: BTreeMap<i32, Part<T>>,
    idle_wait: Duration,
    slack_ms: i64,
    /// Set while window state is being rebuilt after a start or rebalance.
    catchup_started: Option<Instant>,
    /// Partitions have writers that report their progress: how long one gone silent is
    /// waited for.
    writer_wait: Option<Duration>,
    /// When the current assignment began.
    assigned_at: Option<Instant>,
    /// Nothing passes the progress of a partition whose writer is heard and moving
    /// ([`Merge::strict`]).
    strict: bool,
}

impl<T> Merge<T> {
    /// An empty merge (no partitions owned).
    pub fn new(idle_wait: Duration, slack_ms: i64) -> Self {
        Self {
            parts: BTreeMap::new(),
            idle_wait,
            slack_ms,
            catchup_started: None,
            writer_wait: None,
            assigned_at: None,
            strict: false,
        }
    }

    /// Each partition has a writer reporting its progress ([`Merge::progress`]); one gone
    /// silent is waited for at most `wait`.
    pub fn with_writers(mut self, wait: Duration) -> Self {
        self.writer_wait = Some(wait);
        self
    }

    /// With writers ([`Merge::with_writers`]): records leave in event-time order across
    /// partitions, not within the slack. Nothing passes the progress of a partition whose
    /// writer has been heard and has moved forward within `idle_wait`, even one that has
    /// caught up; a writer whose progress stands still (its input went quiet) holds
    /// nothing after that, and the rules above apply. The cluster stage takes the link
    /// shards' records so: the parts of one event from every shard together, in the order
    /// one process takes them.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// Starts a new assignment: every partition with its span; catch-up runs until each has
    /// reached its end.
    pub fn assign(&mut self, spans: impl IntoIterator<Item = (i32, Span)>, now: Instant) {
        self.parts = spans
            .into_iter()
            .map(|(p, s)| {
                let part = Part {
                    target: s.target,
                    end: s.end,
                    done: s.start >= s.end,
                    at_end: s.start >= s.end,
                    paused: false,
                    last_ts: i64::MIN,
                    last_arrival: None,
                    anchor: None,
                    buf: VecDeque::new(),
                    position: s.start,
                    open: false,
                    upstream: None,
                    progress_ts: i64::MIN,
                    advanced: None,
                };
                (p, part)
            })
            .collect();
        self.catchup_started = Some(now);
        self.assigned_at = Some(now);
    }

    /// Whether a record at `offset` of `partition` is wanted: owned, and not fetched before a
    /// seek re-positioned the partition.
    pub fn wants(&self, partition: i32, offset: i64) -> bool {
        self.parts
            .get(&partition)
            .is_some_and(|p| offset >= p.position)
    }

    /// Buffers a record, or one item of a record that holds several (all at its offset; `last`
    /// says whether more of it follow). `order` is its event time (`i64::MIN` when it has
    /// none). Returns a pause intent when the partition's buffer is full.
    pub fn push(
        &mut self,
        partition: i32,
        offset: i64,
        order: i64,
        item: T,
        last: bool,
        now: Instant,
    ) -> Option<Intent> {
        let part = self.parts.get_mut(&partition)?;
        let more_of_open = part.open && offset + 1 == part.position;
        if offset < part.position && !more_of_open {
            return None;
        }
        part.open = !last;
        part.position = offset + 1;
        part.last_ts = part.last_ts.max(order);
        part.last_arrival = Some(now);
        part.anchor = None;
        part.at_end = false;
        part.buf.push_back(Entry {
            offset,
            through: offset,
            order,
            item,
        });
        if part.position >= part.end {
            part.done = true;
        }
        if part.buf.len() >= HIGH && !part.paused {
            part.paused = true;
            return Some(Intent::Pause(partition));
        }
        None
    }

    /// The partition's writer reports its progress (a record at `offset` that carries no
    /// event): it has taken events up to `ts`, and is `behind` if its input has more on the way.
    /// Returns the offset if it counts as processed now (live, and nothing buffered before
    /// it); otherwise it is processed with the record before it ([`Taken::through`]).
    pub fn progress(
        &mut self,
        partition: i32,
        offset: i64,
        ts: i64,
        behind: bool,
        now: Instant,
    ) -> Option<i64> {
        let part = self.parts.get_mut(&partition)?;
        if offset < part.position {
            return None;
        }
        part.position = offset + 1;
        if part.position >= part.end {
            part.done = true;
        }
        part.last_ts = part.last_ts.max(ts);
        if ts > part.progress_ts {
            part.advanced = Some(now);
        }
        part.progress_ts = ts;
        part.upstream = Some((behind, now));
        match part.buf.back_mut() {
            Some(last) => {
                last.through = offset;
                None
            }
            None => (offset >= part.target).then_some(offset),
        }
    }

    /// Whether nothing more is known to be on its way: every partition read to its end, the
    /// broker has reported each at its end since its last record, and nothing is buffered.
    pub fn settled(&self) -> bool {
        self.catchup_started.is_none()
            && self
                .parts
                .values()
                .all(|p| p.done && p.at_end && p.buf.is_empty())
    }

    /// The broker says the partition has nothing more for now.
    pub fn eof(&mut self, partition: i32) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.done = true;
            part.at_end = true;
        }
    }

    /// Moves every record that may be taken now, in event-time order, to `out`, and the
    /// resulting resume intents to `intents` (none while `held`: the consumer is paused for
    /// back-pressure and resumes on its own).
    pub fn drain(
        &mut self,
        now: Instant,
        held: bool,
        out: &mut Vec<Taken<T>>,
        intents: &mut Vec<Intent>,
    ) {
        // Heads of the non-empty buffers, smallest event time first: O(log partitions) a record.
        let mut heads: BinaryHeap<Reverse<(i64, i32)>> = self
            .parts
            .iter()
            .filter_map(|(&p, part)| part.buf.front().map(|e| Reverse((e.order, p))))
            .collect();
        let mut bound = self.bound(heads.peek().map(|h| h.0 .0), now);
        while let Some(&Reverse((ts, p))) = heads.peek() {
            if ts > bound {
                break;
            }
            heads.pop();
            let part = self.parts.get_mut(&p).expect("head of a known partition");
            let entry = part.buf.pop_front().expect("non-empty buffer");
            let emptied = match part.buf.front() {
                Some(next) => {
                    heads.push(Reverse((next.order, p)));
                    false
                }
                None => true,
            };
            if part.paused && part.buf.len() <= LOW && !held {
                part.paused = false;
                intents.push(Intent::Resume(p));
            }
            out.push(Taken {
                partition: p,
                offset: entry.offset,
                live: entry.offset >= part.target,
                through: entry.through,
                item: entry.item,
            });
            if emptied {
                bound = self.bound(heads.peek().map(|h| h.0 .0), now);
            }
        }
        if heads.is_empty() {
            // Nothing buffered anywhere: what the merge had reached says nothing about the
            // next records to arrive.
            for part in self.parts.values_mut() {
                part.anchor = None;
            }
        }
    }

    /// The newest event time the merge may let through now; `head` is the oldest buffered
    /// record's.
    fn bound(&mut self, head: Option<i64>, now: Instant) -> i64 {
        let mut bound = i64::MAX;
        let catchup = self.catchup_started;
        for part in self.parts.values_mut() {
            if !part.buf.is_empty() {
                continue;
            }
            if !part.done {
                // Still reading its backlog: nothing may pass its newest record.
                let since = part.last_arrival.or(catchup);
                if since.is_some_and(|t| now.saturating_duration_since(t) < CATCHUP_WAIT) {
                    bound = bound.min(part.last_ts);
                }
                continue;
            }
            if let Some(wait) = self.writer_wait {
                let since = |t: Instant| now.saturating_duration_since(t);
                let hold = match part.upstream {
                    // Its writer is behind: its next records may be as old as its progress.
                    Some((behind, heard)) if since(heard) < self.idle_wait => behind,
                    // Its writer is gone: the next one resumes where it stopped.
                    Some((_, heard)) => since(heard) < wait,
                    None => self.assigned_at.is_some_and(|t| since(t) < wait),
                };
                if hold {
                    bound = bound.min(part.last_ts);
                    continue;
                }
                // Strict: its writer moves on, and its next records are no older than its
                // progress.
                let moving = self.strict
                    && part
                        .upstream
                        .is_some_and(|(_, heard)| since(heard) < self.idle_wait)
                    && part.advanced.is_some_and(|t| since(t) < self.idle_wait);
                if moving {
                    bound = bound.min(part.progress_ts);
                    continue;
                }
            }
            let just_heard = part
                .last_arrival
                .is_some_and(|t| now.saturating_duration_since(t) < END_GRACE);
            if !part.at_end || just_heard {
                // More records are on their way (a burst, a backlog), or may still be in a
                // producer's batch: none older than its newest so far, give or take the slack.
                // Where the merge has reached says nothing about them.
                let quiet = part.last_arrival.or(catchup);
                if quiet.is_some_and(|t| now.saturating_duration_since(t) < self.idle_wait) {
                    bound = bound.min(part.last_ts.saturating_add(self.slack_ms));
                }
                continue;
            }
            let Some(head) = head else { continue };
            let anchor = *part.anchor.get_or_insert((head, now));
            let quiet_since = part.last_arrival.map_or(anchor.1, |t| t.max(anchor.1));
            if now.saturating_duration_since(quiet_since) < self.idle_wait {
                bound = bound.min(part.last_ts.max(anchor.0).saturating_add(self.slack_ms));
            }
        }
        bound
    }

    /// The oldest event time a record taken from now on can have, as far as the merge knows:
    /// the head of each buffer, and the newest record of each empty partition that still
    /// bounds the merge (heard within `idle_wait`, or catching up). `None` when nothing
    /// bounds it. A writer reports this as its progress (at most its engine's watermark):
    /// records it takes later can be older than the newest it has taken, when its input's
    /// partitions arrive at different times.
    pub fn safe_ts(&self, now: Instant) -> Option<i64> {
        let catchup = self.catchup_started;
        self.parts
            .values()
            .filter_map(|part| match part.buf.front() {
                Some(e) => Some(e.order),
                None => {
                    let since = part.last_arrival.or(catchup);
                    since
                        .is_some_and(|t| now.saturating_duration_since(t) < self.idle_wait)
                        .then_some(part.last_ts)
                }
            })
            .min()
    }

    /// When every partition has caught up, ends the catch-up and returns when it started.
    pub fn finish_catchup(&mut self) -> Option<Instant> {
        if self.catchup_started.is_some() && self.parts.values().all(|p| p.done) {
            self.catchup_started.take()
        } else {
            None
        }
    }

    /// Records still to read before every partition has caught up.
    pub fn remaining(&self) -> i64 {
        self.parts
            .values()
            .filter(|p| !p.done)
            .map(|p| (p.end - p.position).max(0))
            .sum()
    }

    /// Partitions the merge itself has not paused (to resume after back-pressure).
    pub fn unpaused(&self) -> Vec<i32> {
        self.parts
            .iter()
            .filter(|(_, p)| !p.paused)
            .map(|(&p, _)| p)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(2);
    const SLACK: i64 = 150_000;

    fn live(p: i32, end: i64) -> (i32, Span) {
        (
            p,
            Span {
                start: 0,
                target: 0,
                end,
            },
        )
    }

    fn taken(m: &mut Merge<i64>, now: Instant) -> Vec<(i32, i64)> {
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(now, false, &mut out, &mut intents);
        out.into_iter().map(|t| (t.partition, t.item)).collect()
    }

    #[test]
    fn chunks_from_several_partitions_come_out_in_event_time_order() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 100), live(1, 100)], t0);
        // Partition 0's whole chunk arrives before partition 1's.
        for i in 0..100 {
            m.push(0, i, i * 1_000, i * 1_000, true, t0);
        }
        // Partition 1 is still catching up and has sent nothing: nothing may pass it.
        assert!(taken(&mut m, t0).is_empty());
        for i in 0..100 {
            m.push(1, i, i * 1_000 + 500, i * 1_000 + 500, true, t0);
        }
        let out = taken(&mut m, t0);
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "{out:?}");
        assert!(m.finish_catchup().is_some(), "both reached their ends");
        assert!(m.finish_catchup().is_none(), "only once");
    }

    #[test]
    fn the_items_of_a_record_that_holds_several_all_come_through_once() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 3)], t0);
        // Record 0 holds one event; record 1 a batch of three; record 2 one again.
        m.push(0, 0, 1_000, 1, true, t0);
        m.push(0, 1, 2_000, 2, false, t0);
        m.push(0, 1, 2_100, 3, false, t0);
        m.push(0, 1, 2_200, 4, true, t0);
        // Once the batch is closed, its offset again is a stale duplicate.
        assert_eq!(m.push(0, 1, 2_300, 99, true, t0), None);
        m.push(0, 2, 3_000, 5, true, t0);
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(t0, false, &mut out, &mut intents);
        let got: Vec<(i64, i64)> = out.iter().map(|t| (t.offset, t.item)).collect();
        assert_eq!(got, vec![(0, 1), (1, 2), (1, 3), (1, 4), (2, 5)]);
    }

    #[test]
    fn a_silent_partition_holds_the_others_back_only_until_idle() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 0), live(1, 0)], t0);
        // Partition 0 jumps far ahead in event time after 1_000; partition 1 sent one record
        // at 900 and then nothing.
        m.push(0, 0, 1_000, 1, true, t0);
        m.push(0, 1, 1_000 + SLACK + 10_000, 2, true, t0);
        m.push(1, 0, 900, 3, true, t0);
        assert_eq!(
            taken(&mut m, t0),
            vec![(1, 3), (0, 1)],
            "more than the slack past 1"
        );
        assert!(taken(&mut m, t0 + IDLE / 2).is_empty(), "not idle yet");
        assert_eq!(
            taken(&mut m, t0 + IDLE),
            vec![(0, 2)],
            "idle: no longer waited for"
        );
        // Within the slack, nothing waits at all.
        m.push(0, 2, 1_000 + SLACK + 20_000, 4, true, t0 + IDLE);
        m.push(0, 3, 1_000 + SLACK + 30_000, 5, true, t0 + IDLE);
        assert_eq!(taken(&mut m, t0 + IDLE), vec![(0, 4), (0, 5)]);
    }

    #[test]
    fn a_partition_whose_writer_is_behind_holds_the_others_at_its_progress() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK).with_writers(IDLE * 5);
        m.assign([live(0, 0), live(1, 0)], t0);
        // Partition 0's writer races through a backlog; partition 1's writer is slow: it has
        // written up to 1_000 and says it is behind, and the broker has it at its end.
        for i in 0..10 {
            m.push(0, i, 1_000 + i * SLACK, i, true, t0);
        }
        m.push(1, 0, 1_000, 100, true, t0);
        m.eof(1);
        assert_eq!(
            m.progress(1, 1, 1_000, true, t0),
            None,
            "after a buffered record"
        );
        let t1 = t0 + IDLE * 10;
        // Long after partition 1's last record, its writer still reports: nothing passes it.
        m.progress(1, 2, 1_500, true, t1);
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(t1, false, &mut out, &mut intents);
        let got: Vec<_> = out
            .iter()
            .map(|t| (t.partition, t.item, t.through))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, 0), (1, 100, 2)],
            "taken through its progress"
        );
        assert!(taken(&mut m, t1).is_empty(), "held at 1_500");
        // The writer moves on: the merge follows it, exactly.
        assert_eq!(m.progress(1, 3, 1_000 + 2 * SLACK, true, t1), Some(3));
        assert_eq!(taken(&mut m, t1), vec![(0, 1), (0, 2)]);
        // Caught up, it says so: the at-end rule (slack past the merge) applies again.
        m.progress(1, 4, 1_000 + 2 * SLACK, false, t1);
        assert_eq!(taken(&mut m, t1), vec![(0, 3), (0, 4)]);
        // A writer gone silent holds its partition at its progress for the writer wait.
        m.progress(1, 5, 1_000 + 2 * SLACK, true, t1);
        assert!(taken(&mut m, t1 + IDLE / 2).is_empty());
        assert!(taken(&mut m, t1 + IDLE * 2).is_empty());
        assert_eq!(taken(&mut m, t1 + IDLE * 5).len(), 5);
        assert!(!m.settled(), "catch-up never finished here");
    }

    #[test]
    fn strict_writers_that_caught_up_hold_the_others_at_their_progress_while_they_move() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK).with_writers(IDLE * 5).strict();
        m.assign([live(0, 0), live(1, 0)], t0);
        // Both writers have caught up. Partition 0's turn arrives before partition 1's.
        m.progress(0, 0, 0, false, t0);
        m.progress(1, 0, 0, false, t0);
        m.push(0, 1, 1_000, 1, true, t0);
        m.push(0, 2, 3_000, 2, true, t0);
        m.eof(1);
        // Not within the slack, as without `strict`: nothing passes partition 1's progress.
        assert!(taken(&mut m, t0).is_empty());
        m.push(1, 1, 1_000, 10, true, t0);
        m.progress(1, 2, 2_000, false, t0);
        // The parts of one event (one time on both partitions) come out together.
        assert_eq!(taken(&mut m, t0), vec![(0, 1), (1, 10)]);
        m.progress(1, 3, 3_000, false, t0);
        assert_eq!(taken(&mut m, t0), vec![(0, 2)]);
        // Partition 1's writer stands still (its input went quiet) while it still reports:
        // after idle it holds nothing, and the at-end rule applies.
        m.push(0, 3, 3_000 + SLACK + 1, 3, true, t0);
        let t1 = t0 + IDLE / 2;
        m.progress(1, 4, 3_000, false, t1);
        assert!(taken(&mut m, t1).is_empty(), "moved within idle");
        let t2 = t0 + IDLE;
        m.progress(1, 5, 3_000, false, t2);
        assert_eq!(taken(&mut m, t2), vec![(0, 3)], "stood still for idle");
        // The bound is the writer's progress, not its newest record: a writer whose input's
        // partitions arrive at different times writes records older than its newest.
        let mut m = Merge::new(IDLE, SLACK).with_writers(IDLE * 5).strict();
        m.assign([live(0, 0), live(1, 0)], t0);
        m.progress(0, 0, 10_000, false, t0);
        m.progress(1, 0, 1_000, false, t0);
        m.push(1, 1, 5_000, 20, true, t0);
        assert_eq!(taken(&mut m, t0), vec![(1, 20)]);
        m.push(0, 1, 4_500, 1, true, t0);
        assert!(
            taken(&mut m, t0).is_empty(),
            "held at partition 1's progress"
        );
        m.push(1, 2, 3_000, 21, true, t0);
        m.progress(1, 3, 6_000, false, t0);
        assert_eq!(taken(&mut m, t0), vec![(1, 21), (0, 1)]);
        // Without `strict`, a caught-up writer's partition at its end bounds the others by
        // the slack only.
        let mut m = Merge::new(IDLE, SLACK).with_writers(IDLE * 5);
        m.assign([live(0, 0), live(1, 0)], t0);
        m.progress(1, 0, 0, false, t0);
        m.eof(1);
        m.push(0, 0, 1_000, 1, true, t0);
        assert_eq!(taken(&mut m, t0), vec![(0, 1)]);
    }

    #[test]
    fn the_safe_time_is_the_oldest_a_record_taken_from_now_on_can_have() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 0), live(1, 0)], t0);
        assert_eq!(m.safe_ts(t0), Some(i64::MIN), "nothing heard yet: any time");
        m.push(0, 0, 5_000, 1, true, t0);
        m.push(1, 0, 3_000, 2, true, t0);
        assert_eq!(m.safe_ts(t0), Some(3_000), "the oldest head");
        assert_eq!(taken(&mut m, t0), vec![(1, 2), (0, 1)]);
        // Both empty: partition 1's next record may be as old as its newest so far.
        assert_eq!(m.safe_ts(t0), Some(3_000));
        // Silent for idle: it no longer bounds the merge, nor the safe time.
        m.push(0, 1, 9_000, 3, true, t0 + IDLE);
        assert_eq!(m.safe_ts(t0 + IDLE), Some(9_000));
    }

    #[test]
    fn a_partition_never_written_is_waited_for_its_first_writer() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK).with_writers(IDLE * 5);
        m.assign([live(0, 0), live(1, 0)], t0);
        m.push(0, 0, 1_000, 1, true, t0);
        // No writer has reported on partition 1 since the assignment: it is waited for.
        assert!(taken(&mut m, t0 + IDLE * 2).is_empty());
        // Its writer appears, behind; then catches up.
        m.progress(1, 0, 500, true, t0 + IDLE * 3);
        assert!(taken(&mut m, t0 + IDLE * 3).is_empty());
        m.progress(1, 1, 2_000, false, t0 + IDLE * 3);
        assert_eq!(taken(&mut m, t0 + IDLE * 3), vec![(0, 1)]);
        // Without writers (the input topic), a silent partition holds nothing past idle.
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 0), live(1, 0)], t0);
        m.push(0, 0, 1_000, 1, true, t0);
        assert_eq!(taken(&mut m, t0 + IDLE * 2), vec![(0, 1)]);
    }

    #[test]
    fn a_partition_catching_up_is_waited_for_until_catchup_wait() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 10), live(1, 10)], t0);
        m.push(0, 0, 5_000, 0, true, t0);
        m.push(1, 0, 1_000, 0, true, t0);
        // Partition 1 (not done, empty after its record is taken) bounds the merge at 1_000.
        assert_eq!(taken(&mut m, t0), vec![(1, 0)]);
        assert!(taken(&mut m, t0 + CATCHUP_WAIT / 2).is_empty());
        assert_eq!(taken(&mut m, t0 + CATCHUP_WAIT).len(), 1);
        assert!(m.finish_catchup().is_none(), "neither reached its end");
        assert_eq!(m.remaining(), 18);
    }

    #[test]
    fn records_before_the_target_rebuild_state_only_and_stale_ones_are_dropped() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        let span = Span {
            start: 10,
            target: 12,
            end: 14,
        };
        m.assign([(0, span)], t0);
        assert!(!m.wants(0, 9), "before the start: fetched before the seek");
        assert!(!m.wants(1, 10), "not owned");
        for o in 10..14 {
            m.push(0, o, o, o, true, t0);
        }
        assert!(!m.wants(0, 12), "already buffered");
        assert_eq!(
            m.push(0, 11, 11, 11, true, t0),
            None,
            "a stale duplicate is ignored"
        );
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(t0, false, &mut out, &mut intents);
        let live: Vec<(i64, bool)> = out.iter().map(|t| (t.offset, t.live)).collect();
        assert_eq!(live, vec![(10, false), (11, false), (12, true), (13, true)]);
        assert!(m.finish_catchup().is_some());
    }

    #[test]
    fn a_full_buffer_pauses_its_partition_and_a_drained_one_resumes_it() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 0), live(1, 0)], t0);
        let mut intents = Vec::new();
        for i in 0..HIGH as i64 {
            intents.extend(m.push(0, i, 10_000 + i, i, true, t0));
        }
        assert_eq!(intents, vec![Intent::Pause(0)]);
        assert_eq!(m.unpaused(), vec![1]);
        // Partition 1 is done and silent: after the idle wait partition 0 drains.
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(t0, true, &mut out, &mut intents);
        m.drain(t0 + IDLE, true, &mut out, &mut intents);
        assert_eq!(out.len(), HIGH);
        assert!(intents.is_empty(), "held for back-pressure: no resume");
        for i in 0..HIGH as i64 {
            m.push(0, HIGH as i64 + i, 10_000 + i, i, true, t0 + IDLE);
        }
        let (mut out, mut intents) = (Vec::new(), Vec::new());
        m.drain(t0 + IDLE, false, &mut out, &mut intents);
        assert_eq!(intents, vec![Intent::Resume(0)]);
    }

    #[test]
    fn a_partition_with_more_on_its_way_holds_the_others_until_its_end() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        // Both at their ends (a quiet topic); then a burst, partition 0 fetched far ahead.
        m.assign([live(0, 0), live(1, 0)], t0);
        for i in 0..4 {
            m.push(0, i, 200_000 + i * 60_000, i, true, t0);
        }
        m.push(1, 0, 0, 10, true, t0);
        // Partition 1 ran empty at 0 with more on its way: nothing past 0 + SLACK.
        assert_eq!(taken(&mut m, t0), vec![(1, 10)]);
        m.push(1, 1, 100_000, 11, true, t0);
        assert_eq!(taken(&mut m, t0), vec![(1, 11), (0, 0)]);
        // At its end (the broker says so), partition 1 still holds back what was fetched
        // while a producer's batch of its older records may be in flight...
        m.eof(1);
        assert!(taken(&mut m, t0 + END_GRACE / 2).is_empty());
        m.push(1, 2, 120_000, 12, true, t0 + END_GRACE / 2);
        m.eof(1);
        assert_eq!(taken(&mut m, t0 + END_GRACE / 2), vec![(1, 12), (0, 1)]);
        // ...and no longer once that grace has passed.
        assert_eq!(
            taken(&mut m, t0 + END_GRACE / 2 + END_GRACE),
            vec![(0, 2), (0, 3)]
        );
    }

    #[test]
    fn malformed_records_without_event_time_go_first() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, SLACK);
        m.assign([live(0, 0), live(1, 0)], t0);
        m.push(0, 0, 5_000, 1, true, t0);
        m.push(1, 0, i64::MIN, 2, true, t0);
        m.push(1, 1, 6_000, 3, true, t0);
        assert_eq!(taken(&mut m, t0), vec![(1, 2), (0, 1), (1, 3)]);
    }
}
