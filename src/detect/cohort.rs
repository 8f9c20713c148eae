//! Behavioural links: accounts that harvest in loosely synchronised waves, with nothing else
//! in common (every IP, card and device different, every prompt reworded).
//!
//! After SynchroTrap (Cao et al., CCS 2014) and CopyCatch (Beutel et al., WWW 2013): what a
//! scripted campaign cannot hide is that its accounts act *together*. Time is cut into bins of
//! `cohort.bin_secs` per model. For each bin the detector counts the distinct accounts that
//! sent a harvesting request, and learns online what that count usually is (the mean of the
//! last 32 bins without their busiest quarter: this deployment's own traffic, no constant
//! fitted to a simulator). A bin whose count is improbable under that baseline
//! (Poisson tail below `cohort.max_wave_p`, and at least `cohort.min_wave_accounts`) is a
//! *wave*. So is a bin whose *arrivals* are improbable: the accounts in it that were not in
//! the model's bin before, against the same kind of baseline of arrivals. Scripts harvesting
//! steadily are in every bin, so they swell the count a small campaign's wave must stand out
//! from, but they do not arrive; a campaign firing every minute or more arrives with each
//! wave. So, too, is a bin whose *returns* are improbable: the accounts in it that harvested
//! nothing for `cohort.return_quiet_secs` before (at least `cohort.min_wave_accounts` of them).
//! Scripts at a request a minute or so skip bins, so they arrive all the time, but they never
//! go quiet that long; a campaign keeping each account to a few requests an hour returns with
//! every round. A wave counted on arrivals or returns credits only the accounts it counted
//! (on returns, until a broader count of the same bin is improbable too: the rest of a round
//! comes in behind its first accounts). The wave test is a loose screen: one bin says little when a
//! small campaign fires over a busy background, and the background grows with the deployment while a campaign does
//! not. The verdict is per account, where the evidence adds up over its bins: an account is
//! *in step* when so many of its active bins are waves that chance
//! cannot explain it: the binomial tail of its wave count, given its active bins and the
//! share of bins that were waves, is below `cohort.max_account_p`, over at least
//! `cohort.min_waves` waves, in as many separate episodes (a wave not in the bin right
//! after the account's last: one run through a few busy minutes is one piece of evidence,
//! however many bins it spans). In-step accounts are linked through the waves they shared.
//!
//! Customers' scheduled jobs fire together too: crontabs start on the round minutes, so
//! the minutes after the hour are busy with accounts that have nothing to do with each
//! other. A run of harvesting (a request after `cohort.schedule_quiet_secs` without one)
//! that starts in the first bin after a round minute is *on the clock*; an established
//! account at least `cohort.schedule_min_runs` of whose runs, and `cohort.schedule_min_share`
//! of all of them, were on the clock keeps to a schedule, and firing together (a wave, or a
//! template's burst) is no evidence against it. Nor is it counted in the bins: counted, the
//! jobs make waves of their own on their minutes, and the share of bins that are waves, which
//! every account is judged against, rises until a campaign firing beside them is no longer
//! selective. A run that starts at a random moment is on the clock one time in
//! 60 / `cohort.bin_secs`, and a campaign member's rounds, whatever its period, drift across
//! the minute. An operator can put aged accounts' waves on the
//! round minutes; timing then tells them from customers' jobs no better than it tells the
//! jobs from each other, and fresh accounts, shared infrastructure and templates must carry
//! the case.
//!
//! The share of bins that were waves is the largest of three: over the last
//! `cohort.baseline_secs`, over the account's own span since its first harvesting bin, and at
//! the moments it was active (the share of waves among the model's last
//! `cohort.local_share_bins` bins, averaged over its active bins). An account that is simply
//! always on (an evaluation run at a request every few seconds, an app backend) takes part in
//! every wave while it runs, and in as many bins that are not: it shows no selectivity,
//! whatever a campaign firing at the same time does, even one that starts firing densely
//! just as the run starts after a quiet hour. A campaign member fires in the waves and little
//! else.
//!
//! State is bounded: per model a current bin with at most `MAX_PARTICIPANTS` accounts, a
//! registry of waves of the last `baseline_secs`, and a few fields per account. Each event
//! costs O(1); a wave credits its participants once, when it is declared.

use nohash_hasher::IntMap;
use std::collections::VecDeque;
use xxhash_rust::xxh3::xxh3_64;

use super::{Explained, LinkDetector, LinkKind, LinkRecord, Observed, View};
use crate::config::CohortConfig;
use crate::state::account::Account;
pub use crate::state::account::Presence;

/// Accounts remembered per bin until it is known whether it is a wave.
const MAX_PARTICIPANTS: usize = 1024;
/// Recent bins whose counts make the baseline.
const RECENT: usize = 32;

/// Tag of a cluster link that is a co-activity wave rather than an attribute value.
const WAVE_LINK: u64 = 0xc0ac_0000_0000_0000;

/// The link key of a wave.
pub fn wave_link(wave: u32) -> u64 {
    WAVE_LINK | u64::from(wave)
}

/// The wave of a link key, if it is one.
pub fn as_wave(link: u64) -> Option<u32> {
    (link & 0xffff_ffff_0000_0000 == WAVE_LINK).then_some(link as u32)
}

/// Which accounts of a bin a wave counts (see the module docs): every harvesting account,
/// those that arrived (not counted in the model's bin before), or those that returned
/// (no harvest for `cohort.return_quiet_secs` before). Steady scripts swell the first;
/// they do not arrive, and a campaign sending a request every few minutes or fewer
/// returns with each round while scripts at any steadier pace never do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Counted {
    #[default]
    All = 0,
    Arriving = 1,
    Returning = 2,
}

impl Counted {
    const ALL: [Counted; 3] = [Counted::All, Counted::Arriving, Counted::Returning];

    pub fn as_str(self) -> &'static str {
        match self {
            Counted::All => "all",
            Counted::Arriving => "arriving",
            Counted::Returning => "returning",
        }
    }
}

/// One way of counting a model's bins: the current bin's count and who is in it, and the
/// counts of the recent bins (a ring) with their trimmed mean, the baseline.
#[derive(Debug, Default)]
struct Tally {
    count: u32,
    members: Vec<u64>,
    recent: [u32; RECENT],
    mean: f64,
}

/// One model's current bin.
#[derive(Debug, Default)]
struct Bins {
    model: u64,
    bin: i64,
    /// Indexed by [`Counted`].
    tallies: [Tally; 3],
    pos: usize,
    /// The wave this bin became (0: not a wave), and which of its accounts made it one: a
    /// wave credits only the accounts it counted.
    wave: u32,
    wave_by: Counted,
    /// Waves of this model still remembered.
    waves_held: u32,
    observed: u64,
    /// Which of the bins before the current one were waves (bit 0: the one just before).
    wave_ring: u64,
}

/// A wave: a bin far busier with harvesting accounts than the baseline.
#[derive(Debug, Clone)]
pub struct Wave {
    pub start_ms: i64,
    /// Index of the model's bins.
    model: usize,
    pub accounts: u32,
    /// Which of the bin's accounts `accounts` counts, against a baseline of the same.
    pub counted: Counted,
    /// Accounts the baseline expected in that bin.
    pub expected: f64,
}

impl Wave {
    /// A wave as another stage described it (see [`super::Explained`]).
    pub fn described(start_ms: i64, accounts: u32, counted: Counted, expected: f64) -> Self {
        Self {
            start_ms,
            model: 0,
            accounts,
            counted,
            expected,
        }
    }

    /// The chance of `accounts` or more under the baseline (Poisson tail), for every account
    /// counted so far: the wave was declared as soon as that chance fell to
    /// `cohort.max_wave_p`, and each account that joined it since made it smaller.
    pub fn p_value(&self) -> f64 {
        poisson_tail(self.accounts, self.expected)
    }
}

/// What an account's co-activity shows now.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub active_bins: u16,
    pub wave_bins: u16,
    /// Probability of that many waves or more by chance.
    pub p_value: f64,
}

pub struct Cohort {
    cfg: CohortConfig,
    bins: Vec<Bins>,
    waves: IntMap<u32, Wave>,
    order: VecDeque<u32>,
    next_id: u32,
    /// Waves declared so far (wrapping), over all models.
    declared: u32,
    /// First and newest bin seen, over all models.
    first_bin: i64,
    newest_bin: i64,
}

/// P(X >= k) for X ~ Poisson(mean).
pub fn poisson_tail(k: u32, mean: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    // 1 - P(X <= k-1), summed in log space for stability.
    let mut term = (-mean).exp();
    let mut cdf = term;
    for i in 1..k {
        term *= mean / f64::from(i);
        cdf += term;
        if term < 1e-300 {
            break;
        }
    }
    let tail = 1.0 - cdf;
    if tail > 1e-12 {
        return tail.max(0.0);
    }
    // Far past the mean, 1 - cdf keeps only rounding error (an alert's wave of hundreds
    // against a baseline of tens read 0): sum the upper terms instead, each a smaller
    // fraction of the one before.
    let mut term = (f64::from(k) * mean.ln() - mean - ln_factorial(k)).exp();
    let mut sum = term;
    let mut i = k;
    while term > sum * 1e-17 && i < k.saturating_add(1_000) {
        i += 1;
        term *= mean / f64::from(i);
        sum += term;
    }
    sum.min(1.0)
}

/// P(X >= k) for X ~ Binomial(n, q), summed from k upward in log space until the terms no
/// longer matter (past the mean each is a smaller fraction of the one before, so after
/// `TAIL_TERMS` terms the rest is bounded by a geometric series: an upper bound, never
/// more work). At or below the mean the answer is not small, and 1 is returned: only small
/// tails are compared with a threshold.
pub fn binomial_tail(k: u32, n: u32, q: f64) -> f64 {
    if k == 0 || q >= 1.0 {
        return 1.0;
    }
    if k > n || q <= 0.0 {
        return 0.0;
    }
    let (nf, kf) = (f64::from(n), f64::from(k));
    if kf <= nf * q {
        return 1.0;
    }
    let (lq, lp) = (q.ln(), (-q).ln_1p());
    // ln C(n, k) + k ln q + (n - k) ln(1 - q)
    let mut ln_term = ln_choose(n, k) + kf * lq + (nf - kf) * lp;
    let mut sum = 0.0;
    let mut i = k;
    for _ in 0..TAIL_TERMS {
        let term = ln_term.exp();
        sum += term;
        if i == n || term < sum * 1e-12 {
            return sum.min(1.0);
        }
        // C(n, i+1) / C(n, i) = (n - i) / (i + 1); below 1 past the mean, and falling.
        let ratio = f64::from(n - i) / f64::from(i + 1) * q / (1.0 - q);
        ln_term += ratio.ln();
        i += 1;
        if ratio >= 1.0 {
            return 1.0;
        }
    }
    let ratio = f64::from(n - i) / f64::from(i + 1) * q / (1.0 - q);
    (sum + ln_term.exp() / (1.0 - ratio).max(f64::MIN_POSITIVE)).min(1.0)
}

/// Terms of a binomial tail summed exactly before the rest is bounded.
const TAIL_TERMS: u32 = 64;

/// ln C(n, k) by the log-gamma of the factorials (Stirling's series past small arguments).
fn ln_choose(n: u32, k: u32) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

fn ln_factorial(n: u32) -> f64 {
    if n < 32 {
        return (2..=n).map(|i| f64::from(i).ln()).sum();
    }
    let x = f64::from(n) + 1.0;
    // ln Gamma(x), Stirling with two correction terms: error below 1e-10 for x >= 32.
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// The mean of the `filled` recent bins of `ring` without their busiest quarter: periodic
/// waves do not raise the bar they are judged by, while a steady crowd does within minutes.
fn trimmed_mean(ring: &[u32; RECENT], filled: usize) -> f64 {
    let mut sorted = *ring;
    sorted.sort_unstable();
    // The ring holds zeros where it is not yet filled: the smallest entries.
    let kept = &sorted[RECENT - filled..RECENT - filled / 4];
    if kept.is_empty() {
        0.0
    } else {
        kept.iter().map(|&c| f64::from(c)).sum::<f64>() / kept.len() as f64
    }
}

impl Cohort {
    pub fn new(cfg: CohortConfig) -> Self {
        Self {
            cfg,
            bins: Vec::new(),
            waves: IntMap::default(),
            order: VecDeque::new(),
            next_id: 0,
            declared: 0,
            first_bin: i64::MAX,
            newest_bin: i64::MIN,
        }
    }

    pub fn wave(&self, id: u32) -> Option<&Wave> {
        self.waves.get(&id)
    }

    pub fn waves_held(&self) -> usize {
        self.waves.len()
    }

    fn bin_ms(&self) -> i64 {
        (self.cfg.bin_secs * 1000) as i64
    }

    /// Counts a harvesting request of `account` (its presence `p`) on `model` at `ts_ms`.
    /// Appends to `credited` the accounts (other than this one) that a newly declared wave
    /// credits; their presence must be credited with the returned wave id by the caller.
    /// Returns the wave this request's bin is (0: none).
    pub fn observe(
        &mut self,
        model: u64,
        ts_ms: i64,
        account: u64,
        p: &mut Presence,
        established: bool,
        credited: &mut Vec<u64>,
    ) -> u32 {
        let bin = ts_ms.div_euclid(self.bin_ms());
        self.first_bin = self.first_bin.min(bin);
        let key = bin.wrapping_mul(31).wrapping_add(model as i64);
        if p.bin == key {
            // Counted in this bin already; a wave declared since credited it.
            return 0;
        }
        let arrival = p.bin != (bin - 1).wrapping_mul(31).wrapping_add(model as i64);
        let quiet = (self.cfg.return_quiet_secs / self.cfg.bin_secs.max(1)).max(1) as u32;
        let returning = p.last_bin == 0 || (bin as u32).wrapping_sub(p.last_bin) > quiet;
        p.bin = key;
        p.note_run(bin, &self.cfg);
        if established && p.keeps_schedule(&self.cfg) {
            // A customer's scheduled job: its runs start together with other customers' on
            // the round minutes. It is neither evidence (it is never linked) nor background
            // a campaign must stand out from: counted, the jobs' runs make waves of their
            // own every quarter hour, and the share of bins that are waves, which every
            // account's co-activity is judged against, rises with them.
            return 0;
        }
        p.active_bins = p.active_bins.saturating_add(1);
        if p.since == 0 {
            p.since = (bin - self.first_bin + 1).clamp(1, i64::from(u32::MAX)) as u32;
            p.waves_before = self.declared;
        }
        let idx = match self.bins.iter().position(|b| b.model == model) {
            Some(i) => i,
            None => {
                self.bins.push(Bins {
                    model,
                    bin,
                    ..Default::default()
                });
                self.bins.len() - 1
            }
        };
        if bin > self.bins[idx].bin {
            self.close_bin(idx, bin);
        }
        p.expected_waves += self.local_share(idx) as f32;
        if bin < self.bins[idx].bin {
            // A late event: counted for the account's rate, not for a closed bin.
            return 0;
        }
        let max_wave_p = self.cfg.max_wave_p;
        let min_wave = self.cfg.min_wave_accounts;
        let warmup = self.cfg.warmup_bins;
        let b = &mut self.bins[idx];
        let is = [true, arrival, returning];
        for (t, &counted) in b.tallies.iter_mut().zip(&is) {
            t.count += u32::from(counted);
        }
        for (t, &counted) in b.tallies.iter_mut().zip(&is) {
            if counted && t.members.len() < MAX_PARTICIPANTS {
                t.members.push(account);
            }
        }
        if b.wave != 0 {
            // A wave declared on the accounts returning becomes one on a broader count once
            // that is improbable too (a campaign's round returns a few accounts ahead of the
            // rest): it then credits the broader count's accounts.
            let mut by = b.wave_by;
            for broader in Counted::ALL {
                if by != Counted::Returning || broader == by {
                    break;
                }
                let t = &b.tallies[broader as usize];
                let e = t.mean.max(1.0);
                if !is[broader as usize] || (broader != Counted::All && f64::from(t.count) <= e) {
                    continue;
                }
                if poisson_tail(t.count, e) > max_wave_p {
                    continue;
                }
                by = broader;
                b.wave_by = by;
                if let Some(w) = self.waves.get_mut(&b.wave) {
                    w.counted = by;
                    w.expected = e;
                }
                credited.extend(t.members.iter().copied().filter(|&a| a != account));
                break;
            }
            if !is[by as usize] {
                return 0;
            }
            p.credit(b.wave, bin as u16);
            if let Some(w) = self.waves.get_mut(&b.wave) {
                w.accounts = b.tallies[by as usize].count;
            }
            return b.wave;
        }
        if b.observed < warmup || b.tallies[Counted::All as usize].count < min_wave {
            return 0;
        }
        // Each way of counting against its own baseline, which excludes the current bin; at
        // least one account per bin is expected so that a quiet model's first busy moment is
        // judged against something. The arriving and returning accounts are judged only when
        // this account is one of them (the bin's count of them just rose), and the
        // returning ones only when there are enough of them to make a wave on their own.
        let mut best: Option<(Counted, f64, f64)> = None;
        for counted in Counted::ALL {
            let t = &b.tallies[counted as usize];
            if !is[counted as usize] || (counted == Counted::Returning && t.count < min_wave) {
                continue;
            }
            let e = t.mean.max(1.0);
            if counted != Counted::All && f64::from(t.count) <= e {
                continue;
            }
            let pv = poisson_tail(t.count, e);
            if best.is_none_or(|(_, _, bp)| pv < bp) {
                best = Some((counted, e, pv));
            }
            if pv <= max_wave_p {
                break;
            }
        }
        let Some((by, expected, _)) = best.filter(|(_, _, pv)| *pv <= max_wave_p) else {
            return 0;
        };
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.declared = self.declared.wrapping_add(1);
        let id = self.next_id;
        b.wave = id;
        b.wave_by = by;
        b.waves_held += 1;
        let start_ms = bin * (self.cfg.bin_secs * 1000) as i64;
        let t = &mut b.tallies[by as usize];
        self.waves.insert(
            id,
            Wave {
                start_ms,
                model: idx,
                accounts: t.count,
                counted: by,
                expected,
            },
        );
        self.order.push_back(id);
        for &a in &t.members {
            if a != account {
                credited.push(a);
            }
        }
        p.credit(id, bin as u16);
        id
    }

    /// Closes the model's current bin and moves to `bin`, updating the baselines with the
    /// closed bin's counts and the empty bins skipped.
    fn close_bin(&mut self, idx: usize, bin: i64) {
        let b = &mut self.bins[idx];
        let skipped = (bin - b.bin - 1).clamp(0, 64) as u32;
        b.wave_ring = ((b.wave_ring << 1) | u64::from(b.wave != 0))
            .checked_shl(skipped)
            .unwrap_or(0);
        let gap = (bin - b.bin - 1).clamp(0, RECENT as i64) as usize;
        b.observed = b
            .observed
            .saturating_add(1 + (bin - b.bin - 1).max(0) as u64);
        let filled = (b.observed as usize).min(RECENT);
        for t in &mut b.tallies {
            let mut pos = b.pos;
            t.recent[pos] = t.count;
            pos = (pos + 1) % RECENT;
            for _ in 0..gap {
                t.recent[pos] = 0;
                pos = (pos + 1) % RECENT;
            }
            t.mean = trimmed_mean(&t.recent, filled);
            t.count = 0;
            t.members.clear();
        }
        b.pos = (b.pos + 1 + gap) % RECENT;
        b.bin = bin;
        b.wave = 0;
        b.wave_by = Counted::All;
        self.newest_bin = self.newest_bin.max(bin);
        let keep_ms = (self.cfg.baseline_secs * 1000) as i64;
        let now_ms = bin * (self.cfg.bin_secs * 1000) as i64;
        while let Some(&id) = self.order.front() {
            match self.waves.get(&id) {
                Some(w) if now_ms - w.start_ms <= keep_ms => break,
                _ => {
                    self.order.pop_front();
                    if let Some(w) = self.waves.remove(&id) {
                        if let Some(b) = self.bins.get_mut(w.model) {
                            b.waves_held = b.waves_held.saturating_sub(1);
                        }
                    }
                }
            }
        }
    }

    /// Share of bins that were waves over the remembered span, on the model with the most,
    /// floored at one wave per span: the chance (taken high) that a given active bin of an
    /// independent account is a wave.
    fn wave_share(&self) -> f64 {
        let elapsed = self
            .newest_bin
            .saturating_sub(self.first_bin)
            .saturating_add(1);
        let span_bins = ((self.cfg.baseline_secs / self.cfg.bin_secs) as i64)
            .min(elapsed)
            .max(1) as f64;
        let most = self.bins.iter().map(|b| b.waves_held).max().unwrap_or(0);
        (f64::from(most.max(1)) / span_bins).min(1.0)
    }

    /// Share of the model's last `cohort.local_share_bins` bins (before the current one) that
    /// were waves: how likely a bin of an independent account active now is a wave.
    fn local_share(&self, idx: usize) -> f64 {
        let b = &self.bins[idx];
        let n = self.cfg.local_share_bins.clamp(1, 64);
        let seen = (b.observed.min(u64::from(n)) as u32).max(1);
        let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        f64::from((b.wave_ring & mask).count_ones()) / f64::from(seen)
    }

    /// Credits a participant of a newly declared wave.
    pub fn credit(&self, p: &mut Presence, wave: u32) {
        let bin = self
            .waves
            .get(&wave)
            .map_or(0, |w| w.start_ms.div_euclid(self.bin_ms()));
        p.credit(wave, bin as u16);
    }

    /// The share of bins that were waves over the account's own span (0 before it has one).
    fn span_share(&self, p: &Presence) -> f64 {
        if p.since == 0 || self.newest_bin < self.first_bin {
            return 0.0;
        }
        let first = self.first_bin + i64::from(p.since) - 1;
        let bins = (self.newest_bin - first + 1).max(1) as f64;
        (f64::from(self.declared.wrapping_sub(p.waves_before)) / bins).min(1.0)
    }

    /// The account's co-activity, and whether it is in step.
    pub fn step(&self, p: &Presence) -> (Step, bool) {
        // The wave share when the account was active, averaged over its active bins: one that
        // is always on while a campaign fires densely takes part in as many waves as the
        // moment has, however quiet its span was before.
        let local = f64::from(p.expected_waves) / f64::from(p.active_bins.max(1));
        let q = self.wave_share().max(self.span_share(p)).max(local);
        let p_value = binomial_tail(u32::from(p.wave_bins), u32::from(p.active_bins), q);
        let s = Step {
            active_bins: p.active_bins,
            wave_bins: p.wave_bins,
            p_value,
        };
        // Waves in separate episodes: one run through a few busy minutes (a job starting on
        // the clock with others) is one piece of evidence, however many bins it spans.
        let in_step = u32::from(p.wave_bins) >= self.cfg.min_waves
            && u32::from(p.wave_episodes) >= self.cfg.min_waves
            && p_value <= self.cfg.max_account_p;
        (s, in_step)
    }
}

/// Whether `acc` is an established account whose harvest runs keep to the wall clock: at
/// least `cohort.schedule_min_runs` of them, and `cohort.schedule_min_share` of all, started
/// in the first bin after a round minute (a run starting at a random moment does so one time
/// in 60 / `bin_secs`). Customers' scheduled jobs fire together on the round minutes, so
/// firing together (in a wave, or a template's burst) is no evidence against it.
pub fn on_schedule(cfg: &crate::config::Config, acc: &Account, now_ms: i64) -> bool {
    acc.presence.keeps_schedule(&cfg.cohort) && !acc.is_fresh(now_ms, cfg.engine.fresh_account_days)
}

impl Presence {
    /// Counts the account's harvest in `bin` toward its runs: a run starts after a quiet
    /// spell (`cohort.schedule_quiet_secs`), on the round minute or not. Depends on the
    /// account's own requests alone, so every link shard that sees them keeps it alike.
    pub fn note_run(&mut self, bin: i64, cfg: &CohortConfig) {
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let quiet = (cfg.schedule_quiet_secs / cfg.bin_secs).max(1) as u32;
        let b32 = bin as u32;
        if self.last_bin == 0 || b32.wrapping_sub(self.last_bin) > quiet {
            self.runs = self.runs.saturating_add(1);
            if (bin * bin_ms).rem_euclid(60_000) < bin_ms {
                self.clock_runs = self.clock_runs.saturating_add(1);
            }
        }
        self.last_bin = b32;
    }

    /// Whether the account's harvest runs keep to the wall clock (see [`on_schedule`], which
    /// also asks that the account be established).
    pub fn keeps_schedule(&self, cfg: &CohortConfig) -> bool {
        u32::from(self.clock_runs) >= cfg.schedule_min_runs
            && f64::from(self.clock_runs) >= cfg.schedule_min_share * f64::from(self.runs)
    }
}

/// The behavioural-link detector: counts each harvesting request in its co-activity bin and,
/// when a wave puts accounts in step, links each in-step account through the waves it took
/// part in. Its per-account state is [`Presence`], kept in the account record.
pub struct CohortLinks {
    cohort: Cohort,
    credited: Vec<u64>,
}

impl CohortLinks {
    pub fn new(cfg: CohortConfig) -> Self {
        Self {
            cohort: Cohort::new(cfg),
            credited: Vec::new(),
        }
    }

    /// The link record of an in-step account, if it may be named (the assembler also counts
    /// it as caught in step, for its other links).
    fn link(&self, view: &mut View<'_>, akey: u64, event: u64) -> Option<LinkRecord> {
        let min_harvest = view.cfg.cluster.min_member_harvest;
        let acc = view.accounts.get(&akey)?;
        let (_, in_step) = self.cohort.step(&acc.presence);
        let facts = acc.facts();
        if !in_step || !facts.may_be_named(min_harvest) {
            return None;
        }
        if on_schedule(view.cfg, &acc, view.now) {
            return None;
        }
        let waves = acc.presence.waves;
        let first = waves.iter().copied().find(|&w| w != 0).unwrap_or(0);
        let mut r = LinkRecord::new(LinkKind::Wave, event, akey, view.now);
        r.keys = waves
            .iter()
            .filter(|&&w| w != 0 && self.cohort.wave(w).is_some())
            .map(|&w| wave_link(w))
            .collect();
        r.founder = if first == 0 { 0 } else { wave_link(first) };
        r.seed = u64::from(first) ^ 0xc0ac_7171;
        r.account_facts = Some(facts);
        r.accounts = vec![(akey, facts)];
        Some(r)
    }
}

impl LinkDetector for CohortLinks {
    fn observe(&mut self, view: &mut View<'_>, obs: &Observed<'_>, links: &mut Vec<LinkRecord>) {
        if !(view.cfg.cohort.enabled && view.cfg.cluster.enabled && obs.harvest) {
            return;
        }
        let ev = obs.ev;
        let akey = obs.account;
        let model = ev.model.as_ref().map_or(0, |m| xxh3_64(m.as_bytes()));
        let mut credited = std::mem::take(&mut self.credited);
        credited.clear();
        let fresh_days = view.cfg.engine.fresh_account_days;
        let wave = match view.accounts.get_mut(&akey) {
            Some(mut acc) => {
                let established = !acc.is_fresh(view.now, fresh_days);
                self.cohort.observe(
                    model,
                    ev.ts_ms,
                    akey,
                    &mut acc.presence,
                    established,
                    &mut credited,
                )
            }
            None => 0,
        };
        for &other in &credited {
            if let Some(mut acc) = view.accounts.get_mut(&other) {
                self.cohort.credit(&mut acc.presence, wave);
            }
        }
        credited.push(akey);
        for &k in &credited {
            if let Some(r) = self.link(view, k, obs.event) {
                links.push(r);
            }
        }
        self.credited = credited;
    }

    fn step(&self, acc: &Account) -> Option<(bool, f64)> {
        let (step, in_step) = self.cohort.step(&acc.presence);
        Some((in_step, step.p_value))
    }

    fn explain(&self, _view: &View<'_>, key: u64) -> Option<Explained> {
        self.cohort
            .wave(as_wave(key)?)
            .cloned()
            .map(Explained::Wave)
    }
}

impl CohortLinks {
    /// In a link shard that does not own the event's model (see [`super::Shard`]): keeps
    /// only the account's runs (what [`on_schedule`] reads), which its own requests decide.
    pub fn note_run(&self, view: &mut View<'_>, obs: &Observed<'_>) {
        if !(view.cfg.cohort.enabled && view.cfg.cluster.enabled && obs.harvest) {
            return;
        }
        let bin = obs
            .ev
            .ts_ms
            .div_euclid((view.cfg.cohort.bin_secs * 1000) as i64);
        if let Some(mut acc) = view.accounts.get_mut(&obs.account) {
            acc.presence.note_run(bin, &view.cfg.cohort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_793_577_600_000;

    #[test]
    fn tails() {
        assert!((poisson_tail(1, 1.0) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        assert!(poisson_tail(20, 1.0) < 1e-15);
        // Far tails keep their size: P(X >= 20 | 1) = 1.59e-19 (the first term, e^-1 / 20!,
        // is 1.51e-19, and the rest add 5%); P(X >= 300 | 15) = 7.1e-269.
        let p = poisson_tail(20, 1.0);
        assert!(
            (p / (-1.0f64).exp() * 2_432_902_008_176_640_000.0 - 1.0).abs() < 0.06,
            "{p}"
        );
        let far = poisson_tail(300, 15.0);
        assert!((far / 7.069e-269 - 1.0).abs() < 1e-3, "{far}");
        assert_eq!(poisson_tail(0, 3.0), 1.0);
        assert!(binomial_tail(3, 3, 0.01) < 1e-5);
        assert!(binomial_tail(2, 100, 0.01) > 0.2);
    }

    /// Background: `per_bin` independent accounts per bin for `bins` bins, then `n` accounts
    /// firing together every `every` bins, `waves` times. Returns the cohort and presences.
    fn run(per_bin: u64, n: u64, waves: u64, every: u64) -> (Cohort, IntMap<u64, Presence>) {
        let cfg = CohortConfig::default();
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut c = Cohort::new(cfg);
        let mut pres: IntMap<u64, Presence> = IntMap::default();
        let mut credited = Vec::new();
        let mut next_bg = 1_000_000u64;
        let total = 200 + waves * every;
        for b in 0..total {
            let ts = T0 + b as i64 * bin_ms;
            for _ in 0..per_bin {
                next_bg += 1;
                let mut p = pres.remove(&next_bg).unwrap_or_default();
                c.observe(1, ts + 10, next_bg, &mut p, false, &mut credited);
                pres.insert(next_bg, p);
            }
            if b >= 200 && (b - 200) % every == 0 {
                for a in 0..n {
                    let mut p = pres.remove(&a).unwrap_or_default();
                    credited.clear();
                    let w = c.observe(1, ts + 100 + a as i64, a, &mut p, false, &mut credited);
                    pres.insert(a, p);
                    for &o in &credited {
                        if let Some(q) = pres.get_mut(&o) {
                            c.credit(q, w);
                        }
                    }
                }
            }
        }
        (c, pres)
    }

    #[test]
    fn accounts_firing_together_are_in_step_and_background_is_not() {
        let (c, pres) = run(3, 20, 6, 40);
        for a in 0..20 {
            let (s, in_step) = c.step(&pres[&a]);
            assert!(in_step, "account {a}: {s:?}");
        }
        let flagged = pres
            .iter()
            .filter(|(k, p)| **k >= 1_000_000 && c.step(p).1)
            .count();
        assert_eq!(flagged, 0);
    }

    /// Harvesting requests on one model, with each account's presence, crediting the
    /// participants of every wave as the engine does.
    struct Traffic {
        c: Cohort,
        pres: IntMap<u64, Presence>,
        credited: Vec<u64>,
    }

    impl Traffic {
        fn new(cfg: CohortConfig) -> Self {
            Self {
                c: Cohort::new(cfg),
                pres: IntMap::default(),
                credited: Vec::new(),
            }
        }

        fn hit(&mut self, a: u64, ts: i64) {
            self.hit_as(a, ts, false);
        }

        fn hit_as(&mut self, a: u64, ts: i64, established: bool) {
            let mut p = self.pres.remove(&a).unwrap_or_default();
            self.credited.clear();
            let w = self
                .c
                .observe(1, ts, a, &mut p, established, &mut self.credited);
            self.pres.insert(a, p);
            for &o in &self.credited {
                if let Some(q) = self.pres.get_mut(&o) {
                    self.c.credit(q, w);
                }
            }
        }
    }

    /// A pool of `pool` independent accounts, each harvesting in a bin with probability
    /// `1/every` (pseudo-random, fixed), and `n` campaign accounts, each joining a wave every
    /// `period` bins with probability 0.6. Returns how many campaign and pool accounts end
    /// in step.
    fn small_campaign_over_busy_background(cfg: CohortConfig) -> (usize, usize) {
        let (pool, every, n, period) = (600u64, 40u64, 14u64, 20u64);
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut s = Traffic::new(cfg);
        for b in 0..720u64 {
            let ts = T0 + b as i64 * bin_ms;
            for a in 0..pool {
                if xxh3_64(&(a << 32 | b).to_le_bytes()) % every == 0 {
                    s.hit(1_000_000 + a, ts + 10 + a as i64);
                }
            }
            if b >= 120 && b % period == 0 {
                for a in 0..n {
                    if xxh3_64(&(a << 40 | b).to_le_bytes()) % 10 < 6 {
                        s.hit(a, ts + 7_000 + a as i64 * 100);
                    }
                }
            }
        }
        let in_step = |lo: u64, hi: u64| (lo..hi).filter(|a| s.c.step(&s.pres[a]).1).count();
        (in_step(0, n), in_step(1_000_000, 1_000_000 + pool))
    }

    #[test]
    fn a_small_campaign_over_a_busy_background_is_in_step() {
        // About 15 accounts harvest in every bin; 8 or so of the campaign's 14 fire together.
        // No single wave stands far above the background, but each member's bins add up.
        let (campaign, pool) = small_campaign_over_busy_background(CohortConfig::default());
        assert!(campaign >= 12, "{campaign} of 14 in step");
        assert_eq!(pool, 0);
        // A screen as strict as the verdict sees no wave at all.
        let strict = CohortConfig {
            max_wave_p: 1e-6,
            ..CohortConfig::default()
        };
        let (campaign, _) = small_campaign_over_busy_background(strict);
        assert_eq!(campaign, 0);
    }

    #[test]
    fn binomial_tails_are_exact_where_waves_are_common() {
        assert!((binomial_tail(14, 14, 0.5) - 0.5f64.powi(14)).abs() < 1e-12);
        // P(X >= 12), X ~ Binomial(20, 0.4) = 0.056526...
        assert!((binomial_tail(12, 20, 0.4) - 0.056_526).abs() < 1e-5);
        // P(X >= 40), X ~ Binomial(400, 0.05) = 3.1303e-5
        assert!((binomial_tail(40, 400, 0.05) / 3.1303e-5 - 1.0).abs() < 1e-3);
        assert_eq!(binomial_tail(5, 20, 0.4), 1.0, "at or below the mean");
        assert_eq!(binomial_tail(21, 20, 0.4), 0.0);
        // Just past the mean of a long run, the bounded rest keeps the cost fixed and errs
        // upward (fewer accounts in step, never more).
        let p = binomial_tail(20_100, 60_000, 1.0 / 3.0);
        assert!((0.18..=1.0).contains(&p), "{p} (the tail is about 0.19)");
    }

    #[test]
    fn an_always_on_account_is_not_in_step_with_a_campaign_beside_it() {
        // A quiet background, then, for the last half hour, a campaign of 14 accounts firing
        // together every third bin; from the campaign's start an evaluation run sends a
        // request every few seconds, so it is in every wave, and in every bin between them.
        // Over the last hour a third as many bins were waves as over the run's own span.
        let cfg = CohortConfig::default();
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut s = Traffic::new(cfg);
        const ALWAYS_ON: u64 = 999;
        for b in 0..480u64 {
            let ts = T0 + b as i64 * bin_ms;
            for a in 0..3u64 {
                if xxh3_64(&(a << 32 | b).to_le_bytes()) % 2 == 0 {
                    s.hit(1_000 + a, ts + 10 + a as i64);
                }
            }
            if b >= 360 {
                s.hit(ALWAYS_ON, ts + 5_000);
                if b % 3 == 0 {
                    for a in 0..14u64 {
                        s.hit(a, ts + 7_000 + a as i64 * 100);
                    }
                }
            }
        }
        let in_step = (0..14u64).filter(|a| s.c.step(&s.pres[a]).1).count();
        assert!(in_step >= 12, "{in_step} of 14 campaign accounts in step");
        let (step, on) = s.c.step(&s.pres[&ALWAYS_ON]);
        assert!(!on, "the always-on account: {step:?}");
        // It took part in the waves that stood out on every account in the bin (those that
        // stood out only on the accounts arriving in it, it did not arrive with).
        assert!(
            step.wave_bins >= 15,
            "it did take part in the waves: {step:?}"
        );
    }

    #[test]
    fn a_small_wave_over_steady_harvesters_arrives_and_they_do_not() {
        // 40 scripts harvest in every bin; every fourth bin 6 campaign accounts join them.
        // 46 accounts against a baseline of 40 is no wave, but 6 arriving where about none do
        // is, and only the arrivals take part in it.
        let cfg = CohortConfig::default();
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut s = Traffic::new(cfg);
        for b in 0..400u64 {
            let ts = T0 + b as i64 * bin_ms;
            for a in 0..40u64 {
                s.hit(1_000 + a, ts + 10 + a as i64);
            }
            if b >= 100 && b % 4 == 0 {
                for a in 0..6u64 {
                    s.hit(a, ts + 7_000 + a as i64 * 100);
                }
            }
        }
        assert!(s.c.waves_held() >= 40, "{} waves", s.c.waves_held());
        let in_step = (0..6u64).filter(|a| s.c.step(&s.pres[a]).1).count();
        assert_eq!(in_step, 6);
        for a in 1_000..1_040u64 {
            let (step, on) = s.c.step(&s.pres[&a]);
            assert!(!on && step.wave_bins == 0, "steady account {a}: {step:?}");
        }
    }

    /// 400 scripts harvesting a request a minute or so each (in a bin with probability a
    /// quarter), 300 people harvesting now and then (one bin in 200), and a campaign of 16
    /// accounts, about three in four of them firing together every quarter hour from the
    /// first half hour on. Returns how many of the campaign, scripts and people end in step.
    fn campaign_in_rounds_over_jittery_scripts(cfg: CohortConfig) -> (usize, usize, usize) {
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut s = Traffic::new(cfg);
        let (scripts, people, n) = (400u64, 300u64, 16u64);
        for b in 0..720u64 {
            let ts = T0 + b as i64 * bin_ms;
            for a in 0..scripts {
                if xxh3_64(&(a << 32 | b).to_le_bytes()) % 4 == 0 {
                    s.hit(1_000_000 + a, ts + 10 + a as i64);
                }
            }
            for a in 0..people {
                if xxh3_64(&(a << 36 | b).to_le_bytes()) % 200 == 0 {
                    s.hit(2_000_000 + a, ts + 5_000 + a as i64);
                }
            }
            if b >= 120 && b % 60 == 0 {
                for a in 0..n {
                    if xxh3_64(&(a << 40 | b).to_le_bytes()) % 4 < 3 {
                        s.hit(a, ts + 7_000 + a as i64 * 100);
                    }
                }
            }
        }
        let in_step = |lo: u64, hi: u64| {
            (lo..hi)
                .filter(|a| s.pres.get(a).is_some_and(|p| s.c.step(p).1))
                .count()
        };
        (
            in_step(0, n),
            in_step(1_000_000, 1_000_000 + scripts),
            in_step(2_000_000, 2_000_000 + people),
        )
    }

    #[test]
    fn a_campaign_returning_in_rounds_stands_out_from_jittery_scripts() {
        // A round's dozen accounts over a hundred in the bin, or over the 75 or so that
        // arrive in it (not in the bin before: the scripts skip bins), is no wave; but they
        // return after a quarter hour without harvest, where the scripts never go quiet
        // that long and the people return a few at a time.
        let (campaign, scripts, people) =
            campaign_in_rounds_over_jittery_scripts(CohortConfig::default());
        assert!(campaign >= 14, "{campaign} of 16 in step");
        assert_eq!((scripts, people), (0, 0));
        // With no request counted as a return (the quiet spell longer than the run), most
        // rounds are lost in the scripts' arrivals.
        let never = CohortConfig {
            return_quiet_secs: 1_000_000,
            ..CohortConfig::default()
        };
        let (campaign, scripts, people) = campaign_in_rounds_over_jittery_scripts(never);
        assert!(campaign <= 4, "{campaign} of 16 in step on arrivals alone");
        assert_eq!((scripts, people), (0, 0));
    }

    #[test]
    fn a_run_through_busy_minutes_is_one_episode() {
        // 20 accounts harvest through the same eight bins, once: eight waves, one episode,
        // not in step. Three such runs an hour apart are three.
        let cfg = CohortConfig::default();
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let mut s = Traffic::new(cfg);
        let runs_at = [100u64, 340, 580];
        for b in 0..700u64 {
            let ts = T0 + b as i64 * bin_ms + 7_000;
            if b % 3 == 0 {
                s.hit(1_000 + b % 7, ts);
            }
            for (i, &r) in runs_at.iter().enumerate() {
                if (r..r + 8).contains(&b) {
                    for a in 0..20u64 {
                        s.hit(a, ts + 100 + a as i64 * 50);
                    }
                }
                if i == 0 && b == r + 8 {
                    let (step, on) = s.c.step(&s.pres[&0]);
                    assert!(step.wave_bins >= 3 && !on, "after one run: {step:?}");
                    assert_eq!(s.pres[&0].wave_episodes, 1);
                }
            }
        }
        assert_eq!(s.pres[&0].wave_episodes, 3);
        let in_step = (0..20u64).filter(|a| s.c.step(&s.pres[a]).1).count();
        assert_eq!(in_step, 20);
    }

    /// Customers' scheduled jobs (80 accounts, every 15 minutes, ten on each of eight
    /// minutes of the quarter hour, each run three bins long) beside a campaign of 12
    /// accounts, about half of them firing together every 5 bins. Returns how many of the
    /// campaign are in step, and how many jobs, when the jobs' accounts are `established`.
    fn campaign_beside_scheduled_jobs(established: bool) -> (usize, usize) {
        let cfg = CohortConfig::default();
        let bin_ms = (cfg.bin_secs * 1000) as i64;
        let bins_per_min = 60_000 / bin_ms;
        let mut s = Traffic::new(cfg);
        for b in 0..720i64 {
            let ts = T0 + b * bin_ms;
            for j in 0..80u64 {
                let start = (j % 8) as i64 * 2 * bins_per_min;
                if (0..3).contains(&((b - start).rem_euclid(60 * bins_per_min / 4))) {
                    s.hit_as(1_000 + j, ts + 1_000 + j as i64 * 10, established);
                }
            }
            if b >= 120 && b % 5 == 2 {
                for a in 0..12u64 {
                    if xxh3_64(&((a << 40) | b as u64).to_le_bytes()) % 10 < 5 {
                        s.hit(a, ts + 7_000 + a as i64 * 100);
                    }
                }
            }
        }
        let in_step = |lo: u64, hi: u64| (lo..hi).filter(|a| s.c.step(&s.pres[a]).1).count();
        (in_step(0, 12), in_step(1_000, 1_080))
    }

    #[test]
    fn customers_jobs_on_the_clock_do_not_hide_a_campaign() {
        // Counted, the jobs make waves of their own in every other minute, and a campaign's
        // waves are no longer rare among the bins. Established accounts keeping to the clock
        // are not counted.
        let (campaign, jobs) = campaign_beside_scheduled_jobs(true);
        assert_eq!(campaign, 12);
        assert_eq!(jobs, 0);
        let (campaign, _) = campaign_beside_scheduled_jobs(false);
        assert!(
            campaign <= 6,
            "{campaign} of 12 in step with the jobs counted"
        );
    }

    #[test]
    fn a_busy_but_steady_crowd_makes_no_waves() {
        // 15 accounts every bin: the baseline learns it, nothing is a wave.
        let (c, _) = run(15, 0, 1, 1);
        assert_eq!(c.waves_held(), 0);
    }
}
