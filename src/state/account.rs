//! Per-account state: windows, behaviour summaries and the attribute values it holds.

use compact_str::CompactString;

use super::window::{DayWindow, GapStats, HourWindow};
use crate::fingerprint::hamming;

/// Attribute slots an account holds: two recent IPs, two recent prefixes, one device, one
/// payment instrument, one e-mail domain, two recent templates, one autonomous system.
pub const SLOTS: usize = 10;
pub const SLOT_IP: usize = 0;
pub const SLOT_PREFIX: usize = 2;
pub const SLOT_DEVICE: usize = 4;
pub const SLOT_PAYMENT: usize = 5;
pub const SLOT_EMAIL: usize = 6;
pub const SLOT_TEMPLATE: usize = 7;
pub const SLOT_ASN: usize = 9;

/// Misra-Gries summary of an account's most used templates.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopTemplates {
    keys: [u64; 3],
    counts: [u16; 3],
}

impl TopTemplates {
    /// Counts `t`; true if `t` is one of the account's established templates afterwards.
    pub fn add(&mut self, t: u64) -> bool {
        if let Some(i) = self.keys.iter().position(|&k| k == t) {
            self.counts[i] = self.counts[i].saturating_add(1);
            return self.counts[i] >= 3;
        }
        if let Some(i) = self.counts.iter().position(|&c| c == 0) {
            self.keys[i] = t;
            self.counts[i] = 1;
            return false;
        }
        for c in &mut self.counts {
            *c -= 1;
        }
        false
    }
}

/// Per-account state of the co-activity detector (`detect::cohort`), kept in the account record
/// so that an event touches one record; only that detector writes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presence {
    /// Last bin (per model) the account was counted in.
    pub bin: i64,
    pub active_bins: u16,
    pub wave_bins: u16,
    /// Latest waves taken part in (0: empty).
    pub waves: [u32; 3],
    /// The account's first active bin, counted from the detector's first (1-based; 0: none
    /// yet), and the waves declared before it: the share of bins that were waves over the
    /// account's own span.
    pub since: u32,
    pub waves_before: u32,
    /// Waves expected among its active bins by chance: the sum, over them, of the share of
    /// recent bins that were waves (`cohort.local_share_bins`).
    pub expected_waves: f32,
    /// Bin of its last harvesting request (any model; 0: none), its runs of harvesting (a
    /// request after `cohort.schedule_quiet_secs` without one), and how many of those runs
    /// started in the first bin after a round minute: a scheduled job starts on the clock.
    pub last_bin: u32,
    pub runs: u16,
    pub clock_runs: u16,
    /// Episodes of waves it took part in (a wave not in the bin right after its last one:
    /// one job's run through a busy few minutes is one episode, a campaign's waves are
    /// each one), and the bin of its last wave (wrapping).
    pub wave_episodes: u16,
    pub last_wave_bin: u16,
}

/// An account's runs of harvesting as [`Presence`] counts them (what decides whether it keeps
/// to the clock): plain data, which the account stage hands on with each observation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    pub last_bin: u32,
    pub runs: u16,
    pub clock_runs: u16,
}

impl Presence {
    pub fn runs(&self) -> Runs {
        Runs {
            last_bin: self.last_bin,
            runs: self.runs,
            clock_runs: self.clock_runs,
        }
    }

    pub fn set_runs(&mut self, r: Runs) {
        self.last_bin = r.last_bin;
        self.runs = r.runs;
        self.clock_runs = r.clock_runs;
    }

    /// Counts a wave the account took part in (once).
    pub fn credit(&mut self, wave: u32, bin: u16) {
        if self.waves.contains(&wave) {
            return;
        }
        if self.wave_bins == 0 || bin.wrapping_sub(self.last_wave_bin) > 1 {
            self.wave_episodes = self.wave_episodes.saturating_add(1);
        }
        self.last_wave_bin = bin;
        self.wave_bins = self.wave_bins.saturating_add(1);
        self.waves.rotate_right(1);
        self.waves[0] = wave;
    }
}

/// Why an extraction-like account may be named in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinGround {
    No,
    /// Fresh, or caught firing in step with others.
    FreshOrInStep,
    /// Old, but never used for a conversation: a bought account, or a person who only ever
    /// sends one-off questions. Shared infrastructure can name it; a shared template cannot.
    NeverChatted,
}

/// Fields are laid out by hand (`repr(C)`), in the order an event touches them: the per-event
/// fields first, packed into the first six cache lines, then the hour window (its head and
/// totals, then the buckets, of which an event touches one), then what only alerts read. With
/// a million accounts nearly every event finds its account out of cache, so each line an
/// event touches is a memory access. (Not `align(64)`: mimalloc serves over-aligned requests
/// by over-allocating, about 100 bytes more per account; 768-byte blocks come 64-aligned
/// from their size class anyway.)
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Account {
    pub last_seen_ms: i64,
    pub first_seen_ms: i64,
    pub created_ms: Option<i64>,
    /// When the device or IP prefix last changed after an hour of history (0: never).
    pub changed_infra_ms: i64,
    pub last_bin: i64,
    pub last_coarse_bin: i64,
    /// Last bulk alert: event time and tier rank (0: none).
    pub bulk_alert_ms: i64,
    /// Start of the current harvesting episode: since the trailing hour last reached
    /// `bulk.min_harvest_fresh` harvesting requests (0: none).
    pub episode_ms: i64,
    pub gaps: GapStats,
    /// Multi-turn requests ever seen: human chat history.
    pub multi_turn_ever: u32,
    pub requests_ever: u32,
    /// Harvesting requests while tracked (see `Sample::harvest`): the account's own evidence.
    pub harvest_ever: u32,
    /// `harvest_ever` before the current episode's first hour.
    pub episode_base: u32,
    /// How far into the current episode (seconds from `episode_ms`) the harvest last kept its
    /// pace (see `bulk.episode_pace_minutes`): the episode's length.
    pub episode_paced_secs: u32,
    /// Recent traffic is extraction-like (see [`Account::profile`]).
    pub extraction_like: bool,
    recent_pos: u8,
    /// Which of each two-slot pair was written last (bit per pair).
    slot_lru: u8,
    examples_pos: u8,
    pub bulk_alert_rank: u8,
    /// Device or network changes seen: an account that keeps moving (an app on many servers)
    /// is multi-homed, and a move says nothing about it.
    pub infra_changes: u8,
    /// Networks it arrived from that were new to it: a decayed count over about an hour (see
    /// [`Account::note_network`]).
    pub network_hops: f32,
    /// Short hashes of the autonomous systems it came from last (0: empty), and which to
    /// overwrite next.
    recent_asns: [u16; 4],
    asn_pos: u8,
    /// Co-activity: bins and waves the account took part in.
    pub presence: Presence,
    /// Keys of the attribute values this account holds (0: empty).
    pub slots: [u64; SLOTS],
    recent_simhash: [u64; 4],
    pub templates: TopTemplates,
    pub org_id: Option<CompactString>,
    pub day: DayWindow,
    pub hour: HourWindow,
    pub id: CompactString,
    /// Latest example event ids of extraction-like requests.
    pub examples: [CompactString; 3],
}

impl Account {
    pub fn new(id: CompactString, ts_ms: i64) -> Self {
        Self {
            id,
            org_id: None,
            created_ms: None,
            first_seen_ms: ts_ms,
            last_seen_ms: ts_ms,
            hour: HourWindow::default(),
            day: DayWindow::default(),
            gaps: GapStats::default(),
            templates: TopTemplates::default(),
            recent_simhash: [0; 4],
            recent_pos: 0,
            slots: [0; SLOTS],
            slot_lru: 0,
            multi_turn_ever: 0,
            requests_ever: 0,
            harvest_ever: 0,
            episode_ms: 0,
            episode_base: 0,
            episode_paced_secs: 0,
            changed_infra_ms: 0,
            infra_changes: 0,
            last_bin: i64::MIN,
            last_coarse_bin: i64::MIN,
            extraction_like: false,
            network_hops: 0.0,
            recent_asns: [0; 4],
            asn_pos: 0,
            presence: Default::default(),
            examples: Default::default(),
            examples_pos: 0,
            bulk_alert_ms: 0,
            bulk_alert_rank: 0,
        }
    }

    /// Whether this prompt is new for the account: (no recent near-duplicate, not a repeat of
    /// a recent prompt). A repeat (a retry, a debug loop) harvests nothing; a near-duplicate
    /// that changes a slot ("... problem 17 ...") gets a new answer and still does.
    pub fn novel_prompt(&mut self, simhash: u64) -> (bool, bool) {
        if simhash == 0 {
            return (false, false);
        }
        let novel = self
            .recent_simhash
            .iter()
            .all(|&h| h == 0 || hamming(h, simhash) > 3);
        let repeat = self.recent_simhash.contains(&simhash);
        self.recent_simhash[usize::from(self.recent_pos % 4)] = simhash;
        self.recent_pos = self.recent_pos.wrapping_add(1);
        (novel, !repeat)
    }

    pub fn remember_example(&mut self, event_id: &CompactString) {
        self.examples[usize::from(self.examples_pos % 3)] = event_id.clone();
        self.examples_pos = self.examples_pos.wrapping_add(1);
    }

    /// Example event ids, oldest first.
    pub fn example_ids(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(3);
        for k in 0..3u8 {
            let e = &self.examples[usize::from(self.examples_pos.wrapping_add(k) % 3)];
            if !e.is_empty() {
                out.push(e.to_string());
            }
        }
        out
    }

    /// Counts a request's network toward [`Account::network_hops`]: a hop when it comes from
    /// an autonomous system that is not among the last four distinct ones the account came
    /// from (or, without an ASN, from a /24 or /64 it did not hold: `new_prefix`). A person's devices reach the API
    /// from a handful of networks (home, office, phone, a privacy relay's few providers), and
    /// a multi-cloud backend from its clouds' few; a rotating residential proxy gives each
    /// request an exit on another ISP. The count decays with a time constant of an hour
    /// (`gap_secs` since the previous request), so it reads as hops an hour.
    pub fn note_network(&mut self, asn: Option<u32>, new_prefix: bool, gap_secs: f32) {
        if self.network_hops > 0.0 && gap_secs > 0.0 {
            self.network_hops *= (-gap_secs / 3600.0).exp();
        }
        let first = self.requests_ever <= 1;
        let hop = match asn {
            Some(a) => {
                // Folded to 16 bits: two autonomous systems that fold alike only hide a hop.
                let h = ((a as u16) ^ ((a >> 16) as u16)).max(1);
                let known = self.recent_asns.contains(&h);
                if !known {
                    self.recent_asns[usize::from(self.asn_pos % 4)] = h;
                    self.asn_pos = self.asn_pos.wrapping_add(1);
                }
                !known
            }
            None => new_prefix,
        };
        if hop && !first {
            self.network_hops += 1.0;
        }
    }

    /// Places `key` in a single slot. Returns the key it replaced (if different and set).
    pub fn set_slot(&mut self, slot: usize, key: u64) -> Option<u64> {
        let old = self.slots[slot];
        if old == key {
            return None;
        }
        self.slots[slot] = key;
        (old != 0).then_some(old)
    }

    /// Places `key` in the two-slot pair starting at `first`, replacing the older entry.
    /// Returns (newly added, evicted key).
    pub fn set_pair(&mut self, first: usize, key: u64) -> (bool, Option<u64>) {
        let bit = 1u8 << first;
        if self.slots[first] == key {
            self.slot_lru &= !bit;
            return (false, None);
        }
        if self.slots[first + 1] == key {
            self.slot_lru |= bit;
            return (false, None);
        }
        // Replace the one not written last.
        let target = if self.slot_lru & bit == 0 {
            first + 1
        } else {
            first
        };
        let old = self.slots[target];
        self.slots[target] = key;
        if target == first {
            self.slot_lru &= !bit;
        } else {
            self.slot_lru |= bit;
        }
        (true, (old != 0).then_some(old))
    }

    /// Whether the account's trailing hour is extraction-like: it harvested, harvest is at
    /// least `min_share` of its requests, at most `max_chat` of them continued a conversation,
    /// and no verified org stands behind it.
    pub fn profile(&mut self, now_ms: i64, min_share: f64, max_chat: f64) -> bool {
        let t = self.hour.totals(now_ms);
        let chat = 1.0 - t.share(t.single_turn);
        self.org_id.is_none()
            && t.harvest >= 1
            && t.share(t.harvest) >= min_share
            && chat <= max_chat
    }

    /// What the link and cluster stages know of the account (see [`Facts`]).
    pub fn facts(&self) -> Facts {
        Facts {
            extraction_like: self.extraction_like,
            harvest_ever: self.harvest_ever,
            requests_ever: self.requests_ever,
            multi_turn_ever: self.multi_turn_ever,
            first_seen_ms: self.first_seen_ms,
            created_ms: self.created_ms,
            ips: [self.slots[SLOT_IP], self.slots[SLOT_IP + 1]],
        }
    }

    /// Younger than `fresh_days`; of unknown age, fresh only while it is new to us (first
    /// seen within two hours, no chat history).
    pub fn is_fresh(&self, now_ms: i64, fresh_days: f64) -> bool {
        let (c, m, f) = (self.created_ms, self.multi_turn_ever, self.first_seen_ms);
        is_fresh(c, m, f, now_ms, fresh_days)
    }

    /// Age in days at `now_ms`, if the creation time is known.
    pub fn age_days(&self, now_ms: i64) -> Option<f64> {
        age_days(self.created_ms, now_ms)
    }
}

fn age_days(created_ms: Option<i64>, now_ms: i64) -> Option<f64> {
    created_ms.map(|c| ((now_ms - c).max(0) as f64) / 86_400_000.0)
}

/// See [`Account::is_fresh`].
fn is_fresh(
    created_ms: Option<i64>,
    multi_turn_ever: u32,
    first_seen_ms: i64,
    now_ms: i64,
    fresh_days: f64,
) -> bool {
    match age_days(created_ms, now_ms) {
        Some(d) => d < fresh_days,
        None => multi_turn_ever == 0 && now_ms - first_seen_ms < 2 * 3_600_000,
    }
}

/// What the link and cluster stages know of an account: the facts its own stage computed from
/// its traffic, plain data that can travel between stages with the records that name it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Facts {
    /// Its trailing hour is extraction-like (see [`Account::profile`]).
    pub extraction_like: bool,
    pub harvest_ever: u32,
    pub requests_ever: u32,
    pub multi_turn_ever: u32,
    pub first_seen_ms: i64,
    pub created_ms: Option<i64>,
    /// The two most recent addresses it came from (index keys; 0: none).
    pub ips: [u64; 2],
}

impl Facts {
    /// On what ground an extraction-like account may be named in a cluster: fresh, or caught
    /// firing in step with others, or an API-only account with no chat history at all (bought
    /// accounts are old but were never used by a person). It must carry evidence of its own:
    /// at least `min_harvest` harvesting requests. An older account of a person who merely
    /// shares a popular template or network with attackers is not named. Whether it was
    /// caught in step (`in_step`) the cluster assembler knows.
    pub fn join_ground(
        &self,
        in_step: bool,
        now_ms: i64,
        fresh_days: f64,
        min_harvest: u32,
    ) -> JoinGround {
        if !self.may_be_named(min_harvest) {
            JoinGround::No
        } else if in_step || self.is_fresh(now_ms, fresh_days) {
            JoinGround::FreshOrInStep
        } else if self.multi_turn_ever == 0 && self.requests_ever >= 3 {
            JoinGround::NeverChatted
        } else {
            JoinGround::No
        }
    }

    /// Whether the account carries evidence enough to be named on any ground: an
    /// extraction-like hour and `min_harvest` harvesting requests of its own.
    pub fn may_be_named(&self, min_harvest: u32) -> bool {
        self.extraction_like && self.harvest_ever >= min_harvest
    }

    /// Share of its requests that continued a conversation: a person's chat history.
    pub fn chat_share(&self) -> f64 {
        f64::from(self.multi_turn_ever) / f64::from(self.requests_ever.max(1))
    }

    /// See [`Account::is_fresh`].
    pub fn is_fresh(&self, now_ms: i64, fresh_days: f64) -> bool {
        let (c, m, f) = (self.created_ms, self.multi_turn_ever, self.first_seen_ms);
        is_fresh(c, m, f, now_ms, fresh_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_hops_count_new_autonomous_systems_and_decay() {
        let mut a = Account::new("a".into(), 0);
        // A phone between home, office and the carrier, a request a minute for an hour.
        for i in 0..60u32 {
            a.requests_ever += 1;
            a.note_network(Some(7 + i % 3), false, 60.0);
        }
        assert!(a.network_hops <= 2.0, "{}", a.network_hops);
        // A rotating proxy: another ISP each request, a request a minute.
        let mut r = Account::new("r".into(), 0);
        for i in 0..60u32 {
            r.requests_ever += 1;
            r.note_network(Some(1000 + i), false, 60.0);
        }
        assert!(r.network_hops > 30.0, "{}", r.network_hops);
        // An hour later, with no new network, it has decayed to about a third.
        let before = r.network_hops;
        r.requests_ever += 1;
        r.note_network(Some(1059), false, 3600.0);
        assert!((r.network_hops - before / std::f32::consts::E).abs() < 0.5);
        // Without an ASN, a /24 it did not hold counts instead.
        let mut n = Account::new("n".into(), 0);
        n.requests_ever = 2;
        n.note_network(None, true, 1.0);
        n.note_network(None, false, 1.0);
        assert!((n.network_hops - 1.0).abs() < 0.01);
    }

    #[test]
    fn pair_slots_keep_the_two_most_recent() {
        let mut a = Account::new("a".into(), 0);
        assert_eq!(a.set_pair(SLOT_IP, 10), (true, None));
        assert_eq!(a.set_pair(SLOT_IP, 11), (true, None));
        assert_eq!(a.set_pair(SLOT_IP, 10), (false, None));
        // 11 is now the older one and goes.
        assert_eq!(a.set_pair(SLOT_IP, 12), (true, Some(11)));
        assert_eq!(a.set_pair(SLOT_IP, 13), (true, Some(10)));
    }

    #[test]
    fn top_templates() {
        let mut t = TopTemplates::default();
        let hits = (0..30)
            .filter(|i| t.add(if i % 3 == 0 { 7 } else { 8 }))
            .count();
        assert!(hits > 20, "{hits}");
        let mut u = TopTemplates::default();
        let hits = (0..30).filter(|i| u.add(*i as u64 + 100)).count();
        assert_eq!(hits, 0);
    }

    #[test]
    fn examples_ring() {
        let mut a = Account::new("a".into(), 0);
        for e in ["e1", "e2", "e3", "e4"] {
            a.remember_example(&e.into());
        }
        assert_eq!(a.example_ids(), vec!["e2", "e3", "e4"]);
    }
}
