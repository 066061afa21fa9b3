//! weft's load generator and A/B comparer.
//!
//! Pure parts (request encoding, response framing, recording, statistics,
//! reports, plots) are apart from the parts that do I/O (`engine`, `h1`, `h2`,
//! `pacer`), so each can be tested on its own.

pub mod engine;
pub mod h1;
pub mod h1parse;
pub mod h2;
pub mod pacer;
pub mod record;
pub mod report;
pub mod target;

pub use engine::{run, LoadSpec, Outcome, RunError};
pub use report::Report;
pub use target::{RequestSpec, Target};
pub mod ab;
pub mod plot;
pub mod progress;
pub mod stats;
