//! Small sampling helpers on top of `rand`, so the simulator needs no `rand_distr`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub type SimRng = ChaCha8Rng;

const BASE36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

/// Uniform float in `[lo, hi)`; tolerates `lo == hi` so callers can pass degenerate ranges.
pub fn unif(rng: &mut SimRng, lo: f64, hi: f64) -> f64 {
    if hi <= lo {
        return lo;
    }
    rng.gen_range(lo..hi)
}

/// Log-uniform in `[lo, hi)`: rates and sizes spanning orders of magnitude should not
/// cluster at the top of their range.
pub fn log_unif(rng: &mut SimRng, lo: f64, hi: f64) -> f64 {
    unif(rng, lo.ln(), hi.ln()).exp()
}

/// Inclusive integer range that accepts `lo > hi` by returning `lo`.
pub fn int(rng: &mut SimRng, lo: i64, hi: i64) -> i64 {
    if hi <= lo {
        return lo;
    }
    rng.gen_range(lo..=hi)
}

pub fn usize_in(rng: &mut SimRng, lo: usize, hi: usize) -> usize {
    if hi <= lo {
        return lo;
    }
    rng.gen_range(lo..=hi)
}

pub fn chance(rng: &mut SimRng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

pub fn std_normal(rng: &mut SimRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Log-normal parameterised by its median, which is how think times and token counts are
/// usually described.
pub fn log_normal(rng: &mut SimRng, median: f64, sigma: f64) -> f64 {
    median * (sigma * std_normal(rng)).exp()
}

pub fn exp_gap(rng: &mut SimRng, mean: f64) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    -mean * u.ln()
}

pub fn pick<T: Copy>(rng: &mut SimRng, xs: &[T]) -> T {
    xs[rng.gen_range(0..xs.len())]
}

/// Weighted choice over `(item, weight)` pairs.
pub fn pick_w<T: Copy>(rng: &mut SimRng, xs: &[(T, f64)]) -> T {
    let total: f64 = xs.iter().map(|x| x.1).sum();
    let mut r = rng.gen::<f64>() * total;
    for (item, w) in xs {
        if r < *w {
            return *item;
        }
        r -= w;
    }
    xs[xs.len() - 1].0
}

pub fn base36(rng: &mut SimRng, n: usize) -> String {
    (0..n)
        .map(|_| BASE36[rng.gen_range(0..BASE36.len())] as char)
        .collect()
}

pub fn hex(rng: &mut SimRng, n: usize) -> String {
    (0..n)
        .map(|_| HEX[rng.gen_range(0..HEX.len())] as char)
        .collect()
}

/// Picks `k` distinct indices out of `n`, in random order.
pub fn sample_indices(rng: &mut SimRng, n: usize, k: usize) -> Vec<usize> {
    rand::seq::index::sample(rng, n, k.min(n)).into_vec()
}

/// Stable 64-bit hash (FNV-1a) so sub-seeds depend on names, not on declaration order.
pub fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finaliser: decorrelates sub-seeds that differ in only a few bits.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
