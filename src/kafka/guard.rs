//! The crash-loop guard: a record that kills the process in a way no `catch_unwind` sees (a
//! stack overflow, an abort, an allocation failure) must not kill it again on every restart.
//!
//! Such a record's offset is never committed, so a restarted service re-reads it and dies
//! again: a crash loop that stops detection for good. The guard keeps a small marker file
//! (`service.crash_marker`) that survives the process:
//!
//! - **Always** (cheap): per partition, a *lease*, the range of offsets this run may be
//!   touching. It is rewritten only when a record falls outside it, about once per 65,000
//!   records, and the file is marked clean at a clean shutdown.
//! - **After an unclean exit** the next run is *careful* inside the dead run's leases: before it
//!   decodes or processes a record there, it writes that record's partition and offset to the
//!   marker (one `pwrite`, about 1.2 µs, a third of a record's whole budget: too dear to pay
//!   on every record, cheap for the few thousand after a crash).
//! - If a careful run dies too, the marker names the record it died on. The next run
//!   dead-letters that record with reason `poison_record` instead of decoding it, logs it, and
//!   counts it in `distillguard_poison_records_skipped_total`; the record stays on a skip list
//!   (the last [`MAX_SKIP`]) so that rebuilding state after later restarts does not decode it
//!   either.
//!
//! So an uncatchable fault costs two restarts, not a crash loop. A run killed from outside
//! while careful (SIGKILL, the OOM killer) makes the next run dead-letter the record it was on,
//! which may have been innocent: the price of telling nothing apart from outside.
//!
//! The marker must be on storage that outlives the process but not the pod (an `emptyDir` on
//! Kubernetes: a container restart keeps it); it is locked, so a second instance given the
//! same path runs without a guard (with a warning) instead of sharing it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use metrics::Counter;
use serde::{Deserialize, Serialize};

use crate::config::ValidConfig;
use crate::telemetry;

/// A lease reaches this far past the record that opened it...
const LEASE_AHEAD: i64 = 65_536;
/// ... and this far before it: records still waiting in the merge (a partition pauses at
/// 20,000 buffered records) are processed after newer ones were decoded.
const LEASE_BEHIND: i64 = 32_768;
/// Poison records remembered.
pub const MAX_SKIP: usize = 64;

/// What the marker file holds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Marker {
    /// Set by a clean shutdown.
    clean: bool,
    /// Partition -> `[lo, hi)` offsets the run may have been touching.
    leases: BTreeMap<i32, (i64, i64)>,
    /// Written by a careful run before each record it touches.
    touch: Option<(i32, i64)>,
    /// Records to dead-letter unread.
    skip: Vec<(i32, i64)>,
}

pub struct Guard {
    /// `None`: no guard (no marker could be opened).
    file: Option<File>,
    path: PathBuf,
    marker: Marker,
    /// The dead run's leases: records inside them are touched carefully.
    careful: BTreeMap<i32, (i64, i64)>,
    skip: BTreeSet<(i32, i64)>,
    /// Bytes last written (a shorter marker is padded over the old one).
    len: usize,
    buf: Vec<u8>,
    skipped: Counter,
}

impl Guard {
    /// Opens (or creates) the marker, reads what the last run left, and marks this run.
    pub fn open(cfg: &ValidConfig) -> Guard {
        let path = marker_path(cfg);
        let mut g = Guard {
            file: None,
            path,
            marker: Marker::default(),
            careful: BTreeMap::new(),
            skip: BTreeSet::new(),
            len: 0,
            buf: Vec::new(),
            skipped: metrics::counter!(telemetry::POISON_SKIPPED),
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&g.path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %g.path.display(), error = %e,
                    "cannot open the crash marker (service.crash_marker); running without the crash-loop guard");
                return g;
            }
        };
        if let Err(e) =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            tracing::warn!(path = %g.path.display(), error = %e,
                "the crash marker is locked by another instance; running without the crash-loop guard");
            return g;
        }
        let mut text = String::new();
        let last = match (&file).read_to_string(&mut text) {
            Ok(0) => None,
            Ok(_) => serde_json::from_str::<Marker>(text.trim_end())
                .map_err(|e| tracing::warn!(path = %g.path.display(), error = %e, "unreadable crash marker; ignored"))
                .ok(),
            Err(e) => {
                tracing::warn!(path = %g.path.display(), error = %e, "cannot read the crash marker; ignored");
                None
            }
        };
        g.len = file.metadata().map_or(text.len(), |m| m.len() as usize);
        if let Some(last) = last {
            if !last.clean {
                g.careful = last.leases.clone();
                match last.touch {
                    Some((p, o)) => {
                        tracing::error!(
                            partition = p,
                            offset = o,
                            "the last run died while handling this input record; it will be dead-lettered unread (reason poison_record)"
                        );
                    }
                    None => tracing::warn!(
                        leases = ?g.careful,
                        "the last run did not shut down cleanly; recording each record's offset before touching it in the ranges it had reached, so that a record that kills the process again can be skipped"
                    ),
                }
            }
            // Keep the most recent poison records (offsets only grow within a partition).
            g.marker.skip = last.skip;
            if let Some(t) = last.touch.filter(|_| !last.clean) {
                if !g.marker.skip.contains(&t) {
                    g.marker.skip.push(t);
                }
            }
            let excess = g.marker.skip.len().saturating_sub(MAX_SKIP);
            g.marker.skip.drain(..excess);
            g.skip = g.marker.skip.iter().copied().collect();
        }
        g.file = Some(file);
        g.persist();
        g
    }

    /// Called before the record at (`partition`, `offset`) is decoded, and again before it is
    /// processed. `true`: a poison record, to be dead-lettered unread.
    #[inline]
    pub fn touch(&mut self, partition: i32, offset: i64) -> bool {
        if self.file.is_none() {
            return false;
        }
        if !self.skip.is_empty() && self.skip.contains(&(partition, offset)) {
            return true;
        }
        let mut write = false;
        let lease = self.marker.leases.get(&partition).copied();
        if !lease.is_some_and(|(lo, hi)| (lo..hi).contains(&offset)) {
            self.marker.leases.insert(
                partition,
                (
                    offset.saturating_sub(LEASE_BEHIND),
                    offset.saturating_add(LEASE_AHEAD),
                ),
            );
            write = true;
        }
        if !self.careful.is_empty()
            && self
                .careful
                .get(&partition)
                .is_some_and(|(lo, hi)| (*lo..*hi).contains(&offset))
        {
            self.marker.touch = Some((partition, offset));
            write = true;
        } else if self.marker.touch.is_some() {
            // Outside the careful ranges: the last touch no longer names the current record.
            self.marker.touch = None;
            write = true;
        }
        if write {
            self.persist();
        }
        false
    }

    /// Whether a touch of (`partition`, `offset`) names it in the marker (it is in the dead
    /// run's leases). Such a record must be decoded and processed while nothing else is, so
    /// that a death is blamed on the right record.
    #[inline]
    pub fn is_careful(&self, partition: i32, offset: i64) -> bool {
        self.file.is_some()
            && !self.careful.is_empty()
            && self
                .careful
                .get(&partition)
                .is_some_and(|(lo, hi)| (*lo..*hi).contains(&offset))
    }

    /// A poison record was dead-lettered (live).
    pub fn skipped(&self, partition: i32, offset: i64) {
        self.skipped.increment(1);
        tracing::error!(
            partition,
            offset,
            "poison record dead-lettered unread: the service died on it before"
        );
    }

    /// A clean shutdown: the next run starts without suspicion.
    pub fn clean(&mut self) {
        if self.file.is_none() {
            return;
        }
        self.marker.clean = true;
        self.marker.leases.clear();
        self.marker.touch = None;
        self.persist();
    }

    fn persist(&mut self) {
        let Some(file) = &self.file else { return };
        self.buf.clear();
        if serde_json::to_writer(&mut self.buf, &self.marker).is_err() {
            return;
        }
        let n = self.buf.len();
        // Pad over a longer previous marker (JSON ignores trailing spaces): one write, no
        // truncation.
        if n < self.len {
            self.buf.resize(self.len, b' ');
        }
        self.buf.push(b'\n');
        if let Err(e) = file.write_all_at(&self.buf, 0) {
            tracing::warn!(path = %self.path.display(), error = %e,
                "cannot write the crash marker; running without the crash-loop guard");
            self.file = None;
            return;
        }
        self.len = self.buf.len() - 1;
    }
}

/// `service.crash_marker`, or by default `distillguard-GROUP.marker` in the temporary
/// directory.
fn marker_path(cfg: &ValidConfig) -> PathBuf {
    let configured = &cfg.raw.service.crash_marker;
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    let group: String = cfg
        .raw
        .kafka
        .group_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("distillguard-{group}.marker"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(path: &std::path::Path) -> ValidConfig {
        let mut c = Config::default();
        c.service.crash_marker = path.display().to_string();
        c.validate().expect("valid")
    }

    #[test]
    fn a_record_a_careful_run_died_on_is_skipped_next_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        let c = cfg(&path);
        // Run 1: not careful, dies (dropped without `clean`) somewhere in partition 0.
        {
            let mut g = Guard::open(&c);
            for o in 0..100 {
                assert!(!g.touch(0, o));
            }
            assert!(g.careful.is_empty());
        }
        // Run 2: careful in run 1's lease; dies on offset 42.
        {
            let mut g = Guard::open(&c);
            assert!(g.careful.contains_key(&0));
            for o in 0..=42 {
                assert!(!g.touch(0, o));
            }
        }
        // Run 3: skips 42, then shuts down cleanly.
        {
            let mut g = Guard::open(&c);
            assert!(!g.touch(0, 41));
            assert!(g.touch(0, 42));
            assert!(!g.touch(0, 43));
            g.clean();
        }
        // Run 4: clean start, nothing careful, 42 still skipped (a rebuild re-reads it).
        let mut g = Guard::open(&c);
        assert!(g.careful.is_empty());
        assert!(g.touch(0, 42));
        assert!(!g.touch(1, 42));
    }

    #[test]
    fn a_second_instance_on_the_same_marker_runs_unguarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(&dir.path().join("m"));
        let a = Guard::open(&c);
        let b = Guard::open(&c);
        assert!(a.file.is_some());
        assert!(b.file.is_none());
    }

    #[test]
    fn garbage_in_the_marker_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        std::fs::write(&path, b"\xff{{{not json").expect("write");
        let mut g = Guard::open(&cfg(&path));
        assert!(g.file.is_some());
        assert!(!g.touch(0, 0));
        g.clean();
        let m: Marker =
            serde_json::from_str(std::fs::read_to_string(&path).expect("read").trim_end())
                .expect("marker json");
        assert!(m.clean);
    }
}
