//! The attribute index: every attribute value by key, a bare (value, account) pair while one
//! account holds it and aggregated once a second one does (see [`Attribute`]). It takes in what
//! each event carries and what it contributes, and needs of other accounts only their
//! [`Facts`], so that it can live in a stage of its own, keyed by value.

use compact_str::CompactString;

use super::Profile;
use crate::config::ClusterConfig;
use crate::event::Event;
use crate::state::account::Facts;
use crate::state::attribute::{self, AttrKind, Attribute, Touch};
use crate::state::{release_value, Held, Values};

/// An attribute value carried by the current event.
#[derive(Debug, Clone, Copy)]
pub struct Carried {
    pub kind: AttrKind,
    pub key: u64,
    pub value: Value,
    pub added: bool,
    pub evicted: Option<u64>,
}

/// The readable form of a value, rendered only when the index first stores it (no copy or
/// formatting on the hot path). Text values stay in the event: `Text` names the field.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Ip(std::net::IpAddr),
    Prefix(std::net::IpAddr),
    Text(AttrKind),
    Template(u64),
    Minute(i64),
    Asn(u32),
}

impl Value {
    /// The value's index key (0: the event lacks the field it names).
    pub fn key(&self, ev: &Event) -> u64 {
        let text = |kind, v: &Option<CompactString>| {
            v.as_ref().map_or(0, |v| attribute::key(kind, v.as_bytes()))
        };
        match *self {
            Value::Ip(ip) => super::ip_keys(&ip).0,
            Value::Prefix(ip) => super::ip_keys(&ip).1,
            Value::Text(AttrKind::Device) => text(AttrKind::Device, &ev.device_fingerprint),
            Value::Text(AttrKind::Payment) => text(AttrKind::Payment, &ev.payment_fingerprint),
            Value::Text(kind) => text(kind, &ev.email_domain),
            Value::Template(t) => attribute::key(AttrKind::Template, &t.to_le_bytes()),
            Value::Minute(m) => crate::state::creation_key(m),
            Value::Asn(a) => attribute::key(AttrKind::Asn, &a.to_le_bytes()),
        }
    }

    pub fn render(&self, ev: &Event) -> CompactString {
        match self {
            Value::Ip(ip) => compact_str::format_compact!("{ip}"),
            Value::Prefix(ip) => CompactString::from(attribute::prefix(ip)),
            Value::Text(kind) => {
                let field = match kind {
                    AttrKind::Device => &ev.device_fingerprint,
                    AttrKind::Payment => &ev.payment_fingerprint,
                    _ => &ev.email_domain,
                };
                field.clone().unwrap_or_default()
            }
            Value::Template(t) => compact_str::format_compact!("tpl-{t:016x}"),
            Value::Asn(a) => compact_str::format_compact!("AS{a}"),
            Value::Minute(m) => CompactString::from(crate::event::time::format_ms(m * 60_000)),
        }
    }
}

/// The attribute index, with the count of its shared values.
#[derive(Default)]
pub(super) struct Index {
    pub values: Values,
    /// Entries of `values` that are [`Held::Shared`].
    shared: usize,
    /// Shared values created since [`Index::take_created`] last ran.
    created: u64,
}

impl Index {
    /// Values held by more than one account.
    pub fn shared(&self) -> usize {
        self.shared
    }

    /// Shared values created since the last call.
    pub fn take_created(&mut self) -> u64 {
        std::mem::take(&mut self.created)
    }

    /// Feeds the event to the values it carries. Appends the shared values it touched to
    /// `touched`; returns whether the event took part in a synchronised burst.
    #[allow(clippy::too_many_arguments)]
    pub fn take_in(
        &mut self,
        ev: &Event,
        akey: u64,
        carried: &[Carried],
        touch: &Touch,
        profile: &Profile,
        c: &ClusterConfig,
        facts: impl Fn(u64) -> Option<Facts>,
        touched: &mut Vec<(u64, AttrKind)>,
    ) -> bool {
        let ts_ms = ev.ts_ms;
        let horizon_ms = c.horizon_secs as f32 * 1000.0;
        let bin_ms = (c.sync_bin_secs * 1000) as i64;
        let mut in_burst = false;
        if profile.was != profile.is {
            // Values held before this event (and still held) see the flip.
            for &k in profile.slots.iter().filter(|&&k| k != 0) {
                if carried.iter().any(|c| c.key == k && c.added) {
                    continue;
                }
                if let Some(g) = self.values.get_mut(k).and_then(Held::shared_mut) {
                    g.member_flipped(profile.is);
                }
            }
        }
        // The event's address and how many accounts hold it, for its /24 or /64 (the address
        // comes first in `carried`).
        let mut address = (0u64, 1u32);
        for item in carried {
            if let Some(old) = item.evicted {
                release_value(&mut self.values, old, akey, profile.was);
            }
            if item.kind == AttrKind::Ip {
                address = (item.key, 1);
            }
            // A solo value stays a bare pair until a second account shows up.
            let mut created = false;
            let (held, inserted) = self
                .values
                .get_or_insert_with(item.key, || Held::Solo(akey));
            if inserted {
                continue;
            }
            let g = match held {
                Held::Solo(a) if *a == akey => continue,
                Held::Solo(a) => {
                    let other = *a;
                    let (flag, other_harvest) =
                        facts(other).map_or((false, 0), |f| (f.extraction_like, f.harvest_ever));
                    let mut g = Box::new(Attribute::new(item.kind, item.value.render(ev), ts_ms));
                    g.add_member(other, flag);
                    g.joined_harvest = other_harvest as f32;
                    *held = Held::Shared(g);
                    created = true;
                    self.shared += 1;
                    self.created += 1;
                    match held {
                        Held::Shared(g) => &mut **g,
                        Held::Solo(_) => unreachable!("just made shared"),
                    }
                }
                Held::Shared(g) => &mut **g,
            };
            let joined = (item.added || created) && g.add_member(akey, profile.is);
            match item.kind {
                AttrKind::Ip => address.1 = g.members.len() as u32,
                AttrKind::IpPrefix if address.0 != 0 => g.note_address(address.0, address.1),
                _ => {}
            }
            in_burst |=
                g.touch(ts_ms, touch, horizon_ms, bin_ms) && item.kind == AttrKind::Template;
            if joined {
                // After `touch`, which brought the decayed sums to this event's time.
                g.joined_harvest += touch.harvest_ever as f32;
            }
            touched.push((item.key, item.kind));
        }
        in_burst
    }

    /// Account `akey` no longer holds value `key`.
    pub fn release(&mut self, key: u64, akey: u64, extraction_like: bool) {
        release_value(&mut self.values, key, akey, extraction_like);
    }

    /// Drops shared values that no account holds and that saw no traffic for ten minutes.
    /// Returns how many.
    pub fn expire(&mut self, now: i64) -> usize {
        let attr_idle = now - 600_000;
        let mut gone = 0;
        self.values.retain(|_, h| match h {
            Held::Shared(g) => {
                let keep = !(g.members.is_empty() && g.last_ms < attr_idle);
                gone += usize::from(!keep);
                keep
            }
            Held::Solo(_) => true,
        });
        self.shared -= gone;
        debug_assert_eq!(self.shared, self.count_shared());
        gone
    }

    /// Evicts the least recently active shared values past `max`, down to 90% of it. Returns
    /// how many.
    pub fn evict(&mut self, max: usize) -> usize {
        if self.shared <= max {
            return 0;
        }
        let target = max - max / 10;
        let cutoff = super::nth_oldest(
            self.values
                .values()
                .filter_map(Held::shared)
                .map(|g| g.last_ms),
            self.shared - target,
        );
        let before = self.shared;
        self.values.retain(|_, h| match h {
            Held::Shared(g) => g.last_ms > cutoff,
            Held::Solo(_) => true,
        });
        self.shared = self.count_shared();
        before - self.shared
    }

    fn count_shared(&self) -> usize {
        self.values
            .values()
            .filter(|h| matches!(h, Held::Shared(_)))
            .count()
    }
}
