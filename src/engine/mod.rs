//! Engines run the per-frame path: preprocess, encoder, patch features,
//! nearest-neighbour distances to the bank, anomaly map. `cpu` (tract) is the
//! reference; every other engine is tested against it.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::anomaly::{PatchFeatures, Rect};
use crate::config::{EngineChoice, GpuPrecision};
use crate::frame::{Frame, FrameError};
use crate::model::{Contract, TapSpec};

pub use cpu::CpuEngine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    Cpu,
    Gpu,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Cpu => "cpu",
            EngineKind::Gpu => "gpu",
        })
    }
}

/// What an engine is prepared for.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub contract: Arc<Contract>,
    /// Taps that make up the patch features, in order.
    pub taps: Vec<TapSpec>,
    /// Gaussian blur of the anomaly map, in map pixels.
    pub blur_sigma: f32,
    /// CPU threads (0: one per core).
    pub threads: usize,
    /// Storage precision on the GPU (the CPU engine is f32).
    pub gpu_precision: GpuPrecision,
}

/// Wall time of each stage of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub preprocess: Duration,
    pub encoder: Duration,
    pub features: Duration,
    pub nearest_neighbour: Duration,
    pub map: Duration,
}

impl StageTimes {
    pub const NAMES: [&'static str; 5] = ["preprocess", "encoder", "features", "nearest_neighbour", "map"];

    pub fn as_array(&self) -> [Duration; 5] {
        [self.preprocess, self.encoder, self.features, self.nearest_neighbour, self.map]
    }

    pub fn total(&self) -> Duration {
        self.as_array().iter().sum()
    }
}

/// The anomaly map of one frame, at the model's input resolution over the ROI.
#[derive(Debug, Clone)]
pub struct Scored {
    pub map: Vec<f32>,
    pub map_width: usize,
    pub map_height: usize,
    /// Maximum of the map.
    pub score: f32,
    /// The region of interest the map covers, in frame pixels.
    pub roi: Rect,
    pub times: StageTimes,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: the encoder does not load in {engine}: {reason}")]
    Load { path: String, engine: EngineKind, reason: String },
    #[error("frame {frame}: encoder failed: {reason}")]
    Run { frame: String, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("frame {frame}: {reason}")]
    Geometry { frame: String, reason: String },
    #[error("no bank loaded: enroll good parts first (`lineguard enroll`)")]
    NoBank,
    #[error("bank has {found} dimensions per patch but the taps give {expected}")]
    BankDim { found: usize, expected: usize },
    #[error("the {0} engine is not available: {1}")]
    Unavailable(EngineKind, String),
}

/// Frame in, anomaly map out. One instance per inference thread.
pub trait Engine: Send {
    fn kind(&self) -> EngineKind;

    /// One line for logs: device, precision, threads.
    fn description(&self) -> String;

    /// Patch features of a frame (enrollment).
    fn embed(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<PatchFeatures, EngineError>;

    /// Installs the bank (`rows x dim`, row-major) that `score` compares against.
    fn set_bank(&mut self, bank: &[f32], dim: usize) -> Result<(), EngineError>;

    /// The whole per-frame path.
    fn score(&mut self, frame: &Frame, roi: Option<Rect>) -> Result<Scored, EngineError>;

    /// Several frames at once (throughput; stage times are not kept). The
    /// GPU engine records them into one submission; others score in turn.
    fn score_batch(&mut self, frames: &[Frame], roi: Option<Rect>) -> Result<Vec<Scored>, EngineError> {
        frames.iter().map(|f| self.score(f, roi)).collect()
    }
}

/// Builds the engine the configuration asks for. `gpu` takes the best
/// adapter there is, lavapipe included; `auto` takes a hardware GPU when
/// there is one and the CPU otherwise, and says which and why.
pub fn create(choice: EngineChoice, spec: &EngineSpec) -> Result<Box<dyn Engine>, EngineError> {
    match choice {
        EngineChoice::Cpu => Ok(Box::new(CpuEngine::new(spec)?)),
        #[cfg(feature = "gpu")]
        EngineChoice::Gpu => Ok(Box::new(gpu::GpuEngine::new(spec, false)?)),
        #[cfg(not(feature = "gpu"))]
        EngineChoice::Gpu => Err(EngineError::Unavailable(EngineKind::Gpu, "this build has no GPU engine (feature `gpu`)".into())),
        EngineChoice::Auto => {
            #[cfg(feature = "gpu")]
            match gpu::GpuEngine::new(spec, true) {
                Ok(e) => {
                    tracing::info!(engine = %e.description(), "engine auto: using the GPU");
                    return Ok(Box::new(e));
                }
                Err(e) => tracing::info!(reason = %e, "engine auto: using the CPU engine"),
            }
            #[cfg(not(feature = "gpu"))]
            tracing::info!("engine auto: using the CPU engine (this build has no GPU engine)");
            Ok(Box::new(CpuEngine::new(spec)?))
        }
    }
}
