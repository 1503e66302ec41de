//! PatchCore-style anomaly scoring, engine-independent: patch features,
//! coreset, nearest-neighbour distances, anomaly map, threshold and regions.
//! The CPU engine calls these directly; the GPU engine is tested against them.

pub mod coreset;
pub mod features;
pub mod knn;
pub mod map;
pub mod regions;
pub mod resample;
pub mod threshold;

pub use features::{FeatureAssembler, PatchFeatures, TapShape};
pub use knn::NearestNeighbour;
pub use map::MapMaker;
pub use regions::{MapPlacement, Rect, Region, find_regions};
pub use threshold::Calibration;
