//! The state the engine keeps for every detector: accounts and their windows, the attribute
//! index, de-duplication, the prompt-copies sketch and the allowlists. `engine` owns and
//! updates it on each event; `detect` reads it (through [`crate::detect::View`]) and keeps
//! its own state apart. Neither module reaches into the other: both import this one.

pub mod account;
pub mod attribute;
pub mod copies;
pub mod dedup;
pub mod flat;
pub(crate) mod prefetch;
pub mod window;

use dashmap::DashMap;
use nohash_hasher::BuildNoHashHasher;
use std::collections::HashMap;

use crate::control::LiveAllowlist;
use account::Account;
use attribute::{AttrKind, Attribute};
use flat::FlatMap;

/// Accounts by key (an xxh3 hash of the account id, used as is: no rehash), in a DashMap of
/// boxes so that an account never moves. The engine is the only writer; methods that hand out
/// a writable account take `&mut self`, so the borrow checker rules out holding two shard
/// guards at once (no deadlock by construction).
#[derive(Default)]
pub struct Accounts(DashMap<u64, Box<Account>, BuildNoHashHasher<u64>>);

impl Accounts {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &u64) -> Option<dashmap::mapref::one::Ref<'_, u64, Box<Account>>> {
        self.0.get(key)
    }

    pub fn get_mut(
        &mut self,
        key: &u64,
    ) -> Option<dashmap::mapref::one::RefMut<'_, u64, Box<Account>>> {
        self.0.get_mut(key)
    }

    /// The account of `key`, made by `make` if absent; the flag is true if it was made.
    pub fn get_or_insert_with(
        &mut self,
        key: u64,
        make: impl FnOnce() -> Account,
    ) -> (dashmap::mapref::one::RefMut<'_, u64, Box<Account>>, bool) {
        let mut created = false;
        let acc = self.0.entry(key).or_insert_with(|| {
            created = true;
            Box::new(make())
        });
        (acc, created)
    }

    pub fn remove(&mut self, key: &u64) -> Option<Box<Account>> {
        self.0.remove(key).map(|(_, a)| a)
    }

    /// Keys of the accounts `keep` selects (a snapshot: the map is not borrowed afterwards).
    pub fn keys_where(&self, keep: impl Fn(&Account) -> bool) -> Vec<u64> {
        self.0
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| *e.key())
            .collect()
    }

    pub fn last_seen(&self) -> Vec<i64> {
        self.0.iter().map(|e| e.value().last_seen_ms).collect()
    }

    /// (last seen, key) of every account.
    pub fn seen_keys(&self) -> Vec<(i64, u64)> {
        self.0
            .iter()
            .map(|e| (e.value().last_seen_ms, *e.key()))
            .collect()
    }
}

/// An attribute value in the index. A value held by one account only is a bare (value,
/// account) pair: aggregates start when a second account shows up. Most IPs, cards and
/// devices stay solo. Both live in one flat table (key and value in the same slot) so that a
/// value costs one lookup, usually one cache line.
pub enum Held {
    Solo(u64),
    Shared(Box<Attribute>),
}

impl Default for Held {
    /// The filler of an empty slot in the index.
    fn default() -> Self {
        Held::Solo(0)
    }
}

impl Held {
    pub fn shared(&self) -> Option<&Attribute> {
        match self {
            Held::Shared(g) => Some(g),
            Held::Solo(_) => None,
        }
    }

    pub fn shared_mut(&mut self) -> Option<&mut Attribute> {
        match self {
            Held::Shared(g) => Some(g),
            Held::Solo(_) => None,
        }
    }
}

/// The attribute index: values by key.
pub type Values = FlatMap<Held>;

/// Account `akey` no longer holds value `key`.
pub fn release_value(values: &mut Values, key: u64, akey: u64, extraction_like: bool) {
    values.remove_if(key, |held| match held {
        Held::Shared(g) => {
            g.remove_member(akey, extraction_like);
            true
        }
        Held::Solo(a) => *a != akey,
    });
}

/// Index key of a creation minute.
pub fn creation_key(minute: i64) -> u64 {
    attribute::key(AttrKind::Creation, &minute.to_le_bytes())
}

/// Accounts and orgs whose alerts are withheld: the static list from config and, in the
/// service, the live one from the control topic.
#[derive(Default)]
pub struct Allowlist {
    pub accounts: HashMap<String, i64>,
    pub orgs: HashMap<String, i64>,
    /// The live allowlist from the control topic (the service only; `replay` keeps to the
    /// static list and stays deterministic).
    pub live: Option<LiveAllowlist>,
}

impl Allowlist {
    /// The static allowlist of the configuration (`[[allowlist]]`).
    pub fn from_config(cfg: &crate::config::ValidConfig) -> Self {
        let mut allow = Allowlist::default();
        for a in &cfg.allowlist {
            if let Some(acc) = &a.account {
                allow.accounts.insert(acc.clone(), a.expires_ms);
            }
            if let Some(org) = &a.org {
                allow.orgs.insert(org.clone(), a.expires_ms);
            }
        }
        allow
    }

    pub fn allows(&self, account: &str, org: Option<&str>, now: i64) -> bool {
        self.accounts.get(account).is_some_and(|&exp| now < exp)
            || org.is_some_and(|o| self.orgs.get(o).is_some_and(|&exp| now < exp))
            || self
                .live
                .as_ref()
                .is_some_and(|l| l.allows(account, org, now))
    }
}
