//! Duplicate `event_id`s within a window, in bounded memory.
//!
//! Two generations of id hashes: ids go into the current one and are looked up in both; the
//! current one becomes the previous one when it is a window old or half the cap full, so every
//! id is remembered for at least one window (unless the cap forces faster rotation).

use std::collections::HashSet;

use nohash_hasher::BuildNoHashHasher;

#[derive(Debug)]
pub struct Dedup {
    current: HashSet<u64, BuildNoHashHasher<u64>>,
    previous: HashSet<u64, BuildNoHashHasher<u64>>,
    started_ms: i64,
    window_ms: i64,
    half_cap: usize,
}

impl Dedup {
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        Self {
            current: HashSet::default(),
            previous: HashSet::default(),
            started_ms: i64::MIN,
            window_ms,
            half_cap: (max_ids / 2).max(1),
        }
    }

    /// Records `id`; true if it was already seen.
    pub fn seen(&mut self, id: u64, ts_ms: i64) -> bool {
        if self.started_ms == i64::MIN {
            self.started_ms = ts_ms;
        }
        if ts_ms - self.started_ms >= self.window_ms || self.current.len() >= self.half_cap {
            // Swap and clear rather than drop and regrow: the tables keep their capacity, so
            // a rotation costs no allocation and no fresh pages.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.started_ms = ts_ms;
        }
        if self.previous.contains(&id) {
            return true;
        }
        !self.current.insert(id)
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_within_the_window_and_stays_bounded() {
        let mut d = Dedup::new(60_000, 1000);
        assert!(!d.seen(1, 0));
        assert!(d.seen(1, 10));
        assert!(d.seen(1, 59_000), "same generation");
        assert!(!d.seen(2, 61_000));
        assert!(d.seen(1, 61_000), "previous generation still remembers");
        for i in 0..10_000u64 {
            d.seen(i + 100, 62_000);
        }
        assert!(d.len() <= 1000);
    }
}
