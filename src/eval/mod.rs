//! `lineguard eval`: per category of an MVTec-layout data set, enroll from
//! train/good, score every test image through the engine, and measure image
//! and pixel AUROC, F1 at the calibrated threshold, and stage latencies.

pub mod dataset;
pub mod metrics;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::anomaly::threshold::quantile;
use crate::config::ScoringConfig;
use crate::engine::{Engine, EngineError, StageTimes};
use crate::enroll::{EnrollError, EnrollParams, enroll};
use crate::frame::{Frame, FrameError};
use crate::heatmap;
use crate::model::Contract;
use crate::progress::Progress;
use dataset::{Category, DatasetError};
use metrics::{Confusion, auroc, roc_curve};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{path}: {source}")]
    Engine { path: PathBuf, source: EngineError },
    #[error("{path}: mask is {found}, the image is {expected}")]
    MaskSize { path: PathBuf, found: String, expected: String },
    #[error("{path}: cannot write the report: {source}")]
    Report { path: PathBuf, source: std::io::Error },
    #[error("{category}: {reason}")]
    Encoder { category: String, reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct KindResult {
    pub images: usize,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub median: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of_ms(values: &[f64]) -> Percentiles {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        Percentiles { median: quantile(&v, 0.5) as f64, p99: quantile(&v, 0.99) as f64 }
    }
}

/// Medians and p99 per stage, in milliseconds.
pub fn stage_percentiles(times: &[StageTimes]) -> BTreeMap<String, Percentiles> {
    let mut out = BTreeMap::new();
    for (k, name) in StageTimes::NAMES.iter().enumerate() {
        let v: Vec<f64> = times.iter().map(|t| t.as_array()[k].as_secs_f64() * 1e3).collect();
        out.insert(name.to_string(), Percentiles::of_ms(&v));
    }
    let total: Vec<f64> = times.iter().map(|t| t.total().as_secs_f64() * 1e3).collect();
    out.insert("total".into(), Percentiles::of_ms(&total));
    out
}

/// One test image's outcome, for people who want to look closer.
#[derive(Debug, Clone, Serialize)]
pub struct ImageScore {
    pub path: PathBuf,
    pub kind: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryResult {
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    /// At the calibrated threshold.
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub false_reject_rate: f64,
    pub threshold: f32,
    /// How the threshold was calibrated (leave-one-image-out good scores).
    pub calibration: crate::anomaly::Calibration,
    pub confusion: Confusion,
    pub per_kind: BTreeMap<String, KindResult>,
    pub train_images: usize,
    pub test_images: usize,
    /// The encoder this category was scored with (sha256).
    pub model_sha256: String,
    pub bank_rows: usize,
    pub enroll_seconds: f64,
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub images: Vec<ImageScore>,
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub image_auroc_mean: f64,
    pub pixel_auroc_mean: f64,
    pub f1_mean: f64,
    pub categories: BTreeMap<String, CategoryResult>,
    pub engine: String,
    pub model: String,
    pub model_sha256: String,
    pub taps: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub categories: Vec<String>,
    /// Where ROC plots, heatmaps and eval.json go.
    pub report_dir: Option<PathBuf>,
    /// Example heatmaps per defect kind (and of good parts) in the report.
    pub heatmaps_per_kind: usize,
    /// Region extraction for the heatmaps.
    pub scoring: ScoringConfig,
    /// Defect images per kind moved out of the test split into a few-shot
    /// training split (see [`Category::take_fewshot`]); 0 keeps the test split whole.
    pub fewshot: usize,
}

/// An engine and the model it runs.
pub struct Encoder {
    pub engine: Box<dyn Engine>,
    pub contract: Contract,
}

/// Supplies the encoder for each category: the station's own for all of
/// them, or one trained for the category (`lineguard eval --train`).
pub trait EncoderSource {
    /// `fewshot` are the defect images moved out of the category's test split.
    fn encoder(&mut self, cat: &Category, fewshot: &[dataset::TestImage], progress: &Progress) -> Result<&mut Encoder, EvalError>;
}

/// The same encoder for every category.
impl EncoderSource for Encoder {
    fn encoder(&mut self, _: &Category, _: &[dataset::TestImage], _: &Progress) -> Result<&mut Encoder, EvalError> {
        Ok(self)
    }
}

/// One scored test image, kept for the metrics.
struct Scored1 {
    score: f32,
    pixel_start: usize,
}

pub fn evaluate(
    source: &mut dyn EncoderSource,
    data: &Path,
    params: &EnrollParams,
    opts: &EvalOptions,
    progress: &Progress,
) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let cats = dataset::discover(data, &opts.categories)?;
    let mut results = BTreeMap::new();
    let (mut engines, mut models) = (Vec::new(), Vec::new());
    for mut cat in cats {
        let fewshot = cat.take_fewshot(opts.fewshot);
        let progress = progress.with_prefix(&cat.name);
        let enc = source.encoder(&cat, &fewshot, &progress)?;
        let r = evaluate_category(enc.engine.as_mut(), &enc.contract, &cat, params, opts, &progress)?;
        engines.push(enc.engine.description());
        models.push((enc.contract.path.display().to_string(), enc.contract.sha256.clone()));
        results.insert(cat.name.clone(), r);
    }
    engines.dedup();
    models.dedup();
    // One model for all categories is named; trained ones are per category (see each category's model).
    let (model, model_sha256) = match models.as_slice() {
        [(m, h)] => (m.clone(), h.clone()),
        _ => ("trained per category".to_owned(), String::new()),
    };
    let mean = |f: &dyn Fn(&CategoryResult) -> Option<f64>| {
        let v: Vec<f64> = results.values().filter_map(f).collect();
        if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
    };
    let report = EvalReport {
        image_auroc_mean: mean(&|r| r.image_auroc),
        pixel_auroc_mean: mean(&|r| r.pixel_auroc),
        f1_mean: mean(&|r| Some(r.f1)),
        engine: engines.join("; "),
        model,
        model_sha256,
        taps: params.taps.clone(),
        categories: results,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &opts.report_dir {
        report::write_summary(dir, &report)?;
    }
    Ok(report)
}

fn load_mask(path: &Path, w: u32, h: u32) -> Result<Vec<bool>, EvalError> {
    let f = Frame::from_image_file(path, 0)?;
    if (f.width, f.height) != (w, h) {
        return Err(EvalError::MaskSize {
            path: path.into(),
            found: format!("{}x{}", f.width, f.height),
            expected: format!("{w}x{h}"),
        });
    }
    let step = f.format.bytes_per_pixel();
    Ok(f.data.chunks(step).map(|p| p[0] > 127).collect())
}

/// Enrolls `cat`'s train split and scores its test split.
pub fn evaluate_category(
    engine: &mut dyn Engine,
    contract: &Contract,
    cat: &Category,
    params: &EnrollParams,
    opts: &EvalOptions,
    progress: &Progress,
) -> Result<CategoryResult, EvalError> {
    let t = Instant::now();
    let bank = enroll(engine, contract, &cat.train, params, progress)?;
    let enroll_seconds = t.elapsed().as_secs_f64();
    engine
        .set_bank(&bank.data, bank.header.dim)
        .map_err(|source| EvalError::Engine { path: cat.train[0].clone(), source })?;
    let threshold = bank.header.threshold;

    let mut scored = Vec::with_capacity(cat.test.len());
    let mut pixel_scores: Vec<f32> = Vec::new();
    let mut pixel_labels: Vec<bool> = Vec::new();
    let mut times = Vec::with_capacity(cat.test.len());
    let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
    let bar = progress.bar("score", cat.test.len() as u64);
    for (i, t) in cat.test.iter().enumerate() {
        let frame = Frame::from_image_file(&t.path, i as u64)?;
        let s = engine.score(&frame, params.roi).map_err(|source| EvalError::Engine { path: t.path.clone(), source })?;
        times.push(s.times);
        let full = heatmap::map_at_roi_resolution(&s);
        let labels = match &t.mask {
            Some(m) => load_mask(m, frame.width, frame.height)?,
            None => vec![false; full.len()],
        };
        scored.push(Scored1 { score: s.score, pixel_start: pixel_scores.len() });
        pixel_scores.extend_from_slice(&full);
        pixel_labels.extend_from_slice(&labels);
        if let Some(dir) = &opts.report_dir {
            let n = shown.entry(t.kind.as_str()).or_default();
            if *n < opts.heatmaps_per_kind {
                *n += 1;
                report::write_heatmap(dir, &cat.name, t, &frame, &s, threshold, &opts.scoring)?;
            }
        }
        bar.inc(1);
    }
    bar.finish();

    let scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
    let defective: Vec<bool> = cat.test.iter().map(|t| t.defective()).collect();
    let pixel_range = |i: usize| {
        let end = scored.get(i + 1).map_or(pixel_scores.len(), |n| n.pixel_start);
        scored[i].pixel_start..end
    };
    let subset_metrics = |keep: &dyn Fn(usize) -> bool| {
        let idx: Vec<usize> = (0..cat.test.len()).filter(|&i| keep(i)).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| defective[i]).collect();
        let (mut ps, mut pl) = (Vec::new(), Vec::new());
        for &i in &idx {
            ps.extend_from_slice(&pixel_scores[pixel_range(i)]);
            pl.extend_from_slice(&pixel_labels[pixel_range(i)]);
        }
        (idx.len(), auroc(&s, &l), auroc(&ps, &pl))
    };
    let mut per_kind = BTreeMap::new();
    for kind in cat.kinds() {
        let (images, image_auroc, pixel_auroc) = subset_metrics(&|i| !cat.test[i].defective() || cat.test[i].kind == kind);
        per_kind.insert(kind, KindResult { images, image_auroc, pixel_auroc });
    }
    let confusion = Confusion::at(&scores, &defective, threshold);
    let result = CategoryResult {
        image_auroc: auroc(&scores, &defective),
        pixel_auroc: auroc(&pixel_scores, &pixel_labels),
        f1: confusion.f1(),
        precision: confusion.precision(),
        recall: confusion.recall(),
        false_reject_rate: confusion.false_reject_rate(),
        threshold,
        calibration: bank.header.calibration.clone(),
        confusion,
        per_kind,
        train_images: cat.train.len(),
        test_images: cat.test.len(),
        model_sha256: contract.sha256.clone(),
        bank_rows: bank.header.rows,
        enroll_seconds,
        latency_ms: stage_percentiles(&times),
        images: cat.test.iter().zip(&scores).map(|(t, &score)| ImageScore { path: t.path.clone(), kind: t.kind.clone(), score }).collect(),
        roc: roc_curve(&scores, &defective).unwrap_or_default(),
    };
    if let Some(dir) = &opts.report_dir {
        report::write_category(dir, &cat.name, &result)?;
    }
    Ok(result)
}
