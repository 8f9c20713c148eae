//! The observations topic's records: an [`Observation`] with the event's identifying fields,
//! as `distillguard.v1.Observation` (proto/distillguard/v1/stages.proto). The account stage
//! encodes, the link stage decodes; a decoded record gives the link engine what the account
//! engine handed on in one process, so the two ends judge alike.

use std::net::IpAddr;
use std::time::Duration;

use prost::Message as _;

use crate::engine::{Carried, Observation, Profile, Value};
use crate::event::{DecodeError, Event};
use crate::proto;
use crate::state::account::{Facts, SLOTS};
use crate::state::attribute::{AttrKind, Touch};
use crate::state::window::Sample;

/// The bits of `flags`, in order: what the request and the account show.
#[derive(Clone, Copy)]
enum Flag {
    SingleTurn,
    Reasoning,
    Templated,
    Novel,
    Harvest,
    NewModel,
    WithText,
    Fresh,
    Org,
    NewBin,
    NewCoarseBin,
    Was,
    Is,
    Moved,
}

fn bit(on: bool, f: Flag) -> u32 {
    u32::from(on) << f as u32
}

/// How often an account instance writes its [`Progress`] to each observations partition it
/// writes to. Well under `kafka.idle_partition_ms`'s floor, so that a live writer is never
/// taken for a silent one.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// An account instance's progress on an observations partition: the oldest event time it may
/// still take (its merge's safe time, at most its engine's watermark), and whether its input
/// still has records on their way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub ts_ms: i64,
    pub behind: bool,
}

/// The most a batch record's observations take encoded: well under the 1 MiB that brokers and
/// topics accept by default (`message.max.bytes`, `max.message.bytes`), so that a batch is
/// never refused for its size. At about 150 bytes an observation, some 1,700 events a record.
pub const BATCH_BYTES: usize = 256 * 1024;

/// A record of the observations topic.
// Transient, one record at a time: the observation is boxed when it is kept (`Item`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Payload {
    /// An accepted event and the account stage's observation of it.
    Event(Event, Observation),
    /// Observations of consecutive events, in order.
    Batch(Vec<(Event, Observation)>),
    Progress(Progress),
}

/// Observations on their way to one observations partition, gathered into one record.
#[derive(Default)]
pub struct Batch {
    items: Vec<proto::Observation>,
    bytes: usize,
    /// Input offset and Kafka timestamp of its first event.
    pub first_offset: i64,
    pub first_msg_ts: i64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether adding `obs` would take it past [`BATCH_BYTES`] (a batch takes at least one).
    pub fn full_for(&self, obs: &proto::Observation) -> bool {
        !self.items.is_empty() && self.bytes + obs.encoded_len() + 4 > BATCH_BYTES
    }

    /// Adds the observation of the event at input `offset`.
    pub fn push(&mut self, obs: proto::Observation, offset: i64, msg_ts: i64) {
        if self.items.is_empty() {
            self.first_offset = offset;
            self.first_msg_ts = msg_ts;
        }
        self.bytes += obs.encoded_len() + 4;
        self.items.push(obs);
    }

    /// The batch record, emptying the batch.
    pub fn take_record(&mut self) -> Vec<u8> {
        self.bytes = 0;
        proto::Observation {
            batch: std::mem::take(&mut self.items),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// The progress record for the observations topic.
pub fn encode_progress(p: Progress) -> Vec<u8> {
    proto::Observation {
        ts_ms: p.ts_ms,
        progress: Some(proto::Progress { behind: p.behind }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The record for the observations topic of `obs`, the account stage's observation of `ev`,
/// alone (the account stage writes [`Batch`]es of them).
pub fn encode(ev: &Event, obs: &Observation) -> Vec<u8> {
    to_wire(ev, obs).encode_to_vec()
}

/// `obs`, the account stage's observation of `ev`, as the topic's message.
pub fn to_wire(ev: &Event, obs: &Observation) -> proto::Observation {
    let (s, t, f) = (&obs.sample, &obs.touch, &obs.facts);
    let flags = bit(s.single_turn, Flag::SingleTurn)
        | bit(s.reasoning, Flag::Reasoning)
        | bit(s.templated, Flag::Templated)
        | bit(s.novel, Flag::Novel)
        | bit(s.harvest, Flag::Harvest)
        | bit(s.new_model, Flag::NewModel)
        | bit(s.with_text, Flag::WithText)
        | bit(t.fresh, Flag::Fresh)
        | bit(t.org, Flag::Org)
        | bit(t.new_account_bin, Flag::NewBin)
        | bit(t.new_account_coarse_bin, Flag::NewCoarseBin)
        | bit(obs.profile.was, Flag::Was)
        | bit(obs.profile.is, Flag::Is)
        | bit(obs.moved, Flag::Moved);
    let text = |v: &Option<compact_str::CompactString>| v.as_ref().map(|v| v.to_string());
    proto::Observation {
        event_id: ev.event_id.to_string(),
        ts_ms: ev.ts_ms,
        account_id: ev.account_id.to_string(),
        org_id: text(&ev.org_id),
        ip: ev.ip.map(|ip| match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        }),
        asn: ev.asn,
        device_fingerprint: text(&ev.device_fingerprint),
        payment_fingerprint: text(&ev.payment_fingerprint),
        email_domain: text(&ev.email_domain),
        model: text(&ev.model),
        extraction_like: f.extraction_like,
        harvest_ever: f.harvest_ever,
        requests_ever: f.requests_ever,
        multi_turn_ever: f.multi_turn_ever,
        first_seen_ms: f.first_seen_ms,
        created_ms: f.created_ms,
        flags,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        carried: obs
            .carried
            .iter()
            .map(|c| proto::Carried {
                kind: c.kind as u32,
                added: c.added,
                evicted: c.evicted.unwrap_or(0),
                aux: match c.value {
                    Value::Template(t) => t as i64,
                    Value::Minute(m) => m,
                    _ => 0,
                },
            })
            .collect(),
        progress: None,
        batch: Vec::new(),
        last_run_bin: obs.runs.last_bin,
        runs: u32::from(obs.runs.runs),
        clock_runs: u32::from(obs.runs.clock_runs),
    }
}

fn invalid(what: &str) -> DecodeError {
    DecodeError::InvalidProtobuf(format!("observation: {what}"))
}

/// A record of the observations topic.
pub fn decode_record(bytes: &[u8]) -> Result<Payload, DecodeError> {
    let w = proto::Observation::decode(bytes).map_err(|e| invalid(&e.to_string()))?;
    if let Some(p) = w.progress {
        return Ok(Payload::Progress(Progress {
            ts_ms: w.ts_ms,
            behind: p.behind,
        }));
    }
    if !w.batch.is_empty() {
        // A batch is judged whole: one malformed observation rejects the record.
        return w
            .batch
            .into_iter()
            .map(|o| {
                if o.progress.is_some() || !o.batch.is_empty() {
                    Err(invalid("a batch holds only events"))
                } else {
                    from_wire(o)
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Payload::Batch);
    }
    from_wire(w).map(|(ev, obs)| Payload::Event(ev, obs))
}

/// The event's identifying fields and the observation in a record of the observations topic
/// (an error for a progress record).
pub fn decode(bytes: &[u8]) -> Result<(Event, Observation), DecodeError> {
    match decode_record(bytes)? {
        Payload::Event(ev, obs) => Ok((ev, obs)),
        Payload::Progress(_) => Err(invalid("a progress record, not an event")),
        Payload::Batch(_) => Err(invalid("a batch record, not one event")),
    }
}

fn from_wire(w: proto::Observation) -> Result<(Event, Observation), DecodeError> {
    let mut ev = Event::new(&w.event_id, w.ts_ms, &w.account_id);
    ev.org_id = w.org_id.map(Into::into);
    ev.account_created_ms = w.created_ms;
    ev.ip = match w.ip.as_deref() {
        None => None,
        Some(b) => Some(match b.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes")),
            16 => IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes")),
            _ => return Err(invalid("an address is 4 or 16 bytes")),
        }),
    };
    ev.asn = w.asn;
    ev.device_fingerprint = w.device_fingerprint.map(Into::into);
    ev.payment_fingerprint = w.payment_fingerprint.map(Into::into);
    ev.email_domain = w.email_domain.map(Into::into);
    ev.model = w.model.map(Into::into);
    ev.input_tokens = w.input_tokens;
    ev.output_tokens = w.output_tokens;
    let on = |f: Flag| w.flags >> f as u32 & 1 != 0;
    ev.conversation_turns = if on(Flag::SingleTurn) { 1 } else { 2 };
    ev.prompt.reasoning = on(Flag::Reasoning);
    let facts = Facts {
        extraction_like: w.extraction_like,
        harvest_ever: w.harvest_ever,
        requests_ever: w.requests_ever,
        multi_turn_ever: w.multi_turn_ever,
        first_seen_ms: w.first_seen_ms,
        created_ms: w.created_ms,
        // The link engine's shadow record holds the addresses (its slots).
        ips: [0; 2],
    };
    let sample = Sample {
        single_turn: on(Flag::SingleTurn),
        reasoning: on(Flag::Reasoning),
        templated: on(Flag::Templated),
        novel: on(Flag::Novel),
        harvest: on(Flag::Harvest),
        new_model: on(Flag::NewModel),
        with_text: on(Flag::WithText),
        input_tokens: w.input_tokens,
        output_tokens: w.output_tokens,
    };
    let mut carried = Vec::with_capacity(w.carried.len());
    for c in &w.carried {
        let kind = *AttrKind::ALL
            .get(c.kind as usize)
            .ok_or_else(|| invalid("attribute kind"))?;
        let value = match kind {
            AttrKind::Ip => Value::Ip(ev.ip.ok_or_else(|| invalid("an address value"))?),
            AttrKind::IpPrefix => Value::Prefix(ev.ip.ok_or_else(|| invalid("a prefix value"))?),
            AttrKind::Asn => Value::Asn(ev.asn.ok_or_else(|| invalid("an ASN value"))?),
            AttrKind::Device | AttrKind::Payment | AttrKind::EmailDomain => Value::Text(kind),
            AttrKind::Template => Value::Template(c.aux as u64),
            AttrKind::Creation => Value::Minute(c.aux),
        };
        let key = value.key(&ev);
        if key == 0 {
            return Err(invalid("a value the event does not carry"));
        }
        carried.push(Carried {
            kind,
            key,
            value,
            added: c.added,
            evicted: (c.evicted != 0).then_some(c.evicted),
        });
    }
    let network = carried
        .iter()
        .find(|c| c.kind == AttrKind::IpPrefix)
        .map_or(0, |c| c.key);
    let touch = Touch {
        single_turn: sample.single_turn,
        harvest: sample.harvest,
        reasoning: sample.reasoning,
        fresh: on(Flag::Fresh),
        org: on(Flag::Org),
        new_account_bin: on(Flag::NewBin),
        new_account_coarse_bin: on(Flag::NewCoarseBin),
        input_tokens: w.input_tokens,
        output_tokens: w.output_tokens,
        created_hours: w.created_ms.map(|c| c as f64 / 3_600_000.0),
        network,
        harvest_ever: w.harvest_ever,
    };
    let obs = Observation {
        facts,
        sample,
        touch,
        // The link engine moves its shadow's slots as `carried` says, and judges on those.
        profile: Profile {
            was: on(Flag::Was),
            is: on(Flag::Is),
            slots: [0; SLOTS + 1],
        },
        carried,
        moved: on(Flag::Moved),
        runs: crate::state::account::Runs {
            last_bin: w.last_run_bin,
            runs: u16::try_from(w.runs).map_err(|_| invalid("runs"))?,
            clock_runs: u16::try_from(w.clock_runs).map_err(|_| invalid("clock runs"))?,
        },
    };
    Ok((ev, obs))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::engine::{Engine, Role};
    use crate::event::Decoder;
    use crate::fingerprint::{Fingerprinter, DEFAULT_REASONING_LEXICON};

    /// An account engine's observations, through the topic's encoding, give a link engine
    /// what they give it in one process: with one account engine, the single engine's alerts
    /// byte for byte.
    #[test]
    fn observations_through_the_topic_judge_as_in_one_process() {
        let sim = crate::sim::generate(&crate::sim::SimOptions {
            seed: 2,
            scale: 0.2,
            hours: 2.0,
            ..Default::default()
        })
        .expect("simulation");
        let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
        let cfg = Arc::new(Config::default().validate().expect("valid config"));
        let mut one = Engine::new(cfg.clone());
        let mut account = Engine::new(cfg.clone()).with_role(Role::Account);
        let mut link = Engine::new(cfg).with_role(Role::Link);
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        let mut carried = 0;
        for raw in sim.events {
            let ev = decoder.from_json(raw).expect("simulated events are valid");
            one.process(&ev, &mut want);
            account.process(&ev, &mut got);
            let obs = account.take_observation().expect("accepted");
            let record = encode(&ev, &obs);
            bytes += record.len();
            let (seen, back) = decode(&record).expect("decodes");
            carried += back.carried.len();
            assert_eq!(back.facts.harvest_ever, obs.facts.harvest_ever);
            link.observe(&seen, &back, &mut got);
        }
        assert!(want.len() > 10, "{} alerts", want.len());
        assert!(carried > 0);
        // Bulk alerts come first from the account engine; order aside, the same alerts.
        let ids = |v: &[crate::alert::Alert]| {
            let mut ids: Vec<String> = v
                .iter()
                .map(|a| serde_json::to_string(a).expect("json"))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&got), ids(&want));
        // Compact: about 242 bytes per event here (ids, the account's facts and runs, flags,
        // values).
        let per_event = bytes as f64 / one.stats().events_accepted as f64;
        assert!(per_event < 300.0, "{per_event:.0} bytes per event");
        eprintln!("{per_event:.0} observation bytes per event");
    }

    #[test]
    fn progress_records_round_trip_and_are_not_events() {
        for p in [
            Progress {
                ts_ms: 1_700_000_000_123,
                behind: true,
            },
            Progress {
                ts_ms: -5,
                behind: false,
            },
        ] {
            let bytes = encode_progress(p);
            assert!(bytes.len() < 16, "{} bytes", bytes.len());
            match decode_record(&bytes).expect("decodes") {
                Payload::Progress(back) => assert_eq!(back, p),
                other => panic!("not progress: {other:?}"),
            }
            assert!(decode(&bytes).is_err());
        }
    }

    #[test]
    fn a_batch_record_carries_its_observations_in_order_and_stays_under_its_bound() {
        let sim = crate::sim::generate(&crate::sim::SimOptions {
            seed: 3,
            scale: 0.2,
            hours: 1.0,
            ..Default::default()
        })
        .expect("simulation");
        let decoder = Decoder::new(Fingerprinter::new(DEFAULT_REASONING_LEXICON).expect("lexicon"));
        let events: Vec<Event> = sim
            .events
            .into_iter()
            .map(|raw| decoder.from_json(raw).expect("simulated events are valid"))
            .collect();
        let cfg = Arc::new(Config::default().validate().expect("valid"));
        let mut account = Engine::new(cfg).with_role(Role::Account);
        let mut out = Vec::new();
        let mut batch = Batch::default();
        let mut sent = Vec::new();
        let mut records = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            account.process(ev, &mut out);
            if let Some(obs) = account.take_observation() {
                let w = to_wire(ev, &obs);
                if batch.full_for(&w) {
                    records.push(batch.take_record());
                }
                batch.push(w, i as i64, 0);
                sent.push(ev.event_id.to_string());
            }
        }
        records.push(batch.take_record());
        assert!(
            records.len() > 1,
            "the bound splits a long run into records"
        );
        let mut back = Vec::new();
        for r in &records {
            assert!(r.len() <= BATCH_BYTES, "{} bytes", r.len());
            match decode_record(r).expect("decodes") {
                Payload::Batch(items) => {
                    back.extend(items.into_iter().map(|(ev, _)| ev.event_id.to_string()))
                }
                other => panic!("not a batch: {other:?}"),
            }
        }
        assert_eq!(back, sent, "every observation, in order");
        // One malformed observation rejects the whole record.
        let bad = proto::Observation {
            batch: vec![
                proto::Observation::decode(records[0].as_slice())
                    .expect("decodes")
                    .batch[0]
                    .clone(),
                proto::Observation {
                    progress: Some(proto::Progress { behind: false }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(decode_record(&bad.encode_to_vec()).is_err());
    }

    #[test]
    fn a_malformed_observation_is_rejected_not_trusted() {
        assert!(decode(b"\xff\xff\xff").is_err());
        let w = proto::Observation {
            event_id: "e".into(),
            account_id: "a".into(),
            carried: vec![proto::Carried {
                kind: 99,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(decode(&w.encode_to_vec()).is_err(), "unknown kind");
        let w = proto::Observation {
            carried: vec![proto::Carried {
                kind: AttrKind::Device as u32,
                ..Default::default()
            }],
            ..w
        };
        assert!(
            decode(&w.encode_to_vec()).is_err(),
            "a device the event lacks"
        );
    }
}
