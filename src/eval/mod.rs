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
    /// With [`EvalOptions::repeats`] above 1: every repeat's AUROC. The
    /// AUROC fields above (per kind too) are then their means; the rest
    /// (threshold, F1, images, latencies) is the first repeat's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<RepeatResult>,
}

/// One enrollment (and, for trained encoders, one training run) of a category.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatResult {
    pub enroll_seed: u64,
    pub model_sha256: String,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
}

impl CategoryResult {
    /// Lowest and highest image AUROC over the repeats (None without repeats).
    pub fn image_auroc_range(&self) -> Option<(f64, f64)> {
        range(self.repeats.iter().map(|r| r.image_auroc))
    }

    pub fn pixel_auroc_range(&self) -> Option<(f64, f64)> {
        range(self.repeats.iter().map(|r| r.pixel_auroc))
    }

    /// The image AUROC of `roc` (the first repeat's curve), for labelling it.
    pub fn roc_auroc(&self) -> Option<f64> {
        self.repeats.first().map_or(self.image_auroc, |r| r.image_auroc)
    }
}

fn range(v: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    v.flatten().fold(None, |acc, x| Some(acc.map_or((x, x), |(lo, hi): (f64, f64)| (lo.min(x), hi.max(x)))))
}

/// Mean of values that every repeat has (None when one lacks it: same test split, same answer).
fn mean_of(v: &[Option<f64>]) -> Option<f64> {
    let some: Vec<f64> = v.iter().flatten().copied().collect();
    (some.len() == v.len() && !some.is_empty()).then(|| some.iter().sum::<f64>() / some.len() as f64)
}

/// One result from `runs` of the same category (the seeds in order): AUROC
/// means, each run's AUROC in `repeats`, everything else from the first run.
fn combine_repeats(runs: Vec<(u64, CategoryResult)>) -> CategoryResult {
    let repeats: Vec<RepeatResult> = runs
        .iter()
        .map(|(seed, r)| RepeatResult { enroll_seed: *seed, model_sha256: r.model_sha256.clone(), image_auroc: r.image_auroc, pixel_auroc: r.pixel_auroc })
        .collect();
    let mut it = runs.into_iter().map(|(_, r)| r);
    let mut first = it.next().expect("at least one run");
    let rest: Vec<CategoryResult> = it.collect();
    if rest.is_empty() {
        return first;
    }
    let all = || std::iter::once(&first).chain(&rest);
    let kinds: BTreeMap<String, (Option<f64>, Option<f64>)> = first
        .per_kind
        .keys()
        .map(|k| {
            let of = |f: &dyn Fn(&KindResult) -> Option<f64>| mean_of(&all().map(|r| r.per_kind.get(k).and_then(f)).collect::<Vec<_>>());
            (k.clone(), (of(&|x| x.image_auroc), of(&|x| x.pixel_auroc)))
        })
        .collect();
    for (k, (i, p)) in kinds {
        let kr = first.per_kind.get_mut(&k).expect("kind from this map");
        (kr.image_auroc, kr.pixel_auroc) = (i, p);
    }
    first.image_auroc = mean_of(&repeats.iter().map(|r| r.image_auroc).collect::<Vec<_>>());
    first.pixel_auroc = mean_of(&repeats.iter().map(|r| r.pixel_auroc).collect::<Vec<_>>());
    first.repeats = repeats;
    first
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
    /// Enrollments per category, with seeds `enroll.seed`, +1, ...; for
    /// trained encoders each repeat trains with its own seed too. 0 or 1: one.
    pub repeats: usize,
}

/// An engine and the model it runs.
pub struct Encoder {
    pub engine: Box<dyn Engine>,
    pub contract: Contract,
}

/// Supplies the encoder for each category: the station's own for all of
/// them, or one trained for the category (`lineguard eval --train`).
pub trait EncoderSource {
    /// `fewshot` are the defect images moved out of the category's test
    /// split; `repeat` counts [`EvalOptions::repeats`] from 0.
    fn encoder(&mut self, cat: &Category, fewshot: &[dataset::TestImage], repeat: usize, progress: &Progress) -> Result<&mut Encoder, EvalError>;
}

/// The same encoder for every category.
impl EncoderSource for Encoder {
    fn encoder(&mut self, _: &Category, _: &[dataset::TestImage], _: usize, _: &Progress) -> Result<&mut Encoder, EvalError> {
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
        let mut runs = Vec::new();
        for repeat in 0..opts.repeats.max(1) {
            let prefix = if opts.repeats > 1 { format!("{} {}/{}", cat.name, repeat + 1, opts.repeats) } else { cat.name.clone() };
            let progress = progress.with_prefix(&prefix);
            let mut params = params.clone();
            params.enroll.seed += repeat as u64;
            let enc = source.encoder(&cat, &fewshot, repeat, &progress)?;
            // Heatmaps and the ROC plot are the first repeat's.
            let opts = if repeat == 0 { opts.clone() } else { EvalOptions { report_dir: None, ..opts.clone() } };
            let r = evaluate_category(enc.engine.as_mut(), &enc.contract, &cat, &params, &opts, &progress)?;
            engines.push(enc.engine.description());
            models.push((enc.contract.path.display().to_string(), enc.contract.sha256.clone()));
            runs.push((params.enroll.seed, r));
        }
        results.insert(cat.name.clone(), combine_repeats(runs));
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
        repeats: vec![],
    };
    if let Some(dir) = &opts.report_dir {
        report::write_category(dir, &cat.name, &result)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(image: Option<f64>, pixel: f64, spot: f64, f1: f64) -> CategoryResult {
        let kind = |a: f64| KindResult { images: 10, image_auroc: Some(a), pixel_auroc: Some(pixel) };
        CategoryResult {
            image_auroc: image,
            pixel_auroc: Some(pixel),
            f1,
            precision: 1.0,
            recall: 1.0,
            false_reject_rate: 0.0,
            threshold: 1.0,
            calibration: crate::anomaly::Calibration { false_reject_rate: 0.0, margin: 0.0, samples: 4, quantile_score: 1.0, max_good_score: 1.0, mean_good_score: 0.5 },
            confusion: Confusion::at(&[0.0, 2.0], &[false, true], 1.0),
            per_kind: BTreeMap::from([("spot".to_owned(), kind(spot)), ("hole".to_owned(), kind(1.0))]),
            train_images: 4,
            test_images: 2,
            model_sha256: format!("m{f1}"),
            bank_rows: 8,
            enroll_seconds: 0.1,
            latency_ms: BTreeMap::new(),
            images: vec![],
            roc: vec![],
            repeats: vec![],
        }
    }

    #[test]
    fn one_run_is_passed_through_unchanged() {
        let r = combine_repeats(vec![(7, result(Some(0.9), 0.95, 0.8, 0.5))]);
        assert_eq!(r.image_auroc, Some(0.9));
        assert!(r.repeats.is_empty());
        assert_eq!(r.image_auroc_range(), None);
    }

    #[test]
    fn repeats_average_auroc_keep_the_first_run_details_and_record_each_seed() {
        let runs = vec![(3, result(Some(0.90), 0.96, 0.70, 0.5)), (4, result(Some(0.96), 0.98, 0.88, 0.25)), (5, result(Some(0.93), 0.97, 0.82, 0.75))];
        let r = combine_repeats(runs);
        assert!((r.image_auroc.unwrap() - 0.93).abs() < 1e-12);
        assert!((r.pixel_auroc.unwrap() - 0.97).abs() < 1e-12);
        assert!((r.per_kind["spot"].image_auroc.unwrap() - 0.80).abs() < 1e-12);
        assert_eq!(r.per_kind["hole"].image_auroc, Some(1.0));
        assert_eq!(r.f1, 0.5, "F1 is the first run's");
        assert_eq!(r.repeats.iter().map(|x| x.enroll_seed).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(r.repeats[1].model_sha256, "m0.25");
        assert_eq!(r.image_auroc_range(), Some((0.90, 0.96)));
        assert_eq!(r.roc_auroc(), Some(0.90), "the ROC curve is the first run's");
        assert_eq!(r.pixel_auroc_range(), Some((0.96, 0.98)));
    }

    #[test]
    fn a_missing_auroc_in_any_repeat_makes_the_mean_missing() {
        let r = combine_repeats(vec![(0, result(None, 0.9, 0.8, 0.5)), (1, result(Some(0.9), 0.9, 0.8, 0.5))]);
        assert_eq!(r.image_auroc, None);
        assert_eq!(r.image_auroc_range(), Some((0.9, 0.9)));
    }
}
