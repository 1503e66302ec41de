//! Training inside an evaluation: an [`EncoderSource`] that trains an
//! encoder per category and seed on its train split (and its few-shot defect images),
//! and the comparison of the ImageNet encoder with the trained ones that the
//! README's table comes from (`lineguard train compare`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{DefectImage, Stage, TrainConfig, TrainDevice, TrainRequest, train};
use crate::engine::{Engine, EngineError};
use crate::enroll::EnrollParams;
use crate::eval::dataset::{Category, TestImage};
use crate::eval::{Encoder, EncoderSource, EvalError, EvalOptions, EvalReport, evaluate};
use crate::model::Contract;
use crate::progress::Progress;

pub type EngineFactory<'a> = &'a dyn Fn(&Contract) -> Result<Box<dyn Engine>, EngineError>;

/// Trains per category: pretraining (kept in `work_dir/CATEGORY/seed-S/pretrain`
/// and reused by every source that asks for it), then fine-tuning from the
/// pretrained model, with the few-shot defect images when `use_defects`.
/// Repeat `r` of an evaluation trains with seed `config.seed + r`.
pub struct TrainedEncoders<'a> {
    pub base: Contract,
    pub taps: Vec<String>,
    pub stages: Vec<Stage>,
    pub use_defects: bool,
    pub config: TrainConfig,
    pub work_dir: PathBuf,
    pub device: TrainDevice,
    pub max_minutes: Option<f64>,
    pub make_engine: EngineFactory<'a>,
    pub current: Option<Encoder>,
}

/// One category and repeat: what its training stages share.
struct CategoryJob<'c> {
    cat: &'c Category,
    config: TrainConfig,
    progress: &'c Progress,
}

impl TrainedEncoders<'_> {
    fn run(&self, job: &CategoryJob, base: &Contract, stage: Stage, defects: Vec<DefectImage>, dir: &Path) -> Result<Contract, EvalError> {
        let CategoryJob { cat, config, progress } = job;
        let err = |reason: String| EvalError::Encoder { category: cat.name.clone(), reason };
        let out = dir.join("model.onnx");
        let req = TrainRequest {
            base: base.clone(),
            taps: self.taps.clone(),
            good_dir: cat.train.first().and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_default(),
            good: cat.train.clone(),
            defects,
            stages: vec![stage],
            config: config.clone(),
            out: out.clone(),
            work_dir: dir.to_path_buf(),
            max_minutes: self.max_minutes,
            max_steps: None,
            device: self.device,
            fresh: false,
        };
        train(req, &progress.with_prefix(stage.name())).map_err(|e| err(e.to_string()))?;
        Contract::load(&out).map_err(|e| err(e.to_string()))
    }
}

impl EncoderSource for TrainedEncoders<'_> {
    fn encoder(&mut self, cat: &Category, fewshot: &[TestImage], repeat: usize, progress: &Progress) -> Result<&mut Encoder, EvalError> {
        let job = CategoryJob { cat, config: TrainConfig { seed: self.config.seed + repeat as u64, ..self.config.clone() }, progress };
        let dir = self.work_dir.join(&cat.name).join(format!("seed-{}", job.config.seed));
        let mut model = self.base.clone();
        if self.stages.contains(&Stage::Pretrain) {
            model = self.run(&job, &model, Stage::Pretrain, vec![], &dir.join("pretrain"))?;
        }
        if self.stages.contains(&Stage::Finetune) {
            let defects: Vec<DefectImage> = if self.use_defects {
                fewshot.iter().filter_map(|t| t.mask.clone().map(|mask| DefectImage { image: t.path.clone(), mask })).collect()
            } else {
                vec![]
            };
            let name = if self.stages.contains(&Stage::Pretrain) { "finetune" } else { "finetune-from-base" };
            let dir = dir.join(format!("{name}-{}defects", defects.len()));
            model = self.run(&job, &model, Stage::Finetune, defects, &dir)?;
        }
        let engine = (self.make_engine)(&model).map_err(|e| EvalError::Engine { path: model.path.clone(), source: e })?;
        Ok(self.current.insert(Encoder { engine, contract: model }))
    }
}

/// One row of the comparison: an encoder and its per-category results.
#[derive(Debug, Serialize)]
pub struct CompareRow {
    pub name: String,
    pub report: EvalReport,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub fewshot: usize,
    pub repeats: usize,
    pub rows: Vec<CompareRow>,
}

pub struct CompareRequest<'a> {
    pub base: Contract,
    pub taps: Vec<String>,
    pub data: PathBuf,
    pub categories: Vec<String>,
    /// Defect images per kind for the last row, moved out of every row's test split.
    pub fewshot: usize,
    /// Each row is enrolled (and trained) this many times with consecutive seeds.
    pub repeats: usize,
    pub config: TrainConfig,
    pub work_dir: PathBuf,
    pub device: TrainDevice,
    pub params: EnrollParams,
    pub scoring: crate::config::ScoringConfig,
    pub make_engine: EngineFactory<'a>,
}

/// ImageNet vs pretrained vs fine-tuned without and with `fewshot` defect
/// images per kind, every row scored on the same test images.
pub fn compare(req: &CompareRequest, progress: &Progress) -> Result<Comparison, EvalError> {
    let opts = EvalOptions { categories: req.categories.clone(), fewshot: req.fewshot, repeats: req.repeats, scoring: req.scoring.clone(), ..Default::default() };
    let trained = |stages: Vec<Stage>, use_defects: bool| TrainedEncoders {
        base: req.base.clone(),
        taps: req.taps.clone(),
        stages,
        use_defects,
        config: req.config.clone(),
        work_dir: req.work_dir.clone(),
        device: req.device,
        max_minutes: None,
        make_engine: req.make_engine,
        current: None,
    };
    let mut rows = Vec::new();
    let engine = (req.make_engine)(&req.base).map_err(|e| EvalError::Engine { path: req.base.path.clone(), source: e })?;
    let mut imagenet = Encoder { engine, contract: req.base.clone() };
    rows.push(CompareRow { name: "ImageNet".into(), report: evaluate(&mut imagenet, &req.data, &req.params, &opts, &progress.with_prefix("imagenet"))? });
    drop(imagenet);
    let variants = [
        ("pretrained (default)".to_owned(), vec![Stage::Pretrain], false),
        ("fine-tuned, 0 defects".to_owned(), vec![Stage::Pretrain, Stage::Finetune], false),
        (format!("fine-tuned, {} defects/kind", req.fewshot), vec![Stage::Pretrain, Stage::Finetune], true),
    ];
    for (name, stages, use_defects) in variants {
        if use_defects && req.fewshot == 0 {
            continue;
        }
        let mut source = trained(stages, use_defects);
        let report = evaluate(&mut source, &req.data, &req.params, &opts, &progress.with_prefix(&name))?;
        rows.push(CompareRow { name, report });
    }
    Ok(Comparison { fewshot: req.fewshot, repeats: req.repeats.max(1), rows })
}

/// A mean, with the repeats' range when there are several.
fn cell(v: Option<f64>, range: Option<(f64, f64)>) -> String {
    match (v, range) {
        (None, _) => "-".into(),
        (Some(v), Some((lo, hi))) => format!("{v:.4} ({lo:.3}-{hi:.3})"),
        (Some(v), None) => format!("{v:.4}"),
    }
}

/// The comparison as a Markdown table: a row per category, image and pixel
/// AUROC per encoder, and the means.
pub fn markdown(c: &Comparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = write!(s, "| category |");
    for r in &c.rows {
        let _ = write!(s, " {} image | {} pixel |", r.name, r.name);
    }
    let _ = write!(s, "\n|---|");
    for _ in &c.rows {
        let _ = write!(s, "---:|---:|");
    }
    s.push('\n');
    let cats: Vec<&String> = c.rows.first().map(|r| r.report.categories.keys().collect()).unwrap_or_default();
    for cat in cats {
        let _ = write!(s, "| {cat} |");
        for r in &c.rows {
            let res = r.report.categories.get(cat);
            let image = cell(res.and_then(|x| x.image_auroc), res.and_then(|x| x.image_auroc_range()));
            let pixel = cell(res.and_then(|x| x.pixel_auroc), res.and_then(|x| x.pixel_auroc_range()));
            let _ = write!(s, " {image} | {pixel} |");
        }
        s.push('\n');
    }
    let _ = write!(s, "| **mean** |");
    for r in &c.rows {
        let _ = write!(s, " **{:.4}** | **{:.4}** |", r.report.image_auroc_mean, r.report.pixel_auroc_mean);
    }
    s.push('\n');
    let per_cat: BTreeMap<&str, usize> = c.rows.first().map(|r| r.report.categories.iter().map(|(k, v)| (k.as_str(), v.test_images)).collect()).unwrap_or_default();
    let _ = writeln!(s, "\nTest images per category (after moving {} defect images per kind to the few-shot split): {:?}", c.fewshot, per_cat);
    if c.repeats > 1 {
        let _ = writeln!(s, "Each cell: the mean over {} repeats (enroll seeds, and training seeds for trained rows) and, in brackets, their lowest and highest.", c.repeats);
    }
    s
}
