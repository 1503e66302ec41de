//! lineguard: visual defect inspection for a production line.
//!
//! Data flow: frame -> preprocess -> encoder -> patch features -> nearest
//! neighbour distance to a bank of known-good patches -> anomaly map ->
//! verdict. The CLI in `main.rs` is a thin layer over these modules.

pub mod anomaly;
pub mod archive;
pub mod bank;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod frame;
pub mod fsutil;
pub mod model;
pub mod preprocess;
pub mod bench;
pub mod enroll;
pub mod eval;
pub mod heatmap;
pub mod progress;
pub mod publish;
pub mod station;
#[cfg(feature = "train")]
pub mod train;
pub mod verdict;
pub mod watch;
