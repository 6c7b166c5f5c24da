//! The busy policy: how long a waiting connection sleeps before it retries,
//! when it gives up (`backoff.rs`, pure Rust), its JSON form for
//! `hybrid_busy_config` (`json.rs`), and the jitter source (`rng.rs`).

pub(crate) mod backoff;
pub(crate) mod json;
pub(crate) mod rng;

pub use backoff::{BackoffPolicy, Jitter, PolicyError};
