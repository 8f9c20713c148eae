//! distillguard: streaming detection of model distillation on an LLM API request log.
//!
//! # Layout
//!
//! - [`event`]: the request event, decoded and validated from JSON or protobuf.
//! - [`fingerprint`]: prompt fingerprints computed on arrival; the text is then dropped.
//! - [`state`]: the shared state: accounts and their windows, the attribute index, de-duplication.
//! - [`engine`]: the synchronous, deterministic, event-time engine: it updates the shared state,
//!   handles late events, sweeps, and hands each event to the detectors.
//! - [`detect`]: the detectors behind one trait: `bulk_extraction`, value and co-activity links,
//!   and the `fake_account_cluster` assembler.
//! - [`alert`]: the contract's alert record, ids, tiers and encodings, and the safety valve
//!   that bounds `suspend` recommendations per hour.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`control`]: control records from people: the live allowlist the engine consults next
//!   to the static one, verdicts on alerts, and the alerts remembered to label them.
//! - [`replay`]: the file pipeline (parallel parse, ordered engine, alerts out).
//! - [`sim`] and [`eval`]: labelled traffic and scoring of alerts against labels.
//! - [`kafka`]: the service (`distillguard run`): consumer group, at-least-once offsets,
//!   dead letters, state rebuilt on rebalance, graceful shutdown; the control follower
//!   (`kafka::control`) and the client side of `allow` and `verdict`.
//! - [`telemetry`]: Prometheus metrics, `/healthz` and `/readyz`.
//! - [`demo`]: the service on an embedded mock broker with simulated traffic.
//!
//! # Data flow
//!
//! ```text
//! bytes ─► event::Decoder (validate, fingerprint, drop text) ─► engine::Engine::process
//!       ─► detect::{bulk, cluster} ─► alert::Alert ─► JSON Lines / protobuf
//! ```
//! `replay`, `run`, `demo`, the benches and the tests all drive the same [`engine::Engine`].
//! Split into stages (`engine::Role`, `engine::staged`), the same code runs as account
//! engines keyed by account, link shards keyed by linking value (`detect::Shard`) and a
//! cluster stage (`engine::cluster_stage`), with observations and link records between them
//! (`kafka::observation`, `kafka::links`).
//! On Kafka the bytes come from the input topic; alerts go to the alerts topic, rejected
//! records to the dead-letter topic, and an input offset is committed only after both.

pub mod alert;
pub mod config;
pub mod control;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod event;
pub mod fingerprint;
pub mod kafka;
pub mod replay;
pub mod sim;
pub mod state;
pub mod telemetry;

/// Generated from `proto/distillguard/v1/distillguard.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/distillguard.v1.rs"));
}
