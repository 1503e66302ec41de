//! Training images, decoded once: each file is read, checked and resized to
//! the encoder's input size as the station's preprocessing does, then kept
//! in memory, so epochs never re-read or re-decode a file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::TrainError;
use super::augment::Cached;
use crate::frame::Frame;
use crate::model::InputSpec;
use crate::preprocess::Preprocessor;

/// A labelled defect image: the image and its pixel mask (white = defect).
#[derive(Debug, Clone)]
pub struct DefectImage {
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// The whole image at `input`'s size in [0, 1] (mean 0, std 1: normalisation comes later).
fn decode(path: &Path, input: &InputSpec) -> Result<Vec<f32>, TrainError> {
    let frame = Frame::from_image_file(path, 0).map_err(|e| TrainError::Image { path: path.into(), reason: e.to_string() })?;
    let raw = InputSpec { mean: [0.0; 3], std: [1.0; 3], ..input.clone() };
    let mut pre = Preprocessor::new(frame.width, frame.height, None, &raw).map_err(|reason| TrainError::Image { path: path.into(), reason })?;
    let mut out = vec![0f32; pre.output_len()];
    pre.run(&frame, &mut out).map_err(|e| TrainError::Image { path: path.into(), reason: e.to_string() })?;
    Ok(out)
}

fn square(input: &InputSpec) -> Result<usize, TrainError> {
    if input.height != input.width {
        return Err(TrainError::Config(format!("the model's input is {}x{}; training needs a square input", input.width, input.height)));
    }
    Ok(input.height)
}

/// Decodes `paths` in parallel; the first unreadable file is the error.
pub fn load_good(paths: &[PathBuf], input: &InputSpec) -> Result<Vec<Cached>, TrainError> {
    let size = square(input)?;
    paths.par_iter().map(|p| Ok(Cached { size, rgb: decode(p, input)?, mask: None })).collect()
}

pub fn load_defects(defects: &[DefectImage], input: &InputSpec) -> Result<Vec<Cached>, TrainError> {
    let size = square(input)?;
    defects
        .par_iter()
        .map(|d| {
            let rgb = decode(&d.image, input)?;
            let m = decode(&d.mask, input)?;
            let mask: Vec<bool> = m[..size * size].iter().map(|&v| v > 0.5).collect();
            if !mask.iter().any(|&b| b) {
                return Err(TrainError::Image { path: d.mask.clone(), reason: "the mask marks no defect pixel".into() });
            }
            Ok(Cached { size, rgb, mask: Some(mask) })
        })
        .collect()
}

/// Defect images of a folder: `KIND/NAME.png` or `NAME.png`, each with its
/// mask `NAME_mask.png` beside it or under `ground_truth/KIND/` (MVTec layout).
pub fn list_defects(dir: &Path) -> Result<Vec<DefectImage>, TrainError> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    let rd = std::fs::read_dir(dir).map_err(|source| TrainError::Read { path: dir.into(), source })?;
    for e in rd.flatten() {
        if e.path().is_dir() && e.file_name() != "ground_truth" {
            dirs.push(e.path());
        }
    }
    dirs.sort();
    for d in dirs {
        let images = crate::enroll::list_images(&d).map_err(|e| TrainError::Config(e.to_string()))?;
        for image in images {
            let stem = image.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            if stem.ends_with("_mask") {
                continue;
            }
            let beside = d.join(format!("{stem}_mask.png"));
            let kind = d.file_name().unwrap_or_default();
            let mvtec = dir.join("ground_truth").join(kind).join(format!("{stem}_mask.png"));
            let mask = [beside, mvtec].into_iter().find(|m| m.is_file()).ok_or_else(|| TrainError::Image {
                path: image.clone(),
                reason: format!("no mask {stem}_mask.png beside it or under ground_truth/: defect images need their pixel masks"),
            })?;
            out.push(DefectImage { image, mask });
        }
    }
    Ok(out)
}

/// sha256 over the names and contents of the training files, in order: the
/// training data's identity in the exported model and in checkpoints.
pub fn data_hash(good: &[PathBuf], defects: &[DefectImage]) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    let files = good.iter().chain(defects.iter().flat_map(|d| [&d.image, &d.mask]));
    for p in files {
        let digest = crate::fsutil::sha256_file(p).map_err(|source| TrainError::Read { path: p.clone(), source })?;
        h.update(p.file_name().unwrap_or_default().to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(digest.as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}
