//! distillguard: streaming detection of model distillation on an LLM API request log.
//!
//! # Layout
//!
//! - [`event`]: the request event, decoded and validated from JSON or protobuf.
//! - [`fingerprint`]: prompt fingerprints computed on arrival; the text is then dropped.
//! - [`engine`]: the synchronous, deterministic, event-time engine: per-account windows,
//!   the shared-attribute index, de-duplication and late-event handling.
//! - [`detect`]: the `bulk_extraction` and `fake_account_cluster` detectors.
//! - [`alert`]: the contract's alert record, ids, tiers and encodings.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`replay`]: the file pipeline (parallel parse, ordered engine, alerts out).
//! - [`sim`] and [`eval`]: labelled traffic and scoring of alerts against labels.
//!
//! # Data flow
//!
//! ```text
//! bytes ─► event::Decoder (validate, fingerprint, drop text) ─► engine::Engine::process
//!       ─► detect::{bulk, cluster} ─► alert::Alert ─► JSON Lines / protobuf
//! ```
//! `replay`, the benches and the tests all drive the same [`engine::Engine`].

pub mod alert;
pub mod config;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod event;
pub mod fingerprint;
pub mod replay;
pub mod sim;

/// Generated from `proto/distillguard/v1/distillguard.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/distillguard.v1.rs"));
}
