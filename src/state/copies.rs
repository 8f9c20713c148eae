//! How many accounts sent a prompt lately: a count-min sketch over prompt SimHashes, in two
//! generations of `window` each, so a count covers between one and two windows.
//!
//! A prompt many accounts send (the documentation's example, a class's shared assignment, a
//! hackathon's starter kit) returns answers everybody already has: it harvests nothing new.
//!
//! The question asked of the sketch is whether a prompt has more than a handful of senders
//! (`harvest.max_prompt_copies`), so it must not over-count a prompt nobody else sent, at any
//! traffic. A count-min sketch over-counts by about its load (insertions per counter): a fixed
//! width that is right for a thousand events an hour calls every prompt a copy at a million,
//! and harvest (and with it detection) would vanish as traffic grows. So each generation is
//! sized from the stream: when one starts, its width is the insertion rate of the last one
//! times the window (a load of about one insertion per counter), within `[MIN_WIDTH, max_width]`
//! (`harvest.copies_sketch_max_mib`); a generation that fills beyond that load before its
//! window ends (the first, or a surge) is closed early and the next is sized from its rate.
//! Updates are conservative (only the smallest counters grow), which keeps a new prompt's
//! estimate at zero with high probability at that load. Counters are 8-bit and saturate:
//! only small counts matter. Count-min only over-counts, so a prompt is never taken for
//! rarer than it is.

const ROWS: usize = 4;
/// Smallest width of a generation (4 rows of 2^16 one-byte counters: 256 KiB).
const MIN_WIDTH: usize = 1 << 16;
/// A generation is sized for, and closed beyond, this many insertions per counter. With
/// conservative updates a new prompt then finds all four of its counters at 3 or more (the
/// noise `harvest.max_prompt_copies` could mistake for copies) well under once in 10^4.
const LOAD: f64 = 1.0;

struct Generation {
    width_bits: u32,
    counters: Box<[u8]>,
    /// Insertions so far.
    adds: u64,
    start_ms: i64,
}

impl Generation {
    fn new(width: usize, start_ms: i64) -> Self {
        let width = width.next_power_of_two();
        Self {
            width_bits: width.trailing_zeros(),
            counters: vec![0; ROWS * width].into_boxed_slice(),
            adds: 0,
            start_ms,
        }
    }

    fn width(&self) -> usize {
        1 << self.width_bits
    }

    fn full(&self) -> bool {
        self.adds as f64 > LOAD * self.width() as f64
    }

    fn slots(&self, mixed: u64) -> [usize; ROWS] {
        let w = self.width();
        // Rows take disjoint 16-bit slices of the mixed hash, and wider rows the bits above
        // them in turn (rotated), so every row indexes with independent-looking bits.
        std::array::from_fn(|r| {
            let bits = mixed.rotate_right(r as u32 * 16) as usize;
            r * w + (bits & (w - 1))
        })
    }

    /// The current estimate of the prompt's count.
    fn count(&self, mixed: u64) -> u8 {
        self.slots(mixed)
            .into_iter()
            .map(|s| self.counters[s])
            .min()
            .unwrap_or(0)
    }

    /// Conservative update: raises only the counters at the minimum. Returns the new estimate.
    fn add(&mut self, mixed: u64) -> u8 {
        let slots = self.slots(mixed);
        let min = slots.iter().map(|&s| self.counters[s]).min().unwrap_or(0);
        let new = min.saturating_add(1);
        for s in slots {
            if self.counters[s] < new {
                self.counters[s] = new;
            }
        }
        self.adds += 1;
        new
    }
}

pub struct PromptCopies {
    window_ms: i64,
    max_width: usize,
    current: Option<Generation>,
    previous: Option<Generation>,
}

impl PromptCopies {
    /// `window_ms`: a generation's length; `max_bytes`: the most both generations may use.
    pub fn new(window_ms: i64, max_bytes: usize) -> Self {
        let max_width = (max_bytes / (2 * ROWS)).max(MIN_WIDTH);
        Self {
            window_ms: window_ms.max(1),
            // A power of two at or below the budget.
            max_width: 1 << (usize::BITS - 1 - max_width.leading_zeros()),
            current: None,
            previous: None,
        }
    }

    /// Counters in use (bytes), for the state gauges.
    pub fn bytes(&self) -> usize {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .map(|g| g.counters.len())
            .sum()
    }

    fn rotate(&mut self, now_ms: i64) {
        let Some(cur) = &self.current else {
            self.current = Some(Generation::new(MIN_WIDTH, now_ms));
            return;
        };
        let elapsed = now_ms - cur.start_ms;
        let early = cur.full() && cur.width() < self.max_width;
        if elapsed < self.window_ms && !early {
            return;
        }
        // Insertions the next window will see, at the rate of this generation.
        let rate = cur.adds as f64 / elapsed.max(1) as f64;
        let expected = rate * self.window_ms as f64;
        let width = ((expected / LOAD) as usize).clamp(MIN_WIDTH, self.max_width);
        let next = Generation::new(width, now_ms);
        let old = self.current.replace(next).expect("current generation");
        self.previous = if elapsed >= 2 * self.window_ms {
            None
        } else {
            Some(old)
        };
    }

    /// Counts one more sender of prompt `simhash` at `now_ms` and returns how many sent it
    /// within the last one to two windows, this one included. 0 for no prompt.
    pub fn add(&mut self, simhash: u64, now_ms: i64) -> u32 {
        if simhash == 0 {
            return 0;
        }
        self.rotate(now_ms);
        // The SimHash's own bits are correlated between near-identical prompts: mix them.
        let mixed = xxhash_rust::xxh3::xxh3_64(&simhash.to_le_bytes());
        let prev = self.previous.as_ref().map_or(0, |g| g.count(mixed));
        let cur = self.current.as_mut().map_or(0, |g| g.add(mixed));
        u32::from(cur) + u32::from(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_793_577_600_000;

    fn prompt(i: u64) -> u64 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
    }

    #[test]
    fn counts_senders_and_forgets_after_two_windows() {
        let mut c = PromptCopies::new(HOUR, 1 << 20);
        for i in 0..50 {
            assert_eq!(c.add(0xabcd, T0 + i), i as u32 + 1);
        }
        // Distinct prompts stay at one each, despite the crowd.
        for p in 1..5_000u64 {
            assert_eq!(c.add(prompt(p), T0 + 100), 1);
        }
        // Next window: the previous generation still counts.
        assert_eq!(c.add(0xabcd, T0 + HOUR + 1), 51);
        // Two windows on, only the newest copies remain.
        assert_eq!(c.add(0xabcd, T0 + 7_300_000), 2);
        assert_eq!(c.add(0xabcd, T0 + 20_000_000), 1);
        assert_eq!(c.add(0, T0), 0);
    }

    /// The failure this design exists for: at a million new prompts an hour a fixed 2^16-wide
    /// sketch gave every new prompt a count of about 9, so nothing harvested.
    #[test]
    fn new_prompts_stay_rare_at_high_traffic() {
        let mut c = PromptCopies::new(HOUR, 64 << 20);
        let n = 1_000_000u64;
        let mut above = 0;
        for hour in 0..3 {
            for i in 0..n {
                let t = T0 + hour * HOUR + (i as i64 * HOUR) / n as i64;
                let got = c.add(prompt(hour as u64 * n + i), t);
                // After the first generation sized itself, a new prompt counts itself only.
                if hour > 0 && got > 3 {
                    above += 1;
                }
            }
        }
        assert!(
            above < 100,
            "{above} of {} new prompts taken for copies",
            2 * n
        );
        // A real copy is still counted in the crowd.
        for k in 0..10 {
            let got = c.add(0xfeed, T0 + 3 * HOUR - 10 + k);
            assert!((k as u32 + 1..=k as u32 + 3).contains(&got), "{k}: {got}");
        }
        assert!(c.bytes() <= 64 << 20);
    }

    #[test]
    fn memory_stays_within_its_budget() {
        let budget = 4 << 20;
        let mut c = PromptCopies::new(HOUR, budget);
        for i in 0..3_000_000u64 {
            c.add(prompt(i), T0 + i as i64);
        }
        assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
        assert!(c.bytes() >= budget / 2, "it grew to use the budget");
    }
}
