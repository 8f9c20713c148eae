//! Sliding windows in event time with O(1) cost per event, whatever their length.
//!
//! [`HourWindow`] keeps twelve 5-minute buckets of per-request counters and their running
//! totals; [`DayWindow`] keeps 24 hourly request counts. Advancing past old buckets subtracts
//! them from the totals, so reading a total never scans the ring.

/// Bucket width of the hour window, in milliseconds.
pub const BUCKET_MS: i64 = 5 * 60 * 1000;
/// Buckets in the hour window.
pub const BUCKETS: usize = 12;
const HOUR_MS: i64 = 3_600_000;

/// Counters of one bucket (and of the window's totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u32,
    pub single_turn: u32,
    pub reasoning: u32,
    pub templated: u32,
    pub novel: u32,
    /// Harvesting requests: single-turn, extraction-worthy, and new both to the account and
    /// to the population (see `Sample::harvest`).
    pub harvest: u32,
    pub new_model: u32,
    /// Requests whose prompt text was seen (reasoning elicitation known).
    pub with_text: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests = self.requests.saturating_add(o.requests);
        self.single_turn = self.single_turn.saturating_add(o.single_turn);
        self.reasoning = self.reasoning.saturating_add(o.reasoning);
        self.templated = self.templated.saturating_add(o.templated);
        self.novel = self.novel.saturating_add(o.novel);
        self.harvest = self.harvest.saturating_add(o.harvest);
        self.new_model = self.new_model.saturating_add(o.new_model);
        self.with_text = self.with_text.saturating_add(o.with_text);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
    }

    fn sub(&mut self, o: &Counts) {
        self.requests = self.requests.saturating_sub(o.requests);
        self.single_turn = self.single_turn.saturating_sub(o.single_turn);
        self.reasoning = self.reasoning.saturating_sub(o.reasoning);
        self.templated = self.templated.saturating_sub(o.templated);
        self.novel = self.novel.saturating_sub(o.novel);
        self.harvest = self.harvest.saturating_sub(o.harvest);
        self.new_model = self.new_model.saturating_sub(o.new_model);
        self.with_text = self.with_text.saturating_sub(o.with_text);
        self.input_tokens = self.input_tokens.saturating_sub(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(o.output_tokens);
    }

    /// `part / requests`, 0 when empty.
    pub fn share(&self, part: u32) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(part) / f64::from(self.requests)
        }
    }

    /// Share of requests eliciting reasoning among those whose text was seen.
    pub fn reasoning_share(&self) -> f64 {
        if self.with_text == 0 {
            0.0
        } else {
            f64::from(self.reasoning) / f64::from(self.with_text)
        }
    }

    /// Whether most requests came with prompt text (reasoning elicitation is known).
    pub fn text_known(&self) -> bool {
        self.share(self.with_text) >= 0.5
    }

    /// Output tokens per input token (input floored at 1).
    pub fn output_ratio(&self) -> f64 {
        self.output_tokens as f64 / (self.input_tokens.max(1)) as f64
    }
}

/// Counters of one 5-minute bucket, kept narrow: a bucket saturates rather than wraps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    requests: u16,
    with_text: u16,
    single_turn: u16,
    reasoning: u16,
    templated: u16,
    novel: u16,
    harvest: u16,
    new_model: u16,
    input_tokens: u32,
    output_tokens: u32,
}

impl Bucket {
    fn add(&mut self, s: &Sample) {
        let inc = |x: &mut u16, b: bool| *x = x.saturating_add(u16::from(b));
        inc(&mut self.requests, true);
        inc(&mut self.single_turn, s.single_turn);
        inc(&mut self.reasoning, s.reasoning);
        inc(&mut self.templated, s.templated);
        inc(&mut self.novel, s.novel);
        inc(&mut self.harvest, s.harvest);
        inc(&mut self.new_model, s.new_model);
        inc(&mut self.with_text, s.with_text);
        self.input_tokens = self.input_tokens.saturating_add(s.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(s.output_tokens);
    }

    fn counts(&self) -> Counts {
        Counts {
            requests: u32::from(self.requests),
            single_turn: u32::from(self.single_turn),
            reasoning: u32::from(self.reasoning),
            templated: u32::from(self.templated),
            novel: u32::from(self.novel),
            harvest: u32::from(self.harvest),
            new_model: u32::from(self.new_model),
            with_text: u32::from(self.with_text),
            input_tokens: u64::from(self.input_tokens),
            output_tokens: u64::from(self.output_tokens),
        }
    }
}

/// One request's contribution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub single_turn: bool,
    pub reasoning: bool,
    pub templated: bool,
    pub novel: bool,
    /// Single-turn, extraction-worthy (reasoning-eliciting or output-heavy), new to the
    /// account and rare in the population: a request that harvests something.
    pub harvest: bool,
    pub new_model: bool,
    pub with_text: bool,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// The trailing hour in 5-minute buckets. Head and totals first: every event reads them and
/// touches only one bucket.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct HourWindow {
    /// Bucket number (ts / BUCKET_MS) of the newest bucket; 0 before the first sample.
    head: i64,
    totals: Counts,
    buckets: [Bucket; BUCKETS],
}

impl HourWindow {
    fn advance(&mut self, bucket: i64) {
        if self.head == 0 || bucket - self.head >= BUCKETS as i64 {
            if self.head != 0 {
                self.buckets = Default::default();
                self.totals = Counts::default();
            }
            self.head = bucket;
            return;
        }
        while self.head < bucket {
            self.head += 1;
            let slot = self.head.rem_euclid(BUCKETS as i64) as usize;
            let old = self.buckets[slot].counts();
            self.totals.sub(&old);
            self.buckets[slot] = Bucket::default();
        }
    }

    /// Adds a request at `ts_ms`. Returns false if it is older than the window.
    pub fn add(&mut self, ts_ms: i64, s: &Sample) -> bool {
        let bucket = ts_ms.div_euclid(BUCKET_MS);
        if bucket > self.head {
            self.advance(bucket);
        }
        if bucket <= self.head - BUCKETS as i64 {
            return false;
        }
        let slot = bucket.rem_euclid(BUCKETS as i64) as usize;
        // What the bucket actually gained (it saturates), so totals stay consistent.
        let before = self.buckets[slot].counts();
        self.buckets[slot].add(s);
        let mut gained = self.buckets[slot].counts();
        gained.sub(&before);
        self.totals.add(&gained);
        true
    }

    /// Totals over the trailing hour as of `now_ms` (buckets older than the hour excluded).
    pub fn totals(&mut self, now_ms: i64) -> Counts {
        let bucket = now_ms.div_euclid(BUCKET_MS);
        if bucket > self.head {
            self.advance(bucket);
        }
        self.totals
    }

    /// Number of consecutive non-empty buckets ending at the newest one.
    pub fn active_streak(&self) -> u32 {
        let mut n = 0;
        for k in 0..BUCKETS as i64 {
            let slot = (self.head - k).rem_euclid(BUCKETS as i64) as usize;
            if self.buckets[slot].requests == 0 {
                break;
            }
            n += 1;
        }
        n
    }

    /// The current run of consecutive non-empty buckets ending at the newest one: where it
    /// started (event time of its first bucket) and the harvesting requests in it.
    pub fn harvest_run(&self) -> (i64, u32) {
        let mut harvest = 0u32;
        let mut first = self.head;
        for k in 0..BUCKETS as i64 {
            let slot = (self.head - k).rem_euclid(BUCKETS as i64) as usize;
            if self.buckets[slot].requests == 0 {
                break;
            }
            harvest += u32::from(self.buckets[slot].harvest);
            first = self.head - k;
        }
        (first * BUCKET_MS, harvest)
    }

    /// Harvesting requests in the newest `buckets` buckets as of `now_ms` (the current one,
    /// partly elapsed, and the ones before it): the harvest's recent pace.
    pub fn recent_harvest(&self, now_ms: i64, buckets: usize) -> u32 {
        let now = now_ms.div_euclid(BUCKET_MS);
        (0..buckets.min(BUCKETS) as i64)
            .map(|k| now - k)
            .filter(|&b| b <= self.head && b > self.head - BUCKETS as i64)
            .map(|b| u32::from(self.buckets[b.rem_euclid(BUCKETS as i64) as usize].harvest))
            .sum()
    }

    /// Start of the span the totals cover.
    pub fn start_ms(&self) -> i64 {
        (self.head - BUCKETS as i64 + 1) * BUCKET_MS
    }
}

/// The trailing 24 hours in hourly request counts, for round-the-clock activity. Only
/// whether an hour had any request is ever read, so a count saturating at 255 is enough.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct DayWindow {
    head: i64,
    hours: [u8; 24],
}

impl DayWindow {
    pub fn add(&mut self, ts_ms: i64) {
        let hour = ts_ms.div_euclid(HOUR_MS);
        self.advance(hour);
        if hour > self.head - 24 {
            let slot = hour.rem_euclid(24) as usize;
            self.hours[slot] = self.hours[slot].saturating_add(1);
        }
    }

    fn advance(&mut self, hour: i64) {
        if self.head == 0 || hour - self.head >= 24 {
            if self.head != 0 {
                self.hours = [0; 24];
            }
            self.head = hour;
            return;
        }
        while self.head < hour {
            self.head += 1;
            self.hours[self.head.rem_euclid(24) as usize] = 0;
        }
    }

    /// Distinct clock hours with activity in the trailing 24 hours as of `now_ms`.
    pub fn active_hours(&mut self, now_ms: i64) -> u32 {
        self.advance(now_ms.div_euclid(HOUR_MS));
        self.hours.iter().filter(|&&h| h > 0).count() as u32
    }
}

/// Exponentially weighted mean and variance of inter-arrival gaps (seconds), for regularity.
///
/// The weight is small enough that independent users' exponential gaps (a CV of 1) stay well
/// above `bulk.max_gap_cv` at every one of the thousands of events an app backend sends in an
/// hour, and the variance is corrected for its start at zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct GapStats {
    mean: f32,
    var: f32,
    n: u32,
}

impl GapStats {
    const ALPHA: f32 = 0.02;
    /// Gaps before the CV is judged.
    const MIN_GAPS: u32 = 60;

    pub fn add(&mut self, gap_secs: f32) {
        if self.n == 0 {
            self.mean = gap_secs;
            self.var = 0.0;
        } else {
            let d = gap_secs - self.mean;
            self.mean += Self::ALPHA * d;
            self.var = (1.0 - Self::ALPHA) * (self.var + Self::ALPHA * d * d);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Coefficient of variation once there are enough gaps to judge.
    pub fn cv(&self) -> Option<f64> {
        if self.n < Self::MIN_GAPS || self.mean <= 0.0 {
            return None;
        }
        // The variance started at zero: divide out the weight it has gathered so far.
        let gathered = 1.0 - f64::from(1.0 - Self::ALPHA).powi((self.n - 1).min(10_000) as i32);
        Some((f64::from(self.var) / gathered).sqrt() / f64::from(self.mean))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Sample {
        Sample {
            single_turn: true,
            output_tokens: 10,
            ..Default::default()
        }
    }

    #[test]
    fn hour_window_slides() {
        let mut w = HourWindow::default();
        let t0 = 1_793_577_600_000;
        for i in 0..60 {
            assert!(w.add(t0 + i * 60_000, &req()));
        }
        assert_eq!(w.totals(t0 + 59 * 60_000).requests, 60);
        // Half an hour later the first half has slid out.
        assert_eq!(w.totals(t0 + 89 * 60_000).requests, 30);
        assert_eq!(w.totals(t0 + 89 * 60_000).output_tokens, 300);
        // Two hours later everything has.
        assert_eq!(w.totals(t0 + 200 * 60_000).requests, 0);
    }

    #[test]
    fn late_samples_land_in_their_bucket_or_are_refused() {
        let mut w = HourWindow::default();
        let t0 = 1_793_577_600_000;
        w.add(t0 + 3_600_000, &req());
        assert!(
            w.add(t0 + 3_000_000, &req()),
            "10 minutes late still counts"
        );
        assert!(!w.add(t0, &req()), "an hour late is outside the window");
        assert_eq!(w.totals(t0 + 3_600_000).requests, 2);
    }

    #[test]
    fn streak_counts_consecutive_buckets() {
        let mut w = HourWindow::default();
        let t0 = 1_793_577_600_000;
        for i in 0..6 {
            w.add(t0 + i * BUCKET_MS, &req());
        }
        assert_eq!(w.active_streak(), 6);
        w.add(t0 + 8 * BUCKET_MS, &req());
        assert_eq!(w.active_streak(), 1);
    }

    #[test]
    fn day_window_counts_active_hours() {
        let mut d = DayWindow::default();
        let t0 = 1_793_577_600_000;
        for h in 0..30 {
            d.add(t0 + h * HOUR_MS);
        }
        assert_eq!(d.active_hours(t0 + 29 * HOUR_MS), 24);
        assert_eq!(d.active_hours(t0 + 40 * HOUR_MS), 13);
    }

    #[test]
    fn gap_regularity() {
        let mut g = GapStats::default();
        for i in 0..100 {
            g.add(2.0 + if i % 2 == 0 { 0.1 } else { -0.1 });
        }
        assert!(g.cv().expect("enough") < 0.2);
    }

    /// Independent users (exponential gaps) never look machine-paced, at any of 20,000 events;
    /// a script with 50% jitter always does once judged.
    #[test]
    fn user_paced_gaps_stay_above_the_machine_bar_and_jittered_scripts_below() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let bar = crate::config::BulkConfig::default().max_gap_cv;
        let mut users = GapStats::default();
        let mut lowest = f64::MAX;
        for _ in 0..20_000 {
            users.add(-(1.0 - uniform()).ln() as f32 * 3.0);
            if let Some(cv) = users.cv() {
                lowest = lowest.min(cv);
            }
        }
        assert!(lowest > bar, "user-paced gaps dipped to a CV of {lowest}");
        let mut script = GapStats::default();
        let mut highest = 0f64;
        for _ in 0..2_000 {
            script.add((2.0 * (0.5 + uniform())) as f32);
            if let Some(cv) = script.cv() {
                highest = highest.max(cv);
            }
        }
        assert!(highest < bar, "a jittered script reached a CV of {highest}");
    }
}
