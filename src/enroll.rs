//! Enrollment: good images -> memory bank with a calibrated threshold.
//!
//! 1. Every image goes through the engine's `embed` (the same preprocessing
//!    and features as scoring).
//! 2. Greedy k-center keeps `coreset_fraction` of the patches.
//! 3. Calibration without a held-out split: each enrolled image is scored
//!    against the bank minus the rows that came from that image
//!    (leave-one-image-out), which approximates an unseen good part; the
//!    threshold is a quantile of those scores plus a margin.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::anomaly::{MapMaker, NearestNeighbour, Rect, coreset, threshold};
use crate::bank::{Bank, BankHeader};
use crate::config::{Config, EnrollConfig};
use crate::engine::{Engine, EngineError};
use crate::frame::{Frame, FrameError};
use crate::model::Contract;
use crate::progress::Progress;
use crate::verdict::rfc3339;

pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "pnm"];

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{path}: cannot list images: {source}")]
    List { path: PathBuf, source: std::io::Error },
    #[error("{path}: {found} images; enrollment needs at least {needed} good images")]
    TooFew { path: PathBuf, found: usize, needed: usize },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{path}: {source}")]
    Engine { path: PathBuf, source: EngineError },
}

/// Minimum number of good images: calibration leaves one out at a time.
pub const MIN_IMAGES: usize = 2;

/// Image files directly in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, EnrollError> {
    let rd = std::fs::read_dir(dir).map_err(|source| EnrollError::List { path: dir.into(), source })?;
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(|source| EnrollError::List { path: dir.into(), source })?.path();
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if p.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// What enrollment needs besides the engine.
#[derive(Debug, Clone)]
pub struct EnrollParams {
    pub enroll: EnrollConfig,
    pub roi: Option<Rect>,
    pub blur_sigma: f32,
    pub taps: Vec<String>,
}

impl EnrollParams {
    pub fn from_config(cfg: &Config, roi: Option<Rect>) -> EnrollParams {
        EnrollParams { enroll: cfg.enroll.clone(), roi, blur_sigma: cfg.scoring.blur_sigma, taps: cfg.model.taps.clone() }
    }
}

/// Builds a bank from `images` (good parts only).
pub fn enroll(
    engine: &mut dyn Engine,
    contract: &Contract,
    images: &[PathBuf],
    params: &EnrollParams,
    progress: &Progress,
) -> Result<Bank, EnrollError> {
    if images.len() < MIN_IMAGES {
        let dir = images.first().and_then(|p| p.parent()).unwrap_or(Path::new(".")).to_path_buf();
        return Err(EnrollError::TooFew { path: dir, found: images.len(), needed: MIN_IMAGES });
    }
    // 1. Embed.
    let bar = progress.bar("embed", images.len() as u64);
    let mut all = Vec::new();
    let mut sources = Vec::new();
    let (mut grid, mut dim) = ((0, 0), 0);
    for (i, path) in images.iter().enumerate() {
        let frame = Frame::from_image_file(path, i as u64)?;
        let f = engine.embed(&frame, params.roi).map_err(|source| EnrollError::Engine { path: path.clone(), source })?;
        grid = (f.grid_h, f.grid_w);
        dim = f.dim;
        sources.extend(std::iter::repeat_n(i as u32, f.patches()));
        all.extend_from_slice(&f.data);
        bar.inc(1);
    }
    bar.finish();
    let patches_per_image = grid.0 * grid.1;

    // 2. Coreset.
    let total = all.len() / dim;
    let k = ((total as f64 * params.enroll.coreset_fraction as f64).round() as usize).clamp(1, total);
    let bar = progress.bar("coreset", k as u64);
    let picked = coreset::greedy_k_center(&all, dim, k, params.enroll.projection_dim, params.enroll.seed, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish();
    let mut data = Vec::with_capacity(picked.len() * dim);
    let mut row_sources = Vec::with_capacity(picked.len());
    for &i in &picked {
        data.extend_from_slice(&all[i * dim..(i + 1) * dim]);
        row_sources.push(sources[i]);
    }

    // 3. Leave-one-image-out calibration.
    let nn = NearestNeighbour::new(data, dim);
    let input = &contract.meta.input;
    let mut maker = MapMaker::new(grid.0, grid.1, input.height, input.width, params.blur_sigma);
    let mut map = vec![0.0; input.height * input.width];
    let mut dists = vec![0.0; patches_per_image];
    let bar = progress.bar("calibrate", images.len() as u64);
    let mut good_scores = Vec::with_capacity(images.len());
    for i in 0..images.len() {
        let q = &all[i * patches_per_image * dim..(i + 1) * patches_per_image * dim];
        nn.min_distances_excluding(q, &mut dists, &row_sources, i as u32);
        good_scores.push(maker.run(&dists, &mut map));
        bar.inc(1);
    }
    bar.finish();
    let (thr, calibration) =
        threshold::calibrate(&good_scores, params.enroll.false_reject_rate, params.enroll.threshold_margin);

    let header = BankHeader {
        model_sha256: contract.sha256.clone(),
        model_file: contract.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        taps: params.taps.clone(),
        dim,
        rows: nn.rows(),
        input: input.clone(),
        roi: params.roi,
        blur_sigma: params.blur_sigma,
        threshold: thr,
        calibration,
        image_count: images.len(),
        patches_total: total,
        coreset_fraction: params.enroll.coreset_fraction,
        projection_dim: params.enroll.projection_dim,
        seed: params.enroll.seed,
        created_at: rfc3339(SystemTime::now()),
        producer: format!("lineguard {}", env!("CARGO_PKG_VERSION")),
    };
    Ok(Bank::new(header, nn.bank().to_vec()))
}
