//! Which input offsets may be committed: an offset is storable only once every alert and
//! dead-letter record its event caused has a successful delivery report.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct Part {
    /// Next offset after the last one processed (-1: none yet).
    next: i64,
    /// Offsets with deliveries still outstanding, and how many.
    pending: BTreeMap<i64, u32>,
    /// Last offset handed to the consumer's offset store.
    stored: i64,
}

/// Progress of every owned input partition.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<i32, Part>,
}

impl Tracker {
    /// Starts tracking `partition`: everything before `next` is already committed.
    pub fn start(&mut self, partition: i32, next: i64) {
        let p = self.parts.entry(partition).or_insert(Part {
            next: -1,
            pending: BTreeMap::new(),
            stored: -1,
        });
        p.next = p.next.max(next);
        p.stored = p.stored.max(next);
    }

    pub fn remove(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    fn part(&mut self, partition: i32) -> &mut Part {
        self.parts.entry(partition).or_insert(Part {
            next: -1,
            pending: BTreeMap::new(),
            stored: -1,
        })
    }

    /// The event at `offset` has been processed (its deliveries, if any, were held first).
    pub fn processed(&mut self, partition: i32, offset: i64) {
        let p = self.part(partition);
        p.next = p.next.max(offset + 1);
    }

    /// A delivery caused by the event at `offset` is outstanding.
    pub fn hold(&mut self, partition: i32, offset: i64) {
        *self.part(partition).pending.entry(offset).or_insert(0) += 1;
    }

    /// A delivery caused by the event at `offset` succeeded.
    pub fn release(&mut self, partition: i32, offset: i64) {
        let Some(p) = self.parts.get_mut(&partition) else {
            return;
        };
        if let Some(n) = p.pending.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                p.pending.remove(&offset);
            }
        }
    }

    /// Next offset to process (where a rebuild must catch up to).
    pub fn next(&self, partition: i32) -> Option<i64> {
        self.parts
            .get(&partition)
            .map(|p| p.next)
            .filter(|&n| n >= 0)
    }

    /// The offset that may be committed: the oldest held offset, else the next to process.
    pub fn storable(&self, partition: i32) -> Option<i64> {
        let p = self.parts.get(&partition)?;
        if p.next < 0 {
            return None;
        }
        Some(p.pending.keys().next().map_or(p.next, |&o| o.min(p.next)))
    }

    /// Partitions whose storable offset moved since the last call, with that offset.
    pub fn to_store(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.parts {
            if p.next < 0 {
                continue;
            }
            let s = p.pending.keys().next().map_or(p.next, |&o| o.min(p.next));
            if s > p.stored {
                p.stored = s;
                out.push((partition, s));
            }
        }
        out.sort_unstable();
        out
    }

    /// Outstanding deliveries on `partition`.
    pub fn pending_on(&self, partition: i32) -> usize {
        self.parts
            .get(&partition)
            .map_or(0, |p| p.pending.values().map(|&n| n as usize).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_waits_for_every_delivery_it_caused() {
        let mut t = Tracker::default();
        t.start(0, 10);
        assert_eq!(t.to_store(), vec![]);
        t.processed(0, 10);
        t.hold(0, 11);
        t.hold(0, 11);
        t.processed(0, 11);
        t.processed(0, 12);
        // 10 is done; 11 still has two deliveries out.
        assert_eq!(t.storable(0), Some(11));
        assert_eq!(t.to_store(), vec![(0, 11)]);
        t.release(0, 11);
        assert_eq!(t.storable(0), Some(11));
        t.release(0, 11);
        assert_eq!(t.storable(0), Some(13));
        assert_eq!(t.to_store(), vec![(0, 13)]);
        assert_eq!(t.to_store(), vec![]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = Tracker::default();
        t.start(0, 0);
        t.start(1, 5);
        t.hold(0, 0);
        t.processed(0, 0);
        t.processed(1, 5);
        assert_eq!(t.to_store(), vec![(1, 6)]);
        assert_eq!(t.pending_on(0), 1);
        t.remove(0);
        assert_eq!(t.storable(0), None);
    }
}
