//! How many accounts sent a prompt lately: a count-min sketch over prompt SimHashes, in two
//! generations of `window` each, so a count covers between one and two windows.
//!
//! A prompt many accounts send (the documentation's example, a class's shared assignment, a
//! hackathon's starter kit) returns answers everybody already has: it harvests nothing new.
//! Fixed memory (four rows of 2^16 saturating 16-bit counters per generation, 1 MiB in all)
//! and four reads and writes per event, whatever the traffic. Count-min only over-counts, so
//! a prompt is never taken for rarer than it is.

const ROWS: usize = 4;
const WIDTH_BITS: u32 = 16;
const WIDTH: usize = 1 << WIDTH_BITS;

pub struct PromptCopies {
    window_ms: i64,
    /// Start of the current generation (event time).
    current_start: i64,
    current: Box<[u16]>,
    previous: Box<[u16]>,
}

impl PromptCopies {
    pub fn new(window_ms: i64) -> Self {
        Self {
            window_ms: window_ms.max(1),
            current_start: i64::MIN,
            current: vec![0; ROWS * WIDTH].into_boxed_slice(),
            previous: vec![0; ROWS * WIDTH].into_boxed_slice(),
        }
    }

    fn slots(h: u64) -> [usize; ROWS] {
        // Four 16-bit slices of a remix of the hash: the SimHash's own bits are correlated
        // between near-identical prompts, so they are mixed first.
        let m = xxhash_rust::xxh3::xxh3_64(&h.to_le_bytes());
        std::array::from_fn(|r| r * WIDTH + ((m >> (r as u32 * WIDTH_BITS)) as usize & (WIDTH - 1)))
    }

    fn rotate(&mut self, now_ms: i64) {
        if self.current_start == i64::MIN {
            self.current_start = now_ms;
            return;
        }
        if now_ms - self.current_start < self.window_ms {
            return;
        }
        if now_ms - self.current_start >= 2 * self.window_ms {
            self.previous.fill(0);
        } else {
            std::mem::swap(&mut self.current, &mut self.previous);
        }
        self.current.fill(0);
        self.current_start = now_ms;
    }

    /// Counts one more sender of prompt `simhash` at `now_ms` and returns how many sent it
    /// within the last one to two windows, this one included. 0 for no prompt.
    pub fn add(&mut self, simhash: u64, now_ms: i64) -> u32 {
        if simhash == 0 {
            return 0;
        }
        self.rotate(now_ms);
        let slots = Self::slots(simhash);
        let mut cur = u16::MAX;
        let mut prev = u16::MAX;
        for s in slots {
            self.current[s] = self.current[s].saturating_add(1);
            cur = cur.min(self.current[s]);
            prev = prev.min(self.previous[s]);
        }
        u32::from(cur) + u32::from(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_senders_and_forgets_after_two_windows() {
        let mut c = PromptCopies::new(3_600_000);
        let t0 = 1_793_577_600_000;
        for i in 0..50 {
            assert_eq!(c.add(0xabcd, t0 + i), i as u32 + 1);
        }
        // Distinct prompts stay at one each, despite the crowd.
        for p in 1..5_000u64 {
            assert_eq!(c.add(p.wrapping_mul(0x9e37_79b9_7f4a_7c15), t0 + 100), 1);
        }
        // Next window: the previous generation still counts.
        assert_eq!(c.add(0xabcd, t0 + 3_600_001), 51);
        // Two windows on, only the newest copies remain.
        assert_eq!(c.add(0xabcd, t0 + 7_300_000), 2);
        assert_eq!(c.add(0xabcd, t0 + 20_000_000), 1);
        assert_eq!(c.add(0, t0), 0);
    }
}
