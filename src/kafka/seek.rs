//! Finding where a window starts in a partition: the first offset whose record timestamp is at
//! or after a time. `offsets_for_times` answers it on real brokers; brokers that cannot
//! (librdkafka's mock cluster answers "none") fall back to a binary search over record
//! timestamps, about log2(n) single-record fetches.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::alert::{Alert, Kind};
use crate::config::ValidConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A group-less consumer for lookups and read-backs (never commits).
pub struct Reader {
    pub consumer: BaseConsumer,
}

impl Reader {
    pub fn new(cfg: &ValidConfig) -> Result<Reader, rdkafka::error::KafkaError> {
        let mut c: ClientConfig = super::consumer_config(cfg);
        c.set("group.id", format!("{}-reader", cfg.raw.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        Ok(Reader {
            consumer: c.create()?,
        })
    }

    /// First offset in `[low, end)` whose record timestamp is at or after `ts_ms`; `end`
    /// when there is none.
    pub fn offset_at(&self, topic: &str, partition: i32, ts_ms: i64, low: i64, end: i64) -> i64 {
        if low >= end {
            return end;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(ts_ms))
            .is_ok()
        {
            if let Ok(r) = self.consumer.offsets_for_times(tpl, TIMEOUT) {
                if let Some(Offset::Offset(o)) =
                    r.find_partition(topic, partition).map(|e| e.offset())
                {
                    if o >= 0 {
                        return o.clamp(low, end);
                    }
                }
            }
        }
        // "None" may be true (everything is older) or the broker may not index by time:
        // check by reading timestamps.
        let (mut lo, mut hi) = (low, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.timestamp_at(topic, partition, mid) {
                Some((_, ts)) if ts >= ts_ms => hi = mid,
                Some((actual, _)) => lo = (actual + 1).min(hi),
                None => break,
            }
        }
        lo
    }

    /// The first record at or after `offset`: its offset and timestamp.
    fn timestamp_at(&self, topic: &str, partition: i32, offset: i64) -> Option<(i64, i64)> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .ok()?;
        self.consumer.assign(&tpl).ok()?;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                if m.topic() == topic && m.partition() == partition && m.offset() >= offset {
                    return Some((m.offset(), m.timestamp().to_millis()?));
                }
            }
        }
        None
    }

    /// Key and payload of the record at `offset` (a dead-letter copy of a record whose bytes
    /// were not kept).
    pub fn record_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .ok()?;
        self.consumer.assign(&tpl).ok()?;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                if m.topic() == topic && m.partition() == partition && m.offset() == offset {
                    return Some((
                        m.key().map(<[u8]>::to_vec),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
            }
        }
        None
    }

    pub fn watermarks(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, TIMEOUT)
            .ok()
    }
}

impl Reader {
    /// (kind, account) pairs on the alerts topic since `since_ms` (by record timestamp).
    pub fn alerted_since(&self, topic: &str, json: bool, since_ms: i64) -> HashSet<(Kind, String)> {
        let mut out = HashSet::new();
        let Ok(md) = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
        else {
            return out;
        };
        let mut starts = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for t in md.topics() {
            for p in t.partitions() {
                let Some((low, high)) = self.watermarks(topic, p.id()) else {
                    continue;
                };
                let start = self.offset_at(topic, p.id(), since_ms, low, high);
                if start < high {
                    let _ = starts.add_partition_offset(topic, p.id(), Offset::Offset(start));
                    ends.insert(p.id(), high);
                }
            }
        }
        if ends.is_empty() || self.consumer.assign(&starts).is_err() {
            return out;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ends.is_empty() && Instant::now() < deadline {
            let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            if m.topic() != topic {
                continue;
            }
            if ends
                .get(&m.partition())
                .is_some_and(|&end| m.offset() + 1 >= end)
            {
                ends.remove(&m.partition());
            }
            let Some(bytes) = m.payload() else { continue };
            if let Some(a) = Alert::decode(bytes, json) {
                for acc in a.accounts {
                    out.insert((a.kind, acc));
                }
            }
        }
        out
    }
}
