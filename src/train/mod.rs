//! `lineguard train`: adapts the ImageNet encoder to a station's parts.
//!
//! Two stages, each optional (`lineguard train` runs the first alone unless
//! given defect images: measured best): contrastive pretraining on the station's good
//! images (SimCLR; dense, patch-level InfoNCE by default, whole-view NT-Xent
//! on request), then fine-tuning with the same objective plus an L2-SP
//! anchor to the pretrained weights (against forgetting and collapse) and,
//! when labelled defect images are given, a margin that pushes their defect
//! cells away from the good ones in the station's own feature space. The
//! result is the base ONNX contract with new weights ([`export`]).
//!
//! Runs on burn: its flex backend on the CPU, its wgpu backend on a GPU
//! (feature `train-gpu`).

pub mod augment;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod encoder;
pub mod export;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod trainer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use augment::AugmentConfig;
pub use data::{DefectImage, list_defects};
pub use trainer::{StageReport, TrainRequest, TrainSummary, train};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {found} images; training needs at least {needed} (more is better: 100 or so good parts)")]
    TooFew { path: PathBuf, found: usize, needed: usize },
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: bad checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(transparent)]
    Graph(#[from] encoder::GraphError),
}

/// The contrastive objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// InfoNCE between the same places (feature cells) of two views.
    Dense,
    /// SimCLR's NT-Xent between whole-view embeddings.
    Global,
}

/// One stage's length and learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Passes over the good images.
    pub epochs: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f32,
    /// Warm-up, as a fraction of the stage's steps.
    pub warmup: f32,
}

/// Every training setting; all of it is recorded in the exported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub seed: u64,
    /// Good images per step (two views each).
    pub batch: usize,
    /// The stem and this many MBConv blocks keep their ImageNet weights.
    pub freeze_blocks: usize,
    pub objective: Objective,
    /// Softmax temperature of the contrastive losses.
    pub temperature: f32,
    /// Projection head (training only): hidden and output widths.
    pub head_hidden: usize,
    pub head_out: usize,
    /// Corresponding cell pairs drawn per image for the dense objective.
    pub dense_pairs: usize,
    pub pretrain: StageConfig,
    pub finetune: StageConfig,
    pub weight_decay: f32,
    /// Gradients are scaled down to this global norm.
    pub clip_norm: f32,
    /// Weight of the L2-SP penalty that ties fine-tuned weights to their start.
    pub anchor: f32,
    /// Weight and margin of the defect term (fine-tuning with defect images).
    pub defect_weight: f32,
    pub defect_margin: f32,
    /// Defect images per fine-tuning step.
    pub defect_batch: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    pub augment: AugmentConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            batch: 16,
            freeze_blocks: 5,
            objective: Objective::Dense,
            temperature: 0.2,
            head_hidden: 512,
            head_out: 128,
            dense_pairs: 16,
            pretrain: StageConfig { epochs: 6, lr: 3e-5, warmup: 0.1 },
            finetune: StageConfig { epochs: 2, lr: 1e-5, warmup: 0.1 },
            weight_decay: 1e-4,
            clip_norm: 1.0,
            anchor: 1.0,
            defect_weight: 3.0,
            defect_margin: 3.0,
            defect_batch: 4,
            checkpoint_every: 10,
            augment: AugmentConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Settings from a TOML file (keys as in [`TrainConfig`]; missing keys keep their defaults).
    pub fn load(path: &std::path::Path) -> Result<TrainConfig, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Read { path: path.into(), source })?;
        let cfg: TrainConfig = crate::config::parse_toml(&text, path).map_err(|e| TrainError::Config(e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |s: String| Err(TrainError::Config(s));
        if self.batch < 2 {
            return bad(format!("train.batch = {}: contrastive learning needs at least 2 images per step", self.batch));
        }
        if !(0.1..=0.5).contains(&self.temperature) {
            return bad(format!("train.temperature = {}: use a value within 0.1..0.5", self.temperature));
        }
        if self.head_hidden == 0 || self.head_out == 0 || self.dense_pairs == 0 || self.checkpoint_every == 0 {
            return bad("train.head_hidden, head_out, dense_pairs and checkpoint_every must be positive".into());
        }
        for (name, s) in [("pretrain", &self.pretrain), ("finetune", &self.finetune)] {
            if !(s.lr > 0.0 && s.lr < 1.0 && (0.0..1.0).contains(&s.warmup)) {
                return bad(format!("train.{name}: lr {} must be within 0..1 and warmup {} within 0..1", s.lr, s.warmup));
            }
        }
        self.augment.check().map_err(TrainError::Config)
    }
}

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Pretrain,
    Finetune,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Pretrain => "pretrain",
            Stage::Finetune => "finetune",
        }
    }
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrainDevice {
    /// The box's GPU when this build trains on GPUs (`train-gpu`) and wgpu
    /// sees a hardware GPU; otherwise the CPU (a software Vulkan such as
    /// lavapipe would train slower than burn's CPU backend).
    #[default]
    Auto,
    Cpu,
    /// burn's wgpu backend (needs the `train-gpu` feature).
    Gpu,
}

impl TrainDevice {
    /// `Auto` made concrete; the others as they are.
    pub fn resolve(self) -> TrainDevice {
        match self {
            TrainDevice::Auto if cfg!(feature = "train-gpu") && hardware_gpu() => TrainDevice::Gpu,
            TrainDevice::Auto => TrainDevice::Cpu,
            other => other,
        }
    }

    pub fn burn_device(self) -> Result<burn::tensor::Device, TrainError> {
        match self.resolve() {
            TrainDevice::Auto | TrainDevice::Cpu => Ok(burn::tensor::Device::flex()),
            #[cfg(feature = "train-gpu")]
            TrainDevice::Gpu => Ok(burn::tensor::Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(not(feature = "train-gpu"))]
            TrainDevice::Gpu => Err(TrainError::Config(
                "this lineguard was built without GPU training: rebuild with `cargo build --release --features train-gpu`, or use --device cpu".into(),
            )),
        }
    }
}

#[cfg(feature = "gpu")]
fn hardware_gpu() -> bool {
    crate::engine::gpu::context::list_adapters().iter().any(|a| a.hardware)
}

#[cfg(not(feature = "gpu"))]
fn hardware_gpu() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_device_stays_and_auto_picks_the_cpu_without_train_gpu() {
        assert_eq!(TrainDevice::Cpu.resolve(), TrainDevice::Cpu);
        assert_eq!(TrainDevice::Gpu.resolve(), TrainDevice::Gpu);
        if !cfg!(feature = "train-gpu") {
            assert_eq!(TrainDevice::Auto.resolve(), TrainDevice::Cpu);
        }
    }
}
