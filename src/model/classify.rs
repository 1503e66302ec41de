//! ImageNet classification with a contract that kept its classifier: the
//! check that an import is right (the real photos must get the right classes).

use image::imageops::FilterType;

use super::Contract;
use crate::engine::EngineError;
use crate::engine::cpu::CpuEncoder;
use crate::frame::Frame;

/// Top-k (class index, probability), most probable first.
pub fn classify(contract: &Contract, frame: &Frame, k: usize) -> Result<Vec<(usize, f32)>, EngineError> {
    let logits_name = contract.meta.classifier_output.clone().ok_or_else(|| EngineError::Load {
        path: contract.path.display().to_string(),
        engine: crate::engine::EngineKind::Cpu,
        reason: "the model has no classifier output (import it with --classifier)".into(),
    })?;
    let input = &contract.meta.input;
    let x = center_crop_input(frame, input.height, &input.mean, &input.std);
    let mut enc = CpuEncoder::new(contract, &[logits_name])?;
    let out = enc
        .run(&x)
        .map_err(|e| EngineError::Run { frame: frame.source.clone(), reason: format!("{e:#}") })?;
    let logits = out[0]
        .try_as_plain_ram()
        .and_then(|v| v.as_slice::<f32>().map(|s| s.to_vec()))
        .map_err(|e| EngineError::Run { frame: frame.source.clone(), reason: format!("{e:#}") })?;
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - m).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exp.iter().map(|v| v / sum).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    Ok(ranked)
}

/// ImageNet evaluation preprocessing: shorter side to size*256/224 (bicubic),
/// centre crop, normalise; NCHW.
pub fn center_crop_input(frame: &Frame, size: usize, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let img = image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb8()).expect("frame geometry");
    let short = size * 256 / 224;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (nw, nh) = if w < h { (short, h * short / w) } else { (w * short / h, short) };
    let resized = image::imageops::resize(&img, nw as u32, nh as u32, FilterType::CatmullRom);
    let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
    let plane = size * size;
    let mut out = vec![0.0; 3 * plane];
    for y in 0..size {
        for x in 0..size {
            let p = resized.get_pixel((x0 + x) as u32, (y0 + y) as u32);
            for c in 0..3 {
                out[c * plane + y * size + x] = (p.0[c] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
    }
    out
}
