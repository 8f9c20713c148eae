//! Duplicate `event_id`s within a window, in bounded memory.
//!
//! Two generations of id hashes: ids go into the current one and are looked up in both; the
//! current one becomes the previous one when it is a window old or half the cap full, so every
//! id is remembered for at least one window (unless the cap forces faster rotation).
//!
//! Each generation is a flat open-addressing table of the 64-bit hashes themselves (linear
//! probing, at most half full): a lookup costs one cache line, where a general hash set costs
//! one for its control bytes and another for its slots.

#[derive(Debug)]
pub struct Dedup {
    current: IdSet,
    previous: IdSet,
    started_ms: i64,
    window_ms: i64,
    half_cap: usize,
}

impl Dedup {
    pub fn new(window_ms: i64, max_ids: usize) -> Self {
        Self {
            current: IdSet::default(),
            previous: IdSet::default(),
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
        if self.previous.contains(id) {
            return true;
        }
        !self.current.insert(id)
    }

    /// Prefetches the slots `seen(id)` will probe first.
    #[inline]
    pub fn prefetch(&self, id: u64) {
        self.current.prefetch(id);
        self.previous.prefetch(id);
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set of 64-bit hashes: open addressing, linear probing, 0 marks an empty slot (the id 0
/// itself is kept aside). Grows by doubling to stay at most half full.
#[derive(Debug, Default)]
struct IdSet {
    slots: Vec<u64>,
    /// `64 - log2(slots.len())`: the slot of an id is the top bits of its Fibonacci product.
    shift: u32,
    len: usize,
    has_zero: bool,
}

impl IdSet {
    const MIN_SLOTS: usize = 1024;

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn prefetch(&self, id: u64) {
        if !self.slots.is_empty() {
            super::prefetch::line(&self.slots[self.home(id)]);
        }
    }

    fn contains(&self, id: u64) -> bool {
        if id == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            let s = self.slots[i];
            if s == id {
                return true;
            }
            if s == 0 {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `id`; true if it was not there.
    fn insert(&mut self, id: u64) -> bool {
        if id == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            self.len += usize::from(new);
            return new;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            let s = self.slots[i];
            if s == id {
                return false;
            }
            if s == 0 {
                self.slots[i] = id;
                self.len += 1;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(Self::MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![0; n]);
        self.shift = 64 - n.trailing_zeros();
        let mask = n - 1;
        for id in old.into_iter().filter(|&id| id != 0) {
            let mut i = self.home(id);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = id;
        }
    }

    fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(0);
        }
        self.len = 0;
        self.has_zero = false;
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

    #[test]
    fn id_set_matches_a_hash_set() {
        let mut s = IdSet::default();
        let mut r = std::collections::HashSet::new();
        let mut x: u64 = 1;
        for i in 0..50_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Small values collide often; 0 is a valid id too.
            let id = if i % 3 == 0 { x % 5000 } else { x };
            assert_eq!(s.contains(id), r.contains(&id));
            assert_eq!(s.insert(id), r.insert(id));
            assert_eq!(s.len(), r.len());
            if i == 30_000 {
                s.clear();
                r.clear();
            }
        }
    }
}
