//! A map from non-zero 64-bit hashes to values, stored flat: open addressing with linear
//! probing, key and value side by side. A lookup usually costs one cache line, where a
//! general hash map costs one for its control bytes and another for its entries; with a
//! million attribute values and several lookups per event that is most of the lookup time.
//!
//! Keys are already well-mixed hashes and never 0 (0 marks an empty slot). Grows by doubling
//! to stay at most 3/4 full; removal shifts later entries back, so there are no tombstones.

#[derive(Debug)]
pub struct FlatMap<V> {
    slots: Vec<(u64, V)>,
    /// `64 - log2(slots.len())`: the home slot of a key is the top bits of its Fibonacci
    /// product.
    shift: u32,
    len: usize,
}

impl<V: Default> Default for FlatMap<V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            shift: 64,
            len: 0,
        }
    }
}

impl<V: Default> FlatMap<V> {
    const MIN_SLOTS: usize = 64;

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The slot holding `key` (`Ok`), or the empty slot where it would go (`Err`). The table
    /// must not be empty.
    #[inline]
    fn find(&self, key: u64) -> Result<usize, usize> {
        debug_assert!(key != 0);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == key {
                return Ok(i);
            }
            if k == 0 {
                return Err(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Prefetches the home slot of `key`.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if !self.slots.is_empty() {
            super::prefetch::line(&self.slots[self.home(key)]);
        }
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        self.find(key).ok().map(|i| &self.slots[i].1)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        match self.find(key) {
            Ok(i) => Some(&mut self.slots[i].1),
            Err(_) => None,
        }
    }

    /// The value of `key`, inserting `make()` first if absent. The flag is true if inserted.
    pub fn get_or_insert_with(&mut self, key: u64, make: impl FnOnce() -> V) -> (&mut V, bool) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        match self.find(key) {
            Ok(i) => (&mut self.slots[i].1, false),
            Err(i) => {
                self.slots[i] = (key, make());
                self.len += 1;
                (&mut self.slots[i].1, true)
            }
        }
    }

    /// Removes `key` if `keep` says no on its value; returns the removed value.
    pub fn remove_if(&mut self, key: u64, keep: impl FnOnce(&mut V) -> bool) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(key).ok()?;
        if keep(&mut self.slots[i].1) {
            return None;
        }
        Some(self.remove_at(i))
    }

    pub fn remove(&mut self, key: u64) -> Option<V> {
        self.remove_if(key, |_| false)
    }

    /// Removes slot `i`, shifting back the entries after it that probed past it.
    fn remove_at(&mut self, mut i: usize) -> V {
        let mask = self.slots.len() - 1;
        let (_, v) = std::mem::take(&mut self.slots[i]);
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j].0;
            if k == 0 {
                break;
            }
            let h = self.home(k);
            // The entry at j may stay if its home is cyclically within (i, j].
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                self.slots.swap(i, j);
                i = j;
            }
        }
        v
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(u64, &mut V) -> bool) {
        let mut gone = Vec::new();
        for (k, v) in &mut self.slots {
            if *k != 0 && !keep(*k, v) {
                gone.push(*k);
            }
        }
        for k in gone {
            self.remove(k);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &V)> {
        self.slots
            .iter()
            .filter(|(k, _)| *k != 0)
            .map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().filter(|(k, _)| *k != 0).map(|(_, v)| v)
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(Self::MIN_SLOTS);
        let mut fresh = Vec::with_capacity(n);
        fresh.resize_with(n, Default::default);
        let old = std::mem::replace(&mut self.slots, fresh);
        self.shift = 64 - n.trailing_zeros();
        let mask = n - 1;
        for (k, v) in old {
            if k == 0 {
                continue;
            }
            let mut i = self.home(k);
            while self.slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_hash_map() {
        let mut f: FlatMap<u64> = FlatMap::default();
        let mut r: HashMap<u64, u64> = HashMap::new();
        let mut x: u64 = 7;
        for i in 0..200_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // A small key space so that inserts, hits and removals all happen often; keys
            // that share their top bits collide on purpose.
            let key = ((x >> 33) % 3000 + 1) << (i % 3 * 20);
            match x % 5 {
                0 | 1 => {
                    let (v, new) = f.get_or_insert_with(key, || i);
                    *v += 1;
                    let e = r.entry(key);
                    let was_new = matches!(e, std::collections::hash_map::Entry::Vacant(_));
                    *e.or_insert(i) += 1;
                    assert_eq!(new, was_new);
                }
                2 => assert_eq!(f.remove(key), r.remove(&key)),
                3 => assert_eq!(f.get(key), r.get(&key)),
                _ => {
                    let got = f.remove_if(key, |v| *v % 2 == 0);
                    let want = match r.get(&key) {
                        Some(v) if v % 2 != 0 => r.remove(&key),
                        _ => None,
                    };
                    assert_eq!(got, want);
                }
            }
            assert_eq!(f.len(), r.len());
            if i % 50_000 == 0 {
                f.retain(|k, _| k % 3 != 0);
                r.retain(|k, _| k % 3 != 0);
            }
        }
        let mut a: Vec<u64> = f.values().copied().collect();
        let mut b: Vec<u64> = r.values().copied().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        for (k, v) in &r {
            assert_eq!(f.get(*k), Some(v));
        }
    }
}
