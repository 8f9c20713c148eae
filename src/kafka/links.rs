//! The links topic's records: what the link shards decided on one event ([`Emitted`]), as
//! `distillguard.v1.Links` (proto/distillguard/v1/stages.proto). A link shard encodes, the
//! cluster stage decodes; a decoded record gives the cluster stage what a shard handed on in
//! one process, so that both judge alike.

use prost::Message as _;

use super::observation::Progress;
use crate::detect::cohort::{Counted, Wave};
use crate::detect::link::Link;
use crate::detect::{Emitted, Explained, LinkKind, LinkRecord, MemberSnapshot};
use crate::event::DecodeError;
use crate::proto;
use crate::state::account::Facts;
use crate::state::attribute::AttrKind;
use crate::state::window::Counts;

const WAVE: u32 = 100;
const SYNC: u32 = 101;
const CROWD: u32 = 102;

fn invalid(what: &str) -> DecodeError {
    DecodeError::InvalidProtobuf(format!("links: {what}"))
}

/// The record of what the shards emitted on account `account`'s event at `ts_ms`.
pub fn encode(account: u64, ts_ms: i64, e: &Emitted) -> Vec<u8> {
    to_wire(account, ts_ms, e).encode_to_vec()
}

pub fn to_wire(account: u64, ts_ms: i64, e: &Emitted) -> proto::Links {
    proto::Links {
        account,
        ts_ms,
        records: e.records.iter().map(record_to_wire).collect(),
        members: e
            .members
            .iter()
            .map(|(k, m)| member_to_wire(*k, m))
            .collect(),
        explained: e
            .explained
            .iter()
            .map(|(k, x)| explained_to_wire(*k, x))
            .collect(),
        progress: None,
        batch: Vec::new(),
    }
}

/// The most a batch record takes encoded, as on the observations topic
/// ([`super::observation::BATCH_BYTES`]).
pub const BATCH_BYTES: usize = super::observation::BATCH_BYTES;

/// A record of the links topic.
#[derive(Debug)]
pub enum Payload {
    /// What a shard decided on one event: its account, its time and the records.
    Event(u64, i64, Emitted),
    /// That of consecutive events, in order.
    Batch(Vec<(u64, i64, Emitted)>),
    /// The shard's progress on its partition (as an account instance's on the observations
    /// topic).
    Progress(Progress),
}

/// What a link shard decided on consecutive events, gathered into one record of its links
/// partition.
#[derive(Default)]
pub struct Batch {
    items: Vec<proto::Links>,
    bytes: usize,
    /// The first offset of each observations partition its events came from (held until the
    /// record is delivered), and the Kafka timestamp of its first event.
    pub firsts: Vec<(i32, i64)>,
    pub first_msg_ts: i64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether adding `w` would take it past [`BATCH_BYTES`] (a batch takes at least one).
    pub fn full_for(&self, w: &proto::Links) -> bool {
        !self.items.is_empty() && self.bytes + w.encoded_len() + 4 > BATCH_BYTES
    }

    /// Adds what the shard decided on the event at `offset` of observations partition
    /// `partition`.
    pub fn push(&mut self, w: proto::Links, partition: i32, offset: i64, msg_ts: i64) {
        if self.items.is_empty() {
            self.first_msg_ts = msg_ts;
        }
        if !self.firsts.iter().any(|&(p, _)| p == partition) {
            self.firsts.push((partition, offset));
        }
        self.bytes += w.encoded_len() + 4;
        self.items.push(w);
    }

    /// The batch record, emptying the batch.
    pub fn take_record(&mut self) -> Vec<u8> {
        self.bytes = 0;
        proto::Links {
            batch: std::mem::take(&mut self.items),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// The progress record for the links topic.
pub fn encode_progress(p: Progress) -> Vec<u8> {
    proto::Links {
        ts_ms: p.ts_ms,
        progress: Some(proto::Progress { behind: p.behind }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A record of the links topic, whole: a batch with one malformed entry is rejected.
pub fn decode_record(bytes: &[u8]) -> Result<Payload, DecodeError> {
    let w = proto::Links::decode(bytes).map_err(|e| invalid(&e.to_string()))?;
    if let Some(p) = w.progress {
        return Ok(Payload::Progress(Progress {
            ts_ms: w.ts_ms,
            behind: p.behind,
        }));
    }
    if !w.batch.is_empty() {
        return w
            .batch
            .into_iter()
            .map(|l| {
                if l.progress.is_some() || !l.batch.is_empty() {
                    Err(invalid("a batch holds only events"))
                } else {
                    from_wire(l)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Payload::Batch);
    }
    from_wire(w).map(|(a, ts, e)| Payload::Event(a, ts, e))
}

/// A record of the links topic: the event's account, its time, and what the shards emitted
/// (an error for a batch or progress record).
pub fn decode(bytes: &[u8]) -> Result<(u64, i64, Emitted), DecodeError> {
    match decode_record(bytes)? {
        Payload::Event(a, ts, e) => Ok((a, ts, e)),
        Payload::Progress(_) => Err(invalid("a progress record, not an event")),
        Payload::Batch(_) => Err(invalid("a batch record, not one event")),
    }
}

pub fn from_wire(w: proto::Links) -> Result<(u64, i64, Emitted), DecodeError> {
    let mut e = Emitted::default();
    for r in w.records {
        e.records.push(record_from_wire(r)?);
    }
    for m in w.members {
        e.members.push(member_from_wire(m));
    }
    for x in w.explained {
        e.explained.push(explained_from_wire(x)?);
    }
    Ok((w.account, w.ts_ms, e))
}

fn facts_to_wire(f: &Facts) -> proto::Facts {
    proto::Facts {
        extraction_like: f.extraction_like,
        harvest_ever: f.harvest_ever,
        requests_ever: f.requests_ever,
        multi_turn_ever: f.multi_turn_ever,
        first_seen_ms: f.first_seen_ms,
        created_ms: f.created_ms,
        ip: f.ips[0],
        previous_ip: f.ips[1],
    }
}

fn facts_from_wire(f: &proto::Facts) -> Facts {
    Facts {
        extraction_like: f.extraction_like,
        harvest_ever: f.harvest_ever,
        requests_ever: f.requests_ever,
        multi_turn_ever: f.multi_turn_ever,
        first_seen_ms: f.first_seen_ms,
        created_ms: f.created_ms,
        ips: [f.ip, f.previous_ip],
    }
}

fn kind(k: u32) -> Result<AttrKind, DecodeError> {
    AttrKind::ALL
        .get(k as usize)
        .copied()
        .ok_or_else(|| invalid("attribute kind"))
}

fn record_to_wire(r: &LinkRecord) -> proto::LinkRecord {
    proto::LinkRecord {
        kind: match r.kind {
            LinkKind::Value(k) => k as u32,
            LinkKind::Wave => WAVE,
            LinkKind::Sync => SYNC,
            LinkKind::Crowd => CROWD,
        },
        keys: r.keys.to_vec(),
        event: r.event,
        account: r.account,
        account_facts: r.account_facts.as_ref().map(facts_to_wire),
        all_holders: r.all_holders,
        founder: r.founder,
        seed: r.seed,
        accounts: r
            .accounts
            .iter()
            .map(|(a, f)| proto::Named {
                account: *a,
                facts: Some(facts_to_wire(f)),
            })
            .collect(),
        merge_only: r.merge_only,
        circumstantial: r.circumstantial,
        crowd: r.crowd,
        at_ms: r.at_ms,
    }
}

fn record_from_wire(w: proto::LinkRecord) -> Result<LinkRecord, DecodeError> {
    let k = match w.kind {
        WAVE => LinkKind::Wave,
        SYNC => LinkKind::Sync,
        CROWD => LinkKind::Crowd,
        k => LinkKind::Value(kind(k)?),
    };
    let mut r = LinkRecord::new(k, w.event, w.account, w.at_ms);
    r.keys = w.keys.into_iter().collect();
    r.account_facts = w.account_facts.as_ref().map(facts_from_wire);
    r.all_holders = w.all_holders;
    r.founder = w.founder;
    r.seed = w.seed;
    r.accounts = w
        .accounts
        .iter()
        .map(|n| {
            n.facts
                .as_ref()
                .map(|f| (n.account, facts_from_wire(f)))
                .ok_or_else(|| invalid("a named account without facts"))
        })
        .collect::<Result<_, _>>()?;
    r.merge_only = w.merge_only;
    r.circumstantial = w.circumstantial;
    r.crowd = w.crowd;
    Ok(r)
}

fn member_to_wire(key: u64, m: &MemberSnapshot) -> proto::Member {
    proto::Member {
        key,
        id: m.id.to_string(),
        org_id: m.org.as_ref().map(|o| o.to_string()),
        created_ms: m.created_ms,
        first_seen_ms: m.first_seen_ms,
        harvest_ever: m.harvest_ever,
        requests: m.hour.requests,
        single_turn: m.hour.single_turn,
        reasoning: m.hour.reasoning,
        input_tokens: m.hour.input_tokens,
        output_tokens: m.hour.output_tokens,
        example_event_id: m.example.clone(),
        in_step: m.step.map(|(s, _)| s),
        step_p: m.step.map_or(0.0, |(_, p)| p),
        at_ms: m.at_ms,
    }
}

/// The trailing hour carries what a cluster's evaluation reads of it.
fn member_from_wire(w: proto::Member) -> (u64, MemberSnapshot) {
    let hour = Counts {
        requests: w.requests,
        single_turn: w.single_turn,
        reasoning: w.reasoning,
        input_tokens: w.input_tokens,
        output_tokens: w.output_tokens,
        ..Default::default()
    };
    (
        w.key,
        MemberSnapshot {
            id: w.id.into(),
            org: w.org_id.map(Into::into),
            created_ms: w.created_ms,
            first_seen_ms: w.first_seen_ms,
            harvest_ever: w.harvest_ever,
            hour,
            example: w.example_event_id,
            step: w.in_step.map(|s| (s, w.step_p)),
            at_ms: w.at_ms,
        },
    )
}

fn explained_to_wire(key: u64, x: &Explained) -> proto::Explained {
    let link = match x {
        Explained::Value { link: l, value } => proto::explained::Link::Value(proto::ValueLink {
            kind: l.kind as u32,
            value: value.to_string(),
            accounts: l.members as u32,
            purity: l.purity,
            single_turn: l.single_turn,
            reasoning: l.reasoning,
            output_ratio: l.output_ratio,
            fresh: l.fresh,
            org: l.org,
            synchrony: l.synchrony,
            creation_spread_hours: l.creation_spread_hours,
            accounts_per_network: l.accounts_per_network,
        }),
        Explained::Wave(w) => proto::explained::Link::Wave(proto::Wave {
            start_ms: w.start_ms,
            accounts: w.accounts,
            arrivals: w.counted == Counted::Arriving,
            returning: w.counted == Counted::Returning,
            expected: w.expected,
        }),
    };
    proto::Explained {
        key,
        link: Some(link),
    }
}

fn explained_from_wire(w: proto::Explained) -> Result<(u64, Explained), DecodeError> {
    let x = match w
        .link
        .ok_or_else(|| invalid("an explanation without a link"))?
    {
        proto::explained::Link::Value(v) => Explained::Value {
            link: Link {
                kind: kind(v.kind)?,
                members: v.accounts as usize,
                purity: v.purity,
                single_turn: v.single_turn,
                reasoning: v.reasoning,
                output_ratio: v.output_ratio,
                fresh: v.fresh,
                org: v.org,
                synchrony: v.synchrony,
                creation_spread_hours: v.creation_spread_hours,
                accounts_per_network: v.accounts_per_network,
            },
            value: v.value.into(),
        },
        proto::explained::Link::Wave(v) => Explained::Wave(Wave::described(
            v.start_ms,
            v.accounts,
            match (v.arrivals, v.returning) {
                (false, false) => Counted::All,
                (true, false) => Counted::Arriving,
                (false, true) => Counted::Returning,
                (true, true) => return Err(invalid("a wave counting two ways")),
            },
            v.expected,
        )),
    };
    Ok((w.key, x))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::detect::Shard;
    use crate::engine::cluster_stage::ClusterStage;
    use crate::engine::{link_targets, staged, Engine, Role};

    /// The staged topology with every hop through its topic's encoding (observations to the
    /// link shards that must see them, link records to the cluster stage) judges as it does
    /// in one process: the same alerts, byte for byte. Both internal topics stay compact.
    #[test]
    fn shards_and_the_cluster_stage_judge_alike_through_the_topics() {
        let (events, _) = crate::sim::decoded(&crate::sim::SimOptions {
            seed: 4,
            scale: 0.3,
            hours: 3.0,
            ..Default::default()
        });
        let cfg = Arc::new(Config::default().validate().expect("valid config"));
        let (accounts, of) = (3, 3);
        let mut inproc = staged::Staged::sharded(cfg.clone(), accounts, of);
        let mut want = Vec::new();
        for ev in &events {
            inproc.process(ev, &mut want);
        }

        let mut account: Vec<Engine> = (0..accounts)
            .map(|_| Engine::new(cfg.clone()).with_role(Role::Account))
            .collect();
        let mut shards: Vec<Engine> = (0..of)
            .map(|index| Engine::new(cfg.clone()).with_shard(Shard { index, of }))
            .collect();
        let mut cluster = ClusterStage::new(cfg.clone());
        let mut got = Vec::new();
        let mut emitted = Emitted::default();
        let (mut obs_bytes, mut link_bytes, mut link_records) = (0usize, 0usize, 0usize);
        for ev in &events {
            let a = &mut account[staged::partition(&ev.account_id, accounts)];
            a.process(ev, &mut got);
            let Some(obs) = a.take_observation() else {
                continue;
            };
            let targets = link_targets(&obs, of);
            let record = crate::kafka::observation::encode(ev, &obs);
            for (i, shard) in shards.iter_mut().enumerate() {
                if targets & (1 << i) != 0 {
                    obs_bytes += record.len();
                    let (seen, back) = crate::kafka::observation::decode(&record).expect("decodes");
                    shard.observe(&seen, &back, &mut got);
                    shard.take_emitted(&mut emitted);
                }
            }
            if emitted.records.is_empty() {
                emitted.clear();
                continue;
            }
            let key = crate::engine::account_key(&ev.account_id);
            let bytes = encode(key, ev.ts_ms, &emitted);
            link_bytes += bytes.len();
            link_records += 1;
            let (k, ts, mut back) = decode(&bytes).expect("decodes");
            assert_eq!((k, ts), (key, ev.ts_ms));
            cluster.take(k, ts, &mut back, &mut got);
            emitted.clear();
        }
        let clusters = got
            .iter()
            .filter(|a| a.kind == crate::alert::Kind::FakeAccountCluster)
            .count();
        assert!(clusters >= 5, "{clusters} cluster alerts");
        assert_eq!(got, want);
        let n = events.len() as f64;
        let (per_obs, per_link) = (obs_bytes as f64 / n, link_bytes as f64 / n);
        // Observations: about 242 bytes each, to nearly all of 3 shards; link records: one
        // for a few events, with snapshots of whom they name.
        assert!(
            per_obs < 3.0 * 300.0,
            "{per_obs:.0} observation bytes per event"
        );
        assert!(per_link < per_obs, "{per_link:.0} link bytes per event");
        assert!(link_records > 0);
        eprintln!(
            "{n} events: {per_obs:.0} observation bytes and {per_link:.0} link bytes per event, \
             {link_records} link records"
        );
    }

    /// Parts of events of one millisecond arrive interleaved on the links topic, shard by
    /// shard: the cluster stage takes each event's parts together, the events in the order
    /// of their accounts' keys, as if each had come whole.
    #[test]
    fn parts_of_events_of_one_millisecond_are_taken_together_whatever_their_order() {
        let (mut events, _) = crate::sim::decoded(&crate::sim::SimOptions {
            seed: 4,
            scale: 0.3,
            hours: 2.0,
            ..Default::default()
        });
        // Whole seconds: many events share a time.
        for ev in &mut events {
            ev.ts_ms -= ev.ts_ms % 1_000;
        }
        let cfg = Arc::new(Config::default().validate().expect("valid config"));
        let of = 2;
        let mut account = Engine::new(cfg.clone()).with_role(Role::Account);
        let mut shards: Vec<Engine> = (0..of)
            .map(|index| Engine::new(cfg.clone()).with_shard(Shard { index, of }))
            .collect();
        // Each event's parts, one per shard that decided something.
        let mut sink = Vec::new();
        let mut parts: Vec<(i64, u64, usize, Emitted)> = Vec::new();
        for ev in &events {
            account.process(ev, &mut sink);
            let Some(obs) = account.take_observation() else {
                continue;
            };
            let targets = link_targets(&obs, of);
            let key = crate::engine::account_key(&ev.account_id);
            for (i, shard) in shards.iter_mut().enumerate() {
                if targets & (1 << i) != 0 {
                    shard.observe(ev, &obs, &mut sink);
                    let mut e = Emitted::default();
                    shard.take_emitted(&mut e);
                    if !e.records.is_empty() {
                        parts.push((ev.ts_ms, key, i, e));
                    }
                }
            }
        }
        // Whole events, by time and then account key.
        let mut whole = ClusterStage::new(cfg.clone());
        let mut want = Vec::new();
        let mut by_event = parts.clone();
        by_event.sort_by_key(|(ts, key, shard, _)| (*ts, *key, *shard));
        let mut i = 0;
        while i < by_event.len() {
            let (ts, key) = (by_event[i].0, by_event[i].1);
            let mut e = Emitted::default();
            while i < by_event.len() && (by_event[i].0, by_event[i].1) == (ts, key) {
                let p = &mut by_event[i].3;
                e.records.append(&mut p.records);
                e.members.append(&mut p.members);
                e.explained.append(&mut p.explained);
                i += 1;
            }
            whole.take(key, ts, &mut e, &mut want);
        }
        // Shard by shard within each time, each shard's parts in reverse account order.
        let mut interleaved = parts;
        interleaved.sort_by_key(|(ts, key, shard, _)| (*ts, *shard, std::cmp::Reverse(*key)));
        let split = interleaved
            .windows(2)
            .filter(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1)
            .count();
        assert!(
            split > 50,
            "{split} neighbouring parts of different events at one time"
        );
        let mut cluster = ClusterStage::new(cfg);
        let mut got = Vec::new();
        for (ts, key, _, mut e) in interleaved {
            cluster.take_part(key, ts, &mut e, &mut got);
        }
        cluster.flush(&mut got);
        let clusters = want
            .iter()
            .filter(|a| a.kind == crate::alert::Kind::FakeAccountCluster)
            .count();
        assert!(clusters >= 3, "{clusters} cluster alerts");
        assert_eq!(got, want);
    }

    /// A shard's batch record carries its events' records in order, and its progress record
    /// is no event; a batch holding anything but events is rejected whole.
    #[test]
    fn batch_and_progress_records_round_trip() {
        let mut b = Batch::default();
        let mut e = Emitted::default();
        let mut r = LinkRecord::new(LinkKind::Wave, 1, 2, 5);
        r.keys.push(9);
        e.records.push(r);
        b.push(to_wire(2, 5, &e), 0, 10, 100);
        b.push(to_wire(3, 6, &Emitted::default()), 1, 20, 101);
        b.push(to_wire(4, 7, &Emitted::default()), 0, 11, 102);
        assert_eq!(b.firsts, vec![(0, 10), (1, 20)]);
        assert_eq!(b.first_msg_ts, 100);
        match decode_record(&b.take_record()).expect("decodes") {
            Payload::Batch(all) => {
                let keys: Vec<(u64, i64)> = all.iter().map(|(a, t, _)| (*a, *t)).collect();
                assert_eq!(keys, vec![(2, 5), (3, 6), (4, 7)]);
                assert_eq!(all[0].2.records.len(), 1);
            }
            other => panic!("not a batch: {other:?}"),
        }
        assert!(b.is_empty());
        let p = Progress {
            ts_ms: 42,
            behind: true,
        };
        match decode_record(&encode_progress(p)).expect("decodes") {
            Payload::Progress(back) => assert_eq!(back, p),
            other => panic!("not progress: {other:?}"),
        }
        assert!(decode(&encode_progress(p)).is_err());
        let nested = proto::Links {
            batch: vec![proto::Links {
                progress: Some(proto::Progress { behind: false }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(decode_record(&nested.encode_to_vec()).is_err());
    }

    /// A wave's explanation keeps which of its bin's accounts it counted; one that says it
    /// counted two ways is rejected.
    #[test]
    fn waves_keep_what_they_counted_through_the_topic() {
        for counted in [Counted::All, Counted::Arriving, Counted::Returning] {
            let w = Wave::described(1_000, 12, counted, 2.5);
            let (key, back) =
                explained_from_wire(explained_to_wire(7, &Explained::Wave(w))).expect("decodes");
            assert_eq!(key, 7);
            match back {
                Explained::Wave(b) => {
                    assert_eq!(
                        (b.start_ms, b.accounts, b.counted, b.expected),
                        (1_000, 12, counted, 2.5)
                    );
                }
                Explained::Value { .. } => panic!("a wave came back as a value"),
            }
        }
        let mut both = explained_to_wire(
            7,
            &Explained::Wave(Wave::described(0, 9, Counted::Arriving, 1.0)),
        );
        if let Some(proto::explained::Link::Wave(w)) = &mut both.link {
            w.returning = true;
        }
        assert!(explained_from_wire(both).is_err());
    }

    #[test]
    fn a_malformed_record_is_an_error() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        let mut w = to_wire(1, 2, &Emitted::default());
        w.explained.push(proto::Explained { key: 3, link: None });
        assert!(from_wire(w).is_err());
        let mut w = to_wire(1, 2, &Emitted::default());
        w.records.push(proto::LinkRecord {
            kind: 77,
            ..Default::default()
        });
        assert!(from_wire(w).is_err());
    }
}
