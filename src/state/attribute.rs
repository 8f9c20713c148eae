//! The shared-attribute index: for each attribute value (an IP, a /24, a device or payment
//! fingerprint, an e-mail domain, a prompt template), the accounts recently seen with it and
//! decayed aggregates of their traffic through it.

use compact_str::CompactString;
use nohash_hasher::IntSet;
use smallvec::SmallVec;
use std::net::IpAddr;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Kinds of shared attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrKind {
    Ip,
    IpPrefix,
    Device,
    Payment,
    EmailDomain,
    Template,
    /// The minute an account was created: scripts create accounts in bursts.
    Creation,
    /// The autonomous system of the address: a hosting provider's pool of proxies.
    Asn,
}

impl AttrKind {
    pub const ALL: [AttrKind; 8] = [
        AttrKind::Ip,
        AttrKind::IpPrefix,
        AttrKind::Device,
        AttrKind::Payment,
        AttrKind::EmailDomain,
        AttrKind::Template,
        AttrKind::Creation,
        AttrKind::Asn,
    ];

    pub fn from_name(name: &str) -> Option<AttrKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Ip => "ip",
            AttrKind::IpPrefix => "ip_prefix",
            AttrKind::Device => "device_fingerprint",
            AttrKind::Payment => "payment_fingerprint",
            AttrKind::EmailDomain => "email_domain",
            AttrKind::Template => "prompt_template",
            AttrKind::Creation => "creation_minute",
            AttrKind::Asn => "asn",
        }
    }
}

/// Key of an attribute value in the index.
pub fn key(kind: AttrKind, value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, kind as u64 + 1).max(1)
}

/// The /24 (IPv4) or /64 (IPv6) of an address.
pub fn prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Accounts holding a value: a short vector while small, a set once large.
#[derive(Debug, Clone)]
pub enum Members {
    /// Most values have one or two holders: kept inline, no allocation.
    Few(SmallVec<[u64; 2]>),
    Many(IntSet<u64>),
}

impl Default for Members {
    fn default() -> Self {
        Members::Few(SmallVec::new())
    }
}

impl Members {
    const FEW: usize = 8;

    pub fn insert(&mut self, a: u64) -> bool {
        match self {
            Members::Few(v) => {
                if v.contains(&a) {
                    return false;
                }
                if v.len() < Self::FEW {
                    v.push(a);
                } else {
                    let mut s: IntSet<u64> = v.iter().copied().collect();
                    s.insert(a);
                    *self = Members::Many(s);
                }
                true
            }
            Members::Many(s) => s.insert(a),
        }
    }

    pub fn remove(&mut self, a: u64) -> bool {
        match self {
            Members::Few(v) => match v.iter().position(|&x| x == a) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            Members::Many(s) => s.remove(&a),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Members::Few(v) => v.len(),
            Members::Many(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members in a deterministic order.
    pub fn sorted(&self) -> Vec<u64> {
        let mut v: Vec<u64> = match self {
            Members::Few(v) => v.to_vec(),
            Members::Many(s) => s.iter().copied().collect(),
        };
        v.sort_unstable();
        v
    }
}

/// A 64-register HyperLogLog: how many distinct items it has seen (the networks a value's
/// traffic comes from; the links of a cluster).
#[derive(Debug, Clone)]
pub struct Networks([u8; 64]);

impl Default for Networks {
    fn default() -> Self {
        Networks([0; 64])
    }
}

impl Networks {
    /// Counts `h`, a well-mixed hash of the item.
    pub fn add(&mut self, h: u64) {
        let idx = (h & 63) as usize;
        let rank = ((h >> 6) | (1 << 57)).trailing_zeros() as u8 + 1;
        if rank > self.0[idx] {
            self.0[idx] = rank;
        }
    }

    /// Folds in another sketch: the estimate of the union.
    pub fn merge(&mut self, other: &Networks) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// Estimated number of distinct networks.
    pub fn estimate(&self) -> f64 {
        let m = 64.0;
        // 2^-r, built from its exponent bits (exact; `powi` is a libcall with a loop).
        let sum: f64 = self
            .0
            .iter()
            .map(|&r| f64::from_bits((1023 - u64::from(r)) << 52))
            .sum();
        let zeros = self.0.iter().filter(|&&r| r == 0).count();
        let e = 0.709 * m * m / sum;
        if e < 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            e
        }
    }
}

/// Coarse synchrony bins are this many fine bins wide.
pub const COARSE: i64 = 6;

/// Expected busy bins under independent (Poisson) arrivals over observed busy bins, from
/// decayed counts of account-bin incidences and busy bins.
fn burstiness(
    account_bins: f32,
    busy_bins: f32,
    span_ms: f32,
    horizon_ms: f32,
    bin_ms: i64,
) -> f64 {
    if account_bins < 10.0 || busy_bins <= 0.0 {
        return 1.0;
    }
    let span = span_ms.max(bin_ms as f32);
    let n_eff = horizon_ms / bin_ms as f32 * (1.0 - (-span / horizon_ms).exp());
    let lambda = account_bins / n_eff.max(1.0);
    let expected = n_eff * (1.0 - (-lambda).exp());
    f64::from(expected / busy_bins).max(0.0)
}

/// What one request contributes to the values it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Touch {
    pub single_turn: bool,
    /// The request harvested (see `Sample::harvest`).
    pub harvest: bool,
    pub reasoning: bool,
    pub fresh: bool,
    pub org: bool,
    /// First request of this account in this synchrony bin.
    pub new_account_bin: bool,
    /// First request of this account in this coarse bin ([`COARSE`] synchrony bins).
    pub new_account_coarse_bin: bool,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Account creation time in hours since the epoch, if known.
    pub created_hours: Option<f64>,
    /// Key of the request's /24 or /64 (0: no address).
    pub network: u64,
    /// Harvesting requests the account has sent while tracked, this one included.
    pub harvest_ever: u32,
}

/// One attribute value and its aggregates, decayed with the configured horizon.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub kind: AttrKind,
    pub value: CompactString,
    pub members: Members,
    /// Members whose own recent traffic is extraction-like (API-style, reasoning or
    /// output-heavy, no verified org). Counting accounts, not requests, keeps a few heavy
    /// attackers from making a popular value look pure.
    pub extraction_members: u32,
    pub first_ms: i64,
    pub last_ms: i64,
    pub requests: f32,
    /// Harvesting requests through the value.
    pub harvest: f32,
    /// The holders' own harvest, credited as each one joins: the harvesting requests it had
    /// sent (anywhere) when it took up the value. A swarm that rotates over many networks
    /// passes little harvest through any one of them, but every holder carries its own.
    pub joined_harvest: f32,
    pub single_turn: f32,
    pub reasoning: f32,
    pub fresh: f32,
    pub org: f32,
    pub input_ktokens: f32,
    pub output_ktokens: f32,
    /// Decayed count of account-bin incidences and of busy bins, for synchrony.
    pub account_bins: f32,
    pub busy_bins: f32,
    pub last_bin: i64,
    /// Accounts seen so far in `last_bin`.
    bin_accounts: u16,
    /// The same counts over bins [`COARSE`] times wider, for rounds with loose jitter.
    coarse_account_bins: f32,
    coarse_busy_bins: f32,
    coarse_last_bin: i64,
    /// Decayed weight, mean and second moment of member creation times (hours).
    created_w: f32,
    created_mean: f64,
    created_m2: f64,
    /// Distinct networks behind a device fingerprint or e-mail domain, once it is shared.
    pub networks: Option<Box<Networks>>,
    /// For a /24 or /64: its busiest address as its holders last showed it (the low 32 bits of
    /// the address's index key) and that address's holders then. A pool spread over a block
    /// holds many of its addresses; a residential exit or a carrier's /64 concentrates its
    /// holders on one, and the rest of the block are its neighbours.
    top_address: u32,
    top_address_holders: u32,
    /// It has linked and named its holders (later links name only the account at hand).
    pub founded: bool,
    /// Its holders were last reported to be a crowd of people (kept by the link detector).
    pub crowd: bool,
}

impl Attribute {
    pub fn new(kind: AttrKind, value: CompactString, ts_ms: i64) -> Self {
        Self {
            kind,
            value,
            members: Members::default(),
            extraction_members: 0,
            first_ms: ts_ms,
            last_ms: ts_ms,
            requests: 0.0,
            harvest: 0.0,
            joined_harvest: 0.0,
            single_turn: 0.0,
            reasoning: 0.0,
            fresh: 0.0,
            org: 0.0,
            input_ktokens: 0.0,
            output_ktokens: 0.0,
            account_bins: 0.0,
            busy_bins: 0.0,
            last_bin: i64::MIN,
            bin_accounts: 0,
            coarse_account_bins: 0.0,
            coarse_busy_bins: 0.0,
            coarse_last_bin: i64::MIN,
            created_w: 0.0,
            created_mean: 0.0,
            created_m2: 0.0,
            networks: None,
            top_address: 0,
            top_address_holders: 0,
            founded: false,
            crowd: false,
        }
    }

    /// Adds a holder; true if it was new.
    pub fn add_member(&mut self, account: u64, extraction_like: bool) -> bool {
        let new = self.members.insert(account);
        if new && extraction_like {
            self.extraction_members += 1;
        }
        new
    }

    /// Removes a holder; true if it was one.
    pub fn remove_member(&mut self, account: u64, extraction_like: bool) -> bool {
        let was = self.members.remove(account);
        if was && extraction_like {
            self.extraction_members = self.extraction_members.saturating_sub(1);
        }
        was
    }

    /// A holder's profile changed.
    pub fn member_flipped(&mut self, now_extraction_like: bool) {
        if now_extraction_like {
            self.extraction_members = (self.extraction_members + 1).min(self.members.len() as u32);
        } else {
            self.extraction_members = self.extraction_members.saturating_sub(1);
        }
    }

    /// Share of holders whose own traffic is extraction-like.
    pub fn purity(&self) -> f64 {
        if self.members.is_empty() {
            0.0
        } else {
            f64::from(self.extraction_members) / self.members.len() as f64
        }
    }

    /// Adds one request at `ts_ms` (decay time constant `horizon_ms`, bins of `bin_ms`).
    /// Returns whether the request landed in a bin where another account
    /// already used this value: taking part in a synchronised burst.
    pub fn touch(&mut self, ts_ms: i64, t: &Touch, horizon_ms: f32, bin_ms: i64) -> bool {
        if ts_ms > self.last_ms {
            let f = (-((ts_ms - self.last_ms) as f32) / horizon_ms).exp();
            self.requests *= f;
            self.harvest *= f;
            self.joined_harvest *= f;
            self.single_turn *= f;
            self.reasoning *= f;
            self.fresh *= f;
            self.org *= f;
            self.input_ktokens *= f;
            self.output_ktokens *= f;
            self.account_bins *= f;
            self.busy_bins *= f;
            self.coarse_account_bins *= f;
            self.coarse_busy_bins *= f;
            self.created_w *= f;
            self.last_ms = ts_ms;
        }
        self.requests += 1.0;
        self.harvest += f32::from(u8::from(t.harvest));
        self.single_turn += f32::from(u8::from(t.single_turn));
        self.reasoning += f32::from(u8::from(t.reasoning));
        self.fresh += f32::from(u8::from(t.fresh));
        self.org += f32::from(u8::from(t.org));
        self.input_ktokens += t.input_tokens as f32 / 1000.0;
        self.output_ktokens += t.output_tokens as f32 / 1000.0;
        if t.network != 0 && matches!(self.kind, AttrKind::Device | AttrKind::EmailDomain) {
            if let Some(n) = &mut self.networks {
                n.add(t.network);
            } else if self.members.len() >= 2 {
                let mut n = Box::new(Networks([0; 64]));
                n.add(t.network);
                self.networks = Some(n);
            }
        }
        let bin = ts_ms.div_euclid(bin_ms);
        if t.new_account_coarse_bin {
            let coarse = ts_ms.div_euclid(bin_ms * COARSE);
            self.coarse_account_bins += 1.0;
            if coarse > self.coarse_last_bin {
                self.coarse_busy_bins += 1.0;
                self.coarse_last_bin = coarse;
            }
        }
        let mut in_burst = false;
        if t.new_account_bin {
            self.account_bins += 1.0;
            if bin > self.last_bin {
                self.busy_bins += 1.0;
                self.last_bin = bin;
                self.bin_accounts = 1;
            } else if bin == self.last_bin {
                self.bin_accounts = self.bin_accounts.saturating_add(1);
                in_burst = self.bin_accounts >= 2;
            }
        }
        if let Some(h) = t.created_hours {
            // Weighted incremental mean and variance (West's algorithm).
            self.created_w += 1.0;
            let w = f64::from(self.created_w);
            let d = h - self.created_mean;
            self.created_mean += d / w;
            self.created_m2 += d * (h - self.created_mean);
            if self.created_m2 < 0.0 {
                self.created_m2 = 0.0;
            }
        }
        in_burst
    }

    pub fn share(&self, part: f32) -> f64 {
        if self.requests <= 0.0 {
            0.0
        } else {
            f64::from(part / self.requests)
        }
    }

    pub fn output_ratio(&self) -> f64 {
        f64::from(self.output_ktokens / self.input_ktokens.max(0.001))
    }

    /// How much busier the busiest moments are than independent (Poisson) activity would
    /// make them: expected busy bins over observed. About 1 for independent accounts; about
    /// the number of accounts acting together for lockstep.
    /// Measured at two bin widths (rounds fired within a few seconds, or spread over half a
    /// minute); the larger counts.
    pub fn synchrony(&self, now_ms: i64, horizon_ms: f32, bin_ms: i64) -> f64 {
        let span = (now_ms - self.first_ms) as f32;
        let fine = burstiness(self.account_bins, self.busy_bins, span, horizon_ms, bin_ms);
        let coarse = burstiness(
            self.coarse_account_bins,
            self.coarse_busy_bins,
            span,
            horizon_ms,
            bin_ms * COARSE,
        );
        fine.max(coarse)
    }

    /// A request of this /24 or /64 came from the address `key`, which `holders` accounts hold:
    /// keeps the busiest address seen (a single heavy-hitter slot, refreshed whenever that
    /// address is seen again).
    pub fn note_address(&mut self, key: u64, holders: u32) {
        let k = key as u32;
        if k == self.top_address || holders > self.top_address_holders {
            self.top_address = k;
            self.top_address_holders = holders;
        }
    }

    /// Share of this /24's or /64's holders that hold its busiest address (see
    /// [`Attribute::note_address`]); 0 before any address was noted.
    pub fn address_concentration(&self) -> f64 {
        if self.members.is_empty() {
            0.0
        } else {
            (f64::from(self.top_address_holders) / self.members.len() as f64).min(1.0)
        }
    }

    /// Accounts per distinct network behind this value: high for a custom client used
    /// through a proxy pool, about 1 or below for a popular SDK or webmail domain.
    pub fn accounts_per_network(&self) -> Option<f64> {
        self.networks
            .as_ref()
            .map(|n| self.members.len() as f64 / n.estimate().max(1.0))
    }

    /// Standard deviation of member creation times (hours), if known for enough traffic.
    /// Mean creation time of the holders' requests, in hours since the epoch.
    pub fn creation_mean_hours(&self) -> Option<f64> {
        (self.created_w > 0.0).then_some(self.created_mean)
    }

    pub fn creation_spread_hours(&self) -> Option<f64> {
        (self.created_w >= 5.0).then(|| (self.created_m2 / f64::from(self.created_w)).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_keeps_its_busiest_address() {
        let mut a = Attribute::new(AttrKind::IpPrefix, "10.0.0.0/24".into(), 0);
        for m in 0..10 {
            a.add_member(m, true);
        }
        assert_eq!(a.address_concentration(), 0.0);
        // A neighbour's own address, then the exit most holders sit on.
        a.note_address(1, 1);
        a.note_address(2, 9);
        assert!((a.address_concentration() - 0.9).abs() < 1e-9);
        // A less busy address does not displace it; the busiest one seen again updates it.
        a.note_address(3, 4);
        assert!((a.address_concentration() - 0.9).abs() < 1e-9);
        a.note_address(2, 5);
        assert!((a.address_concentration() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn register_weights_are_exact_powers_of_two() {
        for r in 0u8..=64 {
            let w = f64::from_bits((1023 - u64::from(r)) << 52);
            assert_eq!(w, 2f64.powi(-i32::from(r)), "{r}");
        }
    }

    const H: f32 = 3_600_000.0;

    #[test]
    fn members_grow_from_vec_to_set() {
        let mut m = Members::default();
        for a in 0..20 {
            assert!(m.insert(a));
        }
        assert!(!m.insert(3));
        assert_eq!(m.len(), 20);
        assert!(m.remove(3));
        assert_eq!(m.sorted().len(), 19);
    }

    #[test]
    fn lockstep_has_high_synchrony_independent_does_not() {
        let t0 = 1_793_577_600_000i64;
        let bin = 5_000;
        let mut lock = Attribute::new(AttrKind::Template, "t".into(), t0);
        // 40 accounts fire together every 2 minutes for 30 minutes.
        for round in 0..15 {
            for a in 0..40 {
                let ts = t0 + round * 120_000 + a * 50;
                lock.touch(
                    ts,
                    &Touch {
                        new_account_bin: true,
                        ..Default::default()
                    },
                    H,
                    bin,
                );
            }
        }
        let now = t0 + 15 * 120_000;
        assert!(
            lock.synchrony(now, H, bin) > 10.0,
            "{}",
            lock.synchrony(now, H, bin)
        );

        // The same volume spread evenly (pseudo-randomly) over the same time.
        let mut indep = Attribute::new(AttrKind::Template, "u".into(), t0);
        let mut x: u64 = 12345;
        let mut times: Vec<i64> = (0..600)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                t0 + ((x >> 33) % 1_800_000) as i64
            })
            .collect();
        times.sort_unstable();
        for ts in times {
            indep.touch(
                ts,
                &Touch {
                    new_account_bin: true,
                    ..Default::default()
                },
                H,
                bin,
            );
        }
        let s = indep.synchrony(now, H, bin);
        assert!(s < 1.5, "{s}");
    }

    #[test]
    fn loosely_jittered_rounds_show_at_the_coarse_scale() {
        let t0 = 1_793_577_600_000i64;
        let bin = 5_000;
        let mut a = Attribute::new(AttrKind::Template, "t".into(), t0);
        // 40 accounts fire spread over 30 s each round, every 4 minutes, for an hour: too
        // loose for 5-second bins to see.
        for round in 0..15i64 {
            for k in 0..40i64 {
                let ts = t0 + round * 240_000 + (k * 1_237) % 30_000;
                let t = Touch {
                    new_account_bin: true,
                    new_account_coarse_bin: true,
                    ..Default::default()
                };
                a.touch(ts, &t, H, bin);
            }
        }
        let s = a.synchrony(t0 + 15 * 240_000, H, bin);
        assert!(s > 3.0, "{s}");
    }

    #[test]
    fn creation_spread() {
        let t0 = 1_793_577_600_000i64;
        let mut a = Attribute::new(AttrKind::Payment, "p".into(), t0);
        for i in 0..10 {
            let t = Touch {
                created_hours: Some(1000.0 + f64::from(i % 2)),
                ..Default::default()
            };
            a.touch(t0 + i64::from(i), &t, H, 5000);
        }
        let s = a.creation_spread_hours().expect("known");
        assert!((s - 0.5).abs() < 0.05, "{s}");
    }

    #[test]
    fn network_estimate() {
        let mut n = Networks([0; 64]);
        for i in 0..5000u64 {
            n.add(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()));
        }
        let e = n.estimate();
        assert!((3500.0..6500.0).contains(&e), "{e}");
        let mut few = Networks([0; 64]);
        for i in 0..1000u64 {
            few.add(xxhash_rust::xxh3::xxh3_64(&(i % 5).to_le_bytes()));
        }
        assert!((4.0..7.0).contains(&few.estimate()), "{}", few.estimate());
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix(&"1.2.3.4".parse().expect("ip")), "1.2.3.0/24");
        assert_eq!(
            prefix(&"2001:db8:1:2:3::1".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
    }
}
